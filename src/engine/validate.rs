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
}
