//! Restore for the built-in handler: libcontainer 0.7 can checkpoint but not restore, so the
//! monitor runs `criu restore` itself, as runc does inside its `restore`, and then writes the
//! libcontainer state a created container would have, so that exec, kill, update, stats and
//! delete work on the restored container as on any other.
//!
//! What runc's restore does that this does too: the rootfs (already mounted) is CRIU's root;
//! every mount the dump declared external is mapped to its new source (the spec's bind mounts,
//! masked files to `/dev/null`, cgroup mounts to the container's new cgroup); a pod's network
//! namespace is handed in under runc's key `extRootNetNS`; the init's stdio pipes are replaced
//! by the monitor's new ones (`descriptors.json`); CRIU runs inside the container's cgroup,
//! made by libcgroups first, so the restored tree is born there. The restored init becomes the
//! monitor's child (`--restore-sibling`).

use super::{RestoreFrom, RuntimeError, Stdio};
use crate::sys::process::{fork_single_threaded, Forked};
use libcgroups::common::{AnyCgroupManager, CgroupManager};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const NAME: &str = "ferrio(libcontainer)";

/// Where a restore's parts are on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct RestorePlan {
    pub images: PathBuf,
    pub work: PathBuf,
    pub rootfs: PathBuf,
    pub pid_file: PathBuf,
    /// What the checkpointed init's fds 0–2 were (`descriptors.json`).
    pub descriptors: Vec<String>,
    /// The pod's network namespace, open at this descriptor in CRIU.
    pub netns_fd: Option<i32>,
    /// The cgroup mounts a container has (`/sys/fs/cgroup/<hierarchy>`, or `/sys/fs/cgroup` on
    /// a unified host) and the host directory each binds ([`cgroup_mounts`]).
    pub cgroup_mounts: Vec<(String, PathBuf)>,
}

/// `criu restore`'s arguments for `spec` (the container's config.json) and `plan`.
pub fn restore_args(spec: &serde_json::Value, plan: &RestorePlan) -> Vec<String> {
    let mut args: Vec<String> = [
        "restore",
        "--images-dir",
        &plan.images.display().to_string(),
        "--work-dir",
        &plan.work.display().to_string(),
        "--root",
        &plan.rootfs.display().to_string(),
        "--pidfile",
        &plan.pid_file.display().to_string(),
        "--restore-detached",
        "--restore-sibling",
        // CRIU runs in the container's cgroup already: what it forks stays there.
        "--manage-cgroups=ignore",
        "--tcp-established",
        "--file-locks",
        "--log-file",
        "restore.log",
        "-v4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut map = |key: &str, value: &str| {
        args.push("--ext-mount-map".into());
        args.push(format!("{key}:{value}"));
    };
    // The spec's bind mounts, under their destination as the dump named them.
    for m in spec["mounts"].as_array().into_iter().flatten() {
        let bind = m["type"] == "bind"
            || m["options"]
                .as_array()
                .is_some_and(|o| o.iter().any(|x| x == "bind" || x == "rbind"));
        if let (true, Some(dest), Some(src)) =
            (bind, m["destination"].as_str(), m["source"].as_str())
        {
            map(dest, src);
        }
    }
    // Masked files some runtimes bind from the host's /dev/null.
    for p in spec["linux"]["maskedPaths"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_str() {
            map(p, "/dev/null");
        }
    }
    for (key, dir) in &plan.cgroup_mounts {
        map(key, &dir.display().to_string());
    }
    // The LSM label the new spec gives, as runc's restore does, not the checkpoint's.
    if let Some(p) = spec["process"]["apparmorProfile"]
        .as_str()
        .filter(|p| !p.is_empty())
    {
        args.push("--lsm-profile".into());
        args.push(format!("apparmor:{p}"));
    } else if let Some(l) = spec["process"]["selinuxLabel"]
        .as_str()
        .filter(|l| !l.is_empty())
    {
        args.push("--lsm-profile".into());
        args.push(format!("selinux:{l}"));
    }
    if let Some(fd) = plan.netns_fd {
        args.push("--inherit-fd".into());
        args.push(format!("fd[{fd}]:extRootNetNS"));
    }
    // The new stdio pipes stand in for the old ones (CRIU's fds 0–2 are the new ones).
    for (n, d) in plan.descriptors.iter().enumerate().take(3) {
        if d.starts_with("pipe:") {
            args.push("--inherit-fd".into());
            args.push(format!("fd[{n}]:{d}"));
        }
    }
    args
}

fn fail<'a>(op: &'static str, id: &'a str) -> impl Fn(String) -> RuntimeError + 'a {
    move |m| RuntimeError::new(NAME, op, id, m)
}

