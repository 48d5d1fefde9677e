//! The one client of a monitor's control socket: every request the daemon, its helpers and the
//! streaming server make of a monitor goes through here, typed, with one timeout policy and the
//! attach stream's frame codec (conmon-rs keeps the same shape: one client crate).
//!
//! Wire format (`proto`): one JSON request line, one JSON response line. Each request carries
//! the client's [`PROTOCOL`] as `v`, each response the monitor's; a monitor started by a
//! release before versioning answers without it (`v` = 0) and ignores the field, so a new
//! daemon restored over old monitors talks to them in the subset both know — every request up
//! to version 1 is understood by version-0 monitors unchanged.

use super::proto::{
    attach_frame, parse_attach_frame, Request, Response, ATTACH_CLOSE_STDIN, ATTACH_RESIZE,
    ATTACH_STDIN, MAX_ATTACH_FRAME,
};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// The protocol this build speaks. 0: monitors of releases before versioning.
pub const PROTOCOL: u32 = 1;

/// How long a request may take: the answer to anything but `Wait`, `Start` (which runs the
/// runtime's start) and `Kill` comes at once from a monitor that is not stuck.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request line: the request and this client's protocol version.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    #[serde(flatten)]
    req: &'a Request,
    v: u32,
}

fn request_line(req: &Request) -> io::Result<Vec<u8>> {
    let mut v = serde_json::to_vec(&Envelope { req, v: PROTOCOL }).map_err(io::Error::other)?;
    v.push(b'\n');
    Ok(v)
}

fn parse_response(line: &str) -> io::Result<Response> {
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the monitor closed the connection",
        ));
    }
    serde_json::from_str(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The longest response line read.
const MAX_LINE: u64 = 1 << 20;

/// Connects to a unix socket whatever the length of its path (see `monitor::socket_address`).
pub fn connect_blocking(socket: &Path) -> io::Result<std::os::unix::net::UnixStream> {
    let (_dir, addr) = super::socket_address(socket)?;
    std::os::unix::net::UnixStream::connect(addr)
}

/// [`connect_blocking`] for tokio.
pub async fn connect(socket: &Path) -> io::Result<tokio::net::UnixStream> {
    let (_dir, addr) = super::socket_address(socket)?;
    tokio::net::UnixStream::connect(addr).await
}

/// A monitor, by its control socket.
#[derive(Debug, Clone)]
pub struct MonitorClient {
    socket: PathBuf,
}

impl MonitorClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        MonitorClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// One request, blocking (for the helpers and blocking threads). `None` waits for ever.
    pub fn call_blocking(&self, req: &Request, timeout: Option<Duration>) -> io::Result<Response> {
        use std::io::{BufRead, Read, Write};
        let mut conn = connect_blocking(&self.socket)?;
        conn.set_read_timeout(timeout)?;
        conn.set_write_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(&request_line(req)?)?;
        let mut line = String::new();
        std::io::BufReader::new(&conn)
            .take(MAX_LINE)
            .read_line(&mut line)?;
        parse_response(&line)
    }

    /// One request on the async workers, without a blocking thread. `None` waits for ever.
    pub async fn call(&self, req: &Request, timeout: Option<Duration>) -> io::Result<Response> {
        let exchange = async {
            let mut conn = connect(&self.socket).await?;
            conn.write_all(&request_line(req)?).await?;
            let mut line = String::new();
            tokio::io::BufReader::new(conn)
                .take(MAX_LINE)
                .read_line(&mut line)
                .await?;
            parse_response(&line)
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} ms", t.as_millis()),
                )
            })?,
            None => exchange.await,
        }
    }

    pub async fn state(&self, timeout: Duration) -> io::Result<Response> {
        self.call(&Request::State, Some(timeout)).await
    }

    pub async fn start(&self, timeout: Duration) -> io::Result<Response> {
        self.call(&Request::Start, Some(timeout)).await
    }

    pub async fn kill(&self, signal: i32, all: bool, timeout: Duration) -> io::Result<Response> {
        self.call(&Request::Kill { signal, all }, Some(timeout))
            .await
    }

    pub async fn reopen_log(&self, timeout: Duration) -> io::Result<Response> {
        self.call(&Request::ReopenLog, Some(timeout)).await
    }

    pub async fn update(
        &self,
        resources: oci_spec::runtime::LinuxResources,
        timeout: Duration,
    ) -> io::Result<Response> {
        self.call(
            &Request::Update {
                resources: Box::new(resources),
            },
            Some(timeout),
        )
        .await
    }

    /// Answered when the container has exited (`None`: however long that takes).
    pub async fn wait(&self, timeout: Option<Duration>) -> io::Result<Response> {
        self.call(&Request::Wait, timeout).await
    }

    /// Turns a connection into an attach stream: the container's output comes as frames, its
    /// stdin and terminal size go as frames.
    pub async fn attach(&self) -> io::Result<(AttachOutput, AttachInput)> {
        let mut conn = connect(&self.socket).await?;
        conn.write_all(&request_line(&Request::Attach)?).await?;
        // The answer line, read byte by byte so no frame byte is taken with it.
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            if conn.read(&mut b).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the monitor closed the attach connection",
                ));
            }
            if b[0] == b'\n' {
                break;
            }
            line.push(b[0]);
            if line.len() as u64 > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an attach answer line over 1 MiB",
                ));
            }
        }
        let answer = parse_response(&String::from_utf8_lossy(&line))?;
        if let Some(e) = answer.error {
            return Err(io::Error::other(e));
        }
        let (r, w) = conn.into_split();
        Ok((AttachOutput { r, buf: Vec::new() }, AttachInput { w }))
    }
}

