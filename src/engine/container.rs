//! Containers: CreateContainer (rootfs, spec, monitor), Start, Stop, Remove, Status, ExecSync,
//! UpdateContainerResources, ReopenContainerLog.

use super::{
    blocking, new_id, now_ns, validate, ContainerRecord, ContainerState, CtrPaths, Engine,
    EngineError, PodState, Result,
};
use crate::error::Kind;
use crate::monitor::client::MonitorClient;
use crate::monitor::exec::{ExecRequest, ExecResult};
use crate::monitor::proto::{ExitInfo, MonitorConfig, Ready, Request, Response};
use crate::runtime::{seccomp, ExecProcess, Handler};
use crate::spec::config::{ContainerConfig, ImageConfig, Mount, PodConfig, ResolvedDevice};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The most of a bundle's `config.json` (or seccomp plan) read for verbose status.
const RUNTIME_SPEC_CAP: u64 = 16 << 20;

/// ExecSync's cap on each of stdout and stderr (CVE-2022-1708).
pub const EXEC_OUTPUT_CAP: usize = 16 * 1024 * 1024;

pub fn container_name(pod: &PodConfig, c: &ContainerConfig) -> String {
    format!(
        "k8s_{}_{}_{}_{}_{}",
        c.name, pod.name, pod.namespace, pod.uid, c.attempt
    )
}

/// Signal number of a name such as `SIGTERM` or `TERM` (or a number).
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

fn validate_container(c: &ContainerConfig) -> Result<()> {
    validate::name("metadata.name", &c.name, true)?;
    if c.image.is_empty() {
        return Err(EngineError::invalid("image.image is required"));
    }
    if !c.log_path.is_empty() {
        validate::relative_inside("log_path", &c.log_path)?;
    }
    if let Some(r) = &c.resources {
        validate::resources("linux.resources", r)?;
    }
    validate::bounded("command", c.command.len(), 4096)?;
    validate::bounded("args", c.args.len(), 4096)?;
    validate::bounded("envs", c.envs.len(), 4096)?;
    validate::bounded("mounts", c.mounts.len(), 256)?;
    validate::bounded("devices", c.devices.len(), 256)?;
    validate::bounded("cdi_devices", c.cdi_devices.len(), 256)?;
    validate::bounded("labels", c.labels.len(), 1024)?;
    validate::bounded("annotations", c.annotations.len(), 1024)?;
    let total: usize = c
        .command
        .iter()
        .chain(&c.args)
        .map(|s| s.len())
        .sum::<usize>()
        + c.envs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if total > 1 << 20 {
        return Err(EngineError::invalid("command, args and envs exceed 1 MiB"));
    }
    for (k, _) in &c.envs {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(EngineError::invalid(format!("envs key {k:?} is not valid")));
        }
    }
    for s in c
        .command
        .iter()
        .chain(&c.args)
        .chain(c.envs.iter().map(|(_, v)| v))
    {
        if s.contains('\0') {
            return Err(EngineError::invalid(
                "command, args and envs must not contain NUL",
            ));
        }
    }
    for m in &c.mounts {
        validate::absolute("mounts.container_path", &m.container_path)?;
        if m.image.is_empty() {
            validate::absolute("mounts.host_path", &m.host_path)?;
        } else {
            // KEP-4639: image volumes are read-only; kubelet always asks them so.
            if !m.readonly {
                return Err(EngineError::invalid(format!(
                    "mount {}: an image volume must be readonly",
                    m.container_path
                )));
            }
            if !m.image_sub_path.is_empty() {
                validate::relative_inside("mounts.image_sub_path", &m.image_sub_path)?;
            }
        }
        if m.recursive_read_only {
            if !m.readonly {
                return Err(EngineError::invalid(format!(
                    "mount {}: recursive_read_only needs readonly",
                    m.container_path
                )));
            }
            if m.propagation != crate::spec::config::Propagation::Private {
                return Err(EngineError::invalid(format!(
                    "mount {}: recursive_read_only needs private propagation",
                    m.container_path
                )));
            }
        }
    }
    for m in &c.mounts {
        if m.uid_mappings.is_empty() && m.gid_mappings.is_empty() {
            continue;
        }
        if m.uid_mappings.is_empty() || m.gid_mappings.is_empty() || !m.image.is_empty() {
            return Err(EngineError::invalid(format!(
                "mount {}: an idmapped mount needs both uidMappings and gidMappings (and a host path)",
                m.container_path
            )));
        }
        for (what, maps) in [
            ("uidMappings", &m.uid_mappings),
            ("gidMappings", &m.gid_mappings),
        ] {
            validate::bounded(what, maps.len(), 340)?;
            for x in maps {
                let over = |base: u32| base.checked_add(x.length.saturating_sub(1)).is_none();
                if x.length == 0 || over(x.host_id) || over(x.container_id) {
                    return Err(EngineError::invalid(format!(
                        "mount {}: {what} {} {} {} is empty or beyond the id range",
                        m.container_path, x.container_id, x.host_id, x.length
                    )));
                }
            }
        }
    }
    for d in &c.devices {
        validate::absolute("devices.container_path", &d.container_path)?;
        validate::absolute("devices.host_path", &d.host_path)?;
        if !d.permissions.chars().all(|ch| "rwm".contains(ch)) {
            return Err(EngineError::invalid(format!(
                "devices.permissions {:?} is not a subset of \"rwm\"",
                d.permissions
            )));
        }
    }
    if !c.working_dir.is_empty() {
        validate::absolute("working_dir", &c.working_dir)?;
    }
    if !c.stop_signal.is_empty() && signal_number(&c.stop_signal).is_none() {
        return Err(EngineError::invalid(format!(
            "stop_signal {:?} is not a signal",
            c.stop_signal
        )));
    }
    if let crate::spec::config::Profile::Localhost(p) = &c.security.seccomp {
        validate::absolute("seccomp.localhost_ref", p)?;
    }
    Ok(())
}

/// Reads a file of the image's rootfs that must not be a symlink leading out of it.
fn read_image_file(rootfs: &Path, rel: &str) -> Option<String> {
    let mut p = rootfs.to_path_buf();
    for comp in rel.split('/') {
        p.push(comp);
        if std::fs::symlink_metadata(&p).ok()?.file_type().is_symlink() {
            return None;
        }
    }
    String::from_utf8(crate::state::read_capped(&p, 4 << 20).ok()?).ok()
}

/// A Bidirectional mount needs its host source on a shared mount, a HostToContainer one on a
/// shared or slave mount, or what it promises cannot happen (CRI-O refuses them the same way).
fn check_propagation(m: &Mount, source: &Path) -> Result<()> {
    use crate::spec::config::Propagation;
    let (need_shared, what) = match m.propagation {
        Propagation::Private => return Ok(()),
        Propagation::Bidirectional => (true, "a shared mount"),
        Propagation::HostToContainer => (false, "a shared or slave mount"),
    };
    let p = crate::sys::mount::mount_of(source).map_err(EngineError::io(format_args!(
        "mount {}: the propagation of {}",
        m.container_path,
        source.display()
    )))?;
    if p.shared || (!need_shared && p.slave) {
        return Ok(());
    }
    Err(EngineError::precondition(format!(
        "mount {}: path {} is mounted on {} but it is not {what} ({:?} propagation needs it)",
        m.container_path,
        source.display(),
        p.mount_point.display(),
        m.propagation
    )))
}

