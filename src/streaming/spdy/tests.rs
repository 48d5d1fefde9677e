//! Connection tests over `tokio::io::duplex`, against a minimal SPDY client written here from the
//! frame layouts (it shares only the frame codec with the server).
// The test client's small frames and windows: casts here cannot drop bits.
#![allow(clippy::cast_possible_truncation)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

use super::frame::{self, Frame, FrameHead, GoAwayStatus, Limits, RstStatus};
use super::header::{HeaderDecoder, HeaderEncoder, Headers};
use super::{Config, Error, SpdyConn, SpdyStream, StreamAcceptor};

const STEP: Duration = Duration::from_secs(5);

struct Client {
    io: DuplexStream,
    enc: HeaderEncoder,
    dec: HeaderDecoder,
}

impl Client {
    fn new(io: DuplexStream) -> Self {
        Client {
            io,
            enc: HeaderEncoder::new(),
            dec: HeaderDecoder::new(1 << 20),
        }
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        frame::encode(&frame, &mut self.enc, &mut out).unwrap();
        self.send_raw(&out).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }

    /// The next frame, `None` at EOF.
    async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(STEP, async {
            let mut head = [0u8; 8];
            match self.io.read_exact(&mut head).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) => panic!("client read: {e}"),
            }
            let limits = Limits {
                max_control_frame: 1 << 24,
                max_data_frame: 1 << 24,
            };
            let head = FrameHead::parse(head, &limits).unwrap();
            let mut payload = vec![0u8; head.len()];
            self.io.read_exact(&mut payload).await.unwrap();
            Some(frame::decode(head, Bytes::from(payload), &mut self.dec).unwrap())
        })
        .await
        .expect("server did not answer in time")
    }

    /// Skips the server's initial SETTINGS.
    async fn expect_settings(&mut self) {
        match self.recv().await {
            Some(Frame::Settings { entries, .. }) => {
                assert_eq!(entries[0].id, frame::SETTINGS_MAX_CONCURRENT_STREAMS)
            }
            other => panic!("expected SETTINGS, got {other:?}"),
        }
    }

    async fn open(&mut self, stream_id: u32, stream_type: &str, fin: bool) {
        let mut headers = Headers::new();
        headers.insert("streamType", stream_type).unwrap();
        self.send(Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin,
            unidirectional: false,
            headers,
        })
        .await;
    }

    async fn data(&mut self, stream_id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream_id,
            fin,
            data: Bytes::copy_from_slice(data),
        })
        .await;
    }
}

fn start(config: Config) -> (Client, StreamAcceptor, JoinHandle<Result<(), Error>>) {
    let (client, server) = tokio::io::duplex(16 * 1024);
    let (conn, acceptor) = SpdyConn::new(server, config);
    let driver = tokio::spawn(conn.run());
    (Client::new(client), acceptor, driver)
}

