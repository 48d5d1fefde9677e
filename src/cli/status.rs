//! `ferrio status [config | containers [ID]]`: what the running daemon says about itself, over
//! the CRI (Version, Status, ListPodSandbox, ListContainers) and ferrio's admin API
//! (ContainerDebug: the daemon's record, the monitor's own State answer, the exit file).

use crate::config::Config;
use crate::cri::admin_api::{self, admin_client::AdminClient};
use crate::cri::api::{self, runtime_service_client::RuntimeServiceClient};
use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use tonic::transport::Channel;

#[derive(Subcommand, Debug)]
pub enum StatusCommand {
    /// The daemon's effective configuration (files, drop-ins and its flags applied)
    Config {
        #[arg(long, value_enum, default_value_t = Format::Toml)]
        format: Format,
    },
    /// What the daemon and the monitor know of one container, or a table of all containers
    #[command(alias = "container")]
    Containers {
        /// A container ID or unique prefix
        id: Option<String>,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

fn grpc(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

async fn channel(cfg: &Config) -> Result<Channel> {
    let socket = cfg.socket_path();
    super::connect(&socket)
        .await
        .with_context(|| format!("connecting to the daemon on {}", socket.display()))
}

pub async fn run(cfg: &Config, cmd: Option<StatusCommand>) -> Result<String> {
    let ch = channel(cfg).await?;
    match cmd {
        None => overview(ch, cfg).await,
        Some(StatusCommand::Config { format }) => config(ch, format).await,
        Some(StatusCommand::Containers { id: Some(id) }) => {
            let d = debug(&mut AdminClient::new(ch), &id).await?;
            Ok(container_detail(&d))
        }
        Some(StatusCommand::Containers { id: None }) => container_table(ch).await,
    }
}

async fn overview(ch: Channel, cfg: &Config) -> Result<String> {
    let mut rt = RuntimeServiceClient::new(ch);
    let v = rt
        .version(api::VersionRequest::default())
        .await
        .map_err(grpc)?
        .into_inner();
    let st = rt
        .status(api::StatusRequest { verbose: true })
        .await
        .map_err(grpc)?
        .into_inner();
    let pulls: Vec<crate::image::PullProgress> = st
        .info
        .get("pulls")
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    let pods = rt
        .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        .await
        .map_err(grpc)?
        .into_inner()
        .items;
    let ctrs = rt
        .list_containers(api::ListContainersRequest { filter: None })
        .await
        .map_err(grpc)?
        .into_inner()
        .containers;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "runtime:    {} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );
    let _ = writeln!(o, "socket:     {}", cfg.socket_path().display());
    let _ = writeln!(o, "conditions:");
    for c in st.status.map(|s| s.conditions).unwrap_or_default() {
        let why = if c.reason.is_empty() {
            String::new()
        } else {
            format!("  {}: {}", c.reason, c.message)
        };
        let _ = writeln!(o, "  {:<14} {}{}", c.r#type, c.status, why);
    }
    let handlers: Vec<String> = st
        .runtime_handlers
        .iter()
        .map(|h| {
            // The CRI's empty name is the default handler.
            let name = if h.name.is_empty() {
                "(default)"
            } else {
                &h.name
            };
            if h.features
                .as_ref()
                .is_some_and(|f| f.recursive_read_only_mounts)
            {
                format!("{name} (recursive read-only mounts)")
            } else {
                name.to_string()
            }
        })
        .collect();
    let _ = writeln!(o, "handlers:   {}", handlers.join(", "));
    if pulls.is_empty() {
        let _ = writeln!(o, "pulls:      none in progress");
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let _ = writeln!(o, "pulls:");
        for p in &pulls {
            let (got, total) = p
                .layers
                .values()
                .fold((0u64, 0u64), |(g, t), (r, s)| (g + r, t + s));
            let _ = writeln!(
                o,
                "  {}  {}s, {} of {} bytes in {} layers downloading",
                p.image,
                now - p.started,
                got,
                total,
                p.layers.len()
            );
        }
    }
    // NRI plugins, in call order.
    let plugins: Vec<serde_json::Value> = st
        .info
        .get("nriPlugins")
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_default();
    if plugins.is_empty() {
        let _ = writeln!(o, "NRI:        no plugins");
    } else {
        let _ = writeln!(o, "NRI plugins:");
        for p in &plugins {
            let _ = writeln!(
                o,
                "  {}-{}  events 0x{:x}{}",
                p["index"].as_str().unwrap_or(""),
                p["name"].as_str().unwrap_or(""),
                p["events"].as_u64().unwrap_or(0),
                if p["launched"].as_bool().unwrap_or(false) {
                    ", pre-installed"
                } else {
                    ""
                }
            );
        }
    }
    let mut by_pod_state: BTreeMap<&str, usize> = [("ready", 0), ("notready", 0)].into();
    for p in &pods {
        let s = if p.state == api::PodSandboxState::SandboxReady as i32 {
            "ready"
        } else {
            "notready"
        };
        *by_pod_state.entry(s).or_default() += 1;
    }
    let mut by_ctr_state: BTreeMap<&str, usize> =
        [("created", 0), ("running", 0), ("exited", 0)].into();
    for c in &ctrs {
        *by_ctr_state.entry(ctr_state(c.state)).or_default() += 1;
    }
    let counts = |m: &BTreeMap<&str, usize>| {
        m.iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(o, "pods:       {} ({})", pods.len(), counts(&by_pod_state));
    let _ = writeln!(o, "containers: {} ({})", ctrs.len(), counts(&by_ctr_state));
    Ok(o)
}

fn ctr_state(s: i32) -> &'static str {
    match api::ContainerState::try_from(s) {
        Ok(api::ContainerState::ContainerCreated) => "created",
        Ok(api::ContainerState::ContainerRunning) => "running",
        Ok(api::ContainerState::ContainerExited) => "exited",
        _ => "unknown",
    }
}

async fn config(ch: Channel, format: Format) -> Result<String> {
    let st = RuntimeServiceClient::new(ch)
        .status(api::StatusRequest { verbose: true })
        .await
        .map_err(grpc)?
        .into_inner();
    let json = st
        .info
        .get("config")
        .context("the daemon's Status carries no config")?;
    Ok(match format {
        Format::Json => {
            let v: serde_json::Value =
                serde_json::from_str(json).context("the daemon's config JSON")?;
            serde_json::to_string_pretty(&v)? + "\n"
        }
        Format::Toml => {
            let cfg: Config = serde_json::from_str(json).context("the daemon's config JSON")?;
            toml::to_string_pretty(&cfg).context("rendering the config as TOML")?
        }
    })
}

async fn debug(
    admin: &mut AdminClient<Channel>,
    id: &str,
) -> Result<admin_api::ContainerDebugResponse> {
    Ok(admin
        .container_debug(admin_api::ContainerDebugRequest {
            container_id: id.to_string(),
        })
        .await
        .map_err(grpc)?
        .into_inner())
}

fn time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn exit_text(e: &admin_api::ExitFile) -> String {
    let mut s = format!("code {}", e.exit_code);
    if e.signal != 0 {
        let _ = write!(s, ", signal {}", e.signal);
    }
    if e.oom_killed {
        s.push_str(", OOM-killed");
    }
    let _ = write!(s, ", at {}", time(e.finished_at_ns));
    s
}

/// `ferrio status containers ID`.
pub fn container_detail(d: &admin_api::ContainerDebugResponse) -> String {
    let mut o = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(o, "{k:<13} {v}");
    };
    line("container:", &d.id);
    line("name:", &d.name);
    line("pod:", &d.pod_sandbox_id);
    line("state:", &d.state);
    if d.state == "exited" {
        line("exit:", &format!("{} ({})", d.exit_code, d.reason));
    }
    line("pid:", &d.pid.to_string());
    line("monitor pid:", &d.monitor_pid.to_string());
    line("handler:", &d.runtime_handler);
    line("cgroup:", &d.cgroup);
    line("log:", &d.log_path);
    line("run dir:", &d.run_dir);
    let monitor = match &d.monitor {
        Some(m) if m.answered => {
            let mut s = format!(
                "answered: pid {}, {}, protocol {}",
                m.pid,
                if m.started { "started" } else { "not started" },
                m.protocol
            );
            if let Some(e) = &m.exit {
                let _ = write!(s, ", exited ({})", exit_text(e));
            }
            s
        }
        Some(m) => format!("no answer ({})", m.error),
        None => "unknown".into(),
    };
    line("monitor:", &monitor);
    let exit = match &d.exit_file {
        Some(e) => format!("{} ({})", d.exit_file_path, exit_text(e)),
        None => format!("{} (absent)", d.exit_file_path),
    };
    line("exit file:", &exit);
    o
}

async fn container_table(ch: Channel) -> Result<String> {
    let ctrs = RuntimeServiceClient::new(ch.clone())
        .list_containers(api::ListContainersRequest { filter: None })
        .await
        .map_err(grpc)?
        .into_inner()
        .containers;
    let mut admin = AdminClient::new(ch);
    let mut o = format!(
        "{:<13} {:<20} {:<8} {:>8} {:>8} {:<8} {:<13}\n",
        "CONTAINER", "NAME", "STATE", "PID", "MONITOR", "EXIT", "POD"
    );
    for c in ctrs {
        // A container removed in between is skipped.
        let Ok(d) = debug(&mut admin, &c.id).await else {
            continue;
        };
        let monitor = match &d.monitor {
            Some(m) if m.answered => d.monitor_pid.to_string(),
            _ => "-".into(),
        };
        let exit = if d.exit_file.is_some() { "file" } else { "-" };
        let short = |s: &str| s.chars().take(13).collect::<String>();
        let _ = writeln!(
            o,
            "{:<13} {:<20} {:<8} {:>8} {:>8} {:<8} {:<13}",
            short(&d.id),
            d.name,
            d.state,
            d.pid,
            monitor,
            exit,
            short(&d.pod_sandbox_id)
        );
    }
    Ok(o)
}