/// Resolves mount sources (a missing one is created as a directory unless it is under a
/// rejected prefix; symlinks are followed) and devices.
fn prepare_host(
    c: &ContainerConfig,
    reject: &[PathBuf],
) -> Result<(Vec<PathBuf>, Vec<ResolvedDevice>)> {
    let mut sources = Vec::new();
    for m in &c.mounts {
        if !m.image.is_empty() {
            // An image volume: its source is mounted by the engine (see `image_volumes`).
            sources.push(PathBuf::new());
            continue;
        }
        let hp = Path::new(&m.host_path);
        if std::fs::symlink_metadata(hp).is_err() {
            if reject.iter().any(|r| hp.starts_with(r)) {
                return Err(EngineError::invalid(format!(
                    "mount host_path {} does not exist and may not be created",
                    hp.display()
                )));
            }
            // 0755 like CRI-O's: a container user other than root may need to search it.
            crate::state::create_dirs(hp, 0o755).map_err(EngineError::io(format_args!(
                "creating mount source {}",
                hp.display()
            )))?;
        }
        let real = std::fs::canonicalize(hp).map_err(EngineError::io(format_args!(
            "resolving mount source {}",
            hp.display()
        )))?;
        check_propagation(m, &real)?;
        sources.push(real);
    }
    let mut devices = if c.security.privileged {
        host_devices()
    } else {
        Vec::new()
    };
    for d in &c.devices {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::metadata(&d.host_path)
            .map_err(|e| EngineError::not_found(format!("device {}: {e}", d.host_path)))?;
        let kind = if meta.file_type().is_char_device() {
            "c"
        } else if meta.file_type().is_block_device() {
            "b"
        } else {
            return Err(EngineError::invalid(format!(
                "device {} is not a device node",
                d.host_path
            )));
        };
        let rdev = meta.rdev();
        devices.push(ResolvedDevice {
            container_path: d.container_path.clone(),
            kind: kind.into(),
            major: nix::sys::stat::major(rdev) as i64,
            minor: nix::sys::stat::minor(rdev) as i64,
            file_mode: meta.mode() & 0o777,
            permissions: if d.permissions.is_empty() {
                "rwm".into()
            } else {
                d.permissions.clone()
            },
        });
    }
    Ok((sources, devices))
}

fn cdi_error(e: crate::cdi::CdiError) -> EngineError {
    use crate::error::ErrorKind;
    EngineError::new(e.kind(), e.to_string())
}

/// The CDI devices a container asks for (`cdi_devices`, then the `cdi.k8s.io/*` annotations),
/// resolved from the spec directories as they are now (read again for every container that
/// asks, so new spec files count), with device nodes' type and numbers from the host. No
/// devices asked: no spec file is read.
fn resolve_cdi(c: &ContainerConfig, dirs: &[PathBuf]) -> Result<crate::cdi::ContainerEdits> {
    let names = crate::cdi::requested_devices(&c.cdi_devices, &c.annotations).map_err(cdi_error)?;
    if names.is_empty() {
        return Ok(Default::default());
    }
    let registry = crate::cdi::Registry::load(dirs).map_err(cdi_error)?;
    let mut edits = registry.resolve_supported(&names).map_err(cdi_error)?;
    edits.fill_device_info().map_err(cdi_error)?;
    tracing::debug!(devices = ?names, "CDI devices applied");
    Ok(edits)
}

/// The most environment entries (and bytes of them) an image config may carry: beyond what any
/// real image has, small enough that spec generation stays fast.
const MAX_IMAGE_ENV: usize = 10_000;
const MAX_IMAGE_ENV_BYTES: usize = 1 << 20;

/// Image content that would make a container's spec unbounded is InvalidArgument naming the
/// image.
fn check_image_config(image: &str, c: &ImageConfig) -> Result<()> {
    let bytes: usize = c.env.iter().map(String::len).sum();
    if c.env.len() > MAX_IMAGE_ENV || bytes > MAX_IMAGE_ENV_BYTES {
        return Err(EngineError::invalid(format!(
            "image {image:?}: its config has {} environment entries ({bytes} bytes); at most {MAX_IMAGE_ENV} ({MAX_IMAGE_ENV_BYTES} bytes) are accepted",
            c.env.len()
        )));
    }
    Ok(())
}

/// Every character and block device under /dev, for privileged containers (what runc and
/// CRI-O give them), except the per-container ones (/dev/pts, /dev/shm, /dev/mqueue, console).
fn host_devices() -> Vec<ResolvedDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/dev")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if [
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/dev/console",
                "/dev/fd",
            ]
            .iter()
            .any(|x| p == Path::new(x))
            {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                stack.push(p);
                continue;
            }
            let kind = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            out.push(ResolvedDevice {
                container_path: p.display().to_string(),
                kind: kind.into(),
                major: nix::sys::stat::major(meta.rdev()) as i64,
                minor: nix::sys::stat::minor(meta.rdev()) as i64,
                file_mode: meta.mode() & 0o777,
                permissions: "rwm".into(),
            });
        }
    }
    out.sort_by(|a, b| a.container_path.cmp(&b.container_path));
    out
}

fn reason_for(exit: &ExitInfo) -> &'static str {
    if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// What CreateContainer looked up and checked before its work starts.
struct Resolved {
    pod: super::PodRecord,
    image: crate::image::store::ImageRecord,
    image_cfg: ImageConfig,
    handler: Handler,
    seccomp: Option<serde_json::Value>,
}

impl Engine {
    fn handler(&self, name: &str) -> Result<Handler> {
        let h = self.cfg().runtime.runtimes.get(name).ok_or_else(|| {
            EngineError::invalid(format!("runtime handler {name:?} is not configured"))
        })?;
        let root = self.cfg().runtime_root(name).unwrap_or_default();
        Ok(match h.runtime_type.as_str() {
            "oci" => Handler::Oci {
                path: h.runtime_path.clone(),
                root,
            },
            _ => Handler::Builtin { root },
        })
    }

    pub async fn create_container(
        self: &Arc<Self>,
        pod_s: &str,
        config: ContainerConfig,
    ) -> Result<String> {
        validate_container(&config)?;
        let pod_id = self
            .resolve_pod(pod_s)?
            .ok_or_else(|| EngineError::not_found(format!("pod sandbox {pod_s:?} not found")))?;
        let pod = self.pod_status(&pod_id)?;
        // What only the pod may grant (CRI-O refuses the same): kubelet marks the pod
        // privileged, or host-PID, whenever one of its containers is.
        if config.security.privileged && !pod.config.privileged {
            return Err(EngineError::invalid(
                "linux.security_context.privileged: a privileged container needs a privileged pod sandbox",
            ));
        }
        if config.security.pid == crate::spec::config::NamespaceMode::Node
            && pod.config.pid != crate::spec::config::NamespaceMode::Node
        {
            return Err(EngineError::invalid(
                "linux.security_context.namespace_options.pid: the host PID namespace must be asked for by the pod sandbox, not by one container",
            ));
        }
        if pod.state != PodState::Ready {
            return Err(EngineError::precondition(format!(
                "pod sandbox {pod_id} is not ready"
            )));
        }
        if !config.log_path.is_empty() && pod.config.log_directory.is_empty() {
            return Err(EngineError::invalid(
                "log_path is set but the pod has no log_directory",
            ));
        }
        let image = self.images.status(&config.image).ok_or_else(|| {
            EngineError::not_found(format!("image {:?} not found; pull it first", config.image))
        })?;
        // The config is image content: read and parsed off the async workers, and bounded.
        let image_cfg = {
            let (images, image) = (self.images.clone(), image.clone());
            blocking(move || {
                images
                    .config_json(&image)
                    .map(|v| ImageConfig::from_json(&v))
            })
            .await??
        };
        check_image_config(&config.image, &image_cfg)?;
        let handler = self.handler(&pod.runtime_handler)?;
        if matches!(handler, Handler::Oci { .. })
            && config.mounts.iter().any(|m| m.recursive_read_only)
        {
            return Err(EngineError::invalid(format!(
                "runtime handler {:?} does not support recursive read-only mounts",
                pod.runtime_handler
            )));
        }
        let seccomp = self.seccomp_for(&config, &handler).await?;
        if self.lsm.apparmor {
            let name = crate::spec::apparmor_profile(&config.security);
            if name != "unconfined" && !crate::apparmor::is_loaded(&name).unwrap_or(false) {
                return Err(EngineError::precondition(format!(
                    "AppArmor profile {name:?} is not loaded on this host"
                )));
            }
        }

        let name = container_name(&pod.config, &config);
        let engine = self.clone();
        self.create_once(
            super::Made::Container,
            name.clone(),
            move |id, handoff| async move {
                let resolved = Resolved {
                    pod,
                    image,
                    image_cfg,
                    handler,
                    seccomp,
                };
                engine
                    .make_container(id, name, config, resolved, handoff)
                    .await
            },
        )
        .await
    }

