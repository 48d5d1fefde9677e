//! ImageService: proto ⇄ the image domain.

use super::api::{self, image_service_server::ImageService};
use super::error::missing;
use crate::image::{auth::RequestAuth, image_user, ImageRecord, Images};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

type ImageStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<api::StreamImagesResponse, Status>> + Send + 'static>,
>;

/// Images per message of the `StreamImages` RPC.
const STREAM_CHUNK: usize = 100;

pub struct ImageApi {
    images: Arc<Images>,
}

impl ImageApi {
    pub fn new(images: Arc<Images>) -> Self {
        ImageApi { images }
    }
}

fn to_api(images: &Images, r: &ImageRecord) -> api::Image {
    let (uid, username) = image_user(&r.user);
    api::Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid: uid.map(|value| api::Int64Value { value }),
        username,
        spec: Some(api::ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        pinned: images.is_pinned(r),
    }
}

fn image_ref(spec: &Option<api::ImageSpec>, field: &str) -> Result<String, Status> {
    match spec {
        Some(s) if !s.image.is_empty() => Ok(s.image.clone()),
        _ => Err(missing(field)),
    }
}

fn filter_ref(filter: &Option<api::ImageFilter>) -> Option<String> {
    filter
        .as_ref()
        .and_then(|f| f.image.as_ref())
        .map(|s| s.image.clone())
}

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(
        &self,
        req: Request<api::ListImagesRequest>,
    ) -> Result<Response<api::ListImagesResponse>, Status> {
        let f = filter_ref(&req.get_ref().filter);
        let images = self
            .images
            .list(f.as_deref())
            .iter()
            .map(|r| to_api(&self.images, r))
            .collect();
        Ok(Response::new(api::ListImagesResponse { images }))
    }

    async fn stream_images(
        &self,
        req: Request<api::StreamImagesRequest>,
    ) -> Result<Response<ImageStream>, Status> {
        let f = filter_ref(&req.get_ref().filter);
        let all: Vec<api::Image> = self
            .images
            .list(f.as_deref())
            .iter()
            .map(|r| to_api(&self.images, r))
            .collect();
        let chunks: Vec<Result<api::StreamImagesResponse, Status>> = all
            .chunks(STREAM_CHUNK)
            .map(|c| Ok(api::StreamImagesResponse { images: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn image_status(
        &self,
        req: Request<api::ImageStatusRequest>,
    ) -> Result<Response<api::ImageStatusResponse>, Status> {
        let r = req.get_ref();
        let name = image_ref(&r.image, "image.image")?;
        let Some(rec) = self.images.status(&name) else {
            return Ok(Response::new(api::ImageStatusResponse {
                image: None,
                info: HashMap::new(),
            }));
        };
        let mut info = HashMap::new();
        if r.verbose {
            let config = self.images.config_json(&rec)?;
            let v = serde_json::json!({
                "id": rec.id,
                "manifestDigest": rec.manifest_digest,
                "indexDigest": rec.index_digest,
                "chainIDs": rec.layers.iter().map(|l| &l.chain_id).collect::<Vec<_>>(),
                "layers": rec.layers,
                "imageSpec": config,
                "verified": rec.verified,
                "signatures": rec.signatures.len(),
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(api::ImageStatusResponse {
            image: Some(to_api(&self.images, &rec)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<api::PullImageRequest>,
    ) -> Result<Response<api::PullImageResponse>, Status> {
        let r = req.into_inner();
        let name = image_ref(&r.image, "image.image")?;
        let creds = match &r.auth {
            Some(a) => RequestAuth {
                username: &a.username,
                password: &a.password,
                auth: &a.auth,
                identity_token: &a.identity_token,
                registry_token: &a.registry_token,
            }
            .credentials()?,
            None => None,
        };
        // The pod's namespace chooses its signature policy (CRI-O's signature_policy_dir).
        let namespace = r
            .sandbox_config
            .as_ref()
            .and_then(|c| c.metadata.as_ref())
            .map(|m| m.namespace.as_str())
            .unwrap_or("");
        crate::engine::validate::name("sandbox_config.metadata.namespace", namespace, false)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let rec = self.images.pull(&name, creds, namespace).await;
        // A pull allocates buffers on many threads; give the memory back once it is done.
        crate::sys::process::trim_heap();
        Ok(Response::new(api::PullImageResponse { image_ref: rec?.id }))
    }

    async fn remove_image(
        &self,
        req: Request<api::RemoveImageRequest>,
    ) -> Result<Response<api::RemoveImageResponse>, Status> {
        let name = image_ref(&req.get_ref().image, "image.image")?;
        if let Some(id) = self.images.remove(&name).await? {
            tracing::info!(image = %name, %id, "image removed");
        }
        Ok(Response::new(api::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<api::ImageFsInfoRequest>,
    ) -> Result<Response<api::ImageFsInfoResponse>, Status> {
        let u = self.images.usage().await?;
        Ok(Response::new(api::ImageFsInfoResponse {
            image_filesystems: vec![api::FilesystemUsage {
                timestamp: u.timestamp_ns,
                fs_id: Some(api::FilesystemIdentifier {
                    mountpoint: u.mountpoint.to_string_lossy().into_owned(),
                }),
                used_bytes: Some(api::UInt64Value {
                    value: u.used_bytes,
                }),
                inodes_used: Some(api::UInt64Value {
                    value: u.inodes_used,
                }),
            }],
            container_filesystems: vec![],
        }))
    }
}
