//! Fixture trees in the kernel's documented formats (cgroup-v1/{cpuacct,memory,hugetlb,pids},
//! cgroup-v2, PSI), and, as root, a real cgroup and a real network namespace.

use std::path::{Path, PathBuf};

use super::*;
use crate::error::{ErrorKind, Kind};

const CG: &str = "/ferrio/pod-1/ferrio-c1";
const MIB: u64 = 1 << 20;

fn write(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// A v1 host with one hierarchy per listed controller set (e.g. "cpu,cpuacct"), mounted at
/// `<tmp>/<set>`, and the directory of [`CG`] made in each.
fn v1(sets: &[&str]) -> (tempfile::TempDir, Hierarchies) {
    let tmp = tempfile::tempdir().unwrap();
    let mounts: Vec<(PathBuf, Vec<String>)> = sets
        .iter()
        .map(|s| {
            let root = tmp.path().join(s);
            std::fs::create_dir_all(root.join(CG.trim_start_matches('/'))).unwrap();
            (root, s.split(',').map(String::from).collect())
        })
        .collect();
    (tmp, Hierarchies::from_mounts(mounts))
}

fn v1_dir(tmp: &tempfile::TempDir, set: &str) -> PathBuf {
    tmp.path().join(set).join(CG.trim_start_matches('/'))
}

fn v2() -> (tempfile::TempDir, Hierarchies, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(CG.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    let h = Hierarchies::v2(tmp.path());
    (tmp, h, dir)
}

const V1_MEMORY_STAT: &str = "\
cache 1048576
rss 1048576
rss_huge 0
shmem 0
mapped_file 0
dirty 0
writeback 0
swap 0
pgpgin 100
pgpgout 50
pgfault 10
pgmajfault 1
inactive_anon 0
active_anon 1048576
inactive_file 1048576
active_file 0
unevictable 0
hierarchical_memory_limit 268435456
hierarchical_memsw_limit 536870912
total_cache 41943040
total_rss 52428800
total_rss_huge 0
total_shmem 0
total_mapped_file 4096
total_dirty 0
total_writeback 0
total_swap 5242880
total_pgpgin 30000
total_pgpgout 4000
total_pgfault 1000
total_pgmajfault 7
total_inactive_anon 0
total_active_anon 52428800
total_inactive_file 20971520
total_active_file 20971520
total_unevictable 0
";

fn v1_full() -> (tempfile::TempDir, Hierarchies) {
    let (tmp, h) = v1(&["cpu", "cpuacct", "memory", "pids", "hugetlb", "blkio"]);
    write(
        &v1_dir(&tmp, "cpuacct"),
        &[
            ("cpuacct.usage", "2500000000\n"),
            ("cpuacct.usage_user", "2000000000\n"),
            ("cpuacct.usage_sys", "500000000\n"),
            ("cpuacct.stat", "user 200\nsystem 50\n"),
        ],
    );
    write(
        &v1_dir(&tmp, "cpu"),
        &[
            (
                "cpu.stat",
                "nr_periods 10\nnr_throttled 2\nthrottled_time 3000000\nnr_bursts 0\nburst_time 0\n",
            ),
            ("cpu.cfs_quota_us", "50000\n"),
        ],
    );
    write(
        &v1_dir(&tmp, "memory"),
        &[
            ("memory.usage_in_bytes", "104857600\n"),
            ("memory.limit_in_bytes", "268435456\n"),
            ("memory.stat", V1_MEMORY_STAT),
            ("memory.memsw.usage_in_bytes", "110100480\n"),
            ("memory.memsw.limit_in_bytes", "536870912\n"),
        ],
    );
    write(
        &v1_dir(&tmp, "pids"),
        &[("pids.current", "3\n"), ("pids.max", "max\n")],
    );
    write(
        &v1_dir(&tmp, "hugetlb"),
        &[
            ("hugetlb.2MB.usage_in_bytes", "4194304\n"),
            ("hugetlb.2MB.max_usage_in_bytes", "6291456\n"),
            ("hugetlb.2MB.limit_in_bytes", "9223372036854771712\n"),
            ("hugetlb.2MB.failcnt", "0\n"),
            ("hugetlb.2MB.rsvd.usage_in_bytes", "2097152\n"),
            ("hugetlb.2MB.rsvd.max_usage_in_bytes", "2097152\n"),
            ("hugetlb.1GB.usage_in_bytes", "0\n"),
            ("hugetlb.1GB.max_usage_in_bytes", "0\n"),
        ],
    );
    (tmp, h)
}

#[test]
fn v1_every_controller() {
    let (_tmp, h) = v1_full();
    let s = h.read(CG).unwrap();
    let cpu = s.cpu.unwrap();
    assert_eq!(cpu.usage_ns, 2_500_000_000);
    assert_eq!(cpu.user_ns, Some(2_000_000_000));
    assert_eq!(cpu.system_ns, Some(500_000_000));
    assert_eq!(
        cpu.throttling,
        Some(Throttling {
            periods: 10,
            throttled_periods: 2,
            throttled_ns: 3_000_000
        })
    );
    assert_eq!(cpu.psi, None);

    let m = s.memory.unwrap();
    assert_eq!(m.usage_bytes, 100 * MIB);
    // usage − total_inactive_file (the hierarchical key, not the 1 MiB local one).
    assert_eq!(m.working_set_bytes, 80 * MIB);
    assert_eq!(m.rss_bytes, Some(50 * MIB));
    assert_eq!(m.page_faults, Some(1000));
    assert_eq!(m.major_page_faults, Some(7));
    assert_eq!(m.limit_bytes, Some(256 * MIB));
    assert_eq!(m.available_bytes, Some(176 * MIB));
    assert_eq!(m.psi, None);

    assert_eq!(
        s.swap,
        Some(SwapStats {
            usage_bytes: 5 * MIB,
            limit_bytes: Some(256 * MIB),
            available_bytes: Some(251 * MIB),
        })
    );
    assert_eq!(
        s.pids,
        Some(PidsStats {
            current: 3,
            limit: None
        })
    );
    assert_eq!(
        s.hugetlb,
        vec![
            HugetlbStats {
                page_size: "2MB".into(),
                usage_bytes: 4 * MIB,
                max_usage_bytes: Some(6 * MIB),
            },
            HugetlbStats {
                page_size: "1GB".into(),
                usage_bytes: 0,
                max_usage_bytes: Some(0),
            },
        ]
    );
    // blkio is mounted but v1 has no io.pressure.
    assert_eq!(s.io, None);
    let age = std::time::SystemTime::now()
        .duration_since(s.timestamp)
        .unwrap();
    assert!(age.as_secs() < 60);
}

#[test]
fn v1_unlimited_memory_and_no_swap_accounting() {
    let (tmp, h) = v1(&["cpu,cpuacct", "memory"]);
    write(
        &v1_dir(&tmp, "cpu,cpuacct"),
        &[
            ("cpuacct.usage", "7\n"),
            (
                "cpu.stat",
                "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
            ),
        ],
    );
    write(
        &v1_dir(&tmp, "memory"),
        &[
            ("memory.usage_in_bytes", "4096\n"),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.stat", "total_inactive_file 0\n"),
        ],
    );
    let s = h.read(CG).unwrap();
    assert_eq!(s.cpu.as_ref().unwrap().usage_ns, 7);
    // No cpuacct.usage_user/_sys in older kernels: absent, not an error.
    assert_eq!(s.cpu.as_ref().unwrap().user_ns, None);
    let m = s.memory.unwrap();
    assert_eq!((m.limit_bytes, m.available_bytes), (None, None));
    assert_eq!(m.working_set_bytes, 4096);
    assert_eq!(m.rss_bytes, None);
    assert_eq!(s.swap, None);
}

const V2_MEMORY_STAT: &str = "\
anon 52428800
file 41943040
kernel 1048576
kernel_stack 65536
pagetables 131072
sec_pagetables 0
percpu 0
sock 0
vmalloc 0
shmem 0
zswap 0
zswapped 0
file_mapped 4096
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 0
active_anon 52428800
inactive_file 20971520
active_file 20971520
unevictable 0
slab_reclaimable 0
slab_unreclaimable 0
slab 0
workingset_refault_anon 0
workingset_refault_file 0
pgscan 0
pgsteal 0
pgfault 1000
pgmajfault 7
pgrefill 0
pgactivate 0
pgdeactivate 0
pglazyfree 0
pglazyfreed 0
thp_fault_alloc 0
thp_collapse_alloc 0
";

const PSI_CPU: &str = "some avg10=1.25 avg60=0.50 avg300=0.10 total=4000000\n\
                       full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
const PSI_MEMORY: &str = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\n\
                          full avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n";
const PSI_IO: &str = "some avg10=3.00 avg60=2.00 avg300=1.00 total=99\n\
                      full avg10=2.50 avg60=1.50 avg300=0.50 total=88\n";

#[test]
fn v2_every_controller() {
    let (_tmp, h, dir) = v2();
    write(
        &dir,
        &[
            (
                "cpu.stat",
                "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n\
                 nr_periods 10\nnr_throttled 2\nthrottled_usec 3000\nnr_bursts 0\nburst_usec 0\n",
            ),
            ("cpu.pressure", PSI_CPU),
            ("memory.current", "104857600\n"),
            ("memory.max", "max\n"),
            ("memory.stat", V2_MEMORY_STAT),
            ("memory.swap.current", "5242880\n"),
            ("memory.swap.max", "max\n"),
            ("memory.pressure", PSI_MEMORY),
            ("io.pressure", PSI_IO),
            ("pids.current", "3\n"),
            ("pids.max", "100\n"),
            ("hugetlb.2MB.current", "4194304\n"),
            ("hugetlb.2MB.max", "max\n"),
            ("hugetlb.2MB.rsvd.current", "2097152\n"),
            ("hugetlb.2MB.events", "max 0\n"),
            ("hugetlb.1GB.current", "0\n"),
        ],
    );
    let s = h.read(CG).unwrap();
    let cpu = s.cpu.unwrap();
    assert_eq!(cpu.usage_ns, 2_500_000_000);
    assert_eq!(cpu.user_ns, Some(2_000_000_000));
    assert_eq!(cpu.system_ns, Some(500_000_000));
    assert_eq!(
        cpu.throttling,
        Some(Throttling {
            periods: 10,
            throttled_periods: 2,
            throttled_ns: 3_000_000
        })
    );
    let psi = cpu.psi.unwrap();
    assert_eq!(
        (psi.some.avg10, psi.some.avg60, psi.some.avg300),
        (1.25, 0.5, 0.1)
    );
    assert_eq!(psi.some.total_us, 4_000_000);
    assert_eq!(psi.full.unwrap().total_us, 0);

    let m = s.memory.unwrap();
    assert_eq!(m.usage_bytes, 100 * MIB);
    assert_eq!(m.working_set_bytes, 80 * MIB);
    assert_eq!(m.rss_bytes, Some(50 * MIB));
    assert_eq!((m.page_faults, m.major_page_faults), (Some(1000), Some(7)));
    // memory.max is "max": no limit, so nothing is "available".
    assert_eq!((m.limit_bytes, m.available_bytes), (None, None));
    assert_eq!(m.psi.unwrap().full.unwrap().total_us, 1000);

    assert_eq!(
        s.swap,
        Some(SwapStats {
            usage_bytes: 5 * MIB,
            limit_bytes: None,
            available_bytes: None
        })
    );
    assert_eq!(
        s.pids,
        Some(PidsStats {
            current: 3,
            limit: Some(100)
        })
    );
    assert_eq!(
        s.hugetlb,
        vec![
            HugetlbStats {
                page_size: "2MB".into(),
                usage_bytes: 4 * MIB,
                max_usage_bytes: None,
            },
            HugetlbStats {
                page_size: "1GB".into(),
                usage_bytes: 0,
                max_usage_bytes: None,
            },
        ]
    );
    let io = s.io.unwrap().psi.unwrap();
    assert_eq!(io.some.avg10, 3.0);
    assert_eq!(io.full.unwrap().total_us, 88);
}

#[test]
fn working_set_is_floored_at_zero_and_available_uses_it() {
    let (_tmp, h, dir) = v2();
    write(
        &dir,
        &[
            ("cpu.stat", "usage_usec 1\n"),
            ("memory.current", "1000\n"),
            ("memory.max", "10000\n"),
            // More inactive file pages than usage (they are counted at different moments).
            ("memory.stat", "anon 10\ninactive_file 5000\n"),
        ],
    );
    let m = h.read(CG).unwrap().memory.unwrap();
    assert_eq!(m.working_set_bytes, 0);
    assert_eq!(m.limit_bytes, Some(10000));
    assert_eq!(m.available_bytes, Some(10000));

    // And with a working set above the limit (possible briefly), available is 0, not negative.
    write(
        &dir,
        &[
            ("memory.current", "20000\n"),
            ("memory.stat", "inactive_file 1000\n"),
        ],
    );
    let m = h.read(CG).unwrap().memory.unwrap();
    assert_eq!(m.working_set_bytes, 19000);
    assert_eq!(m.available_bytes, Some(0));
}

#[test]
fn missing_controllers_leave_their_fields_absent() {
    // v2 with no controller enabled below the root: only the core cpu.stat (usage, no
    // throttling) and no memory, pids, hugetlb or PSI files.
    let (_tmp, h, dir) = v2();
    write(
        &dir,
        &[("cpu.stat", "usage_usec 42\nuser_usec 40\nsystem_usec 2\n")],
    );
    let s = h.read(CG).unwrap();
    let cpu = s.cpu.unwrap();
    assert_eq!(cpu.usage_ns, 42_000);
    assert_eq!((cpu.throttling, cpu.psi), (None, None));
    assert_eq!((s.memory, s.swap, s.pids, s.io), (None, None, None, None));
    assert!(s.hugetlb.is_empty());

    // v1 without pids and hugetlb hierarchies, and with a memory hierarchy where this cgroup
    // was never made.
    let (tmp, h) = v1(&["cpu,cpuacct", "memory"]);
    write(&v1_dir(&tmp, "cpu,cpuacct"), &[("cpuacct.usage", "5\n")]);
    std::fs::remove_dir(v1_dir(&tmp, "memory")).unwrap();
    let s = h.read(CG).unwrap();
    assert_eq!(s.cpu.unwrap().usage_ns, 5);
    assert_eq!((s.memory, s.pids), (None, None));
    assert!(s.hugetlb.is_empty());

    // A cgroup found nowhere is NotFound.
    let e = h.read("/ferrio/pod-1/gone").unwrap_err();
    assert!(matches!(e, StatsError::CgroupNotFound(_)), "{e}");
    assert_eq!(e.kind(), Kind::NotFound);
    let e = Hierarchies::default().read(CG).unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound);
}

#[test]
fn garbage_is_an_error_naming_the_file() {
    let (tmp, h) = v1(&["cpu,cpuacct", "memory"]);
    let cpu_dir = v1_dir(&tmp, "cpu,cpuacct");
    write(&cpu_dir, &[("cpuacct.usage", "12abc\n")]);
    let e = h.read(CG).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, StatsError::Parse { .. }), "{msg}");
    assert!(
        msg.contains(&cpu_dir.join("cpuacct.usage").display().to_string()) && msg.contains("12abc"),
        "{msg}"
    );
    assert_eq!(e.kind(), Kind::Internal);

    write(&cpu_dir, &[("cpuacct.usage", "1\n")]);
    let mem_dir = v1_dir(&tmp, "memory");
    write(
        &mem_dir,
        &[
            ("memory.usage_in_bytes", "4096\n"),
            ("memory.stat", "total_rss 1\ntotal_inactive_file lots\n"),
        ],
    );
    let msg = h.read(CG).unwrap_err().to_string();
    assert!(
        msg.contains(&mem_dir.join("memory.stat").display().to_string())
            && msg.contains("total_inactive_file"),
        "{msg}"
    );

    let (_tmp, h, dir) = v2();
    write(
        &dir,
        &[
            ("cpu.stat", "usage_usec 1\n"),
            ("cpu.pressure", "some avg10=zero\n"),
        ],
    );
    let msg = h.read(CG).unwrap_err().to_string();
    assert!(
        msg.contains(&dir.join("cpu.pressure").display().to_string()),
        "{msg}"
    );

    write(
        &dir,
        &[("cpu.stat", "user_usec 1\n"), ("cpu.pressure", PSI_CPU)],
    );
    let msg = h.read(CG).unwrap_err().to_string();
    assert!(
        msg.contains(&dir.join("cpu.stat").display().to_string()) && msg.contains("usage_usec"),
        "{msg}"
    );

    write(
        &dir,
        &[
            ("cpu.stat", "usage_usec 1\n"),
            ("memory.current", "\u{0}\u{1}\n"),
        ],
    );
    let msg = h.read(CG).unwrap_err().to_string();
    assert!(
        msg.contains(&dir.join("memory.current").display().to_string()),
        "{msg}"
    );
}

