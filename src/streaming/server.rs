//! The HTTP side: single-use tokens, the upgrade to WebSocket, and the exec and port-forward
//! sessions relayed over the channel protocol (see `ws`).

use super::idle::{Tasks, Tracked};
use super::session;
use super::spdy::conn::SpdyStream;
use super::ws;
use crate::engine::{Engine, EngineError};
use crate::monitor::client::MonitorClient;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// What a token stands for.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec {
        container: String,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    PortForward {
        pod: String,
        ports: Vec<u16>,
    },
    Attach {
        container: String,
        sock: std::path::PathBuf,
        tty: bool,
    },
}

/// A client must send a whole request head this soon after connecting (or after its previous
/// request), and finish a TLS handshake this soon: a silent or trickling client holds no
/// connection for longer.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections at most (sessions included); more are closed as they arrive.
const MAX_CONNECTIONS: usize = 256;

pub struct Streaming {
    addr: SocketAddr,
    scheme: &'static str,
    engine: Arc<Engine>,
    tokens: Mutex<HashMap<String, (Pending, Instant)>>,
    ttl: Duration,
    idle: Option<Duration>,
}

type Body = Full<Bytes>;

fn plain(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into())));
    *r.status_mut() = code;
    r
}

/// The TLS acceptor when the config names a certificate and key (both or neither).
fn tls_acceptor(
    cfg: &crate::config::StreamingConfig,
) -> std::io::Result<Option<tokio_rustls::TlsAcceptor>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = (&cfg.tls_cert, &cfg.tls_key);
    if cert.as_os_str().is_empty() && key.as_os_str().is_empty() {
        return Ok(None);
    }
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    if cert.as_os_str().is_empty() || key.as_os_str().is_empty() {
        return Err(bad(
            "streaming.tls_cert and streaming.tls_key go together".into()
        ));
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect())
        .map_err(|e| bad(format!("{}: {e}", cert.display())))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| bad(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(format!("streaming TLS: {e}")))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

