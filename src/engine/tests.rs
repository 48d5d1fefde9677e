//! The engine's lifecycle logic without a runtime, as any user: start, stop and remove against
//! a fake monitor (the real control protocol on the container's socket, see [`FakeMonitor`]),
//! what a restart restores from the records it finds (and what it tears down), name
//! reservation, and creates handed to their retries. Each test opens an [`Engine`] on a
//! temporary root with [`Engine::new`] (no idmap probe, no CNI garbage collection).

use super::*;
use crate::monitor::proto::ExitInfo;
use std::time::Duration;

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
    // Writable layers: one of a kept container, one no record names (its record lost to a
    // power loss: records are not fsynced).
    std::fs::create_dir_all(e.ctr_paths("c-exited").upper()).unwrap();
    std::fs::create_dir_all(e.ctr_paths("c-ghost").upper()).unwrap();
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
    assert!(e.ctr_paths("c-exited").data.exists());
    assert!(
        !e.ctr_paths("c-ghost").data.exists(),
        "an orphan writable layer is removed"
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

/// A monitor for the lifecycle tests: the real control protocol on the container's
/// `monitor.sock` (one JSON line each way per connection), no container behind it. It logs
/// each request, and "exits" — writes the exit file a monitor writes, answers every `wait` —
/// when it is sent one of the signals it obeys.
struct FakeMonitor {
    log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeMonitor {
    fn serve(e: &Engine, id: &str, obeys: &'static [i32]) -> FakeMonitor {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let paths = e.ctr_paths(id);
        std::fs::create_dir_all(&paths.run).unwrap();
        let listener = tokio::net::UnixListener::bind(paths.monitor_socket()).unwrap();
        let exit_file = paths.exit_file();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (exited_tx, exited_rx) = tokio::sync::watch::channel(None::<ExitInfo>);
        let exited_tx = Arc::new(exited_tx);
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let l = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (log, exit_file, tx, mut rx, started) = (
                    l.clone(),
                    exit_file.clone(),
                    exited_tx.clone(),
                    exited_rx.clone(),
                    started.clone(),
                );
                tokio::spawn(async move {
                    let mut conn = tokio::io::BufReader::new(conn);
                    let mut line = String::new();
                    conn.read_line(&mut line).await.unwrap();
                    let req: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let op = req["op"].as_str().unwrap().to_string();
                    let mut answer = json_answer(&started);
                    match op.as_str() {
                        "start" => {
                            started.store(true, std::sync::atomic::Ordering::SeqCst);
                            log.lock().unwrap().push(op);
                        }
                        "kill" => {
                            let signal = i32::try_from(req["signal"].as_i64().unwrap()).unwrap();
                            log.lock()
                                .unwrap()
                                .push(format!("kill {signal} all={}", req["all"]));
                            if obeys.contains(&signal) && tx.borrow().is_none() {
                                let exit = ExitInfo {
                                    exit_code: 128 + signal,
                                    signal: Some(signal),
                                    finished_at_ns: now_ns(),
                                    oom_killed: false,
                                };
                                crate::state::write_json(&exit_file, &exit).unwrap();
                                tx.send_replace(Some(exit));
                            }
                        }
                        "wait" => {
                            let exit = *rx.wait_for(Option::is_some).await.unwrap();
                            answer["exit"] = serde_json::to_value(exit).unwrap();
                        }
                        "state" => {}
                        _ => log.lock().unwrap().push(op),
                    }
                    let mut out = serde_json::to_vec(&answer).unwrap();
                    out.push(b'\n');
                    // A waiter may have left (its timeout): nothing to answer then.
                    let _ = conn.get_mut().write_all(&out).await;
                });
            }
        });
        FakeMonitor { log, task }
    }

    /// The requests so far, except `state` and `wait` (which readers and watchers send
    /// at any time).
    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn json_answer(started: &std::sync::atomic::AtomicBool) -> serde_json::Value {
    serde_json::json!({
        "pid": 0,
        "started": started.load(std::sync::atomic::Ordering::SeqCst),
        "v": crate::monitor::client::PROTOCOL,
    })
}

