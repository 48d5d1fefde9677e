//! The runtime core end to end: real pods and containers (libcontainer inside ferrio, and runc
//! and crun as external handlers) from the local-registry test images, as root.

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
    assert_leaves_nothing(&d, &pod.id, &[&id, &ok]);
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
    lifecycle("").await;
}
