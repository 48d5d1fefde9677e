//! Pods without an infra container: pinned net/ipc/uts namespaces, /dev/shm, hostname,
//! resolv.conf, sysctls, the pod cgroup, and a pause process only for a shared PID namespace.

use super::{blocking, now_ns, validate, Engine, EngineError, PodRecord, PodState, Result};
use crate::error::Kind;
use crate::monitor::pinns::{PinRequest, PinResult};
use crate::spec::config::{Dns, NamespaceMode, PodConfig, PodPaths};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The reserved name of a pod: `<name>_<namespace>_<uid>_<attempt>`, as kubelet and CRI-O
/// spell it.
pub fn pod_name(c: &PodConfig) -> String {
    format!("k8s_POD_{}_{}_{}_{}", c.name, c.namespace, c.uid, c.attempt)
}

/// A Kubernetes quantity of bits per second (`10M`, `1Gi`, `500k`, `100`).
fn quantity(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The bandwidth plugin's runtime config from the pod's `kubernetes.io/ingress-bandwidth` and
/// `kubernetes.io/egress-bandwidth` annotations (bits per second); the burst is left unlimited,
/// as containerd does.
pub fn bandwidth(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<crate::network::Bandwidth> {
    let ingress = annotations
        .get("kubernetes.io/ingress-bandwidth")
        .and_then(|v| quantity(v));
    let egress = annotations
        .get("kubernetes.io/egress-bandwidth")
        .and_then(|v| quantity(v));
    if ingress.is_none() && egress.is_none() {
        return None;
    }
    let burst = u32::MAX as u64;
    Some(crate::network::Bandwidth {
        ingress_rate: ingress.unwrap_or(0),
        ingress_burst: if ingress.is_some() { burst } else { 0 },
        egress_rate: egress.unwrap_or(0),
        egress_burst: if egress.is_some() { burst } else { 0 },
    })
}

/// resolv.conf from the pod's DNS config.
pub fn resolv_conf(d: &Dns) -> String {
    let mut s = String::new();
    if !d.searches.is_empty() {
        s.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    for n in &d.servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !d.options.is_empty() {
        s.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    s
}

/// Which namespace a sysctl lives in; None: not namespaced (refused).
fn sysctl_namespace(key: &str) -> Option<&'static str> {
    let k = key.replace('/', ".");
    if k.starts_with("net.") {
        Some("net")
    } else if k.starts_with("kernel.shm")
        || k.starts_with("kernel.msg")
        || k == "kernel.sem"
        || k.starts_with("fs.mqueue.")
    {
        Some("ipc")
    } else if k == "kernel.hostname" || k == "kernel.domainname" {
        Some("uts")
    } else {
        None
    }
}

/// `userns_options`: NODE (the host's user namespace) without mappings, or POD with exactly
/// one uid and one gid mapping that maps container id 0; CONTAINER and TARGET are not modes
/// a pod can have. A pod with its own user namespace cannot use the host's network, PID or
/// IPC namespace (Kubernetes does not allow it either).
fn validate_userns(c: &PodConfig, u: &crate::spec::config::UserNamespace) -> Result<()> {
    const FIELD: &str = "linux.security_context.namespace_options.userns_options";
    match u.mode {
        NamespaceMode::Node => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err(EngineError::invalid(format!(
                    "{FIELD}: mode NODE takes no uid or gid mappings"
                )));
            }
            return Ok(());
        }
        NamespaceMode::Pod => {}
        m => {
            return Err(EngineError::invalid(format!(
                "{FIELD}: unsupported user namespace mode {}",
                format!("{m:?}").to_uppercase()
            )))
        }
    }
    for (what, maps) in [("uids", &u.uids), ("gids", &u.gids)] {
        let [m] = maps.as_slice() else {
            return Err(EngineError::invalid(format!(
                "{FIELD}.{what}: mode POD needs exactly one mapping, got {}",
                maps.len()
            )));
        };
        if m.length == 0 || m.host_id.checked_add(m.length - 1).is_none() {
            return Err(EngineError::invalid(format!(
                "{FIELD}.{what}: mapping {} {} {} is empty or beyond the id range",
                m.container_id, m.host_id, m.length
            )));
        }
        if m.container_id != 0 {
            return Err(EngineError::invalid(format!(
                "{FIELD}.{what}: container id 0 (root) must be mapped; the mapping starts at {}",
                m.container_id
            )));
        }
    }
    for (what, mode) in [("network", c.network), ("pid", c.pid), ("ipc", c.ipc)] {
        if mode == NamespaceMode::Node {
            return Err(EngineError::invalid(format!(
                "{FIELD}: a pod with its own user namespace cannot use the host's {what} namespace"
            )));
        }
    }
    Ok(())
}

pub fn validate_pod(c: &PodConfig) -> Result<()> {
    validate::name("metadata.name", &c.name, true)?;
    validate::name("metadata.namespace", &c.namespace, true)?;
    validate::name("metadata.uid", &c.uid, true)?;
    validate::name("hostname", &c.hostname, false)?;
    if c.hostname.len() > 64 {
        return Err(EngineError::invalid("hostname is longer than 64 bytes"));
    }
    if !c.log_directory.is_empty() {
        validate::absolute("log_directory", &c.log_directory)?;
    }
    if let Some(u) = &c.userns {
        validate_userns(c, u)?;
    }
    validate::bounded("labels", c.labels.len(), 1024)?;
    validate::bounded("annotations", c.annotations.len(), 1024)?;
    validate::bounded("linux.sysctls", c.sysctls.len(), 256)?;
    if let Some(d) = &c.dns {
        validate::bounded("dns_config.servers", d.servers.len(), 64)?;
        validate::bounded("dns_config.searches", d.searches.len(), 64)?;
        validate::bounded("dns_config.options", d.options.len(), 64)?;
        for v in d.servers.iter().chain(&d.searches).chain(&d.options) {
            if v.contains('\n') || v.contains('\0') || v.len() > 255 {
                return Err(EngineError::invalid(format!(
                    "dns_config entry {v:?} is not valid"
                )));
            }
        }
    }
    for (k, v) in &c.sysctls {
        let ns = sysctl_namespace(k).ok_or_else(|| {
            EngineError::invalid(format!(
                "sysctl {k:?} is not namespaced and cannot be set for a pod"
            ))
        })?;
        let host = match ns {
            "net" | "uts" => c.network == NamespaceMode::Node,
            _ => c.ipc == NamespaceMode::Node,
        };
        if host {
            return Err(EngineError::invalid(format!(
                "sysctl {k:?} would change the host: the pod uses the host's {ns} namespace"
            )));
        }
        crate::monitor::pinns::sysctl_path(k).map_err(EngineError::invalid)?;
        if v.contains('\0') || v.len() > 4096 {
            return Err(EngineError::invalid(format!(
                "sysctl {k:?} has an invalid value"
            )));
        }
    }
    validate::bounded("port_mappings", c.port_mappings.len(), 256)?;
    for key in [
        "kubernetes.io/ingress-bandwidth",
        "kubernetes.io/egress-bandwidth",
    ] {
        if let Some(v) = c.annotations.get(key) {
            if quantity(v).is_none() {
                return Err(EngineError::invalid(format!(
                    "annotation {key}: {v:?} is not a bandwidth quantity"
                )));
            }
        }
    }
    for m in &c.port_mappings {
        if m.container_port == 0 {
            return Err(EngineError::invalid(format!(
                "port_mappings: host port {} needs a container port in 1..65535",
                m.host_port
            )));
        }
        if !m.host_ip.is_empty() && m.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(EngineError::invalid(format!(
                "port_mappings.host_ip {:?} is not an IP address",
                m.host_ip
            )));
        }
    }
    if c.network == NamespaceMode::Target || c.ipc == NamespaceMode::Target {
        return Err(EngineError::invalid(
            "namespace mode TARGET is only valid for pid",
        ));
    }
    Ok(())
}

