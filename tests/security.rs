//! The security context, enforced on real containers (issue: security context and isolation).
//! Each test runs its own daemon and pod; everything is removed and checked at the end.

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;

fn caps(add: &[&str], drop: &[&str]) -> Option<api::Capability> {
    Some(api::Capability {
        add_capabilities: add.iter().map(|s| s.to_string()).collect(),
        drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
        add_ambient_capabilities: vec![],
    })
}

const CHOWN: u64 = 1 << 0;
const NET_BIND_SERVICE: u64 = 1 << 10;
const NET_ADMIN: u64 = 1 << 12;
const DEFAULT_CAPS: u64 = 0x5fb;

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_add_drop_all_and_privileged() {
    e2e!();
    // The pod is privileged: a privileged container needs one.
    let (d, image) = daemon_with_busybox().await;
    let mut pcfg = pod_config("caps", &d.dir.path().join("logs"));
    let lin = pcfg.linux.as_mut().unwrap();
    lin.security_context.as_mut().unwrap().privileged = true;
    let mut rt = d.runtime().await;
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let host_bounding = cap_mask(
        &std::fs::read_to_string("/proc/self/status").unwrap(),
        "CapBnd:",
    );
    let cases: Vec<(&str, api::LinuxContainerSecurityContext, u64)> = vec![
        ("default", Default::default(), DEFAULT_CAPS),
        (
            "adddrop",
            api::LinuxContainerSecurityContext {
                capabilities: caps(&["NET_ADMIN"], &["CAP_CHOWN"]),
                ..Default::default()
            },
            (DEFAULT_CAPS | NET_ADMIN) & !CHOWN,
        ),
        (
            "dropall",
            api::LinuxContainerSecurityContext {
                capabilities: caps(&["NET_BIND_SERVICE"], &["ALL"]),
                ..Default::default()
            },
            NET_BIND_SERVICE,
        ),
        (
            "addall",
            api::LinuxContainerSecurityContext {
                capabilities: caps(&["ALL"], &[]),
                ..Default::default()
            },
            host_bounding,
        ),
        (
            "privileged",
            api::LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            },
            host_bounding,
        ),
    ];
    for (name, sec, want) in cases {
        let id = create_start(&mut rt, &pod, &pcfg, secured(name, &image, sec, vec![])).await;
        let (out, _, _) = sh_in(&mut rt, &id, "cat /proc/1/status").await;
        assert_eq!(cap_mask(&out, "CapEff:"), want, "{name}: CapEff");
        assert_eq!(cap_mask(&out, "CapPrm:"), want, "{name}: CapPrm");
        assert_eq!(cap_mask(&out, "CapBnd:"), want, "{name}: CapBnd");
        assert!(
            out.contains("NoNewPrivs:\t0"),
            "{name}: not asked for: {out}"
        );
        // An exec'd process gets the same sets (the capability lent to load the seccomp
        // filter is gone) and is confined the same way.
        let (ex, _, _) = sh_in(&mut rt, &id, "cat /proc/self/status").await;
        assert_eq!(cap_mask(&ex, "CapEff:"), want, "{name}: exec CapEff");
        assert_eq!(cap_mask(&ex, "CapPrm:"), want, "{name}: exec CapPrm");
        assert!(ex.contains("NoNewPrivs:\t0"), "{name}: exec: {ex}");
        let mode = |st: &str| {
            st.lines()
                .find(|l| l.starts_with("Seccomp:"))
                .map(str::to_string)
        };
        assert_eq!(mode(&ex), mode(&out), "{name}: exec seccomp");
        if name == "privileged" {
            // No seccomp unless asked, the host's devices, writable sysfs, no masked paths.
            assert!(out.contains("Seccomp:\t0"), "{out}");
            let (devs, _, _) = sh_in(&mut rt, &id, "ls /dev").await;
            assert!(devs.contains("kmsg"), "host devices: {devs}");
            let (m, _, _) = sh_in(&mut rt, &id, "grep ' /sys ' /proc/mounts").await;
            assert!(m.contains(" rw,"), "{m}");
            let (t, _, _) = sh_in(&mut rt, &id, "wc -c < /proc/timer_list").await;
            assert_ne!(t, "0", "not masked");
        } else {
            assert!(
                out.contains("Seccomp:\t0"),
                "unconfined when nothing is asked, as CRI-O and containerd: {out}"
            );
        }
    }
    finish_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_new_privs_readonly_rootfs_masked_and_readonly_paths() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("ro").await;
    let mut rt = d.runtime().await;
    let sec = api::LinuxContainerSecurityContext {
        no_new_privs: true,
        readonly_rootfs: true,
        masked_paths: vec!["/proc/version".into()],
        readonly_paths: vec!["/dev/shm".into()],
        ..Default::default()
    };
    let id = create_start(&mut rt, &pod, &pcfg, secured("ro", &image, sec, vec![])).await;
    let (out, _, _) = sh_in(&mut rt, &id, "grep NoNewPrivs /proc/1/status").await;
    assert!(out.ends_with('1'), "{out}");
    let (_, err, code) = sh_in(&mut rt, &id, "touch /newfile").await;
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    let (v, _, _) = sh_in(&mut rt, &id, "wc -c < /proc/version").await;
    assert_eq!(v, "0", "a masked path reads empty");
    let (_, _, code) = sh_in(&mut rt, &id, "touch /dev/shm/x").await;
    assert_ne!(code, 0, "a read-only path from the request");
    // The defaults no longer apply when the request gives its own lists.
    let (t, _, _) = sh_in(&mut rt, &id, "wc -c < /proc/timer_list").await;
    assert_ne!(t, "0");
    finish_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_groups_and_their_errors() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("users").await;
    let mut rt = d.runtime().await;
    let sec = api::LinuxContainerSecurityContext {
        run_as_user: Some(api::Int64Value { value: 1000 }),
        run_as_group: Some(api::Int64Value { value: 2000 }),
        supplemental_groups: vec![3000, 3001],
        ..Default::default()
    };
    let id = create_start(&mut rt, &pod, &pcfg, secured("u", &image, sec, vec![])).await;
    let (out, _, _) = sh_in(&mut rt, &id, "id -u; id -g; id -G").await;
    assert_eq!(out, "1000\n2000\n2000 3000 3001");
    let st = ctr_status(&mut rt, &id).await;
    let u = st.user.unwrap().linux.unwrap();
    // The groups the process really has, the primary GID first.
    assert_eq!(
        (u.uid, u.gid, u.supplemental_groups),
        (1000, 2000, vec![2000, 3000, 3001])
    );
    // The image's user with an /etc/group membership (web, 500): policy Merge adds it after
    // the request's groups, Strict does not; ContainerStatus.user says what `id -G` says.
    // Every handler: runc and crun get the exec's process whole (crun has no
    // --additional-gids), so exec'd processes have the container's groups too.
    let user_image = Registry::shared().image("ferrio-test/busybox-user");
    pull(&mut d.images().await, &user_image).await.unwrap();
    for handler in ["", "runc", "crun"] {
        let hcfg = pod_config(&format!("groups{handler}"), &d.dir.path().join("logs"));
        let hpod = run_pod(&mut rt, hcfg.clone(), handler).await;
        for (policy, want) in [
            (api::SupplementalGroupsPolicy::Merge, vec![33, 3000, 500]),
            (api::SupplementalGroupsPolicy::Strict, vec![33, 3000]),
        ] {
            let sec = api::LinuxContainerSecurityContext {
                supplemental_groups: vec![3000],
                supplemental_groups_policy: policy as i32,
                ..Default::default()
            };
            let name = format!("{policy:?}").to_lowercase();
            let c = secured(&name, &user_image, sec, vec![]);
            let id = create_start(&mut rt, &hpod, &hcfg, c).await;
            let u = ctr_status(&mut rt, &id).await.user.unwrap().linux.unwrap();
            let what = format!("{handler:?} {policy:?}");
            assert_eq!((u.gid, &u.supplemental_groups), (33, &want), "{what}");
            let (out, err, _) = sh_in(&mut rt, &id, "id -G").await;
            let mut real: Vec<i64> = out
                .split_whitespace()
                .map(|g| g.parse().unwrap_or_else(|_| panic!("{what}: {out} {err}")))
                .collect();
            assert_eq!(real.first(), Some(&33), "{what}: {out} {err}");
            real.sort();
            let mut reported = u.supplemental_groups.clone();
            reported.sort();
            assert_eq!(real, reported, "{what}: id -G says {out}");
        }
        // (finish_pod would find the first pod's containers still there)
        rt.stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: hpod.id.clone(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: hpod.id.clone(),
        })
        .await
        .unwrap();
    }

    let bad =
        |name: &str, sec: api::LinuxContainerSecurityContext| secured(name, &image, sec, vec![]);
    let e = create_err(
        &mut rt,
        &pod.id,
        bad(
            "g",
            api::LinuxContainerSecurityContext {
                run_as_group: Some(api::Int64Value { value: 5 }),
                ..Default::default()
            },
        ),
    )
    .await;
    assert!(
        e.code() == tonic::Code::InvalidArgument && e.message().contains("run_as_group"),
        "{e:?}"
    );
    let e = create_err(
        &mut rt,
        &pod.id,
        bad(
            "n",
            api::LinuxContainerSecurityContext {
                run_as_username: "nobody-here".into(),
                ..Default::default()
            },
        ),
    )
    .await;
    assert!(
        e.code() == tonic::Code::InvalidArgument && e.message().contains("nobody-here"),
        "{e:?}"
    );
    finish_pod(&d, &pod).await;
}

