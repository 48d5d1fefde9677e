//! A real ferrio daemon per test on its own temp root, run root and socket; its drop removes
//! what the test left and runs the leak check.

use super::*;
use ferrio::cri::api::image_service_client::ImageServiceClient;
use ferrio::cri::api::runtime_service_client::RuntimeServiceClient;
use ferrio::cri::api::{self};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

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
    /// The cgroup parent of this daemon's pods (its own, so that the leak check finds them).
    pub cgroup_parent: String,
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
        // The daemon's pods get a cgroup parent of their own (a drop-in, so that a test's
        // extra_config may have a [runtime] table too): the leak check looks there.
        let cgroup_parent = cgroup_parent_of(dir.path());
        std::fs::create_dir_all(dir.path().join("ferrio.d")).unwrap();
        // NRI on a socket of the daemon's own (tests run in parallel), no pre-installed
        // plugins unless a test puts some in <dir>/nri-plugins. Not for an older binary (an
        // upgrade test's), which has no [nri] table.
        let nri = if opts.binary.is_none() {
            format!(
                "[nri]\nsocket_path = {:?}\nplugin_path = {:?}\nplugin_config_path = {:?}\n",
                dir.path().join("nri/nri.sock"),
                dir.path().join("nri-plugins"),
                dir.path().join("nri-conf"),
            )
        } else {
            String::new()
        };
        std::fs::write(
            dir.path().join("ferrio.d/00-harness.toml"),
            format!("[runtime]\ndefault_cgroup_parent = {cgroup_parent:?}\n{nri}"),
        )
        .unwrap();
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
            cgroup_parent,
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

/// The cgroup parent of the pods of daemons on `dir` (restarts keep it).
fn cgroup_parent_of(dir: &Path) -> String {
    let name = dir.file_name().unwrap().to_string_lossy();
    format!(
        "/ferrio-test{}",
        name.trim_start_matches('.').replace("tmp", "-")
    )
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
        // The last daemon on this directory (restart tests share it) checks that nothing of
        // them is left on the host, and clears what is so that one failure does not spread.
        if Arc::strong_count(&self.dir) == 1 {
            let leaks = leaks::clear_leaks(self.dir.path(), &self.cgroup_parent);
            if !leaks.is_empty() && !std::thread::panicking() {
                panic!(
                    "left on the host after the test (now cleared): {leaks:#?}\n{}",
                    self.log_text()
                );
            }
        }
    }
}
