//! The exec protocol against small shell-script plugins that record what they were given: the
//! environment, stdin chaining, STATUS and GC of spec 1.1, error JSON and timeouts. (The real
//! plugins, with real namespaces, are exercised in `tests/cni.rs`.)

use super::*;
use std::os::unix::fs::PermissionsExt;

/// A plugin that appends `<type> <COMMAND> <CNI_* env>` to `log`, saves its stdin as
/// `<type>.<COMMAND>.json`, and answers ADD with [`RESULT`] and VERSION with its versions.
const PLUGIN: &str = r#"#!/bin/sh
d=$(dirname "$0"); t=$(basename "$0")
cat > "$d/$t.$CNI_COMMAND.json"
echo "$t $CNI_COMMAND cid=$CNI_CONTAINERID netns=$CNI_NETNS if=$CNI_IFNAME args=$CNI_ARGS path=$CNI_PATH" >> "$d/log"
case "$CNI_COMMAND" in
  ADD) echo '@RESULT@' ;;
  VERSION) echo '{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}' ;;
esac
"#;

struct Fixture {
    dir: tempfile::TempDir,
    cni: Cni,
}

impl Fixture {
    fn new(conflist: &str, plugins: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let netd = dir.path().join("net.d");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&netd).unwrap();
        for (name, script) in plugins {
            let p = bin.join(name);
            std::fs::write(&p, script.replace("@RESULT@", RESULT)).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(netd.join("10-t.conflist"), conflist).unwrap();
        let cfg = NetworkConfig {
            network_dir: netd,
            plugin_dirs: vec![dir.path().join("nothing-here"), bin],
            default_network: String::new(),
            cache_dir: PathBuf::new(),
            plugin_timeout: 1,
        };
        let cni = Cni::load(&cfg, &dir.path().join("cache")).unwrap();
        Fixture { dir, cni }
    }

    fn bin(&self, f: &str) -> PathBuf {
        self.dir.path().join("bin").join(f)
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.bin("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn stdin(&self, plugin: &str, command: &str) -> Value {
        serde_json::from_slice(
            &std::fs::read(self.bin(&format!("{plugin}.{command}.json"))).unwrap(),
        )
        .unwrap()
    }

    fn cached(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path().join("cache/results"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn pod(id: &str) -> PodNet {
    PodNet {
        id: id.into(),
        name: "web".into(),
        namespace: "prod".into(),
        uid: "u-1".into(),
        netns: format!("/run/test/{id}/ns/net").into(),
        port_mappings: vec![PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }],
        bandwidth: None,
    }
}

const RESULT: &str = r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.9.9.9/24","interface":0}]}"#;

#[tokio::test]
async fn add_chains_prev_result_del_runs_in_reverse_with_the_cached_result() {
    let f = Fixture::new(
        r#"{"cniVersion":"1.1.0","name":"t","plugins":[{"type":"one","x":1},
            {"type":"two","capabilities":{"portMappings":true}}]}"#,
        &[("one", PLUGIN), ("two", PLUGIN)],
    );
    assert_eq!(f.cni.ready(), Ok(()));
    let st = f.cni.setup(&pod("p1")).await.unwrap();
    assert_eq!(st.ips, vec!["10.9.9.9".parse::<IpAddr>().unwrap()]);
    assert_eq!(st.network, "t");
    let path = format!(
        "{}:{}",
        f.dir.path().join("nothing-here").display(),
        f.dir.path().join("bin").display()
    );
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=p1;K8S_POD_UID=u-1";
    assert_eq!(
        f.log(),
        [
            format!("one ADD cid=p1 netns=/run/test/p1/ns/net if=eth0 args={args} path={path}"),
            format!("two ADD cid=p1 netns=/run/test/p1/ns/net if=eth0 args={args} path={path}"),
        ]
    );
    let one = f.stdin("one", "ADD");
    assert_eq!(one["name"], "t");
    assert_eq!(one["cniVersion"], "1.1.0");
    assert_eq!(one["x"], 1);
    assert!(one.get("prevResult").is_none() && one.get("runtimeConfig").is_none());
    let two = f.stdin("two", "ADD");
    let result: Value = serde_json::from_str(RESULT).unwrap();
    assert_eq!(two["prevResult"], result);
    assert_eq!(two["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
    assert_eq!(f.cached(), ["p1_t_eth0.json"]);

    f.cni.check(&pod("p1")).await.unwrap();
    assert_eq!(f.stdin("one", "CHECK")["prevResult"], result);

    std::fs::remove_file(f.bin("log")).unwrap();
    // The netns is gone by now: DEL gets an empty CNI_NETNS.
    f.cni.teardown(&pod("p1")).await.unwrap();
    let log = f.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[0].starts_with("two DEL cid=p1 netns= if=eth0"),
        "{log:?}"
    );
    assert!(log[1].starts_with("one DEL"), "{log:?}");
    assert_eq!(f.stdin("one", "DEL")["prevResult"], result);
    assert_eq!(
        f.stdin("two", "DEL")["runtimeConfig"]["portMappings"][0]["containerPort"],
        80
    );
    assert!(f.cached().is_empty());
    // Idempotent: nothing cached, nothing run.
    f.cni.teardown(&pod("p1")).await.unwrap();
    assert_eq!(f.log().len(), 2);
    assert!(matches!(
        f.cni.check(&pod("p1")).await,
        Err(NetworkError::NoAttachment(_))
    ));
}

#[tokio::test]
async fn status_and_gc_of_spec_1_1() {
    let f = Fixture::new(
        r#"{"cniVersion":"1.1.0","name":"t","plugins":[{"type":"one"}]}"#,
        &[("one", PLUGIN)],
    );
    f.cni.status().await.unwrap();
    assert_eq!(
        f.log(),
        [format!(
            "one STATUS cid= netns= if= args= path={}:{}",
            f.dir.path().join("nothing-here").display(),
            f.dir.path().join("bin").display()
        )]
    );
    assert_eq!(f.stdin("one", "STATUS")["name"], "t");
    f.cni.setup(&pod("live")).await.unwrap();
    f.cni.setup(&pod("gone")).await.unwrap();
    let removed = f.cni.gc(&["live".to_string()]).await.unwrap();
    assert_eq!(removed, ["gone"]);
    assert_eq!(f.cached(), ["live_t_eth0.json"]);
    let gc = f.stdin("one", "GC");
    assert_eq!(
        gc["cni.dev/valid-attachments"],
        json!([{"containerID": "live", "ifname": "eth0"}])
    );
    assert!(f.log().iter().any(|l| l.starts_with("one DEL cid=gone")));
}

#[tokio::test]
async fn status_of_older_networks_asks_version() {
    let f = Fixture::new(
        r#"{"cniVersion":"0.4.0","name":"t","plugins":[{"type":"one"}]}"#,
        &[("one", PLUGIN)],
    );
    f.cni.status().await.unwrap();
    assert!(f.log()[0].starts_with("one VERSION"));
    assert_eq!(f.stdin("one", "VERSION"), json!({"cniVersion": "0.4.0"}));
    let f = Fixture::new(
        r#"{"cniVersion":"0.3.1","name":"t","plugins":[{"type":"one"}]}"#,
        &[("one", PLUGIN)],
    );
    let err = f.cni.status().await.unwrap_err().to_string();
    assert!(err.contains("does not support CNI 0.3.1"), "{err}");
}

#[tokio::test]
async fn plugin_error_json_fails_the_add_and_undoes_it() {
    let failing = "#!/bin/sh\nd=$(dirname \"$0\")\necho \"bad $CNI_COMMAND\" >> \"$d/log\"\n\
        [ \"$CNI_COMMAND\" = DEL ] && exit 0\n\
        echo '{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"invalid subnet\",\"details\":\"10.0.0.0/33\"}'\nexit 1\n";
    let f = Fixture::new(
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"one"},{"type":"bad"}]}"#,
        &[("one", PLUGIN), ("bad", failing)],
    );
    let err = f.cni.setup(&pod("p")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "CNI plugin \"bad\" of network \"t\" failed ADD: invalid subnet: 10.0.0.0/33 (code 7)"
    );
    let log = f.log();
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(
        log[0].starts_with("one ADD") && log[1] == "bad ADD",
        "{log:?}"
    );
    assert!(
        log[2] == "bad DEL" && log[3].starts_with("one DEL"),
        "{log:?}"
    );
    assert!(f.cached().is_empty());
}

