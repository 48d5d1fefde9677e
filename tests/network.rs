//! Pods on a real CNI network (Debian's bridge, host-local, loopback and portmap plugins):
//! addresses, pod-to-pod traffic, hostPort, NetworkReady, and nothing left behind.

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use std::process::Command;

/// A CNI network of this test: a conflist from hack/cni-conf.sh with its own subnet, bridge
/// and IPAM directory. The bridge (which the plugin leaves) is deleted on drop.
struct TestNet {
    bridge: String,
    ipam: std::path::PathBuf,
    gateway: String,
}

impl TestNet {
    fn write(d: &Daemon, third_octet: u8) -> TestNet {
        let subnet = format!(
            "10.{}.{}.0/24",
            200 + (std::process::id() % 50),
            third_octet
        );
        let ipam = d.dir.path().join("ipam");
        let out = Command::new(repo_root().join("hack/cni-conf.sh"))
            .arg(d.dir.path().join("net.d"))
            .arg(&subnet)
            .arg(format!("t{third_octet}"))
            .arg(&ipam)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = std::fs::read_to_string(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&conf).unwrap();
        let bridge = v["plugins"][0]["bridge"].as_str().unwrap().to_string();
        let gateway = subnet.replace(".0/24", ".1");
        TestNet {
            bridge,
            ipam,
            gateway,
        }
    }

