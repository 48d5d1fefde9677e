//! The daemon: the CRI socket, the gRPC services, deadlines, and a clean shutdown.
//!
//! tonic's services are served through hyper-util directly rather than tonic's `Server`, whose
//! built-in timeout layer answers an expired `grpc-timeout` with `Cancelled`; the CRI wants
//! `DeadlineExceeded`, which [`deadline::Deadline`] returns (and it cancels the handler).

mod authority;
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
    #[error("configuration: {0}")]
    Config(String),
}

/// The systemd cgroup driver needs systemd as PID 1 and the unified hierarchy (libcgroups'
/// systemd manager is cgroup v2 only).
fn check_cgroup_driver(cfg: &Config) -> Result<(), ServerError> {
    if cfg.runtime.cgroup_driver == crate::config::CgroupDriver::Systemd {
        if !libcgroups::systemd::booted() {
            return Err(ServerError::Config(
                "runtime.cgroup_driver = \"systemd\" needs systemd as PID 1, which this host does not run; use \"cgroupfs\"".into(),
            ));
        }
        if !crate::cgroups::is_unified() {
            return Err(ServerError::Config(
                "runtime.cgroup_driver = \"systemd\" needs the unified cgroup v2 hierarchy; this host mounts cgroup v1: use \"cgroupfs\"".into(),
            ));
        }
    }
    Ok(())
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// Reads the configuration again (files and flags), for SIGHUP.
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads what can change live.
pub async fn serve(cfg: Config, reload: ConfigSource) -> Result<(), ServerError> {
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
        }
    };
    serve_until(cfg, Some(reload), shutdown).await
}

/// What SIGHUP reloads, each part on its own (a bad file keeps the old one): the log level or
/// filter, registries.conf and the auth file, the default AppArmor profile (written and loaded
/// again). Everything else in the config needs a restart, which the log says.
async fn reload(source: &ConfigSource, current: &Config, images: &Arc<Images>) {
    let source = source.clone();
    let new = match tokio::task::spawn_blocking(move || source()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "SIGHUP: the configuration does not load; nothing reloaded");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "SIGHUP: reading the configuration failed");
            return;
        }
    };
    let mut reloaded = Vec::new();
    match crate::telemetry::set_filter(&new.log_level) {
        Ok(()) => reloaded.push(format!("log_level={}", new.log_level)),
        Err(e) => tracing::error!(error = %e, "SIGHUP: log_level kept"),
    }
    let (imgs, c) = (images.clone(), new.clone());
    match tokio::task::spawn_blocking(move || imgs.reload(&c)).await {
        Ok(Ok(())) => reloaded.push(format!(
            "registries_conf={} auth_file={} pinned_images={:?}",
            new.image.registries_conf.display(),
            new.image.global_auth_file.display(),
            new.image.pinned_images
        )),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "SIGHUP: registries.conf or the auth file kept as they were")
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP: reloading registries failed"),
    }
    if crate::apparmor::enabled() {
        let dir = current.run_root.join("apparmor");
        match tokio::task::spawn_blocking(move || crate::apparmor::ensure_default(true, &dir)).await
        {
            Ok(Ok(o)) => reloaded.push(format!(
                "apparmor {}: {o:?}",
                crate::apparmor::DEFAULT_PROFILE_NAME
            )),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "SIGHUP: the AppArmor profile was not reloaded")
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: reloading AppArmor failed"),
        }
    }
    let mut rest = new.clone();
    rest.log_level = current.log_level.clone();
    rest.image.registries_conf = current.image.registries_conf.clone();
    rest.image.global_auth_file = current.image.global_auth_file.clone();
    rest.image.pinned_images = current.image.pinned_images.clone();
    rest.image.short_name_mode = current.image.short_name_mode.clone();
    if rest != *current {
        tracing::warn!("SIGHUP: other configuration changes take effect at the next restart");
    }
    tracing::info!(reloaded = %reloaded.join(", "), "SIGHUP: configuration reloaded");
}

/// systemd's notification socket ($NOTIFY_SOCKET), taken out of the environment by
/// [`take_notify_socket`] before any thread or child starts: runc and crun read that variable as
/// the container's own (and a monitor's long path for it fails), so no helper may inherit it.
static NOTIFY_SOCKET: std::sync::OnceLock<std::ffi::OsString> = std::sync::OnceLock::new();

/// Moves $NOTIFY_SOCKET from the environment into ferrio's keeping. Call it while the process
/// is single-threaded (before the tokio runtime starts).
pub fn take_notify_socket() {
    if let Some(v) = std::env::var_os("NOTIFY_SOCKET") {
        let _ = NOTIFY_SOCKET.set(v);
        std::env::remove_var("NOTIFY_SOCKET");
    }
}

