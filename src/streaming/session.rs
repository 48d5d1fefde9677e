//! Exec and attach sessions written once, over a transport-neutral set of streams — stdin,
//! stdout, stderr, the status at the end, terminal resizes — which the WebSocket channel
//! protocol (`ws_streams`) and SPDY/3.1 (`server.rs`, from the client's streams) both produce,
//! as kubelet's streaming library shapes them. Port-forward keeps its own per-port streams.

use crate::engine::Engine;
use crate::monitor::client::MonitorClient;
use crate::monitor::proto::ATTACH_STDERR;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::idle::Tasks;
use super::ws;

pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// How the end of a session is told: a metav1.Status JSON (WebSocket, remotecommand v4 and
/// v5), or a plain message only when something failed (remotecommand v1 to v3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusForm {
    Json,
    Plain,
}

/// Where the session's end goes.
pub struct Status {
    pub w: Writer,
    pub form: StatusForm,
}

impl Status {
    /// The process ended with `code`.
    pub async fn exit(self, code: i32) {
        let text = match (self.form, code) {
            (StatusForm::Json, c) => Some(ws::exit_status(c)),
            (StatusForm::Plain, 0) => None,
            (StatusForm::Plain, c) => {
                Some(format!("command terminated with non-zero exit code: {c}"))
            }
        };
        self.finish(text).await
    }

    /// The session could not run, or failed.
    pub async fn error(self, msg: &str) {
        let text = match self.form {
            StatusForm::Json => ws::error_status(msg),
            StatusForm::Plain => msg.to_string(),
        };
        self.finish(Some(text)).await
    }

    async fn finish(mut self, text: Option<String>) {
        if let Some(t) = text {
            let _ = self.w.write_all(t.as_bytes()).await;
        }
        let _ = self.w.shutdown().await;
    }
}

/// The streams of one exec or attach session. A stream the client did not ask for is None;
/// the end of `stdin` is the client closing it.
pub struct Streams {
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    /// Terminal sizes the client sends (width, height).
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
    pub status: Status,
}

/// Copies output to the client's stream and half-closes it; output the client did not ask
/// for is drained, so the process never blocks on a full pipe.
async fn relay(mut r: impl AsyncRead + Unpin, w: Option<Writer>) {
    match w {
        Some(mut w) => {
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        }
        None => {
            let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
        }
    }
}

/// An exec session: the command run in the container by the `__exec` helper, its stdio
/// relayed, its terminal resized, its exit code the status.
pub async fn exec(
    engine: &std::sync::Arc<Engine>,
    container: &str,
    cmd: Vec<String>,
    tty: bool,
    s: Streams,
) {
    let Streams {
        stdin,
        stdout,
        stderr,
        resize,
        status,
    } = s;
    let mut exec = match engine
        .exec_stream(container, cmd, stdin.is_some(), tty)
        .await
    {
        Ok(e) => e,
        Err(e) => return status.error(&e.to_string()).await,
    };
    let mut tasks = Tasks::default();
    if let (Some(sock), Some(mut rx)) = (exec.resize.clone(), resize) {
        tasks.spawn(async move {
            while let Some((w, h)) = rx.recv().await {
                crate::engine::container::resize_tty(&sock, w, h).await;
            }
        });
    }
    if let (Some(mut from), Some(mut to)) = (stdin, exec.child.stdin.take()) {
        tasks.spawn(async move {
            // The client's end of stdin closes the process's.
            let _ = tokio::io::copy(&mut from, &mut to).await;
        });
    }
    let mut outs = Tasks::default();
    if let Some(r) = exec.child.stdout.take() {
        outs.spawn(relay(r, stdout));
    }
    if let Some(r) = exec.child.stderr.take() {
        outs.spawn(relay(r, stderr));
    }
    outs.join().await;
    match exec.finish().await {
        Ok(code) => status.exit(code).await,
        Err(e) => status.error(&e.to_string()).await,
    }
    drop(tasks);
}