    /// Addresses host-local still has allocated.
    fn allocations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for net in entries(&self.ipam) {
            for f in entries(&self.ipam.join(&net)) {
                if f.parse::<std::net::IpAddr>().is_ok() {
                    out.push(f);
                }
            }
        }
        out
    }

    fn veths(&self) -> String {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn iptables_mentions(needle: &str) -> Vec<String> {
    let out = Command::new("iptables-save")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

async fn network_ready(
    rt: &mut ferrio::cri::api::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
) -> bool {
    let st = rt
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    st.status
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap()
        .status
}

async fn pod_ip(
    rt: &mut ferrio::cri::api::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    id: &str,
) -> String {
    pod_status(rt, id).await.network.unwrap().ip
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_get_addresses_reach_each_other_and_a_host_port() {
    e2e!();
    let reg = Registry::shared();
    let mut d = Daemon::start(DaemonOpts::default());
    let image = reg.image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let mut rt = d.runtime().await;
    assert!(!network_ready(&mut rt).await, "no conflist yet");
    let net = TestNet::write(&d, 1);
    assert!(network_ready(&mut rt).await, "a conflist appeared");

    let logs = d.dir.path().join("logs");
    let host_port = 20000 + (std::process::id() % 10000) as i32;
    let mut acfg = pod_config("neta", &logs);
    acfg.port_mappings = vec![api::PortMapping {
        protocol: api::Protocol::Tcp as i32,
        container_port: 8080,
        host_port,
        host_ip: String::new(),
    }];
    let mut bcfg = pod_config("netb", &logs);
    // Pod B's traffic is shaped by the bandwidth plugin (tbf on its host-side veth).
    bcfg.annotations
        .insert("kubernetes.io/ingress-bandwidth".into(), "1M".into());
    let a = run_pod(&mut rt, acfg.clone(), "").await;
    let b = run_pod(&mut rt, bcfg.clone(), "").await;
    let (ip_a, ip_b) = (pod_ip(&mut rt, &a.id).await, pod_ip(&mut rt, &b.id).await);
    assert!(
        !ip_a.is_empty() && !ip_b.is_empty() && ip_a != ip_b,
        "{ip_a} {ip_b}"
    );
    let server = create_start(
        &mut rt,
        &a,
        &acfg,
        sh_container(
            "web",
            &image,
            "echo hello-from-a > /tmp/index.html; httpd -f -p 8080 -h /tmp",
        ),
    )
    .await;
    let client = create_start(&mut rt, &b, &bcfg, sh_container("cli", &image, "sleep 300")).await;
    let mut got = String::new();
    for _ in 0..50 {
        // (busybox-static's wget segfaults for non-loopback addresses here; nc does the job)
        let cmd = format!(
            "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip_a} 8080 2>&1; echo rc=$?"
        );
        let (out, err, code) = sh_in(&mut rt, &client, &cmd).await;
        if out.contains("hello-from-a") && out.contains("rc=0") {
            got = "hello-from-a".into();
            break;
        }
        got = format!("{out} / {err} (exit {code})");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(got, "hello-from-a", "pod B reaches pod A at {ip_a}");
    let qdiscs = String::from_utf8_lossy(
        &Command::new("tc")
            .args(["qdisc", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        qdiscs.contains("tbf") && qdiscs.contains("rate 1Mbit"),
        "{qdiscs}"
    );
    let (eth0, _, _) = sh_in(&mut rt, &client, "ip -o -4 addr show eth0").await;
    assert!(eth0.contains(&ip_b), "{eth0}");

    // The hostPort, from the host, at the host's address on the bridge.
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect((net.gateway.as_str(), u16::try_from(host_port).unwrap()))
            .unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    assert!(
        body.contains("hello-from-a"),
        "through hostPort {host_port}: {body:?}"
    );
    assert!(
        !iptables_mentions(&a.id[..12]).is_empty()
            || !iptables_mentions(&host_port.to_string()).is_empty()
    );

    // kill -9 and restart: the DEL still works from the cache.
    d.kill9();
    let d2 = d.restart(DaemonOpts::default());
    let mut rt = d2.runtime().await;
    assert_eq!(pod_ip(&mut rt, &a.id).await, ip_a, "IPs survive a restart");
    for p in [&a, &b] {
        rt.stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await
        .unwrap();
        rt.stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: p.id.clone(),
        })
        .await
        .unwrap();
    }
    assert!(
        net.allocations().is_empty(),
        "IPAM leaks: {:?}",
        net.allocations()
    );
    assert_eq!(net.veths(), "", "veths left on the bridge");
    assert!(
        iptables_mentions(&host_port.to_string()).is_empty(),
        "{:?}",
        iptables_mentions(&host_port.to_string())
    );
    for id in [&a.id, &b.id, &server, &client] {
        assert!(mounts_containing(id).is_empty() && processes_containing(id).is_empty());
    }
    // The conflist goes: NetworkReady follows.
    for f in entries(&d2.dir.path().join("net.d")) {
        std::fs::remove_file(d2.dir.path().join("net.d").join(f)).unwrap();
    }
    assert!(!network_ready(&mut rt).await, "the conflist went");
    drop(d2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_plugin_is_a_clear_error_and_leaves_nothing() {
    e2e!();
    let d = Daemon::start(DaemonOpts::default());
    let netd = d.dir.path().join("net.d");
    std::fs::create_dir_all(&netd).unwrap();
    std::fs::write(
        netd.join("10-bad.conflist"),
        r#"{"cniVersion":"1.0.0","name":"bad","plugins":[{"type":"bridge","bridge":"frbad0","ipam":{"type":"host-local","ranges":[[{"subnet":"10.250.312.0/24"}]]}}]}"#,
    )
    .unwrap();
    let mut rt = d.runtime().await;
    let e = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_config("bad", &d.dir.path().join("logs"))),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("bridge") && e.message().contains("10.250.312.0"),
        "{e:?}"
    );
    assert!(
        entries(&d.dir.path().join("run/pods")).is_empty(),
        "{:?}",
        entries(&d.dir.path().join("run/pods"))
    );
    assert!(mounts_containing(&d.dir.path().display().to_string()).is_empty());
    let pods = rt
        .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty());
    let _ = Command::new("ip").args(["link", "del", "frbad0"]).output();
}

#[tokio::test(flavor = "multi_thread")]
async fn host_network_pods_skip_cni() {
    e2e!();
    let d = Daemon::start(DaemonOpts::default());
    let net = TestNet::write(&d, 2);
    let mut rt = d.runtime().await;
    let mut cfg = pod_config("hostnet", &d.dir.path().join("logs"));
    ns_options(&mut cfg).network = api::NamespaceMode::Node as i32;
    let p = run_pod(&mut rt, cfg, "").await;
    assert_eq!(pod_ip(&mut rt, &p.id).await, "");
    assert!(net.allocations().is_empty());
    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: p.id.clone(),
    })
    .await
    .unwrap();
}
