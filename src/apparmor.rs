//! AppArmor on hosts that enforce it (Debian, Ubuntu, SUSE): ferrio's own default profile,
//! which RuntimeDefault and unset container requests get ([`DEFAULT_PROFILE_NAME`], see
//! `spec::apparmor_profile`), and loading it with `apparmor_parser` when the kernel does not
//! have it yet.
//!
//! The profile follows what the default profiles of the other runtimes (docker, containerd,
//! CRI-O) let a container do: files, network and capabilities as seccomp and the spec allow
//! them, no mounts, no writes to the host-wide parts of /proc and /sys, ptrace and signals only
//! among processes of the same profile (and signals from unconfined host processes).
//!
//! Everything here is blocking (sysfs reads, a file write, an `apparmor_parser` run): async
//! callers run it on `spawn_blocking`.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The name of ferrio's default AppArmor profile.
pub const DEFAULT_PROFILE_NAME: &str = "ferrio-default";

/// Where the kernel lists its loaded profiles, one `name (mode)` a line.
const PROFILES_FILE: &str = "/sys/kernel/security/apparmor/profiles";

/// The directories searched for `apparmor_parser` before `PATH` (a daemon started by systemd
/// often has a `PATH` without the sbin directories).
const PARSER_DIRS: [&str; 2] = ["/sbin", "/usr/sbin"];

#[derive(Debug, thiserror::Error)]
pub enum AppArmorError {
    #[error("reading the loaded AppArmor profiles ({PROFILES_FILE}): {0}")]
    Profiles(#[source] io::Error),
    #[error("writing the AppArmor profile {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "apparmor_parser, needed to load the AppArmor profile {DEFAULT_PROFILE_NAME}, is in \
         neither /sbin, /usr/sbin nor PATH (Debian and Ubuntu: the apparmor package)"
    )]
    ParserNotFound,
    #[error("running {}: {source}", parser.display())]
    Spawn {
        parser: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} -Kr {} failed ({status}): {stderr}", parser.display(), path.display())]
    Load {
        parser: PathBuf,
        path: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
}

/// What [`ensure_default`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The profile was written and loaded (or replaced) now.
    Loaded,
    /// The kernel already had the profile; nothing was done.
    AlreadyLoaded,
    /// This host does not enforce AppArmor; nothing was done.
    Disabled,
}

