//! Process plumbing for the helpers: pidfds, the detaching fork, signals through a pidfd.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Opens a pidfd for `pid` (pidfd_open(2)). Opened while `pid` is an unreaped child of ours, it
/// refers to that process for good: a recycled pid can never be signalled through it.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits until the process behind `pidfd` has exited (a pidfd turns readable then, also while
/// the process is a zombie nobody reaped yet).
pub async fn pidfd_exited(pidfd: OwnedFd) -> io::Result<()> {
    // SAFETY: the AsyncFd takes `pidfd` by value: the descriptor is open, stays open and names
    // the same pidfd until the AsyncFd is dropped at the end of this function, and `as_raw_fd`
    // of an OwnedFd always returns that descriptor.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
    }
    .map_err(|e| e.into_parts().1)?;
    let _ready = fd.readable().await?;
    Ok(())
}

/// Sends `sig` to the process behind `pidfd` (pidfd_send_signal(2)).
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid pidfd, a signal number, a null siginfo (allowed: the kernel fills it in as
    // for kill(2)) and zero flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Which side of [`fork`] we are on.
pub enum Forked {
    Parent(i32),
    Child,
}

/// fork(2). Only for the single-threaded helpers (`__monitor`, `__pin-ns`): in a multi-threaded
/// process the child could inherit a lock held by another thread.
pub fn fork_single_threaded() -> io::Result<Forked> {
    // SAFETY: callers are the re-exec'd helpers, which have not started a second thread (no
    // tokio runtime, no std::thread); the child only runs ordinary Rust code afterwards.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// The number of threads of this process (from /proc/self/status), to assert the helpers are
/// single-threaded before they fork or call libcontainer.
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), which with
/// the pid identifies a process across pid reuse.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The parent pid of `pid` (field 4 of /proc/<pid>/stat).
pub fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every live descendant of `root` (children, grandchildren, …), found through /proc.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some(pp) = parent_pid(pid) {
                    parents.push((pid, pp));
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, pp) in &parents {
            if pp == p && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

/// Whether a process with this pid exists and, when `start_time` is given, is the same one.
pub fn process_alive(pid: i32, start_time: Option<u64>) -> bool {
    match process_start_time(pid) {
        None => false,
        Some(t) => start_time.is_none_or(|s| s == t),
    }
}

/// Restores the default SIGPIPE action (Rust starts with it ignored), so that a CLI command
/// whose output pipe closes (`ferrio version | head -1`) ends quietly instead of panicking in
/// `println!`. Only for the short-lived CLI commands: the daemon and the helpers must see EPIPE.
pub fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installing SIG_DFL runs no handler code, so there is no async-signal-safety
    // concern; it is called before any thread is started.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Caps glibc's malloc arenas at two. glibc gives every thread that allocates its own arena
/// (up to 8 × cores); the daemon's tokio and blocking threads would each keep one, most of it
/// idle memory after a pull.
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; called at start, before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns free heap memory to the kernel (malloc_trim), after work that allocated a lot and
/// released it (an image pull).
pub fn trim_heap() {
    // SAFETY: malloc_trim takes the allocator's own locks; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops this process's page-table entries for the resident pages of its read-only file
/// mappings that it never wrote (the code and constants of the binary and its libraries): the
/// pages stay in the page cache, shared with every other ferrio process, and fault back in when
/// used again. A long-lived helper calls it once its setup is done (the monitor after
/// libcontainer's create and start), so it keeps resident only what its steady loop touches.
/// Mappings with anonymous (copy-on-write) pages, resident or swapped, such as relocated
/// read-only data, are left alone: dropping those would lose their contents. Does nothing in a
/// multi-threaded process. Returns the bytes released.
pub fn release_clean_file_pages() -> usize {
    // Only sound while no other thread can map, unmap or write meanwhile.
    if thread_count() != 1 {
        return 0;
    }
    release_file_pages(|_| true)
}

/// [`release_clean_file_pages`] for the daemon, which is multi-threaded: only the mappings of
/// its own executable (its code and read-only data), which stay mapped for the life of the
/// process, so no other thread can unmap and reuse the range meanwhile. Called once start-up is
/// over: the code only start-up ran (config, store and state restore) stops counting in RSS.
pub fn release_exe_pages() -> usize {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let exe = exe.to_string_lossy().into_owned();
    // smaps shows the path up to its first space here (see release_file_pages).
    let first_word = exe.split_whitespace().next().unwrap_or("").to_string();
    if first_word.is_empty() {
        return 0;
    }
    release_file_pages(|path| path == first_word)
}

/// Drops the resident pages of the read-only, file-backed mappings without anonymous pages
/// whose path `keep` accepts; returns the bytes released.
fn release_file_pages(keep: impl Fn(&str) -> bool) -> usize {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut ranges = Vec::new();
    let mut cur: Option<(usize, usize, usize)> = None; // start, end, resident kB
    let mut candidate = false;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                let perms = fields.next().unwrap_or("");
                let path = fields.nth(3).unwrap_or("");
                candidate = !perms.contains('w') && path.starts_with('/') && keep(path);
                cur = Some((start, end, 0));
                continue;
            }
        }
        let mut value = || {
            fields
                .next()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        match first {
            "Rss:" => {
                if let Some(c) = cur.as_mut() {
                    c.2 = value();
                }
            }
            // Copy-on-write pages, resident or swapped out, are not the file's contents.
            "Anonymous:" | "Swap:" if value() != 0 => candidate = false,
            "VmFlags:" => {
                if let Some((start, end, rss)) = cur.take() {
                    if candidate && rss > 0 && !line.contains(" lo") {
                        ranges.push((start, end, rss));
                    }
                }
            }
            _ => {}
        }
    }
    let mut released = 0;
    for (start, end, rss) in ranges {
        // SAFETY: [start, end) is a whole mapping of this process, read from /proc/self/smaps:
        // private, file-backed, not writable and without anonymous pages, so MADV_DONTNEED only
        // drops page-table entries whose contents the file still holds. The callers guarantee
        // nothing unmaps it meanwhile: a single-threaded helper, or the daemon's own executable,
        // mapped until the process ends.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if rc == 0 {
            released += rss * 1024;
        }
    }
    released
}

