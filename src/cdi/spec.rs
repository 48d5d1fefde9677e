//! One CDI spec file: its JSON or YAML form (unknown fields are an error, as the specification
//! asks), and its validation into [`Spec`] with the plain edit types of `edits.rs`.

use super::edits::{ContainerEdits, DeviceNode, DeviceType, Hook, IntelRdt, Mount, NetDevice};
use super::name::{check_device_name, parse_kind};
use super::CdiError;
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The released CDI specification versions ferrio reads, oldest first. 0.1.0 and 0.2.0 used
/// another document layout (`cdiDevices`, `containerSpec`) and are not accepted.
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
];

/// A validated spec file.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub path: PathBuf,
    /// `vendor/class`.
    pub kind: String,
    /// Applied when any device of this file is requested.
    pub edits: ContainerEdits,
    /// Device names (without the kind) and their own edits, in file order.
    pub devices: Vec<(String, ContainerEdits)>,
}

/// `null` reads as the default (Go writers may emit `null` for an empty list or map).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    cdi_version: String,
    kind: String,
    #[serde(default, deserialize_with = "nullable")]
    annotations: BTreeMap<String, String>,
    devices: Vec<RawDevice>,
    #[serde(default, deserialize_with = "nullable")]
    container_edits: RawEdits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDevice {
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    container_edits: RawEdits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEdits {
    #[serde(default, deserialize_with = "nullable")]
    env: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    device_nodes: Vec<RawDeviceNode>,
    #[serde(default, deserialize_with = "nullable")]
    hooks: Vec<RawHook>,
    #[serde(default, deserialize_with = "nullable")]
    mounts: Vec<RawMount>,
    #[serde(default)]
    intel_rdt: Option<RawIntelRdt>,
    #[serde(default, deserialize_with = "nullable")]
    additional_gids: Vec<u32>,
    #[serde(default, deserialize_with = "nullable")]
    net_devices: Vec<RawNetDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDeviceNode {
    path: String,
    #[serde(default)]
    host_path: Option<String>,
    #[serde(default, rename = "type")]
    device_type: Option<String>,
    #[serde(default)]
    major: Option<i64>,
    #[serde(default)]
    minor: Option<i64>,
    #[serde(default)]
    file_mode: Option<u32>,
    #[serde(default)]
    permissions: Option<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMount {
    host_path: String,
    container_path: String,
    #[serde(default, deserialize_with = "nullable")]
    options: Vec<String>,
    #[serde(default, rename = "type")]
    mount_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawHook {
    hook_name: String,
    path: String,
    #[serde(default, deserialize_with = "nullable")]
    args: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    env: Vec<String>,
    #[serde(default)]
    timeout: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIntelRdt {
    #[serde(default, rename = "closID")]
    clos_id: Option<String>,
    #[serde(default)]
    l3_cache_schema: Option<String>,
    #[serde(default)]
    mem_bw_schema: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    schemata: Vec<String>,
    #[serde(default)]
    enable_monitoring: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNetDevice {
    host_interface_name: String,
    name: String,
}

const HOOK_NAMES: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Whether a file name is a spec file by its extension: `.json`, `.yaml` or `.yml`.
pub(crate) fn is_spec_file_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("json" | "yaml" | "yml")
    )
}

/// Parses and validates one spec file's content; `path` names it in errors and picks the
/// format (`.json`: JSON; otherwise YAML).
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Spec, CdiError> {
    let invalid = |message: String| CdiError::InvalidSpec {
        path: path.to_path_buf(),
        message,
    };
    let raw: RawSpec = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("bad JSON: {e}")))?
    } else {
        serde_yaml_ng::from_slice(bytes).map_err(|e| invalid(format!("bad YAML: {e}")))?
    };
    validate(raw).map_err(invalid).map(|mut spec| {
        spec.path = path.to_path_buf();
        spec
    })
}

/// `"1.2.3"` or `"v1.2.3"` → (1, 2, 3).
fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.strip_prefix('v').unwrap_or(v).split('.');
    let mut next = || parts.next()?.parse::<u32>().ok();
    let version = (next()?, next()?, next()?);
    parts.next().is_none().then_some(version)
}