impl Streaming {
    /// Binds the server and serves it in the background.
    pub async fn start(
        cfg: &crate::config::StreamingConfig,
        engine: Arc<Engine>,
    ) -> std::io::Result<Arc<Streaming>> {
        let tls = tls_acceptor(cfg)?;
        let listener = tokio::net::TcpListener::bind((cfg.address.as_str(), cfg.port)).await?;
        let s = Arc::new(Streaming {
            addr: listener.local_addr()?,
            scheme: if tls.is_some() { "https" } else { "http" },
            engine,
            tokens: Mutex::default(),
            ttl: Duration::from_secs(cfg.token_ttl.max(1)),
            idle: (cfg.idle_timeout > 0).then(|| Duration::from_secs(cfg.idle_timeout)),
        });
        tracing::info!(address = %s.addr, "streaming server listening");
        let server = s.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Past the limit a connection is closed at once, before anything is read.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, limit = MAX_CONNECTIONS, "streaming connection refused: too many open");
                    drop(stream);
                    continue;
                };
                let server = server.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let svc = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, std::convert::Infallible>(server.route(req)) }
                    });
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT);
                    let done = match tls {
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                                .unwrap_or_else(|_| {
                                    Err(std::io::Error::new(
                                        std::io::ErrorKind::TimedOut,
                                        "TLS handshake timed out",
                                    ))
                                }) {
                                Ok(s) => {
                                    http.serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                        .with_upgrades()
                                        .await
                                }
                                Err(e) => {
                                    tracing::debug!(error = %e, "streaming TLS handshake failed");
                                    return;
                                }
                            }
                        }
                        None => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                                .with_upgrades()
                                .await
                        }
                    };
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "streaming connection ended with an error");
                    }
                });
            }
        });
        Ok(s)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn issue(&self, kind: &str, p: Pending) -> String {
        let token = crate::engine::new_id();
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl;
        t.retain(|_, (_, at)| at.elapsed() < ttl);
        t.insert(token.clone(), (p, Instant::now()));
        format!("{}://{}/{kind}/{token}", self.scheme, self.addr)
    }

    /// Takes a token: it is valid once, within the TTL.
    fn take(&self, token: &str) -> Option<Pending> {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let (p, at) = t.remove(token)?;
        (at.elapsed() < self.ttl).then_some(p)
    }

    /// The URL for an Exec RPC, after checking the container runs.
    pub fn exec_url(
        &self,
        container: &str,
        cmd: Vec<String>,
        tty: bool,
        (stdin, stdout, stderr): (bool, bool, bool),
    ) -> Result<String, EngineError> {
        if cmd.is_empty() {
            return Err(EngineError::invalid("cmd is required"));
        }
        let container = self.engine.exec_target(container)?;
        Ok(self.issue(
            "exec",
            Pending::Exec {
                container,
                cmd,
                tty,
                stdin,
                stdout,
                stderr,
            },
        ))
    }

    /// The URL for an Attach RPC, after checking the container runs.
    pub fn attach_url(&self, container: &str) -> Result<String, EngineError> {
        let (container, sock, tty) = self.engine.attach_target(container)?;
        Ok(self.issue(
            "attach",
            Pending::Attach {
                container,
                sock,
                tty,
            },
        ))
    }

    /// The URL for a PortForward RPC, after checking the pod exists.
    pub fn port_forward_url(&self, pod: &str, ports: Vec<i32>) -> Result<String, EngineError> {
        let pod = self.engine.pod_status(pod)?.id;
        if ports.len() > session::MAX_PORTS {
            return Err(EngineError::invalid(format!(
                "{} ports: one port-forward session carries at most {}",
                ports.len(),
                session::MAX_PORTS
            )));
        }
        let ports = ports
            .into_iter()
            .map(|p| u16::try_from(p).ok().filter(|p| *p > 0))
            .collect::<Option<Vec<u16>>>()
            .ok_or_else(|| EngineError::invalid("port must be in 1..65535"))?;
        Ok(self.issue("portforward", Pending::PortForward { pod, ports }))
    }

    fn route(self: &Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if !matches!(kind, "exec" | "portforward" | "attach") {
            return plain(StatusCode::NOT_FOUND, "not found");
        }
        let upgrade = req
            .headers()
            .get(hyper::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if upgrade.starts_with("spdy/3.1") {
            return self.spdy_upgrade(req, token);
        }
        if upgrade != "websocket" {
            return plain(StatusCode::BAD_REQUEST, "a WebSocket upgrade is required");
        }
        let Some(pending) = self.take(token) else {
            return plain(StatusCode::NOT_FOUND, "unknown, used or expired token");
        };
        let offered = req
            .headers()
            .get(hyper::header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let served: &[&str] = match pending {
            Pending::Exec { .. } | Pending::Attach { .. } => &[ws::V5, ws::V4],
            Pending::PortForward { .. } => &[ws::V4],
        };
        let Some(protocol) = ws::choose(offered, served) else {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("no served subprotocol among {offered:?}; ferrio serves {served:?}"),
            );
        };
        let Some(key) = req.headers().get(hyper::header::SEC_WEBSOCKET_KEY).cloned() else {
            return plain(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
        };
        let query_ports: Vec<u16> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.strip_prefix("port="))
            .filter_map(|p| p.parse().ok())
            .collect();
        if query_ports.len() > session::MAX_PORTS {
            return plain(
                StatusCode::BAD_REQUEST,
                "too many ports for one port-forward session",
            );
        }
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let server = self.clone();
        let idle = self.idle;
        let protocol = protocol.to_string();
        let proto2 = protocol.clone();
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "streaming upgrade failed");
                    return;
                }
            };
            let (io, activity) = Tracked::new(hyper_util::rt::TokioIo::new(upgraded));
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                io,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            let session = async move {
                match pending {
                    Pending::Exec {
                        container,
                        cmd,
                        tty,
                        stdin,
                        ..
                    } => {
                        server
                            .exec_session(ws, &proto2, container, cmd, tty, stdin)
                            .await
                    }
                    Pending::Attach {
                        container,
                        sock,
                        tty,
                    } => server.ws_attach(ws, &proto2, container, sock, tty).await,
                    Pending::PortForward { pod, ports } => {
                        let ports = if query_ports.is_empty() {
                            ports
                        } else {
                            query_ports
                        };
                        server.port_forward_session(ws, pod, ports).await
                    }
                }
            };
            super::idle::until_idle(&activity, idle, "websocket", session).await;
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(
            hyper::header::CONNECTION,
            "Upgrade".parse().unwrap_or_else(|_| unreachable!()),
        );
        h.insert(
            hyper::header::UPGRADE,
            "websocket".parse().unwrap_or_else(|_| unreachable!()),
        );
        if let Ok(v) = accept.parse() {
            h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Ok(v) = protocol.parse() {
            h.insert(hyper::header::SEC_WEBSOCKET_PROTOCOL, v);
        }
        r
    }

    async fn exec_session<S>(
        &self,
        ws: tokio_tungstenite::WebSocketStream<S>,
        protocol: &str,
        container: String,
        cmd: Vec<String>,
        tty: bool,
        want_stdin: bool,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let want = session::Want {
            stdin: want_stdin,
            stdout: true,
            stderr: true,
            tty,
            v5: protocol == ws::V5,
            stdin_ends_with_client: true,
        };
        let (streams, driver) = session::ws_streams(ws, want);
        tokio::join!(
            session::exec(&self.engine, &container, cmd, tty, streams),
            driver
        );
    }

    async fn port_forward_session<S>(
        &self,
        ws: tokio_tungstenite::WebSocketStream<S>,
        pod: String,
        ports: Vec<u16>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let netns = pod_network(&self.engine, &pod);
        let (ports, driver) = session::ws_port_streams(ws, &ports);
        let sessions =
            futures::future::join_all(ports.into_iter().map(|p| {
                session::forward_port(netns.clone(), &pod, p.port, p.data, Some(p.error))
            }));
        tokio::join!(sessions, driver);
    }
}

