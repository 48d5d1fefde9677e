//! ListMetricDescriptors / ListPodSandboxMetrics: the engine's usage (`engine::usage`, read to
//! `Depth::Metrics`) as cAdvisor-named metrics, the set kubelet's CRI metrics collector
//! re-exports on `/metrics/cadvisor` when it takes pod and container stats from the runtime.
//!
//! Every per-container metric cAdvisor defines that cgroups (v1 and v2), `/proc` and the
//! filesystem can give: cpu, memory (usage, max usage, working set, cache, rss, mapped file,
//! swap, kernel usage, failcnt, active/inactive file, page faults), OOM kills, the cgroup's own
//! limits (`container_spec_*`), processes, threads and their limit, file descriptors, sockets,
//! the open-files limit, task states, the writable layer's filesystem, block I/O per device,
//! hugetlb, pressure, network and the start time — with cAdvisor's names, types and extra
//! labels. Left out: what needs perf events, netlink load stats, resctrl or /dev/kmsg (ferrio
//! counts OOM kills from the cgroup instead), and per-CPU usage.
//!
//! Label keys: the base ones, as CRI-O gives them — `container` (the container's name; empty
//! for the pod's own cgroup), `id` (container or pod sandbox ID), `image` (as the request named
//! it; empty for the pod), `name` (the reserved `k8s_…` name), `namespace`, `pod` — then each
//! metric's own (`cpu`, `interface`, `device`, `failure_type`/`scope`, …). The CRI carries
//! values as uint64, so second-valued counters are whole seconds (as CRI-O reports them), and
//! a value the kernel does not offer is left out rather than reported as 0; an absent limit is
//! 0, as cAdvisor reports it. Timestamps are when the values were read.

use super::api::{self, MetricType};
use crate::engine::container::container_name;
use crate::engine::pod::pod_name;
use crate::engine::usage::{ContainerUsage, FsInfo, PodUsage};
use crate::stats::{unix_nanos, CgroupStats, Detail, NetworkStats, Psi};
use std::time::SystemTime;

const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

use MetricType::{Counter as C, Gauge as G};

