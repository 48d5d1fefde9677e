//! The engine as NRI's host: pods and containers described as NRI shows them, the updates
//! plugins ask for applied through UpdateContainerResources' path, and the event hooks the
//! operations call (each returns at once when no plugin is registered).

use super::{ContainerRecord, ContainerState, Engine, EngineError, PodRecord, PodState, Result};
use crate::nri::{adjust, api, Host, Nri};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

impl Engine {
    /// Hands the engine its NRI (once, at start).
    pub fn set_nri(&self, nri: Arc<Nri>) {
        let _ = self.nri.set(nri);
    }

    /// NRI, when it runs and some plugin is registered.
    pub(crate) fn nri_active(&self) -> Option<&Arc<Nri>> {
        self.nri.get().filter(|n| n.active())
    }

    /// The registered NRI plugins (for `ferrio status`).
    pub fn nri_plugins(&self) -> Vec<crate::nri::PluginInfo> {
        self.nri.get().map(|n| n.plugins()).unwrap_or_default()
    }

    pub(crate) fn nri_pod(&self, p: &PodRecord) -> api::PodSandbox {
        let ns = |kind: &str, path: &Option<std::path::PathBuf>| {
            path.as_ref().map(|p| api::LinuxNamespace {
                r#type: kind.into(),
                path: p.display().to_string(),
            })
        };
        api::PodSandbox {
            id: p.id.clone(),
            name: p.config.name.clone(),
            uid: p.config.uid.clone(),
            namespace: p.config.namespace.clone(),
            labels: p.config.labels.clone().into_iter().collect(),
            annotations: p.config.annotations.clone().into_iter().collect(),
            runtime_handler: p.runtime_handler.clone(),
            linux: Some(api::LinuxPodSandbox {
                cgroup_parent: p.config.cgroup_parent.clone(),
                cgroups_path: p.cgroup.clone(),
                namespaces: [
                    ns("network", &p.paths.net_ns),
                    ns("ipc", &p.paths.ipc_ns),
                    ns("uts", &p.paths.uts_ns),
                    ns("pid", &p.paths.pid_ns),
                    ns("user", &p.paths.user_ns),
                ]
                .into_iter()
                .flatten()
                .collect(),
                ..Default::default()
            }),
            pid: p
                .pause
                .and_then(|(pid, _)| u32::try_from(pid).ok())
                .unwrap_or(0),
            ips: p.ips.clone(),
        }
    }

