//! The external handler: an OCI runtime CLI (runc, crun) driven from the monitor. Its stderr
//! and its `--log` file are kept in every error, since that is where it says what went wrong.

use super::{ExecProcess, Execed, OciRuntime, OciStatus, RuntimeError, Stdio};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as PStdio};

/// The descriptor an exec's process file is handed to the runtime as.
const PROCESS_FD: i32 = 3;

pub struct OciCli {
    path: PathBuf,
    root: PathBuf,
}

impl OciCli {
    pub fn new(path: PathBuf, root: PathBuf) -> Self {
        OciCli { path, root }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("--root").arg(&self.root);
        c
    }

    fn name_str(&self) -> String {
        self.path.display().to_string()
    }

    /// `create`, or with `restore` runc's `restore` (running at once).
    fn create_or_restore(
        &self,
        id: &str,
        bundle: &Path,
        restore: Option<&super::RestoreFrom>,
        stdio: Stdio,
    ) -> Result<i32, RuntimeError> {
        let pid_file = bundle.join("init.pid");
        let log = bundle.join("runtime.log");
        let _ = std::fs::remove_file(&log);
        let op = if restore.is_some() {
            "restore"
        } else {
            "create"
        };
        let mut cmd = self.cmd();
        if let Some(from) = restore {
            let restorer = criu_support(&self.path)
                .map_err(|e| RuntimeError::new(&self.name_str(), op, id, e))?;
            if restorer == Restorer::CriuFlag {
                cmd.arg("--criu").arg(&from.criu);
            }
            criu_first_in_path(&mut cmd, &from.criu);
        }
        if super::bundle_uses_systemd(bundle) {
            // runc and crun record the driver in their state; later commands need no flag.
            cmd.arg("--systemd-cgroup");
        }
        cmd.arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .arg(op);
        if let Some(from) = restore {
            // runc's restore: its images, a work directory beside them, the container left
            // running; CRIU from `from.criu` (a global option, so set before the command).
            cmd.arg("--detach")
                .arg("--image-path")
                .arg(&from.images)
                .arg("--work-path")
                .arg(from.images.with_file_name("restore-work"));
        }
        cmd.arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        if let Some(console) = &stdio.console {
            cmd.arg("--console-socket").arg(console);
        }
        cmd.arg(id)
            .stdin(PStdio::from(stdio.stdin))
            .stdout(PStdio::from(stdio.stdout))
            .stderr(PStdio::from(stdio.stderr));
        let status = cmd.status().map_err(self.spawn_failed(op, id))?;
        if !status.success() {
            return Err(RuntimeError::new(
                &self.name_str(),
                op,
                id,
                format!("{status}: {}", read_log(&log)),
            ));
        }
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .ok_or_else(|| RuntimeError::new(&self.name_str(), op, id, "no pid file after it"))?;
        Ok(pid)
    }

    /// The error for a runtime command that could not be started.
    fn spawn_failed<'a>(
        &'a self,
        op: &'static str,
        id: &'a str,
    ) -> impl Fn(std::io::Error) -> RuntimeError + 'a {
        move |e| {
            RuntimeError::new(
                &self.name_str(),
                op,
                id,
                format!("running {}: {e}", self.path.display()),
            )
        }
    }

    /// Runs a runtime command to completion; a failure carries its stderr.
    fn run(&self, op: &'static str, id: &str, mut cmd: Command) -> Result<Vec<u8>, RuntimeError> {
        let out = cmd
            .stdin(PStdio::null())
            .output()
            .map_err(self.spawn_failed(op, id))?;
        if !out.status.success() {
            let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if msg.is_empty() {
                msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
            }
            return Err(RuntimeError::new(
                &self.name_str(),
                op,
                id,
                format!("{} ({msg})", out.status),
            ));
        }
        Ok(out.stdout)
    }
}

/// libcriu (crun) and runc from 1.2 on (which ignores `--criu`) run `criu` from PATH: the
/// configured one's directory goes first.
pub fn criu_first_in_path(cmd: &mut Command, criu: &Path) {
    if let Some(dir) = criu.parent().filter(|d| d.is_absolute()) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(dirs) {
            cmd.env("PATH", joined);
        }
    }
}

/// How an OCI runtime CLI checkpoints and restores (through CRIU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restorer {
    /// runc: it runs the CRIU binary given by its global `--criu` (before 1.2; later ones look
    /// in PATH).
    CriuFlag,
    /// crun built with CRIU (`+CRIU` among its features): libcriu, which runs `criu` from PATH.
    Libcriu,
}

