//! Containers, one file per verb (`create`, `start`, `stop`, `remove`, `status`, `exec`,
//! `update`), as the CRI names them; what several verbs share is here: the runtime handler, the
//! monitor client of a container, its record refreshed from the exit file, the exit applied.

mod checkpoint;
mod classes;
mod create;
mod exec;
mod remove;
mod start;
mod status;
mod stop;
mod update;

pub use create::resolve_seccomp;
pub use exec::{resize_tty, StreamExec, EXEC_OUTPUT_CAP};

use super::{blocking, now_ns, ContainerRecord, ContainerState, Engine, EngineError, Result};
use crate::model::{ContainerConfig, PodConfig};
use crate::monitor::client::MonitorClient;
use crate::monitor::proto::{ExitInfo, Request, Response};
use crate::runtime::Handler;
use std::path::Path;
use std::time::Duration;

pub fn container_name(pod: &PodConfig, c: &ContainerConfig) -> String {
    format!(
        "k8s_{}_{}_{}_{}_{}",
        c.name, pod.name, pod.namespace, pod.uid, c.attempt
    )
}

/// Signal number of a name such as `SIGTERM` or `TERM` (or a number).
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

pub(in crate::engine) fn reason_for(exit: &ExitInfo) -> &'static str {
    if exit.oom_killed {
        "OOMKilled"
    } else if exit.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// Whether the container's monitor process is alive (its pid runs `__monitor` for this
/// container's run directory).
pub(in crate::engine) fn monitor_alive(rec: &ContainerRecord, run: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    if rec.monitor_pid <= 0 {
        return false;
    }
    let Ok(cmd) = std::fs::read(format!("/proc/{}/cmdline", rec.monitor_pid)) else {
        return false;
    };
    let has = |needle: &[u8]| cmd.windows(needle.len()).any(|w| w == needle);
    has(b"__monitor") && has(run.as_os_str().as_bytes())
}

pub(in crate::engine) async fn run_delete_helper(h: &Handler, id: &str) -> Result<()> {
    let json = serde_json::to_string(h).map_err(|e| EngineError::internal(e.to_string()))?;
    let out = tokio::process::Command::new(Engine::exe())
        .arg("__delete")
        .arg(json)
        .arg(id)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| EngineError::internal(format!("running the delete helper: {e}")))?;
    if !out.status.success() {
        return Err(EngineError::internal(format!(
            "deleting {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Engine {
    /// The container `s` names (ID or unique prefix), locked against other changes while the
    /// guard lives, with its record refreshed from the exit file; NotFound when there is none.
    pub(in crate::engine) async fn locked(
        &self,
        s: &str,
    ) -> Result<(String, tokio::sync::OwnedMutexGuard<()>, ContainerRecord)> {
        let id = self.container_id(s)?;
        let guard = self.lock_for(&id).lock_owned().await;
        let rec = self
            .refreshed(&id)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))?;
        Ok((id, guard, rec))
    }

    pub(in crate::engine) fn handler(&self, name: &str) -> Result<Handler> {
        let h = self.cfg().runtime.runtimes.get(name).ok_or_else(|| {
            EngineError::invalid(format!("runtime handler {name:?} is not configured"))
        })?;
        let root = self.cfg().runtime_root(name).unwrap_or_default();
        Ok(match h.runtime_type.as_str() {
            "oci" => Handler::Oci {
                path: h.runtime_path.clone(),
                root,
            },
            _ => Handler::Builtin { root },
        })
    }

    /// The monitor of container `id`.
    pub(in crate::engine) fn monitor(&self, id: &str) -> MonitorClient {
        MonitorClient::new(self.ctr_paths(id).monitor_socket())
    }

    /// One request to a container's monitor, on the async workers; no answer is Unavailable.
    pub(in crate::engine) async fn monitor_call(
        &self,
        id: &str,
        req: Request,
        timeout: Option<Duration>,
    ) -> Result<Response> {
        self.monitor(id)
            .call(&req, timeout)
            .await
            .map_err(|e| EngineError::MonitorUnavailable {
                id: id.to_string(),
                source: std::sync::Arc::new(e),
            })
    }

    /// The record with its exit file applied, if the monitor has written one.
    pub fn refreshed(&self, id: &str) -> Option<ContainerRecord> {
        let mut rec = self.container(id)?;
        if matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            if let Ok(exit) = crate::state::read_json::<ExitInfo>(&self.ctr_paths(id).exit_file()) {
                self.apply_exit(&mut rec, &exit);
                // Two callers may apply the same exit file at once: only the one that moves the
                // in-memory record to Exited counts it.
                let first = {
                    let mut map = self.containers.write().unwrap_or_else(|e| e.into_inner());
                    match map.get_mut(id) {
                        Some(c) => {
                            let live = matches!(
                                c.state,
                                ContainerState::Created | ContainerState::Running
                            );
                            *c = rec.clone();
                            live
                        }
                        None => false,
                    }
                };
                if first && exit.oom_killed {
                    self.oom_kills
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let _ = self.save_container(&rec);
            }
        }
        Some(rec)
    }

    /// Containers whose exit the monitor recorded as an OOM kill, since the daemon started.
    pub fn oom_kills(&self) -> u64 {
        self.oom_kills.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(in crate::engine) fn apply_exit(&self, rec: &mut ContainerRecord, exit: &ExitInfo) {
        rec.state = ContainerState::Exited;
        rec.exit_code = exit.exit_code;
        rec.finished_at_ns = exit.finished_at_ns;
        rec.reason = reason_for(exit).into();
    }

    /// After a restart: a live monitor keeps the container as it was; a written exit file ends
    /// it; neither means the monitor died with it.
    pub(in crate::engine) async fn refresh_after_restart(&self, id: &str) {
        let Some(mut rec) = self.refreshed(id) else {
            return;
        };
        if rec.state == ContainerState::Exited {
            return;
        }
        let answer = self.monitor(id).state(Duration::from_secs(2)).await;
        match answer {
            Ok(r) => {
                if r.started && rec.state == ContainerState::Created {
                    rec.state = ContainerState::Running;
                    let _ = self.save_container(&rec);
                }
            }
            Err(e) => {
                // The exit file may have landed in between.
                if self
                    .refreshed(id)
                    .is_some_and(|r| r.state == ContainerState::Exited)
                {
                    return;
                }
                // Slow is not dead: while the monitor process lives, it will answer (or record
                // the exit) later.
                let r = rec.clone();
                let run = self.ctr_run_dir(id);
                if blocking(move || monitor_alive(&r, &run))
                    .await
                    .unwrap_or(false)
                {
                    tracing::warn!(container = %id, error = %e, "the monitor does not answer but lives: keeping the container's state");
                    return;
                }
                tracing::warn!(container = %id, error = %e, "monitor is gone and left no exit file");
                rec.state = ContainerState::Exited;
                rec.exit_code = 255;
                rec.finished_at_ns = now_ns();
                rec.reason = "Error".into();
                rec.message =
                    "the container's monitor exited without recording the container's exit".into();
                let _ = self.save_container(&rec);
            }
        }
    }

    pub(in crate::engine) fn container_id(&self, s: &str) -> Result<String> {
        self.resolve_container(s)?
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals() {
        assert_eq!(super::signal_number("SIGTERM"), Some(15));
        assert_eq!(super::signal_number("KILL"), Some(9));
        assert_eq!(super::signal_number("sigusr1"), Some(10));
        assert_eq!(super::signal_number("9"), Some(9));
        assert_eq!(super::signal_number("BOGUS"), None);
        assert_eq!(super::signal_number("0"), None);
    }
}
