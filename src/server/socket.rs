//! The CRI unix socket: mode 0660 from the moment it can be reached, a stale file replaced, a
//! live one refused.

use super::ServerError;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use tokio::net::UnixListener;

/// Fails when another process answers on `path`; a stale socket file is removed.
pub fn check_free(path: &Path) -> Result<(), ServerError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::Io {
            context: format!("{} exists and is not a socket", path.display()),
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        });
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServerError::SocketInUse(path.to_path_buf()));
    }
    tracing::info!(socket = %path.display(), "removing a stale socket");
    std::fs::remove_file(path).map_err(super::io(format!(
        "removing stale socket {}",
        path.display()
    )))
}

/// Binds the socket so that it is never reachable with another mode than 0660: it is bound in a
/// private directory (0700) beside its path, given its mode there, and renamed into place.
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        crate::state::create_dirs(dir, 0o711)
            .map_err(super::io(format!("creating {}", dir.display())))?;
    }
    check_free(path)?;
    // A short name, so the temporary path is no longer than a typical final one (sun_path
    // holds 107 bytes).
    let private = dir.join(format!(".{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(super::io(format!("creating {}", private.display())))?;
    let tmp = private.join("s");
    let result = (|| {
        let l =
            UnixListener::bind(&tmp).map_err(super::io(format!("binding {}", tmp.display())))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))
            .map_err(super::io(format!("chmod 0660 {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(super::io(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )))?;
        Ok(l)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

/// Removes the socket file at shutdown, unless another daemon has replaced it meanwhile.
pub fn remove(path: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() && m.mode() & 0o777 == 0o660 {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

    #[tokio::test]
    async fn the_socket_appears_with_its_final_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferrio.sock");
        let ino = Inotify::init(InitFlags::IN_NONBLOCK).unwrap();
        ino.add_watch(
            dir.path(),
            AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO,
        )
        .unwrap();
        let _l = bind(&path).unwrap();
        let events = ino.read_events().unwrap();
        let named: Vec<_> = events
            .iter()
            .filter(|e| e.name.as_deref() == Some(std::ffi::OsStr::new("ferrio.sock")))
            .map(|e| e.mask)
            .collect();
        // Never created under its name (where it would have had the umask's mode until a chmod),
        // only moved there.
        assert_eq!(named, vec![AddWatchFlags::IN_MOVED_TO], "{events:?}");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("ferrio.sock")]);
        std::os::unix::net::UnixStream::connect(&path).unwrap();
    }
}