/// (name, help, type, the metric's own label keys after the base ones)
const DESCRIPTORS: &[(&str, &str, MetricType, &[&str])] = &[
    ("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", C, &["cpu"]),
    ("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", C, &[]),
    ("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", C, &[]),
    ("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", C, &[]),
    ("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", C, &[]),
    ("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", C, &[]),
    ("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", G, &[]),
    ("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", G, &[]),
    ("container_memory_working_set_bytes", "Current working set in bytes.", G, &[]),
    ("container_memory_cache", "Number of bytes of page cache memory.", G, &[]),
    ("container_memory_rss", "Size of RSS in bytes.", G, &[]),
    ("container_memory_mapped_file", "Size of memory mapped files in bytes.", G, &[]),
    ("container_memory_swap", "Container swap usage in bytes.", G, &[]),
    ("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", G, &[]),
    ("container_memory_failcnt", "Number of memory usage hits limits", C, &[]),
    ("container_memory_total_active_file_bytes", "Current total active file in bytes.", G, &[]),
    ("container_memory_total_inactive_file_bytes", "Current total inactive file in bytes.", G, &[]),
    ("container_memory_failures_total", "Cumulative count of memory allocation failures.", C, &["failure_type", "scope"]),
    ("container_oom_events_total", "Count of out of memory events observed for the container", C, &[]),
    ("container_spec_cpu_period", "CPU period of the container.", G, &[]),
    ("container_spec_cpu_quota", "CPU quota of the container.", G, &[]),
    ("container_spec_cpu_shares", "CPU share of the container.", G, &[]),
    ("container_spec_memory_limit_bytes", "Memory limit for the container.", G, &[]),
    ("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", G, &[]),
    ("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", G, &[]),
    ("container_processes", "Number of processes running inside the container.", G, &[]),
    ("container_threads", "Number of threads running inside the container", G, &[]),
    ("container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", G, &[]),
    ("container_file_descriptors", "Number of open file descriptors for the container.", G, &[]),
    ("container_sockets", "Number of open sockets for the container.", G, &[]),
    ("container_ulimits_soft", "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice", G, &["ulimit"]),
    ("container_tasks_state", "Number of tasks in given state", G, &["state"]),
    ("container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", G, &["device"]),
    ("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", G, &["device"]),
    ("container_fs_inodes_total", "Number of Inodes", G, &["device"]),
    ("container_fs_inodes_free", "Number of available Inodes", G, &["device"]),
    ("container_fs_reads_bytes_total", "Cumulative count of bytes read", C, &["device"]),
    ("container_fs_writes_bytes_total", "Cumulative count of bytes written", C, &["device"]),
    ("container_fs_reads_total", "Cumulative count of reads completed", C, &["device"]),
    ("container_fs_writes_total", "Cumulative count of writes completed", C, &["device"]),
    ("container_blkio_device_usage_total", "Blkio Device bytes usage", C, &["device", "major", "minor", "operation"]),
    ("container_hugetlb_usage_bytes", "Hugepage usage in bytes", G, &["pagesize"]),
    ("container_hugetlb_max_usage_bytes", "Hugepage maximum usage in bytes", G, &["pagesize"]),
    ("container_pressure_cpu_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to CPU congestion.", C, &[]),
    ("container_pressure_cpu_waiting_seconds_total", "Total time duration tasks in the container have waited due to CPU congestion.", C, &[]),
    ("container_pressure_memory_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to memory congestion.", C, &[]),
    ("container_pressure_memory_waiting_seconds_total", "Total time duration tasks in the container have waited due to memory congestion.", C, &[]),
    ("container_pressure_io_stalled_seconds_total", "Total time duration no tasks in the container could make progress due to IO congestion.", C, &[]),
    ("container_pressure_io_waiting_seconds_total", "Total time duration tasks in the container have waited due to IO congestion.", C, &[]),
    ("container_network_receive_bytes_total", "Cumulative count of bytes received", C, &["interface"]),
    ("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", C, &["interface"]),
    ("container_network_receive_packets_total", "Cumulative count of packets received", C, &["interface"]),
    ("container_network_transmit_packets_total", "Cumulative count of packets transmitted", C, &["interface"]),
    ("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", C, &["interface"]),
    ("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", C, &["interface"]),
    ("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", C, &["interface"]),
    ("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", C, &["interface"]),
    ("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", G, &[]),
    ("container_last_seen", "Last time a container was seen by the exporter", G, &[]),
];

/// The fixed descriptor set.
pub fn descriptors() -> Vec<api::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|(name, help, _, extra)| api::MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: BASE_LABELS
                .iter()
                .chain(extra.iter())
                .map(|s| s.to_string())
                .collect(),
        })
        .collect()
}

fn metric_type(name: &str) -> MetricType {
    DESCRIPTORS
        .iter()
        .find(|d| d.0 == name)
        .map_or(MetricType::Gauge, |d| d.2)
}

const NS: u64 = 1_000_000_000;

/// Collects the samples of one container or pod, all with the same base label values.
struct Samples {
    labels: Vec<String>,
    out: Vec<api::Metric>,
}

impl Samples {
    fn new(labels: [String; 6]) -> Samples {
        Samples {
            labels: labels.into(),
            out: Vec::new(),
        }
    }

    /// One sample; `extra` are the values of the metric's own label keys, in their order.
    fn push(&mut self, name: &str, at: SystemTime, extra: &[&str], value: u64) {
        debug_assert!(
            DESCRIPTORS
                .iter()
                .any(|d| d.0 == name && d.3.len() == extra.len()),
            "{name}"
        );
        let mut label_values = self.labels.clone();
        label_values.extend(extra.iter().map(|s| s.to_string()));
        self.out.push(api::Metric {
            name: name.into(),
            timestamp: unix_nanos(at),
            metric_type: metric_type(name) as i32,
            label_values,
            value: Some(api::UInt64Value { value }),
        });
    }

