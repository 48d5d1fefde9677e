//! CRI messages ⇄ the domain's configs and records.

use super::api;
use crate::engine::{ContainerRecord, ContainerState, PodRecord, PodState};
use crate::model::{self as dc, NamespaceMode};
use std::collections::{BTreeMap, HashMap};

fn map(h: &HashMap<String, String>) -> BTreeMap<String, String> {
    h.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn hmap(b: &BTreeMap<String, String>) -> HashMap<String, String> {
    b.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn ns_mode(v: i32) -> NamespaceMode {
    match api::NamespaceMode::try_from(v) {
        Ok(api::NamespaceMode::Container) => NamespaceMode::Container,
        Ok(api::NamespaceMode::Node) => NamespaceMode::Node,
        Ok(api::NamespaceMode::Target) => NamespaceMode::Target,
        _ => NamespaceMode::Pod,
    }
}

fn ns_mode_api(m: NamespaceMode) -> i32 {
    (match m {
        NamespaceMode::Pod => api::NamespaceMode::Pod,
        NamespaceMode::Container => api::NamespaceMode::Container,
        NamespaceMode::Node => api::NamespaceMode::Node,
        NamespaceMode::Target => api::NamespaceMode::Target,
    }) as i32
}

fn id_mappings(m: &[api::IdMapping]) -> Vec<dc::IdMapping> {
    m.iter()
        .map(|m| dc::IdMapping {
            container_id: m.container_id,
            host_id: m.host_id,
            length: m.length,
        })
        .collect()
}

fn id_mappings_api(m: &[dc::IdMapping]) -> Vec<api::IdMapping> {
    m.iter()
        .map(|m| api::IdMapping {
            container_id: m.container_id,
            host_id: m.host_id,
            length: m.length,
        })
        .collect()
}

/// Port mappings whose ports do not fit a port number are InvalidArgument (the domain holds
/// them as u16).
pub fn check_ports(c: &api::PodSandboxConfig) -> Result<(), tonic::Status> {
    for m in &c.port_mappings {
        for (what, v) in [
            ("host_port", m.host_port),
            ("container_port", m.container_port),
        ] {
            if !(0..=65535).contains(&v) {
                return Err(super::error::invalid(format!(
                    "port_mappings.{what} {v} is outside 0..65535"
                )));
            }
        }
    }
    Ok(())
}

pub fn pod_config(c: &api::PodSandboxConfig) -> dc::PodConfig {
    let md = c.metadata.clone().unwrap_or_default();
    let linux = c.linux.clone().unwrap_or_default();
    let sec = linux.security_context.clone().unwrap_or_default();
    let ns = sec.namespace_options.clone().unwrap_or_default();
    dc::PodConfig {
        name: md.name,
        uid: md.uid,
        namespace: md.namespace,
        attempt: md.attempt,
        hostname: c.hostname.clone(),
        log_directory: c.log_directory.clone(),
        dns: c.dns_config.as_ref().map(|d| dc::Dns {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        labels: map(&c.labels),
        annotations: map(&c.annotations),
        cgroup_parent: linux.cgroup_parent.clone(),
        sysctls: map(&linux.sysctls),
        network: ns_mode(ns.network),
        pid: ns_mode(ns.pid),
        ipc: ns_mode(ns.ipc),
        privileged: sec.privileged,
        userns: ns.userns_options.as_ref().map(|u| dc::UserNamespace {
            mode: ns_mode(u.mode),
            uids: id_mappings(&u.uids),
            gids: id_mappings(&u.gids),
        }),
        port_mappings: c
            .port_mappings
            .iter()
            .filter(|m| m.host_port > 0)
            .map(|m| dc::PortMapping {
                protocol: match api::Protocol::try_from(m.protocol) {
                    Ok(api::Protocol::Udp) => "udp",
                    Ok(api::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                }
                .into(),
                // Out of range is 0, which the engine refuses (see `port` below).
                container_port: u16::try_from(m.container_port).unwrap_or(0),
                host_port: u16::try_from(m.host_port).unwrap_or(0),
                host_ip: m.host_ip.clone(),
            })
            .collect(),
    }
}

pub fn resources(r: &api::LinuxContainerResources) -> dc::Resources {
    dc::Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| (h.page_size.clone(), h.limit))
            .collect(),
        unified: map(&r.unified),
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
    }
}

fn resources_api(r: &dc::Resources) -> api::LinuxContainerResources {
    api::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(s, l)| api::HugepageLimit {
                page_size: s.clone(),
                limit: *l,
            })
            .collect(),
        unified: hmap(&r.unified),
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
    }
}

/// A seccomp or AppArmor profile request; a profile type the CRI does not define is
/// InvalidArgument naming the field (never read as Unconfined).
fn profile(p: &Option<api::SecurityProfile>, field: &str) -> Result<dc::Profile, tonic::Status> {
    use api::security_profile::ProfileType;
    Ok(match p {
        None => dc::Profile::Unset,
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => dc::Profile::RuntimeDefault,
            Ok(ProfileType::Localhost) => dc::Profile::Localhost(p.localhost_ref.clone()),
            Ok(ProfileType::Unconfined) => dc::Profile::Unconfined,
            Err(_) => {
                return Err(super::error::invalid(format!(
                    "{field}.profile_type {} is not a known profile type (RuntimeDefault, Unconfined, Localhost)",
                    p.profile_type
                )))
            }
        },
    })
}