    /// CreateContainer's work, in its own task (see [`super::creates`]).
    async fn make_container(
        self: Arc<Self>,
        id: String,
        name: String,
        config: ContainerConfig,
        resolved: Resolved,
        handoff: super::creates::Handoff,
    ) -> Result<String> {
        let (pod, image_cfg) = (&resolved.pod, &resolved.image_cfg);
        let pod_id = pod.id.clone();
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let stop_signal = [config.stop_signal.as_str(), image_cfg.stop_signal.as_str()]
            .into_iter()
            .find(|s| !s.is_empty())
            .and_then(signal_number)
            .unwrap_or(libc::SIGTERM);
        let log_path = if config.log_path.is_empty() {
            PathBuf::new()
        } else {
            Path::new(&pod.config.log_directory).join(&config.log_path)
        };
        let mut rec = ContainerRecord {
            id: id.clone(),
            pod_id: pod_id.clone(),
            config: config.clone(),
            handler: pod.runtime_handler.clone(),
            image: config.image.clone(),
            image_id: resolved.image.id.clone(),
            created_at_ns: now_ns(),
            started_at_ns: 0,
            finished_at_ns: 0,
            state: ContainerState::Creating,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path,
            user: Default::default(),
            pid: 0,
            monitor_pid: 0,
            stop_signal,
            cgroup: crate::cgroups::container_cgroup(
                crate::cgroups::driver_of(&pod.cgroup),
                &pod.cgroup,
                &id,
            ),
            mounts: Vec::new(),
            unclaimed: false,
        };
        let result = async {
            self.save_container(&rec)?;
            self.build_container(&mut rec, resolved, &handoff).await
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(container = %id, pod = %pod_id, name = %config.name, unclaimed = rec.unclaimed, "container created");
                self.emit(&id, &pod_id, super::events::EventKind::Created);
                self.watch_exit(&id);
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "CreateContainer failed; removing what it made");
                self.cleanup_container_files(&rec).await;
                self.forget_container(&id);
                self.release(&name, &id);
                self.drop_lock(&id);
                Err(e)
            }
        }
    }

    async fn seccomp_for(
        &self,
        c: &ContainerConfig,
        handler: &Handler,
    ) -> Result<Option<serde_json::Value>> {
        use crate::spec::config::Profile;
        let privileged_profile = &self.cfg().runtime.privileged_seccomp_profile;
        let profile = match &c.security.seccomp {
            // Privileged containers run without seccomp whatever they name, unless the
            // operator gives them a profile (CRI-O's behaviour and option).
            _ if c.security.privileged && privileged_profile.as_os_str().is_empty() => {
                return Ok(None)
            }
            _ if c.security.privileged => {
                Profile::Localhost(privileged_profile.to_string_lossy().into_owned())
            }
            Profile::Unset if self.cfg().runtime.seccomp_use_default_when_empty => {
                Profile::RuntimeDefault
            }
            Profile::Unset | Profile::Unconfined => return Ok(None),
            p => p.clone(),
        };
        let builtin = matches!(handler, Handler::Builtin { .. });
        // A Localhost profile is a file read from the host, and resolving any profile is CPU
        // work: both stay off the async workers.
        let c = c.clone();
        let host_caps = self.host_capabilities.clone();
        tokio::task::spawn_blocking(move || resolve_seccomp(&profile, &c, &host_caps, builtin))
            .await
            .map_err(|e| EngineError::internal(format!("seccomp resolution: {e}")))?
            .map(Some)
    }

    async fn build_container(
        &self,
        rec: &mut ContainerRecord,
        resolved: Resolved,
        handoff: &super::creates::Handoff,
    ) -> Result<()> {
        let Resolved {
            pod,
            image,
            image_cfg,
            handler,
            seccomp,
        } = resolved;
        let (pod, image, image_cfg, handler) = (&pod, &image, &image_cfg, &handler);
        let paths = self.ctr_paths(&rec.id);
        let (bundle, rootfs) = (paths.bundle(), paths.rootfs());
        let layers = self.lower_layers(image, pod);
        let root_ids = pod
            .config
            .user_namespace()
            .map(|(u, g)| (u.host_id, g.host_id));
        let reject = self.cfg().runtime.absent_mount_sources_to_reject.clone();
        let config = rec.config.clone();
        let cdi_dirs = self.cfg().runtime.cdi_spec_dirs.clone();
        let top = self.cfg().run_root.clone();
        let (passwd, group, sources, devices, cdi) = {
            let (rootfs, paths) = (rootfs.clone(), paths.clone());
            blocking(move || -> Result<_> {
                // First, so that a bad device request fails before anything is made.
                let cdi = resolve_cdi(&config, &cdi_dirs)?;
                for d in [&paths.run, &rootfs, &paths.upper(), &paths.work()] {
                    std::fs::create_dir_all(d)
                        .map_err(EngineError::io(format_args!("creating {}", d.display())))?;
                }
                let lower: Vec<&Path> = layers.iter().map(|p| p.as_path()).collect();
                if lower.is_empty() {
                    return Err(EngineError::invalid("the image has no layers"));
                }
                // The upper directory is the container's `/`: it takes the mode of the image's
                // root (the top layer's), not the daemon's private one; the directories around
                // it keep others out.
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(lower[0])
                        .map(|m| m.permissions().mode() & 0o7777)
                        .unwrap_or(0o755);
                    std::fs::set_permissions(paths.upper(), std::fs::Permissions::from_mode(mode))
                        .map_err(EngineError::io("chmod of the upper layer"))?;
                }
                if let Some((uid, gid)) = root_ids {
                    // The rootfs's own directory and new files belong to the pod's root.
                    std::os::unix::fs::chown(paths.upper(), Some(uid), Some(gid))
                        .map_err(EngineError::io("chown of the upper layer"))?;
                    super::pod::make_accessible(&rootfs, &top)?;
                }
                crate::sys::mount::mount_overlay(&lower, &paths.upper(), &paths.work(), &rootfs)
                    .map_err(|e| EngineError::internal(e.to_string()))?;
                let passwd = read_image_file(&rootfs, "etc/passwd");
                let group = read_image_file(&rootfs, "etc/group");
                let (sources, devices) = prepare_host(&config, &reject)?;
                Ok((passwd, group, sources, devices, cdi))
            })
            .await??
        };
        let sources = self.image_volumes(rec, &paths, pod, sources).await?;
        let status_sources = sources.clone();
        let sources = self.idmapped_mounts(rec, &paths, sources).await?;
        if root_ids.is_some() {
            // The runtime binds these from inside the pod's user namespace: the way to the
            // sources ferrio mounted under the container's run directory must be searchable.
            let (idmap, top) = (paths.idmapped(), self.cfg().run_root.clone());
            blocking(move || {
                if idmap.exists() {
                    super::pod::make_accessible(&idmap, &top)?;
                }
                Ok::<_, EngineError>(())
            })
            .await??;
        }
        // CPU work over request and image content: on a blocking thread.
        let generated = {
            let (pod_config, config, image_cfg) =
                (pod.config.clone(), rec.config.clone(), image_cfg.clone());
            let (rootfs, pod_paths, sources) = (rootfs.clone(), pod.paths.clone(), sources.clone());
            let (cgroups_path, min_oom_score_adj) = (rec.cgroup.clone(), self.min_oom_score_adj);
            let (host_capabilities, lsm) = (self.host_capabilities.clone(), self.lsm);
            let pod_id = pod.id.clone();
            blocking(move || {
                crate::spec::generate(&crate::spec::Input {
                    sandbox_id: &pod_id,
                    pod: &pod_config,
                    container: &config,
                    image: &image_cfg,
                    rootfs,
                    pod_paths: &pod_paths,
                    mount_sources: sources,
                    devices,
                    cgroups_path,
                    passwd,
                    group,
                    min_oom_score_adj,
                    seccomp,
                    host_capabilities,
                    lsm,
                    cdi,
                })
            })
            .await??
        };
        if let Some((uids, gids)) = pod.config.user_namespace() {
            let u = &generated.user;
            let unmapped = uids.to_host(u.uid).is_none()
                || std::iter::once(&u.gid)
                    .chain(&u.additional_gids)
                    .any(|g| gids.to_host(*g).is_none());
            if unmapped {
                return Err(EngineError::invalid(format!(
                    "user {}:{} (groups {:?}) is not mapped in the pod's user namespace ({} uids, {} gids from 0)",
                    u.uid, u.gid, u.additional_gids, uids.length, gids.length
                )));
            }
        }
        rec.user = generated.user.clone();
        rec.mounts = rec
            .config
            .mounts
            .iter()
            .zip(&status_sources)
            .map(|(m, s)| Mount {
                host_path: s.display().to_string(),
                ..m.clone()
            })
            .collect();
        let mut spec = generated.spec;
        let seccomp_plan = match handler {
            Handler::Builtin { .. } => seccomp_plan(&mut spec)?,
            Handler::Oci { .. } => None,
        };
        let spec_json =
            serde_json::to_vec_pretty(&spec).map_err(|e| EngineError::internal(e.to_string()))?;
        let mcfg = MonitorConfig {
            id: rec.id.clone(),
            bundle: bundle.clone(),
            handler: handler.clone(),
            log_path: rec.log_path.clone(),
            socket: paths.monitor_socket(),
            exit_file: paths.exit_file(),
            cgroup: rec.cgroup.clone(),
            helper_cgroup: Some(crate::cgroups::HelperCgroup {
                driver: crate::cgroups::driver_of(&pod.cgroup),
                pod_cgroup: pod.cgroup.clone(),
            }),
            tty: rec.config.tty,
            stdin: rec.config.stdin,
            stdin_once: rec.config.stdin_once,
        };
        {
            let (bundle, config_path, mcfg) =
                (bundle.clone(), paths.monitor_config(), mcfg.clone());
            blocking(move || -> Result<()> {
                crate::state::write_volatile(&bundle.join("config.json"), &spec_json)
                    .map_err(EngineError::io("writing config.json"))?;
                if let Some(plan) = &seccomp_plan {
                    crate::state::write_json_volatile(&bundle.join(seccomp::PLAN_FILE), plan)
                        .map_err(EngineError::io("writing the seccomp plan"))?;
                }
                crate::state::write_json_volatile(&config_path, &mcfg)
                    .map_err(EngineError::io("writing monitor.json"))
            })
            .await??;
        }
        let ready = spawn_monitor(&paths).await?;
        match ready {
            Ready::Created { pid, monitor_pid } => {
                rec.pid = pid;
                rec.monitor_pid = monitor_pid;
                rec.state = ContainerState::Created;
                rec.unclaimed = handoff.unclaimed();
                self.save_container(rec)
            }
            Ready::Failed { error } => Err(EngineError::internal(format!(
                "creating the container: {error}"
            ))),
        }
    }

    /// Mounts each image volume's image read-only under the run dir and returns the sources
    /// with those paths (plus the sub path) filled in; records the image IDs on the mounts.
    async fn image_volumes(
        &self,
        rec: &mut ContainerRecord,
        paths: &CtrPaths,
        pod: &super::PodRecord,
        mut sources: Vec<PathBuf>,
    ) -> Result<Vec<PathBuf>> {
        for (i, m) in rec.config.mounts.iter_mut().enumerate() {
            if m.image.is_empty() {
                continue;
            }
            let image = self.images.status(&m.image).ok_or_else(|| {
                EngineError::not_found(format!(
                    "image volume {:?} not found; pull it first",
                    m.image
                ))
            })?;
            m.image_id = image.id.clone();
            let layers = self.lower_layers(&image, pod);
            let target = paths.image_volume(i);
            let sub = m.image_sub_path.clone();
            let name = m.image.clone();
            sources[i] = blocking(move || -> Result<PathBuf> {
                std::fs::create_dir_all(&target)
                    .map_err(EngineError::io("creating image volume dir"))?;
                let lower: Vec<&Path> = layers.iter().map(|p| p.as_path()).collect();
                crate::sys::mount::mount_layers_ro(&lower, &target)
                    .map_err(|e| EngineError::internal(e.to_string()))?;
                if sub.is_empty() {
                    return Ok(target);
                }
                let inside = target.join(&sub);
                let real = std::fs::canonicalize(&inside).map_err(|_| {
                    EngineError::not_found(format!(
                        "image_sub_path {sub:?} does not exist in image {name}"
                    ))
                })?;
                if !real.starts_with(&target) {
                    return Err(EngineError::invalid(format!(
                        "image_sub_path {sub:?} leads out of image {name}"
                    )));
                }
                Ok(real)
            })
            .await??;
        }
        Ok(sources)
    }

    /// The directories of an image's layers, top first, as a container of `pod` mounts them:
    /// from the store, or from the pod's idmapped view of it when the pod has its own user
    /// namespace.
    fn lower_layers(
        &self,
        image: &crate::image::store::ImageRecord,
        pod: &super::PodRecord,
    ) -> Vec<PathBuf> {
        let store = self.images.store();
        let root = store.layers_root();
        image
            .layers
            .iter()
            .rev()
            .map(|l| {
                let p = store.layer_diff_path(&l.chain_id);
                match (&pod.paths.idmapped_layers, p.strip_prefix(&root)) {
                    (Some(idmapped), Ok(rel)) => idmapped.join(rel),
                    _ => p,
                }
            })
            .collect()
    }

    /// Mounts with uid/gid mappings: each source is mounted idmapped at `<run>/idmap/<n>`
    /// (through a user namespace with the mount's mappings, made and pinned by `__pin-ns` and
    /// unpinned once the mounts hold it), which the runtime then binds like any host path.
    async fn idmapped_mounts(
        &self,
        rec: &ContainerRecord,
        paths: &CtrPaths,
        mut sources: Vec<PathBuf>,
    ) -> Result<Vec<PathBuf>> {
        let dir = paths.idmapped();
        for (i, m) in rec.config.mounts.iter().enumerate() {
            if m.uid_mappings.is_empty() {
                continue;
            }
            let req = crate::monitor::pinns::PinRequest {
                dir: dir.join(format!("ns-{i}")),
                userns: Some((m.uid_mappings.clone(), m.gid_mappings.clone())),
                ..Default::default()
            };
            let res = super::pod::run_pin_helper(&req).await?;
            if let Some(e) = res.error {
                // What the kernel refuses here is the request's mappings (overlapping ranges).
                return Err(EngineError::invalid(format!(
                    "mount {}: uidMappings/gidMappings: {e}",
                    m.container_path
                )));
            }
            let (src, target, pin) = (sources[i].clone(), dir.join(i.to_string()), req.dir);
            sources[i] = blocking(move || -> Result<PathBuf> {
                let meta = std::fs::metadata(&src)
                    .map_err(EngineError::io(format_args!("{}", src.display())))?;
                if meta.is_dir() {
                    std::fs::create_dir_all(&target)
                } else {
                    std::fs::File::create(&target).map(drop)
                }
                .map_err(EngineError::io(format_args!(
                    "creating {}",
                    target.display()
                )))?;
                let ns = std::fs::File::open(pin.join("user"))
                    .map_err(EngineError::io("opening the mount's user namespace"))?;
                let mounted = crate::sys::mount::idmapped_bind(&src, &target, &ns, true, false)
                    .map_err(|e| EngineError::invalid(e.to_string()));
                drop(ns);
                let _ = crate::sys::mount::unmount(&pin.join("user"));
                let _ = std::fs::remove_dir_all(&pin);
                mounted.map(|()| target)
            })
            .await??;
        }
        Ok(sources)
    }

    /// Unmounts and removes what a container left on the host; the runtime's state is deleted
    /// by a helper when no monitor did it.
    pub(super) async fn cleanup_container_files(&self, rec: &ContainerRecord) {
        let paths = self.ctr_paths(&rec.id);
        let handler = self.handler(&rec.handler).ok();
        let id = rec.id.clone();
        let monitor_alive =
            rec.monitor_pid > 0 && paths.monitor_socket().exists() && !paths.exit_file().exists();
        if monitor_alive {
            let m = self.monitor(&rec.id);
            let _ = m.kill(libc::SIGKILL, true, Duration::from_secs(5)).await;
            let _ = m.wait(Some(Duration::from_secs(10))).await;
        }
        if !paths.exit_file().exists() {
            if let Some(h) = handler {
                let _ = run_delete_helper(&h, &id).await;
            }
        }
        let _ = blocking(move || {
            let CtrPaths { run, data } = paths;
            if !crate::sys::mount::unmount_all_under(&run) {
                tracing::warn!(dir = %run.display(), "mounts left under the container's run directory: not removing it");
                return;
            }
            for d in [&run, &data] {
                if let Err(e) = std::fs::remove_dir_all(d) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(dir = %d.display(), error = %e, "removing container directory");
                    }
                }
            }
        })
        .await;
    }

    /// The monitor of container `id`.
    pub(super) fn monitor(&self, id: &str) -> MonitorClient {
        MonitorClient::new(self.ctr_paths(id).monitor_socket())
    }

    /// One request to a container's monitor, on the async workers; no answer is Unavailable.
    async fn monitor_call(
        &self,
        id: &str,
        req: Request,
        timeout: Option<Duration>,
    ) -> Result<Response> {
        self.monitor(id).call(&req, timeout).await.map_err(|e| {
            EngineError::new(
                Kind::Unavailable,
                format!("the monitor of container {id} did not answer: {e}"),
            )
        })
    }

    /// The record with its exit file applied, if the monitor has written one.
    pub fn refreshed(&self, id: &str) -> Option<ContainerRecord> {
        let mut rec = self.container(id)?;
        if matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            if let Ok(exit) = crate::state::read_json::<ExitInfo>(&self.ctr_paths(id).exit_file()) {
                self.apply_exit(&mut rec, &exit);
                // Two callers may apply the same exit file at once: only the one that moves the
                // in-memory record to Exited counts it.
                let first = {
                    let mut map = self.containers.write().unwrap_or_else(|e| e.into_inner());
                    match map.get_mut(id) {
                        Some(c) => {
                            let live = matches!(
                                c.state,
                                ContainerState::Created | ContainerState::Running
                            );
                            *c = rec.clone();
                            live
                        }
                        None => false,
                    }
                };
                if first && exit.oom_killed {
                    self.oom_kills
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let _ = self.save_container(&rec);
            }
        }
        Some(rec)
    }

    /// Containers whose exit the monitor recorded as an OOM kill, since the daemon started.
    pub fn oom_kills(&self) -> u64 {
        self.oom_kills.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn apply_exit(&self, rec: &mut ContainerRecord, exit: &ExitInfo) {
        rec.state = ContainerState::Exited;
        rec.exit_code = exit.exit_code;
        rec.finished_at_ns = exit.finished_at_ns;
        rec.reason = reason_for(exit).into();
    }

    /// After a restart: a live monitor keeps the container as it was; a written exit file ends
    /// it; neither means the monitor died with it.
    pub(super) async fn refresh_after_restart(&self, id: &str) {
        let Some(mut rec) = self.refreshed(id) else {
            return;
        };
        if rec.state == ContainerState::Exited {
            return;
        }
        let answer = self.monitor(id).state(Duration::from_secs(2)).await;
        match answer {
            Ok(r) => {
                if r.started && rec.state == ContainerState::Created {
                    rec.state = ContainerState::Running;
                    let _ = self.save_container(&rec);
                }
            }
            Err(e) => {
                // The exit file may have landed in between.
                if self
                    .refreshed(id)
                    .is_some_and(|r| r.state == ContainerState::Exited)
                {
                    return;
                }
                // Slow is not dead: while the monitor process lives, it will answer (or record
                // the exit) later.
                let r = rec.clone();
                let run = self.ctr_run_dir(id);
                if blocking(move || monitor_alive(&r, &run))
                    .await
                    .unwrap_or(false)
                {
                    tracing::warn!(container = %id, error = %e, "the monitor does not answer but lives: keeping the container's state");
                    return;
                }
                tracing::warn!(container = %id, error = %e, "monitor is gone and left no exit file");
                rec.state = ContainerState::Exited;
                rec.exit_code = 255;
                rec.finished_at_ns = now_ns();
                rec.reason = "Error".into();
                rec.message =
                    "the container's monitor exited without recording the container's exit".into();
                let _ = self.save_container(&rec);
            }
        }
    }

    pub async fn start_container(self: &Arc<Self>, s: &str) -> Result<()> {
        let id = self.container_id(s)?;
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let mut rec = self
            .refreshed(&id)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))?;
        if rec.state != ContainerState::Created {
            return Err(EngineError::precondition(format!(
                "container {id} is {:?}, not created",
                rec.state
            )));
        }
        let started_at = now_ns();
        let r = self
            .monitor_call(&id, Request::Start, Some(Duration::from_secs(30)))
            .await?;
        if let Some(e) = r.error {
            return Err(EngineError::internal(format!(
                "starting container {id}: {e}"
            )));
        }
        rec = self.refreshed(&id).unwrap_or(rec);
        if rec.state == ContainerState::Created {
            rec.state = ContainerState::Running;
        }
        rec.started_at_ns = started_at;
        self.save_container(&rec)?;
        tracing::info!(container = %id, "container started");
        self.emit(&id, &rec.pod_id, super::events::EventKind::Started);
        Ok(())
    }

    fn container_id(&self, s: &str) -> Result<String> {
        self.resolve_container(s)?
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))
    }

    /// Waits for the monitor to report the exit, up to `timeout`; true when it has exited.
    /// Waits up to `timeout` for the container to exit: the monitor's answer, or the init's
    /// pidfd when the monitor does not answer (it records the exit once it runs again).
    async fn wait_exit(
        &self,
        rec: &ContainerRecord,
        init: Option<&std::os::fd::OwnedFd>,
        timeout: Duration,
    ) -> bool {
        let id = rec.id.clone();
        let init = init.and_then(|fd| fd.try_clone().ok());
        let monitor = self.monitor_call(&id, Request::Wait, Some(timeout));
        tokio::pin!(monitor);
        let init_gone = async {
            match init {
                Some(fd) => crate::sys::process::pidfd_exited(fd).await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let init_exited = tokio::select! {
            _ = &mut monitor => false,
            gone = tokio::time::timeout(timeout, init_gone) => gone.unwrap_or(false),
        };
        // The init went first: a monitor that lives records the exit in a moment, and what
        // Stop's caller reads next must already say Exited. Only a monitor that does not
        // answer leaves the exit to be read from the init alone.
        if init_exited
            && tokio::time::timeout(Duration::from_secs(2), &mut monitor)
                .await
                .is_err()
        {
            tracing::warn!(container = %id, "the init exited but its monitor does not answer");
        }
        init_exited
            || self
                .refreshed(&id)
                .is_some_and(|r| r.state == ContainerState::Exited)
            || !self.ctr_paths(&id).monitor_socket().exists()
    }

    /// Signals the container: through its monitor, or straight to its init (by pidfd, checked
    /// to be the container's) when the monitor does not answer within 2 s.
    async fn signal(
        &self,
        rec: &ContainerRecord,
        init: Option<&std::os::fd::OwnedFd>,
        signal: i32,
        all: bool,
    ) {
        let asked = self
            .monitor_call(
                &rec.id,
                Request::Kill { signal, all },
                Some(Duration::from_secs(2)),
            )
            .await;
        let Err(e) = asked else { return };
        tracing::warn!(container = %rec.id, error = %e, signal, "the monitor does not answer: signalling the init directly");
        let sent = init.map(|fd| crate::sys::process::pidfd_send_signal(fd, signal));
        if !matches!(sent, Some(Ok(()))) {
            tracing::warn!(container = %rec.id, "the container's init could not be signalled (gone?)");
        }
    }

    pub async fn stop_container(self: &Arc<Self>, s: &str, timeout_s: i64) -> Result<()> {
        let Some(id) = self.resolve_container(s)? else {
            return Ok(());
        };
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let Some(rec) = self.refreshed(&id) else {
            return Ok(());
        };
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return Ok(());
        }
        if !self.ctr_paths(&id).monitor_socket().exists() {
            self.refresh_after_restart(&id).await;
            return Ok(());
        }
        // The init, opened while it is alive and checked to be the container's: what Stop
        // falls back on when the monitor does not answer.
        let init = {
            let r = rec.clone();
            blocking(move || open_init(&r)).await.ok().flatten()
        };
        let init = init.as_ref();
        if timeout_s > 0 && rec.state == ContainerState::Running {
            self.signal(&rec, init, rec.stop_signal, false).await;
            if self
                .wait_exit(&rec, init, Duration::from_secs(timeout_s as u64))
                .await
            {
                tracing::info!(container = %id, "container stopped");
                return Ok(());
            }
            tracing::info!(container = %id, timeout_s, "stop signal timed out; killing");
        }
        self.signal(&rec, init, libc::SIGKILL, true).await;
        if !self.wait_exit(&rec, init, Duration::from_secs(30)).await {
            return Err(EngineError::new(
                Kind::DeadlineExceeded,
                format!("container {id} did not exit after SIGKILL"),
            ));
        }
        tracing::info!(container = %id, "container stopped");
        Ok(())
    }

    pub async fn remove_container(self: &Arc<Self>, s: &str) -> Result<()> {
        let Some(id) = self.resolve_container(s)? else {
            return Ok(());
        };
        self.stop_container(&id, 0).await?;
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let Some(rec) = self.container(&id) else {
            return Ok(());
        };
        self.cleanup_container_files(&rec).await;
        self.forget_container(&id);
        if let Some(pod) = self.pod(&rec.pod_id) {
            self.release(&container_name(&pod.config, &rec.config), &id);
        }
        self.drop_lock(&id);
        tracing::info!(container = %id, "container removed");
        self.emit(&id, &rec.pod_id, super::events::EventKind::Deleted);
        Ok(())
    }

    pub fn container_status(&self, s: &str) -> Result<ContainerRecord> {
        let id = self.container_id(s)?;
        self.refreshed(&id)
            .filter(|c| c.state != ContainerState::Creating)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))
    }

    /// The OCI runtime spec a container was created with (its bundle's `config.json`, with the
    /// built-in handler's seccomp section put back from its plan), for verbose status
    /// (`crictl inspect` shows it as `info.runtimeSpec`, as both peers do). None once the
    /// bundle is gone.
    pub async fn runtime_spec(&self, id: &str) -> Option<serde_json::Value> {
        let bundle = self.ctr_paths(id).bundle();
        blocking(move || {
            let read = |name: &str| {
                crate::state::read_capped(&bundle.join(name), RUNTIME_SPEC_CAP)
                    .ok()
                    .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
            };
            let mut spec = read("config.json")?;
            if let Some(filter) = read(seccomp::PLAN_FILE).and_then(|p| p.get("filter").cloned()) {
                if let Some(linux) = spec.get_mut("linux").and_then(|l| l.as_object_mut()) {
                    linux.entry("seccomp").or_insert(filter);
                }
            }
            Some(spec)
        })
        .await
        .ok()
        .flatten()
    }

    pub async fn exec_sync(
        self: &Arc<Self>,
        s: &str,
        cmd: Vec<String>,
        timeout_s: i64,
    ) -> Result<(Vec<u8>, Vec<u8>, i32)> {
        use tokio::io::AsyncReadExt;
        let timeout_ms = (timeout_s.max(0) as u64).saturating_mul(1000);
        let (id, mut req) = self.exec_request(s, cmd, timeout_ms, false)?;
        req.lifeline = true;
        let result_file = req.result_file.clone();
        let json = serde_json::to_vec(&req).map_err(|e| EngineError::internal(e.to_string()))?;
        let mut cmd = tokio::process::Command::new(Engine::exe());
        cmd.arg("__exec")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // Held for as long as this RPC waits: when the client cancels or its deadline ends the
        // call, this future is dropped with it, and the helper kills the process it started.
        let _lifeline = crate::sys::process::give_lifeline(&mut cmd)
            .map_err(EngineError::io("making the exec helper's lifeline"))?;
        let mut child = cmd
            .spawn()
            .map_err(|e| EngineError::internal(format!("running the exec helper: {e}")))?;
        drop(cmd);
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            stdin
                .write_all(&json)
                .await
                .map_err(EngineError::io("sending the exec request"))?;
        }
        async fn capped(r: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
            let mut out = Vec::new();
            let Some(mut r) = r else { return out };
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = EXEC_OUTPUT_CAP.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
            out
        }
        let (so, se) = (child.stdout.take(), child.stderr.take());
        let outer = if timeout_s > 0 {
            Duration::from_secs(timeout_s as u64 + 30)
        } else {
            Duration::from_secs(24 * 3600)
        };
        let work = async {
            let (o, e) = tokio::join!(capped(so), capped(se));
            let _ = child.wait().await;
            (o, e)
        };
        let (stdout, stderr) = tokio::time::timeout(outer, work).await.map_err(|_| {
            EngineError::new(Kind::DeadlineExceeded, "the exec helper did not finish")
        })?;
        let res: ExecResult = blocking(move || {
            let r = crate::state::read_json(&result_file);
            let _ = std::fs::remove_file(&result_file);
            r
        })
        .await?
        .map_err(|e| EngineError::internal(format!("the exec helper left no result: {e}")))?;
        if let Some(e) = res.error {
            return Err(EngineError::internal(format!(
                "exec in container {id}: {e}"
            )));
        }
        if res.timed_out {
            return Err(EngineError::new(
                Kind::DeadlineExceeded,
                format!("command timed out after {timeout_s}s and was killed"),
            ));
        }
        Ok((stdout, stderr, res.exit_code))
    }

    pub async fn update_resources(
        self: &Arc<Self>,
        s: &str,
        r: &crate::spec::config::Resources,
    ) -> Result<()> {
        let id = self.container_id(s)?;
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let mut rec = self
            .refreshed(&id)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))?;
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return Err(EngineError::precondition(format!(
                "container {id} is not running"
            )));
        }
        validate::resources("linux", r)?;
        let resources = crate::spec::linux_resources(r);
        let resp = self
            .monitor_call(
                &id,
                Request::Update { resources },
                Some(Duration::from_secs(30)),
            )
            .await?;
        if let Some(e) = resp.error {
            return Err(EngineError::internal(format!(
                "updating container {id}: {e}"
            )));
        }
        rec.config.resources = Some(r.clone());
        self.save_container(&rec)
    }

    pub async fn reopen_log(self: &Arc<Self>, s: &str) -> Result<()> {
        let id = self.exec_target(s)?;
        let r = self
            .monitor_call(&id, Request::ReopenLog, Some(Duration::from_secs(10)))
            .await?;
        match r.error {
            Some(e) => Err(EngineError::internal(format!(
                "reopening the log of {id}: {e}"
            ))),
            None => Ok(()),
        }
    }
}

