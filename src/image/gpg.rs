//! Simple signing's OpenPGP check, by the host's `gpgv` (GnuPG's verify-only tool, installed
//! with apt on every Debian and Ubuntu node): no OpenPGP implementation is linked into ferrio
//! (the maintained Rust ones are either LGPL or would add megabytes to the one binary).
//!
//! Each check runs `gpgv` in a private, empty home directory with only the policy's keyring,
//! bounded in time, and accepts a signature only when gpgv exits 0 and reports `VALIDSIG`; the
//! signed content is what gpgv writes out, bounded in size.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long one `gpgv` may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest signed content read.
const MAX_PAYLOAD: u64 = 64 << 10;

/// The content of OpenPGP signed message `signature` if a key of `keyring` (binary or armored)
/// made it. Blocking.
pub fn verify(keyring: &[u8], signature: &[u8]) -> Result<Vec<u8>, String> {
    let dir = tempfile::Builder::new()
        .prefix("ferrio-gpgv-")
        .tempdir()
        .map_err(|e| format!("gpgv: {e}"))?;
    let (home, ring, sig, out, status_file) = (
        dir.path().join("home"),
        dir.path().join("keyring"),
        dir.path().join("signature"),
        dir.path().join("payload"),
        dir.path().join("status"),
    );
    std::fs::create_dir(&home).map_err(|e| format!("gpgv: {e}"))?;
    std::fs::write(&ring, keyring).map_err(|e| format!("gpgv: {e}"))?;
    std::fs::write(&sig, signature).map_err(|e| format!("gpgv: {e}"))?;
    let mut cmd = Command::new("gpgv");
    // The signed message is compressed: gpgv writes what it inflates to, bounded here.
    crate::sys::process::limit_file_size(&mut cmd, MAX_PAYLOAD + 1);
    let mut child = cmd
        .arg("--homedir")
        .arg(&home)
        .args(["--status-fd", "1", "--keyring"])
        .arg(&ring)
        .arg("--output")
        .arg(&out)
        .arg(&sig)
        .stdin(Stdio::null())
        // Status lines go to a file, so a gpgv that hangs cannot hold a pipe read.
        .stdout(Stdio::from(
            std::fs::File::create(&status_file).map_err(|e| format!("gpgv: {e}"))?,
        ))
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!("cannot run gpgv (GnuPG's verifier, needed for signedBy requirements): {e}")
        })?;
    let Some(code) = crate::sys::process::wait_or_kill(&mut child, TIMEOUT) else {
        return Err(format!("gpgv did not finish within {TIMEOUT:?}"));
    };
    let mut status = String::new();
    if let Ok(f) = std::fs::File::open(&status_file) {
        let _ = f.take(64 << 10).read_to_string(&mut status);
    }
    let valid = status.lines().any(|l| l.starts_with("[GNUPG:] VALIDSIG "));
    if !code.success() || !valid {
        let why = status
            .lines()
            .find_map(|l| {
                let l = l.strip_prefix("[GNUPG:] ")?;
                [
                    "NO_PUBKEY",
                    "BADSIG",
                    "EXPKEYSIG",
                    "REVKEYSIG",
                    "EXPSIG",
                    "ERRSIG",
                ]
                .iter()
                .any(|k| l.starts_with(k))
                .then(|| l.to_string())
            })
            .unwrap_or_else(|| format!("gpgv exited with {code}"));
        return Err(format!(
            "a GPG signature does not verify with the keyring: {why}"
        ));
    }
    let payload =
        crate::state::read_capped(&out, MAX_PAYLOAD).map_err(|e| format!("gpgv's output: {e}"))?;
    Ok(payload)
}