/// Where a port-forward to `pod` connects: `Ok(None)` for a host-network pod (the host's
/// loopback), `Ok(Some(ns))` for the pod's pinned network namespace, `Err` when the pod is gone,
/// not ready, or has no namespace — never the host's loopback for a pod that has its own.
pub(super) type PodNetwork = Result<Option<std::path::PathBuf>, String>;

fn pod_network(engine: &Engine, pod: &str) -> PodNetwork {
    let Some(p) = engine.pod(pod) else {
        return Err(format!("pod sandbox {pod} is gone"));
    };
    if p.state != crate::engine::PodState::Ready {
        return Err(format!("pod sandbox {pod} is not ready"));
    }
    if p.config.network == crate::model::NamespaceMode::Node {
        return Ok(None);
    }
    p.paths
        .net_ns
        .clone()
        .map(Some)
        .ok_or_else(|| format!("pod sandbox {pod} has no network namespace"))
}

/// Connects to 127.0.0.1:`port` in a pod's network namespace (its pinned nsfs file), or in
/// the host's for a host-network pod; a refused target is an error, nothing is connected. The
/// socket is made on a fresh thread that entered the namespace (it stays bound to it
/// afterwards); the whole connect runs off the async workers.
pub(super) async fn connect_in_pod(
    netns: PodNetwork,
    port: u16,
) -> std::io::Result<tokio::net::TcpStream> {
    let netns = netns.map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e))?;
    let std_stream = tokio::task::spawn_blocking(move || match &netns {
        Some(ns) => crate::sys::net::in_netns(ns, move || {
            std::net::TcpStream::connect(("127.0.0.1", port))
        })
        .and_then(|r| r),
        None => std::net::TcpStream::connect(("127.0.0.1", port)),
    })
    .await
    .map_err(std::io::Error::other)??;
    std_stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std_stream)
}

