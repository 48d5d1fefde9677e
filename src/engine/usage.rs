//! Resource usage of containers and pods, from their cgroups, writable layers and network
//! namespaces (the `stats` module reads them), with CPU rates from two samples.

use super::{ContainerRecord, ContainerState, Engine, PodRecord, Result};
use crate::stats::{CgroupStats, Detail, FsUsage, NetworkStats};
use std::path::PathBuf;
use std::sync::Arc;

pub struct ContainerUsage {
    pub rec: ContainerRecord,
    /// None when the cgroup is gone or cannot be read.
    pub cgroup: Option<CgroupStats>,
    pub nano_cores: Option<u64>,
    pub writable: Option<FsUsage>,
    /// The filesystem holding the writable layer.
    pub writable_mountpoint: PathBuf,
    /// What only the CRI metrics read (processes, I/O, the cgroup's limits…).
    pub detail: Option<Detail>,
    /// The filesystem holding the writable layer, for the metrics.
    pub fs: Option<FsInfo>,
}

/// A filesystem's device and size (statvfs), for `container_fs_*` metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// The mount's source (`/dev/vda1`…), cAdvisor's `device` label.
    pub device: String,
    pub capacity_bytes: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
}

impl FsInfo {
    /// The filesystem `path` is on. Blocking.
    pub fn of(path: &std::path::Path) -> Option<FsInfo> {
        let st = nix::sys::statvfs::statvfs(path).ok()?;
        let device = crate::sys::mount::mount_of(path)
            .map(|m| m.source)
            .unwrap_or_default();
        Some(FsInfo {
            device,
            capacity_bytes: (st.blocks() as u64).saturating_mul(st.fragment_size() as u64),
            inodes_total: st.files() as u64,
            inodes_free: st.files_free() as u64,
        })
    }
}

pub struct PodUsage {
    pub rec: PodRecord,
    pub cgroup: Option<CgroupStats>,
    pub nano_cores: Option<u64>,
    pub network: Option<NetworkStats>,
    pub containers: Vec<ContainerUsage>,
    /// What only the CRI metrics read.
    pub detail: Option<Detail>,
}

/// How much a usage read takes: what the stats RPCs need, or also what the metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Stats,
    Metrics,
}

impl Engine {
    fn container_usage_blocking(&self, rec: ContainerRecord) -> ContainerUsage {
        self.container_usage_at(rec, Depth::Stats, None)
    }

    fn container_usage_at(
        &self,
        rec: ContainerRecord,
        depth: Depth,
        fs: Option<&FsInfo>,
    ) -> ContainerUsage {
        let cgroup = crate::stats::read(&rec.cgroup).ok();
        let nano_cores = cgroup
            .as_ref()
            .and_then(|c| self.sampler.sample(&rec.id, c));
        let upper = self.ctr_paths(&rec.id).upper();
        let writable = crate::stats::writable_layer(&upper).ok();
        let detail = (depth == Depth::Metrics)
            .then(|| crate::stats::detail(&rec.cgroup).ok())
            .flatten();
        ContainerUsage {
            rec,
            cgroup,
            nano_cores,
            writable,
            writable_mountpoint: self.cfg().root.clone(),
            detail,
            fs: fs.cloned(),
        }
    }

    fn live_containers(&self) -> Vec<ContainerRecord> {
        self.list_containers()
            .into_iter()
            .filter(|c| matches!(c.state, ContainerState::Created | ContainerState::Running))
            .collect()
    }

    /// Usage of the containers `keep` selects among the created and running ones.
    pub async fn container_usage(
        self: &Arc<Self>,
        keep: impl Fn(&ContainerRecord) -> bool + Send + 'static,
    ) -> Result<Vec<ContainerUsage>> {
        let this = self.clone();
        super::blocking(move || {
            this.live_containers()
                .into_iter()
                .filter(|c| keep(c))
                .map(|c| this.container_usage_blocking(c))
                .collect()
        })
        .await
    }

    /// Usage of one container (created or running), NotFound otherwise.
    pub async fn one_container_usage(self: &Arc<Self>, s: &str) -> Result<ContainerUsage> {
        let rec = self.container_status(s)?;
        let this = self.clone();
        super::blocking(move || this.container_usage_blocking(rec)).await
    }

    /// Usage of the ready pods `keep` selects, with their containers.
    pub async fn pod_usage(
        self: &Arc<Self>,
        keep: impl Fn(&PodRecord) -> bool + Send + 'static,
    ) -> Result<Vec<PodUsage>> {
        self.pod_usage_to(keep, Depth::Stats).await
    }

    /// Usage of the ready pods `keep` selects, read to `depth`.
    pub async fn pod_usage_to(
        self: &Arc<Self>,
        keep: impl Fn(&PodRecord) -> bool + Send + 'static,
        depth: Depth,
    ) -> Result<Vec<PodUsage>> {
        let this = self.clone();
        super::blocking(move || {
            let ctrs = this.live_containers();
            let fs = (depth == Depth::Metrics)
                .then(|| FsInfo::of(&this.cfg().root))
                .flatten();
            this.list_pods()
                .into_iter()
                .filter(|p| p.state == super::PodState::Ready && keep(p))
                .map(|p| {
                    let cgroup = crate::stats::read(&p.cgroup).ok();
                    let key = format!("pod:{}", p.id);
                    let nano_cores = cgroup.as_ref().and_then(|c| this.sampler.sample(&key, c));
                    let network = p
                        .paths
                        .net_ns
                        .as_ref()
                        .and_then(|ns| crate::stats::network(ns).ok());
                    let containers = ctrs
                        .iter()
                        .filter(|c| c.pod_id == p.id)
                        .map(|c| this.container_usage_at(c.clone(), depth, fs.as_ref()))
                        .collect();
                    let detail = (depth == Depth::Metrics)
                        .then(|| crate::stats::detail(&p.cgroup).ok())
                        .flatten();
                    PodUsage {
                        rec: p,
                        cgroup,
                        nano_cores,
                        network,
                        containers,
                        detail,
                    }
                })
                .collect()
        })
        .await
    }
}
