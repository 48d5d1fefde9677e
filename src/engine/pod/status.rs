//! PodSandboxStatus: the pod's record.

use crate::engine::{Engine, EngineError, PodRecord, Result};

impl Engine {
    /// A pod by full ID or prefix, NotFound otherwise.
    pub fn pod_status(&self, s: &str) -> Result<PodRecord> {
        let id = self
            .resolve_pod(s)?
            .ok_or_else(|| EngineError::not_found(format!("pod sandbox {s:?} not found")))?;
        self.pod(&id)
            .filter(|p| p.complete)
            .ok_or_else(|| EngineError::not_found(format!("pod sandbox {s:?} not found")))
    }
}
