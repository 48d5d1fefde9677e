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
    /// Where the monitor moves itself out of the daemon's cgroup (None: it stays; monitors
    /// started by an older daemon).
    #[serde(default)]
    pub helper_cgroup: Option<crate::cgroups::HelperCgroup>,
    /// The container runs on a terminal: its output is read from the PTY master.
    #[serde(default)]
    pub tty: bool,
    /// Keep the container's stdin open for attachers.
    #[serde(default)]
    pub stdin: bool,
    /// Close the container's stdin when the first attacher leaves.
    #[serde(default)]
    pub stdin_once: bool,
    /// The container has a PID namespace of its own (not the pod's, not the host's): killing
    /// its init kills every process in it, so a SIGKILL to all needs no walk of the cgroup.
    /// False from older daemons: the runtime's kill-all then, as before.
    #[serde(default)]
    pub own_pid_ns: bool,
    /// CRIU images to restore the container from instead of creating it (a checkpoint's
    /// `checkpoint/`): the runtime's restore runs it at once, and Start has nothing to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<crate::runtime::RestoreFrom>,
}

/// After an `Attach` request is answered, the connection carries frames both ways:
/// `[kind: u8][length: u32, big-endian][data]`. Monitor → attacher: [`ATTACH_STDOUT`],
/// [`ATTACH_STDERR`]. Attacher → monitor: [`ATTACH_STDIN`] data, [`ATTACH_CLOSE_STDIN`],
/// [`ATTACH_RESIZE`] (`{"width":W,"height":H}`).
pub const ATTACH_STDIN: u8 = 0;
pub const ATTACH_STDOUT: u8 = 1;
pub const ATTACH_STDERR: u8 = 2;
pub const ATTACH_CLOSE_STDIN: u8 = 3;
pub const ATTACH_RESIZE: u8 = 4;

/// The largest attach frame's data; [`parse_attach_frame`] refuses longer ones.
pub const MAX_ATTACH_FRAME: usize = 1 << 20;

/// One attach frame; `data` is at most [`MAX_ATTACH_FRAME`] bytes (a longer one gets a length
/// the reader refuses, never one that wraps).
pub fn attach_frame(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 5);
    v.push(kind);
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// A complete frame at the start of a buffer: its kind, its data, and the bytes it took.
pub type AttachFrame<'a> = (u8, &'a [u8], usize);

/// Splits the first complete frame off `buf`; `Ok(None)` until it is complete. Frames over
/// 1 MiB are refused.
pub fn parse_attach_frame(buf: &[u8]) -> Result<Option<AttachFrame<'_>>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_ATTACH_FRAME {
        return Err(format!("attach frame of {len} bytes"));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    Ok(Some((buf[0], &buf[5..5 + len], 5 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_frames() {
        let mut b = attach_frame(ATTACH_STDIN, b"abc");
        b.extend(attach_frame(ATTACH_CLOSE_STDIN, b""));
        let (k, d, used) = parse_attach_frame(&b).unwrap().unwrap();
        assert_eq!((k, d, used), (ATTACH_STDIN, &b"abc"[..], 8));
        let (k, d, _) = parse_attach_frame(&b[used..]).unwrap().unwrap();
        assert_eq!((k, d), (ATTACH_CLOSE_STDIN, &b""[..]));
        assert_eq!(parse_attach_frame(&b[..6]).unwrap(), None, "incomplete");
        assert!(
            parse_attach_frame(&[0, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "oversized"
        );
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    State,
    Start,
    Kill {
        signal: i32,
        all: bool,
    },
    ReopenLog,
    Update {
        resources: Box<oci_spec::runtime::LinuxResources>,
    },
    Wait,
    /// Turns the connection into an attach stream (see [`attach_frame`]).
    Attach,
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
    /// The monitor's protocol version (`client::PROTOCOL`; 0 from monitors before versioning).
    #[serde(default)]
    pub v: u32,
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
    Created {
        pid: i32,
        monitor_pid: i32,
        /// Where the monitor's time went, in µs (for the daemon's phase breakdown): its own
        /// set-up from its start, then the runtime's create. 0 from older monitors.
        #[serde(default)]
        setup_us: u64,
        #[serde(default)]
        create_us: u64,
        /// The set-up step by step (config, fork, cgroup, socket, log, pipes, oom_baseline,
        /// console, after_create), in µs.
        #[serde(default)]
        setup_steps: Vec<(String, u64)>,
    },
    Failed {
        error: String,
    },
}
