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
/// `f` over `items` on up to one scoped thread per core, in order: the stats of a node's pods
/// are independent file reads (and, per pod, a thread in its network namespace), so a full
/// node's ListPodSandboxStats takes the time of its share per core, not the sum. Written here
/// because it is a dozen lines; the threads end with the call.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    // Few items are not worth a thread.
    const PER_THREAD_MIN: usize = 4;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(items.len().div_ceil(PER_THREAD_MIN)).max(1);
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

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
        let cgroup = match depth {
            Depth::Metrics => crate::stats::read(&rec.cgroup),
            Depth::Stats => crate::stats::read_for_stats(&rec.cgroup),
        }
        .ok();
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
            let ctrs: Vec<ContainerRecord> = this
                .live_containers()
                .into_iter()
                .filter(|c| keep(c))
                .collect();
            par_map(&ctrs, |c| this.container_usage_blocking(c.clone()))
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
            let pods: Vec<PodRecord> = this
                .list_pods()
                .into_iter()
                .filter(|p| p.state == super::PodState::Ready && keep(p))
                .collect();
            par_map(&pods, |p| {
                let p = p.clone();
                let cgroup = match depth {
                    Depth::Metrics => crate::stats::read(&p.cgroup),
                    Depth::Stats => crate::stats::read_for_stats(&p.cgroup),
                }
                .ok();
                let key = format!("pod:{}", p.id);
                let nano_cores = cgroup.as_ref().and_then(|c| this.sampler.sample(&key, c));
                // Through a process of the pod when one is in its namespace (a file read),
                // else through a thread that joins the pinned namespace.
                let network = p.paths.net_ns.as_ref().and_then(|ns| {
                    ctrs.iter()
                        .filter(|c| c.pod_id == p.id)
                        .map(|c| c.pid)
                        .chain(p.pause.map(|(pid, _)| pid))
                        .find_map(|pid| crate::stats::network_of_process(pid, ns))
                        .or_else(|| crate::stats::network(ns).ok())
                });
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
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::par_map;

    #[test]
    fn par_map_keeps_the_order_and_every_item() {
        for n in [0, 1, 3, 4, 5, 17, 110] {
            let items: Vec<usize> = (0..n).collect();
            assert_eq!(
                par_map(&items, |i| i * 2),
                items.iter().map(|i| i * 2).collect::<Vec<_>>()
            );
        }
    }
}