async fn accept(acceptor: &mut StreamAcceptor) -> SpdyStream {
    tokio::time::timeout(STEP, acceptor.accept())
        .await
        .expect("no stream accepted in time")
        .expect("acceptor closed")
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn the_driver_future_is_send() {
    fn is_send<F: std::future::Future + Send>(_: &F) {}
    let (_, io) = tokio::io::duplex(64);
    let (conn, _acceptor) = SpdyConn::new(io, Config::default());
    is_send(&conn.run());
}

/// Two streams as exec opens them (stdin, stdout), 150 KiB in and 200 KiB out with both sides
/// keeping to 64 KiB windows, PING both ways, then the client's GOAWAY ends the connection.
#[tokio::test]
async fn duplex_streams_flow_control_ping_goaway() {
    let (mut c, mut acceptor, driver) = start(Config::default());
    let handle = acceptor.handle();
    let upload = 150 * 1024;
    let download = 200 * 1024;

    let server = tokio::spawn(async move {
        let mut stdin = accept(&mut acceptor).await;
        assert_eq!(stdin.id(), 1);
        assert_eq!(stdin.headers().get("streamtype"), Some("stdin"));
        let mut stdout = accept(&mut acceptor).await;
        assert_eq!(stdout.id(), 3);
        assert_eq!(stdout.headers().get("streamType"), Some("stdout"));
        let out = tokio::spawn(async move {
            stdout.write_all(&pattern(download)).await.unwrap();
            stdout.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        stdin.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, pattern(upload));
        stdin.write_all(b"ok").await.unwrap();
        stdin.shutdown().await.unwrap();
        out.await.unwrap();
        acceptor
    });

    c.expect_settings().await;
    c.open(1, "stdin", false).await;
    c.open(3, "stdout", true).await;

    let input = pattern(upload);
    let (mut sent, mut fin_sent) = (0usize, false);
    // What the server lets us send, and what we let the server send.
    let (mut win1, mut conn_win) = (65536i64, 65536i64);
    let (mut grant3, mut grant1, mut grant_conn) = (65536i64, 65536i64, 65536i64);
    let (mut unacked3, mut unacked_conn) = (0i64, 0i64);
    let (mut got1, mut got3) = (Vec::new(), Vec::new());
    let (mut fin1, mut fin3) = (false, false);
    let mut replies = Vec::new();
    let mut updates_seen = 0;
    while !(fin_sent && fin1 && fin3) {
        while sent < input.len() && win1 > 0 && conn_win > 0 {
            let n = (input.len() - sent)
                .min(16 * 1024)
                .min(win1 as usize)
                .min(conn_win as usize);
            c.data(1, &input[sent..sent + n], false).await;
            sent += n;
            win1 -= n as i64;
            conn_win -= n as i64;
        }
        if sent == input.len() && !fin_sent {
            c.data(1, b"", true).await;
            fin_sent = true;
        }
        match c.recv().await.expect("EOF too early") {
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                assert!(!fin);
                assert!(headers.is_empty());
                replies.push(stream_id);
            }
            Frame::WindowUpdate {
                stream_id: 0,
                delta,
            } => {
                conn_win += delta as i64;
                updates_seen += 1;
            }
            Frame::WindowUpdate {
                stream_id: 1,
                delta,
            } => win1 += delta as i64,
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                assert!(replies.contains(&stream_id), "DATA before SYN_REPLY");
                grant_conn -= data.len() as i64;
                assert!(grant_conn >= 0, "server overran the connection window");
                unacked_conn += data.len() as i64;
                match stream_id {
                    1 => {
                        grant1 -= data.len() as i64;
                        assert!(grant1 >= 0);
                        got1.extend_from_slice(&data);
                        fin1 |= fin;
                    }
                    3 => {
                        grant3 -= data.len() as i64;
                        assert!(grant3 >= 0, "server overran stream 3's window");
                        got3.extend_from_slice(&data);
                        unacked3 += data.len() as i64;
                        fin3 |= fin;
                        if unacked3 >= 32 * 1024 {
                            c.send(Frame::WindowUpdate {
                                stream_id: 3,
                                delta: unacked3 as u32,
                            })
                            .await;
                            grant3 += unacked3;
                            unacked3 = 0;
                        }
                    }
                    other => panic!("DATA on stream {other}"),
                }
                if unacked_conn >= 32 * 1024 {
                    c.send(Frame::WindowUpdate {
                        stream_id: 0,
                        delta: unacked_conn as u32,
                    })
                    .await;
                    grant_conn += unacked_conn;
                    unacked_conn = 0;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(replies, [1, 3]);
    assert!(
        updates_seen > 0,
        "the server opened the connection window as it read"
    );
    assert_eq!(got1, b"ok");
    assert_eq!(got3, pattern(download));
    let mut acceptor = server.await.unwrap();

    // The client's PING (odd) is echoed; the server's (even) is answered by the client.
    c.send(Frame::Ping { id: 1 }).await;
    assert_eq!(c.recv().await, Some(Frame::Ping { id: 1 }));
    let ping = tokio::spawn(async move { handle.ping().await });
    match c.recv().await {
        Some(Frame::Ping { id }) => {
            assert_eq!(id % 2, 0, "server pings are even");
            c.send(Frame::Ping { id }).await;
        }
        other => panic!("expected PING, got {other:?}"),
    }
    ping.await.unwrap().unwrap();

    // GOAWAY from the client with no stream left: the server closes the transport.
    c.send(Frame::GoAway {
        last_good_stream_id: 0,
        status: GoAwayStatus::Ok,
    })
    .await;
    assert_eq!(c.recv().await, None);
    driver.await.unwrap().unwrap();
    assert!(acceptor.accept().await.is_none());
}

/// Kubernetes' client ignores windows: with `Config::kubernetes()` the server sends past 64 KiB
/// without any WINDOW_UPDATE, and a client overrunning our window is slowed down, not reset.
#[tokio::test]
async fn kubernetes_mode_ignores_windows_and_applies_backpressure() {
    let (mut c, mut acceptor, driver) = start(Config::kubernetes());
    let size = 300 * 1024;
    let server = tokio::spawn(async move {
        let mut s = accept(&mut acceptor).await;
        s.write_all(&pattern(size)).await.unwrap();
        s.flush().await.unwrap();
        // Read slowly: the client's data waits in the transport, not in memory.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.shutdown().await.unwrap();
        (got.len(), acceptor)
    });
    c.expect_settings().await;
    c.open(1, "stdout", false).await;
    assert!(matches!(
        c.recv().await,
        Some(Frame::SynReply { stream_id: 1, .. })
    ));
    let mut got = 0;
    while got < size {
        match c.recv().await {
            Some(Frame::Data {
                stream_id: 1,
                data,
                fin: false,
            }) => got += data.len(),
            Some(Frame::WindowUpdate { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // Now push 300 KiB without waiting for any window, from a task (the duplex pipe is small).
    let (mut rd, mut wr) = tokio::io::split(c.io);
    let writer = tokio::spawn(async move {
        let mut enc = HeaderEncoder::new();
        for chunk in pattern(size).chunks(32 * 1024) {
            let mut out = BytesMut::new();
            let frame = Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::copy_from_slice(chunk),
            };
            frame::encode(&frame, &mut enc, &mut out).unwrap();
            wr.write_all(&out).await.unwrap();
        }
        wr.write_all(&[0, 0, 0, 1, 1, 0, 0, 0]).await.unwrap(); // DATA+FIN
        wr
    });
    let mut rest = Vec::new();
    let reader = tokio::spawn(async move {
        // Drain whatever the server sends (WINDOW_UPDATEs, the final FIN).
        let _ = rd.read_to_end(&mut rest).await;
        rest
    });
    let (len, acceptor) = tokio::time::timeout(STEP, server).await.unwrap().unwrap();
    assert_eq!(len, size);
    let _wr = writer.await.unwrap();
    drop(acceptor); // GOAWAY; the stream is gone, so the transport closes
    tokio::time::timeout(STEP, driver)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let rest = reader.await.unwrap();
    let mut dec = HeaderDecoder::new(1 << 20);
    let mut frames = Vec::new();
    let mut at = 0;
    while at < rest.len() {
        let head = FrameHead::parse(
            rest[at..at + 8].try_into().unwrap(),
            &Limits {
                max_control_frame: 1 << 20,
                max_data_frame: 1 << 20,
            },
        )
        .unwrap();
        let end = at + 8 + head.len();
        frames.push(
            frame::decode(head, Bytes::copy_from_slice(&rest[at + 8..end]), &mut dec).unwrap(),
        );
        at = end;
    }
    assert!(frames.contains(&Frame::Data {
        stream_id: 1,
        fin: true,
        data: Bytes::new()
    }));
    assert!(matches!(
        frames.last(),
        Some(Frame::GoAway {
            status: GoAwayStatus::Ok,
            last_good_stream_id: 1
        })
    ));
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::RstStream { .. })),
        "{frames:?}"
    );
}

/// Too many streams are refused, a duplicate SYN_STREAM resets that stream, a peer RST_STREAM
/// reaches the reader, and the server's GOAWAY stops new streams while open ones finish.
#[tokio::test]
async fn refusals_resets_and_server_goaway() {
    let config = Config {
        max_streams: 2,
        ..Config::default()
    };
    let (mut c, mut acceptor, driver) = start(config);
    c.expect_settings().await;
    c.open(1, "stdout", true).await;
    c.open(3, "stdin", false).await;
    c.open(5, "stderr", false).await;
    assert!(matches!(
        c.recv().await,
        Some(Frame::SynReply { stream_id: 1, .. })
    ));
    assert!(matches!(
        c.recv().await,
        Some(Frame::SynReply { stream_id: 3, .. })
    ));
    assert_eq!(
        c.recv().await,
        Some(Frame::RstStream {
            stream_id: 5,
            status: RstStatus::RefusedStream
        })
    );
    let mut one = accept(&mut acceptor).await;
    let mut three = accept(&mut acceptor).await;

    // The peer resets stream 3: its reader sees ConnectionReset.
    c.send(Frame::RstStream {
        stream_id: 3,
        status: RstStatus::Cancel,
    })
    .await;
    let err = three.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    drop(three); // no RST back for a reset stream

    // A second SYN_STREAM for stream 1 is a stream error: RST PROTOCOL_ERROR, the session lives.
    c.open(1, "stdout", false).await;
    assert_eq!(
        c.recv().await,
        Some(Frame::RstStream {
            stream_id: 1,
            status: RstStatus::ProtocolError
        })
    );
    assert_eq!(
        one.read(&mut [0u8; 8]).await.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    drop(one);

    c.open(7, "stdout", true).await;
    assert!(matches!(
        c.recv().await,
        Some(Frame::SynReply { stream_id: 7, .. })
    ));
    let mut seven = accept(&mut acceptor).await;

    // Data for a stream that does not exist: RST INVALID_STREAM.
    c.data(9, b"x", false).await;
    assert_eq!(
        c.recv().await,
        Some(Frame::RstStream {
            stream_id: 9,
            status: RstStatus::InvalidStream
        })
    );

    acceptor.handle().go_away();
    assert_eq!(
        c.recv().await,
        Some(Frame::GoAway {
            last_good_stream_id: 7,
            status: GoAwayStatus::Ok
        })
    );
    // Ignored after GOAWAY: no reply, no reset.
    c.open(11, "stdout", true).await;
    assert!(acceptor.accept().await.is_none());
    // Stream 7 still works and closes the connection when it ends.
    seven.write_all(b"bye").await.unwrap();
    drop(seven); // the client already sent FIN: drop ends with DATA+FIN
    assert_eq!(
        c.recv().await,
        Some(Frame::Data {
            stream_id: 7,
            fin: false,
            data: Bytes::from_static(b"bye")
        })
    );
    assert_eq!(
        c.recv().await,
        Some(Frame::Data {
            stream_id: 7,
            fin: true,
            data: Bytes::new()
        })
    );
    assert_eq!(c.recv().await, None);
    driver.await.unwrap().unwrap();
}

/// Session errors: GOAWAY PROTOCOL_ERROR, the transport closed, `run` returns the error, and
/// open streams fail instead of hanging.
async fn session_error(prelude: &[Frame], raw: &[u8]) -> Error {
    let (mut c, mut acceptor, driver) = start(Config::default());
    c.expect_settings().await;
    for f in prelude {
        c.send(f.clone()).await;
    }
    let mut streams = Vec::new();
    for _ in prelude
        .iter()
        .filter(|f| matches!(f, Frame::SynStream { .. }))
    {
        assert!(matches!(c.recv().await, Some(Frame::SynReply { .. })));
        streams.push(accept(&mut acceptor).await);
    }
    c.send_raw(raw).await;
    let mut goaway = None;
    while let Some(frame) = c.recv().await {
        if let Frame::GoAway { status, .. } = frame {
            goaway = Some(status);
        }
    }
    assert_eq!(goaway, Some(GoAwayStatus::ProtocolError));
    for mut s in streams {
        assert!(s.read(&mut [0u8; 4]).await.is_err());
        assert!(s.write_all(b"x").await.is_err());
    }
    tokio::time::timeout(STEP, driver)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err()
}

fn syn(stream_id: u32) -> Frame {
    let mut headers = Headers::new();
    headers.insert("streamtype", "error").unwrap();
    Frame::SynStream {
        stream_id,
        associated_to: 0,
        priority: 0,
        slot: 0,
        fin: false,
        unidirectional: false,
        headers,
    }
}

#[tokio::test]
async fn bad_version_is_a_session_error() {
    let err = session_error(&[syn(1)], &[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]).await;
    assert!(matches!(err, Error::UnsupportedVersion(2)), "{err}");
}

#[tokio::test]
async fn oversized_frame_is_a_session_error() {
    let err = session_error(&[], &[0, 0, 0, 1, 0, 0xff, 0xff, 0xff]).await;
    assert!(
        matches!(err, Error::FrameTooLarge { frame: "DATA", .. }),
        "{err}"
    );
}

#[tokio::test]
async fn stream_id_zero_is_a_session_error() {
    let mut enc = HeaderEncoder::new();
    let mut out = BytesMut::new();
    frame::encode(&syn(1), &mut enc, &mut out).unwrap();
    out[11] = 0; // stream ID 1 → 0
    let err = session_error(&[], &out).await;
    assert!(
        matches!(
            err,
            Error::ZeroStreamId {
                frame: "SYN_STREAM"
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn even_and_decreasing_stream_ids_are_session_errors() {
    let mut out = BytesMut::new();
    frame::encode(&syn(2), &mut HeaderEncoder::new(), &mut out).unwrap();
    let err = session_error(&[], &out).await;
    assert!(matches!(err, Error::EvenStreamId(2)), "{err}");

    // After 5 (and 5's stream gone), a SYN_STREAM for 3 goes backwards. The client's zlib
    // stream continues from its first block, so encode both with one encoder.
    let (mut c, mut acceptor, driver) = start(Config::default());
    c.expect_settings().await;
    c.send(syn(5)).await;
    assert!(matches!(
        c.recv().await,
        Some(Frame::SynReply { stream_id: 5, .. })
    ));
    accept(&mut acceptor).await.reset(RstStatus::Cancel);
    assert!(matches!(
        c.recv().await,
        Some(Frame::RstStream { stream_id: 5, .. })
    ));
    c.send(syn(3)).await;
    let mut goaway = None;
    while let Some(frame) = c.recv().await {
        if let Frame::GoAway {
            status,
            last_good_stream_id,
        } = frame
        {
            goaway = Some((status, last_good_stream_id));
        }
    }
    assert_eq!(goaway, Some((GoAwayStatus::ProtocolError, 5)));
    let err = driver.await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::StreamIdNotIncreasing { id: 3, last: 5 }),
        "{err}"
    );
}

#[tokio::test]
async fn header_zip_bomb_is_a_session_error() {
    use flate2::{Compress, Compression, FlushCompress};
    let mut zlib = Compress::new(Compression::best(), true);
    zlib.set_dictionary(&super::header::DICTIONARY).unwrap();
    let mut raw = Vec::new();
    raw.extend_from_slice(&1u32.to_be_bytes());
    raw.extend_from_slice(&1u32.to_be_bytes());
    raw.push(b'a');
    raw.extend_from_slice(&(2u32 << 20).to_be_bytes());
    raw.resize(raw.len() + (2 << 20), b'a');
    let mut block = Vec::with_capacity(64 * 1024);
    zlib.compress_vec(&raw, &mut block, FlushCompress::Sync)
        .unwrap();
    let mut wire = vec![0x80, 0x03, 0x00, 0x01, 0];
    wire.extend_from_slice(&((10 + block.len()) as u32).to_be_bytes()[1..]);
    wire.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    wire.extend_from_slice(&block);
    let err = session_error(&[], &wire).await;
    assert!(matches!(err, Error::HeaderBlockTooLarge { .. }), "{err}");
}

#[tokio::test]
async fn garbage_header_block_is_a_session_error() {
    let mut wire = vec![0x80, 0x03, 0x00, 0x01, 0, 0, 0, 14];
    wire.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
    let err = session_error(&[], &wire).await;
    assert!(matches!(err, Error::Compression(_)), "{err}");
}

#[tokio::test]
async fn truncated_frame_then_eof_is_an_error() {
    let (mut c, _acceptor, driver) = start(Config::default());
    c.expect_settings().await;
    c.send_raw(&[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0]).await;
    drop(c);
    let err = tokio::time::timeout(STEP, driver)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::UnexpectedEof), "{err}");
}

/// A window update beyond 2^31-1 on a stream resets it with FLOW_CONTROL_ERROR; SETTINGS
/// INITIAL_WINDOW_SIZE shrinks the window of open streams.
#[tokio::test]
async fn window_overflow_and_initial_window_setting() {
    let (mut c, mut acceptor, driver) = start(Config::default());
    c.expect_settings().await;
    c.open(1, "stdout", true).await;
    assert!(matches!(
        c.recv().await,
        Some(Frame::SynReply { stream_id: 1, .. })
    ));
    let mut s = accept(&mut acceptor).await;
    c.send(Frame::WindowUpdate {
        stream_id: 1,
        delta: 0x7fff_ffff,
    })
    .await;
    assert_eq!(
        c.recv().await,
        Some(Frame::RstStream {
            stream_id: 1,
            status: RstStatus::FlowControlError
        })
    );
    assert!(s.write_all(b"x").await.is_err());
    drop(s);

    // Window 16 bytes for stream 3: a 40-byte write goes out as 16 bytes until we open more.
    c.send(Frame::Settings {
        clear: false,
        entries: vec![frame::Setting {
            flags: 0,
            id: frame::SETTINGS_INITIAL_WINDOW_SIZE,
            value: 16,
        }],
    })
    .await;
    c.open(3, "stdout", true).await;
    assert!(matches!(
        c.recv().await,
        Some(Frame::SynReply { stream_id: 3, .. })
    ));
    let mut s = accept(&mut acceptor).await;
    let writer = tokio::spawn(async move {
        s.write_all(&[b'z'; 40]).await.unwrap();
        s.shutdown().await.unwrap();
        s
    });
    match c.recv().await {
        Some(Frame::Data {
            stream_id: 3, data, ..
        }) => assert_eq!(data.len(), 16),
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(Frame::WindowUpdate {
        stream_id: 3,
        delta: 100,
    })
    .await;
    match c.recv().await {
        Some(Frame::Data {
            stream_id: 3, data, ..
        }) => assert_eq!(data.len(), 24),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.recv().await,
        Some(Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::new()
        })
    );
    drop(writer.await.unwrap());
    acceptor.handle().close();
    while c.recv().await.is_some() {}
    driver.await.unwrap().unwrap();
}