/// Whether the runtime at `path` can checkpoint and restore, from what `--version` says: runc
/// takes `--criu`; crun lists its features and has CRIU only with `+CRIU`; other runtimes are
/// not driven for this (their checkpoint flags differ).
pub fn criu_support(path: &Path) -> Result<Restorer, String> {
    // Into an anonymous file, not a pipe: a runtime (or a wrapper's child) that kept a pipe
    // open would leave its reader waiting.
    let out_file = tempfile::tempfile().map_err(|e| format!("a temporary file: {e}"))?;
    let mut child = Command::new(path)
        .arg("--version")
        .stdin(PStdio::null())
        .stdout(out_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(PStdio::null())
        .spawn()
        .map_err(|e| format!("running {} --version: {e}", path.display()))?;
    match crate::sys::process::wait_or_kill(&mut child, std::time::Duration::from_secs(10)) {
        Some(st) if st.success() => restorer_of(&read_start(out_file, 64 << 10)),
        Some(st) => Err(format!("{} --version: {st}", path.display())),
        None => Err(format!(
            "{} --version did not answer within 10 s",
            path.display()
        )),
    }
}

/// The first `max` bytes of an anonymous file a child wrote, as text.
pub fn read_start(mut f: std::fs::File, max: u64) -> String {
    use std::io::{Read, Seek};
    let mut b = Vec::new();
    if f.rewind().is_ok() {
        let _ = f.take(max).read_to_end(&mut b);
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn restorer_of(version: &str) -> Result<Restorer, String> {
    let first = version.lines().next().unwrap_or("").trim();
    if first.starts_with("runc") {
        return Ok(Restorer::CriuFlag);
    }
    if !first.starts_with("crun") {
        return Err(format!(
            "{first:?}: ferrio checkpoints and restores through runc and crun only"
        ));
    }
    if version.split_whitespace().any(|f| f == "+CRIU") {
        Ok(Restorer::Libcriu)
    } else {
        Err(format!(
            "{first} is built without CRIU (its features lack +CRIU), so it cannot restore a checkpoint; use the built-in handler or runc"
        ))
    }
}

fn read_log(path: &Path) -> String {
    // runc and crun write JSON lines {"level":..,"msg":..}; keep the messages of errors.
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let msgs: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error") | Some("fatal")))
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .collect();
    if msgs.is_empty() {
        text.trim().to_string()
    } else {
        msgs.join("; ")
    }
}

impl OciRuntime for OciCli {
    fn name(&self) -> String {
        self.name_str()
    }

    fn create(&self, id: &str, bundle: &Path, stdio: Stdio) -> Result<i32, RuntimeError> {
        self.create_or_restore(id, bundle, None, stdio)
    }

    fn restore(
        &self,
        id: &str,
        bundle: &Path,
        from: &super::RestoreFrom,
        stdio: Stdio,
    ) -> Result<i32, RuntimeError> {
        self.create_or_restore(id, bundle, Some(from), stdio)
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut c = self.cmd();
        c.arg("start").arg(id);
        self.run("start", id, c).map(|_| ())
    }

    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        let mut c = self.cmd();
        c.arg("kill");
        if all {
            c.arg("--all");
        }
        c.arg(id).arg(signal.to_string());
        self.run("kill", id, c).map(|_| ())
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        if self.state(id)? == OciStatus::Unknown {
            return Ok(());
        }
        let mut c = self.cmd();
        c.arg("delete");
        if force {
            c.arg("--force");
        }
        c.arg(id);
        self.run("delete", id, c).map(|_| ())
    }

    fn state(&self, id: &str) -> Result<OciStatus, RuntimeError> {
        let mut c = self.cmd();
        c.arg("state").arg(id);
        let out = match self.run("state", id, c) {
            Ok(o) => o,
            Err(RuntimeError::Failed { message, .. })
                if message.contains("does not exist")
                    || message.contains("not exist")
                    || message.contains("No such") =>
            {
                return Ok(OciStatus::Unknown)
            }
            Err(e) => return Err(e),
        };
        let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
            RuntimeError::new(
                &self.name_str(),
                "state",
                id,
                format!("bad state JSON: {e}"),
            )
        })?;
        Ok(match v["status"].as_str() {
            Some("creating") => OciStatus::Creating,
            Some("created") => OciStatus::Created,
            Some("running") => OciStatus::Running,
            Some("paused") => OciStatus::Paused,
            Some("stopped") => OciStatus::Stopped,
            _ => OciStatus::Unknown,
        })
    }

    fn exec(&self, id: &str, process: &ExecProcess, stdio: Stdio) -> Result<Execed, RuntimeError> {
        let mut c = self.cmd();
        c.arg("exec");
        if let Some(console) = &process.console_socket {
            c.arg("--tty")
                .arg("--detach")
                .arg("--console-socket")
                .arg(console);
            c.arg("--pid-file").arg(console.with_extension("pid"));
        }
        if let Some(bundle) = &process.bundle {
            // The whole process, built from the container's own (capabilities, rlimits, labels,
            // supplemental groups — crun has no --additional-gids), handed over in a memfd
            // rather than a file that would have to be cleaned up: the runtime opens
            // /proc/self/fd/3, which is that memfd in its process.
            let fail = |e: String| RuntimeError::new(&self.name_str(), "exec", id, e);
            let spec = oci_spec::runtime::Spec::load(bundle.join("config.json"))
                .map_err(|e| fail(format!("reading the bundle's spec: {e}")))?;
            let proc_ = super::exec_process(&spec, process).map_err(fail)?;
            let json = serde_json::to_vec(&proc_).map_err(|e| fail(e.to_string()))?;
            let fd = crate::sys::process::memfd_with("process.json", &json)
                .map_err(|e| fail(format!("process file: {e}")))?;
            crate::sys::process::give_fd(&mut c, fd, PROCESS_FD);
            c.arg("--process")
                .arg(format!("/proc/self/fd/{PROCESS_FD}"))
                .arg(id);
        } else {
            if let Some(cwd) = &process.cwd {
                c.arg("--cwd").arg(cwd);
            }
            if let Some((uid, gid, gids)) = &process.user {
                c.arg("--user").arg(format!("{uid}:{gid}"));
                for g in gids {
                    c.arg("--additional-gids").arg(g.to_string());
                }
            }
            for e in &process.env {
                c.arg("--env").arg(e);
            }
            c.arg(id).args(&process.args);
        }
        c.stdin(PStdio::from(stdio.stdin))
            .stdout(PStdio::from(stdio.stdout))
            .stderr(PStdio::from(stdio.stderr));
        if let Some(console) = &process.console_socket {
            // --detach: the runtime returns once the process runs; its pid is in the pid file.
            let out = c.output().map_err(|e| {
                RuntimeError::new(
                    &self.name_str(),
                    "exec",
                    id,
                    format!("running {}: {e}", self.path.display()),
                )
            })?;
            if !out.status.success() {
                return Err(RuntimeError::new(
                    &self.name_str(),
                    "exec",
                    id,
                    format!(
                        "{}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ));
            }
            let pid = std::fs::read_to_string(console.with_extension("pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .ok_or_else(|| {
                    RuntimeError::new(&self.name_str(), "exec", id, "no pid file after exec")
                })?;
            return Ok(Execed { pid });
        }
        let child = c.spawn().map_err(|e| {
            RuntimeError::new(
                &self.name_str(),
                "exec",
                id,
                format!("running {}: {e}", self.path.display()),
            )
        })?;
        Ok(Execed {
            pid: child.id() as i32,
        })
    }

    fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), RuntimeError> {
        use std::io::Write;
        let json = serde_json::to_vec(resources)
            .map_err(|e| RuntimeError::new(&self.name_str(), "update", id, e.to_string()))?;
        let mut c = self.cmd();
        c.arg("update").arg("--resources").arg("-").arg(id);
        let mut child = c
            .stdin(PStdio::piped())
            .stdout(PStdio::piped())
            .stderr(PStdio::piped())
            .spawn()
            .map_err(|e| RuntimeError::new(&self.name_str(), "update", id, e.to_string()))?;
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(&json);
        }
        let out = child
            .wait_with_output()
            .map_err(|e| RuntimeError::new(&self.name_str(), "update", id, e.to_string()))?;
        if !out.status.success() {
            return Err(RuntimeError::new(
                &self.name_str(),
                "update",
                id,
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(())
    }

    fn stats(&self, id: &str) -> Result<serde_json::Value, RuntimeError> {
        let mut c = self.cmd();
        c.arg("events").arg("--stats").arg(id);
        let out = self.run("stats", id, c)?;
        serde_json::from_slice(&out).map_err(|e| {
            RuntimeError::new(
                &self.name_str(),
                "stats",
                id,
                format!("bad stats JSON: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_runtimes_restore_and_how() {
        let runc = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n";
        assert_eq!(restorer_of(runc), Ok(Restorer::CriuFlag));
        let crun = "crun version 1.8.1\ncommit: f8a0\nrundir: /run/crun\nspec: 1.0.0\n+SYSTEMD +SELINUX +APPARMOR +CAP +SECCOMP +EBPF +YAJL\n";
        let e = restorer_of(crun).unwrap_err();
        assert!(
            e.contains("crun version 1.8.1 is built without CRIU"),
            "{e}"
        );
        let with = crun.replace("+YAJL", "+CRIU +YAJL");
        assert_eq!(restorer_of(&with), Ok(Restorer::Libcriu));
        assert!(restorer_of(&crun.replace("+YAJL", "-CRIU +YAJL")).is_err());
        let e = restorer_of("youki version 0.5.0\ncommit: abc\n").unwrap_err();
        assert!(e.contains("runc and crun only"), "{e}");
    }
}
