//! Runtime benchmark against any CRI v1 socket (ferrio, containerd, CRI-O, ...).
//!
//! Pulls the image, then N rounds of RunPodSandbox + CreateContainer + StartContainer with
//! host-network pods (no CNI involved) or, with `--cni`, pods in their own network namespace
//! (the runtime's CNI network; no port mappings); keeps all N pods running while it measures the daemon's
//! RSS; then StopContainer (timeout 0), RemoveContainer, StopPodSandbox and RemovePodSandbox for
//! each pod. Every RPC is timed; it prints min / median / p90 / max per RPC as a markdown table,
//! and the RSS of the daemon (`--pid`) and of its per-container helpers (shims, monitors), idle
//! before the first pod, with N pods running and after the teardown. It asserts nothing.
//!
//! ```text
//! cargo bench --bench cri -- --socket /run/containerd/containerd.sock \
//!     --image 127.0.0.1:5000/ferrio-test/busybox:1.35 --rounds 20 --pid 1234 \
//!     --helper containerd-shim
//! ```
//!
//! Helpers are the processes (other than the daemon) whose command line contains every
//! `--helper` substring and the ID of a pod or container this run created (containerd's shims
//! name their pod with `-id`, ferrio's monitors name their container), plus, with
//! `--descendants`, every descendant of the daemon. Sums of RSS count shared pages once per
//! process; the PSS column splits shared pages between the processes that map them.
//!
//! With `--cni`, PodSandboxStatus (untimed) is read after each RunPodSandbox and a warning is
//! printed when the pod has no IP or shares one with an earlier pod of the run, so a pod
//! without a network cannot go unnoticed; the report says how many pods got an IP.
//!
//! If an RPC fails, the gRPC status is printed, every pod and container created so far is
//! stopped and removed, and the exit code is 1 (3 when the runtime answered `Unimplemented`).
//! Ctrl-C also cleans up (after the RPC in flight).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use ferrio::cri::api::{
    self, image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "CRI runtime benchmark: N pods up, then down, timing every RPC")]
struct Args {
    /// The CRI socket (a path, or unix:///path).
    #[arg(long)]
    socket: Option<String>,
    /// The image to pull and run (`sleep 3600` must work in it).
    #[arg(long)]
    image: Option<String>,
    /// Pods (one container each) to start and keep running at once.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// The daemon's PID, for RSS.
    #[arg(long)]
    pid: Option<u32>,
    /// Count as per-container helpers the processes whose command line contains this substring
    /// (all of them when repeated) and the ID of a pod or container of this run.
    #[arg(long = "helper")]
    helpers: Vec<String>,
    /// Also count every descendant of the daemon as a helper.
    #[arg(long)]
    descendants: bool,
    /// Pod log directories go under DIR (default: a temp dir, removed at the end).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Leave the pods running (no teardown) and print their IDs.
    #[arg(long)]
    keep_running: bool,
    /// Pods get their own network namespace, set up by the runtime's CNI network (default: the
    /// host's network). Warns about pods whose PodSandboxStatus shows no IP.
    #[arg(long)]
    cni: bool,
    /// The runtime handler for RunPodSandbox (empty: the runtime's default).
    #[arg(long, default_value = "")]
    runtime_handler: String,
    /// Deadline of each RPC, in seconds.
    #[arg(long, default_value_t = 120)]
    rpc_timeout: u64,
    /// Seconds to wait before each RSS reading.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// The daemon's log, written with `ferrio::phases=debug` (ferrio's phase breakdown): after
    /// the run, the median time of each phase of each operation is printed from it.
    #[arg(long)]
    phases_log: Option<PathBuf>,
    /// Once every pod runs, restart the daemon (`--pid`): SIGTERM, as `systemctl restart` sends,
    /// then the same command line, environment and working directory again, its output
    /// appended to `--restart-log`. Times how long until the socket answers and until every pod
    /// and container of the run is listed ready and running again, and reads the new daemon's
    /// RSS. The new daemon's pid is written to FILE, for the caller to stop it.
    #[arg(long, value_name = "FILE")]
    restart_pid_file: Option<PathBuf>,
    /// Where the restarted daemon's output goes (appended; default: discarded).
    #[arg(long)]
    restart_log: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The RPCs timed, in the order they are printed.
const RPCS: [&str; 8] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "Create+Start",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];
const RUN: usize = 0;
const CREATE: usize = 1;
const START: usize = 2;
const CREATE_START: usize = 3;
const STOP_CTR: usize = 4;
const RM_CTR: usize = 5;
const STOP_POD: usize = 6;
const RM_POD: usize = 7;

/// Pods started at once in the burst of [`Bench::node_scale`].
const CONCURRENT_PODS: usize = 20;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// A failed RPC, with the status the runtime answered.
#[derive(Debug)]
struct RpcFailed {
    rpc: &'static str,
    status: tonic::Status,
}

impl std::fmt::Display for RpcFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed: {:?}: {}",
            self.rpc,
            self.status.code(),
            self.status.message()
        )
    }
}

