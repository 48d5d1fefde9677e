//! RunPodSandbox: pinned net/ipc/uts (and user, PID) namespaces, /dev/shm, hostname,
//! resolv.conf, sysctls, the pod cgroup, the CNI attachment, and a pause process only for a
//! shared PID namespace.

use super::*;
use crate::engine::{blocking, now_ns, validate, Engine, EngineError, PodRecord, PodState, Result};
use crate::model::{NamespaceMode, PodConfig, PodPaths};
use crate::monitor::pinns::PinRequest;
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl Engine {
    pub async fn run_pod(self: &Arc<Self>, mut config: PodConfig, handler: &str) -> Result<String> {
        let mut phases = crate::telemetry::Phases::start("RunPodSandbox");
        validate::pod_config(&config)?;
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
        phases.mark("check");
        let id = self
            .create_once(
                crate::engine::Made::Pod,
                name.clone(),
                move |id, handoff| async move {
                    engine
                        .make_pod(id, name, config, handler, handoff, phases)
                        .await
                },
            )
            .await?;
        Ok(id)
    }

    /// RunPodSandbox's work, in its own task (see [`crate::engine::creates`]).
    pub(in crate::engine) async fn make_pod(
        self: Arc<Self>,
        id: String,
        name: String,
        config: PodConfig,
        handler: String,
        handoff: crate::engine::creates::Handoff,
        mut phases: crate::telemetry::Phases,
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
            phases.mark("record");
            self.setup_pod(&mut rec, &mut phases).await?;
            // NRI's RunPodSandbox, in this task (a cancelled request still tells the plugins)
            // and before the pod is ready: an error a plugin answers fails the request, as in
            // CRI-O and containerd, and what was made is removed below.
            self.nri_run_pod(&rec).await?;
            rec.state = PodState::Ready;
            rec.complete = true;
            rec.unclaimed = handoff.unclaimed();
            self.save_pod(&rec)?;
            phases.mark("saved");
            Ok(())
        }
        .await;
        phases.finish(&result);
        if let Err(e) = result {
            tracing::warn!(pod = %id, error = %e, "RunPodSandbox failed; removing what it made");
            self.teardown_pod(&rec).await;
            self.forget_pod(&id);
            self.release(&name, &id);
            self.drop_lock(&id);
            return Err(e);
        }
        tracing::info!(pod = %id, name = %rec.config.name, namespace = %rec.config.namespace, unclaimed = rec.unclaimed, "pod sandbox ready");
        self.emit_pod(&rec, crate::engine::events::EventKind::Created);
        self.emit_pod(&rec, crate::engine::events::EventKind::Started);
        Ok(id)
    }

    pub(in crate::engine) async fn setup_pod(
        &self,
        rec: &mut PodRecord,
        phases: &mut crate::telemetry::Phases,
    ) -> Result<()> {
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
        phases.mark("files_shm_cgroup");
        self.save_pod(rec)?;
        phases.mark("record_cgroup");
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
            phases.mark("pin_ns");
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
                phases.mark("pause");
            }
            if req.userns.is_some() {
                rec.paths.user_ns = Some(req.dir.join("user"));
            }
        }
        if let Some((uid, gid)) = userns {
            self.setup_userns_files(rec, &dir, uid.host_id, gid.host_id)
                .await?;
            phases.mark("userns_files");
        }
        if c.network != NamespaceMode::Node {
            self.attach_network(rec).await?;
            phases.mark("cni");
        }
        Ok(())
    }

    /// For a pod with its own user namespace: its files belong to the pod's root (`uid`/`gid`
    /// on the host), the directories on the way to them can be searched by it (as CRI-O's
    /// makeAccessible does), and the layer store is idmapped for it at `<pod>/layers`, where
    /// its containers take their lower layers from.
    pub(in crate::engine) async fn setup_userns_files(
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
}