/// Restores container `id` from `from` into the rootfs of `<bundle>/config.json`, with the
/// container's cgroup made by `manager`; returns the restored init's pid, a child of this
/// process. On failure nothing is left: the cgroup is removed and CRIU has killed what it made.
pub fn restore(
    id: &str,
    bundle: &Path,
    from: &RestoreFrom,
    stdio: Stdio,
    manager: &AnyCgroupManager,
    resources: Option<&oci_spec::runtime::LinuxResources>,
    cgroup: &str,
) -> Result<i32, RuntimeError> {
    let fail = fail("restore", id);
    if stdio.console.is_some() {
        return Err(fail(
            "a container with a terminal cannot be restored by the built-in handler".into(),
        ));
    }
    let spec: serde_json::Value = std::fs::read(bundle.join("config.json"))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| fail(format!("the bundle's config.json: {e}")))?;
    let rootfs = match spec["root"]["path"].as_str() {
        Some(p) => bundle.join(p),
        None => return Err(fail("the spec has no root".into())),
    };
    let descriptors: Vec<String> = std::fs::read(from.images.join("descriptors.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    // The pod's network namespace, when the container joins one by path.
    let netns: Option<OwnedFd> = match spec["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
    {
        Some(p) => Some(
            std::fs::File::open(p)
                .map(OwnedFd::from)
                .map_err(|e| fail(format!("opening the network namespace {p}: {e}")))?,
        ),
        None => None,
    };
    let cgroup_mounts = cgroup_mounts(
        cgroup,
        &std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(),
    );
    let work = from.images.with_file_name("restore-work");
    let plan = RestorePlan {
        images: from.images.clone(),
        work: work.clone(),
        rootfs,
        pid_file: bundle.join("init.pid"),
        descriptors,
        netns_fd: netns.as_ref().map(|f| f.as_raw_fd()),
        cgroup_mounts,
    };
    let args = restore_args(&spec, &plan);
    let _ = std::fs::remove_file(&plan.pid_file);
    let status = run_in_cgroup(&from.criu, &args, stdio, netns.as_ref(), manager, resources)
        .map_err(|e| {
            remove_restored(manager);
            fail(e)
        })?;
    if !status {
        remove_restored(manager);
        return Err(fail(format!("criu restore failed: {}", log_errors(&work))));
    }
    match std::fs::read_to_string(&plan.pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        Some(pid) => Ok(pid),
        None => {
            remove_restored(manager);
            Err(fail("criu restore wrote no pid file".into()))
        }
    }
}

/// After a restore that cannot be used: every process in the container's cgroup killed, then
/// the cgroup removed (libcgroups retries while the killed ones exit).
pub fn remove_restored(manager: &AnyCgroupManager) {
    for pid in manager.get_all_pids().unwrap_or_default() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = manager.remove();
}

/// The v1 controllers libcgroups puts a container's processes in.
const MANAGED_V1: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// What each cgroup mount of the container binds, as libcontainer mounts them: every hierarchy
/// under `/sys/fs/cgroup/<name>` from the container's cgroup where libcgroups placed it (a
/// unified host: its one tree at `/sys/fs/cgroup`), the others (`name=systemd`, the empty v2
/// tree of a hybrid host) from this process's own cgroup there (`own`, /proc/self/cgroup),
/// which CRIU and so the restored tree inherit.
fn cgroup_mounts(cgroup: &str, own: &str) -> Vec<(String, PathBuf)> {
    let hierarchies = crate::cgroups::hierarchies();
    if crate::cgroups::is_unified() {
        return hierarchies
            .into_iter()
            .filter(|(_, c)| c.is_empty())
            .map(|(root, _)| {
                (
                    "/sys/fs/cgroup".into(),
                    root.join(cgroup.trim_start_matches('/')),
                )
            })
            .collect();
    }
    cgroup_mounts_v1(&hierarchies, cgroup, own)
}

fn cgroup_mounts_v1(
    hierarchies: &[(PathBuf, Vec<String>)],
    cgroup: &str,
    own: &str,
) -> Vec<(String, PathBuf)> {
    // `<id>:<hierarchy>:<path>` lines: a v1 hierarchy by its controllers (a named one as
    // `name=<name>`, which is also its mount point's name), the v2 tree as `0::`.
    let own_path = |root: &Path, ctrls: &[String]| -> Option<String> {
        let sorted = |mut v: Vec<String>| {
            v.sort_unstable();
            v
        };
        let want = if ctrls.is_empty() {
            sorted(vec![root.file_name()?.to_string_lossy().to_string()])
        } else {
            sorted(ctrls.to_vec())
        };
        let lines = own.lines().filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, c, p) = (f.next()?, f.next()?, f.next()?);
            Some((c, p))
        });
        let named = lines.clone().find_map(|(c, p)| {
            let listed: Vec<String> = c
                .split(',')
                .filter(|x| !x.is_empty())
                .map(|x| x.trim_start_matches("name=").to_string())
                .collect();
            (!listed.is_empty() && sorted(listed) == want).then(|| p.to_string())
        });
        // Nothing by that name and no controllers: the v2 tree.
        named.or_else(|| {
            lines
                .clone()
                .find(|(c, _)| c.is_empty() && ctrls.is_empty())
                .map(|(_, p)| p.to_string())
        })
    };
    hierarchies
        .iter()
        .filter_map(|(root, ctrls)| {
            let name = root.file_name()?.to_string_lossy().to_string();
            let path = if ctrls.iter().any(|c| MANAGED_V1.contains(&c.as_str())) {
                cgroup.to_string()
            } else {
                own_path(root, ctrls)?
            };
            Some((
                format!("/sys/fs/cgroup/{name}"),
                root.join(path.trim_start_matches('/')),
            ))
        })
        .collect()
}

