//! The CRI unix socket: mode 0660, a stale file replaced, a live one refused.

use super::ServerError;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
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

pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(super::io(format!("creating {}", dir.display())))?;
    }
    check_free(path)?;
    let l = UnixListener::bind(path).map_err(super::io(format!("binding {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(super::io(format!("chmod 0660 {}", path.display())))?;
    Ok(l)
}

/// Removes the socket file at shutdown, unless another daemon has replaced it meanwhile.
pub fn remove(path: &Path) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_socket() && m.mode() & 0o777 == 0o660 {
            let _ = std::fs::remove_file(path);
        }
    }
}
