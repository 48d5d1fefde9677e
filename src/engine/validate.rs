//! Checks on every name and path a request carries, before any of it touches the host.
//! Each failure is InvalidArgument and names the field.

use super::error::{EngineError, Result};
use crate::model::{ContainerConfig, NamespaceMode, PodConfig};
use std::path::{Component, Path};

/// Longest name, namespace, uid, hostname we accept (DNS labels and Kubernetes names are
/// far shorter).
const MAX_NAME: usize = 253;

/// A plain name: non-empty when required, no `/`, no NUL, bounded.
pub fn name(field: &str, v: &str, required: bool) -> Result<()> {
    if v.is_empty() {
        return if required {
            Err(EngineError::invalid(format!("{field} is required")))
        } else {
            Ok(())
        };
    }
    if v.len() > MAX_NAME {
        return Err(EngineError::invalid(format!(
            "{field} is longer than {MAX_NAME} bytes"
        )));
    }
    if v.contains('/') || v.contains('\0') {
        return Err(EngineError::invalid(format!(
            "{field} {v:?} contains '/' or NUL"
        )));
    }
    if v == "." || v == ".." {
        return Err(EngineError::invalid(format!(
            "{field} {v:?} is not a valid name"
        )));
    }
    Ok(())
}

/// A relative path that stays inside its base: no `..`, not absolute, no NUL.
pub fn relative_inside(field: &str, v: &str) -> Result<()> {
    if v.contains('\0') {
        return Err(EngineError::invalid(format!("{field} contains NUL")));
    }
    if v.len() > 4096 {
        return Err(EngineError::invalid(format!(
            "{field} is longer than 4096 bytes"
        )));
    }
    let p = Path::new(v);
    if p.is_absolute() {
        return Err(EngineError::invalid(format!(
            "{field} {v:?} must be relative"
        )));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(EngineError::invalid(format!(
            "{field} {v:?} must not contain '..'"
        )));
    }
    Ok(())
}

/// An absolute path without NUL or `..`.
pub fn absolute(field: &str, v: &str) -> Result<()> {
    if v.contains('\0') {
        return Err(EngineError::invalid(format!("{field} contains NUL")));
    }
    if v.len() > 4096 {
        return Err(EngineError::invalid(format!(
            "{field} is longer than 4096 bytes"
        )));
    }
    let p = Path::new(v);
    if !p.is_absolute() {
        return Err(EngineError::invalid(format!(
            "{field} {v:?} must be an absolute path"
        )));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(EngineError::invalid(format!(
            "{field} {v:?} must not contain '..'"
        )));
    }
    Ok(())
}

/// A pod's cgroup parent: empty, or with the cgroupfs driver an absolute cgroup path without
/// `..`, with the systemd driver a slice name as kubelet sends it (`kubepods-burstable-pod<uid>.slice`:
/// no `/`, no empty dash-separated part).
pub fn cgroup_parent(driver: crate::config::CgroupDriver, v: &str) -> Result<()> {
    use crate::config::CgroupDriver;
    if v.is_empty() {
        return Ok(());
    }
    match driver {
        CgroupDriver::Cgroupfs => {
            if !v.starts_with('/') {
                let hint = if v.ends_with(".slice") {
                    " (a systemd slice: set runtime.cgroup_driver = \"systemd\", as kubelet's cgroupDriver)"
                } else {
                    ""
                };
                return Err(EngineError::invalid(format!(
                    "cgroup_parent {v:?} must be an absolute cgroup path with the cgroupfs driver{hint}"
                )));
            }
            absolute("cgroup_parent", v)
        }
        CgroupDriver::Systemd => {
            if v.contains('\0') || crate::cgroups::expand_slice(v).is_none() || v == "-.slice" {
                return Err(EngineError::invalid(format!(
                    "cgroup_parent {v:?} must be a systemd slice name such as kubepods-burstable-pod<uid>.slice with the systemd driver"
                )));
            }
            Ok(())
        }
    }
}

/// A container's own cgroups path (what an NRI plugin may set), in the form of the pod's
/// driver: cgroupfs an absolute path without `..` other than the root; systemd
/// `<slice>:<prefix>:<name>`, as runc and libcontainer take it.
pub fn container_cgroups_path(driver: crate::config::CgroupDriver, v: &str) -> Result<()> {
    use crate::config::CgroupDriver;
    match driver {
        CgroupDriver::Cgroupfs => {
            absolute("the cgroups path", v)?;
            if Path::new(v).components().count() < 2 {
                return Err(EngineError::invalid(format!(
                    "the cgroups path {v:?} must name a cgroup below the root"
                )));
            }
            Ok(())
        }
        CgroupDriver::Systemd => {
            let parts: Vec<&str> = v.split(':').collect();
            let ok = v.len() <= 4096
                && parts.len() == 3
                && crate::cgroups::expand_slice(parts[0]).is_some()
                && parts[1..]
                    .iter()
                    .all(|p| !p.is_empty() && !p.contains(['/', '\0']));
            if !ok {
                return Err(EngineError::invalid(format!(
                    "the cgroups path {v:?} must be <slice>:<prefix>:<name> with the systemd driver"
                )));
            }
            Ok(())
        }
    }
}

