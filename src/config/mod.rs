//! ferrio's configuration: `/etc/ferrio/ferrio.toml` plus drop-ins in `/etc/ferrio/ferrio.d/*.toml`.
//!
//! Every option has a default, all of them in the one [`Default`] impl below; unknown keys are
//! rejected with the key and the file named. Drop-ins are applied in name order; a table in a
//! drop-in is merged key by key into the tables before it.

mod template;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use template::default_toml;

/// The default main config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ferrio/ferrio.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent state: images, container and pod records.
    pub root: PathBuf,
    /// Runtime state: sockets, bundles, pinned namespaces (tmpfs).
    pub run_root: PathBuf,
    /// error, warn, info, debug, trace, or a tracing filter such as `ferrio=debug,info`.
    pub log_level: String,
    pub api: ApiConfig,
    pub runtime: RuntimeConfig,
    pub image: ImageConfig,
    pub streaming: StreamingConfig,
    pub network: NetworkConfig,
    pub metrics: MetricsConfig,
    pub nri: NriConfig,
}

/// NRI plugins (the Node Resource Interface), on by default as in CRI-O and containerd 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NriConfig {
    /// Run NRI at all.
    pub enable: bool,
    /// The unix socket external plugins connect to.
    pub socket_path: PathBuf,
    /// Pre-installed plugins (`NN-name` executables) ferrio starts itself.
    pub plugin_path: PathBuf,
    /// Their configs: `NN-name.conf` or `name.conf`.
    pub plugin_config_path: PathBuf,
    /// How long a plugin may take to register ("5s", "500ms").
    pub plugin_registration_timeout: String,
    /// How long a plugin may take to answer one event.
    pub plugin_request_timeout: String,
    /// Accept no external plugins (pre-installed ones still start).
    pub disable_connections: bool,
    /// NRI's default validator, built in.
    pub default_validator: DefaultValidatorConfig,
}

/// NRI's default validator: refuses creates whose plugin adjustments add OCI hooks, or that
/// lack a required plugin (see `nri/validate.rs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultValidatorConfig {
    pub enable: bool,
    /// Refuse adjustments that add OCI hooks.
    pub reject_oci_hook_adjustment: bool,
    /// Refuse seccomp policy adjustments of containers whose profile is RuntimeDefault, is
    /// Unconfined (or unset), or is a Localhost profile.
    pub reject_runtime_default_seccomp_adjustment: bool,
    pub reject_unconfined_seccomp_adjustment: bool,
    pub reject_custom_seccomp_adjustment: bool,
    /// Refuse namespace adjustments.
    pub reject_namespace_adjustment: bool,
    /// Refuse sysctl adjustments.
    pub reject_sysctl_adjustment: bool,
    /// Plugins (name or NN-name) every container needs.
    pub required_plugins: Vec<String>,
    /// A pod annotation that, set to "true", waives the required plugins.
    pub tolerate_missing_plugins_annotation: String,
}

impl Default for NriConfig {
    fn default() -> Self {
        Config::default().nri
    }
}

impl NriConfig {
    pub fn registration_timeout(&self) -> std::time::Duration {
        parse_duration(&self.plugin_registration_timeout)
            .unwrap_or(std::time::Duration::from_secs(5))
    }

    pub fn request_timeout(&self) -> std::time::Duration {
        parse_duration(&self.plugin_request_timeout).unwrap_or(std::time::Duration::from_secs(2))
    }
}

/// A duration such as "5s", "500ms", "1.5s" or "2m" (a positive number and a unit).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.trim().parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    (secs.is_finite() && secs > 0.0 && secs <= 3600.0)
        .then(|| std::time::Duration::from_secs_f64(secs))
}

/// The Prometheus metrics endpoint (`GET /metrics`), off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve the metrics at all.
    pub enable: bool,
    /// TCP address (`host:port`) of the HTTP endpoint.
    pub address: std::net::SocketAddr,
}