/// For the built-in handler: takes `linux.seccomp` out of the spec into a plan that the helpers
/// compile once and load themselves (see `runtime::seccomp`), and lends CAP_SYS_ADMIN to the
/// effective and permitted sets when the process has neither it nor no_new_privs. A filter with
/// notify actions stays in the spec, for libcontainer's own seccomp path and its listener.
fn seccomp_plan(spec: &mut oci_spec::runtime::Spec) -> Result<Option<seccomp::Plan>> {
    use oci_spec::runtime::Capability;
    let Some(filter) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
        return Ok(None);
    };
    if seccomp::uses_notify(&filter) {
        return Ok(None);
    }
    let mut process = spec.process().clone().unwrap_or_default();
    let nnp = process.no_new_privileges() == Some(true);
    let mut caps = process.capabilities().clone().unwrap_or_default();
    let has = caps
        .effective()
        .as_ref()
        .is_some_and(|e| e.contains(&Capability::SysAdmin));
    let plan = seccomp::Plan::new(filter, nnp, has)
        .map_err(|e| EngineError::new(crate::error::ErrorKind::kind(&e), e.to_string()))?;
    if plan.drop_sys_admin {
        let mut effective = caps.effective().clone().unwrap_or_default();
        effective.insert(Capability::SysAdmin);
        let mut permitted = caps.permitted().clone().unwrap_or_default();
        permitted.insert(Capability::SysAdmin);
        caps.set_effective(Some(effective));
        caps.set_permitted(Some(permitted));
        process.set_capabilities(Some(caps));
        spec.set_process(Some(process));
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(None);
    }
    Ok(Some(plan))
}

