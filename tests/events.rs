//! GetContainerEvents: a container's whole life, in order, on two subscribers, with STOPPED
//! pushed by the monitor when the container exits on its own; then the pods' own events.

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn events_arrive_in_order_on_every_subscriber() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("events").await;
    let mut rt = d.runtime().await;
    let mut subs = Vec::new();
    for _ in 0..2 {
        let s = rt
            .get_container_events(api::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
        subs.push(s);
    }
    // Exits by itself after a moment: nobody asks for its status in between.
    let id = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("short", &image, "sleep 0.5; exit 3"),
    )
    .await;
    let want = [
        api::ContainerEventType::ContainerCreatedEvent,
        api::ContainerEventType::ContainerStartedEvent,
        api::ContainerEventType::ContainerStoppedEvent,
    ];
    for s in subs.iter_mut() {
        for w in want {
            let ev = tokio::time::timeout(Duration::from_secs(10), s.message())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .unwrap();
            assert_eq!(ev.container_id, id);
            assert_eq!(ev.container_event_type, w as i32, "{ev:?}");
            assert!(ev.created_at > 0);
            assert_eq!(ev.pod_sandbox_status.as_ref().unwrap().id, pod.id);
            if w == api::ContainerEventType::ContainerStoppedEvent {
                let st = ev.containers_statuses.iter().find(|c| c.id == id).unwrap();
                assert_eq!(
                    (st.state, st.exit_code),
                    (api::ContainerState::ContainerExited as i32, 3)
                );
            }
        }
    }
    rt.remove_container(api::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    for s in subs.iter_mut() {
        let ev = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (ev.container_id.as_str(), ev.container_event_type),
            (
                id.as_str(),
                api::ContainerEventType::ContainerDeletedEvent as i32
            )
        );
    }
    // The pod's own events (as containerd sends them): its ID as the container ID, its status
    // as it was — also in DELETED, when the pod is gone.
    let s = &mut subs[0];
    finish_pod(&d, &pod).await;
    let pod2 = run_pod(
        &mut rt,
        pod_config("events2", &d.dir.path().join("logs")),
        "",
    )
    .await;
    finish_pod(&d, &pod2).await;
    use api::ContainerEventType as T;
    use api::PodSandboxState as P;
    let want = [
        (&pod.id, T::ContainerStoppedEvent, P::SandboxNotready),
        (&pod.id, T::ContainerDeletedEvent, P::SandboxNotready),
        (&pod2.id, T::ContainerCreatedEvent, P::SandboxReady),
        (&pod2.id, T::ContainerStartedEvent, P::SandboxReady),
        (&pod2.id, T::ContainerStoppedEvent, P::SandboxNotready),
        (&pod2.id, T::ContainerDeletedEvent, P::SandboxNotready),
    ];
    for (pod_id, kind, state) in want {
        let ev = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("a pod event within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(
            (&ev.container_id, ev.container_event_type),
            (pod_id, kind as i32),
            "{ev:?}"
        );
        let st = ev.pod_sandbox_status.as_ref().expect("the pod's status");
        assert_eq!((&st.id, st.state), (pod_id, state as i32), "{ev:?}");
        assert!(ev.containers_statuses.is_empty(), "{ev:?}");
    }
}
