//! Pod networking through CNI plugins (the CNI spec 0.4.0 and 1.x, runtime side).
//!
//! [`Cni`] loads one network from the network directory ([`conf`]) and runs its plugins per the
//! CNI spec ([`cni`]): ADD in order with `prevResult` chaining, DEL in reverse order with the
//! cached ADD result as `prevResult`, CHECK, STATUS and GC (spec 1.1). Every attachment is
//! recorded in `<cache_dir>/results/` before its ADD runs and completed with the result after,
//! so DEL (teardown, GC) works after a daemon restart, after a config change, and after an ADD
//! that was cut short.
//!
//! Written by hand: the Rust CNI crates on crates.io are either plugin-side frameworks
//! (`cni-plugin`, `rscni-plugin`; the latter's runtime side is only planned) or small
//! unmaintained runtime sketches (`cni`, `rust-cni`: synchronous, panicking on plugin errors, no
//! result cache, no 1.1 commands). The protocol itself is a handful of environment variables and
//! JSON documents.
//!
//! Plugins run through `tokio::process` (spawn + exec, nothing runs in the forked child) with a
//! timeout; they enter the pod's network namespace themselves from `CNI_NETNS`, the path where
//! ferrio pins it (`<run_root>/pods/<id>/ns/net`).

pub mod cni;
pub mod conf;

use crate::config::NetworkConfig;
use crate::error::{ErrorKind, Kind};
use cni::{Attachment, CniResult, Command, Exec};
use conf::NetworkList;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use conf::ConfError;

/// The interface name inside the pod.
pub const POD_IFNAME: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error("network not ready: {0}")]
    NotReady(String),
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("CNI plugin {plugin:?} of network {network:?} failed {command}: {msg}{} (code {code})", with_details(.details))]
    Plugin {
        network: String,
        plugin: String,
        command: &'static str,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin:?} of network {network:?} failed {command} ({status}): {output}")]
    PluginFailed {
        network: String,
        plugin: String,
        command: &'static str,
        status: String,
        output: String,
    },
    #[error("CNI plugin {plugin:?} of network {network:?}: {command} timed out after {secs} s")]
    Timeout {
        network: String,
        plugin: String,
        command: &'static str,
        secs: u64,
    },
    #[error("CNI plugin {plugin:?} of network {network:?}: bad {command} output: {message}")]
    BadOutput {
        network: String,
        plugin: String,
        command: &'static str,
        message: String,
    },
    #[error("running CNI plugin {path}: {source}")]
    Exec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI attachment cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid pod network request: {0}")]
    InvalidArgument(String),
    #[error("pod {0} has no network attachment")]
    NoAttachment(String),
}

fn with_details(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(": {d}")
    }
}

impl ErrorKind for NetworkError {
    fn kind(&self) -> Kind {
        match self {
            NetworkError::Conf(e) => e.kind(),
            NetworkError::NotReady(_) | NetworkError::PluginNotFound { .. } => {
                Kind::FailedPrecondition
            }
            NetworkError::Timeout { .. } => Kind::DeadlineExceeded,
            // CNI's "try again later".
            NetworkError::Plugin { code: 11, .. } => Kind::Unavailable,
            NetworkError::InvalidArgument(_) => Kind::InvalidArgument,
            NetworkError::NoAttachment(_) => Kind::NotFound,
            _ => Kind::Internal,
        }
    }
}

type Result<T, E = NetworkError> = std::result::Result<T, E>;

/// A host port forwarded to the pod (the `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    /// Empty: every host address.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// Traffic shaping (the `bandwidth` capability): rates in bits per second, bursts in bits;
/// 0 leaves a direction unshaped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

/// What the engine knows about a pod that CNI needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNet {
    /// The pod (sandbox) ID: `CNI_CONTAINERID` and `K8S_POD_INFRA_CONTAINER_ID`.
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pinned network namespace (`<run_root>/pods/<id>/ns/net`).
    pub netns: PathBuf,
    /// Mappings with a host port of 0 are not forwarded and are dropped.
    pub port_mappings: Vec<PortMapping>,
    pub bandwidth: Option<Bandwidth>,
}

/// The outcome of a successful ADD.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNetStatus {
    pub network: String,
    /// The interface inside the pod (`eth0`).
    pub interface: String,
    /// The pod's addresses, in the result's order (the first is the primary one).
    pub ips: Vec<IpAddr>,
    /// The whole parsed result.
    pub result: CniResult,
}

