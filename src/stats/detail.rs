//! What cAdvisor reads of a container beyond the CRI's stats, for the CRI metrics
//! (ListPodSandboxMetrics): the rest of `memory.stat`, OOM kills, the cgroup's own limits (the
//! `container_spec_*` metrics), block I/O per device, and the processes in the cgroup (threads,
//! file descriptors, sockets, task states, the open-files limit). Read only for metrics: walking
//! `/proc` for every process costs more than kubelet's stats calls should pay.
//!
//! Kernel facts, as cAdvisor reads them: v1 `memory.stat` `total_cache`, `total_mapped_file`,
//! `total_(in)active_file`, `memory.kmem.usage_in_bytes`, `memory.failcnt`,
//! `memory.max_usage_in_bytes`, `memory.soft_limit_in_bytes`, `memory.memsw.limit_in_bytes`,
//! `memory.oom_control` `oom_kill`, `cpu.cfs_period_us`/`cfs_quota_us`/`shares`,
//! `blkio.throttle.io_service{_bytes,d}[_recursive]` (`MAJ:MIN Read N` lines), `tasks`; v2
//! `memory.stat` `file`, `file_mapped`, `kernel`, `(in)active_file`, `memory.peak`,
//! `memory.min`, `memory.swap.max`, `memory.events` `oom_kill`, `cpu.max`, `cpu.weight` (shares
//! = 2 + (weight − 1) × 262142 / 9999), `io.stat` (`MAJ:MIN rbytes= wbytes= rios= wios=`),
//! `cgroup.threads`; both `cgroup.procs`, `/proc/<pid>/fd`, `/proc/<tid>/stat` (state),
//! `/proc/<pid>/limits`.

use std::path::{Path, PathBuf};

use super::cgroup::Version;
use super::parse::{read_limit, read_opt, read_u64, Keyed};
use super::{Hierarchies, StatsError};

/// The detail of one cgroup; a field is `None` where the kernel does not offer it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detail {
    pub memory: MemoryDetail,
    /// OOM kills in the cgroup (`memory.events`/`memory.oom_control` `oom_kill`).
    pub oom_kills: Option<u64>,
    pub spec: SpecLimits,
    /// Block I/O per device.
    pub io: Vec<DeviceIo>,
    pub processes: Option<Processes>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryDetail {
    pub cache: Option<u64>,
    pub mapped_file: Option<u64>,
    pub kernel_usage: Option<u64>,
    pub failcnt: Option<u64>,
    pub max_usage: Option<u64>,
    pub active_file: Option<u64>,
    pub inactive_file: Option<u64>,
}

/// The cgroup's own limits (0 = none, as cAdvisor reports an absent limit).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecLimits {
    /// µs; None when the cgroup has no cpu controller.
    pub cpu_period: Option<u64>,
    /// µs; None when unlimited.
    pub cpu_quota: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub memory_reservation: Option<u64>,
    pub memory_swap_limit: Option<u64>,
}

/// One block device's I/O.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    pub major: u32,
    pub minor: u32,
    /// `/dev/<name>` from sysfs, else `MAJ:MIN`.
    pub device: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// The processes of the cgroup (its own `cgroup.procs`, not its children's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Processes {
    pub processes: u64,
    pub threads: u64,
    /// `pids.max`; None when unlimited.
    pub threads_max: Option<u64>,
    pub file_descriptors: u64,
    pub sockets: u64,
    /// The soft open-files limit of the oldest process (cAdvisor's root process).
    pub max_open_files: Option<u64>,
    /// Tasks by state (R, S, D, T).
    pub running: u64,
    pub sleeping: u64,
    pub uninterruptible: u64,
    pub stopped: u64,
}

impl Hierarchies {
    /// Reads the detail of `cgroup` (a path below the hierarchy roots). Blocking, and it walks
    /// `/proc` for each process of the cgroup.
    pub fn detail(&self, cgroup: &str) -> Result<Detail, StatsError> {
        let rel = super::cgroup::relative(cgroup)?;
        let dir = |ctrl: &str| self.dir(ctrl, &rel).filter(|(d, _)| d.is_dir());
        let mut d = Detail::default();
        if let Some((m, v)) = dir("memory") {
            d.memory = memory(&m, v)?;
            d.oom_kills = oom_kills(&m, v)?;
            (d.spec.memory_reservation, d.spec.memory_swap_limit) = memory_spec(&m, v)?;
        }
        if let Some((c, v)) = dir("cpu") {
            (d.spec.cpu_period, d.spec.cpu_quota, d.spec.cpu_shares) = cpu_spec(&c, v)?;
        }
        if let Some((i, v)) = dir("io") {
            d.io = io(&i, v)?;
        }
        let procs_dir = dir("pids").or_else(|| dir("cpu")).or_else(|| dir("memory"));
        if let Some((p, v)) = procs_dir {
            d.processes = Some(processes(&p, v, Path::new("/proc"))?);
        }
        Ok(d)
    }
}