/// remotecommand protocols served over SPDY, best first; v4 and v5 put a Status JSON on the
/// error stream, v1 (`channel.k8s.io`) to v3 a plain message (only on failure).
const SPDY_EXEC: [&str; 5] = [
    ws::V5,
    ws::V4,
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const SPDY_PORT_FORWARD: [&str; 1] = ["portforward.k8s.io"];

impl Streaming {
    /// The HTTP/1.1 `Upgrade: SPDY/3.1` answer with `X-Stream-Protocol-Version` negotiation;
    /// the session then runs on the upgraded socket.
    fn spdy_upgrade(
        self: &Arc<Self>,
        req: Request<hyper::body::Incoming>,
        token: &str,
    ) -> Response<Body> {
        let Some(pending) = self.take(token) else {
            return plain(StatusCode::NOT_FOUND, "unknown, used or expired token");
        };
        let served: &[&str] = match pending {
            Pending::Exec { .. } | Pending::Attach { .. } => &SPDY_EXEC,
            Pending::PortForward { .. } => &SPDY_PORT_FORWARD,
        };
        // Clients list the versions they speak in preference order, in one or more headers.
        let offered: Vec<String> = req
            .headers()
            .get_all("x-stream-protocol-version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
            .collect();
        let chosen = offered
            .iter()
            .find_map(|o| served.iter().find(|s| *s == o).copied());
        let Some(protocol) = chosen.or(if offered.is_empty() {
            served.last().copied()
        } else {
            None
        }) else {
            return plain(
                StatusCode::FORBIDDEN,
                format!("no served protocol among {offered:?}; ferrio serves {served:?}"),
            );
        };
        let server = self.clone();
        let idle = self.idle;
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "SPDY upgrade failed");
                    return;
                }
            };
            let (io, activity) = Tracked::new(hyper_util::rt::TokioIo::new(upgraded));
            let (conn, acceptor) =
                super::spdy::conn::SpdyConn::new(io, super::spdy::conn::Config::kubernetes());
            let handle = conn.handle();
            let driver = tokio::spawn(async move {
                if let Err(e) = conn.run().await {
                    tracing::debug!(error = %e, "SPDY session ended with an error");
                }
            });
            let session = async move {
                match pending {
                    Pending::Exec {
                        container,
                        cmd,
                        tty,
                        stdin,
                        stdout,
                        stderr,
                    } => {
                        server
                            .spdy_exec(
                                acceptor,
                                protocol,
                                container,
                                cmd,
                                tty,
                                (stdin, stdout, stderr),
                            )
                            .await
                    }
                    Pending::PortForward { pod, .. } => {
                        server.spdy_port_forward(acceptor, pod).await
                    }
                    Pending::Attach {
                        container,
                        sock,
                        tty,
                    } => {
                        server
                            .spdy_attach(acceptor, protocol, container, sock, tty)
                            .await
                    }
                }
            };
            super::idle::until_idle(&activity, idle, "spdy", session).await;
            handle.close();
            let _ = driver.await;
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("Upgrade"),
        );
        h.insert(
            hyper::header::UPGRADE,
            hyper::header::HeaderValue::from_static("SPDY/3.1"),
        );
        h.insert(
            "x-stream-protocol-version",
            hyper::header::HeaderValue::from_static(protocol),
        );
        r
    }

    async fn spdy_exec(
        &self,
        mut acceptor: super::spdy::conn::StreamAcceptor,
        protocol: &str,
        container: String,
        cmd: Vec<String>,
        tty: bool,
        (want_in, want_out, want_err): (bool, bool, bool),
    ) {
        // The client opens an error stream and one per requested stdio (resize with a TTY):
        // all of them within 30 s, or the session is abandoned.
        let complete = |s: &HashMap<String, SpdyStream>| {
            s.contains_key("error")
                && (s.contains_key("stdin") || !want_in)
                && (s.contains_key("stdout") || !want_out)
                && (s.contains_key("stderr") || !want_err || tty)
        };
        let Some(mut streams) =
            gather_streams(&mut acceptor, complete, Duration::from_secs(30), true).await
        else {
            tracing::info!(container = %container, "SPDY exec: the client did not open its streams in 30 s");
            return;
        };
        let Some(error) = streams.remove("error") else {
            return;
        };
        let (stdin, stdout, stderr, resize_stream) = (
            streams.remove("stdin"),
            streams.remove("stdout"),
            streams.remove("stderr"),
            streams.remove("resize"),
        );
        let mut tasks = Tasks::default();
        let streams = spdy_streams(
            protocol,
            error,
            (stdin, stdout, stderr),
            tty.then_some((acceptor, resize_stream)),
            &mut tasks,
        );
        session::exec(&self.engine, &container, cmd, tty, streams).await;
        drop(tasks);
    }

    async fn spdy_port_forward(
        &self,
        mut acceptor: super::spdy::conn::StreamAcceptor,
        pod: String,
    ) {
        let netns = pod_network(&self.engine, &pod);
        // Streams come in pairs (error, data) sharing a request id.
        let mut errors: HashMap<String, SpdyStream> = HashMap::new();
        let mut tasks = Tasks::default();
        while let Some(s) = acceptor.accept().await {
            let kind = s.headers().get("streamtype").unwrap_or("").to_string();
            let req_id = s.headers().get("requestid").unwrap_or("").to_string();
            let port: Option<u16> = s
                .headers()
                .get("port")
                .and_then(|p| p.parse().ok())
                .filter(|p| *p > 0);
            match kind.as_str() {
                "error" => {
                    errors.insert(req_id, s);
                }
                "data" => {
                    let err_stream = errors.remove(&req_id);
                    let Some(port) = port else {
                        if let Some(mut e) = err_stream {
                            let _ = e.write_all(b"invalid port header").await;
                            let _ = e.shutdown().await;
                        }
                        continue;
                    };
                    let netns = netns.clone();
                    let pod = pod.clone();
                    tasks.spawn(async move {
                        let error = err_stream.map(|e| Box::new(e) as session::Writer);
                        session::forward_port(netns, &pod, port, s, error).await;
                    });
                }
                _ => s.reset(super::spdy::frame::RstStatus::RefusedStream),
            }
        }
    }
}

