//! Golden tests: the generated spec for fixed inputs, compared with `testdata/<name>.json`.
//! `FERRIO_UPDATE_GOLDEN=1 cargo test --lib spec::` rewrites the files; review the diff.

use super::*;
use crate::model::*;
use std::collections::BTreeMap;

fn pod() -> PodConfig {
    PodConfig {
        name: "web".into(),
        uid: "uid-1".into(),
        namespace: "default".into(),
        hostname: "web-0".into(),
        log_directory: "/var/log/pods/default_web_uid-1".into(),
        ..Default::default()
    }
}

fn paths() -> PodPaths {
    PodPaths {
        net_ns: Some("/run/ferrio/pods/p1/ns/net".into()),
        ipc_ns: Some("/run/ferrio/pods/p1/ns/ipc".into()),
        uts_ns: Some("/run/ferrio/pods/p1/ns/uts".into()),
        pid_ns: None,
        shm: "/run/ferrio/pods/p1/shm".into(),
        hostname_file: Some("/run/ferrio/pods/p1/hostname".into()),
        resolv_conf: "/run/ferrio/pods/p1/resolv.conf".into(),
        user_ns: None,
        idmapped_layers: None,
    }
}

fn image() -> ImageConfig {
    ImageConfig {
        env: vec!["PATH=/bin".into(), "A=image".into()],
        entrypoint: vec![],
        cmd: vec!["sh".into()],
        working_dir: "".into(),
        user: "".into(),
        stop_signal: "".into(),
    }
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www:/var/www:/bin/sh\n";
const GROUP: &str = "root:x:0:\nwww-data:x:33:\nweb:x:500:www-data\n";

fn input<'a>(
    pod: &'a PodConfig,
    c: &'a ContainerConfig,
    img: &'a ImageConfig,
    pp: &'a PodPaths,
) -> Input<'a> {
    Input {
        sandbox_id: "p1",
        pod,
        container: c,
        image: img,
        rootfs: "/run/ferrio/containers/c1/bundle/rootfs".into(),
        pod_paths: pp,
        mount_sources: c
            .mounts
            .iter()
            .map(|m| PathBuf::from(&m.host_path))
            .collect(),
        devices: vec![],
        cgroups_path: "/ferrio/pod-p1/ferrio-c1".into(),
        passwd: Some(PASSWD.into()),
        group: Some(GROUP.into()),
        min_oom_score_adj: 0,
        seccomp: None,
        host_capabilities: HOST_CAPS.iter().map(|s| s.to_string()).collect(),
        lsm: Lsm::default(),
        cdi: Default::default(),
    }
}

/// A bounding set without CAP_SYS_RESOURCE, like this host's root.
const HOST_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_ADMIN",
];

