//! NRI end to end: plugins written here speak NRI's protocol (the multiplexed socket, ttrpc,
//! the vendored API) to a real daemon, register, synchronize, watch events and adjust real
//! containers; each adjustment is checked inside the running container.

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use ferrio::nri::api as nri;
use ferrio::nri::{mux, ttrpc, PLUGIN_SERVICE, RUNTIME_SERVICE};
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The pod and container names a plugin's Synchronize showed it.
type Synced = Arc<Mutex<Option<(Vec<String>, Vec<String>)>>>;

type OnCreate =
    Arc<dyn Fn(&nri::CreateContainerRequest) -> nri::CreateContainerResponse + Send + Sync>;

/// A plugin on the daemon's NRI socket: it records the events it is sent (`Event name`), the
/// pods and containers Synchronize showed it, and answers CreateContainer with `on_create`
/// after `delay`.
struct TestPlugin {
    events: Arc<Mutex<Vec<String>>>,
    synced: Synced,
    served: tokio::task::JoinHandle<()>,
    trunk: mux::Trunk,
    /// Its client on the runtime's service (UpdateContainers).
    client: Arc<ttrpc::Client>,
}

type OnUpdate =
    Arc<dyn Fn(&nri::UpdateContainerRequest) -> nri::UpdateContainerResponse + Send + Sync>;

/// What else a test plugin does.
#[derive(Default, Clone)]
struct Extra {
    /// The answer to UpdateContainer.
    on_update: Option<OnUpdate>,
    /// As a validator: reject every adjustment with this reason.
    reject: Option<String>,
    /// Answer the notification events Unimplemented, as a plugin older than NRI 0.12 (which
    /// then gets them as StateChange).
    legacy: bool,
    /// Answer RunPodSandbox with this error.
    fail_run_pod: Option<String>,
}

impl TestPlugin {
    async fn connect(
        socket: &Path,
        name: &str,
        idx: &str,
        mask: u32,
        on_create: OnCreate,
        delay: Duration,
    ) -> TestPlugin {
        Self::connect_with(socket, name, idx, mask, on_create, delay, Extra::default()).await
    }