impl Engine {
    pub fn handler_names(&self) -> Vec<String> {
        self.cfg().runtime.runtimes.keys().cloned().collect()
    }

    pub async fn run_pod(self: &Arc<Self>, mut config: PodConfig, handler: &str) -> Result<String> {
        validate_pod(&config)?;
        validate::cgroup_parent(self.cfg().runtime.cgroup_driver, &config.cgroup_parent)?;
        if config.user_namespace().is_some() && !self.idmapped_mounts_supported() {
            return Err(EngineError::precondition(
                "pods with their own user namespace need idmapped mounts, which this host's kernel or image-store filesystem does not offer",
            ));
        }
        let handler = if handler.is_empty() {
            self.cfg().runtime.default_runtime.clone()
        } else {
            handler.to_string()
        };
        if !self.cfg().runtime.runtimes.contains_key(&handler) {
            return Err(EngineError::invalid(format!(
                "runtime_handler {handler:?} is not configured (known: {})",
                self.handler_names().join(", ")
            )));
        }
        if config.hostname.is_empty() && config.network != NamespaceMode::Node {
            config.hostname = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        let name = pod_name(&config);
        let engine = self.clone();
        self.create_once(super::Made::Pod, name.clone(), move |id, handoff| async move {
            engine.make_pod(id, name, config, handler, handoff).await
        })
        .await
    }

    /// RunPodSandbox's work, in its own task (see [`super::creates`]).
    async fn make_pod(
        self: Arc<Self>,
        id: String,
        name: String,
        config: PodConfig,
        handler: String,
        handoff: super::creates::Handoff,
    ) -> Result<String> {
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let dir = self.pod_dir(&id);
        let rt = &self.cfg().runtime;
        let cgroup = crate::cgroups::pod_cgroup(
            rt.cgroup_driver,
            &config.cgroup_parent,
            &rt.default_cgroup_parent,
            &id,
        );
        let mut rec = PodRecord {
            id: id.clone(),
            config,
            runtime_handler: handler,
            created_at_ns: now_ns(),
            state: PodState::NotReady,
            complete: false,
            paths: PodPaths {
                shm: dir.join("shm"),
                resolv_conf: dir.join("resolv.conf"),
                ..Default::default()
            },
            cgroup,
            made_cgroup: false,
            pause: None,
            ips: Vec::new(),
            cni_attached: false,
            unclaimed: false,
        };
        let result = async {
            self.save_pod(&rec)?;
            self.setup_pod(&mut rec).await?;
            rec.state = PodState::Ready;
            rec.complete = true;
            rec.unclaimed = handoff.unclaimed();
            self.save_pod(&rec)
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(pod = %id, error = %e, "RunPodSandbox failed; removing what it made");
            self.teardown_pod(&rec).await;
            self.forget_pod(&id);
            self.release(&name, &id);
            self.drop_lock(&id);
            return Err(e);
        }
        tracing::info!(pod = %id, name = %rec.config.name, namespace = %rec.config.namespace, unclaimed = rec.unclaimed, "pod sandbox ready");
        self.emit_pod(&rec, super::events::EventKind::Created);
        self.emit_pod(&rec, super::events::EventKind::Started);
        Ok(id)
    }

    async fn setup_pod(&self, rec: &mut PodRecord) -> Result<()> {
        let dir = self.pod_dir(&rec.id);
        let c = rec.config.clone();
        let shm_size = self.cfg().runtime.shm_size;
        let cgroup = rec.cgroup.clone();
        let driver = self.cfg().runtime.cgroup_driver;
        let own_cgroup = c.cgroup_parent.is_empty();
        // Files and mounts (blocking, no fork).
        let (paths, made_cgroup) = {
            let dir = dir.clone();
            let c = c.clone();
            blocking(move || -> Result<(PodPaths, bool)> {
                std::fs::create_dir_all(dir.join("ns"))
                    .map_err(EngineError::io(format_args!("creating {}", dir.display())))?;
                let mut paths = PodPaths {
                    resolv_conf: dir.join("resolv.conf"),
                    ..Default::default()
                };
                let resolv = match &c.dns {
                    Some(d)
                        if !(d.servers.is_empty()
                            && d.searches.is_empty()
                            && d.options.is_empty()) =>
                    {
                        resolv_conf(d)
                    }
                    _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                };
                // Bound into every container, whose user may be anyone: world-readable, in a
                // directory only root can reach.
                write_shared(&paths.resolv_conf, resolv.as_bytes())
                    .map_err(EngineError::io("writing resolv.conf"))?;
                if c.network != NamespaceMode::Node {
                    let h = dir.join("hostname");
                    write_shared(&h, format!("{}\n", c.hostname).as_bytes())
                        .map_err(EngineError::io("writing hostname"))?;
                    paths.hostname_file = Some(h);
                }
                if c.ipc == NamespaceMode::Node {
                    paths.shm = PathBuf::from("/dev/shm");
                } else {
                    let shm = dir.join("shm");
                    std::fs::create_dir_all(&shm).map_err(EngineError::io("creating shm dir"))?;
                    crate::sys::mount::mount_shm(&shm, shm_size)
                        .map_err(|e| EngineError::internal(e.to_string()))?;
                    paths.shm = shm;
                }
                let made =
                    crate::cgroups::create_pod(driver, &cgroup, own_cgroup).map_err(|e| {
                        EngineError::internal(format!("creating pod cgroup {cgroup}: {e}"))
                    })?;
                Ok((paths, made))
            })
            .await??
        };
        rec.paths = paths;
        rec.made_cgroup = made_cgroup;
        self.save_pod(rec)?;
        // Namespaces: a re-exec'd helper unshares and pins them.
        let userns = c.user_namespace();
        let req = PinRequest {
            dir: dir.join("ns"),
            net: c.network != NamespaceMode::Node,
            ipc: c.ipc != NamespaceMode::Node,
            uts: c.network != NamespaceMode::Node,
            hostname: c.hostname.clone(),
            sysctls: c.sysctls.clone(),
            pause: c.pid == NamespaceMode::Pod,
            userns: userns.map(|(u, g)| (vec![u], vec![g])),
        };
        if req.net || req.ipc || req.uts || req.pause || req.userns.is_some() {
            let res = run_pin_helper(&req).await?;
            if let Some(e) = res.error {
                // Whatever it pinned before failing is under ns/ and goes with the teardown.
                return Err(EngineError::internal(format!(
                    "making the pod's namespaces: {e}"
                )));
            }
            if req.net {
                rec.paths.net_ns = Some(req.dir.join("net"));
            }
            if req.ipc {
                rec.paths.ipc_ns = Some(req.dir.join("ipc"));
            }
            if req.uts {
                rec.paths.uts_ns = Some(req.dir.join("uts"));
            }
            if let Some(pid) = res.pause_pid {
                let start = crate::sys::process::process_start_time(pid).unwrap_or(0);
                rec.pause = Some((pid, start));
                rec.paths.pid_ns = Some(req.dir.join("pid"));
                self.save_pod(rec)?;
                // Out of the daemon's cgroup, into the pod's (as the monitors).
                let h = crate::cgroups::HelperCgroup {
                    driver,
                    pod_cgroup: rec.cgroup.clone(),
                };
                let unit = format!("pause-{}", rec.id);
                blocking(move || crate::cgroups::place_helper(&h, &unit, pid))
                    .await?
                    .map_err(|e| {
                        EngineError::internal(format!(
                            "moving the pause process to its cgroup: {e}"
                        ))
                    })?;
            }
            if req.userns.is_some() {
                rec.paths.user_ns = Some(req.dir.join("user"));
            }
        }
        if let Some((uid, gid)) = userns {
            self.setup_userns_files(rec, &dir, uid.host_id, gid.host_id)
                .await?;
        }
        if c.network != NamespaceMode::Node {
            self.attach_network(rec).await?;
        }
        Ok(())
    }

    /// For a pod with its own user namespace: its files belong to the pod's root (`uid`/`gid`
    /// on the host), the directories on the way to them can be searched by it (as CRI-O's
    /// makeAccessible does), and the layer store is idmapped for it at `<pod>/layers`, where
    /// its containers take their lower layers from.
    async fn setup_userns_files(
        &self,
        rec: &mut PodRecord,
        dir: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        let paths = rec.paths.clone();
        let dir = dir.to_path_buf();
        let layers = self.images.store().layers_root();
        let top = self.cfg().run_root.clone();
        let staged = blocking(move || -> Result<PathBuf> {
            // The pod's directory, and its pinned namespaces, which the runtime opens from
            // inside the user namespace.
            make_accessible(&dir.join("ns"), &top)?;
            let own = [Some(&paths.resolv_conf), paths.hostname_file.as_ref()];
            let shm = (paths.shm != Path::new("/dev/shm")).then_some(&paths.shm);
            for p in own.into_iter().chain([shm]).flatten() {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(EngineError::io(format_args!("chown {}", p.display())))?;
            }
            let staged = dir.join("layers");
            std::fs::create_dir_all(&staged).map_err(EngineError::io(format_args!(
                "creating {}",
                staged.display()
            )))?;
            let user_ns = paths
                .user_ns
                .as_ref()
                .ok_or_else(|| EngineError::internal("the pod's user namespace is not pinned"))?;
            let ns = std::fs::File::open(user_ns).map_err(EngineError::io(format_args!(
                "opening {}",
                user_ns.display()
            )))?;
            crate::sys::mount::idmapped_bind(&layers, &staged, &ns, false, true)
                .map_err(|e| EngineError::internal(e.to_string()))?;
            Ok(staged)
        })
        .await??;
        rec.paths.idmapped_layers = Some(staged);
        Ok(())
    }

    fn pod_net(&self, rec: &PodRecord) -> Option<crate::network::PodNet> {
        let netns = rec.paths.net_ns.clone()?;
        Some(crate::network::PodNet {
            id: rec.id.clone(),
            name: rec.config.name.clone(),
            namespace: rec.config.namespace.clone(),
            uid: rec.config.uid.clone(),
            netns,
            port_mappings: rec
                .config
                .port_mappings
                .iter()
                .map(|m| crate::network::PortMapping {
                    host_port: m.host_port,
                    container_port: m.container_port,
                    protocol: m.protocol.clone(),
                    host_ip: m.host_ip.clone(),
                })
                .collect(),
            bandwidth: bandwidth(&rec.config.annotations),
        })
    }

    /// NetworkReady: the network dir read again (so a conflist appearing or going is seen on
    /// kubelet's next Status), then the plugins asked with CNI STATUS (1.1+) or VERSION, at
    /// most every 10 s.
    pub async fn network_ready(self: &Arc<Self>) -> std::result::Result<(), String> {
        let this = self.clone();
        let conf = blocking(move || {
            let _ = this.cni.reload();
            this.cni.ready()
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(why) = conf {
            *self.net_status.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return Err(why);
        }
        if let Some((at, r)) = self
            .net_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            if at.elapsed() < std::time::Duration::from_secs(10) {
                return r;
            }
        }
        let r = self.cni.status().await.map_err(|e| e.to_string());
        *self.net_status.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), r.clone()));
        r
    }

    /// CNI ADD for a pod with its own network namespace. Without a configured network the pod
    /// keeps a loopback-only namespace (NetworkReady is false then, so kubelet starts no such
    /// pods; crictl users get a warning in the log).
    async fn attach_network(&self, rec: &mut PodRecord) -> Result<()> {
        if let Err(why) = self.cni.ready() {
            tracing::warn!(pod = %rec.id, reason = %why, "no CNI network: the pod only has a loopback interface");
            return Ok(());
        }
        let Some(net) = self.pod_net(rec) else {
            return Ok(());
        };
        // Recorded first: a crash during ADD leaves a record whose teardown runs the DEL.
        rec.cni_attached = true;
        self.save_pod(rec)?;
        let status = self.cni.setup(&net).await.map_err(|e| {
            EngineError::new(
                crate::error::ErrorKind::kind(&e),
                format!("setting up the pod network: {e}"),
            )
        })?;
        rec.ips = status.ips.iter().map(|ip| ip.to_string()).collect();
        tracing::info!(pod = %rec.id, ips = ?rec.ips, network = %status.network, "pod network ready");
        Ok(())
    }

    /// CNI DEL (idempotent; the cached attachment remembers what ADD used).
    async fn detach_network(&self, rec: &mut PodRecord) -> Result<()> {
        if !rec.cni_attached {
            return Ok(());
        }
        let net = self.pod_net(rec).unwrap_or(crate::network::PodNet {
            id: rec.id.clone(),
            name: rec.config.name.clone(),
            namespace: rec.config.namespace.clone(),
            uid: rec.config.uid.clone(),
            netns: PathBuf::new(),
            port_mappings: Vec::new(),
            bandwidth: None,
        });
        self.cni.teardown(&net).await.map_err(|e| {
            EngineError::new(
                crate::error::ErrorKind::kind(&e),
                format!("tearing down the pod network (retry StopPodSandbox): {e}"),
            )
        })?;
        rec.cni_attached = false;
        rec.ips.clear();
        Ok(())
    }

    /// Removes everything a pod made on the host (idempotent, best effort, logs failures).
    pub(super) async fn teardown_pod(&self, rec: &PodRecord) {
        let dir = self.pod_dir(&rec.id);
        let mut rec = rec.clone();
        if let Err(e) = self.detach_network(&mut rec).await {
            tracing::warn!(pod = %rec.id, error = %e, "CNI DEL failed while removing a half-made pod");
        }
        let driver = crate::cgroups::driver_of(&rec.cgroup);
        let _ = blocking(move || {
            kill_pause(&rec);
            if !crate::sys::mount::unmount_all_under(&dir) {
                tracing::warn!(dir = %dir.display(), "mounts left under the pod directory: not removing it");
            } else if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "removing the pod directory");
                }
            }
            if let Err(e) = crate::cgroups::remove_pod(driver, &rec.cgroup, rec.made_cgroup) {
                tracing::warn!(error = %e, "removing the pod cgroup");
            }
        })
        .await;
    }

    pub async fn stop_pod(self: &Arc<Self>, s: &str) -> Result<()> {
        let Some(id) = self.resolve_pod(s)? else {
            return Ok(());
        };
        let ctrs: Vec<String> = self
            .list_containers()
            .into_iter()
            .filter(|c| c.pod_id == id)
            .map(|c| c.id)
            .collect();
        for c in ctrs {
            self.stop_container(&c, 0).await?;
        }
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let Some(mut rec) = self.pod(&id) else {
            return Ok(());
        };
        // DEL first, while the namespace still exists; a failure fails the RPC so that kubelet
        // retries it (no IPAM address may leak). Also for a pod that is already NotReady.
        self.detach_network(&mut rec).await?;
        self.save_pod(&rec)?;
        if rec.state == PodState::NotReady {
            return Ok(());
        }
        let r2 = rec.clone();
        let dir = self.pod_dir(&id);
        blocking(move || {
            kill_pause(&r2);
            if r2.paths.shm.starts_with(&dir) {
                let _ = crate::sys::mount::unmount(&r2.paths.shm);
            }
        })
        .await?;
        rec.state = PodState::NotReady;
        self.save_pod(&rec)?;
        tracing::info!(pod = %id, "pod sandbox stopped");
        self.emit_pod(&rec, super::events::EventKind::Stopped);
        Ok(())
    }

    pub async fn remove_pod(self: &Arc<Self>, s: &str) -> Result<()> {
        let Some(id) = self.resolve_pod(s)? else {
            return Ok(());
        };
        let ctrs: Vec<String> = self
            .containers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|c| c.pod_id == id)
            .map(|c| c.id.clone())
            .collect();
        for c in ctrs {
            self.remove_container(&c).await?;
        }
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let Some(mut rec) = self.pod(&id) else {
            return Ok(());
        };
        self.detach_network(&mut rec).await?;
        self.teardown_pod(&rec).await;
        self.emit_pod(&rec, super::events::EventKind::Deleted);
        self.forget_pod(&id);
        self.release(&pod_name(&rec.config), &id);
        self.drop_lock(&id);
        tracing::info!(pod = %id, "pod sandbox removed");
        Ok(())
    }

    /// UpdatePodSandboxResources: applies the pod-level resources (cpu, memory, hugepages,
    /// unified) to the pod's cgroup, through libcgroups (file writes; no process is forked).
    pub async fn update_pod_resources(
        self: &Arc<Self>,
        s: &str,
        r: crate::spec::config::Resources,
    ) -> Result<()> {
        let pod = self.pod_status(s)?;
        validate::resources("resources", &r)?;
        let json = crate::spec::linux_resources(&r);
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(json)
            .map_err(|e| EngineError::invalid(format!("resources: {e}")))?;
        let cgroup = pod.cgroup.clone();
        blocking(move || -> Result<()> {
            use libcgroups::common::CgroupManager;
            let manager =
                libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
                    cgroup_path: PathBuf::from(crate::cgroups::manager_path(&cgroup)),
                    systemd_cgroup: crate::cgroups::is_systemd_name(&cgroup),
                    container_name: String::new(),
                })
                .map_err(|e| EngineError::internal(format!("pod cgroup {cgroup}: {e}")))?;
            manager
                .apply(&libcgroups::common::ControllerOpt {
                    resources: &resources,
                    disable_oom_killer: false,
                    oom_score_adj: None,
                    freezer_state: None,
                })
                .map_err(|e| EngineError::internal(format!("updating pod cgroup {cgroup}: {e}")))
        })
        .await??;
        tracing::info!(pod = %pod.id, "pod resources updated");
        Ok(())
    }

    /// A pod by full ID or prefix, NotFound otherwise.
    pub fn pod_status(&self, s: &str) -> Result<PodRecord> {
        let id = self
            .resolve_pod(s)?
            .ok_or_else(|| EngineError::not_found(format!("pod sandbox {s:?} not found")))?;
        self.pod(&id)
            .filter(|p| p.complete)
            .ok_or_else(|| EngineError::not_found(format!("pod sandbox {s:?} not found")))
    }
}

