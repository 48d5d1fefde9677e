//! CheckpointContainer end to end: a container counting in memory and writing to its log and
//! its writable layer, dumped by CRIU (`runtime.criu_path`; hack/setup.sh builds CRIU 4 from
//! Debian's source where the distribution's is too old for the kernel) into an archive in
//! CRI-O's layout while it keeps running, with the builtin handler and with runc.

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use ferrio::cri::api::runtime_service_client::RuntimeServiceClient;
use std::io::Read;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn criu() -> String {
    std::env::var("FERRIO_TEST_CRIU").unwrap_or_else(|_| "/var/cache/ferrio/criu/criu".into())
}

/// The archive's entries, and the contents of the small ones.
fn entries(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap());
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut data = Vec::new();
            if e.size() < (1 << 20) {
                e.read_to_end(&mut data).unwrap();
            }
            (name.trim_start_matches("./").to_string(), data)
        })
        .collect()
}

/// The numbers a counting container logged, in order.
fn counts(log: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse().ok())
        .collect()
}

/// A daemon using the test CRIU, with the busybox image pulled.
async fn daemon_with_criu() -> (Daemon, String, Policy) {
    let policy = Policy(tempfile::tempdir().unwrap());
    policy.write("");
    let d = Daemon::start(DaemonOpts {
        extra_config: format!(
            "signature_policy = {:?}\n[runtime]\ncriu_path = {:?}\n",
            policy.path(),
            criu()
        ),
        ..Default::default()
    });
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    (d, image, policy)
}

/// A copy of checkpoint archive `from` at `to` without CRIU's memory pages.
fn without_pages(from: &std::path::Path, to: &std::path::Path) {
    let mut ar = tar::Archive::new(std::fs::File::open(from).unwrap());
    let mut out = tar::Builder::new(std::fs::File::create(to).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        if path.contains("pages-") {
            continue;
        }
        let header = e.header().clone();
        out.append(&header, &mut e).unwrap();
    }
    out.finish().unwrap();
}

/// A CheckpointContainer that must fail; its status.
async fn checkpoint_err(
    rt: &mut RuntimeServiceClient<Channel>,
    id: String,
    location: String,
) -> tonic::Status {
    rt.checkpoint_container(api::CheckpointContainerRequest {
        container_id: id,
        location,
        timeout: 10,
    })
    .await
    .unwrap_err()
}

/// A read-write bind mount of `host` at /data.
fn data_mount(host: &std::path::Path) -> api::Mount {
    api::Mount {
        container_path: "/data".into(),
        host_path: host.display().to_string(),
        ..Default::default()
    }
}

/// The daemon's signature policy file (containers-policy.json), in a directory of its own.
struct Policy(tempfile::TempDir);

impl Policy {
    fn path(&self) -> std::path::PathBuf {
        self.0.path().join("policy.json")
    }

    /// Anything is accepted, except images in `reject_scope` (when not empty).
    fn write(&self, reject_scope: &str) {
        let mut p = serde_json::json!({"default": [{"type": "insecureAcceptAnything"}]});
        if !reject_scope.is_empty() {
            p["transports"] = serde_json::json!({"docker": {reject_scope: [{"type": "reject"}]}});
        }
        std::fs::write(self.path(), serde_json::to_vec(&p).unwrap()).unwrap();
    }
}

/// Whether this host's crun is built with CRIU (`+CRIU` among the features it lists).
fn crun_has_criu() -> bool {
    let out = std::process::Command::new("crun")
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("+CRIU")
}

