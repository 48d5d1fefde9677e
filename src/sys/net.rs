//! Network plumbing: bringing the loopback of a new network namespace up, and running a closure
//! inside a pod's network namespace on a thread of its own.

use std::io;

/// Sets IFF_UP on `lo` in the calling thread's network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS).
pub fn loopback_up() -> io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    // SAFETY: ifreq is a plain C struct of integers and byte arrays; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the interface named in `req` and writes its flags into the
    // union of the same struct, which lives for the whole call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // IFF_UP is 1: it fits the short the kernel keeps flags in.
    #[allow(clippy::cast_possible_truncation)]
    const UP: libc::c_short = libc::IFF_UP as libc::c_short;
    // SAFETY: the union's flags member was just filled in by the kernel.
    unsafe { req.ifr_ifru.ifru_flags |= UP };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a fresh thread that first joins the network namespace `netns` (a pinned nsfs
/// file such as `<run_root>/pods/<id>/ns/net`, or `/proc/<pid>/ns/net`) and exits when `f`
/// returns, so no other thread of the process ever changes namespace (setns(2) moves only the
/// calling thread). Blocks until the thread is done: call it from `spawn_blocking`, not from an
/// async task. Inside `f`, `/proc/thread-self/net/...` shows the joined namespace (`/proc/net`
/// and `/proc/self/net` follow the main thread, and `/sys/class/net` the namespace sysfs was
/// mounted in). A panic in `f` is propagated.
pub fn in_netns<T, F>(netns: &std::path::Path, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let ns = std::fs::File::open(netns)?;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("ferrio-netns".into())
            .spawn_scoped(scope, move || {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                drop(ns);
                Ok(f())
            })?;
        match thread.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
