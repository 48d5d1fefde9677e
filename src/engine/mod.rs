//! The pod and container domain: what RunPodSandbox … ExecSync do, independent of gRPC.
//!
//! State: every pod and container is a JSON record under `<root>/state/{pods,containers}`,
//! written atomically on each change, and a copy in memory. Operations on one object take that
//! object's async lock; the maps are behind short std locks never held across an await. Work
//! that forks (monitors, exec, namespace pinning) is a re-exec'd ferrio helper; blocking file
//! and mount work runs on `spawn_blocking`.

pub mod container;
pub mod creates;
pub mod debug;
pub mod error;
pub mod events;
pub mod nri;
pub mod pod;
pub mod usage;
pub mod validate;

#[cfg(test)]
mod tests;

use crate::config::Config;
use crate::image::Images;
use crate::model::{ContainerConfig, Mount, PodConfig, PodPaths};
use crate::spec::User;
pub use error::{EngineError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodState {
    Ready,
    NotReady,
}

/// A container's paths, joined here and nowhere else (as pods have `PodPaths`): its run
/// directory under the run root (a tmpfs: bundle, monitor socket and config, exit file) and
/// its data directory under the root (the overlay's upper and work directories).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtrPaths {
    pub run: PathBuf,
    pub data: PathBuf,
}