/// Sets a terminal's window size (TIOCSWINSZ) on its master `fd`.
pub fn set_winsize(fd: &impl std::os::fd::AsRawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct, which lives for the call; a bad fd is an
    // error return, not undefined behaviour.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one file descriptor passed with SCM_RIGHTS on a unix stream (the OCI console
/// socket protocol: the runtime sends the PTY master).
pub fn recv_fd(sock: &std::os::unix::net::UnixStream) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel installed this fd in our table for us with the message;
                // nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no file descriptor in the console socket message",
    ))
}

/// The descriptor number a helper finds its lifeline at (see [`give_lifeline`]).
pub const LIFELINE_FD: i32 = 3;

/// A memfd holding `data`, for handing a small file to a child without a path on disk.
pub fn memfd_with(name: &str, data: &[u8]) -> io::Result<OwnedFd> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
    let fd = memfd_create(&cname, MemFdCreateFlag::MFD_CLOEXEC)?;
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, data)?;
    Ok(OwnedFd::from(f))
}

/// Gives the child `cmd` will start `fd` as descriptor `target` (open in the child only, not
/// close-on-exec there); the command keeps `fd` open until it is dropped.
pub fn give_fd(cmd: &mut std::process::Command, fd: OwnedFd, target: i32) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = fd.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and calls only dup2(2) and
    // fcntl(2), which are async-signal-safe; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            let _ = &fd;
            let r = if raw == target {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, target)
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// In a child forked to exec something else: `fds[n]` becomes its descriptor `n` (0–2) and the
/// descriptors in `keep` stay open across the exec (their close-on-exec flag cleared).
pub fn child_stdio(fds: [i32; 3], keep: &[i32]) -> io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // Out of the way first (10 and up, close-on-exec), then onto 0–2: a source may itself be
    // one of 0–2.
    let mut high = [0; 3];
    for (h, fd) in high.iter_mut().zip(fds) {
        // SAFETY: fcntl(2) on a descriptor number; it only adds a descriptor to this process.
        *h = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) })?;
    }
    for (n, h) in (0..).zip(high) {
        // SAFETY: dup2(2) onto 0–2, which the caller gives up for these (it is about to exec).
        check(unsafe { libc::dup2(h, n) })?;
    }
    for k in keep {
        // SAFETY: fcntl(2) F_SETFD only changes the flags of a descriptor the caller owns.
        check(unsafe { libc::fcntl(*k, libc::F_SETFD, 0) })?;
    }
    Ok(())
}

