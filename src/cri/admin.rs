//! ferrio's own operator API (not CRI), served on the same socket.

use super::admin_api::{self, admin_server::Admin};
use crate::image::Images;
use std::path::PathBuf;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminApi {
    images: Arc<Images>,
}

impl AdminApi {
    pub fn new(images: Arc<Images>) -> Self {
        AdminApi { images }
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
            return Err(Status::invalid_argument(
                "paths: at least one archive is required",
            ));
        }
        if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
            return Err(Status::invalid_argument(format!(
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
}
