//! Pods without an infra container, one file per verb (`run`, `stop`, `remove`, `status`,
//! `update`); what several share is here: the pod's name, resolv.conf, bandwidth, the CNI
//! attachment, teardown, the pause, idmapped-mount support and the `__pin-ns` helper.

mod remove;
mod run;
mod status;
mod stop;
mod update;

use super::{blocking, Engine, EngineError, PodRecord, Result};
use crate::error::Kind;
use crate::model::{Dns, PodConfig};
use crate::monitor::pinns::{PinRequest, PinResult};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The reserved name of a pod: `<name>_<namespace>_<uid>_<attempt>`, as kubelet and CRI-O
/// spell it.
pub fn pod_name(c: &PodConfig) -> String {
    format!("k8s_POD_{}_{}_{}_{}", c.name, c.namespace, c.uid, c.attempt)
}

/// A Kubernetes quantity of bits per second (`10M`, `1Gi`, `500k`, `100`).
pub(in crate::engine) fn quantity(v: &str) -> Option<u64> {
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
pub(in crate::engine) fn sysctl_namespace(key: &str) -> Option<&'static str> {
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

pub(in crate::engine) fn kill_pause(rec: &PodRecord) {
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

/// A file written for containers to read (resolv.conf, hostname): mode 0644 whatever the umask.
pub(in crate::engine) fn write_shared(path: &Path, data: &[u8]) -> std::io::Result<()> {
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

pub(in crate::engine) async fn run_pin_helper(req: &PinRequest) -> Result<PinResult> {
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

impl Engine {
    pub fn handler_names(&self) -> Vec<String> {
        self.cfg().runtime.runtimes.keys().cloned().collect()
    }

    pub(in crate::engine) fn pod_net(&self, rec: &PodRecord) -> Option<crate::network::PodNet> {
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
    pub(in crate::engine) async fn attach_network(&self, rec: &mut PodRecord) -> Result<()> {
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
    pub(in crate::engine) async fn detach_network(&self, rec: &mut PodRecord) -> Result<()> {
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
    pub(in crate::engine) async fn teardown_pod(&self, rec: &PodRecord) {
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

    /// Whether pods can have their own user namespace here: the image store's filesystem takes
    /// idmapped mounts (see [`Engine::probe_idmap`]).
    pub fn idmapped_mounts_supported(&self) -> bool {
        self.idmap.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Mounts the layer store idmapped once, through a throw-away user namespace, with an
    /// overlay over it, and undoes it: what RunPodSandbox and CreateContainer do for a pod with
    /// its own user namespace.
    pub(in crate::engine) async fn probe_idmap(&self) -> bool {
        let dir = self.cfg.run_root.join("idmap-probe");
        let map = crate::model::IdMapping {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::validate::pod_config as validate_pod;
    use crate::model::NamespaceMode;
    use crate::model::{IdMapping, UserNamespace};

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