/// A host directory with a tmpfs mounted inside it; removed with the guard.
struct HostTree {
    root: std::path::PathBuf,
}

impl HostTree {
    fn new(dir: &std::path::Path) -> HostTree {
        let root = dir.join("tree");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(root.join("sub"))
            .status()
            .unwrap();
        assert!(st.success());
        HostTree { root }
    }
}

impl Drop for HostTree {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.root.join("sub"))
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recursive_read_only_mounts() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("rro").await;
    let tree = HostTree::new(d.dir.path());
    let mut rt = d.runtime().await;
    let m = |path: &str, rro: bool| api::Mount {
        container_path: path.into(),
        host_path: tree.root.display().to_string(),
        readonly: true,
        recursive_read_only: rro,
        ..Default::default()
    };
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        secured(
            "rro",
            &image,
            Default::default(),
            vec![m("/ro", false), m("/rro", true)],
        ),
    )
    .await;
    let (_, _, code) = sh_in(&mut rt, &id, "touch /ro/x").await;
    assert_ne!(code, 0, "the top of a read-only bind is read-only");
    let (_, _, code) = sh_in(&mut rt, &id, "touch /ro/sub/x").await;
    assert_eq!(code, 0, "…but not its submounts");
    let (_, err, code) = sh_in(&mut rt, &id, "touch /rro/sub/y").await;
    assert_ne!(code, 0, "recursive read-only reaches the submount");
    assert!(err.contains("Read-only"), "{err}");

    // The CRI's rules: rro needs readonly and private propagation; runc here lacks it.
    for (name, mount) in [
        (
            "notro",
            api::Mount {
                readonly: false,
                ..m("/a", true)
            },
        ),
        (
            "shared",
            api::Mount {
                propagation: api::MountPropagation::PropagationBidirectional as i32,
                ..m("/a", true)
            },
        ),
    ] {
        let e = create_err(
            &mut rt,
            &pod.id,
            secured(name, &image, Default::default(), vec![mount]),
        )
        .await;
        assert!(
            e.code() == tonic::Code::InvalidArgument && e.message().contains("recursive_read_only"),
            "{name}: {e:?}"
        );
    }
    let logs = d.dir.path().join("logs");
    let runc_cfg = pod_config("rro-runc", &logs);
    let runc_pod = run_pod(&mut rt, runc_cfg.clone(), "runc").await;
    let e = create_err(
        &mut rt,
        &runc_pod.id.clone(),
        secured("r", &image, Default::default(), vec![m("/rro", true)]),
    )
    .await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let st = rt
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let feat = |n: &str| {
        st.runtime_handlers
            .iter()
            .find(|h| h.name == n)
            .unwrap()
            .features
            .unwrap()
    };
    assert!(feat("ferrio").recursive_read_only_mounts && !feat("runc").recursive_read_only_mounts);
    assert!(st.features.unwrap().supplemental_groups_policy);
    finish_pod(&d, &pod).await;
    finish_pod(&d, &runc_pod).await;
    drop(tree);
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volumes() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("imgvol").await;
    let reg = Registry::shared();
    let multi = reg.image("ferrio-test/multilayer");
    pull(&mut d.images().await, &multi).await.unwrap();
    let mut rt = d.runtime().await;
    let vol = |path: &str, img: &str, sub: &str| api::Mount {
        container_path: path.into(),
        image: Some(api::ImageSpec {
            image: img.into(),
            ..Default::default()
        }),
        image_sub_path: sub.into(),
        readonly: true,
        ..Default::default()
    };
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        secured(
            "v",
            &image,
            Default::default(),
            vec![
                vol("/img", &image, ""),
                vol("/bin2", &multi, "bin"),
                vol("/multi", &multi, ""),
            ],
        ),
    )
    .await;
    let (out, _, code) = sh_in(
        &mut rt,
        &id,
        "test -x /img/bin/busybox && test -x /bin2/busybox && echo ok",
    )
    .await;
    assert_eq!((out.as_str(), code), ("ok", 0));
    let (_, _, code) = sh_in(&mut rt, &id, "touch /img/x").await;
    assert_ne!(code, 0, "image volumes are read-only");
    let st = ctr_status(&mut rt, &id).await;
    let img_id = status(&mut d.images().await, &image).await.unwrap().id;
    let m = st
        .mounts
        .iter()
        .find(|m| m.container_path == "/img")
        .unwrap();
    assert_eq!(m.image.as_ref().unwrap().image, img_id);
    // KEP-4639: the resolved image, as PullImage answered it.
    let pulled = pull(&mut d.images().await, &multi).await.unwrap();
    let mm = st
        .mounts
        .iter()
        .find(|m| m.container_path == "/multi")
        .unwrap()
        .image
        .clone()
        .unwrap();
    assert_eq!(
        (mm.image_ref.as_str(), mm.user_specified_image.as_str()),
        (pulled.as_str(), multi.as_str())
    );
    assert!(mm.image_ref.starts_with("sha256:"), "{mm:?}");
    // An image volume that is not read-only is refused.
    let e = create_err(
        &mut rt,
        &pod.id,
        secured(
            "rw",
            &image,
            Default::default(),
            vec![api::Mount {
                readonly: false,
                ..vol("/rw", &image, "")
            }],
        ),
    )
    .await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("/rw") && e.message().contains("readonly"),
        "{e:?}"
    );
    let e = create_err(
        &mut rt,
        &pod.id,
        secured(
            "missing",
            &image,
            Default::default(),
            vec![vol("/x", &image, "no/such/dir")],
        ),
    )
    .await;
    assert!(e.message().contains("no/such/dir"), "{e:?}");
    finish_pod(&d, &pod).await;
}