/// The largest Localhost seccomp profile read (the runtime default is 20 KB).
const LOCALHOST_PROFILE_CAP: u64 = 1 << 20;

/// The seccomp section for a container's profile: RuntimeDefault is
/// `seccomp-profiles/default.json`, Localhost a profile file on the host, both in the
/// containers/moby profile format, resolved for this architecture, kernel and the container's
/// capabilities. libcontainer reads masked-compare arguments the other way round from runc and
/// crun, so the copy it compiles itself (a filter with notify actions) is adjusted (see
/// `spec::seccomp::for_libcontainer`); other filters it never sees (`seccomp_plan`).
pub fn resolve_seccomp(
    p: &crate::spec::config::Profile,
    c: &ContainerConfig,
    host_caps: &[String],
    builtin: bool,
) -> Result<serde_json::Value> {
    use crate::spec::seccomp::{for_libcontainer, KernelVersion, Profile};
    let loaded;
    let profile: &Profile = match p {
        crate::spec::config::Profile::Unconfined | crate::spec::config::Profile::Unset => {
            return Ok(serde_json::Value::Null)
        }
        crate::spec::config::Profile::RuntimeDefault => Profile::default_profile(),
        crate::spec::config::Profile::Localhost(path) => {
            let data = crate::state::read_capped(Path::new(path), LOCALHOST_PROFILE_CAP)
                .map_err(|e| EngineError::invalid(format!("seccomp profile {path}: {e}")))?;
            loaded = Profile::from_json(&data)
                .map_err(|e| EngineError::invalid(format!("seccomp profile {path}: {e}")))?;
            &loaded
        }
    };
    let caps = if c.security.privileged {
        host_caps.to_vec()
    } else {
        crate::spec::capabilities_on(
            host_caps,
            &c.security.capabilities_add,
            &c.security.capabilities_drop,
        )
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| KernelVersion::parse_release(r.trim()))
        .unwrap_or(KernelVersion::new(0, 0));
    let mut sec = profile
        .resolve(std::env::consts::ARCH, &caps, kernel)
        .map_err(|e| EngineError::new(crate::error::ErrorKind::kind(&e), e.to_string()))?;
    if builtin && crate::runtime::seccomp::uses_notify(&sec) {
        sec = for_libcontainer(&sec)
            .map_err(|e| EngineError::new(crate::error::ErrorKind::kind(&e), e.to_string()))?;
    }
    serde_json::to_value(&sec).map_err(|e| EngineError::internal(e.to_string()))
}

