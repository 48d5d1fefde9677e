//! ttrpc's unary calls over one logical connection of an NRI trunk ([`super::mux`]): a
//! message is `length (u32 BE) | stream id (u32 BE) | type (u8) | flags (u8)` and a protobuf
//! payload, `ttrpc.Request` for type 1 and `ttrpc.Response` for type 2. Clients number their
//! calls with odd, increasing stream ids.
//!
//! Written here, not with the `ttrpc` crate: NRI runs a ttrpc server and a client on the two
//! halves of one multiplexed, already connected socket, and ttrpc-rust's server only serves
//! listening sockets (and brings nix 0.26, protobuf 3 and tokio-vsock along). Unary calls are
//! all NRI uses; streams are refused.

use super::mux::{ConnReader, Trunk};
use prost::Message;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// The largest message: ttrpc's own limit.
pub const MAX_MESSAGE: usize = 4 << 20;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;

/// `ttrpc.Request` (containerd/ttrpc `request.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    #[prost(int64, tag = "4")]
    pub timeout_nano: i64,
}

/// `ttrpc.Response`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// `google.rpc.Status`, without its details.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// gRPC status codes NRI uses.
pub mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The connection ended (or was never usable).
    #[error("the connection is closed")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The peer answered with an error status.
    #[error("{message} (code {code})")]
    Status { code: i32, message: String },
    #[error("undecodable answer: {0}")]
    Decode(String),
}

impl CallError {
    /// Errors after which the peer is unusable (NRI drops such a plugin and goes on), as
    /// opposed to an error the plugin chose to answer.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, CallError::Status { .. })
    }
}

/// One ttrpc message.
struct Frame {
    stream: u32,
    kind: u8,
    payload: Vec<u8>,
}

async fn read_message(r: &mut ConnReader) -> Option<Result<Frame, String>> {
    let head = r.read_exact(10).await?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let stream = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_MESSAGE {
        return Some(Err(format!(
            "a message of {len} bytes (the limit is 4 MiB)"
        )));
    }
    let payload = r.read_exact(len).await?;
    Some(Ok(Frame {
        stream,
        kind: head[8],
        payload,
    }))
}

async fn write_message(
    trunk: &Trunk,
    conn: u32,
    stream: u32,
    kind: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    if payload.len() > MAX_MESSAGE {
        return Err(std::io::Error::other(format!(
            "a message of {} bytes (the limit is 4 MiB)",
            payload.len()
        )));
    }
    let mut m = Vec::with_capacity(10 + payload.len());
    // At most 4 MiB: fits.
    m.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    m.extend_from_slice(&stream.to_be_bytes());
    m.push(kind);
    m.push(0);
    m.extend_from_slice(payload);
    trunk.send(conn, &m).await
}

type Pending = Arc<Mutex<Option<HashMap<u32, oneshot::Sender<Response>>>>>;

/// A ttrpc client on one logical connection.
pub struct Client {
    trunk: Trunk,
    conn: u32,
    next: AtomicU32,
    /// Calls waiting for their answer; `None` once the connection ended.
    pending: Pending,
}