fn propagation(v: i32) -> dc::Propagation {
    match api::MountPropagation::try_from(v) {
        Ok(api::MountPropagation::PropagationHostToContainer) => dc::Propagation::HostToContainer,
        Ok(api::MountPropagation::PropagationBidirectional) => dc::Propagation::Bidirectional,
        _ => dc::Propagation::Private,
    }
}

fn propagation_api(p: dc::Propagation) -> i32 {
    (match p {
        dc::Propagation::Private => api::MountPropagation::PropagationPrivate,
        dc::Propagation::HostToContainer => api::MountPropagation::PropagationHostToContainer,
        dc::Propagation::Bidirectional => api::MountPropagation::PropagationBidirectional,
    }) as i32
}

/// A CRI Signal enum value → its name (`SIGTERM`); RUNTIME_DEFAULT → empty.
fn signal_name(v: i32) -> String {
    match api::Signal::try_from(v) {
        Ok(api::Signal::RuntimeDefault) | Err(_) => String::new(),
        Ok(s) => s.as_str_name().to_string(),
    }
}

// `seccomp_profile_path` is deprecated in the CRI, but older clients still send it.
#[allow(deprecated)]
pub fn container_config(c: &api::ContainerConfig) -> Result<dc::ContainerConfig, tonic::Status> {
    let md = c.metadata.clone().unwrap_or_default();
    let linux = c.linux.clone().unwrap_or_default();
    let sec = linux.security_context.clone().unwrap_or_default();
    let caps = sec.capabilities.clone().unwrap_or_default();
    let ns = sec.namespace_options.clone().unwrap_or_default();
    Ok(dc::ContainerConfig {
        name: md.name,
        attempt: md.attempt,
        image: c
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        envs: c
            .envs
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect(),
        mounts: c
            .mounts
            .iter()
            .map(|m| dc::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: propagation(m.propagation),
                recursive_read_only: m.recursive_read_only,
                image: m
                    .image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default(),
                image_sub_path: m.image_sub_path.clone(),
                image_id: String::new(),
                uid_mappings: id_mappings(&m.uid_mappings),
                gid_mappings: id_mappings(&m.gid_mappings),
            })
            .collect(),
        devices: c
            .devices
            .iter()
            .map(|d| dc::Device {
                container_path: d.container_path.clone(),
                host_path: d.host_path.clone(),
                permissions: d.permissions.clone(),
            })
            .collect(),
        cdi_devices: c.cdi_devices.iter().map(|d| d.name.clone()).collect(),
        labels: map(&c.labels),
        annotations: map(&c.annotations),
        log_path: c.log_path.clone(),
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        resources: linux.resources.as_ref().map(resources),
        security: dc::Security {
            privileged: sec.privileged,
            run_as_user: sec.run_as_user.map(|v| v.value),
            run_as_group: sec.run_as_group.map(|v| v.value),
            run_as_username: sec.run_as_username.clone(),
            supplemental_groups: sec.supplemental_groups.clone(),
            readonly_rootfs: sec.readonly_rootfs,
            no_new_privs: sec.no_new_privs,
            capabilities_add: caps.add_capabilities.clone(),
            capabilities_drop: caps.drop_capabilities.clone(),
            capabilities_ambient: caps.add_ambient_capabilities.clone(),
            supplemental_groups_strict: sec.supplemental_groups_policy
                == api::SupplementalGroupsPolicy::Strict as i32,
            masked_paths: sec.masked_paths.clone(),
            readonly_paths: sec.readonly_paths.clone(),
            seccomp: match (&sec.seccomp, sec.seccomp_profile_path.as_str()) {
                // The deprecated string form, still sent by older clients.
                (None, "runtime/default" | "docker/default") => dc::Profile::RuntimeDefault,
                (None, "unconfined") => dc::Profile::Unconfined,
                (None, p) if p.starts_with("localhost/") => {
                    dc::Profile::Localhost(p["localhost/".len()..].to_string())
                }
                (s, _) => profile(s, "linux.security_context.seccomp")?,
            },
            apparmor: match (&sec.apparmor, sec.apparmor_profile.as_str()) {
                // The deprecated string form.
                (None, "runtime/default") => dc::Profile::RuntimeDefault,
                (None, "unconfined") => dc::Profile::Unconfined,
                (None, p) if p.starts_with("localhost/") => {
                    dc::Profile::Localhost(p["localhost/".len()..].to_string())
                }
                (a, _) => profile(a, "linux.security_context.apparmor")?,
            },
            selinux: sec.selinux_options.as_ref().map(|o| dc::SelinuxOptions {
                user: o.user.clone(),
                role: o.role.clone(),
                r#type: o.r#type.clone(),
                level: o.level.clone(),
            }),
            pid: ns_mode(ns.pid),
            target_id: ns.target_id.clone(),
        },
        stop_signal: signal_name(c.stop_signal),
    })
}