    /// A container as NRI describes it; its spec (`config.json` of the bundle unless given)
    /// supplies args, env, mounts, hooks, rlimits and the Linux part.
    pub(crate) fn nri_container(
        &self,
        c: &ContainerRecord,
        spec: Option<&serde_json::Value>,
    ) -> api::Container {
        let state = match c.state {
            ContainerState::Creating => api::ContainerState::ContainerUnknown,
            ContainerState::Created => api::ContainerState::ContainerCreated,
            ContainerState::Running => api::ContainerState::ContainerRunning,
            ContainerState::Exited => api::ContainerState::ContainerStopped,
        };
        let mut out = api::Container {
            id: c.id.clone(),
            pod_sandbox_id: c.pod_id.clone(),
            name: c.config.name.clone(),
            state: state as i32,
            labels: c.config.labels.clone().into_iter().collect(),
            annotations: c.config.annotations.clone().into_iter().collect(),
            pid: u32::try_from(c.pid).unwrap_or(0),
            created_at: c.created_at_ns,
            started_at: c.started_at_ns,
            finished_at: c.finished_at_ns,
            exit_code: c.exit_code,
            status_reason: c.reason.clone(),
            status_message: c.message.clone(),
            user: Some(api::User {
                uid: c.user.uid,
                gid: c.user.gid,
                additional_gids: c.user.additional_gids.clone(),
            }),
            image: Some(api::Image {
                name: c.image.clone(),
                digest: String::new(),
                config_digest: c.image_id.clone(),
            }),
            ..Default::default()
        };
        let read;
        let spec = match spec {
            Some(s) => Some(s),
            None => {
                read = std::fs::read(self.ctr_paths(&c.id).bundle().join("config.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
                read.as_ref()
            }
        };
        if let Some(spec) = spec {
            adjust::describe_spec(spec, &mut out);
        }
        // The container's seccomp profile as asked for (the default validator goes by it).
        use api::security_profile::ProfileType;
        let (t, r) = match &c.config.security.seccomp {
            crate::model::Profile::RuntimeDefault => (ProfileType::RuntimeDefault, String::new()),
            crate::model::Profile::Localhost(p) => (ProfileType::Localhost, p.clone()),
            crate::model::Profile::Unset | crate::model::Profile::Unconfined => {
                (ProfileType::Unconfined, String::new())
            }
        };
        out.linux
            .get_or_insert_with(Default::default)
            .seccomp_profile = Some(api::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r,
        });
        out
    }

    /// The pod and the container as NRI shows them, for an event of `c`.
    /// (The container's spec is read from its bundle: off the async workers.)
    async fn nri_pair(
        self: &Arc<Self>,
        c: &ContainerRecord,
    ) -> Option<(api::PodSandbox, api::Container)> {
        let pod = self.pods.read().ok()?.get(&c.pod_id).cloned()?;
        let (this, c) = (self.clone(), c.clone());
        super::blocking(move || (this.nri_pod(&pod), this.nri_container(&c, None)))
            .await
            .ok()
    }

    /// Tells the plugins about a pod event; an error is logged (the pod's own work is done).
    pub(crate) async fn nri_pod_event(self: &Arc<Self>, pod_id: &str, event: api::Event) {
        let Some(nri) = self.nri_active().cloned() else {
            return;
        };
        let Some(pod) = self.pods.read().ok().and_then(|p| p.get(pod_id).cloned()) else {
            return;
        };
        let pod = self.nri_pod(&pod);
        let r = match event {
            api::Event::RunPodSandbox => nri.run_pod(&pod).await,
            api::Event::StopPodSandbox => nri.stop_pod(&pod).await,
            api::Event::RemovePodSandbox => nri.remove_pod(&pod).await,
            _ => Ok(()),
        };
        if let Err(e) = r {
            tracing::warn!(pod = pod_id, error = %e, "NRI pod event");
        }
    }

    /// RunPodSandbox's NRI event. An error a plugin answers fails the request
    /// (FailedPrecondition); the plugins are then told the pod is removed, so that those that
    /// saw it start forget it.
    pub(crate) async fn nri_run_pod(self: &Arc<Self>, rec: &PodRecord) -> Result<()> {
        let Some(nri) = self.nri_active().cloned() else {
            return Ok(());
        };
        let pod = self.nri_pod(rec);
        if let Err(e) = nri.run_pod(&pod).await {
            if let Err(e2) = nri.remove_pod(&pod).await {
                tracing::warn!(pod = %rec.id, error = %e2, "NRI pod event");
            }
            return Err(EngineError::domain(e));
        }
        Ok(())
    }

    /// Tells the plugins about a container event; updates they ask for are applied; an error
    /// is logged.
    pub(crate) async fn nri_container_event(self: &Arc<Self>, id: &str, event: api::Event) {
        let Some(nri) = self.nri_active().cloned() else {
            return;
        };
        let Some(rec) = self.containers.read().ok().and_then(|c| c.get(id).cloned()) else {
            return;
        };
        let Some((pod, ctr)) = self.nri_pair(&rec).await else {
            return;
        };
        let r = match event {
            api::Event::PostCreateContainer => nri.post_create(&pod, &ctr).await,
            api::Event::StartContainer => nri.start_container(&pod, &ctr).await,
            api::Event::PostStartContainer => nri.post_start(&pod, &ctr).await,
            api::Event::StopContainer => match nri.stop_container(&pod, &ctr).await {
                Ok(updates) => {
                    let failed = self.apply_nri_updates(updates).await;
                    if !failed.is_empty() {
                        tracing::warn!(container = id, n = failed.len(), "NRI updates failed");
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
            api::Event::RemoveContainer => nri.remove_container(&pod, &ctr).await,
            api::Event::PostUpdateContainer => nri.post_update_container(&pod, &ctr).await,
            _ => Ok(()),
        };
        if let Err(e) = r {
            tracing::warn!(container = id, error = %e, "NRI container event");
        }
    }

    /// CreateContainer's NRI step: the plugins' merged adjustment applied to `spec`, and the
    /// updates of other containers they asked for applied. No plugin: `spec` is untouched.
    /// Returns the container's cgroup when a plugin moved it.
    pub(crate) async fn nri_adjust(
        &self,
        pod: &PodRecord,
        rec: &ContainerRecord,
        spec: &mut oci_spec::runtime::Spec,
    ) -> Result<Option<String>> {
        let Some(nri) = self.nri_active().cloned() else {
            return Ok(None);
        };
        let mut json =
            serde_json::to_value(&*spec).map_err(|e| EngineError::internal(e.to_string()))?;
        let ctr = self.nri_container(rec, Some(&json));
        let (merged, updates) = nri
            .create_container(&self.nri_pod(pod), &ctr)
            .await
            .map_err(EngineError::domain)?;
        adjust::apply(&mut json, &merged.adjust, i64::from(self.min_oom_score_adj));
        if !merged.adjust.cdi_devices.is_empty() {
            // CDI devices plugins asked for, resolved like the request's own (spec files read
            // now, device numbers from the host), off the async workers.
            let names: Vec<String> = merged
                .adjust
                .cdi_devices
                .iter()
                .map(|d| d.name.clone())
                .collect();
            let dirs = self.cfg().runtime.cdi_spec_dirs.clone();
            json = super::blocking(move || -> Result<serde_json::Value> {
                let registry = crate::cdi::Registry::load(&dirs).map_err(EngineError::domain)?;
                let mut edits = registry
                    .resolve_supported(&names)
                    .map_err(EngineError::domain)?;
                edits.fill_device_info().map_err(EngineError::domain)?;
                crate::spec::cdi::apply_to_spec(&mut json, &edits)
                    .map_err(|e| EngineError::invalid(format!("CDI devices from NRI: {e}")))?;
                Ok(json)
            })
            .await??;
        }
        // Classes plugins put the container in, resolved on this host.
        let res = merged
            .adjust
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref());
        if let Some(c) = res.and_then(|r| r.blockio_class.as_ref()) {
            json["linux"]["resources"]["blockIO"] = self.blockio_class(&c.value).await?;
        }
        if let Some(c) = res.and_then(|r| r.rdt_class.as_ref()) {
            json["linux"]["intelRdt"] = self.rdt_class(&c.value).await?;
        }
        let moved = match merged.adjust.linux.as_ref().map(|l| &l.cgroups_path) {
            Some(p) if !p.is_empty() => {
                super::validate::container_cgroups_path(crate::cgroups::driver_of(&pod.cgroup), p)?;
                json["linux"]["cgroupsPath"] = serde_json::Value::String(p.clone());
                Some(p.clone())
            }
            _ => None,
        };
        *spec = serde_json::from_value(json).map_err(|e| {
            EngineError::invalid(format!("the spec NRI plugins adjusted is not valid: {e}"))
        })?;
        if !updates.is_empty() {
            let failed = nri.apply_updates(updates).await;
            if !failed.is_empty() {
                tracing::warn!(container = %rec.id, n = failed.len(), "NRI updates of other containers failed");
            }
        }
        Ok(moved)
    }

    /// Applies NRI container updates through UpdateContainerResources' path; returns those
    /// that failed (an update marked `ignore_failure` never counts as failed).
    pub(crate) async fn apply_nri_updates(
        self: &Arc<Self>,
        updates: Vec<api::ContainerUpdate>,
    ) -> Vec<api::ContainerUpdate> {
        let mut failed = Vec::new();
        for u in updates {
            let cur = self
                .containers
                .read()
                .ok()
                .and_then(|c| c.get(&u.container_id).cloned());
            let r = match (&cur, u.linux.as_ref().and_then(|l| l.resources.as_ref())) {
                (Some(c), Some(res)) => {
                    let merged =
                        merge_resources(c.config.resources.clone().unwrap_or_default(), res);
                    self.set_resources(&c.id, &merged).await
                }
                (Some(_), None) => Ok(()),
                (None, _) => Err(EngineError::not_found(format!(
                    "container {:?} not found",
                    u.container_id
                ))),
            };
            if let Err(e) = r {
                tracing::warn!(container = %u.container_id, error = %e, "NRI update");
                if !u.ignore_failure {
                    failed.push(u);
                }
            }
        }
        failed
    }
}

impl Engine {
    /// UpdateContainerResources' NRI step: the resources plugins want set instead (merged over
    /// the request), the updates of other containers they asked for applied. No plugin: `r`.
    pub(crate) async fn nri_update_container(
        self: &Arc<Self>,
        s: &str,
        r: &crate::model::Resources,
    ) -> Result<crate::model::Resources> {
        let Some(nri) = self.nri_active().cloned() else {
            return Ok(r.clone());
        };
        let Some(id) = self.resolve_container(s)? else {
            return Ok(r.clone());
        };
        let Some(rec) = self
            .containers
            .read()
            .ok()
            .and_then(|c| c.get(&id).cloned())
        else {
            return Ok(r.clone());
        };
        let Some((pod, ctr)) = self.nri_pair(&rec).await else {
            return Ok(r.clone());
        };
        let (res, others) = nri
            .update_container(&pod, &ctr, to_nri(r))
            .await
            .map_err(EngineError::domain)?;
        if !others.is_empty() {
            let failed = self.apply_nri_updates(others).await;
            if !failed.is_empty() {
                tracing::warn!(container = %id, n = failed.len(), "NRI updates of other containers failed");
            }
        }
        Ok(merge_resources(r.clone(), &res))
    }

    /// UpdatePodSandboxResources' NRI events: UpdatePodSandbox before (an error a plugin
    /// answers fails the update), PostUpdatePodSandbox after.
    pub(crate) async fn nri_update_pod(
        self: &Arc<Self>,
        pod_id: &str,
        r: Option<&crate::model::Resources>,
    ) -> Result<()> {
        let Some(nri) = self.nri_active().cloned() else {
            return Ok(());
        };
        let Some(pod) = self.pods.read().ok().and_then(|p| p.get(pod_id).cloned()) else {
            return Ok(());
        };
        let pod = self.nri_pod(&pod);
        match r {
            Some(r) => nri
                .update_pod(&pod, &to_nri(r))
                .await
                .map_err(EngineError::domain),
            None => {
                if let Err(e) = nri.post_update_pod(&pod).await {
                    tracing::warn!(pod = pod_id, error = %e, "NRI pod event");
                }
                Ok(())
            }
        }
    }

    /// Stops containers NRI plugins asked to evict (no grace: NRI evictions are immediate),
    /// recording the reason in the log.
    pub(crate) async fn nri_evict(self: &Arc<Self>, evictions: Vec<api::ContainerEviction>) {
        for e in evictions {
            tracing::warn!(container = %e.container_id, reason = %e.reason, "NRI: evicting a container a plugin asked to evict");
            if let Err(err) = self.stop_container(&e.container_id, 0).await {
                tracing::warn!(container = %e.container_id, error = %err, "NRI eviction");
            }
        }
    }
}

/// A CRI resource request as NRI's LinuxResources (unset values left out).
fn to_nri(r: &crate::model::Resources) -> api::LinuxResources {
    let pos = |v: i64| (v > 0).then_some(v);
    api::LinuxResources {
        memory: Some(api::LinuxMemory {
            limit: pos(r.memory_limit_in_bytes).map(|value| api::OptionalInt64 { value }),
            swap: pos(r.memory_swap_limit_in_bytes).map(|value| api::OptionalInt64 { value }),
            ..Default::default()
        }),
        cpu: Some(api::LinuxCpu {
            shares: pos(r.cpu_shares)
                .and_then(|v| u64::try_from(v).ok())
                .map(|value| api::OptionalUInt64 { value }),
            quota: pos(r.cpu_quota).map(|value| api::OptionalInt64 { value }),
            period: pos(r.cpu_period)
                .and_then(|v| u64::try_from(v).ok())
                .map(|value| api::OptionalUInt64 { value }),
            cpus: r.cpuset_cpus.clone(),
            mems: r.cpuset_mems.clone(),
            ..Default::default()
        }),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(page_size, limit)| api::HugepageLimit {
                page_size: page_size.clone(),
                limit: *limit,
            })
            .collect(),
        unified: r.unified.clone().into_iter().collect(),
        ..Default::default()
    }
}

/// `r` over `base`: what the update sets replaces, the rest stays.
fn merge_resources(
    mut base: crate::model::Resources,
    r: &api::LinuxResources,
) -> crate::model::Resources {
    if let Some(m) = &r.memory {
        if let Some(v) = &m.limit {
            base.memory_limit_in_bytes = v.value;
        }
        if let Some(v) = &m.swap {
            base.memory_swap_limit_in_bytes = v.value;
        }
    }
    if let Some(c) = &r.cpu {
        if let Some(v) = &c.shares {
            base.cpu_shares = i64::try_from(v.value).unwrap_or(i64::MAX);
        }
        if let Some(v) = &c.quota {
            base.cpu_quota = v.value;
        }
        if let Some(v) = &c.period {
            base.cpu_period = i64::try_from(v.value).unwrap_or(i64::MAX);
        }
        if !c.cpus.is_empty() {
            base.cpuset_cpus = c.cpus.clone();
        }
        if !c.mems.is_empty() {
            base.cpuset_mems = c.mems.clone();
        }
    }
    for h in &r.hugepage_limits {
        base.hugepage_limits.retain(|(p, _)| p != &h.page_size);
        base.hugepage_limits.push((h.page_size.clone(), h.limit));
    }
    for (k, v) in &r.unified {
        base.unified.insert(k.clone(), v.clone());
    }
    base
}

/// The engine as NRI's [`Host`], held weakly.
pub struct EngineHost(pub std::sync::Weak<Engine>);

impl Host for EngineHost {
    fn snapshot(
        &self,
    ) -> Pin<Box<dyn Future<Output = (Vec<api::PodSandbox>, Vec<api::Container>)> + Send + '_>>
    {
        Box::pin(async move {
            let Some(e) = self.0.upgrade() else {
                return (Vec::new(), Vec::new());
            };
            let pods: Vec<PodRecord> = e
                .list_pods()
                .into_iter()
                .filter(|p| p.state == PodState::Ready)
                .collect();
            let ctrs: Vec<ContainerRecord> = e
                .list_containers()
                .into_iter()
                .filter(|c| c.state != ContainerState::Creating)
                .collect();
            let e2 = e.clone();
            super::blocking(move || {
                (
                    pods.iter().map(|p| e2.nri_pod(p)).collect(),
                    ctrs.iter().map(|c| e2.nri_container(c, None)).collect(),
                )
            })
            .await
            .unwrap_or_default()
        })
    }

    fn update(
        &self,
        updates: Vec<api::ContainerUpdate>,
    ) -> Pin<Box<dyn Future<Output = Vec<api::ContainerUpdate>> + Send + '_>> {
        Box::pin(async move {
            match self.0.upgrade() {
                Some(e) => e.apply_nri_updates(updates).await,
                None => updates,
            }
        })
    }

    fn evict(
        &self,
        evictions: Vec<api::ContainerEviction>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if let Some(e) = self.0.upgrade() {
                e.nri_evict(evictions).await;
            }
        })
    }
}
