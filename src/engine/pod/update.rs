//! UpdatePodSandboxResources: the pod-level resources on its cgroup.

use crate::engine::{blocking, validate, Engine, EngineError, Result};
use std::path::PathBuf;
use std::sync::Arc;

impl Engine {
    /// UpdatePodSandboxResources: applies the pod-level resources (cpu, memory, hugepages,
    /// unified) to the pod's cgroup, through libcgroups (file writes; no process is forked).
    pub async fn update_pod_resources(
        self: &Arc<Self>,
        s: &str,
        r: crate::model::Resources,
    ) -> Result<()> {
        let pod = self.pod_status(s)?;
        validate::resources("resources", &r)?;
        self.nri_update_pod(&pod.id, Some(&r)).await?;
        let resources = crate::spec::linux_resources(&r).map_err(EngineError::domain)?;
        let cgroup = pod.cgroup.clone();
        blocking(move || -> Result<()> {
            use libcgroups::common::CgroupManager;
            let manager =
                libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
                    cgroup_path: PathBuf::from(crate::cgroups::manager_path(&cgroup)),
                    systemd_cgroup: crate::cgroups::is_systemd_name(&cgroup),
                    container_name: String::new(),
                })
                .map_err(|e| EngineError::internal(format!("pod cgroup {cgroup}: {e}")))?;
            manager
                .apply(&libcgroups::common::ControllerOpt {
                    resources: &resources,
                    disable_oom_killer: false,
                    oom_score_adj: None,
                    freezer_state: None,
                })
                .map_err(|e| EngineError::internal(format!("updating pod cgroup {cgroup}: {e}")))
        })
        .await??;
        tracing::info!(pod = %pod.id, "pod resources updated");
        self.nri_update_pod(&pod.id, None).await?;
        Ok(())
    }
}
