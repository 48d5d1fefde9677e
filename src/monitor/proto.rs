//! The monitor's control protocol: one JSON request line, one JSON response line, over the
//! container's `monitor.sock`. `Wait` is answered when the container has exited.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::runtime::Handler;

/// What the daemon writes for a monitor to read (`monitor.json` in the container's run dir).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub id: String,
    pub bundle: PathBuf,
    pub handler: Handler,
    /// The CRI log file; empty means none.
    pub log_path: PathBuf,
    pub socket: PathBuf,
    pub exit_file: PathBuf,
    /// The container's cgroup path (for its OOM-kill counter).
    pub cgroup: String,
    /// The container runs on a terminal: its output is read from the PTY master.
    #[serde(default)]
    pub tty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    State,
    Start,
    Kill { signal: i32, all: bool },
    ReopenLog,
    Update { resources: serde_json::Value },
    Wait,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub started: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
}

/// The exit file: written atomically by the monitor when the container's init has exited and
/// the runtime has cleaned up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub exit_code: i32,
    /// The signal that ended the init, if any.
    pub signal: Option<i32>,
    pub finished_at_ns: i64,
    pub oom_killed: bool,
}

/// What the monitor prints on its stdout (the daemon's sync pipe) once the container is
/// created, or why it could not be.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ready {
    Created { pid: i32, monitor_pid: i32 },
    Failed { error: String },
}