/// The streams a SPDY client opens for an exec or attach session, by `streamtype`, gathered
/// until `complete` says the set is there or `wait` has passed: then None when `required` (the
/// session is abandoned), else what came. None too when the connection ends.
async fn gather_streams(
    acceptor: &mut super::spdy::conn::StreamAcceptor,
    complete: impl Fn(&HashMap<String, SpdyStream>) -> bool,
    wait: Duration,
    required: bool,
) -> Option<HashMap<String, SpdyStream>> {
    let mut streams: HashMap<String, SpdyStream> = HashMap::new();
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    while !complete(&streams) {
        tokio::select! {
            s = acceptor.accept() => {
                let s = s?;
                let kind = s.headers().get("streamtype").unwrap_or("").to_string();
                streams.insert(kind, s);
            }
            _ = &mut deadline => {
                if required {
                    return None;
                }
                break;
            }
        }
    }
    Some(streams)
}

/// The SPDY adapter: a session's streams as the client opened them — its error stream carries
/// the status (a Status JSON for remotecommand v4 and v5, a plain message on failure before);
/// with a terminal, sizes come as JSON lines on the resize stream, which a client may open
/// after the others (read by a task `tasks` holds for the session).
fn spdy_streams(
    protocol: &str,
    error: super::spdy::conn::SpdyStream,
    (stdin, stdout, stderr): (
        Option<super::spdy::conn::SpdyStream>,
        Option<super::spdy::conn::SpdyStream>,
        Option<super::spdy::conn::SpdyStream>,
    ),
    resize: Option<(
        super::spdy::conn::StreamAcceptor,
        Option<super::spdy::conn::SpdyStream>,
    )>,
    tasks: &mut Tasks,
) -> session::Streams {
    let form = if protocol == ws::V5 || protocol == ws::V4 {
        session::StatusForm::Json
    } else {
        session::StatusForm::Plain
    };
    let resize = resize.map(|(mut acceptor, stream)| {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tasks.spawn(async move {
            let stream = match stream {
                Some(s) => Some(s),
                None => loop {
                    match acceptor.accept().await {
                        Some(s) if s.headers().get("streamtype") == Some("resize") => {
                            break Some(s)
                        }
                        Some(_) => continue,
                        None => break None,
                    }
                },
            };
            let Some(stream) = stream else { return };
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(size) = session::parse_resize(line.as_bytes()) {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
        });
        rx
    });
    session::Streams {
        stdin: stdin.map(|s| Box::new(s) as session::Reader),
        stdout: stdout.map(|s| Box::new(s) as session::Writer),
        stderr: stderr.map(|s| Box::new(s) as session::Writer),
        resize,
        status: session::Status {
            w: Box::new(error),
            form,
        },
    }
}

impl Streaming {
    async fn ws_attach<S>(
        &self,
        ws: tokio_tungstenite::WebSocketStream<S>,
        protocol: &str,
        container: String,
        sock: std::path::PathBuf,
        tty: bool,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let want = session::Want {
            stdin: true,
            stdout: true,
            stderr: true,
            tty,
            v5: protocol == ws::V5,
            stdin_ends_with_client: false,
        };
        let (streams, driver) = session::ws_streams(ws, want);
        tokio::join!(
            session::attach(&container, MonitorClient::new(&sock), streams),
            driver
        );
    }

    async fn spdy_attach(
        &self,
        mut acceptor: super::spdy::conn::StreamAcceptor,
        protocol: &str,
        container: String,
        sock: std::path::PathBuf,
        tty: bool,
    ) {
        // Streams: error first, then the stdio the client wants and resize; attach goes on with
        // what came within 1.5 s.
        let complete = |s: &HashMap<String, SpdyStream>| {
            s.contains_key("error")
                && s.contains_key("stdout")
                && (!tty || s.contains_key("resize"))
        };
        let Some(mut streams) =
            gather_streams(&mut acceptor, complete, Duration::from_millis(1500), false).await
        else {
            return;
        };
        let Some(error) = streams.remove("error") else {
            return;
        };
        let resize = streams.remove("resize");
        let mut tasks = Tasks::default();
        let io = spdy_streams(
            protocol,
            error,
            (
                streams.remove("stdin"),
                streams.remove("stdout"),
                streams.remove("stderr"),
            ),
            tty.then_some((acceptor, resize)),
            &mut tasks,
        );
        session::attach(&container, MonitorClient::new(&sock), io).await;
        drop(tasks);
    }
}
