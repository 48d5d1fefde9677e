//! Pod cgroups, the cgroups of ferrio's own helpers, and the names of both under the two cgroup
//! drivers, on cgroup v1 and v2 alike.
//!
//! Containers' own cgroups are made and removed by the OCI runtime (libcontainer's libcgroups,
//! or runc/crun) from the spec's `cgroupsPath`. With the cgroupfs driver a cgroup is named by its
//! absolute path (`/ferrio/pod-…/ferrio-<id>`); with the systemd driver a pod's cgroup is a slice
//! (`kubepods-burstable-pod<uid>.slice`, as kubelet sends it) and a container's is a transient
//! scope, named `<slice>:ferrio:<id>` (the OCI runtimes' systemd form). [`fs_path`] maps both to
//! the cgroup's directory under the hierarchy root. This module knows where the hierarchies are
//! mounted, creates and removes the cgroupfs pod cgroups in every hierarchy, moves the monitors
//! and pause processes out of the daemon's cgroup ([`place_helper`]), and reads the OOM-kill
//! counters the monitor compares. Hand-written because it is a few directory operations over
//! /proc/self/mountinfo; libcgroups manages one cgroup, not trees (its systemd manager does the
//! D-Bus part of the systemd driver).

use crate::config::CgroupDriver;
use std::io;
use std::path::{Path, PathBuf};

/// How long the hierarchies read from mountinfo are used before it is read again. Cgroup
/// hierarchies are mounted at boot; the daemon's mountinfo, though, has a few lines per pod
/// and container (pins, /dev/shm, rootfs), so reading it for every cgroup a stats call reads
/// made a full node's ListPodSandboxStats quadratic (5.5 ms a pod with 110 pods).
const HIERARCHIES_TTL: std::time::Duration = std::time::Duration::from_secs(10);

type Mounts = Vec<(PathBuf, Vec<String>)>;

/// Mount points of every cgroup hierarchy (v1 controllers and the v2 unified tree), with the
/// v1 controllers each one carries (empty for v2); read again at most every
/// [`HIERARCHIES_TTL`].
pub fn hierarchies() -> Mounts {
    static CACHE: std::sync::Mutex<Option<(std::time::Instant, Mounts)>> =
        std::sync::Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, h)) = cache.as_ref() {
        if at.elapsed() < HIERARCHIES_TTL {
            return h.clone();
        }
    }
    let h = read_hierarchies();
    // An unreadable mountinfo is not cached: the next call tries again.
    if !h.is_empty() {
        *cache = Some((std::time::Instant::now(), h.clone()));
    }
    h
}

fn read_hierarchies() -> Mounts {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        let fstype = r.next().unwrap_or("");
        let _source = r.next();
        let super_opts = r.next().unwrap_or("");
        let mountpoint = left.split(' ').nth(4).unwrap_or("");
        match fstype {
            "cgroup2" => out.push((PathBuf::from(mountpoint), Vec::new())),
            "cgroup" => {
                let ctrls: Vec<String> = super_opts
                    .split(',')
                    .filter(|o| {
                        !matches!(*o, "rw" | "ro")
                            && !o.starts_with("release_agent")
                            && !o.contains('=')
                    })
                    .map(|s| s.to_string())
                    .collect();
                out.push((PathBuf::from(mountpoint), ctrls));
            }
            _ => {}
        }
    }
    out
}

/// Whether the host runs the unified (v2-only) hierarchy.
pub fn is_unified() -> bool {
    let h = hierarchies();
    !h.is_empty() && h.iter().all(|(_, c)| c.is_empty())
}

fn join(root: &Path, cgroup: &str) -> PathBuf {
    root.join(fs_path(cgroup).trim_start_matches('/'))
}

/// Whether `cgroup` is named in the systemd driver's terms (a slice, or `slice:prefix:name`).
pub fn is_systemd_name(cgroup: &str) -> bool {
    !cgroup.starts_with('/') && (cgroup.contains(':') || cgroup.ends_with(".slice"))
}

/// The driver a cgroup name was made under (recorded names outlive a config change).
pub fn driver_of(cgroup: &str) -> CgroupDriver {
    if is_systemd_name(cgroup) {
        CgroupDriver::Systemd
    } else {
        CgroupDriver::Cgroupfs
    }
}

/// A slice's path in the hierarchy: systemd nests slices by their dashes, so
/// `kubepods-burstable-pod1.slice` is `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice`
/// and `-.slice` is the root.
pub fn expand_slice(slice: &str) -> Option<String> {
    let stem = slice.strip_suffix(".slice")?;
    if stem == "-" {
        return Some("/".into());
    }
    if stem.is_empty() || slice.contains('/') || stem.split('-').any(str::is_empty) {
        return None;
    }
    let mut out = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push('/');
        out.push_str(&prefix);
        out.push_str(".slice");
    }
    Some(out)
}