/// The oldest specification version that has every field the file uses, and why.
fn required_version(raw: &RawSpec) -> ((u32, u32, u32), &'static str) {
    let all_edits = || {
        std::iter::once(&raw.container_edits).chain(raw.devices.iter().map(|d| &d.container_edits))
    };
    let checks: [(bool, (u32, u32, u32), &'static str); 9] = [
        (
            all_edits().any(|e| !e.net_devices.is_empty()),
            (1, 1, 0),
            "netDevices",
        ),
        (
            all_edits().any(|e| {
                e.intel_rdt
                    .as_ref()
                    .is_some_and(|r| !r.schemata.is_empty() || r.enable_monitoring)
            }),
            (1, 1, 0),
            "intelRdt schemata or enableMonitoring",
        ),
        (
            all_edits().any(|e| e.intel_rdt.is_some()),
            (0, 7, 0),
            "intelRdt",
        ),
        (
            all_edits().any(|e| !e.additional_gids.is_empty()),
            (0, 7, 0),
            "additionalGids",
        ),
        (
            !raw.annotations.is_empty() || raw.devices.iter().any(|d| !d.annotations.is_empty()),
            (0, 6, 0),
            "annotations",
        ),
        (
            raw.kind
                .split_once('/')
                .is_some_and(|(_, c)| c.contains('.')),
            (0, 6, 0),
            "a dot in the kind's class",
        ),
        (
            raw.devices
                .iter()
                .any(|d| d.name.starts_with(|c: char| c.is_ascii_digit())),
            (0, 5, 0),
            "a device name starting with a digit",
        ),
        (
            all_edits().any(|e| e.device_nodes.iter().any(|n| n.host_path.is_some())),
            (0, 5, 0),
            "deviceNodes hostPath",
        ),
        (
            all_edits().any(|e| e.mounts.iter().any(|m| m.mount_type.is_some())),
            (0, 4, 0),
            "mounts type",
        ),
    ];
    checks
        .into_iter()
        .find(|(used, _, _)| *used)
        .map(|(_, v, why)| (v, why))
        .unwrap_or(((0, 3, 0), ""))
}

fn check_version(raw: &RawSpec) -> Result<(), String> {
    let known = SUPPORTED_VERSIONS
        .iter()
        .filter_map(|v| parse_version(v))
        .collect::<Vec<_>>();
    let v = parse_version(&raw.cdi_version)
        .filter(|v| known.contains(v))
        .ok_or_else(|| {
            format!(
                "cdiVersion {:?} is not supported (supported: {})",
                raw.cdi_version,
                SUPPORTED_VERSIONS.join(", ")
            )
        })?;
    let (min, why) = required_version(raw);
    if v < min {
        return Err(format!(
            "cdiVersion {:?} is too old for {why}, which needs {}.{}.{}",
            raw.cdi_version, min.0, min.1, min.2
        ));
    }
    Ok(())
}

fn validate(raw: RawSpec) -> Result<Spec, String> {
    check_version(&raw)?;
    parse_kind(&raw.kind)?;
    if raw.devices.is_empty() {
        return Err("no devices: a spec file must define at least one".into());
    }
    let edits = convert_edits(raw.container_edits).map_err(|e| format!("containerEdits: {e}"))?;
    let mut seen = BTreeSet::new();
    let mut devices = Vec::with_capacity(raw.devices.len());
    for dev in raw.devices {
        check_device_name(&dev.name)?;
        if !seen.insert(dev.name.clone()) {
            return Err(format!("device {:?} is defined twice", dev.name));
        }
        let dev_edits = convert_edits(dev.container_edits)
            .map_err(|e| format!("device {:?}: containerEdits: {e}", dev.name))?;
        if dev_edits.is_empty() {
            return Err(format!("device {:?} has no containerEdits", dev.name));
        }
        devices.push((dev.name, dev_edits));
    }
    Ok(Spec {
        path: PathBuf::new(),
        kind: raw.kind,
        edits,
        devices,
    })
}

fn check_env(env: &[String]) -> Result<(), String> {
    match env.iter().find(|v| v.find('=').is_none_or(|i| i == 0)) {
        Some(bad) => Err(format!("env {bad:?} is not NAME=value")),
        None => Ok(()),
    }
}

fn absolute(what: &str, p: &str) -> Result<PathBuf, String> {
    if p.starts_with('/') {
        Ok(PathBuf::from(p))
    } else {
        Err(format!("{what} {p:?} is not an absolute path"))
    }
}

fn convert_node(n: RawDeviceNode) -> Result<DeviceNode, String> {
    let path = absolute("deviceNodes path", &n.path)?;
    let host_path = match n.host_path.as_deref() {
        None | Some("") => path.clone(),
        Some(h) => absolute("deviceNodes hostPath", h)?,
    };
    let device_type =
        match n.device_type.as_deref() {
            None | Some("") => None,
            Some(t) => Some(DeviceType::parse(t).ok_or_else(|| {
                format!("device node {:?}: type {t:?} is not b, c, u or p", n.path)
            })?),
        };
    let permissions = match n.permissions.as_deref() {
        None | Some("") => "rwm".to_string(),
        Some("none") => String::new(),
        Some(p) if p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) => p.to_string(),
        Some(p) => {
            return Err(format!(
                "device node {:?}: permissions {p:?} are not some of r, w, m (or \"none\")",
                n.path
            ))
        }
    };
    Ok(DeviceNode {
        path,
        host_path,
        device_type,
        major: n.major,
        minor: n.minor,
        file_mode: n.file_mode,
        permissions,
        uid: n.uid,
        gid: n.gid,
    })
}