/// One attachment as cached on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    container_id: String,
    network: String,
    if_name: String,
    netns: PathBuf,
    cni_args: String,
    port_mappings: Vec<PortMapping>,
    bandwidth: Option<Bandwidth>,
    /// The network list the ADD ran (a conflist document).
    config: Value,
    /// The ADD result; absent while the ADD runs (or when it was cut short).
    result: Option<Value>,
}

/// Settings taken from the config once.
#[derive(Debug, Clone)]
struct Settings {
    network_dir: PathBuf,
    default_network: String,
    plugin_dirs: Vec<PathBuf>,
    cni_path: String,
    results_dir: PathBuf,
    timeout: Duration,
}

/// The CNI network of the node's pods.
pub struct Cni {
    settings: Settings,
    /// The loaded network, or why there is none.
    network: RwLock<std::result::Result<Arc<NetworkList>, String>>,
}

impl Cni {
    /// Reads the network directory and prepares the cache (`<cache_dir>/results`). A missing
    /// or broken network config is not an error here: [`Cni::ready`] reports it, and the
    /// directory is read again while there is none.
    pub fn load(config: &NetworkConfig, cache_dir: &Path) -> Result<Cni> {
        let results_dir = cache_dir.join("results");
        std::fs::create_dir_all(&results_dir).map_err(|source| NetworkError::Cache {
            path: results_dir.clone(),
            source,
        })?;
        let settings = Settings {
            network_dir: config.network_dir.clone(),
            default_network: config.default_network.clone(),
            plugin_dirs: config.plugin_dirs.clone(),
            cni_path: std::env::join_paths(&config.plugin_dirs)
                .map(|p| p.to_string_lossy().into_owned())
                .map_err(|e| NetworkError::InvalidArgument(format!("network.plugin_dirs: {e}")))?,
            results_dir,
            timeout: Duration::from_secs(config.plugin_timeout.max(1)),
        };
        let cni = Cni {
            settings,
            network: RwLock::new(Err("not loaded".into())),
        };
        let _ = cni.reload();
        Ok(cni)
    }

    /// Reads the network directory again and switches to what it holds now. Attachments made
    /// with an earlier config are still torn down with that config (it is cached with them).
    pub fn reload(&self) -> Result<(), ConfError> {
        let loaded = conf::load_dir(&self.settings.network_dir, &self.settings.default_network);
        let mut slot = self.network.write().unwrap_or_else(|e| e.into_inner());
        match loaded {
            Ok(net) => {
                let changed = slot.as_ref().map_or(true, |old| **old != net);
                if changed {
                    tracing::info!(network = %net.name, file = %net.file.display(), version = %net.version, "CNI network loaded");
                }
                *slot = Ok(Arc::new(net));
                Ok(())
            }
            Err(e) => {
                if slot.is_ok() {
                    tracing::warn!(error = %e, "CNI network gone");
                }
                *slot = Err(e.to_string());
                Err(e)
            }
        }
    }

