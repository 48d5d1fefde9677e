//! ImageService end to end: a real daemon, a real registry, real images.

#[macro_use]
mod common;

use common::*;
use ferrio::cri::api;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn pull_by_tag_digest_and_no_tag_and_resolve_every_ref_to_one_image() {
    e2e!();
    let reg = Registry::shared();
    let d = Daemon::start(DaemonOpts::default());
    let mut c = d.images().await;

    let id = pull(&mut c, &reg.image("ferrio-test/busybox:1.35"))
        .await
        .unwrap();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    // No tag means :latest; the same image gains the tag.
    assert_eq!(
        pull(&mut c, &reg.image("ferrio-test/busybox"))
            .await
            .unwrap(),
        id
    );
    let img = status(&mut c, &reg.image("ferrio-test/busybox:1.35"))
        .await
        .expect("image by tag");
    assert_eq!(img.id, id, "Image.id equals PullImageResponse.image_ref");
    assert_eq!(
        img.repo_tags,
        vec![
            reg.image("ferrio-test/busybox:1.35"),
            reg.image("ferrio-test/busybox:latest")
        ]
    );
    assert_eq!(img.repo_digests.len(), 1);
    let by_digest = img.repo_digests[0].clone();
    assert!(by_digest.starts_with(&reg.image("ferrio-test/busybox@sha256:")));
    assert!(img.size > 1_000_000, "size {}", img.size);

    // Pull by digest gives the same image.
    assert_eq!(pull(&mut c, &by_digest).await.unwrap(), id);

    // Every reference resolves to the identical image.
    for r in [
        reg.image("ferrio-test/busybox:1.35"),
        reg.image("ferrio-test/busybox"),
        by_digest.clone(),
        id.clone(),
        id[7..].to_string(),
        id[7..19].to_string(),
        id[..19].to_string(),
    ] {
        assert_eq!(
            status(&mut c, &r).await.as_ref(),
            Some(&img),
            "ImageStatus({r})"
        );
        let listed = c
            .list_images(api::ListImagesRequest {
                filter: Some(api::ImageFilter {
                    image: Some(spec(&r)),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .images;
        assert_eq!(listed, vec![img.clone()], "ListImages filter {r}");
    }
    assert_eq!(list(&mut c).await, vec![img.clone()]);

    // An absent image is an empty response, not an error.
    assert_eq!(
        status(&mut c, &reg.image("ferrio-test/busybox:nope")).await,
        None
    );
    assert_eq!(status(&mut c, "deadbeef").await, None);
    // A missing tag on the registry is NotFound with the reference in the message.
    let e = pull(&mut c, &reg.image("ferrio-test/busybox:nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(
        e.message().contains("ferrio-test/busybox:nope"),
        "{}",
        e.message()
    );
    // A malformed reference is InvalidArgument.
    let e = pull(&mut c, "Not A/Ref").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c
        .pull_image(api::PullImageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn verbose_status_users_multiarch_and_streaming_list() {
    e2e!();
    let reg = Registry::shared();
    let d = Daemon::start(DaemonOpts::default());
    let mut c = d.images().await;
    pull(&mut c, &reg.image("ferrio-test/busybox-uid"))
        .await
        .unwrap();
    pull(&mut c, &reg.image("ferrio-test/busybox-user"))
        .await
        .unwrap();
    let uid = status(&mut c, &reg.image("ferrio-test/busybox-uid"))
        .await
        .unwrap();
    assert_eq!(uid.uid, Some(api::Int64Value { value: 1002 }));
    assert_eq!(uid.username, "");
    let user = status(&mut c, &reg.image("ferrio-test/busybox-user"))
        .await
        .unwrap();
    assert_eq!(user.uid, None);
    assert_eq!(user.username, "www-data");

    // An index: this host's platform is chosen.
    let id = pull(&mut c, &reg.image("ferrio-test/multiarch"))
        .await
        .unwrap();
    let r = c
        .image_status(api::ImageStatusRequest {
            image: Some(spec(&id)),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
    let host = ferrio::image::manifest::host_platform().0;
    assert_eq!(info["imageSpec"]["architecture"], host);
    assert!(info["indexDigest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        r.image.unwrap().repo_digests[0],
        format!(
            "{}@{}",
            reg.image("ferrio-test/multiarch"),
            info["indexDigest"].as_str().unwrap()
        )
    );

    let mut s = c
        .stream_images(api::StreamImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(m) = s.message().await.unwrap() {
        n += m.images.len();
    }
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn multilayer_whiteouts_and_opaque_dirs_are_overlayfs_markers() {
    e2e!();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let reg = Registry::shared();
    let d = Daemon::start(DaemonOpts::default());
    let mut c = d.images().await;
    let id = pull(&mut c, &reg.image("ferrio-test/multilayer"))
        .await
        .unwrap();
    let r = c
        .image_status(api::ImageStatusRequest {
            image: Some(spec(&id)),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
    let chains: Vec<String> = info["chainIDs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap()[7..].to_string())
        .collect();
    assert_eq!(chains.len(), 3);
    let layer = |i: usize| d.root.join("images/layers").join(&chains[i]).join("diff");
    assert!(layer(0).join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_to_string(layer(1).join("data/a")).unwrap(),
        "a\n"
    );
    let wh = std::fs::symlink_metadata(layer(2).join("data/a")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout for data/a"
    );
    assert!(!layer(2).join("data/.wh.a").exists());
    assert_eq!(
        xattr::get(layer(2).join("data/dir"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert!(layer(2).join("data/dir/z").is_file());

    // Layers are shared: busybox's only layer is multilayer's first, so pulling it adds none.
    let before = entries(&d.root.join("images/layers")).len();
    pull(&mut c, &reg.image("ferrio-test/busybox"))
        .await
        .unwrap();
    assert_eq!(entries(&d.root.join("images/layers")).len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_by_one_tag_removes_all_and_frees_unshared_data() {
    e2e!();
    let reg = Registry::shared();
    let d = Daemon::start(DaemonOpts::default());
    let mut c = d.images().await;
    pull(&mut c, &reg.image("ferrio-test/busybox:1"))
        .await
        .unwrap();
    pull(&mut c, &reg.image("ferrio-test/busybox:latest"))
        .await
        .unwrap();
    let ml = pull(&mut c, &reg.image("ferrio-test/multilayer"))
        .await
        .unwrap();
    let fs0 = c
        .image_fs_info(api::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let u = &fs0.image_filesystems[0];
    assert_eq!(
        u.fs_id.as_ref().unwrap().mountpoint,
        d.root.join("images").to_string_lossy()
    );
    assert!(
        u.used_bytes.unwrap().value > 2_000_000 && u.inodes_used.unwrap().value > 10,
        "{u:?}"
    );

    c.remove_image(api::RemoveImageRequest {
        image: Some(spec(&reg.image("ferrio-test/busybox:1"))),
    })
    .await
    .unwrap();
    assert_eq!(
        status(&mut c, &reg.image("ferrio-test/busybox:latest")).await,
        None,
        "every tag goes"
    );
    // The busybox layer is still used by multilayer.
    assert_eq!(entries(&d.root.join("images/layers")).len(), 3);
    // Removing again, or an image never seen, succeeds.
    c.remove_image(api::RemoveImageRequest {
        image: Some(spec(&reg.image("ferrio-test/busybox:1"))),
    })
    .await
    .unwrap();
    c.remove_image(api::RemoveImageRequest {
        image: Some(spec("never-pulled:1")),
    })
    .await
    .unwrap();
    c.remove_image(api::RemoveImageRequest {
        image: Some(spec(&ml)),
    })
    .await
    .unwrap();
    assert!(list(&mut c).await.is_empty());
    assert_eq!(entries(&d.root.join("images/layers")), Vec::<String>::new());
    assert_eq!(
        entries(&d.root.join("images/blobs/sha256")),
        Vec::<String>::new()
    );
    assert_eq!(
        entries(&d.root.join("images/records")),
        Vec::<String>::new()
    );
    let fs1 = c
        .image_fs_info(api::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(fs1.image_filesystems[0].used_bytes.unwrap().value < u.used_bytes.unwrap().value);
}

#[tokio::test(flavor = "multi_thread")]
async fn short_names_through_mirrors_in_order_and_blocked_registries() {
    e2e!();
    let reg = Registry::shared();
    let dead = free_port();
    let conf = format!(
        r#"
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:{dead}"
insecure = true
[[registry.mirror]]
location = "{}"
insecure = true

[[registry]]
location = "blocked.example.com"
blocked = true
"#,
        reg.addr()
    );
    let d = Daemon::start(DaemonOpts {
        registries_conf: Some(conf),
        ..Default::default()
    });
    let mut c = d.images().await;
    // A short name with no alias and no search registry is refused, never sent to docker.io.
    let e = pull(&mut c, "busybox:1.35").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("unqualified-search-registries"),
        "{}",
        e.message()
    );
    assert!(status(&mut c, "busybox:1.35").await.is_none());
    // A drop-in (registries.conf.d), read again on SIGHUP, names docker.io as the search
    // registry.
    let dropins = d.dir.path().join("registries.conf.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("50-search.conf"),
        "unqualified-search-registries = [\"docker.io\"]\n",
    )
    .unwrap();
    sighup_and_wait(&d, 1);
    // `busybox:1.35` is docker.io/library/busybox:1.35: the dead mirror fails, the second serves.
    let id = pull(&mut c, "busybox:1.35").await.unwrap();
    let img = status(&mut c, "docker.io/library/busybox:1.35")
        .await
        .unwrap();
    assert_eq!(img.id, id);
    assert_eq!(
        img.repo_tags,
        vec!["docker.io/library/busybox:1.35".to_string()]
    );
    assert!(img.repo_digests[0].starts_with("docker.io/library/busybox@sha256:"));
    assert_eq!(status(&mut c, "busybox:1.35").await.unwrap(), img);
    let log = d.log_text();
    assert!(
        log.contains(&format!("127.0.0.1:{dead}")),
        "the first mirror was tried: {log}"
    );

    let e = pull(&mut c, "blocked.example.com/a/b:1").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("blocked"), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_from_the_request_and_from_an_auth_file() {
    e2e!();
    use base64::Engine;
    let reg = Registry::with_images(Some("alice:s3cret"));
    let image = reg.image("ferrio-test/busybox:1");

    let d = Daemon::start(DaemonOpts::default());
    let mut c = d.images().await;
    let e = pull(&mut c, &image).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains(&image), "{}", e.message());
    let wrong = api::AuthConfig {
        username: "alice".into(),
        password: "nope".into(),
        ..Default::default()
    };
    assert_eq!(
        pull_auth(&mut c, &image, Some(wrong))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    let right = api::AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let id = pull_auth(&mut c, &image, Some(right)).await.unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let by_auth = api::AuthConfig {
        auth: b64.clone(),
        ..Default::default()
    };
    pull_auth(&mut c, &reg.image("ferrio-test/busybox-uid"), Some(by_auth))
        .await
        .expect("auth: base64(user:password)");
    assert!(
        !d.log_text().contains("s3cret"),
        "the password must never be logged"
    );
    drop(c);
    drop(d);

    // The same through global_auth_file.
    let dir = tempfile::tempdir().unwrap();
    let authfile = dir.path().join("auth.json");
    std::fs::write(
        &authfile,
        format!(r#"{{"auths":{{"{}":{{"auth":"{b64}"}}}}}}"#, reg.addr()),
    )
    .unwrap();
    let d = Daemon::start(DaemonOpts {
        extra_config: format!("global_auth_file = {:?}\n", authfile),
        ..Default::default()
    });
    let mut c = d.images().await;
    assert_eq!(pull(&mut c, &image).await.unwrap(), id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_blob_is_rejected_and_nothing_is_stored() {
    e2e!();
    let reg = Registry::with_images(None);
    let m = reg.manifest("ferrio-test/busybox", "latest");
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let p = reg.blob_path(&layer);
    let mut data = std::fs::read(&p).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&p, &data).unwrap();

    let d = Daemon::start(DaemonOpts::default());
    let mut c = d.images().await;
    let e = pull(&mut c, &reg.image("ferrio-test/busybox:latest"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(
        e.message().contains(&layer[..19]) || e.message().contains("digest"),
        "{}",
        e.message()
    );
    assert!(list(&mut c).await.is_empty());
    for sub in ["layers", "records", "tmp", "blobs/sha256"] {
        assert_eq!(
            entries(&d.root.join("images").join(sub)),
            Vec::<String>::new(),
            "images/{sub}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_1ms_deadline_fails_with_deadline_exceeded() {
    e2e!();
    let reg = Registry::shared();
    let d = Daemon::start(DaemonOpts::default());
    let mut c = d.images().await;
    // The header a gRPC client sends for a 1 ms deadline, sent without tonic's client stack
    // (which would enforce the deadline itself and report `Cancelled` locally).
    let req = api::PullImageRequest {
        image: Some(spec(&reg.image("ferrio-test/busybox-user"))),
        ..Default::default()
    };
    let (code, msg) = raw_grpc(
        &d.socket,
        "/runtime.v1.ImageService/PullImage",
        &req,
        &[("grpc-timeout", "1m")],
    )
    .await;
    assert_eq!(Code::from_i32(code), Code::DeadlineExceeded, "{msg}");
    assert!(msg.contains("deadline"), "{msg}");
    // Through tonic, the call fails too (on the client's side).
    let mut req = tonic::Request::new(api::PullImageRequest {
        image: Some(spec(&reg.image("ferrio-test/busybox-user"))),
        ..Default::default()
    });
    req.set_timeout(Duration::from_millis(1));
    assert!(c.pull_image(req).await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        list(&mut c).await.is_empty(),
        "a cancelled pull stores nothing"
    );
    assert_eq!(entries(&d.root.join("images/tmp")), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_image_share_one_download() {
    e2e!();
    let reg = Registry::shared();
    let proxy = Proxy::start(reg.port);
    proxy
        .rate
        .store(4 << 20, std::sync::atomic::Ordering::Relaxed);
    let d = Daemon::start(DaemonOpts::default());
    let image = format!("127.0.0.1:{}/ferrio-test/busybox:latest", proxy.port);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let mut c = d.images().await;
        let image = image.clone();
        tasks.push(tokio::spawn(async move { pull(&mut c, &image).await }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    let layer_size = reg.manifest("ferrio-test/busybox", "latest")["layers"][0]["size"]
        .as_u64()
        .unwrap();
    let sent = proxy.bytes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 2 * layer_size,
        "5 coalesced pulls moved {sent} bytes for a {layer_size}-byte layer"
    );
    assert!(d.log_text().contains("joining a pull already in progress"));
}

/// An anonymous pull that arrives while an authorised pull of the same image runs is not
/// merged into it: it fails as an anonymous pull does, and the authorised one succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_are_merged_only_with_the_same_credentials() {
    e2e!();
    let reg = Registry::with_images(Some("alice:s3cret"));
    let proxy = Proxy::start(reg.port);
    proxy
        .rate
        .store(1 << 20, std::sync::atomic::Ordering::Relaxed);
    let d = Daemon::start(DaemonOpts::default());
    let image = format!("127.0.0.1:{}/ferrio-test/busybox:1", proxy.port);
    let right = api::AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let authorised = {
        let mut c = d.images().await;
        let image = image.clone();
        tokio::spawn(async move { pull_auth(&mut c, &image, Some(right)).await })
    };
    // The authorised pull is downloading (slowly) when the others arrive.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while proxy.bytes.load(std::sync::atomic::Ordering::Relaxed) < 64 << 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "the authorised pull did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = d.images().await;
    let e = pull(&mut c, &image).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let wrong = api::AuthConfig {
        username: "alice".into(),
        password: "guess".into(),
        ..Default::default()
    };
    let e = pull_auth(&mut c, &image, Some(wrong)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(authorised.await.unwrap().is_ok());
    assert!(!d.log_text().contains("joining a pull already in progress"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_pull_is_aborted_after_pull_progress_timeout() {
    e2e!();
    let reg = Registry::shared();
    let proxy = Proxy::start(reg.port);
    let d = Daemon::start(DaemonOpts {
        extra_config: "pull_progress_timeout = 2\n".into(),
        ..Default::default()
    });
    let mut c = d.images().await;
    proxy
        .paused
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let started = std::time::Instant::now();
    let e = pull(
        &mut c,
        &format!("127.0.0.1:{}/ferrio-test/busybox:1.35", proxy.port),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(e.message().contains("no data received"), "{}", e.message());
    assert!(started.elapsed() < Duration::from_secs(15));
    proxy
        .paused
        .store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(list(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_pull_leaves_no_broken_image_and_restart_keeps_images() {
    e2e!();
    let reg = Registry::shared();
    let mut d = Daemon::start(DaemonOpts::default());

    // A slow pull, killed with SIGKILL in the middle of its first layer.
    let proxy = Proxy::start(reg.port);
    proxy
        .rate
        .store(100 << 10, std::sync::atomic::Ordering::Relaxed);
    let slow = format!("127.0.0.1:{}/ferrio-test/multilayer:latest", proxy.port);
    let mut c = d.images().await;
    let s2 = slow.clone();
    let pulling = tokio::spawn(async move { pull(&mut c, &s2).await });
    let t0 = std::time::Instant::now();
    while proxy.bytes.load(std::sync::atomic::Ordering::Relaxed) < 200_000 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the slow pull did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !entries(&d.root.join("images/tmp")).is_empty(),
        "a layer is being unpacked"
    );
    d.kill9();
    assert!(pulling.await.unwrap().is_err());

    let mut d = d.restart(DaemonOpts::default());
    let mut c = d.images().await;
    assert!(
        list(&mut c).await.is_empty(),
        "no half-pulled image is visible"
    );
    for sub in ["tmp", "layers", "records", "blobs/sha256"] {
        assert_eq!(
            entries(&d.root.join("images").join(sub)),
            Vec::<String>::new(),
            "images/{sub} after the restart"
        );
    }
    // The pull works after the crash, and its image survives a clean restart.
    proxy.rate.store(0, std::sync::atomic::Ordering::Relaxed);
    let id = pull(&mut c, &slow).await.unwrap();
    drop(c);
    assert!(d.stop().success());
    assert!(!d.socket.exists(), "the socket is removed on a clean stop");
    let d = d.restart(DaemonOpts::default());
    let mut c = d.images().await;
    assert_eq!(status(&mut c, &slow).await.unwrap().id, id);
    assert_eq!(entries(&d.root.join("images/layers")).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_larger_than_the_cap_is_refused_while_it_streams() {
    e2e!();
    // 256 MiB bodies: a client that read them whole would let the server finish writing.
    const HUGE: u64 = 256 << 20;
    let server = TinyHttp::start(|req| match req.target.as_str() {
        "/v2/" => HttpResponse::json(200, "{}"),
        "/v2/hostile/big/manifests/with-length" | "/v2/hostile/big/manifests/without-length" => {
            HttpResponse {
                status: 200,
                headers: vec![(
                    "Content-Type".into(),
                    "application/vnd.oci.image.manifest.v1+json".into(),
                )],
                body: HttpBody::Endless {
                    len: HUGE,
                    content_length: req.target.ends_with("/with-length"),
                },
            }
        }
        _ => HttpResponse::json(404, r#"{"errors":[{"code":"NOT_FOUND","message":"no"}]}"#),
    });
    let d = Daemon::start(DaemonOpts::default());
    let mut c = d.images().await;
    for tag in ["with-length", "without-length"] {
        let image = format!("{}/hostile/big:{tag}", server.addr());
        let e = pull(&mut c, &image).await.unwrap_err();
        assert_eq!(e.code(), Code::DataLoss, "{tag}: {e:?}");
        assert!(
            e.message().contains(&image)
                && e.message()
                    .contains("manifest larger than 8388608 bytes; refused"),
            "{tag}: {}",
            e.message()
        );
    }
    // Both requests were made, and neither body was read to its end.
    let manifests = server
        .requests()
        .iter()
        .filter(|r| r.target.contains("/manifests/"))
        .count();
    assert_eq!(manifests, 2);
    assert_eq!(
        server
            .endless_completed
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(list(&mut c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_token_is_exchanged_for_an_access_token_at_the_realm() {
    e2e!();
    // A registry with token auth: every /v2/ request needs `Bearer acc-123`, which the realm
    // grants for the refresh token `refresh-456`. Manifests and blobs come from the real
    // registry behind it.
    let reg = Registry::shared();
    let reg_port = reg.port;
    let port = Arc::new(AtomicU16::new(0));
    let p = port.clone();
    let server = TinyHttp::start(move |req| {
        let me = p.load(Ordering::Relaxed);
        if req.target == "/token" {
            let f = form_fields(&req.body);
            let has = |k: &str, v: &str| f.iter().any(|(a, b)| a == k && b == v);
            if req.method == "POST"
                && has("grant_type", "refresh_token")
                && has("refresh_token", "refresh-456")
                && has("client_id", "ferrio")
                && has("service", "tiny-registry")
                && has("scope", "repository:ferrio-test/busybox:pull")
            {
                return HttpResponse::json(200, r#"{"access_token":"acc-123","expires_in":300}"#);
            }
            return HttpResponse::json(401, r#"{"error":"invalid_grant"}"#);
        }
        if req.header("authorization") != Some("Bearer acc-123") {
            let mut r = HttpResponse::json(
                401,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"token needed"}]}"#,
            );
            r.headers.push((
                "WWW-Authenticate".into(),
                format!(r#"Bearer realm="http://127.0.0.1:{me}/token",service="tiny-registry""#),
            ));
            return r;
        }
        if req.target == "/v2/" {
            return HttpResponse::json(200, "{}");
        }
        forward(reg_port, req)
    });
    port.store(server.port, Ordering::Relaxed);
    let image = format!("{}/ferrio-test/busybox:1.35", server.addr());

    let d = Daemon::start(DaemonOpts::default());
    let mut c = d.images().await;
    let with = |t: &str| api::AuthConfig {
        identity_token: t.into(),
        ..Default::default()
    };
    let e = pull_auth(&mut c, &image, Some(with("wrong-789")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("invalid_grant"), "{}", e.message());

    pull_auth(&mut c, &image, Some(with("refresh-456")))
        .await
        .expect("pull with an identity token");
    assert!(status(&mut c, &image).await.is_some());
    let reqs = server.requests();
    let tokens: Vec<_> = reqs.iter().filter(|r| r.target == "/token").collect();
    assert_eq!(tokens.len(), 2, "one token request per pull");
    assert!(tokens.iter().all(|r| r.method == "POST"
        && r.header("content-type") == Some("application/x-www-form-urlencoded")));
    // Manifest, config and layer went out with the access token, never the refresh token.
    let fetched: Vec<_> = reqs
        .iter()
        .filter(|r| r.target.contains("/manifests/") || r.target.contains("/blobs/"))
        .collect();
    assert!(fetched.len() >= 3, "{fetched:?}");
    assert!(fetched
        .iter()
        .any(|r| r.header("authorization") == Some("Bearer acc-123")));
    assert!(reqs
        .iter()
        .filter(|r| r.target != "/token")
        .all(|r| !format!("{r:?}").contains("refresh-456")));
    let log = d.log_text();
    assert!(!log.contains("refresh-456") && !log.contains("acc-123"));
}

/// `image.pinned_images` (CRI-O's patterns) marks images `pinned` for kubelet's image GC; a
/// SIGHUP reads the list again, and a bad list keeps the one in force.
#[tokio::test(flavor = "multi_thread")]
async fn pinned_images_by_name_prefix_and_keyword_reloaded_on_sighup() {
    e2e!();
    let reg = Registry::shared();
    let busybox = reg.image("ferrio-test/busybox:1.35");
    let multi = reg.image("ferrio-test/multilayer");
    let d = Daemon::start(DaemonOpts {
        extra_config: format!("pinned_images = [\"{busybox}\"]\n"),
        ..Default::default()
    });
    let mut c = d.images().await;
    pull(&mut c, &busybox).await.unwrap();
    pull(&mut c, &multi).await.unwrap();
    let pinned = |list: &[api::Image]| -> Vec<String> {
        let mut v: Vec<String> = list
            .iter()
            .filter(|i| i.pinned)
            .flat_map(|i| i.repo_tags.clone())
            .collect();
        v.sort();
        v
    };
    let list = |c: &mut ImageClient| {
        let mut c = c.clone();
        async move {
            c.list_images(api::ListImagesRequest { filter: None })
                .await
                .unwrap()
                .into_inner()
                .images
        }
    };
    type ImageClient = api::image_service_client::ImageServiceClient<tonic::transport::Channel>;
    assert_eq!(pinned(&list(&mut c).await), vec![busybox.clone()]);
    assert!(status(&mut c, &busybox).await.unwrap().pinned);
    let config = std::fs::read_to_string(&d.config).unwrap();
    let reload = |patterns: &str, reloads: usize| {
        let text = config.replace(
            &format!("pinned_images = [\"{busybox}\"]"),
            &format!("pinned_images = [{patterns}]"),
        );
        std::fs::write(&d.config, text).unwrap();
        sighup_and_wait(&d, reloads);
    };
    // A keyword, case-insensitive, and a prefix.
    reload("\"*MULTILAYER*\"", 1);
    assert_eq!(pinned(&list(&mut c).await), [format!("{multi}:latest")]);
    reload(&format!("\"{}/ferrio-test/busy*\"", reg.addr()), 2);
    assert_eq!(pinned(&list(&mut c).await), vec![busybox.clone()]);
    // A pattern with a * in the middle is refused; the list in force stays.
    reload("\"a*b\"", 3);
    assert!(d.log_text().contains("pinned_images"), "{}", d.log_text());
    assert_eq!(pinned(&list(&mut c).await), vec![busybox.clone()]);
}

/// Sends the daemon SIGHUP and waits until it has reloaded `n` times in all.
fn sighup_and_wait(d: &Daemon, n: usize) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let t = std::time::Instant::now();
    while d
        .log_text()
        .matches("SIGHUP: configuration reloaded")
        .count()
        < n
    {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Short names as CRI-O resolves them: an alias (from a drop-in) wins; one search registry is
/// used; two are ambiguous under `enforcing` (InvalidArgument naming both) and tried in order
/// under `permissive`; a local lookup finds what a short name pulled.
#[tokio::test(flavor = "multi_thread")]
async fn short_names_through_aliases_search_registries_and_modes() {
    e2e!();
    let reg = Registry::shared();
    let dead = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(DaemonOpts {
        registries_conf: Some(format!(
            "unqualified-search-registries = [\"{dead}\", \"{}\"]\n",
            reg.addr()
        )),
        ..Default::default()
    });
    let mut c = d.images().await;
    let e = pull(&mut c, "ferrio-test/busybox:1.35").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("ambiguous") && e.message().contains(&dead),
        "{}",
        e.message()
    );
    // An alias in a drop-in resolves it without ambiguity.
    let dropins = d.dir.path().join("registries.conf.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("10-aliases.conf"),
        format!(
            "[aliases]\n\"bb\" = \"{}/ferrio-test/busybox\"\n",
            reg.addr()
        ),
    )
    .unwrap();
    sighup_and_wait(&d, 1);
    let id = pull(&mut c, "bb:1.35").await.unwrap();
    let img = status(&mut c, "bb:1.35")
        .await
        .expect("found through its alias");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec![reg.image("ferrio-test/busybox:1.35")]);
    // permissive (ferrio's short_name_mode overrides the file): every search registry in
    // order; the dead one fails, the next serves.
    std::fs::write(
        &d.config,
        std::fs::read_to_string(&d.config)
            .unwrap()
            .replace("[image]\n", "[image]\nshort_name_mode = \"permissive\"\n"),
    )
    .unwrap();
    sighup_and_wait(&d, 2);
    let id2 = pull(&mut c, "ferrio-test/multilayer").await.unwrap();
    let ml = status(&mut c, "ferrio-test/multilayer").await.unwrap();
    assert_eq!(ml.id, id2);
    assert_eq!(
        ml.repo_tags,
        vec![reg.image("ferrio-test/multilayer:latest")]
    );
    assert!(
        d.log_text().contains(&dead),
        "the first search registry was tried"
    );
    // A bad mode is refused on SIGHUP and the one in force stays.
    std::fs::write(
        &d.config,
        std::fs::read_to_string(&d.config).unwrap().replace(
            "short_name_mode = \"permissive\"",
            "short_name_mode = \"sometimes\"",
        ),
    )
    .unwrap();
    sighup_and_wait(&d, 3);
    assert!(d.log_text().contains("sometimes"), "{}", d.log_text());
    pull(&mut c, "ferrio-test/busybox-uid").await.unwrap();
}

/// Runs openssl with `args` in `dir`; it must succeed.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate, in
/// `dir`: ca.crt, server.{crt,key}, client.{cert,key}.
fn make_certs(dir: &std::path::Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=ferrio-test-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(dir, &ca);
    for (name, subj, ext) in [
        (
            "server",
            "/CN=localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "/CN=ferrio", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let mut req = vec!["req", "-subj", subj];
        req.extend(ec);
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(dir, &req);
        let out = if name == "server" {
            "server.crt"
        } else {
            "client.cert"
        };
        let ext_file = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext_file,
                "-out",
                out,
            ],
        );
    }
}

/// containers-certs.d: a registry on HTTPS that wants a client certificate is reached with the
/// CA and the client certificate of `<certs_dir>/<host:port>/`; without the client certificate,
/// or without the CA, the pull fails and says why.
#[tokio::test(flavor = "multi_thread")]
async fn registry_tls_from_certs_d_with_a_client_certificate() {
    e2e!();
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let regdir = tempfile::tempdir().unwrap();
    let port = free_port();
    let script = repo_root().join("hack/registry.sh");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&script)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "registry.sh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (rd, p, c) = (
        regdir.path().to_str().unwrap(),
        port.to_string(),
        certs.path().to_str().unwrap(),
    );
    let images = test_images();
    run(&["start", rd, &p, "--tls", c]);
    run(&["push", &p, "--tls", c, "--images", images.to_str().unwrap()]);
    let host = format!("localhost:{port}");
    let image = format!("{host}/ferrio-test/busybox:1.35");
    let certs_d = tempfile::tempdir().unwrap();
    let hostdir = certs_d.path().join(&host);
    std::fs::create_dir(&hostdir).unwrap();
    let put = |name: &str| std::fs::copy(certs.path().join(name), hostdir.join(name)).unwrap();
    let d = Daemon::start(DaemonOpts {
        extra_config: format!("certs_dir = \"{}\"\n", certs_d.path().display()),
        ..Default::default()
    });
    let mut ic = d.images().await;
    // No CA: the server's certificate is not trusted.
    let e = pull(&mut ic, &image).await.unwrap_err();
    assert!(e.message().to_lowercase().contains("certificate"), "{e:?}");
    // The CA but no client certificate: the registry refuses the handshake.
    put("ca.crt");
    let e = pull(&mut ic, &image).await.unwrap_err();
    assert!(!e.message().is_empty(), "{e:?}");
    assert!(status(&mut ic, &image).await.is_none());
    // Both: pulled (manifest and blobs), read again without a restart.
    put("client.cert");
    put("client.key");
    let id = pull(&mut ic, &image).await.unwrap();
    assert_eq!(status(&mut ic, &image).await.unwrap().id, id);
    run(&["stop", rd]);
}