/// The seccomp mode of a running container's init (`Seccomp:` of /proc/1/status: 0 none, 2 a
/// filter).
async fn seccomp_mode(rt: &mut RtClient, id: &str) -> String {
    let (out, _, _) = sh_in(rt, id, "grep Seccomp: /proc/1/status").await;
    out.trim_start_matches("Seccomp:").trim().to_string()
}

type RtClient =
    ferrio::cri::api::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

/// No profile named: unconfined (CRI-O, containerd), RuntimeDefault only with the opt-in. A
/// privileged container: no seccomp whatever it names, unless `privileged_seccomp_profile`.
#[tokio::test(flavor = "multi_thread")]
async fn seccomp_defaults_as_cri_o() {
    e2e!();
    let profile = |t: api::security_profile::ProfileType| api::LinuxContainerSecurityContext {
        seccomp: Some(api::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    let privileged = |sec: api::LinuxContainerSecurityContext| api::LinuxContainerSecurityContext {
        privileged: true,
        ..sec
    };
    use api::security_profile::ProfileType::{RuntimeDefault, Unconfined};
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    let deny_mkdir = tempfile::tempdir().unwrap();
    let deny_mkdir_file = deny_mkdir.path().join("no-mkdir.json");
    std::fs::write(
        &deny_mkdir_file,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    // (config, container, expected mode)
    let configs = [
        (String::new(), "default"),
        (
            "[runtime]\nseccomp_use_default_when_empty = true\n".to_string(),
            "empty-default",
        ),
        (
            format!(
                "[runtime]\nprivileged_seccomp_profile = \"{}\"\n",
                deny_mkdir_file.display()
            ),
            "privileged-profile",
        ),
    ];
    for (extra, label) in configs {
        let d = Daemon::start(DaemonOpts {
            extra_config: extra,
            ..Default::default()
        });
        pull(&mut d.images().await, &image).await.unwrap();
        let mut pcfg = pod_config(label, &d.dir.path().join("logs"));
        let lin = pcfg.linux.as_mut().unwrap();
        lin.security_context.as_mut().unwrap().privileged = true;
        let mut rt = d.runtime().await;
        let pod = run_pod(&mut rt, pcfg.clone(), "").await;
        let cases: Vec<(&str, api::LinuxContainerSecurityContext, &str)> = match label {
            "default" => vec![
                ("none", Default::default(), "0"),
                ("rd", profile(RuntimeDefault), "2"),
                ("unconf", profile(Unconfined), "0"),
                ("priv-rd", privileged(profile(RuntimeDefault)), "0"),
                ("priv-none", privileged(Default::default()), "0"),
            ],
            "empty-default" => vec![
                ("none", Default::default(), "2"),
                ("unconf", profile(Unconfined), "0"),
                ("priv-none", privileged(Default::default()), "0"),
            ],
            _ => vec![
                ("none", Default::default(), "0"),
                ("priv-unconf", privileged(profile(Unconfined)), "2"),
            ],
        };
        for (name, sec, want) in cases {
            let id = create_start(&mut rt, &pod, &pcfg, secured(name, &image, sec, vec![])).await;
            assert_eq!(seccomp_mode(&mut rt, &id).await, want, "{label}: {name}");
            if label == "privileged-profile" && name == "priv-unconf" {
                // The operator's profile, not RuntimeDefault: mkdir is refused.
                let (_, err, code) = sh_in(&mut rt, &id, "mkdir /tmp/d").await;
                assert!(
                    code != 0 && err.contains("Operation not permitted"),
                    "{err}"
                );
            }
        }
        finish_pod(&d, &pod).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn localhost_seccomp_profile_blocks_a_syscall() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("local").await;
    let mut rt = d.runtime().await;
    let profile = d.dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let sec = |p: &std::path::Path| api::LinuxContainerSecurityContext {
        seccomp: Some(api::SecurityProfile {
            profile_type: api::security_profile::ProfileType::Localhost as i32,
            localhost_ref: p.display().to_string(),
        }),
        ..Default::default()
    };
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        secured("l", &image, sec(&profile), vec![]),
    )
    .await;
    let (_, err, code) = sh_in(&mut rt, &id, "touch /tmp/file && mkdir /tmp/dir").await;
    assert_ne!(code, 0);
    assert!(err.contains("Operation not permitted"), "{err}");
    let (out, _, _) = sh_in(&mut rt, &id, "ls /tmp").await;
    assert_eq!(out, "file");
    let bad = d.dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let e = create_err(&mut rt, &pod.id, secured("b", &image, sec(&bad), vec![])).await;
    assert!(
        e.code() == tonic::Code::InvalidArgument && e.message().contains("bad.json"),
        "{e:?}"
    );
    // A FIFO nobody writes and a file past the cap are refused, not read forever or whole.
    let fifo = d.dir.path().join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        create_err(&mut rt, &pod.id, secured("f", &image, sec(&fifo), vec![])),
    )
    .await
    .expect("a FIFO profile must not block CreateContainer");
    assert!(
        e.code() == tonic::Code::InvalidArgument && e.message().contains("not a regular file"),
        "{e:?}"
    );
    let big = d.dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 2 << 20]).unwrap();
    let e = create_err(&mut rt, &pod.id, secured("g", &image, sec(&big), vec![])).await;
    assert!(
        e.code() == tonic::Code::InvalidArgument && e.message().contains("larger than"),
        "{e:?}"
    );
    finish_pod(&d, &pod).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn escape_battery_for_a_default_container() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("escape").await;
    let mut rt = d.runtime().await;
    // RuntimeDefault, as kubelet asks with seccompDefault (the secure default a node runs).
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        secured("e", &image, runtime_default(), vec![]),
    )
    .await;
    let me = std::process::id();
    for (what, script) in [
        ("mount", "mount -t tmpfs none /mnt".to_string()),
        (
            "see host PIDs",
            format!("test -e /proc/{me}/status || exit 1; ls /proc/1/root"),
        ),
        (
            "load a kernel module",
            "echo junk > /tmp/m.ko; insmod /tmp/m.ko".to_string(),
        ),
        (
            "write /proc/sys",
            "echo 1 > /proc/sys/kernel/sysrq".to_string(),
        ),
        ("write /sys", "echo 1 > /sys/kernel/profiling".to_string()),
        ("create a device", "mknod /tmp/null c 1 3".to_string()),
        (
            "chroot out",
            "chroot /proc/1/root true && test -e /proc/1/root/etc/ferrio-marker".to_string(),
        ),
        ("unshare a user namespace", "unshare -U true".to_string()),
    ] {
        let (_, err, code) = sh_in(&mut rt, &id, &script).await;
        assert_ne!(code, 0, "a default container could {what}: {err}");
    }
    // /proc/kcore does not exist on this host's kernel; the masked /proc/timer_list stands in.
    let (t, _, _) = sh_in(&mut rt, &id, "wc -c < /proc/timer_list").await;
    assert_eq!(t, "0");
    let (ps, _, _) = sh_in(&mut rt, &id, "ls /proc | grep -c '^[0-9]'").await;
    assert!(
        ps.parse::<u32>().unwrap() < 10,
        "only the container's processes are visible: {ps}"
    );
    finish_pod(&d, &pod).await;
}

