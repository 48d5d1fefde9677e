//! RemoveContainer: stopped if needed, then the runtime's state, mounts and directories removed.

use super::*;
use crate::engine::{blocking, ContainerRecord, CtrPaths, Engine, Result};
use std::sync::Arc;
use std::time::Duration;

impl Engine {
    /// Unmounts and removes what a container left on the host; the runtime's state is deleted
    /// by a helper when no monitor did it.
    pub(in crate::engine) async fn cleanup_container_files(&self, rec: &ContainerRecord) {
        let paths = self.ctr_paths(&rec.id);
        let handler = self.handler(&rec.handler).ok();
        let id = rec.id.clone();
        let monitor_alive =
            rec.monitor_pid > 0 && paths.monitor_socket().exists() && !paths.exit_file().exists();
        if monitor_alive {
            let m = self.monitor(&rec.id);
            let _ = m.kill(libc::SIGKILL, true, Duration::from_secs(5)).await;
            let _ = m.wait(Some(Duration::from_secs(10))).await;
        }
        if !paths.exit_file().exists() {
            if let Some(h) = handler {
                let _ = run_delete_helper(&h, &id).await;
            }
        }
        let _ = blocking(move || {
            let CtrPaths { run, data } = paths;
            if !crate::sys::mount::unmount_all_under(&run) {
                tracing::warn!(dir = %run.display(), "mounts left under the container's run directory: not removing it");
                return;
            }
            for d in [&run, &data] {
                if let Err(e) = std::fs::remove_dir_all(d) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(dir = %d.display(), error = %e, "removing container directory");
                    }
                }
            }
        })
        .await;
    }

    pub async fn remove_container(self: &Arc<Self>, s: &str) -> Result<()> {
        let mut phases = crate::telemetry::Phases::start("RemoveContainer");
        let result: Result<()> = async {
            let Some(id) = self.resolve_container(s)? else {
                return Ok(());
            };
            self.stop_container(&id, 0).await?;
            phases.mark("stop");
            let lock = self.lock_for(&id);
            let _g = lock.lock().await;
            let Some(rec) = self.container(&id) else {
                return Ok(());
            };
            self.nri_container_event(&id, crate::nri::api::Event::RemoveContainer)
                .await;
            self.cleanup_container_files(&rec).await;
            phases.mark("files");
            self.forget_container(&id);
            phases.mark("record");
            if let Some(pod) = self.pod(&rec.pod_id) {
                self.release(&container_name(&pod.config, &rec.config), &id);
            }
            self.drop_lock(&id);
            tracing::info!(container = %id, "container removed");
            self.emit(&id, &rec.pod_id, crate::engine::events::EventKind::Deleted);
            Ok(())
        }
        .await;
        phases.finish(&result);
        result
    }
}
