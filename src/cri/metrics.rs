//! ListMetricDescriptors / ListPodSandboxMetrics: the engine's usage (`engine::usage`) as
//! cAdvisor-named metrics, the set kubelet's CRI metrics collector re-exports on
//! `/metrics/cadvisor` when it takes pod and container stats from the runtime.
//!
//! Label keys are cAdvisor's: `container` (the container's name; empty for the pod's own
//! cgroup), `id` (container or pod sandbox ID), `image` (as the request named it; empty for the
//! pod), `name` (the reserved `k8s_…` name), `namespace`, `pod`, and `interface` for network
//! series. The CRI carries values as uint64, so second-valued counters are whole seconds (as
//! CRI-O reports them). Timestamps are when the values were read.
//!
//! Every metric a pod or container sample names is one of [`descriptors`]; a value the kernel
//! does not offer (user/system split, RSS, throttling, the pids controller) is left out rather
//! than reported as 0. `container_memory_failcnt` is not offered: ferrio's stats do not read
//! the cgroup v1 `memory.failcnt` (v2 has no such counter).

use super::api::{self, MetricType};
use crate::engine::container::container_name;
use crate::engine::pod::pod_name;
use crate::engine::usage::{ContainerUsage, PodUsage};
use crate::stats::{unix_nanos, CgroupStats, NetworkStats};
use std::time::SystemTime;

const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// (name, help, network series?, type)
const DESCRIPTORS: &[(&str, &str, bool, MetricType)] = &[
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        false,
        MetricType::Counter,
    ),
    (
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        false,
        MetricType::Counter,
    ),
    (
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        false,
        MetricType::Counter,
    ),
    (
        "container_cpu_cfs_periods_total",
        "Number of elapsed enforcement period intervals.",
        false,
        MetricType::Counter,
    ),
    (
        "container_cpu_cfs_throttled_periods_total",
        "Number of throttled period intervals.",
        false,
        MetricType::Counter,
    ),
    (
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        false,
        MetricType::Counter,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        false,
        MetricType::Gauge,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        false,
        MetricType::Gauge,
    ),
    (
        "container_memory_rss",
        "Size of RSS in bytes.",
        false,
        MetricType::Gauge,
    ),
    (
        "container_memory_swap",
        "Container swap usage in bytes.",
        false,
        MetricType::Gauge,
    ),
    (
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures (page faults).",
        false,
        MetricType::Counter,
    ),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container (0: unlimited).",
        false,
        MetricType::Gauge,
    ),
    (
        "container_processes",
        "Number of processes running inside the container.",
        false,
        MetricType::Gauge,
    ),
    (
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        false,
        MetricType::Gauge,
    ),
    (
        "container_fs_inodes_total",
        "Number of inodes used by the container's writable layer.",
        false,
        MetricType::Gauge,
    ),
    (
        "container_last_seen",
        "Last time a container was seen by the exporter (Unix seconds).",
        false,
        MetricType::Gauge,
    ),
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
        true,
        MetricType::Counter,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
        true,
        MetricType::Counter,
    ),
    (
        "container_network_receive_packets_total",
        "Cumulative count of packets received.",
        true,
        MetricType::Counter,
    ),
    (
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted.",
        true,
        MetricType::Counter,
    ),
    (
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving.",
        true,
        MetricType::Counter,
    ),
    (
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting.",
        true,
        MetricType::Counter,
    ),
    (
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
        true,
        MetricType::Counter,
    ),
    (
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
        true,
        MetricType::Counter,
    ),
];

fn label_keys(network: bool) -> Vec<String> {
    let mut k: Vec<String> = BASE_LABELS.iter().map(|s| s.to_string()).collect();
    if network {
        k.push("interface".into());
    }
    k
}

/// The fixed descriptor set.
pub fn descriptors() -> Vec<api::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|(name, help, network, _)| api::MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: label_keys(*network),
        })
        .collect()
}

