//! CRI request builders and client helpers shared by the suites.

use super::*;
use ferrio::cri::api::image_service_client::ImageServiceClient;
use ferrio::cri::api::runtime_service_client::RuntimeServiceClient;
use ferrio::cri::api::{self};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub async fn pull(
    c: &mut ImageServiceClient<Channel>,
    image: &str,
) -> Result<String, tonic::Status> {
    pull_auth(c, image, None).await
}

pub async fn pull_auth(
    c: &mut ImageServiceClient<Channel>,
    image: &str,
    auth: Option<api::AuthConfig>,
) -> Result<String, tonic::Status> {
    let r = c
        .pull_image(api::PullImageRequest {
            image: Some(spec(image)),
            auth,
            sandbox_config: None,
        })
        .await?;
    Ok(r.into_inner().image_ref)
}

pub fn spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

pub async fn status(c: &mut ImageServiceClient<Channel>, image: &str) -> Option<api::Image> {
    c.image_status(api::ImageStatusRequest {
        image: Some(spec(image)),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .image
}

pub async fn list(c: &mut ImageServiceClient<Channel>) -> Vec<api::Image> {
    c.list_images(api::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images
}

/// Sends one unary gRPC call over a fresh HTTP/2 connection with the given extra headers, without
/// tonic's client stack (which enforces `grpc-timeout` itself). Returns (grpc-status, message).
pub async fn raw_grpc(
    socket: &Path,
    path: &str,
    msg: &impl prost::Message,
    headers: &[(&str, &str)],
) -> (i32, String) {
    let io = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut client, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::post(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut body = vec![0u8];
    let encoded = msg.encode_to_vec();
    body.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&encoded);
    let (resp, mut send) = client.send_request(req.body(()).unwrap(), false).unwrap();
    send.send_data(body.into(), true).unwrap();
    let resp = resp.await.unwrap();
    let (parts, mut recv) = resp.into_parts();
    let pick = |h: &http::HeaderMap| {
        h.get("grpc-status").map(|s| {
            (
                s.to_str().unwrap().parse::<i32>().unwrap(),
                h.get("grpc-message")
                    .map(|m| m.to_str().unwrap().to_string())
                    .unwrap_or_default(),
            )
        })
    };
    if let Some(r) = pick(&parts.headers) {
        return r;
    }
    while recv.data().await.is_some() {}
    let trailers = recv.trailers().await.unwrap().unwrap_or_default();
    pick(&trailers).unwrap_or((0, String::new()))
}

/// A pod config with a unique name and a log directory under `dir`.
pub fn pod_config(name: &str, log_dir: &Path) -> api::PodSandboxConfig {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: format!("{name}-{n}"),
            uid: format!("uid-{name}-{n}-{}", std::process::id()),
            namespace: "test".into(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.display().to_string(),
        linux: Some(api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    pid: api::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config running `sh -c script` from `image`, logging to `<name>.log`.
pub fn sh_container(name: &str, image: &str, script: &str) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(spec(image)),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// Polls ContainerStatus until the container has exited (or panics after `secs`).
pub async fn wait_exited(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    secs: u64,
) -> api::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = rt
            .container_status(api::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if st.state == api::ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit in {secs} s: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pod, created and ready, with a container runner around it.
pub struct TestPod {
    pub id: String,
    pub logs: PathBuf,
}

pub async fn run_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    cfg: api::PodSandboxConfig,
    handler: &str,
) -> TestPod {
    let logs = PathBuf::from(&cfg.log_directory);
    let id = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: handler.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    TestPod { id, logs }
}

pub async fn create_start(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &TestPod,
    pod_cfg: &api::PodSandboxConfig,
    c: api::ContainerConfig,
) -> String {
    let id = rt
        .create_container(api::CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(c),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(api::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    id
}

/// ExecSync of `sh -c script` in a container: (stdout, stderr, exit code).
pub async fn sh_in(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    script: &str,
) -> (String, String, i32) {
    let r = rt
        .exec_sync(api::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .unwrap()
        .into_inner();
    (
        String::from_utf8_lossy(&r.stdout).trim().to_string(),
        String::from_utf8_lossy(&r.stderr).trim().to_string(),
        r.exit_code,
    )
}

/// A long-running container with a security context (and mounts) from the caller.
pub fn secured(
    name: &str,
    image: &str,
    sec: api::LinuxContainerSecurityContext,
    mounts: Vec<api::Mount>,
) -> api::ContainerConfig {
    let mut c = sh_container(name, image, "sleep 300");
    c.mounts = mounts;
    c.linux = Some(api::LinuxContainerConfig {
        security_context: Some(sec),
        ..Default::default()
    });
    c
}

/// A security context with the RuntimeDefault seccomp profile, as kubelet sends it with
/// `seccompDefault` (a container that names none runs unconfined, as with CRI-O).
pub fn runtime_default() -> api::LinuxContainerSecurityContext {
    api::LinuxContainerSecurityContext {
        seccomp: Some(api::SecurityProfile {
            profile_type: api::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    }
}

/// CapEff or CapBnd of a /proc/<pid>/status text, as a number.
pub fn cap_mask(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// A daemon with the busybox test image pulled, and the image's reference.
pub async fn daemon_with_busybox() -> (Daemon, String) {
    let d = Daemon::start(DaemonOpts::default());
    let image = Registry::shared().image("ferrio-test/busybox:1.35");
    pull(&mut d.images().await, &image).await.unwrap();
    (d, image)
}

/// The namespace options of a pod config made by [`pod_config`], to change a mode.
pub fn ns_options(cfg: &mut api::PodSandboxConfig) -> &mut api::NamespaceOption {
    cfg.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
}

/// PodSandboxStatus of `id` (which must exist).
pub async fn pod_status(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> api::PodSandboxStatus {
    rt.pod_sandbox_status(api::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

/// A daemon with the busybox test image pulled and one ready pod named `name`.
pub async fn setup_pod(name: &str) -> (Daemon, String, api::PodSandboxConfig, TestPod) {
    let (d, image) = daemon_with_busybox().await;
    let logs = d.dir.path().join("logs");
    let pcfg = pod_config(name, &logs);
    let mut rt = d.runtime().await;
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    (d, image, pcfg, pod)
}

/// Stops and removes `pod`, then checks no mount, cgroup or container run dir is left.
pub async fn finish_pod(d: &Daemon, pod: &TestPod) {
    let mut rt = d.runtime().await;
    rt.stop_pod_sandbox(api::StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .unwrap();
    assert!(mounts_containing(&pod.id).is_empty());
    assert!(cgroups_containing(&pod.id).is_empty());
    assert!(processes_containing(&pod.id).is_empty());
    assert!(entries(&d.dir.path().join("run/ctr")).is_empty());
}

/// ContainerStatus of `id` (which must exist).
pub async fn ctr_status(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> api::ContainerStatus {
    rt.container_status(api::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

/// CreateContainer that must fail: its status.
pub async fn create_err(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    config: api::ContainerConfig,
) -> tonic::Status {
    rt.create_container(api::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: None,
    })
    .await
    .unwrap_err()
}

/// Registers an NRI plugin over `client` (its runtime-service connection) as `<idx>-<name>`.
pub async fn register_nri_plugin(client: &ferrio::nri::ttrpc::Client, name: &str, idx: &str) {
    use ferrio::nri::api as nri;
    let _: nri::Empty = client
        .call(
            ferrio::nri::RUNTIME_SERVICE,
            "RegisterPlugin",
            &nri::RegisterPluginRequest {
                plugin_name: name.into(),
                plugin_idx: idx.into(),
                nri_version: ferrio::nri::NRI_VERSION.into(),
            },
            Duration::from_secs(5),
        )
        .await
        .expect("RegisterPlugin");
}
