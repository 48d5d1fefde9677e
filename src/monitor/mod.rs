//! The per-container monitor, `ferrio __monitor <monitor.json>` (conmon's job), and the other
//! re-exec'd helpers (`__exec`, `__pin-ns`). These are plain blocking, single-threaded
//! programs: no tokio, no threads, so libcontainer's fork/clone is safe in them.
//!
//! The monitor detaches (fork + setsid: it survives the daemon), makes itself a child
//! subreaper, creates the container through the runtime handler with its stdout/stderr on
//! pipes it owns, reports `Ready` on its stdout, then loops on poll(2): the control socket, the
//! two pipes (written to the CRI log) and the init's pidfd. When the init exits it reads the
//! OOM-kill counter, has the runtime delete the container (cgroup, state), drains the pipes,
//! writes the exit file atomically, answers waiters and exits.

pub mod attach;
pub mod client;
pub mod exec;
pub mod log;
pub mod pinns;
pub mod proto;

use crate::runtime::{OciRuntime, Stdio};
use crate::sys::process::{pidfd_open, pidfd_send_signal};
use log::{CriLog, Stream};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use proto::{ExitInfo, MonitorConfig, Ready, Request, Response};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Points fd 0, 1 and 2 at /dev/null (after the sync message: the daemon may be gone later).
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in [0, 1] {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}

/// Writes one JSON line on stdout: how a helper answers the daemon that started it.
pub fn answer<T: serde::Serialize>(value: &T) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, value);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn report(ready: &Ready) {
    answer(ready)
}

/// The monitor's set-up timed step by step, for the daemon's phase breakdown (this process is
/// single-threaded: a plain static).
type Steps = (Option<std::time::Instant>, Vec<(String, u64)>);
static SETUP: std::sync::Mutex<Steps> = std::sync::Mutex::new((None, Vec::new()));

/// Ends the set-up step `name` (the daemon knows them: `engine::container::create`'s
/// `monitor_step`): the time since the previous mark is its.
fn mark(name: &str) {
    let mut s = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    let now = std::time::Instant::now();
    if let Some(last) = s.0 {
        let us = u64::try_from(now.duration_since(last).as_micros()).unwrap_or(u64::MAX);
        s.1.push((name.to_string(), us));
    }
    s.0 = Some(now);
}

/// Restarts the clock without a step (the runtime's create is reported on its own).
fn mark_skip() {
    SETUP.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(std::time::Instant::now());
}

/// Entry point of `ferrio __monitor`.
pub fn main(config_path: &Path) -> i32 {
    let started = std::time::Instant::now();
    mark_skip();
    let cfg: MonitorConfig = match crate::state::read_json(config_path) {
        Ok(c) => c,
        Err(e) => {
            report(&Ready::Failed {
                error: format!("reading {}: {e}", config_path.display()),
            });
            return 1;
        }
    };
    mark("config");
    // Detach: the parent returns at once (the daemon reaps it), the child runs on in its own
    // session, reparented to init.
    match crate::sys::process::fork_single_threaded() {
        Ok(crate::sys::process::Forked::Parent(_)) => return 0,
        Ok(crate::sys::process::Forked::Child) => {}
        Err(e) => {
            report(&Ready::Failed {
                error: format!("fork: {e}"),
            });
            return 1;
        }
    }
    mark("fork");
    let _ = nix::unistd::setsid();
    // Out of the daemon's cgroup: `systemctl restart ferrio` must not take the monitor along.
    if let Some(h) = &cfg.helper_cgroup {
        let unit = format!("monitor-{}", cfg.id);
        if let Err(e) = crate::cgroups::place_helper(h, &unit, std::process::id() as i32) {
            report(&Ready::Failed {
                error: format!("moving the monitor to its cgroup: {e}"),
            });
            return 1;
        }
    }
    mark("cgroup");
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        report(&Ready::Failed {
            error: format!("PR_SET_CHILD_SUBREAPER: {e}"),
        });
        return 1;
    }
    match Monitor::create(&cfg) {
        Ok(mut m) => {
            mark("after_create");
            let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
            let total = started.elapsed();
            let setup_steps =
                std::mem::take(&mut SETUP.lock().unwrap_or_else(|e| e.into_inner()).1);
            report(&Ready::Created {
                pid: m.pid,
                monitor_pid: std::process::id() as i32,
                setup_us: us(total.saturating_sub(m.create_took)),
                create_us: us(m.create_took),
                setup_steps,
            });
            detach_stdio();
            m.run();
            0
        }
        Err(e) => {
            report(&Ready::Failed { error: e });
            1
        }
    }
}

