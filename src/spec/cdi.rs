//! Applying resolved CDI container edits ([`crate::cdi::ContainerEdits`]) to the spec being
//! generated, the way the CDI reference library applies them for CRI-O and containerd: env after
//! everything else (CDI wins), device nodes replacing any earlier node at the same path plus a
//! device cgroup allow rule, mounts replacing any earlier mount at the same destination (then
//! all mounts ordered parents first), additional GIDs, and hooks by name. Pure: the edits come
//! resolved, with type and numbers filled from the host.

use super::SpecError;
use crate::cdi::{ContainerEdits, DeviceNode, DeviceType, Hook, Mount};
use serde_json::{json, Map, Value};
use std::path::Path;

/// Refuses what ferrio cannot apply yet (the engine refuses it earlier, naming the device).
pub(super) fn check_supported(edits: &ContainerEdits) -> Result<(), SpecError> {
    match edits.unsupported() {
        Some(what) => Err(SpecError::Invalid(format!(
            "the requested CDI devices ask for {what}, which is not supported by ferrio yet"
        ))),
        None => Ok(()),
    }
}

/// Adds the CDI GIDs that the user does not have yet, in order.
pub(super) fn add_gids(additional: &mut Vec<u32>, edits: &ContainerEdits) {
    for gid in &edits.additional_gids {
        if !additional.contains(gid) {
            additional.push(*gid);
        }
    }
}

/// A `linux.devices` entry for a node; uid/gid left unset by the spec file are the container
/// user's.
fn device_json(node: &DeviceNode, uid: u32, gid: u32) -> Result<Value, SpecError> {
    let kind = node.device_type.ok_or_else(|| {
        SpecError::Internal(format!(
            "CDI device node {} has no type (fill_device_info was not called)",
            node.path.display()
        ))
    })?;
    let mut d = json!({
        "path": node.path,
        "type": kind.as_str(),
        "uid": node.uid.unwrap_or(uid),
        "gid": node.gid.unwrap_or(gid),
    });
    if kind != DeviceType::Fifo {
        d["major"] = json!(node.major.unwrap_or(0));
        d["minor"] = json!(node.minor.unwrap_or(0));
    }
    if let Some(mode) = node.file_mode {
        d["fileMode"] = json!(mode);
    }
    Ok(d)
}

/// The device cgroup rule of a node: block and character devices (`u` is a character device
/// to the kernel) with a non-empty access; FIFOs need none.
fn cgroup_rule(node: &DeviceNode) -> Option<Value> {
    let kind = match node.device_type? {
        DeviceType::Block => "b",
        DeviceType::Char | DeviceType::Unbuffered => "c",
        DeviceType::Fifo => return None,
    };
    if node.permissions.is_empty() {
        return None;
    }
    Some(json!({
        "allow": true,
        "type": kind,
        "major": node.major.unwrap_or(0),
        "minor": node.minor.unwrap_or(0),
        "access": node.permissions,
    }))
}

/// Adds the CDI device nodes to `devices` (`linux.devices`) and their allow rules to `rules`
/// (`linux.resources.devices`).
pub(super) fn add_devices(
    devices: &mut Vec<Value>,
    rules: &mut Vec<Value>,
    edits: &ContainerEdits,
    uid: u32,
    gid: u32,
) -> Result<(), SpecError> {
    for node in &edits.device_nodes {
        let d = device_json(node, uid, gid)?;
        devices.retain(|x| x["path"] != d["path"]);
        devices.push(d);
        rules.extend(cgroup_rule(node));
    }
    Ok(())
}

/// An OCI mount for a CDI mount: a bind mount unless the spec file names another type; a bind
/// mount whose options say neither `bind` nor `rbind` gets `rbind`, as the runtimes need one.
fn mount_json(m: &Mount) -> Value {
    let kind = m.mount_type.as_deref().unwrap_or("bind");
    let mut options = m.options.clone();
    if kind == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
        options.insert(0, "rbind".into());
    }
    json!({
        "destination": m.container_path,
        "type": kind,
        "source": m.host_path,
        "options": options,
    })
}

