//! CDI devices (`cdi_devices` and the `cdi.k8s.io/*` annotations) applied to real containers,
//! from spec files in a temporary spec directory. Each test runs its own daemon and pods;
//! everything is removed and checked at the end.

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use std::path::Path;

/// A spec file of kind `example.com/test` with one device `name` whose edits are `edits`.
fn write_spec(dir: &Path, file: &str, name: &str, edits: serde_json::Value) {
    let spec = serde_json::json!({
        "cdiVersion": "0.6.0",
        "kind": "example.com/test",
        "devices": [{"name": name, "containerEdits": edits}],
    });
    std::fs::write(dir.join(file), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

fn cdi_container(name: &str, image: &str, devices: &[&str]) -> api::ContainerConfig {
    let mut c = sh_container(name, image, "sleep 300");
    c.cdi_devices = devices
        .iter()
        .map(|d| api::CdiDevice {
            name: d.to_string(),
        })
        .collect();
    c
}

async fn create(
    rt: &mut RuntimeServiceClient,
    pod: &TestPod,
    pcfg: &api::PodSandboxConfig,
    c: api::ContainerConfig,
) -> Result<String, tonic::Status> {
    rt.create_container(api::CreateContainerRequest {
        pod_sandbox_id: pod.id.clone(),
        config: Some(c),
        sandbox_config: Some(pcfg.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

type RuntimeServiceClient =
    ferrio::cri::api::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

async fn container_ids(rt: &mut RuntimeServiceClient, pod: &TestPod) -> Vec<String> {
    rt.list_containers(api::ListContainersRequest {
        filter: Some(api::ContainerFilter {
            pod_sandbox_id: pod.id.clone(),
            ..Default::default()
        }),
    })
    .await
    .unwrap()
    .into_inner()
    .containers
    .into_iter()
    .map(|c| c.id)
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cdi_devices_env_and_mounts_reach_the_container() {
    e2e!();
    let specs = tempfile::tempdir().unwrap();
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("hello.txt"), "from the host\n").unwrap();
    write_spec(
        specs.path(),
        "test.json",
        "dev0",
        serde_json::json!({
            "env": ["CDI_TEST=1"],
            "deviceNodes": [{"path": "/dev/cdinull", "hostPath": "/dev/null"}],
            "mounts": [{
                "hostPath": shared.path(),
                "containerPath": "/cdi-data",
                "options": ["ro", "bind"],
            }],
        }),
    );
    let d = Daemon::start(DaemonOpts {
        extra_config: format!(
            "[runtime]\ncdi_spec_dirs = [{:?}]\n",
            specs.path().display().to_string()
        ),
        ..Default::default()
    });
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let logs = d.dir.path().join("logs");
    let mut rt = d.runtime().await;

    for handler in ["", "runc"] {
        let what = if handler.is_empty() {
            "ferrio"
        } else {
            handler
        };
        let pcfg = pod_config(&format!("cdi-{what}"), &logs);
        let pod = run_pod(&mut rt, pcfg.clone(), handler).await;

        // The request's env loses to the device's, as in CRI-O.
        let mut c = cdi_container("dev0", &image, &["example.com/test=dev0"]);
        c.envs = vec![api::KeyValue {
            key: "CDI_TEST".into(),
            value: "0".into(),
        }];
        let id = create(&mut rt, &pod, &pcfg, c).await.unwrap();
        rt.start_container(api::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        let (_, err, code) = sh_in(&mut rt, &id, "test -c /dev/cdinull").await;
        assert_eq!(code, 0, "{what}: /dev/cdinull is a character device: {err}");
        let (out, _, _) = sh_in(&mut rt, &id, "echo x > /dev/cdinull && echo written").await;
        assert_eq!(out, "written", "{what}: the device cgroup allows it");
        let (out, _, _) = sh_in(&mut rt, &id, "echo $CDI_TEST").await;
        assert_eq!(out, "1", "{what}");
        let (out, _, _) = sh_in(&mut rt, &id, "cat /cdi-data/hello.txt").await;
        assert_eq!(out, "from the host", "{what}");
        let (_, _, code) = sh_in(&mut rt, &id, "touch /cdi-data/new").await;
        assert_ne!(code, 0, "{what}: the mount's ro option holds");

        // A spec file written after the daemon started counts, and the annotation asks for it.
        let dev1 = format!("dev1{}", what);
        write_spec(
            specs.path(),
            &format!("{dev1}.json"),
            &dev1,
            serde_json::json!({"env": [format!("CDI_ANNOTATED={what}")]}),
        );
        let mut c = sh_container("annotated", &image, "sleep 300");
        c.annotations
            .insert("cdi.k8s.io/test".into(), format!("example.com/test={dev1}"));
        let id = create(&mut rt, &pod, &pcfg, c).await.unwrap();
        rt.start_container(api::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
        let (out, _, _) = sh_in(&mut rt, &id, "echo $CDI_ANNOTATED").await;
        assert_eq!(out, what);

        // An unknown device: InvalidArgument naming it, and nothing left behind.
        let before = container_ids(&mut rt, &pod).await;
        let ctr_dirs = entries(&d.dir.path().join("run/ctr"));
        let mounts = mounts_containing(&d.dir.path().display().to_string());
        let e = create(
            &mut rt,
            &pod,
            &pcfg,
            cdi_container("unknown", &image, &["example.com/test=nosuch"]),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("example.com/test=nosuch"), "{e:?}");
        assert_eq!(container_ids(&mut rt, &pod).await, before);
        assert_eq!(entries(&d.dir.path().join("run/ctr")), ctr_dirs);
        assert_eq!(
            mounts_containing(&d.dir.path().display().to_string()),
            mounts
        );
        // The name was released: the same name with a known device is created.
        let id = create(
            &mut rt,
            &pod,
            &pcfg,
            cdi_container("unknown", &image, &["example.com/test=dev0"]),
        )
        .await
        .unwrap();
        assert!(!id.is_empty());

        finish_pod(&d, &pod).await;
    }
    assert!(entries(&d.dir.path().join("run/ctr")).is_empty());
    assert!(mounts_containing(&d.dir.path().display().to_string()).is_empty());
    assert_eq!(
        std::fs::read_dir(shared.path()).unwrap().count(),
        1,
        "the host dir holds only its file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cdi_requests_that_cannot_be_applied_are_refused() {
    e2e!();
    let specs = tempfile::tempdir().unwrap();
    let spec = serde_json::json!({
        "cdiVersion": "1.1.0",
        "kind": "example.com/net",
        "devices": [{"name": "nic", "containerEdits": {
            "netDevices": [{"hostInterfaceName": "eth9", "name": "net9"}]
        }}],
    });
    std::fs::write(specs.path().join("net.json"), spec.to_string()).unwrap();
    let d = Daemon::start(DaemonOpts {
        extra_config: format!(
            "[runtime]\ncdi_spec_dirs = [{:?}]\n",
            specs.path().display().to_string()
        ),
        ..Default::default()
    });
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    let pcfg = pod_config("cdi-refused", &d.dir.path().join("logs"));
    let mut rt = d.runtime().await;
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let cases: Vec<(api::ContainerConfig, &[&str])> = vec![
        (
            cdi_container("net", &image, &["example.com/net=nic"]),
            &[
                "example.com/net=nic",
                "netDevices",
                "not supported by ferrio yet",
            ],
        ),
        (
            cdi_container("bad", &image, &["nic"]),
            &["invalid CDI device name \"nic\""],
        ),
        (
            {
                let mut c = sh_container("ann", &image, "sleep 300");
                c.annotations
                    .insert("cdi.k8s.io/x".into(), "example.com/net=nic,oops".into());
                c
            },
            &["cdi.k8s.io/x", "\"oops\""],
        ),
    ];
    for (c, want) in cases {
        let e = create(&mut rt, &pod, &pcfg, c).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        for w in want {
            assert!(e.message().contains(w), "{w}: {e:?}");
        }
    }
    assert!(container_ids(&mut rt, &pod).await.is_empty());
    assert!(entries(&d.dir.path().join("run/ctr")).is_empty());
    finish_pod(&d, &pod).await;
}
