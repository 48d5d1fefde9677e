//! The Prometheus endpoint: `GET /metrics` over HTTP/1.1 on `[metrics] address`, served by hyper
//! until the daemon shuts down. Anything else is 404 (405 for another method on /metrics).

use super::{io, ServerError};
use crate::metrics::{Metrics, CONTENT_TYPE};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

async fn answer<B>(metrics: Arc<Metrics>, req: Request<B>) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = code;
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(text) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(CONTENT_TYPE),
            );
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "rendering the metrics failed");
            reply(StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n")
        }
    }
}

/// Resolves once shutdown is signalled (or the sender is gone).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Binds `addr` (an error if it is taken) and returns the serving task, which ends when
/// `shutdown` fires (connections in flight are dropped: scrapes are short and retried).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(io(format!("binding the metrics address {addr}")))?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(address = %local, "serving metrics at /metrics");
    Ok(tokio::spawn(async move {
        let mut stop = shutdown.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let m = metrics.clone();
                    let mut stop_conn = shutdown.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let m = m.clone();
                            async move { Ok::<_, Infallible>(answer(m, req).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc);
                        tokio::select! {
                            r = conn => if let Err(e) = r {
                                tracing::debug!(error = %e, "metrics connection ended with an error");
                            },
                            _ = stopped(&mut stop_conn) => {}
                        }
                    });
                }
                _ = stopped(&mut stop) => break,
            }
        }
        tracing::debug!("metrics endpoint stopped");
    }))
}
