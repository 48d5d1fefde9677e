//! The OCI runtime layer: one trait, [`OciRuntime`], with two handlers — libcontainer linked
//! into ferrio ([`libct::Libcontainer`], the default) and an external OCI CLI such as runc or crun
//! ([`cli::OciCli`]).
//!
//! Every method is blocking and is only ever called from a re-exec'd, single-threaded ferrio
//! helper (`__monitor`, `__exec`): libcontainer forks and changes the calling process (cwd,
//! dumpable flag, oom_score_adj), which is unsafe in the multi-threaded daemon.

pub mod cli;
pub mod criu;
pub mod libct;
pub mod seccomp;

use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{runtime} {op} {id}: {message}")]
    Failed {
        runtime: String,
        op: &'static str,
        id: String,
        message: String,
    },
}

impl RuntimeError {
    pub fn new(runtime: &str, op: &'static str, id: &str, message: impl Into<String>) -> Self {
        RuntimeError::Failed {
            runtime: runtime.to_string(),
            op,
            id: id.to_string(),
            message: message.into(),
        }
    }
}

/// Where a restore takes its process state from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreFrom {
    /// CRIU's images (a checkpoint archive's `checkpoint/`).
    pub images: PathBuf,
    /// The CRIU binary the runtime runs.
    pub criu: PathBuf,
}

/// Which handler runs a container, as the monitor and exec helper receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Handler {
    /// youki's libcontainer, in this process; `root` holds its per-container state.
    Builtin { root: PathBuf },
    /// An OCI runtime CLI (runc, crun): its binary and its `--root`.
    Oci { path: PathBuf, root: PathBuf },
}

impl Handler {
    pub fn runtime(&self) -> Box<dyn OciRuntime> {
        match self {
            Handler::Builtin { root } => Box::new(libct::Libcontainer::new(root.clone())),
            Handler::Oci { path, root } => Box::new(cli::OciCli::new(path.clone(), root.clone())),
        }
    }
}

/// Whether the bundle's spec names its cgroup in the systemd driver's form
/// (`<slice>:<prefix>:<name>`): the runtime then makes it a transient scope through systemd.
pub fn bundle_uses_systemd(bundle: &Path) -> bool {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["linux"]["cgroupsPath"]
                .as_str()
                .map(crate::cgroups::is_systemd_name)
        })
        .unwrap_or(false)
}

/// The stdio a container's process gets.
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// A terminal instead: the runtime sends the PTY master to this unix socket (the OCI
    /// console socket) and the fds above are not used.
    pub console: Option<PathBuf>,
}

/// The state an OCI runtime reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OciStatus {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
    /// The runtime has no record of the container.
    Unknown,
}

/// A process to run inside a running container (exec).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecProcess {
    pub args: Vec<String>,
    /// Extra variables over the container's own (`KEY=VALUE`).
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    /// uid, gid and additional gids; the container's user (the runtime's default is root).
    pub user: Option<(u32, u32, Vec<u32>)>,
    /// Run on a terminal: its master end is sent to this unix socket (the OCI console socket).
    #[serde(default)]
    pub console_socket: Option<PathBuf>,
    /// The container's bundle, whose spec's process the exec's process is built from (CLI
    /// runtimes get it whole as `--process`; see [`exec_process`]).
    #[serde(default)]
    pub bundle: Option<PathBuf>,
}

/// The process an exec runs: the container's own process settings (capabilities, rlimits,
/// no_new_privs, AppArmor and SELinux labels, …) with this command, environment, working
/// directory, user and terminal, as runc exec and CRI-O build it.
pub fn exec_process(
    spec: &oci_spec::runtime::Spec,
    process: &ExecProcess,
) -> Result<oci_spec::runtime::Process, String> {
    let mut proc_ = spec
        .process()
        .clone()
        .ok_or("the container's spec has no process")?;
    let mut env = proc_.env().clone().unwrap_or_default();
    for kv in &process.env {
        let key = kv.split('=').next().unwrap_or("");
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    // Never an empty HOME (see spec::generate): libcontainer would resolve it through the
    // container's NSS modules while the process still holds what ferrio lent it.
    env.retain(|e| e != "HOME=");
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push("HOME=/".into());
    }
    let tty = process.console_socket.is_some();
    if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    proc_.set_args(Some(process.args.clone()));
    proc_.set_env(Some(env));
    proc_.set_terminal(Some(tty));
    proc_.set_console_size(None);
    if let Some(cwd) = &process.cwd {
        proc_.set_cwd(cwd.clone());
    }
    if let Some((uid, gid, gids)) = &process.user {
        let mut user = proc_.user().clone();
        user.set_uid(*uid);
        user.set_gid(*gid);
        user.set_additional_gids((!gids.is_empty()).then(|| gids.clone()));
        proc_.set_user(user);
    }
    Ok(proc_)
}

/// How an exec'd process is waited for: its pid is a child of the caller, or (for a CLI
/// runtime) the pid of the runtime's `exec` command, which exits with the process's status.
pub struct Execed {
    pub pid: i32,
}

pub trait OciRuntime {
    /// The runtime's name for messages (`ferrio`, `/usr/sbin/runc`).
    fn name(&self) -> String;
    /// Creates the container from `<bundle>/config.json`; returns the init's pid, which is a
    /// child of the caller (a child subreaper).
    fn create(&self, id: &str, bundle: &Path, stdio: Stdio) -> Result<i32, RuntimeError>;
    /// Starts the user process of a created container.
    fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Restores the container from CRIU `images` with `<bundle>/config.json`, running at once;
    /// returns the init's pid, as `create` does.
    fn restore(
        &self,
        id: &str,
        _bundle: &Path,
        _from: &RestoreFrom,
        _stdio: Stdio,
    ) -> Result<i32, RuntimeError> {
        Err(RuntimeError::new(
            &self.name(),
            "restore",
            id,
            "this runtime cannot restore a checkpoint; use an OCI runtime handler (runc, crun)",
        ))
    }
    /// Signals the init (`all`: every process of the container).
    fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError>;
    /// Removes the runtime's state and the container's cgroup; an unknown container is fine.
    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError>;
    fn state(&self, id: &str) -> Result<OciStatus, RuntimeError>;
    /// Starts `process` in the running container with `stdio`; the caller waits for the pid.
    fn exec(&self, id: &str, process: &ExecProcess, stdio: Stdio) -> Result<Execed, RuntimeError>;
    /// Applies new resources to the live container.
    fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), RuntimeError>;
    /// The runtime's view of the container's cgroup statistics, as JSON.
    fn stats(&self, id: &str) -> Result<serde_json::Value, RuntimeError>;
}
