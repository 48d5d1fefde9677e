//! The node suite: ferrio on a real node — systemd as PID 1, cgroup v2 only, AppArmor enforcing —
//! installed by `ferrio install` and run by systemd, as an operator runs it. It runs inside the
//! VM that `hack/node-vm.sh test` boots (every test is `#[ignore]`d elsewhere: this machine is
//! not such a node), against the daemon on /run/ferrio/ferrio.sock.
mod common;

use common::*;
use ferrio::cri::api::runtime_service_client::RuntimeServiceClient;
use ferrio::cri::api::{self};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const SOCKET: &str = "/run/ferrio/ferrio.sock";
const DROPIN: &str = "/etc/ferrio/ferrio.d/50-node-test.toml";

/// The tests share one daemon, one config and one systemd: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn sh(cmd: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

fn must(cmd: &str) -> String {
    let (ok, out) = sh(cmd);
    assert!(ok, "{cmd}: {out}");
    out
}

fn bin() -> PathBuf {
    PathBuf::from(
        std::env::var("FERRIO_NODE_BIN").unwrap_or_else(|_| "/var/tmp/node/ferrio".into()),
    )
}

fn main_pid() -> u32 {
    must("systemctl show -p MainPID --value ferrio.service")
        .trim()
        .parse()
        .unwrap()
}

