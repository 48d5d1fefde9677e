//! `ferrio __exec`: runs one process in a running container (ExecSync) and waits for it.
//!
//! The request arrives as JSON on stdin; the process gets this helper's stdout and stderr (pipes
//! the daemon reads and caps), its stdin is /dev/null. With a timeout, the process and all its
//! descendants are killed when it expires and reaped here (we are a child subreaper), so nothing
//! is left running. So are they when the daemon stops waiting — its RPC cancelled, its session
//! closed, the daemon gone: the daemon holds the other end of this helper's lifeline
//! (`sys::process::give_lifeline`), and its hang-up is the signal. The result is written to
//! `result_file`.

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
    /// The daemon gave this helper a lifeline (descriptor 3).
    #[serde(default)]
    pub lifeline: bool,
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
    let lifeline = if req.lifeline {
        match crate::sys::process::take_lifeline() {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("ferrio __exec: the lifeline: {e}");
                return 2;
            }
        }
    } else {
        None
    };
    let result = run(&req, lifeline.as_ref());
    let _ = crate::state::write_json_volatile(&req.result_file, &result);
    0
}

/// Kills `pid` and all its descendants (deepest last discovered first), then reaps it.
fn kill_tree(pid: i32) {
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
}

/// Whether the daemon hung up its end of the lifeline (readable means EOF or hang-up: it
/// never writes).
fn hung_up(fds: &[PollFd], at: Option<usize>) -> bool {
    at.and_then(|i| fds.get(i))
        .and_then(|f| f.revents())
        .is_some_and(|r| !r.is_empty())
}

fn cancelled() -> ExecResult {
    ExecResult {
        exit_code: 137,
        timed_out: false,
        error: Some("cancelled: the daemon stopped waiting".into()),
    }
}

fn run(req: &ExecRequest, lifeline: Option<&OwnedFd>) -> ExecResult {
    let fail = |e: String| ExecResult {
        exit_code: -1,
        timed_out: false,
        error: Some(e),
    };
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return fail(format!("PR_SET_CHILD_SUBREAPER: {e}"));
    }
    if let Some(console) = &req.process.console_socket {
        return match run_tty(req, console, lifeline) {
            Ok(code) => ExecResult {
                exit_code: code,
                timed_out: false,
                error: None,
            },
            Err(e) => fail(e),
        };
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
            console: None,
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
                    kill_tree(pid);
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
        let mut fds = Vec::new();
        if let Some(fd) = &pidfd {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        let at = lifeline.map(|l| {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let wait = if pidfd.is_some() { wait_ms.max(1) } else { 10 };
        let _ = poll(&mut fds, PollTimeout::from(wait));
        if hung_up(&fds, at) {
            drop(fds);
            kill_tree(pid);
            return cancelled();
        }
    }
}

/// Exec on a terminal: the runtime sends the PTY master to `console`; this helper then relays
/// its stdin to the master and the master to its stdout, and applies `{"width":W,"height":H}`
/// lines arriving on `<console>.resize` to the terminal, until the process exits.
fn run_tty(
    req: &ExecRequest,
    console: &std::path::Path,
    lifeline: Option<&OwnedFd>,
) -> Result<i32, String> {
    use std::io::BufRead;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    let _ = std::fs::remove_file(console);
    let listener =
        UnixListener::bind(console).map_err(|e| format!("binding {}: {e}", console.display()))?;
    let null = || -> Result<OwnedFd, String> {
        std::fs::File::open("/dev/null")
            .map(Into::into)
            .map_err(|e| e.to_string())
    };
    let stdio = Stdio {
        stdin: null()?,
        stdout: null()?,
        stderr: null()?,
        console: None,
    };
    let runtime = req.handler.runtime();
    let execed = runtime.exec(&req.id, &req.process, stdio);
    let pid = match execed {
        Ok(e) => e.pid,
        Err(e) => {
            let _ = std::fs::remove_file(console);
            return Err(e.to_string());
        }
    };
    // A CLI runtime in --detach mode reports the process in its pid file.
    let pid = match std::fs::read_to_string(console.with_extension("pid")) {
        Ok(p) => p.trim().parse().unwrap_or(pid),
        Err(_) => pid,
    };
    let (conn, _) = listener
        .accept()
        .map_err(|e| format!("console socket: {e}"))?;
    let master = crate::sys::process::recv_fd(&conn).map_err(|e| format!("console socket: {e}"))?;
    drop(listener);
    let _ = std::fs::remove_file(console);
    let resize_path = console.with_extension("resize");
    let _ = std::fs::remove_file(&resize_path);
    let resizes = UnixListener::bind(&resize_path)
        .map_err(|e| format!("binding {}: {e}", resize_path.display()))?;
    resizes.set_nonblocking(true).map_err(|e| e.to_string())?;
    let pidfd = pidfd_open(pid).map_err(|e| format!("pidfd_open({pid}): {e}"))?;
    let stdin = std::io::stdin();
    let mut stdin_open = req.stdin;
    let mut buf = vec![0u8; 32 * 1024];
    let mut code = None;
    while code.is_none() {
        let mut fds = vec![
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(resizes.as_fd(), PollFlags::POLLIN),
        ];
        let at = lifeline.map(|l| {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let stdin_at = stdin_open.then(|| {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let _ = poll(&mut fds, PollTimeout::from(1000u16));
        if hung_up(&fds, at) {
            drop(fds);
            kill_tree(pid);
            let _ = std::fs::remove_file(&resize_path);
            return Err("cancelled: the daemon stopped waiting".into());
        }
        let ready = |i: usize, fds: &[PollFd]| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (m, p, r, i) = (
            ready(0, &fds),
            ready(1, &fds),
            ready(2, &fds),
            hung_up(&fds, stdin_at),
        );
        drop(fds);
        if m {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
                _ => {}
            }
        }
        if i {
            match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = nix::unistd::write(&master, &buf[..n]);
                }
            }
        }
        if r {
            while let Ok((c, _)) = resizes.accept() {
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                if std::io::BufReader::new(&c).read_line(&mut line).is_ok() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        let w = u16::try_from(v["width"].as_u64().unwrap_or(0)).unwrap_or(u16::MAX);
                        let h =
                            u16::try_from(v["height"].as_u64().unwrap_or(0)).unwrap_or(u16::MAX);
                        if w > 0 && h > 0 {
                            let _ = crate::sys::process::set_winsize(&master, h, w);
                        }
                    }
                }
            }
        }
        if p || m {
            if let Some((c, _)) = super::reap_all(Some(pid)) {
                code = Some(c);
            }
        }
    }
    // What the process wrote last is still in the terminal.
    let _ = nix::fcntl::fcntl(
        master.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    while let Ok(n) = nix::unistd::read(master.as_raw_fd(), &mut buf) {
        if n == 0 {
            break;
        }
        use std::io::Write;
        let _ = std::io::stdout().lock().write_all(&buf[..n]);
    }
    let _ = std::fs::remove_file(&resize_path);
    super::reap_all(None);
    Ok(code.unwrap_or(255))
}
