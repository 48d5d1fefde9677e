//! RemovePodSandbox: its containers removed, then everything the pod made on the host.

use super::*;
use crate::engine::{Engine, Result};
use std::sync::Arc;

impl Engine {
    pub async fn remove_pod(self: &Arc<Self>, s: &str) -> Result<()> {
        let mut phases = crate::telemetry::Phases::start("RemovePodSandbox");
        let result: Result<()> = async {
            let Some(id) = self.resolve_pod(s)? else {
                return Ok(());
            };
            let ctrs: Vec<String> = self
                .containers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .filter(|c| c.pod_id == id)
                .map(|c| c.id.clone())
                .collect();
            for c in ctrs {
                self.remove_container(&c).await?;
            }
            phases.mark("containers");
            let lock = self.lock_for(&id);
            let _g = lock.lock().await;
            let Some(mut rec) = self.pod(&id) else {
                return Ok(());
            };
            self.detach_network(&mut rec).await?;
            phases.mark("cni");
            self.nri_pod_event(&id, crate::nri::api::Event::RemovePodSandbox)
                .await;
            self.teardown_pod(&rec).await;
            phases.mark("teardown");
            self.emit_pod(&rec, crate::engine::events::EventKind::Deleted);
            self.forget_pod(&id);
            phases.mark("record");
            self.release(&pod_name(&rec.config), &id);
            self.drop_lock(&id);
            tracing::info!(pod = %id, "pod sandbox removed");
            Ok(())
        }
        .await;
        phases.finish(&result);
        result
    }
}