fn wait_socket() {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(SOCKET).is_err() {
        assert!(Instant::now() < deadline, "no socket: {}", journal(40));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn journal(n: usize) -> String {
    sh(&format!("journalctl -u ferrio --no-pager -q -n {n}")).1
}

/// ferrio installed (binary, unit, config, CNI bridge) and running under systemd, with the
/// given drop-in (empty: none) in force.
fn node(dropin: &str) {
    if !Path::new("/etc/systemd/system/ferrio.service").exists() {
        let out = must(&format!("{} install --cni-bridge --now", bin().display()));
        eprintln!("ferrio install:\n{out}");
    }
    let want = (!dropin.is_empty()).then(|| dropin.to_string());
    let have = std::fs::read_to_string(DROPIN).ok();
    if want != have {
        match &want {
            Some(t) => {
                std::fs::create_dir_all("/etc/ferrio/ferrio.d").unwrap();
                std::fs::write(DROPIN, t).unwrap();
            }
            None => {
                let _ = std::fs::remove_file(DROPIN);
            }
        }
        must("systemctl restart ferrio.service");
    } else if !sh("systemctl is-active -q ferrio.service").0 {
        must("systemctl start ferrio.service");
    }
    wait_socket();
}

async fn runtime() -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(ferrio::cli::connect(Path::new(SOCKET)).await.unwrap())
}

/// The busybox test image, imported through the daemon.
fn busybox() -> String {
    let images =
        std::env::var("FERRIO_TEST_IMAGES").unwrap_or_else(|_| "/var/tmp/node/images".into());
    must(&format!(
        "{} image import {images}/busybox.tar",
        bin().display()
    ));
    "localhost/ferrio-test/busybox:latest".into()
}

fn pod_with(name: &str, parent: &str) -> api::PodSandboxConfig {
    let mut p = pod_config(name, Path::new("/var/log/ferrio-node-test"));
    p.linux.as_mut().unwrap().cgroup_parent = parent.into();
    p
}

async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.stop_pod_sandbox(api::StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

/// The cgroup v2 path of a process (`0::/…`).
fn cgroup_of(pid: impl std::fmt::Display) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("")
        .to_string()
}

async fn exec(rt: &mut RuntimeServiceClient<Channel>, id: &str, cmd: &str) -> (i32, String) {
    let (out, err, code) = sh_in(rt, id, cmd).await;
    (code, format!("{out}{err}"))
}

/// ContainerStats of `id`.
async fn stats_of(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> api::ContainerStats {
    rt.container_stats(api::ContainerStatsRequest {
        container_id: id.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .stats
    .unwrap()
}

/// The container's verbose status info (pid, monitorPid, cgroup, …).
async fn info_of(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> serde_json::Value {
    let r = rt
        .container_status(api::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&r.info["info"]).unwrap()
}

/// The container's init pid.
async fn init_pid(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> i64 {
    info_of(rt, id).await["pid"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the node suite runs in the node VM: hack/node-vm.sh test"]
async fn installed_unit_serves_a_pod_on_the_cni_bridge() {
    let _g = SERIAL.lock().await;
    node("");
    let unit = std::fs::read_to_string("/etc/systemd/system/ferrio.service").unwrap();
    for want in [
        "Type=notify",
        "KillMode=process",
        "Delegate=yes",
        "OOMScoreAdjust=-999",
    ] {
        assert!(unit.contains(want), "{want} in {unit}");
    }
    assert_eq!(must("systemctl is-active ferrio.service").trim(), "active");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/oom_score_adj", main_pid()))
            .unwrap()
            .trim(),
        "-999"
    );
    let image = busybox();
    let mut rt = runtime().await;
    let st = rt
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let conds = st.status.unwrap().conditions;
    assert!(conds.iter().all(|c| c.status), "{conds:?}");
    let pcfg = pod_with("bridge", "");
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let ps = rt
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: pod.id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let ip = ps.network.unwrap().ip;
    assert!(ip.starts_with("10.88."), "pod ip {ip}");
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container(
            "web",
            &image,
            "echo hello from the node; exec httpd -f -p 8080 -h /etc",
        ),
    )
    .await;
    // Reached from the node over the bridge (bash's /dev/tcp: the node has no HTTP client).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, out) = sh(&format!(
            "timeout 5 bash -c 'exec 3<>/dev/tcp/{ip}/8080; printf \"GET /hostname HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'"
        ));
        if out.contains("bridge") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod {ip}:8080 not reached from the node: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, out) = exec(&mut rt, &id, "wget -q -O - http://127.0.0.1:8080/hostname").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("bridge"), "{out}");
    let log = std::fs::read_to_string(pod.logs.join("web.log")).unwrap();
    assert!(log.contains("stdout F hello from the node"), "{log}");
    // Stats on cgroup v2.
    let stats = stats_of(&mut rt, &id).await;
    let mem = stats.memory.unwrap();
    assert!(mem.working_set_bytes.unwrap().value > 0, "{mem:?}");
    let cpu = stats.cpu.unwrap();
    assert!(cpu.usage_core_nano_seconds.unwrap().value > 0);
    // PSI from cgroup v2 (the node boots with psi=1: Debian's kernel leaves it off by default).
    assert!(cpu.psi.is_some(), "no CPU PSI: {cpu:?}");
    assert!(mem.psi.is_some(), "no memory PSI");
    // The monitor is out of the daemon's cgroup, in the pod's.
    let pid = init_pid(&mut rt, &id).await;
    let cg = cgroup_of(pid);
    assert!(
        cg.starts_with(&format!("/ferrio/pod-{}/ferrio-", pod.id)),
        "{cg}"
    );
    let daemon_cg = cgroup_of(main_pid());
    assert_eq!(daemon_cg, "/system.slice/ferrio.service");
    // The monitor is protected from the OOM killer as the daemon is; the container is not.
    let monitor_pid = info_of(&mut rt, &id).await["monitorPid"].as_i64().unwrap();
    assert_eq!(
        must(&format!("cat /proc/{monitor_pid}/oom_score_adj")).trim(),
        "-999"
    );
    assert_ne!(
        must(&format!("cat /proc/{pid}/oom_score_adj")).trim(),
        "-999"
    );
    let monitors = must(&format!(
        "cat /sys/fs/cgroup/ferrio/pod-{}/ferrio-monitors/cgroup.procs",
        pod.id
    ));
    assert_eq!(monitors.lines().count(), 1, "{monitors}");
    remove_pod(&mut rt, &pod.id).await;
    assert!(!Path::new(&format!("/sys/fs/cgroup/ferrio/pod-{}", pod.id)).exists());
}

/// Create+Start timings on this node (printed, not asserted).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the node suite runs in the node VM: hack/node-vm.sh test"]
async fn create_start_timing_on_the_node() {
    let _g = SERIAL.lock().await;
    node("");
    let image = busybox();
    let mut rt = runtime().await;
    let mut cfg = pod_with("timing", "");
    ns_options(&mut cfg).network = api::NamespaceMode::Node as i32;
    let pod = run_pod(&mut rt, cfg.clone(), "").await;
    let mut ms = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        let id = create_start(
            &mut rt,
            &pod,
            &cfg,
            sh_container(&format!("t{i}"), &image, "sleep 60"),
        )
        .await;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        rt.stop_container(api::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
        rt.remove_container(api::RemoveContainerRequest { container_id: id })
            .await
            .unwrap();
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "node: CreateContainer+StartContainer median {:.1} ms over {} (min {:.1}, max {:.1})",
        ms[ms.len() / 2],
        ms.len(),
        ms[0],
        ms[ms.len() - 1]
    );
    remove_pod(&mut rt, &pod.id).await;
}

/// kubelet's systemd driver: slice parents, scopes through systemd, resources as properties.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the node suite runs in the node VM: hack/node-vm.sh test"]
async fn systemd_driver_slices_and_scopes() {
    let _g = SERIAL.lock().await;
    node("[runtime]\ncgroup_driver = \"systemd\"\n");
    let image = busybox();
    let mut rt = runtime().await;
    let rc = rt
        .runtime_config(api::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        api::CgroupDriver::Systemd as i32
    );
    // A cgroupfs path is refused with the systemd driver.
    let e = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_with("bad", "/kubepods/x")),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("slice"), "{e}");
    for handler in ["", "runc", "crun"] {
        let uid = format!("u{}{}", handler, std::process::id());
        let slice = format!("kubepods-besteffort-pod{uid}.slice");
        let pcfg = pod_with("slice", &slice);
        let pod = run_pod(&mut rt, pcfg.clone(), handler).await;
        let mut c = sh_container("c", &image, "echo up; sleep 600");
        c.linux = Some(api::LinuxContainerConfig {
            resources: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = create_start(&mut rt, &pod, &pcfg, c).await;
        let pid = init_pid(&mut rt, &id).await;
        let scope = format!("ferrio-{id}.scope");
        let want = format!("/kubepods.slice/kubepods-besteffort.slice/{slice}/{scope}");
        // crun puts the process in a `container` child of its delegated scope.
        let own = cgroup_of(pid);
        assert!(
            own == want || (handler == "crun" && own == format!("{want}/container")),
            "handler {handler:?}: {own} is not in {want}"
        );
        assert_eq!(
            must(&format!("systemctl is-active {scope}")).trim(),
            "active"
        );
        let dir = format!("/sys/fs/cgroup{want}");
        // The limit is on the scope (crun: on the scope or its `container` child).
        let limit = |file: &str| -> Vec<String> {
            [dir.clone(), format!("/sys/fs/cgroup{own}")]
                .iter()
                .map(|d| sh(&format!("cat {d}/{file}")).1.trim().to_string())
                .collect()
        };
        let mem64 = (64u64 << 20).to_string();
        assert!(
            limit("memory.max").contains(&mem64),
            "handler {handler:?}: {:?}",
            limit("memory.max")
        );
        assert!(
            limit("cpu.max").contains(&"50000 100000".to_string()),
            "{:?}",
            limit("cpu.max")
        );
        // Updates go through systemd too: systemd's own view follows.
        rt.update_container_resources(api::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        let mem96 = (96u64 << 20).to_string();
        assert!(
            limit("memory.max").contains(&mem96),
            "handler {handler:?}: {:?}",
            limit("memory.max")
        );
        if handler.is_empty() {
            // Pod-level resources: the slice's properties, through systemd.
            rt.update_pod_sandbox_resources(api::UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: pod.id.clone(),
                resources: Some(api::LinuxContainerResources {
                    memory_limit_in_bytes: 256 << 20,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
            let slice_dir =
                format!("/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/{slice}");
            assert_eq!(
                must(&format!("cat {slice_dir}/memory.max")).trim(),
                (256u64 << 20).to_string()
            );
            assert_eq!(
                must(&format!("systemctl show -p MemoryMax --value {slice}")).trim(),
                (256u64 << 20).to_string()
            );
            assert_eq!(
                must(&format!("systemctl show -p MemoryMax --value {scope}")).trim(),
                (96u64 << 20).to_string()
            );
        }
        // Stats and pod stats read the scope and the slice.
        let stats = stats_of(&mut rt, &id).await;
        assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
        let pstats = rt
            .pod_sandbox_stats(api::PodSandboxStatsRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let linux = pstats.linux.unwrap();
        assert!(linux.memory.unwrap().working_set_bytes.unwrap().value > 0);
        assert_eq!(linux.containers.len(), 1);
        // The monitor has its own scope in the pod's slice.
        let monitor = must(&format!(
            "systemctl show -p MainPID --value ferrio-monitor-{id}.scope"
        ));
        let mscope = must(&format!("systemctl is-active ferrio-monitor-{id}.scope"));
        assert_eq!(mscope.trim(), "active", "{monitor}");
        remove_pod(&mut rt, &pod.id).await;
        assert!(
            !sh(&format!("systemctl is-active -q {scope}")).0,
            "{scope} still active"
        );
        assert!(!Path::new(&dir).exists());
    }
    // A pod with no parent gets ferrio's own slice, stopped with the pod; its pause (a shared
    // PID namespace) has a scope there too.
    let mut pcfg = pod_with("own", "");
    ns_options(&mut pcfg).pid = api::NamespaceMode::Pod as i32;
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let id = create_start(&mut rt, &pod, &pcfg, sh_container("c", &image, "sleep 600")).await;
    let pid = init_pid(&mut rt, &id).await;
    let slice = format!("ferrio-pod{}.slice", pod.id);
    assert_eq!(
        cgroup_of(pid),
        format!("/ferrio.slice/{slice}/ferrio-{id}.scope")
    );
    let pause = format!("ferrio-pause-{}.scope", pod.id);
    assert_eq!(
        must(&format!("systemctl is-active {pause}")).trim(),
        "active"
    );
    remove_pod(&mut rt, &pod.id).await;
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/ferrio.slice/{slice}")).exists(),
        "{slice} left"
    );
}

/// kubelet's cgroupfs driver on a cgroup v2 host: its pod paths, resources, pod resources.
/// A minimal NRI plugin on the node's default NRI socket: it registers as `idx-name`,
/// subscribes to CreateContainer and answers it with `adjust`. Dropping the trunk ends it.
async fn nri_plugin(
    name: &str,
    idx: &str,
    adjust: ferrio::nri::api::ContainerAdjustment,
) -> ferrio::nri::mux::Trunk {
    use ferrio::nri::api as nri;
    use ferrio::nri::{mux, ttrpc};
    use prost::Message;
    let stream = tokio::net::UnixStream::connect("/var/run/nri/nri.sock")
        .await
        .expect("the NRI socket");
    let (trunk, c1, c2) = mux::split(stream);
    tokio::spawn(ttrpc::serve(
        trunk.clone(),
        mux::PLUGIN_SERVICE_CONN,
        c1,
        move |_service, method, _payload| {
            let adjust = adjust.clone();
            Box::pin(async move {
                Ok(match method.as_str() {
                    "Configure" => nri::ConfigureResponse {
                        events: i32::try_from(ferrio::nri::bit(nri::Event::CreateContainer))
                            .unwrap(),
                    }
                    .encode_to_vec(),
                    "Synchronize" => nri::SynchronizeResponse::default().encode_to_vec(),
                    "CreateContainer" => nri::CreateContainerResponse {
                        adjust: Some(adjust),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                    _ => Vec::new(),
                })
            })
        },
    ));
    let client = ttrpc::Client::new(trunk.clone(), mux::RUNTIME_SERVICE_CONN, c2);
    register_nri_plugin(&client, name, idx).await;
    // Registered once `ferrio status` lists it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !must(&format!("{} status", bin().display())).contains(&format!("{idx}-{name}")) {
        assert!(Instant::now() < deadline, "{idx}-{name} never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    trunk
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the node suite runs in the node VM: hack/node-vm.sh test"]
async fn nri_plugin_adjusts_a_container_under_systemd_on_cgroup_v2() {
    use ferrio::nri::api as nri;
    let _g = SERIAL.lock().await;
    node("[runtime]\ncgroup_driver = \"systemd\"\n");
    let image = busybox();
    let plugin = nri_plugin(
        "node-test",
        "50",
        nri::ContainerAdjustment {
            env: vec![nri::KeyValue {
                key: "NRI_NODE".into(),
                value: "adjusted".into(),
            }],
            linux: Some(nri::LinuxContainerAdjustment {
                resources: Some(nri::LinuxResources {
                    memory: Some(nri::LinuxMemory {
                        limit: Some(nri::OptionalInt64 { value: 48 << 20 }),
                        ..Default::default()
                    }),
                    unified: [("memory.high".to_string(), "41943040".to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let mut rt = runtime().await;
    let slice = format!("kubepods-besteffort-podnri{}.slice", std::process::id());
    let pcfg = pod_with("nri", &slice);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let id = create_start(&mut rt, &pod, &pcfg, sh_container("c", &image, "sleep 600")).await;
    let (code, out) = exec(&mut rt, &id, "echo $NRI_NODE").await;
    assert_eq!((code, out.trim()), (0, "adjusted"));
    let own = cgroup_of(init_pid(&mut rt, &id).await);
    assert!(own.ends_with(&format!("ferrio-{id}.scope")), "{own}");
    let dir = format!("/sys/fs/cgroup{own}");
    assert_eq!(
        must(&format!("cat {dir}/memory.max")).trim(),
        (48u64 << 20).to_string()
    );
    assert_eq!(must(&format!("cat {dir}/memory.high")).trim(), "41943040");
    plugin.close().await;
    remove_pod(&mut rt, &pod.id).await;
    assert!(!Path::new(&dir).exists(), "{dir} left");
}

/// What `cat /state` prints in container `id` (a number the counter wrote).
async fn state_of(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> u64 {
    let (code, out) = exec(rt, id, "cat /state").await;
    assert_eq!(code, 0, "{out}");
    out.trim().parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the node suite runs in the node VM: hack/node-vm.sh test"]
async fn checkpoint_and_builtin_restore_under_systemd_on_cgroup_v2() {
    let _g = SERIAL.lock().await;
    // Debian's criu from PATH (`runtime.criu_path`'s default).
    node("[runtime]\ncgroup_driver = \"systemd\"\n");
    let image = busybox();
    let mut rt = runtime().await;
    let slice = format!("kubepods-besteffort-podckpt{}.slice", std::process::id());
    let pcfg = pod_with("ckpt", &slice);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let counter = "i=0; while :; do i=$((i+1)); echo $i > /state; sleep 0.1; done";
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("counter", &image, counter),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while state_of(&mut rt, &id).await < 10 {
        assert!(Instant::now() < deadline, "the counter did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let archive = "/var/tmp/ferrio-node-checkpoint.tar";
    rt.checkpoint_container(api::CheckpointContainerRequest {
        container_id: id.clone(),
        location: archive.into(),
        timeout: 120,
    })
    .await
    .unwrap_or_else(|e| panic!("checkpoint: {e:?}\n{}", journal(60)));
    let at_checkpoint = state_of(&mut rt, &id).await;
    remove_pod(&mut rt, &pod.id).await;

    // Restored by the built-in handler in a new pod: a scope of its own under the new slice,
    // counting on from its memory.
    let slice2 = format!(
        "kubepods-besteffort-podrestored{}.slice",
        std::process::id()
    );
    let pcfg2 = pod_with("restored", &slice2);
    let pod2 = run_pod(&mut rt, pcfg2.clone(), "").await;
    let mut c = sh_container("restored", archive, "");
    c.command.clear();
    let rid = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod2.id.clone(),
            config: Some(c),
            sandbox_config: Some(pcfg2.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("restore: {e:?}\n{}", journal(60)))
        .into_inner()
        .container_id;
    rt.start_container(api::StartContainerRequest {
        container_id: rid.clone(),
    })
    .await
    .unwrap();
    let first = state_of(&mut rt, &rid).await;
    assert!(
        first + 5 >= at_checkpoint,
        "restored at {first}, checkpointed at {at_checkpoint}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        state_of(&mut rt, &rid).await > first,
        "it does not count on"
    );
    let own = cgroup_of(init_pid(&mut rt, &rid).await);
    assert!(
        own.contains(&slice2) && own.ends_with(&format!("ferrio-{rid}.scope")),
        "{own}"
    );
    let dir = format!("/sys/fs/cgroup{own}");
    remove_pod(&mut rt, &pod2.id).await;
    assert!(!Path::new(&dir).exists(), "{dir} left");
    let _ = std::fs::remove_file(archive);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the node suite runs in the node VM: hack/node-vm.sh test"]
async fn cgroupfs_driver_on_cgroup_v2() {
    let _g = SERIAL.lock().await;
    node("");
    let image = busybox();
    let mut rt = runtime().await;
    for handler in ["", "runc", "crun"] {
        let parent = format!("/kubepods/besteffort/pod{}{}", handler, std::process::id());
        let pcfg = pod_with("fs", &parent);
        let pod = run_pod(&mut rt, pcfg.clone(), handler).await;
        let mut c = sh_container("c", &image, "sleep 600");
        c.linux = Some(api::LinuxContainerConfig {
            resources: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                unified: [("memory.high".to_string(), "50331648".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = create_start(&mut rt, &pod, &pcfg, c).await;
        let pid = init_pid(&mut rt, &id).await;
        let want = format!("{parent}/ferrio-{id}");
        assert_eq!(cgroup_of(pid), want, "handler {handler:?}");
        let dir = format!("/sys/fs/cgroup{want}");
        assert_eq!(
            must(&format!("cat {dir}/memory.max")).trim(),
            (64u64 << 20).to_string()
        );
        assert_eq!(must(&format!("cat {dir}/memory.high")).trim(), "50331648");
        rt.update_container_resources(api::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: 80 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(
            must(&format!("cat {dir}/memory.max")).trim(),
            (80u64 << 20).to_string()
        );
        rt.update_pod_sandbox_resources(api::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.id.clone(),
            resources: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: 256 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(
            must(&format!("cat /sys/fs/cgroup{parent}/memory.max")).trim(),
            (256u64 << 20).to_string()
        );
        let stats = stats_of(&mut rt, &id).await;
        assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
        remove_pod(&mut rt, &pod.id).await;
        assert!(!Path::new(&dir).exists(), "{dir} left");
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup{parent}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the node suite runs in the node VM: hack/node-vm.sh test"]
async fn oom_killed_on_cgroup_v2() {
    let _g = SERIAL.lock().await;
    node("");
    let image = busybox();
    let mut rt = runtime().await;
    for handler in ["", "runc"] {
        let pcfg = pod_with("oom", "");
        let pod = run_pod(&mut rt, pcfg.clone(), handler).await;
        let mut c = sh_container("hog", &image, "head -c 200000000 /dev/zero | tail");
        c.linux = Some(api::LinuxContainerConfig {
            resources: Some(api::LinuxContainerResources {
                memory_limit_in_bytes: 16 << 20,
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = create_start(&mut rt, &pod, &pcfg, c).await;
        let st = wait_exited(&mut rt, &id, 120).await;
        assert_eq!(st.reason, "OOMKilled", "handler {handler:?}: {st:?}");
        remove_pod(&mut rt, &pod.id).await;
    }
}

/// `systemctl restart ferrio` (and stop + start) leaves every container running, its log
/// flowing without a gap, and its status right afterwards.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the node suite runs in the node VM: hack/node-vm.sh test"]
async fn systemctl_restart_keeps_containers() {
    let _g = SERIAL.lock().await;
    node("");
    let image = busybox();
    let mut rt = runtime().await;
    let pcfg = pod_with("restart", "");
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let counter = "i=0; while true; do echo n=$i; i=$((i+1)); sleep 0.1; done";
    let a = create_start(&mut rt, &pod, &pcfg, sh_container("a", &image, counter)).await;
    let b = create_start(&mut rt, &pod, &pcfg, sh_container("b", &image, counter)).await;
    let (pa, pb) = (init_pid(&mut rt, &a).await, init_pid(&mut rt, &b).await);
    std::thread::sleep(Duration::from_millis(500));
    let before = main_pid();
    must("systemctl restart ferrio.service");
    wait_socket();
    assert_ne!(main_pid(), before);
    std::thread::sleep(Duration::from_millis(300));
    must("systemctl stop ferrio.service");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        Path::new(&format!("/proc/{pa}")).exists(),
        "container a died with the daemon"
    );
    must("systemctl start ferrio.service");
    wait_socket();
    std::thread::sleep(Duration::from_millis(500));
    let mut rt = runtime().await;
    for (id, pid) in [(&a, pa), (&b, pb)] {
        let st = ctr_status(&mut rt, id).await;
        assert_eq!(
            st.state,
            api::ContainerState::ContainerRunning as i32,
            "{st:?}"
        );
        assert_eq!(init_pid(&mut rt, id).await, pid, "same init after restarts");
        assert!(Path::new(&format!("/proc/{pid}")).exists());
    }
    // The log has every number, in order: nothing was lost while the daemon was away.
    let log = std::fs::read_to_string(pod.logs.join("a.log")).unwrap();
    let nums: Vec<u64> = log
        .lines()
        .filter_map(|l| l.rsplit_once("n=").and_then(|(_, n)| n.parse().ok()))
        .collect();
    assert!(nums.len() > 15, "{log}");
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "a gap in the log: {log}");
    }
    let (code, out) = exec(&mut rt, &a, "echo exec-after-restart").await;
    assert_eq!((code, out.trim()), (0, "exec-after-restart"));
    rt.stop_container(api::StopContainerRequest {
        container_id: a.clone(),
        timeout: 5,
    })
    .await
    .unwrap();
    let st = ctr_status(&mut rt, &a).await;
    assert_eq!(
        st.state,
        api::ContainerState::ContainerExited as i32,
        "{st:?}"
    );
    remove_pod(&mut rt, &pod.id).await;
    assert!(!Path::new(&format!("/proc/{pb}")).exists());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "the node suite runs in the node VM: hack/node-vm.sh test"]
async fn apparmor_default_profile_confines_containers() {
    let _g = SERIAL.lock().await;
    node("");
    let profiles = std::fs::read_to_string("/sys/kernel/security/apparmor/profiles").unwrap();
    assert!(profiles.contains("ferrio-default (enforce)"), "{profiles}");
    let image = busybox();
    let mut rt = runtime().await;
    let pcfg = pod_with("aa", "");
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let mk = |name: &str, aa: Option<api::SecurityProfile>| {
        let mut c = sh_container(name, &image, "sleep 600");
        c.linux = Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                capabilities: Some(api::Capability {
                    add_capabilities: vec!["SYS_ADMIN".into()],
                    ..Default::default()
                }),
                apparmor: aa,
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    };
    let confined = create_start(&mut rt, &pod, &pcfg, mk("confined", None)).await;
    let free = create_start(
        &mut rt,
        &pod,
        &pcfg,
        mk(
            "free",
            Some(api::SecurityProfile {
                profile_type: api::security_profile::ProfileType::Unconfined as i32,
                ..Default::default()
            }),
        ),
    )
    .await;
    let (_, label) = exec(&mut rt, &confined, "cat /proc/self/attr/current").await;
    assert_eq!(label.trim(), "ferrio-default (enforce)");
    let (code, out) = exec(&mut rt, &confined, "mkdir -p /m && mount -t tmpfs t /m").await;
    assert_ne!(code, 0, "mount allowed under ferrio-default: {out}");
    assert!(out.contains("denied"), "{out}");
    let (_, label) = exec(&mut rt, &free, "cat /proc/self/attr/current").await;
    assert_eq!(label.trim(), "unconfined");
    let (code, out) = exec(
        &mut rt,
        &free,
        "mkdir -p /m && mount -t tmpfs t /m && echo mounted",
    )
    .await;
    assert_eq!((code, out.trim()), (0, "mounted"));
    // A Localhost profile that is not loaded is refused, naming it.
    let e = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(mk(
                "missing",
                Some(api::SecurityProfile {
                    profile_type: api::security_profile::ProfileType::Localhost as i32,
                    localhost_ref: "no-such-profile".into(),
                }),
            )),
            sandbox_config: Some(pcfg.clone()),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("no-such-profile"), "{e}");
    remove_pod(&mut rt, &pod.id).await;
    // Unloaded and brought back by the daemon's reload.
    must("apparmor_parser -R /run/ferrio/apparmor/ferrio-default");
    assert!(
        !std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
            .unwrap()
            .contains("ferrio-default")
    );
    must("systemctl reload ferrio.service");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
        .unwrap()
        .contains("ferrio-default (enforce)")
    {
        assert!(
            Instant::now() < deadline,
            "profile not reloaded: {}",
            journal(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGHUP (`systemctl reload`) reloads the log level and registries.conf, keeps the old file
/// when a new one is bad, and never exits.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the node suite runs in the node VM: hack/node-vm.sh test"]
async fn sighup_reloads_and_keeps_the_daemon() {
    let _g = SERIAL.lock().await;
    let regs = "/etc/ferrio/node-test-registries.conf";
    std::fs::write(regs, "unqualified-search-registries = []\n").unwrap();
    node(&format!("[image]\nregistries_conf = \"{regs}\"\n"));
    let pid = main_pid();
    let dropin = std::fs::read_to_string(DROPIN).unwrap();
    std::fs::write(DROPIN, format!("log_level = \"debug\"\n{dropin}")).unwrap();
    must("systemctl reload ferrio.service");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !journal(50).contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", journal(50));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(journal(50).contains("log_level=debug"), "{}", journal(50));
    // A bad registries.conf: logged, the old one kept, the daemon serving.
    std::fs::write(regs, "this is [not toml").unwrap();
    must("systemctl reload ferrio.service");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !journal(50).contains("not load") && !journal(50).contains("kept") {
        assert!(Instant::now() < deadline, "{}", journal(50));
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..3 {
        must("systemctl kill -s HUP ferrio.service");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(main_pid(), pid, "SIGHUP must not restart the daemon");
    assert_eq!(must("systemctl is-active ferrio.service").trim(), "active");
    let mut rt = runtime().await;
    rt.version(api::VersionRequest::default()).await.unwrap();
    let _ = std::fs::remove_file(regs);
    let _ = std::fs::remove_file(DROPIN);
    must("systemctl restart ferrio.service");
    wait_socket();
}

/// Last (by name): `ferrio uninstall` removes the unit and the binary and keeps the config and
/// the images unless asked.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "the node suite runs in the node VM: hack/node-vm.sh test"]
async fn zz_uninstall_leaves_config_and_images() {
    let _g = SERIAL.lock().await;
    node("");
    busybox();
    let out = must("/usr/local/bin/ferrio uninstall");
    eprintln!("ferrio uninstall:\n{out}");
    assert!(!Path::new("/etc/systemd/system/ferrio.service").exists());
    assert!(!Path::new("/usr/local/bin/ferrio").exists());
    assert!(Path::new("/etc/ferrio/ferrio.toml").exists());
    assert!(Path::new("/var/lib/ferrio/images").exists());
    assert!(!sh("systemctl is-active -q ferrio.service").0);
}
