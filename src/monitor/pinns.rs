//! `ferrio __pin-ns <request JSON>`: makes a pod's namespaces and pins them (CRI-O's pinns).
//!
//! It unshares the requested network, IPC and UTS namespaces, sets the hostname, brings `lo`
//! up, applies the pod's sysctls inside the new namespaces, and bind-mounts each
//! `/proc/<pid>/ns/<kind>` onto a file in the pod's `ns/` directory, which keeps the namespace
//! alive after this helper exits. With `pause`, it also unshares a PID namespace and forks the
//! pod's pause process (PID 1 there), which reaps orphans and exits on SIGTERM or SIGINT.
//!
//! With `userns` (a pod with its own user namespace), a forked child unshares the user
//! namespace first; this process — root in the host's user namespace, which the child no longer
//! is — writes the child's uid_map and gid_map, then the child makes the other namespaces, so
//! that they belong to the new user namespace (mounting sysfs, proc and mqueue in the
//! containers needs that), and this process pins the child's namespaces, `user` included.
//! Only the user namespace may be asked for: `__pin-ns` then pins just that (the user
//! namespace of an idmapped mount).

use crate::model::IdMapping;
use crate::sys::mount::bind;
use crate::sys::process::{fork_single_threaded, Forked};
use nix::sched::{unshare, CloneFlags};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PinRequest {
    pub dir: PathBuf,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    pub hostname: String,
    pub sysctls: BTreeMap<String, String>,
    pub pause: bool,
    /// A new user namespace with these uid and gid mappings (lines of uid_map / gid_map).
    #[serde(default)]
    pub userns: Option<(Vec<IdMapping>, Vec<IdMapping>)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PinResult {
    pub error: Option<String>,
    pub pause_pid: Option<i32>,
}

use super::answer;

/// Entry point of `ferrio __pin-ns`.
pub fn main(request: &str) -> i32 {
    let req: PinRequest = match serde_json::from_str(request) {
        Ok(r) => r,
        Err(e) => {
            answer(&PinResult {
                error: Some(format!("bad request: {e}")),
                pause_pid: None,
            });
            return 2;
        }
    };
    match pin(&req) {
        Ok(pause_pid) => {
            answer(&PinResult {
                error: None,
                pause_pid,
            });
            0
        }
        Err(e) => {
            answer(&PinResult {
                error: Some(e),
                pause_pid: None,
            });
            1
        }
    }
}

/// The /proc/sys path of a sysctl (`net.ipv4.ip_forward` or `net/ipv4/ip_forward`).
pub fn sysctl_path(key: &str) -> Result<PathBuf, String> {
    if key.is_empty() || key.contains("..") || key.contains('\0') || key.starts_with('/') {
        return Err(format!("invalid sysctl name {key:?}"));
    }
    // Two notations: dots as separators (a slash is then a literal part of a name, as in
    // `net.ipv4.conf.eth0/100.forwarding`), or slashes as separators. The first separator
    // tells which.
    let dots_first = match (key.find('.'), key.find('/')) {
        (Some(d), Some(s)) => d < s,
        (Some(_), None) => true,
        _ => false,
    };
    let path: String = if dots_first {
        key.chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect()
    } else {
        key.to_string()
    };
    Ok(PathBuf::from("/proc/sys").join(path))
}

fn pin(req: &PinRequest) -> Result<Option<i32>, String> {
    if req.userns.is_some() {
        return pin_in_userns(req);
    }
    make_namespaces(req)?;
    pin_from(req, "self", false)?;
    pin_pid(req, fork_pause(req)?)
}

/// The namespaces other than the user namespace, made in this process: unshare, hostname,
/// `lo`, sysctls.
fn make_namespaces(req: &PinRequest) -> Result<(), String> {
    let mut flags = CloneFlags::empty();
    if req.net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if req.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if req.uts {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if req.pause {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    if flags.is_empty() {
        return Ok(());
    }
    unshare(flags).map_err(|e| format!("unshare({flags:?}): {e}"))?;
    if req.uts && !req.hostname.is_empty() {
        nix::unistd::sethostname(&req.hostname).map_err(|e| format!("sethostname: {e}"))?;
    }
    if req.net {
        crate::sys::net::loopback_up().map_err(|e| format!("bringing lo up: {e}"))?;
    }
    for (k, v) in &req.sysctls {
        let p = sysctl_path(k)?;
        std::fs::write(&p, v).map_err(|e| format!("sysctl {k}={v}: {e}"))?;
    }
    Ok(())
}

/// The pause process (its host pid), PID 1 of the PID namespace unshared before, when the pod
/// shares one.
fn fork_pause(req: &PinRequest) -> Result<Option<i32>, String> {
    if !req.pause {
        return Ok(None);
    }
    match fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        Forked::Parent(pid) => Ok(Some(pid)),
        Forked::Child => {
            pause();
        }
    }
}

/// Bind-mounts `/proc/<pid>/ns/<kind>` of every namespace asked for onto `<dir>/<kind>`.
fn pin_from(req: &PinRequest, pid: &str, user: bool) -> Result<(), String> {
    std::fs::create_dir_all(&req.dir)
        .map_err(|e| format!("creating {}: {e}", req.dir.display()))?;
    for (kind, on) in [
        ("user", user),
        ("net", req.net),
        ("ipc", req.ipc),
        ("uts", req.uts),
    ] {
        if on {
            pin_one(req, pid, kind)?;
        }
    }
    Ok(())
}

/// Bind-mounts `/proc/<pid>/ns/<kind>` onto `<dir>/<kind>`.
fn pin_one(req: &PinRequest, pid: &str, kind: &str) -> Result<(), String> {
    let target = req.dir.join(kind);
    std::fs::File::create(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    bind(&PathBuf::from(format!("/proc/{pid}/ns/{kind}")), &target).map_err(|e| e.to_string())
}

/// The pod's PID namespace, pinned from its pause once that runs: containers join it by that
/// file, which needs no access to the pause process itself (it is not dumpable).
fn pin_pid(req: &PinRequest, pause: Option<i32>) -> Result<Option<i32>, String> {
    if let Some(pid) = pause {
        if let Err(e) = pin_one(req, &pid.to_string(), "pid") {
            // Nobody would know of this pause: do not leave it behind.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(e);
        }
    }
    Ok(pause)
}

/// uid_map / gid_map text: one `<inside> <outside> <length>` line per mapping.
pub fn map_lines(maps: &[IdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.length))
        .collect()
}

/// The user-namespace path (see the module documentation). The child reports on a pipe:
/// `u` once it is in its new user namespace, then a JSON line when its other namespaces are
/// made; after this process has pinned them (and written `p`), it forks the pause process,
/// answers a second JSON line and exits.
fn pin_in_userns(req: &PinRequest) -> Result<Option<i32>, String> {
    let (uids, gids) = req.userns.clone().unwrap_or_default();
    let (from_child, child_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (child_r, to_child) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let child = match fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        Forked::Child => {
            drop(from_child);
            drop(to_child);
            userns_child(req, child_w, child_r);
        }
        Forked::Parent(pid) => pid,
    };
    drop(child_w);
    drop(child_r);
    let mut from_child = std::io::BufReader::new(std::fs::File::from(from_child));
    let mut to_child = std::fs::File::from(to_child);
    let answer = |from_child: &mut std::io::BufReader<std::fs::File>| {
        let mut line = String::new();
        std::io::BufRead::read_line(from_child, &mut line).map_err(|e| e.to_string())?;
        let res: PinResult = serde_json::from_str(line.trim())
            .map_err(|e| format!("the user-namespace child answered {line:?}: {e}"))?;
        match res.error {
            Some(e) => Err(e),
            None => Ok(res.pause_pid),
        }
    };
    let result = (|| -> Result<Option<i32>, String> {
        let mut b = [0u8; 1];
        from_child
            .read_exact(&mut b)
            .map_err(|_| "the user-namespace child exited early".to_string())?;
        if b[0] != b'u' {
            return Err(answer(&mut from_child)
                .err()
                .unwrap_or_else(|| "the user-namespace child failed".into()));
        }
        for (file, maps) in [("uid_map", &uids), ("gid_map", &gids)] {
            let path = format!("/proc/{child}/{file}");
            std::fs::write(&path, map_lines(maps)).map_err(|e| format!("writing {path}: {e}"))?;
        }
        to_child.write_all(b"m").map_err(|e| e.to_string())?;
        answer(&mut from_child)?;
        pin_from(req, &child.to_string(), true)?;
        to_child.write_all(b"p").map_err(|e| e.to_string())?;
        pin_pid(req, answer(&mut from_child)?)
    })();
    drop(to_child);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
    result
}

/// The child of [`pin_in_userns`]; never returns.
fn userns_child(req: &PinRequest, w: std::os::fd::OwnedFd, r: std::os::fd::OwnedFd) -> ! {
    fn report(w: &mut std::fs::File, res: Result<Option<i32>, String>) {
        let line = serde_json::to_string(&PinResult {
            error: res.as_ref().err().cloned(),
            pause_pid: res.ok().flatten(),
        })
        .unwrap_or_default();
        let _ = writeln!(w, "{line}");
    }
    fn wait_for(r: &mut std::fs::File, what: u8) -> bool {
        let mut b = [0u8; 1];
        r.read_exact(&mut b).is_ok() && b[0] == what
    }
    let (mut w, mut r) = (std::fs::File::from(w), std::fs::File::from(r));
    if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER) {
        let _ = w.write_all(b"x");
        report(&mut w, Err(format!("unshare(CLONE_NEWUSER): {e}")));
        std::process::exit(1);
    }
    let _ = w.write_all(b"u");
    if !wait_for(&mut r, b'm') {
        std::process::exit(1);
    }
    // Become the namespace's root (the pod's root on the host), so that neither this child nor
    // the pause it forks is an unmapped host root inside the pod, and the namespaced sysctls
    // see their namespace's owner.
    let ids = nix::unistd::setresgid(0.into(), 0.into(), 0.into())
        .and_then(|()| nix::unistd::setgroups(&[]))
        .and_then(|()| nix::unistd::setresuid(0.into(), 0.into(), 0.into()));
    if let Err(e) = ids {
        report(
            &mut w,
            Err(format!("becoming root in the user namespace: {e}")),
        );
        std::process::exit(1);
    }
    let made = make_namespaces(req);
    let failed = made.is_err();
    report(&mut w, made.map(|()| None));
    if failed || !wait_for(&mut r, b'p') {
        std::process::exit(1);
    }
    report(&mut w, fork_pause(req));
    std::process::exit(0);
}

/// The pod's PID 1: reaps whatever is reparented to it, exits on SIGTERM or SIGINT.
fn pause() -> ! {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let _ = nix::unistd::setsid();
    // Not dumpable: its memory was set up in the host's user namespace, so nothing in the pod
    // (not even with CAP_SYS_PTRACE there) can ptrace it or reach its root (the host's /)
    // through /proc/1/root.
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::unistd::chdir("/");
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in [0, 1, 2] {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
    // Nothing inherited from the helper (its pipes) stays open.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .filter(|fd| *fd > 2)
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        set.add(s);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                super::reap_all(None);
            }
            Ok(_) => std::process::exit(0),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sysctl_paths() {
        assert_eq!(
            super::sysctl_path("net.ipv4.ip_forward").unwrap().to_str(),
            Some("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            super::sysctl_path("net/ipv4/conf/eth0.100/forwarding")
                .unwrap()
                .to_str(),
            Some("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        assert_eq!(
            super::sysctl_path("net.ipv4.conf.eth0/100.forwarding")
                .unwrap()
                .to_str(),
            Some("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        assert!(super::sysctl_path("../etc").is_err());
        assert!(super::sysctl_path("/abs").is_err());
    }
}