/// CNI pod networking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Where CNI network configs (`.conflist`, `.conf`, `.json`) are read from.
    pub network_dir: PathBuf,
    /// Where CNI plugin binaries are looked for, in order (also `CNI_PATH`).
    pub plugin_dirs: Vec<PathBuf>,
    /// The network pods are attached to (its `name`); empty: the first config file by name.
    pub default_network: String,
    /// Cached CNI results (for DEL after a restart); empty: `<root>/cni`.
    pub cache_dir: PathBuf,
    /// Seconds one CNI plugin may run before it is killed.
    pub plugin_timeout: u64,
}

/// The HTTP server behind Exec, Attach and PortForward URLs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// The address it listens on.
    pub address: String,
    /// Its port; 0 picks a free one at start.
    pub port: u16,
    /// Seconds an Exec/Attach/PortForward URL stays valid (each is single-use).
    pub token_ttl: u64,
    /// Seconds a session may pass without traffic before it is closed; 0 never.
    pub idle_timeout: u64,
    /// PEM certificate chain and private key: serve HTTPS. Both empty: plain HTTP.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Config::default().streaming
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The CRI socket; empty means `<run_root>/ferrio.sock`.
    pub listen: PathBuf,
    pub grpc_max_recv_msg_size: usize,
    pub grpc_max_send_msg_size: usize,
    /// Seconds that in-flight RPCs get to finish on SIGTERM/SIGINT before they are cancelled.
    pub shutdown_timeout: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// The cgroup driver reported to kubelet in RuntimeConfig.
    pub cgroup_driver: CgroupDriver,
    /// The handler used when RunPodSandbox names none.
    pub default_runtime: String,
    /// Runtime handlers by name (RunPodSandbox's `runtime_handler`).
    pub runtimes: std::collections::BTreeMap<String, RuntimeHandler>,
    /// The parent cgroup of pods whose request gives none.
    pub default_cgroup_parent: String,
    /// Size of a pod's /dev/shm tmpfs, in bytes.
    pub shm_size: u64,
    /// Host paths that a container mount may not create when they are missing (the path
    /// itself or anything below it).
    pub absent_mount_sources_to_reject: Vec<PathBuf>,
    /// Containers whose request names no seccomp profile get RuntimeDefault (true) or run
    /// unconfined (false, the default: as CRI-O and containerd; kubelet always names one,
    /// RuntimeDefault with its `seccompDefault`, else Unconfined).
    pub seccomp_use_default_when_empty: bool,
    /// A seccomp profile file (containers/moby JSON) for privileged containers. Empty (the
    /// default): privileged containers run without seccomp whatever profile they name, as with
    /// CRI-O's `privileged_seccomp_profile`.
    pub privileged_seccomp_profile: PathBuf,
    /// Directories of Container Device Interface spec files (`*.json`, `*.yaml`, `*.yml`);
    /// a device defined in a later directory overrides the same device in an earlier one.
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// Block I/O classes (goresctrl's blockio format, as CRI-O's and containerd's
    /// `blockio_config_file`): what an NRI plugin's `blockio_class` and the annotations
    /// `io.kubernetes.cri.blockio-class` (container) and
    /// `blockio.resources.beta.kubernetes.io/{pod,container.<name>}` (pod) select. Empty (the
    /// default): no classes; annotations are ignored and a plugin's class is refused.
    pub blockio_config_file: PathBuf,
    /// The CRIU binary CheckpointContainer runs (a name is looked up in PATH). CRIU 3.17
    /// works with kernels up to 6.1's vDSO layout; newer kernels need CRIU 4.
    pub criu_path: PathBuf,
}

/// One runtime handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeHandler {
    /// "builtin": youki's libcontainer inside ferrio; "oci": an OCI runtime CLI (runc, crun).
    pub runtime_type: String,
    /// The OCI runtime binary (for "oci").
    pub runtime_path: PathBuf,
    /// The runtime's state directory; empty: `<run_root>/runtimes/<name>`.
    pub runtime_root: PathBuf,
}

