//! StopPodSandbox: its containers stopped, the CNI detachment, the pause killed, /dev/shm
//! unmounted.

use super::*;
use crate::engine::{blocking, Engine, PodState, Result};
use std::sync::Arc;

impl Engine {
    pub async fn stop_pod(self: &Arc<Self>, s: &str) -> Result<()> {
        let mut phases = crate::telemetry::Phases::start("StopPodSandbox");
        let result: Result<()> = async {
            let Some(id) = self.resolve_pod(s)? else {
                return Ok(());
            };
            let ctrs: Vec<String> = self
                .list_containers()
                .into_iter()
                .filter(|c| c.pod_id == id)
                .map(|c| c.id)
                .collect();
            for c in ctrs {
                self.stop_container(&c, 0).await?;
            }
            phases.mark("containers");
            let lock = self.lock_for(&id);
            let _g = lock.lock().await;
            let Some(mut rec) = self.pod(&id) else {
                return Ok(());
            };
            // DEL first, while the namespace still exists; a failure fails the RPC so that kubelet
            // retries it (no IPAM address may leak). Also for a pod that is already NotReady.
            self.detach_network(&mut rec).await?;
            phases.mark("cni");
            self.save_pod(&rec)?;
            phases.mark("record");
            if rec.state == PodState::NotReady {
                return Ok(());
            }
            let r2 = rec.clone();
            let dir = self.pod_dir(&id);
            blocking(move || {
                kill_pause(&r2);
                if r2.paths.shm.starts_with(&dir) {
                    let _ = crate::sys::mount::unmount(&r2.paths.shm);
                }
            })
            .await?;
            phases.mark("pause_shm");
            rec.state = PodState::NotReady;
            self.save_pod(&rec)?;
            phases.mark("saved");
            tracing::info!(pod = %id, "pod sandbox stopped");
            self.nri_pod_event(&id, crate::nri::api::Event::StopPodSandbox)
                .await;
            self.emit_pod(&rec, crate::engine::events::EventKind::Stopped);
            Ok(())
        }
        .await;
        phases.finish(&result);
        result
    }
}