impl Drop for FakeMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A pod and one container of it, registered as CreateContainer leaves them (Created, its
/// name reserved), with a fake monitor obeying `obeys`.
fn created(f: &Fixture, obeys: &'static [i32]) -> (ContainerRecord, FakeMonitor) {
    let e = &f.engine;
    let p = pod("p", "web", true);
    let c = container("c1", "p", "app", ContainerState::Created);
    plant(e, std::slice::from_ref(&p), std::slice::from_ref(&c));
    e.pods.write().unwrap().insert(p.id.clone(), p.clone());
    e.containers
        .write()
        .unwrap()
        .insert(c.id.clone(), c.clone());
    e.reserve(&container::container_name(&p.config, &c.config), &c.id)
        .unwrap();
    let m = FakeMonitor::serve(e, &c.id, obeys);
    (c, m)
}

fn next_kinds(rx: &mut tokio::sync::broadcast::Receiver<events::Event>) -> Vec<events::EventKind> {
    let mut v = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        v.push(ev.kind);
    }
    v
}

#[tokio::test]
async fn start_then_stop_sends_the_stop_signal_and_reads_the_exit() {
    let f = fixture();
    let e = &f.engine;
    let (c, m) = created(&f, &[libc::SIGTERM]);
    let mut events = e.subscribe();
    e.start_container("c1").await.unwrap();
    let rec = e.container("c1").unwrap();
    assert_eq!(rec.state, ContainerState::Running);
    assert!(rec.started_at_ns > c.started_at_ns);
    // A second start is refused, and the monitor is not asked.
    let err = e.start_container("c1").await.unwrap_err();
    assert_eq!(
        crate::error::ErrorKind::kind(&err),
        crate::error::Kind::FailedPrecondition
    );
    e.stop_container("c1", 30).await.unwrap();
    assert_eq!(m.requests(), ["start", "kill 15 all=false"]);
    let rec = e.container("c1").unwrap();
    assert_eq!(rec.state, ContainerState::Exited);
    assert_eq!(rec.exit_code, 143);
    // The exit is saved: a restart reads it.
    let saved: ContainerRecord =
        crate::state::read_json(&e.state_dir("containers").join("c1.json")).unwrap();
    assert_eq!(
        (saved.state, saved.exit_code),
        (ContainerState::Exited, 143)
    );
    // Stopping an exited container asks nothing more.
    e.stop_container("c1", 30).await.unwrap();
    assert_eq!(m.requests().len(), 2);
    assert_eq!(next_kinds(&mut events), [events::EventKind::Started]);
}

#[tokio::test]
async fn a_container_that_ignores_its_stop_signal_is_killed_after_the_timeout() {
    let f = fixture();
    let e = &f.engine;
    let (_c, m) = created(&f, &[libc::SIGKILL]);
    e.start_container("c1").await.unwrap();
    let t = std::time::Instant::now();
    e.stop_container("c1", 1).await.unwrap();
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(
        m.requests(),
        ["start", "kill 15 all=false", "kill 9 all=true"]
    );
    let rec = e.container("c1").unwrap();
    assert_eq!((rec.state, rec.exit_code), (ContainerState::Exited, 137));
}

#[tokio::test]
async fn remove_kills_first_then_removes_the_files_the_record_and_the_name() {
    let f = fixture();
    let e = &f.engine;
    let (c, m) = created(&f, &[libc::SIGKILL]);
    e.start_container("c1").await.unwrap();
    std::fs::create_dir_all(e.ctr_paths("c1").upper()).unwrap();
    let mut events = e.subscribe();
    e.remove_container("c1").await.unwrap();
    // A stop with no grace: SIGKILL to every process at once.
    assert_eq!(m.requests(), ["start", "kill 9 all=true"]);
    assert!(e.container("c1").is_none());
    assert!(!e.state_dir("containers").join("c1.json").exists());
    let paths = e.ctr_paths("c1");
    assert!(!paths.run.exists() && !paths.data.exists());
    let name = container::container_name(&pod("p", "web", true).config, &c.config);
    e.reserve(&name, "next").unwrap();
    assert_eq!(next_kinds(&mut events), [events::EventKind::Deleted]);
    // Removing it again is not an error (CRI idempotence), nor stopping it.
    e.remove_container("c1").await.unwrap();
    e.stop_container("c1", 10).await.unwrap();
}
