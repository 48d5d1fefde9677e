//! NRI, the Node Resource Interface (containerd/nri): plugins that see every pod and container
//! event and may adjust a container as it is created, update other containers' resources, or
//! only watch. ferrio is the runtime side:
//!
//! - [`mux`] splits a plugin's socket into NRI's two logical connections, [`ttrpc`] speaks
//!   unary ttrpc on each, [`api`] is the vendored `proto/nri` (v0.12.2) compiled by prost;
//! - [`Nri`] accepts plugins on `[nri] socket_path`, launches the pre-installed ones of
//!   `plugin_path`, registers, configures and synchronizes each, and calls them in index order
//!   for the events they subscribed to; a plugin that times out or goes away is dropped and the
//!   CRI request goes on; a plugin's error answer fails a create or an update (the engine
//!   logs it for the other events);
//! - [`adjust`] merges CreateContainer adjustments (conflicts refused as NRI does) and applies
//!   them to the OCI spec.
//!
//! With no plugin connected every hook returns at once.

pub mod adjust;
pub mod mux;
pub mod ttrpc;
pub mod validate;

/// NRI's messages (`proto/nri/pkg/api/api.proto`).
#[allow(clippy::all, clippy::pedantic)]
pub mod api {
    include!(concat!(env!("OUT_DIR"), "/nri.pkg.api.v1alpha1.rs"));
}

use crate::config::NriConfig;
use crate::error::{ErrorKind, Kind};
use prost::Message;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use ttrpc::CallError;

/// The service a plugin serves.
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
/// The service the runtime serves.
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
/// The NRI protocol version of the vendored API.
pub const NRI_VERSION: &str = "v0.12.2";
/// Every event a plugin can subscribe to (bit `e - 1` for event `e`).
pub const ALL_EVENTS: u32 = (1 << (api::Event::Last as u32 - 1)) - 1;