fn depth(destination: &Value) -> usize {
    destination
        .as_str()
        .map_or(0, |d| Path::new(d).components().count())
}

/// Adds the CDI mounts (each replacing an earlier mount at its destination), then orders all
/// mounts by the depth of their destination, stably, so that a parent is mounted before what
/// is mounted inside it.
pub(super) fn add_mounts(mounts: &mut Vec<Value>, edits: &ContainerEdits) {
    if edits.mounts.is_empty() {
        return;
    }
    for m in &edits.mounts {
        let m = mount_json(m);
        mounts.retain(|x| x["destination"] != m["destination"]);
        mounts.push(m);
    }
    mounts.sort_by_key(|m| depth(&m["destination"]));
}

fn hook_json(h: &Hook) -> Value {
    let mut v = json!({"path": h.path});
    if !h.args.is_empty() {
        v["args"] = json!(h.args);
    }
    if !h.env.is_empty() {
        v["env"] = json!(h.env);
    }
    if let Some(t) = h.timeout {
        v["timeout"] = json!(t);
    }
    v
}

/// The OCI `hooks` object of the CDI hooks, each under its name in order; `None` when there
/// are none.
pub(super) fn hooks(edits: &ContainerEdits) -> Result<Option<Value>, SpecError> {
    if edits.hooks.is_empty() {
        return Ok(None);
    }
    let mut out = Map::new();
    for h in &edits.hooks {
        match h.hook_name.as_str() {
            "prestart" | "createRuntime" | "createContainer" | "startContainer" | "poststart"
            | "poststop" => {}
            other => {
                return Err(SpecError::Invalid(format!(
                    "CDI hook {}: unknown hook name {other:?}",
                    h.path.display()
                )))
            }
        }
        let list = out
            .entry(h.hook_name.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(a) = list.as_array_mut() {
            a.push(hook_json(h));
        }
    }
    Ok(Some(Value::Object(out)))
}

/// Applies resolved CDI edits to a finished spec's JSON tree (CDI devices an NRI plugin asked
/// for, after the spec was generated): env (CDI wins), additional GIDs, mounts, device nodes
/// with their allow rules, and hooks appended to those already there.
pub fn apply_to_spec(spec: &mut Value, edits: &ContainerEdits) -> Result<(), SpecError> {
    check_supported(edits)?;
    let uid = spec["process"]["user"]["uid"].as_u64().unwrap_or(0);
    let gid = spec["process"]["user"]["gid"].as_u64().unwrap_or(0);
    let (uid, gid) = (
        u32::try_from(uid).unwrap_or(0),
        u32::try_from(gid).unwrap_or(0),
    );
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut env = strings(&spec["process"]["env"]);
    for e in &edits.env {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
        env.push(e.clone());
    }
    spec["process"]["env"] = json!(env);
    let mut gids: Vec<u32> = spec["process"]["user"]["additionalGids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_u64().and_then(|g| u32::try_from(g).ok()))
                .collect()
        })
        .unwrap_or_default();
    add_gids(&mut gids, edits);
    if !gids.is_empty() {
        spec["process"]["user"]["additionalGids"] = json!(gids);
    }
    let mut mounts = spec["mounts"].as_array().cloned().unwrap_or_default();
    add_mounts(&mut mounts, edits);
    spec["mounts"] = Value::Array(mounts);
    let mut devices = spec["linux"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut rules = spec["linux"]["resources"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    add_devices(&mut devices, &mut rules, edits, uid, gid)?;
    spec["linux"]["devices"] = Value::Array(devices);
    spec["linux"]["resources"]["devices"] = Value::Array(rules);
    if let Some(Value::Object(h)) = hooks(edits)? {
        for (name, list) in h {
            let have = &mut spec["hooks"][&name];
            let mut all = have.as_array().cloned().unwrap_or_default();
            all.extend(list.as_array().cloned().unwrap_or_default());
            *have = Value::Array(all);
        }
    }
    Ok(())
}