impl Default for RuntimeHandler {
    fn default() -> Self {
        RuntimeHandler {
            runtime_type: "builtin".into(),
            runtime_path: PathBuf::new(),
            runtime_root: PathBuf::new(),
        }
    }
}

fn default_runtimes() -> std::collections::BTreeMap<String, RuntimeHandler> {
    let oci = |p: &str| RuntimeHandler {
        runtime_type: "oci".into(),
        runtime_path: PathBuf::from(p),
        runtime_root: PathBuf::new(),
    };
    [
        ("ferrio".to_string(), RuntimeHandler::default()),
        ("runc".to_string(), oci("/usr/sbin/runc")),
        ("crun".to_string(), oci("/usr/bin/crun")),
    ]
    .into_iter()
    .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// A containers-registries.conf(5) v2 file: prefixes, locations, mirrors, insecure, blocked.
    /// A missing file means no rules.
    pub registries_conf: PathBuf,
    /// An auth file in the `{"auths": {...}}` format; empty means none.
    pub global_auth_file: PathBuf,
    /// Registries (host[:port]; a host without a port means all its ports) reached over plain
    /// HTTP, in addition to those marked insecure in registries.conf.
    pub insecure_registries: Vec<String>,
    /// Layers downloaded at once, across all pulls.
    pub max_concurrent_downloads: usize,
    /// Seconds a pull may go without receiving a byte before it is aborted; 0 disables.
    pub pull_progress_timeout: u64,
    /// Archives (OCI archive or docker-save tarballs) imported once at start; empty means
    /// `<root>/import`.
    pub import_dir: PathBuf,
    /// Images kubelet's image GC must keep (`Image.pinned`): exact names, `prefix*`,
    /// `*keyword*` (case-insensitive, as CRI-O's). Images from the import dir are pinned too.
    pub pinned_images: Vec<String>,
    /// How a short name (no registry) resolves: `enforcing`, `permissive` or `disabled`, as
    /// CRI-O's `short_name_mode`; empty: registries.conf's `short-name-mode`, else enforcing.
    pub short_name_mode: String,
    /// containers-certs.d(5): `<dir>/<host[:port]>/` holds `*.crt` CA certificates and a
    /// `*.cert`/`*.key` client certificate for that registry. Read for every pull.
    pub certs_dir: PathBuf,
    /// containers-policy.json(5): which images may be pulled and run, checked at PullImage and
    /// again at CreateContainer. A missing file: every image is accepted (a warning at start).
    pub signature_policy: PathBuf,
    /// Per-namespace policies, CRI-O's `signature_policy_dir`: `<dir>/<namespace>.json` applies
    /// to pulls and creates for pods of that Kubernetes namespace instead of `signature_policy`.
    pub signature_policy_dir: PathBuf,
    /// containers-registries.d(5): where signatures of a repository live; ferrio reads
    /// `use-sigstore-attachments` (sigstore signatures stored in the registry, as cosign does)
    /// and `lookaside`/`sigstore` (simple signatures: `file://`, `http://`, `https://`).
    pub registries_d: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/ferrio"),
            run_root: PathBuf::from("/run/ferrio"),
            log_level: "info".into(),
            api: ApiConfig {
                listen: PathBuf::new(),
                grpc_max_recv_msg_size: 80 * 1024 * 1024,
                grpc_max_send_msg_size: 80 * 1024 * 1024,
                shutdown_timeout: 10,
            },
            runtime: RuntimeConfig {
                cgroup_driver: CgroupDriver::Cgroupfs,
                default_runtime: "ferrio".into(),
                runtimes: default_runtimes(),
                default_cgroup_parent: "/ferrio".into(),
                shm_size: 64 * 1024 * 1024,
                absent_mount_sources_to_reject: vec![
                    PathBuf::from("/proc"),
                    PathBuf::from("/sys"),
                    PathBuf::from("/dev"),
                ],
                seccomp_use_default_when_empty: false,
                privileged_seccomp_profile: PathBuf::new(),
                cdi_spec_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
                blockio_config_file: PathBuf::new(),
                criu_path: PathBuf::from("criu"),
            },
            streaming: StreamingConfig {
                address: "127.0.0.1".into(),
                port: 0,
                token_ttl: 60,
                idle_timeout: 4 * 3600,
                tls_cert: PathBuf::new(),
                tls_key: PathBuf::new(),
            },
            image: ImageConfig {
                registries_conf: PathBuf::from("/etc/containers/registries.conf"),
                global_auth_file: PathBuf::new(),
                insecure_registries: Vec::new(),
                max_concurrent_downloads: 3,
                pull_progress_timeout: 60,
                import_dir: PathBuf::new(),
                pinned_images: Vec::new(),
                short_name_mode: String::new(),
                certs_dir: PathBuf::from("/etc/containers/certs.d"),
                signature_policy: PathBuf::from("/etc/containers/policy.json"),
                signature_policy_dir: PathBuf::from("/etc/ferrio/policies"),
                registries_d: PathBuf::from("/etc/containers/registries.d"),
            },
            network: NetworkConfig {
                network_dir: PathBuf::from("/etc/cni/net.d"),
                plugin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
                default_network: String::new(),
                cache_dir: PathBuf::new(),
                plugin_timeout: 60,
            },
            metrics: MetricsConfig {
                enable: false,
                address: std::net::SocketAddr::from(([127, 0, 0, 1], 9090)),
            },
            nri: NriConfig {
                enable: true,
                socket_path: PathBuf::from("/var/run/nri/nri.sock"),
                plugin_path: PathBuf::from("/opt/nri/plugins"),
                plugin_config_path: PathBuf::from("/etc/nri/conf.d"),
                plugin_registration_timeout: "5s".into(),
                plugin_request_timeout: "2s".into(),
                disable_connections: false,
                default_validator: DefaultValidatorConfig::default(),
            },
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Config::default().api
    }
}
impl Default for RuntimeConfig {
    fn default() -> Self {
        Config::default().runtime
    }
}
impl Default for ImageConfig {
    fn default() -> Self {
        Config::default().image
    }
}
impl Default for NetworkConfig {
    fn default() -> Self {
        Config::default().network
    }
}
impl Default for MetricsConfig {
    fn default() -> Self {
        Config::default().metrics
    }
}

