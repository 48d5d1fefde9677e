//! Leak probes: mounts, processes and cgroups left on the host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mounts (from /proc/self/mountinfo) whose mount point contains `needle`.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Processes whose command line contains `needle`.
pub fn processes_containing(needle: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && pid != std::process::id() as i32 {
            out.push((pid, cmd));
        }
    }
    out
}

/// Cgroup directories (any hierarchy) whose path contains `needle`.
pub fn cgroups_containing(needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let p = e.path();
                if p.to_string_lossy().contains(needle) {
                    out.push(p.clone());
                }
                if p.components().count() < 12 {
                    stack.push(p);
                }
            }
        }
    }
    out
}

/// Entries of a directory (none when it does not exist).
pub fn entries(p: &Path) -> Vec<String> {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The leak check every test gets when its daemon is dropped: what is left on the host of the
/// daemons that ran on `dir` with pods under `cgroup_parent` — processes whose command line names
/// `dir` (monitors, pinning helpers), processes and cgroups under the parent, mounts under `dir`.
/// Each is described in the result, then cleared (killed, unmounted, removed). The parent
/// itself, empty, is the daemon's to keep (as on a node) and the harness's to remove.
pub fn clear_leaks(dir: &Path, cgroup_parent: &str) -> Vec<String> {
    let mut leaks = Vec::new();
    let dir_s = dir.display().to_string();
    let parent_name = cgroup_parent.trim_start_matches('/');
    let cgroups = cgroups_containing(parent_name);
    let (parents, mut children): (Vec<PathBuf>, Vec<PathBuf>) = cgroups
        .into_iter()
        .partition(|p| p.file_name().is_some_and(|n| n == parent_name));
    let mut pids: Vec<(i32, String)> = processes_containing(&dir_s);
    for cg in children.iter().chain(parents.iter()) {
        let procs = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if !pids.iter().any(|(p, _)| *p == pid) {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                pids.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
            }
        }
    }
    for (pid, cmd) in &pids {
        leaks.push(format!("process {pid}: {cmd}"));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let mut mounts = mounts_containing(&dir_s);
    // Deepest first, each once (a path may be mounted over more than once).
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts.dedup();
    for m in &mounts {
        leaks.push(format!("mount {m}"));
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    children.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for cg in &children {
        leaks.push(format!("cgroup {}", cg.display()));
    }
    // Killed processes take a moment to leave their cgroups.
    let deadline = Instant::now() + Duration::from_secs(5);
    for cg in children.iter().chain(parents.iter()) {
        while std::fs::remove_dir(cg).is_err() && cg.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    leaks
}
