//! The `ferrio` command line: `serve` (the default), `config`, `version`, `image …`, `run`,
//! `status` (see `status.rs`), `install` and `uninstall` (see `install.rs`).

pub mod install;
pub mod status;

use crate::config::Config;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "ferrio",
    version,
    about = "A Kubernetes CRI v1 container runtime in one binary"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct GlobalOpts {
    /// Config file (its drop-ins: <dir>/<name>.d/*.toml) [default: /etc/ferrio/ferrio.toml]
    #[arg(long, global = true, value_name = "FILE", env = "FERRIO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Persistent state directory (images, records)
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Runtime state directory (sockets, bundles)
    #[arg(long, global = true, value_name = "DIR")]
    pub run_root: Option<PathBuf>,
    /// The CRI unix socket
    #[arg(long, global = true, value_name = "SOCKET")]
    pub listen: Option<PathBuf>,
    /// A containers-registries.conf(5) v2 file
    #[arg(long, global = true, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Log level or tracing filter (error, warn, info, debug, trace)
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon (the default)
    Serve,
    /// Print the full commented default configuration
    Config,
    /// Print version information
    Version,
    /// Manage images
    #[command(subcommand)]
    Image(ImageCommand),
    /// Run a command in a new pod through the running daemon, print its output, remove the pod
    /// (a small CRI client, like `crictl runp` + `create` + `start` + `logs`)
    Run {
        /// The runtime handler (ferrio, runc, crun); empty: the default
        #[arg(long, default_value = "")]
        runtime: String,
        /// The image (pulled first when absent)
        image: String,
        /// The command and its arguments
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Checkpoint a running container with CRIU into an archive (CRI CheckpointContainer, as
    /// `crictl checkpoint --export`); it keeps running. Restore: create a container whose
    /// image is the archive's path, in a pod whose handler is runc.
    Checkpoint {
        /// The container (ID, unique ID prefix or name)
        container: String,
        /// The archive to write (an absolute path)
        location: std::path::PathBuf,
        /// Seconds CRIU may take; 0: the daemon's default
        #[arg(long, default_value_t = 0)]
        timeout: i64,
    },
    /// What the running daemon is doing: conditions, handlers, pod and container counts;
    /// `status config`, `status containers [ID]`
    Status {
        #[command(subcommand)]
        what: Option<status::StatusCommand>,
    },
    /// Install this binary, a systemd unit (ferrio.service), the default config unless one
    /// exists and, with --cni-bridge, a CNI bridge network; then systemctl daemon-reload
    Install(install::InstallArgs),
    /// Stop ferrio.service and remove the unit and the binary; the config, images and state
    /// stay unless --purge
    Uninstall(install::UninstallArgs),
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Pull an image through the running daemon's CRI ImageService
    Pull {
        reference: String,
        /// Registry credentials as USER:PASSWORD
        #[arg(long, value_name = "USER:PASSWORD")]
        creds: Option<String>,
    },
    /// List the images of the running daemon
    #[command(alias = "list")]
    Ls,
    /// Remove an image (all its tags) from the running daemon
    Rm { reference: String },
    /// Load OCI-archive or docker-save tarballs, through the running daemon or, when none runs,
    /// straight into the store
    Import {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

impl GlobalOpts {
    /// The config file and drop-ins, with the flags applied on top.
    pub fn load_config(&self) -> Result<Config> {
        let mut cfg = Config::load(self.config.as_deref())?;
        if let Some(v) = &self.root {
            cfg.root = absolute(v)?;
        }
        if let Some(v) = &self.run_root {
            cfg.run_root = absolute(v)?;
        }
        if let Some(v) = &self.listen {
            cfg.api.listen = absolute(v)?;
        }
        if let Some(v) = &self.registries_conf {
            cfg.image.registries_conf = absolute(v)?;
        }
        if let Some(v) = &self.log_level {
            cfg.log_level = v.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

pub fn main() -> std::process::ExitCode {
    // The re-exec'd helpers: plain single-threaded programs, dispatched before anything else
    // (no clap, no tokio, no logging set-up) so they start fast and stay single-threaded.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).is_some_and(|a| a.starts_with("__")) {
        crate::sys::set_umask(0o022);
    }
    if let Some(code) = helper(&argv) {
        return std::process::ExitCode::from(code.clamp(0, 255) as u8);
    }
    let cli = Cli::parse();
    if !matches!(cli.command, None | Some(Command::Serve)) {
        crate::sys::process::default_sigpipe();
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrio: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a hidden helper mode when argv names one.
fn helper(argv: &[String]) -> Option<i32> {
    let arg = |i: usize| argv.get(i).map(String::as_str).unwrap_or("");
    match arg(1) {
        "__monitor" => Some(crate::monitor::main(Path::new(arg(2)))),
        "__exec" => Some(crate::monitor::exec::main(
            argv.get(2).map(|s| Path::new(s.as_str())),
        )),
        "__pin-ns" => Some(crate::monitor::pinns::main(arg(2))),
        "__delete" => {
            let handler: crate::runtime::Handler = match serde_json::from_str(arg(2)) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("ferrio __delete: bad handler: {e}");
                    return Some(2);
                }
            };
            match handler.runtime().delete(arg(3), true) {
                Ok(()) => Some(0),
                Err(e) => {
                    eprintln!("{e}");
                    Some(1)
                }
            }
        }
        _ => None,
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            crate::sys::set_umask(0o077);
            crate::sys::process::limit_malloc_arenas();
            let cfg = cli.global.load_config()?;
            crate::telemetry::init(&cfg.log_level);
            crate::server::take_notify_socket();
            // Blocking threads idle for 3 s end (tokio keeps them 10 s): a burst of creates
            // leaves dozens, each with its stack resident.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("ferrio")
                .thread_keep_alive(std::time::Duration::from_secs(3))
                .build()?;
            let global = cli.global.clone();
            let source: crate::server::ConfigSource =
                std::sync::Arc::new(move || global.load_config().map_err(|e| format!("{e:#}")));
            rt.block_on(crate::server::serve(cfg, source))?;
            Ok(())
        }
        Command::Config => {
            print!("{}", crate::config::default_toml());
            Ok(())
        }
        Command::Version => {
            println!("ferrio {}", env!("CARGO_PKG_VERSION"));
            println!(
                "CRI API: {} (k8s.io/cri-api v0.37.0-beta.0)",
                crate::cri::runtime::CRI_VERSION
            );
            Ok(())
        }
        Command::Status { what } => {
            let cfg = cli.global.load_config()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            print!("{}", rt.block_on(status::run(&cfg, what))?);
            Ok(())
        }
        Command::Run {
            runtime,
            image,
            command,
        } => {
            let cfg = cli.global.load_config()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let code = rt.block_on(run_client(&cfg, &runtime, &image, command))?;
            if code != 0 {
                bail!("the container exited with code {code}");
            }
            Ok(())
        }
        Command::Checkpoint {
            container,
            location,
            timeout,
        } => {
            let cfg = cli.global.load_config()?;
            let location = std::path::absolute(&location)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(checkpoint_client(&cfg, &container, &location, timeout))
        }
        Command::Image(cmd) => {
            let cfg = cli.global.load_config()?;
            if let ImageCommand::Import { files } = &cmd {
                crate::telemetry::init("warn,ferrio=info");
                return import(&cfg, files);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(image_client(&cfg, cmd))
        }
        Command::Install(args) => install::install(args),
        Command::Uninstall(args) => install::uninstall(&cli.global, args),
    }
}

/// Connects a gRPC channel to a unix socket.
pub async fn connect(socket: &Path) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
}

/// `ferrio image pull|ls|rm`: a small CRI client, like `crictl pull|images|rmi`.
/// `ferrio run`: one pod, one container, its log printed; returns the exit code.
/// `ferrio checkpoint`: CheckpointContainer through the running daemon.
async fn checkpoint_client(
    cfg: &Config,
    container: &str,
    location: &Path,
    timeout: i64,
) -> Result<()> {
    use crate::cri::api::{self, runtime_service_client::RuntimeServiceClient};
    let socket = cfg.socket_path();
    let ch = connect(&socket)
        .await
        .with_context(|| format!("connecting to the daemon on {}", socket.display()))?;
    RuntimeServiceClient::new(ch)
        .checkpoint_container(api::CheckpointContainerRequest {
            container_id: container.to_string(),
            location: location.display().to_string(),
            timeout,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?;
    println!("{}", location.display());
    Ok(())
}

async fn run_client(cfg: &Config, handler: &str, image: &str, command: Vec<String>) -> Result<i32> {
    use crate::cri::api::runtime_service_client::RuntimeServiceClient;
    use crate::cri::api::{self, image_service_client::ImageServiceClient};
    let socket = cfg.socket_path();
    let ch = connect(&socket)
        .await
        .with_context(|| format!("connecting to the daemon on {}", socket.display()))?;
    let status = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
    let mut images = ImageServiceClient::new(ch.clone());
    let spec = api::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    };
    let have = images
        .image_status(api::ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        })
        .await
        .map_err(status)?
        .into_inner()
        .image
        .is_some();
    if !have {
        images
            .pull_image(api::PullImageRequest {
                image: Some(spec.clone()),
                ..Default::default()
            })
            .await
            .map_err(status)?;
    }
    let mut rt = RuntimeServiceClient::new(ch);
    let logs = tempfile::tempdir()?;
    let n = std::process::id();
    let pod_cfg = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: format!("run-{n}"),
            uid: format!("run-{n}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("run-{n}"),
        log_directory: logs.path().display().to_string(),
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
    };
    let t0 = std::time::Instant::now();
    let pod = rt
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: handler.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .pod_sandbox_id;
    let result = async {
        let ctr = rt
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(api::ContainerConfig {
                    metadata: Some(api::ContainerMetadata {
                        name: "main".into(),
                        attempt: 0,
                    }),
                    image: Some(spec.clone()),
                    command: command.clone(),
                    log_path: "main.log".into(),
                    ..Default::default()
                }),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
            .map_err(status)?
            .into_inner()
            .container_id;
        rt.start_container(api::StartContainerRequest {
            container_id: ctr.clone(),
        })
        .await
        .map_err(status)?;
        let started_ms = t0.elapsed().as_secs_f64() * 1e3;
        let ip = rt
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .map_err(status)?
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| "no CNI network".into());
        eprintln!(
            "pod {} ({ip}) container {} started in {started_ms:.1} ms",
            &pod[..12],
            &ctr[..12],
        );
        let st = loop {
            let st = rt
                .container_status(api::ContainerStatusRequest {
                    container_id: ctr.clone(),
                    verbose: false,
                })
                .await
                .map_err(status)?
                .into_inner()
                .status
                .context("no status")?;
            if st.state == api::ContainerState::ContainerExited as i32 {
                break st;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let log = std::fs::read_to_string(logs.path().join("main.log")).unwrap_or_default();
        for line in log.lines() {
            // <time> <stream> <P|F> <content>
            let mut it = line.splitn(4, ' ');
            let (_, stream, tag, content) =
                (it.next(), it.next(), it.next(), it.next().unwrap_or(""));
            let out = if tag == Some("P") {
                content.to_string()
            } else {
                format!("{content}\n")
            };
            if stream == Some("stderr") {
                eprint!("{out}");
            } else {
                print!("{out}");
            }
        }
        eprintln!("exit code {} ({})", st.exit_code, st.reason);
        Ok::<i32, anyhow::Error>(st.exit_code)
    }
    .await;
    let _ = rt
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await;
    rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .map_err(status)?;
    result
}

async fn image_client(cfg: &Config, cmd: ImageCommand) -> Result<()> {
    use crate::cri::api::{self, image_service_client::ImageServiceClient};
    let socket = cfg.socket_path();
    let ch = connect(&socket)
        .await
        .with_context(|| format!("connecting to the daemon on {}", socket.display()))?;
    let mut c = ImageServiceClient::new(ch);
    let spec = |image: String| {
        Some(api::ImageSpec {
            image,
            ..Default::default()
        })
    };
    let status = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
    match cmd {
        ImageCommand::Pull { reference, creds } => {
            let auth = match creds {
                None => None,
                Some(c) => {
                    let (u, p) = c.split_once(':').context("--creds must be USER:PASSWORD")?;
                    Some(api::AuthConfig {
                        username: u.into(),
                        password: p.into(),
                        ..Default::default()
                    })
                }
            };
            let t0 = std::time::Instant::now();
            let r = c
                .pull_image(api::PullImageRequest {
                    image: spec(reference.clone()),
                    auth,
                    sandbox_config: None,
                })
                .await
                .map_err(status)?;
            println!(
                "{}\t{}\t{:.1} ms",
                r.into_inner().image_ref,
                reference,
                t0.elapsed().as_secs_f64() * 1e3
            );
        }
        ImageCommand::Ls => {
            let imgs = c
                .list_images(api::ListImagesRequest { filter: None })
                .await
                .map_err(status)?
                .into_inner()
                .images;
            println!(
                "{:<60} {:<15} {:<13} {:>10}",
                "IMAGE", "TAG", "IMAGE ID", "SIZE"
            );
            for i in imgs {
                let short =
                    i.id.trim_start_matches("sha256:")
                        .chars()
                        .take(13)
                        .collect::<String>();
                let size = format!("{:.1}MB", i.size as f64 / 1e6);
                if i.repo_tags.is_empty() {
                    println!("{:<60} {:<15} {short:<13} {size:>10}", "<none>", "<none>");
                }
                for t in &i.repo_tags {
                    let (name, tag) = t.rsplit_once(':').unwrap_or((t, ""));
                    println!("{name:<60} {tag:<15} {short:<13} {size:>10}");
                }
            }
        }
        ImageCommand::Rm { reference } => {
            c.remove_image(api::RemoveImageRequest {
                image: spec(reference.clone()),
            })
            .await
            .map_err(status)?;
            println!("removed {reference}");
        }
        ImageCommand::Import { .. } => {
            bail!("image import runs outside the client runtime; this is a bug")
        }
    }
    Ok(())
}

fn import(cfg: &Config, files: &[PathBuf]) -> Result<()> {
    let mut paths = Vec::new();
    for f in files {
        paths.push(std::fs::canonicalize(f).with_context(|| format!("{}", f.display()))?);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = cfg.socket_path();
    let lines: Vec<(String, String, Vec<String>)> = match rt.block_on(connect(&socket)) {
        Ok(ch) => {
            let mut client = crate::cri::admin_api::admin_client::AdminClient::new(ch);
            let req = crate::cri::admin_api::ImportImagesRequest {
                paths: paths
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect(),
            };
            let resp = rt.block_on(client.import_images(req)).map_err(|s| {
                anyhow::anyhow!("the daemon on {}: {}", socket.display(), s.message())
            })?;
            resp.into_inner()
                .images
                .into_iter()
                .map(|i| (i.path, i.id, i.repo_tags))
                .collect()
        }
        Err(_) => {
            // No daemon: write the store directly, holding the root lock it would hold, and
            // with its private modes.
            crate::sys::set_umask(0o077);
            crate::state::create_private_dir(&cfg.root)?;
            let Some(_lock) = crate::sys::FileLock::try_lock(&cfg.root.join("ferrio.lock"))? else {
                bail!(
                    "a ferrio daemon holds {} but does not answer on {}",
                    cfg.root.display(),
                    socket.display()
                );
            };
            let store = crate::image::Store::open(&cfg.image_dir())?;
            crate::image::import_paths(&store, &paths)?
                .into_iter()
                .flat_map(|i| {
                    let p = i.path.to_string_lossy().into_owned();
                    i.images
                        .into_iter()
                        .map(move |r| (p.clone(), r.id, r.repo_tags))
                })
                .collect()
        }
    };
    for (path, id, tags) in lines {
        println!(
            "{id}\t{}\t{path}",
            if tags.is_empty() {
                "<untagged>".to_string()
            } else {
                tags.join(",")
            }
        );
    }
    Ok(())
}