/// The mask bit of an event.
pub fn bit(e: api::Event) -> u32 {
    1 << (e as u32 - 1)
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum NriError {
    /// A plugin answered an event with an error: the CRI request fails with it.
    #[error("NRI plugin {plugin} failed {event}: {message}")]
    Plugin {
        plugin: String,
        event: &'static str,
        message: String,
    },
    /// Two plugins set the same thing, or one asked for what ferrio does not do.
    #[error("NRI: {0}")]
    Adjustment(String),
    #[error("NRI: {0}")]
    Io(String),
}

impl ErrorKind for NriError {
    fn kind(&self) -> Kind {
        match self {
            NriError::Plugin { .. } | NriError::Adjustment(_) => Kind::FailedPrecondition,
            NriError::Io(_) => Kind::Internal,
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What NRI needs from the runtime: every pod and container as NRI describes them (for a new
/// plugin's Synchronize), and a way to apply resource updates plugins ask for. The runtime's
/// implementation holds the runtime weakly: NRI must not keep it alive.
pub trait Host: Send + Sync {
    fn snapshot(&self) -> BoxFuture<'_, (Vec<api::PodSandbox>, Vec<api::Container>)>;
    /// Applies the updates; returns those that failed.
    fn update(
        &self,
        updates: Vec<api::ContainerUpdate>,
    ) -> BoxFuture<'_, Vec<api::ContainerUpdate>>;
    /// Evicts (stops) the containers plugins asked to be evicted.
    fn evict(&self, evictions: Vec<api::ContainerEviction>) -> BoxFuture<'_, ()>;
}

/// A registered plugin.
pub struct Plugin {
    pub name: String,
    pub index: String,
    /// The events it subscribed to.
    pub events: u32,
    /// Launched by ferrio from `plugin_path` (else it connected to the socket).
    pub launched: bool,
    client: Arc<ttrpc::Client>,
    trunk: mux::Trunk,
    closed: AtomicBool,
    child: Mutex<Option<tokio::process::Child>>,
}

impl Plugin {
    /// `NN-name`, as NRI shows plugins.
    pub fn id(&self) -> String {
        format!("{}-{}", self.index, self.name)
    }

    fn wants(&self, e: api::Event) -> bool {
        self.events & bit(e) != 0 && !self.closed.load(Ordering::SeqCst)
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.trunk.close().await;
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut c) = child {
            let _ = c.kill().await;
        }
    }
}

/// A connected plugin as `ferrio status` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub index: String,
    pub events: u32,
    pub launched: bool,
}

/// The NRI runtime side.
pub struct Nri {
    cfg: NriConfig,
    /// Registered plugins in call order (index, then name).
    plugins: Mutex<Vec<Arc<Plugin>>>,
    host: OnceLock<Arc<dyn Host>>,
    /// Held while plugins are called for an event and while a new plugin synchronizes, so a
    /// plugin sees every pod and container exactly once: in its Synchronize or as an event.
    order: tokio::sync::Mutex<()>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Splits a Synchronize into requests of at most `limit` encoded bytes (one object larger than
/// that still goes alone); all but the last have `more`.
fn sync_chunks(
    pods: Vec<api::PodSandbox>,
    containers: Vec<api::Container>,
    limit: usize,
) -> Vec<api::SynchronizeRequest> {
    enum Item {
        Pod(api::PodSandbox),
        Ctr(api::Container),
    }
    let mut out = vec![api::SynchronizeRequest::default()];
    let mut size = 0usize;
    let items = pods
        .into_iter()
        .map(Item::Pod)
        .chain(containers.into_iter().map(Item::Ctr));
    for item in items {
        let len = match &item {
            Item::Pod(p) => p.encoded_len(),
            Item::Ctr(c) => c.encoded_len(),
        } + 8;
        if size > 0 && size + len > limit {
            out.push(api::SynchronizeRequest::default());
            size = 0;
        }
        size += len;
        if let Some(cur) = out.last_mut() {
            match item {
                Item::Pod(p) => cur.pods.push(p),
                Item::Ctr(c) => cur.containers.push(c),
            }
        }
    }
    let n = out.len();
    for (i, r) in out.iter_mut().enumerate() {
        r.more = i + 1 < n;
    }
    out
}

/// A notification as a StateChange, for plugins older than NRI 0.12.
fn state_change(
    e: api::Event,
    pod: &api::PodSandbox,
    ctr: Option<&api::Container>,
) -> api::StateChangeEvent {
    api::StateChangeEvent {
        event: e as i32,
        pod: Some(pod.clone()),
        container: ctr.cloned(),
    }
}

fn valid_index(i: &str) -> bool {
    i.len() == 2 && i.bytes().all(|b| b.is_ascii_digit())
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
}

impl Nri {
    pub fn new(cfg: NriConfig) -> Arc<Nri> {
        Arc::new(Nri {
            cfg,
            plugins: Mutex::new(Vec::new()),
            host: OnceLock::new(),
            order: tokio::sync::Mutex::new(()),
            listener: Mutex::new(None),
        })
    }

    fn registration_timeout(&self) -> Duration {
        self.cfg.registration_timeout()
    }

    fn request_timeout(&self) -> Duration {
        self.cfg.request_timeout()
    }

    /// The registered plugins, in call order.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.list()
            .iter()
            .map(|p| PluginInfo {
                name: p.name.clone(),
                index: p.index.clone(),
                events: p.events,
                launched: p.launched,
            })
            .collect()
    }

    fn list(&self) -> Vec<Arc<Plugin>> {
        self.plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn host(&self) -> Option<Arc<dyn Host>> {
        self.host.get().cloned()
    }

    /// Starts NRI for `host`: the pre-installed plugins, then the socket for the others.
    pub async fn start(self: &Arc<Self>, host: Arc<dyn Host>) -> Result<(), NriError> {
        let _ = self.host.set(host);
        self.launch_installed().await;
        if self.cfg.disable_connections {
            return Ok(());
        }
        let path = self.cfg.socket_path.clone();
        if let Some(dir) = path.parent() {
            crate::state::create_private_dir(dir)
                .map_err(|e| NriError::Io(format!("creating {}: {e}", dir.display())))?;
        }
        // A socket left by an earlier run: nobody answers on it. (Bounded: a runtime that
        // holds the socket but never accepts must not hold up the start.)
        let probe = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::UnixStream::connect(&path),
        )
        .await;
        if matches!(probe, Ok(Ok(_)) | Err(_)) {
            return Err(NriError::Io(format!(
                "{} is in use by another runtime; set [nri] socket_path or disable_connections",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)
            .map_err(|e| NriError::Io(format!("listening on {}: {e}", path.display())))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| NriError::Io(format!("{}: {e}", path.display())))?;
        }
        tracing::info!(socket = %path.display(), "NRI: accepting plugins");
        let this = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Some(nri) = this.upgrade() else { return };
                tokio::spawn(async move {
                    if let Err(e) = nri.adopt(stream, None).await {
                        tracing::warn!(error = %e, "NRI: a plugin failed to connect");
                    }
                });
            }
        });
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(())
    }

    /// Stops accepting plugins, closes every connection and kills launched plugins.
    pub async fn stop(&self) {
        if let Some(t) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
            let _ = std::fs::remove_file(&self.cfg.socket_path);
        }
        let plugins = std::mem::take(&mut *self.plugins.lock().unwrap_or_else(|e| e.into_inner()));
        for p in plugins {
            p.close().await;
        }
    }

    /// Launches the executables `NN-name` of `plugin_path`, each on its own socket pair (fd 3
    /// in the plugin), with NRI's environment, and adopts those that register.
    async fn launch_installed(self: &Arc<Self>) {
        let Ok(rd) = std::fs::read_dir(&self.cfg.plugin_path) else {
            return;
        };
        let mut found: Vec<(String, String, PathBuf)> = Vec::new();
        for e in rd.flatten() {
            use std::os::unix::fs::PermissionsExt;
            let path = e.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
                continue;
            }
            let file = e.file_name().to_string_lossy().into_owned();
            match file.split_once('-') {
                Some((idx, name)) if valid_index(idx) && valid_name(name) => {
                    found.push((idx.to_string(), name.to_string(), path))
                }
                _ => {
                    tracing::warn!(file = %path.display(), "NRI: not a plugin name (NN-name); skipped")
                }
            }
        }
        found.sort();
        for (idx, name, path) in found {
            if let Err(e) = self.launch(&idx, &name, &path).await {
                tracing::warn!(plugin = %format!("{idx}-{name}"), error = %e, "NRI: pre-installed plugin not started");
            }
        }
    }

    async fn launch(
        self: &Arc<Self>,
        idx: &str,
        name: &str,
        path: &std::path::Path,
    ) -> Result<(), NriError> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| NriError::Io(format!("socketpair: {e}")))?;
        let theirs: std::os::fd::OwnedFd = theirs.into();
        let mut cmd = tokio::process::Command::new(path);
        cmd.env_clear()
            .env("NRI_PLUGIN_NAME", name)
            .env("NRI_PLUGIN_IDX", idx)
            .env("NRI_PLUGIN_SOCKET", "3")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        crate::sys::process::give_fd(cmd.as_std_mut(), theirs, 3);
        let child = cmd
            .spawn()
            .map_err(|e| NriError::Io(format!("starting {}: {e}", path.display())))?;
        ours.set_nonblocking(true)
            .map_err(|e| NriError::Io(e.to_string()))?;
        let stream =
            tokio::net::UnixStream::from_std(ours).map_err(|e| NriError::Io(e.to_string()))?;
        self.adopt(stream, Some((idx.to_string(), name.to_string(), child)))
            .await
    }

    /// Registers, configures and synchronizes the plugin on `stream` and adds it.
    async fn adopt(
        self: &Arc<Self>,
        stream: tokio::net::UnixStream,
        launched: Option<(String, String, tokio::process::Child)>,
    ) -> Result<(), NriError> {
        let (trunk, c1, c2) = mux::split(stream);
        let (reg_tx, reg_rx) = tokio::sync::oneshot::channel::<(String, String)>();
        let reg_tx = Arc::new(Mutex::new(Some(reg_tx)));
        let weak = Arc::downgrade(self);
        let is_launched = launched.is_some();
        let served = tokio::spawn(ttrpc::serve(
            trunk.clone(),
            mux::RUNTIME_SERVICE_CONN,
            c2,
            move |service, method, payload| {
                let (reg_tx, weak) = (reg_tx.clone(), weak.clone());
                Box::pin(async move {
                    if service != RUNTIME_SERVICE {
                        return Err(ttrpc::status(
                            ttrpc::code::UNIMPLEMENTED,
                            format!("service {service}"),
                        ));
                    }
                    match method.as_str() {
                        "RegisterPlugin" => {
                            let r = api::RegisterPluginRequest::decode(payload.as_slice())
                                .map_err(|e| {
                                    ttrpc::status(ttrpc::code::INVALID_ARGUMENT, e.to_string())
                                })?;
                            if !is_launched
                                && (!valid_index(&r.plugin_idx) || !valid_name(&r.plugin_name))
                            {
                                return Err(ttrpc::status(
                                    ttrpc::code::INVALID_ARGUMENT,
                                    format!(
                                        "invalid plugin name/index {:?}/{:?}",
                                        r.plugin_name, r.plugin_idx
                                    ),
                                ));
                            }
                            let tx = reg_tx.lock().unwrap_or_else(|e| e.into_inner()).take();
                            match tx {
                                Some(tx) => {
                                    let _ = tx.send((r.plugin_name, r.plugin_idx));
                                    Ok(api::Empty {}.encode_to_vec())
                                }
                                None => Err(ttrpc::status(
                                    ttrpc::code::FAILED_PRECONDITION,
                                    "already registered",
                                )),
                            }
                        }
                        "UpdateContainers" => {
                            let r = api::UpdateContainersRequest::decode(payload.as_slice())
                                .map_err(|e| {
                                    ttrpc::status(ttrpc::code::INVALID_ARGUMENT, e.to_string())
                                })?;
                            let host = weak.upgrade().and_then(|n| n.host());
                            let failed = match host {
                                Some(h) => h.update(r.update).await,
                                None => r.update,
                            };
                            if let (Some(nri), false) = (weak.upgrade(), r.evict.is_empty()) {
                                nri.evict_later(r.evict);
                            }
                            Ok(api::UpdateContainersResponse { failed }.encode_to_vec())
                        }
                        m => Err(ttrpc::status(
                            ttrpc::code::UNIMPLEMENTED,
                            format!("method {m}"),
                        )),
                    }
                })
            },
        ));
        let client = ttrpc::Client::new(trunk.clone(), mux::PLUGIN_SERVICE_CONN, c1);
        let registered = tokio::time::timeout(self.registration_timeout(), reg_rx).await;
        let (name, index, child) = match (registered, launched) {
            (Ok(Ok(_)), Some((idx, name, child))) => (name, idx, Some(child)),
            (Ok(Ok((name, idx))), None) => (name, idx, None),
            (Ok(Err(_)), _) => {
                trunk.close().await;
                return Err(NriError::Io("the plugin closed before registering".into()));
            }
            (Err(_), _) => {
                trunk.close().await;
                return Err(NriError::Io(format!(
                    "no registration within {:?}",
                    self.registration_timeout()
                )));
            }
        };
        let config = if is_launched {
            [
                self.cfg
                    .plugin_config_path
                    .join(format!("{index}-{name}.conf")),
                self.cfg.plugin_config_path.join(format!("{name}.conf")),
            ]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
        } else {
            String::new()
        };
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let configured: Result<api::ConfigureResponse, CallError> = client
            .call(
                PLUGIN_SERVICE,
                "Configure",
                &api::ConfigureRequest {
                    config,
                    runtime_name: "ferrio".into(),
                    runtime_version: env!("CARGO_PKG_VERSION").into(),
                    registration_timeout: ms(self.registration_timeout()),
                    request_timeout: ms(self.request_timeout()),
                    nri_version: NRI_VERSION.into(),
                },
                self.request_timeout(),
            )
            .await;
        let plugin_id = format!("{index}-{name}");
        let events = match configured {
            Ok(r) => u32::try_from(r.events).unwrap_or(u32::MAX),
            Err(e) => {
                trunk.close().await;
                return Err(NriError::Io(format!("configuring {plugin_id}: {e}")));
            }
        };
        let events = if events == 0 { ALL_EVENTS } else { events };
        if events & !ALL_EVENTS != 0 {
            trunk.close().await;
            return Err(NriError::Io(format!(
                "{plugin_id}: invalid plugin events 0x{events:x}"
            )));
        }
        let plugin = Arc::new(Plugin {
            name,
            index,
            events,
            launched: is_launched,
            client,
            trunk,
            closed: AtomicBool::new(false),
            child: Mutex::new(child),
        });
        // Synchronize under the event lock: the plugin then sees every later event.
        let _g = self.order.lock().await;
        let (pods, containers) = match self.host() {
            Some(h) => h.snapshot().await,
            None => (Vec::new(), Vec::new()),
        };
        let synced = self.synchronize(&plugin, pods, containers).await;
        match synced {
            Ok(r) => {
                if !r.update.is_empty() {
                    if let Some(h) = self.host() {
                        let failed = h.update(r.update).await;
                        if !failed.is_empty() {
                            tracing::warn!(plugin = %plugin_id, n = failed.len(), "NRI: updates asked at synchronization failed");
                        }
                    }
                }
            }
            Err(e) => {
                plugin.close().await;
                return Err(NriError::Io(format!("synchronizing {plugin_id}: {e}")));
            }
        }
        {
            let mut list = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
            list.push(plugin.clone());
            list.sort_by(|a, b| (&a.index, &a.name).cmp(&(&b.index, &b.name)));
        }
        tracing::info!(plugin = %plugin_id, events = format!("0x{events:x}"), "NRI: plugin registered");
        // A plugin whose connection ends is dropped then, not at the next event sent to it.
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let _ = served.await;
            if let Some(nri) = weak.upgrade() {
                if nri.list().iter().any(|q| Arc::ptr_eq(q, &plugin)) {
                    nri.drop_plugin(&plugin, &CallError::Closed).await;
                }
            }
        });
        Ok(())
    }

    fn subscribed(&self, e: api::Event) -> Vec<Arc<Plugin>> {
        self.list().into_iter().filter(|p| p.wants(e)).collect()
    }

    async fn drop_plugin(&self, p: &Arc<Plugin>, why: &CallError) {
        tracing::warn!(plugin = %p.id(), error = %why, "NRI: plugin dropped");
        p.close().await;
        self.plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|q| !Arc::ptr_eq(p, q));
    }

    /// Calls `method` of every plugin subscribed to `e`, in order; returns their answers.
    /// `fallback`: for a plugin older than NRI 0.12 that answers Unimplemented, the same event
    /// as a StateChange (NRI sends the nine notification events that way).
    async fn each<Q: Message, A: Message + Default>(
        &self,
        e: api::Event,
        method: &'static str,
        req: &Q,
        fallback: Option<api::StateChangeEvent>,
    ) -> Result<Vec<A>, NriError> {
        let plugins = self.subscribed(e);
        if plugins.is_empty() {
            return Ok(Vec::new());
        }
        let _g = self.order.lock().await;
        let mut out = Vec::new();
        for p in plugins {
            let mut r = p
                .client
                .call(PLUGIN_SERVICE, method, req, self.request_timeout())
                .await;
            if let (Err(CallError::Status { code, .. }), Some(ev)) = (&r, &fallback) {
                if *code == ttrpc::code::UNIMPLEMENTED {
                    r = p
                        .client
                        .call::<_, api::Empty>(
                            PLUGIN_SERVICE,
                            "StateChange",
                            ev,
                            self.request_timeout(),
                        )
                        .await
                        .map(|_| A::default());
                }
            }
            match r {
                Ok(a) => out.push(a),
                Err(err) if err.is_fatal() => self.drop_plugin(&p, &err).await,
                Err(err) => {
                    return Err(NriError::Plugin {
                        plugin: p.id(),
                        event: method,
                        message: err.to_string(),
                    })
                }
            }
        }
        Ok(out)
    }

    pub async fn run_pod(&self, pod: &api::PodSandbox) -> Result<(), NriError> {
        let req = api::RunPodSandboxRequest {
            pod: Some(pod.clone()),
        };
        let state = state_change(api::Event::RunPodSandbox, pod, None);
        self.each::<_, api::RunPodSandboxResponse>(
            api::Event::RunPodSandbox,
            "RunPodSandbox",
            &req,
            Some(state),
        )
        .await
        .map(drop)
    }

    pub async fn stop_pod(&self, pod: &api::PodSandbox) -> Result<(), NriError> {
        let req = api::StopPodSandboxRequest {
            pod: Some(pod.clone()),
        };
        let state = state_change(api::Event::StopPodSandbox, pod, None);
        self.each::<_, api::StopPodSandboxResponse>(
            api::Event::StopPodSandbox,
            "StopPodSandbox",
            &req,
            Some(state),
        )
        .await
        .map(drop)
    }

    pub async fn remove_pod(&self, pod: &api::PodSandbox) -> Result<(), NriError> {
        let req = api::RemovePodSandboxRequest {
            pod: Some(pod.clone()),
        };
        let state = state_change(api::Event::RemovePodSandbox, pod, None);
        self.each::<_, api::RemovePodSandboxResponse>(
            api::Event::RemovePodSandbox,
            "RemovePodSandbox",
            &req,
            Some(state),
        )
        .await
        .map(drop)
    }

    /// CreateContainer: each subscribed plugin in order sees the container as the plugins
    /// before it adjusted it; returns the merged adjustment and the updates of other
    /// containers they asked for.
    pub async fn create_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(adjust::Merged, Vec<api::ContainerUpdate>), NriError> {
        let mut merged = adjust::Merged::default();
        let mut updates = Vec::new();
        let plugins = self.subscribed(api::Event::CreateContainer);
        if plugins.is_empty() && !self.validating() {
            return Ok((merged, updates));
        }
        let _g = self.order.lock().await;
        let mut evictions = Vec::new();
        let mut shown = ctr.clone();
        for p in plugins {
            let req = api::CreateContainerRequest {
                pod: Some(pod.clone()),
                container: Some(shown.clone()),
            };
            let r: Result<api::CreateContainerResponse, CallError> = p
                .client
                .call(
                    PLUGIN_SERVICE,
                    "CreateContainer",
                    &req,
                    self.request_timeout(),
                )
                .await;
            match r {
                Ok(r) => {
                    if let Some(a) = r.adjust {
                        merged
                            .add(&p.id(), a, &mut shown)
                            .map_err(NriError::Adjustment)?;
                    }
                    for u in r.update {
                        if u.container_id == ctr.id {
                            return Err(NriError::Adjustment(format!(
                                "plugin {:?} asked update of {:?} during creation",
                                p.id(),
                                ctr.id
                            )));
                        }
                        updates.push(u);
                    }
                    evictions.extend(r.evict);
                }
                Err(err) if err.is_fatal() => self.drop_plugin(&p, &err).await,
                Err(err) => {
                    return Err(NriError::Plugin {
                        plugin: p.id(),
                        event: "CreateContainer",
                        message: err.to_string(),
                    })
                }
            }
        }
        self.validate(pod, ctr, &merged, &updates).await?;
        if !evictions.is_empty() {
            self.evict_later(evictions);
        }
        Ok((merged, updates))
    }

    pub async fn post_create(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(), NriError> {
        let req = api::PostCreateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        let state = state_change(api::Event::PostCreateContainer, pod, Some(ctr));
        self.each::<_, api::PostCreateContainerResponse>(
            api::Event::PostCreateContainer,
            "PostCreateContainer",
            &req,
            Some(state),
        )
        .await
        .map(drop)
    }

    pub async fn start_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(), NriError> {
        let req = api::StartContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        let state = state_change(api::Event::StartContainer, pod, Some(ctr));
        self.each::<_, api::StartContainerResponse>(
            api::Event::StartContainer,
            "StartContainer",
            &req,
            Some(state),
        )
        .await
        .map(drop)
    }

    pub async fn post_start(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(), NriError> {
        let req = api::PostStartContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        let state = state_change(api::Event::PostStartContainer, pod, Some(ctr));
        self.each::<_, api::PostStartContainerResponse>(
            api::Event::PostStartContainer,
            "PostStartContainer",
            &req,
            Some(state),
        )
        .await
        .map(drop)
    }

    /// StopContainer; returns the updates of other containers the plugins asked for.
    pub async fn stop_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<Vec<api::ContainerUpdate>, NriError> {
        let req = api::StopContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        let answers: Vec<api::StopContainerResponse> = self
            .each(api::Event::StopContainer, "StopContainer", &req, None)
            .await?;
        Ok(answers.into_iter().flat_map(|a| a.update).collect())
    }

    pub async fn remove_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(), NriError> {
        let req = api::RemoveContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        let state = state_change(api::Event::RemoveContainer, pod, Some(ctr));
        self.each::<_, api::RemoveContainerResponse>(
            api::Event::RemoveContainer,
            "RemoveContainer",
            &req,
            Some(state),
        )
        .await
        .map(drop)
    }

    /// Applies container updates plugins asked for through the host; returns those that
    /// failed.
    pub async fn apply_updates(
        &self,
        updates: Vec<api::ContainerUpdate>,
    ) -> Vec<api::ContainerUpdate> {
        match self.host() {
            Some(h) => h.update(updates).await,
            None => updates,
        }
    }

    /// Whether any plugin is registered (the engine skips describing pods and containers when
    /// none is).
    pub fn active(&self) -> bool {
        self.cfg.default_validator.enable
            || !self
                .plugins
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Whether creates are validated: the default validator is on, or a plugin validates.
    fn validating(&self) -> bool {
        self.cfg.default_validator.enable
            || !self
                .subscribed(api::Event::ValidateContainerAdjustment)
                .is_empty()
    }

    /// Evicts containers in the background (stopping one sends NRI events, which wait for
    /// the event lock an event in progress holds).
    fn evict_later(&self, evictions: Vec<api::ContainerEviction>) {
        if let Some(h) = self.host() {
            tokio::spawn(async move { h.evict(evictions).await });
        }
    }

    /// The default validator, then every validating plugin (in parallel): a rejection fails
    /// the create.
    async fn validate(
        &self,
        pod: &api::PodSandbox,
        pristine: &api::Container,
        merged: &adjust::Merged,
        updates: &[api::ContainerUpdate],
    ) -> Result<(), NriError> {
        if self.cfg.default_validator.enable {
            validate::default_validator(
                &self.cfg.default_validator,
                pod,
                pristine,
                merged,
                &self.plugins(),
            )
            .map_err(NriError::Adjustment)?;
        }
        let validators = self.subscribed(api::Event::ValidateContainerAdjustment);
        if validators.is_empty() {
            return Ok(());
        }
        let req = api::ValidateContainerAdjustmentRequest {
            pod: Some(pod.clone()),
            container: Some(pristine.clone()),
            adjust: Some(merged.adjust.clone()),
            update: updates.to_vec(),
            owners: Some(merged.owners(&pristine.id)),
            plugins: self
                .list()
                .iter()
                .map(|p| api::PluginInstance {
                    name: p.name.clone(),
                    index: p.index.clone(),
                })
                .collect(),
        };
        let calls = validators.iter().map(|p| {
            let req = &req;
            async move {
                let r: Result<api::ValidateContainerAdjustmentResponse, CallError> = p
                    .client
                    .call(
                        PLUGIN_SERVICE,
                        "ValidateContainerAdjustment",
                        req,
                        self.request_timeout(),
                    )
                    .await;
                (p.clone(), r)
            }
        });
        for (p, r) in futures::future::join_all(calls).await {
            match r {
                Ok(v) if v.reject => {
                    let reason = if v.reason.is_empty() {
                        "unknown rejection reason".to_string()
                    } else {
                        v.reason
                    };
                    return Err(NriError::Adjustment(format!(
                        "validator {:?} rejected container adjustment, reason: {reason}",
                        p.name
                    )));
                }
                Ok(_) => {}
                Err(err) => {
                    if err.is_fatal() {
                        self.drop_plugin(&p, &err).await;
                    }
                    return Err(NriError::Adjustment(format!(
                        "validator plugin {} failed: {err}",
                        p.id()
                    )));
                }
            }
        }
        Ok(())
    }

    /// UpdateContainer (UpdateContainerResources): plugins may change the resources being set
    /// (an update naming the container itself, merged with NRI's conflict rule) and ask for
    /// updates of other containers. Returns the resources to set and the other updates.
    pub async fn update_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
        resources: api::LinuxResources,
    ) -> Result<(api::LinuxResources, Vec<api::ContainerUpdate>), NriError> {
        let plugins = self.subscribed(api::Event::UpdateContainer);
        if plugins.is_empty() {
            return Ok((resources, Vec::new()));
        }
        let _g = self.order.lock().await;
        let (mut merged, mut shown, mut current) =
            (adjust::Merged::default(), ctr.clone(), resources);
        let (mut others, mut evictions) = (Vec::new(), Vec::new());
        for p in plugins {
            let req = api::UpdateContainerRequest {
                pod: Some(pod.clone()),
                container: Some(shown.clone()),
                linux_resources: Some(current.clone()),
            };
            let r: Result<api::UpdateContainerResponse, CallError> = p
                .client
                .call(
                    PLUGIN_SERVICE,
                    "UpdateContainer",
                    &req,
                    self.request_timeout(),
                )
                .await;
            match r {
                Ok(r) => {
                    for u in r.update {
                        if u.container_id != ctr.id {
                            others.push(u);
                            continue;
                        }
                        let Some(res) = u.linux.and_then(|l| l.resources) else {
                            continue;
                        };
                        match merged.add_resources(&p.id(), res.clone(), &mut shown) {
                            Ok(()) => adjust::overlay_resources(&mut current, &res),
                            Err(_) if u.ignore_failure => {}
                            Err(e) => return Err(NriError::Adjustment(e)),
                        }
                    }
                    evictions.extend(r.evict);
                }
                Err(err) if err.is_fatal() => self.drop_plugin(&p, &err).await,
                Err(err) => {
                    return Err(NriError::Plugin {
                        plugin: p.id(),
                        event: "UpdateContainer",
                        message: err.to_string(),
                    })
                }
            }
        }
        if !evictions.is_empty() {
            self.evict_later(evictions);
        }
        Ok((current, others))
    }

    pub async fn post_update_container(
        &self,
        pod: &api::PodSandbox,
        ctr: &api::Container,
    ) -> Result<(), NriError> {
        let req = api::PostUpdateContainerRequest {
            pod: Some(pod.clone()),
            container: Some(ctr.clone()),
        };
        let state = state_change(api::Event::PostUpdateContainer, pod, Some(ctr));
        self.each::<_, api::PostUpdateContainerResponse>(
            api::Event::PostUpdateContainer,
            "PostUpdateContainer",
            &req,
            Some(state),
        )
        .await
        .map(drop)
    }

    /// UpdatePodSandbox (UpdatePodSandboxResources), before the resources are applied.
    pub async fn update_pod(
        &self,
        pod: &api::PodSandbox,
        resources: &api::LinuxResources,
    ) -> Result<(), NriError> {
        let req = api::UpdatePodSandboxRequest {
            pod: Some(pod.clone()),
            overhead_linux_resources: None,
            linux_resources: Some(resources.clone()),
        };
        self.each::<_, api::UpdatePodSandboxResponse>(
            api::Event::UpdatePodSandbox,
            "UpdatePodSandbox",
            &req,
            None,
        )
        .await
        .map(drop)
    }

    pub async fn post_update_pod(&self, pod: &api::PodSandbox) -> Result<(), NriError> {
        let req = api::PostUpdatePodSandboxRequest {
            pod: Some(pod.clone()),
        };
        let state = state_change(api::Event::PostUpdatePodSandbox, pod, None);
        self.each::<_, api::PostUpdatePodSandboxResponse>(
            api::Event::PostUpdatePodSandbox,
            "PostUpdatePodSandbox",
            &req,
            Some(state),
        )
        .await
        .map(drop)
    }

    /// Synchronize, in messages under ttrpc's 4 MiB limit: all but the last say `more`, and
    /// the plugin must answer them with `more` and no updates.
    async fn synchronize(
        &self,
        plugin: &Plugin,
        pods: Vec<api::PodSandbox>,
        containers: Vec<api::Container>,
    ) -> Result<api::SynchronizeResponse, CallError> {
        let chunks = sync_chunks(pods, containers, ttrpc::MAX_MESSAGE - 64 * 1024);
        let n = chunks.len();
        let mut last = api::SynchronizeResponse::default();
        for (i, req) in chunks.into_iter().enumerate() {
            last = plugin
                .client
                .call(PLUGIN_SERVICE, "Synchronize", &req, self.request_timeout())
                .await?;
            if i + 1 < n && (!last.more || !last.update.is_empty()) {
                return Err(CallError::Decode(
                    "the plugin does not handle split synchronization".into(),
                ));
            }
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_synchronize_is_split_under_the_limit_with_more_on_all_but_the_last() {
        let pods: Vec<api::PodSandbox> = (0..50)
            .map(|i| api::PodSandbox {
                id: format!("{i:064}"),
                annotations: [("a".to_string(), "x".repeat(1000))].into(),
                ..Default::default()
            })
            .collect();
        let ctrs: Vec<api::Container> = (0..50)
            .map(|i| api::Container {
                id: format!("{i:064}"),
                env: vec!["E=".to_string() + &"y".repeat(1000)],
                ..Default::default()
            })
            .collect();
        let one = sync_chunks(pods.clone(), ctrs.clone(), 1 << 30);
        assert_eq!(one.len(), 1);
        assert!(!one[0].more);
        let chunks = sync_chunks(pods, ctrs, 10_000);
        assert!(chunks.len() > 5, "{}", chunks.len());
        assert!(chunks.iter().all(|c| c.encoded_len() <= 10_000 + 200));
        assert!(chunks[..chunks.len() - 1].iter().all(|c| c.more));
        assert!(!chunks.last().unwrap().more);
        let (p, c): (usize, usize) = chunks.iter().fold((0, 0), |(p, c), r| {
            (p + r.pods.len(), c + r.containers.len())
        });
        assert_eq!((p, c), (50, 50));
    }
}
