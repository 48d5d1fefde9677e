//! The OCI runtime spec of a container, as a pure function of the pod's config, the container's
//! config, the image's config and what the runtime decided (paths, cgroup, clamps). No I/O:
//! whatever needs the host (host paths, devices, the image's /etc/passwd) is resolved by the
//! engine first and passed in. Unit-tested with golden files in `src/spec/testdata`.
//!
//! `linux.resources` is built with oci-spec's typed builders ([`linux_resources`], also what
//! the update RPCs send a monitor). The rest of the spec is written as a JSON tree and parsed
//! into `oci_spec::runtime::Spec` once at the end, on purpose: oci-spec's builders start from
//! runc-style defaults that are wrong for a CRI container and would each have to be undone
//! (`Process` defaults to `noNewPrivileges: true`, `TERM=xterm`, `args: ["sh"]` and an
//! RLIMIT_NOFILE of 1024; `Linux` to its own namespaces, masked and read-only paths), and
//! capabilities are `HashSet`s, so their order in `config.json` would change from run to run
//! and the golden files could not pin it.

pub mod blockio;
pub mod cdi;
pub mod seccomp;
pub mod user;

use crate::error::{ErrorKind, Kind};
use crate::model::{
    ContainerConfig, ImageConfig, NamespaceMode, PodConfig, PodPaths, Propagation, ResolvedDevice,
};
use serde_json::{json, Value};
use std::path::PathBuf;

pub use user::User;

/// The OCI version written into every spec: one that runc and Debian's crun 1.8 accept.
pub const OCI_VERSION: &str = "1.0.2";

/// CRI-O's default capabilities.
pub const DEFAULT_CAPABILITIES: [&str; 9] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
];

pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
    #[error("building the OCI spec: {0}")]
    Internal(String),
}

impl ErrorKind for SpecError {
    fn kind(&self) -> Kind {
        match self {
            SpecError::Invalid(_) => Kind::InvalidArgument,
            SpecError::Internal(_) => Kind::Internal,
        }
    }
}

/// Everything [`generate`] reads.
pub struct Input<'a> {
    /// The pod's ID (the `io.kubernetes.cri.sandbox-id` annotation).
    pub sandbox_id: &'a str,
    pub pod: &'a PodConfig,
    pub container: &'a ContainerConfig,
    pub image: &'a ImageConfig,
    pub rootfs: PathBuf,
    pub pod_paths: &'a PodPaths,
    /// Host paths of the container's mounts after symlinks were resolved, in the order of
    /// `container.mounts`.
    pub mount_sources: Vec<PathBuf>,
    pub devices: Vec<ResolvedDevice>,
    /// The cgroup path of the container (`<pod cgroup>/ferrio-<id>`).
    pub cgroups_path: String,
    /// The image's /etc/passwd and /etc/group.
    pub passwd: Option<String>,
    pub group: Option<String>,
    /// The lowest oom_score_adj this host lets us set (the daemon's own, without
    /// CAP_SYS_RESOURCE).
    pub min_oom_score_adj: i32,
    /// The resolved seccomp section, when the container has a profile.
    pub seccomp: Option<Value>,
    /// The capabilities this host lets a container have (the daemon's bounding set): what
    /// `ALL` and privileged mean here.
    pub host_capabilities: Vec<String>,
    /// The security modules the host enforces; AppArmor and SELinux fields are left out of the
    /// spec where the host has no such module.
    pub lsm: crate::model::Lsm,
    /// The edits of the container's CDI devices, resolved and with their device nodes' type
    /// and numbers filled in (empty when none were requested).
    pub cdi: crate::cdi::ContainerEdits,
}

/// The `io.kubernetes.cri.*` annotations of a container's spec (the names containerd gives
/// them; CRI-O sets the same facts under its own `io.kubernetes.cri-o.*` names).
pub fn cri_annotations<'a>(
    sandbox_id: &'a str,
    pod: &'a PodConfig,
    c: &'a ContainerConfig,
) -> [(&'static str, &'a str); 7] {
    [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.sandbox-id", sandbox_id),
        ("io.kubernetes.cri.sandbox-name", &pod.name),
        ("io.kubernetes.cri.sandbox-namespace", &pod.namespace),
        ("io.kubernetes.cri.sandbox-uid", &pod.uid),
        ("io.kubernetes.cri.container-name", &c.name),
        ("io.kubernetes.cri.image-name", &c.image),
    ]
}

