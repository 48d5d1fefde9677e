//! Exec and port-forward over the streaming server, with a WebSocket client speaking the
//! Kubernetes channel protocols (v5 and v4.channel.k8s.io).

mod common;

use common::*;
use ferrio::cri::api;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

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
    let reg = Registry::shared();
    let d = Daemon::start(DaemonOpts::default());
    let image = reg.image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("stream", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container(
            "web",
            &image,
            "echo served > /tmp/index.html; httpd -f -p 8080 -h /tmp",
        ),
    )
    .await;
    let exec_url = |cmd: &[&str], stdin: bool| {
        let mut rt = rt.clone();
        let req = api::ExecRequest {
            container_id: id.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty: false,
            stdin,
            stdout: true,
            stderr: true,
        };
        async move { rt.exec(req).await.unwrap().into_inner().url }
    };

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
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
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
    rt.stop_pod_sandbox(api::StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    assert!(mounts_containing(&pod.id).is_empty() && processes_containing(&id).is_empty());
}