#[tokio::test]
async fn failure_without_json_keeps_stderr_and_a_slow_plugin_times_out() {
    let f = Fixture::new(
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"crash"}]}"#,
        &[("crash", "#!/bin/sh\necho 'segfault in foo' >&2\nexit 2\n")],
    );
    let err = f.cni.setup(&pod("p")).await.unwrap_err().to_string();
    assert!(
        err.contains("\"crash\"") && err.contains("segfault in foo"),
        "{err}"
    );
    // The undo DEL failed too: the attachment stays cached, and the next teardown forgets it
    // although its DEL fails again (its ADD never completed).
    assert_eq!(f.cached(), ["p_t_eth0.json"]);
    f.cni.teardown(&pod("p")).await.unwrap();
    assert!(f.cached().is_empty());

    let f = Fixture::new(
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"slow"}]}"#,
        &[(
            "slow",
            "#!/bin/sh\n[ \"$CNI_COMMAND\" = DEL ] && exit 0\nexec sleep 30\n",
        )],
    );
    let t = std::time::Instant::now();
    let err = f.cni.setup(&pod("p")).await.unwrap_err();
    assert!(matches!(err, NetworkError::Timeout { .. }), "{err}");
    assert_eq!(err.kind(), Kind::DeadlineExceeded);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(f.cached().is_empty());
}

#[tokio::test]
async fn missing_plugin_and_missing_config_make_the_network_not_ready() {
    let f = Fixture::new(
        r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"nope"}]}"#,
        &[],
    );
    let msg = f.cni.ready().unwrap_err();
    assert!(
        msg.contains("\"nope\" not found in") && msg.contains("nothing-here"),
        "{msg}"
    );
    let err = f.cni.setup(&pod("p")).await.unwrap_err();
    assert_eq!(err.kind(), Kind::FailedPrecondition);

    std::fs::remove_file(f.dir.path().join("net.d/10-t.conflist")).unwrap();
    f.cni.reload().unwrap_err();
    let msg = f.cni.ready().unwrap_err();
    assert!(msg.starts_with("no CNI network config in"), "{msg}");
    // A config written later is picked up without an explicit reload.
    std::fs::write(
        f.dir.path().join("net.d/20-u.conf"),
        r#"{"cniVersion":"1.0.0","name":"u","type":"nope"}"#,
    )
    .unwrap();
    assert!(f.cni.ready().unwrap_err().contains("\"nope\" not found"));
    assert_eq!(f.cni.network_name().as_deref(), Some("u"));
}