    async fn connect_with(
        socket: &Path,
        name: &str,
        idx: &str,
        mask: u32,
        on_create: OnCreate,
        delay: Duration,
        extra: Extra,
    ) -> TestPlugin {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
        let (trunk, c1, c2) = mux::split(stream);
        let events: Arc<Mutex<Vec<String>>> = Arc::default();
        let synced: Synced = Arc::default();
        let (ev, sy) = (events.clone(), synced.clone());
        let served = tokio::spawn(ttrpc::serve(
            trunk.clone(),
            mux::PLUGIN_SERVICE_CONN,
            c1,
            move |service, method, payload| {
                let (ev, sy, on_create, extra) =
                    (ev.clone(), sy.clone(), on_create.clone(), extra.clone());
                Box::pin(async move {
                    assert_eq!(service, PLUGIN_SERVICE);
                    let notification = [
                        "RunPodSandbox",
                        "StopPodSandbox",
                        "RemovePodSandbox",
                        "PostCreateContainer",
                        "StartContainer",
                        "PostStartContainer",
                        "PostUpdateContainer",
                        "RemoveContainer",
                        "PostUpdatePodSandbox",
                    ];
                    if extra.legacy && notification.contains(&method.as_str()) {
                        return Err(ttrpc::status(ttrpc::code::UNIMPLEMENTED, method));
                    }
                    let out = match method.as_str() {
                        "StateChange" => {
                            let r = nri::StateChangeEvent::decode(payload.as_slice()).unwrap();
                            let e = nri::Event::try_from(r.event).unwrap();
                            ev.lock()
                                .unwrap()
                                .push(format!("StateChange {}", e.as_str_name()));
                            nri::Empty {}.encode_to_vec()
                        }
                        "UpdateContainer" => {
                            let r =
                                nri::UpdateContainerRequest::decode(payload.as_slice()).unwrap();
                            let name = r
                                .container
                                .as_ref()
                                .map(|c| c.name.clone())
                                .unwrap_or_default();
                            ev.lock().unwrap().push(format!("UpdateContainer {name}"));
                            match &extra.on_update {
                                Some(f) => f(&r).encode_to_vec(),
                                None => Vec::new(),
                            }
                        }
                        "ValidateContainerAdjustment" => {
                            let r =
                                nri::ValidateContainerAdjustmentRequest::decode(payload.as_slice())
                                    .unwrap();
                            let name = r
                                .container
                                .as_ref()
                                .map(|c| c.name.clone())
                                .unwrap_or_default();
                            ev.lock()
                                .unwrap()
                                .push(format!("ValidateContainerAdjustment {name}"));
                            nri::ValidateContainerAdjustmentResponse {
                                reject: extra.reject.is_some(),
                                reason: extra.reject.clone().unwrap_or_default(),
                            }
                            .encode_to_vec()
                        }
                        "Configure" => {
                            let r = nri::ConfigureRequest::decode(payload.as_slice()).unwrap();
                            assert_eq!(r.runtime_name, "ferrio");
                            nri::ConfigureResponse {
                                events: i32::try_from(mask).unwrap(),
                            }
                            .encode_to_vec()
                        }
                        "Synchronize" => {
                            let r = nri::SynchronizeRequest::decode(payload.as_slice()).unwrap();
                            *sy.lock().unwrap() = Some((
                                r.pods.iter().map(|p| p.name.clone()).collect(),
                                r.containers.iter().map(|c| c.name.clone()).collect(),
                            ));
                            nri::SynchronizeResponse::default().encode_to_vec()
                        }
                        "CreateContainer" => {
                            let r =
                                nri::CreateContainerRequest::decode(payload.as_slice()).unwrap();
                            let name = r
                                .container
                                .as_ref()
                                .map(|c| c.name.clone())
                                .unwrap_or_default();
                            ev.lock().unwrap().push(format!("CreateContainer {name}"));
                            tokio::time::sleep(delay).await;
                            on_create(&r).encode_to_vec()
                        }
                        m if m.ends_with("PodSandbox") => {
                            let r = nri::RunPodSandboxRequest::decode(payload.as_slice()).unwrap();
                            ev.lock()
                                .unwrap()
                                .push(format!("{m} {}", r.pod.unwrap().name));
                            if let (Some(why), "RunPodSandbox") = (&extra.fail_run_pod, m) {
                                return Err(ttrpc::status(ttrpc::code::INTERNAL, why.clone()));
                            }
                            Vec::new()
                        }
                        m => {
                            let r = nri::StartContainerRequest::decode(payload.as_slice()).unwrap();
                            ev.lock()
                                .unwrap()
                                .push(format!("{m} {}", r.container.unwrap().name));
                            Vec::new()
                        }
                    };
                    Ok(out)
                })
            },
        ));
        let client = ttrpc::Client::new(trunk.clone(), mux::RUNTIME_SERVICE_CONN, c2);
        register_nri_plugin(&client, name, idx).await;
        let p = TestPlugin {
            events,
            synced,
            served,
            trunk,
            client,
        };
        // Registered once synchronized.
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.synced.lock().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "{idx}-{name} was never synchronized"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        p
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    /// Whether the runtime closed the connection.
    fn dropped(&self) -> bool {
        self.served.is_finished()
    }
}

fn nri_socket(d: &Daemon) -> PathBuf {
    let s = d.dir.path().join("nri/nri.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.exists() {
        assert!(
            Instant::now() < deadline,
            "no NRI socket at {}",
            s.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    s
}

fn no_change() -> OnCreate {
    Arc::new(|_| nri::CreateContainerResponse::default())
}

fn all_but_validation() -> u32 {
    ferrio::nri::ALL_EVENTS & !ferrio::nri::bit(nri::Event::ValidateContainerAdjustment)
}

type Rt = api::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

/// Waits until the container's log holds `want` (every line), or panics with what it holds.
async fn log_has(path: &Path, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if want.iter().all(|w| text.lines().any(|l| l.ends_with(w))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "log {} lacks {want:?}: {text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn remove_pod(rt: &mut Rt, id: &str) {
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

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_adjusts_a_container_and_sees_every_event_in_order() {
    e2e!();
    let (d, image) = daemon_with_busybox().await;
    let socket = nri_socket(&d);
    let share = d.dir.path().join("nri-share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("hello"), "hello from the host\n").unwrap();
    let src = share.display().to_string();
    let plugin = TestPlugin::connect(
        &socket,
        "inject",
        "10",
        all_but_validation(),
        Arc::new(move |r| {
            // It is shown the container as created so far.
            let c = r.container.as_ref().unwrap();
            assert!(
                c.args.iter().any(|a| a.contains("NRI_INJECTED")),
                "{:?}",
                c.args
            );
            nri::CreateContainerResponse {
                adjust: Some(nri::ContainerAdjustment {
                    env: vec![nri::KeyValue {
                        key: "NRI_INJECTED".into(),
                        value: "yes".into(),
                    }],
                    annotations: [("nri.test/injected".to_string(), "yes".to_string())].into(),
                    mounts: vec![nri::Mount {
                        destination: "/nri".into(),
                        r#type: "bind".into(),
                        source: src.clone(),
                        options: vec!["rbind".into(), "ro".into()],
                    }],
                    rlimits: vec![nri::PosixRlimit {
                        r#type: "RLIMIT_NOFILE".into(),
                        hard: 4321,
                        soft: 4321,
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }
        }),
        Duration::ZERO,
    )
    .await;
    // Listed by `ferrio status`.
    let status = d.cli(&["status"]);
    assert!(status.contains("10-inject"), "{status}");

    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("nri", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let ctr = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container(
            "adjusted",
            &image,
            "echo env=$NRI_INJECTED; cat /nri/hello; echo nofile=$(ulimit -n); touch /nri/x 2>/dev/null || echo read-only; sleep 300",
        ),
    )
    .await;
    log_has(
        &logs.join("adjusted.log"),
        &["env=yes", "hello from the host", "nofile=4321", "read-only"],
    )
    .await;
    // The annotation is in the container's spec.
    let spec = std::fs::read_to_string(
        d.dir
            .path()
            .join("run/ctr")
            .join(&ctr)
            .join("bundle/config.json"),
    )
    .unwrap();
    assert!(spec.contains("nri.test/injected"), "{spec}");
    rt.stop_container(api::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    rt.remove_container(api::RemoveContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();
    remove_pod(&mut rt, &pod.id).await;
    let pod_name = pcfg.metadata.as_ref().unwrap().name.clone();
    let want: Vec<String> = [
        format!("RunPodSandbox {pod_name}"),
        "CreateContainer adjusted".into(),
        "PostCreateContainer adjusted".into(),
        "StartContainer adjusted".into(),
        "PostStartContainer adjusted".into(),
        "StopContainer adjusted".into(),
        "RemoveContainer adjusted".into(),
        format!("StopPodSandbox {pod_name}"),
        format!("RemovePodSandbox {pod_name}"),
    ]
    .into();
    assert_eq!(plugin.events(), want);
    assert!(!plugin.dropped());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_plugin_is_synchronized_with_what_runs_and_two_plugins_setting_one_thing_conflict() {
    e2e!();
    let (d, image) = daemon_with_busybox().await;
    let socket = nri_socket(&d);
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("nri-sync", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let first = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("before", &image, "sleep 300"),
    )
    .await;

    let set_foo = |v: &'static str| -> OnCreate {
        Arc::new(move |_| nri::CreateContainerResponse {
            adjust: Some(nri::ContainerAdjustment {
                env: vec![nri::KeyValue {
                    key: "FOO".into(),
                    value: v.into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let mask = ferrio::nri::bit(nri::Event::CreateContainer);
    let a = TestPlugin::connect(&socket, "a", "10", mask, set_foo("a"), Duration::ZERO).await;
    let (pods, ctrs) = a.synced.lock().unwrap().clone().unwrap();
    assert_eq!(pods, vec![pcfg.metadata.as_ref().unwrap().name.clone()]);
    assert_eq!(ctrs, vec!["before".to_string()]);
    let _b = TestPlugin::connect(&socket, "b", "20", mask, set_foo("b"), Duration::ZERO).await;
    let err = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(sh_container("conflict", &image, "true")),
            sandbox_config: Some(pcfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains(r#"plugins "20-b" and "10-a" both tried to set Env FOO"#),
        "{}",
        err.message()
    );
    // Nothing of the refused container is left, and the first one runs on.
    assert_eq!(
        ctr_status(&mut rt, &first).await.state,
        api::ContainerState::ContainerRunning as i32
    );
    remove_pod(&mut rt, &pod.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_times_out_is_dropped_and_the_create_goes_on() {
    e2e!();
    let d = Daemon::start(DaemonOpts {
        extra_config: "[nri]\nplugin_request_timeout = \"300ms\"\n".into(),
        ..Default::default()
    });
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let socket = nri_socket(&d);
    let mask = ferrio::nri::bit(nri::Event::CreateContainer);
    let slow = TestPlugin::connect(
        &socket,
        "slow",
        "10",
        mask,
        no_change(),
        Duration::from_secs(5),
    )
    .await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("nri-slow", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let t = Instant::now();
    let ctr = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("goes-on", &image, "echo ran; sleep 300"),
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "the create waited for the slow plugin"
    );
    log_has(&logs.join("goes-on.log"), &["ran"]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !slow.dropped() {
        assert!(Instant::now() < deadline, "the slow plugin was not dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!d.cli(&["status"]).contains("10-slow"));
    assert!(d.log_text().contains("plugin dropped"), "{}", d.log_text());
    // A plugin that disconnects is gone too, and creates go on.
    let quitter =
        TestPlugin::connect(&socket, "quitter", "20", mask, no_change(), Duration::ZERO).await;
    quitter.trunk.close().await;
    let ctr2 = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("after-quit", &image, "echo ran2; sleep 300"),
    )
    .await;
    log_has(&logs.join("after-quit.log"), &["ran2"]).await;
    let _ = (ctr, ctr2);
    remove_pod(&mut rt, &pod.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_failing_run_pod_sandbox_fails_it_and_the_pod_is_removed() {
    e2e!();
    let d = Daemon::start(DaemonOpts::default());
    let socket = nri_socket(&d);
    let mask = ferrio::nri::bit(nri::Event::RunPodSandbox)
        | ferrio::nri::bit(nri::Event::RemovePodSandbox);
    let watcher =
        TestPlugin::connect(&socket, "watcher", "10", mask, no_change(), Duration::ZERO).await;
    let refuser = TestPlugin::connect_with(
        &socket,
        "refuser",
        "20",
        mask,
        no_change(),
        Duration::ZERO,
        Extra {
            fail_run_pod: Some("no pods on this node today".into()),
            ..Default::default()
        },
    )
    .await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let cfg = pod_config("nri-refused", &logs);
    let refused = cfg.metadata.as_ref().unwrap().name.clone();
    let err = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("a plugin refused the pod");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("no pods on this node today"),
        "{}",
        err.message()
    );
    let pods = rt
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    // Both plugins saw it start and go.
    for p in [&watcher, &refuser] {
        assert_eq!(
            p.events(),
            [
                format!("RunPodSandbox {refused}"),
                format!("RemovePodSandbox {refused}")
            ]
        );
    }
    // Without the refuser, pods run.
    refuser.trunk.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.cli(&["status"]).contains("20-refuser") {
        assert!(
            Instant::now() < deadline,
            "the refuser is still listed: {}\n{}",
            d.cli(&["status"]),
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cfg = pod_config("nri-accepted", &logs);
    let accepted = format!("RunPodSandbox {}", cfg.metadata.as_ref().unwrap().name);
    let pod = run_pod(&mut rt, cfg, "").await;
    assert!(watcher.events().contains(&accepted));
    remove_pod(&mut rt, &pod.id).await;
}

/// examples/nri-env-plugin, which `cargo test` builds beside the test binaries.
fn env_plugin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/nri-env-plugin");
    assert!(
        p.exists(),
        "{} is missing: run `cargo test` (it builds the examples) or `cargo build --example nri-env-plugin`",
        p.display()
    );
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pre_installed_plugin_is_started_with_its_config_and_stopped_with_the_daemon() {
    e2e!();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::create_dir_all(dir.path().join("nri-plugins")).unwrap();
    std::fs::create_dir_all(dir.path().join("nri-conf")).unwrap();
    // A symlink: the debug example is large; ferrio runs it by this name.
    std::os::unix::fs::symlink(env_plugin(), dir.path().join("nri-plugins/05-env")).unwrap();
    std::fs::write(
        dir.path().join("nri-conf/05-env.conf"),
        "FROM_CONF = preinstalled\n",
    )
    .unwrap();
    // Not a plugin name: skipped with a warning.
    std::os::unix::fs::symlink(env_plugin(), dir.path().join("nri-plugins/not-a-plugin")).unwrap();
    let d = Daemon::start_in(dir.clone(), DaemonOpts::default());
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let status = d.cli(&["status"]);
    assert!(
        status.contains("05-env  events 0x8, pre-installed"),
        "{status}"
    );
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("nri-pre", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("env", &image, "echo from=$FROM_CONF; sleep 300"),
    )
    .await;
    log_has(&logs.join("env.log"), &["from=preinstalled"]).await;
    assert!(
        d.log_text().contains("not a plugin name"),
        "{}",
        d.log_text()
    );
    remove_pod(&mut rt, &pod.id).await;
    // The daemon's Drop stops it; the leak check then finds no process of the temp dir, so the
    // plugin (`<dir>/nri-plugins/05-env`) was stopped with it.
    // The daemon's leak check runs when the last holder of the directory goes.
    drop(dir);
}

/// The memory limit of a container's cgroup, read inside it (cgroup v1 or v2).
async fn memory_limit(rt: &mut Rt, id: &str) -> String {
    sh_in(
        rt,
        id,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    )
    .await
    .0
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_change_resources_validate_creates_evict_and_old_plugins_get_state_changes() {
    e2e!();
    let (d, image) = daemon_with_busybox().await;
    let socket = nri_socket(&d);
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("nri-upd", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let a = create_start(&mut rt, &pod, &pcfg, sh_container("a", &image, "sleep 300")).await;
    let b = create_start(&mut rt, &pod, &pcfg, sh_container("b", &image, "sleep 300")).await;

    // UpdateContainer: the plugin sets 64 MiB instead of the 32 MiB asked for.
    let resizer = TestPlugin::connect_with(
        &socket,
        "resizer",
        "10",
        ferrio::nri::bit(nri::Event::UpdateContainer)
            | ferrio::nri::bit(nri::Event::PostUpdateContainer),
        no_change(),
        Duration::ZERO,
        Extra {
            on_update: Some(Arc::new(|r| {
                let c = r.container.as_ref().unwrap();
                assert_eq!(
                    r.linux_resources
                        .as_ref()
                        .unwrap()
                        .memory
                        .as_ref()
                        .unwrap()
                        .limit
                        .as_ref()
                        .unwrap()
                        .value,
                    32 << 20
                );
                nri::UpdateContainerResponse {
                    update: vec![nri::ContainerUpdate {
                        container_id: c.id.clone(),
                        linux: Some(nri::LinuxContainerUpdate {
                            resources: Some(nri::LinuxResources {
                                memory: Some(nri::LinuxMemory {
                                    limit: Some(nri::OptionalInt64 { value: 64 << 20 }),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                        }),
                        ignore_failure: false,
                    }],
                    ..Default::default()
                }
            })),
            ..Default::default()
        },
    )
    .await;
    rt.update_container_resources(api::UpdateContainerResourcesRequest {
        container_id: a.clone(),
        linux: Some(api::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(memory_limit(&mut rt, &a).await, (64u64 << 20).to_string());
    assert_eq!(
        resizer.events(),
        vec!["UpdateContainer a", "PostUpdateContainer a"]
    );

    // UpdateContainers, unsolicited: b gets 48 MiB; then an eviction stops b.
    let r: nri::UpdateContainersResponse = resizer
        .client
        .call(
            RUNTIME_SERVICE,
            "UpdateContainers",
            &nri::UpdateContainersRequest {
                update: vec![nri::ContainerUpdate {
                    container_id: b.clone(),
                    linux: Some(nri::LinuxContainerUpdate {
                        resources: Some(nri::LinuxResources {
                            memory: Some(nri::LinuxMemory {
                                limit: Some(nri::OptionalInt64 { value: 48 << 20 }),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                    }),
                    ignore_failure: false,
                }],
                evict: vec![],
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!(memory_limit(&mut rt, &b).await, (48u64 << 20).to_string());
    let _: nri::UpdateContainersResponse = resizer
        .client
        .call(
            RUNTIME_SERVICE,
            "UpdateContainers",
            &nri::UpdateContainersRequest {
                update: vec![],
                evict: vec![nri::ContainerEviction {
                    container_id: b.clone(),
                    reason: "test eviction".into(),
                }],
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    wait_exited(&mut rt, &b, 10).await;
    assert!(d.log_text().contains("test eviction"), "{}", d.log_text());
    assert_eq!(
        ctr_status(&mut rt, &a).await.state,
        api::ContainerState::ContainerRunning as i32
    );

    // A validator that rejects: the create fails with its reason.
    let _v = TestPlugin::connect_with(
        &socket,
        "strict",
        "20",
        ferrio::nri::bit(nri::Event::ValidateContainerAdjustment),
        no_change(),
        Duration::ZERO,
        Extra {
            reject: Some("no containers today".into()),
            ..Default::default()
        },
    )
    .await;
    let err = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(sh_container("refused", &image, "true")),
            sandbox_config: Some(pcfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(
            r#"validator "strict" rejected container adjustment, reason: no containers today"#
        ),
        "{}",
        err.message()
    );
    drop(_v);

    // A plugin older than NRI 0.12 gets the notifications as StateChange.
    let old = TestPlugin::connect_with(
        &socket,
        "old",
        "30",
        ferrio::nri::bit(nri::Event::StopPodSandbox)
            | ferrio::nri::bit(nri::Event::RemovePodSandbox),
        no_change(),
        Duration::ZERO,
        Extra {
            legacy: true,
            ..Default::default()
        },
    )
    .await;
    remove_pod(&mut rt, &pod.id).await;
    assert_eq!(
        old.events(),
        vec![
            "StateChange STOP_POD_SANDBOX",
            "StateChange REMOVE_POD_SANDBOX"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_validator_requires_plugins_and_refuses_hooks() {
    e2e!();
    let d = Daemon::start(DaemonOpts {
        extra_config: "[nri.default_validator]\nenable = true\nreject_oci_hook_adjustment = true\nrequired_plugins = [\"must-have\"]\n".into(),
        ..Default::default()
    });
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let socket = nri_socket(&d);
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("nri-dv", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let create = |name: &str| api::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(sh_container(name, &image, "sleep 300")),
        sandbox_config: Some(pcfg.clone()),
    };
    let err = rt.create_container(create("first")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains(r#"required plugin "must-have" is not present"#),
        "{}",
        err.message()
    );
    let mask = ferrio::nri::bit(nri::Event::CreateContainer);
    let _must = TestPlugin::connect(
        &socket,
        "must-have",
        "10",
        mask,
        no_change(),
        Duration::ZERO,
    )
    .await;
    rt.create_container(create("second")).await.unwrap();
    let _hooker = TestPlugin::connect(
        &socket,
        "hooker",
        "20",
        mask,
        Arc::new(|_| nri::CreateContainerResponse {
            adjust: Some(nri::ContainerAdjustment {
                hooks: Some(nri::Hooks {
                    poststop: vec![nri::Hook {
                        path: "/bin/true".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        Duration::ZERO,
    )
    .await;
    let err = rt.create_container(create("third")).await.unwrap_err();
    assert!(
        err.message()
            .contains("OCI hook injection by plugin(s) 20-hooker"),
        "{}",
        err.message()
    );
    remove_pod(&mut rt, &pod.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_a_sysctl_a_device_and_a_seccomp_policy_from_a_plugin_apply_in_the_container() {
    e2e!();
    let (d, image) = daemon_with_busybox().await;
    let socket = nri_socket(&d);
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config("nri-linux", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let other = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("other", &image, "sleep 300"),
    )
    .await;
    let other_id = other.clone();
    let _p = TestPlugin::connect(
        &socket,
        "linux",
        "10",
        ferrio::nri::bit(nri::Event::CreateContainer),
        Arc::new(move |r| {
            if r.container.as_ref().unwrap().name != "adjusted" {
                return nri::CreateContainerResponse::default();
            }
            let mem = |v: i64| nri::LinuxResources {
                memory: Some(nri::LinuxMemory {
                    limit: Some(nri::OptionalInt64 { value: v }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            nri::CreateContainerResponse {
                adjust: Some(nri::ContainerAdjustment {
                    linux: Some(nri::LinuxContainerAdjustment {
                        resources: Some(mem(80 << 20)),
                        sysctl: [(
                            "net.ipv4.ip_unprivileged_port_start".to_string(),
                            "333".to_string(),
                        )]
                        .into(),
                        devices: vec![nri::LinuxDevice {
                            path: "/dev/nri-null".into(),
                            r#type: "c".into(),
                            major: 1,
                            minor: 3,
                            file_mode: Some(nri::OptionalFileMode { value: 0o666 }),
                            ..Default::default()
                        }],
                        seccomp_policy: Some(nri::LinuxSeccomp {
                            default_action: "SCMP_ACT_ALLOW".into(),
                            architectures: vec!["SCMP_ARCH_X86_64".into()],
                            syscalls: vec![nri::LinuxSyscall {
                                names: vec!["mkdir".into(), "mkdirat".into()],
                                action: "SCMP_ACT_ERRNO".into(),
                                errno_ret: Some(nri::OptionalUInt32 { value: 1 }),
                                args: vec![],
                            }],
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                // And the other container gets 40 MiB.
                update: vec![nri::ContainerUpdate {
                    container_id: other_id.clone(),
                    linux: Some(nri::LinuxContainerUpdate {
                        resources: Some(mem(40 << 20)),
                    }),
                    ignore_failure: false,
                }],
                ..Default::default()
            }
        }),
        Duration::ZERO,
    )
    .await;
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("adjusted", &image, "sleep 300"),
    )
    .await;
    assert_eq!(memory_limit(&mut rt, &id).await, (80u64 << 20).to_string());
    assert_eq!(
        memory_limit(&mut rt, &other).await,
        (40u64 << 20).to_string()
    );
    let (out, _, _) = sh_in(
        &mut rt,
        &id,
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
    )
    .await;
    assert_eq!(out, "333");
    let (out, err, code) = sh_in(&mut rt, &id, "echo hi > /dev/nri-null && echo wrote").await;
    assert_eq!((out.as_str(), code), ("wrote", 0), "{err}");
    // mkdir is refused by the plugin's policy (EPERM), other calls work.
    let (out, err, code) = sh_in(
        &mut rt,
        &id,
        "mkdir /tmp/x 2>&1; echo rc=$?; touch /tmp/y && echo touched",
    )
    .await;
    assert!(
        out.contains("rc=1") && out.contains("touched"),
        "{out} {err} {code}"
    );
    remove_pod(&mut rt, &pod.id).await;
}

/// A pod with one container `name` (`sleep 300`) created while the plugin `10-<name>` answers
/// CreateContainer with `adjust`: the client, the pod, the container and the plugin.
async fn adjusted_container(
    d: &Daemon,
    image: &str,
    name: &str,
    adjust: nri::ContainerAdjustment,
) -> (Rt, TestPod, String, TestPlugin) {
    let plugin = TestPlugin::connect(
        &nri_socket(d),
        name,
        "10",
        ferrio::nri::bit(nri::Event::CreateContainer),
        Arc::new(move |_| nri::CreateContainerResponse {
            adjust: Some(adjust.clone()),
            ..Default::default()
        }),
        Duration::ZERO,
    )
    .await;
    let mut rt = d.runtime().await;
    let pcfg = pod_config(&format!("nri-{name}"), &d.dir.path().join("logs"));
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let id = create_start(&mut rt, &pod, &pcfg, sh_container(name, image, "sleep 300")).await;
    (rt, pod, id, plugin)
}

#[tokio::test(flavor = "multi_thread")]
async fn cdi_devices_a_plugin_asks_for_are_resolved_and_reach_the_container() {
    e2e!();
    let specs = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": "example.com/nri",
        "devices": [{"name": "gpu0", "containerEdits": {
            "env": ["NRI_CDI=gpu0"],
            "deviceNodes": [{"path": "/dev/nri-cdi", "hostPath": "/dev/null"}],
        }}],
    });
    std::fs::write(
        specs.path().join("nri.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    let d = Daemon::start(DaemonOpts {
        extra_config: format!(
            "[runtime]\ncdi_spec_dirs = [{:?}]\n",
            specs.path().display().to_string()
        ),
        ..Default::default()
    });
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let (mut rt, pod, id, _p) = adjusted_container(
        &d,
        &image,
        "cdi",
        nri::ContainerAdjustment {
            cdi_devices: vec![nri::CdiDevice {
                name: "example.com/nri=gpu0".into(),
            }],
            ..Default::default()
        },
    )
    .await;
    let (out, err, code) = sh_in(
        &mut rt,
        &id,
        "echo $NRI_CDI; echo x > /dev/nri-cdi && echo wrote",
    )
    .await;
    assert_eq!((out.as_str(), code), ("gpu0\nwrote", 0), "{err}");
    remove_pod(&mut rt, &pod.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_io_priority_and_a_scheduler_from_a_plugin_apply_to_the_containers_init() {
    e2e!();
    let (d, image) = daemon_with_busybox().await;
    let (mut rt, pod, id, _p) = adjusted_container(
        &d,
        &image,
        "sched",
        nri::ContainerAdjustment {
            linux: Some(nri::LinuxContainerAdjustment {
                io_priority: Some(nri::LinuxIoPriority {
                    class: nri::IoPrioClass::IoprioClassIdle as i32,
                    priority: 0,
                }),
                scheduler: Some(nri::LinuxScheduler {
                    policy: nri::LinuxSchedulerPolicy::SchedBatch as i32,
                    nice: 5,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    // PID 1 is the container's init (`sh -c sleep`): SCHED_BATCH is policy 3, nice 5.
    let (out, err, _) = sh_in(
        &mut rt,
        &id,
        "awk '{print $41, $19}' /proc/1/stat; ionice -p 1",
    )
    .await;
    assert_eq!(out, "3 5\nidle", "{err}");
    remove_pod(&mut rt, &pod.id).await;
}

/// A CreateContainer answer adjusting only the Linux part.
fn linux_adjustment(l: nri::LinuxContainerAdjustment) -> nri::CreateContainerResponse {
    nri::CreateContainerResponse {
        adjust: Some(nri::ContainerAdjustment {
            linux: Some(l),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A whole block device of this host as (its /dev path, "major:minor").
fn a_block_device() -> Option<(String, String)> {
    let mut names: Vec<_> = std::fs::read_dir("/sys/class/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let sys = Path::new("/sys/class/block").join(&n);
        // A disk of a real device (not a partition, loop, ram or zram device).
        if sys.join("partition").exists() || !sys.join("device").exists() {
            return None;
        }
        let dev = std::fs::read_to_string(sys.join("dev")).ok()?;
        let path = format!("/dev/{n}");
        Path::new(&path)
            .exists()
            .then(|| (path, dev.trim().to_string()))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn block_io_and_rdt_classes_from_a_plugin_or_annotations_reach_the_cgroup() {
    e2e!();
    let Some((disk, devno)) = a_block_device() else {
        eprintln!("SKIPPED: no whole block device on this host");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let classes = dir.path().join("blockio.yaml");
    std::fs::write(
        &classes,
        format!(
            "Classes:\n  slow:\n    - Devices: [{disk}]\n      ThrottleReadBps: 1Mi\n  slower:\n    - Devices: [{disk}]\n      ThrottleReadBps: 512Ki\n"
        ),
    )
    .unwrap();
    let d = Daemon::start(DaemonOpts {
        extra_config: format!(
            "[runtime]\nblockio_config_file = {:?}\n",
            classes.display().to_string()
        ),
        ..Default::default()
    });
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    // The plugin chooses by container name.
    let _plugin = TestPlugin::connect(
        &nri_socket(&d),
        "classes",
        "10",
        ferrio::nri::bit(nri::Event::CreateContainer),
        Arc::new(|r: &nri::CreateContainerRequest| {
            let name = r.container.as_ref().map(|c| c.name.as_str()).unwrap_or("");
            let (blockio, rdt) = match name {
                "by-plugin" => (Some("slow"), None),
                "unknown" => (Some("fast"), None),
                "rdt" => (None, Some("gold")),
                _ => (None, None),
            };
            let class = |c: Option<&str>| c.map(|v| nri::OptionalString { value: v.into() });
            linux_adjustment(nri::LinuxContainerAdjustment {
                resources: Some(nri::LinuxResources {
                    blockio_class: class(blockio),
                    rdt_class: class(rdt),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }),
        Duration::ZERO,
    )
    .await;
    let mut rt = d.runtime().await;
    let pcfg = pod_config("nri-classes", &d.dir.path().join("logs"));
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let read_limit = "cat /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device 2>/dev/null || cat /sys/fs/cgroup/io.max";
    let by_plugin = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("by-plugin", &image, "sleep 300"),
    )
    .await;
    let (out, err, _) = sh_in(&mut rt, &by_plugin, read_limit).await;
    assert!(
        out.contains(&format!("{devno} ")) && out.contains("1048576"),
        "{out}\n{err}"
    );
    let mut annotated = sh_container("by-annotation", &image, "sleep 300");
    annotated.annotations = [(
        "io.kubernetes.cri.blockio-class".to_string(),
        "slower".to_string(),
    )]
    .into();
    let by_annotation = create_start(&mut rt, &pod, &pcfg, annotated).await;
    let (out, err, _) = sh_in(&mut rt, &by_annotation, read_limit).await;
    assert!(
        out.contains(&format!("{devno} ")) && out.contains("524288"),
        "{out}\n{err}"
    );
    // A class that is not defined, and an RDT class without that resctrl group (or without
    // resctrl at all, as here), fail the create with the reason.
    for (name, want) in [("unknown", "\"fast\" is not defined"), ("rdt", "resctrl")] {
        let err = rt
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(sh_container(name, &image, "sleep 300")),
                sandbox_config: Some(pcfg.clone()),
            })
            .await
            .expect_err(name);
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains(want), "{}", err.message());
    }
    remove_pod(&mut rt, &pod.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_moves_a_container_to_another_cgroup_and_it_is_removed_from_there() {
    e2e!();
    let (d, image) = daemon_with_busybox().await;
    let moved = format!("{}/nri-moved", d.cgroup_parent);
    let to = moved.clone();
    let _plugin = TestPlugin::connect(
        &nri_socket(&d),
        "mover",
        "10",
        ferrio::nri::bit(nri::Event::CreateContainer),
        Arc::new(move |r: &nri::CreateContainerRequest| {
            let name = r.container.as_ref().map(|c| c.name.as_str()).unwrap_or("");
            let path = if name == "bad" {
                "relative/x".to_string()
            } else {
                to.clone()
            };
            linux_adjustment(nri::LinuxContainerAdjustment {
                cgroups_path: path,
                ..Default::default()
            })
        }),
        Duration::ZERO,
    )
    .await;
    let mut rt = d.runtime().await;
    let pcfg = pod_config("nri-mover", &d.dir.path().join("logs"));
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("moved", &image, "sleep 300"),
    )
    .await;
    // The container's processes are in the cgroup the plugin chose (v1: the memory controller's
    // hierarchy; v2: the unified one).
    let procs = [
        format!("/sys/fs/cgroup/memory{moved}/cgroup.procs"),
        format!("/sys/fs/cgroup{moved}/cgroup.procs"),
    ];
    let listed = procs
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    assert!(
        !listed.trim().is_empty(),
        "no process in {moved}: {procs:?}"
    );
    let (out, _, _) = sh_in(&mut rt, &id, "echo $$").await;
    assert!(!out.is_empty());
    // Its stats come from there.
    let stats = rt
        .container_stats(api::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let mem = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value);
    assert!(mem.unwrap_or(0) > 0, "{mem:?}");
    let err = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(sh_container("bad", &image, "sleep 300")),
            sandbox_config: Some(pcfg.clone()),
        })
        .await
        .expect_err("a relative cgroups path");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("absolute"), "{}", err.message());
    remove_pod(&mut rt, &pod.id).await;
    for p in &procs {
        let dir = Path::new(p).parent().unwrap();
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}
