//! ferrio's CNI module with Debian's real plugins (bridge, host-local, loopback, portmap in
//! /usr/lib/cni) on real network namespaces made here with `ip netns add`, as root. The daemon
//! is not involved. Each test has its own subnet (so its own bridge, from hack/cni-conf.sh) and
//! its own host-local data dir; a guard detaches, deletes and removes everything it made, also
//! when the test fails.

#[macro_use]
mod common;

use ferrio::config::NetworkConfig;
use ferrio::network::{Cni, PodNet, PortMapping};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const PLUGIN_DIR: &str = "/usr/lib/cni";

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Files in a directory (empty when it does not exist).
fn entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The rules of all iptables tables, without packet counters.
fn iptables_rules() -> Vec<String> {
    run("iptables-save", &[])
        .lines()
        // Table headers, COMMIT and built-in chains (`:CHAIN POLICY`) appear the first time a
        // table is used on a fresh host; they are not rules anybody left.
        .filter(|l| !l.starts_with('#') && !l.starts_with('*') && *l != "COMMIT")
        .filter(|l| !l.starts_with(':') || l.split(' ').nth(1) == Some("-"))
        .map(|l| {
            if l.starts_with(':') {
                // ":CHAIN POLICY [packets:bytes]"
                l.split(' ').take(2).collect::<Vec<_>>().join(" ")
            } else {
                l.to_string()
            }
        })
        .collect()
}

/// One test's network: a temp dir with net.d, the CNI cache and host-local's data dir, the
/// namespaces it made, and the pods to detach on drop.
struct TestNet {
    dir: tempfile::TempDir,
    name: String,
    bridge: String,
    cni: Arc<Cni>,
    namespaces: Vec<String>,
    pods: Vec<PodNet>,
}

impl TestNet {
    /// A network from hack/cni-conf.sh with `subnet`.
    fn new(tag: &str, subnet: &str) -> TestNet {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("t-{tag}");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/cni-conf.sh");
        let netd = dir.path().join("net.d");
        let data = dir.path().join("ipam");
        let file = run(
            script.to_str().unwrap(),
            &[
                netd.to_str().unwrap(),
                subnet,
                &name,
                data.to_str().unwrap(),
            ],
        );
        let conf: serde_json::Value =
            serde_json::from_slice(&std::fs::read(file.trim()).unwrap()).unwrap();
        let bridge = conf["plugins"][0]["bridge"].as_str().unwrap().to_string();
        let cni = Arc::new(Self::load(dir.path()));
        TestNet {
            dir,
            name,
            bridge,
            cni,
            namespaces: Vec::new(),
            pods: Vec::new(),
        }
    }

    /// A network dir holding `conflist` only.
    fn with_conflist(tag: &str, conflist: &str) -> TestNet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("net.d")).unwrap();
        std::fs::write(dir.path().join("net.d/10-t.conflist"), conflist).unwrap();
        let cni = Arc::new(Self::load(dir.path()));
        TestNet {
            dir,
            name: format!("t-{tag}"),
            bridge: String::new(),
            cni,
            namespaces: Vec::new(),
            pods: Vec::new(),
        }
    }

    fn load(dir: &Path) -> Cni {
        let cfg = NetworkConfig {
            network_dir: dir.join("net.d"),
            plugin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from(PLUGIN_DIR)],
            default_network: String::new(),
            cache_dir: PathBuf::new(),
            plugin_timeout: 30,
        };
        Cni::load(&cfg, &dir.join("cache")).unwrap()
    }

    /// Makes a network namespace (`ip netns add`) and returns the pod that uses it.
    fn pod(&mut self, n: u32, port_mappings: Vec<PortMapping>) -> PodNet {
        let id = format!(
            "{:x}{:04x}{n}",
            std::process::id(),
            self.name.len() * 97 + n as usize
        );
        let ns = format!("ferrio-test-{}-{n}", self.name);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        run("ip", &["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        let pod = PodNet {
            id,
            name: format!("pod-{n}"),
            namespace: "test".into(),
            uid: format!("uid-{n}"),
            netns: PathBuf::from("/run/netns").join(&ns),
            port_mappings,
            bandwidth: None,
        };
        self.pods.push(pod.clone());
        pod
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam").join(&self.name)
    }

    /// host-local's allocations: one file per address, named by it.
    fn allocations(&self) -> Vec<String> {
        entries(&self.ipam_dir())
            .into_iter()
            .filter(|f| f.parse::<IpAddr>().is_ok())
            .collect()
    }

    fn cached(&self) -> Vec<String> {
        entries(&self.dir.path().join("cache/results"))
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Detach what is still attached (a failed test), on a runtime of its own in a thread of
        // its own: the test's runtime may be the one dropping us.
        let (cni, pods) = (self.cni.clone(), std::mem::take(&mut self.pods));
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for p in &pods {
                    let _ = cni.teardown(p).await;
                }
            })
        })
        .join();
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        if !self.bridge.is_empty() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .output();
        }
    }
}

