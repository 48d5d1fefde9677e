//! The binary the helpers run from (CVE-2019-5736). A container's init, the processes ExecSync
//! and exec start, and the pod's pause all begin as ferrio (`__monitor`, `__exec`, `__pin-ns`
//! clone or exec it) and are inside the container before they exec the workload; a process in
//! the container that opens their `/proc/<pid>/exe` reaches the file they run. So the daemon
//! copies its own binary once into a memfd and seals it (no write, no resize, no more seals),
//! and every helper is exec'd from that copy (`/proc/self/fd/<n>`): what a container can reach
//! is a sealed, unlinked copy in memory, never the host's binary. runc and crun do the same
//! with a memfd; the cost is one copy per daemon start, nothing per container.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Sealed {
    /// Held open for the daemon's life (close-on-exec: no helper or container inherits it).
    _fd: OwnedFd,
    path: PathBuf,
}

static SEALED: OnceLock<Sealed> = OnceLock::new();

/// The sealed copy made by [`seal_own_binary`].
pub struct SealedCopy {
    pub bytes: u64,
    pub took: std::time::Duration,
}

/// Copies this process's binary into a sealed memfd, once per process; helpers are exec'd from
/// it from then on ([`helper_path`]).
pub fn seal_own_binary() -> io::Result<SealedCopy> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let t = std::time::Instant::now();
    if let Some(s) = SEALED.get() {
        let bytes = std::fs::metadata(&s.path)?.len();
        return Ok(SealedCopy {
            bytes,
            took: t.elapsed(),
        });
    }
    let fd = memfd_create(
        c"ferrio",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(io::Error::from)?;
    let mut copy = std::fs::File::from(fd);
    let mut own = std::fs::File::open("/proc/self/exe")?;
    let bytes = io::copy(&mut own, &mut copy)?;
    let fd = OwnedFd::from(copy);
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )
    .map_err(io::Error::from)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let _ = SEALED.set(Sealed { _fd: fd, path });
    Ok(SealedCopy {
        bytes,
        took: t.elapsed(),
    })
}

/// What helpers are exec'd from: the sealed copy once made, else this process's own binary.
pub fn helper_path() -> &'static Path {
    SEALED
        .get()
        .map(|s| s.path.as_path())
        .unwrap_or(Path::new("/proc/self/exe"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_sealed_against_writes_and_runs() {
        let copy = seal_own_binary().unwrap();
        let own = std::fs::metadata("/proc/self/exe").unwrap().len();
        assert_eq!(copy.bytes, own);
        let p = helper_path();
        assert!(p.starts_with("/proc/self/fd"), "{}", p.display());
        // Written: refused by the seal.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        let e = f.write_all(b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        drop(f);
        // A second call makes no second copy.
        assert_eq!(seal_own_binary().unwrap().bytes, own);
        assert_eq!(helper_path(), p);
        // And it runs: the test binary lists its tests from the copy.
        let out = std::process::Command::new(p)
            .args(["--list", "--format", "terse"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
}
