//! Exec and port-forward over the streaming server, with a WebSocket client speaking the
//! Kubernetes channel protocols (v5 and v4.channel.k8s.io).

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

/// An Exec URL for `cmd` in `container`, stdout and stderr apart, no TTY.
fn exec_url(
    mut rt: ferrio::cri::api::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    container: String,
    cmd: &[&str],
    stdin: bool,
) -> impl std::future::Future<Output = String> {
    let req = api::ExecRequest {
        container_id: container,
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: false,
        stdin,
        stdout: true,
        stderr: true,
    };
    async move { rt.exec(req).await.unwrap().into_inner().url }
}

/// A pod whose container serves `body` at http://127.0.0.1:8080/index.html (busybox httpd).
async fn web_pod(name: &str, body: &str) -> (Daemon, TestPod, String) {
    let (d, image, pcfg, pod) = setup_pod(name).await;
    let mut rt = d.runtime().await;
    let script = format!("echo {body} > /tmp/index.html; httpd -f -p 8080 -h /tmp");
    let id = create_start(&mut rt, &pod, &pcfg, sh_container("web", &image, &script)).await;
    (d, pod, id)
}

/// An Attach URL for `container`: stdin, stdout and stderr, no TTY.
async fn attach_url(
    mut rt: ferrio::cri::api::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    container: String,
) -> String {
    rt.attach(api::AttachRequest {
        container_id: container,
        stdin: true,
        tty: false,
        stdout: true,
        stderr: true,
    })
    .await
    .unwrap()
    .into_inner()
    .url
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, protocol: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = url.replacen("http://", "ws://", 1);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

/// Reads channel messages until the error channel (3) arrives: (stdout, stderr, status JSON).
async fn collect(ws: &mut Ws) -> (String, String, serde_json::Value) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(20), ws.next())
            .await
            .expect("a message within 20 s")
            .expect("the stream goes on")
            .unwrap();
        let Message::Binary(b) = msg else { continue };
        match b.split_first() {
            Some((1, d)) => out.extend_from_slice(d),
            Some((2, d)) => err.extend_from_slice(d),
            Some((3, d)) => {
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    String::from_utf8_lossy(&err).into_owned(),
                    serde_json::from_slice(d).unwrap(),
                )
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_and_port_forward_over_websocket() {
    e2e!();
    let (d, pod, id) = web_pod("stream", "served").await;
    let mut rt = d.runtime().await;
    let exec_url = |cmd: &[&str], stdin: bool| exec_url(rt.clone(), id.clone(), cmd, stdin);

    // Output on both streams and the exit code in the error channel's Status (v5).
    let url = exec_url(&["sh", "-c", "echo out; echo err >&2; exit 7"], false).await;
    let mut ws = connect(&url, "v5.channel.k8s.io").await.unwrap();
    let (out, err, status) = collect(&mut ws).await;
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
    // The URL was single-use.
    assert!(
        connect(&url, "v5.channel.k8s.io").await.is_err(),
        "a token used twice"
    );

    // stdin piped through, closed with v5's close signal.
    let url = exec_url(&["sh", "-c", "tr a-z A-Z"], true).await;
    let mut ws = connect(&url, "v5.channel.k8s.io").await.unwrap();
    ws.send(Message::binary(b"\x00hello stdin\n".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(vec![255u8, 0])).await.unwrap();
    let (out, _, status) = collect(&mut ws).await;
    assert_eq!(out, "HELLO STDIN\n");
    assert_eq!(status["status"], "Success");

    // v4, and a client that disconnects abruptly mid-session leaves everything healthy.
    let url = exec_url(&["sh", "-c", "sleep 2; echo late"], false).await;
    let ws = connect(&url, "v4.channel.k8s.io").await.unwrap();
    drop(ws);
    let url = exec_url(&["echo", "still fine"], false).await;
    let mut ws = connect(&url, "v4.channel.k8s.io").await.unwrap();
    assert_eq!(collect(&mut ws).await.0, "still fine\n");

    // Malformed requests: no upgrade, unknown protocol, unknown token, SPDY.
    let host = host_of(&url);
    for req in [
        "GET /exec/abc HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /exec/abc HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n",
        "\x16\x03garbage\r\n\r\n",
    ] {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&host).unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        c.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp);
        assert!(!resp.starts_with("HTTP/1.1 101"), "{resp}");
    }
    let url = exec_url(&["true"], false).await;
    assert!(connect(&url, "base64.channel.k8s.io").await.is_err());
    let bogus = url.rsplit_once('/').unwrap().0.to_string() + "/0000";
    assert!(connect(&bogus, "v5.channel.k8s.io").await.is_err());

    // More ports than the channel protocol numbers (2i, 2i + 1 in a byte) is refused, in the
    // request and in the URL's query.
    let st = rt
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: (1..=129).collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("at most 128"), "{st:?}");
    let pf = rt
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let many: Vec<String> = (1..=129).map(|p| format!("port={p}")).collect();
    assert!(
        connect(&format!("{pf}?{}", many.join("&")), "v4.channel.k8s.io")
            .await
            .is_err()
    );

    // Port-forward to the container's httpd inside the pod's network namespace.
    let pf = rt
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut ws = connect(&format!("{pf}?port=8080"), "v4.channel.k8s.io")
        .await
        .unwrap();
    let mut body = Vec::new();
    let mut sent = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await;
        let Ok(Some(Ok(Message::Binary(b)))) = msg else {
            break;
        };
        match b.split_first() {
            // The first message of each channel is the port (little-endian).
            Some((0, d)) if d == 8080u16.to_le_bytes() && !sent => {
                ws.send(Message::binary(
                    b"\x00GET /index.html HTTP/1.0\r\n\r\n".to_vec(),
                ))
                .await
                .unwrap();
                sent = true;
            }
            Some((0, d)) => {
                body.extend_from_slice(d);
                if String::from_utf8_lossy(&body).contains("served") {
                    break;
                }
            }
            Some((1, d)) if d.len() > 2 => {
                panic!("port-forward error: {}", String::from_utf8_lossy(d))
            }
            _ => {}
        }
    }
    assert!(
        String::from_utf8_lossy(&body).contains("served"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // The container and the server are fine after all that.
    let (out, _, code) = sh_in(&mut rt, &id, "echo ok").await;
    assert_eq!((out.as_str(), code), ("ok", 0));
    finish_pod(&d, &pod).await;
}

/// A minimal SPDY/3.1 client, as kubectl and crictl speak it (moby/spdystream): the HTTP/1.1
/// upgrade, then SYN_STREAMs with `streamtype` headers and DATA frames.
mod spdy_client {
    use bytes::{Bytes, BytesMut};
    use ferrio::streaming::spdy::frame::{self, Frame, FrameHead, Limits};
    use ferrio::streaming::spdy::header::{HeaderDecoder, HeaderEncoder, Headers};
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Client {
        io: tokio::net::TcpStream,
        enc: HeaderEncoder,
        dec: HeaderDecoder,
        pub protocol: String,
    }

    impl Client {
        /// Upgrades `url` offering `protocols`; Err(status line + body) when refused.
        pub async fn connect(url: &str, protocols: &[&str]) -> Result<Client, String> {
            let rest = url.trim_start_matches("http://");
            let (host, path) = rest.split_once('/').unwrap();
            let mut io = tokio::net::TcpStream::connect(host).await.unwrap();
            let mut req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n");
            for p in protocols {
                req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
            }
            req.push_str("\r\n");
            io.write_all(req.as_bytes()).await.unwrap();
            // Read the response head byte by byte: SPDY frames may follow it at once.
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                if io.read(&mut b).await.unwrap() == 0 {
                    return Err(String::from_utf8_lossy(&head).into_owned());
                }
                head.push(b[0]);
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            if !text.starts_with("HTTP/1.1 101") {
                let mut body = vec![0u8; 512];
                let n = io.read(&mut body).await.unwrap_or(0);
                return Err(text + &String::from_utf8_lossy(&body[..n]));
            }
            let protocol = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("x-stream-protocol-version:")
                        .map(|v| v.trim().to_string())
                })
                .unwrap_or_default();
            Ok(Client {
                io,
                enc: HeaderEncoder::new(),
                dec: HeaderDecoder::new(1 << 20),
                protocol,
            })
        }

        pub async fn send(&mut self, f: Frame) {
            let mut out = BytesMut::new();
            frame::encode(&f, &mut self.enc, &mut out).unwrap();
            self.io.write_all(&out).await.unwrap();
        }

        pub async fn open(&mut self, id: u32, headers: &[(&str, &str)], fin: bool) {
            let mut h = Headers::new();
            for (k, v) in headers {
                h.insert(k, *v).unwrap();
            }
            self.send(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                slot: 0,
                fin,
                unidirectional: false,
                headers: h,
            })
            .await;
        }

        pub async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
            self.send(Frame::Data {
                stream_id: id,
                fin,
                data: Bytes::copy_from_slice(data),
            })
            .await;
        }

        pub async fn next(&mut self) -> Option<Frame> {
            let mut h = [0u8; 8];
            self.io.read_exact(&mut h).await.ok()?;
            let limits = Limits {
                max_control_frame: 1 << 20,
                max_data_frame: 1 << 20,
            };
            let head = FrameHead::parse(h, &limits).unwrap();
            let len = match head {
                FrameHead::Control { len, .. } | FrameHead::Data { len, .. } => len,
            };
            let mut payload = vec![0u8; len];
            self.io.read_exact(&mut payload).await.ok()?;
            Some(frame::decode(head, Bytes::from(payload), &mut self.dec).unwrap())
        }

        /// Reads until stream `until` ends (FIN or reset), collecting each stream's data.
        pub async fn collect(&mut self, until: u32) -> HashMap<u32, Vec<u8>> {
            let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
            loop {
                let f = tokio::time::timeout(std::time::Duration::from_secs(20), self.next())
                    .await
                    .expect("a frame within 20 s")
                    .expect("the connection goes on");
                match f {
                    Frame::Data {
                        stream_id,
                        fin,
                        data,
                    } => {
                        got.entry(stream_id).or_default().extend_from_slice(&data);
                        if fin && stream_id == until {
                            return got;
                        }
                    }
                    Frame::SynReply {
                        stream_id,
                        fin: true,
                        ..
                    } if stream_id == until => return got,
                    Frame::RstStream { stream_id, .. } if stream_id == until => return got,
                    Frame::Ping { id } => self.send(Frame::Ping { id }).await,
                    _ => {}
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_and_port_forward_over_spdy() {
    e2e!();
    use spdy_client::Client;
    let (d, pod, id) = web_pod("spdy", "spdy-served").await;
    let mut rt = d.runtime().await;
    let exec_url = |cmd: &[&str], stdin: bool| exec_url(rt.clone(), id.clone(), cmd, stdin);

    // Exit code and both streams (v4: a Status on the error stream).
    let url = exec_url(&["sh", "-c", "echo out; echo err >&2; exit 5"], false).await;
    let mut c = Client::connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(c.protocol, "v4.channel.k8s.io");
    c.open(1, &[("streamtype", "error")], true).await;
    c.open(3, &[("streamtype", "stdout")], true).await;
    c.open(5, &[("streamtype", "stderr")], true).await;
    let got = c.collect(1).await;
    assert_eq!(
        got.get(&3)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .as_deref(),
        Some("out\n")
    );
    assert_eq!(
        got.get(&5)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .as_deref(),
        Some("err\n")
    );
    let status: serde_json::Value = serde_json::from_slice(got.get(&1).unwrap()).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "5", "{status}");

    // stdin through, closed by FIN.
    let url = exec_url(&["tr", "a-z", "A-Z"], true).await;
    let mut c = Client::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    c.open(1, &[("streamtype", "error")], true).await;
    c.open(3, &[("streamtype", "stdin")], false).await;
    c.open(5, &[("streamtype", "stdout")], true).await;
    c.open(7, &[("streamtype", "stderr")], true).await;
    c.data(3, b"spdy stdin\n", true).await;
    let got = c.collect(1).await;
    assert_eq!(
        String::from_utf8_lossy(got.get(&5).unwrap()),
        "SPDY STDIN\n"
    );
    let status: serde_json::Value = serde_json::from_slice(got.get(&1).unwrap()).unwrap();
    assert_eq!(status["status"], "Success");

    // A terminal: stdin, stdout and resize streams (no stderr with a TTY).
    let url = {
        let mut rt = rt.clone();
        rt.exec(api::ExecRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "read x; stty size; echo tty $x".into(),
            ],
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .await
        .unwrap()
        .into_inner()
        .url
    };
    let mut c = Client::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    c.open(1, &[("streamtype", "error")], true).await;
    c.open(3, &[("streamtype", "stdin")], false).await;
    c.open(5, &[("streamtype", "stdout")], true).await;
    c.open(7, &[("streamtype", "resize")], false).await;
    c.data(7, b"{\"Width\":90,\"Height\":25}\n", false).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    c.data(3, b"on\r", false).await;
    let got = c.collect(1).await;
    let out =
        String::from_utf8_lossy(got.get(&5).map(|v| v.as_slice()).unwrap_or(b"")).into_owned();
    assert!(out.contains("25 90") && out.contains("tty on"), "{out:?}");

    // The oldest remotecommand protocol (v1, `channel.k8s.io`): plain text on the error stream.
    let url = exec_url(&["sh", "-c", "exit 4"], false).await;
    let mut c = Client::connect(&url, &["channel.k8s.io"]).await.unwrap();
    assert_eq!(c.protocol, "channel.k8s.io");
    c.open(1, &[("streamtype", "error")], true).await;
    c.open(3, &[("streamtype", "stdout")], true).await;
    c.open(5, &[("streamtype", "stderr")], true).await;
    let got = c.collect(1).await;
    assert!(String::from_utf8_lossy(got.get(&1).unwrap()).contains("non-zero exit code: 4"));

    // A protocol we do not speak is refused, and a token cannot be reused.
    let url = exec_url(&["true"], false).await;
    assert!(Client::connect(&url, &["v9.channel.k8s.io"]).await.is_err());
    assert!(
        Client::connect(&url, &["v4.channel.k8s.io"]).await.is_err(),
        "used token"
    );

    // Port-forward: an error and a data stream per request id.
    let pf = rt
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut c = Client::connect(&pf, &["portforward.k8s.io"]).await.unwrap();
    c.open(
        1,
        &[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0"),
        ],
        true,
    )
    .await;
    c.open(
        3,
        &[("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
        false,
    )
    .await;
    c.data(3, b"GET /index.html HTTP/1.0\r\n\r\n", false).await;
    let got = c.collect(3).await;
    assert!(String::from_utf8_lossy(got.get(&3).unwrap()).contains("spdy-served"));

    let (out, _, _) = sh_in(&mut rt, &id, "echo healthy").await;
    assert_eq!(out, "healthy");
    finish_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tty_exec_with_resize_over_websocket() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("tty").await;
    let mut rt = d.runtime().await;
    let id = create_start(&mut rt, &pod, &pcfg, sh_container("t", &image, "sleep 300")).await;
    let url = rt
        .exec(api::ExecRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "read x; stty size; tty; echo got $x; exit 3".into(),
            ],
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut ws = connect(&url, "v5.channel.k8s.io").await.unwrap();
    ws.send(Message::binary(
        [&[4u8][..], br#"{"Width":100,"Height":30}"#].concat(),
    ))
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    ws.send(Message::binary(b"\x00hello\r".to_vec()))
        .await
        .unwrap();
    let (out, _, status) = collect(&mut ws).await;
    assert!(
        out.contains("30 100"),
        "stty size after the resize: {out:?}"
    );
    assert!(out.contains("/dev/pts/"), "a terminal: {out:?}");
    assert!(out.contains("got hello"), "{out:?}");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
    let (out, _, _) = sh_in(&mut rt, &id, "echo fine").await;
    assert_eq!(out, "fine");
    finish_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_to_a_container_with_stdin_twice() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("attach").await;
    let mut rt = d.runtime().await;
    let mut c = sh_container("cat", &image, "cat");
    c.stdin = true;
    c.command = vec!["cat".into()];
    let id = create_start(&mut rt, &pod, &pcfg, c).await;
    let attach_url = || attach_url(rt.clone(), id.clone());
    let mut a = connect(&attach_url().await, "v5.channel.k8s.io")
        .await
        .unwrap();
    let mut b = connect(&attach_url().await, "v4.channel.k8s.io")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    a.send(Message::binary(b"\x00through attach\n".to_vec()))
        .await
        .unwrap();
    // Both attachers see the container's output.
    for ws in [&mut a, &mut b] {
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("through attach") {
            let m = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Binary(d) = m {
                if d.first() == Some(&1) {
                    got.extend_from_slice(&d[1..]);
                }
            }
        }
    }
    // v5's close of stdin ends `cat`, the container exits, the attach streams end with Success.
    a.send(Message::binary(vec![255u8, 0])).await.unwrap();
    let (_, _, status) = collect(&mut a).await;
    assert_eq!(status["status"], "Success");
    let st = wait_exited(&mut rt, &id, 10).await;
    assert_eq!(st.exit_code, 0);
    let log = std::fs::read_to_string(d.dir.path().join("logs/cat.log")).unwrap();
    assert!(
        log.contains("through attach"),
        "the CRI log is still written: {log}"
    );
    finish_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_over_spdy() {
    e2e!();
    use spdy_client::Client;
    let (d, image, pcfg, pod) = setup_pod("spdyattach").await;
    let mut rt = d.runtime().await;
    let mut c = sh_container("cat", &image, "cat");
    c.stdin = true;
    c.command = vec!["cat".into()];
    let id = create_start(&mut rt, &pod, &pcfg, c).await;
    let url = rt
        .attach(api::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut c = Client::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    c.open(1, &[("streamtype", "error")], true).await;
    c.open(3, &[("streamtype", "stdin")], false).await;
    c.open(5, &[("streamtype", "stdout")], true).await;
    c.open(7, &[("streamtype", "stderr")], true).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.data(3, b"spdy attach\n", true).await;
    let got = c.collect(1).await;
    assert_eq!(
        String::from_utf8_lossy(got.get(&5).unwrap()),
        "spdy attach\n"
    );
    let status: serde_json::Value = serde_json::from_slice(got.get(&1).unwrap()).unwrap();
    assert_eq!(status["status"], "Success");
    assert_eq!(wait_exited(&mut rt, &id, 10).await.exit_code, 0);
    finish_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_streaming_server_speaks_tls_when_configured() {
    e2e!();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let d = Daemon::start(DaemonOpts {
        extra_config: format!(
            "[streaming]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        ..Default::default()
    });
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let mut rt = d.runtime().await;
    let pcfg = pod_config("tls", &d.dir.path().join("logs"));
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let id = create_start(&mut rt, &pod, &pcfg, sh_container("s", &image, "sleep 300")).await;
    let url = exec_url(rt.clone(), id.clone(), &["true"], false).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // A client that trusts the certificate completes the handshake; the server then answers
    // this non-upgrade request plainly.
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "%{http_code}", "--cacert"])
        .arg(&cert)
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("400") && text.contains("upgrade"), "{text}");
    // A client that never starts its handshake is closed after the handshake timeout.
    let host = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap();
    assert_closed_soon(host, b"").await;
    finish_pod(&d, &pod).await;
}

/// The `host:port` of a streaming URL.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap().to_string()
}

/// Connects to `host`, sends `first` and then nothing: the server must close the connection
/// within its 10 s limit (20 s allowed here).
async fn assert_closed_soon(host: &str, first: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(host).await.unwrap();
    c.write_all(first).await.unwrap();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a client that sent {first:?} was still connected after 20 s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_trickling_clients_are_closed() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("slow").await;
    let mut rt = d.runtime().await;
    let id = create_start(&mut rt, &pod, &pcfg, sh_container("s", &image, "sleep 300")).await;
    let url = exec_url(rt.clone(), id, &["true"], false).await;
    let host = host_of(&url);
    let (a, b) = tokio::join!(
        assert_closed_soon(&host, b""),
        assert_closed_soon(&host, b"GET /exec/x HTTP/1.1\r\nHost: a\r\n"),
    );
    let ((), ()) = (a, b);
    // 256 open connections are the limit: the next one is closed at once, long before the
    // header timeout; once they go, connections are served again.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut held = Vec::new();
    for _ in 0..256 {
        held.push(tokio::net::TcpStream::connect(&host).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut extra = tokio::net::TcpStream::connect(&host).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(std::time::Duration::from_secs(3), extra.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "the 257th connection was not closed at once: {r:?}"
    );
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut c = tokio::net::TcpStream::connect(&host).await.unwrap();
    c.write_all(b"GET /nothing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    finish_pod(&d, &pod).await;
}

/// A port-forward whose pod is gone by the time the stream connects is refused on the error
/// channel and never reaches the host's loopback (where this test listens on the same port).
#[tokio::test(flavor = "multi_thread")]
async fn port_forward_to_a_gone_pod_never_reaches_the_host() {
    e2e!();
    let (d, _image, _pcfg, pod) = setup_pod("pfgone").await;
    let mut rt = d.runtime().await;
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();
    let pf = rt
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![port as i32],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    finish_pod(&d, &pod).await;
    let mut ws = connect(&format!("{pf}?port={port}"), "v4.channel.k8s.io")
        .await
        .unwrap();
    let mut error = String::new();
    while let Ok(Some(Ok(msg))) =
        tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await
    {
        if let Message::Binary(b) = msg {
            if let Some((1, e)) = b.split_first() {
                if e.len() > 2 {
                    error = String::from_utf8_lossy(e).into_owned();
                    break;
                }
            }
        }
    }
    assert!(
        error.contains("gone"),
        "no refusal on the error channel: {error:?}"
    );
    assert!(
        host.accept().is_err(),
        "the port-forward reached the host's loopback"
    );
}

/// Reads until the server closes the connection; how long that took (None: not within `max`).
async fn ws_closed_after(mut ws: Ws, max: std::time::Duration) -> Option<std::time::Duration> {
    let t = std::time::Instant::now();
    tokio::time::timeout(max, async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await
    .ok()
    .map(|()| t.elapsed())
}

async fn spdy_closed_after(
    mut c: spdy_client::Client,
    max: std::time::Duration,
) -> Option<std::time::Duration> {
    let t = std::time::Instant::now();
    tokio::time::timeout(max, async { while c.next().await.is_some() {} })
        .await
        .ok()
        .map(|()| t.elapsed())
}

/// With `idle_timeout = 3`, every kind of session on both transports — exec, attach and
/// port-forward over WebSocket and SPDY — is closed about 3 s after its last byte, the exec'd
/// process with it; a session with traffic stays.
#[tokio::test(flavor = "multi_thread")]
async fn every_session_kind_and_transport_closes_when_idle() {
    e2e!();
    use spdy_client::Client;
    use std::time::Duration;
    let d = Daemon::start(DaemonOpts {
        extra_config: "[streaming]\nidle_timeout = 3\n".into(),
        ..Default::default()
    });
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let pcfg = pod_config("idle", &d.dir.path().join("logs"));
    let mut rt = d.runtime().await;
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let web = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("web", &image, "httpd -f -p 8080 -h /tmp"),
    )
    .await;
    let mut cat = sh_container("cat", &image, "cat");
    cat.stdin = true;
    cat.command = vec!["cat".into()];
    let cat = create_start(&mut rt, &pod, &pcfg, cat).await;
    let attach_url = |rt| attach_url(rt, cat.clone());
    let pf_url =
        |mut rt: api::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>| {
            let pod = pod.id.clone();
            async move {
                rt.port_forward(api::PortForwardRequest {
                    pod_sandbox_id: pod,
                    port: vec![8080],
                })
                .await
                .unwrap()
                .into_inner()
                .url
            }
        };
    let max = Duration::from_secs(20);

    let ws_exec = connect(
        &exec_url(rt.clone(), web.clone(), &["sleep", "321"], false).await,
        "v4.channel.k8s.io",
    )
    .await
    .unwrap();
    let ws_attach = connect(&attach_url(rt.clone()).await, "v4.channel.k8s.io")
        .await
        .unwrap();
    let ws_pf = connect(&pf_url(rt.clone()).await, "v4.channel.k8s.io")
        .await
        .unwrap();
    let mut spdy_exec = Client::connect(
        &exec_url(rt.clone(), web.clone(), &["sleep", "322"], false).await,
        &["v4.channel.k8s.io"],
    )
    .await
    .unwrap();
    spdy_exec.open(1, &[("streamtype", "error")], true).await;
    spdy_exec.open(3, &[("streamtype", "stdout")], true).await;
    spdy_exec.open(5, &[("streamtype", "stderr")], true).await;
    let mut spdy_attach = Client::connect(&attach_url(rt.clone()).await, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    spdy_attach.open(1, &[("streamtype", "error")], true).await;
    spdy_attach.open(3, &[("streamtype", "stdin")], false).await;
    spdy_attach.open(5, &[("streamtype", "stdout")], true).await;
    spdy_attach.open(7, &[("streamtype", "stderr")], true).await;
    let mut spdy_pf = Client::connect(&pf_url(rt.clone()).await, &["portforward.k8s.io"])
        .await
        .unwrap();
    let pf_headers = |t| [("streamtype", t), ("port", "8080"), ("requestid", "0")];
    spdy_pf.open(1, &pf_headers("error"), true).await;
    spdy_pf.open(3, &pf_headers("data"), false).await;
    // A session with output every second is not idle.
    let busy = connect(
        &exec_url(
            rt.clone(),
            web.clone(),
            &[
                "sh",
                "-c",
                "for i in 1 2 3 4 5 6 7; do echo $i; sleep 1; done",
            ],
            false,
        )
        .await,
        "v4.channel.k8s.io",
    )
    .await
    .unwrap();

    let (a, b, c, e, f, g, h) = tokio::join!(
        ws_closed_after(ws_exec, max),
        ws_closed_after(ws_attach, max),
        ws_closed_after(ws_pf, max),
        spdy_closed_after(spdy_exec, max),
        spdy_closed_after(spdy_attach, max),
        spdy_closed_after(spdy_pf, max),
        ws_closed_after(busy, max),
    );
    for (kind, t) in [
        ("websocket exec", a),
        ("websocket attach", b),
        ("websocket port-forward", c),
        ("spdy exec", e),
        ("spdy attach", f),
        ("spdy port-forward", g),
    ] {
        let t = t.unwrap_or_else(|| panic!("the idle {kind} session was open after 20 s"));
        assert!(
            t >= Duration::from_millis(2500) && t < Duration::from_secs(10),
            "the idle {kind} session closed after {t:?}"
        );
    }
    let h = h.expect("the busy session ended");
    assert!(
        h >= Duration::from_secs(6),
        "the busy session closed after {h:?}"
    );
    // The idle exec sessions' processes went with them; the containers live on.
    let gone = async {
        for _ in 0..50 {
            if processes_containing("sleep 32").is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(gone.await, "{:?}", processes_containing("sleep 32"));
    let (out, _, _) = sh_in(&mut rt, &web, "echo alive").await;
    assert_eq!(out, "alive");
    finish_pod(&d, &pod).await;
}

/// The monitor of a container, by the run dir in its command line (once the processes that
/// start as its copies have exec'd or gone).
async fn monitor_of(d: &Daemon, id: &str) -> i32 {
    let run = d.dir.path().join("run/ctr").join(id);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<(i32, String)> = processes_containing("__monitor")
            .into_iter()
            .filter(|(_, cmd)| cmd.contains(&run.display().to_string()))
            .collect();
        if found.len() == 1 {
            return found[0].0;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "one monitor for {id}: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_the_container_never_reads_does_not_block_its_monitor() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("deafstdin").await;
    let mut rt = d.runtime().await;
    let mut c = sh_container("deaf", &image, "exec sleep 300");
    c.stdin = true;
    let id = create_start(&mut rt, &pod, &pcfg, c).await;
    let mut ws = connect(
        &attach_url(rt.clone(), id.clone()).await,
        "v4.channel.k8s.io",
    )
    .await
    .unwrap();
    // 1 MB for a stdin nobody reads, from a task of its own: the sender may be slowed.
    let sender = tokio::spawn(async move {
        let chunk = [vec![0u8], vec![b'x'; 16 << 10]].concat();
        for _ in 0..64 {
            if ws.send(Message::binary(chunk.clone())).await.is_err() {
                break;
            }
        }
        ws
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The monitor still answers (the admin status asks it), and Stop works within its timeout.
    let t = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrio"))
        .arg("--listen")
        .arg(&d.socket)
        .args(["status", "containers", &id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the monitor answered in {:?}: {text}",
        t.elapsed()
    );
    let t = std::time::Instant::now();
    rt.stop_container(api::StopContainerRequest {
        container_id: id.clone(),
        timeout: 2,
    })
    .await
    .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "StopContainer took {:?}",
        t.elapsed()
    );
    let st = wait_exited(&mut rt, &id, 10).await;
    assert_eq!(st.exit_code, 137, "SIGKILL after the 2 s timeout: {st:?}");
    sender.abort();
    finish_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_monitor_that_does_not_answer_is_not_declared_dead_and_stop_still_works() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("stuckmonitor").await;
    let mut rt = d.runtime().await;
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("sleeper", &image, "exec sleep 300"),
    )
    .await;
    let monitor = nix::unistd::Pid::from_raw(monitor_of(&d, &id).await);
    // Continued whatever happens, so that a failing test leaves no stopped monitor.
    struct Continue(nix::unistd::Pid);
    impl Drop for Continue {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
        }
    }
    let resume = Continue(monitor);
    nix::sys::signal::kill(monitor, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // A restart while the monitor cannot answer: the container is still running.
    let mut d = d;
    d.kill9();
    let d = d.restart(DaemonOpts::default());
    let mut rt = d.runtime().await;
    let st = ctr_status(&mut rt, &id).await;
    assert_eq!(
        st.state,
        api::ContainerState::ContainerRunning as i32,
        "{st:?}\n{}",
        d.log_text()
    );
    // Stop reaches the init without the monitor.
    let t = std::time::Instant::now();
    let stopped = rt
        .stop_container(api::StopContainerRequest {
            container_id: id.clone(),
            timeout: 2,
        })
        .await;
    let took = t.elapsed();
    drop(resume);
    stopped.unwrap();
    assert!(
        took < Duration::from_secs(10),
        "StopContainer took {took:?}"
    );
    // Once the monitor runs again it records the exit.
    let st = wait_exited(&mut rt, &id, 20).await;
    assert_eq!(st.exit_code, 137, "{st:?}");
    finish_pod(&d, &pod).await;
}
