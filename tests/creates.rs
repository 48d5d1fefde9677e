//! RunPodSandbox and CreateContainer that outlive their caller: a kubelet deadline or a cancel
//! does not stop the create; a retry with the same name and attempt gets what it made (also
//! after a daemon restart); a restart in the middle of a create cleans it up. The slow stage
//! is real: a CNI plugin that takes its time (pods), a CDI createRuntime hook (containers).

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type RuntimeServiceClient =
    ferrio::cri::api::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

const DELAY_SECS: u64 = 3;

/// Lines in `file` (how often the slow stage ran).
fn count(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cancelled(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    )
}

/// A CNI plugin that counts its ADDs in `<dir>/adds`, sleeps, and answers a result with no
/// interface (the pod keeps its own loopback only).
fn slow_cni(dir: &Path) -> String {
    let bin = dir.join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let plugin = bin.join("ferrio-test-slow");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\ncase \"$CNI_COMMAND\" in\nADD) cat >/dev/null; echo add >> {adds}; sleep {DELAY_SECS}; echo '{{\"cniVersion\":\"1.0.0\",\"interfaces\":[],\"ips\":[]}}';;\nVERSION) echo '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\"]}}';;\n*) cat >/dev/null;;\nesac\n",
            adds = dir.join("adds").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let netd = dir.join("net.d");
    std::fs::create_dir_all(&netd).unwrap();
    std::fs::write(
        netd.join("10-slow.conflist"),
        r#"{"cniVersion":"1.0.0","name":"slow","plugins":[{"type":"ferrio-test-slow"}]}"#,
    )
    .unwrap();
    format!(
        "plugin_dirs = [{:?}, \"/usr/lib/cni\"]",
        bin.display().to_string()
    )
}

async fn run_pod_within(
    rt: &mut RuntimeServiceClient,
    cfg: &api::PodSandboxConfig,
    timeout: Option<Duration>,
) -> Result<String, tonic::Status> {
    let mut req = tonic::Request::new(api::RunPodSandboxRequest {
        config: Some(cfg.clone()),
        runtime_handler: String::new(),
    });
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    rt.run_pod_sandbox(req)
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn pods_named(rt: &mut RuntimeServiceClient, cfg: &api::PodSandboxConfig) -> Vec<String> {
    let m = cfg.metadata.as_ref().unwrap();
    rt.list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .as_ref()
                .is_some_and(|pm| pm.name == m.name && pm.attempt == m.attempt)
        })
        .map(|p| p.id)
        .collect()
}