/// An attach session: the container's output as its monitor relays it, stdin and terminal
/// sizes to it; the status is success when the container's output ends.
pub async fn attach(container: &str, monitor: MonitorClient, s: Streams) {
    let Streams {
        stdin,
        mut stdout,
        mut stderr,
        resize,
        status,
    } = s;
    let (mut from_monitor, to_monitor) = match monitor.attach().await {
        Ok(c) => c,
        Err(e) => {
            return status
                .error(&format!("attaching to {container}: {e}"))
                .await
        }
    };
    let to_monitor = std::sync::Arc::new(tokio::sync::Mutex::new(to_monitor));
    let mut tasks = Tasks::default();
    if let Some(mut stdin) = stdin {
        let w = to_monitor.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = stdin.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if w.lock().await.stdin(&buf[..n]).await.is_err() {
                    return;
                }
            }
            let _ = w.lock().await.close_stdin().await;
        });
    }
    if let Some(mut rx) = resize {
        let w = to_monitor.clone();
        tasks.spawn(async move {
            while let Some((wd, h)) = rx.recv().await {
                let _ = w.lock().await.resize(wd, h).await;
            }
        });
    }
    while let Some((kind, data)) = from_monitor.next().await {
        let target = if kind == ATTACH_STDERR {
            stderr.as_mut()
        } else {
            stdout.as_mut()
        };
        if let Some(t) = target {
            if t.write_all(&data).await.is_err() {
                break;
            }
        }
    }
    for w in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = w.shutdown().await;
    }
    status.exit(0).await;
    drop(tasks);
}

/// A resize message: `{"Width":W,"Height":H}` (Kubernetes' TerminalSize).
pub fn parse_resize(d: &[u8]) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(d).ok()?;
    let w = u16::try_from(v["Width"].as_u64()?).ok()?;
    let h = u16::try_from(v["Height"].as_u64()?).ok()?;
    Some((w, h))
}

/// What a WebSocket client asked for.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    /// v5.channel.k8s.io: the client may close stdin on its own.
    pub v5: bool,
    /// A client that goes away ends stdin (exec); for attach only an explicit close does, so
    /// that a detaching client leaves the container's stdin open for the next one.
    pub stdin_ends_with_client: bool,
}