struct Monitor {
    /// How long the runtime's create took (reported in `Ready`).
    create_took: std::time::Duration,
    cfg: MonitorConfig,
    runtime: Box<dyn OciRuntime>,
    pid: i32,
    pidfd: OwnedFd,
    listener: UnixListener,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    log: CriLog,
    started: bool,
    oom_baseline: u64,
    waiters: Vec<UnixStream>,
    exit: Option<(i32, Option<i32>)>,
    /// Attached clients (non-blocking; see [`attach`]).
    attachers: Vec<attach::Attacher>,
    /// The write end of the container's stdin (when it was created with stdin, no TTY;
    /// non-blocking).
    stdin_w: Option<OwnedFd>,
    /// Stdin the container has not read yet.
    stdin_buf: attach::StdinBuffer,
    /// Close `stdin_w` once `stdin_buf` is written.
    close_stdin: bool,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

impl Monitor {
    fn create(cfg: &MonitorConfig) -> Result<Monitor, String> {
        let runtime = cfg.handler.runtime();
        let _ = std::fs::remove_file(&cfg.socket);
        // Bind by a relative name from inside the directory: the full path may be longer than
        // a unix socket address holds (108 bytes). This process is single-threaded, so its
        // working directory is its own to change.
        let (dir, name) = split_socket_path(&cfg.socket)?;
        std::env::set_current_dir(dir).map_err(|e| format!("entering {}: {e}", dir.display()))?;
        let listener = UnixListener::bind(name)
            .map_err(|e| format!("binding {}: {e}", cfg.socket.display()))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        mark("socket");
        if let Some(dir) = cfg.log_path.parent() {
            if !cfg.log_path.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
            }
        }
        let log = CriLog::open(&cfg.log_path).map_err(|e| e.to_string())?;
        mark("log");
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin, stdin_w): (OwnedFd, Option<OwnedFd>) = if cfg.stdin && !cfg.tty {
            let (r, w) = pipe()?;
            attach::set_nonblocking(&w).map_err(|e| format!("stdin pipe: {e}"))?;
            (r, Some(w))
        } else {
            let null = std::fs::File::open("/dev/null").map_err(|e| e.to_string())?;
            (null.into(), None)
        };
        mark("pipes");
        let oom_baseline = crate::cgroups::oom_kills(&cfg.cgroup).unwrap_or(0);
        mark("oom_baseline");
        // A terminal: the runtime sends the PTY master to a console socket beside ours.
        let console = cfg.tty.then(|| cfg.socket.with_file_name("console.sock"));
        let console_listener = match &console {
            Some(path) => {
                let _ = std::fs::remove_file(path);
                Some(
                    UnixListener::bind("console.sock")
                        .map_err(|e| format!("binding {}: {e}", path.display()))?,
                )
            }
            None => None,
        };
        // libcontainer writes the container's oom_score_adj into this process too: the monitor
        // keeps the daemon's (the unit's OOMScoreAdjust), so the OOM killer takes the container,
        // not the process that records its exit. Lowering it back needs CAP_SYS_RESOURCE; where
        // root lacks it the monitor keeps the container's value.
        let own_oom_score_adj = std::fs::read_to_string("/proc/self/oom_score_adj").ok();
        mark("console");
        let create_started = std::time::Instant::now();
        let stdio = Stdio {
            stdin,
            stdout: out_w,
            stderr: err_w,
            console: console.clone(),
        };
        let created = match &cfg.restore_from {
            Some(from) => runtime.restore(&cfg.id, &cfg.bundle, from, stdio),
            None => runtime.create(&cfg.id, &cfg.bundle, stdio),
        };
        let create_took = create_started.elapsed();
        mark_skip();
        if let Some(adj) = &own_oom_score_adj {
            let _ = std::fs::write("/proc/self/oom_score_adj", adj.trim());
        }
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                // What the runtime printed on the container's stderr explains the failure.
                let mut msg = e.to_string();
                let extra = drain_nonblocking(&err_r);
                if !extra.is_empty() {
                    msg.push_str(": ");
                    msg.push_str(String::from_utf8_lossy(&extra).trim());
                }
                reap_all(None);
                let _ = runtime.delete(&cfg.id, true);
                reap_all(None);
                return Err(msg);
            }
        };
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = runtime.delete(&cfg.id, true);
                reap_all(None);
                return Err(format!("pidfd_open({pid}): {e}"));
            }
        };
        let (out_r, err_r) = match console_listener {
            // The terminal's master is the container's one output (stdout in the log).
            Some(l) => {
                let master = l
                    .accept()
                    .map_err(|e| format!("console socket: {e}"))
                    .and_then(|(c, _)| {
                        crate::sys::process::recv_fd(&c).map_err(|e| format!("console socket: {e}"))
                    });
                let _ = std::fs::remove_file("console.sock");
                // Non-blocking: a terminal that takes no input must not stop the monitor.
                let master = master.and_then(|m| {
                    attach::set_nonblocking(&m)
                        .map(|()| m)
                        .map_err(|e| format!("terminal master: {e}"))
                });
                match master {
                    Ok(m) => (m, None),
                    Err(e) => {
                        let _ = runtime.delete(&cfg.id, true);
                        reap_all(None);
                        return Err(e);
                    }
                }
            }
            None => (out_r, Some(err_r)),
        };
        Ok(Monitor {
            create_took,
            cfg: cfg.clone(),
            runtime,
            pid,
            pidfd,
            listener,
            stdout: Some(out_r),
            stderr: err_r,
            log,
            started: false,
            oom_baseline,
            waiters: Vec::new(),
            exit: None,
            attachers: Vec::new(),
            stdin_w,
            stdin_buf: attach::StdinBuffer::default(),
            close_stdin: false,
        })
    }

    fn run(&mut self) {
        let mut buf = vec![0u8; 32 * 1024];
        while self.exit.is_none() {
            let mut ready = [false; 4];
            let stdin_ready: bool;
            let attach_ready: Vec<PollFlags>;
            {
                let mut fds = vec![
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN),
                ];
                let mut idx = [None, None];
                if let Some(o) = &self.stdout {
                    idx[0] = Some(fds.len());
                    fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
                }
                if let Some(e) = &self.stderr {
                    idx[1] = Some(fds.len());
                    fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
                }
                let stdin_idx = match self.stdin_target() {
                    Some(fd) if !self.stdin_buf.is_empty() => {
                        fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
                        Some(fds.len() - 1)
                    }
                    _ => None,
                };
                // Attachers are read only while stdin has room: a sender the container does
                // not keep up with is slowed by its own socket.
                let reading = !self.stdin_buf.full();
                let first_attacher = fds.len();
                for a in &self.attachers {
                    let mut ev = PollFlags::empty();
                    if reading {
                        ev |= PollFlags::POLLIN;
                    }
                    if a.behind() {
                        ev |= PollFlags::POLLOUT;
                    }
                    fds.push(PollFd::new(a.conn.as_fd(), ev));
                }
                match poll(&mut fds, PollTimeout::from(1000u16)) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
                let hit = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                ready[0] = hit(&fds[0]);
                ready[1] = hit(&fds[1]);
                ready[2] = idx[0].is_some_and(|i| hit(&fds[i]));
                ready[3] = idx[1].is_some_and(|i| hit(&fds[i]));
                stdin_ready = stdin_idx.is_some_and(|i| hit(&fds[i]));
                attach_ready = (first_attacher..fds.len())
                    .map(|i| fds[i].revents().unwrap_or(PollFlags::empty()))
                    .collect();
            }
            if stdin_ready {
                self.flush_stdin();
            }
            self.serve_attachers(&attach_ready, &mut buf);
            if ready[2] {
                self.pump(Stream::Stdout, &mut buf);
            }
            if ready[3] {
                self.pump(Stream::Stderr, &mut buf);
            }
            if ready[0] {
                self.accept();
            }
            // Reap on every turn: the init, and orphans reparented to us as subreaper.
            if let Some(st) = reap_all(Some(self.pid)) {
                self.exit = Some(st);
            }
            let _ = ready[1];
        }
        self.finish(&mut buf);
    }

    fn pump(&mut self, stream: Stream, buf: &mut [u8]) {
        let fd = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        let Some(fd) = fd else { return };
        match nix::unistd::read(fd.as_raw_fd(), buf) {
            Ok(0) => match stream {
                Stream::Stdout => self.stdout = None,
                Stream::Stderr => self.stderr = None,
            },
            Ok(n) => {
                self.log.write(stream, &buf[..n]);
                if !self.attachers.is_empty() {
                    let kind = match stream {
                        Stream::Stdout => proto::ATTACH_STDOUT,
                        Stream::Stderr => proto::ATTACH_STDERR,
                    };
                    let frame = proto::attach_frame(kind, &buf[..n]);
                    // A client too far behind is dropped (the CRI log has it all).
                    let mut i = 0;
                    while i < self.attachers.len() {
                        if self.attachers[i].send(&frame) {
                            i += 1;
                        } else {
                            self.drop_attacher(i);
                        }
                    }
                }
            }
            Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(_) => match stream {
                Stream::Stdout => self.stdout = None,
                Stream::Stderr => self.stderr = None,
            },
        }
    }

    fn accept(&mut self) {
        loop {
            let conn = match self.listener.accept() {
                Ok((c, _)) => c,
                Err(_) => return,
            };
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let mut reader = BufReader::new(&conn).take(1 << 20);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let req: Request = match serde_json::from_str(&line) {
                Ok(r) => r,
                Err(e) => {
                    respond(
                        &conn,
                        &Response {
                            error: Some(format!("bad request: {e}")),
                            ..Default::default()
                        },
                    );
                    continue;
                }
            };
            if matches!(req, Request::Wait) {
                self.waiters.push(conn);
                continue;
            }
            if matches!(req, Request::Attach) {
                let _ = conn.set_read_timeout(None);
                let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                respond(&conn, &self.base());
                if let Ok(a) = attach::Attacher::new(conn) {
                    self.attachers.push(a);
                }
                continue;
            }
            let starting = matches!(req, Request::Start) && !self.started;
            let resp = self.handle(req);
            respond(&conn, &resp);
            if starting && self.started {
                // Setup is over (libcontainer's create and start): from here on the monitor
                // only pumps output and answers requests, so give back what setup left
                // resident — freed heap and the pages of code it will not run again.
                drop(conn);
                crate::sys::process::trim_heap();
                let released = crate::sys::process::release_clean_file_pages();
                tracing::debug!(released, "released setup pages");
            }
        }
    }

    /// The container's stdin: its pipe, or the terminal's master.
    fn stdin_target(&self) -> Option<&OwnedFd> {
        stdin_target(&self.stdin_w, &self.stdout, self.cfg.tty && self.cfg.stdin)
    }

    /// Writes what the container's stdin takes now; closes it if that was asked and all is
    /// written.
    fn flush_stdin(&mut self) {
        let tty_stdin = self.cfg.tty && self.cfg.stdin;
        let Some(fd) = stdin_target(&self.stdin_w, &self.stdout, tty_stdin) else {
            self.stdin_buf.clear();
            return;
        };
        if self.stdin_buf.flush(fd).is_err() {
            self.stdin_w = None;
        }
        if self.close_stdin && self.stdin_buf.is_empty() {
            self.stdin_w = None;
            self.close_stdin = false;
        }
    }

    /// Closes the container's stdin once what waits for it is written.
    fn close_stdin_when_flushed(&mut self) {
        self.close_stdin = true;
        self.flush_stdin();
    }

    fn drop_attacher(&mut self, i: usize) {
        self.attachers.remove(i);
        if self.cfg.stdin_once {
            self.close_stdin_when_flushed();
        }
    }

    /// Serves attachers by what poll said: reads stdin frames, close-stdin and resizes, and
    /// writes queued output.
    fn serve_attachers(&mut self, ready: &[PollFlags], buf: &mut [u8]) {
        let mut gone = Vec::new();
        let mut frames: Vec<(u8, Vec<u8>)> = Vec::new();
        for (i, ev) in ready.iter().enumerate() {
            if ev.is_empty() || i >= self.attachers.len() {
                continue;
            }
            let a = &mut self.attachers[i];
            let mut alive = true;
            if ev.contains(PollFlags::POLLOUT) {
                alive = a.flush();
            }
            if alive && ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                alive = a.read(buf, |kind, data| frames.push((kind, data.to_vec())));
            }
            for (kind, data) in frames.drain(..) {
                self.attach_input(kind, &data);
            }
            if !alive {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            self.drop_attacher(i);
        }
    }

    fn attach_input(&mut self, kind: u8, data: &[u8]) {
        match kind {
            proto::ATTACH_STDIN => {
                let tty_stdin = self.cfg.tty && self.cfg.stdin;
                let gone = match stdin_target(&self.stdin_w, &self.stdout, tty_stdin) {
                    Some(fd) => self.stdin_buf.push(fd, data).is_err(),
                    None => false,
                };
                if gone {
                    self.stdin_w = None;
                }
            }
            proto::ATTACH_CLOSE_STDIN => self.close_stdin_when_flushed(),
            proto::ATTACH_RESIZE if self.cfg.tty => {
                if let (Some(master), Ok(v)) = (
                    &self.stdout,
                    serde_json::from_slice::<serde_json::Value>(data),
                ) {
                    let w = u16::try_from(v["width"].as_u64().unwrap_or(0)).unwrap_or(u16::MAX);
                    let h = u16::try_from(v["height"].as_u64().unwrap_or(0)).unwrap_or(u16::MAX);
                    if w > 0 && h > 0 {
                        let _ = crate::sys::process::set_winsize(master, h, w);
                    }
                }
            }
            _ => {}
        }
    }

    fn base(&self) -> Response {
        Response {
            pid: self.pid,
            started: self.started,
            v: client::PROTOCOL,
            ..Default::default()
        }
    }

    fn handle(&mut self, req: Request) -> Response {
        let mut r = self.base();
        let result = match req {
            Request::State | Request::Wait | Request::Attach => Ok(()),
            // A restored container runs since its restore.
            Request::Start if self.cfg.restore_from.is_some() => {
                self.started = true;
                r.started = true;
                Ok(())
            }
            Request::Start => match self.runtime.start(&self.cfg.id) {
                Ok(()) => {
                    self.started = true;
                    r.started = true;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            },
            Request::Kill { signal, all } => {
                // SIGKILL to the init of a PID namespace kills all of it (the kernel's
                // zap_pid_ns_processes): no freezing and walking of the cgroup, which the
                // runtime's kill-all costs (~5 ms on cgroup v1).
                if all && !(signal == libc::SIGKILL && self.cfg.own_pid_ns) {
                    self.runtime
                        .kill(&self.cfg.id, signal, true)
                        .map_err(|e| e.to_string())
                } else {
                    pidfd_send_signal(&self.pidfd, signal)
                        .map_err(|e| format!("signal {signal}: {e}"))
                }
            }
            Request::ReopenLog => self.log.reopen().map_err(|e| e.to_string()),
            Request::Update { resources } => self
                .runtime
                .update(&self.cfg.id, &resources)
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            r.error = Some(e);
        }
        r
    }

    fn finish(&mut self, buf: &mut [u8]) {
        let (code, signal) = self.exit.unwrap_or((255, None));
        let finished_at_ns = now_ns();
        let oom_killed =
            crate::cgroups::oom_kills(&self.cfg.cgroup).is_some_and(|n| n > self.oom_baseline);
        // Everything else in the container dies with the delete; then the pipes reach EOF.
        let _ = self.runtime.delete(&self.cfg.id, true);
        reap_all(None);
        for s in [Stream::Stdout, Stream::Stderr] {
            let fd = match s {
                Stream::Stdout => self.stdout.take(),
                Stream::Stderr => self.stderr.take(),
            };
            if let Some(fd) = fd {
                let data = drain_nonblocking(&fd);
                for chunk in data.chunks(buf.len()) {
                    self.log.write(s, chunk);
                }
            }
        }
        let info = ExitInfo {
            exit_code: code,
            signal,
            finished_at_ns,
            oom_killed,
        };
        for a in self.attachers.drain(..) {
            a.finish(Duration::from_secs(1));
        }
        let _ = crate::state::write_json_volatile(&self.cfg.exit_file, &info);
        let mut r = self.base();
        r.exit = Some(info);
        for w in self.waiters.drain(..) {
            respond(&w, &r);
        }
        let _ = std::fs::remove_file(&self.cfg.socket);
    }
}