/// Runs `f` on a new thread that has entered the network namespace at `netns` (never on a
/// tokio worker).
fn in_netns<T: Send + 'static>(netns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let fd = std::fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Host-side interfaces named in a result (the veths).
fn host_interfaces(st: &ferrio::network::PodNetStatus, bridge: &str) -> Vec<String> {
    st.result
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_empty() && i.name != bridge)
        .map(|i| i.name.clone())
        .collect()
}

#[tokio::test]
async fn two_pods_get_addresses_on_one_bridge_reach_each_other_and_del_leaves_nothing() {
    e2e!();
    let rules_before = iptables_rules();
    let mut t = TestNet::new("pair", "10.250.11.0/24");
    assert_eq!(t.cni.ready(), Ok(()));
    assert_eq!(t.cni.network_name().as_deref(), Some("t-pair"));
    t.cni.status().await.unwrap(); // VERSION of each plugin (a 1.0.0 network)
    let a = t.pod(1, vec![]);
    let b = t.pod(
        2,
        vec![PortMapping {
            host_port: 18_711,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }],
    );

    let sa = t.cni.setup(&a).await.unwrap();
    let sb = t.cni.setup(&b).await.unwrap();
    assert_eq!(sa.network, "t-pair");
    assert_eq!((sa.ips.len(), sb.ips.len()), (1, 1), "{sa:?} {sb:?}");
    let (ipa, ipb) = (sa.ips[0], sb.ips[0]);
    assert_ne!(ipa, ipb);
    for ip in [ipa, ipb] {
        assert!(ip.to_string().starts_with("10.250.11."), "{ip}");
    }
    // Both host-side veths hang off the same (new) bridge.
    let veths: Vec<String> = [&sa, &sb]
        .iter()
        .flat_map(|s| host_interfaces(s, &t.bridge))
        .collect();
    assert_eq!(veths.len(), 2, "{veths:?}");
    for v in &veths {
        let link = run("ip", &["-o", "link", "show", "dev", v]);
        assert!(link.contains(&format!("master {}", t.bridge)), "{link}");
    }
    // host-local recorded both addresses; the cache has both attachments.
    let mut want = vec![ipa.to_string(), ipb.to_string()];
    want.sort();
    assert_eq!(t.allocations(), want);
    assert_eq!(t.cached().len(), 2);
    // portmap forwarded b's host port.
    let rules = iptables_rules();
    assert!(
        rules
            .iter()
            .any(|r| r.contains("18711") && r.contains(&b.id)),
        "no portmap rule for {}: {rules:#?}",
        b.id
    );

    // They reach each other: ping, and TCP from a thread inside each namespace.
    let ns_a = t.namespaces[0].clone();
    run(
        "ip",
        &[
            "netns",
            "exec",
            &ns_a,
            "ping",
            "-c1",
            "-W3",
            &ipb.to_string(),
        ],
    );
    let listener = in_netns(&b.netns, move || {
        TcpListener::bind(SocketAddr::new(ipb, 8080)).unwrap()
    });
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        (peer.ip(), buf)
    });
    in_netns(&a.netns, move || {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(ipb, 8080), Duration::from_secs(5))
            .unwrap();
        s.write_all(b"hello").unwrap();
    });
    let (peer, got) = server.join().unwrap();
    assert_eq!((peer, &got), (ipa, b"hello"));

    // DEL of both: no address allocated, no veth, no portmap rule, no cache entry.
    t.cni.teardown(&a).await.unwrap();
    t.cni.teardown(&b).await.unwrap();
    assert_eq!(t.allocations(), Vec::<String>::new());
    for v in &veths {
        assert!(!link_exists(v), "veth {v} left");
    }
    let rules_after = iptables_rules();
    let added: Vec<&String> = rules_after
        .iter()
        .filter(|r| !rules_before.contains(r))
        .collect();
    // portmap keeps its shared top-level chains (CNI-HOSTPORT-*) for the next pod; nothing
    // of this pod may remain.
    assert!(
        added
            .iter()
            .all(|r| r.contains("CNI-HOSTPORT-") && !r.contains("CNI-DN-")),
        "rules left: {added:#?}"
    );
    assert!(
        !rules_after
            .iter()
            .any(|r| r.contains(&a.id) || r.contains(&b.id) || r.contains("18711")),
        "rules of the pods left: {rules_after:#?}"
    );
    assert!(t.cached().is_empty());
    // Idempotent.
    t.cni.teardown(&a).await.unwrap();
}

