//! The engine's own bookkeeping, without a runtime and as any user: what a restart restores
//! from the records it finds (and what it tears down), name reservation, and creates handed to
//! their retries. Each test opens an [`Engine`] on a temporary root with [`Engine::new`] (no
//! idmap probe, no CNI garbage collection) and calls what `open` would.

use super::*;
use crate::monitor::proto::ExitInfo;

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Arc<Engine>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        root: dir.path().join("root"),
        run_root: dir.path().join("run"),
        ..Default::default()
    };
    cfg.network.network_dir = dir.path().join("net.d");
    cfg.image.registries_conf = dir.path().join("registries.conf");
    let cfg = Arc::new(cfg);
    let images = Images::open(&cfg).unwrap();
    let engine = Engine::new(cfg, images).unwrap();
    Fixture { _dir: dir, engine }
}

fn pod(id: &str, name: &str, complete: bool) -> PodRecord {
    PodRecord {
        id: id.into(),
        config: PodConfig {
            name: name.into(),
            namespace: "ns".into(),
            uid: format!("uid-{name}"),
            ..Default::default()
        },
        runtime_handler: String::new(),
        created_at_ns: 1,
        state: PodState::Ready,
        complete,
        paths: PodPaths::default(),
        cgroup: String::new(),
        made_cgroup: false,
        pause: None,
        ips: Vec::new(),
        cni_attached: false,
        unclaimed: false,
    }
}

fn container(id: &str, pod_id: &str, name: &str, state: ContainerState) -> ContainerRecord {
    ContainerRecord {
        id: id.into(),
        pod_id: pod_id.into(),
        config: ContainerConfig {
            name: name.into(),
            ..Default::default()
        },
        // A handler this daemon does not have: no `__delete` helper is run for it.
        handler: "gone".into(),
        image: "img".into(),
        image_id: "sha256:img".into(),
        created_at_ns: 2,
        started_at_ns: 3,
        finished_at_ns: 0,
        state,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        log_path: PathBuf::new(),
        user: User::default(),
        pid: 0,
        monitor_pid: 0,
        stop_signal: libc::SIGTERM,
        cgroup: String::new(),
        mounts: Vec::new(),
        unclaimed: false,
    }
}

/// Writes records as a daemon that stopped would have left them.
fn plant(e: &Engine, pods: &[PodRecord], ctrs: &[ContainerRecord]) {
    for kind in ["pods", "containers"] {
        std::fs::create_dir_all(e.state_dir(kind)).unwrap();
    }
    for p in pods {
        crate::state::write_json(&e.state_dir("pods").join(format!("{}.json", p.id)), p).unwrap();
    }
    for c in ctrs {
        let path = e.state_dir("containers").join(format!("{}.json", c.id));
        crate::state::write_json(&path, c).unwrap();
    }
}

