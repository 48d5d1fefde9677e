//! Per-registry TLS, as containers-certs.d(5) lays it out (and CRI-O, Podman and Docker read
//! it): `<certs_dir>/<host[:port]>/` holds `*.crt` CA certificates trusted besides the system's
//! roots for that registry, and `<name>.cert` with `<name>.key`, a client certificate and its
//! key. Read again for every pull, so a changed directory takes effect without a restart.

use super::ImageError;
use std::path::{Path, PathBuf};

/// The largest certificate or key file read.
const MAX_FILE: u64 = 1 << 20;

/// What a registry's certs.d directory holds.
#[derive(Clone, Default)]
pub struct RegistryTls {
    /// PEM CA certificates.
    pub roots: Vec<Vec<u8>>,
    /// The client certificate followed by its key (PEM), for reqwest's `Identity`.
    pub identity: Option<Vec<u8>>,
    pub dir: PathBuf,
}

impl std::fmt::Debug for RegistryTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryTls")
            .field("roots", &self.roots.len())
            .field("identity", &self.identity.is_some())
            .field("dir", &self.dir)
            .finish()
    }
}

/// The TLS files for `host` (`host[:port]`, as the reference names the registry); None when
/// there is no such directory (or no certs dir). Blocking.
pub fn load(certs_dir: &Path, host: &str) -> Result<Option<RegistryTls>, ImageError> {
    if certs_dir.as_os_str().is_empty() || host.contains('/') || host.starts_with('.') {
        return Ok(None);
    }
    let dir = certs_dir.join(host);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io(format!("reading {}", dir.display()), e)),
    };
    let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    files.sort();
    let read = |p: &Path| {
        crate::state::read_capped(p, MAX_FILE)
            .map_err(|e| ImageError::io(format!("reading {}", p.display()), e))
    };
    let mut tls = RegistryTls {
        dir: dir.clone(),
        ..Default::default()
    };
    for p in &files {
        match p.extension().and_then(|x| x.to_str()) {
            Some("crt") => tls.roots.push(read(p)?),
            Some("cert") if tls.identity.is_none() => {
                let key = p.with_extension("key");
                if !key.exists() {
                    return Err(ImageError::InvalidArgument(format!(
                        "{}: a client certificate without its key {}",
                        p.display(),
                        key.display()
                    )));
                }
                let mut pem = read(p)?;
                pem.push(b'\n');
                pem.extend(read(&key)?);
                tls.identity = Some(pem);
            }
            Some("key") if !p.with_extension("cert").exists() => {
                return Err(ImageError::InvalidArgument(format!(
                    "{}: a client key without its certificate {}",
                    p.display(),
                    p.with_extension("cert").display()
                )));
            }
            _ => {}
        }
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_identity_and_mismatched_pairs() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path(), "reg.example:5000").unwrap().is_none());
        assert!(load(Path::new(""), "reg.example").unwrap().is_none());
        assert!(load(d.path(), "../etc").unwrap().is_none());
        let host = d.path().join("reg.example:5000");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("ca.crt"), "CA").unwrap();
        std::fs::write(host.join("other.crt"), "CA2").unwrap();
        std::fs::write(host.join("client.cert"), "CERT").unwrap();
        std::fs::write(host.join("client.key"), "KEY").unwrap();
        let t = load(d.path(), "reg.example:5000").unwrap().unwrap();
        assert_eq!(t.roots, vec![b"CA".to_vec(), b"CA2".to_vec()]);
        assert_eq!(t.identity.unwrap(), b"CERT\nKEY".to_vec());
        std::fs::remove_file(host.join("client.key")).unwrap();
        let e = load(d.path(), "reg.example:5000").unwrap_err().to_string();
        assert!(e.contains("without its key"), "{e}");
        std::fs::remove_file(host.join("client.cert")).unwrap();
        std::fs::write(host.join("lone.key"), "KEY").unwrap();
        let e = load(d.path(), "reg.example:5000").unwrap_err().to_string();
        assert!(e.contains("without its certificate"), "{e}");
    }
}
