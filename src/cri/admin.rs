//! ferrio's own operator API (not CRI), served on the same socket.

use super::admin_api::{self, admin_server::Admin};
use crate::engine::{ContainerState, Engine};
use crate::image::Images;
use crate::monitor::proto::ExitInfo;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminApi {
    images: Arc<Images>,
    engine: Arc<Engine>,
}

impl AdminApi {
    pub fn new(images: Arc<Images>, engine: Arc<Engine>) -> Self {
        AdminApi { images, engine }
    }
}

fn exit_file(e: &ExitInfo) -> admin_api::ExitFile {
    admin_api::ExitFile {
        exit_code: e.exit_code,
        signal: e.signal.unwrap_or(0),
        finished_at_ns: e.finished_at_ns,
        oom_killed: e.oom_killed,
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn import_images(
        &self,
        req: Request<admin_api::ImportImagesRequest>,
    ) -> Result<Response<admin_api::ImportImagesResponse>, Status> {
        let paths: Vec<PathBuf> = req
            .into_inner()
            .paths
            .into_iter()
            .map(PathBuf::from)
            .collect();
        if paths.is_empty() {
            return Err(super::error::invalid(
                "paths: at least one archive is required",
            ));
        }
        if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
            return Err(super::error::invalid(format!(
                "paths: {} is not absolute",
                p.display()
            )));
        }
        let done = self.images.import(paths).await?;
        let images = done
            .into_iter()
            .flat_map(|i| {
                let path = i.path.to_string_lossy().into_owned();
                i.images.into_iter().map(move |r| admin_api::ImportedImage {
                    path: path.clone(),
                    id: r.id,
                    repo_tags: r.repo_tags,
                })
            })
            .collect();
        Ok(Response::new(admin_api::ImportImagesResponse { images }))
    }

    async fn container_debug(
        &self,
        req: Request<admin_api::ContainerDebugRequest>,
    ) -> Result<Response<admin_api::ContainerDebugResponse>, Status> {
        let d = self
            .engine
            .container_debug(&req.get_ref().container_id)
            .await?;
        let monitor = match &d.monitor {
            Ok(m) => admin_api::MonitorState {
                answered: true,
                error: String::new(),
                pid: m.pid,
                started: m.started,
                exit: m.exit.as_ref().map(exit_file),
                protocol: m.protocol,
            },
            Err(e) => admin_api::MonitorState {
                answered: false,
                error: e.clone(),
                ..Default::default()
            },
        };
        let r = d.rec;
        Ok(Response::new(admin_api::ContainerDebugResponse {
            id: r.id,
            pod_sandbox_id: r.pod_id,
            name: r.config.name,
            state: match r.state {
                ContainerState::Creating => "creating",
                ContainerState::Created => "created",
                ContainerState::Running => "running",
                ContainerState::Exited => "exited",
            }
            .into(),
            pid: r.pid,
            monitor_pid: r.monitor_pid,
            cgroup: r.cgroup,
            runtime_handler: r.handler,
            exit_code: r.exit_code,
            reason: r.reason,
            run_dir: d.run_dir.display().to_string(),
            exit_file_path: d.exit_file_path.display().to_string(),
            exit_file: d.exit_file.as_ref().map(exit_file),
            monitor: Some(monitor),
            log_path: r.log_path.display().to_string(),
        }))
    }
}
