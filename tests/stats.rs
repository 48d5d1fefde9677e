//! Container and pod statistics from real containers (issue: observability).

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn container_and_pod_stats_move_with_the_workload() {
    e2e!();
    let reg = Registry::shared();
    let d = Daemon::start(DaemonOpts::default());
    let image = reg.image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let logs = d.dir.path().join("logs");
    let mut pcfg = pod_config("stats", &logs);
    pcfg.labels.insert("app".into(), "stats".into());
    let mut rt = d.runtime().await;
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    // Holds 40 MB once told to (a shell variable, still used after the sleep so the shell stays),
    // then sleeps.
    let mut c = sh_container(
        "busy",
        &image,
        "while [ ! -e /tmp/go ]; do sleep 0.1; done; x=$(head -c 40000000 /dev/zero | tr '\\0' a); touch /tmp/ready; sleep 300; echo ${#x}",
    );
    c.labels.insert("role".into(), "busy".into());
    let busy = create_start(&mut rt, &pod, &pcfg, c).await;
    // Created but not started: listed too.
    let idle = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(sh_container("idle", &image, "true")),
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;

    let rt_s = rt.clone();
    let stats = move |id: String| {
        let mut rt = rt_s.clone();
        async move {
            rt.container_stats(api::ContainerStatsRequest { container_id: id })
                .await
                .unwrap()
                .into_inner()
                .stats
                .unwrap()
        }
    };
    let s0 = stats(busy.clone()).await;
    let cpu0 = s0
        .cpu
        .as_ref()
        .unwrap()
        .usage_core_nano_seconds
        .unwrap()
        .value;
    let mem0 = s0.memory.as_ref().unwrap().working_set_bytes.unwrap().value;
    let wl0 = s0
        .writable_layer
        .as_ref()
        .unwrap()
        .used_bytes
        .unwrap()
        .value;
    // Burn CPU, have the container take its 40 MB, write 5 MB to the rootfs.
    let (_, _, code) = sh_in(
        &mut rt,
        &busy,
        "touch /tmp/go; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; \
         head -c 5000000 /dev/urandom > /data.bin; \
         n=0; while [ ! -e /tmp/ready ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done; test -e /tmp/ready",
    )
    .await;
    assert_eq!(code, 0);
    let s1 = stats(busy.clone()).await;
    let cpu1 = s1
        .cpu
        .as_ref()
        .unwrap()
        .usage_core_nano_seconds
        .unwrap()
        .value;
    let mem1 = s1.memory.as_ref().unwrap().working_set_bytes.unwrap().value;
    let wl1 = s1
        .writable_layer
        .as_ref()
        .unwrap()
        .used_bytes
        .unwrap()
        .value;
    assert!(cpu1 > cpu0 + 50_000_000, "cpu {cpu0} → {cpu1}");
    assert!(mem1 > mem0 + 30_000_000, "working set {mem0} → {mem1}");
    assert!(wl1 >= wl0 + 5_000_000, "writable layer {wl0} → {wl1}");
    assert!(
        s1.cpu.unwrap().usage_nano_cores.is_some(),
        "a rate from two samples"
    );
    assert_eq!(
        s1.writable_layer.unwrap().fs_id.unwrap().mountpoint,
        d.root.display().to_string()
    );

    // Filters.
    let rt_l = rt.clone();
    let list = move |f: Option<api::ContainerStatsFilter>| {
        let mut rt = rt_l.clone();
        async move {
            rt.list_container_stats(api::ListContainerStatsRequest { filter: f })
                .await
                .unwrap()
                .into_inner()
                .stats
        }
    };
    assert_eq!(
        list(None).await.len(),
        2,
        "running and created-but-not-started"
    );
    let sel = [("role".to_string(), "busy".to_string())]
        .into_iter()
        .collect();
    let by_label = list(Some(api::ContainerStatsFilter {
        label_selector: sel,
        ..Default::default()
    }))
    .await;
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].attributes.as_ref().unwrap().id, busy);
    let by_id = list(Some(api::ContainerStatsFilter {
        id: idle[..8].into(),
        ..Default::default()
    }))
    .await;
    assert_eq!(by_id.len(), 1);
    let other_pod = list(Some(api::ContainerStatsFilter {
        pod_sandbox_id: "0000".into(),
        ..Default::default()
    }))
    .await;
    assert!(other_pod.is_empty());

    // Pod stats: network counters of the pod's namespace move with loopback traffic.
    let pod_stats = |mut rt: ferrio::cri::api::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
                     id: String| async move {
        rt.pod_sandbox_stats(api::PodSandboxStatsRequest { pod_sandbox_id: id })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap()
            .linux
            .unwrap()
    };
    let lo = |n: &api::NetworkUsage| {
        n.interfaces
            .iter()
            .find(|i| i.name == "lo")
            .unwrap()
            .rx_bytes
            .unwrap()
            .value
    };
    let p0 = pod_stats(rt.clone(), pod.id.clone()).await;
    let (_, _, code) = sh_in(
        &mut rt,
        &busy,
        "httpd -p 8081 -h /bin && sleep 0.2 && wget -q -O /dev/null http://127.0.0.1:8081/busybox",
    )
    .await;
    assert_eq!(code, 0);
    let p1 = pod_stats(rt.clone(), pod.id.clone()).await;
    assert!(lo(p1.network.as_ref().unwrap()) > lo(p0.network.as_ref().unwrap()) + 1_000_000);
    assert!(
        p1.process.unwrap().process_count.unwrap().value >= 3,
        "sleep, sh and the holder"
    );
    assert_eq!(p1.containers.len(), 2);
    assert!(
        p1.memory.unwrap().working_set_bytes.unwrap().value > 30_000_000,
        "the pod cgroup holds its containers"
    );
    let all = rt
        .list_pod_sandbox_stats(api::ListPodSandboxStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);
    let e = rt
        .container_stats(api::ContainerStatsRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    tokio::time::sleep(Duration::from_millis(10)).await;
    finish_pod(&d, &pod).await;
}