    /// NetworkReady: `Err` with the reason while no network is configured or one of its plugin
    /// binaries is missing. Reads the directory again while not ready, so a config written by a
    /// network add-on after start is picked up. Runs no plugin (see [`Cni::status`]).
    pub fn ready(&self) -> std::result::Result<(), String> {
        let net = self.current().map_err(|e| match e {
            NetworkError::NotReady(why) => why,
            e => e.to_string(),
        })?;
        for p in &net.plugins {
            cni::find_plugin(&p.plugin_type, &self.settings.plugin_dirs)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The name of the network pods are attached to, if one is loaded.
    pub fn network_name(&self) -> Option<String> {
        self.current().ok().map(|n| n.name.clone())
    }

    fn current(&self) -> Result<Arc<NetworkList>> {
        if let Ok(net) = &*self.network.read().unwrap_or_else(|e| e.into_inner()) {
            return Ok(net.clone());
        }
        match self.reload() {
            Ok(()) => self.current_loaded(),
            Err(e) => Err(NetworkError::NotReady(e.to_string())),
        }
    }

    fn current_loaded(&self) -> Result<Arc<NetworkList>> {
        self.network
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map_err(NetworkError::NotReady)
    }

    /// ADD: attaches the pod to the network and returns its addresses. When a plugin fails,
    /// the plugins are run with DEL to undo what the others did, and the plugin's error is
    /// returned.
    pub async fn setup(&self, pod: &PodNet) -> Result<PodNetStatus> {
        validate(pod)?;
        let net = self.current()?;
        // A leftover attachment of the same pod (an ADD cut short by a crash) goes first.
        self.teardown(pod).await?;
        let mut record = Record {
            container_id: pod.id.clone(),
            network: net.name.clone(),
            if_name: POD_IFNAME.into(),
            netns: pod.netns.clone(),
            cni_args: cni::cni_args(&pod.namespace, &pod.name, &pod.id, &pod.uid),
            port_mappings: pod
                .port_mappings
                .iter()
                .filter(|m| m.host_port != 0)
                .cloned()
                .collect(),
            bandwidth: pod.bandwidth.clone().filter(|b| *b != Bandwidth::default()),
            config: net.document.clone(),
            result: None,
        };
        let path = self.record_path(&record);
        self.write_record(&path, &record).await?;
        let netns = pod.netns.to_string_lossy().into_owned();
        let att = Attachment {
            container_id: &record.container_id,
            netns: &netns,
            ifname: &record.if_name,
            args: &record.cni_args,
        };
        let mut prev: Option<Value> = None;
        for plugin in &net.plugins {
            let stdin = plugin_input(&net, plugin, prev.as_ref(), Some(&record));
            let step = self
                .exec(&net, plugin, Command::Add, Some(&att), &stdin)
                .await
                .and_then(|out| {
                    out.ok_or_else(|| NetworkError::BadOutput {
                        network: net.name.clone(),
                        plugin: plugin.plugin_type.clone(),
                        command: "ADD",
                        message: "no result".into(),
                    })
                });
            match step {
                Ok(out) => prev = Some(out),
                Err(e) => {
                    tracing::warn!(pod = %pod.id, error = %e, "CNI ADD failed, undoing it");
                    if let Err(del) = self.del_record(&path, &record).await {
                        tracing::warn!(pod = %pod.id, error = %del, "CNI DEL after a failed ADD failed; GC will retry");
                    }
                    return Err(e);
                }
            }
        }
        let result = prev.expect("a network has at least one plugin");
        let parsed = match cni::parse_result(&result) {
            Ok(r) => r,
            Err(message) => {
                let _ = self.del_record(&path, &record).await;
                return Err(NetworkError::BadOutput {
                    network: net.name.clone(),
                    plugin: net
                        .plugins
                        .last()
                        .map(|p| p.plugin_type.clone())
                        .unwrap_or_default(),
                    command: "ADD",
                    message,
                });
            }
        };
        record.result = Some(result);
        self.write_record(&path, &record).await?;
        let ips = parsed.pod_ips();
        tracing::info!(pod = %pod.id, network = %net.name, ips = ?ips, "pod attached to CNI network");
        Ok(PodNetStatus {
            network: net.name.clone(),
            interface: POD_IFNAME.into(),
            ips,
            result: parsed,
        })
    }

    /// DEL: detaches the pod from every network it was attached to, with the config and
    /// result cached at ADD time. Succeeds when there is nothing to detach; a failed DEL keeps
    /// the attachment so that a later teardown or GC tries again.
    pub async fn teardown(&self, pod: &PodNet) -> Result<()> {
        let mut first_err = None;
        for (path, mut record) in self.records(Some(&pod.id)).await? {
            if !pod.netns.as_os_str().is_empty() {
                record.netns = pod.netns.clone();
            }
            if let Err(e) = self.detach(&path, &record).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// CHECK: asks the plugins whether the pod's attachment is still as ADD left it. A
    /// network older than 0.4.0 or with `disableCheck` is not checked.
    pub async fn check(&self, pod: &PodNet) -> Result<()> {
        let records = self.records(Some(&pod.id)).await?;
        let Some((path, record)) = records.into_iter().find(|(_, r)| r.result.is_some()) else {
            return Err(NetworkError::NoAttachment(pod.id.clone()));
        };
        let net = record_network(&path, &record)?;
        if !net.version.has_check() || net.disable_check {
            return Ok(());
        }
        let netns = pod.netns.to_string_lossy().into_owned();
        let att = Attachment {
            container_id: &record.container_id,
            netns: &netns,
            ifname: &record.if_name,
            args: &record.cni_args,
        };
        for plugin in &net.plugins {
            let stdin = plugin_input(&net, plugin, record.result.as_ref(), Some(&record));
            self.exec(&net, plugin, Command::Check, Some(&att), &stdin)
                .await?;
        }
        Ok(())
    }

    /// Whether the network can take pods, by asking its plugins: STATUS (spec 1.1) for a
    /// network of version 1.1 or later; otherwise VERSION, checking that each plugin is there
    /// and speaks the network's version. Runs one process per plugin.
    pub async fn status(&self) -> Result<()> {
        let net = self.current()?;
        for plugin in &net.plugins {
            if net.version.has_status_and_gc() {
                let stdin = plugin_input(&net, plugin, None, None);
                self.exec(&net, plugin, Command::Status, None, &stdin)
                    .await?;
                continue;
            }
            let stdin = json!({"cniVersion": net.version.to_string()});
            let out = self
                .exec(&net, plugin, Command::Version, None, &stdin)
                .await?;
            let supported: Vec<String> = out
                .as_ref()
                .and_then(|v| v.get("supportedVersions"))
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            if !supported
                .iter()
                .any(|s| conf::Version::parse(s) == Some(net.version))
            {
                return Err(NetworkError::BadOutput {
                    network: net.name.clone(),
                    plugin: plugin.plugin_type.clone(),
                    command: "VERSION",
                    message: format!(
                        "the plugin does not support CNI {} (it supports {})",
                        net.version,
                        supported.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// Garbage collection: DEL of every cached attachment whose pod is not in `live_pod_ids`,
    /// then, for a network of version 1.1 or later without `disableGC`, GC on each plugin
    /// with the live attachments as `cni.dev/valid-attachments` (so plugins drop what ferrio
    /// no longer knows, such as IPAM leases without a cache entry). Returns the pod IDs whose
    /// attachments were removed; every DEL is tried, the first failure is returned.
    pub async fn gc(&self, live_pod_ids: &[String]) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let mut first_err = None;
        let mut valid = Vec::new();
        for (path, record) in self.records(None).await? {
            if live_pod_ids.contains(&record.container_id) {
                valid.push(record);
                continue;
            }
            match self.detach(&path, &record).await {
                Ok(()) => removed.push(record.container_id.clone()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Ok(net) = self.current() {
            if net.version.has_status_and_gc() && !net.disable_gc {
                let attachments: Vec<Value> = valid
                    .iter()
                    .filter(|r| r.network == net.name)
                    .map(|r| json!({"containerID": r.container_id, "ifname": r.if_name}))
                    .collect();
                for plugin in &net.plugins {
                    let mut stdin = plugin_input(&net, plugin, None, None);
                    stdin["cni.dev/valid-attachments"] = Value::Array(attachments.clone());
                    if let Err(e) = self.exec(&net, plugin, Command::Gc, None, &stdin).await {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        if !removed.is_empty() {
            tracing::info!(pods = ?removed, "CNI attachments of gone pods removed");
        }
        first_err.map_or(Ok(removed), Err)
    }

    async fn exec(
        &self,
        net: &NetworkList,
        plugin: &conf::PluginConf,
        command: Command,
        att: Option<&Attachment<'_>>,
        stdin: &Value,
    ) -> Result<Option<Value>> {
        let binary = cni::find_plugin(&plugin.plugin_type, &self.settings.plugin_dirs)?;
        Exec {
            network: &net.name,
            plugin: &plugin.plugin_type,
            binary: &binary,
            command,
            attachment: att,
            cni_path: &self.settings.cni_path,
            stdin,
            timeout: self.settings.timeout,
        }
        .run()
        .await
    }

    /// DEL of a cached attachment for teardown and GC. An attachment whose ADD never completed
    /// (it failed, and so did the DEL that undid it right away) is dropped even when DEL fails
    /// again: its config may be one the plugins cannot even parse (a bad subnet), and keeping
    /// it would fail the pod's removal forever. A completed attachment is kept until a DEL
    /// succeeds.
    async fn detach(&self, path: &Path, record: &Record) -> Result<()> {
        match self.del_record(path, record).await {
            Err(e) if record.result.is_none() => {
                tracing::warn!(pod = %record.container_id, network = %record.network, error = %e,
                    "DEL of an attachment whose ADD never completed failed; forgetting it");
                remove_record(path).await
            }
            r => r,
        }
    }

    /// DEL of one cached attachment (plugins in reverse order, every one tried); the record is
    /// removed when all succeeded.
    async fn del_record(&self, path: &Path, record: &Record) -> Result<()> {
        let net = record_network(path, record)?;
        // Plugins skip the namespace part of DEL when the namespace is gone.
        let netns = if record.netns.exists() {
            record.netns.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let att = Attachment {
            container_id: &record.container_id,
            netns: &netns,
            ifname: &record.if_name,
            args: &record.cni_args,
        };
        let mut first_err = None;
        for plugin in net.plugins.iter().rev() {
            let stdin = plugin_input(&net, plugin, record.result.as_ref(), Some(record));
            if let Err(e) = self
                .exec(&net, plugin, Command::Del, Some(&att), &stdin)
                .await
            {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        remove_record(path).await?;
        tracing::info!(pod = %record.container_id, network = %record.network, "pod detached from CNI network");
        Ok(())
    }

    fn record_path(&self, r: &Record) -> PathBuf {
        self.settings.results_dir.join(format!(
            "{}_{}_{}.json",
            r.container_id, r.network, r.if_name
        ))
    }

    async fn write_record(&self, path: &Path, record: &Record) -> Result<()> {
        let (p, r) = (path.to_path_buf(), record.clone());
        blocking(move || {
            crate::state::write_json(&p, &r)
                .map_err(|source| NetworkError::Cache { path: p, source })
        })
        .await
    }

    /// Cached attachments, of one pod or all. Unreadable files are skipped with a warning.
    async fn records(&self, pod_id: Option<&str>) -> Result<Vec<(PathBuf, Record)>> {
        let dir = self.settings.results_dir.clone();
        let prefix = pod_id.map(|id| format!("{id}_"));
        let pod_id = pod_id.map(str::to_string);
        blocking(move || {
            let rd = std::fs::read_dir(&dir).map_err(|source| NetworkError::Cache {
                path: dir.clone(),
                source,
            })?;
            let mut out = Vec::new();
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !name.ends_with(".json") {
                    continue;
                }
                if prefix.as_ref().is_some_and(|p| !name.starts_with(p)) {
                    continue;
                }
                match crate::state::read_json::<Record>(&e.path()) {
                    Ok(r) if pod_id.as_ref().is_none_or(|id| *id == r.container_id) => {
                        out.push((e.path(), r))
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "skipping unreadable CNI cache file"),
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
        .await
    }
}

async fn remove_record(path: &Path) -> Result<()> {
    let p = path.to_path_buf();
    blocking(move || match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(NetworkError::Cache { path: p, source: e })
        }
        _ => Ok(()),
    })
    .await
}

/// The network list a cached attachment was made with.
fn record_network(path: &Path, record: &Record) -> Result<NetworkList> {
    let Value::Object(doc) = record.config.clone() else {
        return Err(NetworkError::Cache {
            path: path.to_path_buf(),
            source: std::io::Error::other("cached config is not an object"),
        });
    };
    NetworkList::from_document(path, doc).map_err(|message| NetworkError::Cache {
        path: path.to_path_buf(),
        source: std::io::Error::other(message),
    })
}

/// A plugin's stdin: its config with the network's `name` and `cniVersion`, the previous
/// result, and `runtimeConfig` holding the capabilities it declares and the pod has.
fn plugin_input(
    net: &NetworkList,
    plugin: &conf::PluginConf,
    prev: Option<&Value>,
    record: Option<&Record>,
) -> Value {
    let mut conf: Map<String, Value> = plugin.raw.clone();
    conf.insert("name".into(), Value::String(net.name.clone()));
    conf.insert("cniVersion".into(), Value::String(net.version.to_string()));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let mut rc = Map::new();
    if let Some(r) = record {
        if plugin.capabilities.contains("portMappings") && !r.port_mappings.is_empty() {
            rc.insert("portMappings".into(), json!(r.port_mappings));
        }
        if let Some(bw) = r
            .bandwidth
            .as_ref()
            .filter(|_| plugin.capabilities.contains("bandwidth"))
        {
            rc.insert("bandwidth".into(), json!(bw));
        }
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(conf)
}

/// `CNI_CONTAINERID` must be a valid file-name-ish ID, and the `CNI_ARGS` values must not hold
/// the separators `;` and `=`.
fn validate(pod: &PodNet) -> Result<()> {
    let id_ok = !pod.id.is_empty()
        && pod
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !id_ok {
        return Err(NetworkError::InvalidArgument(format!(
            "pod id {:?}",
            pod.id
        )));
    }
    for (field, v) in [
        ("name", &pod.name),
        ("namespace", &pod.namespace),
        ("uid", &pod.uid),
    ] {
        if v.contains([';', '=']) || v.chars().any(char::is_control) {
            return Err(NetworkError::InvalidArgument(format!(
                "pod {field} {v:?} may not contain ';', '=' or control characters"
            )));
        }
    }
    if !pod.netns.is_absolute() {
        return Err(NetworkError::InvalidArgument(format!(
            "network namespace path {:?} is not absolute",
            pod.netns
        )));
    }
    for m in &pod.port_mappings {
        if !matches!(m.protocol.as_str(), "tcp" | "udp" | "sctp") {
            return Err(NetworkError::InvalidArgument(format!(
                "port mapping protocol {:?} is not tcp, udp or sctp",
                m.protocol
            )));
        }
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

#[cfg(test)]
mod fake_plugin_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn net(doc: &str) -> NetworkList {
        NetworkList::parse(Path::new("t.conflist"), doc.as_bytes()).unwrap()
    }

    fn record(mappings: Vec<PortMapping>, bw: Option<Bandwidth>) -> Record {
        Record {
            container_id: "abc".into(),
            network: "n".into(),
            if_name: "eth0".into(),
            netns: "/ns".into(),
            cni_args: String::new(),
            port_mappings: mappings,
            bandwidth: bw,
            config: Value::Null,
            result: None,
        }
    }

    #[test]
    fn plugin_input_adds_name_version_prev_result_and_declared_capabilities() {
        let n = net(r#"{"cniVersion":"1.0.0","name":"n","plugins":[
            {"type":"bridge","bridge":"b0"},
            {"type":"portmap","capabilities":{"portMappings":true}},
            {"type":"bandwidth","capabilities":{"bandwidth":true}}]}"#);
        let pm = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        };
        let bw = Bandwidth {
            ingress_rate: 1000,
            ingress_burst: 2000,
            ..Default::default()
        };
        let r = record(vec![pm], Some(bw));
        let prev = json!({"cniVersion":"1.0.0","ips":[]});
        let first = plugin_input(&n, &n.plugins[0], None, Some(&r));
        assert_eq!(
            first,
            json!({"type":"bridge","bridge":"b0","name":"n","cniVersion":"1.0.0"})
        );
        let second = plugin_input(&n, &n.plugins[1], Some(&prev), Some(&r));
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]})
        );
        let third = plugin_input(&n, &n.plugins[2], Some(&prev), Some(&r));
        assert_eq!(
            third["runtimeConfig"],
            json!({"bandwidth":{"ingressRate":1000,"ingressBurst":2000,"egressRate":0,"egressBurst":0}})
        );
        // No mappings: no runtimeConfig at all.
        let none = plugin_input(&n, &n.plugins[1], None, Some(&record(vec![], None)));
        assert!(none.get("runtimeConfig").is_none());
    }

    #[test]
    fn pod_requests_are_validated() {
        let ok = PodNet {
            id: "0123abcd".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            netns: "/run/ferrio/pods/0123abcd/ns/net".into(),
            port_mappings: vec![],
            bandwidth: None,
        };
        assert!(validate(&ok).is_ok());
        let bad = [
            PodNet {
                id: "a/b".into(),
                ..ok.clone()
            },
            PodNet {
                name: "x;K8S_POD_NAME=y".into(),
                ..ok.clone()
            },
            PodNet {
                netns: "rel".into(),
                ..ok.clone()
            },
            PodNet {
                port_mappings: vec![PortMapping {
                    host_port: 1,
                    container_port: 1,
                    protocol: "TCP".into(),
                    host_ip: String::new(),
                }],
                ..ok.clone()
            },
        ];
        for b in bad {
            let e = validate(&b).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
        }
    }

    #[test]
    fn plugin_error_message_names_plugin_network_and_message() {
        let e = NetworkError::Plugin {
            network: "pods".into(),
            plugin: "bridge".into(),
            command: "ADD",
            code: 7,
            msg: "invalid subnet".into(),
            details: "bad CIDR".into(),
        };
        assert_eq!(
            e.to_string(),
            "CNI plugin \"bridge\" of network \"pods\" failed ADD: invalid subnet: bad CIDR (code 7)"
        );
        assert_eq!(e.kind(), Kind::Internal);
    }
}