/// A pod with its own user namespace (mode POD): the mapping inside, root inside that is an
/// unprivileged id outside, an idmapped rootfs (files of the image owned by root inside, new
/// ones by the pod's root on the host), an idmapped volume against a plain one, a second
/// container in the same user namespace; and the requests the CRI says must fail.
#[tokio::test(flavor = "multi_thread")]
async fn user_namespaces_and_idmapped_mounts() {
    e2e!();
    const HOST: u32 = 20 * 65536;
    const LEN: u32 = 65536;
    let map = |container_id: u32, host_id: u32| api::IdMapping {
        container_id,
        host_id,
        length: LEN,
    };
    let with_userns = |name: &str, logs: &std::path::Path, u: api::UserNamespace| {
        let mut c = pod_config(name, logs);
        let linux = c.linux.get_or_insert_with(Default::default);
        let sec = linux.security_context.get_or_insert_with(Default::default);
        sec.namespace_options
            .get_or_insert_with(Default::default)
            .userns_options = Some(u);
        c
    };
    let pod_mode = |uids: Vec<api::IdMapping>, gids: Vec<api::IdMapping>| api::UserNamespace {
        mode: api::NamespaceMode::Pod as i32,
        uids,
        gids,
    };
    let (d, image) = daemon_with_busybox().await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");

    let st = rt
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    for h in &st.runtime_handlers {
        assert!(
            h.features.as_ref().unwrap().user_namespaces,
            "handler {} reports user namespaces",
            h.name
        );
    }

    // What the CRI says must fail (critest's cases, and NODE with mappings).
    let bad = [
        (
            "two",
            pod_mode(vec![map(0, HOST), map(LEN, 2 * HOST)], vec![map(0, HOST)]),
        ),
        ("ctr1", pod_mode(vec![map(1, HOST)], vec![map(1, HOST)])),
        ("nogid", pod_mode(vec![map(0, HOST)], vec![])),
        (
            "container",
            api::UserNamespace {
                mode: api::NamespaceMode::Container as i32,
                ..pod_mode(vec![map(0, HOST)], vec![map(0, HOST)])
            },
        ),
        (
            "target",
            api::UserNamespace {
                mode: api::NamespaceMode::Target as i32,
                ..pod_mode(vec![map(0, HOST)], vec![map(0, HOST)])
            },
        ),
        (
            "node",
            api::UserNamespace {
                mode: api::NamespaceMode::Node as i32,
                ..pod_mode(vec![map(0, HOST)], vec![map(0, HOST)])
            },
        ),
    ];
    for (name, u) in bad {
        let err = rt
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(with_userns(name, &logs, u)),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains("userns_options"), "{name}: {err:?}");
    }

    let mut pcfg = with_userns(
        "userns",
        &logs,
        pod_mode(vec![map(0, HOST)], vec![map(0, HOST)]),
    );
    // One PID namespace for the pod: its pause is PID 1 there.
    ns_options(&mut pcfg).pid = api::NamespaceMode::Pod as i32;
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    // A volume owned by root on the host, mounted idmapped and plain.
    let vol = d.dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("file"), "hello\n").unwrap();
    let bind = |path: &str, mapped: bool| api::Mount {
        container_path: path.into(),
        host_path: vol.display().to_string(),
        uid_mappings: if mapped { vec![map(0, HOST)] } else { vec![] },
        gid_mappings: if mapped { vec![map(0, HOST)] } else { vec![] },
        ..Default::default()
    };
    let c = secured(
        "u",
        &image,
        runtime_default(),
        vec![bind("/idm", true), bind("/plain", false)],
    );
    let id = create_start(&mut rt, &pod, &pcfg, c).await;
    let words = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let (uid_map, _, _) = sh_in(&mut rt, &id, "cat /proc/self/uid_map").await;
    assert_eq!(words(uid_map), format!("0 {HOST} {LEN}"));
    let (gid_map, _, _) = sh_in(&mut rt, &id, "cat /proc/1/gid_map").await;
    assert_eq!(words(gid_map), format!("0 {HOST} {LEN}"));
    let (who, _, _) = sh_in(&mut rt, &id, "id -u; id -g").await;
    assert_eq!(words(who), "0 0", "root inside");
    // The image's files are root's inside (the layers are idmapped, not chowned).
    let (owner, _, _) = sh_in(&mut rt, &id, "stat -c %u:%g /bin/busybox /").await;
    assert_eq!(words(owner), "0:0 0:0");
    let (_, err, code) = sh_in(&mut rt, &id, "echo x > /newfile && mkdir /newdir").await;
    assert_eq!(code, 0, "the rootfs is writable by root inside: {err}");
    let upper = d.root.join("containers").join(&id).join("upper");
    for f in ["newfile", "newdir"] {
        let meta = std::fs::metadata(upper.join(f)).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), (HOST, HOST), "{f} on the host");
    }
    // Root inside is nobody to the host's files, except through the idmapped mount.
    let (owners, _, _) = sh_in(&mut rt, &id, "stat -c %u /idm/file /plain/file").await;
    assert_eq!(words(owners), "0 65534");
    let (_, err, code) = sh_in(&mut rt, &id, "echo y > /idm/new").await;
    assert_eq!(code, 0, "{err}");
    let (_, _, code) = sh_in(&mut rt, &id, "echo y > /plain/new2").await;
    assert_ne!(code, 0, "an unmapped host directory is not root's inside");
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(vol.join("new")).unwrap().uid(), 0);
    }
    let (out, err, code) = sh_in(
        &mut rt,
        &id,
        "touch /dev/shm/x && cat /etc/hostname && ls /sys/class/net",
    )
    .await;
    assert_eq!(code, 0, "{out} {err}");
    // A second container joins the same user namespace.
    let id2 = create_start(
        &mut rt,
        &pod,
        &pcfg,
        secured("u2", &image, Default::default(), vec![]),
    )
    .await;
    let (ns1, _, _) = sh_in(&mut rt, &id, "readlink /proc/self/ns/user").await;
    let (ns2, _, _) = sh_in(&mut rt, &id2, "readlink /proc/self/ns/user").await;
    assert_eq!(ns1, ns2);
    assert_ne!(
        ns1,
        std::fs::read_link("/proc/self/ns/user")
            .unwrap()
            .display()
            .to_string()
    );
    let st = pod_status(&mut rt, &pod.id).await;
    let u = st
        .linux
        .unwrap()
        .namespaces
        .unwrap()
        .options
        .unwrap()
        .userns_options;
    assert_eq!(u.unwrap().uids, vec![map(0, HOST)]);
    // The pod's pause (PID 1 of its shared PID namespace) is the namespace's root, not an
    // unmapped host root, and its root directory (the host's /) is out of reach.
    let (pause, _, _) = sh_in(&mut rt, &id, "grep -E '^(Uid|Gid):' /proc/1/status; ls /proc/1/root/ >/dev/null 2>&1 && echo reachable || echo denied").await;
    assert_eq!(words(pause), "Uid: 0 0 0 0 Gid: 0 0 0 0 denied");
    // A user the pod's user namespace does not map cannot run.
    let mut far = secured("far", &image, Default::default(), vec![]);
    far.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .run_as_user = Some(api::Int64Value { value: LEN as i64 });
    let err = create_err(&mut rt, &pod.id, far).await;
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("not mapped"), "{err:?}");
    // Exec'd processes are confined as the container is: caps, seccomp.
    let (st, _, _) = sh_in(&mut rt, &id, "cat /proc/self/status").await;
    assert_eq!(cap_mask(&st, "CapEff:"), DEFAULT_CAPS);
    assert!(st.contains("Seccomp:\t2"), "{st}");
    finish_pod(&d, &pod).await;

    // runc and crun join the pod's user namespace the same way; ferrio made the idmapped
    // rootfs and volume for them.
    for handler in ["runc", "crun"] {
        let pcfg = with_userns(
            handler,
            &logs,
            pod_mode(vec![map(0, HOST)], vec![map(0, HOST)]),
        );
        let pod = run_pod(&mut rt, pcfg.clone(), handler).await;
        let c = secured("u", &image, Default::default(), vec![bind("/idm", true)]);
        let id = create_start(&mut rt, &pod, &pcfg, c).await;
        let (out, err, code) = sh_in(
            &mut rt,
            &id,
            "cat /proc/1/uid_map /proc/self/uid_map; stat -c %u /bin/busybox /idm/file; echo z > /z",
        )
        .await;
        assert_eq!(code, 0, "{handler}: {err}");
        assert_eq!(
            words(out),
            format!("0 {HOST} {LEN} 0 {HOST} {LEN} 0 0"),
            "{handler}"
        );
        finish_pod(&d, &pod).await;
    }
}

