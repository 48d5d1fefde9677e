//! Reading one cgroup's statistics from wherever its controllers are mounted.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use super::parse::{read_limit, read_psi, read_u64, Keyed};
use super::{
    CgroupStats, CpuStats, HugetlbStats, IoStats, MemoryStats, PidsStats, StatsError, SwapStats,
    Throttling,
};

/// Where the cgroup hierarchies are: v1 mount points with their controllers, and the v2 tree.
/// A controller is read from the v1 hierarchy that carries it, else from the v2 tree (on a
/// hybrid host the v2 tree only serves controllers no v1 hierarchy has).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    v1: Vec<(PathBuf, Vec<String>)>,
    v2: Option<PathBuf>,
}

/// Which file formats a controller directory speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V1,
    V2,
}

/// Reads `cgroup` on this host: a cgroupfs path such as `/ferrio/pod-<id>/ferrio-<ctr>`, or a
/// systemd name (a slice, `<slice>:ferrio:<ctr>`), mapped to its directory by
/// `cgroups::fs_path`; see [`Hierarchies::read`].
pub fn read(cgroup: &str) -> Result<CgroupStats, StatsError> {
    Hierarchies::host().read(&crate::cgroups::fs_path(cgroup))
}

/// [`read`] of only what the CRI stats RPCs report (no user/system split, CFS throttling or
/// hugetlb figures: the CRI metrics read those): fewer files per cgroup, which counts when
/// kubelet asks for a whole node's pods.
pub fn read_for_stats(cgroup: &str) -> Result<CgroupStats, StatsError> {
    Hierarchies::host().read_with(&crate::cgroups::fs_path(cgroup), false)
}

impl Hierarchies {
    /// This host's hierarchies, from /proc/self/mountinfo.
    pub fn host() -> Hierarchies {
        Hierarchies::from_mounts(crate::cgroups::hierarchies())
    }

    /// From (mount point, v1 controllers) pairs as `cgroups::hierarchies()` returns them; an
    /// empty controller list is the v2 tree.
    pub fn from_mounts(mounts: impl IntoIterator<Item = (PathBuf, Vec<String>)>) -> Hierarchies {
        let mut h = Hierarchies::default();
        for (root, ctrls) in mounts {
            if ctrls.is_empty() {
                h.v2.get_or_insert(root);
            } else {
                h.v1.push((root, ctrls));
            }
        }
        h
    }

    /// A unified (v2-only) host whose tree is mounted at `root`.
    pub fn v2(root: impl Into<PathBuf>) -> Hierarchies {
        Hierarchies {
            v1: Vec::new(),
            v2: Some(root.into()),
        }
    }

    /// The directory of `cgroup` for `controller` (v1 name; `io` is `blkio` there), and the
    /// format its files use.
    pub(super) fn dir(&self, controller: &str, cgroup: &Path) -> Option<(PathBuf, Version)> {
        let v1_name = if controller == "io" {
            "blkio"
        } else {
            controller
        };
        if let Some((root, _)) = self.v1.iter().find(|(_, c)| c.iter().any(|c| c == v1_name)) {
            return Some((root.join(cgroup), Version::V1));
        }
        self.v2.as_ref().map(|r| (r.join(cgroup), Version::V2))
    }

    /// Reads every statistic of `cgroup` the kernel offers. A controller that is not mounted,
    /// or whose directory for this cgroup does not exist, leaves its section `None`; a cgroup
    /// found in none of them is [`StatsError::CgroupNotFound`]. Blocking (a few small reads).
    pub fn read(&self, cgroup: &str) -> Result<CgroupStats, StatsError> {
        self.read_with(cgroup, true)
    }

    /// [`Hierarchies::read`]; `full: false` leaves out what only the CRI metrics use (the
    /// user/system split, CFS throttling, hugetlb).
    pub fn read_with(&self, cgroup: &str, full: bool) -> Result<CgroupStats, StatsError> {
        let rel = relative(cgroup)?;
        let timestamp = SystemTime::now();
        let dir = |ctrl: &str| self.dir(ctrl, &rel).filter(|(d, _)| d.is_dir());
        let cpu_dir = dir("cpu");
        let cpuacct_dir = dir("cpuacct");
        let memory_dir = dir("memory");
        let pids_dir = dir("pids");
        let hugetlb_dir = if full { dir("hugetlb") } else { None };
        let io_dir = dir("io");
        if [
            &cpu_dir,
            &cpuacct_dir,
            &memory_dir,
            &pids_dir,
            &hugetlb_dir,
            &io_dir,
        ]
        .iter()
        .all(|d| d.is_none())
        {
            return Err(StatsError::CgroupNotFound(cgroup.to_string()));
        }
        Ok(CgroupStats {
            timestamp,
            cpu: cpu(cpuacct_dir.as_ref(), cpu_dir.as_ref(), full)?,
            memory: match &memory_dir {
                Some((d, v)) => memory(d, *v)?,
                None => None,
            },
            swap: match &memory_dir {
                Some((d, v)) => swap(d, *v)?,
                None => None,
            },
            pids: match &pids_dir {
                Some((d, _)) => pids(d)?,
                None => None,
            },
            hugetlb: match &hugetlb_dir {
                Some((d, v)) if full => hugetlb(d, *v)?,
                _ => Vec::new(),
            },
            io: match &io_dir {
                Some((d, _)) => read_psi(&d.join("io.pressure"))?.map(|p| IoStats { psi: Some(p) }),
                None => None,
            },
        })
    }
}