/// Gives the child `cmd` will start a lifeline: the read end of a pipe, as descriptor
/// [`LIFELINE_FD`]. The returned write end is the parent's side: when it is closed — dropped,
/// or the parent dies — the child sees the pipe hang up ([`take_lifeline`]) and knows nobody
/// waits for it any more.
pub fn give_lifeline(cmd: &mut tokio::process::Command) -> io::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // The command owns the read end: it stays open in the parent until the command is
    // dropped, and is closed there then.
    give_fd(cmd.as_std_mut(), read, LIFELINE_FD);
    Ok(write)
}

/// The helper's side of [`give_lifeline`]: takes descriptor [`LIFELINE_FD`] if it is the read
/// end of a pipe, marked close-on-exec so that no process the helper starts inherits it.
pub fn take_lifeline() -> io::Result<OwnedFd> {
    use std::os::unix::fs::FileTypeExt;
    // SAFETY: fcntl on a descriptor number only queries or sets its flags; an unused number
    // gives EBADF.
    if unsafe { libc::fcntl(LIFELINE_FD, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (fcntl succeeded) and was given to this process for it
    // alone by its parent; nothing else in the helper uses descriptor 3.
    let fd = unsafe { OwnedFd::from_raw_fd(LIFELINE_FD) };
    let file = std::fs::File::from(fd);
    if !file.metadata()?.file_type().is_fifo() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptor 3 is not a pipe",
        ));
    }
    Ok(file.into())
}

/// Takes an inherited descriptor `fd` that must be a unix stream socket (an NRI plugin's end of
/// the socket pair its runtime started it with: `NRI_PLUGIN_SOCKET`), marked close-on-exec.
/// Call it once per descriptor, before anything else in the process may open files.
pub fn take_inherited_socket(fd: i32) -> io::Result<std::os::unix::net::UnixStream> {
    use std::os::unix::fs::FileTypeExt;
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is a standard stream"),
        ));
    }
    // SAFETY: fcntl on a descriptor number only sets its flags; an unused number gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (fcntl succeeded) and was inherited for this use; the
    // caller takes it once, so nothing else in the process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = std::fs::File::from(owned);
    if !file.metadata()?.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a socket"),
        ));
    }
    Ok(std::os::unix::net::UnixStream::from(OwnedFd::from(file)))
}

/// Limits the files `cmd`'s process may write to `bytes` each (RLIMIT_FSIZE; a larger write
/// fails with EFBIG), for helper programs that write what untrusted input expands to.
pub fn limit_file_size(cmd: &mut std::process::Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and calls only setrlimit,
    // which is async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Waits for `child` at most `timeout` (polling: for short-lived helper programs run from a
/// blocking thread); past it the child is killed and reaped, and `None` is returned.
pub fn wait_or_kill(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    // A huge timeout waits "forever" rather than overflowing.
    let deadline = std::time::Instant::now()
        .checked_add(timeout)
        .unwrap_or_else(|| std::time::Instant::now() + std::time::Duration::from_secs(86400 * 365));
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resident kB of this process's mappings of its executable.
    fn exe_rss_kb() -> usize {
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let exe = exe.to_string_lossy().into_owned();
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let (mut ours, mut total) = (false, 0);
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                ours = line.split_whitespace().nth(5) == exe.split_whitespace().next();
            } else if ours && first == "Rss:" {
                total += line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
            }
        }
        total
    }

    #[test]
    fn the_executables_clean_pages_are_released_and_fault_back() {
        // The test harness is multi-threaded, like the daemon.
        let before = exe_rss_kb();
        assert!(before > 0, "the test binary has resident code");
        let released = release_exe_pages();
        assert!(released > 0, "some of the executable's pages were released");
        // Code and read-only data still work: they fault back from the page cache.
        let v: Vec<String> = (0..100).map(|i| format!("{i:x}")).collect();
        assert_eq!(v[42], "2a");
        assert!(
            exe_rss_kb() < before,
            "resident code went down: {} kB -> {} kB",
            before,
            exe_rss_kb()
        );
    }
}