/// [`Hierarchies::detail`] of `cgroup` on this host (a cgroupfs path or a systemd name).
pub fn detail(cgroup: &str) -> Result<Detail, StatsError> {
    Hierarchies::host().detail(&crate::cgroups::fs_path(cgroup))
}

fn memory(dir: &Path, ver: Version) -> Result<MemoryDetail, StatsError> {
    let stat_path = dir.join("memory.stat");
    let stat = Keyed::read(&stat_path)?;
    let key = |k: &str| -> Result<Option<u64>, StatsError> {
        match &stat {
            Some(s) => s.get(k),
            None => Ok(None),
        }
    };
    Ok(match ver {
        Version::V1 => MemoryDetail {
            cache: key("total_cache")?,
            mapped_file: key("total_mapped_file")?,
            kernel_usage: read_u64(&dir.join("memory.kmem.usage_in_bytes"))?,
            failcnt: read_u64(&dir.join("memory.failcnt"))?,
            max_usage: read_u64(&dir.join("memory.max_usage_in_bytes"))?,
            active_file: key("total_active_file")?,
            inactive_file: key("total_inactive_file")?,
        },
        Version::V2 => MemoryDetail {
            cache: key("file")?,
            mapped_file: key("file_mapped")?,
            kernel_usage: key("kernel")?,
            failcnt: None,
            max_usage: read_u64(&dir.join("memory.peak"))?,
            active_file: key("active_file")?,
            inactive_file: key("inactive_file")?,
        },
    })
}

fn oom_kills(dir: &Path, ver: Version) -> Result<Option<u64>, StatsError> {
    let file = match ver {
        Version::V1 => "memory.oom_control",
        Version::V2 => "memory.events",
    };
    let path = dir.join(file);
    match Keyed::read(&path)? {
        Some(k) => k.get("oom_kill"),
        None => Ok(None),
    }
}

/// (reservation, swap limit), 0 for none.
fn memory_spec(dir: &Path, ver: Version) -> Result<(Option<u64>, Option<u64>), StatsError> {
    let (reservation, swap) = match ver {
        Version::V1 => ("memory.soft_limit_in_bytes", "memory.memsw.limit_in_bytes"),
        Version::V2 => ("memory.min", "memory.swap.max"),
    };
    let limit = |f: &str| -> Result<Option<u64>, StatsError> {
        let p = dir.join(f);
        if read_opt(&p)?.is_none() {
            return Ok(None);
        }
        Ok(Some(read_limit(&p)?.unwrap_or(0)))
    };
    Ok((limit(reservation)?, limit(swap)?))
}

/// (period µs, quota µs or None when unlimited, shares).
type CpuSpec = (Option<u64>, Option<u64>, Option<u64>);

fn cpu_spec(dir: &Path, ver: Version) -> Result<CpuSpec, StatsError> {
    match ver {
        Version::V1 => {
            let period = read_u64(&dir.join("cpu.cfs_period_us"))?;
            let quota_path = dir.join("cpu.cfs_quota_us");
            let quota = read_opt(&quota_path)?.and_then(|s| s.trim().parse::<u64>().ok());
            Ok((period, quota, read_u64(&dir.join("cpu.shares"))?))
        }
        Version::V2 => {
            let max = read_opt(&dir.join("cpu.max"))?;
            let (quota, period) = match max.as_deref().map(str::split_whitespace) {
                Some(mut it) => (
                    it.next().and_then(|q| q.parse::<u64>().ok()),
                    it.next().and_then(|p| p.parse::<u64>().ok()),
                ),
                None => (None, None),
            };
            let shares = read_u64(&dir.join("cpu.weight"))?
                .map(|w| 2 + (w.saturating_sub(1)).saturating_mul(262_142) / 9999);
            Ok((period, quota, shares))
        }
    }
}

