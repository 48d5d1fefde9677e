//! `ferrio __exec`: runs one process in a running container (ExecSync) and waits for it.
//!
//! The request arrives as JSON on stdin; the process gets this helper's stdout and stderr (pipes
//! the daemon reads and caps), its stdin is /dev/null. With a timeout, the process and all its
//! descendants are killed when it expires and reaped here (we are a child subreaper), so nothing
//! is left running. The result is written to `result_file`.

use crate::runtime::{ExecProcess, Handler, Stdio};
use crate::sys::process::{descendants, pidfd_open};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub id: String,
    pub handler: Handler,
    pub process: ExecProcess,
    /// 0 means no limit.
    pub timeout_ms: u64,
    pub result_file: PathBuf,
    /// The process reads this helper's stdin (streaming exec); otherwise /dev/null.
    #[serde(default)]
    pub stdin: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: i32,
    pub timed_out: bool,
    pub error: Option<String>,
}

fn dup(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Entry point of `ferrio __exec [REQUEST.json]`: the request from the file, else from stdin
/// (then the process cannot read stdin).
pub fn main(request_file: Option<&std::path::Path>) -> i32 {
    let parsed = match request_file {
        Some(p) => std::fs::read(p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<ExecRequest>(&b).map_err(|e| e.to_string())),
        None => serde_json::from_reader(std::io::stdin().lock()).map_err(|e| e.to_string()),
    };
    let req: ExecRequest = match parsed {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ferrio __exec: bad request: {e}");
            return 2;
        }
    };
    let result = run(&req);
    let _ = crate::state::write_json(&req.result_file, &result);
    0
}

fn run(req: &ExecRequest) -> ExecResult {
    let fail = |e: String| ExecResult {
        exit_code: -1,
        timed_out: false,
        error: Some(e),
    };
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return fail(format!("PR_SET_CHILD_SUBREAPER: {e}"));
    }
    let stdio = (|| -> std::io::Result<Stdio> {
        Ok(Stdio {
            stdin: if req.stdin {
                dup(std::io::stdin().as_fd())?
            } else {
                std::fs::File::open("/dev/null")?.into()
            },
            stdout: dup(std::io::stdout().as_fd())?,
            stderr: dup(std::io::stderr().as_fd())?,
        })
    })();
    let stdio = match stdio {
        Ok(s) => s,
        Err(e) => return fail(e.to_string()),
    };
    let runtime = req.handler.runtime();
    let pid = match runtime.exec(&req.id, &req.process, stdio) {
        Ok(e) => e.pid,
        Err(e) => return fail(e.to_string()),
    };
    let deadline =
        (req.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(req.timeout_ms));
    let pidfd = pidfd_open(pid).ok();
    loop {
        if let Some((code, _)) = super::reap_all(Some(pid)) {
            super::reap_all(None);
            return ExecResult {
                exit_code: code,
                timed_out: false,
                error: None,
            };
        }
        let wait_ms = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // Kill the whole tree, deepest last discovered first, then the process.
                    for p in descendants(pid).into_iter().rev() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(p),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    // Wait until the process itself is reaped.
                    let until = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < until {
                        if super::reap_all(Some(pid)).is_some() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    super::reap_all(None);
                    return ExecResult {
                        exit_code: 137,
                        timed_out: true,
                        error: None,
                    };
                }
                left.as_millis().min(1000) as u16
            }
            None => 1000,
        };
        match &pidfd {
            Some(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(wait_ms.max(1)));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