fn kill_pause(rec: &PodRecord) {
    if let Some((pid, start)) = rec.pause {
        if crate::sys::process::process_alive(pid, Some(start)) {
            if let Ok(fd) = crate::sys::process::pidfd_open(pid) {
                let _ = crate::sys::process::pidfd_send_signal(&fd, libc::SIGKILL);
                // It is not our child: wait for it to go so its PID namespace is gone too.
                let mut fds = [nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(&fd),
                    nix::poll::PollFlags::POLLIN,
                )];
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(2000u16));
            }
        }
    }
}

impl Engine {
    /// Whether pods can have their own user namespace here: the image store's filesystem takes
    /// idmapped mounts (see [`Engine::probe_idmap`]).
    pub fn idmapped_mounts_supported(&self) -> bool {
        self.idmap.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Mounts the layer store idmapped once, through a throw-away user namespace, with an
    /// overlay over it, and undoes it: what RunPodSandbox and CreateContainer do for a pod with
    /// its own user namespace.
    pub(super) async fn probe_idmap(&self) -> bool {
        let dir = self.cfg.run_root.join("idmap-probe");
        let map = crate::spec::config::IdMapping {
            container_id: 0,
            host_id: 1 << 30,
            length: 65536,
        };
        let req = PinRequest {
            dir: dir.join("ns"),
            userns: Some((vec![map], vec![map])),
            ..Default::default()
        };
        // A probe a crash left behind goes first.
        {
            let dir = dir.clone();
            let _ = blocking(move || {
                if crate::sys::mount::unmount_all_under(&dir) {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            })
            .await;
        }
        let pinned = run_pin_helper(&req).await;
        let layers = self.images.store().layers_root();
        let result = blocking(move || {
            let ok = match pinned {
                Ok(PinResult { error: None, .. }) => {
                    // An overlay over the idmapped view, as a container's rootfs is (overlayfs
                    // takes idmapped layers from Linux 5.19).
                    let target = dir.join("mnt");
                    let (upper, work, merged) =
                        (dir.join("upper"), dir.join("work"), dir.join("merged"));
                    let mounted = [&target, &upper, &work, &merged]
                        .into_iter()
                        .try_for_each(std::fs::create_dir_all)
                        .and_then(|()| std::fs::File::open(dir.join("ns/user")))
                        .and_then(|ns| {
                            crate::sys::mount::idmapped_bind(&layers, &target, &ns, false, true)
                        })
                        .and_then(|()| {
                            crate::sys::mount::mount_overlay(&[&target], &upper, &work, &merged)
                        })
                        .map_err(|e| {
                            tracing::info!(error = %e, "no idmapped mounts: pods cannot have their own user namespace")
                        })
                        .is_ok();
                    mounted
                }
                Ok(PinResult { error: Some(e), .. }) => {
                    tracing::info!(error = %e, "no user namespaces for pods");
                    false
                }
                Err(e) => {
                    tracing::info!(error = %e, "no user namespaces for pods");
                    false
                }
            };
            if crate::sys::mount::unmount_all_under(&dir) {
                let _ = std::fs::remove_dir_all(&dir);
            }
            ok
        })
        .await;
        result.unwrap_or(false)
    }
}

/// A file written for containers to read (resolv.conf, hostname): mode 0644 whatever the umask.
fn write_shared(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, data)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
}

/// Lets every user search the directories from `top` (one of ferrio's roots, which becomes
/// 0711) down to `dir` (adds o+x where missing), so that a container root that is an
/// unprivileged host id can reach the files ferrio binds into its containers. Above `top`
/// nothing is changed: a directory there that others cannot search is a FailedPrecondition
/// naming it.
pub fn make_accessible(dir: &Path, top: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode_of = |d: &Path| -> Result<u32> {
        Ok(std::fs::metadata(d)
            .map_err(EngineError::io(format_args!("{}", d.display())))?
            .permissions()
            .mode())
    };
    for d in dir.ancestors() {
        if !d.starts_with(top) {
            if mode_of(d)? & 0o001 == 0 {
                return Err(EngineError::new(
                    Kind::FailedPrecondition,
                    format!(
                        "a pod with its own user namespace needs every directory above {} searchable by all users; {} is not",
                        top.display(),
                        d.display()
                    ),
                ));
            }
            continue;
        }
        let mode = mode_of(d)?;
        if mode & 0o001 == 0 {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode((mode | 0o001) & 0o7777))
                .map_err(EngineError::io(format_args!("chmod o+x {}", d.display())))?;
        }
    }
    Ok(())
}