impl Config {
    /// Loads the main file and its drop-in directory (`<dir>/<stem>.d/*.toml`).
    /// With `path == None` the default file is used and may be absent; an explicit path must exist.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (main, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let mut files = Vec::new();
        if main.exists() || required {
            files.push(main.clone());
        }
        let dropin = dropin_dir(&main);
        if let Ok(rd) = std::fs::read_dir(&dropin) {
            let mut extra: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            extra.sort();
            files.extend(extra);
        }
        let mut merged = toml::Table::new();
        for f in &files {
            let text = std::fs::read_to_string(f).map_err(|source| ConfigError::Read {
                path: f.clone(),
                source,
            })?;
            let table = parse_file(f, &text)?;
            merge(&mut merged, table);
        }
        let cfg: Config =
            Config::deserialize(toml::Value::Table(merged)).map_err(|e| ConfigError::Parse {
                path: main.clone(),
                message: e.to_string(),
            })?;
        let cfg = cfg.complete();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses one TOML document (used by tests and `load`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let table = parse_file(Path::new("<string>"), text)?;
        let cfg =
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                path: PathBuf::from("<string>"),
                message: e.to_string(),
            })?;
        let cfg = cfg.complete();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Handlers from the config file are added to the built-in ones (ferrio, runc, crun).
    fn complete(mut self) -> Config {
        for (name, h) in default_runtimes() {
            self.runtime.runtimes.entry(name).or_insert(h);
        }
        self
    }

    /// The state directory of a runtime handler.
    pub fn runtime_root(&self, name: &str) -> Option<PathBuf> {
        let h = self.runtime.runtimes.get(name)?;
        Some(if h.runtime_root.as_os_str().is_empty() {
            self.run_root.join("runtimes").join(name)
        } else {
            h.runtime_root.clone()
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.image.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid(
                "image.max_concurrent_downloads must be at least 1".into(),
            ));
        }
        if !self
            .runtime
            .runtimes
            .contains_key(&self.runtime.default_runtime)
        {
            return Err(ConfigError::Invalid(format!(
                "runtime.default_runtime {:?} is not one of runtime.runtimes",
                self.runtime.default_runtime
            )));
        }
        for (name, h) in &self.runtime.runtimes {
            match h.runtime_type.as_str() {
                "builtin" => {}
                "oci" if h.runtime_path.is_absolute() => {}
                "oci" => {
                    return Err(ConfigError::Invalid(format!(
                        "runtime.runtimes.{name}.runtime_path must be an absolute path"
                    )))
                }
                t => {
                    return Err(ConfigError::Invalid(format!(
                        "runtime.runtimes.{name}.runtime_type {t:?} is not \"builtin\" or \"oci\""
                    )))
                }
            }
        }
        let privileged = &self.runtime.privileged_seccomp_profile;
        if !privileged.as_os_str().is_empty() && !privileged.is_absolute() {
            return Err(ConfigError::Invalid(
                "runtime.privileged_seccomp_profile must be an absolute path".into(),
            ));
        }
        for (key, v) in [
            (
                "nri.plugin_registration_timeout",
                &self.nri.plugin_registration_timeout,
            ),
            (
                "nri.plugin_request_timeout",
                &self.nri.plugin_request_timeout,
            ),
        ] {
            if parse_duration(v).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "{key} {v:?} is not a duration such as \"2s\" or \"500ms\" (at most 1 hour)"
                )));
            }
        }
        if [
            &self.nri.socket_path,
            &self.nri.plugin_path,
            &self.nri.plugin_config_path,
        ]
        .iter()
        .any(|p| !p.is_absolute())
        {
            return Err(ConfigError::Invalid(
                "nri.socket_path, nri.plugin_path and nri.plugin_config_path must be absolute paths"
                    .into(),
            ));
        }
        if self.network.plugin_timeout == 0 {
            return Err(ConfigError::Invalid(
                "network.plugin_timeout must be at least 1".into(),
            ));
        }
        if !self.network.network_dir.is_absolute()
            || self.network.plugin_dirs.iter().any(|d| !d.is_absolute())
        {
            return Err(ConfigError::Invalid(
                "network.network_dir and network.plugin_dirs must be absolute paths".into(),
            ));
        }
        if !self.root.is_absolute() || !self.run_root.is_absolute() {
            return Err(ConfigError::Invalid(
                "root and run_root must be absolute paths".into(),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(ConfigError::Invalid(format!(
                "log_level {:?} is not a level or a tracing filter",
                self.log_level
            )));
        }
        Ok(())
    }

    /// The CRI socket path.
    pub fn socket_path(&self) -> PathBuf {
        if self.api.listen.as_os_str().is_empty() {
            self.run_root.join("ferrio.sock")
        } else {
            self.api.listen.clone()
        }
    }

    /// The directory whose archives are imported once at start.
    pub fn import_dir(&self) -> PathBuf {
        if self.image.import_dir.as_os_str().is_empty() {
            self.root.join("import")
        } else {
            self.image.import_dir.clone()
        }
    }

    /// The CNI result cache directory.
    pub fn cni_cache_dir(&self) -> PathBuf {
        if self.network.cache_dir.as_os_str().is_empty() {
            self.root.join("cni")
        } else {
            self.network.cache_dir.clone()
        }
    }

    /// The image store directory.
    pub fn image_dir(&self) -> PathBuf {
        self.root.join("images")
    }
}

