//! ContainerStatus: the record with its exit applied, and the OCI spec for verbose status.

use crate::engine::{blocking, ContainerRecord, ContainerState, Engine, EngineError, Result};
use crate::runtime::seccomp;

/// The most of a bundle's `config.json` (or seccomp plan) read for verbose status.
pub(in crate::engine) const RUNTIME_SPEC_CAP: u64 = 16 << 20;

impl Engine {
    pub fn container_status(&self, s: &str) -> Result<ContainerRecord> {
        let id = self.container_id(s)?;
        self.refreshed(&id)
            .filter(|c| c.state != ContainerState::Creating)
            .ok_or_else(|| EngineError::not_found(format!("container {s:?} not found")))
    }

    /// The OCI runtime spec a container was created with (its bundle's `config.json`, with the
    /// built-in handler's seccomp section put back from its plan), for verbose status
    /// (`crictl inspect` shows it as `info.runtimeSpec`, as both peers do). None once the
    /// bundle is gone.
    pub async fn runtime_spec(&self, id: &str) -> Option<serde_json::Value> {
        let bundle = self.ctr_paths(id).bundle();
        blocking(move || {
            let read = |name: &str| {
                crate::state::read_capped(&bundle.join(name), RUNTIME_SPEC_CAP)
                    .ok()
                    .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
            };
            let mut spec = read("config.json")?;
            if let Some(filter) = read(seccomp::PLAN_FILE).and_then(|p| p.get("filter").cloned()) {
                if let Some(linux) = spec.get_mut("linux").and_then(|l| l.as_object_mut()) {
                    linux.entry("seccomp").or_insert(filter);
                }
            }
            Some(spec)
        })
        .await
        .ok()
        .flatten()
    }
}