/// The container's stdin: its pipe, or (with a terminal) the master, which is also its output.
fn stdin_target<'a>(
    stdin_w: &'a Option<OwnedFd>,
    stdout: &'a Option<OwnedFd>,
    tty_stdin: bool,
) -> Option<&'a OwnedFd> {
    match (stdin_w, tty_stdin) {
        (Some(w), _) => Some(w),
        (None, true) => stdout.as_ref(),
        _ => None,
    }
}

fn respond(mut conn: &UnixStream, r: &Response) {
    if let Ok(mut v) = serde_json::to_vec(r) {
        v.push(b'\n');
        let _ = conn.write_all(&v);
    }
}

/// Reads what a pipe holds now without waiting for writers to close it.
fn drain_nonblocking(fd: &OwnedFd) -> Vec<u8> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while out.len() < 64 << 20 {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    out
}

/// Reaps every exited child; returns the status of `watch` if it was among them, as
/// (exit code, signal) with a signal death reported as 128 + signal.
pub fn reap_all(watch: Option<i32>) -> Option<(i32, Option<i32>)> {
    let mut found = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                if Some(pid.as_raw()) == watch {
                    found = Some((code, None));
                }
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                if Some(pid.as_raw()) == watch {
                    found = Some((128 + sig as i32, Some(sig as i32)));
                }
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    found
}

fn split_socket_path(socket: &Path) -> Result<(&Path, &std::ffi::OsStr), String> {
    match (socket.parent(), socket.file_name()) {
        (Some(d), Some(n)) => Ok((d, n)),
        _ => Err(format!("bad socket path {}", socket.display())),
    }
}

/// An address for a unix socket whatever the length of its path: a long one is reached through
/// `/proc/self/fd/<dir fd>/<name>` (no chdir, so this is safe on any thread). Keep the returned
/// directory handle open until the connect is done.
pub fn socket_address(
    socket: &Path,
) -> std::io::Result<(Option<std::fs::File>, std::path::PathBuf)> {
    use std::os::unix::ffi::OsStrExt;
    if socket.as_os_str().as_bytes().len() < 100 {
        return Ok((None, socket.to_path_buf()));
    }
    let (dir, name) = split_socket_path(socket).map_err(std::io::Error::other)?;
    let d = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd")
        .join(d.as_raw_fd().to_string())
        .join(name);
    Ok((Some(d), short))
}