/// The parent slice of a slice (`a-b.slice` → `a.slice`, `a.slice` → `-.slice`).
pub fn parent_slice(slice: &str) -> String {
    match slice
        .strip_suffix(".slice")
        .and_then(|s| s.rsplit_once('-'))
    {
        Some((parent, _)) if !parent.is_empty() => format!("{parent}.slice"),
        _ => "-.slice".into(),
    }
}

/// The directory of `cgroup` relative to a hierarchy root: cgroupfs paths as they are, a slice
/// expanded, `slice:prefix:name` as the scope `<slice path>/<prefix>-<name>.scope`.
pub fn fs_path(cgroup: &str) -> String {
    if !is_systemd_name(cgroup) {
        return cgroup.to_string();
    }
    let parts: Vec<&str> = cgroup.split(':').collect();
    match parts.as_slice() {
        [slice] => expand_slice(slice).unwrap_or_else(|| cgroup.to_string()),
        [slice, prefix, name] => {
            let slice = if slice.is_empty() {
                "system.slice"
            } else {
                slice
            };
            let base = expand_slice(slice).unwrap_or_else(|| "/".into());
            let unit = if name.ends_with(".slice") {
                name.to_string()
            } else {
                format!("{prefix}-{name}.scope")
            };
            format!("{}/{unit}", base.trim_end_matches('/'))
        }
        _ => cgroup.to_string(),
    }
}

/// The path libcgroups' managers take for `cgroup`: cgroupfs paths as they are; a slice as
/// `<parent slice>:ferrio:<slice>`, so that the systemd manager addresses the slice unit itself.
pub fn manager_path(cgroup: &str) -> String {
    if is_systemd_name(cgroup) && !cgroup.contains(':') {
        format!("{}:ferrio:{cgroup}", parent_slice(cgroup))
    } else {
        cgroup.to_string()
    }
}

/// The cgroup of a new pod: the request's `cgroup_parent`, else one of ferrio's own under
/// `default_parent` (cgroupfs: `<default>/pod-<id>`; systemd: the slice
/// `<default slice stem>-pod<id>.slice`, `ferrio-pod<id>.slice` when the default is no slice).
pub fn pod_cgroup(driver: CgroupDriver, parent: &str, default_parent: &str, id: &str) -> String {
    if !parent.is_empty() {
        return parent.to_string();
    }
    match driver {
        CgroupDriver::Cgroupfs => format!("{}/pod-{id}", default_parent.trim_end_matches('/')),
        CgroupDriver::Systemd => {
            let stem = default_parent
                .strip_suffix(".slice")
                .filter(|s| !s.is_empty() && *s != "-")
                .unwrap_or("ferrio");
            format!("{stem}-pod{id}.slice")
        }
    }
}

/// A container's `cgroupsPath` in its pod's cgroup.
pub fn container_cgroup(driver: CgroupDriver, pod_cgroup: &str, id: &str) -> String {
    match driver {
        CgroupDriver::Cgroupfs => format!("{}/ferrio-{id}", pod_cgroup.trim_end_matches('/')),
        CgroupDriver::Systemd => format!("{pod_cgroup}:ferrio:{id}"),
    }
}

/// Where the monitors and the pause process of a pod live, so that they are not in the
/// daemon's cgroup (a `systemctl restart ferrio` must not kill them) and are accounted to the
/// pod, as CRI-O's `conmon_cgroup = "pod"`: cgroupfs: the leaf `<pod>/ferrio-monitors` of the
/// cgroup v2 hierarchy (cgroup v2 allows processes only in leaves; v1 controller hierarchies are
/// left alone, see [`place_helper`]); systemd: a transient scope `ferrio-<unit>.scope` in the
/// pod's slice, started through systemd's D-Bus API, which systemd removes once it is empty.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HelperCgroup {
    pub driver: CgroupDriver,
    /// The pod's cgroup (a path or a slice).
    pub pod_cgroup: String,
}

/// The cgroupfs leaf of a pod's helpers.
pub fn helpers_leaf(pod_cgroup: &str) -> String {
    format!("{}/ferrio-monitors", pod_cgroup.trim_end_matches('/'))
}

/// Errors of the systemd driver (D-Bus).
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("systemd: {0}")]
    Systemd(String),
}

