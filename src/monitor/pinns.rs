//! `ferrio __pin-ns <request JSON>`: makes a pod's namespaces and pins them (CRI-O's pinns).
//!
//! It unshares the requested network, IPC and UTS namespaces, sets the hostname, brings `lo`
//! up, applies the pod's sysctls inside the new namespaces, and bind-mounts each
//! `/proc/self/ns/<kind>` onto a file in the pod's `ns/` directory, which keeps the namespace
//! alive after this helper exits. With `pause`, it also unshares a PID namespace and forks the
//! pod's pause process (PID 1 there), which reaps orphans and exits on SIGTERM or SIGINT.

use crate::sys::mount::bind;
use crate::sys::process::{fork_single_threaded, Forked};
use nix::sched::{unshare, CloneFlags};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    std::fs::create_dir_all(&req.dir)
        .map_err(|e| format!("creating {}: {e}", req.dir.display()))?;
    for (kind, on) in [("net", req.net), ("ipc", req.ipc), ("uts", req.uts)] {
        if !on {
            continue;
        }
        let target = req.dir.join(kind);
        std::fs::File::create(&target)
            .map_err(|e| format!("creating {}: {e}", target.display()))?;
        bind(&PathBuf::from(format!("/proc/self/ns/{kind}")), &target)
            .map_err(|e| e.to_string())?;
    }
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

/// The pod's PID 1: reaps whatever is reparented to it, exits on SIGTERM or SIGINT.
fn pause() -> ! {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let _ = nix::unistd::setsid();
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