fn golden(name: &str, spec: &oci_spec::runtime::Spec) {
    // Capability sets are hash sets in oci-spec: sort them so the file is stable.
    let mut v = serde_json::to_value(spec).unwrap();
    if let Some(caps) = v["process"]["capabilities"].as_object_mut() {
        for set in caps.values_mut() {
            if let Some(a) = set.as_array_mut() {
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
        }
    }
    let got = serde_json::to_string_pretty(&v).unwrap() + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/spec/testdata")
        .join(format!("{name}.json"));
    if std::env::var_os("FERRIO_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with FERRIO_UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(got, want, "golden file {} differs", path.display());
}

#[test]
fn golden_default_container() {
    let c = ContainerConfig {
        name: "app".into(),
        image: "busybox".into(),
        command: vec!["sh".into()],
        args: vec!["-c".into(), "echo hi".into()],
        envs: vec![("A".into(), "request".into()), ("B".into(), "b".into())],
        ..Default::default()
    };
    let (p, i, pp) = (pod(), image(), paths());
    let g = generate(&input(&p, &c, &i, &pp)).unwrap();
    assert_eq!(g.args, vec!["sh", "-c", "echo hi"]);
    golden("default", &g.spec);
}

/// The `io.kubernetes.cri.*` annotations say who the container is; a request's own annotation
/// of the same name does not win. A HostToContainer mount makes the rootfs a slave.
#[test]
fn cri_annotations_cannot_be_forged_and_propagation_reaches_the_rootfs() {
    let mut c = ContainerConfig {
        name: "app".into(),
        image: "busybox".into(),
        ..Default::default()
    };
    c.annotations
        .insert("io.kubernetes.cri.sandbox-id".into(), "forged".into());
    c.annotations.insert("mine".into(), "kept".into());
    c.mounts.push(crate::model::Mount {
        container_path: "/h".into(),
        host_path: "/srv/h".into(),
        propagation: crate::model::Propagation::HostToContainer,
        ..Default::default()
    });
    let (p, i, pp) = (pod(), image(), paths());
    let g = generate(&input(&p, &c, &i, &pp)).unwrap();
    let a = g.spec.annotations().clone().unwrap();
    assert_eq!(a["io.kubernetes.cri.sandbox-id"], "p1");
    assert_eq!(a["io.kubernetes.cri.container-type"], "container");
    assert_eq!(a["mine"], "kept");
    let linux = g.spec.linux().as_ref().unwrap();
    assert_eq!(linux.rootfs_propagation().as_deref(), Some("slave"));
}

/// An empty HOME (an image's `ENV HOME=`) is replaced by the user's home: libcontainer would
/// otherwise resolve it through the container's NSS modules right before exec.
#[test]
fn an_empty_home_is_the_users_home() {
    let c = ContainerConfig {
        name: "app".into(),
        image: "busybox".into(),
        ..Default::default()
    };
    let mut i = image();
    i.env.push("HOME=".into());
    let (p, pp) = (pod(), paths());
    let g = generate(&input(&p, &c, &i, &pp)).unwrap();
    let env = g.spec.process().as_ref().unwrap().env().clone().unwrap();
    let homes: Vec<&String> = env.iter().filter(|e| e.starts_with("HOME=")).collect();
    assert_eq!(homes, vec!["HOME=/root"]);
}

/// A pod with its own user namespace: the pinned namespace joined first, its mappings in the
/// spec (runc checks them), and an idmapped volume whose source the engine already mounted.
#[test]
fn golden_userns_container() {
    let map = IdMapping {
        container_id: 0,
        host_id: 1 << 20,
        length: 65536,
    };
    let p = PodConfig {
        userns: Some(UserNamespace {
            mode: NamespaceMode::Pod,
            uids: vec![map],
            gids: vec![map],
        }),
        ..pod()
    };
    let pp = PodPaths {
        user_ns: Some("/run/ferrio/pods/p1/ns/user".into()),
        idmapped_layers: Some("/run/ferrio/pods/p1/layers".into()),
        ..paths()
    };
    let c = ContainerConfig {
        name: "app".into(),
        image: "busybox".into(),
        mounts: vec![Mount {
            container_path: "/data".into(),
            host_path: "/run/ferrio/ctr/c1/idmap/0".into(),
            uid_mappings: vec![map],
            gid_mappings: vec![map],
            ..Default::default()
        }],
        ..Default::default()
    };
    let i = image();
    let g = generate(&input(&p, &c, &i, &pp)).unwrap();
    let ns = g
        .spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .clone()
        .unwrap();
    assert_eq!(ns[0].typ(), oci_spec::runtime::LinuxNamespaceType::User);
    golden("userns", &g.spec);
    // NODE mode, or no user namespace pinned: no user namespace in the spec.
    let node = PodConfig {
        userns: Some(UserNamespace {
            mode: NamespaceMode::Node,
            ..Default::default()
        }),
        ..pod()
    };
    let g = generate(&input(&node, &c, &i, &paths())).unwrap();
    let linux = g.spec.linux().as_ref().unwrap();
    assert!(linux.uid_mappings().is_none());
    assert!(!linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User));
}

#[test]
fn golden_full_container() {
    let mut c = ContainerConfig {
        name: "full".into(),
        image: "busybox".into(),
        command: vec!["/bin/sleep".into()],
        args: vec!["10".into()],
        working_dir: "/work".into(),
        mounts: vec![
            Mount {
                container_path: "/data".into(),
                host_path: "/srv/data".into(),
                readonly: true,
                propagation: Propagation::HostToContainer,
                ..Default::default()
            },
            Mount {
                container_path: "/etc/resolv.conf".into(),
                host_path: "/srv/resolv".into(),
                readonly: false,
                propagation: Propagation::Bidirectional,
                ..Default::default()
            },
        ],
        resources: Some(Resources {
            cpu_period: 100000,
            cpu_quota: 50000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: -998,
            cpuset_cpus: "0".into(),
            hugepage_limits: vec![("2MB".into(), 0)],
            ..Default::default()
        }),
        annotations: BTreeMap::from([("a".into(), "b".into())]),
        ..Default::default()
    };
    c.security = Security {
        run_as_username: "www-data".into(),
        supplemental_groups: vec![1234],
        readonly_rootfs: true,
        no_new_privs: true,
        capabilities_add: vec!["sys_admin".into()],
        capabilities_drop: vec!["CAP_KILL".into(), "chown".into()],
        pid: NamespaceMode::Container,
        ..Default::default()
    };
    let (mut p, i, mut pp) = (pod(), image(), paths());
    p.network = NamespaceMode::Node;
    pp.net_ns = None;
    pp.uts_ns = None;
    pp.hostname_file = None;
    let mut inp = input(&p, &c, &i, &pp);
    inp.min_oom_score_adj = -500;
    inp.devices = vec![ResolvedDevice {
        container_path: "/dev/fuse".into(),
        kind: "c".into(),
        major: 10,
        minor: 229,
        file_mode: 0o666,
        permissions: "rwm".into(),
    }];
    let g = generate(&inp).unwrap();
    assert_eq!(
        (g.user.uid, g.user.gid, g.user.additional_gids.clone()),
        (33, 33, vec![33, 1234, 500]),
        "the primary GID, the request's groups, the image's memberships"
    );
    let proc_ = g.spec.process().as_ref().unwrap();
    assert_eq!(
        proc_.oom_score_adj(),
        Some(-500),
        "clamped to the host's minimum"
    );
    golden("full", &g.spec);
}

#[test]
fn command_rules() {
    let img = ImageConfig {
        entrypoint: vec!["/ep".into()],
        cmd: vec!["c1".into()],
        ..Default::default()
    };
    let mut c = ContainerConfig::default();
    assert_eq!(command_line(&c, &img), vec!["/ep", "c1"]);
    c.args = vec!["a".into()];
    assert_eq!(command_line(&c, &img), vec!["/ep", "a"]);
    c.command = vec!["/x".into()];
    c.args = vec![];
    assert_eq!(
        command_line(&c, &img),
        vec!["/x"],
        "command drops the image's Cmd"
    );
    let empty = ImageConfig::default();
    let c = ContainerConfig::default();
    let (p, pp) = (pod(), paths());
    let e = generate(&input(&p, &c, &empty, &pp)).err().unwrap();
    assert!(e.to_string().contains("no command"), "{e}");
}

#[test]
fn capabilities_add_drop_all() {
    assert_eq!(capabilities(&[], &["ALL".into()]), Vec::<String>::new());
    assert_eq!(
        capabilities(&["NET_ADMIN".into()], &["ALL".into()]),
        vec!["CAP_NET_ADMIN"]
    );
    let c = capabilities(&[], &[]);
    assert_eq!(c.len(), 9);
}

#[test]
fn privileged_has_no_masked_paths() {
    let mut c = ContainerConfig {
        args: vec!["x".into()],
        ..Default::default()
    };
    c.security.privileged = true;
    let (p, i, pp) = (pod(), image(), paths());
    let g = generate(&input(&p, &c, &i, &pp)).unwrap();
    let l = g.spec.linux().as_ref().unwrap();
    assert!(l.masked_paths().as_ref().is_none_or(|m| m.is_empty()));
}

#[test]
fn relative_paths_are_refused() {
    let c = ContainerConfig {
        args: vec!["x".into()],
        working_dir: "rel".into(),
        ..Default::default()
    };
    let (p, i, pp) = (pod(), image(), paths());
    assert!(generate(&input(&p, &c, &i, &pp)).is_err());
    let c = ContainerConfig {
        args: vec!["x".into()],
        mounts: vec![Mount {
            container_path: "data".into(),
            host_path: "/x".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(generate(&input(&p, &c, &i, &pp)).is_err());
}

fn caps_of(g: &Generated, set: &str) -> Vec<String> {
    let v = serde_json::to_value(&g.spec).unwrap();
    let mut c: Vec<String> = v["process"]["capabilities"][set]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    c.sort();
    c
}

#[test]
fn add_all_means_the_hosts_bounding_set() {
    let mut c = ContainerConfig {
        args: vec!["x".into()],
        ..Default::default()
    };
    c.security.capabilities_add = vec!["ALL".into()];
    c.security.capabilities_drop = vec!["NET_ADMIN".into()];
    let (p, i, pp) = (pod(), image(), paths());
    let g = generate(&input(&p, &c, &i, &pp)).unwrap();
    let mut want: Vec<String> = HOST_CAPS
        .iter()
        .map(|s| s.to_string())
        .filter(|c| c != "CAP_NET_ADMIN")
        .collect();
    want.sort();
    assert_eq!(caps_of(&g, "bounding"), want);
}

#[test]
fn ambient_capabilities_are_inheritable_and_must_be_granted() {
    let mut c = ContainerConfig {
        args: vec!["x".into()],
        ..Default::default()
    };
    c.security.capabilities_add = vec!["NET_ADMIN".into()];
    c.security.capabilities_ambient = vec!["CAP_NET_ADMIN".into()];
    let (p, i, pp) = (pod(), image(), paths());
    let g = generate(&input(&p, &c, &i, &pp)).unwrap();
    assert_eq!(caps_of(&g, "ambient"), vec!["CAP_NET_ADMIN"]);
    assert_eq!(caps_of(&g, "inheritable"), vec!["CAP_NET_ADMIN"]);
    c.security.capabilities_add.clear();
    let e = generate(&input(&p, &c, &i, &pp)).err().unwrap();
    assert!(e.to_string().contains("ambient"), "{e}");
}

#[test]
fn golden_privileged_container() {
    let mut c = ContainerConfig {
        name: "priv".into(),
        command: vec!["sh".into()],
        ..Default::default()
    };
    c.security.privileged = true;
    c.mounts = vec![Mount {
        container_path: "/rro".into(),
        host_path: "/srv/rro".into(),
        readonly: true,
        recursive_read_only: true,
        ..Default::default()
    }];
    let (p, i, pp) = (pod(), image(), paths());
    let mut inp = input(&p, &c, &i, &pp);
    inp.devices = vec![ResolvedDevice {
        container_path: "/dev/kmsg".into(),
        kind: "c".into(),
        major: 1,
        minor: 11,
        file_mode: 0o644,
        permissions: "rwm".into(),
    }];
    let g = generate(&inp).unwrap();
    let mut want: Vec<String> = HOST_CAPS.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(caps_of(&g, "effective"), want, "all the host allows");
    let v = serde_json::to_value(&g.spec).unwrap();
    assert_eq!(
        v["linux"]["resources"]["devices"][0]["allow"], true,
        "every device allowed"
    );
    let sys = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/sys")
        .unwrap();
    assert!(sys["options"].as_array().unwrap().iter().any(|o| o == "rw"));
    let rro = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/rro")
        .unwrap();
    assert!(rro["options"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "rro"));
    golden("privileged", &g.spec);
}

#[test]
fn golden_apparmor_and_selinux_on_a_host_that_has_them() {
    let mut c = ContainerConfig {
        name: "lsm".into(),
        command: vec!["sh".into()],
        ..Default::default()
    };
    c.security.apparmor = Profile::Localhost("my-profile".into());
    c.security.selinux = Some(SelinuxOptions {
        level: "s0:c1,c2".into(),
        ..Default::default()
    });
    let (p, i, pp) = (pod(), image(), paths());
    let mut inp = input(&p, &c, &i, &pp);
    inp.lsm = Lsm {
        apparmor: true,
        selinux: true,
    };
    let g = generate(&inp).unwrap();
    let v = serde_json::to_value(&g.spec).unwrap();
    assert_eq!(v["process"]["apparmorProfile"], "my-profile");
    assert_eq!(
        v["process"]["selinuxLabel"],
        "system_u:system_r:container_t:s0:c1,c2"
    );
    assert_eq!(
        v["linux"]["mountLabel"],
        "system_u:object_r:container_file_t:s0:c1,c2"
    );
    golden("lsm", &g.spec);
    // This host has neither: the fields are left out.
    let g = generate(&input(&p, &c, &i, &pp)).unwrap();
    let v = serde_json::to_value(&g.spec).unwrap();
    assert!(
        v["process"].get("apparmorProfile").is_none() && v["linux"].get("mountLabel").is_none()
    );
}

#[test]
fn apparmor_profiles_by_request() {
    let mut s = Security::default();
    assert_eq!(apparmor_profile(&s), APPARMOR_DEFAULT_PROFILE);
    s.apparmor = Profile::Unconfined;
    assert_eq!(apparmor_profile(&s), "unconfined");
    s.apparmor = Profile::RuntimeDefault;
    s.privileged = true;
    assert_eq!(
        apparmor_profile(&s),
        "unconfined",
        "privileged: unconfined unless named"
    );
    s.apparmor = Profile::Localhost("p".into());
    assert_eq!(apparmor_profile(&s), "p");
    let (proc_, _) = selinux_labels(&s);
    assert_eq!(proc_, "system_u:system_r:spc_t:s0");
}

/// The edits of two CDI devices, as `cdi::Registry::resolve` and `fill_device_info` make them.
fn cdi_edits() -> crate::cdi::ContainerEdits {
    use crate::cdi::{ContainerEdits, DeviceNode, DeviceType, Hook, Mount as CdiMount};
    let node = |path: &str, t, major, minor| DeviceNode {
        path: path.into(),
        host_path: path.into(),
        device_type: Some(t),
        major,
        minor,
        file_mode: Some(0o666),
        permissions: "rw".into(),
        uid: None,
        gid: None,
    };
    ContainerEdits {
        env: vec![
            "A=cdi".into(),
            "VENDOR=1".into(),
            "PATH=/opt/vendor/bin:/bin".into(),
        ],
        device_nodes: vec![
            DeviceNode {
                uid: Some(7),
                gid: Some(8),
                permissions: "rwm".into(),
                ..node("/dev/vendor0", DeviceType::Char, Some(241), Some(0))
            },
            // Replaces the request's /dev/fuse.
            node("/dev/fuse", DeviceType::Char, Some(10), Some(229)),
            DeviceNode {
                file_mode: None,
                ..node("/dev/vendorblk", DeviceType::Block, Some(8), Some(16))
            },
            DeviceNode {
                permissions: String::new(),
                ..node("/dev/vendorfifo", DeviceType::Fifo, None, None)
            },
        ],
        mounts: vec![
            CdiMount {
                host_path: "/usr/lib/vendor".into(),
                container_path: "/usr/lib/vendor".into(),
                mount_type: None,
                options: vec!["ro".into(), "nosuid".into()],
            },
            // Replaces the request's /data.
            CdiMount {
                host_path: "/srv/vendor-data".into(),
                container_path: "/data".into(),
                mount_type: Some("bind".into()),
                options: vec!["bind".into()],
            },
            CdiMount {
                host_path: "tmpfs".into(),
                container_path: "/var/vendor".into(),
                mount_type: Some("tmpfs".into()),
                options: vec!["size=1m".into()],
            },
        ],
        hooks: vec![
            Hook {
                hook_name: "createContainer".into(),
                path: "/usr/bin/vendor-hook".into(),
                args: vec!["vendor-hook".into(), "create".into()],
                env: vec!["X=1".into()],
                timeout: Some(5),
            },
            Hook {
                hook_name: "poststop".into(),
                path: "/usr/bin/vendor-hook".into(),
                args: vec![],
                env: vec![],
                timeout: None,
            },
            Hook {
                hook_name: "createContainer".into(),
                path: "/usr/bin/second".into(),
                args: vec![],
                env: vec![],
                timeout: None,
            },
        ],
        additional_gids: vec![44, 500],
        intel_rdt: None,
        net_devices: vec![],
    }
}

#[test]
fn golden_cdi_container() {
    let c = ContainerConfig {
        name: "cdi".into(),
        command: vec!["sh".into()],
        envs: vec![("A".into(), "request".into())],
        mounts: vec![Mount {
            container_path: "/data".into(),
            host_path: "/srv/data".into(),
            ..Default::default()
        }],
        cdi_devices: vec!["vendor.com/gpu=gpu0".into()],
        ..Default::default()
    };
    let mut c = c;
    c.security.run_as_username = "www-data".into();
    let (p, i, pp) = (pod(), image(), paths());
    let mut inp = input(&p, &c, &i, &pp);
    inp.devices = vec![ResolvedDevice {
        container_path: "/dev/fuse".into(),
        kind: "c".into(),
        major: 10,
        minor: 229,
        file_mode: 0o644,
        permissions: "rwm".into(),
    }];
    inp.cdi = cdi_edits();
    let g = generate(&inp).unwrap();
    assert_eq!(
        g.user.additional_gids,
        vec![33, 500, 44],
        "the primary GID, the image's groups, then CDI's new ones"
    );
    let v = serde_json::to_value(&g.spec).unwrap();
    let env: Vec<&str> = v["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"A=cdi") && env.contains(&"VENDOR=1"),
        "{env:?}"
    );
    assert!(env.contains(&"PATH=/opt/vendor/bin:/bin"), "{env:?}");
    let devices = v["linux"]["devices"].as_array().unwrap();
    let dev = |p: &str| {
        devices
            .iter()
            .filter(|d| d["path"] == p)
            .collect::<Vec<_>>()
    };
    assert_eq!(dev("/dev/fuse").len(), 1, "replaced, not doubled");
    assert_eq!(dev("/dev/fuse")[0]["fileMode"], 0o666);
    assert_eq!(
        (
            &dev("/dev/vendor0")[0]["uid"],
            &dev("/dev/vendor0")[0]["gid"]
        ),
        (&json!(7), &json!(8))
    );
    assert_eq!(
        (
            &dev("/dev/vendorblk")[0]["uid"],
            &dev("/dev/vendorblk")[0]["gid"]
        ),
        (&json!(33), &json!(33)),
        "unset uid/gid: the container's user"
    );
    let rules = v["linux"]["resources"]["devices"].as_array().unwrap();
    assert!(rules
        .iter()
        .any(|r| r["major"] == 241 && r["access"] == "rwm"));
    assert!(rules
        .iter()
        .any(|r| r["type"] == "b" && r["access"] == "rw"));
    assert!(
        !rules.iter().any(|r| r["type"] == "p"),
        "no cgroup rule for a FIFO"
    );
    let mounts = v["mounts"].as_array().unwrap();
    let data: Vec<_> = mounts
        .iter()
        .filter(|m| m["destination"] == "/data")
        .collect();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["source"], "/srv/vendor-data");
    let vendor = mounts
        .iter()
        .find(|m| m["destination"] == "/usr/lib/vendor")
        .unwrap();
    assert_eq!(vendor["type"], "bind");
    assert_eq!(vendor["options"], json!(["rbind", "ro", "nosuid"]));
    let depths: Vec<usize> = mounts
        .iter()
        .map(|m| m["destination"].as_str().unwrap().split('/').count())
        .collect();
    assert!(depths.windows(2).all(|w| w[0] <= w[1]), "parents first");
    assert_eq!(v["hooks"]["createContainer"].as_array().unwrap().len(), 2);
    assert_eq!(v["hooks"]["poststop"][0]["path"], "/usr/bin/vendor-hook");
    golden("cdi", &g.spec);
}

#[test]
fn cdi_intel_rdt_and_net_devices_are_refused() {
    let c = ContainerConfig {
        command: vec!["sh".into()],
        ..Default::default()
    };
    let (p, i, pp) = (pod(), image(), paths());
    let mut inp = input(&p, &c, &i, &pp);
    inp.cdi.intel_rdt = Some(Default::default());
    let e = generate(&inp).err().unwrap();
    assert!(
        e.to_string().contains("intelRdt") && e.kind() == Kind::InvalidArgument,
        "{e}"
    );
    inp.cdi.intel_rdt = None;
    inp.cdi.net_devices = vec![crate::cdi::NetDevice {
        host_interface_name: "eth1".into(),
        name: "net1".into(),
    }];
    let e = generate(&inp).err().unwrap();
    assert!(e.to_string().contains("not supported by ferrio yet"), "{e}");
}

#[test]
fn no_cdi_edits_leave_the_spec_as_it_was() {
    let c = ContainerConfig {
        command: vec!["sh".into()],
        cdi_devices: vec!["vendor.com/gpu=gpu0".into()],
        ..Default::default()
    };
    let (p, i, pp) = (pod(), image(), paths());
    let v = serde_json::to_value(generate(&input(&p, &c, &i, &pp)).unwrap().spec).unwrap();
    assert!(v.get("hooks").is_none());
    let mounts: Vec<&str> = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(mounts[..2], ["/proc", "/dev"], "not reordered");
    assert_eq!(mounts[mounts.len() - 1], "/etc/hostname");
}