fn metric_type(name: &str) -> MetricType {
    DESCRIPTORS
        .iter()
        .find(|d| d.0 == name)
        .map_or(MetricType::Gauge, |d| d.3)
}

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

    fn push(&mut self, name: &str, at: SystemTime, extra: Option<&str>, value: u64) {
        debug_assert!(DESCRIPTORS.iter().any(|d| d.0 == name), "{name}");
        let mut label_values = self.labels.clone();
        label_values.extend(extra.map(str::to_string));
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
            self.push(name, at, None, v);
        }
    }

    fn cgroup(&mut self, c: &CgroupStats) {
        let at = c.timestamp;
        const NS: u64 = 1_000_000_000;
        if let Some(cpu) = &c.cpu {
            self.push(
                "container_cpu_usage_seconds_total",
                at,
                None,
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
            if let Some(t) = &cpu.throttling {
                self.push("container_cpu_cfs_periods_total", at, None, t.periods);
                self.push(
                    "container_cpu_cfs_throttled_periods_total",
                    at,
                    None,
                    t.throttled_periods,
                );
                self.push(
                    "container_cpu_cfs_throttled_seconds_total",
                    at,
                    None,
                    t.throttled_ns / NS,
                );
            }
        }
        if let Some(m) = &c.memory {
            self.push("container_memory_usage_bytes", at, None, m.usage_bytes);
            self.push(
                "container_memory_working_set_bytes",
                at,
                None,
                m.working_set_bytes,
            );
            self.opt("container_memory_rss", at, m.rss_bytes);
            self.opt("container_memory_failures_total", at, m.page_faults);
            self.push(
                "container_spec_memory_limit_bytes",
                at,
                None,
                m.limit_bytes.unwrap_or(0),
            );
        }
        if let Some(s) = &c.swap {
            self.push("container_memory_swap", at, None, s.usage_bytes);
        }
        if let Some(p) = &c.pids {
            self.push("container_processes", at, None, p.current);
        }
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.push("container_last_seen", at, None, secs);
    }

    fn network(&mut self, n: &NetworkStats) {
        let at = n.timestamp;
        for i in &n.interfaces {
            let name = Some(i.name.as_str());
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
                self.push(metric, at, name, v);
            }
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
        s.cgroup(cg);
    }
    if let Some(w) = &c.writable {
        s.push("container_fs_usage_bytes", w.timestamp, None, w.used_bytes);
        s.push(
            "container_fs_inodes_total",
            w.timestamp,
            None,
            w.inodes_used,
        );
    }
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
        s.cgroup(cg);
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
    use crate::stats::{CpuStats, InterfaceStats, MemoryStats, PidsStats};

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
            "container_network_receive_bytes_total",
            "container_last_seen",
        ] {
            assert!(names.contains(&want), "{want}");
        }
        for d in &d {
            assert!(d.name.starts_with("container_"));
            assert_eq!(&d.label_keys[..6], &BASE_LABELS);
            assert_eq!(
                d.label_keys.len(),
                if d.name.starts_with("container_network_") {
                    7
                } else {
                    6
                }
            );
        }
    }

    #[test]
    fn samples_match_their_descriptor() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut s = Samples::new(Default::default());
        s.cgroup(&CgroupStats {
            timestamp: at,
            cpu: Some(CpuStats {
                usage_ns: 2_500_000_000,
                user_ns: Some(1_999_999_999),
                system_ns: None,
                throttling: None,
                psi: None,
            }),
            memory: Some(MemoryStats {
                usage_bytes: 100,
                working_set_bytes: 80,
                rss_bytes: Some(50),
                page_faults: None,
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
        });
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
        let get = |n: &str| {
            s.out
                .iter()
                .find(|m| m.name == n)
                .map(|m| m.value.unwrap().value)
        };
        assert_eq!(get("container_cpu_usage_seconds_total"), Some(2));
        assert_eq!(get("container_cpu_user_seconds_total"), Some(1));
        assert_eq!(get("container_cpu_system_seconds_total"), None);
        assert_eq!(get("container_memory_working_set_bytes"), Some(80));
        assert_eq!(get("container_spec_memory_limit_bytes"), Some(0));
        assert_eq!(get("container_processes"), Some(3));
        assert_eq!(get("container_last_seen"), Some(1_700_000_000));
        assert_eq!(get("container_network_receive_bytes_total"), Some(7));
        let d = descriptors();
        for m in &s.out {
            let desc = d.iter().find(|d| d.name == m.name).expect(&m.name);
            assert_eq!(desc.label_keys.len(), m.label_values.len(), "{}", m.name);
            assert_eq!(m.timestamp, 1_700_000_000_000_000_000);
            let counter = m.name.ends_with("_total");
            assert_eq!(
                m.metric_type,
                if counter {
                    MetricType::Counter
                } else {
                    MetricType::Gauge
                } as i32,
                "{}",
                m.name
            );
        }
        let rx = s
            .out
            .iter()
            .find(|m| m.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(rx.label_values.last().unwrap(), "eth0");
    }
}
