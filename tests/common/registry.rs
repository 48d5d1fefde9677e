//! Local registries (Debian's docker-registry on 127.0.0.1, started by hack/registry.sh), the
//! offline test images (hack/build-test-images.sh), and a TCP proxy that can slow a registry down.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

    /// Uploads `data` as a blob of `repo` (plain HTTP, curl); returns its digest.
    pub fn put_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = ferrio::image::unpack::sha256_digest(data);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("blob");
        std::fs::write(&f, data).unwrap();
        // An upload session, then the blob in one PUT (distribution takes no monolithic POST).
        let head = run(Command::new("curl").args([
            "-sf",
            "-i",
            "-X",
            "POST",
            &format!("http://{}/v2/{repo}/blobs/uploads/", self.addr()),
        ]));
        let location = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
                    .map(|(_, v)| v.trim().to_string())
            })
            .expect("an upload location");
        let sep = if location.contains('?') { '&' } else { '?' };
        run(Command::new("curl").args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{}", f.display()),
            &format!("{location}{sep}digest={digest}"),
        ]));
        digest
    }

    /// Stores an OCI image manifest as `repo:tag` (plain HTTP, curl).
    pub fn put_manifest(&self, repo: &str, tag: &str, manifest: &serde_json::Value) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.json");
        std::fs::write(&f, serde_json::to_vec(manifest).unwrap()).unwrap();
        run(Command::new("curl").args([
            "-sf",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &format!("@{}", f.display()),
            &format!("http://{}/v2/{repo}/manifests/{tag}", self.addr()),
        ]));
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
