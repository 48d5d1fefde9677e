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

/// Unmounts everything at or below `dir`, again while anything is left (mounts stacked on one
/// path); `true` when nothing is mounted there any more, so the directory can be removed
/// without reaching through a mount into what it shows.
pub fn unmount_all_under(dir: &Path) -> bool {
    for _ in 0..16 {
        let left = mounts_under(dir);
        if left.is_empty() {
            return true;
        }
        for m in left {
            if let Err(e) = unmount(&m) {
                tracing::warn!(error = %e, "unmounting");
            }
        }
    }
    mounts_under(dir).is_empty()
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

/// The mount a path is on (the deepest mount point that contains it): its source and
/// propagation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOf {
    pub mount_point: std::path::PathBuf,
    /// The mount's source (a device such as `/dev/vda1`, or `overlay`, `tmpfs`…).
    pub source: String,
    /// In a shared peer group (`shared:N`).
    pub shared: bool,
    /// A slave of a peer group (`master:N`).
    pub slave: bool,
}

/// What mount `path` (absolute, symlinks resolved) is on, in this process's mount namespace;
/// from /proc/self/mountinfo (procfs).
pub fn mount_of(path: &Path) -> io::Result<MountOf> {
    use procfs::process::MountOptFields;
    let infos = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map_err(|e| io::Error::other(format!("reading /proc/self/mountinfo: {e}")))?;
    // The last mount on the deepest mount point wins: later mounts cover earlier ones.
    let mut best: Option<&procfs::process::MountInfo> = None;
    for m in infos.iter() {
        if path.starts_with(&m.mount_point)
            && best.is_none_or(|b| {
                m.mount_point.components().count() >= b.mount_point.components().count()
            })
        {
            best = Some(m);
        }
    }
    let m = best.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is on no mount", path.display()),
        )
    })?;
    Ok(MountOf {
        mount_point: m.mount_point.clone(),
        source: m.mount_source.clone().unwrap_or_default(),
        shared: m
            .opt_fields
            .iter()
            .any(|f| matches!(f, MountOptFields::Shared(_))),
        slave: m
            .opt_fields
            .iter()
            .any(|f| matches!(f, MountOptFields::Master(_))),
    })
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

/// Kernel ABI of the new mount API (include/uapi/linux/mount.h, fcntl.h); the libc crate has
/// no Linux-gnu definitions of these.
mod abi {
    pub const OPEN_TREE_CLONE: libc::c_uint = 1;
    pub const AT_EMPTY_PATH: libc::c_uint = 0x1000;
    pub const AT_RECURSIVE: libc::c_uint = 0x8000;
    pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
    pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    pub const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
    /// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
    #[repr(C)]
    pub struct MountAttr {
        pub attr_set: u64,
        pub attr_clr: u64,
        pub propagation: u64,
        pub userns_fd: u64,
    }
}

/// Mounts `src` at `target` (which must exist) idmapped through the user namespace `userns`
/// (an open `/proc/<pid>/ns/user` or a pin of it): a file owned by id N on `src` appears owned
/// by the host id that `userns` maps N to. `recursive`: submounts too (each must support
/// idmapping). open_tree(OPEN_TREE_CLONE) makes a detached copy, mount_setattr(MOUNT_ATTR_IDMAP)
/// idmaps it (and makes it read-only with `readonly`) and move_mount attaches it; `src` itself
/// is left as it was.
pub fn idmapped_bind(
    src: &Path,
    target: &Path,
    userns: &impl std::os::fd::AsRawFd,
    recursive: bool,
    readonly: bool,
) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let ctx = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "idmapped mount of {} on {}: {what}: {e}",
                src.display(),
                target.display()
            ),
        )
    };
    let csrc = CString::new(src.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let ctarget = CString::new(target.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let rec = if recursive { abi::AT_RECURSIVE } else { 0 };
    // SAFETY: `csrc` is a NUL-terminated path that outlives the call; open_tree returns a new
    // file descriptor (or -1) and keeps no pointer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            csrc.as_ptr(),
            abi::OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | rec,
        )
    };
    if fd < 0 {
        return Err(ctx("open_tree", io::Error::last_os_error()));
    }
    let fd = i32::try_from(fd)
        .map_err(|_| ctx("open_tree", io::Error::from_raw_os_error(libc::EBADF)))?;
    // SAFETY: `fd` was just returned by open_tree and is owned by nothing else.
    let tree = unsafe { OwnedFd::from_raw_fd(fd) };
    let attr = abi::MountAttr {
        attr_set: abi::MOUNT_ATTR_IDMAP | if readonly { abi::MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: `tree` is a valid mount fd, `empty` a NUL-terminated string and `attr` a
    // `struct mount_attr` of the size passed; the kernel copies both and keeps no pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            std::os::fd::AsRawFd::as_raw_fd(&tree),
            empty.as_ptr(),
            abi::AT_EMPTY_PATH | rec,
            &attr as *const abi::MountAttr,
            std::mem::size_of::<abi::MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(ctx(
            "mount_setattr(MOUNT_ATTR_IDMAP)",
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: as above; `ctarget` is a NUL-terminated path that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            std::os::fd::AsRawFd::as_raw_fd(&tree),
            empty.as_ptr(),
            libc::AT_FDCWD,
            ctarget.as_ptr(),
            abi::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(ctx("move_mount", io::Error::last_os_error()));
    }
    Ok(())
}