fn pod_state(s: PodState) -> i32 {
    (match s {
        PodState::Ready => api::PodSandboxState::SandboxReady,
        PodState::NotReady => api::PodSandboxState::SandboxNotready,
    }) as i32
}

fn pod_metadata(p: &PodRecord) -> api::PodSandboxMetadata {
    api::PodSandboxMetadata {
        name: p.config.name.clone(),
        uid: p.config.uid.clone(),
        namespace: p.config.namespace.clone(),
        attempt: p.config.attempt,
    }
}

pub fn pod_sandbox(p: &PodRecord) -> api::PodSandbox {
    api::PodSandbox {
        id: p.id.clone(),
        metadata: Some(pod_metadata(p)),
        state: pod_state(p.state),
        created_at: p.created_at_ns,
        labels: hmap(&p.config.labels),
        annotations: hmap(&p.config.annotations),
        runtime_handler: p.runtime_handler.clone(),
    }
}

pub fn pod_status(p: &PodRecord) -> api::PodSandboxStatus {
    api::PodSandboxStatus {
        id: p.id.clone(),
        metadata: Some(pod_metadata(p)),
        state: pod_state(p.state),
        created_at: p.created_at_ns,
        network: Some(api::PodSandboxNetworkStatus {
            ip: p.ips.first().cloned().unwrap_or_default(),
            additional_ips: p
                .ips
                .iter()
                .skip(1)
                .map(|ip| api::PodIp { ip: ip.clone() })
                .collect(),
        }),
        linux: Some(api::LinuxPodSandboxStatus {
            namespaces: Some(api::Namespace {
                options: Some(api::NamespaceOption {
                    network: ns_mode_api(p.config.network),
                    pid: ns_mode_api(p.config.pid),
                    ipc: ns_mode_api(p.config.ipc),
                    userns_options: p.config.userns.as_ref().map(|u| api::UserNamespace {
                        mode: ns_mode_api(u.mode),
                        uids: id_mappings_api(&u.uids),
                        gids: id_mappings_api(&u.gids),
                    }),
                    ..Default::default()
                }),
            }),
        }),
        labels: hmap(&p.config.labels),
        annotations: hmap(&p.config.annotations),
        runtime_handler: p.runtime_handler.clone(),
    }
}

