//! UpdateContainerResources and ReopenContainerLog, through the monitor.

use crate::engine::{validate, ContainerState, Engine, EngineError, Result};
use crate::monitor::proto::Request;
use std::sync::Arc;
use std::time::Duration;

impl Engine {
    /// UpdateContainerResources: NRI plugins first (they may change what is set and update
    /// other containers), then the container's cgroup through its monitor, then
    /// PostUpdateContainer.
    pub async fn update_resources(
        self: &Arc<Self>,
        s: &str,
        r: &crate::model::Resources,
    ) -> Result<()> {
        let r = self.nri_update_container(s, r).await?;
        self.set_resources(s, &r).await?;
        if let Some(id) = self.resolve_container(s)? {
            self.nri_container_event(&id, crate::nri::api::Event::PostUpdateContainer)
                .await;
        }
        Ok(())
    }

    /// Sets a container's resources (no NRI: also what NRI's own updates go through).
    pub(crate) async fn set_resources(
        self: &Arc<Self>,
        s: &str,
        r: &crate::model::Resources,
    ) -> Result<()> {
        let (id, _g, mut rec) = self.locked(s).await?;
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return Err(EngineError::precondition(format!(
                "container {id} is not running"
            )));
        }
        validate::resources("linux", r)?;
        let resources = crate::spec::linux_resources(r).map_err(EngineError::domain)?;
        let resp = self
            .monitor_call(
                &id,
                Request::Update {
                    resources: Box::new(resources),
                },
                Some(Duration::from_secs(30)),
            )
            .await?;
        if let Some(e) = resp.error {
            return Err(EngineError::internal(format!(
                "updating container {id}: {e}"
            )));
        }
        rec.config.resources = Some(r.clone());
        self.save_container(&rec)
    }

    pub async fn reopen_log(self: &Arc<Self>, s: &str) -> Result<()> {
        let id = self.exec_target(s)?;
        let r = self
            .monitor_call(&id, Request::ReopenLog, Some(Duration::from_secs(10)))
            .await?;
        match r.error {
            Some(e) => Err(EngineError::internal(format!(
                "reopening the log of {id}: {e}"
            ))),
            None => Ok(()),
        }
    }
}
