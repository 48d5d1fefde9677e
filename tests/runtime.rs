//! The runtime core end to end: real pods and containers (libcontainer inside ferrio, and runc
//! and crun as external handlers) from the local-registry test images, as root.

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;

async fn setup() -> (Daemon, String) {
    let reg = Registry::shared();
    let d = Daemon::start(DaemonOpts::default());
    let image = reg.image("ferrio-test/busybox:1.35");
    let mut images = d.images().await;
    pull(&mut images, &image).await.unwrap();
    (d, image)
}

fn read_log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The content of a CRI log: the records' content joined, with the streams, for assertions.
fn log_lines(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let ts = it.next().unwrap();
            assert!(chrono_like(ts), "bad timestamp in {l:?}");
            (
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
                it.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn chrono_like(ts: &str) -> bool {
    ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T'
}

async fn lifecycle(handler: &str) {
    let (d, image) = setup().await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("life", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), handler).await;
    let script = "echo hello; echo oops >&2; printf partial; exit 3";
    let id = create_start(&mut rt, &pod, &pcfg, sh_container("c1", &image, script)).await;
    let st = wait_exited(&mut rt, &id, 20).await;
    assert_eq!(st.exit_code, 3, "{st:?}");
    assert_eq!(st.reason, "Error");
    assert!(st.started_at > 0 && st.finished_at >= st.started_at && st.created_at > 0);
    let img = status(&mut d.images().await, &image).await.unwrap();
    assert_eq!(st.image_id, img.id);
    assert_eq!(st.image_ref, img.id);
    let lines = log_lines(&read_log(&logs.join("c1.log")));
    assert!(
        lines.contains(&("stdout".into(), "F".into(), "hello".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "F".into(), "oops".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stdout".into(), "P".into(), "partial".into())),
        "{lines:?}"
    );

    // A second container that completes.
    let ok = create_start(&mut rt, &pod, &pcfg, sh_container("c2", &image, "true")).await;
    let st = wait_exited(&mut rt, &ok, 20).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));

    let list = rt
        .list_containers(api::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(list.len(), 2);
    teardown(&d, &mut rt, &pod.id, &[&id, &ok]).await;
}

/// Stops and removes the pod (twice: both are idempotent), then asserts that nothing of it is
/// left.
async fn teardown(
    d: &Daemon,
    rt: &mut ferrio::cri::api::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    pod: &str,
    ctrs: &[&str],
) {
    for _ in 0..2 {
        rt.stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .unwrap();
    }
    assert_leaves_nothing(d, pod, ctrs);
}

/// After removal: no mount, pinned namespace, cgroup, process or directory of the pod or its
/// containers is left.
fn assert_leaves_nothing(d: &Daemon, pod: &str, ctrs: &[&str]) {
    for id in std::iter::once(pod).chain(ctrs.iter().copied()) {
        assert!(
            mounts_containing(id).is_empty(),
            "mounts left for {id}: {:?}",
            mounts_containing(id)
        );
        assert!(
            cgroups_containing(id).is_empty(),
            "cgroups left for {id}: {:?}",
            cgroups_containing(id)
        );
        assert!(
            processes_containing(id).is_empty(),
            "processes left for {id}: {:?}",
            processes_containing(id)
        );
    }
    let run = d.dir.path().join("run");
    for sub in ["pods", "ctr"] {
        let left = entries(&run.join(sub));
        assert!(left.is_empty(), "{sub} left: {left:?}");
    }
    let left = entries(&d.root.join("containers"));
    assert!(left.is_empty(), "container data left: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_and_container_lifecycle_builtin() {
    e2e!();
    lifecycle("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_and_container_lifecycle_runc() {
    e2e!();
    lifecycle("runc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_and_container_lifecycle_crun() {
    e2e!();
    lifecycle("crun").await;
}

async fn exec(
    rt: &mut ferrio::cri::api::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<api::ExecSyncResponse, tonic::Status> {
    rt.exec_sync(api::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_output_exit_code_and_timeout() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("exec").await;
    let mut rt = d.runtime().await;
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("sleeper", &image, "sleep 300"),
    )
    .await;

    let r = exec(
        &mut rt,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
        0,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            text(&r.stdout).as_str(),
            text(&r.stderr).as_str(),
            r.exit_code
        ),
        ("out", "err", 7)
    );
    // The exec joins the container: same hostname, same root.
    let r = exec(&mut rt, &id[..12], &["hostname"], 5).await.unwrap();
    assert_eq!(text(&r.stdout), "exec", "ID prefixes are accepted");

    // A timeout kills the command and everything it started.
    let t = std::time::Instant::now();
    let e = exec(&mut rt, &id, &["sh", "-c", "sleep 111 & sleep 222"], 1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    let ps = exec(&mut rt, &id, &["ps", "-o", "args"], 5).await.unwrap();
    let ps = text(&ps.stdout);
    assert!(
        !ps.contains("sleep 111") && !ps.contains("sleep 222"),
        "left running: {ps}"
    );
    assert!(ps.contains("sleep 300"), "{ps}");

    // A large output is capped at 16 MiB.
    let mut big = rt.clone().max_decoding_message_size(64 << 20);
    let r = exec(
        &mut big,
        &id,
        &["sh", "-c", "head -c 17000000 /dev/zero"],
        30,
    )
    .await
    .unwrap();
    assert_eq!(r.stdout.len(), 16 * 1024 * 1024);

    let e = exec(&mut rt, "nope", &["true"], 1).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    teardown(&d, &mut rt, &pod.id, &[&id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_escalates_to_sigkill_and_is_idempotent() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("stop").await;
    let mut rt = d.runtime().await;
    // A process that ignores SIGTERM; and one that exits on it.
    let stubborn = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container(
            "stubborn",
            &image,
            "trap '' TERM; echo ready; while :; do sleep 1; done",
        ),
    )
    .await;
    let polite = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container(
            "polite",
            &image,
            "trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    rt.stop_container(api::StopContainerRequest {
        container_id: stubborn.clone(),
        timeout: 2,
    })
    .await
    .unwrap();
    let waited = t.elapsed();
    assert!(
        waited >= std::time::Duration::from_secs(2),
        "SIGKILL came after the timeout, not before ({waited:?})"
    );
    let st = wait_exited(&mut rt, &stubborn, 5).await;
    assert_eq!(st.exit_code, 137, "{st:?}");
    rt.stop_container(api::StopContainerRequest {
        container_id: polite.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    let st = wait_exited(&mut rt, &polite, 5).await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{st:?}"
    );
    // Idempotent, and unknown IDs are fine.
    rt.stop_container(api::StopContainerRequest {
        container_id: stubborn.clone(),
        timeout: 2,
    })
    .await
    .unwrap();
    rt.stop_container(api::StopContainerRequest {
        container_id: "unknown".into(),
        timeout: 2,
    })
    .await
    .unwrap();
    rt.remove_container(api::RemoveContainerRequest {
        container_id: "unknown".into(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(api::StopPodSandboxRequest {
        pod_sandbox_id: "unknown".into(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: "unknown".into(),
    })
    .await
    .unwrap();
    rt.remove_container(api::RemoveContainerRequest {
        container_id: stubborn.clone(),
    })
    .await
    .unwrap();
    rt.remove_container(api::RemoveContainerRequest {
        container_id: stubborn.clone(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(api::StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    rt.stop_pod_sandbox(api::StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    teardown(&d, &mut rt, &pod.id, &[&stubborn, &polite]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_killed_under_a_15_mib_limit() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("oom").await;
    let mut rt = d.runtime().await;
    let mut c = sh_container("hog", &image, "head -c 200000000 /dev/zero | tail");
    c.linux = Some(api::LinuxContainerConfig {
        resources: Some(api::LinuxContainerResources {
            memory_limit_in_bytes: 15 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create_start(&mut rt, &pod, &pcfg, c).await;
    let st = wait_exited(&mut rt, &id, 60).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");
    assert_ne!(st.exit_code, 0);
    teardown(&d, &mut rt, &pod.id, &[&id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_of_a_pod_share_network_ipc_and_uts() {
    e2e!();
    let (d, image) = setup().await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let mut pcfg = pod_config("shared", &logs);
    pcfg.dns_config = Some(api::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["test.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    pcfg.linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "123".into());
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let server = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container(
            "server",
            &image,
            "echo hello-from-server > /tmp/index.html; httpd -f -p 8080 -h /tmp",
        ),
    )
    .await;
    let client = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("client", &image, "sleep 300"),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = exec(
        &mut rt,
        &client,
        &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"],
        10,
    )
    .await
    .unwrap();
    assert_eq!(text(&r.stdout), "hello-from-server", "{}", text(&r.stderr));
    let ns = |c: &str| {
        let c = c.to_string();
        let mut rt = rt.clone();
        async move {
            let r = exec(
                &mut rt,
                &c,
                &[
                    "sh",
                    "-c",
                    "for n in net ipc uts pid; do readlink /proc/self/ns/$n; done; hostname",
                ],
                5,
            )
            .await
            .unwrap();
            text(&r.stdout)
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        }
    };
    let (a, b) = (ns(&server).await, ns(&client).await);
    assert_eq!(a[..3], b[..3], "net, ipc and uts are the pod's");
    assert_ne!(a[3], b[3], "each container has its own PID namespace");
    assert_eq!(a[4], "shared");
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(a[0], host_net.to_string_lossy());
    let r = exec(
        &mut rt,
        &client,
        &[
            "cat",
            "/etc/resolv.conf",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
        ],
        5,
    )
    .await
    .unwrap();
    let out = text(&r.stdout);
    assert!(
        out.contains("nameserver 10.96.0.10")
            && out.contains("search test.svc.cluster.local")
            && out.contains("options ndots:5"),
        "{out}"
    );
    assert!(out.ends_with("123"), "sysctl applied in the pod: {out}");
    let r = exec(
        &mut rt,
        &client,
        &["sh", "-c", "df -k /dev/shm | tail -1"],
        5,
    )
    .await
    .unwrap();
    assert!(
        text(&r.stdout).contains("65536"),
        "64 MiB /dev/shm: {}",
        text(&r.stdout)
    );
    teardown(&d, &mut rt, &pod.id, &[&server, &client]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_network_and_shared_pid_namespace() {
    e2e!();
    let (d, image) = setup().await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let mut pcfg = pod_config("hostpid", &logs);
    let ns = ns_options(&mut pcfg);
    ns.network = api::NamespaceMode::Node as i32;
    ns.pid = api::NamespaceMode::Pod as i32;
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let shared_pid = |mut c: api::ContainerConfig| {
        c.linux = Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    pid: api::NamespaceMode::Pod as i32,
                    network: api::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    };
    let a = create_start(
        &mut rt,
        &pod,
        &pcfg,
        shared_pid(sh_container("a", &image, "sleep 301")),
    )
    .await;
    let b = create_start(
        &mut rt,
        &pod,
        &pcfg,
        shared_pid(sh_container("b", &image, "sleep 302")),
    )
    .await;
    let r = exec(&mut rt, &b, &["ps", "-o", "args"], 5).await.unwrap();
    assert!(
        text(&r.stdout).contains("sleep 301"),
        "b sees a's process: {}",
        text(&r.stdout)
    );
    let r = exec(&mut rt, &a, &["readlink", "/proc/self/ns/net"], 5)
        .await
        .unwrap();
    assert_eq!(
        text(&r.stdout),
        std::fs::read_link("/proc/self/ns/net")
            .unwrap()
            .to_string_lossy(),
        "host network"
    );
    let r = exec(&mut rt, &a, &["cat", "/proc/net/dev"], 5)
        .await
        .unwrap();
    let host_dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let names = |s: &str| {
        s.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(
        names(&text(&r.stdout)),
        names(&host_dev),
        "the host's interfaces"
    );
    teardown(&d, &mut rt, &pod.id, &[&a, &b]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_survive_a_daemon_kill_and_are_restored() {
    e2e!();
    let (mut d, image) = setup().await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("restart", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let ticker = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container(
            "ticker",
            &image,
            "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        ),
    )
    .await;
    let short = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("short", &image, "sleep 1; exit 4"),
    )
    .await;
    d.kill9();
    let before = read_log(&logs.join("ticker.log")).lines().count();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let after = read_log(&logs.join("ticker.log")).lines().count();
    assert!(
        after > before,
        "the container kept logging while the daemon was down ({before} → {after})"
    );
    let d2 = d.restart(DaemonOpts::default());
    let mut rt = d2.runtime().await;
    let st = ctr_status(&mut rt, &ticker).await;
    assert_eq!(
        st.state,
        api::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    let st = wait_exited(&mut rt, &short, 10).await;
    assert_eq!(
        st.exit_code, 4,
        "exit recorded while the daemon was down: {st:?}"
    );
    let p = pod_status(&mut rt, &pod.id).await;
    assert_eq!(p.state, api::PodSandboxState::SandboxReady as i32);
    let r = exec(&mut rt, &ticker, &["echo", "still here"], 5)
        .await
        .unwrap();
    assert_eq!(text(&r.stdout), "still here");
    teardown(&d2, &mut rt, &pod.id, &[&ticker, &short]).await;
    drop(d2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_codes() {
    e2e!();
    let (d, image) = setup().await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let code =
        |r: Result<tonic::Response<api::RunPodSandboxResponse>, tonic::Status>| r.unwrap_err();
    let mut bad = pod_config("bad", &logs);
    bad.metadata.as_mut().unwrap().namespace = "a/b".into();
    let e = code(
        rt.run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        })
        .await,
    );
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("namespace"), "{e:?}");
    let e = code(
        rt.run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_config("h", &logs)),
            runtime_handler: "kata".into(),
        })
        .await,
    );
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("kata"), "{e:?}");
    let mut bad = pod_config("cg", &logs);
    bad.linux.as_mut().unwrap().cgroup_parent = "/kubepods/../../etc".into();
    let e = code(
        rt.run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        })
        .await,
    );
    assert!(
        e.code() == tonic::Code::InvalidArgument && e.message().contains("cgroup_parent"),
        "{e:?}"
    );

    let pcfg = pod_config("ok", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    // The same pod name again is refused while the pod exists.
    let e = code(
        rt.run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pcfg.clone()),
            runtime_handler: String::new(),
        })
        .await,
    );
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    let mut c = sh_container("esc", &image, "true");
    c.log_path = "../../escape.log".into();
    let e = create_err(&mut rt, &pod.id, c).await;
    assert!(
        e.code() == tonic::Code::InvalidArgument && e.message().contains("log_path"),
        "{e:?}"
    );
    let e = create_err(
        &mut rt,
        &pod.id,
        sh_container("x", "no-such-image:1", "true"),
    )
    .await;
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = create_err(&mut rt, "nope", sh_container("x", &image, "true")).await;
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // A profile type the CRI does not define is refused, not read as Unconfined.
    for field in ["seccomp", "apparmor"] {
        let mut c = sh_container("prof", &image, "true");
        let profile = Some(api::SecurityProfile {
            profile_type: 7,
            localhost_ref: String::new(),
        });
        let sc = api::LinuxContainerSecurityContext {
            seccomp: if field == "seccomp" {
                profile.clone()
            } else {
                None
            },
            apparmor: if field == "apparmor" { profile } else { None },
            ..Default::default()
        };
        c.linux = Some(api::LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        });
        let e = create_err(&mut rt, &pod.id, c).await;
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains(field) && e.message().contains("profile_type"),
            "{e:?}"
        );
    }
    let e = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: None,
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = rt
        .container_status(api::ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = rt
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    // A missing mount source under a rejected prefix is refused; elsewhere it is created.
    let mut c = sh_container("mnt", &image, "true");
    c.mounts = vec![api::Mount {
        container_path: "/x".into(),
        host_path: "/proc/ferrio-no-such".into(),
        ..Default::default()
    }];
    let e = create_err(&mut rt, &pod.id, c).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // ReopenContainerLog of a container that does not run: an error, and no file.
    let id = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.id[..10].into(),
            config: Some(sh_container("idle", &image, "true")),
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    std::fs::remove_file(logs.join("idle.log")).unwrap();
    let e = rt
        .reopen_container_log(api::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(!logs.join("idle.log").exists());
    let e = rt
        .start_container(api::StartContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(d.log_text().lines().all(|l| !l.contains("panicked")));
    teardown(&d, &mut rt, &pod.id, &[&id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn users_seccomp_update_and_log_reopen() {
    e2e!();
    let (d, _) = setup().await;
    let reg = Registry::shared();
    let user_image = reg.image("ferrio-test/busybox-user");
    pull(&mut d.images().await, &user_image).await.unwrap();
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("sec", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let mut c = sh_container("u", &user_image, "id; sleep 300");
    c.linux = Some(api::LinuxContainerConfig {
        security_context: Some(api::LinuxContainerSecurityContext {
            supplemental_groups: vec![4321],
            seccomp: Some(api::SecurityProfile {
                profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }),
        resources: Some(api::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
    });
    let id = create_start(&mut rt, &pod, &pcfg, c).await;
    let st = ctr_status(&mut rt, &id).await;
    let user = st.user.unwrap().linux.unwrap();
    assert_eq!((user.uid, user.gid), (33, 33), "the image's www-data");
    assert!(user.supplemental_groups.contains(&4321));
    let r = exec(&mut rt, &id, &["id"], 5).await.unwrap();
    assert!(
        text(&r.stdout).starts_with("uid=33(www-data) gid=33(www-data)")
            && text(&r.stdout).contains("4321"),
        "{}",
        text(&r.stdout)
    );
    // RuntimeDefault seccomp on the container's process and on what is exec'd into it, without
    // a no_new_privs nobody asked for, and with no capability left from loading the filter
    // (ferrio lends CAP_SYS_ADMIN for the load; see runtime/seccomp.rs).
    for (who, path) in [
        ("init", "/proc/1/status"),
        ("exec'd process", "/proc/self/status"),
    ] {
        let r = exec(&mut rt, &id, &["cat", path], 5).await.unwrap();
        let st = text(&r.stdout);
        for want in [
            "Seccomp:\t2",
            "NoNewPrivs:\t0",
            "CapPrm:\t0000000000000000",
            "CapEff:\t0000000000000000",
        ] {
            assert!(st.contains(want), "{who}: {want} in {st}");
        }
    }
    let r = exec(&mut rt, &id, &["unshare", "-U", "true"], 5)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0, "an exec'd process is confined too");
    // UpdateContainerResources reaches the live cgroup.
    rt.update_container_resources(api::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(api::LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mem =
        ferrio::cgroups::memory_dir(&format!("{}/pod-{}/ferrio-{id}", d.cgroup_parent, pod.id))
            .unwrap();
    let limit = std::fs::read_to_string(mem.join("memory.limit_in_bytes"))
        .or_else(|_| std::fs::read_to_string(mem.join("memory.max")))
        .unwrap();
    assert_eq!(limit.trim(), (96u64 << 20).to_string());
    // ReopenContainerLog: after a rotation, new output goes to the new file.
    std::fs::rename(logs.join("u.log"), logs.join("u.log.1")).unwrap();
    rt.reopen_container_log(api::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    assert!(logs.join("u.log").exists());
    assert!(read_log(&logs.join("u.log.1")).contains("uid=33"));
    teardown(&d, &mut rt, &pod.id, &[&id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_default_seccomp_blocks_user_namespaces() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("seccomp").await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let with = |profile: i32, name: &str| {
        let mut c = sh_container(name, &image, "unshare -U true; echo rc=$?");
        c.linux = Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                seccomp: Some(api::SecurityProfile {
                    profile_type: profile,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    };
    // Unconfined: creating a user namespace needs no capability, so it works…
    let free = create_start(
        &mut rt,
        &pod,
        &pcfg,
        with(
            api::security_profile::ProfileType::Unconfined as i32,
            "free",
        ),
    )
    .await;
    // …and RuntimeDefault forbids it without CAP_SYS_ADMIN.
    let confined = create_start(
        &mut rt,
        &pod,
        &pcfg,
        with(
            api::security_profile::ProfileType::RuntimeDefault as i32,
            "confined",
        ),
    )
    .await;
    wait_exited(&mut rt, &free, 20).await;
    wait_exited(&mut rt, &confined, 20).await;
    assert!(
        read_log(&logs.join("free.log")).contains("rc=0"),
        "{}",
        read_log(&logs.join("free.log"))
    );
    let log = read_log(&logs.join("confined.log"));
    assert!(log.contains("rc=1") && !log.contains("rc=0"), "{log}");
    // A Localhost profile that is missing is a clear error naming the file.
    let mut c = with(
        api::security_profile::ProfileType::Localhost as i32,
        "missing",
    );
    c.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .seccomp
        .as_mut()
        .unwrap()
        .localhost_ref = "/nonexistent/profile.json".into();
    let e = create_err(&mut rt, &pod.id, c).await;
    assert!(
        e.code() == tonic::Code::InvalidArgument
            && e.message().contains("/nonexistent/profile.json"),
        "{e:?}"
    );
    teardown(&d, &mut rt, &pod.id, &[&free, &confined]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spec_reaches_a_real_container() {
    e2e!();
    let (d, image) = setup().await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let mut pcfg = pod_config("spec", &logs);
    pcfg.labels.insert("app".into(), "spec".into());
    pcfg.annotations.insert("note".into(), "kept as is".into());
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;

    // Host paths: a symlink to a directory (mounted read-only) and a missing one (created).
    let host = d.dir.path().join("host");
    std::fs::create_dir_all(host.join("real")).unwrap();
    std::fs::write(host.join("real/file"), "from the host").unwrap();
    std::os::unix::fs::symlink(host.join("real"), host.join("link")).unwrap();
    let made = host.join("made/deep");
    let mut c = sh_container("spec", &image, "sleep 300");
    c.labels.insert("tier".into(), "backend".into());
    c.mounts = vec![
        api::Mount {
            container_path: "/data".into(),
            host_path: host.join("link").display().to_string(),
            readonly: true,
            ..Default::default()
        },
        api::Mount {
            container_path: "/made".into(),
            host_path: made.display().to_string(),
            ..Default::default()
        },
    ];
    c.devices = vec![api::Device {
        container_path: "/dev/xnull".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    c.linux = Some(api::LinuxContainerConfig {
        resources: Some(api::LinuxContainerResources {
            cpu_shares: 512,
            oom_score_adj: -998,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create_start(&mut rt, &pod, &pcfg, c).await;
    let sh = |script: &str| {
        let (mut rt, id, script) = (rt.clone(), id.clone(), script.to_string());
        async move {
            exec(&mut rt, &id, &["sh", "-c", &script], 10)
                .await
                .unwrap()
        }
    };
    assert_eq!(text(&sh("cat /data/file").await.stdout), "from the host");
    assert_ne!(sh("touch /data/x").await.exit_code, 0, "read-only mount");
    assert_eq!(sh("echo hi > /made/x").await.exit_code, 0);
    assert_eq!(
        std::fs::read_to_string(made.join("x")).unwrap(),
        "hi\n",
        "a missing host path is created"
    );
    assert_eq!(
        sh("test -c /dev/xnull && echo ok > /dev/xnull")
            .await
            .exit_code,
        0,
        "device"
    );
    // CRI-O's nine capabilities: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE.
    let caps = text(&sh("grep CapEff /proc/1/status").await.stdout);
    assert!(caps.ends_with("00000000000005fb"), "{caps}");
    // Masked and read-only paths.
    // (this host's kernel has no /proc/kcore; /proc/timer_list and /sys/firmware stand in)
    assert!(!std::fs::read_to_string("/proc/timer_list")
        .unwrap()
        .is_empty());
    let masked = sh("wc -c < /proc/timer_list; ls /sys/firmware | wc -l").await;
    assert_eq!(text(&masked.stdout), "0\n0", "masked: {masked:?}");
    assert_ne!(
        sh("echo 1 > /proc/sys/vm/swappiness").await.exit_code,
        0,
        "/proc/sys is read-only"
    );
    assert_ne!(
        sh("mount -t tmpfs none /mnt").await.exit_code,
        0,
        "no mount without CAP_SYS_ADMIN"
    );
    // oom_score_adj is clamped to what the host lets the daemon set.
    let floor: i32 = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", d.pid()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let adj: i32 = text(&sh("cat /proc/1/oom_score_adj").await.stdout)
        .parse()
        .unwrap();
    assert_eq!(adj, (-998).max(floor));
    let cpu = ferrio::cgroups::hierarchies()
        .into_iter()
        .find(|(_, c)| c.iter().any(|c| c == "cpu"))
        .map(|(r, _)| r);
    if let Some(cpu) = cpu {
        let shares = std::fs::read_to_string(cpu.join(format!(
            "{}/pod-{}/ferrio-{id}/cpu.shares",
            d.cgroup_parent.trim_start_matches('/'),
            pod.id
        )))
        .unwrap();
        assert_eq!(shares.trim(), "512");
    }

    // Status reports mounts with the resolved source, labels and annotations unchanged.
    let st = rt
        .container_status(api::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.info.contains_key("info"));
    let st = st.status.unwrap();
    assert_eq!(
        st.mounts[0].host_path,
        host.join("real").display().to_string()
    );
    assert!(st.mounts[0].readonly);
    assert_eq!(st.labels.get("tier").map(String::as_str), Some("backend"));
    let ps = rt
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: pod.id[..8].into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ps.info.contains_key("info"));
    assert_eq!(ps.containers_statuses.len(), 1);
    let ps = ps.status.unwrap();
    assert_eq!(
        (ps.labels, ps.annotations),
        (pcfg.labels.clone(), pcfg.annotations.clone())
    );
    let ns = ps.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(ns.pid, api::NamespaceMode::Container as i32);

    // List filters.
    let list = |f: api::ContainerFilter| {
        let mut rt = rt.clone();
        async move {
            rt.list_containers(api::ListContainersRequest { filter: Some(f) })
                .await
                .unwrap()
                .into_inner()
                .containers
        }
    };
    let sel = |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect();
    assert_eq!(
        list(api::ContainerFilter {
            label_selector: sel("tier", "backend"),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        list(api::ContainerFilter {
            label_selector: sel("tier", "frontend"),
            ..Default::default()
        })
        .await
        .len(),
        0
    );
    assert_eq!(
        list(api::ContainerFilter {
            pod_sandbox_id: pod.id.clone(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        list(api::ContainerFilter {
            id: id[..6].into(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    let exited = api::ContainerStateValue {
        state: api::ContainerState::ContainerExited as i32,
    };
    assert_eq!(
        list(api::ContainerFilter {
            state: Some(exited),
            ..Default::default()
        })
        .await
        .len(),
        0
    );
    let pods = rt
        .list_pod_sandbox(api::ListPodSandboxRequest {
            filter: Some(api::PodSandboxFilter {
                label_selector: sel("app", "spec"),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].id, pod.id);

    teardown(&d, &mut rt, &pod.id, &[&id]).await;
    assert_eq!(
        std::fs::read_to_string(host.join("real/file")).unwrap(),
        "from the host",
        "host files untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn update_pod_sandbox_resources_reaches_the_pod_cgroup() {
    e2e!();
    let d = Daemon::start(DaemonOpts::default());
    let mut rt = d.runtime().await;
    let pcfg = pod_config("podres", &d.dir.path().join("logs"));
    let pod = run_pod(&mut rt, pcfg, "").await;
    rt.update_pod_sandbox_resources(api::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod.id.clone(),
        overhead: None,
        resources: Some(api::LinuxContainerResources {
            cpu_shares: 256,
            memory_limit_in_bytes: 200 << 20,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let h = ferrio::cgroups::hierarchies();
    let dir = |ctrl: &str| {
        h.iter()
            .find(|(_, c)| c.iter().any(|c| c == ctrl))
            .map(|(root, _)| {
                root.join(format!(
                    "{}/pod-{}",
                    d.cgroup_parent.trim_start_matches('/'),
                    pod.id
                ))
            })
    };
    if let Some(cpu) = dir("cpu") {
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu.shares"))
                .unwrap()
                .trim(),
            "256"
        );
    }
    if let Some(mem) = dir("memory") {
        let limit = std::fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap();
        assert_eq!(limit.trim(), (200u64 << 20).to_string());
    }
    let e = rt
        .update_pod_sandbox_resources(api::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "nope".into(),
            overhead: None,
            resources: Some(Default::default()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = rt
        .update_pod_sandbox_resources(api::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.id.clone(),
            overhead: None,
            resources: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    teardown(&d, &mut rt, &pod.id, &[]).await;
}

async fn tty_container(handler: &str) {
    let d = Daemon::start(DaemonOpts::default());
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("ttyc", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), handler).await;
    let mut c = sh_container("term", &image, "tty; echo on-a-terminal; exit 2");
    c.tty = true;
    let id = create_start(&mut rt, &pod, &pcfg, c).await;
    let st = wait_exited(&mut rt, &id, 20).await;
    assert_eq!(st.exit_code, 2, "{st:?}");
    let log = read_log(&logs.join("term.log"));
    assert!(
        log.contains("/dev/pts/0") && log.contains("on-a-terminal"),
        "{log}"
    );
    assert!(
        log.lines().all(|l| l.contains(" stdout ")),
        "a terminal has one stream: {log}"
    );
    teardown(&d, &mut rt, &pod.id, &[&id]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tty_containers_log_from_their_terminal() {
    e2e!();
    tty_container("").await;
    tty_container("runc").await;
}

/// RemoveImage refuses an image a container uses (FailedPrecondition naming the container),
/// also after a daemon restart, and removes it once the container is gone.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_in_use_is_not_removed() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("inuse").await;
    let mut rt = d.runtime().await;
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("user", &image, "sleep 60"),
    )
    .await;
    let mut images = d.images().await;
    let remove = api::RemoveImageRequest {
        image: Some(spec(&image)),
    };
    let e = images.remove_image(remove.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains(&id), "{e}");
    assert!(status(&mut images, &image).await.is_some());
    let mut d = d;
    d.kill9();
    let d = d.restart(DaemonOpts::default());
    let mut images = d.images().await;
    let e = images.remove_image(remove.clone()).await.unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::FailedPrecondition,
        "after a restart: {e}"
    );
    // The container still runs from its layers.
    let mut rt = d.runtime().await;
    let (out, _, code) = sh_in(&mut rt, &id, "cat /etc/passwd | head -1").await;
    assert_eq!((code, out.as_str()), (0, "root:x:0:0:root:/root:/bin/sh"));
    teardown(&d, &mut rt, &pod.id, &[&id]).await;
    images.remove_image(remove).await.unwrap();
    assert!(status(&mut images, &image).await.is_none());
}

/// Resource values the kernel would refuse are InvalidArgument naming the field, at
/// CreateContainer, UpdateContainerResources and UpdatePodSandboxResources (never INTERNAL,
/// never OK), and the running container keeps its resources.
#[tokio::test(flavor = "multi_thread")]
async fn resources_the_kernel_would_refuse_are_invalid_argument() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("badres").await;
    let mut rt = d.runtime().await;
    let with = |r: api::LinuxContainerResources| {
        let mut c = sh_container("r", &image, "sleep 60");
        c.linux = Some(api::LinuxContainerConfig {
            resources: Some(r),
            ..Default::default()
        });
        c
    };
    let cases: Vec<(&str, api::LinuxContainerResources)> = vec![
        (
            "unified",
            api::LinuxContainerResources {
                unified: [("../../../etc/passwd".to_string(), "x".to_string())].into(),
                ..Default::default()
            },
        ),
        (
            "memory_limit_in_bytes",
            api::LinuxContainerResources {
                memory_limit_in_bytes: 4 << 20,
                ..Default::default()
            },
        ),
        (
            "cpuset_cpus",
            api::LinuxContainerResources {
                cpuset_cpus: "0-9999".into(),
                ..Default::default()
            },
        ),
        (
            "cpu_quota",
            api::LinuxContainerResources {
                cpu_quota: -5,
                ..Default::default()
            },
        ),
        (
            "oom_score_adj",
            api::LinuxContainerResources {
                oom_score_adj: 4000,
                ..Default::default()
            },
        ),
    ];
    for (field, r) in &cases {
        let e = create_err(&mut rt, &pod.id, with(r.clone())).await;
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {e:?}");
    }
    let id = create_start(&mut rt, &pod, &pcfg, sh_container("ok", &image, "sleep 60")).await;
    for (field, r) in cases {
        let e = rt
            .update_container_resources(api::UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(r.clone()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::InvalidArgument,
            "update {field}: {e:?}"
        );
        assert!(e.message().contains(field), "update {field}: {e:?}");
        let e = rt
            .update_pod_sandbox_resources(api::UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: pod.id.clone(),
                resources: Some(r),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "pod {field}: {e:?}");
    }
    assert_eq!(
        ctr_status(&mut rt, &id).await.state,
        api::ContainerState::ContainerRunning as i32
    );
    teardown(&d, &mut rt, &pod.id, &[&id]).await;
}

/// Requests the CRI calls malformed are InvalidArgument: Exec with a TTY and stderr, Attach
/// with no stream, a pod CIDR that does not parse, a host port over 65535.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_stream_network_and_port_requests_are_invalid_argument() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("malformed").await;
    let mut rt = d.runtime().await;
    let id = create_start(&mut rt, &pod, &pcfg, sh_container("c", &image, "sleep 60")).await;
    let e = rt
        .exec(api::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            tty: true,
            stdin: false,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("stderr"), "{e:?}");
    let e = rt
        .attach(api::AttachRequest {
            container_id: id.clone(),
            stdin: false,
            tty: false,
            stdout: false,
            stderr: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let cidr = |c: &str| api::UpdateRuntimeConfigRequest {
        runtime_config: Some(api::RuntimeConfig {
            network_config: Some(api::NetworkConfig { pod_cidr: c.into() }),
        }),
    };
    for bad in ["10.244.0.0", "10.244.0.0/33", "not-a-cidr", "fd00::/129"] {
        let e = rt.update_runtime_config(cidr(bad)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains("pod_cidr"), "{e:?}");
    }
    rt.update_runtime_config(cidr("10.244.0.0/24,fd00:10:244::/64"))
        .await
        .unwrap();
    let mut p = pod_config("ports", &pod.logs);
    p.port_mappings = vec![api::PortMapping {
        protocol: api::Protocol::Tcp as i32,
        container_port: 80,
        host_port: 70000,
        host_ip: String::new(),
    }];
    let e = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(p),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("host_port"), "{e:?}");
    teardown(&d, &mut rt, &pod.id, &[&id]).await;
}

/// An image whose config holds 10⁵ environment entries: CreateContainer answers at once
/// (InvalidArgument naming the image), other RPCs keep answering meanwhile, and one with
/// 5000 entries (under the cap) runs with them merged.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_with_a_huge_environment_cannot_stall_the_daemon() {
    e2e!();
    use sha2::{Digest, Sha256};
    let (d, image, pcfg, pod) = setup_pod("bigenv").await;
    let work = tempfile::tempdir().unwrap();
    // The busybox OCI archive, its config given `n` more env entries, as a new archive.
    let make = |n: usize, name: &str| -> std::path::PathBuf {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(test_images().join("busybox.tar"))
            .arg("-C")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(st.success());
        let blob = |h: &str| dir.join("blobs/sha256").join(h);
        let put = |v: &serde_json::Value| -> (String, usize) {
            let bytes = serde_json::to_vec(v).unwrap();
            let h = hex::encode(Sha256::digest(&bytes));
            std::fs::write(blob(&h), &bytes).unwrap();
            (format!("sha256:{h}"), bytes.len())
        };
        let read = |d: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(blob(d.trim_start_matches("sha256:"))).unwrap())
                .unwrap()
        };
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let mut manifest = read(index["manifests"][0]["digest"].as_str().unwrap());
        let mut config = read(manifest["config"]["digest"].as_str().unwrap());
        let env = config["config"]["Env"].as_array_mut().unwrap();
        for i in 0..n {
            env.push(format!("BIG_{i}=value-{i}").into());
        }
        let (cd, cs) = put(&config);
        manifest["config"]["digest"] = cd.into();
        manifest["config"]["size"] = cs.into();
        let (md, ms) = put(&manifest);
        index["manifests"][0]["digest"] = md.into();
        index["manifests"][0]["size"] = ms.into();
        index["manifests"][0]["annotations"]["io.containerd.image.name"] =
            format!("localhost/ferrio-test/{name}:latest").into();
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        let out = work.path().join(format!("{name}.tar"));
        let st = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&out)
            .arg("-C")
            .arg(&dir)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        out
    };
    let mut admin = ferrio::cri::admin_api::admin_client::AdminClient::new(d.channel().await);
    for (n, name) in [(100_000, "env-huge"), (5_000, "env-many")] {
        let path = make(n, name);
        admin
            .import_images(ferrio::cri::admin_api::ImportImagesRequest {
                paths: vec![path.display().to_string()],
            })
            .await
            .unwrap();
    }
    let mut rt = d.runtime().await;
    let huge = "localhost/ferrio-test/env-huge:latest";
    let t = std::time::Instant::now();
    let create = {
        let mut rt = rt.clone();
        let (pod_id, cfg) = (pod.id.clone(), pcfg.clone());
        tokio::spawn(async move {
            rt.create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod_id,
                config: Some(sh_container("huge", huge, "true")),
                sandbox_config: Some(cfg),
            })
            .await
        })
    };
    // Other RPCs answer meanwhile.
    for _ in 0..5 {
        rt.version(api::VersionRequest::default()).await.unwrap();
        rt.list_containers(api::ListContainersRequest::default())
            .await
            .unwrap();
    }
    let e = create.await.unwrap().unwrap_err();
    eprintln!(
        "CreateContainer with 10^5 env entries answered in {:?}",
        t.elapsed()
    );
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains(huge) && e.message().contains("environment"),
        "{e:?}"
    );
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container(
            "many",
            "localhost/ferrio-test/env-many:latest",
            "echo $BIG_0 $BIG_4999; env | grep -c ^BIG_",
        ),
    )
    .await;
    let st = wait_exited(&mut rt, &id, 30).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let log = std::fs::read_to_string(pod.logs.join("many.log")).unwrap();
    assert!(log.contains("value-0 value-4999"), "{log}");
    assert!(log.contains(" 5000\n"), "{log}");
    let _ = image;
    teardown(&d, &mut rt, &pod.id, &[&id]).await;
}

/// ExecSync whose caller goes away — its deadline passed, or the client dropped the call —
/// kills the process it started in the container, not only the helper; the container lives on.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_exec_sync_kills_the_process_it_started() {
    e2e!();
    use std::time::Duration;
    let (d, image, pcfg, pod) = setup_pod("execcancel").await;
    let mut rt = d.runtime().await;
    let id = create_start(&mut rt, &pod, &pcfg, sh_container("s", &image, "sleep 300")).await;
    let exec = |secs: &str| api::ExecSyncRequest {
        container_id: id.clone(),
        cmd: vec!["sleep".into(), secs.into()],
        timeout: 0,
    };
    let gone = |needle: &'static str| async move {
        for _ in 0..100 {
            if processes_containing(needle).is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    // The deadline passes.
    let mut req = tonic::Request::new(exec("3331"));
    req.set_timeout(Duration::from_secs(2));
    let err = rt.exec_sync(req).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    assert!(
        gone("sleep 3331").await,
        "{:?}",
        processes_containing("sleep 3331")
    );
    // The client drops the call.
    let mut rt2 = rt.clone();
    let call = tokio::spawn({
        let req = exec("3332");
        async move { rt2.exec_sync(req).await }
    });
    for _ in 0..100 {
        if !processes_containing("sleep 3332").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!processes_containing("sleep 3332").is_empty());
    call.abort();
    assert!(
        gone("sleep 3332").await,
        "{:?}",
        processes_containing("sleep 3332")
    );
    let (out, _, _) = sh_in(&mut rt, &id, "echo alive").await;
    assert_eq!(out, "alive");
    finish_pod(&d, &pod).await;
}