/// libcgroups' systemd manager of the unit `path` names (`<slice>:<prefix>:<name>`), connected
/// to the system bus.
fn systemd_manager(
    path: &str,
    name: &str,
) -> Result<libcgroups::systemd::manager::Manager, CgroupError> {
    libcgroups::systemd::manager::Manager::new(
        PathBuf::from("/sys/fs/cgroup"),
        PathBuf::from(path),
        name.to_string(),
        true,
        std::time::Duration::from_secs(5),
    )
    .map_err(|e| CgroupError::Systemd(format!("{path}: {e}")))
}

/// Moves `pid` (a monitor or a pause) into its pod's helper cgroup; `unit` names its systemd
/// scope (`monitor-<ctr>`, `pause-<pod>`). Blocking (D-Bus with the systemd driver).
pub fn place_helper(h: &HelperCgroup, unit: &str, pid: i32) -> Result<(), CgroupError> {
    match h.driver {
        CgroupDriver::Cgroupfs => {
            // Only the cgroup v2 hierarchy: on a unified host that is all of them; on a v1 or
            // hybrid host it is the one systemd tracks units (and kills them) by. Moving a
            // process into each v1 controller hierarchy as well costs 5–15 ms per container
            // (one RCU grace period per write, measured on this machine) and would only
            // account the monitor's few pages to the pod.
            let leaf = helpers_leaf(&h.pod_cgroup);
            for (root, ctrls) in hierarchies() {
                if !ctrls.is_empty() {
                    continue;
                }
                let dir = join(&root, &leaf);
                crate::state::create_dirs(&dir, 0o755).map_err(|e| {
                    io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))
                })?;
                let procs = dir.join("cgroup.procs");
                std::fs::write(&procs, pid.to_string()).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("moving {pid} to {}: {e}", procs.display()),
                    )
                })?;
            }
            Ok(())
        }
        CgroupDriver::Systemd => {
            use libcgroups::common::CgroupManager;
            let path = format!("{}:ferrio:{unit}", h.pod_cgroup);
            let m = systemd_manager(&path, unit)?;
            m.add_task(nix::unistd::Pid::from_raw(pid))
                .map_err(|e| CgroupError::Systemd(format!("starting scope for {path}: {e}")))
        }
    }
}

/// Makes a pod's cgroup: cgroupfs directories in every hierarchy; with the systemd driver
/// nothing (systemd makes a slice when the first unit in it starts). Returns whether ferrio
/// made it, and so must remove it.
pub fn create_pod(driver: CgroupDriver, cgroup: &str, own: bool) -> Result<bool, CgroupError> {
    match driver {
        CgroupDriver::Cgroupfs => Ok(create(cgroup)?),
        CgroupDriver::Systemd => {
            if !libcgroups::systemd::booted() {
                return Err(CgroupError::Systemd(
                    "the systemd cgroup driver needs systemd as PID 1".into(),
                ));
            }
            Ok(own)
        }
    }
}