/// Bounded lists and maps: a request cannot make us allocate without limit.
pub fn bounded(field: &str, n: usize, max: usize) -> Result<()> {
    if n > max {
        return Err(EngineError::invalid(format!(
            "{field} has {n} entries; at most {max} are accepted"
        )));
    }
    Ok(())
}

/// The smallest memory limit a container may ask for (CRI-O's `container_min_memory`): below
/// it the runtime's own start-up is OOM-killed.
pub const MIN_MEMORY: i64 = 12 << 20;

/// Linux resources as the kernel will take them, each bad field InvalidArgument naming it
/// (`field` is the request's prefix, e.g. `linux.resources`): memory at least [`MIN_MEMORY`]
/// when set, cpu shares 2–262144, quota and period within the kernel's range, oom_score_adj
/// −1000..1000, cpusets that parse and name this host's CPUs and memory nodes, hugepage sizes
/// like `2MB`, and `unified` keys that are one cgroup file name (no `/`, `..`, NUL, empty).
pub fn resources(field: &str, r: &crate::model::Resources) -> Result<()> {
    let bad = |f: &str, why: String| Err(EngineError::invalid(format!("{field}.{f}: {why}")));
    if r.memory_limit_in_bytes < 0 {
        return bad(
            "memory_limit_in_bytes",
            format!("{} is negative", r.memory_limit_in_bytes),
        );
    }
    if r.memory_limit_in_bytes > 0 && r.memory_limit_in_bytes < MIN_MEMORY {
        return bad(
            "memory_limit_in_bytes",
            format!(
                "{} is below the minimum of {MIN_MEMORY} bytes (12 MiB)",
                r.memory_limit_in_bytes
            ),
        );
    }
    if r.memory_swap_limit_in_bytes < -1 {
        return bad(
            "memory_swap_limit_in_bytes",
            format!("{} is below -1 (unlimited)", r.memory_swap_limit_in_bytes),
        );
    }
    if r.cpu_shares != 0 && !(2..=262_144).contains(&r.cpu_shares) {
        return bad(
            "cpu_shares",
            format!("{} is outside 2..262144", r.cpu_shares),
        );
    }
    if r.cpu_quota < -1 || (r.cpu_quota > 0 && r.cpu_quota < 1000) {
        return bad(
            "cpu_quota",
            format!(
                "{} µs: -1 (unlimited), 0 (unset) or at least 1000",
                r.cpu_quota
            ),
        );
    }
    if r.cpu_period != 0 && !(1000..=1_000_000).contains(&r.cpu_period) {
        return bad(
            "cpu_period",
            format!("{} µs is outside 1000..1000000", r.cpu_period),
        );
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return bad(
            "oom_score_adj",
            format!("{} is outside -1000..1000", r.oom_score_adj),
        );
    }
    for (f, v, online) in [
        (
            "cpuset_cpus",
            &r.cpuset_cpus,
            "/sys/devices/system/cpu/online",
        ),
        (
            "cpuset_mems",
            &r.cpuset_mems,
            "/sys/devices/system/node/online",
        ),
    ] {
        if v.is_empty() {
            continue;
        }
        let Some(want) = cpu_list(v) else {
            return bad(f, format!("{v:?} is not a list such as 0-3,5"));
        };
        // Memory nodes: a host without NUMA has no node directory and one node, 0.
        let have = std::fs::read_to_string(online)
            .ok()
            .and_then(|s| cpu_list(s.trim()))
            .unwrap_or_else(|| vec![(0, 0)]);
        if let Some(x) = want
            .iter()
            .flat_map(|&(a, b)| a..=b)
            .find(|x| !have.iter().any(|&(a, b)| (a..=b).contains(x)))
        {
            return bad(
                f,
                format!("{v:?} names {x}, which this host does not have online"),
            );
        }
    }
    for (size, _) in &r.hugepage_limits {
        let digits = size.trim_end_matches(['K', 'M', 'G', 'k', 'B']);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !size.ends_with('B')
        {
            return bad(
                "hugepage_limits",
                format!("page size {size:?} is not like 2MB or 1GB"),
            );
        }
    }
    bounded(&format!("{field}.unified"), r.unified.len(), 256)?;
    for (k, v) in &r.unified {
        if k.is_empty()
            || k.contains('/')
            || k.contains('\0')
            || k == "."
            || k == ".."
            || !k.contains('.')
        {
            return bad(
                "unified",
                format!("key {k:?} is not a cgroup file name such as memory.high"),
            );
        }
        if v.contains('\0') || v.len() > 4096 {
            return bad(
                "unified",
                format!("the value of {k:?} has a NUL byte or is over 4096 bytes"),
            );
        }
    }
    Ok(())
}