    fn opt(&mut self, name: &str, at: SystemTime, value: Option<u64>) {
        if let Some(v) = value {
            self.push(name, at, &[], v);
        }
    }

    fn pressure(&mut self, resource: &str, at: SystemTime, psi: Option<&Psi>) {
        let Some(p) = psi else { return };
        let us = 1_000_000;
        if let Some(full) = &p.full {
            self.push(
                &format!("container_pressure_{resource}_stalled_seconds_total"),
                at,
                &[],
                full.total_us / us,
            );
        }
        self.push(
            &format!("container_pressure_{resource}_waiting_seconds_total"),
            at,
            &[],
            p.some.total_us / us,
        );
    }

    /// The cgroup's statistics and, read for metrics, its detail.
    fn cgroup(&mut self, c: &CgroupStats, d: Option<&Detail>) {
        let at = c.timestamp;
        // The CFS counters only for a cgroup with a quota (as cAdvisor), when that is known.
        let quota = d.is_none_or(|d| d.spec.cpu_quota.is_some());
        if let Some(cpu) = &c.cpu {
            self.push(
                "container_cpu_usage_seconds_total",
                at,
                &["total"],
                cpu.usage_ns / NS,
            );
            self.opt(
                "container_cpu_user_seconds_total",
                at,
                cpu.user_ns.map(|v| v / NS),
            );
            self.opt(
                "container_cpu_system_seconds_total",
                at,
                cpu.system_ns.map(|v| v / NS),
            );
            if let Some(t) = cpu.throttling.as_ref().filter(|_| quota) {
                self.push("container_cpu_cfs_periods_total", at, &[], t.periods);
                self.push(
                    "container_cpu_cfs_throttled_periods_total",
                    at,
                    &[],
                    t.throttled_periods,
                );
                self.push(
                    "container_cpu_cfs_throttled_seconds_total",
                    at,
                    &[],
                    t.throttled_ns / NS,
                );
            }
            self.pressure("cpu", at, cpu.psi.as_ref());
        }
        if let Some(m) = &c.memory {
            self.push("container_memory_usage_bytes", at, &[], m.usage_bytes);
            self.push(
                "container_memory_working_set_bytes",
                at,
                &[],
                m.working_set_bytes,
            );
            self.opt("container_memory_rss", at, m.rss_bytes);
            for (kind, v) in [
                ("pgfault", m.page_faults),
                ("pgmajfault", m.major_page_faults),
            ] {
                if let Some(v) = v {
                    for scope in ["container", "hierarchy"] {
                        self.push("container_memory_failures_total", at, &[kind, scope], v);
                    }
                }
            }
            self.push(
                "container_spec_memory_limit_bytes",
                at,
                &[],
                m.limit_bytes.unwrap_or(0),
            );
            self.pressure("memory", at, m.psi.as_ref());
        }
        if let Some(s) = &c.swap {
            self.push("container_memory_swap", at, &[], s.usage_bytes);
        }
        if let Some(io) = &c.io {
            self.pressure("io", at, io.psi.as_ref());
        }
        for h in &c.hugetlb {
            let size = [h.page_size.as_str()];
            self.push("container_hugetlb_usage_bytes", at, &size, h.usage_bytes);
            if let Some(max) = h.max_usage_bytes {
                self.push("container_hugetlb_max_usage_bytes", at, &size, max);
            }
        }
        if let Some(d) = d {
            self.detail(at, d);
        } else if let Some(p) = &c.pids {
            self.push("container_processes", at, &[], p.current);
        }
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.push("container_last_seen", at, &[], secs);
    }