/// The text of ferrio's default profile, in the policy language of `apparmor_parser` 3.0
/// (Debian 12) and later. `tunables/global` (which defines `@{PROC}`) comes with every
/// distribution's AppArmor package, the one that also ships `apparmor_parser`;
/// `abstractions/base` is included only where it exists.
pub fn default_profile_text() -> String {
    let name = DEFAULT_PROFILE_NAME;
    format!(
        r#"# ferrio's default AppArmor profile for containers (RuntimeDefault).
# Written by ferrio each time it loads the profile: edits to this file do not last.

#include <tunables/global>

profile {name} flags=(attach_disconnected,mediate_deleted) {{
  include if exists <abstractions/base>

  # Broad allows: seccomp, the capability sets and the spec's mounts do the narrowing.
  network,
  capability,
  file,
  umount,

  # No mounts of any kind, also with CAP_SYS_ADMIN.
  deny mount,

  # Signals: from host processes (ferrio's helpers, the OCI runtime) and among the
  # processes of containers that run under this profile.
  signal (receive) peer=unconfined,
  signal (send,receive) peer={name},

  # ptrace only of and by processes of this profile (ps, top, gdb inside the container).
  ptrace (trace,read,tracedby,readby) peer={name},

  # /proc: no writes to the files at its top level, nor below any directory that is neither
  # a process (roughly: a number not starting with 0) nor sys/, by names of one, two, three
  # and four or more characters. /proc/self and /proc/thread-self are links to a process
  # directory, and rules match the path a link leads to.
  deny @{{PROC}}/* w,
  deny @{{PROC}}/{{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}}/** w,
  # /proc/sys: no writes outside k* (kernel/), and inside kernel/ only to names that start
  # with s, or have h second or m third: meant for shm*, the IPC namespace's own settings.
  deny @{{PROC}}/sys/[^k]** w,
  deny @{{PROC}}/sys/kernel/{{?,??,[^s][^h][^m]**}} w,
  deny @{{PROC}}/sysrq-trigger rwklx,
  deny @{{PROC}}/kcore rwklx,
  deny @{{PROC}}/kmem rwklx,
  deny @{{PROC}}/mem rwklx,

  # /sys: no writes below anything but /sys/fs/cgr* (the cgroup tree, which the runtime
  # mounts read-only anyway for unprivileged containers), and no access at all to the
  # firmware, the security modules' files, or the power-capping meters (their energy
  # counters are a side channel on what other processes compute).
  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
}}
"#
    )
}

/// Whether this host enforces AppArmor: the module is enabled and securityfs shows its
/// interface.
pub fn enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'))
        && Path::new("/sys/kernel/security/apparmor").is_dir()
}

/// Whether the kernel has a profile called `name` loaded (in any mode).
pub fn is_loaded(name: &str) -> io::Result<bool> {
    Ok(loaded_in(&std::fs::read_to_string(PROFILES_FILE)?, name))
}

/// Whether `name` is among `profiles`, the text of the kernel's profile list: lines
/// `name (mode)`, where a name may hold spaces and parentheses of its own.
fn loaded_in(profiles: &str, name: &str) -> bool {
    profiles
        .lines()
        .any(|l| l.rsplit_once(" (").map_or(l, |(n, _)| n) == name)
}

/// Makes sure the kernel has ferrio's default profile where AppArmor is enforced: unless it is
/// already loaded (and not `force`, which SIGHUP sets), writes [`default_profile_text`] to
/// `dir/ferrio-default` and loads it with `apparmor_parser -Kr` (replace, no cache).
///
/// Blocking: run it on `spawn_blocking` from async code.
pub fn ensure_default(force: bool, dir: &Path) -> Result<Outcome, AppArmorError> {
    if !enabled() {
        return Ok(Outcome::Disabled);
    }
    if !force && is_loaded(DEFAULT_PROFILE_NAME).map_err(AppArmorError::Profiles)? {
        tracing::debug!(
            profile = DEFAULT_PROFILE_NAME,
            "AppArmor profile already loaded"
        );
        return Ok(Outcome::AlreadyLoaded);
    }
    let parser = find_parser().ok_or(AppArmorError::ParserNotFound)?;
    let path = write_profile(dir)?;
    load(&parser, &path)?;
    tracing::info!(
        profile = DEFAULT_PROFILE_NAME,
        path = %path.display(),
        forced = force,
        "AppArmor profile loaded"
    );
    Ok(Outcome::Loaded)
}

/// Writes the default profile to `dir/ferrio-default` (0644; `dir` made 0755 when missing),
/// replacing the file in one rename.
fn write_profile(dir: &Path) -> Result<PathBuf, AppArmorError> {
    let path = dir.join(DEFAULT_PROFILE_NAME);
    let write_err = |source| AppArmorError::Write {
        path: path.clone(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(write_err)?;
    crate::state::write_atomic(&path, default_profile_text().as_bytes()).map_err(write_err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).map_err(write_err)?;
    Ok(path)
}

/// Loads (or replaces) the profiles of `path` into the kernel, skipping the parser's cache.
fn load(parser: &Path, path: &Path) -> Result<(), AppArmorError> {
    let out = Command::new(parser)
        .arg("-Kr")
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| AppArmorError::Spawn {
            parser: parser.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(AppArmorError::Load {
            parser: parser.to_path_buf(),
            path: path.to_path_buf(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// `apparmor_parser` in /sbin, /usr/sbin or a directory of `PATH`.
fn find_parser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    PARSER_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .map(|d| d.join("apparmor_parser"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_text_has_the_rules() {
        let t = default_profile_text();
        assert!(t.contains("#include <tunables/global>"));
        assert!(
            t.contains("profile ferrio-default flags=(attach_disconnected,mediate_deleted) {\n")
        );
        assert!(t.contains("include if exists <abstractions/base>"));
        for rule in [
            "network,",
            "capability,",
            "file,",
            "umount,",
            "deny mount,",
            "deny @{PROC}/* w,",
            "deny @{PROC}/sys/[^k]** w,",
            "deny @{PROC}/sys/kernel/{?,??,[^s][^h][^m]**} w,",
            "deny @{PROC}/sysrq-trigger rwklx,",
            "deny @{PROC}/kcore rwklx,",
            "deny /sys/firmware/** rwklx,",
            "deny /sys/kernel/security/** rwklx,",
            "deny /sys/fs/cg[^r]*/** wklx,",
            "signal (receive) peer=unconfined,",
            "signal (send,receive) peer=ferrio-default,",
            "ptrace (trace,read,tracedby,readby) peer=ferrio-default,",
        ] {
            assert!(t.lines().any(|l| l.trim() == rule), "missing rule {rule:?}");
        }
        // format! left no doubled braces, and the profile's block closes once, at the end.
        assert!(!t.contains("{{") && !t.contains("}}"));
        assert!(t.trim_end().ends_with('}'));
        assert_eq!(t.matches(" {\n").count(), 1);
    }

    #[test]
    fn spec_uses_this_profile() {
        assert_eq!(crate::spec::APPARMOR_DEFAULT_PROFILE, DEFAULT_PROFILE_NAME);
    }

    #[test]
    fn loaded_profiles_parsing() {
        let loaded = "ferrio-default (enforce)\nmy profile (complain)\n/usr/bin/x (enforce)\n\
                      odd (name) (kill)\nunconfined-ish (unconfined)\n";
        assert!(loaded_in(loaded, "ferrio-default"));
        assert!(loaded_in(loaded, "my profile"));
        assert!(loaded_in(loaded, "/usr/bin/x"));
        assert!(loaded_in(loaded, "odd (name)"));
        assert!(loaded_in(loaded, "unconfined-ish"));
        assert!(!loaded_in(loaded, "other"));
        assert!(!loaded_in(loaded, "ferrio"));
        assert!(!loaded_in("", "ferrio-default"));
    }

    #[test]
    fn profile_file_written_0644_in_a_new_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("apparmor");
        let path = write_profile(&dir).unwrap();
        assert_eq!(path, dir.join("ferrio-default"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            default_profile_text()
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o644);
        // Written again (SIGHUP), the file is replaced.
        std::fs::write(&path, "stale").unwrap();
        write_profile(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            default_profile_text()
        );
    }

    /// Parse-only (`-Q`: no kernel load, `-K`: no cache) with the host's parser, where there is
    /// one: needs neither root nor an AppArmor kernel.
    #[test]
    fn apparmor_parser_accepts_the_profile() {
        let Some(parser) = find_parser() else {
            println!("skipped: no apparmor_parser on this machine");
            return;
        };
        if !Path::new("/etc/apparmor.d/tunables/global").exists() {
            println!("skipped: no /etc/apparmor.d/tunables/global on this machine");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = write_profile(tmp.path()).unwrap();
        let out = Command::new(&parser)
            .args(["-Q", "-K"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} -Q -K rejected the profile ({}): {}",
            parser.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
