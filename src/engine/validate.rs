//! Checks on every name and path a request carries, before any of it touches the host.
//! Each failure is InvalidArgument and names the field.

use super::error::{EngineError, Result};
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
pub fn resources(field: &str, r: &crate::spec::config::Resources) -> Result<()> {
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
        use crate::spec::config::Resources;
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
}
