//! Prometheus metrics, CRI pod sandbox metrics and `ferrio status` against a real daemon
//! (issue: observability).

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use std::collections::HashMap;

/// A daemon with the metrics endpoint on a free port; returns it and the endpoint's URL.
fn daemon_with_metrics() -> (Daemon, String) {
    let port = free_port();
    let d = Daemon::start(DaemonOpts {
        extra_config: format!("[metrics]\nenable = true\naddress = \"127.0.0.1:{port}\"\n"),
        ..Default::default()
    });
    (d, format!("http://127.0.0.1:{port}/metrics"))
}

/// A GET with ferrio's own HTTP client set-up (rustls on ring, the provider it installs).
async fn get_result(url: &str) -> reqwest::Result<reqwest::Response> {
    ferrio::image::http::client_builder()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
}

async fn get(url: &str) -> reqwest::Response {
    get_result(url).await.unwrap()
}

async fn scrape(url: &str) -> prometheus_parse::Scrape {
    let res = get(url).await;
    assert_eq!(res.status(), 200);
    let ctype = res
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let text = res.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("unparseable metrics ({e}):\n{text}"))
}

fn value(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => *x,
        other => panic!("not a single value: {other:?}"),
    }
}

/// The value of the one sample `name` with these labels (among others), if any.
fn sample(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| value(&x.value))
}