/// `cgroup` as a relative path below a hierarchy root; `..` is refused.
pub(super) fn relative(cgroup: &str) -> Result<PathBuf, StatsError> {
    let bad = |reason| StatsError::InvalidCgroup {
        path: cgroup.to_string(),
        reason,
    };
    if cgroup.is_empty() {
        return Err(bad("empty"));
    }
    let mut rel = PathBuf::new();
    for c in Path::new(cgroup).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
            Component::ParentDir => return Err(bad("\"..\" is not allowed")),
            Component::Prefix(_) => return Err(bad("not a cgroup path")),
        }
    }
    Ok(rel)
}

fn cpu(
    usage_dir: Option<&(PathBuf, Version)>,
    cpu_dir: Option<&(PathBuf, Version)>,
    full: bool,
) -> Result<Option<CpuStats>, StatsError> {
    let Some((udir, uver)) = usage_dir else {
        return Ok(None);
    };
    let (usage_ns, user_ns, system_ns) = match uver {
        Version::V1 => {
            let Some(usage) = read_u64(&udir.join("cpuacct.usage"))? else {
                return Ok(None);
            };
            if full {
                (
                    usage,
                    read_u64(&udir.join("cpuacct.usage_user"))?,
                    read_u64(&udir.join("cpuacct.usage_sys"))?,
                )
            } else {
                (usage, None, None)
            }
        }
        Version::V2 => {
            let path = udir.join("cpu.stat");
            let Some(stat) = Keyed::read(&path)? else {
                return Ok(None);
            };
            let Some(usage) = stat.get("usage_usec")? else {
                return Err(StatsError::Parse {
                    path,
                    reason: "no usage_usec line".into(),
                });
            };
            let us = |v: Option<u64>| v.map(|v| v.saturating_mul(1000));
            (
                usage.saturating_mul(1000),
                us(stat.get("user_usec")?),
                us(stat.get("system_usec")?),
            )
        }
    };
    let (throttling, psi) = match cpu_dir {
        Some((dir, ver)) => {
            let path = dir.join("cpu.stat");
            let stat = if full { Keyed::read(&path)? } else { None };
            let throttling = match stat {
                Some(stat) => {
                    let time = match ver {
                        Version::V1 => stat.get("throttled_time")?,
                        Version::V2 => stat.get("throttled_usec")?.map(|v| v.saturating_mul(1000)),
                    };
                    match (stat.get("nr_periods")?, stat.get("nr_throttled")?, time) {
                        (Some(periods), Some(throttled_periods), Some(throttled_ns)) => {
                            Some(Throttling {
                                periods,
                                throttled_periods,
                                throttled_ns,
                            })
                        }
                        // v2 without the cpu controller enabled: usage only.
                        _ => None,
                    }
                }
                None => None,
            };
            (throttling, read_psi(&dir.join("cpu.pressure"))?)
        }
        None => (None, None),
    };
    Ok(Some(CpuStats {
        usage_ns,
        user_ns,
        system_ns,
        throttling,
        psi,
    }))
}

fn memory(dir: &Path, ver: Version) -> Result<Option<MemoryStats>, StatsError> {
    let (usage_file, limit_file, prefix) = match ver {
        Version::V1 => ("memory.usage_in_bytes", "memory.limit_in_bytes", "total_"),
        Version::V2 => ("memory.current", "memory.max", ""),
    };
    let Some(usage_bytes) = read_u64(&dir.join(usage_file))? else {
        return Ok(None);
    };
    let limit_bytes = read_limit(&dir.join(limit_file))?;
    let stat_path = dir.join("memory.stat");
    let stat = Keyed::read(&stat_path)?;
    let key = |k: &str| -> Result<Option<u64>, StatsError> {
        match &stat {
            Some(s) => s.get(&format!("{prefix}{k}")),
            None => Ok(None),
        }
    };
    let inactive_file = key("inactive_file")?;
    let working_set_bytes = usage_bytes.saturating_sub(inactive_file.unwrap_or(0));
    let rss_bytes = match ver {
        Version::V1 => key("rss")?,
        Version::V2 => key("anon")?,
    };
    Ok(Some(MemoryStats {
        usage_bytes,
        working_set_bytes,
        rss_bytes,
        page_faults: key("pgfault")?,
        major_page_faults: key("pgmajfault")?,
        limit_bytes,
        available_bytes: limit_bytes.map(|l| l.saturating_sub(working_set_bytes)),
        psi: read_psi(&dir.join("memory.pressure"))?,
    }))
}

