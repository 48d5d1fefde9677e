//! Mounts the daemon and its helpers make: overlay rootfs, tmpfs for /dev/shm, namespace pins.
//! mount(2) is safe on any thread (it neither forks nor changes the thread's namespaces).

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::io;
use std::path::Path;

/// Mounts an overlay of `lower` (top layer first) with `upper`/`work` at `target`.
pub fn mount_overlay(lower: &[&Path], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    if opts.len() >= 4096 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "overlay options are {} bytes, beyond the kernel's page-size limit",
                opts.len()
            ),
        ));
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("mount overlay on {}: {e}", target.display()),
        )
    })
}

/// Mounts `lower` (top layer first) read-only at `target`: an overlay without an upper layer,
/// or a read-only bind of the one layer (overlayfs needs two lower layers without an upper).
pub fn mount_layers_ro(lower: &[&Path], target: &Path) -> io::Result<()> {
    if let [one] = lower {
        bind(one, target)?;
        return mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("remount {} read-only: {e}", target.display()),
            )
        });
    }
    let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let opts = format!("lowerdir={}", lower.join(":"));
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("mount read-only overlay on {}: {e}", target.display()),
        )
    })
}

/// Mounts a tmpfs at `target` with `size` bytes and mode 1777 (a pod's /dev/shm).
pub fn mount_shm(target: &Path, size: u64) -> io::Result<()> {
    let opts = format!("mode=1777,size={size}");
    mount(
        Some("shm"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(opts.as_str()),
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("mount tmpfs on {}: {e}", target.display()),
        )
    })
}

/// Bind-mounts `src` onto `target` (which must exist).
pub fn bind(src: &Path, target: &Path) -> io::Result<()> {
    mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("bind {} on {}: {e}", src.display(), target.display()),
        )
    })
}

/// Unmounts `target` (lazily, so a busy mount does not fail); a path that is not a mount point
/// or does not exist is fine.
pub fn unmount(target: &Path) -> io::Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::new(
            io::Error::from(e).kind(),
            format!("unmount {}: {e}", target.display()),
        )),
    }
}

/// Every mount point at or below `dir`, from /proc/self/mountinfo (deepest first, so they can
/// be unmounted in order).
pub fn mounts_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<std::path::PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(std::path::PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8)
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes() {
        assert_eq!(super::unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(super::unescape_mountinfo("/plain"), "/plain");
    }
}