async fn hog_and_sleeper(
    rt: &mut ferrio::cri::api::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    image: &str,
    logs: &std::path::Path,
) -> (TestPod, String, String) {
    let pcfg = pod_config("metrics", logs);
    let pod = run_pod(rt, pcfg.clone(), "").await;
    let sleeper = create_start(rt, &pod, &pcfg, sh_container("sleeper", image, "sleep 300")).await;
    let mut c = sh_container("hog", image, "head -c 200000000 /dev/zero | tail");
    c.linux = Some(api::LinuxContainerConfig {
        resources: Some(api::LinuxContainerResources {
            memory_limit_in_bytes: 15 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let hog = create_start(rt, &pod, &pcfg, c).await;
    (pod, sleeper, hog)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_endpoint_serves_parseable_ferrio_metrics() {
    e2e!();
    let reg = Registry::shared();
    let (d, url) = daemon_with_metrics();
    let image = reg.image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    // Pulled again: every layer is reused.
    pull(&mut d.images().await, &image).await.unwrap();
    let mut rt = d.runtime().await;
    // An error, counted by code.
    let err = rt
        .container_status(api::ContainerStatusRequest {
            container_id: "nonexistent".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let logs = d.dir.path().join("logs");
    let (pod, _sleeper, hog) = hog_and_sleeper(&mut rt, &image, &logs).await;
    let st = wait_exited(&mut rt, &hog, 60).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");

    let s = scrape(&url).await;
    assert!(
        sample(
            &s,
            "ferrio_operations_total",
            &[("operation", "RunPodSandbox")]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(&s, "ferrio_operations_total", &[("operation", "PullImage")]),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &s,
            "ferrio_operation_errors_total",
            &[("operation", "ContainerStatus"), ("code", "NotFound")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&s, "ferrio_containers", &[("state", "running")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&s, "ferrio_containers", &[("state", "exited")]),
        Some(1.0)
    );
    assert_eq!(sample(&s, "ferrio_pods", &[("state", "ready")]), Some(1.0));
    assert_eq!(sample(&s, "ferrio_monitor_processes", &[]), Some(1.0));
    assert_eq!(sample(&s, "ferrio_containers_oom_total", &[]), Some(1.0));
    assert_eq!(
        sample(&s, "ferrio_image_pulls_total", &[("result", "success")]),
        Some(2.0)
    );
    assert!(sample(&s, "ferrio_image_pull_bytes_total", &[]).unwrap() > 0.0);
    assert!(sample(&s, "ferrio_image_layer_reuse_total", &[]).unwrap() >= 1.0);
    assert_eq!(
        sample(&s, "ferrio_events_dropped_subscribers_total", &[]),
        Some(0.0)
    );
    // The latency histogram, parsed as one.
    let h = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "ferrio_operation_duration_seconds"
                && x.labels.get("operation") == Some("RunPodSandbox")
        })
        .expect("RunPodSandbox latency histogram");
    match &h.value {
        prometheus_parse::Value::Histogram(b) => {
            assert!(b
                .iter()
                .any(|b| b.less_than.is_infinite() && b.count >= 1.0));
        }
        other => panic!("not a histogram: {other:?}"),
    }
    // Only /metrics is served.
    let other = get_result(&url.replace("/metrics", "/other"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);

    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    let s = scrape(&url).await;
    assert_eq!(
        sample(&s, "ferrio_containers", &[("state", "running")]),
        Some(0.0)
    );
    assert_eq!(sample(&s, "ferrio_monitor_processes", &[]), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_endpoint_is_off_by_default() {
    e2e!();
    let d = Daemon::start(DaemonOpts::default());
    assert!(!d.log_text().contains("serving metrics"));
    assert!(
        std::net::TcpStream::connect("127.0.0.1:9090").is_err() || {
            // Something else may own 9090 on this host: then at least it is not ours.
            !d.log_text().contains("9090")
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_sandbox_metrics_follow_the_descriptors() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("cri-metrics").await;
    let mut rt = d.runtime().await;
    let mut worker = sh_container(
        "worker",
        &image,
        "echo hi > /written; sleep 300 & sleep 301",
    );
    worker.linux = Some(api::LinuxContainerConfig {
        resources: Some(api::LinuxContainerResources {
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let ctr = create_start(&mut rt, &pod, &pcfg, worker).await;
    // Both sleeps running.
    for _ in 0..50 {
        let (out, _, _) = sh_in(&mut rt, &ctr, "ps -o comm | grep -c sleep").await;
        if out == "2" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let descriptors: HashMap<String, api::MetricDescriptor> = rt
        .list_metric_descriptors(api::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_spec_memory_limit_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_errors_total",
        "container_fs_usage_bytes",
        "container_processes",
        "container_last_seen",
    ] {
        assert!(descriptors.contains_key(name), "{name} not described");
    }

    let pods = rt
        .list_pod_sandbox_metrics(api::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    assert_eq!(pods.len(), 1);
    let p = &pods[0];
    assert_eq!(p.pod_sandbox_id, pod.id);
    let check = |m: &api::Metric| {
        let d = descriptors
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} is not among the descriptors", m.name));
        assert_eq!(d.label_keys.len(), m.label_values.len(), "{m:?}");
        assert!(m.timestamp > 0 && m.value.is_some(), "{m:?}");
    };
    p.metrics.iter().for_each(check);
    // Network series of the pod's namespace: its loopback, labelled by interface.
    let rx: Vec<&api::Metric> = p
        .metrics
        .iter()
        .filter(|m| m.name == "container_network_receive_bytes_total")
        .collect();
    assert!(!rx.is_empty(), "{:?}", p.metrics);
    let d = &descriptors["container_network_receive_bytes_total"];
    let iface = d.label_keys.iter().position(|k| k == "interface").unwrap();
    assert!(rx.iter().any(|m| m.label_values[iface] == "lo"), "{rx:?}");
    assert!(p
        .metrics
        .iter()
        .any(|m| m.name == "container_cpu_usage_seconds_total"));

    assert_eq!(p.container_metrics.len(), 1);
    let c = &p.container_metrics[0];
    assert_eq!(c.container_id, ctr);
    c.metrics.iter().for_each(check);
    let get = |name: &str| {
        c.metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} missing: {:?}", c.metrics))
    };
    let ws = get("container_memory_working_set_bytes");
    assert!(ws.value.unwrap().value > 0);
    assert_eq!(ws.metric_type, api::MetricType::Gauge as i32);
    assert_eq!(
        get("container_cpu_usage_seconds_total").metric_type,
        api::MetricType::Counter as i32
    );
    assert!(get("container_processes").value.unwrap().value >= 2);
    assert!(get("container_fs_usage_bytes").value.unwrap().value > 0);
    // What cAdvisor reads beyond the stats: the cgroup's limits, its processes, the writable
    // layer's filesystem, the start time.
    let v = |name: &str| get(name).value.unwrap().value;
    let labelled = |name: &str, extra: &[&str]| {
        c.metrics
            .iter()
            .find(|m| m.name == name && m.label_values[6..] == *extra)
            .map(|m| m.value.unwrap().value)
            .unwrap_or_else(|| panic!("{name}{extra:?} missing: {:?}", c.metrics))
    };
    assert_eq!(v("container_spec_cpu_quota"), 50_000);
    assert_eq!(v("container_spec_cpu_period"), 100_000);
    assert!(v("container_spec_cpu_shares") > 0);
    assert_eq!(v("container_spec_memory_limit_bytes"), 64 << 20);
    assert!(v("container_memory_cache") > 0 || v("container_memory_rss") > 0);
    assert!(v("container_memory_max_usage_bytes") >= v("container_memory_usage_bytes") / 2);
    assert_eq!(v("container_oom_events_total"), 0);
    assert!(c
        .metrics
        .iter()
        .any(|m| m.name == "container_cpu_cfs_periods_total"));
    assert!(v("container_threads") >= 2);
    assert!(v("container_file_descriptors") >= 3);
    assert!(labelled("container_tasks_state", &["sleeping"]) >= 2);
    assert!(labelled("container_ulimits_soft", &["max_open_files"]) > 0);
    let usage = get("container_fs_limit_bytes");
    let device = usage.label_values.last().unwrap().clone();
    assert!(!device.is_empty(), "{usage:?}");
    assert!(usage.value.unwrap().value > 0);
    assert!(labelled("container_fs_inodes_free", &[&device]) > 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = v("container_start_time_seconds");
    assert!(start <= now && start + 600 > now, "{start} {now}");
    for m in c
        .metrics
        .iter()
        .filter(|m| m.name == "container_memory_failures_total")
    {
        assert!(
            ["pgfault", "pgmajfault"].contains(&m.label_values[6].as_str()),
            "{m:?}"
        );
        assert!(
            ["container", "hierarchy"].contains(&m.label_values[7].as_str()),
            "{m:?}"
        );
    }
    assert_eq!(
        labelled("container_cpu_usage_seconds_total", &["total"]),
        v("container_cpu_usage_seconds_total")
    );
    // cAdvisor's labels: container name, ID, image, pod and namespace.
    let keys = &descriptors["container_memory_working_set_bytes"].label_keys;
    let label = |k: &str| ws.label_values[keys.iter().position(|x| x == k).unwrap()].clone();
    assert_eq!(label("container"), "worker");
    assert_eq!(label("id"), ctr);
    assert_eq!(label("image"), image);
    assert_eq!(label("namespace"), "test");
    assert_eq!(label("pod"), pcfg.metadata.as_ref().unwrap().name);

    // The stream form carries the same pods.
    use futures::StreamExt;
    let mut stream = rt
        .stream_pod_sandbox_metrics(api::StreamPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(r) = stream.next().await {
        streamed.extend(r.unwrap().pod_sandbox_metrics);
    }
    assert_eq!(streamed.len(), 1);
    assert_eq!(streamed[0].pod_sandbox_id, pod.id);

    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: pod.id,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn status_cli_reports_the_daemon_and_a_container() {
    e2e!();
    let (d, image, pcfg, pod) = setup_pod("status").await;
    let mut rt = d.runtime().await;
    let ctr = create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("app", &image, "sleep 300"),
    )
    .await;
    let verbose = rt
        .container_status(api::ContainerStatusRequest {
            container_id: ctr.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    let pid = info["pid"].as_i64().unwrap();
    let monitor_pid = info["monitorPid"].as_i64().unwrap();
    assert!(pid > 0 && monitor_pid > 0);

    // The CLI is a separate process: blocking on it here is fine on a multi-thread runtime.
    let overview = d.cli(&["status"]);
    println!("{overview}");
    assert!(overview.contains("RuntimeReady   true"), "{overview}");
    assert!(overview.contains("NetworkReady   false"), "{overview}");
    assert!(
        overview.contains("ferrio (recursive read-only mounts)"),
        "{overview}"
    );
    assert!(
        overview.contains("pods:       1 (0 notready, 1 ready)"),
        "{overview}"
    );
    assert!(
        overview.contains("containers: 1 (0 created, 0 exited, 1 running)"),
        "{overview}"
    );

    let detail = d.cli(&["status", "containers", &ctr[..12]]);
    println!("{detail}");
    let field = |k: &str| {
        detail
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {k} in {detail}"))
    };
    assert_eq!(field("container:"), ctr);
    assert_eq!(field("state:"), "running");
    assert_eq!(field("pid:"), pid.to_string());
    assert_eq!(field("monitor pid:"), monitor_pid.to_string());
    assert_eq!(
        field("monitor:"),
        format!("answered: pid {pid}, started, protocol 1"),
        "{detail}"
    );
    assert!(field("exit file:").ends_with("(absent)"), "{detail}");

    let table = d.cli(&["status", "containers"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&ctr[..13]))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("running") && row.contains(&pid.to_string()),
        "{row}"
    );

    let toml_cfg = d.cli(&["status", "config"]);
    let cfg: ferrio::config::Config = toml::from_str(&toml_cfg).unwrap();
    assert_eq!(cfg.socket_path(), d.socket);
    let json_cfg = d.cli(&["status", "config", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json_cfg).unwrap();
    assert_eq!(v["metrics"]["enable"], false);

    // After the container is stopped: the exit file is there, the monitor is gone.
    rt.stop_container(api::StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let after = d.cli(&["status", "containers", &ctr]);
    assert!(after.contains("state:        exited"), "{after}");
    assert!(after.contains("monitor:      no answer"), "{after}");
    assert!(!after.contains("(absent)"), "{after}");

    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: pod.id,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ferrio_status_shows_a_long_pull_in_progress() {
    e2e!();
    let reg = Registry::shared();
    let d = Daemon::start(DaemonOpts::default());
    // A slow registry: 100 KiB/s through the throttling proxy.
    let proxy = Proxy::start(reg.port);
    proxy
        .rate
        .store(100 << 10, std::sync::atomic::Ordering::Relaxed);
    let image = format!("127.0.0.1:{}/ferrio-test/multilayer:latest", proxy.port);
    let mut c = d.images().await;
    let img = image.clone();
    let pulling = tokio::spawn(async move { pull(&mut c, &img).await });
    let status = || d.cli(&["status"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut seen = String::new();
    while std::time::Instant::now() < deadline {
        seen = status();
        let line = seen
            .lines()
            .find(|l| l.contains("ferrio-test/multilayer"))
            .unwrap_or("");
        // "<image>  <n>s, <got> of <total> bytes in <k> layers downloading" with bytes moving.
        if line.contains("bytes in") && !line.contains(" 0 of ") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(
        seen.contains("ferrio-test/multilayer") && seen.contains("downloading"),
        "{seen}"
    );
    proxy.rate.store(0, std::sync::atomic::Ordering::Relaxed);
    pulling.await.unwrap().unwrap();
    assert!(status().contains("pulls:      none in progress"));
}