/// The WebSocket adapter: one connection's channels as [`Streams`], and the future that moves
/// the bytes — the client's messages to stdin (v5's close of stdin ending it) and resizes;
/// stdout, stderr and, once both have ended, the status to the client; then the close. Run the
/// session and the future together; the future ends when the session's streams are all done.
pub fn ws_streams<S>(
    websocket: tokio_tungstenite::WebSocketStream<S>,
    want: Want,
) -> (Streams, impl std::future::Future<Output = ()> + Send)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    const PIPE: usize = 64 * 1024;
    let (mut sink, mut source) = websocket.split();
    let (stdin_w, stdin_r) = tokio::io::duplex(PIPE);
    let (resize_tx, resize_rx) = mpsc::channel::<(u16, u16)>(8);
    let (out_w, out_r) = tokio::io::duplex(PIPE);
    let (err_w, err_r) = tokio::io::duplex(PIPE);
    let (status_w, mut status_r) = tokio::io::duplex(PIPE);
    let streams = Streams {
        stdin: want.stdin.then(|| Box::new(stdin_r) as Reader),
        stdout: want.stdout.then(|| Box::new(out_w) as Writer),
        stderr: (want.stderr && !want.tty).then(|| Box::new(err_w) as Writer),
        resize: want.tty.then_some(resize_rx),
        status: Status {
            w: Box::new(status_w),
            form: StatusForm::Json,
        },
    };
    let driver = async move {
        // Client → session.
        let mut reader = Tasks::default();
        reader.spawn(async move {
            let mut stdin = Some(stdin_w);
            while let Some(Ok(msg)) = source.next().await {
                let data = match msg {
                    Message::Binary(b) => b,
                    Message::Close(_) => break,
                    _ => continue,
                };
                match ws::split(&data) {
                    Some((ws::STDIN, d)) => {
                        if let Some(i) = stdin.as_mut() {
                            if i.write_all(d).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    Some((ws::CLOSE, [ws::STDIN])) if want.v5 => stdin = None,
                    Some((ws::RESIZE, d)) => {
                        if let Some(size) = parse_resize(d) {
                            let _ = resize_tx.try_send(size);
                        }
                    }
                    _ => {}
                }
            }
            if !want.stdin_ends_with_client && stdin.is_some() {
                // Held open until the session is over (this task is then dropped).
                std::future::pending::<()>().await;
            }
        });
        // Session → client: stdout and stderr as they come, the status after both.
        let (frames_tx, mut frames) = mpsc::channel::<Vec<u8>>(32);
        let mut pumps = Tasks::default();
        for (mut r, ch) in [(out_r, ws::STDOUT), (err_r, ws::STDERR)] {
            let tx = frames_tx.clone();
            pumps.spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 || tx.send(ws::frame(ch, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(frames_tx);
        while let Some(f) = frames.recv().await {
            if sink.send(Message::binary(f)).await.is_err() {
                break;
            }
        }
        // The client gone (or all output sent): the output pipes close, so a session still
        // writing ends, and its status follows.
        drop(frames);
        drop(pumps);
        let mut status = Vec::new();
        let _ = status_r.read_to_end(&mut status).await;
        if !status.is_empty() {
            let _ = sink
                .send(Message::binary(ws::frame(ws::ERROR, &status)))
                .await;
        }
        let _ = sink.close().await;
        drop(reader);
    };
    (streams, driver)
}

/// A port-forward to one port: the client's data stream relayed both ways to `port` in the
/// pod's network namespace (the host's loopback only for a host-network pod); a failure to
/// connect goes to the error stream, naming the port and the pod.
pub async fn forward_port<D>(
    netns: super::server::PodNetwork,
    pod: &str,
    port: u16,
    mut data: D,
    error: Option<Writer>,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    match super::server::connect_in_pod(netns, port).await {
        Ok(mut tcp) => {
            let _ = tokio::io::copy_bidirectional(&mut data, &mut tcp).await;
        }
        Err(e) => {
            if let Some(mut w) = error {
                let msg = format!("connecting to port {port} in pod {pod}: {e}");
                let _ = w.write_all(msg.as_bytes()).await;
                let _ = w.shutdown().await;
            }
        }
    }
    let _ = data.shutdown().await;
}

/// One forwarded port's streams, as the session sees them.
pub struct PortStreams {
    pub port: u16,
    pub data: tokio::io::DuplexStream,
    pub error: Writer,
}

/// The most ports one WebSocket port-forward session carries: the channel protocol numbers a
/// port's data and error channels 2i and 2i + 1 in one byte.
pub const MAX_PORTS: usize = 128;

/// The WebSocket adapter of port-forward (v4.channel.k8s.io): channels 2i (data) and 2i+1
/// (error) for the i-th port, each opened by the port number as two little-endian bytes. Run
/// the per-port sessions and the returned future together: it relays until every port's data
/// has ended or the client leaves, then lets the sessions finish and sends what they still
/// wrote on their error streams before closing.
pub fn ws_port_streams<S>(
    websocket: tokio_tungstenite::WebSocketStream<S>,
    ports: &[u16],
) -> (
    Vec<PortStreams>,
    impl std::future::Future<Output = ()> + Send,
)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    const PIPE: usize = 64 * 1024;
    let (mut sink, mut source) = websocket.split();
    let mut sessions = Vec::new();
    let mut ends = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        // At most MAX_PORTS ports (the URL and the query are checked): 2i + 1 fits a byte.
        let Ok(channel) = u8::try_from(2 * i) else {
            break;
        };
        let (session_data, adapter_data) = tokio::io::duplex(PIPE);
        let (error_w, error_r) = tokio::io::duplex(PIPE);
        sessions.push(PortStreams {
            port: *port,
            data: session_data,
            error: Box::new(error_w),
        });
        ends.push((channel, *port, adapter_data, error_r));
    }
    let driver = async move {
        let (data_tx, mut data_rx) = mpsc::channel::<Vec<u8>>(32);
        let (err_tx, mut err_rx) = mpsc::channel::<Vec<u8>>(8);
        let mut writers = std::collections::HashMap::new();
        let mut pumps = Tasks::default();
        for (data_ch, port, adapter_data, mut error_r) in ends {
            let err_ch = data_ch + 1;
            for ch in [data_ch, err_ch] {
                let _ = sink
                    .send(Message::binary(ws::frame(ch, &port.to_le_bytes())))
                    .await;
            }
            let (mut r, w) = tokio::io::split(adapter_data);
            writers.insert(data_ch, w);
            let tx = data_tx.clone();
            pumps.spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 || tx.send(ws::frame(data_ch, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            });
            let tx = err_tx.clone();
            pumps.spawn(async move {
                let mut msg = Vec::new();
                let _ = error_r.read_to_end(&mut msg).await;
                if !msg.is_empty() {
                    let _ = tx.send(ws::frame(err_ch, &msg)).await;
                }
            });
        }
        drop((data_tx, err_tx));
        // Until every port's data has ended, or the client leaves.
        loop {
            tokio::select! {
                f = data_rx.recv() => match f {
                    Some(f) => if sink.send(Message::binary(f)).await.is_err() { break },
                    None => break,
                },
                Some(f) = err_rx.recv() => {
                    if sink.send(Message::binary(f)).await.is_err() {
                        break;
                    }
                }
                m = source.next() => match m {
                    Some(Ok(Message::Binary(b))) => {
                        if let Some((ch, d)) = ws::split(&b) {
                            if let Some(w) = writers.get_mut(&ch) {
                                if w.write_all(d).await.is_err() {
                                    writers.remove(&ch);
                                }
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        // The client's side ends (shut down: a write half dropped would not end it), so the
        // sessions finish; what they still say is sent.
        for (_, mut w) in writers {
            let _ = w.shutdown().await;
        }
        drop(data_rx);
        while let Some(f) = err_rx.recv().await {
            let _ = sink.send(Message::binary(f)).await;
        }
        drop(pumps);
        let _ = sink.close().await;
    };
    (sessions, driver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[tokio::test]
    async fn plain_and_json_statuses() {
        for (form, code, want) in [
            (StatusForm::Json, 0, ws::exit_status(0)),
            (StatusForm::Json, 3, ws::exit_status(3)),
            (StatusForm::Plain, 0, String::new()),
            (
                StatusForm::Plain,
                3,
                "command terminated with non-zero exit code: 3".into(),
            ),
        ] {
            let (w, mut r) = tokio::io::duplex(1024);
            Status {
                w: Box::new(w),
                form,
            }
            .exit(code)
            .await;
            let mut got = String::new();
            r.read_to_string(&mut got).await.unwrap();
            assert_eq!(got, want, "{form:?} {code}");
        }
    }

    /// A client on one end of an in-memory WebSocket, the adapter on the other: what the
    /// client sends reaches the session's streams, and what the session writes reaches the
    /// client in order, the status last.
    #[tokio::test]
    async fn the_websocket_adapter_over_an_in_memory_connection() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let server =
            tokio_tungstenite::WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut client =
            tokio_tungstenite::WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let want = Want {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
            v5: true,
            stdin_ends_with_client: true,
        };
        let (mut s, driver) = ws_streams(server, want);
        assert!(s.stderr.is_none(), "a terminal has no stderr");
        let session = async move {
            let mut stdin = s.stdin.take().unwrap();
            let mut got = Vec::new();
            stdin.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello");
            let size = s.resize.as_mut().unwrap().recv().await;
            assert_eq!(size, Some((80, 24)));
            let mut out = s.stdout.take().unwrap();
            out.write_all(b"one ").await.unwrap();
            out.write_all(b"two").await.unwrap();
            drop(out);
            s.status.exit(7).await;
        };
        let client_side = async move {
            client
                .send(Message::binary(ws::frame(ws::STDIN, b"hello")))
                .await
                .unwrap();
            client
                .send(Message::binary(ws::frame(
                    ws::RESIZE,
                    br#"{"Width":80,"Height":24}"#,
                )))
                .await
                .unwrap();
            client
                .send(Message::binary(ws::frame(ws::CLOSE, &[ws::STDIN])))
                .await
                .unwrap();
            let mut out = Vec::new();
            let mut status = None;
            while let Some(Ok(m)) = client.next().await {
                if let Message::Binary(b) = m {
                    match ws::split(&b) {
                        Some((ws::STDOUT, d)) => {
                            assert!(status.is_none(), "output after the status");
                            out.extend_from_slice(d);
                        }
                        Some((ws::ERROR, d)) => status = Some(d.to_vec()),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            (out, status)
        };
        let ((), (), (out, status)) = tokio::join!(session, driver, client_side);
        assert_eq!(out, b"one two");
        assert_eq!(status.unwrap(), ws::exit_status(7).into_bytes());
    }

    /// Port-forward over an in-memory WebSocket: each channel opens with its port; what the
    /// client sends on a data channel reaches that port's session and back; an error written by
    /// a session reaches its error channel before the close.
    #[tokio::test]
    async fn the_port_forward_adapter_over_an_in_memory_connection() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let server =
            tokio_tungstenite::WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut client =
            tokio_tungstenite::WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let (ports, driver) = ws_port_streams(server, &[8080, 9090]);
        let sessions = async move {
            let mut it = ports.into_iter();
            let (echo, fail) = (it.next().unwrap(), it.next().unwrap());
            assert_eq!((echo.port, fail.port), (8080, 9090));
            let echo_session = async move {
                // An echo: what comes in goes back, until the client's side ends.
                let (mut r, mut w) = tokio::io::split(echo.data);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
                drop(echo.error);
            };
            let fail_session = async move {
                let mut e = fail.error;
                e.write_all(b"connecting to port 9090: refused")
                    .await
                    .unwrap();
                drop(e);
                drop(fail.data);
            };
            tokio::join!(echo_session, fail_session);
        };
        let client_side = async move {
            let mut got: std::collections::BTreeMap<u8, Vec<u8>> = Default::default();
            let mut opened = 0;
            while let Some(Ok(m)) = client.next().await {
                let Message::Binary(b) = m else { continue };
                let (ch, d) = ws::split(&b).unwrap();
                let entry = got.entry(ch).or_default();
                if entry.is_empty() && opened < 4 && d.len() == 2 {
                    opened += 1;
                    let port = u16::from_le_bytes([d[0], d[1]]);
                    assert_eq!(port, if ch < 2 { 8080 } else { 9090 });
                    entry.push(0xff);
                    if opened == 4 {
                        client
                            .send(Message::binary(ws::frame(0, b"ping")))
                            .await
                            .unwrap();
                    }
                    continue;
                }
                entry.extend_from_slice(d);
                if ch == 0 && entry.ends_with(b"ping") {
                    let _ = client.send(Message::Close(None)).await;
                }
            }
            got
        };
        let ((), (), got) = tokio::join!(sessions, driver, client_side);
        assert_eq!(
            got[&0], b"\xffping",
            "the echo came back on port 8080's data channel"
        );
        assert!(
            got[&3].ends_with(b"connecting to port 9090: refused"),
            "{:?}",
            String::from_utf8_lossy(&got[&3])
        );
    }
}