/// Tells systemd (Type=notify) how the daemon is doing (`READY=1`, `STOPPING=1`): one datagram
/// to the socket systemd named, a path or an abstract name (`@…`). Nothing without one.
/// Hand-written: the sd-notify crate reads the socket from the environment, which ferrio must
/// not keep (see [`NOTIFY_SOCKET`]).
fn notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = NOTIFY_SOCKET.get() else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(std::path::Path::new(path))?,
        };
        sock.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "telling systemd the daemon's state");
    }
}

/// Runs the daemon until `shutdown` completes.
pub async fn serve_until(
    cfg: Config,
    reload_source: Option<ConfigSource>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let started = std::time::Instant::now();
    check_cgroup_driver(&cfg)?;
    // Helpers run from a sealed in-memory copy of this binary, never from the host's file
    // (CVE-2019-5736; see sys::exe).
    let sealed = tokio::task::spawn_blocking(crate::sys::exe::seal_own_binary)
        .await
        .map_err(|e| ServerError::Io {
            context: "copying the binary for the helpers".into(),
            source: std::io::Error::other(e),
        })?
        .map_err(io("copying the binary into a sealed memfd for the helpers"))?;
    tracing::info!(
        bytes = sealed.bytes,
        ms = sealed.took.as_millis(),
        "helpers run from a sealed copy of the binary"
    );
    // Nothing under ferrio's roots is other users' business: bundles hold pods' secrets, rootfs
    // and layers hold setuid files. A user-namespaced pod adds search permission on the way to
    // its own files only (`engine::pod::make_accessible`).
    for d in [&cfg.root, &cfg.run_root] {
        crate::state::create_private_dir(d).map_err(io(format!("creating {}", d.display())))?;
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

    if crate::apparmor::enabled() {
        // RuntimeDefault (and an unset profile) means ferrio-default: have it loaded.
        let dir = cfg.run_root.join("apparmor");
        match tokio::task::spawn_blocking(move || crate::apparmor::ensure_default(false, &dir))
            .await
        {
            Ok(Ok(o)) => {
                tracing::info!(profile = crate::apparmor::DEFAULT_PROFILE_NAME, outcome = ?o, "AppArmor default profile")
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the default AppArmor profile could not be loaded: containers that need it will be refused")
            }
            Err(e) => tracing::error!(error = %e, "loading the default AppArmor profile"),
        }
    }
    let cfg = Arc::new(cfg);
    let engine = crate::engine::Engine::open(cfg.clone(), images.clone())
        .await
        .map_err(|e| ServerError::Io {
            context: "restoring pods and containers".into(),
            source: std::io::Error::other(e),
        })?;
    let nri = if cfg.nri.enable {
        let nri = crate::nri::Nri::new(cfg.nri.clone());
        engine.set_nri(nri.clone());
        let host: Arc<dyn crate::nri::Host> =
            Arc::new(crate::engine::nri::EngineHost(Arc::downgrade(&engine)));
        // Plugins are an addition: the CRI is served without them.
        if let Err(e) = nri.start(host).await {
            tracing::error!(error = %e, "NRI: external plugins cannot connect");
        }
        Some(nri)
    } else {
        None
    };
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
        startup_ms = started.elapsed().as_millis(), "ferrio is serving the CRI"
    );
    notify("READY=1");
    memory_upkeep();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(io("installing a SIGHUP handler"))?;

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
                    .serve_connection(TokioIo::new(authority::AuthorityFix::new(stream)), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = hup.recv() => {
                match &reload_source {
                    Some(source) => {
                        tracing::info!("SIGHUP received, reloading");
                        let (source, cfg, images) = (source.clone(), cfg.clone(), images.clone());
                        tokio::spawn(async move { reload(&source, &cfg, &images).await });
                    }
                    None => tracing::info!("SIGHUP received; nothing to reload"),
                }
            }
            _ = &mut shutdown => break,
        }
    }
    notify("STOPPING=1");
    drop(listener);
    if let Some(nri) = &nri {
        nri.stop().await;
    }
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

/// Keeps the daemon's memory to what it uses: once start-up is over, the executable's pages
/// only start-up touched are dropped from its page tables (they stay in the page cache); then
/// every 10 s the allocator returns freed heap to the kernel (a burst of creates or a stats
/// call over many pods leaves freed chunks behind that glibc keeps otherwise).
fn memory_upkeep() {
    tokio::spawn(async {
        let released = tokio::task::spawn_blocking(crate::sys::process::release_exe_pages)
            .await
            .unwrap_or(0);
        tracing::debug!(kib = released / 1024, "start-up code pages released");
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let _ = tokio::task::spawn_blocking(crate::sys::process::trim_heap).await;
        }
    });
}
