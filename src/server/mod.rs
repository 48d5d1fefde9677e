//! The daemon: the CRI socket, the gRPC services, deadlines, and a clean shutdown.
//!
//! tonic's services are served through hyper-util directly rather than tonic's `Server`, whose
//! built-in timeout layer answers an expired `grpc-timeout` with `Cancelled`; the CRI wants
//! `DeadlineExceeded`, which [`deadline::Deadline`] returns (and it cancels the handler).

mod deadline;
mod metrics;
mod socket;

use crate::config::Config;
use crate::cri::{admin::AdminApi, admin_api::admin_server::AdminServer};
use crate::cri::{api::image_service_server::ImageServiceServer, image::ImageApi};
use crate::cri::{api::runtime_service_server::RuntimeServiceServer, runtime::Runtime};
use crate::image::{ImageError, Images};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another ferrio daemon is using root {0} (its lock {0}/ferrio.lock is held)")]
    RootLocked(PathBuf),
    #[error("another process is already serving on {0}; stop it or choose another --listen")]
    SocketInUse(PathBuf),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image store: {0}")]
    Image(#[from] ImageError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(cfg: Config) -> Result<(), ServerError> {
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        }
    };
    serve_until(cfg, shutdown).await
}

/// Runs the daemon until `shutdown` completes.
pub async fn serve_until(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let started = std::time::Instant::now();
    for d in [&cfg.root, &cfg.run_root] {
        std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
    }
    let _root_lock = crate::sys::FileLock::try_lock(&cfg.root.join("ferrio.lock"))
        .map_err(io("locking the root directory"))?
        .ok_or_else(|| ServerError::RootLocked(cfg.root.clone()))?;
    let socket_path = cfg.socket_path();
    // Refuse a second daemon before touching the store.
    socket::check_free(&socket_path)?;

    let images = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let images = Images::open(&cfg)?;
            images.import_dir_once()?;
            crate::sys::process::trim_heap();
            Ok::<_, ImageError>(images)
        })
        .await
        .map_err(|e| ServerError::Io {
            context: "opening the image store".into(),
            source: std::io::Error::other(e),
        })??
    };

    let cfg = Arc::new(cfg);
    let engine = crate::engine::Engine::open(cfg.clone(), images.clone())
        .await
        .map_err(|e| ServerError::Io {
            context: "restoring pods and containers".into(),
            source: std::io::Error::other(e),
        })?;
    let (recv, send) = (
        cfg.api.grpc_max_recv_msg_size,
        cfg.api.grpc_max_send_msg_size,
    );
    let metrics = cfg.metrics.enable.then(|| {
        crate::metrics::Metrics::new(Arc::new(crate::metrics::DaemonSource {
            engine: engine.clone(),
            images: images.clone(),
        }))
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_task = match &metrics {
        Some(m) => Some(metrics::serve(cfg.metrics.address, m.clone(), stop_rx).await?),
        None => None,
    };
    let streaming = crate::streaming::Streaming::start(&cfg.streaming, engine.clone())
        .await
        .map_err(io(format!(
            "starting the streaming server on {}:{}",
            cfg.streaming.address, cfg.streaming.port
        )))?;
    let routes = tonic::service::Routes::new(
        RuntimeServiceServer::new(Runtime::new(cfg.clone(), engine.clone(), streaming))
            .max_decoding_message_size(recv)
            .max_encoding_message_size(send),
    )
    .add_service(
        ImageServiceServer::new(ImageApi::new(images.clone()))
            .max_decoding_message_size(recv)
            .max_encoding_message_size(send),
    )
    .add_service(AdminServer::new(AdminApi::new(images.clone(), engine)))
    .prepare();
    let service = deadline::Deadline::new(routes, metrics);

    let listener = socket::bind(&socket_path)?;
    tracing::info!(
        socket = %socket_path.display(), root = %cfg.root.display(),
        startup_ms = started.elapsed().as_millis() as u64, "ferrio is serving the CRI"
    );

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let svc = TowerToHyperService::new(service.clone());
                let conn = auto::Builder::new(TokioExecutor::new())
                    .http2_only()
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    socket::remove(&socket_path);
    let _ = stop_tx.send(true);
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let grace = Duration::from_secs(cfg.api.shutdown_timeout);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!(seconds = grace.as_secs(), "in-flight RPCs cancelled after the shutdown timeout"),
    }
    tracing::info!("ferrio stopped");
    Ok(())
}