fn swap(dir: &Path, ver: Version) -> Result<Option<SwapStats>, StatsError> {
    let (usage_bytes, limit_bytes) = match ver {
        Version::V2 => {
            let Some(usage) = read_u64(&dir.join("memory.swap.current"))? else {
                return Ok(None);
            };
            (usage, read_limit(&dir.join("memory.swap.max"))?)
        }
        Version::V1 => {
            // memsw counts memory + swap; the files exist only with swap accounting.
            let Some(memsw) = read_u64(&dir.join("memory.memsw.usage_in_bytes"))? else {
                return Ok(None);
            };
            let mem = read_u64(&dir.join("memory.usage_in_bytes"))?.unwrap_or(0);
            let memsw_limit = read_limit(&dir.join("memory.memsw.limit_in_bytes"))?;
            let mem_limit = read_limit(&dir.join("memory.limit_in_bytes"))?;
            let limit = match (memsw_limit, mem_limit) {
                (Some(sw), Some(m)) => Some(sw.saturating_sub(m)),
                _ => None,
            };
            (memsw.saturating_sub(mem), limit)
        }
    };
    Ok(Some(SwapStats {
        usage_bytes,
        limit_bytes,
        available_bytes: limit_bytes.map(|l| l.saturating_sub(usage_bytes)),
    }))
}

fn pids(dir: &Path) -> Result<Option<PidsStats>, StatsError> {
    let Some(current) = read_u64(&dir.join("pids.current"))? else {
        return Ok(None);
    };
    Ok(Some(PidsStats {
        current,
        limit: read_limit(&dir.join("pids.max"))?,
    }))
}

fn hugetlb(dir: &Path, ver: Version) -> Result<Vec<HugetlbStats>, StatsError> {
    let suffix = match ver {
        Version::V1 => ".usage_in_bytes",
        Version::V2 => ".current",
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StatsError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        // hugetlb.<size><suffix>; reservations (hugetlb.<size>.rsvd.*) are not usage.
        let Some(size) = name
            .strip_prefix("hugetlb.")
            .and_then(|n| n.strip_suffix(suffix))
        else {
            continue;
        };
        if size.contains('.') {
            continue;
        }
        let Some(usage_bytes) = read_u64(&e.path())? else {
            continue;
        };
        let max_usage_bytes = match ver {
            Version::V1 => read_u64(&dir.join(format!("hugetlb.{size}.max_usage_in_bytes")))?,
            Version::V2 => None,
        };
        out.push(HugetlbStats {
            page_size: size.to_string(),
            usage_bytes,
            max_usage_bytes,
        });
    }
    out.sort_by_key(|h| page_size_bytes(&h.page_size));
    Ok(out)
}

/// `2MB` → 2 MiB, for ordering the page sizes (unknown forms sort last).
fn page_size_bytes(s: &str) -> u64 {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().unwrap_or(u64::MAX);
    let mult: u64 = match unit {
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return u64::MAX,
    };
    n.saturating_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths() {
        assert_eq!(
            relative("/ferrio/pod-1/ferrio-2").unwrap(),
            PathBuf::from("ferrio/pod-1/ferrio-2")
        );
        assert_eq!(relative("/").unwrap(), PathBuf::new());
        assert!(relative("/ferrio/../../etc").is_err());
        assert!(relative("").is_err());
    }

    #[test]
    fn page_sizes_order() {
        let mut v = vec!["1GB", "64KB", "2MB", "odd"];
        v.sort_by_key(|s| page_size_bytes(s));
        assert_eq!(v, ["64KB", "2MB", "1GB", "odd"]);
    }

    #[test]
    fn controllers_resolve_to_v1_first_then_v2() {
        let h = Hierarchies::from_mounts([
            (
                PathBuf::from("/cg/cpu,cpuacct"),
                vec!["cpu".into(), "cpuacct".into()],
            ),
            (PathBuf::from("/cg/blkio"), vec!["blkio".into()]),
            (PathBuf::from("/cg/systemd"), vec!["name=systemd".into()]),
            (PathBuf::from("/cg/unified"), vec![]),
        ]);
        let c = Path::new("a/b");
        assert_eq!(
            h.dir("cpuacct", c),
            Some((PathBuf::from("/cg/cpu,cpuacct/a/b"), Version::V1))
        );
        assert_eq!(
            h.dir("io", c),
            Some((PathBuf::from("/cg/blkio/a/b"), Version::V1))
        );
        assert_eq!(
            h.dir("pids", c),
            Some((PathBuf::from("/cg/unified/a/b"), Version::V2))
        );
        assert_eq!(Hierarchies::default().dir("pids", c), None);
    }
}