async fn spawn_monitor(paths: &CtrPaths) -> Result<Ready> {
    let log = std::fs::File::create(paths.monitor_log())
        .map_err(EngineError::io("creating monitor.log"))?;
    let out = tokio::process::Command::new(Engine::exe())
        .arg("__monitor")
        .arg(paths.monitor_config())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| EngineError::internal(format!("starting the monitor: {e}")))?;
    // The monitor's first process exits at once (it forks to detach); its child keeps stdout
    // until it has reported. Read that one line.
    let mut child = out;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| EngineError::internal("monitor stdout"))?;
    let mut line = Vec::new();
    {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        let read = async {
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        line.extend_from_slice(&buf[..n]);
                        if line.contains(&b'\n') || line.len() > 1 << 20 {
                            break;
                        }
                    }
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(240), read)
            .await
            .is_err()
        {
            return Err(EngineError::new(
                Kind::DeadlineExceeded,
                "the monitor did not report within 240 s",
            ));
        }
    }
    let _ = child.wait().await;
    let text = String::from_utf8_lossy(&line);
    let first = text.lines().next().unwrap_or("");
    serde_json::from_str(first).map_err(|_| {
        let log = std::fs::read_to_string(paths.monitor_log()).unwrap_or_default();
        EngineError::internal(format!(
            "the monitor failed before reporting: {}",
            log.trim()
        ))
    })
}