    fn detail(&mut self, at: SystemTime, d: &Detail) {
        let m = &d.memory;
        self.opt("container_memory_max_usage_bytes", at, m.max_usage);
        self.opt("container_memory_cache", at, m.cache);
        self.opt("container_memory_mapped_file", at, m.mapped_file);
        self.opt("container_memory_kernel_usage", at, m.kernel_usage);
        self.opt("container_memory_failcnt", at, m.failcnt);
        self.opt(
            "container_memory_total_active_file_bytes",
            at,
            m.active_file,
        );
        self.opt(
            "container_memory_total_inactive_file_bytes",
            at,
            m.inactive_file,
        );
        self.opt("container_oom_events_total", at, d.oom_kills);
        let s = &d.spec;
        self.opt("container_spec_cpu_period", at, s.cpu_period);
        self.opt("container_spec_cpu_quota", at, s.cpu_quota);
        self.opt("container_spec_cpu_shares", at, s.cpu_shares);
        self.opt(
            "container_spec_memory_reservation_limit_bytes",
            at,
            s.memory_reservation,
        );
        self.opt(
            "container_spec_memory_swap_limit_bytes",
            at,
            s.memory_swap_limit,
        );
        if let Some(p) = &d.processes {
            self.push("container_processes", at, &[], p.processes);
            self.push("container_threads", at, &[], p.threads);
            self.push("container_threads_max", at, &[], p.threads_max.unwrap_or(0));
            self.push("container_file_descriptors", at, &[], p.file_descriptors);
            self.push("container_sockets", at, &[], p.sockets);
            if let Some(n) = p.max_open_files {
                self.push("container_ulimits_soft", at, &["max_open_files"], n);
            }
            for (state, n) in [
                ("running", p.running),
                ("sleeping", p.sleeping),
                ("stopped", p.stopped),
                ("uninterruptible", p.uninterruptible),
                ("iowaiting", 0),
            ] {
                self.push("container_tasks_state", at, &[state], n);
            }
        }
        for io in &d.io {
            let dev = [io.device.as_str()];
            self.push("container_fs_reads_bytes_total", at, &dev, io.read_bytes);
            self.push("container_fs_writes_bytes_total", at, &dev, io.write_bytes);
            self.push("container_fs_reads_total", at, &dev, io.reads);
            self.push("container_fs_writes_total", at, &dev, io.writes);
            let (maj, min) = (io.major.to_string(), io.minor.to_string());
            for (op, v) in [("Read", io.read_bytes), ("Write", io.write_bytes)] {
                self.push(
                    "container_blkio_device_usage_total",
                    at,
                    &[&io.device, &maj, &min, op],
                    v,
                );
            }
        }
    }

    fn network(&mut self, n: &NetworkStats) {
        let at = n.timestamp;
        for i in &n.interfaces {
            let name = [i.name.as_str()];
            for (metric, v) in [
                ("container_network_receive_bytes_total", i.rx_bytes),
                ("container_network_transmit_bytes_total", i.tx_bytes),
                ("container_network_receive_packets_total", i.rx_packets),
                ("container_network_transmit_packets_total", i.tx_packets),
                (
                    "container_network_receive_packets_dropped_total",
                    i.rx_dropped,
                ),
                (
                    "container_network_transmit_packets_dropped_total",
                    i.tx_dropped,
                ),
                ("container_network_receive_errors_total", i.rx_errors),
                ("container_network_transmit_errors_total", i.tx_errors),
            ] {
                self.push(metric, at, &name, v);
            }
        }
    }

    /// The writable layer's use of its filesystem, and that filesystem's size.
    fn fs(&mut self, used: Option<&crate::stats::FsUsage>, fs: Option<&FsInfo>) {
        let device = fs.map_or("", |f| f.device.as_str());
        if let Some(w) = used {
            let at = w.timestamp;
            self.push("container_fs_usage_bytes", at, &[device], w.used_bytes);
            // cAdvisor's own quirk for runtime containers: the inodes the layer uses.
            self.push("container_fs_inodes_total", at, &[device], w.inodes_used);
        }
        if let Some(f) = fs {
            let at = used.map_or_else(SystemTime::now, |w| w.timestamp);
            self.push("container_fs_limit_bytes", at, &[device], f.capacity_bytes);
            self.push("container_fs_inodes_free", at, &[device], f.inodes_free);
        }
    }

