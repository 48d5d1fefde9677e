//! The domain's view of a pod's and a container's configuration: what `cri/` converts the CRI
//! request into, what the spec generator reads, and what the state records keep. No prost types.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Who owns a namespace (the CRI's NamespaceMode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    /// Shared by the pod's containers.
    #[default]
    Pod,
    /// The container's own.
    Container,
    /// The host's.
    Node,
    /// Another container's (pid only).
    Target,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodConfig {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub hostname: String,
    pub log_directory: String,
    pub dns: Option<Dns>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub cgroup_parent: String,
    pub sysctls: BTreeMap<String, String>,
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
    pub privileged: bool,
    /// hostPort mappings for the CNI portmap plugin.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// `namespace_options.userns_options` as asked (checked by the engine's validation).
    #[serde(default)]
    pub userns: Option<UserNamespace>,
}

impl PodConfig {
    /// The pod's own user namespace: its uid and gid mapping (mode POD, validated).
    pub fn user_namespace(&self) -> Option<(IdMapping, IdMapping)> {
        match &self.userns {
            Some(u) if u.mode == NamespaceMode::Pod => Some((*u.uids.first()?, *u.gids.first()?)),
            _ => None,
        }
    }
}

/// `UserNamespace` of the CRI: the mode and the mappings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    pub mode: NamespaceMode,
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

/// One id mapping: `length` ids from `container_id` inside are `host_id` outside (a line of
/// /proc/<pid>/uid_map).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMapping {
    /// The host id of a container id, when mapped.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.container_id)?;
        (off < self.length).then(|| self.host_id + off)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// "tcp", "udp" or "sctp"
    pub protocol: String,
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    #[default]
    Private,
    HostToContainer,
    Bidirectional,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: Propagation,
    /// Read-only all the way down (mount_setattr with AT_RECURSIVE): submounts too.
    #[serde(default)]
    pub recursive_read_only: bool,
    /// An image volume: this image, mounted read-only (`host_path` unused).
    #[serde(default)]
    pub image: String,
    /// With `image`: the path inside the image to mount.
    #[serde(default)]
    pub image_sub_path: String,
    /// With `image`: the image's ID, as resolved at creation (reported in ContainerStatus).
    #[serde(default)]
    pub image_id: String,
    /// An idmapped mount: files owned by `container_id` on the source appear owned by
    /// `host_id` (the OCI mount `uidMappings`/`gidMappings`).
    #[serde(default)]
    pub uid_mappings: Vec<IdMapping>,
    #[serde(default)]
    pub gid_mappings: Vec<IdMapping>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub container_path: String,
    pub host_path: String,
    pub permissions: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// (page size such as "2MB", limit in bytes)
    pub hugepage_limits: Vec<(String, u64)>,
    pub unified: BTreeMap<String, String>,
    pub memory_swap_limit_in_bytes: i64,
}

/// A seccomp or AppArmor profile request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "ref")]
pub enum Profile {
    /// The request named no profile: the runtime's configured default applies.
    #[default]
    Unset,
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelinuxOptions {
    pub user: String,
    pub role: String,
    pub r#type: String,
    pub level: String,
}

/// The Linux security modules this host has: AppArmor and SELinux fields only do something
/// where the kernel enforces them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lsm {
    pub apparmor: bool,
    pub selinux: bool,
}

impl Lsm {
    /// What this host's kernel offers.
    pub fn detect() -> Lsm {
        Lsm {
            apparmor: std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
                .is_ok_and(|s| s.trim() == "Y"),
            selinux: std::path::Path::new("/sys/fs/selinux/enforce").exists(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Security {
    pub privileged: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: String,
    pub supplemental_groups: Vec<i64>,
    pub readonly_rootfs: bool,
    pub no_new_privs: bool,
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    #[serde(default)]
    pub capabilities_ambient: Vec<String>,
    /// SupplementalGroupsPolicy Strict: only the request's groups, not the image's /etc/group.
    #[serde(default)]
    pub supplemental_groups_strict: bool,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub seccomp: Profile,
    /// AppArmor profile (Localhost names a loaded profile).
    #[serde(default)]
    pub apparmor: Profile,
    /// SELinux label parts; empty parts take the runtime's defaults.
    #[serde(default)]
    pub selinux: Option<SelinuxOptions>,
    pub pid: NamespaceMode,
    pub target_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub name: String,
    pub attempt: u32,
    /// The image as the request named it.
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub envs: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    /// Fully qualified CDI device names (`vendor.com/class=name`) from `cdi_devices`; the
    /// `cdi.k8s.io/*` annotations are read by the engine, not converted into this list.
    #[serde(default)]
    pub cdi_devices: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub resources: Option<Resources>,
    pub security: Security,
    /// A signal name such as `SIGTERM`; empty means the image's STOPSIGNAL, else SIGTERM.
    pub stop_signal: String,
}

/// What the spec needs of the image's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
}

impl ImageConfig {
    /// Reads the fields from an OCI image config JSON document.
    pub fn from_json(v: &serde_json::Value) -> ImageConfig {
        let c = &v["config"];
        let strings = |x: &serde_json::Value| -> Vec<String> {
            x.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        ImageConfig {
            env: strings(&c["Env"]),
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            working_dir: c["WorkingDir"].as_str().unwrap_or("").to_string(),
            user: c["User"].as_str().unwrap_or("").to_string(),
            stop_signal: c["StopSignal"].as_str().unwrap_or("").to_string(),
        }
    }
}

/// A host device resolved by the engine (stat of `host_path`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedDevice {
    pub container_path: String,
    /// "c" or "b"
    pub kind: String,
    pub major: i64,
    pub minor: i64,
    pub file_mode: u32,
    pub permissions: String,
}

/// Paths on the host that the pod provides to its containers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodPaths {
    pub net_ns: Option<PathBuf>,
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    /// The pinned PID namespace (`ns/pid`) when the pod shares one (its PID 1 is the pause).
    pub pid_ns: Option<PathBuf>,
    pub shm: PathBuf,
    pub hostname_file: Option<PathBuf>,
    pub resolv_conf: PathBuf,
    /// The pinned user namespace of a pod with its own (mode POD).
    #[serde(default)]
    pub user_ns: Option<PathBuf>,
    /// The image layer store, idmapped for the pod's user namespace: its containers' lower
    /// layers are taken from here.
    #[serde(default)]
    pub idmapped_layers: Option<PathBuf>,
}