fn on_disk(e: &Engine, kind: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(e.state_dir(kind))
        .unwrap()
        .flatten()
        .map(|d| {
            d.file_name()
                .to_string_lossy()
                .trim_end_matches(".json")
                .to_string()
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_restart_keeps_complete_objects_and_tears_down_half_made_ones() {
    let f = fixture();
    let e = &f.engine;
    let ctr_dir = e.ctr_paths("c-creating");
    std::fs::create_dir_all(ctr_dir.bundle()).unwrap();
    std::fs::create_dir_all(ctr_dir.upper()).unwrap();
    let half_pod_dir = e.pod_dir("p-half");
    std::fs::create_dir_all(&half_pod_dir).unwrap();
    plant(
        e,
        &[pod("p-ok", "web", true), pod("p-half", "half", false)],
        &[
            container("c-exited", "p-ok", "done", ContainerState::Exited),
            container("c-creating", "p-ok", "new", ContainerState::Creating),
            container("c-orphan", "p-gone", "lost", ContainerState::Exited),
        ],
    );
    // A dot file is an atomic write a crash interrupted.
    std::fs::write(e.state_dir("pods").join(".p-tmp.json"), "{").unwrap();
    e.restore().await;

    assert_eq!(on_disk(e, "pods"), ["p-ok"]);
    assert_eq!(on_disk(e, "containers"), ["c-exited"]);
    assert!(
        !half_pod_dir.exists(),
        "the half-made pod's directory is removed"
    );
    assert!(
        !ctr_dir.run.exists() && !ctr_dir.data.exists(),
        "the Creating container's files are removed"
    );
    let pods: Vec<String> = e.list_pods().into_iter().map(|p| p.id).collect();
    assert_eq!(pods, ["p-ok"]);
    let ctrs: Vec<String> = e.list_containers().into_iter().map(|c| c.id).collect();
    assert_eq!(ctrs, ["c-exited"]);
    // The kept objects hold their names again; the removed ones do not.
    let web = pod::pod_name(&pod("p-ok", "web", true).config);
    assert!(e.reserve(&web, "other").is_err());
    let half = pod::pod_name(&pod("p-half", "half", false).config);
    e.reserve(&half, "other").unwrap();
    let p = pod("p-ok", "web", true);
    let done = container::container_name(
        &p.config,
        &container("x", "p-ok", "done", ContainerState::Exited).config,
    );
    let err = e.reserve(&done, "other").unwrap_err();
    assert_eq!(
        crate::error::ErrorKind::kind(&err),
        crate::error::Kind::AlreadyExists
    );
    assert!(err.to_string().contains("c-exited"), "{err}");
}

#[tokio::test]
async fn a_container_that_ended_while_the_daemon_was_down_gets_its_exit() {
    let f = fixture();
    let e = &f.engine;
    plant(
        e,
        &[pod("p", "web", true)],
        &[
            container("c-exit-file", "p", "a", ContainerState::Running),
            container("c-no-monitor", "p", "b", ContainerState::Running),
        ],
    );
    // The monitor of the first wrote its exit file (an OOM kill) before the daemon came back.
    let paths = e.ctr_paths("c-exit-file");
    std::fs::create_dir_all(&paths.run).unwrap();
    let exit = ExitInfo {
        exit_code: 137,
        signal: Some(libc::SIGKILL),
        finished_at_ns: 42,
        oom_killed: true,
    };
    crate::state::write_json(&paths.exit_file(), &exit).unwrap();
    e.restore().await;

    let a = e.container("c-exit-file").unwrap();
    assert_eq!(a.state, ContainerState::Exited);
    assert_eq!((a.exit_code, a.finished_at_ns), (137, 42));
    assert_eq!(a.reason, "OOMKilled");
    assert_eq!(e.oom_kills(), 1);
    // The second's monitor is gone without an exit file: exited, 255, Error.
    let b = e.container("c-no-monitor").unwrap();
    assert_eq!(b.state, ContainerState::Exited);
    assert_eq!((b.exit_code, b.reason.as_str()), (255, "Error"));
    // Both are saved so: a second restart reads them as exited.
    let again: ContainerRecord =
        crate::state::read_json(&e.state_dir("containers").join("c-no-monitor.json")).unwrap();
    assert_eq!(again.state, ContainerState::Exited);
}

#[tokio::test]
async fn a_pod_whose_namespaces_are_gone_is_restored_not_ready() {
    let f = fixture();
    let e = &f.engine;
    let mut p = pod("p", "web", true);
    // After a reboot the pinned namespace is a plain path, or nothing.
    p.paths.net_ns = Some(e.pod_dir("p").join("ns/net"));
    plant(e, &[p], &[]);
    e.restore().await;
    assert_eq!(e.pod("p").unwrap().state, PodState::NotReady);
    let saved: PodRecord = crate::state::read_json(&e.state_dir("pods").join("p.json")).unwrap();
    assert_eq!(saved.state, PodState::NotReady);
}

#[tokio::test]
async fn a_name_is_held_by_one_id_until_that_id_releases_it() {
    let f = fixture();
    let e = &f.engine;
    e.reserve("k8s_POD_a_ns_u_0", "id1").unwrap();
    let err = e.reserve("k8s_POD_a_ns_u_0", "id2").unwrap_err();
    assert_eq!(
        crate::error::ErrorKind::kind(&err),
        crate::error::Kind::AlreadyExists
    );
    // Another ID's release does not free it.
    e.release("k8s_POD_a_ns_u_0", "id2");
    assert!(e.reserve("k8s_POD_a_ns_u_0", "id3").is_err());
    e.release("k8s_POD_a_ns_u_0", "id1");
    e.reserve("k8s_POD_a_ns_u_0", "id3").unwrap();
}

#[tokio::test]
async fn concurrent_creates_of_one_name_run_once_and_a_caller_that_leaves_does_not_stop_it() {
    let f = fixture();
    let e = f.engine.clone();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let work = |runs: Arc<std::sync::atomic::AtomicUsize>,
                mut go: tokio::sync::watch::Receiver<bool>| {
        move |id: String, _h: creates::Handoff| async move {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = go.wait_for(|g| *g).await;
            Ok(id)
        }
    };
    // The first caller gives up before the create finishes (a kubelet deadline).
    let first = {
        let (e, w) = (e.clone(), work(runs.clone(), go_rx.clone()));
        tokio::spawn(async move { e.create_once(Made::Pod, "n".into(), w).await })
    };
    while runs.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    first.abort();
    // Its retry waits for the same create.
    let retry = {
        let (e, w) = (e.clone(), work(runs.clone(), go_rx.clone()));
        tokio::spawn(async move { e.create_once(Made::Pod, "n".into(), w).await })
    };
    tokio::task::yield_now().await;
    go_tx.send_replace(true);
    let id = retry.await.unwrap().unwrap();
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one create ran"
    );
    assert_eq!(id.len(), 64);
    // The name stays reserved for that ID.
    assert!(e.reserve("n", "other").is_err());
}

#[tokio::test]
async fn a_failed_create_leaves_the_name_free() {
    let f = fixture();
    let e = f.engine.clone();
    let err = e
        .create_once(Made::Container, "n".into(), |id: String, _h| {
            let e = e.clone();
            async move {
                // What a failing create does: undo, release its name, answer the cause.
                e.release("n", &id);
                Err(EngineError::invalid("bad request"))
            }
        })
        .await
        .unwrap_err();
    assert_eq!(
        crate::error::ErrorKind::kind(&err),
        crate::error::Kind::InvalidArgument
    );
    e.reserve("n", "other").unwrap();
}