impl std::error::Error for RpcFailed {}

struct Pod {
    id: String,
    container: Option<String>,
}

struct Bench {
    args: Args,
    rt: RuntimeServiceClient<Channel>,
    timeout: Duration,
    run_id: String,
    log_root: PathBuf,
    /// What exists on the runtime right now, for the teardown and for cleanup after a failure.
    pods: Vec<Pod>,
    samples: Vec<Vec<Duration>>,
    /// With --cni: the IP each pod got (empty: none), in order of creation.
    pod_ips: Vec<String>,
    /// ListContainerStats (all containers) while every pod runs.
    list_stats: Vec<Duration>,
    /// kubelet's periodic calls with every pod running: (what, samples).
    node: Vec<(&'static str, Vec<Duration>)>,
    /// The wall time of CONCURRENT_PODS pods started at once, if that ran.
    burst: Option<Duration>,
    /// Where the burst's lines are in the daemon's log (byte offsets): left out of the phase
    /// medians, which are those of the run's one-at-a-time RPCs.
    burst_log: Option<(u64, u64)>,
    /// The socket, to connect again after a restart.
    socket: PathBuf,
    /// With `--restart-pid-file`: what the restart took.
    restart: Option<Restarted>,
}

/// A restart of the daemon with every pod of the run running.
struct Restarted {
    /// From the exec of the new daemon to its first answer (Version).
    served: Duration,
    /// From the exec to every pod of the run listed ready and every container running.
    listed: Duration,
    /// The old daemon's exit after SIGTERM.
    stopped: Duration,
    rss: Rss,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (Some(socket), Some(image)) = (args.socket.clone(), args.image.clone()) else {
        eprintln!("cri bench: skipped (needs --socket PATH --image REF; see benches/cri.rs)");
        return ExitCode::SUCCESS;
    };
    match setup(args, &socket, &image).await {
        Ok(b) => run(b).await,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

fn exit_code(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<RpcFailed>() {
        Some(f) if f.status.code() == tonic::Code::Unimplemented => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    }
}

async fn setup(args: Args, socket: &str, image: &str) -> Result<(Bench, String)> {
    let socket = Path::new(socket.strip_prefix("unix://").unwrap_or(socket));
    let ch = ferrio::cli::connect(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let timeout = Duration::from_secs(args.rpc_timeout);
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut images = ImageServiceClient::new(ch);

    let v = rt
        .version(request(api::VersionRequest::default(), timeout))
        .await
        .map_err(|status| RpcFailed {
            rpc: "Version",
            status,
        })?
        .into_inner();
    let t = Instant::now();
    let pulled = images
        .pull_image(request(
            api::PullImageRequest {
                image: Some(api::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            timeout,
        ))
        .await
        .map_err(|status| RpcFailed {
            rpc: "PullImage",
            status,
        })?
        .into_inner();
    println!(
        "runtime: {} {} (CRI {}) on {}",
        v.runtime_name,
        v.runtime_version,
        v.runtime_api_version,
        socket.display()
    );
    println!(
        "image: {image} -> {} (PullImage {:.1} ms)",
        pulled.image_ref,
        ms(t.elapsed())
    );
    let image_ref = if pulled.image_ref.is_empty() {
        image.to_string()
    } else {
        pulled.image_ref
    };

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let run_id = format!("{}-{}", std::process::id(), now.as_millis());
    let log_root = match &args.log_dir {
        Some(d) => d.join(format!("cri-bench-{run_id}")),
        None => tempfile::Builder::new()
            .prefix("cri-bench.")
            .tempdir()
            .context("creating the log directory")?
            .keep(),
    };
    std::fs::create_dir_all(&log_root)
        .with_context(|| format!("creating {}", log_root.display()))?;
    let b = Bench {
        samples: vec![Vec::new(); RPCS.len()],
        args,
        rt,
        timeout,
        run_id,
        log_root,
        pods: Vec::new(),
        pod_ips: Vec::new(),
        list_stats: Vec::new(),
        node: Vec::new(),
        burst: None,
        burst_log: None,
        socket: socket.to_path_buf(),
        restart: None,
    };
    Ok((b, image_ref))
}

async fn run((mut b, image_ref): (Bench, String)) -> ExitCode {
    // Ctrl-C: finish the RPC in flight (dropping it could leave a half-made container), start no
    // more pods, tear down what exists. A second Ctrl-C exits at once.
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("interrupted: finishing the RPC in flight, then cleaning up (Ctrl-C again to quit now)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let idle = b.rss().await;
    let outcome = b.up_and_down(&image_ref).await;
    let ok = outcome.is_ok();
    let code = match outcome {
        Ok((loaded, after)) => {
            b.report(idle, loaded, after);
            if let Some(log) = &b.args.phases_log {
                match std::fs::read_to_string(log) {
                    Ok(mut text) => {
                        if let Some((from, to)) = b.burst_log {
                            let cut = |o: u64| {
                                let mut i =
                                    usize::try_from(o).unwrap_or(text.len()).min(text.len());
                                while !text.is_char_boundary(i) {
                                    i -= 1;
                                }
                                i
                            };
                            let (from, to) = (cut(from), cut(to));
                            text.replace_range(from..to, "");
                        }
                        print_phases(&text)
                    }
                    Err(e) => eprintln!("phases: reading {}: {e}", log.display()),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            if !b.pods.is_empty() {
                eprintln!("cleaning up {} pod(s)", b.pods.len());
                b.cleanup().await;
            }
            exit_code(&e)
        }
    };
    if b.args.keep_running && ok {
        println!("\nleft running (logs under {}):", b.log_root.display());
        for p in &b.pods {
            println!(
                "pod {} container {}",
                p.id,
                p.container.as_deref().unwrap_or("-")
            );
        }
    } else if b.args.log_dir.is_none() {
        let _ = std::fs::remove_dir_all(&b.log_root);
    }
    code
}

/// Named durations, in µs: one operation's phases.
type PhaseList = Vec<(String, u64)>;
/// Per operation: its totals and each phase's samples, in first-seen order.
type PhaseSamples = Vec<(String, Vec<u64>, Vec<(String, Vec<u64>)>)>;

/// One `ferrio::phases` event of the daemon's log: the operation, its total and its phases
/// (µs), from `... phases op="X" outcome=ok total_us=N phases=a=1 b=2`.
fn parse_phases(line: &str) -> Option<(String, u64, PhaseList)> {
    let op = line.split("op=\"").nth(1)?.split('"').next()?.to_string();
    if !line.contains("outcome=ok") {
        return None;
    }
    let total = line
        .split("total_us=")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let list = line.rsplit(" phases=").next()?;
    let phases = list
        .split(' ')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect();
    Some((op, total, phases))
}

/// The median of each phase of each operation in the log (successful ones), in milliseconds.
fn print_phases(log: &str) {
    let mut ops: PhaseSamples = Vec::new();
    for (op, total, phases) in log.lines().filter_map(parse_phases) {
        let i = match ops.iter().position(|(o, _, _)| *o == op) {
            Some(i) => i,
            None => {
                ops.push((op, Vec::new(), Vec::new()));
                ops.len() - 1
            }
        };
        let entry = &mut ops[i];
        entry.1.push(total);
        for (name, us) in phases {
            match entry.2.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(us),
                None => entry.2.push((name, vec![us])),
            }
        }
    }
    if ops.is_empty() {
        println!("\nphases: none in the log (is `ferrio::phases=debug` on?)");
        return;
    }
    let med = |v: &mut Vec<u64>| -> f64 {
        v.sort_unstable();
        let n = v.len();
        let m = if n % 2 == 1 {
            v[n / 2] as f64
        } else {
            (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0
        };
        m / 1000.0
    };
    println!("\n### where the time goes (the daemon's phases; median ms, phases back to back)\n");
    for (op, mut totals, mut phases) in ops {
        let n = totals.len();
        let total = med(&mut totals);
        let parts: Vec<String> = phases
            .iter_mut()
            .map(|(name, v)| format!("{name} {:.2}", med(v)))
            .collect();
        println!("- {op} (n={n}): {total:.2} ms = {}", parts.join(" + "));
    }
}

fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

/// Awaits one RPC; on success records its duration under `slot`.
async fn timed<T>(
    samples: &mut [Vec<Duration>],
    slot: usize,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<(T, Duration), RpcFailed> {
    let t = Instant::now();
    let r = fut.await;
    let d = t.elapsed();
    match r {
        Ok(r) => {
            samples[slot].push(d);
            Ok((r.into_inner(), d))
        }
        Err(status) => Err(RpcFailed {
            rpc: RPCS[slot],
            status,
        }),
    }
}

impl Bench {
    fn pod_config(&self, i: usize) -> api::PodSandboxConfig {
        let name = format!("bench-{i}");
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.clone(),
                uid: format!("cri-bench-{}-{i}", self.run_id),
                namespace: format!("cri-bench-{}", self.run_id),
                attempt: 0,
            }),
            log_directory: self.log_root.join(&name).to_string_lossy().into_owned(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(api::NamespaceOption {
                        network: if self.args.cni {
                            api::NamespaceMode::Pod
                        } else {
                            api::NamespaceMode::Node
                        } as i32,
                        pid: api::NamespaceMode::Container as i32,
                        ipc: api::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container_config(&self, image_ref: &str) -> api::ContainerConfig {
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: "sleep".into(),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: image_ref.to_string(),
                user_specified_image: self.args.image.clone().unwrap_or_default(),
                ..Default::default()
            }),
            command: vec!["sleep".into(), "3600".into()],
            log_path: "sleep_0.log".into(),
            linux: Some(api::LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    /// Starts N pods, reads RSS, tears them down (unless --keep-running), reads RSS again.
    async fn up_and_down(&mut self, image_ref: &str) -> Result<(Rss, Option<Rss>)> {
        let timeout = self.timeout;
        for i in 0..self.args.rounds {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Err(anyhow!("interrupted"));
            }
            let config = self.pod_config(i);
            std::fs::create_dir_all(&config.log_directory)
                .with_context(|| format!("creating {}", config.log_directory))?;
            let (resp, _) = timed(
                &mut self.samples,
                RUN,
                self.rt.run_pod_sandbox(request(
                    api::RunPodSandboxRequest {
                        config: Some(config.clone()),
                        runtime_handler: self.args.runtime_handler.clone(),
                    },
                    timeout,
                )),
            )
            .await?;
            let pod_id = resp.pod_sandbox_id;
            let ctr_config = self.container_config(image_ref);
            self.pods.push(Pod {
                id: pod_id.clone(),
                container: None,
            });
            if self.args.cni {
                self.check_pod_ip(i, &pod_id).await;
            }
            let (resp, create) = timed(
                &mut self.samples,
                CREATE,
                self.rt.create_container(request(
                    api::CreateContainerRequest {
                        pod_sandbox_id: pod_id,
                        config: Some(ctr_config),
                        sandbox_config: Some(config),
                    },
                    timeout,
                )),
            )
            .await?;
            let ctr_id = resp.container_id;
            if let Some(p) = self.pods.last_mut() {
                p.container = Some(ctr_id.clone());
            }
            let (_, start) = timed(
                &mut self.samples,
                START,
                self.rt.start_container(request(
                    api::StartContainerRequest {
                        container_id: ctr_id,
                    },
                    timeout,
                )),
            )
            .await?;
            self.samples[CREATE_START].push(create + start);
        }
        let loaded = self.rss().await;
        // The cost of kubelet's periodic stats call with every container running; runtimes
        // without the RPC are skipped.
        for _ in 0..21 {
            let t = std::time::Instant::now();
            let r = self
                .rt
                .list_container_stats(request(
                    api::ListContainerStatsRequest { filter: None },
                    timeout,
                ))
                .await;
            if r.is_err() {
                break;
            }
            self.list_stats.push(t.elapsed());
        }
        self.node_scale(image_ref).await?;
        if self.args.restart_pid_file.is_some() {
            self.restart_daemon().await?;
        }
        if self.args.keep_running {
            return Ok((loaded, None));
        }
        while let Some(pod) = self.pods.first() {
            let pod_id = pod.id.clone();
            if let Some(ctr) = pod.container.clone() {
                timed(
                    &mut self.samples,
                    STOP_CTR,
                    self.rt.stop_container(request(
                        api::StopContainerRequest {
                            container_id: ctr.clone(),
                            timeout: 0,
                        },
                        timeout,
                    )),
                )
                .await?;
                timed(
                    &mut self.samples,
                    RM_CTR,
                    self.rt.remove_container(request(
                        api::RemoveContainerRequest { container_id: ctr },
                        timeout,
                    )),
                )
                .await?;
                self.pods[0].container = None;
            }
            timed(
                &mut self.samples,
                STOP_POD,
                self.rt.stop_pod_sandbox(request(
                    api::StopPodSandboxRequest {
                        pod_sandbox_id: pod_id.clone(),
                    },
                    timeout,
                )),
            )
            .await?;
            timed(
                &mut self.samples,
                RM_POD,
                self.rt.remove_pod_sandbox(request(
                    api::RemovePodSandboxRequest {
                        pod_sandbox_id: pod_id,
                    },
                    timeout,
                )),
            )
            .await?;
            self.pods.remove(0);
        }
        let after = self.rss().await;
        Ok((loaded, Some(after)))
    }

    /// Untimed PodSandboxStatus: records the pod's IP and warns when it has none (or one an
    /// earlier pod of this run has too).
    async fn check_pod_ip(&mut self, i: usize, pod_id: &str) {
        let status = self
            .rt
            .pod_sandbox_status(request(
                api::PodSandboxStatusRequest {
                    pod_sandbox_id: pod_id.to_string(),
                    verbose: false,
                },
                self.timeout,
            ))
            .await;
        let ip = match status {
            Ok(r) => r
                .into_inner()
                .status
                .and_then(|s| s.network)
                .map(|n| n.ip)
                .unwrap_or_default(),
            Err(s) => {
                eprintln!(
                    "warning: pod bench-{i} ({pod_id}): PodSandboxStatus failed: {:?}: {}",
                    s.code(),
                    s.message()
                );
                String::new()
            }
        };
        if ip.is_empty() {
            eprintln!("warning: pod bench-{i} ({pod_id}) has no IP: its network is missing");
        } else if let Some(j) = self.pod_ips.iter().position(|p| *p == ip) {
            eprintln!("warning: pod bench-{i} ({pod_id}) has IP {ip}, as pod bench-{j} has");
        }
        self.pod_ips.push(ip);
    }

    /// Best effort, untimed: stop and remove whatever this run still has on the runtime.
    /// What kubelet asks of a full node, with every pod of the run up: its relist (every
    /// second), the pod stats (every 10 s) and container status; then CONCURRENT_PODS more pods
    /// started at once (each RunPodSandbox, CreateContainer, StartContainer), timed wall to
    /// wall and removed again untimed.
    async fn node_scale(&mut self, image_ref: &str) -> Result<()> {
        let timeout = self.timeout;
        let mut relist = Vec::new();
        for _ in 0..100 {
            let t = Instant::now();
            let pods = self
                .rt
                .list_pod_sandbox(request(
                    api::ListPodSandboxRequest { filter: None },
                    timeout,
                ))
                .await;
            let ctrs = self
                .rt
                .list_containers(request(
                    api::ListContainersRequest { filter: None },
                    timeout,
                ))
                .await;
            if pods.is_err() || ctrs.is_err() {
                break;
            }
            relist.push(t.elapsed());
        }
        self.node.push(("ListPodSandbox + ListContainers", relist));
        let mut pod_stats = Vec::new();
        for _ in 0..21 {
            let t = Instant::now();
            let r = self
                .rt
                .list_pod_sandbox_stats(request(
                    api::ListPodSandboxStatsRequest { filter: None },
                    timeout,
                ))
                .await;
            if r.is_err() {
                break;
            }
            pod_stats.push(t.elapsed());
        }
        self.node.push(("ListPodSandboxStats", pod_stats));
        let ids: Vec<String> = self
            .pods
            .iter()
            .filter_map(|p| p.container.clone())
            .collect();
        let mut status = Vec::new();
        for i in 0..100 {
            let Some(id) = ids.get(i % ids.len().max(1)) else {
                break;
            };
            let t = Instant::now();
            let r = self
                .rt
                .container_status(request(
                    api::ContainerStatusRequest {
                        container_id: id.clone(),
                        verbose: false,
                    },
                    timeout,
                ))
                .await;
            if r.is_err() {
                break;
            }
            status.push(t.elapsed());
        }
        self.node.push(("ContainerStatus", status));

        let first = self.args.rounds;
        let mut starts = Vec::new();
        for k in 0..CONCURRENT_PODS {
            let config = self.pod_config(first + k);
            std::fs::create_dir_all(&config.log_directory)
                .with_context(|| format!("creating {}", config.log_directory))?;
            let (mut rt, ctr, handler) = (
                self.rt.clone(),
                self.container_config(image_ref),
                self.args.runtime_handler.clone(),
            );
            starts.push(async move {
                let mut made = (None, None);
                let r: Result<(), tonic::Status> = async {
                    let pod = rt
                        .run_pod_sandbox(request(
                            api::RunPodSandboxRequest {
                                config: Some(config.clone()),
                                runtime_handler: handler,
                            },
                            timeout,
                        ))
                        .await?
                        .into_inner()
                        .pod_sandbox_id;
                    made.0 = Some(pod.clone());
                    let c = rt
                        .create_container(request(
                            api::CreateContainerRequest {
                                pod_sandbox_id: pod,
                                config: Some(ctr),
                                sandbox_config: Some(config),
                            },
                            timeout,
                        ))
                        .await?
                        .into_inner()
                        .container_id;
                    made.1 = Some(c.clone());
                    rt.start_container(request(
                        api::StartContainerRequest { container_id: c },
                        timeout,
                    ))
                    .await?;
                    Ok(())
                }
                .await;
                (made, r)
            });
        }
        let log_len = |p: &Option<PathBuf>| {
            p.as_ref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map_or(0, |m| m.len())
        };
        let log_from = log_len(&self.args.phases_log);
        let t = Instant::now();
        let results = futures::future::join_all(starts).await;
        let wall = t.elapsed();
        let mut failed = None;
        let mut burst_pods = Vec::new();
        for ((pod, container), r) in results {
            if let Some(id) = pod {
                burst_pods.push(Pod { id, container });
            }
            if let Err(status) = r {
                failed.get_or_insert(status);
            }
        }
        // Removed untimed: the run's own teardown is what Stop/Remove are timed on.
        let run_pods = std::mem::replace(&mut self.pods, burst_pods);
        self.cleanup().await;
        self.pods = run_pods;
        self.burst_log = Some((log_from, log_len(&self.args.phases_log)));
        if let Some(status) = failed {
            return Err(RpcFailed {
                rpc: "a concurrent pod start",
                status,
            }
            .into());
        }
        self.burst = Some(wall);
        Ok(())
    }

    /// `--restart-pid-file`: restarts the daemon with every pod of the run running (see the
    /// flag) and times its return.
    async fn restart_daemon(&mut self) -> Result<()> {
        let (Some(pid), Some(pid_file)) = (self.args.pid, self.args.restart_pid_file.clone())
        else {
            return Err(anyhow!("--restart-pid-file needs --pid"));
        };
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let split = |b: Vec<u8>| -> Vec<std::ffi::OsString> {
            use std::os::unix::ffi::OsStringExt;
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| std::ffi::OsString::from_vec(a.to_vec()))
                .collect()
        };
        let argv = split(std::fs::read(proc_dir.join("cmdline")).context("the daemon's cmdline")?);
        let env = split(std::fs::read(proc_dir.join("environ")).context("the daemon's environ")?);
        let cwd = std::fs::read_link(proc_dir.join("cwd")).context("the daemon's cwd")?;
        let Some((prog, args)) = argv.split_first() else {
            return Err(anyhow!("the daemon (pid {pid}) has an empty command line"));
        };
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGTERM,
        )
        .context("SIGTERM to the daemon")?;
        // Not our child: gone, or a zombie its parent (the script) has not reaped yet.
        let gone = || {
            std::fs::read_to_string(proc_dir.join("stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(true)
        };
        while !gone() {
            if t.elapsed() > Duration::from_secs(60) {
                return Err(anyhow!(
                    "the daemon (pid {pid}) did not exit within 60 s of SIGTERM"
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let stopped = t.elapsed();
        let out = match &self.args.restart_log {
            Some(p) => std::process::Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(p)
                    .with_context(|| format!("opening {}", p.display()))?,
            ),
            None => std::process::Stdio::null(),
        };
        let err = match &self.args.restart_log {
            Some(p) => std::process::Stdio::from(std::fs::OpenOptions::new().append(true).open(p)?),
            None => std::process::Stdio::null(),
        };
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args)
            .env_clear()
            .current_dir(&cwd)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        for kv in &env {
            let kv = kv.to_string_lossy();
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        let t = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {prog:?} again"))?;
        let new_pid = child.id();
        // Left running when this process exits: the caller stops it through the pid file.
        drop(child);
        std::fs::write(&pid_file, format!("{new_pid}\n"))
            .with_context(|| format!("writing {}", pid_file.display()))?;
        self.args.pid = Some(new_pid);
        let deadline = Duration::from_secs(120);
        let served = loop {
            if t.elapsed() > deadline {
                return Err(anyhow!("the restarted daemon did not answer within 120 s"));
            }
            if let Ok(ch) = ferrio::cli::connect(&self.socket).await {
                let mut rt = RuntimeServiceClient::new(ch);
                if rt
                    .version(request(api::VersionRequest::default(), self.timeout))
                    .await
                    .is_ok()
                {
                    self.rt = rt;
                    break t.elapsed();
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let pods: HashSet<String> = self.pods.iter().map(|p| p.id.clone()).collect();
        let ctrs: HashSet<String> = self
            .pods
            .iter()
            .filter_map(|p| p.container.clone())
            .collect();
        let listed = loop {
            if t.elapsed() > deadline {
                return Err(anyhow!(
                    "the restarted daemon did not list every pod and container within 120 s"
                ));
            }
            let ready = self
                .rt
                .list_pod_sandbox(request(
                    api::ListPodSandboxRequest { filter: None },
                    self.timeout,
                ))
                .await
                .map(|r| {
                    r.into_inner()
                        .items
                        .iter()
                        .filter(|p| p.state == api::PodSandboxState::SandboxReady as i32)
                        .filter(|p| pods.contains(&p.id))
                        .count()
                })
                .unwrap_or(0);
            let running = self
                .rt
                .list_containers(request(
                    api::ListContainersRequest { filter: None },
                    self.timeout,
                ))
                .await
                .map(|r| {
                    r.into_inner()
                        .containers
                        .iter()
                        .filter(|c| c.state == api::ContainerState::ContainerRunning as i32)
                        .filter(|c| ctrs.contains(&c.id))
                        .count()
                })
                .unwrap_or(0);
            if ready == pods.len() && running == ctrs.len() {
                break t.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let rss = self.rss().await;
        self.restart = Some(Restarted {
            served,
            listed,
            stopped,
            rss,
        });
        Ok(())
    }

    async fn cleanup(&mut self) {
        let timeout = self.timeout;
        for pod in std::mem::take(&mut self.pods) {
            if let Some(ctr) = pod.container {
                if let Err(s) = self
                    .rt
                    .stop_container(request(
                        api::StopContainerRequest {
                            container_id: ctr.clone(),
                            timeout: 0,
                        },
                        timeout,
                    ))
                    .await
                {
                    eprintln!(
                        "  cleanup: StopContainer {ctr}: {:?}: {}",
                        s.code(),
                        s.message()
                    );
                }
                if let Err(s) = self
                    .rt
                    .remove_container(request(
                        api::RemoveContainerRequest {
                            container_id: ctr.clone(),
                        },
                        timeout,
                    ))
                    .await
                {
                    eprintln!(
                        "  cleanup: RemoveContainer {ctr}: {:?}: {}",
                        s.code(),
                        s.message()
                    );
                }
            }
            if let Err(s) = self
                .rt
                .stop_pod_sandbox(request(
                    api::StopPodSandboxRequest {
                        pod_sandbox_id: pod.id.clone(),
                    },
                    timeout,
                ))
                .await
            {
                eprintln!(
                    "  cleanup: StopPodSandbox {}: {:?}: {}",
                    pod.id,
                    s.code(),
                    s.message()
                );
            }
            if let Err(s) = self
                .rt
                .remove_pod_sandbox(request(
                    api::RemovePodSandboxRequest {
                        pod_sandbox_id: pod.id.clone(),
                    },
                    timeout,
                ))
                .await
            {
                eprintln!(
                    "  cleanup: RemovePodSandbox {}: {:?}: {}",
                    pod.id,
                    s.code(),
                    s.message()
                );
            }
        }
    }

    /// Reads the daemon's and its helpers' memory after `--settle` seconds.
    async fn rss(&self) -> Rss {
        let Some(pid) = self.args.pid else {
            return Rss::default();
        };
        tokio::time::sleep(Duration::from_secs_f64(self.args.settle.max(0.0))).await;
        let ids: Vec<&str> = self
            .pods
            .iter()
            .flat_map(|p| std::iter::once(p.id.as_str()).chain(p.container.as_deref()))
            .collect();
        let helpers = find_helpers(pid, &self.args.helpers, &ids, self.args.descendants);
        Rss {
            daemon: read_mem(pid),
            helpers: helpers.iter().filter_map(|&h| read_mem(h)).collect(),
            one_helper: helpers.first().and_then(|&h| resident_by_mapping(h)),
            daemon_map: resident_by_mapping(pid).map(|m| {
                let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().to_string()))
                    })
                    .unwrap_or_default();
                format!("{m}; {threads} threads")
            }),
        }
    }

    fn report(&self, idle: Rss, loaded: Rss, after: Option<Rss>) {
        let n = self.args.rounds;
        let kind = if self.args.cni {
            "CNI-network"
        } else {
            "host-network"
        };
        println!("\n{n} rounds, {kind} pods, one `sleep 3600` container each; times in ms\n");
        println!("| RPC | min | median | p90 | max |");
        println!("|---|---:|---:|---:|---:|");
        for (name, s) in RPCS.iter().zip(&self.samples) {
            if s.is_empty() {
                continue;
            }
            let mut v: Vec<f64> = s.iter().map(|d| ms(*d)).collect();
            v.sort_by(f64::total_cmp);
            println!(
                "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
                v[0],
                median(&v),
                p90(&v),
                v[v.len() - 1]
            );
        }
        // In order, so a slow first round (cold caches) or a periodic stall shows.
        let rounds: Vec<String> = self.samples[CREATE_START]
            .iter()
            .map(|d| format!("{:.1}", ms(*d)))
            .collect();
        println!("\nCreate+Start per round: {}", rounds.join(" "));
        if self.node.iter().any(|(_, v)| !v.is_empty()) {
            println!("\nwith {n} pods running: | call | p50 ms | p99 ms | calls |");
            println!("|---|---:|---:|---:|");
            for (what, s) in &self.node {
                if s.is_empty() {
                    continue;
                }
                let mut v: Vec<f64> = s.iter().map(|d| ms(*d)).collect();
                v.sort_by(f64::total_cmp);
                println!(
                    "| {what} | {:.2} | {:.2} | {} |",
                    median(&v),
                    p99(&v),
                    v.len()
                );
            }
        }
        if let Some(wall) = self.burst {
            println!(
                "\n{CONCURRENT_PODS} pods started at once (RunPodSandbox, CreateContainer, StartContainer each) with {n} running: {:.0} ms wall",
                ms(wall)
            );
        }
        if let Some(r) = &self.restart {
            println!(
                "\nrestart with {n} pods running: old daemon gone {:.0} ms after SIGTERM; new one answering {:.0} ms after exec, every pod ready and container running listed {:.0} ms after exec",
                ms(r.stopped),
                ms(r.served),
                ms(r.listed)
            );
        }
        if !self.list_stats.is_empty() {
            let mut v: Vec<f64> = self.list_stats.iter().map(|d| ms(*d)).collect();
            v.sort_by(f64::total_cmp);
            println!(
                "\nListContainerStats with {n} containers running: median {:.1} ms (min {:.1}, p90 {:.1}, {} calls)",
                median(&v),
                v[0],
                p90(&v),
                v.len()
            );
        }
        if self.args.cni {
            let with_ip: Vec<&String> = self.pod_ips.iter().filter(|ip| !ip.is_empty()).collect();
            let distinct: HashSet<&String> = with_ip.iter().copied().collect();
            println!(
                "\npod IPs (PodSandboxStatus): {} of {} pods had one, {} distinct{}",
                with_ip.len(),
                self.pod_ips.len(),
                distinct.len(),
                match (with_ip.first(), with_ip.last()) {
                    (Some(a), Some(b)) => format!(" ({a} .. {b})"),
                    _ => String::new(),
                }
            );
        }
        let Some(pid) = self.args.pid else {
            println!("\n(no --pid: RSS not measured)");
            return;
        };
        println!("\nmemory of the daemon (pid {pid}) and its per-container helpers; MiB\n");
        println!("| | daemon RSS | helpers | helper RSS (avg each) | total RSS | total PSS |");
        println!("|---|---:|---:|---:|---:|---:|");
        idle.row("idle, before the first pod");
        loaded.row(&format!("{n} pods running"));
        if let Some(r) = &self.restart {
            r.rss.row(&format!("restarted, {n} pods restored"));
        }
        if let Some(a) = &after {
            a.row("after the teardown");
        }
        for (when, r) in [
            ("idle", Some(&idle)),
            ("loaded", Some(&loaded)),
            ("after", after.as_ref()),
        ] {
            if let Some(m) = r.and_then(|r| r.daemon_map.as_ref()) {
                println!(
                    "\nthe daemon's resident KiB by mapping (of which anonymous), {when}: {m}"
                );
            }
        }
        if let Some(m) = &loaded.one_helper {
            println!("\none helper's resident KiB by mapping (of which anonymous): {m}");
        }
    }
}

#[derive(Default)]
struct Rss {
    daemon: Option<Mem>,
    helpers: Vec<Mem>,
    /// Where one helper's resident memory is (its largest mappings).
    one_helper: Option<String>,
    /// Where the daemon's resident memory is, and its thread count.
    daemon_map: Option<String>,
}

/// A process's resident kB per mapping (file name, `[heap]`, `anon`…), largest first, and how
/// much of it is anonymous: `name rss(anon)`.
fn resident_by_mapping(pid: u32) -> Option<String> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut by: HashMap<String, (u64, u64)> = HashMap::new();
    let mut name = String::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let path = f.nth(4).unwrap_or("anon");
            name = path.rsplit('/').next().unwrap_or(path).to_string();
            continue;
        }
        let v: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let e = by.entry(name.clone()).or_default();
        match first {
            "Rss:" => e.0 += v,
            "Anonymous:" => e.1 += v,
            _ => {}
        }
    }
    let mut v: Vec<_> = by.into_iter().filter(|(_, (r, _))| *r > 0).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1 .0));
    Some(
        v.iter()
            .take(8)
            .map(|(n, (r, a))| format!("{n} {r}({a})"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[derive(Clone, Copy, Default)]
struct Mem {
    rss_kb: u64,
    pss_kb: Option<u64>,
}

impl Rss {
    fn row(&self, label: &str) {
        let Some(d) = self.daemon else {
            println!("| {label} | (process gone) | | | | |");
            return;
        };
        let h_rss: u64 = self.helpers.iter().map(|m| m.rss_kb).sum();
        let n = self.helpers.len();
        let helpers = if n == 0 {
            "–".to_string()
        } else {
            format!("{:.1} ({:.1})", mib(h_rss), mib(h_rss) / n as f64)
        };
        let pss: Option<u64> = std::iter::once(d)
            .chain(self.helpers.iter().copied())
            .map(|m| m.pss_kb)
            .sum();
        println!(
            "| {label} | {:.1} | {n} | {helpers} | {:.1} | {} |",
            mib(d.rss_kb),
            mib(d.rss_kb + h_rss),
            pss.map(|p| format!("{:.1}", mib(p)))
                .unwrap_or_else(|| "?".into())
        );
    }
}

/// VmRSS from /proc/PID/status and Pss from /proc/PID/smaps_rollup, in kB.
fn read_mem(pid: u32) -> Option<Mem> {
    let field = |file: &str, key: &str| -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Mem {
        rss_kb: field("status", "VmRSS:")?,
        pss_kb: field("smaps_rollup", "Pss:"),
    })
}

/// The helper processes: command line contains every pattern and one of `ids`; or (with
/// `descendants`) a descendant of `daemon`.
fn find_helpers(daemon: u32, patterns: &[String], ids: &[&str], descendants: bool) -> Vec<u32> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut found = HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == daemon {
            continue;
        }
        if let Some(ppid) = read_ppid(pid) {
            parent.insert(pid, ppid);
        }
        if patterns.is_empty() || ids.is_empty() {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if patterns.iter().all(|p| cmdline.contains(p.as_str()))
            && ids.iter().any(|id| cmdline.contains(id))
        {
            found.insert(pid);
        }
    }
    if descendants {
        for &pid in parent.keys() {
            let mut p = pid;
            // Walk up; a cycle cannot happen in /proc, but a racing pid reuse could mislead.
            for _ in 0..64 {
                match parent.get(&p) {
                    Some(&pp) if pp == daemon => {
                        found.insert(pid);
                        break;
                    }
                    Some(&pp) if pp > 1 => p = pp,
                    _ => break,
                }
            }
        }
    }
    let mut v: Vec<u32> = found.into_iter().collect();
    v.sort_unstable();
    v
}

fn read_ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Nearest-rank 99th percentile.
fn p99(sorted: &[f64]) -> f64 {
    let rank = (99 * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Nearest-rank 90th percentile.
fn p90(sorted: &[f64]) -> f64 {
    // ceil(0.9 n) for a sample count: positive and below n, in integers.
    let rank = (9 * sorted.len()).div_ceil(10);
    sorted[rank.clamp(1, sorted.len()) - 1]
}