#[tokio::test]
async fn missing_plugin_is_a_clear_error() {
    e2e!();
    let mut t = TestNet::with_conflist(
        "missing",
        r#"{"cniVersion":"1.0.0","name":"t-missing","plugins":[{"type":"no-such-cni-plugin"}]}"#,
    );
    let msg = t.cni.ready().unwrap_err();
    assert!(
        msg.contains("\"no-such-cni-plugin\" not found in /opt/cni/bin, /usr/lib/cni"),
        "{msg}"
    );
    let pod = t.pod(1, vec![]);
    let err = t.cni.setup(&pod).await.unwrap_err().to_string();
    assert!(
        err.contains("\"no-such-cni-plugin\" not found in /opt/cni/bin, /usr/lib/cni"),
        "{err}"
    );
    // The undo DEL failed the same way: the attachment stays until GC (or teardown) forgets
    // it, its ADD having never completed.
    assert_eq!(t.cached().len(), 1);
    assert_eq!(t.cni.gc(&[]).await.unwrap(), vec![pod.id.clone()]);
    assert!(t.cached().is_empty());
}

#[tokio::test]
async fn bad_subnet_is_a_clear_error_and_leaves_nothing() {
    e2e!();
    let mut t = TestNet::new("badnet", "10.250.12.0/24");
    // The script's config with an impossible subnet.
    let file = t.dir.path().join("net.d/10-t-badnet.conflist");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("10.250.12.0/24", "10.250.312.0/24");
    std::fs::write(&file, text).unwrap();
    t.cni.reload().unwrap();
    let pod = t.pod(1, vec![]);
    let err = t.cni.setup(&pod).await.unwrap_err().to_string();
    assert!(
        err.starts_with("CNI plugin \"bridge\" of network \"t-badnet\" failed ADD:"),
        "{err}"
    );
    assert!(err.contains("10.250.312.0/24"), "{err}");
    // host-local cannot parse its config for the undo DEL either; teardown forgets the
    // attachment, whose ADD never completed.
    t.cni.teardown(&pod).await.unwrap();
    assert!(t.cached().is_empty(), "{:?}", t.cached());
    assert_eq!(t.allocations(), Vec::<String>::new());
    let links = run("ip", &["-o", "link", "show", "master", &t.bridge]);
    assert_eq!(links.trim(), "", "links on {}: {links}", t.bridge);
}

#[tokio::test]
async fn gc_after_a_restart_removes_attachments_of_pods_not_live() {
    e2e!();
    let mut t = TestNet::new("gc", "10.250.13.0/24");
    let live = t.pod(1, vec![]);
    let gone = t.pod(2, vec![]);
    let s_live = t.cni.setup(&live).await.unwrap();
    let s_gone = t.cni.setup(&gone).await.unwrap();
    let gone_veths = host_interfaces(&s_gone, &t.bridge);
    assert_eq!(gone_veths.len(), 1);

    // A restart with the network config gone: the cache alone is enough.
    std::fs::remove_dir_all(t.dir.path().join("net.d")).unwrap();
    t.cni = Arc::new(TestNet::load(t.dir.path()));
    assert!(t.cni.ready().is_err());
    let removed = t.cni.gc(std::slice::from_ref(&live.id)).await.unwrap();
    assert_eq!(removed, vec![gone.id.clone()]);
    assert_eq!(t.allocations(), [s_live.ips[0].to_string()]);
    assert!(!link_exists(&gone_veths[0]), "veth of the gone pod left");
    assert_eq!(t.cached().len(), 1);
    // The live pod still works, then goes too.
    run(
        "ip",
        &[
            "netns",
            "exec",
            &t.namespaces[0],
            "ping",
            "-c1",
            "-W3",
            &s_live.ips[0].to_string(),
        ],
    );
    t.cni.teardown(&live).await.unwrap();
    assert_eq!(t.allocations(), Vec::<String>::new());
    assert!(t.cached().is_empty());
}

/// CHECK with the real bridge plugin: passes on a live pod, fails once the pod's interface is
/// gone. (bandwidth is left out: Debian's 1.1.1 panics on CHECK without a bandwidth config;
/// portmap too: Debian's portmap 1.1.1 fails CHECK for every IPv4-only pod,
/// containernetworking/plugins#819.)
#[tokio::test]
async fn check_passes_on_a_live_pod_and_fails_when_its_interface_is_gone() {
    e2e!();
    let mut t = TestNet::new("check", "10.250.14.0/24");
    let file = t.dir.path().join("net.d/10-t-check.conflist");
    let mut conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    conf["plugins"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["type"] != "portmap" && p["type"] != "bandwidth");
    std::fs::write(&file, conf.to_string()).unwrap();
    t.cni.reload().unwrap();
    let pod = t.pod(1, vec![]);
    t.cni.setup(&pod).await.unwrap();
    t.cni.check(&pod).await.unwrap();
    run(
        "ip",
        &[
            "netns",
            "exec",
            &t.namespaces[0],
            "ip",
            "link",
            "del",
            "eth0",
        ],
    );
    let err = t.cni.check(&pod).await.unwrap_err().to_string();
    assert!(err.contains("\"bridge\"") && err.contains("CHECK"), "{err}");
    t.cni.teardown(&pod).await.unwrap();
    assert_eq!(t.allocations(), Vec::<String>::new());
}
