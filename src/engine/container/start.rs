//! StartContainer: the monitor starts the created container.

use crate::engine::{now_ns, ContainerState, Engine, EngineError, Result};
use crate::monitor::proto::Request;
use std::sync::Arc;
use std::time::Duration;

impl Engine {
    pub async fn start_container(self: &Arc<Self>, s: &str) -> Result<()> {
        let (id, _g, mut rec) = self.locked(s).await?;
        if rec.state != ContainerState::Created {
            return Err(EngineError::precondition(format!(
                "container {id} is {:?}, not created",
                rec.state
            )));
        }
        self.nri_container_event(&id, crate::nri::api::Event::StartContainer)
            .await;
        let started_at = now_ns();
        let r = self
            .monitor_call(&id, Request::Start, Some(Duration::from_secs(30)))
            .await?;
        if let Some(e) = r.error {
            return Err(EngineError::internal(format!(
                "starting container {id}: {e}"
            )));
        }
        rec = self.refreshed(&id).unwrap_or(rec);
        if rec.state == ContainerState::Created {
            rec.state = ContainerState::Running;
        }
        rec.started_at_ns = started_at;
        self.save_container(&rec)?;
        tracing::info!(container = %id, "container started");
        self.emit(&id, &rec.pod_id, crate::engine::events::EventKind::Started);
        self.nri_container_event(&id, crate::nri::api::Event::PostStartContainer)
            .await;
        Ok(())
    }
}