impl Client {
    /// A client sending on `conn` of `trunk` and reading answers from `reader` (a task reads
    /// them until the connection ends, then fails every call still waiting).
    pub fn new(trunk: Trunk, conn: u32, mut reader: ConnReader) -> Arc<Client> {
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let p = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(f)) = read_message(&mut reader).await {
                if f.kind != TYPE_RESPONSE {
                    continue;
                }
                let Ok(resp) = Response::decode(f.payload.as_slice()) else {
                    continue;
                };
                let waiter = p
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_mut()
                    .and_then(|m| m.remove(&f.stream));
                if let Some(w) = waiter {
                    let _ = w.send(resp);
                }
            }
            // Dropping the senders fails every waiting call with Closed.
            p.lock().unwrap_or_else(|e| e.into_inner()).take();
        });
        Arc::new(Client {
            trunk,
            conn,
            next: AtomicU32::new(1),
            pending,
        })
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Calls `service`/`method` with `req` and waits at most `timeout` for the answer.
    pub async fn call<Q: Message, A: Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Q,
        timeout: Duration,
    ) -> Result<A, CallError> {
        let stream = self.next.fetch_add(2, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some(m) => m.insert(stream, tx),
            None => return Err(CallError::Closed),
        };
        let request = Request {
            service: service.to_string(),
            method: method.to_string(),
            payload: req.encode_to_vec(),
            timeout_nano: i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX),
        };
        let forget = || {
            if let Some(m) = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                m.remove(&stream);
            }
        };
        let sent = tokio::time::timeout(
            timeout,
            write_message(
                &self.trunk,
                self.conn,
                stream,
                TYPE_REQUEST,
                &request.encode_to_vec(),
            ),
        )
        .await;
        match sent {
            Ok(Ok(())) => {}
            // The trunk broke: this connection is done for every call.
            Ok(Err(_)) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                return Err(CallError::Closed);
            }
            Err(_) => {
                forget();
                return Err(CallError::Timeout(timeout));
            }
        }
        let resp = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return Err(CallError::Closed),
            Err(_) => {
                forget();
                return Err(CallError::Timeout(timeout));
            }
        };
        if let Some(s) = resp.status.filter(|s| s.code != 0) {
            return Err(CallError::Status {
                code: s.code,
                message: s.message,
            });
        }
        A::decode(resp.payload.as_slice()).map_err(|e| CallError::Decode(e.to_string()))
    }
}

/// What a server's handler answers: the encoded response, or an error status.
pub type Reply = Pin<Box<dyn Future<Output = Result<Vec<u8>, Status>> + Send>>;

/// Most requests one connection may have in progress ([`serve`]).
pub const MAX_IN_FLIGHT: usize = 16;

/// Serves ttrpc requests arriving on `conn` of `trunk` until the connection ends: each is
/// handed to `handler(service, method, payload)` in its own task and answered on its stream,
/// at most [`MAX_IN_FLIGHT`] at once (more are answered RESOURCE_EXHAUSTED).
pub async fn serve<H>(trunk: Trunk, conn: u32, mut reader: ConnReader, handler: H)
where
    H: Fn(String, String, Vec<u8>) -> Reply + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    // Requests in progress on this connection.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut last = 0u32;
    while let Some(msg) = read_message(&mut reader).await {
        let f = match msg {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "NRI: closing a connection");
                trunk.close().await;
                return;
            }
        };
        if f.kind != TYPE_REQUEST {
            continue;
        }
        let answer = |code, message: String| Response {
            status: Some(Status { code, message }),
            payload: Vec::new(),
        };
        let (trunk, handler) = (trunk.clone(), handler.clone());
        if f.stream % 2 == 0 || f.stream <= last {
            let r = answer(
                code::INVALID_ARGUMENT,
                "stream ids must be odd and increasing".into(),
            );
            let _ = write_message(&trunk, conn, f.stream, TYPE_RESPONSE, &r.encode_to_vec()).await;
            continue;
        }
        last = f.stream;
        // Past the bound the request is refused at once: the connection's reader never stops,
        // so the answers to our own calls on the same socket keep flowing.
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let r = answer(
                code::RESOURCE_EXHAUSTED,
                format!("more than {MAX_IN_FLIGHT} requests in progress"),
            );
            let _ = write_message(&trunk, conn, f.stream, TYPE_RESPONSE, &r.encode_to_vec()).await;
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let resp = match Request::decode(f.payload.as_slice()) {
                Ok(req) => match handler(req.service, req.method, req.payload).await {
                    Ok(payload) => Response {
                        status: Some(Status {
                            code: 0,
                            message: String::new(),
                        }),
                        payload,
                    },
                    Err(s) => Response {
                        status: Some(s),
                        payload: Vec::new(),
                    },
                },
                Err(e) => answer(code::INVALID_ARGUMENT, format!("bad request: {e}")),
            };
            let _ =
                write_message(&trunk, conn, f.stream, TYPE_RESPONSE, &resp.encode_to_vec()).await;
        });
    }
}

