//! RuntimeService: pods, containers, ExecSync, and the runtime's status. Each handler is thin:
//! convert the request, call the engine, convert the answer. Exec/Attach/PortForward answer
//! URLs of `streaming/`; CheckpointContainer runs CRIU (`engine/container/checkpoint.rs`).

use super::api::{self, runtime_service_server::RuntimeService};
use super::convert;
use crate::config::{CgroupDriver, Config};
use crate::engine::{ContainerState, Engine, EngineError, PodState};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// A stream fed by a task through a small channel: the task ends when the client goes.
fn async_stream_events<F, Fut>(f: F) -> BoxStream<api::ContainerEventResponse>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<api::ContainerEventResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

type BoxStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;
const STREAM_CHUNK: usize = 100;

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Status {
        super::error::status(&e)
    }
}

fn pod_filter(engine: &Engine, f: &Option<api::PodSandboxFilter>) -> Vec<api::PodSandbox> {
    engine
        .list_pods()
        .into_iter()
        .filter(|p| match f {
            None => true,
            Some(f) => {
                (f.id.is_empty() || p.id.starts_with(&f.id))
                    && f.state.as_ref().is_none_or(|s| {
                        s.state
                            == (match p.state {
                                PodState::Ready => api::PodSandboxState::SandboxReady,
                                PodState::NotReady => api::PodSandboxState::SandboxNotready,
                            }) as i32
                    })
                    && convert::labels_match(&p.config.labels, &f.label_selector)
            }
        })
        .map(|p| convert::pod_sandbox(&p))
        .collect()
}