fn ctr_state(s: ContainerState) -> i32 {
    (match s {
        ContainerState::Created => api::ContainerState::ContainerCreated,
        ContainerState::Running => api::ContainerState::ContainerRunning,
        ContainerState::Exited => api::ContainerState::ContainerExited,
        ContainerState::Creating => api::ContainerState::ContainerUnknown,
    }) as i32
}

fn ctr_metadata(c: &ContainerRecord) -> api::ContainerMetadata {
    api::ContainerMetadata {
        name: c.config.name.clone(),
        attempt: c.config.attempt,
    }
}

fn image_spec(c: &ContainerRecord) -> api::ImageSpec {
    api::ImageSpec {
        image: c.image.clone(),
        ..Default::default()
    }
}

pub fn container(c: &ContainerRecord) -> api::Container {
    api::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.pod_id.clone(),
        metadata: Some(ctr_metadata(c)),
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        state: ctr_state(c.state),
        created_at: c.created_at_ns,
        labels: hmap(&c.config.labels),
        annotations: hmap(&c.config.annotations),
        image_id: c.image_id.clone(),
    }
}

fn signal_api(n: i32) -> i32 {
    let name = nix::sys::signal::Signal::try_from(n)
        .map(|s| s.as_str())
        .unwrap_or("");
    api::Signal::from_str_name(name)
        .map(|s| s as i32)
        .unwrap_or(0)
}

pub fn container_status(c: &ContainerRecord) -> api::ContainerStatus {
    api::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(ctr_metadata(c)),
        state: ctr_state(c.state),
        created_at: c.created_at_ns,
        started_at: c.started_at_ns,
        finished_at: c.finished_at_ns,
        exit_code: c.exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: hmap(&c.config.labels),
        annotations: hmap(&c.config.annotations),
        mounts: c
            .mounts
            .iter()
            .map(|m| api::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: propagation_api(m.propagation),
                recursive_read_only: m.recursive_read_only,
                // The volume's image as resolved at create: its ID is also what PullImage
                // answered as `image_ref` (KEP-4639).
                image: (!m.image.is_empty()).then(|| api::ImageSpec {
                    image: m.image_id.clone(),
                    user_specified_image: m.image.clone(),
                    image_ref: m.image_id.clone(),
                    ..Default::default()
                }),
                image_sub_path: m.image_sub_path.clone(),
                uid_mappings: id_mappings_api(&m.uid_mappings),
                gid_mappings: id_mappings_api(&m.gid_mappings),
                ..Default::default()
            })
            .collect(),
        log_path: c.log_path.display().to_string(),
        resources: c
            .config
            .resources
            .as_ref()
            .map(|r| api::ContainerResources {
                linux: Some(resources_api(r)),
                ..Default::default()
            }),
        image_id: c.image_id.clone(),
        user: Some(api::ContainerUser {
            linux: Some(api::LinuxContainerUser {
                uid: c.user.uid as i64,
                gid: c.user.gid as i64,
                supplemental_groups: c.user.additional_gids.iter().map(|g| *g as i64).collect(),
            }),
        }),
        stop_signal: signal_api(c.stop_signal),
    }
}

/// Whether `labels` has every pair of `selector`.
pub fn labels_match(labels: &BTreeMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