/// The container's init by pidfd, if the process with its pid is still the container's (in
/// its cgroup: never a process that reused the pid). The pidfd is opened first, so the check
/// is of the process it names.
fn open_init(rec: &ContainerRecord) -> Option<std::os::fd::OwnedFd> {
    if rec.pid <= 0 {
        return None;
    }
    let fd = crate::sys::process::pidfd_open(rec.pid).ok()?;
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", rec.pid)).ok()?;
    cgroups.contains(&rec.id).then_some(fd)
}

/// Whether the container's monitor process is alive (its pid runs `__monitor` for this
/// container's run directory).
fn monitor_alive(rec: &ContainerRecord, run: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if rec.monitor_pid <= 0 {
        return false;
    }
    let Ok(cmd) = std::fs::read(format!("/proc/{}/cmdline", rec.monitor_pid)) else {
        return false;
    };
    let has = |needle: &[u8]| cmd.windows(needle.len()).any(|w| w == needle);
    has(b"__monitor") && has(run.as_os_str().as_bytes())
}

async fn run_delete_helper(h: &Handler, id: &str) -> Result<()> {
    let json = serde_json::to_string(h).map_err(|e| EngineError::internal(e.to_string()))?;
    let out = tokio::process::Command::new(Engine::exe())
        .arg("__delete")
        .arg(json)
        .arg(id)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| EngineError::internal(format!("running the delete helper: {e}")))?;
    if !out.status.success() {
        return Err(EngineError::internal(format!(
            "deleting {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Engine {
    /// For Attach: a running container's monitor socket, and whether it has a terminal.
    pub fn attach_target(&self, s: &str) -> Result<(String, PathBuf, bool)> {
        let id = self.exec_target(s)?;
        let rec = self
            .container(&id)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))?;
        Ok((
            id.clone(),
            self.ctr_paths(&id).monitor_socket(),
            rec.config.tty,
        ))
    }

    /// What ExecSync and streaming exec share: the command checked, the container running, and
    /// the helper's request (run as the container's user) with its result file.
    fn exec_request(
        &self,
        s: &str,
        cmd: Vec<String>,
        timeout_ms: u64,
        stdin: bool,
    ) -> Result<(String, ExecRequest)> {
        if cmd.is_empty() {
            return Err(EngineError::invalid("cmd is required"));
        }
        validate::bounded("cmd", cmd.len(), 4096)?;
        if cmd.iter().any(|c| c.contains('\0')) {
            return Err(EngineError::invalid("cmd must not contain NUL"));
        }
        let id = self.exec_target(s)?;
        let rec = self
            .refreshed(&id)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))?;
        let handler = self.handler(&rec.handler)?;
        let exec_dir = self.cfg().run_root.join("exec");
        std::fs::create_dir_all(&exec_dir).map_err(EngineError::io("creating exec dir"))?;
        let req = ExecRequest {
            id: id.clone(),
            handler,
            process: ExecProcess {
                args: cmd,
                env: vec![],
                cwd: None,
                user: Some((rec.user.uid, rec.user.gid, rec.user.additional_gids.clone())),
                console_socket: None,
                bundle: Some(self.ctr_paths(&rec.id).bundle()),
            },
            timeout_ms,
            result_file: exec_dir.join(format!("{}.json", new_id())),
            stdin,
            lifeline: false,
        };
        Ok((id, req))
    }
}