impl CtrPaths {
    pub fn bundle(&self) -> PathBuf {
        self.run.join("bundle")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
    pub fn monitor_socket(&self) -> PathBuf {
        self.run.join("monitor.sock")
    }
    pub fn monitor_config(&self) -> PathBuf {
        self.run.join("monitor.json")
    }
    pub fn monitor_log(&self) -> PathBuf {
        self.run.join("monitor.log")
    }
    /// Written by the monitor when the container has exited.
    pub fn exit_file(&self) -> PathBuf {
        self.run.join("exit")
    }
    /// The overlay's upper directory: the container's writable layer.
    pub fn upper(&self) -> PathBuf {
        self.data.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.data.join("work")
    }
    /// Where the image volume of the container's mount `index` is mounted.
    pub fn image_volume(&self, index: usize) -> PathBuf {
        self.run.join(format!("imgvol-{index}"))
    }
    /// Where the idmapped mounts of the container's volumes are.
    pub fn idmapped(&self) -> PathBuf {
        self.run.join("idmap")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub config: PodConfig,
    pub runtime_handler: String,
    pub created_at_ns: i64,
    pub state: PodState,
    /// False until RunPodSandbox finished: a record left incomplete by a crash is torn down.
    pub complete: bool,
    pub paths: PodPaths,
    /// The pod's cgroup (its containers' parent).
    pub cgroup: String,
    /// Whether ferrio made the pod cgroup (and so removes it).
    pub made_cgroup: bool,
    /// The pause process (pid, start time) when the pod shares one PID namespace.
    pub pause: Option<(i32, u64)>,
    /// The pod's IPs from its CNI network (empty under host network or without a network).
    #[serde(default)]
    pub ips: Vec<String>,
    /// Whether the pod is attached to a CNI network (and so needs a DEL).
    #[serde(default)]
    pub cni_attached: bool,
    /// Made, but its RunPodSandbox caller left before the answer (see [`creates`]): hidden
    /// until a retry claims it, removed if none does.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unclaimed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// CreateContainer has not finished (a crash here means: clean up).
    Creating,
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub config: ContainerConfig,
    pub handler: String,
    /// The image as requested, and the image service's ID for it.
    pub image: String,
    pub image_id: String,
    pub created_at_ns: i64,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    pub state: ContainerState,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub log_path: PathBuf,
    pub user: User,
    pub pid: i32,
    pub monitor_pid: i32,
    pub stop_signal: i32,
    pub cgroup: String,
    /// The mounts as applied (host paths after symlinks).
    pub mounts: Vec<Mount>,
    /// Made, but its CreateContainer caller left before the answer (see [`creates`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unclaimed: bool,
}

/// What a create makes (see [`Engine::create_once`]).
#[derive(Debug, Clone, Copy)]
enum Made {
    Pod,
    Container,
}

/// What the engine needs from the daemon.
pub struct Engine {
    cfg: Arc<Config>,
    images: Arc<Images>,
    pods: RwLock<HashMap<String, PodRecord>>,
    containers: RwLock<HashMap<String, ContainerRecord>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Reserved names → the pod or container holding them.
    names: Mutex<HashMap<String, String>>,
    /// Creates running in their own tasks, and finished ones not yet handed back.
    creates: creates::Creates,
    /// The lowest oom_score_adj the host lets us set (our own, without CAP_SYS_RESOURCE).
    min_oom_score_adj: i32,
    /// The daemon's bounding capability set: all a container can be given here.
    host_capabilities: Vec<String>,
    /// The security modules the host enforces.
    lsm: crate::model::Lsm,
    /// The last CPU sample per container and pod, for usage_nano_cores.
    sampler: crate::stats::CpuSampler,
    /// The pods' CNI network.
    pub cni: crate::network::Cni,
    /// The last CNI STATUS (or VERSION) check of the network's plugins, and when it ran.
    net_status: Mutex<Option<(std::time::Instant, std::result::Result<(), String>)>>,
    /// Container lifecycle events, to every GetContainerEvents subscriber.
    events: tokio::sync::broadcast::Sender<events::Event>,
    events_dropped: std::sync::atomic::AtomicU64,
    /// Container exits the monitor recorded as OOM kills, since the daemon started.
    oom_kills: std::sync::atomic::AtomicU64,
    /// Whether the image store's filesystem can be idmapped here (probed at start).
    idmap: std::sync::atomic::AtomicBool,
    /// Serialises container record saves.
    save_lock: Mutex<()>,
    /// NRI plugins, once the server started them (see `engine/nri.rs`).
    nri: OnceLock<Arc<crate::nri::Nri>>,
}

/// What a save must not undo (see [`Engine::save_container`]): a start time, and an exit.
fn keep_set_once(rec: &mut ContainerRecord, cur: &ContainerRecord) {
    if rec.started_at_ns == 0 {
        rec.started_at_ns = cur.started_at_ns;
    }
    if cur.state == ContainerState::Exited && rec.state != ContainerState::Exited {
        rec.state = ContainerState::Exited;
        rec.exit_code = cur.exit_code;
        rec.finished_at_ns = cur.finished_at_ns;
        rec.reason = cur.reason.clone();
        rec.message = cur.message.clone();
    }
}

/// Random 64-hex IDs, as CRI runtimes use.
pub fn new_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        // Never expected; fall back to time and pid, still unique on this host.
        let t = crate::monitor::now_ns() as u128 ^ ((std::process::id() as u128) << 64);
        b[..16].copy_from_slice(&t.to_le_bytes());
    }
    hex::encode(b)
}

pub fn now_ns() -> i64 {
    crate::monitor::now_ns()
}

impl Engine {
    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    /// Image pulls downloading now (for `ferrio status`).
    pub fn pulls_in_progress(&self) -> Vec<crate::image::PullProgress> {
        self.images.pulls_in_progress()
    }

