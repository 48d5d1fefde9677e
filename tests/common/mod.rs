//! End-to-end harness: a real ferrio daemon per test (temp root, run root and socket), real
//! registries (Debian's docker-registry on 127.0.0.1, started by hack/registry.sh), real images
//! (hack/build-test-images.sh). Nothing is mocked.
#![allow(dead_code)]

use ferrio::cri::api::image_service_client::ImageServiceClient;
use ferrio::cri::api::runtime_service_client::RuntimeServiceClient;
use ferrio::cri::api::{self};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn images_dir() -> PathBuf {
    std::env::var_os("FERRIO_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".test-images"))
}

/// Builds the test images once (the script locks and skips when they exist).
pub fn test_images() -> PathBuf {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = images_dir();
        run(Command::new(repo_root().join("hack/build-test-images.sh")).arg(&dir));
        dir
    })
    .clone()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A registry on 127.0.0.1; it stops with the test process (or when dropped).
pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(htpasswd: Option<&str>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(repo_root().join("hack/registry.sh"));
        cmd.arg("start")
            .arg(dir.path())
            .arg(port.to_string())
            .args(["--watch", &std::process::id().to_string()]);
        if let Some(h) = htpasswd {
            cmd.args(["--htpasswd", h]);
        }
        run(&mut cmd);
        Registry { port, dir }
    }

    /// Starts a registry with the standard test images pushed.
    pub fn with_images(htpasswd: Option<&str>) -> Registry {
        let images = test_images();
        let r = Registry::start(htpasswd);
        let mut cmd = Command::new(repo_root().join("hack/registry.sh"));
        cmd.arg("push")
            .arg(r.port.to_string())
            .arg("--images")
            .arg(images);
        if let Some(h) = htpasswd {
            cmd.args(["--creds", h]);
        }
        run(&mut cmd);
        r
    }

    /// The registry shared by the tests of one test binary (read-only use).
    pub fn shared() -> &'static Registry {
        static R: OnceLock<Registry> = OnceLock::new();
        R.get_or_init(|| Registry::with_images(None))
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>/<name>`
    pub fn image(&self, name: &str) -> String {
        format!("{}/{}", self.addr(), name)
    }

    /// The registry's storage path of a blob.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{}/data",
            &hex[..2],
            hex
        ))
    }

    /// Fetches a manifest from the registry (plain HTTP) with curl.
    pub fn manifest(&self, repo: &str, reference: &str) -> serde_json::Value {
        let out = run(Command::new("curl").args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{}/v2/{repo}/manifests/{reference}", self.addr()),
        ]));
        serde_json::from_str(&out).unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("hack/registry.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

#[derive(Default, Clone)]
pub struct DaemonOpts {
    /// Extra TOML appended to the generated config.
    pub extra_config: String,
    /// registries.conf content.
    pub registries_conf: Option<String>,
    /// Reuse this root (restart tests).
    pub root: Option<PathBuf>,
    /// Extra keys of the `[network]` table.
    pub network_config: String,
    /// The ferrio binary to run (default: this tree's).
    pub binary: Option<PathBuf>,
}

/// A running ferrio daemon on its own temp root and socket. Stopped (SIGTERM) when dropped.
pub struct Daemon {
    pub child: Option<Child>,
    pub dir: Arc<tempfile::TempDir>,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(opts: DaemonOpts) -> Daemon {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        Self::start_in(dir, opts)
    }

    pub fn start_in(dir: Arc<tempfile::TempDir>, opts: DaemonOpts) -> Daemon {
        // Where ferrio's roots live on a node (/var/lib, /run) every user may search; the test's
        // directory is the same, so that what ferrio itself keeps private is what is tested.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let root = opts.root.clone().unwrap_or_else(|| dir.path().join("root"));
        let run_root = dir.path().join("run");
        let socket = run_root.join("ferrio.sock");
        let regconf = dir.path().join("registries.conf");
        std::fs::write(&regconf, opts.registries_conf.clone().unwrap_or_default()).unwrap();
        let config = dir.path().join("ferrio.toml");
        std::fs::write(
            &config,
            format!(
                // Tests reach every registry on 127.0.0.1 over plain HTTP; CNI configs are
                // the test's own (none unless it writes one into <dir>/net.d).
                // (extra_config's bare keys continue the [image] table)
                "[network]\nnetwork_dir = \"{}\"\ncache_dir = \"{}\"\n{}\n[image]\ninsecure_registries = [\"127.0.0.1\"]\n{}\n",
                dir.path().join("net.d").display(),
                dir.path().join("cni-cache").display(),
                opts.network_config,
                opts.extra_config
            ),
        )
        .unwrap();
        let log = dir.path().join(format!(
            "daemon-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let binary = opts
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ferrio")));
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&root)
            .arg("--run-root")
            .arg(&run_root)
            .arg("--listen")
            .arg(&socket)
            .arg("--registries-conf")
            .arg(&regconf)
            .args(["--log-level", "ferrio=debug,info"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            dir,
            root,
            socket,
            config,
            log,
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ferrio exited with {st} during start: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "ferrio did not listen on {} in 30 s: {}",
            self.socket.display(),
            self.log_text()
        );
    }

    /// Runs the `ferrio` CLI against this daemon; its stdout (it must succeed).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrio"))
            .arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ferrio {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub async fn channel(&self) -> Channel {
        ferrio::cli::connect(&self.socket).await.unwrap()
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon already stopped");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("ferrio did not stop on SIGTERM within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let mut c = self.child.take().expect("daemon already stopped");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// Starts a new daemon on the same directories.
    pub fn restart(&self, opts: DaemonOpts) -> Daemon {
        Daemon::start_in(
            self.dir.clone(),
            DaemonOpts {
                root: Some(self.root.clone()),
                ..opts
            },
        )
    }
}

impl Daemon {
    /// Removes every pod the daemon still has (a failed test leaves its pods running: containers
    /// outlive the daemon by design), so that no mount, process or cgroup stays behind.
    fn remove_all_pods(&self) {
        let socket = self.socket.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let ch = ferrio::cli::connect(&socket).await.ok()?;
                let mut c = RuntimeServiceClient::new(ch);
                let pods = c
                    .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
                    .await
                    .ok()?
                    .into_inner()
                    .items;
                for p in pods {
                    let _ = c
                        .remove_pod_sandbox(api::RemovePodSandboxRequest {
                            pod_sandbox_id: p.id,
                        })
                        .await;
                }
                Some(())
            })
        })
        .join();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.remove_all_pods();
            let st = self.stop();
            assert!(
                st.success() || std::thread::panicking(),
                "ferrio exited with {st}: {}",
                self.log_text()
            );
        }
    }
}

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

/// Entries of a directory (none when it does not exist).
pub fn entries(p: &Path) -> Vec<String> {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A TCP proxy in front of a registry that can slow down or pause the registry → client
/// direction, and counts the bytes it forwarded.
pub struct Proxy {
    pub port: u16,
    pub bytes: Arc<AtomicU64>,
    pub paused: Arc<AtomicBool>,
    /// Bytes per second toward the client; 0 = unlimited.
    pub rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let bytes = Arc::new(AtomicU64::new(0));
        let paused = Arc::new(AtomicBool::new(false));
        let rate = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, p, r, s) = (bytes.clone(), paused.clone(), rate.clone(), stop.clone());
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || loop {
            if s.load(Ordering::Relaxed) {
                return;
            }
            match l.accept() {
                Ok((client, _)) => {
                    client.set_nonblocking(false).unwrap();
                    let upstream = std::net::TcpStream::connect(("127.0.0.1", target)).unwrap();
                    let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let (mut c2, mut u2) = (c2, u2);
                        let _ = std::io::copy(&mut c2, &mut u2);
                        let _ = u2.shutdown(std::net::Shutdown::Write);
                    });
                    let (b, p, r, s) = (b.clone(), p.clone(), r.clone(), s.clone());
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let (mut up, mut client) = (upstream, client);
                        let mut buf = [0u8; 4096];
                        loop {
                            while p.load(Ordering::Relaxed) && !s.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            let n = match up.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if client.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            b.fetch_add(n as u64, Ordering::Relaxed);
                            let rate = r.load(Ordering::Relaxed);
                            if rate > 0 {
                                std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
                            }
                        }
                        let _ = client.shutdown(std::net::Shutdown::Both);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(_) => return,
            }
        });
        Proxy {
            port,
            bytes,
            paused,
            rate,
            stop,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.paused.store(false, Ordering::Relaxed);
    }
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
    body.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
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

/// Mounts (from /proc/self/mountinfo) whose mount point contains `needle`.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Processes whose command line contains `needle`.
pub fn processes_containing(needle: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && pid != std::process::id() as i32 {
            out.push((pid, cmd));
        }
    }
    out
}

/// Cgroup directories (any hierarchy) whose path contains `needle`.
pub fn cgroups_containing(needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let p = e.path();
                if p.to_string_lossy().contains(needle) {
                    out.push(p.clone());
                }
                if p.components().count() < 12 {
                    stack.push(p);
                }
            }
        }
    }
    out
}

/// A request as [`TinyHttp`] saw it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub enum HttpBody {
    Bytes(Vec<u8>),
    /// `len` bytes of `{`, written until done or the client goes away; with or without a
    /// `Content-Length` (without: the end of the body is the end of the connection).
    Endless {
        len: u64,
        content_length: bool,
    },
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: HttpBody,
}

impl HttpResponse {
    pub fn json(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: HttpBody::Bytes(body.as_bytes().to_vec()),
        }
    }
}

/// A minimal HTTP/1.1 server for registries that misbehave on purpose (one thread per
/// connection, one request per connection). It records every request and counts the endless
/// bodies it managed to write in full.
pub struct TinyHttp {
    pub port: u16,
    pub requests: Arc<std::sync::Mutex<Vec<HttpRequest>>>,
    pub endless_completed: Arc<AtomicU64>,
}

impl TinyHttp {
    pub fn start(
        handler: impl Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static,
    ) -> TinyHttp {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let endless_completed = Arc::new(AtomicU64::new(0));
        let handler = Arc::new(handler);
        let (reqs, done) = (requests.clone(), endless_completed.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let (handler, reqs, done) = (handler.clone(), reqs.clone(), done.clone());
                std::thread::spawn(move || {
                    let _ = serve_one(conn, &*handler, &reqs, &done);
                });
            }
        });
        TinyHttp {
            port,
            requests,
            endless_completed,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_one(
    mut conn: std::net::TcpStream,
    handler: &(dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync),
    reqs: &std::sync::Mutex<Vec<HttpRequest>>,
    done: &AtomicU64,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let req = HttpRequest {
        method,
        target,
        headers,
        body,
    };
    reqs.lock().unwrap().push(req.clone());
    let resp = handler(&req);
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status);
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    match &resp.body {
        HttpBody::Bytes(b) => head.push_str(&format!("Content-Length: {}\r\n", b.len())),
        HttpBody::Endless {
            len,
            content_length: true,
        } => head.push_str(&format!("Content-Length: {len}\r\n")),
        HttpBody::Endless { .. } => {}
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    match resp.body {
        HttpBody::Bytes(b) => conn.write_all(&b)?,
        HttpBody::Endless { len, .. } => {
            let chunk = [b'{'; 64 << 10];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                conn.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    conn.flush()
}

/// Sends `req` on to the registry on `port` (HTTP/1.0, so the answer ends with the connection)
/// and returns its answer, keeping the headers a client needs.
pub fn forward(port: u16, req: &HttpRequest) -> HttpResponse {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let accept = req.header("accept").unwrap_or("*/*");
    write!(
        s,
        "{} {} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: {accept}\r\n\r\n",
        req.method, req.target
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| {
            ["content-type", "docker-content-digest"]
                .contains(&k.trim().to_ascii_lowercase().as_str())
        })
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status: status.parse().unwrap(),
        headers,
        body: HttpBody::Bytes(raw[split + 4..].to_vec()),
    }
}

/// `application/x-www-form-urlencoded` pairs, decoded.
pub fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let b = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
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