/// A process exec'd into a container for a streaming session: its stdio are pipes the
/// streaming server relays; `finish` waits for it and returns the exit code.
pub struct StreamExec {
    pub child: tokio::process::Child,
    result_file: PathBuf,
    request_file: PathBuf,
    /// With a terminal: the helper's socket taking `{"width":W,"height":H}` lines.
    pub resize: Option<PathBuf>,
    /// Dropped with the session: the helper then kills the process (see `monitor::exec`).
    _lifeline: std::os::fd::OwnedFd,
}

/// Resizes an exec's terminal through its helper's resize socket. The helper makes the socket
/// right after the process starts; a resize before that is retried briefly.
pub async fn resize_tty(sock: &Path, width: u16, height: u16) {
    let line = format!("{{\"width\":{width},\"height\":{height}}}\n");
    for _ in 0..50 {
        if let Ok(mut s) = tokio::net::UnixStream::connect(sock).await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(line.as_bytes()).await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

impl StreamExec {
    pub async fn finish(mut self) -> Result<i32> {
        let _ = self.child.wait().await;
        let (res, req) = (self.result_file.clone(), self.request_file.clone());
        let r: ExecResult = blocking(move || {
            let r = crate::state::read_json(&res);
            let _ = std::fs::remove_file(&res);
            let _ = std::fs::remove_file(&req);
            r
        })
        .await?
        .map_err(|e| EngineError::internal(format!("the exec helper left no result: {e}")))?;
        match r.error {
            Some(e) => Err(EngineError::internal(e)),
            None => Ok(r.exit_code),
        }
    }
}

impl Engine {
    /// Checks that `s` is a running container (what an exec or a log reopen needs); returns its
    /// full ID.
    pub fn exec_target(&self, s: &str) -> Result<String> {
        let id = self.container_id(s)?;
        let rec = self
            .refreshed(&id)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))?;
        if rec.state != ContainerState::Running {
            return Err(EngineError::precondition(format!(
                "container {id} is not running"
            )));
        }
        Ok(id)
    }

    /// Starts `cmd` in the container with piped stdio, for the streaming server.
    pub async fn exec_stream(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        stdin: bool,
        tty: bool,
    ) -> Result<StreamExec> {
        let (_, mut req) = self.exec_request(id, cmd, 0, stdin || tty)?;
        req.lifeline = true;
        let result_file = req.result_file.clone();
        let request_file = result_file.with_extension("req.json");
        if tty {
            req.process.console_socket = Some(result_file.with_extension("console.sock"));
        }
        crate::state::write_json_volatile(&request_file, &req)
            .map_err(EngineError::io("writing the exec request"))?;
        let mut cmd = tokio::process::Command::new(Engine::exe());
        cmd.arg("__exec")
            .arg(&request_file)
            .stdin(if stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let lifeline = crate::sys::process::give_lifeline(&mut cmd)
            .map_err(EngineError::io("making the exec helper's lifeline"))?;
        let child = cmd
            .spawn()
            .map_err(|e| EngineError::internal(format!("running the exec helper: {e}")))?;
        drop(cmd);
        let resize = req
            .process
            .console_socket
            .as_ref()
            .map(|c| c.with_extension("resize"));
        Ok(StreamExec {
            child,
            result_file,
            request_file,
            resize,
            _lifeline: lifeline,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals() {
        assert_eq!(super::signal_number("SIGTERM"), Some(15));
        assert_eq!(super::signal_number("KILL"), Some(9));
        assert_eq!(super::signal_number("sigusr1"), Some(10));
        assert_eq!(super::signal_number("9"), Some(9));
        assert_eq!(super::signal_number("BOGUS"), None);
        assert_eq!(super::signal_number("0"), None);
    }
}
