//! Resource statistics of cgroups, writable layers and pod network namespaces, for the CRI's
//! stats RPCs (ContainerStats, PodSandboxStats and their List/Stream forms) and metrics.
//!
//! A pure-ish library: it reads kernel files and returns plain structs; the CRI layer converts.
//! - [`read`] / [`Hierarchies::read`]: one cgroup (e.g. `/ferrio/pod-<id>/ferrio-<ctr>`) on
//!   cgroup v1, v2 or a hybrid host. Each controller is looked up in the v1 hierarchy that
//!   carries it, else in the v2 tree; a controller that is not there (or a file the kernel does
//!   not offer, such as swap accounting or PSI) leaves its field `None`, never an error. The
//!   roots are injectable ([`Hierarchies::from_mounts`], [`Hierarchies::v2`]) for tests.
//! - [`CpuSampler`]: `usage_nano_cores` from two samples of the same id.
//! - [`writable_layer`]: bytes and inodes below a container's upper directory.
//! - [`network`]: per-interface counters of a pod's network namespace, read on a throw-away
//!   thread that joined it (`sys::net::in_netns`).
//!
//! Kernel formats, facts rather than code, as kubelet and cAdvisor read them: v1
//! `cpuacct.usage` (ns), `cpu.stat` (`nr_periods`, `nr_throttled`, `throttled_time` ns),
//! `memory.usage_in_bytes`, `memory.limit_in_bytes`, `memory.stat` (`total_*` = hierarchical),
//! `memory.memsw.*`; v2 `cpu.stat` (`usage_usec`, `throttled_usec` …), `memory.current`,
//! `memory.max`, `memory.stat`, `memory.swap.current`/`.max`, `*.pressure`; both `pids.current`,
//! `hugetlb.<size>.*`. The working set is usage − inactive file pages, floored at 0 (kubelet).

mod cgroup;
mod detail;
mod net;
mod parse;
mod sampler;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use cgroup::{read, read_for_stats, Hierarchies};
pub use detail::{detail, Detail, DeviceIo, MemoryDetail, Processes, SpecLimits};
pub use net::{
    network, network_of_process, parse_net_dev, InterfaceStats, NetworkStats, DEFAULT_INTERFACE,
};
pub use parse::parse_psi;
pub use sampler::CpuSampler;

use crate::error::{ErrorKind, Kind};

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cgroup {0} does not exist in any hierarchy")]
    CgroupNotFound(String),
    #[error("{} does not exist", .0.display())]
    NotFound(PathBuf),
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidCgroup { path: String, reason: &'static str },
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("entering network namespace {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ErrorKind for StatsError {
    fn kind(&self) -> Kind {
        match self {
            StatsError::CgroupNotFound(_) | StatsError::NotFound(_) => Kind::NotFound,
            StatsError::InvalidCgroup { .. } => Kind::InvalidArgument,
            StatsError::Io { .. } | StatsError::Parse { .. } | StatsError::Netns { .. } => {
                Kind::Internal
            }
        }
    }
}

/// Everything one read of a cgroup found. Sections are `None` when their controller (or, for
/// `io`, pressure accounting) is not available for this cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupStats {
    /// When the files were read (wall clock, as CRI timestamps are).
    pub timestamp: SystemTime,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    pub swap: Option<SwapStats>,
    pub pids: Option<PidsStats>,
    /// One entry per huge page size the hugetlb controller knows; empty without it.
    pub hugetlb: Vec<HugetlbStats>,
    pub io: Option<IoStats>,
}

impl CgroupStats {
    /// `timestamp` in nanoseconds since the Unix epoch (what CRI messages carry).
    pub fn timestamp_nanos(&self) -> i64 {
        unix_nanos(self.timestamp)
    }
}

/// Nanoseconds since the Unix epoch (0 before it, saturating far after).
pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq)]
pub struct CpuStats {
    /// Cumulative CPU time of all tasks, in ns (v1 `cpuacct.usage`, v2 `usage_usec` × 1000).
    pub usage_ns: u64,
    /// User and system parts, in ns, when the kernel splits them.
    pub user_ns: Option<u64>,
    pub system_ns: Option<u64>,
    /// CFS bandwidth throttling, when the cpu controller is there.
    pub throttling: Option<Throttling>,
    /// `cpu.pressure`, when present.
    pub psi: Option<Psi>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryStats {
    /// v1 `memory.usage_in_bytes`, v2 `memory.current` (page cache included).
    pub usage_bytes: u64,
    /// usage − inactive file pages, floored at 0; usage when `memory.stat` lacks the key.
    pub working_set_bytes: u64,
    /// v1 `total_rss`, v2 `anon`.
    pub rss_bytes: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// The limit, `None` when unlimited (v2 `max`; v1 values above 2^62, the kernel's
    /// page-rounded "infinity").
    pub limit_bytes: Option<u64>,
    /// limit − working set (floored at 0) when a limit is set.
    pub available_bytes: Option<u64>,
    /// `memory.pressure`, when present.
    pub psi: Option<Psi>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwapStats {
    /// v2 `memory.swap.current`; v1 `memory.memsw.usage_in_bytes` − `memory.usage_in_bytes`.
    pub usage_bytes: u64,
    /// v2 `memory.swap.max`; v1 memsw limit − memory limit; `None` when unlimited.
    pub limit_bytes: Option<u64>,
    /// limit − usage when limited.
    pub available_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidsStats {
    /// Tasks (threads included) in the cgroup and its descendants: `pids.current`.
    pub current: u64,
    /// `pids.max`, `None` when unlimited.
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugetlbStats {
    /// As the kernel names it in the file names: `2MB`, `1GB`, `64KB`.
    pub page_size: String,
    /// v1 `hugetlb.<size>.usage_in_bytes`, v2 `hugetlb.<size>.current`.
    pub usage_bytes: u64,
    /// v1 `hugetlb.<size>.max_usage_in_bytes` (v2 has no high-water mark).
    pub max_usage_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IoStats {
    /// `io.pressure`.
    pub psi: Option<Psi>,
}

/// Pressure stall information of one resource (`<resource>.pressure`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Psi {
    /// Some tasks stalled.
    pub some: PsiData,
    /// All non-idle tasks stalled at once (absent in old kernels' `cpu.pressure`).
    pub full: Option<PsiData>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PsiData {
    /// Percent of time stalled over the last 10 s, 60 s and 300 s.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Cumulative stall time in microseconds.
    pub total_us: u64,
}

/// Usage of a container's writable layer (its overlay upper directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub timestamp: SystemTime,
    /// Allocated bytes (as `du` counts them), hard links once.
    pub used_bytes: u64,
    pub inodes_used: u64,
}

/// Walks `dir` (an overlay upper directory) and counts its allocated bytes and inodes. Blocking
/// and proportional to the number of files: call it from `spawn_blocking`.
pub fn writable_layer(dir: &Path) -> Result<FsUsage, StatsError> {
    let timestamp = SystemTime::now();
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(StatsError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other("not a directory"),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StatsError::NotFound(dir.to_path_buf()))
        }
        Err(source) => {
            return Err(StatsError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    let (used_bytes, inodes_used) =
        crate::sys::disk_usage(dir).map_err(|source| StatsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(FsUsage {
        timestamp,
        used_bytes,
        inodes_used,
    })
}