#[test]
fn invalid_cgroup_path() {
    let (_tmp, h, _dir) = v2();
    let e = h.read("/ferrio/../../etc").unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument);
    assert!(e.to_string().contains(".."), "{e}");
}

#[test]
fn sampler_from_two_reads() {
    let (_tmp, h, dir) = v2();
    write(&dir, &[("cpu.stat", "usage_usec 1000000\n")]);
    let sampler = CpuSampler::new();
    let first = h.read(CG).unwrap();
    assert_eq!(sampler.sample("c1", &first), None);
    write(&dir, &[("cpu.stat", "usage_usec 3000000\n")]);
    let mut second = h.read(CG).unwrap();
    // Pin the interval so the expected rate is exact: 2 s of CPU in 4 s = half a core.
    second.timestamp = first.timestamp + std::time::Duration::from_secs(4);
    assert_eq!(sampler.sample("c1", &second), Some(500_000_000));
    assert!(second.timestamp_nanos() > 1_600_000_000_000_000_000);
}

#[test]
fn writable_layer_bytes_and_inodes() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    std::fs::create_dir_all(upper.join("etc/sub")).unwrap();
    std::fs::write(upper.join("etc/a"), vec![1u8; 100_000]).unwrap();
    std::fs::write(upper.join("etc/sub/b"), b"b").unwrap();
    std::fs::hard_link(upper.join("etc/a"), upper.join("a-again")).unwrap();
    let u = writable_layer(&upper).unwrap();
    // etc, etc/sub, etc/a (= a-again), etc/sub/b.
    assert_eq!(u.inodes_used, 4);
    assert!(u.used_bytes >= 100_000, "{u:?}");
    let e = writable_layer(&tmp.path().join("nope")).unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound);
}