/// The first errors of CRIU's restore log.
fn log_errors(work: &Path) -> String {
    let errors = log_file_errors(&work.join("restore.log"));
    if errors.is_empty() {
        "see restore.log".into()
    } else {
        errors
    }
}

/// The first five errors of a CRIU log file (not the RLIMIT_NOFILE one, which root without
/// CAP_SYS_RESOURCE gets and which is harmless), joined.
pub fn log_file_errors(log: &Path) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .take(5)
        .collect();
    errors.join("; ")
}

/// Runs CRIU with `args`, as a child that waits until libcgroups has put it into the
/// container's cgroup (and applied `resources`) before it execs: the tree CRIU restores is
/// forked from it, so it is born in the cgroup. Its fds 0–2 are `stdio`; `netns` stays open.
/// Returns whether CRIU succeeded.
fn run_in_cgroup(
    criu: &Path,
    args: &[String],
    stdio: Stdio,
    netns: Option<&OwnedFd>,
    manager: &AnyCgroupManager,
    resources: Option<&oci_spec::runtime::LinuxResources>,
) -> Result<bool, String> {
    use std::ffi::CString;
    let cstr = |s: &str| CString::new(s).map_err(|e| e.to_string());
    let prog = cstr(&criu.display().to_string())?;
    let mut argv = vec![prog.clone()];
    for a in args {
        argv.push(cstr(a)?);
    }
    // A bare name is looked up in PATH (its default when unset), as a Command would; a
    // path with a slash is used as it is.
    let prog_path = if criu.components().count() > 1 {
        prog
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let found = std::env::split_paths(&path)
            .filter(|d| d.is_absolute())
            .map(|d| d.join(criu))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("{} not found in PATH (runtime.criu_path)", criu.display()))?;
        cstr(&found.display().to_string())?
    };
    let (go_r, go_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let child = match fork_single_threaded().map_err(|e| format!("fork: {e}"))? {
        Forked::Child => {
            drop(go_w);
            let mut b = [0u8; 1];
            if nix::unistd::read(go_r.as_raw_fd(), &mut b) != Ok(1) {
                std::process::exit(111);
            }
            let code = exec_criu(&prog_path, &argv, stdio, netns);
            std::process::exit(code);
        }
        Forked::Parent(pid) => pid,
    };
    drop(go_r);
    drop(stdio);
    let child_pid = nix::unistd::Pid::from_raw(child);
    let placed = manager
        .add_task(child_pid)
        .map_err(|e| format!("making the container's cgroup: {e}"))
        .and_then(|()| match resources {
            Some(r) => manager
                .apply(&libcgroups::common::ControllerOpt {
                    resources: r,
                    disable_oom_killer: false,
                    oom_score_adj: None,
                    freezer_state: None,
                })
                .map_err(|e| format!("applying the container's resources: {e}")),
            None => Ok(()),
        });
    if placed.is_ok() {
        let _ = nix::unistd::write(&go_w, b"g");
    }
    drop(go_w);
    let status = wait_bounded(child_pid, RESTORE_TIMEOUT)?;
    placed?;
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(true),
        nix::sys::wait::WaitStatus::Exited(_, 127) => {
            Err(format!("cannot run {} (runtime.criu_path)", criu.display()))
        }
        _ => Ok(false),
    }
}