fn container_filter(engine: &Engine, f: &Option<api::ContainerFilter>) -> Vec<api::Container> {
    engine
        .list_containers()
        .into_iter()
        .filter(|c| match f {
            None => true,
            Some(f) => {
                (f.id.is_empty() || c.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
                    && f.state.as_ref().is_none_or(|s| {
                        s.state
                            == (match c.state {
                                ContainerState::Created => api::ContainerState::ContainerCreated,
                                ContainerState::Running => api::ContainerState::ContainerRunning,
                                ContainerState::Exited => api::ContainerState::ContainerExited,
                                ContainerState::Creating => api::ContainerState::ContainerUnknown,
                            }) as i32
                    })
                    && convert::labels_match(&c.config.labels, &f.label_selector)
            }
        })
        .map(|c| convert::container(&c))
        .collect()
}

pub const RUNTIME_NAME: &str = "ferrio";
pub const CRI_VERSION: &str = "v1";

pub struct Runtime {
    config: Arc<Config>,
    engine: Arc<Engine>,
    streaming: Arc<crate::streaming::Streaming>,
}

impl Runtime {
    pub fn new(
        config: Arc<Config>,
        engine: Arc<Engine>,
        streaming: Arc<crate::streaming::Streaming>,
    ) -> Self {
        Runtime {
            config,
            engine,
            streaming,
        }
    }
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(
        &self,
        _req: Request<api::VersionRequest>,
    ) -> Result<Response<api::VersionResponse>, Status> {
        Ok(Response::new(api::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        req: Request<api::StatusRequest>,
    ) -> Result<Response<api::StatusResponse>, Status> {
        let conditions = vec![
            api::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            {
                // The network dir is read again on each Status (kubelet polls it), and the
                // plugins answer CNI STATUS/VERSION (cached 10 s).
                let ready = self.engine.network_ready().await;
                match ready {
                    Ok(()) => api::RuntimeCondition {
                        r#type: "NetworkReady".into(),
                        status: true,
                        reason: String::new(),
                        message: String::new(),
                    },
                    Err(why) => api::RuntimeCondition {
                        r#type: "NetworkReady".into(),
                        status: false,
                        reason: "NetworkPluginNotReady".into(),
                        message: format!("ferrio: no CNI network: {why}"),
                    },
                }
            },
        ];
        let mut info = HashMap::new();
        if req.get_ref().verbose {
            let cfg = serde_json::to_string(&*self.config).map_err(super::error::internal)?;
            info.insert("config".to_string(), cfg);
            let pulls = serde_json::to_string(&self.engine.pulls_in_progress())
                .map_err(super::error::internal)?;
            info.insert("pulls".to_string(), pulls);
            let plugins: Vec<serde_json::Value> = self
                .engine
                .nri_plugins()
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "name": p.name, "index": p.index,
                        "events": p.events, "launched": p.launched,
                    })
                })
                .collect();
            info.insert(
                "nriPlugins".to_string(),
                serde_json::Value::Array(plugins).to_string(),
            );
        }
        // Recursive read-only mounts: libcontainer applies `rro` (mount_setattr); the runc and
        // crun CLIs of this Debian do not know it. User namespaces: ferrio makes and pins the
        // pod's user namespace and mounts the idmapped rootfs and volumes itself, so every
        // handler that joins a user namespace by path can run such pods — when this kernel
        // idmaps mounts.
        let features = |name: &str| api::RuntimeHandlerFeatures {
            recursive_read_only_mounts: self
                .config
                .runtime
                .runtimes
                .get(name)
                .is_some_and(|h| h.runtime_type == "builtin"),
            user_namespaces: self.engine.idmapped_mounts_supported(),
        };
        // The CRI: an empty name denotes the default handler (what a pod with no
        // `runtime_handler` gets); kubelet asks it, not the default's own name.
        let default = &self.config.runtime.default_runtime;
        let runtime_handlers = std::iter::once(api::RuntimeHandler {
            name: String::new(),
            features: Some(features(default)),
        })
        .chain(
            self.engine
                .handler_names()
                .into_iter()
                .map(|name| api::RuntimeHandler {
                    features: Some(features(&name)),
                    name,
                }),
        )
        .collect();
        Ok(Response::new(api::StatusResponse {
            status: Some(api::RuntimeStatus { conditions }),
            info,
            runtime_handlers,
            features: Some(api::RuntimeFeatures {
                supplemental_groups_policy: true,
                ..Default::default()
            }),
        }))
    }

    async fn runtime_config(
        &self,
        _req: Request<api::RuntimeConfigRequest>,
    ) -> Result<Response<api::RuntimeConfigResponse>, Status> {
        let driver = match self.config.runtime.cgroup_driver {
            CgroupDriver::Cgroupfs => api::CgroupDriver::Cgroupfs,
            CgroupDriver::Systemd => api::CgroupDriver::Systemd,
        };
        Ok(Response::new(api::RuntimeConfigResponse {
            linux: Some(api::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<api::RunPodSandboxRequest>,
    ) -> Result<Response<api::RunPodSandboxResponse>, Status> {
        let r = req.into_inner();
        let cfg = r.config.ok_or_else(|| super::error::missing("config"))?;
        let id = self
            .engine
            .run_pod(
                {
                    convert::check_ports(&cfg)?;
                    convert::pod_config(&cfg)
                },
                &r.runtime_handler,
            )
            .await?;
        Ok(Response::new(api::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<api::StopPodSandboxRequest>,
    ) -> Result<Response<api::StopPodSandboxResponse>, Status> {
        self.engine.stop_pod(&req.get_ref().pod_sandbox_id).await?;
        Ok(Response::new(api::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<api::RemovePodSandboxRequest>,
    ) -> Result<Response<api::RemovePodSandboxResponse>, Status> {
        self.engine
            .remove_pod(&req.get_ref().pod_sandbox_id)
            .await?;
        Ok(Response::new(api::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<api::PodSandboxStatusRequest>,
    ) -> Result<Response<api::PodSandboxStatusResponse>, Status> {
        let r = req.get_ref();
        let p = self.engine.pod_status(&r.pod_sandbox_id)?;
        let mut info = HashMap::new();
        if r.verbose {
            let v = serde_json::json!({
                "runtimeHandler": p.runtime_handler,
                "cgroup": p.cgroup,
                "paths": p.paths,
                "pause": p.pause,
                "config": p.config,
            });
            info.insert("info".to_string(), v.to_string());
        }
        let containers_statuses = self
            .engine
            .list_containers()
            .into_iter()
            .filter(|c| c.pod_id == p.id)
            .map(|c| convert::container_status(&c))
            .collect();
        Ok(Response::new(api::PodSandboxStatusResponse {
            status: Some(convert::pod_status(&p)),
            info,
            containers_statuses,
            timestamp: crate::engine::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<api::ListPodSandboxRequest>,
    ) -> Result<Response<api::ListPodSandboxResponse>, Status> {
        Ok(Response::new(api::ListPodSandboxResponse {
            items: pod_filter(&self.engine, &req.get_ref().filter),
        }))
    }

    async fn stream_pod_sandboxes(
        &self,
        req: Request<api::StreamPodSandboxesRequest>,
    ) -> Result<Response<BoxStream<api::StreamPodSandboxesResponse>>, Status> {
        let all = pod_filter(&self.engine, &req.get_ref().filter);
        let chunks: Vec<Result<api::StreamPodSandboxesResponse, Status>> = all
            .chunks(STREAM_CHUNK)
            .map(|c| {
                Ok(api::StreamPodSandboxesResponse {
                    pod_sandboxes: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn create_container(
        &self,
        req: Request<api::CreateContainerRequest>,
    ) -> Result<Response<api::CreateContainerResponse>, Status> {
        let r = req.into_inner();
        let cfg = r.config.ok_or_else(|| super::error::missing("config"))?;
        let id = self
            .engine
            .create_container(&r.pod_sandbox_id, convert::container_config(&cfg)?)
            .await?;
        Ok(Response::new(api::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<api::StartContainerRequest>,
    ) -> Result<Response<api::StartContainerResponse>, Status> {
        self.engine
            .start_container(&req.get_ref().container_id)
            .await?;
        Ok(Response::new(api::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<api::StopContainerRequest>,
    ) -> Result<Response<api::StopContainerResponse>, Status> {
        let r = req.get_ref();
        self.engine
            .stop_container(&r.container_id, r.timeout)
            .await?;
        Ok(Response::new(api::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<api::RemoveContainerRequest>,
    ) -> Result<Response<api::RemoveContainerResponse>, Status> {
        self.engine
            .remove_container(&req.get_ref().container_id)
            .await?;
        Ok(Response::new(api::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<api::ListContainersRequest>,
    ) -> Result<Response<api::ListContainersResponse>, Status> {
        Ok(Response::new(api::ListContainersResponse {
            containers: container_filter(&self.engine, &req.get_ref().filter),
        }))
    }

    async fn stream_containers(
        &self,
        req: Request<api::StreamContainersRequest>,
    ) -> Result<Response<BoxStream<api::StreamContainersResponse>>, Status> {
        let all = container_filter(&self.engine, &req.get_ref().filter);
        let chunks: Vec<Result<api::StreamContainersResponse, Status>> = all
            .chunks(STREAM_CHUNK)
            .map(|c| {
                Ok(api::StreamContainersResponse {
                    containers: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn container_status(
        &self,
        req: Request<api::ContainerStatusRequest>,
    ) -> Result<Response<api::ContainerStatusResponse>, Status> {
        let r = req.get_ref();
        let c = self.engine.container_status(&r.container_id)?;
        let mut info = HashMap::new();
        if r.verbose {
            let spec = self.engine.runtime_spec(&c.id).await;
            let v = serde_json::json!({
                "runtimeSpec": spec,
                "pid": c.pid,
                "monitorPid": c.monitor_pid,
                "runtimeHandler": c.handler,
                "cgroup": c.cgroup,
                "sandboxID": c.pod_id,
                "config": c.config,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(api::ContainerStatusResponse {
            status: Some(convert::container_status(&c)),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<api::UpdateContainerResourcesRequest>,
    ) -> Result<Response<api::UpdateContainerResourcesResponse>, Status> {
        let r = req.get_ref();
        let res = r
            .linux
            .as_ref()
            .ok_or_else(|| super::error::missing("linux"))?;
        self.engine
            .update_resources(&r.container_id, &convert::resources(res))
            .await?;
        Ok(Response::new(api::UpdateContainerResourcesResponse {}))
    }

    async fn checkpoint_container(
        &self,
        req: Request<api::CheckpointContainerRequest>,
    ) -> Result<Response<api::CheckpointContainerResponse>, Status> {
        let r = req.into_inner();
        self.engine
            .checkpoint_container(&r.container_id, &r.location, r.timeout)
            .await?;
        Ok(Response::new(api::CheckpointContainerResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<api::ReopenContainerLogRequest>,
    ) -> Result<Response<api::ReopenContainerLogResponse>, Status> {
        self.engine.reopen_log(&req.get_ref().container_id).await?;
        Ok(Response::new(api::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<api::ExecSyncRequest>,
    ) -> Result<Response<api::ExecSyncResponse>, Status> {
        let r = req.into_inner();
        let (stdout, stderr, exit_code) = self
            .engine
            .exec_sync(&r.container_id, r.cmd, r.timeout)
            .await?;
        Ok(Response::new(api::ExecSyncResponse {
            stdout,
            stderr,
            exit_code,
        }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<api::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<api::UpdateRuntimeConfigResponse>, Status> {
        let cidr = req
            .get_ref()
            .runtime_config
            .as_ref()
            .and_then(|c| c.network_config.as_ref())
            .map(|n| n.pod_cidr.clone())
            .unwrap_or_default();
        // kubelet sends one CIDR or a comma-separated pair (dual stack).
        for c in cidr.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            let ok = c.split_once('/').is_some_and(|(ip, len)| {
                let max = match ip.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(_)) => 32,
                    Ok(std::net::IpAddr::V6(_)) => 128,
                    Err(_) => return false,
                };
                len.parse::<u8>().is_ok_and(|l| l <= max)
            });
            if !ok {
                return Err(super::error::invalid(format!(
                    "runtime_config.network_config.pod_cidr: {c:?} is not a CIDR such as 10.244.0.0/24"
                )));
            }
        }
        tracing::info!(pod_cidr = %cidr, "UpdateRuntimeConfig (pod CIDR noted; CNI plugins own addressing)");
        Ok(Response::new(api::UpdateRuntimeConfigResponse {}))
    }

    async fn container_stats(
        &self,
        req: Request<api::ContainerStatsRequest>,
    ) -> Result<Response<api::ContainerStatsResponse>, Status> {
        let u = self
            .engine
            .one_container_usage(&req.get_ref().container_id)
            .await?;
        Ok(Response::new(api::ContainerStatsResponse {
            stats: Some(super::stats::container_stats(&u)),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<api::ListContainerStatsRequest>,
    ) -> Result<Response<api::ListContainerStatsResponse>, Status> {
        let stats = self.container_stats_for(req.into_inner().filter).await?;
        Ok(Response::new(api::ListContainerStatsResponse { stats }))
    }

    async fn stream_container_stats(
        &self,
        req: Request<api::StreamContainerStatsRequest>,
    ) -> Result<Response<BoxStream<api::StreamContainerStatsResponse>>, Status> {
        let all = self.container_stats_for(req.into_inner().filter).await?;
        let chunks: Vec<Result<api::StreamContainerStatsResponse, Status>> = all
            .chunks(STREAM_CHUNK)
            .map(|c| {
                Ok(api::StreamContainerStatsResponse {
                    container_stats: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<api::PodSandboxStatsRequest>,
    ) -> Result<Response<api::PodSandboxStatsResponse>, Status> {
        let pod = self.engine.pod_status(&req.get_ref().pod_sandbox_id)?;
        let id = pod.id.clone();
        let mut u = self.engine.pod_usage(move |p| p.id == id).await?;
        let u = u.pop().ok_or_else(|| {
            super::error::not_found(format!("pod sandbox {} is not ready", pod.id))
        })?;
        Ok(Response::new(api::PodSandboxStatsResponse {
            stats: Some(super::stats::pod_stats(&u)),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<api::ListPodSandboxStatsRequest>,
    ) -> Result<Response<api::ListPodSandboxStatsResponse>, Status> {
        let stats = self.pod_stats_for(req.into_inner().filter).await?;
        Ok(Response::new(api::ListPodSandboxStatsResponse { stats }))
    }

    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<api::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<BoxStream<api::StreamPodSandboxStatsResponse>>, Status> {
        let all = self.pod_stats_for(req.into_inner().filter).await?;
        let chunks: Vec<Result<api::StreamPodSandboxStatsResponse, Status>> = all
            .chunks(STREAM_CHUNK)
            .map(|c| {
                Ok(api::StreamPodSandboxStatsResponse {
                    pod_sandbox_stats: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn get_container_events(
        &self,
        _req: Request<api::GetEventsRequest>,
    ) -> Result<Response<BoxStream<api::ContainerEventResponse>>, Status> {
        let mut rx = self.engine.subscribe();
        let engine = self.engine.clone();
        let stream = async_stream_events(move |tx| async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => {
                        if tx
                            .send(Ok(Runtime::event_response(&engine, &ev)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        engine.count_dropped_subscriber();
                        tracing::warn!(
                            missed = n,
                            "a GetContainerEvents subscriber fell behind and is dropped"
                        );
                        let _ = tx
                            .send(Err(super::error::exhausted(format!(
                                "event subscriber fell {n} events behind and was dropped; subscribe again"
                            ))))
                            .await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn exec(
        &self,
        req: Request<api::ExecRequest>,
    ) -> Result<Response<api::ExecResponse>, Status> {
        let r = req.into_inner();
        if !(r.stdout || r.stderr || r.stdin) {
            return Err(super::error::invalid(
                "one of stdin, stdout and stderr must be set",
            ));
        }
        if r.tty && r.stderr {
            return Err(super::error::invalid(
                "tty and stderr cannot both be set: a terminal has one output stream",
            ));
        }
        let url = self.streaming.exec_url(
            &r.container_id,
            r.cmd,
            r.tty,
            (r.stdin, r.stdout, r.stderr),
        )?;
        Ok(Response::new(api::ExecResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<api::PortForwardRequest>,
    ) -> Result<Response<api::PortForwardResponse>, Status> {
        let r = req.into_inner();
        let url = self.streaming.port_forward_url(&r.pod_sandbox_id, r.port)?;
        Ok(Response::new(api::PortForwardResponse { url }))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<api::ListMetricDescriptorsRequest>,
    ) -> Result<Response<api::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(api::ListMetricDescriptorsResponse {
            descriptors: super::metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<api::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<api::ListPodSandboxMetricsResponse>, Status> {
        let usage = self
            .engine
            .pod_usage_to(|_| true, crate::engine::usage::Depth::Metrics)
            .await?;
        Ok(Response::new(api::ListPodSandboxMetricsResponse {
            pod_metrics: usage.iter().map(super::metrics::pod_metrics).collect(),
        }))
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _req: Request<api::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<BoxStream<api::StreamPodSandboxMetricsResponse>>, Status> {
        let usage = self
            .engine
            .pod_usage_to(|_| true, crate::engine::usage::Depth::Metrics)
            .await?;
        let chunks: Vec<Result<api::StreamPodSandboxMetricsResponse, Status>> = usage
            .chunks(STREAM_CHUNK)
            .map(|c| {
                Ok(api::StreamPodSandboxMetricsResponse {
                    pod_sandbox_metrics: c.iter().map(super::metrics::pod_metrics).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<api::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<api::UpdatePodSandboxResourcesResponse>, Status> {
        let r = req.into_inner();
        let res = r
            .resources
            .as_ref()
            .ok_or_else(|| super::error::missing("resources"))?;
        self.engine
            .update_pod_resources(&r.pod_sandbox_id, convert::resources(res))
            .await?;
        Ok(Response::new(api::UpdatePodSandboxResourcesResponse {}))
    }

    async fn attach(
        &self,
        req: Request<api::AttachRequest>,
    ) -> Result<Response<api::AttachResponse>, Status> {
        let r = req.into_inner();
        if !(r.stdout || r.stderr || r.stdin) {
            return Err(super::error::invalid(
                "one of stdin, stdout and stderr must be set",
            ));
        }
        let url = self.streaming.attach_url(&r.container_id)?;
        Ok(Response::new(api::AttachResponse { url }))
    }
}

impl Runtime {
    /// The CRI form of an engine event, with the pod's status and its containers' statuses at
    /// the time it is sent.
    fn event_response(
        engine: &Engine,
        ev: &crate::engine::events::Event,
    ) -> api::ContainerEventResponse {
        use crate::engine::events::EventKind;
        let kind = match ev.kind {
            EventKind::Created => api::ContainerEventType::ContainerCreatedEvent,
            EventKind::Started => api::ContainerEventType::ContainerStartedEvent,
            EventKind::Stopped => api::ContainerEventType::ContainerStoppedEvent,
            EventKind::Deleted => api::ContainerEventType::ContainerDeletedEvent,
        };
        let pod = ev
            .pod
            .as_deref()
            .cloned()
            .or_else(|| engine.pod(&ev.pod_id));
        let containers_statuses = engine
            .list_containers()
            .into_iter()
            .filter(|c| c.pod_id == ev.pod_id)
            .map(|c| convert::container_status(&c))
            .collect();
        api::ContainerEventResponse {
            container_id: ev.container_id.clone(),
            container_event_type: kind as i32,
            created_at: ev.at_ns,
            pod_sandbox_status: pod.as_ref().map(convert::pod_status),
            containers_statuses,
        }
    }

    async fn container_stats_for(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Result<Vec<api::ContainerStats>, Status> {
        let f = filter.unwrap_or_default();
        let usage = self
            .engine
            .container_usage(move |c| {
                (f.id.is_empty() || c.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
                    && convert::labels_match(&c.config.labels, &f.label_selector)
            })
            .await?;
        Ok(usage.iter().map(super::stats::container_stats).collect())
    }

    async fn pod_stats_for(
        &self,
        filter: Option<api::PodSandboxStatsFilter>,
    ) -> Result<Vec<api::PodSandboxStats>, Status> {
        let f = filter.unwrap_or_default();
        let usage = self
            .engine
            .pod_usage(move |p| {
                (f.id.is_empty() || p.id.starts_with(&f.id))
                    && convert::labels_match(&p.config.labels, &f.label_selector)
            })
            .await?;
        Ok(usage.iter().map(super::stats::pod_stats).collect())
    }
}