/// A kernel CPU or node list (`0-3,5`) as ranges; None when it does not parse (or is absurd).
fn cpu_list(s: &str) -> Option<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let a = part.parse().ok()?;
                (a, a)
            }
        };
        if a > b || b > 1 << 16 {
            return None;
        }
        out.push((a, b));
    }
    Some(out)
}

/// Every field of a CreateContainer request that the host must never see raw.
pub fn container_config(c: &ContainerConfig) -> Result<()> {
    name("metadata.name", &c.name, true)?;
    if c.image.is_empty() {
        return Err(EngineError::invalid("image.image is required"));
    }
    if !c.log_path.is_empty() {
        relative_inside("log_path", &c.log_path)?;
    }
    if let Some(r) = &c.resources {
        resources("linux.resources", r)?;
    }
    bounded("command", c.command.len(), 4096)?;
    bounded("args", c.args.len(), 4096)?;
    bounded("envs", c.envs.len(), 4096)?;
    bounded("mounts", c.mounts.len(), 256)?;
    bounded("devices", c.devices.len(), 256)?;
    bounded("cdi_devices", c.cdi_devices.len(), 256)?;
    bounded("labels", c.labels.len(), 1024)?;
    bounded("annotations", c.annotations.len(), 1024)?;
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
        absolute("mounts.container_path", &m.container_path)?;
        if m.image.is_empty() {
            absolute("mounts.host_path", &m.host_path)?;
        } else {
            // KEP-4639: image volumes are read-only; kubelet always asks them so.
            if !m.readonly {
                return Err(EngineError::invalid(format!(
                    "mount {}: an image volume must be readonly",
                    m.container_path
                )));
            }
            if !m.image_sub_path.is_empty() {
                relative_inside("mounts.image_sub_path", &m.image_sub_path)?;
            }
        }
        if m.recursive_read_only {
            if !m.readonly {
                return Err(EngineError::invalid(format!(
                    "mount {}: recursive_read_only needs readonly",
                    m.container_path
                )));
            }
            if m.propagation != crate::model::Propagation::Private {
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
            bounded(what, maps.len(), 340)?;
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
        absolute("devices.container_path", &d.container_path)?;
        absolute("devices.host_path", &d.host_path)?;
        if !d.permissions.chars().all(|ch| "rwm".contains(ch)) {
            return Err(EngineError::invalid(format!(
                "devices.permissions {:?} is not a subset of \"rwm\"",
                d.permissions
            )));
        }
    }
    if !c.working_dir.is_empty() {
        absolute("working_dir", &c.working_dir)?;
    }
    if !c.stop_signal.is_empty()
        && crate::engine::container::signal_number(&c.stop_signal).is_none()
    {
        return Err(EngineError::invalid(format!(
            "stop_signal {:?} is not a signal",
            c.stop_signal
        )));
    }
    if let crate::model::Profile::Localhost(p) = &c.security.seccomp {
        absolute("seccomp.localhost_ref", p)?;
    }
    Ok(())
}

/// `userns_options`: NODE (the host's user namespace) without mappings, or POD with exactly
/// one uid and one gid mapping that maps container id 0; CONTAINER and TARGET are not modes
/// a pod can have. A pod with its own user namespace cannot use the host's network, PID or
/// IPC namespace (Kubernetes does not allow it either).
fn userns_options(c: &PodConfig, u: &crate::model::UserNamespace) -> Result<()> {
    const FIELD: &str = "linux.security_context.namespace_options.userns_options";
    match u.mode {
        NamespaceMode::Node => {
            if !u.uids.is_empty() || !u.gids.is_empty() {
                return Err(EngineError::invalid(format!(
                    "{FIELD}: mode NODE takes no uid or gid mappings"
                )));
            }
            return Ok(());
        }
        NamespaceMode::Pod => {}
        m => {
            return Err(EngineError::invalid(format!(
                "{FIELD}: unsupported user namespace mode {}",
                format!("{m:?}").to_uppercase()
            )))
        }
    }
    for (what, maps) in [("uids", &u.uids), ("gids", &u.gids)] {
        let [m] = maps.as_slice() else {
            return Err(EngineError::invalid(format!(
                "{FIELD}.{what}: mode POD needs exactly one mapping, got {}",
                maps.len()
            )));
        };
        if m.length == 0 || m.host_id.checked_add(m.length - 1).is_none() {
            return Err(EngineError::invalid(format!(
                "{FIELD}.{what}: mapping {} {} {} is empty or beyond the id range",
                m.container_id, m.host_id, m.length
            )));
        }
        if m.container_id != 0 {
            return Err(EngineError::invalid(format!(
                "{FIELD}.{what}: container id 0 (root) must be mapped; the mapping starts at {}",
                m.container_id
            )));
        }
    }
    for (what, mode) in [("network", c.network), ("pid", c.pid), ("ipc", c.ipc)] {
        if mode == NamespaceMode::Node {
            return Err(EngineError::invalid(format!(
                "{FIELD}: a pod with its own user namespace cannot use the host's {what} namespace"
            )));
        }
    }
    Ok(())
}

pub fn pod_config(c: &PodConfig) -> Result<()> {
    name("metadata.name", &c.name, true)?;
    name("metadata.namespace", &c.namespace, true)?;
    name("metadata.uid", &c.uid, true)?;
    name("hostname", &c.hostname, false)?;
    if c.hostname.len() > 64 {
        return Err(EngineError::invalid("hostname is longer than 64 bytes"));
    }
    if !c.log_directory.is_empty() {
        absolute("log_directory", &c.log_directory)?;
    }
    if let Some(u) = &c.userns {
        userns_options(c, u)?;
    }
    bounded("labels", c.labels.len(), 1024)?;
    bounded("annotations", c.annotations.len(), 1024)?;
    bounded("linux.sysctls", c.sysctls.len(), 256)?;
    if let Some(d) = &c.dns {
        bounded("dns_config.servers", d.servers.len(), 64)?;
        bounded("dns_config.searches", d.searches.len(), 64)?;
        bounded("dns_config.options", d.options.len(), 64)?;
        for v in d.servers.iter().chain(&d.searches).chain(&d.options) {
            if v.contains('\n') || v.contains('\0') || v.len() > 255 {
                return Err(EngineError::invalid(format!(
                    "dns_config entry {v:?} is not valid"
                )));
            }
        }
    }
    for (k, v) in &c.sysctls {
        let ns = crate::engine::pod::sysctl_namespace(k).ok_or_else(|| {
            EngineError::invalid(format!(
                "sysctl {k:?} is not namespaced and cannot be set for a pod"
            ))
        })?;
        let host = match ns {
            "net" | "uts" => c.network == NamespaceMode::Node,
            _ => c.ipc == NamespaceMode::Node,
        };
        if host {
            return Err(EngineError::invalid(format!(
                "sysctl {k:?} would change the host: the pod uses the host's {ns} namespace"
            )));
        }
        crate::monitor::pinns::sysctl_path(k).map_err(EngineError::invalid)?;
        if v.contains('\0') || v.len() > 4096 {
            return Err(EngineError::invalid(format!(
                "sysctl {k:?} has an invalid value"
            )));
        }
    }
    bounded("port_mappings", c.port_mappings.len(), 256)?;
    for key in [
        "kubernetes.io/ingress-bandwidth",
        "kubernetes.io/egress-bandwidth",
    ] {
        if let Some(v) = c.annotations.get(key) {
            if crate::engine::pod::quantity(v).is_none() {
                return Err(EngineError::invalid(format!(
                    "annotation {key}: {v:?} is not a bandwidth quantity"
                )));
            }
        }
    }
    for m in &c.port_mappings {
        if m.container_port == 0 {
            return Err(EngineError::invalid(format!(
                "port_mappings: host port {} needs a container port in 1..65535",
                m.host_port
            )));
        }
        if !m.host_ip.is_empty() && m.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(EngineError::invalid(format!(
                "port_mappings.host_ip {:?} is not an IP address",
                m.host_ip
            )));
        }
    }
    if c.network == NamespaceMode::Target || c.ipc == NamespaceMode::Target {
        return Err(EngineError::invalid(
            "namespace mode TARGET is only valid for pid",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names_and_paths() {
        assert!(name("metadata.name", "web", true).is_ok());
        assert!(name("metadata.name", "", true).is_err());
        assert!(name("metadata.name", "", false).is_ok());
        assert!(name("metadata.namespace", "a/b", true)
            .unwrap_err()
            .to_string()
            .contains("metadata.namespace"));
        assert!(name("x", "a\0b", true).is_err());
        assert!(name("x", "..", true).is_err());
        assert!(relative_inside("log_path", "app/0.log").is_ok());
        assert!(relative_inside("log_path", "../../etc/passwd")
            .unwrap_err()
            .to_string()
            .contains("log_path"));
        assert!(relative_inside("log_path", "/etc/passwd").is_err());
        assert!(absolute("host_path", "/srv/x").is_ok());
        assert!(absolute("host_path", "srv").is_err());
        assert!(absolute("host_path", "/srv/../etc").is_err());
        use crate::config::CgroupDriver::{Cgroupfs, Systemd};
        assert!(cgroup_parent(Cgroupfs, "/kubepods/pod1").is_ok());
        assert!(cgroup_parent(Cgroupfs, "/kubepods/../../x").is_err());
        assert!(cgroup_parent(Cgroupfs, "kubepods.slice")
            .unwrap_err()
            .to_string()
            .contains("cgroup_driver"));
        assert!(cgroup_parent(Systemd, "kubepods-burstable-pod1.slice").is_ok());
        assert!(cgroup_parent(Systemd, "/kubepods/pod1").is_err());
        assert!(cgroup_parent(Systemd, "kubepods/x.slice").is_err());
        assert!(cgroup_parent(Systemd, "kubepods--x.slice").is_err());
        assert!(cgroup_parent(Systemd, "kubepods").is_err());
        assert!(cgroup_parent(Systemd, "-.slice").is_err());
        assert!(bounded("args", 10, 5).is_err());
    }

    #[test]
    fn resources_the_kernel_would_refuse() {
        use crate::model::Resources;
        let ok = Resources {
            memory_limit_in_bytes: 64 << 20,
            cpu_shares: 1024,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            oom_score_adj: -997,
            cpuset_cpus: "0".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![("2MB".into(), 0)],
            unified: [("memory.high".to_string(), "max".to_string())].into(),
            ..Default::default()
        };
        assert!(resources("linux.resources", &ok).is_ok());
        assert!(resources("r", &Resources::default()).is_ok());
        let err = |f: &dyn Fn(&mut Resources)| {
            let mut r = ok.clone();
            f(&mut r);
            resources("linux.resources", &r).unwrap_err().to_string()
        };
        assert!(err(&|r| r.memory_limit_in_bytes = 4 << 20).contains("memory_limit_in_bytes"));
        assert!(err(&|r| r.memory_limit_in_bytes = -5).contains("negative"));
        assert!(err(&|r| r.cpu_shares = 1 << 20).contains("cpu_shares"));
        assert!(err(&|r| r.cpu_quota = -20).contains("cpu_quota"));
        assert!(err(&|r| r.cpu_period = 5).contains("cpu_period"));
        assert!(err(&|r| r.oom_score_adj = 5000).contains("oom_score_adj"));
        assert!(err(&|r| r.cpuset_cpus = "0-x".into()).contains("cpuset_cpus"));
        assert!(err(&|r| r.cpuset_cpus = "4000".into()).contains("does not have"));
        assert!(err(&|r| r.cpuset_mems = "3-1".into()).contains("cpuset_mems"));
        assert!(err(&|r| r.hugepage_limits = vec![("huge".into(), 1)]).contains("hugepage"));
        for key in ["../../etc/passwd", "a/b", "", "..", "nodot", "memory.\0x"] {
            assert!(
                err(&|r| {
                    r.unified = [(key.to_string(), "1".to_string())].into();
                })
                .contains("unified"),
                "{key:?}"
            );
        }
    }

    #[test]
    fn a_container_cgroups_path_has_its_driver_s_form() {
        use crate::config::CgroupDriver::{Cgroupfs, Systemd};
        assert!(container_cgroups_path(Cgroupfs, "/kubepods/pod1/c1").is_ok());
        for bad in ["kubepods/c1", "/", "/a/../b", "/a\0b"] {
            assert!(container_cgroups_path(Cgroupfs, bad).is_err(), "{bad}");
        }
        assert!(container_cgroups_path(Systemd, "kubepods-pod1.slice:cri:c1").is_ok());
        for bad in [
            "/kubepods/c1",
            "kubepods.slice:cri",
            "kubepods.slice::c1",
            "x:cri:c1",
            "kubepods.slice:a/b:c",
        ] {
            assert!(container_cgroups_path(Systemd, bad).is_err(), "{bad}");
        }
    }
}
