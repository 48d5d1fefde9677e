//! ferrio's own Prometheus metrics (`ferrio_*`), served as text by `server::metrics` when
//! `[metrics] enable = true`.
//!
//! Two kinds of series:
//! - recorded as they happen: one observation per RPC ([`Metrics::observe_rpc`], called by the
//!   server's deadline layer): `ferrio_operations_total{operation}`,
//!   `ferrio_operation_errors_total{operation,code}`, `ferrio_operation_duration_seconds{operation}`;
//! - read at scrape time from the engine and the image service ([`Snapshot`]): containers and
//!   pods by state, monitor processes, OOM kills, image pulls, pull bytes, layer reuse, dropped
//!   event subscribers. Counters that live in the domain (atomics) are exposed as const metrics,
//!   so nothing is counted twice and the domain does not depend on this module.
//!
//! The registry and the text encoding (OpenMetrics text, which Prometheus reads) are
//! prometheus-client's; names follow the Prometheus naming conventions (base units, `_total`
//! for counters, added by the encoder).

use crate::engine::{ContainerState, Engine, PodState};
use crate::image::{Images, PullCounts};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    operation: String,
    code: String,
}

/// Services whose RPCs are labelled by name; anything else is `operation="other"`, so a client
/// cannot grow the label set with made-up paths.
const SERVICES: [&str; 3] = [
    "runtime.v1.RuntimeService",
    "runtime.v1.ImageService",
    "ferrio.admin.v1.Admin",
];

/// The RPC names the vendored protos declare (`rpc Name(`).
static RPC_NAMES: LazyLock<BTreeSet<&'static str>> = LazyLock::new(|| {
    [
        include_str!("../../proto/runtime/v1/api.proto"),
        include_str!("../../proto/ferrio/v1/admin.proto"),
    ]
    .iter()
    .flat_map(|p| p.lines())
    .filter_map(|l| {
        let rest = l.trim_start().strip_prefix("rpc ")?;
        let name = rest.split('(').next()?.trim();
        (!name.is_empty()).then_some(name)
    })
    .collect()
});

/// `/runtime.v1.RuntimeService/RunPodSandbox` → `RunPodSandbox`; unknown paths → `other`.
pub fn operation_name(path: &str) -> &str {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some(svc), Some(m)) if SERVICES.contains(&svc) && RPC_NAMES.contains(m) => m,
        _ => "other",
    }
}

/// The daemon's metrics: the registry and the per-RPC series.
pub struct Metrics {
    registry: Registry,
    operations: Family<OperationLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<OperationLabels, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn duration_histogram() -> Histogram {
    // 1 ms … 32.8 s: an RPC that takes longer (a big pull) lands in +Inf.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    /// Metrics with the scrape-time series read from `source`.
    pub fn new(source: Arc<dyn Source>) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let operations = Family::<OperationLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<OperationLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "ferrio_operations",
            "gRPC operations served, by RPC name",
            operations.clone(),
        );
        registry.register(
            "ferrio_operation_errors",
            "gRPC operations that ended with a status other than OK, by RPC name and gRPC code",
            errors.clone(),
        );
        registry.register_with_unit(
            "ferrio_operation_duration",
            "Time from a request's arrival to its response headers (for streams: until the stream opens)",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register_collector(Box::new(ScrapeCollector(source)));
        Arc::new(Metrics {
            registry,
            operations,
            errors,
            durations,
        })
    }

    /// Records one RPC: `code` is the gRPC status it ended with.
    pub fn observe_rpc(&self, path: &str, code: tonic::Code, elapsed: Duration) {
        let operation = operation_name(path).to_string();
        let op = OperationLabels {
            operation: operation.clone(),
        };
        self.operations.get_or_create(&op).inc();
        self.durations
            .get_or_create(&op)
            .observe(elapsed.as_secs_f64());
        if code != tonic::Code::Ok {
            self.errors
                .get_or_create(&ErrorLabels {
                    operation,
                    code: format!("{code:?}"),
                })
                .inc();
        }
    }

    /// The text exposition. Blocking (it reads the engine's records and exit files): call it
    /// from `spawn_blocking`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the scrape-time series are computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub containers_created: u64,
    pub containers_running: u64,
    pub containers_exited: u64,
    pub pods_ready: u64,
    pub pods_not_ready: u64,
    /// Live `__monitor` processes: one per created or running container.
    pub monitors: u64,
    pub oom_kills: u64,
    pub pulls: PullCounts,
    pub events_dropped_subscribers: u64,
}

/// Where a scrape reads its snapshot (the daemon's engine and images; a fixture in tests).
pub trait Source: Send + Sync + 'static {
    fn snapshot(&self) -> Snapshot;
}

/// The daemon's source.
pub struct DaemonSource {
    pub engine: Arc<Engine>,
    pub images: Arc<Images>,
}