/// What the container writes, as the monitor relays it.
pub struct AttachOutput {
    r: tokio::net::unix::OwnedReadHalf,
    buf: Vec<u8>,
}

impl AttachOutput {
    /// The next frame: (kind — `ATTACH_STDOUT` or `ATTACH_STDERR` —, data); None at the end
    /// or on a frame the codec refuses.
    pub async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            match parse_attach_frame(&self.buf) {
                Ok(Some((kind, data, used))) => {
                    let out = (kind, data.to_vec());
                    self.buf.drain(..used);
                    return Some(out);
                }
                Ok(None) => {}
                Err(_) => return None,
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.r.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// What goes to the container: stdin, its end, terminal sizes.
pub struct AttachInput {
    w: tokio::net::unix::OwnedWriteHalf,
}

impl AttachInput {
    /// Sends `data` in frames of at most [`MAX_ATTACH_FRAME`] bytes (a WebSocket message can
    /// be larger).
    pub async fn stdin(&mut self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_ATTACH_FRAME) {
            self.w.write_all(&attach_frame(ATTACH_STDIN, chunk)).await?;
        }
        Ok(())
    }

    pub async fn close_stdin(&mut self) -> io::Result<()> {
        self.w
            .write_all(&attach_frame(ATTACH_CLOSE_STDIN, &[]))
            .await
    }

    pub async fn resize(&mut self, width: u16, height: u16) -> io::Result<()> {
        let size = format!("{{\"width\":{width},\"height\":{height}}}");
        self.w
            .write_all(&attach_frame(ATTACH_RESIZE, size.as_bytes()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_the_version_and_old_parsers_take_them() {
        for req in [
            Request::State,
            Request::Wait,
            Request::Kill {
                signal: 9,
                all: true,
            },
            Request::Update {
                resources: serde_json::from_value(serde_json::json!({"memory": {"limit": 1}}))
                    .map(Box::new)
                    .unwrap(),
            },
        ] {
            let line = request_line(&req).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(v["v"], PROTOCOL, "{v}");
            // What a monitor parses (the same type a version-0 monitor had): the extra
            // field is ignored, the request is the same.
            let back: Request = serde_json::from_slice(&line).unwrap();
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&req).unwrap()
            );
        }
        // A version-0 monitor's answer (no `v`) parses, as version 0.
        let r = parse_response(r#"{"pid":7,"started":true}"#).unwrap();
        assert_eq!((r.pid, r.started, r.v), (7, true, 0));
        assert!(parse_response("").is_err());
    }

    #[tokio::test]
    async fn a_request_and_an_attach_stream_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("monitor.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move {
            // State: answered at once. Attach: answered, then two frames out, frames in.
            let (c, _) = listener.accept().await.unwrap();
            let mut c = tokio::io::BufReader::new(c);
            let mut line = String::new();
            c.read_line(&mut line).await.unwrap();
            assert!(line.contains("\"op\":\"state\""), "{line}");
            c.get_mut()
                .write_all(b"{\"pid\":42,\"started\":true,\"v\":1}\n")
                .await
                .unwrap();
            let (c, _) = listener.accept().await.unwrap();
            let mut c = tokio::io::BufReader::new(c);
            let mut line = String::new();
            c.read_line(&mut line).await.unwrap();
            assert!(line.contains("\"op\":\"attach\""), "{line}");
            let mut out = b"{\"pid\":42}\n".to_vec();
            out.extend(attach_frame(super::super::proto::ATTACH_STDOUT, b"hello"));
            out.extend(attach_frame(super::super::proto::ATTACH_STDERR, b"oops"));
            c.get_mut().write_all(&out).await.unwrap();
            let mut got = vec![0u8; (5 + 2) + 5 + (5 + 24)];
            c.read_exact(&mut got).await.unwrap();
            got
        });
        let m = MonitorClient::new(&sock);
        let r = m.state(Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.pid, r.v), (42, 1));
        let (mut out, mut input) = m.attach().await.unwrap();
        assert_eq!(
            out.next().await,
            Some((super::super::proto::ATTACH_STDOUT, b"hello".to_vec()))
        );
        assert_eq!(
            out.next().await,
            Some((super::super::proto::ATTACH_STDERR, b"oops".to_vec()))
        );
        input.stdin(b"hi").await.unwrap();
        input.close_stdin().await.unwrap();
        input.resize(80, 24).await.unwrap();
        let got = server.await.unwrap();
        let mut want = attach_frame(ATTACH_STDIN, b"hi");
        want.extend(attach_frame(ATTACH_CLOSE_STDIN, b""));
        want.extend(attach_frame(ATTACH_RESIZE, b"{\"width\":80,\"height\":24}"));
        assert_eq!(got, want);
        assert_eq!(out.next().await, None, "the end of the stream");
    }

    #[tokio::test]
    async fn stdin_larger_than_a_frame_goes_in_several() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let mut input = AttachInput {
            w: a.into_split().1,
        };
        let data: Vec<u8> = (0..MAX_ATTACH_FRAME * 2 + 10)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let reader = tokio::spawn(async move {
            let mut b = b;
            let mut all = Vec::new();
            b.read_to_end(&mut all).await.unwrap();
            all
        });
        input.stdin(&data).await.unwrap();
        drop(input);
        let all = reader.await.unwrap();
        let (mut at, mut got, mut frames) = (0, Vec::new(), 0);
        while at < all.len() {
            let (kind, d, used) = parse_attach_frame(&all[at..]).unwrap().unwrap();
            assert_eq!(kind, ATTACH_STDIN);
            got.extend_from_slice(d);
            at += used;
            frames += 1;
        }
        assert_eq!(frames, 3);
        assert_eq!(got, data);
    }

    #[tokio::test]
    async fn a_monitor_that_does_not_answer_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("m.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let _keep = tokio::spawn(async move {
            let (_c, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let e = MonitorClient::new(&sock)
            .state(Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    }
}
