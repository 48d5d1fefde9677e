//! The pod cgroups ferrio makes itself (cgroupfs driver), on cgroup v1 and v2 alike.
//!
//! Containers' own cgroups are made and removed by the OCI runtime (libcontainer's libcgroups,
//! or runc/crun) from the spec's `cgroupsPath`; this module only knows where the hierarchies are
//! mounted, so that a pod's cgroup can be created beside them and removed in every hierarchy,
//! and it reads the OOM-kill counters the monitor compares. Hand-written because it is a few
//! directory operations over /proc/self/mountinfo; libcgroups manages one cgroup, not trees.

use std::io;
use std::path::{Path, PathBuf};

/// Mount points of every cgroup hierarchy (v1 controllers and the v2 unified tree), with the
/// v1 controllers each one carries (empty for v2).
pub fn hierarchies() -> Vec<(PathBuf, Vec<String>)> {
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
    root.join(cgroup.trim_start_matches('/'))
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
            std::fs::create_dir(&cur)?;
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
    #[test]
    fn counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(super::parse_counter(v1, "oom_kill"), Some(3));
        let v2 = "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(super::parse_counter(v2, "oom_kill"), Some(1));
        assert_eq!(super::parse_counter(v2, "nope"), None);
    }
}
