//! CreateContainer: the request checked and resolved (pod, image, handler, seccomp), the overlay
//! rootfs, the spec and its bundle, image volumes and idmapped mounts, the monitor spawned.

use super::*;
use crate::engine::{
    blocking, now_ns, validate, ContainerRecord, ContainerState, CtrPaths, Engine, EngineError,
    PodState, Result,
};
use crate::error::Kind;
use crate::model::{ContainerConfig, ImageConfig, Mount, ResolvedDevice};
use crate::monitor::proto::{MonitorConfig, Ready};
use crate::runtime::{seccomp, Handler};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Reads a file of the image's rootfs that must not be a symlink leading out of it.
pub(in crate::engine) fn read_image_file(rootfs: &Path, rel: &str) -> Option<String> {
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
pub(in crate::engine) fn check_propagation(m: &Mount, source: &Path) -> Result<()> {
    use crate::model::Propagation;
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
pub(in crate::engine) fn prepare_host(
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

pub(in crate::engine) fn cdi_error(e: crate::cdi::CdiError) -> EngineError {
    EngineError::domain(e)
}

/// The CDI devices a container asks for (`cdi_devices`, then the `cdi.k8s.io/*` annotations),
/// resolved from the spec directories as they are now (read again for every container that
/// asks, so new spec files count), with device nodes' type and numbers from the host. No
/// devices asked: no spec file is read.
pub(in crate::engine) fn resolve_cdi(
    c: &ContainerConfig,
    dirs: &[PathBuf],
) -> Result<crate::cdi::ContainerEdits> {
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
pub(in crate::engine) const MAX_IMAGE_ENV: usize = 10_000;

pub(in crate::engine) const MAX_IMAGE_ENV_BYTES: usize = 1 << 20;

/// Image content that would make a container's spec unbounded is InvalidArgument naming the
/// image.
pub(in crate::engine) fn check_image_config(image: &str, c: &ImageConfig) -> Result<()> {
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
pub(in crate::engine) fn host_devices() -> Vec<ResolvedDevice> {
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

/// What CreateContainer looked up and checked before its work starts.
pub(in crate::engine) struct Resolved {
    pod: crate::engine::PodRecord,
    image: crate::image::store::ImageRecord,
    image_cfg: ImageConfig,
    handler: Handler,
    seccomp: Option<serde_json::Value>,
    /// A checkpoint (archive or image) to restore the container from.
    restore: Option<super::checkpoint::Restore>,
}

/// For the built-in handler: takes `linux.seccomp` out of the spec into a plan that the helpers
/// compile once and load themselves (see `runtime::seccomp`), and lends CAP_SYS_ADMIN to the
/// effective and permitted sets when the process has neither it nor no_new_privs. A filter with
/// notify actions stays in the spec, for libcontainer's own seccomp path and its listener.
pub(in crate::engine) fn seccomp_plan(
    spec: &mut oci_spec::runtime::Spec,
) -> Result<Option<seccomp::Plan>> {
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
    let plan = seccomp::Plan::new(filter, nnp, has).map_err(EngineError::domain)?;
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
pub(in crate::engine) const LOCALHOST_PROFILE_CAP: u64 = 1 << 20;

/// The seccomp section for a container's profile: RuntimeDefault is
/// `seccomp-profiles/default.json`, Localhost a profile file on the host, both in the
/// containers/moby profile format, resolved for this architecture, kernel and the container's
/// capabilities. libcontainer reads masked-compare arguments the other way round from runc and
/// crun, so the copy it compiles itself (a filter with notify actions) is adjusted (see
/// `spec::seccomp::for_libcontainer`); other filters it never sees (`seccomp_plan`).
pub fn resolve_seccomp(
    p: &crate::model::Profile,
    c: &ContainerConfig,
    host_caps: &[String],
    builtin: bool,
) -> Result<serde_json::Value> {
    use crate::spec::seccomp::{for_libcontainer, KernelVersion, Profile};
    let loaded;
    let profile: &Profile = match p {
        crate::model::Profile::Unconfined | crate::model::Profile::Unset => {
            return Ok(serde_json::Value::Null)
        }
        crate::model::Profile::RuntimeDefault => Profile::default_profile(),
        crate::model::Profile::Localhost(path) => {
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
        .map_err(EngineError::domain)?;
    if builtin && crate::runtime::seccomp::uses_notify(&sec) {
        sec = for_libcontainer(&sec).map_err(EngineError::domain)?;
    }
    serde_json::to_value(&sec).map_err(|e| EngineError::internal(e.to_string()))
}

/// A monitor's set-up step as a phase name (`monitor_<step>`; an unknown one is `monitor_other`).
fn monitor_step(step: &str) -> &'static str {
    match step {
        "config" => "monitor_config",
        "fork" => "monitor_fork",
        "cgroup" => "monitor_cgroup",
        "socket" => "monitor_socket",
        "log" => "monitor_log",
        "pipes" => "monitor_pipes",
        "oom_baseline" => "monitor_oom_baseline",
        "console" => "monitor_console",
        "after_create" => "monitor_after_create",
        _ => "monitor_other",
    }
}

pub(in crate::engine) async fn spawn_monitor(paths: &CtrPaths) -> Result<Ready> {
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

impl Engine {
    pub async fn create_container(
        self: &Arc<Self>,
        pod_s: &str,
        config: ContainerConfig,
    ) -> Result<String> {
        let mut phases = crate::telemetry::Phases::start("CreateContainer");
        // An image that is a checkpoint archive: the checkpointed container, restored.
        let (config, restore) = self.restore_request(config).await?;
        validate::container_config(&config)?;
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
        if config.security.pid == crate::model::NamespaceMode::Node
            && pod.config.pid != crate::model::NamespaceMode::Node
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
        // The signature policy of the pod's namespace, again: not only at pull time.
        self.images
            .check_trust(&image, &config.image, &pod.config.namespace)
            .await
            .map_err(EngineError::domain)?;
        // A checkpoint image is image content too (CRIU restores processes, credentials and
        // all from it): the same policy applies to it.
        if let Some(super::checkpoint::Restore::Layer { image: ck, .. }) = &restore {
            let rec = self.images.status(ck).ok_or_else(|| {
                EngineError::not_found(format!("checkpoint image {ck:?} not found"))
            })?;
            self.images
                .check_trust(&rec, ck, &pod.config.namespace)
                .await
                .map_err(EngineError::domain)?;
        }
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
        if restore.is_some() && config.tty && matches!(handler, Handler::Builtin { .. }) {
            return Err(EngineError::precondition(
                "the built-in handler cannot restore a container with a terminal (tty); use runc",
            ));
        }
        if let (Some(_), Handler::Oci { path, .. }) = (&restore, &handler) {
            // A runtime that cannot restore says so before anything is made.
            let path = path.clone();
            blocking(move || crate::runtime::cli::criu_support(&path))
                .await?
                .map_err(EngineError::precondition)?;
        }
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
        phases.mark("check");
        let id = self
            .create_once(
                crate::engine::Made::Container,
                name.clone(),
                move |id, handoff| async move {
                    let resolved = Resolved {
                        pod,
                        image,
                        image_cfg,
                        handler,
                        seccomp,
                        restore,
                    };
                    engine
                        .make_container(id, name, config, resolved, handoff, phases)
                        .await
                },
            )
            .await?;
        self.nri_container_event(&id, crate::nri::api::Event::PostCreateContainer)
            .await;
        Ok(id)
    }

    /// CreateContainer's work, in its own task (see [`crate::engine::creates`]).
    pub(in crate::engine) async fn make_container(
        self: Arc<Self>,
        id: String,
        name: String,
        config: ContainerConfig,
        resolved: Resolved,
        handoff: crate::engine::creates::Handoff,
        mut phases: crate::telemetry::Phases,
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
            phases.mark("record");
            self.build_container(&mut rec, resolved, &handoff, &mut phases)
                .await
        }
        .await;
        phases.finish(&result);
        match result {
            Ok(()) => {
                tracing::info!(container = %id, pod = %pod_id, name = %config.name, unclaimed = rec.unclaimed, "container created");
                self.emit(&id, &pod_id, crate::engine::events::EventKind::Created);
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

    pub(in crate::engine) async fn seccomp_for(
        &self,
        c: &ContainerConfig,
        handler: &Handler,
    ) -> Result<Option<serde_json::Value>> {
        use crate::model::Profile;
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

    pub(in crate::engine) async fn build_container(
        &self,
        rec: &mut ContainerRecord,
        resolved: Resolved,
        handoff: &crate::engine::creates::Handoff,
        phases: &mut crate::telemetry::Phases,
    ) -> Result<()> {
        let Resolved {
            pod,
            image,
            image_cfg,
            handler,
            seccomp,
            restore,
        } = resolved;
        let restore_archive = restore;
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
        let restoring = restore_archive.is_some();
        let (passwd, group, sources, devices, cdi) = {
            let (rootfs, paths) = (rootfs.clone(), paths.clone());
            blocking(move || -> Result<_> {
                // First, so that a bad device request fails before anything is made.
                let cdi = resolve_cdi(&config, &cdi_dirs)?;
                for d in [&paths.run, &rootfs, &paths.upper(), &paths.work()] {
                    std::fs::create_dir_all(d)
                        .map_err(EngineError::io(format_args!("creating {}", d.display())))?;
                }
                if let Some(source) = &restore_archive {
                    // Before the overlay is mounted: the images and the writable layer.
                    let (images, upper) = (paths.data.join("checkpoint"), paths.upper());
                    match source {
                        super::checkpoint::Restore::Archive(a) => {
                            super::checkpoint::unpack_for_restore(a, &images, &upper)?
                        }
                        super::checkpoint::Restore::Layer { dir, .. } => {
                            super::checkpoint::unpack_layer_for_restore(dir, &images, &upper)?
                        }
                    }
                    std::fs::create_dir_all(paths.data.join("restore-work"))
                        .map_err(EngineError::io("creating the restore work directory"))?;
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
                    crate::engine::pod::make_accessible(&rootfs, &top)?;
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
        phases.mark("rootfs");
        let sources = self.image_volumes(rec, &paths, pod, sources).await?;
        let status_sources = sources.clone();
        let sources = self.idmapped_mounts(rec, &paths, sources).await?;
        if root_ids.is_some() {
            // The runtime binds these from inside the pod's user namespace: the way to the
            // sources ferrio mounted under the container's run directory must be searchable.
            let (idmap, top) = (paths.idmapped(), self.cfg().run_root.clone());
            blocking(move || {
                if idmap.exists() {
                    crate::engine::pod::make_accessible(&idmap, &top)?;
                }
                Ok::<_, EngineError>(())
            })
            .await??;
        }
        phases.mark("volumes");
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
        self.apply_annotated_blockio_class(pod, rec, &mut spec)
            .await?;
        // NRI plugins' adjustments, in plugin order (nothing to do with none registered).
        if let Some(cgroup) = self.nri_adjust(pod, rec, &mut spec).await? {
            rec.cgroup = cgroup;
        }
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
            own_pid_ns: spec
                .linux()
                .as_ref()
                .and_then(|l| l.namespaces().as_ref())
                .is_some_and(|ns| {
                    ns.iter().any(|n| {
                        n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none()
                    })
                }),
            restore_from: restoring.then(|| crate::runtime::RestoreFrom {
                images: paths.data.join("checkpoint"),
                criu: self.cfg().runtime.criu_path.clone(),
            }),
        };
        phases.mark("spec");
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
        phases.mark("bundle");
        let ready = spawn_monitor(&paths).await?;
        match ready {
            Ready::Created {
                pid,
                monitor_pid,
                setup_us,
                create_us,
                setup_steps,
            } => {
                // The monitor's steps under their own names, `monitor_<step>`; the set-up as
                // one phase from a monitor that does not report steps.
                if setup_steps.is_empty() {
                    phases.inner("monitor_setup", setup_us);
                }
                for (step, us) in &setup_steps {
                    phases.inner(monitor_step(step), *us);
                }
                phases.inner("runtime_create", create_us);
                phases.mark("monitor_exec");
                rec.pid = pid;
                rec.monitor_pid = monitor_pid;
                rec.state = ContainerState::Created;
                rec.unclaimed = handoff.unclaimed();
                let saved = self.save_container(rec);
                phases.mark("saved");
                saved
            }
            Ready::Failed { error } => Err(EngineError::internal(format!(
                "creating the container: {error}"
            ))),
        }
    }

    /// Mounts each image volume's image read-only under the run dir and returns the sources
    /// with those paths (plus the sub path) filled in; records the image IDs on the mounts.
    pub(in crate::engine) async fn image_volumes(
        &self,
        rec: &mut ContainerRecord,
        paths: &CtrPaths,
        pod: &crate::engine::PodRecord,
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
    pub(in crate::engine) fn lower_layers(
        &self,
        image: &crate::image::store::ImageRecord,
        pod: &crate::engine::PodRecord,
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
    pub(in crate::engine) async fn idmapped_mounts(
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
            let res = crate::engine::pod::run_pin_helper(&req).await?;
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
}