fn convert_hook(h: RawHook) -> Result<Hook, String> {
    if !HOOK_NAMES.contains(&h.hook_name.as_str()) {
        return Err(format!(
            "hookName {:?} is not one of {}",
            h.hook_name,
            HOOK_NAMES.join(", ")
        ));
    }
    let path = absolute(&format!("hook {:?} path", h.hook_name), &h.path)?;
    check_env(&h.env).map_err(|e| format!("hook {:?}: {e}", h.hook_name))?;
    if h.timeout.is_some_and(|t| t <= 0) {
        return Err(format!(
            "hook {:?}: timeout must be greater than zero",
            h.hook_name
        ));
    }
    Ok(Hook {
        hook_name: h.hook_name,
        path,
        args: h.args,
        env: h.env,
        timeout: h.timeout,
    })
}

fn convert_mount(m: RawMount) -> Result<Mount, String> {
    if m.host_path.is_empty() {
        return Err("a mount has an empty hostPath".into());
    }
    if m.container_path.is_empty() {
        return Err(format!(
            "mount of {:?} has an empty containerPath",
            m.host_path
        ));
    }
    Ok(Mount {
        host_path: PathBuf::from(m.host_path),
        container_path: PathBuf::from(m.container_path),
        mount_type: m.mount_type.filter(|t| !t.is_empty()),
        options: m.options,
    })
}

fn convert_rdt(r: RawIntelRdt) -> Result<IntelRdt, String> {
    if let Some(c) = r.clos_id.as_deref() {
        let ok = c == "/"
            || (!c.is_empty()
                && c.len() < 4096
                && c != "."
                && c != ".."
                && !c.contains(['/', '\n']));
        if !ok {
            return Err(format!("intelRdt closID {c:?} is not a valid CLOS name"));
        }
    }
    Ok(IntelRdt {
        clos_id: r.clos_id,
        l3_cache_schema: r.l3_cache_schema,
        mem_bw_schema: r.mem_bw_schema,
        schemata: r.schemata,
        enable_monitoring: r.enable_monitoring,
    })
}

fn convert_net(devs: Vec<RawNetDevice>) -> Result<Vec<NetDevice>, String> {
    let (mut hosts, mut names) = (BTreeSet::new(), BTreeSet::new());
    for d in &devs {
        if d.host_interface_name.is_empty() || d.name.is_empty() {
            return Err("netDevices entries need hostInterfaceName and name".into());
        }
        if !hosts.insert(&d.host_interface_name) {
            return Err(format!(
                "netDevices: host interface {:?} is named twice",
                d.host_interface_name
            ));
        }
        if !names.insert(&d.name) {
            return Err(format!(
                "netDevices: container name {:?} is used twice",
                d.name
            ));
        }
    }
    Ok(devs
        .into_iter()
        .map(|d| NetDevice {
            host_interface_name: d.host_interface_name,
            name: d.name,
        })
        .collect())
}

fn convert_edits(e: RawEdits) -> Result<ContainerEdits, String> {
    check_env(&e.env)?;
    Ok(ContainerEdits {
        env: e.env,
        device_nodes: e
            .device_nodes
            .into_iter()
            .map(convert_node)
            .collect::<Result<_, _>>()?,
        mounts: e
            .mounts
            .into_iter()
            .map(convert_mount)
            .collect::<Result<_, _>>()?,
        hooks: e
            .hooks
            .into_iter()
            .map(convert_hook)
            .collect::<Result<_, _>>()?,
        additional_gids: e.additional_gids.into_iter().filter(|&g| g != 0).collect(),
        intel_rdt: e.intel_rdt.map(convert_rdt).transpose()?,
        net_devices: convert_net(e.net_devices)?,
    })
}
