//! Stats RPCs' conversions: the engine's usage → CRI ContainerStats / PodSandboxStats.

use super::api;
use crate::engine::usage::{ContainerUsage, PodUsage};
use crate::stats::{unix_nanos, CgroupStats, Psi};
use std::collections::HashMap;

fn u(v: u64) -> Option<api::UInt64Value> {
    Some(api::UInt64Value { value: v })
}

fn psi(p: &Option<Psi>) -> Option<api::PsiStats> {
    p.as_ref().map(|p| {
        let d = |x: &crate::stats::PsiData| api::PsiData {
            total: x.total_us,
            avg10: x.avg10,
            avg60: x.avg60,
            avg300: x.avg300,
        };
        api::PsiStats {
            some: Some(d(&p.some)),
            full: p.full.as_ref().map(d),
        }
    })
}

fn cpu(c: &Option<CgroupStats>, nano_cores: Option<u64>) -> Option<api::CpuUsage> {
    let c = c.as_ref()?;
    let cpu = c.cpu.as_ref()?;
    Some(api::CpuUsage {
        timestamp: c.timestamp_nanos(),
        usage_core_nano_seconds: u(cpu.usage_ns),
        usage_nano_cores: nano_cores.and_then(u),
        psi: psi(&cpu.psi),
    })
}

fn memory(c: &Option<CgroupStats>) -> Option<api::MemoryUsage> {
    let c = c.as_ref()?;
    let m = c.memory.as_ref()?;
    Some(api::MemoryUsage {
        timestamp: c.timestamp_nanos(),
        working_set_bytes: u(m.working_set_bytes),
        available_bytes: m.available_bytes.and_then(u),
        usage_bytes: u(m.usage_bytes),
        rss_bytes: m.rss_bytes.and_then(u),
        page_faults: m.page_faults.and_then(u),
        major_page_faults: m.major_page_faults.and_then(u),
        psi: psi(&m.psi),
    })
}

fn swap(c: &Option<CgroupStats>) -> Option<api::SwapUsage> {
    let c = c.as_ref()?;
    let s = c.swap.as_ref()?;
    Some(api::SwapUsage {
        timestamp: c.timestamp_nanos(),
        swap_available_bytes: s.available_bytes.and_then(u),
        swap_usage_bytes: u(s.usage_bytes),
    })
}

fn io(c: &Option<CgroupStats>) -> Option<api::IoUsage> {
    let c = c.as_ref()?;
    let i = c.io.as_ref()?;
    Some(api::IoUsage {
        timestamp: c.timestamp_nanos(),
        psi: psi(&i.psi),
    })
}

fn hmap(b: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    b.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn container_stats(c: &ContainerUsage) -> api::ContainerStats {
    api::ContainerStats {
        attributes: Some(api::ContainerAttributes {
            id: c.rec.id.clone(),
            metadata: Some(api::ContainerMetadata {
                name: c.rec.config.name.clone(),
                attempt: c.rec.config.attempt,
            }),
            labels: hmap(&c.rec.config.labels),
            annotations: hmap(&c.rec.config.annotations),
        }),
        cpu: cpu(&c.cgroup, c.nano_cores),
        memory: memory(&c.cgroup),
        writable_layer: c.writable.as_ref().map(|w| api::FilesystemUsage {
            timestamp: unix_nanos(w.timestamp),
            fs_id: Some(api::FilesystemIdentifier {
                mountpoint: c.writable_mountpoint.display().to_string(),
            }),
            used_bytes: u(w.used_bytes),
            inodes_used: u(w.inodes_used),
        }),
        swap: swap(&c.cgroup),
        io: io(&c.cgroup),
    }
}

pub fn pod_stats(p: &PodUsage) -> api::PodSandboxStats {
    let network = p.network.as_ref().map(|n| {
        let iface = |i: &crate::stats::InterfaceStats| api::NetworkInterfaceUsage {
            name: i.name.clone(),
            rx_bytes: u(i.rx_bytes),
            rx_errors: u(i.rx_errors),
            tx_bytes: u(i.tx_bytes),
            tx_errors: u(i.tx_errors),
        };
        api::NetworkUsage {
            timestamp: unix_nanos(n.timestamp),
            default_interface: n.default().map(iface),
            interfaces: n.interfaces.iter().map(iface).collect(),
        }
    });
    let process = p.cgroup.as_ref().and_then(|c| {
        c.pids.as_ref().map(|pids| api::ProcessUsage {
            timestamp: c.timestamp_nanos(),
            process_count: u(pids.current),
        })
    });
    api::PodSandboxStats {
        attributes: Some(api::PodSandboxAttributes {
            id: p.rec.id.clone(),
            metadata: Some(api::PodSandboxMetadata {
                name: p.rec.config.name.clone(),
                uid: p.rec.config.uid.clone(),
                namespace: p.rec.config.namespace.clone(),
                attempt: p.rec.config.attempt,
            }),
            labels: hmap(&p.rec.config.labels),
            annotations: hmap(&p.rec.config.annotations),
        }),
        linux: Some(api::LinuxPodSandboxStats {
            cpu: cpu(&p.cgroup, p.nano_cores),
            memory: memory(&p.cgroup),
            network,
            process,
            containers: p.containers.iter().map(container_stats).collect(),
            io: io(&p.cgroup),
        }),
        windows: None,
    }
}