/// Removes a pod's helper leaf and, when `made`, the pod cgroup itself (stops ferrio's own
/// slice with the systemd driver).
pub fn remove_pod(driver: CgroupDriver, cgroup: &str, made: bool) -> Result<(), CgroupError> {
    match driver {
        CgroupDriver::Cgroupfs => {
            remove(&helpers_leaf(cgroup))?;
            if made {
                remove(cgroup)?;
            }
            Ok(())
        }
        CgroupDriver::Systemd => {
            if !made {
                return Ok(());
            }
            use libcgroups::common::CgroupManager;
            let path = manager_path(cgroup);
            let m = systemd_manager(&path, cgroup)?;
            m.remove()
                .map_err(|e| CgroupError::Systemd(format!("stopping {cgroup}: {e}")))?;
            // StopUnit only queues a job: wait for systemd to finish it, so that the slice is
            // gone when RemovePodSandbox answers (as runc waits for its stop job).
            let dir = Path::new("/sys/fs/cgroup").join(fs_path(cgroup).trim_start_matches('/'));
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while dir.exists() {
                if std::time::Instant::now() > deadline {
                    return Err(CgroupError::Systemd(format!(
                        "{cgroup}: {} still there 10 s after StopUnit",
                        dir.display()
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(())
        }
    }
}

/// Creates `cgroup` (an absolute cgroup path such as `/ferrio/pod-…`) in every hierarchy.
/// cpuset directories get their parent's cpus and mems, which v1 leaves empty.
/// Returns whether it made the leaf anywhere (false when it existed already).
pub fn create(cgroup: &str) -> io::Result<bool> {
    let mut made = false;
    for (root, ctrls) in hierarchies() {
        if ctrls.iter().any(|c| c.starts_with("name=")) {
            continue;
        }
        let dir = join(&root, cgroup);
        if dir.is_dir() {
            continue;
        }
        // Make each missing component, so cpuset can be filled in level by level.
        let mut cur = root.clone();
        for comp in Path::new(cgroup.trim_start_matches('/')).components() {
            cur.push(comp);
            if cur.is_dir() {
                continue;
            }
            // 0755 whatever the daemon's umask, as cgroup directories are: a user-namespaced
            // container's init walks its way to its own cgroup through these.
            std::fs::create_dir(&cur)?;
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(0o755))?;
            }
            made = true;
            if ctrls.iter().any(|c| c == "cpuset") {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let parent = cur.parent().unwrap_or(&root).join(f);
                    if let Ok(v) = std::fs::read_to_string(&parent) {
                        let _ = std::fs::write(cur.join(f), v.trim());
                    }
                }
            }
        }
    }
    Ok(made)
}

/// Removes `cgroup` from every hierarchy (its children must be gone). A cgroup that is already
/// gone is fine; a busy one is retried briefly, as its last tasks may still be exiting.
pub fn remove(cgroup: &str) -> io::Result<()> {
    let mut last_err = None;
    for (root, _) in hierarchies() {
        let dir = join(&root, cgroup);
        if dir == root {
            continue;
        }
        for attempt in 0..50 {
            match std::fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    last_err = Some(io::Error::new(
                        e.kind(),
                        format!("removing cgroup {}: {e}", dir.display()),
                    ));
                    break;
                }
            }
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Whether `cgroup` exists in any hierarchy.
pub fn exists(cgroup: &str) -> bool {
    hierarchies()
        .iter()
        .any(|(root, _)| join(root, cgroup) != *root && join(root, cgroup).is_dir())
}

/// The memory cgroup directory of `cgroup` (v1 memory controller, else the v2 tree).
pub fn memory_dir(cgroup: &str) -> Option<PathBuf> {
    let h = hierarchies();
    h.iter()
        .find(|(_, c)| c.iter().any(|c| c == "memory"))
        .or_else(|| h.iter().find(|(_, c)| c.is_empty()))
        .map(|(root, _)| join(root, cgroup))
}

/// The number of OOM kills recorded for `cgroup` (v2 `memory.events`, v1
/// `memory.oom_control`'s `oom_kill`), or None when it cannot be read.
pub fn oom_kills(cgroup: &str) -> Option<u64> {
    let dir = memory_dir(cgroup)?;
    for (file, key) in [
        ("memory.events", "oom_kill"),
        ("memory.oom_control", "oom_kill"),
    ] {
        if let Ok(s) = std::fs::read_to_string(dir.join(file)) {
            if let Some(v) = parse_counter(&s, key) {
                return Some(v);
            }
        }
    }
    None
}

fn parse_counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_names() {
        assert_eq!(
            expand_slice("kubepods-burstable-pod1.slice").as_deref(),
            Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice")
        );
        assert_eq!(expand_slice("-.slice").as_deref(), Some("/"));
        assert_eq!(expand_slice("a--b.slice"), None);
        assert_eq!(expand_slice("a/b.slice"), None);
        assert_eq!(expand_slice("kubepods"), None);
        assert_eq!(
            parent_slice("kubepods-besteffort-pod1.slice"),
            "kubepods-besteffort.slice"
        );
        assert_eq!(parent_slice("kubepods.slice"), "-.slice");
        assert_eq!(
            fs_path("kubepods-pod1.slice:ferrio:abc"),
            "/kubepods.slice/kubepods-pod1.slice/ferrio-abc.scope"
        );
        assert_eq!(fs_path("/ferrio/pod-1/ferrio-2"), "/ferrio/pod-1/ferrio-2");
        assert!(is_systemd_name("a.slice") && !is_systemd_name("/a.slice"));
        assert_eq!(
            pod_cgroup(CgroupDriver::Systemd, "", "/ferrio", "ab"),
            "ferrio-podab.slice"
        );
        assert_eq!(
            pod_cgroup(CgroupDriver::Systemd, "", "machine.slice", "ab"),
            "machine-podab.slice"
        );
        assert_eq!(
            pod_cgroup(CgroupDriver::Cgroupfs, "", "/ferrio/", "ab"),
            "/ferrio/pod-ab"
        );
        assert_eq!(
            container_cgroup(CgroupDriver::Systemd, "kubepods-pod1.slice", "c"),
            "kubepods-pod1.slice:ferrio:c"
        );
        assert_eq!(
            helpers_leaf("/kubepods/pod1"),
            "/kubepods/pod1/ferrio-monitors"
        );
    }

    #[test]
    fn counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(super::parse_counter(v1, "oom_kill"), Some(3));
        let v2 = "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(super::parse_counter(v2, "oom_kill"), Some(1));
        assert_eq!(super::parse_counter(v2, "nope"), None);
    }
}