fn last_count(log: &std::path::Path) -> u64 {
    counts(log).last().copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_container_is_checkpointed_into_an_archive_and_keeps_running() {
    e2e!();
    let (d, image, _policy) = daemon_with_criu().await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    for handler in ["", "runc", "crun"] {
        let pcfg = pod_config(&format!("ckpt{handler}"), &logs);
        let pod = run_pod(&mut rt, pcfg.clone(), handler).await;
        let name = format!("counter{handler}");
        let id = create_start(
            &mut rt,
            &pod,
            &pcfg,
            sh_container(
                &name,
                &image,
                "rm /bin/ls; i=0; while :; do i=$((i+1)); echo $i; echo $i > /state; sleep 0.1; done",
            ),
        )
        .await;
        let log = logs.join(format!("{name}.log"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while last_count(&log) < 5 {
            assert!(Instant::now() < deadline, "the counter did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let location = d.dir.path().join(format!("checkpoint-{name}.tar"));
        let t = Instant::now();
        rt.checkpoint_container(api::CheckpointContainerRequest {
            container_id: id.clone(),
            location: location.display().to_string(),
            timeout: 60,
        })
        .await
        .unwrap_or_else(|e| panic!("handler {handler:?}: {e:?}\n{}", d.log_text()));
        eprintln!("handler {handler:?}: checkpointed in {:?}", t.elapsed());
        // runc dumps through its own `checkpoint` (crun too when it has CRIU); the built-in
        // handler and a crun without CRIU through CRIU directly.
        let via = match handler {
            "runc" => "runc checkpoint",
            "crun" if crun_has_criu() => "crun checkpoint",
            _ => "criu dump",
        };
        assert!(
            d.log_text()
                .lines()
                .any(|l| l.contains("container checkpointed")
                    && l.contains(&id)
                    && l.contains(via)),
            "handler {handler:?}: not through {via}"
        );
        let got = entries(&location);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "checkpoint/inventory.img",
            "checkpoint/pstree.img",
            "checkpoint/dump.log",
            "checkpoint/descriptors.json",
            "spec.dump",
            "config.dump",
            "rootfs-diff.tar",
            "deleted.files",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let file = |n: &str| &got.iter().find(|(x, _)| x == n).unwrap().1;
        let config: serde_json::Value = serde_json::from_slice(file("config.dump")).unwrap();
        assert_eq!(config["id"], id.as_str());
        assert_eq!(config["rootfsImage"], image.as_str());
        let spec: serde_json::Value = serde_json::from_slice(file("spec.dump")).unwrap();
        assert!(spec["process"]["args"].is_array());
        let stdio: Vec<String> =
            serde_json::from_slice(file("checkpoint/descriptors.json")).unwrap();
        assert!(
            stdio.len() == 3 && stdio[1].starts_with("pipe:["),
            "{stdio:?}"
        );
        let deleted: Vec<String> = serde_json::from_slice(file("deleted.files")).unwrap();
        assert_eq!(deleted, ["bin/ls"]);
        let mut diff = tar::Archive::new(file("rootfs-diff.tar").as_slice());
        let diff_names: Vec<String> = diff
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(diff_names.contains(&"state".to_string()), "{diff_names:?}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&location).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // It was left running, and counts on.
        let before = last_count(&log);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(last_count(&log) > before, "the container stopped counting");
        let st = ctr_status(&mut rt, &id).await;
        assert_eq!(st.state, api::ContainerState::ContainerRunning as i32);
        // Bad requests: a relative location, an unknown container, a stopped one.
        let e = checkpoint_err(&mut rt, id.clone(), "relative.tar".into()).await;
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let e = checkpoint_err(&mut rt, "nope".into(), location.display().to_string()).await;
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        rt.stop_container(api::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
        let e = checkpoint_err(&mut rt, id.clone(), location.display().to_string()).await;
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        finish_pod(&d, &pod).await;
        // What `runc checkpoint` made, `runc restore` takes: the counter goes on in a new pod.
        if handler == "runc" {
            let rcfg = pod_config("ckpt-restored", &logs);
            let rpod = run_pod(&mut rt, rcfg.clone(), "runc").await;
            let mut c = sh_container("restored-runc", &location.display().to_string(), "");
            c.command.clear();
            create_start(&mut rt, &rpod, &rcfg, c).await;
            let rlog = logs.join("restored-runc.log");
            let deadline = Instant::now() + Duration::from_secs(10);
            while counts(&rlog).len() < 3 {
                assert!(
                    Instant::now() < deadline,
                    "the runc-restored counter does not count: {:?}",
                    std::fs::read_to_string(&rlog)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // From its memory: not from 1.
            assert!(counts(&rlog)[0] > 5, "{:?}", counts(&rlog));
            finish_pod(&d, &rpod).await;
        }
    }
}

/// Creates and starts the container checkpointed in `image` (an archive's path or a checkpoint
/// image) in `pod`, as `name`; checks that it
/// counts on from `at_checkpoint` (from its memory: the first number it logs follows the
/// checkpoint's), that an exec into it works and sees its writable layer (the file it wrote,
/// the file it deleted still gone). Returns its ID.
async fn restore_and_check(
    d: &Daemon,
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &TestPod,
    pcfg: &api::PodSandboxConfig,
    image: &str,
    name: &str,
    at_checkpoint: u64,
) -> String {
    let data = d.dir.path().join(format!("data-{name}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("who"), name).unwrap();
    let logs = d.dir.path().join("logs");
    let t = Instant::now();
    let mut c = sh_container(name, image, "");
    c.command.clear();
    c.mounts = vec![data_mount(&data)];
    let rid = create_start(rt, pod, pcfg, c).await;
    eprintln!("{name}: restored (create + start) in {:?}", t.elapsed());
    let rlog = logs.join(format!("{name}.log"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while last_count(&rlog) < at_checkpoint + 3 {
        assert!(
            Instant::now() < deadline,
            "{name} does not count on: {:?}\n{}",
            std::fs::read_to_string(&rlog),
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = counts(&rlog).first().copied().unwrap_or(0);
    assert!(
        first > at_checkpoint.saturating_sub(5) && first <= at_checkpoint + 5,
        "{name}: first {first}, checkpointed at {at_checkpoint}"
    );
    let (out, _, code) = sh_in(
        rt,
        &rid,
        "cat /state; test -e /bin/ls && echo ls-back; true",
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        !out.contains("ls-back") && !out.trim().is_empty(),
        "{name}: {out}"
    );
    rid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointed_container_is_restored_in_a_new_pod_and_counts_on() {
    e2e!();
    let (d, image, policy) = daemon_with_criu().await;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    // Made and checkpointed by the built-in handler.
    let pcfg = pod_config("before", &logs);
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    let before = d.dir.path().join("data-before");
    std::fs::create_dir_all(&before).unwrap();
    let mut counter = sh_container(
        "counter",
        &image,
        "rm /bin/ls; i=0; while :; do i=$((i+1)); echo $i; echo $i > /state; sleep 0.1; done",
    );
    counter.mounts = vec![data_mount(&before)];
    let id = create_start(&mut rt, &pod, &pcfg, counter).await;
    let log = logs.join("counter.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while last_count(&log) < 20 {
        assert!(Instant::now() < deadline, "the counter did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // This time through the CLI (`ferrio checkpoint`), by an ID prefix.
    let archive = d.dir.path().join("counter.tar");
    let printed = d.cli(&["checkpoint", &id[..12], &archive.display().to_string()]);
    assert_eq!(printed.trim(), archive.display().to_string());
    let at_checkpoint = last_count(&log);
    finish_pod(&d, &pod).await;

    // Restored by the built-in handler (CRIU from the monitor, then libcontainer's state): it
    // counts on, exec works, and stop and removal leave nothing (the harness checks).
    let builtin = pod_config("builtin", &logs);
    let bpod = run_pod(&mut rt, builtin.clone(), "").await;
    // An archive whose memory pages are gone: CRIU fails, the error says why, and the cgroup
    // made for it is removed (the harness checks that nothing is left).
    let broken = d.dir.path().join("broken.tar");
    without_pages(&archive, &broken);
    let e = create_err(
        &mut rt,
        &bpod.id,
        api::ContainerConfig {
            mounts: vec![data_mount(&before)],
            ..sh_container("broken", &broken.display().to_string(), "")
        },
    )
    .await;
    assert!(e.message().contains("criu restore failed"), "{e:?}");
    // The checkpointed container had a bind mount at /data: a restore must ask for it (with
    // its own host path), as CRI-O requires.
    let e = create_err(
        &mut rt,
        &bpod.id,
        sh_container("no-mount", &archive.display().to_string(), ""),
    )
    .await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("lacks /data"), "{e:?}");
    let rid = restore_and_check(
        &d,
        &mut rt,
        &bpod,
        &builtin,
        &archive.display().to_string(),
        "restored-builtin",
        at_checkpoint,
    )
    .await;
    // Its status and stats come from the restored container's cgroup, as for any other.
    let st = ctr_status(&mut rt, &rid).await;
    assert_eq!(st.state, api::ContainerState::ContainerRunning as i32);
    let stats = rt
        .container_stats(api::ContainerStatsRequest {
            container_id: rid.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(
        stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map(|v| v.value)
            > Some(0),
        "no memory use in the restored container's cgroup"
    );
    finish_pod(&d, &bpod).await;

    // Without the checkpointed container's image the restore says which one to pull.
    d.images()
        .await
        .remove_image(api::RemoveImageRequest {
            image: Some(spec(&image)),
        })
        .await
        .unwrap();
    let after = pod_config("after", &logs);
    let apod = run_pod(&mut rt, after.clone(), "runc").await;
    let e = create_err(
        &mut rt,
        &apod.id,
        sh_container("restored", &archive.display().to_string(), ""),
    )
    .await;
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains(&image), "{}", e.message());
    pull(&mut d.images().await, &image).await.unwrap();

    // crun restores only when built with CRIU (`+CRIU` in `crun --version`); Debian 12's is
    // not, and the create says so before making anything.
    let cpod_cfg = pod_config("crun", &logs);
    let cpod = run_pod(&mut rt, cpod_cfg.clone(), "crun").await;
    if crun_has_criu() {
        restore_and_check(
            &d,
            &mut rt,
            &cpod,
            &cpod_cfg,
            &archive.display().to_string(),
            "restored-crun",
            at_checkpoint,
        )
        .await;
    } else {
        let e = create_err(
            &mut rt,
            &cpod.id,
            api::ContainerConfig {
                mounts: vec![data_mount(&before)],
                ..sh_container("crun", &archive.display().to_string(), "")
            },
        )
        .await;
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("built without CRIU"), "{e:?}");
    }
    finish_pod(&d, &cpod).await;

    // The same archive restored by runc.
    restore_and_check(
        &d,
        &mut rt,
        &apod,
        &after,
        &archive.display().to_string(),
        "restored-runc",
        at_checkpoint,
    )
    .await;
    finish_pod(&d, &apod).await;

    // A checkpoint image, as CRI-O takes them (Podman's `--create-image`, or buildah adding the
    // archive to a scratch image with the checkpoint annotation): pushed, pulled, restored by
    // the built-in handler.
    let reg = Registry::start(None);
    let image_ref = push_checkpoint_image(&reg, &archive, "counter");
    pull(&mut d.images().await, &image_ref).await.unwrap();
    let ipod_cfg = pod_config("from-image", &logs);
    let ipod = run_pod(&mut rt, ipod_cfg.clone(), "").await;
    restore_and_check(
        &d,
        &mut rt,
        &ipod,
        &ipod_cfg,
        &image_ref,
        "restored-image",
        at_checkpoint,
    )
    .await;
    // A checkpoint image is held to the signature policy at create too, like any image: the
    // pod's namespace now rejects the checkpoint repository (its base image stays accepted).
    policy.write(&format!("{}/checkpoints", reg.addr()));
    let e = create_err(
        &mut rt,
        &ipod.id,
        api::ContainerConfig {
            mounts: vec![data_mount(&before)],
            ..sh_container("rejected", &image_ref, "")
        },
    )
    .await;
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("checkpoints"), "{e:?}");
    policy.write("");
    // An image without the annotation is an ordinary image, even holding a config.dump: its
    // container runs its own (missing) command, nothing is restored.
    let plain = push_checkpoint_image(&reg, &archive, "");
    pull(&mut d.images().await, &plain).await.unwrap();
    let r = create_err(
        &mut rt,
        &ipod.id,
        api::ContainerConfig {
            mounts: vec![data_mount(&before)],
            ..sh_container("plain", &plain, "")
        },
    )
    .await;
    assert!(r.message().contains("executable 'sh' not found"), "{r:?}");
    finish_pod(&d, &ipod).await;
}

/// Pushes checkpoint archive `archive` as a one-layer image (the archive is the layer, an
/// uncompressed tar) to `reg`, annotated with the checkpointed container's `name` unless it is
/// empty; returns the image's reference.
fn push_checkpoint_image(reg: &Registry, archive: &std::path::Path, name: &str) -> String {
    let layer = std::fs::read(archive).unwrap();
    let repo = "checkpoints/counter";
    let layer_digest = reg.put_blob(repo, &layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": config.len(),
            "digest": reg.put_blob(repo, &config),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "size": layer.len(),
            "digest": layer_digest,
        }],
    });
    let tag = if name.is_empty() {
        "plain".to_string()
    } else {
        manifest["annotations"] =
            serde_json::json!({"io.kubernetes.cri-o.annotations.checkpoint.name": name});
        "v1".to_string()
    };
    reg.put_manifest(repo, &tag, &manifest);
    reg.image(&format!("{repo}:{tag}"))
}