/// An error status for a handler to answer.
pub fn status(code: i32, message: impl Into<String>) -> Status {
    Status {
        code,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nri::mux::{split, PLUGIN_SERVICE_CONN};

    #[derive(Clone, PartialEq, prost::Message)]
    struct Text {
        #[prost(string, tag = "1")]
        s: String,
    }

    #[tokio::test]
    async fn calls_are_answered_errors_are_statuses_and_a_closed_peer_fails_calls() {
        let (a, b) = tokio::net::UnixStream::pair().expect("pair");
        let (ta, a1, _a2) = split(a);
        let (tb, b1, _b2) = split(b);
        tokio::spawn(serve(
            tb.clone(),
            PLUGIN_SERVICE_CONN,
            b1,
            |svc, method, payload| {
                Box::pin(async move {
                    let t =
                        Text::decode(payload.as_slice()).map_err(|e| status(3, e.to_string()))?;
                    match method.as_str() {
                        "Echo" => Ok(Text {
                            s: format!("{svc}/{method}: {}", t.s),
                        }
                        .encode_to_vec()),
                        "Slow" => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            Ok(Vec::new())
                        }
                        _ => Err(status(code::UNIMPLEMENTED, format!("method {method}"))),
                    }
                })
            },
        ));
        let c = Client::new(ta, PLUGIN_SERVICE_CONN, a1);
        let t = Duration::from_secs(2);
        let big = "x".repeat(100_000);
        let r: Text = c
            .call("S", "Echo", &Text { s: big.clone() }, t)
            .await
            .expect("echo");
        assert_eq!(r.s, format!("S/Echo: {big}"));
        let e = c
            .call::<_, Text>("S", "Nope", &Text::default(), t)
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Status { code: 12, .. }), "{e:?}");
        assert!(!e.is_fatal());
        let e = c
            .call::<_, Text>("S", "Slow", &Text::default(), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Timeout(_)) && e.is_fatal(), "{e:?}");
        tb.close().await;
        let e = c
            .call::<_, Text>("S", "Echo", &Text::default(), t)
            .await
            .unwrap_err();
        assert!(matches!(e, CallError::Closed), "{e:?}");
        assert!(c.is_closed());
    }

    #[tokio::test]
    async fn a_connection_has_at_most_max_in_flight_requests_in_progress() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let (a, b) = tokio::net::UnixStream::pair().expect("pair");
        let (ta, a1, _a2) = split(a);
        let (tb, b1, _b2) = split(b);
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n2, m2) = (now.clone(), most.clone());
        tokio::spawn(serve(tb, PLUGIN_SERVICE_CONN, b1, move |_, _, _| {
            let (now, most) = (n2.clone(), m2.clone());
            Box::pin(async move {
                let n = now.fetch_add(1, SeqCst) + 1;
                most.fetch_max(n, SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                now.fetch_sub(1, SeqCst);
                Ok(Vec::new())
            })
        }));
        let c = Arc::new(Client::new(ta, PLUGIN_SERVICE_CONN, a1));
        let calls = (0..MAX_IN_FLIGHT * 3).map(|_| {
            let c = c.clone();
            async move {
                c.call::<_, Text>("S", "Wait", &Text::default(), Duration::from_secs(10))
                    .await
            }
        });
        let (mut ok, mut refused) = (0, 0);
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(_) => ok += 1,
                Err(CallError::Status { code, .. }) if code == code::RESOURCE_EXHAUSTED => {
                    refused += 1
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        // Every call is answered: at most MAX_IN_FLIGHT run at once, the rest are refused.
        assert_eq!(ok + refused, MAX_IN_FLIGHT * 3);
        assert!(ok >= MAX_IN_FLIGHT && refused > 0, "{ok} {refused}");
        assert_eq!(most.load(SeqCst), MAX_IN_FLIGHT);
    }
}