    fn start_time(&mut self, at: SystemTime, ns: i64) {
        if ns > 0 {
            self.push(
                "container_start_time_seconds",
                at,
                &[],
                u64::try_from(ns).unwrap_or(0) / NS,
            );
        }
    }
}

fn container_metrics(p: &PodUsage, c: &ContainerUsage) -> api::ContainerMetrics {
    let pod = &p.rec.config;
    let mut s = Samples::new([
        c.rec.config.name.clone(),
        c.rec.id.clone(),
        c.rec.image.clone(),
        container_name(pod, &c.rec.config),
        pod.namespace.clone(),
        pod.name.clone(),
    ]);
    if let Some(cg) = &c.cgroup {
        s.cgroup(cg, c.detail.as_ref());
        s.start_time(cg.timestamp, c.rec.started_at_ns);
    }
    s.fs(c.writable.as_ref(), c.fs.as_ref());
    api::ContainerMetrics {
        container_id: c.rec.id.clone(),
        metrics: s.out,
    }
}

/// One pod's metrics: its own cgroup and network (label `container=""`), and each container's.
pub fn pod_metrics(p: &PodUsage) -> api::PodSandboxMetrics {
    let pod = &p.rec.config;
    let mut s = Samples::new([
        String::new(),
        p.rec.id.clone(),
        String::new(),
        pod_name(pod),
        pod.namespace.clone(),
        pod.name.clone(),
    ]);
    if let Some(cg) = &p.cgroup {
        s.cgroup(cg, p.detail.as_ref());
        s.start_time(cg.timestamp, p.rec.created_at_ns);
    }
    if let Some(n) = &p.network {
        s.network(n);
    }
    api::PodSandboxMetrics {
        pod_sandbox_id: p.rec.id.clone(),
        metrics: s.out,
        container_metrics: p
            .containers
            .iter()
            .map(|c| container_metrics(p, c))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{CpuStats, InterfaceStats, MemoryStats, PidsStats, Processes};

    #[test]
    fn descriptors_are_unique_and_cadvisor_named() {
        let d = descriptors();
        let mut names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), d.len());
        for want in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_memory_cache",
            "container_oom_events_total",
            "container_threads_max",
            "container_spec_cpu_quota",
            "container_fs_reads_bytes_total",
            "container_blkio_device_usage_total",
            "container_network_receive_bytes_total",
            "container_start_time_seconds",
            "container_last_seen",
        ] {
            assert!(names.contains(&want), "{want}");
        }
        for d in &d {
            assert!(d.name.starts_with("container_"));
            assert_eq!(&d.label_keys[..6], &BASE_LABELS);
        }
        let keys = |n: &str| d.iter().find(|d| d.name == n).unwrap().label_keys[6..].to_vec();
        assert_eq!(keys("container_cpu_usage_seconds_total"), ["cpu"]);
        assert_eq!(
            keys("container_memory_failures_total"),
            ["failure_type", "scope"]
        );
        assert_eq!(
            keys("container_blkio_device_usage_total"),
            ["device", "major", "minor", "operation"]
        );
        assert_eq!(keys("container_network_receive_bytes_total"), ["interface"]);
    }

    #[test]
    fn samples_match_their_descriptor() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut s = Samples::new(Default::default());
        let stats = CgroupStats {
            timestamp: at,
            cpu: Some(CpuStats {
                usage_ns: 2_500_000_000,
                user_ns: Some(1_999_999_999),
                system_ns: None,
                throttling: Some(crate::stats::Throttling {
                    periods: 5,
                    throttled_periods: 1,
                    throttled_ns: 3_000_000_000,
                }),
                psi: None,
            }),
            memory: Some(MemoryStats {
                usage_bytes: 100,
                working_set_bytes: 80,
                rss_bytes: Some(50),
                page_faults: Some(9),
                major_page_faults: None,
                limit_bytes: None,
                available_bytes: None,
                psi: None,
            }),
            swap: None,
            pids: Some(PidsStats {
                current: 3,
                limit: None,
            }),
            hugetlb: vec![],
            io: None,
        };
        let mut detail = Detail {
            processes: Some(Processes {
                processes: 2,
                threads: 3,
                file_descriptors: 7,
                sleeping: 3,
                ..Default::default()
            }),
            io: vec![crate::stats::DeviceIo {
                major: 8,
                minor: 0,
                device: "/dev/sda".into(),
                read_bytes: 4096,
                ..Default::default()
            }],
            ..Default::default()
        };
        detail.spec.cpu_period = Some(100_000);
        detail.memory.cache = Some(20);
        s.cgroup(&stats, Some(&detail));
        s.network(&NetworkStats::new(
            at,
            vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 7,
                rx_packets: 1,
                rx_errors: 0,
                rx_dropped: 0,
                tx_bytes: 0,
                tx_packets: 0,
                tx_errors: 0,
                tx_dropped: 0,
            }],
        ));
        s.start_time(at, 1_600_000_000_500_000_000);
        let get = |n: &str, extra: &[&str]| {
            s.out
                .iter()
                .find(|m| m.name == n && m.label_values[6..] == *extra)
                .map(|m| m.value.unwrap().value)
        };
        assert_eq!(
            get("container_cpu_usage_seconds_total", &["total"]),
            Some(2)
        );
        assert_eq!(get("container_cpu_user_seconds_total", &[]), Some(1));
        assert_eq!(get("container_cpu_system_seconds_total", &[]), None);
        // No quota: no CFS counters (cAdvisor's rule), though the kernel counts periods.
        assert_eq!(get("container_cpu_cfs_periods_total", &[]), None);
        assert_eq!(get("container_memory_working_set_bytes", &[]), Some(80));
        assert_eq!(get("container_memory_cache", &[]), Some(20));
        assert_eq!(
            get("container_memory_failures_total", &["pgfault", "hierarchy"]),
            Some(9)
        );
        assert_eq!(get("container_spec_memory_limit_bytes", &[]), Some(0));
        assert_eq!(get("container_spec_cpu_period", &[]), Some(100_000));
        assert_eq!(get("container_spec_cpu_quota", &[]), None);
        assert_eq!(get("container_processes", &[]), Some(2));
        assert_eq!(get("container_threads", &[]), Some(3));
        assert_eq!(get("container_threads_max", &[]), Some(0));
        assert_eq!(get("container_tasks_state", &["sleeping"]), Some(3));
        assert_eq!(
            get("container_fs_reads_bytes_total", &["/dev/sda"]),
            Some(4096)
        );
        assert_eq!(
            get(
                "container_blkio_device_usage_total",
                &["/dev/sda", "8", "0", "Read"]
            ),
            Some(4096)
        );
        assert_eq!(get("container_last_seen", &[]), Some(1_700_000_000));
        assert_eq!(
            get("container_start_time_seconds", &[]),
            Some(1_600_000_000)
        );
        assert_eq!(
            get("container_network_receive_bytes_total", &["eth0"]),
            Some(7)
        );
        let d = descriptors();
        for m in &s.out {
            let desc = d.iter().find(|d| d.name == m.name).expect(&m.name);
            assert_eq!(desc.label_keys.len(), m.label_values.len(), "{}", m.name);
            assert_eq!(m.timestamp, 1_700_000_000_000_000_000);
            assert_eq!(m.metric_type, metric_type(&m.name) as i32);
            if m.name.ends_with("_total") {
                assert_eq!(m.metric_type, MetricType::Counter as i32, "{}", m.name);
            }
        }
        // With a quota, the CFS counters come.
        detail.spec.cpu_quota = Some(50_000);
        let mut s = Samples::new(Default::default());
        s.cgroup(&stats, Some(&detail));
        assert!(s
            .out
            .iter()
            .any(|m| m.name == "container_cpu_cfs_throttled_seconds_total"
                && m.value.unwrap().value == 3));
    }
}
