//! StopContainer: the stop signal, then SIGKILL after the timeout, through the monitor or,
//! when it does not answer, the init's pidfd; the exit waited for.

use crate::engine::{blocking, ContainerRecord, ContainerState, Engine, EngineError, Result};
use crate::error::Kind;
use crate::monitor::proto::Request;
use std::sync::Arc;
use std::time::Duration;

/// The container's init by pidfd, if the process with its pid is still the container's (in
/// its cgroup: never a process that reused the pid). The pidfd is opened first, so the check
/// is of the process it names.
pub(in crate::engine) fn open_init(rec: &ContainerRecord) -> Option<std::os::fd::OwnedFd> {
    if rec.pid <= 0 {
        return None;
    }
    let fd = crate::sys::process::pidfd_open(rec.pid).ok()?;
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", rec.pid)).ok()?;
    cgroups.contains(&rec.id).then_some(fd)
}

impl Engine {
    /// Waits for the monitor to report the exit, up to `timeout`; true when it has exited.
    /// Waits up to `timeout` for the container to exit: the monitor's answer, or the init's
    /// pidfd when the monitor does not answer (it records the exit once it runs again).
    pub(in crate::engine) async fn wait_exit(
        &self,
        rec: &ContainerRecord,
        init: Option<&std::os::fd::OwnedFd>,
        timeout: Duration,
    ) -> bool {
        let id = rec.id.clone();
        let init = init.and_then(|fd| fd.try_clone().ok());
        let monitor = self.monitor_call(&id, Request::Wait, Some(timeout));
        tokio::pin!(monitor);
        let init_gone = async {
            match init {
                Some(fd) => crate::sys::process::pidfd_exited(fd).await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let init_exited = tokio::select! {
            _ = &mut monitor => false,
            gone = tokio::time::timeout(timeout, init_gone) => gone.unwrap_or(false),
        };
        // The init went first: a monitor that lives records the exit in a moment, and what
        // Stop's caller reads next must already say Exited. Only a monitor that does not
        // answer leaves the exit to be read from the init alone.
        if init_exited
            && tokio::time::timeout(Duration::from_secs(2), &mut monitor)
                .await
                .is_err()
        {
            tracing::warn!(container = %id, "the init exited but its monitor does not answer");
        }
        init_exited
            || self
                .refreshed(&id)
                .is_some_and(|r| r.state == ContainerState::Exited)
            || !self.ctr_paths(&id).monitor_socket().exists()
    }

    /// Signals the container: through its monitor, or straight to its init (by pidfd, checked
    /// to be the container's) when the monitor does not answer within 2 s.
    pub(in crate::engine) async fn signal(
        &self,
        rec: &ContainerRecord,
        init: Option<&std::os::fd::OwnedFd>,
        signal: i32,
        all: bool,
    ) {
        let asked = self
            .monitor_call(
                &rec.id,
                Request::Kill { signal, all },
                Some(Duration::from_secs(2)),
            )
            .await;
        let Err(e) = asked else { return };
        tracing::warn!(container = %rec.id, error = %e, signal, "the monitor does not answer: signalling the init directly");
        let sent = init.map(|fd| crate::sys::process::pidfd_send_signal(fd, signal));
        if !matches!(sent, Some(Ok(()))) {
            tracing::warn!(container = %rec.id, "the container's init could not be signalled (gone?)");
        }
    }

    pub async fn stop_container(self: &Arc<Self>, s: &str, timeout_s: i64) -> Result<()> {
        let mut phases = crate::telemetry::Phases::start("StopContainer");
        // The container this call stopped (for NRI's StopContainer).
        let mut stopped = None;
        let result: Result<()> = async {
            let Some(id) = self.resolve_container(s)? else {
                return Ok(());
            };
            let lock = self.lock_for(&id);
            let _g = lock.lock().await;
            let Some(rec) = self.refreshed(&id) else {
                return Ok(());
            };
            if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
                return Ok(());
            }
            stopped = Some(id.clone());
            if !self.ctr_paths(&id).monitor_socket().exists() {
                self.refresh_after_restart(&id).await;
                return Ok(());
            }
            // The init, opened while it is alive and checked to be the container's: what Stop
            // falls back on when the monitor does not answer.
            let init = {
                let r = rec.clone();
                blocking(move || open_init(&r)).await.ok().flatten()
            };
            let init = init.as_ref();
            phases.mark("lookup");
            if timeout_s > 0 && rec.state == ContainerState::Running {
                self.signal(&rec, init, rec.stop_signal, false).await;
                if self
                    .wait_exit(
                        &rec,
                        init,
                        Duration::from_secs(u64::try_from(timeout_s).unwrap_or(0)),
                    )
                    .await
                {
                    tracing::info!(container = %id, "container stopped");
                    return Ok(());
                }
                tracing::info!(container = %id, timeout_s, "stop signal timed out; killing");
            }
            self.signal(&rec, init, libc::SIGKILL, true).await;
            phases.mark("kill");
            let exited = self.wait_exit(&rec, init, Duration::from_secs(30)).await;
            phases.mark("wait_exit");
            if !exited {
                return Err(EngineError::new(
                    Kind::DeadlineExceeded,
                    format!("container {id} did not exit after SIGKILL"),
                ));
            }
            tracing::info!(container = %id, "container stopped");
            Ok(())
        }
        .await;
        phases.finish(&result);
        if let (Ok(()), Some(id)) = (&result, stopped) {
            self.nri_container_event(&id, crate::nri::api::Event::StopContainer)
                .await;
        }
        result
    }
}