fn is_root() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        true
    } else {
        eprintln!("skipped: needs root");
        false
    }
}

/// A test cgroup made in every hierarchy; Drop kills its process and removes it.
struct TestCgroup {
    name: String,
    child: Option<std::process::Child>,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Err(e) = crate::cgroups::remove(&self.name) {
            eprintln!("removing test cgroup {}: {e}", self.name);
        }
    }
}

// A real cgroup with a shell in it that allocates ~30 MB and burns CPU: the counters move.
#[test]
fn real_cgroup_cpu_and_memory_move() {
    use std::io::BufRead;
    if !is_root() {
        return;
    }
    let name = format!("/ferrio-stats-test-{}", std::process::id());
    let mut cg = TestCgroup {
        name: name.clone(),
        child: None,
    };
    crate::cgroups::create(&name).unwrap();
    let h = Hierarchies::host();
    let before = h.read(&name).unwrap();
    assert_eq!(
        before.cpu.as_ref().map(|c| c.usage_ns),
        Some(0),
        "{before:?}"
    );
    if let Some(p) = &before.pids {
        assert_eq!(p.current, 0);
    }

    // The shell moves itself into every hierarchy's copy of the cgroup, then works.
    let procs: Vec<PathBuf> = crate::cgroups::hierarchies()
        .into_iter()
        .filter(|(_, c)| !c.iter().any(|c| c.starts_with("name=")))
        .map(|(root, _)| root.join(name.trim_start_matches('/')).join("cgroup.procs"))
        .collect();
    let script = r#"for f in "$@"; do echo $$ > "$f" || exit 1; done
x=$(head -c 30000000 /dev/zero | tr "\0" a)
i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done
echo ready
read _ 
echo ${#x} >/dev/null"#;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(&procs)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    cg.child = Some(child);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the shell failed before it was ready");

    let sampler = CpuSampler::new();
    sampler.sample("t", &before);
    let after = h.read(&name).unwrap();
    let cpu = after.cpu.as_ref().unwrap();
    assert!(cpu.usage_ns > 50_000_000, "cpu {cpu:?}");
    assert!(sampler.sample("t", &after).unwrap() > 0);
    let mem = after.memory.as_ref().unwrap();
    assert!(mem.usage_bytes > 25_000_000, "memory {mem:?}");
    assert!(mem.working_set_bytes <= mem.usage_bytes);
    assert!(mem.working_set_bytes > 25_000_000, "memory {mem:?}");
    assert!(mem.rss_bytes.unwrap() > 25_000_000, "memory {mem:?}");
    assert!(mem.page_faults.unwrap() > 0, "memory {mem:?}");
    assert_eq!(mem.limit_bytes, None);
    if let Some(p) = &after.pids {
        assert!(p.current >= 1, "{p:?}");
    }
    drop(cg);
    assert!(!crate::cgroups::exists(&name));
}

/// A named network namespace (`ip netns add`), deleted on Drop.
struct TestNetns(String);

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// Loopback traffic inside a new network namespace shows in its lo counters, read on a thread
// that joined it; the calling thread stays in its own namespace.
#[test]
fn real_netns_loopback_counters_move() {
    if !is_root() {
        return;
    }
    let name = format!("ferrio-stats-test-{}", std::process::id());
    ip(&["netns", "add", &name]);
    let _ns = TestNetns(name.clone());
    let path = PathBuf::from("/run/netns").join(&name);
    ip(&["-n", &name, "link", "set", "lo", "up"]);

    let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let before = network(&path).unwrap();
    assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), own);
    // The interfaces are the namespace's own, not the host's.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &name, "cat", "/proc/net/dev"])
        .output()
        .unwrap();
    let theirs = parse_net_dev(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let names = |v: &[InterfaceStats]| v.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&before.interfaces), names(&theirs));
    assert_eq!(before.default_interface, None);
    let lo = |s: &NetworkStats| {
        s.interfaces
            .iter()
            .find(|i| i.name == "lo")
            .unwrap()
            .clone()
    };
    let lo0 = lo(&before);

    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &name,
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lo1 = lo(&network(&path).unwrap());
    // 3 echo requests and 3 replies of 84 bytes each (IP) pass lo both ways.
    assert!(lo1.rx_bytes >= lo0.rx_bytes + 6 * 84, "{lo0:?} → {lo1:?}");
    assert!(lo1.tx_bytes >= lo0.tx_bytes + 6 * 84, "{lo0:?} → {lo1:?}");
    assert!(lo1.rx_packets >= lo0.rx_packets + 6);
    assert_eq!(lo1.rx_errors, 0);

    // The helper thread really is in the pinned namespace, and this one never was.
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(&path).unwrap().ino();
    let inside =
        crate::sys::net::in_netns(&path, || std::fs::read_link("/proc/thread-self/ns/net"))
            .unwrap()
            .unwrap();
    assert_eq!(inside, PathBuf::from(format!("net:[{ino}]")));
    assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), own);
}

#[test]
fn v1_for_the_stats_rpcs_only_what_they_report() {
    let (_tmp, h) = v1_full();
    let full = h.read(CG).unwrap();
    let s = h.read_with(CG, false).unwrap();
    let cpu = s.cpu.unwrap();
    assert_eq!(cpu.usage_ns, 2_500_000_000);
    assert_eq!(
        (cpu.user_ns, cpu.system_ns, cpu.throttling),
        (None, None, None)
    );
    assert!(s.hugetlb.is_empty() && !full.hugetlb.is_empty());
    // What the CRI reports is the same as a full read.
    assert_eq!(s.memory, full.memory);
    assert_eq!(s.swap, full.swap);
    assert_eq!(s.pids, full.pids);
}