/// What only the pod may grant is refused at container level, as CRI-O refuses it: a
/// privileged container in an unprivileged pod, the host PID namespace for one container.
#[tokio::test(flavor = "multi_thread")]
async fn privileged_and_host_pid_need_the_pod() {
    e2e!();
    let (d, image, _pcfg, pod) = setup_pod("podonly").await;
    let mut rt = d.runtime().await;
    let mut c = sh_container("priv", &image, "true");
    c.linux = Some(api::LinuxContainerConfig {
        security_context: Some(api::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = create_err(&mut rt, &pod.id, c).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("privileged"), "{e:?}");
    let mut c = sh_container("hostpid", &image, "true");
    c.linux = Some(api::LinuxContainerConfig {
        security_context: Some(api::LinuxContainerSecurityContext {
            namespace_options: Some(api::NamespaceOption {
                pid: api::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = create_err(&mut rt, &pod.id, c).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("pid"), "{e:?}");
    finish_pod(&d, &pod).await;
}

/// Every path under ferrio's roots, not following symlinks, crossing into the mounts below
/// them (a container's rootfs, the pod's shm) as an attacker on the host would.
fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    out.push(dir.to_path_buf());
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            _ => out.push(p),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn another_host_user_cannot_reach_anything_under_ferrios_roots() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("perm").await;
    let mut rt = d.runtime().await;
    let mut c = sh_container(
        "secret",
        &image,
        "cp /bin/busybox /tmp/suid && chmod 4755 /tmp/suid && sleep 300",
    );
    c.envs.push(api::KeyValue {
        key: "TOKEN".into(),
        value: "s3cret-token".into(),
    });
    let id = create_start(&mut rt, &pod, &pcfg, c).await;
    // The container plants a setuid binary in its writable layer (as one with CHOWN/FSETID can).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sh_in(&mut rt, &id, "test -u /tmp/suid").await.2 != 0 {
        assert!(std::time::Instant::now() < deadline, "no setuid file made");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Inside, the container sees the modes an image expects, whoever its user is.
    let mut user = sh_container(
        "user",
        &image,
        "stat -c %a / && cat /etc/resolv.conf /etc/hostname >/dev/null && touch /tmp/f && stat -c %a /tmp/f && echo ok",
    );
    user.linux = Some(api::LinuxContainerConfig {
        security_context: Some(api::LinuxContainerSecurityContext {
            run_as_user: Some(api::Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let uid = create_start(&mut rt, &pod, &pcfg, user).await;
    wait_exited(&mut rt, &uid, 20).await;
    let logs = d.dir.path().join("logs");
    let log = std::fs::read_to_string(logs.join("user.log")).unwrap();
    let out: Vec<&str> = log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect();
    assert_eq!(out, ["755", "644", "ok"], "{log}");
    // CRI logs: the owner writes, its group (a log collector's) reads, nobody else.
    use std::os::unix::fs::PermissionsExt;
    for l in ["secret.log", "user.log"] {
        let mode = std::fs::metadata(logs.join(l))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o640, "{l}");
    }

    let mut paths = Vec::new();
    walk(&d.root, &mut paths);
    walk(&d.dir.path().join("run"), &mut paths);
    let planted: Vec<_> = paths.iter().filter(|p| p.ends_with("tmp/suid")).collect();
    assert!(!planted.is_empty(), "the walk reaches the writable layer");
    assert!(
        paths.iter().any(|p| p.ends_with("bundle/config.json")),
        "the walk reaches the bundle"
    );
    let list = tempfile::NamedTempFile::new().unwrap();
    let text: String = paths.iter().map(|p| format!("{}\n", p.display())).collect();
    std::fs::write(list.path(), text).unwrap();
    std::fs::set_permissions(list.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    // nobody (65534), no groups: can it list, read, write or execute any of them?
    let out = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c"])
        .arg(r#"n=0; while IFS= read -r p; do n=$((n+1)); if [ -r "$p" ] || [ -w "$p" ] || [ -x "$p" ]; then echo "REACHED $p"; fi; done < "$1"; echo "checked $n""#)
        .arg("sh")
        .arg(list.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .trim_end()
            .ends_with(&format!("checked {}", paths.len())),
        "{stdout}"
    );
    let reached: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("REACHED"))
        .collect();
    assert!(
        reached.is_empty(),
        "{} of {} paths reachable by another user, e.g. {:?}",
        reached.len(),
        paths.len(),
        &reached[..reached.len().min(10)]
    );
    finish_pod(&d, &pod).await;
}

/// The seals of the file `/proc/<pid>/exe` names.
fn exe_seals(pid: i32) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/proc/{pid}/exe")).ok()?;
    nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_process_a_container_can_see_runs_the_hosts_ferrio_binary() {
    e2e!();
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let (d, image) = daemon_with_busybox().await;
    let pcfg = pod_config("cve5736", &d.dir.path().join("logs"));
    let mut rt = d.runtime().await;
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    // CVE-2019-5736: a container whose command is a script with /proc/self/exe as its
    // interpreter would have its init run once more the binary the init was started from,
    // inside the container, where its processes can open it through /proc/<pid>/exe. The host
    // watches for such a process (its command line is the interpreter and the script) and
    // notes the file it runs. (On this test host's kernel the init's exec of the script fails
    // with ENOENT, the link leading outside the container's root, so nothing may be seen;
    // what is seen must be the sealed copy.)
    let evil_dir = d.dir.path().join("evil");
    std::fs::create_dir_all(&evil_dir).unwrap();
    std::fs::write(evil_dir.join("evil"), "#!/proc/self/exe\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [evil_dir.clone(), evil_dir.join("evil")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let host = std::fs::metadata(env!("CARGO_BIN_EXE_ferrio")).unwrap();
    let host_id = (host.dev(), host.ino());
    let done = Arc::new(AtomicBool::new(false));
    // (dev, ino, seals) of each sighting.
    type Sighting = (u64, u64, Option<i32>);
    let seen: Arc<Mutex<Vec<Sighting>>> = Arc::default();
    let watch = {
        let (done, seen) = (done.clone(), seen.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) && seen.lock().unwrap().is_empty() {
                for (pid, cmd) in processes_containing("/x/evil") {
                    if !cmd.starts_with("/proc/self/exe /x/evil") {
                        continue;
                    }
                    if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/exe")) {
                        seen.lock()
                            .unwrap()
                            .push((m.dev(), m.ino(), exe_seals(pid)));
                    }
                }
            }
        })
    };
    let mut log = String::new();
    for n in 0..5 {
        let mut c = sh_container(&format!("evil{n}"), &image, "");
        c.command = vec!["/x/evil".into()];
        c.mounts = vec![api::Mount {
            container_path: "/x".into(),
            host_path: evil_dir.display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        let id = create_start(&mut rt, &pod, &pcfg, c).await;
        let st = wait_exited(&mut rt, &id, 20).await;
        log = std::fs::read_to_string(d.dir.path().join(format!("logs/evil{n}.log")))
            .unwrap_or_default();
        assert_ne!(st.exit_code, 0, "no workload ran: {log}");
        rt.remove_container(api::RemoveContainerRequest { container_id: id })
            .await
            .unwrap();
        if !seen.lock().unwrap().is_empty() {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    watch.join().unwrap();
    let seen = seen.lock().unwrap().clone();
    eprintln!("sightings of ferrio run again in the container: {seen:?} (last log: {log:?})");
    for (dev, ino, seals) in &seen {
        assert_ne!(
            (*dev, *ino),
            host_id,
            "a process in the container runs the host's binary"
        );
        assert!(
            seals.is_some_and(|s| s & libc::F_SEAL_WRITE != 0),
            "what it runs is sealed: {seals:?}"
        );
    }

    // The helpers a container's processes start from — the container's monitor (its init is
    // a clone of it) and the ExecSync helper — run the sealed copy, not the host's binary,
    // and it takes no write.
    let id = create_start(&mut rt, &pod, &pcfg, sh_container("c", &image, "sleep 300")).await;
    let mut exec = rt.clone();
    let id2 = id.clone();
    let running = tokio::spawn(async move { sh_in(&mut exec, &id2, "sleep 3").await });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // (`__exec` names nothing of this test: any running one is a ferrio daemon's, and each
    // must run a sealed copy.)
    let mut helpers: Vec<(i32, String)> = processes_containing(&d.dir.path().display().to_string())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("__monitor"))
        .collect();
    helpers.extend(
        processes_containing("__exec")
            .into_iter()
            .filter(|(_, cmd)| cmd.trim_end().ends_with(" __exec")),
    );
    assert!(
        helpers.iter().any(|(_, c)| c.contains("__monitor"))
            && helpers.iter().any(|(_, c)| c.contains("__exec")),
        "{id}: {helpers:?}"
    );
    for (pid, cmd) in &helpers {
        let m = std::fs::metadata(format!("/proc/{pid}/exe")).unwrap();
        assert_ne!((m.dev(), m.ino()), host_id, "{cmd}");
        let seals = exe_seals(*pid).unwrap_or(0);
        assert_ne!(seals & libc::F_SEAL_WRITE, 0, "{cmd}: seals {seals:#x}");
        // A running binary is not opened for writing (ETXTBSY); the seal refuses the write
        // once it is not running any more.
        match std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/exe"))
        {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY), "{e}"),
            Ok(mut f) => {
                use std::io::Write;
                let e = f.write_all(b"x").unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
            }
        }
    }
    let (_, _, code) = running.await.unwrap();
    assert_eq!(code, 0);
    finish_pod(&d, &pod).await;
}

/// Host directories bind-mounted onto themselves with a given propagation; everything mounted
/// at or below them is unmounted with the guard.
struct PropagationDirs {
    base: std::path::PathBuf,
}

impl PropagationDirs {
    fn new(dir: &std::path::Path) -> PropagationDirs {
        let base = dir.join("prop");
        let sh = |args: &[&str]| {
            let st = std::process::Command::new(args[0])
                .args(&args[1..])
                .status()
                .unwrap();
            assert!(st.success(), "{args:?}");
        };
        for name in ["shared", "private"] {
            let p = base.join(name);
            std::fs::create_dir_all(&p).unwrap();
            let p = p.to_str().unwrap();
            sh(&["mount", "--bind", p, p]);
            sh(&["mount", &format!("--make-{name}"), p]);
        }
        // A slave of the shared one.
        let slave = base.join("slave");
        std::fs::create_dir_all(&slave).unwrap();
        let shared = base.join("shared");
        sh(&[
            "mount",
            "--bind",
            shared.to_str().unwrap(),
            slave.to_str().unwrap(),
        ]);
        sh(&["mount", "--make-slave", slave.to_str().unwrap()]);
        PropagationDirs { base }
    }
    fn path(&self, name: &str) -> String {
        self.base.join(name).display().to_string()
    }
}

impl Drop for PropagationDirs {
    fn drop(&mut self) {
        for p in mounts_containing(&self.base.display().to_string())
            .iter()
            .rev()
        {
            let _ = std::process::Command::new("umount")
                .args(["-l", p])
                .status();
        }
    }
}

/// Bidirectional: a mount the container makes in the volume appears on the host; HostToContainer
/// and Bidirectional: one the host makes appears in the container. Sources that cannot keep
/// that promise are FailedPrecondition naming the path. Every handler.
#[tokio::test(flavor = "multi_thread")]
async fn mount_propagation_both_ways_and_sources_that_cannot_propagate() {
    e2e!();
    let (d, image) = daemon_with_busybox().await;
    let dirs = PropagationDirs::new(d.dir.path());
    let mut rt = d.runtime().await;
    let mount = |path: &str, host: &str, p: api::MountPropagation| api::Mount {
        container_path: path.into(),
        host_path: host.into(),
        propagation: p as i32,
        ..Default::default()
    };
    use api::MountPropagation::{
        PropagationBidirectional as Bi, PropagationHostToContainer as H2c,
    };
    for handler in ["", "runc", "crun"] {
        let mut pcfg = pod_config(&format!("prop{handler}"), &d.dir.path().join("logs"));
        let lin = pcfg.linux.as_mut().unwrap();
        lin.security_context.as_mut().unwrap().privileged = true;
        let pod = run_pod(&mut rt, pcfg.clone(), handler).await;
        let sec = api::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        let id = create_start(
            &mut rt,
            &pod,
            &pcfg,
            secured(
                "c",
                &image,
                sec.clone(),
                vec![
                    mount("/bi", &dirs.path("shared"), Bi),
                    mount("/h2c", &dirs.path("shared"), H2c),
                    mount("/fromslave", &dirs.path("slave"), H2c),
                ],
            ),
        )
        .await;
        // Container → host.
        let inner = format!("in{handler}");
        let (_, err, code) = sh_in(
            &mut rt,
            &id,
            &format!("mkdir -p /bi/{inner} && mount -t tmpfs tmpfs /bi/{inner} && echo hi > /bi/{inner}/f"),
        )
        .await;
        assert_eq!(code, 0, "{handler:?}: {err}");
        let host_file = dirs.base.join("shared").join(&inner).join("f");
        assert_eq!(
            std::fs::read_to_string(&host_file)
                .unwrap_or_default()
                .trim(),
            "hi",
            "{handler:?}: the container's mount reached the host"
        );
        // Host → container, through the shared source and through the slave one.
        let outer = dirs.base.join("shared").join(format!("out{handler}"));
        std::fs::create_dir_all(&outer).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&outer)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::write(outer.join("g"), "x").unwrap();
        for p in ["/bi", "/h2c", "/fromslave"] {
            let (out, err, _) = sh_in(&mut rt, &id, &format!("cat {p}/out{handler}/g")).await;
            assert_eq!(out, "x", "{handler:?}: host mount seen at {p}: {err}");
        }
        // Sources that cannot propagate.
        for (name, m, why) in [
            (
                "bi-private",
                mount("/x", &dirs.path("private"), Bi),
                "not a shared mount",
            ),
            (
                "bi-slave",
                mount("/x", &dirs.path("slave"), Bi),
                "not a shared mount",
            ),
            (
                "h2c-private",
                mount("/x", &dirs.path("private"), H2c),
                "not a shared or slave mount",
            ),
        ] {
            let e = create_err(
                &mut rt,
                &pod.id,
                secured(name, &image, sec.clone(), vec![m]),
            )
            .await;
            assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{name}: {e:?}");
            assert!(
                e.message()
                    .contains(&dirs.path(name.split('-').nth(1).unwrap()))
                    && e.message().contains(why),
                "{name}: {e:?}"
            );
        }
        finish_pod(&d, &pod).await;
    }
    drop(dirs);
}
