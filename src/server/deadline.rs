//! A tower layer that enforces the client's `grpc-timeout`: when it expires, the handler's future
//! is dropped (cancelling its work) and the client gets `DeadlineExceeded`. It also gives every
//! RPC a tracing span with its method, and records each RPC in the metrics when they are on.

use crate::metrics::Metrics;
use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tracing::Instrument;

#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S> Deadline<S> {
    pub fn new(inner: S, metrics: Option<Arc<Metrics>>) -> Self {
        Deadline { inner, metrics }
    }
}

/// The gRPC status of a response, as far as its headers tell: an error answered at once
/// (tonic's trailers-only form) carries `grpc-status` there; a success carries it in the
/// trailers, so no header means OK.
fn status_code<B>(res: &Response<B>) -> tonic::Code {
    res.headers()
        .get("grpc-status")
        .map_or(tonic::Code::Ok, |v| tonic::Code::from_bytes(v.as_bytes()))
}

/// Parses a `grpc-timeout` header: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S, B> tower::Service<Request<B>> for Deadline<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let timeout = parse_grpc_timeout(req.headers());
        let method = req.uri().path().to_string();
        let span = tracing::info_span!("rpc", method = %method);
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let started = std::time::Instant::now();
                let res = match timeout {
                    None => fut.await,
                    Some(d) => match tokio::time::timeout(d, fut).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::info!(?d, "deadline exceeded, request cancelled");
                            Ok(tonic::Status::deadline_exceeded(format!(
                                "{method}: the request's deadline of {d:?} was exceeded"
                            ))
                            .into_http())
                        }
                    },
                };
                let elapsed = started.elapsed();
                tracing::debug!(elapsed_us = elapsed.as_micros(), "rpc done");
                if let (Some(m), Ok(r)) = (&metrics, &res) {
                    m.observe_rpc(&method, status_code(r), elapsed);
                }
                res
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_code_from_headers() {
        let ok = Response::new(());
        assert_eq!(status_code(&ok), tonic::Code::Ok);
        let err = tonic::Status::not_found("x").into_http::<()>();
        assert_eq!(status_code(&err), tonic::Code::NotFound);
    }

    #[test]
    fn grpc_timeout_units() {
        let mut h = HeaderMap::new();
        for (v, d) in [
            ("1m", Duration::from_millis(1)),
            ("2S", Duration::from_secs(2)),
            ("3M", Duration::from_secs(180)),
            ("1H", Duration::from_secs(3600)),
            ("500u", Duration::from_micros(500)),
            ("99999999n", Duration::from_nanos(99_999_999)),
        ] {
            h.insert("grpc-timeout", v.parse().unwrap());
            assert_eq!(parse_grpc_timeout(&h), Some(d), "{v}");
        }
        for bad in ["", "m", "1x", "123456789S", "-1S"] {
            h.insert("grpc-timeout", bad.parse().unwrap());
            assert_eq!(parse_grpc_timeout(&h), None, "{bad}");
        }
    }
}
