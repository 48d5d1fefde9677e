//! ExecSync, streaming exec and attach: the `__exec` helper's request, its lifeline and result.

use crate::engine::{blocking, new_id, validate, ContainerState, Engine, EngineError, Result};
use crate::error::Kind;
use crate::monitor::exec::{ExecRequest, ExecResult};
use crate::runtime::ExecProcess;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// ExecSync's cap on each of stdout and stderr (CVE-2022-1708).
pub const EXEC_OUTPUT_CAP: usize = 16 * 1024 * 1024;

/// A process exec'd into a container for a streaming session: its stdio are pipes the
/// streaming server relays; `finish` waits for it and returns the exit code.
pub struct StreamExec {
    pub child: tokio::process::Child,
    result_file: PathBuf,
    request_file: PathBuf,
    /// With a terminal: the helper's socket taking `{"width":W,"height":H}` lines.
    pub resize: Option<PathBuf>,
    /// Dropped with the session: the helper then kills the process (see `monitor::exec`).
    _lifeline: std::os::fd::OwnedFd,
}

/// Resizes an exec's terminal through its helper's resize socket. The helper makes the socket
/// right after the process starts; a resize before that is retried briefly.
pub async fn resize_tty(sock: &Path, width: u16, height: u16) {
    let line = format!("{{\"width\":{width},\"height\":{height}}}\n");
    for _ in 0..50 {
        if let Ok(mut s) = tokio::net::UnixStream::connect(sock).await {
            use tokio::io::AsyncWriteExt;
            let _ = s.write_all(line.as_bytes()).await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

impl StreamExec {
    pub async fn finish(mut self) -> Result<i32> {
        let _ = self.child.wait().await;
        let (res, req) = (self.result_file.clone(), self.request_file.clone());
        let r: ExecResult = blocking(move || {
            let r = crate::state::read_json(&res);
            let _ = std::fs::remove_file(&res);
            let _ = std::fs::remove_file(&req);
            r
        })
        .await?
        .map_err(|e| EngineError::internal(format!("the exec helper left no result: {e}")))?;
        match r.error {
            Some(e) => Err(EngineError::internal(e)),
            None => Ok(r.exit_code),
        }
    }
}

impl Engine {
    pub async fn exec_sync(
        self: &Arc<Self>,
        s: &str,
        cmd: Vec<String>,
        timeout_s: i64,
    ) -> Result<(Vec<u8>, Vec<u8>, i32)> {
        use tokio::io::AsyncReadExt;
        let timeout_ms = (timeout_s.max(0) as u64).saturating_mul(1000);
        let (id, mut req) = self.exec_request(s, cmd, timeout_ms, false)?;
        req.lifeline = true;
        let result_file = req.result_file.clone();
        let json = serde_json::to_vec(&req).map_err(|e| EngineError::internal(e.to_string()))?;
        let mut cmd = tokio::process::Command::new(Engine::exe());
        cmd.arg("__exec")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // Held for as long as this RPC waits: when the client cancels or its deadline ends the
        // call, this future is dropped with it, and the helper kills the process it started.
        let _lifeline = crate::sys::process::give_lifeline(&mut cmd)
            .map_err(EngineError::io("making the exec helper's lifeline"))?;
        let mut child = cmd
            .spawn()
            .map_err(|e| EngineError::internal(format!("running the exec helper: {e}")))?;
        drop(cmd);
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            stdin
                .write_all(&json)
                .await
                .map_err(EngineError::io("sending the exec request"))?;
        }
        async fn capped(r: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
            let mut out = Vec::new();
            let Some(mut r) = r else { return out };
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = EXEC_OUTPUT_CAP.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
            out
        }
        let (so, se) = (child.stdout.take(), child.stderr.take());
        let outer = if timeout_s > 0 {
            Duration::from_secs(u64::try_from(timeout_s).unwrap_or(0) + 30)
        } else {
            Duration::from_secs(24 * 3600)
        };
        let work = async {
            let (o, e) = tokio::join!(capped(so), capped(se));
            let _ = child.wait().await;
            (o, e)
        };
        let (stdout, stderr) = tokio::time::timeout(outer, work).await.map_err(|_| {
            EngineError::new(Kind::DeadlineExceeded, "the exec helper did not finish")
        })?;
        let res: ExecResult = blocking(move || {
            let r = crate::state::read_json(&result_file);
            let _ = std::fs::remove_file(&result_file);
            r
        })
        .await?
        .map_err(|e| EngineError::internal(format!("the exec helper left no result: {e}")))?;
        if let Some(e) = res.error {
            return Err(EngineError::internal(format!(
                "exec in container {id}: {e}"
            )));
        }
        if res.timed_out {
            return Err(EngineError::new(
                Kind::DeadlineExceeded,
                format!("command timed out after {timeout_s}s and was killed"),
            ));
        }
        Ok((stdout, stderr, res.exit_code))
    }

    /// For Attach: a running container's monitor socket, and whether it has a terminal.
    pub fn attach_target(&self, s: &str) -> Result<(String, PathBuf, bool)> {
        let id = self.exec_target(s)?;
        let rec = self
            .container(&id)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))?;
        Ok((
            id.clone(),
            self.ctr_paths(&id).monitor_socket(),
            rec.config.tty,
        ))
    }

    /// What ExecSync and streaming exec share: the command checked, the container running, and
    /// the helper's request (run as the container's user) with its result file.
    pub(in crate::engine) fn exec_request(
        &self,
        s: &str,
        cmd: Vec<String>,
        timeout_ms: u64,
        stdin: bool,
    ) -> Result<(String, ExecRequest)> {
        if cmd.is_empty() {
            return Err(EngineError::invalid("cmd is required"));
        }
        validate::bounded("cmd", cmd.len(), 4096)?;
        if cmd.iter().any(|c| c.contains('\0')) {
            return Err(EngineError::invalid("cmd must not contain NUL"));
        }
        let id = self.exec_target(s)?;
        let rec = self
            .refreshed(&id)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))?;
        let handler = self.handler(&rec.handler)?;
        let exec_dir = self.cfg().run_root.join("exec");
        std::fs::create_dir_all(&exec_dir).map_err(EngineError::io("creating exec dir"))?;
        let req = ExecRequest {
            id: id.clone(),
            handler,
            process: ExecProcess {
                args: cmd,
                env: vec![],
                cwd: None,
                user: Some((rec.user.uid, rec.user.gid, rec.user.additional_gids.clone())),
                console_socket: None,
                bundle: Some(self.ctr_paths(&rec.id).bundle()),
            },
            timeout_ms,
            result_file: exec_dir.join(format!("{}.json", new_id())),
            stdin,
            lifeline: false,
        };
        Ok((id, req))
    }

    /// Checks that `s` is a running container (what an exec or a log reopen needs); returns its
    /// full ID.
    pub fn exec_target(&self, s: &str) -> Result<String> {
        let id = self.container_id(s)?;
        let rec = self
            .refreshed(&id)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))?;
        if rec.state != ContainerState::Running {
            return Err(EngineError::precondition(format!(
                "container {id} is not running"
            )));
        }
        Ok(id)
    }

    /// Starts `cmd` in the container with piped stdio, for the streaming server.
    pub async fn exec_stream(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        stdin: bool,
        tty: bool,
    ) -> Result<StreamExec> {
        let (_, mut req) = self.exec_request(id, cmd, 0, stdin || tty)?;
        req.lifeline = true;
        let result_file = req.result_file.clone();
        let request_file = result_file.with_extension("req.json");
        if tty {
            req.process.console_socket = Some(result_file.with_extension("console.sock"));
        }
        crate::state::write_json_volatile(&request_file, &req)
            .map_err(EngineError::io("writing the exec request"))?;
        let mut cmd = tokio::process::Command::new(Engine::exe());
        cmd.arg("__exec")
            .arg(&request_file)
            .stdin(if stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let lifeline = crate::sys::process::give_lifeline(&mut cmd)
            .map_err(EngineError::io("making the exec helper's lifeline"))?;
        let child = cmd
            .spawn()
            .map_err(|e| EngineError::internal(format!("running the exec helper: {e}")))?;
        drop(cmd);
        let resize = req
            .process
            .console_socket
            .as_ref()
            .map(|c| c.with_extension("resize"));
        Ok(StreamExec {
            child,
            result_file,
            request_file,
            resize,
            _lifeline: lifeline,
        })
    }
}