/// The AppArmor profile ferrio's RuntimeDefault stands for (shipped and loaded by
/// [`crate::apparmor`] on AppArmor hosts).
pub const APPARMOR_DEFAULT_PROFILE: &str = crate::apparmor::DEFAULT_PROFILE_NAME;

/// The AppArmor profile of a container, when the host has AppArmor: RuntimeDefault (also for
/// an unset request) → `ferrio-default`, Unconfined → `unconfined`, Localhost → its name.
/// Privileged containers run unconfined unless a profile is named.
pub fn apparmor_profile(sec: &crate::model::Security) -> String {
    use crate::model::Profile;
    match &sec.apparmor {
        Profile::Localhost(name) => name.clone(),
        Profile::Unconfined => "unconfined".into(),
        Profile::Unset if sec.privileged => "unconfined".into(),
        Profile::Unset | Profile::RuntimeDefault if sec.privileged => "unconfined".into(),
        Profile::Unset | Profile::RuntimeDefault => APPARMOR_DEFAULT_PROFILE.into(),
    }
}

/// The process and mount SELinux labels: the request's parts over the container defaults
/// (`system_u:system_r:container_t:s0`, files `container_file_t`); privileged containers get
/// `spc_t`, as CRI-O gives them.
pub fn selinux_labels(sec: &crate::model::Security) -> (String, String) {
    let o = sec.selinux.clone().unwrap_or_default();
    let or = |v: &str, d: &str| {
        if v.is_empty() {
            d.to_string()
        } else {
            v.to_string()
        }
    };
    let level = or(&o.level, "s0");
    let ty = if sec.privileged && o.r#type.is_empty() {
        "spc_t".to_string()
    } else {
        or(&o.r#type, "container_t")
    };
    let process = format!(
        "{}:{}:{}:{}",
        or(&o.user, "system_u"),
        or(&o.role, "system_r"),
        ty,
        level
    );
    let mount = format!("system_u:object_r:container_file_t:{level}");
    (process, mount)
}

/// The spec and the user it runs as (ContainerStatus reports the user).
pub struct Generated {
    pub spec: oci_spec::runtime::Spec,
    pub user: User,
    pub args: Vec<String>,
}