    fn state_dir(&self, kind: &str) -> PathBuf {
        self.cfg.root.join("state").join(kind)
    }

    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.cfg.run_root.join("pods").join(id)
    }

    pub fn ctr_run_dir(&self, id: &str) -> PathBuf {
        self.ctr_paths(id).run
    }

    pub fn ctr_data_dir(&self, id: &str) -> PathBuf {
        self.ctr_paths(id).data
    }

    /// Where container `id`'s files are.
    pub fn ctr_paths(&self, id: &str) -> CtrPaths {
        CtrPaths {
            run: self.cfg.run_root.join("ctr").join(id),
            data: self.cfg.root.join("containers").join(id),
        }
    }

    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    fn drop_lock(&self, id: &str) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn reserve(&self, name: &str, id: &str) -> Result<()> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(holder) = names.get(name) {
            return Err(EngineError::new(
                crate::error::Kind::AlreadyExists,
                format!("the name {name:?} is reserved for {holder}"),
            ));
        }
        names.insert(name.to_string(), id.to_string());
        Ok(())
    }

    fn release(&self, name: &str, id: &str) {
        {
            let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            if names.get(name).is_some_and(|h| h == id) {
                names.remove(name);
            }
        }
        self.creates.take(name, id);
    }

    /// Runs the create of `name` in a task of its own (see [`creates`]): `work` gets the new
    /// ID; this caller, and any retry of the name meanwhile, wait for its outcome. A caller
    /// that leaves does not stop it.
    async fn create_once<W, F>(
        self: &Arc<Self>,
        made: Made,
        name: String,
        work: W,
    ) -> Result<String>
    where
        W: FnOnce(String, creates::Handoff) -> F,
        F: std::future::Future<Output = Result<String>> + Send + 'static,
    {
        let joined = self.creates.join(&name, || {
            let id = new_id();
            self.reserve(&name, &id)?;
            Ok(id)
        })?;
        let waiter = match joined {
            creates::Joined::Existing(w) => {
                tracing::info!(%name, "a create of this name is in progress or unclaimed: waiting for it");
                w
            }
            creates::Joined::New {
                id,
                waiter,
                handoff,
            } => {
                let work = work(id.clone(), handoff.clone());
                let engine = self.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let outcome = work.await;
                    let made_it = outcome.is_ok();
                    engine.creates.finish(&name, &id, &handoff, outcome);
                    drop(handoff);
                    if made_it {
                        engine.expire_unclaimed(made, &name, &id).await;
                    }
                });
                waiter
            }
        };
        let id = waiter.outcome().await?;
        self.claim(made, &name, &id)?;
        Ok(id)
    }

    /// A create's outcome reached a caller: it is no longer kept for a retry.
    fn claim(&self, made: Made, name: &str, id: &str) -> Result<()> {
        let took = self.creates.take(name, id);
        let lost = || {
            EngineError::new(
                crate::error::Kind::Aborted,
                format!("{name:?} was created but not asked for again in time and is being removed; retry"),
            )
        };
        match made {
            Made::Pod => {
                if let Some(mut p) = self.pod(id).filter(|p| p.unclaimed) {
                    if !took {
                        return Err(lost());
                    }
                    p.unclaimed = false;
                    self.save_pod(&p)?;
                    tracing::info!(pod = %id, %name, "pod sandbox handed to a retry");
                }
            }
            Made::Container => {
                if let Some(mut c) = self.container(id).filter(|c| c.unclaimed) {
                    if !took {
                        return Err(lost());
                    }
                    c.unclaimed = false;
                    self.save_container(&c)?;
                    tracing::info!(container = %id, %name, "container handed to a retry");
                }
            }
        }
        Ok(())
    }

    /// Waits [`creates::UNCLAIMED_TTL`] for a retry to claim `id`, then removes it if none did.
    async fn expire_unclaimed(self: &Arc<Self>, made: Made, name: &str, id: &str) {
        tokio::time::sleep(creates::UNCLAIMED_TTL).await;
        if !self.creates.take(name, id) {
            return;
        }
        let unclaimed = match made {
            Made::Pod => self.pod(id).is_some_and(|p| p.unclaimed),
            Made::Container => self.container(id).is_some_and(|c| c.unclaimed),
        };
        if !unclaimed {
            return;
        }
        tracing::info!(%id, %name, "no retry claimed this create: removing it");
        let removed = match made {
            Made::Pod => self.remove_pod(id).await,
            Made::Container => self.remove_container(id).await,
        };
        if let Err(e) = removed {
            tracing::warn!(%id, error = %e, "removing an unclaimed create");
        }
    }

    /// Restore: a create that finished unclaimed before the restart waits for its retry again.
    fn adopt_unclaimed(self: &Arc<Self>, made: Made, name: String, id: String) {
        self.creates.adopt(&name, &id);
        let engine = self.clone();
        tokio::spawn(async move { engine.expire_unclaimed(made, &name, &id).await });
    }

    fn save_pod(&self, rec: &PodRecord) -> Result<()> {
        let path = self.state_dir("pods").join(format!("{}.json", rec.id));
        off_worker(|| crate::state::write_json_volatile(&path, rec))
            .map_err(EngineError::io(format_args!("saving pod {}", rec.id)))?;
        self.pods
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// Saves a container record. Callers work on copies (StartContainer under the container's
    /// lock, an exit applied by whoever reads the record first), so what is only ever set once
    /// is kept from the record in memory: a start time, and an exit. Saves are serialised, so
    /// the file ends as the map does.
    fn save_container(&self, rec: &ContainerRecord) -> Result<()> {
        let _g = self.save_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut rec = rec.clone();
        if let Some(cur) = self
            .containers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&rec.id)
        {
            keep_set_once(&mut rec, cur);
        }
        let path = self
            .state_dir("containers")
            .join(format!("{}.json", rec.id));
        off_worker(|| crate::state::write_json_volatile(&path, &rec))
            .map_err(EngineError::io(format_args!("saving container {}", rec.id)))?;
        self.containers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rec.id.clone(), rec);
        Ok(())
    }

    fn forget_pod(&self, id: &str) {
        self.sampler.forget(&format!("pod:{id}"));
        let path = self.state_dir("pods").join(format!("{id}.json"));
        let _ = off_worker(|| std::fs::remove_file(path));
        self.pods
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn forget_container(&self, id: &str) {
        self.sampler.forget(id);
        let path = self.state_dir("containers").join(format!("{id}.json"));
        let _ = off_worker(|| std::fs::remove_file(path));
        self.containers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    pub fn pod(&self, id: &str) -> Option<PodRecord> {
        self.pods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn container(&self, id: &str) -> Option<ContainerRecord> {
        self.containers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// A full ID or a unique prefix of one → the full ID. Ok(None): no such object.
    fn resolve<T>(map: &RwLock<HashMap<String, T>>, what: &str, s: &str) -> Result<Option<String>> {
        if s.is_empty() {
            return Err(EngineError::invalid(format!("{what} ID is required")));
        }
        let map = map.read().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(s) {
            return Ok(Some(s.to_string()));
        }
        let hits: Vec<&String> = map.keys().filter(|k| k.starts_with(s)).collect();
        match hits.len() {
            0 => Ok(None),
            1 => Ok(Some(hits[0].clone())),
            n => Err(EngineError::invalid(format!(
                "{what} ID prefix {s:?} is ambiguous ({n} match)"
            ))),
        }
    }

    pub fn resolve_pod(&self, s: &str) -> Result<Option<String>> {
        Self::resolve(&self.pods, "pod sandbox", s)
    }

    pub fn resolve_container(&self, s: &str) -> Result<Option<String>> {
        Self::resolve(&self.containers, "container", s)
    }

    pub fn list_pods(&self) -> Vec<PodRecord> {
        let mut v: Vec<PodRecord> = self
            .pods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|p| p.complete && !p.unclaimed)
            .cloned()
            .collect();
        v.sort_by_key(|p| p.created_at_ns);
        v
    }

    /// The IDs of every container the engine holds a record of (any state).
    fn container_ids(&self) -> Vec<String> {
        self.containers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn list_containers(&self) -> Vec<ContainerRecord> {
        let ids = self.container_ids();
        let mut v: Vec<ContainerRecord> = ids
            .iter()
            .filter_map(|id| self.refreshed(id))
            .filter(|c| c.state != ContainerState::Creating && !c.unclaimed)
            .collect();
        v.sort_by_key(|c| c.created_at_ns);
        v
    }

    /// Opens the engine: reads the records and reconciles them with what is running.
    pub async fn open(cfg: Arc<Config>, images: Arc<Images>) -> Result<Arc<Engine>> {
        let engine = Self::new(cfg, images)?;
        engine.restore().await;
        let idmap = engine.probe_idmap().await;
        engine
            .idmap
            .store(idmap, std::sync::atomic::Ordering::Relaxed);
        // CNI attachments of pods ferrio no longer knows (a crash between ADD and the record,
        // or pods removed while the network was broken) are removed in the background.
        // (Unclaimed pods too: they keep their network while they wait for a retry.)
        let live: Vec<String> = engine
            .pods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|p| p.complete && p.cni_attached)
            .map(|p| p.id.clone())
            .collect();
        let e2 = engine.clone();
        tokio::spawn(async move {
            match e2.cni.gc(&live).await {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(pods = ?removed, "CNI attachments of unknown pods removed")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "CNI garbage collection failed"),
            }
        });
        Ok(engine)
    }

    /// The engine with no records yet and nothing probed or started: what `open` restores
    /// into (and the unit tests' engine, which runs no helper).
    fn new(cfg: Arc<Config>, images: Arc<Images>) -> Result<Arc<Engine>> {
        let min_oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let engine = Arc::new(Engine {
            cfg: cfg.clone(),
            images,
            pods: RwLock::default(),
            containers: RwLock::default(),
            locks: Mutex::default(),
            names: Mutex::default(),
            creates: creates::Creates::default(),
            min_oom_score_adj,
            host_capabilities: host_capabilities(),
            lsm: crate::model::Lsm::detect(),
            sampler: crate::stats::CpuSampler::new(),
            cni: crate::network::Cni::load(&cfg.network, &cfg.cni_cache_dir())
                .map_err(EngineError::domain)?,
            net_status: Mutex::default(),
            events: tokio::sync::broadcast::channel(events::CAPACITY).0,
            events_dropped: std::sync::atomic::AtomicU64::new(0),
            oom_kills: std::sync::atomic::AtomicU64::new(0),
            idmap: std::sync::atomic::AtomicBool::new(false),
            save_lock: Mutex::default(),
            nri: OnceLock::new(),
        });
        // RemoveImage asks the live records who uses an image (rootfs or image volume).
        let weak = Arc::downgrade(&engine);
        engine.images.set_users(Arc::new(move |image_id: &str| {
            let engine = weak.upgrade()?;
            let containers = engine.containers.read().unwrap_or_else(|e| e.into_inner());
            containers
                .values()
                .find(|c| c.image_id == image_id || c.mounts.iter().any(|m| m.image_id == image_id))
                .map(|c| format!("{:?} ({})", c.config.name, c.id))
        }));
        if !engine.lsm.apparmor && !engine.lsm.selinux {
            tracing::info!("this host enforces neither AppArmor nor SELinux: those fields of container security contexts are ignored");
        }
        for kind in ["pods", "containers"] {
            let d = engine.state_dir(kind);
            std::fs::create_dir_all(&d)
                .map_err(EngineError::io(format_args!("creating {}", d.display())))?;
        }
        Ok(engine)
    }

    fn read_records<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Vec<T> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.state_dir(kind)) else {
            return out;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                let _ = std::fs::remove_file(&p);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            match crate::state::read_json::<T>(&p) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "skipping an unreadable record")
                }
            }
        }
        out
    }

    /// Restore after a (re)start: pods first, then containers; half-made objects are removed,
    /// live monitors are kept, containers that ended while we were down get their exit file.
    async fn restore(self: &Arc<Self>) {
        let pods: Vec<PodRecord> = self.read_records("pods");
        let containers: Vec<ContainerRecord> = self.read_records("containers");
        let (mut npods, mut nctrs, mut cleaned) = (0, 0, 0);
        for mut p in pods {
            if !p.complete {
                cleaned += 1;
                self.teardown_pod(&p).await;
                self.forget_pod(&p.id);
                continue;
            }
            if p.state == PodState::Ready && !self.pod_still_ready(&p) {
                tracing::warn!(pod = %p.id, "pod namespaces are gone (reboot?); marking it NotReady");
                p.state = PodState::NotReady;
                let _ = self.save_pod(&p);
            }
            self.names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pod::pod_name(&p.config), p.id.clone());
            if p.unclaimed {
                self.adopt_unclaimed(Made::Pod, pod::pod_name(&p.config), p.id.clone());
            }
            self.pods
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(p.id.clone(), p);
            npods += 1;
        }
        for c in containers {
            if c.state == ContainerState::Creating || self.pod(&c.pod_id).is_none() {
                cleaned += 1;
                self.cleanup_container_files(&c).await;
                self.forget_container(&c.id);
                continue;
            }
            let pod = self.pod(&c.pod_id);
            if let Some(pod) = pod {
                let name = container::container_name(&pod.config, &c.config);
                self.names
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.clone(), c.id.clone());
                if c.unclaimed {
                    self.adopt_unclaimed(Made::Container, name, c.id.clone());
                }
            }
            self.containers
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(c.id.clone(), c.clone());
            if matches!(c.state, ContainerState::Created | ContainerState::Running) {
                self.refresh_after_restart(&c.id).await;
                if self
                    .container(&c.id)
                    .is_some_and(|c| c.state != ContainerState::Exited)
                {
                    self.watch_exit(&c.id);
                }
            }
            nctrs += 1;
        }
        // Writable layers no record names: a record a power loss took (records are not
        // fsynced), or a crash between the directory and the record.
        let known: std::collections::HashSet<String> = self.container_ids().into_iter().collect();
        let data = self.cfg.root.join("containers");
        let orphans = blocking(move || {
            let mut removed = 0;
            for e in std::fs::read_dir(&data).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if known.contains(&name) {
                    continue;
                }
                match std::fs::remove_dir_all(e.path()) {
                    Ok(()) => removed += 1,
                    Err(err) => {
                        tracing::warn!(dir = %e.path().display(), error = %err, "removing a writable layer no container owns")
                    }
                }
            }
            removed
        })
        .await
        .unwrap_or(0);
        tracing::info!(
            pods = npods,
            containers = nctrs,
            cleaned,
            orphans,
            "state restored"
        );
    }

    fn pod_still_ready(&self, p: &PodRecord) -> bool {
        let pins_ok = [&p.paths.net_ns, &p.paths.ipc_ns, &p.paths.uts_ns]
            .into_iter()
            .flatten()
            .all(|ns| is_nsfs(ns));
        let pause_ok = p
            .pause
            .is_none_or(|(pid, start)| crate::sys::process::process_alive(pid, Some(start)));
        pins_ok && pause_ok
    }

    /// What the helpers are exec'd from: the sealed copy of this binary (`sys::exe`).
    pub fn exe() -> &'static Path {
        crate::sys::exe::helper_path()
    }
}

/// The capabilities in this process's bounding set, as `CAP_X` names, sorted.
fn host_capabilities() -> Vec<String> {
    let mut v: Vec<String> = caps::read(None, caps::CapSet::Bounding)
        .map(|set| set.into_iter().map(|c| c.to_string()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Whether `p` is a bind mount of a namespace (nsfs).
fn is_nsfs(p: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e736673;
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Runs a short blocking file operation (an fsync'd record write) where the caller is: on a
/// runtime worker thread, tokio first hands that worker's other tasks to another worker
/// (`block_in_place`), so the write never stalls them; elsewhere it simply runs.
fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Runs blocking work off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::internal(format!("blocking task failed: {e}")))
}