fn dropin_dir(main: &Path) -> PathBuf {
    let stem = main
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ferrio".into());
    main.parent()
        .unwrap_or(Path::new("/"))
        .join(format!("{stem}.d"))
}

/// Parses one file and checks it on its own, so an unknown key or a wrong type is reported with
/// the file (and line) it is in.
fn parse_file(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    let parse_err = |message: String| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let table: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
    toml::from_str::<Config>(text).map_err(|e| parse_err(e.to_string()))?;
    Ok(table)
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_default_parses_to_the_default() {
        let cfg = Config::from_toml(&default_toml()).unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[image]\nmax_concurent_downloads = 4\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("max_concurent_downloads"), "{msg}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let err = Config::from_toml("[image]\npull_progress_timeout = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("pull_progress_timeout"), "{err}");
    }

    #[test]
    fn empty_file_gives_defaults_and_derived_paths() {
        let cfg = Config::from_toml("").unwrap();
        assert_eq!(cfg.socket_path(), PathBuf::from("/run/ferrio/ferrio.sock"));
        assert_eq!(cfg.import_dir(), PathBuf::from("/var/lib/ferrio/import"));
        assert_eq!(cfg.cni_cache_dir(), PathBuf::from("/var/lib/ferrio/cni"));
        assert_eq!(cfg.network.network_dir, PathBuf::from("/etc/cni/net.d"));
    }

    #[test]
    fn zero_downloads_rejected() {
        assert!(Config::from_toml("[image]\nmax_concurrent_downloads = 0\n").is_err());
    }

    #[test]
    fn dropins_merge_key_by_key_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("ferrio.toml");
        std::fs::write(
            &main,
            "log_level = \"debug\"\n[image]\npull_progress_timeout = 5\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("ferrio.d")).unwrap();
        std::fs::write(
            dir.path().join("ferrio.d/20-b.toml"),
            "[image]\nmax_concurrent_downloads = 7\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("ferrio.d/10-a.toml"),
            "[image]\nmax_concurrent_downloads = 2\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("ferrio.d/ignored.txt"), "garbage").unwrap();
        let cfg = Config::load(Some(&main)).unwrap();
        assert_eq!(cfg.log_level, "debug");
        assert_eq!(cfg.image.pull_progress_timeout, 5);
        assert_eq!(cfg.image.max_concurrent_downloads, 7);
    }

    #[test]
    fn dropin_with_unknown_key_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("ferrio.toml");
        std::fs::write(&main, "").unwrap();
        std::fs::create_dir(dir.path().join("ferrio.d")).unwrap();
        std::fs::write(
            dir.path().join("ferrio.d/x.toml"),
            "[api]\nlisten_addr = \"/x\"\n",
        )
        .unwrap();
        let msg = Config::load(Some(&main)).unwrap_err().to_string();
        assert!(
            msg.contains("x.toml") && msg.contains("listen_addr"),
            "{msg}"
        );
    }

    #[test]
    fn metrics_off_by_default_and_configurable() {
        let cfg = Config::from_toml("").unwrap();
        assert!(!cfg.metrics.enable);
        assert_eq!(cfg.metrics.address.to_string(), "127.0.0.1:9090");
        let cfg =
            Config::from_toml("[metrics]\nenable = true\naddress = \"[::1]:9191\"\n").unwrap();
        assert!(cfg.metrics.enable);
        assert_eq!(cfg.metrics.address.to_string(), "[::1]:9191");
        let err = Config::from_toml("[metrics]\naddress = \"localhost\"\n").unwrap_err();
        assert!(err.to_string().contains("address"), "{err}");
        let err = Config::from_toml("[metrics]\nport = 1\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        assert!(Config::load(Some(Path::new("/nonexistent/ferrio.toml"))).is_err());
    }
}