/// The `linux.resources` fields (cpu, memory, hugepages, unified) of a container's resources,
/// typed; also what UpdateContainerResources and UpdatePodSandboxResources apply. A field the
/// request leaves at zero (or empty) is left out. Values were bounded by `engine::validate`.
pub fn linux_resources(
    r: &crate::model::Resources,
) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder,
    };
    let built = |what: &str, e: oci_spec::OciSpecError| SpecError::Internal(format!("{what}: {e}"));
    let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if let Some(shares) = positive(r.cpu_shares) {
        cpu = cpu.shares(shares);
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        cpu = cpu.quota(r.cpu_quota);
        any_cpu = true;
    }
    if let Some(period) = positive(r.cpu_period) {
        cpu = cpu.period(period);
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
        any_cpu = true;
    }
    let mut out = LinuxResourcesBuilder::default();
    if any_cpu {
        out = out.cpu(cpu.build().map_err(|e| built("cpu", e))?);
    }
    if r.memory_limit_in_bytes > 0 {
        let mut mem = LinuxMemoryBuilder::default().limit(r.memory_limit_in_bytes);
        if r.memory_swap_limit_in_bytes > 0 {
            mem = mem.swap(r.memory_swap_limit_in_bytes);
        }
        out = out.memory(mem.build().map_err(|e| built("memory", e))?);
    }
    if !r.hugepage_limits.is_empty() {
        let limits = r
            .hugepage_limits
            .iter()
            .map(|(size, limit)| {
                LinuxHugepageLimitBuilder::default()
                    .page_size(size.clone())
                    .limit(i64::try_from(*limit).unwrap_or(i64::MAX))
                    .build()
                    .map_err(|e| built("hugepage limit", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out = out.hugepage_limits(limits);
    }
    if !r.unified.is_empty() {
        out = out.unified(
            r.unified
                .clone()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    out.build().map_err(|e| built("resources", e))
}

/// The process's argv per Kubernetes: `command` replaces the image's Entrypoint (and then the
/// image's Cmd is not used), `args` replaces the image's Cmd.
pub fn command_line(c: &ContainerConfig, image: &ImageConfig) -> Vec<String> {
    let (entry, args) = if !c.command.is_empty() {
        (c.command.clone(), c.args.clone())
    } else if !c.args.is_empty() {
        (image.entrypoint.clone(), c.args.clone())
    } else {
        (image.entrypoint.clone(), image.cmd.clone())
    };
    entry.into_iter().chain(args).collect()
}

/// The environment in order of first appearance, a later value of a key replacing the earlier
/// one in place; linear in the number of entries (an image may carry many).
fn merge_env(image: &[String], container: &[(String, String)], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(image.len() + container.len() + extra.len());
    let mut index: std::collections::HashMap<String, usize> =
        std::collections::HashMap::with_capacity(out.capacity());
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        match index.get(&key) {
            Some(&i) => out[i] = kv,
            None => {
                index.insert(key, out.len());
                out.push(kv);
            }
        }
    };
    for e in image {
        set(e.clone());
    }
    for (k, v) in container {
        set(format!("{k}={v}"));
    }
    for e in extra {
        set(e.clone());
    }
    out
}

/// Capability names normalised to `CAP_X`.
fn cap_name(c: &str) -> String {
    let c = c.to_ascii_uppercase();
    if c.starts_with("CAP_") || c == "ALL" {
        c
    } else {
        format!("CAP_{c}")
    }
}

/// The capabilities of a container: CRI-O's defaults with the request's adds and drops; `ALL`
/// in `add` means every capability of `host` (the daemon's bounding set: a root without
/// CAP_SYS_RESOURCE cannot grant it, as on this host).
pub fn capabilities_on(host: &[String], add: &[String], drop: &[String]) -> Vec<String> {
    let mut caps = capabilities(add, drop);
    if add.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
        let drop: Vec<String> = drop.iter().map(|c| cap_name(c)).collect();
        for c in host {
            if !caps.contains(c) && !drop.contains(c) {
                caps.push(c.clone());
            }
        }
    }
    caps
}

/// CRI-O's defaults with the request's adds and drops (`ALL` in `add` handled by
/// [`capabilities_on`]).
pub fn capabilities(add: &[String], drop: &[String]) -> Vec<String> {
    let add: Vec<String> = add.iter().map(|c| cap_name(c)).collect();
    let drop: Vec<String> = drop.iter().map(|c| cap_name(c)).collect();
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|s| s.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for c in add {
        if c != "ALL" && !caps.contains(&c) {
            caps.push(c);
        }
    }
    caps
}

fn propagation(p: Propagation) -> &'static str {
    match p {
        Propagation::Private => "rprivate",
        Propagation::HostToContainer => "rslave",
        Propagation::Bidirectional => "rshared",
    }
}

pub fn generate(inp: &Input) -> Result<Generated, SpecError> {
    let c = inp.container;
    let pod = inp.pod;
    let sec = &c.security;
    let args = command_line(c, inp.image);
    if args.is_empty() {
        return Err(SpecError::Invalid(
            "no command: the container config and the image give none".into(),
        ));
    }
    let user = user::resolve(
        &user::UserRequest {
            run_as_user: sec.run_as_user,
            run_as_group: sec.run_as_group,
            run_as_username: &sec.run_as_username,
            supplemental: &sec.supplemental_groups,
            strict: sec.supplemental_groups_strict,
            image_user: &inp.image.user,
        },
        inp.passwd.as_deref(),
        inp.group.as_deref(),
    )?;
    cdi::check_supported(&inp.cdi)?;
    let mut user = user;
    cdi::add_gids(&mut user.additional_gids, &inp.cdi);

    let mut extra_env = Vec::new();
    if pod.network != NamespaceMode::Node && !pod.hostname.is_empty() {
        extra_env.push(format!("HOSTNAME={}", pod.hostname));
    }
    // CDI's env comes last: it wins over the image's and the request's, as in CRI-O.
    extra_env.extend(inp.cdi.env.iter().cloned());
    let mut env = merge_env(&inp.image.env, &c.envs, &extra_env);
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    // An empty HOME counts as none: libcontainer would look the user up in the container's
    // passwd database right before exec, running the image's NSS modules inside ferrio.
    env.retain(|e| e != "HOME=");
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!(
            "HOME={}",
            user.home
                .as_deref()
                .filter(|h| !h.is_empty())
                .unwrap_or("/")
        ));
    }
    let cwd = [c.working_dir.as_str(), inp.image.working_dir.as_str()]
        .into_iter()
        .find(|w| !w.is_empty())
        .unwrap_or("/")
        .to_string();
    if !cwd.starts_with('/') {
        return Err(SpecError::Invalid(format!(
            "working_dir {cwd:?} is not absolute"
        )));
    }

    let caps = if sec.privileged {
        inp.host_capabilities.clone()
    } else {
        capabilities_on(
            &inp.host_capabilities,
            &sec.capabilities_add,
            &sec.capabilities_drop,
        )
    };
    let ambient: Vec<String> = sec
        .capabilities_ambient
        .iter()
        .map(|c| cap_name(c))
        .collect();
    if let Some(missing) = ambient.iter().find(|c| !caps.contains(c)) {
        return Err(SpecError::Invalid(format!(
            "ambient capability {missing} is not among the container's capabilities"
        )));
    }
    let mut process = json!({
        "terminal": c.tty,
        "user": {
            "uid": user.uid,
            "gid": user.gid,
            "additionalGids": user.additional_gids,
        },
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
        },
    });
    if !ambient.is_empty() {
        process["capabilities"]["ambient"] = json!(ambient);
        process["capabilities"]["inheritable"] = json!(ambient);
    }
    // Only written when set: libcontainer loads seccomp after dropping capabilities whenever
    // the field is present (even false), which fails for a non-root user without it.
    if sec.no_new_privs {
        process["noNewPrivileges"] = json!(true);
    }
    // Always written, 0 when the request has none (as CRI-O): without it the init would inherit
    // the monitor's score, which is the daemon's OOM protection (the unit's -999).
    let adj = c.resources.as_ref().map_or(0, |r| r.oom_score_adj);
    process["oomScoreAdj"] = json!(i32::try_from(adj.clamp(-1000, 1000))
        .unwrap_or(0)
        .max(inp.min_oom_score_adj));
    if inp.lsm.apparmor {
        process["apparmorProfile"] = json!(apparmor_profile(sec));
    }
    if inp.lsm.selinux {
        process["selinuxLabel"] = json!(selinux_labels(sec).0);
    }
    if user.additional_gids.is_empty() {
        process["user"]
            .as_object_mut()
            .map(|u| u.remove("additionalGids"));
    }

    // Mounts: the defaults, then the pod's files, then the request's (which win on the same
    // destination).
    let mut mounts: Vec<Value> = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if sec.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if sec.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/dev/shm", "type": "bind", "source": inp.pod_paths.shm, "options": ["rbind", "nosuid", "noexec", "nodev"]}),
        json!({"destination": "/etc/resolv.conf", "type": "bind", "source": inp.pod_paths.resolv_conf, "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev"]}),
    ];
    if let Some(h) = &inp.pod_paths.hostname_file {
        mounts.push(json!({"destination": "/etc/hostname", "type": "bind", "source": h, "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev"]}));
    }
    for (m, src) in c.mounts.iter().zip(&inp.mount_sources) {
        if !m.container_path.starts_with('/') {
            return Err(SpecError::Invalid(format!(
                "mount container_path {:?} is not absolute",
                m.container_path
            )));
        }
        let dest = m.container_path.trim_end_matches('/');
        let dest = if dest.is_empty() { "/" } else { dest };
        mounts.retain(|x| x["destination"] != dest);
        let mut opts = vec!["rbind", propagation(m.propagation)];
        if m.readonly || !m.image.is_empty() {
            opts.push("ro");
        }
        if m.recursive_read_only {
            opts.push("rro");
        }
        mounts.push(json!({"destination": dest, "type": "bind", "source": src, "options": opts}));
    }
    cdi::add_mounts(&mut mounts, &inp.cdi);

    let mut namespaces = vec![json!({"type": "mount"})];
    match sec.pid {
        NamespaceMode::Node => {}
        NamespaceMode::Pod => match &inp.pod_paths.pid_ns {
            Some(p) => namespaces.push(json!({"type": "pid", "path": p})),
            None => namespaces.push(json!({"type": "pid"})),
        },
        NamespaceMode::Container => namespaces.push(json!({"type": "pid"})),
        NamespaceMode::Target => {
            return Err(SpecError::Invalid(
                "pid namespace mode TARGET is not supported yet".into(),
            ))
        }
    }
    // The pod's user namespace comes first: the others were made inside it.
    if let Some(p) = &inp.pod_paths.user_ns {
        namespaces.insert(0, json!({"type": "user", "path": p}));
    }
    for (kind, path) in [
        ("network", &inp.pod_paths.net_ns),
        ("ipc", &inp.pod_paths.ipc_ns),
        ("uts", &inp.pod_paths.uts_ns),
    ] {
        if let Some(p) = path {
            namespaces.push(json!({"type": kind, "path": p}));
        }
    }

    let mut resources = json!({
        "devices": [{"allow": sec.privileged, "access": "rwm"}],
    });
    let mut devices = Vec::new();
    for d in &inp.devices {
        devices.push(json!({
            "path": d.container_path, "type": d.kind, "major": d.major, "minor": d.minor,
            "fileMode": d.file_mode, "uid": 0, "gid": 0,
        }));
        if let Some(a) = resources["devices"].as_array_mut() {
            a.push(json!({"allow": true, "type": d.kind, "major": d.major, "minor": d.minor, "access": d.permissions}));
        }
    }
    if let Some(rules) = resources["devices"].as_array_mut() {
        cdi::add_devices(&mut devices, rules, &inp.cdi, user.uid, user.gid)?;
    }
    if let Some(r) = &c.resources {
        let typed = serde_json::to_value(linux_resources(r)?)
            .map_err(|e| SpecError::Internal(format!("resources: {e}")))?;
        if let (Some(dst), Value::Object(src)) = (resources.as_object_mut(), typed) {
            dst.extend(src);
        }
    }

    let masked: Vec<String> = if sec.privileged {
        Vec::new()
    } else if sec.masked_paths.is_empty() {
        DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect()
    } else {
        sec.masked_paths.clone()
    };
    let readonly: Vec<String> = if sec.privileged {
        Vec::new()
    } else if sec.readonly_paths.is_empty() {
        DEFAULT_READONLY_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        sec.readonly_paths.clone()
    };

    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": inp.cgroups_path,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    });
    if !devices.is_empty() {
        linux["devices"] = json!(devices);
    }
    if let (Some((u, g)), Some(_)) = (inp.pod.user_namespace(), &inp.pod_paths.user_ns) {
        // Not written by a runtime that joins the namespace by path, but runc checks that
        // container root is mapped.
        let map = |m: crate::model::IdMapping| json!([{"containerID": m.container_id, "hostID": m.host_id, "size": m.length}]);
        linux["uidMappings"] = map(u);
        linux["gidMappings"] = map(g);
    }
    if let Some(s) = &inp.seccomp {
        linux["seccomp"] = s.clone();
    }
    if inp.lsm.selinux {
        linux["mountLabel"] = json!(selinux_labels(sec).1);
    }

    let mut annotations: serde_json::Map<String, Value> = c
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    // The standard CRI annotations (containerd's names) that hooks, gVisor and security agents
    // read; set after the request's own, so a request cannot forge them.
    for (k, v) in cri_annotations(inp.sandbox_id, inp.pod, c) {
        annotations.insert(k.to_string(), json!(v));
    }
    // A Bidirectional mount needs the container's whole mount tree shared, or what it mounts
    // in the volume never reaches the host (a runtime makes `/` a slave by default);
    // HostToContainer needs it a slave at least (CRI-O's rule; the OCI values have no `r`,
    // which libcontainer insists on and runc and crun take).
    if c.mounts
        .iter()
        .any(|m| m.propagation == Propagation::Bidirectional)
    {
        linux["rootfsPropagation"] = json!("shared");
    } else if c
        .mounts
        .iter()
        .any(|m| m.propagation == Propagation::HostToContainer)
    {
        linux["rootfsPropagation"] = json!("slave");
    }
    let mut doc = json!({
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": inp.rootfs, "readonly": sec.readonly_rootfs},
        "mounts": mounts,
        "annotations": annotations,
        "linux": linux,
    });
    if let Some(hooks) = cdi::hooks(&inp.cdi)? {
        doc["hooks"] = hooks;
    }
    let spec: oci_spec::runtime::Spec =
        serde_json::from_value(doc).map_err(|e| SpecError::Internal(e.to_string()))?;
    Ok(Generated {
        spec,
        user,
        args: command_line(c, inp.image),
    })
}

#[cfg(test)]
mod tests;
