//! The OS layer: the only module that may hold `unsafe` code (each block with a `// SAFETY:` comment), and the home of
//! small system calls the domain uses.

// The one module allowed `unsafe` (the crate denies it, Cargo.toml's [lints]).
#![allow(unsafe_code)]

use std::io;
use std::path::Path;

/// Creates an overlayfs whiteout (a 0/0 character device) at `path`.
pub fn make_whiteout(path: &Path) -> io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mknod(path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0)).map_err(io::Error::from)
}

/// Sets the process's file mode creation mask. The daemon (and the CLI when it writes the store
/// itself) runs with 0o077, so whatever it creates is its own unless it says otherwise; the
/// helpers run with 0o022, the mask runc and crun give a container whose spec names none.
pub fn set_umask(mask: u32) {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
}

/// An exclusive advisory lock on a file, held until dropped.
pub struct FileLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

impl FileLock {
    /// Takes the lock without waiting; `Ok(None)` when another process holds it.
    pub fn try_lock(path: &Path) -> io::Result<Option<FileLock>> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(FileLock { _file: l })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(io::Error::from(e)),
        }
    }
}

/// Bytes and inodes used below `dir` (allocated blocks, as `du` counts them); files are counted
/// once per inode.
pub fn disk_usage(dir: &Path) -> io::Result<(u64, u64)> {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in rd {
            let Ok(e) = e else { continue };
            let Ok(m) = e.metadata() else { continue };
            if seen.insert((m.dev(), m.ino())) {
                bytes += m.blocks() * 512;
                inodes += 1;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, inodes))
}

/// Flushes every dirty page of the filesystem holding `path` (syncfs(2)).
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    use std::os::fd::AsRawFd;
    nix::unistd::syncfs(f.as_raw_fd()).map_err(io::Error::from)
}

/// Starts writing the dirty pages of the regular file at `path` back to disk and returns without
/// waiting (sync_file_range(2), SYNC_FILE_RANGE_WRITE), so that a later syncfs finds them written
/// or in flight instead of starting all the writeback itself. A final symlink is not followed and
/// a FIFO is not waited on; anything but a regular file is left alone.
pub fn start_writeback(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Ok(());
    }
    // SAFETY: `f` is an open descriptor that outlives the call; the call takes no pointers and
    // only schedules writeback of the file's own pages.
    let r = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub mod exe;
pub mod mount;
pub mod net;
pub mod process;
pub mod seccomp;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writeback_starts_for_files_and_leaves_fifos_and_symlinks_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();
        start_writeback(&file).unwrap();
        // A FIFO with no writer is neither waited on nor touched.
        let fifo = dir.path().join("p");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        start_writeback(&fifo).unwrap();
        // A symlink is not followed.
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = start_writeback(&link).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{err}");
        assert!(start_writeback(&dir.path().join("missing")).is_err());
    }
}