impl Source for DaemonSource {
    fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        for c in self.engine.list_containers() {
            match c.state {
                ContainerState::Created => s.containers_created += 1,
                ContainerState::Running => s.containers_running += 1,
                ContainerState::Exited => s.containers_exited += 1,
                ContainerState::Creating => {}
            }
        }
        for p in self.engine.list_pods() {
            match p.state {
                PodState::Ready => s.pods_ready += 1,
                PodState::NotReady => s.pods_not_ready += 1,
            }
        }
        s.monitors = s.containers_created + s.containers_running;
        s.oom_kills = self.engine.oom_kills();
        s.pulls = self.images.pull_counts();
        s.events_dropped_subscribers = self.engine.dropped_subscribers();
        s
    }
}

struct ScrapeCollector(Arc<dyn Source>);

impl std::fmt::Debug for ScrapeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeCollector")
    }
}

fn gauge_by(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let mut m = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (v, n) in values {
        let g = ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX));
        g.encode(m.encode_family(&[(label, *v)])?)?;
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, n: u64) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, n: u64) -> std::fmt::Result {
    let c = ConstCounter::new(n);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

impl prometheus_client::collector::Collector for ScrapeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.snapshot();
        gauge_by(
            &mut e,
            "ferrio_containers",
            "Containers by state.",
            "state",
            &[
                ("created", s.containers_created),
                ("running", s.containers_running),
                ("exited", s.containers_exited),
            ],
        )?;
        gauge_by(
            &mut e,
            "ferrio_pods",
            "Pod sandboxes by state.",
            "state",
            &[("ready", s.pods_ready), ("notready", s.pods_not_ready)],
        )?;
        gauge(
            &mut e,
            "ferrio_monitor_processes",
            "Container monitor processes (one per created or running container).",
            s.monitors,
        )?;
        counter(
            &mut e,
            "ferrio_containers_oom",
            "Container exits recorded as OOM kills since the daemon started.",
            s.oom_kills,
        )?;
        {
            let c = ConstCounter::new(0u64);
            let mut m = e.encode_descriptor(
                "ferrio_image_pulls",
                "PullImage calls since the daemon started, by result.",
                None,
                c.metric_type(),
            )?;
            for (result, n) in [("success", s.pulls.succeeded), ("failure", s.pulls.failed)] {
                ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
            }
        }
        {
            let c = ConstCounter::new(s.pulls.bytes);
            c.encode(e.encode_descriptor(
                "ferrio_image_pull",
                "Layer blob bytes received from registries.",
                Some(&Unit::Bytes),
                c.metric_type(),
            )?)?;
        }
        counter(
            &mut e,
            "ferrio_image_layer_reuse",
            "Layers a pull found already stored and did not download.",
            s.pulls.layers_reused,
        )?;
        counter(
            &mut e,
            "ferrio_events_dropped_subscribers",
            "GetContainerEvents subscribers dropped for falling behind.",
            s.events_dropped_subscribers,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Snapshot);
    impl Source for Fixed {
        fn snapshot(&self) -> Snapshot {
            self.0.clone()
        }
    }

    #[test]
    fn operation_names_are_bounded() {
        assert_eq!(
            operation_name("/runtime.v1.RuntimeService/RunPodSandbox"),
            "RunPodSandbox"
        );
        assert_eq!(
            operation_name("/runtime.v1.ImageService/PullImage"),
            "PullImage"
        );
        assert_eq!(
            operation_name("/ferrio.admin.v1.Admin/ImportImages"),
            "ImportImages"
        );
        assert_eq!(operation_name("/runtime.v1.RuntimeService/Bogus"), "other");
        assert_eq!(operation_name("/evil.Service/RunPodSandbox"), "other");
        assert_eq!(operation_name("/"), "other");
    }

    #[test]
    fn renders_rpc_and_scrape_time_series() {
        let m = Metrics::new(Arc::new(Fixed(Snapshot {
            containers_running: 2,
            containers_exited: 1,
            pods_ready: 1,
            monitors: 2,
            oom_kills: 3,
            pulls: PullCounts {
                succeeded: 4,
                failed: 1,
                bytes: 1000,
                layers_reused: 5,
            },
            events_dropped_subscribers: 6,
            ..Default::default()
        })));
        m.observe_rpc(
            "/runtime.v1.RuntimeService/Version",
            tonic::Code::Ok,
            Duration::from_millis(3),
        );
        m.observe_rpc(
            "/runtime.v1.RuntimeService/ContainerStatus",
            tonic::Code::NotFound,
            Duration::from_millis(1),
        );
        let text = m.render();
        for line in [
            "ferrio_operations_total{operation=\"Version\"} 1",
            "ferrio_operation_errors_total{operation=\"ContainerStatus\",code=\"NotFound\"} 1",
            "ferrio_operation_duration_seconds_count{operation=\"Version\"} 1",
            "ferrio_containers{state=\"running\"} 2",
            "ferrio_containers{state=\"created\"} 0",
            "ferrio_pods{state=\"ready\"} 1",
            "ferrio_monitor_processes 2",
            "ferrio_containers_oom_total 3",
            "ferrio_image_pulls_total{result=\"success\"} 4",
            "ferrio_image_pulls_total{result=\"failure\"} 1",
            "ferrio_image_pull_bytes_total 1000",
            "ferrio_image_layer_reuse_total 5",
            "ferrio_events_dropped_subscribers_total 6",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        assert!(!text.contains("ferrio_operation_errors_total{operation=\"Version\""));
    }
}