fn attempt(cfg: &api::PodSandboxConfig, n: u32) -> api::PodSandboxConfig {
    let mut c = cfg.clone();
    c.metadata.as_mut().unwrap().attempt = n;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_pod_sandbox_whose_caller_left_is_finished_and_handed_to_its_retry() {
    e2e!();
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let d = Daemon::start_in(
        dir.clone(),
        DaemonOpts {
            network_config: slow_cni(dir.path()),
            ..Default::default()
        },
    );
    let adds = dir.path().join("adds");
    let logs = d.dir.path().join("logs");
    let base = pod_config("slow", &logs);
    let mut rt = d.runtime().await;

    // 1. The caller's deadline passes mid-create; its retry waits for the same create.
    let cfg = attempt(&base, 0);
    let t0 = Instant::now();
    let e = run_pod_within(&mut rt, &cfg, Some(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(cancelled(&e), "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(DELAY_SECS));
    assert!(
        pods_named(&mut rt, &cfg).await.is_empty(),
        "not listed while it is made"
    );
    let id = run_pod_within(&mut rt, &cfg, None).await.unwrap();
    assert_eq!(count(&adds), 1, "one create ran for both calls");
    assert_eq!(pods_named(&mut rt, &cfg).await, vec![id.clone()]);
    assert_eq!(
        pod_status(&mut rt, &id).await.state,
        api::PodSandboxState::SandboxReady as i32
    );
    let again = run_pod_within(&mut rt, &cfg, None).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");

    // 2. Finished with nobody waiting: hidden, kept over a restart, handed to the retry.
    let cfg1 = attempt(&base, 1);
    let e = run_pod_within(&mut rt, &cfg1, Some(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(cancelled(&e), "{e:?}");
    wait_until("the unclaimed pod is made", 20, || {
        d.log_text().contains("unclaimed=true")
    })
    .await;
    assert!(
        pods_named(&mut rt, &cfg1).await.is_empty(),
        "unclaimed: hidden"
    );
    let mut d = d;
    d.kill9();
    let d = d.restart(DaemonOpts {
        network_config: slow_cni(dir.path()),
        ..Default::default()
    });
    let mut rt = d.runtime().await;
    assert!(pods_named(&mut rt, &cfg1).await.is_empty(), "still hidden");
    let t0 = Instant::now();
    let id1 = run_pod_within(&mut rt, &cfg1, None).await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(DELAY_SECS),
        "handed back, not made again"
    );
    assert_eq!(count(&adds), 2);
    assert_eq!(pods_named(&mut rt, &cfg1).await, vec![id1.clone()]);
    assert!(d.log_text().contains("pod sandbox handed to a retry"));

    // 3. The daemon dies mid-create: after the restart nothing of it is left, and the retry
    //    makes it anew.
    let cfg2 = attempt(&base, 2);
    let e = run_pod_within(&mut rt, &cfg2, Some(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(cancelled(&e), "{e:?}");
    wait_until("the ADD started", 10, || count(&adds) == 3).await;
    let mut d = d;
    d.kill9();
    let d = d.restart(DaemonOpts {
        network_config: slow_cni(dir.path()),
        ..Default::default()
    });
    let mut rt = d.runtime().await;
    assert!(pods_named(&mut rt, &cfg2).await.is_empty());
    let pods: Vec<String> = entries(&d.dir.path().join("run/pods"));
    assert_eq!(
        pods.len(),
        2,
        "only the two finished pods have a run dir: {pods:?}"
    );
    let id2 = run_pod_within(&mut rt, &cfg2, None).await.unwrap();
    assert_eq!(count(&adds), 4);
    for p in [&id, &id1, &id2] {
        finish_pod(
            &d,
            &TestPod {
                id: p.clone(),
                logs: logs.clone(),
            },
        )
        .await;
    }
    // The killed daemon's plugin ran on: wait for it before the directory goes.
    wait_until("the orphaned plugin ends", 10, || {
        processes_containing("ferrio-test-slow").is_empty()
    })
    .await;
    // The daemons' leak check runs when the last holder of the directory goes: this test's
    // own handle goes first.
    drop(dir);
}

fn slow_hook_spec(dir: &Path) -> PathBuf {
    let specs = dir.join("cdi");
    std::fs::create_dir_all(&specs).unwrap();
    let spec = serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": "example.com/slow",
        "devices": [{"name": "hook", "containerEdits": {"hooks": [{
            "hookName": "createRuntime",
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo hook >> {}; sleep {DELAY_SECS}", dir.join("hooks").display())],
        }]}}],
    });
    std::fs::write(specs.join("slow.json"), spec.to_string()).unwrap();
    specs
}

async fn create_within(
    rt: &mut RuntimeServiceClient,
    pod: &str,
    c: &api::ContainerConfig,
    timeout: Option<Duration>,
) -> Result<String, tonic::Status> {
    let mut req = tonic::Request::new(api::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(c.clone()),
        sandbox_config: None,
    });
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    rt.create_container(req)
        .await
        .map(|r| r.into_inner().container_id)
}

async fn containers_of(rt: &mut RuntimeServiceClient, pod: &str) -> Vec<(String, u32)> {
    rt.list_containers(api::ListContainersRequest {
        filter: Some(api::ContainerFilter {
            pod_sandbox_id: pod.into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .containers
    .into_iter()
    .map(|c| (c.id, c.metadata.map(|m| m.attempt).unwrap_or(0)))
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_container_whose_caller_left_is_finished_and_handed_to_its_retry() {
    e2e!();
    let dir = tempfile::tempdir().unwrap();
    let specs = slow_hook_spec(dir.path());
    let hooks = dir.path().join("hooks");
    let opts = DaemonOpts {
        extra_config: format!(
            "[runtime]\ncdi_spec_dirs = [{:?}]\n",
            specs.display().to_string()
        ),
        ..Default::default()
    };
    let d = Daemon::start(opts.clone());
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("slowctr", &logs);
    let mut rt = d.runtime().await;
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let mut c = sh_container("slow", &image, "echo up; sleep 300");
    c.cdi_devices = vec![api::CdiDevice {
        name: "example.com/slow=hook".into(),
    }];
    let with_attempt = |n: u32| {
        let mut c = c.clone();
        c.metadata.as_mut().unwrap().attempt = n;
        c
    };

    // 1. Deadline mid-create, then the retry gets the one container.
    let e = create_within(
        &mut rt,
        &pod.id,
        &with_attempt(0),
        Some(Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    assert!(cancelled(&e), "{e:?}");
    assert!(containers_of(&mut rt, &pod.id).await.is_empty());
    let id = create_within(&mut rt, &pod.id, &with_attempt(0), None)
        .await
        .unwrap();
    assert_eq!(count(&hooks), 1, "one create ran for both calls");
    assert_eq!(containers_of(&mut rt, &pod.id).await, vec![(id.clone(), 0)]);
    let again = create_within(&mut rt, &pod.id, &with_attempt(0), None)
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    rt.start_container(api::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let (out, _, code) = sh_in(&mut rt, &id, "echo in").await;
    assert_eq!((out.as_str(), code), ("in", 0));

    // 2. Finished unclaimed, kept over a restart, handed to the retry, and it runs.
    let e = create_within(
        &mut rt,
        &pod.id,
        &with_attempt(1),
        Some(Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    assert!(cancelled(&e), "{e:?}");
    wait_until("the unclaimed container is made", 20, || {
        d.log_text().contains("unclaimed=true")
    })
    .await;
    assert_eq!(
        containers_of(&mut rt, &pod.id).await.len(),
        1,
        "unclaimed: hidden"
    );
    let mut d = d;
    d.kill9();
    let d = d.restart(opts.clone());
    let mut rt = d.runtime().await;
    assert_eq!(
        containers_of(&mut rt, &pod.id).await.len(),
        1,
        "still hidden"
    );
    let t0 = Instant::now();
    let id1 = create_within(&mut rt, &pod.id, &with_attempt(1), None)
        .await
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(DELAY_SECS),
        "handed back, not made again"
    );
    assert_eq!(count(&hooks), 2);
    rt.start_container(api::StartContainerRequest {
        container_id: id1.clone(),
    })
    .await
    .unwrap();
    let (out, _, code) = sh_in(&mut rt, &id1, "echo in").await;
    assert_eq!((out.as_str(), code), ("in", 0));

    // 3. The daemon dies mid-create: restore removes all of it (the monitor and the init it
    //    was making too), and the retry makes it anew.
    let e = create_within(
        &mut rt,
        &pod.id,
        &with_attempt(2),
        Some(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(cancelled(&e), "{e:?}");
    wait_until("the hook started", 10, || count(&hooks) == 3).await;
    let mut d = d;
    d.kill9();
    let d = d.restart(opts.clone());
    let mut rt = d.runtime().await;
    let listed = containers_of(&mut rt, &pod.id).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    let runs = entries(&d.dir.path().join("run/ctr"));
    assert_eq!(
        runs.len(),
        2,
        "only the two finished containers have a run dir: {runs:?}"
    );
    tokio::time::sleep(Duration::from_secs(DELAY_SECS)).await;
    let monitors = processes_containing("__monitor");
    let ours: Vec<_> = monitors
        .iter()
        .filter(|(_, cmd)| cmd.contains(&d.dir.path().display().to_string()))
        .collect();
    assert_eq!(
        ours.len(),
        2,
        "one monitor per finished container: {ours:?}"
    );
    let id2 = create_within(&mut rt, &pod.id, &with_attempt(2), None)
        .await
        .unwrap();
    assert_eq!(count(&hooks), 4);
    assert_eq!(containers_of(&mut rt, &pod.id).await.len(), 3);
    let _ = id2;
    finish_pod(&d, &pod).await;
}
