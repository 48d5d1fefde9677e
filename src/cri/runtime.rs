//! RuntimeService: Version, Status and RuntimeConfig. Every other RPC answers `Unimplemented`
//! (the generated default) until the runtime core lands.

use super::api::{self, runtime_service_server::RuntimeService};
use crate::config::{CgroupDriver, Config};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub const RUNTIME_NAME: &str = "ferrio";
pub const CRI_VERSION: &str = "v1";

pub struct Runtime {
    config: Arc<Config>,
}

impl Runtime {
    pub fn new(config: Arc<Config>) -> Self {
        Runtime { config }
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
            api::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: "ferrio: CNI networking is not implemented yet".into(),
            },
        ];
        let mut info = HashMap::new();
        if req.get_ref().verbose {
            let cfg = serde_json::to_string(&*self.config)
                .map_err(|e| Status::internal(e.to_string()))?;
            info.insert("config".to_string(), cfg);
        }
        Ok(Response::new(api::StatusResponse {
            status: Some(api::RuntimeStatus { conditions }),
            info,
            runtime_handlers: vec![],
            features: None,
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
}