/// The longest CRIU may take to restore; past it, it is killed and the create fails (and the
/// caller kills what it made), so a restore that hangs cannot hold the monitor forever.
const RESTORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Waits for child `pid` at most `timeout` (polling: this single-threaded helper has nothing
/// else to do meanwhile); past it the child is killed, reaped, and that is the error.
fn wait_bounded(
    pid: nix::unistd::Pid,
    timeout: std::time::Duration,
) -> Result<nix::sys::wait::WaitStatus, String> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).map_err(|e| format!("waitpid: {e}"))? {
            WaitStatus::StillAlive => {}
            st => return Ok(st),
        }
        if std::time::Instant::now() >= deadline {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(format!("criu restore did not finish within {timeout:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// In the forked child: stdio onto 0–2, the netns fd kept open, then exec. Returns the exit
/// code when either fails.
fn exec_criu(
    prog: &std::ffi::CStr,
    argv: &[std::ffi::CString],
    stdio: Stdio,
    netns: Option<&OwnedFd>,
) -> i32 {
    let fds = [
        stdio.stdin.as_raw_fd(),
        stdio.stdout.as_raw_fd(),
        stdio.stderr.as_raw_fd(),
    ];
    let keep: Vec<i32> = netns.iter().map(|f| f.as_raw_fd()).collect();
    if crate::sys::process::child_stdio(fds, &keep).is_err() {
        return 126;
    }
    // The monitor ignores SIGPIPE; CRIU gets the default, as a Command would give it.
    crate::sys::process::default_sigpipe();
    let _ = nix::unistd::execv(prog, argv);
    127
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_maps_every_external_mount_the_pipes_and_the_pod_network() {
        let spec = serde_json::json!({
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/run/p/hosts",
                 "options": ["rbind", "ro"]},
                {"destination": "/data", "source": "/srv/data", "options": ["bind"]},
            ],
            "linux": {"maskedPaths": ["/proc/kcore"]},
            "process": {"apparmorProfile": "ferrio-default"},
        });
        let plan = RestorePlan {
            images: "/d/checkpoint".into(),
            work: "/d/restore-work".into(),
            rootfs: "/b/rootfs".into(),
            pid_file: "/b/init.pid".into(),
            descriptors: vec!["/dev/null".into(), "pipe:[11]".into(), "pipe:[12]".into()],
            netns_fd: Some(7),
            cgroup_mounts: cgroup_mounts_v1(
                &[
                    ("/sys/fs/cgroup/memory".into(), vec!["memory".into()]),
                    (
                        "/sys/fs/cgroup/cpu,cpuacct".into(),
                        vec!["cpu".into(), "cpuacct".into()],
                    ),
                    // As `cgroups::hierarchies()` has them: `name=` options are not controllers.
                    ("/sys/fs/cgroup/systemd".into(), vec![]),
                    ("/sys/fs/cgroup/unified".into(), vec![]),
                ],
                "/ferrio/pod/ctr",
                "12:memory:/\n4:cpuacct,cpu:/\n0::/helpers\n1:name=systemd:/user.slice\n",
            ),
        };
        let args = restore_args(&spec, &plan).join(" ");
        for want in [
            "restore --images-dir /d/checkpoint --work-dir /d/restore-work --root /b/rootfs",
            "--pidfile /b/init.pid --restore-detached --restore-sibling --manage-cgroups=ignore",
            "--ext-mount-map /etc/hosts:/run/p/hosts --ext-mount-map /data:/srv/data",
            "--ext-mount-map /proc/kcore:/dev/null",
            "--lsm-profile apparmor:ferrio-default",
            "--ext-mount-map /sys/fs/cgroup/memory:/sys/fs/cgroup/memory/ferrio/pod/ctr",
            "--ext-mount-map /sys/fs/cgroup/cpu,cpuacct:/sys/fs/cgroup/cpu,cpuacct/ferrio/pod/ctr",
            // The hierarchies libcgroups does not manage bind this process's own cgroup there.
            "--ext-mount-map /sys/fs/cgroup/systemd:/sys/fs/cgroup/systemd/user.slice",
            "--ext-mount-map /sys/fs/cgroup/unified:/sys/fs/cgroup/unified/helpers",
            "--inherit-fd fd[7]:extRootNetNS --inherit-fd fd[1]:pipe:[11] --inherit-fd fd[2]:pipe:[12]",
        ] {
            assert!(args.contains(want), "{want:?} not in {args}");
        }
        assert!(!args.contains("/proc:"), "{args}");
        assert!(!args.contains("fd[0]"), "{args}");
        let no_net = RestorePlan {
            netns_fd: None,
            ..plan
        };
        let args = restore_args(&spec, &no_net).join(" ");
        assert!(!args.contains("extRootNetNS"), "{args}");
    }
}
