//! An upgrade: containers whose monitors an earlier release started (`hack/build-previous.sh`
//! builds it, protocol 0), then this tree's daemon restored over them. Every request the new
//! daemon makes of an old monitor must work; a new container's monitor speaks protocol 1.

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The earlier release's binary, built once per test binary; None when this clone lacks its
/// commit (a shallow clone: hack/build-previous.sh exits 77, and hack/test.sh says so loudly).
fn previous_release() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = std::process::Command::new(repo_root().join("hack/build-previous.sh"))
            .output()
            .unwrap();
        if out.status.code() == Some(77) {
            return None;
        }
        assert!(
            out.status.success(),
            "hack/build-previous.sh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
    })
    .clone()
}

/// What `ferrio status containers ID` says the monitor answered.
fn monitor_line(d: &Daemon, id: &str) -> String {
    let out = d.cli(&["status", "containers", id]);
    out.lines()
        .find(|l| l.trim_start().starts_with("monitor:"))
        .unwrap_or_else(|| panic!("no monitor line: {out}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_daemon_restored_over_an_earlier_releases_monitors() {
    e2e!();
    let Some(previous) = previous_release() else {
        eprintln!("SKIPPED: the earlier release is not in this clone's history");
        return;
    };
    let mut old = Daemon::start(DaemonOpts {
        binary: Some(previous),
        ..Default::default()
    });
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut old.images().await, &image).await.unwrap();
    let pcfg = pod_config("upgrade", &old.dir.path().join("logs"));
    let mut rt = old.runtime().await;
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container(
            "old",
            &image,
            "echo up; trap 'exit 7' TERM; while true; do sleep 0.2; done",
        ),
    )
    .await;
    drop(rt);
    assert!(old.stop().success());

    let d = old.restart(DaemonOpts::default());
    let mut rt = d.runtime().await;
    let st = ctr_status(&mut rt, &id).await;
    assert_eq!(st.state, api::ContainerState::ContainerRunning as i32);
    assert!(
        monitor_line(&d, &id).contains("protocol 0"),
        "{}",
        monitor_line(&d, &id)
    );
    // What the new daemon asks of the old monitor: reopen the log, update resources, exec.
    rt.reopen_container_log(api::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    rt.update_container_resources(api::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(api::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let (out, _, code) = sh_in(&mut rt, &id, "echo exec-ok").await;
    assert_eq!((out.as_str(), code), ("exec-ok", 0));
    // A new container in the same pod: a new monitor, the new protocol.
    let new = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("new", &image, "sleep 300"),
    )
    .await;
    assert!(
        monitor_line(&d, &new).contains("protocol 1"),
        "{}",
        monitor_line(&d, &new)
    );
    // Stop through the old monitor (kill, then its wait answer), seen as an event too.
    let mut events = rt
        .get_container_events(api::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    rt.stop_container(api::StopContainerRequest {
        container_id: id.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    let st = ctr_status(&mut rt, &id).await;
    assert_eq!(
        (st.state, st.exit_code),
        (api::ContainerState::ContainerExited as i32, 7),
        "{st:?}"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.message().await.unwrap() {
            if ev.container_id == id
                && ev.container_event_type == api::ContainerEventType::ContainerStoppedEvent as i32
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(stopped, Ok(true), "STOPPED for the old monitor's container");
    finish_pod(&d, &pod).await;
}