pub(super) async fn run_pin_helper(req: &PinRequest) -> Result<PinResult> {
    let json = serde_json::to_string(req).map_err(|e| EngineError::internal(e.to_string()))?;
    let out = tokio::process::Command::new(Engine::exe())
        .arg("__pin-ns")
        .arg(json)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| EngineError::internal(format!("running the namespace helper: {e}")))?;
    let line = String::from_utf8_lossy(&out.stdout);
    let line = line.lines().next().unwrap_or("");
    serde_json::from_str(line).map_err(|e| {
        EngineError::new(
            Kind::Internal,
            format!(
                "namespace helper failed ({}): {e}; stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::config::{IdMapping, UserNamespace};

    #[test]
    fn user_namespace_options_are_checked() {
        let m = |c, h, l| IdMapping {
            container_id: c,
            host_id: h,
            length: l,
        };
        let pod = |mode, uids: Vec<IdMapping>, gids: Vec<IdMapping>| PodConfig {
            name: "p".into(),
            namespace: "n".into(),
            uid: "u".into(),
            userns: Some(UserNamespace { mode, uids, gids }),
            ..Default::default()
        };
        let ok = pod(
            NamespaceMode::Pod,
            vec![m(0, 65536, 65536)],
            vec![m(0, 65536, 65536)],
        );
        validate_pod(&ok).unwrap();
        assert_eq!(
            ok.user_namespace(),
            Some((m(0, 65536, 65536), m(0, 65536, 65536)))
        );
        validate_pod(&pod(NamespaceMode::Node, vec![], vec![])).unwrap();
        assert_eq!(
            pod(NamespaceMode::Node, vec![], vec![]).user_namespace(),
            None
        );
        let bad = [
            pod(NamespaceMode::Node, vec![m(0, 1, 1)], vec![]),
            pod(NamespaceMode::Container, vec![m(0, 1, 1)], vec![m(0, 1, 1)]),
            pod(NamespaceMode::Target, vec![m(0, 1, 1)], vec![m(0, 1, 1)]),
            pod(
                NamespaceMode::Pod,
                vec![m(0, 1, 1), m(1, 5, 1)],
                vec![m(0, 1, 1)],
            ),
            pod(NamespaceMode::Pod, vec![m(0, 1, 1)], vec![]),
            pod(NamespaceMode::Pod, vec![m(1, 1, 1)], vec![m(1, 1, 1)]),
            pod(NamespaceMode::Pod, vec![m(0, 1, 0)], vec![m(0, 1, 1)]),
            pod(
                NamespaceMode::Pod,
                vec![m(0, u32::MAX, 2)],
                vec![m(0, 1, 1)],
            ),
            PodConfig {
                network: NamespaceMode::Node,
                ..ok.clone()
            },
        ];
        for p in bad {
            let e = validate_pod(&p).unwrap_err();
            assert_eq!(
                crate::error::ErrorKind::kind(&e),
                Kind::InvalidArgument,
                "{p:?}"
            );
            assert!(e.to_string().contains("userns_options"), "{e}");
        }
        assert_eq!(m(0, 1000, 10).to_host(9), Some(1009));
        assert_eq!(m(0, 1000, 10).to_host(10), None);
        assert_eq!(
            crate::monitor::pinns::map_lines(&[m(0, 1000, 10), m(10, 5, 1)]),
            "0 1000 10\n10 5 1\n"
        );
    }

    #[test]
    fn resolv_conf_format() {
        let d = Dns {
            servers: vec!["10.0.0.10".into(), "8.8.8.8".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(resolv_conf(&d), "search ns.svc.cluster.local cluster.local\nnameserver 10.0.0.10\nnameserver 8.8.8.8\noptions ndots:5\n");
    }

    #[test]
    fn bandwidth_annotations() {
        let mut a = std::collections::BTreeMap::new();
        assert!(bandwidth(&a).is_none());
        a.insert(
            "kubernetes.io/ingress-bandwidth".to_string(),
            "10M".to_string(),
        );
        a.insert(
            "kubernetes.io/egress-bandwidth".to_string(),
            "1Mi".to_string(),
        );
        let b = bandwidth(&a).unwrap();
        assert_eq!((b.ingress_rate, b.egress_rate), (10_000_000, 1 << 20));
        assert!(b.ingress_burst > 0 && b.egress_burst > 0);
        assert_eq!(quantity("bogus"), None);
        assert_eq!(quantity("100"), Some(100));
    }

    #[test]
    fn sysctls_checked() {
        let mut c = PodConfig {
            name: "a".into(),
            namespace: "b".into(),
            uid: "c".into(),
            ..Default::default()
        };
        c.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
        c.sysctls
            .insert("kernel.shm_rmid_forced".into(), "1".into());
        assert!(validate_pod(&c).is_ok());
        c.sysctls.insert("vm.swappiness".into(), "1".into());
        assert!(validate_pod(&c)
            .unwrap_err()
            .to_string()
            .contains("vm.swappiness"));
        c.sysctls.remove("vm.swappiness");
        c.network = NamespaceMode::Node;
        assert!(validate_pod(&c).unwrap_err().to_string().contains("host"));
    }
}