fn io(dir: &Path, ver: Version) -> Result<Vec<DeviceIo>, StatsError> {
    type ByDevice = std::collections::BTreeMap<(u32, u32), DeviceIo>;
    let mut by_dev = ByDevice::new();
    fn entry(by_dev: &mut ByDevice, maj: u32, min: u32) -> &mut DeviceIo {
        by_dev.entry((maj, min)).or_insert_with(|| DeviceIo {
            major: maj,
            minor: min,
            device: device_name(maj, min),
            ..Default::default()
        })
    }
    match ver {
        Version::V2 => {
            let Some(text) = read_opt(&dir.join("io.stat"))? else {
                return Ok(Vec::new());
            };
            for line in text.lines() {
                let mut it = line.split_whitespace();
                let Some((maj, min)) = it.next().and_then(majmin) else {
                    continue;
                };
                let e = entry(&mut by_dev, maj, min);
                for kv in it {
                    let Some((k, v)) = kv.split_once('=') else {
                        continue;
                    };
                    let v: u64 = v.parse().unwrap_or(0);
                    match k {
                        "rbytes" => e.read_bytes = v,
                        "wbytes" => e.write_bytes = v,
                        "rios" => e.reads = v,
                        "wios" => e.writes = v,
                        _ => {}
                    }
                }
            }
        }
        Version::V1 => {
            for (file, bytes) in [
                ("blkio.throttle.io_service_bytes", true),
                ("blkio.throttle.io_serviced", false),
            ] {
                // The recursive file (children included) where the kernel has it.
                let text = match read_opt(&dir.join(format!("{file}_recursive")))? {
                    Some(t) => Some(t),
                    None => read_opt(&dir.join(file))?,
                };
                for line in text.iter().flat_map(|t| t.lines()) {
                    let mut it = line.split_whitespace();
                    let (Some(dev), Some(op), Some(v)) = (it.next(), it.next(), it.next()) else {
                        continue;
                    };
                    let Some((maj, min)) = majmin(dev) else {
                        continue;
                    };
                    let v: u64 = v.parse().unwrap_or(0);
                    let e = entry(&mut by_dev, maj, min);
                    match (op, bytes) {
                        ("Read", true) => e.read_bytes = v,
                        ("Write", true) => e.write_bytes = v,
                        ("Read", false) => e.reads = v,
                        ("Write", false) => e.writes = v,
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(by_dev.into_values().collect())
}

fn majmin(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `/dev/<DEVNAME>` of a block device from sysfs, else `MAJ:MIN`.
fn device_name(maj: u32, min: u32) -> String {
    std::fs::read_to_string(format!("/sys/dev/block/{maj}:{min}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
        })
        .unwrap_or_else(|| format!("{maj}:{min}"))
}

/// Reads the numbers of a `cgroup.procs`-style file (one id per line).
fn ids(path: &Path) -> Result<Vec<u32>, StatsError> {
    Ok(read_opt(path)?
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default())
}

/// The processes of the cgroup at `dir`, looked up in `proc` (the proc mount).
fn processes(dir: &Path, ver: Version, proc: &Path) -> Result<Processes, StatsError> {
    let pids = ids(&dir.join("cgroup.procs"))?;
    let tids = match ver {
        Version::V1 => ids(&dir.join("tasks"))?,
        Version::V2 => ids(&dir.join("cgroup.threads"))?,
    };
    let mut p = Processes {
        processes: pids.len() as u64,
        threads: read_u64(&dir.join("pids.current"))?.unwrap_or(tids.len() as u64),
        threads_max: read_limit(&dir.join("pids.max"))?,
        ..Default::default()
    };
    for pid in &pids {
        // A process may exit while it is looked at: what is gone is not counted.
        let Ok(fds) = std::fs::read_dir(proc.join(pid.to_string()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            p.file_descriptors += 1;
            if std::fs::read_link(fd.path())
                .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"socket:"))
            {
                p.sockets += 1;
            }
        }
    }
    for tid in &tids {
        let Ok(stat) = std::fs::read_to_string(proc.join(tid.to_string()).join("stat")) else {
            continue;
        };
        // `pid (comm) S …`: the state follows the last `)` (comm may hold anything).
        match stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
        {
            Some('R') => p.running += 1,
            Some('S' | 'I') => p.sleeping += 1,
            Some('D') => p.uninterruptible += 1,
            Some('T' | 't') => p.stopped += 1,
            _ => {}
        }
    }
    if let Some(oldest) = pids.iter().min() {
        p.max_open_files = open_files_limit(&proc.join(oldest.to_string()).join("limits"));
    }
    Ok(p)
}

/// The soft "Max open files" of a `/proc/<pid>/limits` file (None when unlimited or absent).
fn open_files_limit(path: &PathBuf) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
    }

    #[test]
    fn v2_detail_from_a_tree() {
        let root = tempfile::tempdir().unwrap();
        let cg = root.path().join("pod/ctr");
        write(
            &cg,
            &[
                ("memory.current", "100\n"),
                (
                    "memory.stat",
                    "anon 10\nfile 20\nfile_mapped 5\nkernel 7\nactive_file 3\ninactive_file 4\n",
                ),
                ("memory.peak", "150\n"),
                ("memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n"),
                ("memory.min", "0\n"),
                ("memory.swap.max", "max\n"),
                ("cpu.stat", "usage_usec 1\n"),
                ("cpu.max", "50000 100000\n"),
                ("cpu.weight", "100\n"),
                (
                    "io.stat",
                    "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
                ),
                ("pids.current", "3\n"),
                ("pids.max", "max\n"),
                ("cgroup.procs", ""),
                ("cgroup.threads", ""),
            ],
        );
        let d = Hierarchies::v2(root.path()).detail("/pod/ctr").unwrap();
        assert_eq!(
            d.memory,
            MemoryDetail {
                cache: Some(20),
                mapped_file: Some(5),
                kernel_usage: Some(7),
                failcnt: None,
                max_usage: Some(150),
                active_file: Some(3),
                inactive_file: Some(4),
            }
        );
        assert_eq!(d.oom_kills, Some(1));
        assert_eq!(
            d.spec,
            SpecLimits {
                cpu_period: Some(100_000),
                cpu_quota: Some(50_000),
                cpu_shares: Some(2597),
                memory_reservation: Some(0),
                memory_swap_limit: Some(0),
            }
        );
        assert_eq!(d.io.len(), 1);
        assert_eq!(
            (
                d.io[0].major,
                d.io[0].read_bytes,
                d.io[0].write_bytes,
                d.io[0].reads,
                d.io[0].writes
            ),
            (8, 4096, 8192, 1, 2)
        );
        let p = d.processes.unwrap();
        assert_eq!((p.processes, p.threads, p.threads_max), (0, 3, None));
    }

    #[test]
    fn v1_spec_and_blkio() {
        let root = tempfile::tempdir().unwrap();
        let h = Hierarchies::from_mounts([
            (
                root.path().join("cpu"),
                vec!["cpu".into(), "cpuacct".into()],
            ),
            (root.path().join("blkio"), vec!["blkio".into()]),
        ]);
        write(
            &root.path().join("cpu/c"),
            &[
                ("cpu.cfs_period_us", "100000\n"),
                ("cpu.cfs_quota_us", "-1\n"),
                ("cpu.shares", "1024\n"),
                ("cgroup.procs", ""),
                ("tasks", ""),
            ],
        );
        write(
            &root.path().join("blkio/c"),
            &[
                (
                    "blkio.throttle.io_service_bytes",
                    "8:16 Read 10\n8:16 Write 20\n8:16 Sync 30\nTotal 30\n",
                ),
                (
                    "blkio.throttle.io_serviced",
                    "8:16 Read 1\n8:16 Write 2\nTotal 3\n",
                ),
            ],
        );
        let d = h.detail("/c").unwrap();
        assert_eq!(
            (d.spec.cpu_period, d.spec.cpu_quota, d.spec.cpu_shares),
            (Some(100_000), None, Some(1024))
        );
        assert_eq!(
            (
                d.io[0].read_bytes,
                d.io[0].write_bytes,
                d.io[0].reads,
                d.io[0].writes
            ),
            (10, 20, 1, 2)
        );
    }

    #[test]
    fn processes_of_this_test_process() {
        // This process, as if it were the only one in a cgroup.
        let root = tempfile::tempdir().unwrap();
        let me = std::process::id();
        write(
            root.path(),
            &[
                ("cgroup.procs", &format!("{me}\n")),
                ("cgroup.threads", &format!("{me}\n")),
            ],
        );
        let _sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let p = processes(root.path(), Version::V2, Path::new("/proc")).unwrap();
        assert_eq!((p.processes, p.threads), (1, 1));
        assert!(p.file_descriptors >= 3 && p.sockets >= 1, "{p:?}");
        assert_eq!(p.running + p.sleeping + p.uninterruptible + p.stopped, 1);
        assert!(p.max_open_files.is_some_and(|n| n > 0), "{p:?}");
    }
}
