//! The daemon itself: CLI, config, socket handling, RuntimeService basics, image import.

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use tonic::Code;

fn ferrio() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrio"))
}

#[test]
fn config_prints_a_commented_default_that_parses_back() {
    e2e!();
    let out = ferrio().arg("config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("# ") && text.contains("[image]"));
    let cfg = ferrio::config::Config::from_toml(&text).unwrap();
    assert_eq!(cfg, ferrio::config::Config::default());
    let v = ferrio().arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn an_unknown_config_key_stops_the_daemon_with_the_key_named() {
    e2e!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ferrio.toml");
    std::fs::write(&cfg, "[image]\nmax_concurent_downloads = 2\n").unwrap();
    let out = ferrio()
        .arg("--config")
        .arg(&cfg)
        .arg("--root")
        .arg(dir.path().join("r"))
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_concurent_downloads") && err.contains("ferrio.toml"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_mode_second_daemon_refused_and_stale_socket_replaced() {
    e2e!();
    let d = Daemon::start(DaemonOpts::default());
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);

    // A second daemon on the same socket (other root) is refused with a clear message.
    let other = tempfile::tempdir().unwrap();
    let out = ferrio()
        .arg("--root")
        .arg(other.path().join("root"))
        .arg("--run-root")
        .arg(other.path().join("run"))
        .arg("--listen")
        .arg(&d.socket)
        .arg("--config")
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already serving") && err.contains(&*d.socket.to_string_lossy()),
        "{err}"
    );
    // A second daemon on the same root is refused too.
    let out = ferrio()
        .arg("--root")
        .arg(&d.root)
        .arg("--listen")
        .arg(other.path().join("x.sock"))
        .arg("--config")
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another ferrio daemon is using root"));
    // The first daemon still answers.
    let mut rt = d.runtime().await;
    rt.version(api::VersionRequest::default()).await.unwrap();

    // A stale socket (a socket file nobody listens on) is replaced.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let mut cmd = ferrio();
    cmd.arg("--root")
        .arg(dir.path().join("root"))
        .arg("--run-root")
        .arg(dir.path().join("run"))
        .arg("--listen")
        .arg(&stale)
        .arg("--config")
        .arg(&d.config)
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let t0 = std::time::Instant::now();
    let ok = loop {
        if let Ok(ch) = ferrio::cli::connect(&stale).await {
            let mut rt = api::runtime_service_client::RuntimeServiceClient::new(ch);
            if rt.version(api::VersionRequest::default()).await.is_ok() {
                break true;
            }
        }
        if t0.elapsed().as_secs() > 20 {
            break false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "SIGINT stops the daemon cleanly"
    );
    assert!(ok, "the daemon did not come up on a stale socket");
    assert!(!stale.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_service_version_status_config_and_unimplemented() {
    e2e!();
    let d = Daemon::start(DaemonOpts::default());
    let mut rt = d.runtime().await;
    let v = rt
        .version(api::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("ferrio", "v1")
    );
    assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));

    let s = rt
        .status(api::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = s.status.unwrap().conditions;
    let get = |t: &str| conds.iter().find(|c| c.r#type == t).unwrap().clone();
    assert!(get("RuntimeReady").status);
    let net = get("NetworkReady");
    assert!(!net.status);
    assert_eq!(net.reason, "NetworkPluginNotReady");
    let cfg: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(cfg["root"], d.root.to_string_lossy().as_ref());
    let s = rt
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(s.info.is_empty());

    let rc = rt
        .runtime_config(api::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        api::CgroupDriver::Cgroupfs as i32
    );

    let handlers: Vec<String> = s.runtime_handlers.iter().map(|h| h.name.clone()).collect();
    // The CRI's empty name is the default handler (ferrio's own by default), with its features.
    assert_eq!(handlers, ["", "crun", "ferrio", "runc"]);
    let feat = |s: &api::StatusResponse, n: &str| {
        s.runtime_handlers
            .iter()
            .find(|h| h.name == n)
            .and_then(|h| h.features)
            .unwrap()
    };
    assert_eq!(feat(&s, ""), feat(&s, "ferrio"));
    assert!(feat(&s, "").recursive_read_only_mounts);
    // With runc as the default, the default handler is runc's, without `rro`.
    let runc_default = Daemon::start(DaemonOpts {
        extra_config: "[runtime]\ndefault_runtime = \"runc\"\n".into(),
        ..Default::default()
    });
    let rs = runc_default
        .runtime()
        .await
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(feat(&rs, ""), feat(&rs, "runc"));
    assert!(!feat(&rs, "").recursive_read_only_mounts);
    // The CLI names it.
    let out = runc_default.cli(&["status"]);
    assert!(
        out.contains("handlers:   (default), crun, ferrio (recursive read-only mounts), runc"),
        "{out}"
    );

    // A request without its config, ID or location is InvalidArgument.
    let e = rt
        .container_stats(api::ContainerStatsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "an empty ID");
    let e = rt
        .checkpoint_container(api::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "no location");
    let e = rt.attach(api::AttachRequest::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "an empty container ID");
    let e = rt
        .run_pod_sandbox(api::RunPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let list = rt
        .list_containers(api::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.containers.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn import_through_the_daemon_straight_into_the_store_and_from_the_import_dir() {
    e2e!();
    let images = test_images();
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    // Stopped daemon: the CLI writes the store directly.
    let root = dir.path().join("root");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = ferrio().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listen = dir.path().join("run/ferrio.sock");
    let out = run(&[
        "--root".as_ref(),
        root.as_os_str(),
        "--listen".as_ref(),
        listen.as_os_str(),
        "image".as_ref(),
        "import".as_ref(),
        images.join("busybox-docker.tar").as_os_str(),
    ]);
    assert!(
        out.contains("docker.io/ferrio-test/busybox-docker:1"),
        "{out}"
    );

    // The import dir is read once at start.
    let import_dir = root.join("import");
    std::fs::create_dir_all(&import_dir).unwrap();
    std::fs::copy(
        images.join("multilayer.tar"),
        import_dir.join("multilayer.tar"),
    )
    .unwrap();
    let mut d = Daemon::start_in(
        dir.clone(),
        DaemonOpts {
            root: Some(root.clone()),
            ..Default::default()
        },
    );
    let mut c = d.images().await;
    let docker = status(&mut c, "docker.io/ferrio-test/busybox-docker:1")
        .await
        .expect("docker-save import");
    let ml = status(&mut c, "localhost/ferrio-test/multilayer:latest")
        .await
        .expect("import-dir import");
    assert_eq!(ml.repo_digests.len(), 1);
    // What the import dir brought may not be pullable again: pinned, so that kubelet's image
    // GC keeps it (also after a restart); what was imported by hand is not.
    assert!(ml.pinned && !docker.pinned, "{ml:?} {docker:?}");

    // Through the running daemon.
    let out = run(&[
        "--listen".as_ref(),
        d.socket.as_os_str(),
        "--root".as_ref(),
        root.as_os_str(),
        "image".as_ref(),
        "import".as_ref(),
        images.join("busybox.tar").as_os_str(),
    ]);
    assert!(
        out.contains("localhost/ferrio-test/busybox:latest"),
        "{out}"
    );
    let bb = status(&mut c, "localhost/ferrio-test/busybox:latest")
        .await
        .unwrap();
    // The same busybox content, imported two ways, is one config digest: one image ID.
    assert_eq!(bb.id, docker.id);
    assert!(d.log_text().contains("image imported"));

    // Not imported again at the next start, even after its image was removed.
    c.remove_image(api::RemoveImageRequest {
        image: Some(spec(&ml.id)),
    })
    .await
    .unwrap();
    drop(c);
    assert!(d.stop().success());
    let d = d.restart(DaemonOpts::default());
    let mut c = d.images().await;
    assert!(status(&mut c, "localhost/ferrio-test/multilayer:latest")
        .await
        .is_none());

    // A file that is no archive is refused with its name.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar").unwrap();
    let out = ferrio()
        .args([
            "--listen".as_ref(),
            d.socket.as_os_str(),
            "image".as_ref(),
            "import".as_ref(),
            junk.as_os_str(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.tar"));
    // The daemon's leak check runs when the last holder of the directory goes.
    drop(dir);
}
