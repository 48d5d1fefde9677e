//! Pulling from registries with oci-client: endpoints from registries.conf (mirrors first),
//! credentials from the request or the auth file, the platform chosen from an index, every
//! document and blob checked against its digest and size, layers downloaded in parallel (bounded
//! across all pulls) and unpacked while they download, a stall timeout on every read.

use super::auth::{AuthFile, Credentials};
use super::http::{Authorization, RegistryHttp};
use super::manifest::{self, Descriptor, Parsed, RecordParts};
use super::policy::{self, Policy, SigstoreSignature};
use super::registries::{Endpoint, RegistriesConf};
use super::store::{ImageRecord, LayerRecord, Store};
use super::unpack::{error_chain, sha256_digest, unpack_layer, LayerExpect};
use super::{reference, ImageError};
use bytes::Bytes;
use futures::StreamExt;
use oci_client::Reference;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const USER_AGENT: &str = concat!("ferrio/", env!("CARGO_PKG_VERSION"));

/// How often a long layer download logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub struct Puller {
    /// registries.conf and the auth file; replaced whole on SIGHUP (`Images::reload`).
    pub registries: std::sync::RwLock<Arc<RegistriesConf>>,
    pub auth_file: std::sync::RwLock<Option<Arc<AuthFile>>>,
    pub insecure: Vec<String>,
    /// No byte for this long aborts the pull; `None` disables.
    pub stall: Option<Duration>,
    /// Layer downloads in flight, across all pulls.
    pub downloads: Arc<Semaphore>,
    /// Bytes downloaded and layers reused, for the metrics.
    pub counters: Arc<super::PullCounters>,
    /// containers-certs.d: per-registry CA certificates and client certificates.
    pub certs_dir: std::path::PathBuf,
    /// The registry HTTP clients, kept between pulls.
    pub http: super::http::HttpClients,
    /// The signature policy's files.
    pub trust: Trust,
}

/// Where the signature policy lives (`image.signature_policy`, `signature_policy_dir`,
/// `registries_d`); read for every pull and create, so an edit applies at once.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub policy: std::path::PathBuf,
    pub policy_dir: std::path::PathBuf,
    pub registries_d: std::path::PathBuf,
}

impl Trust {
    /// The policy for pods of `namespace` (off the async workers), `None` without a policy file.
    pub async fn load(&self, namespace: &str) -> Result<Option<Policy>, ImageError> {
        let (t, ns) = (self.clone(), namespace.to_string());
        tokio::task::spawn_blocking(move || policy::load_for(&t.policy, &t.policy_dir, &ns))
            .await
            .map_err(|e| ImageError::Internal(e.to_string()))?
            .map_err(ImageError::Unsupported)
    }
}

/// What accepted an image at pull time, with the signatures that were found.
struct Trusted {
    sigstore: Vec<SigstoreSignature>,
    simple: Vec<Vec<u8>>,
    accepted: policy::Accepted,
}

/// A regular file of at most `max` bytes (a FIFO is not waited on); `None` when it does not
/// exist.
fn read_bounded(path: &std::path::Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    match crate::state::read_capped(path, max) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Most signatures read for one image, and the largest payload.
const MAX_SIGNATURES: usize = 32;
const MAX_PAYLOAD: u64 = 64 << 10;

/// One endpoint that answered, with what is needed to fetch the rest from it.
struct Source {
    http: RegistryHttp,
    authz: Authorization,
    reference: Reference,
    location: String,
}

type BlobStream = futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>;

impl Source {
    /// A blob's bytes as they arrive, through the endpoint's kept HTTP client (its connection
    /// and TLS set-up shared with the manifest requests; error bodies capped at 64 KiB).
    async fn blob(&self, desc: &Descriptor, name: &str) -> Result<BlobStream, ImageError> {
        self.http
            .blob(
                &self.reference,
                &desc.digest,
                &self.authz,
                name,
                &self.location,
            )
            .await
    }
}

impl Puller {
    /// Pulls `r` into `store` and returns the stored record.
    pub async fn pull(
        &self,
        store: &Arc<Store>,
        r: &Reference,
        creds: Option<Credentials>,
        namespace: &str,
    ) -> Result<ImageRecord, ImageError> {
        let mut phases = crate::telemetry::Phases::start("PullImage");
        let result: Result<ImageRecord, ImageError> = async {
            let name = r.whole();
            let started = Instant::now();
            let _active = super::ActivePull::new(&self.counters, &name);
            let registries = self
                .registries
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let endpoints = registries.endpoints(r, &self.insecure)?;
            let mut failures: Vec<(String, ImageError)> = Vec::new();
            let mut found = None;
            for ep in &endpoints {
                // The request's credentials are for the image's registry: a mirror elsewhere gets
                // only what the auth file holds for it.
                let own = ep.reference.registry() == r.registry();
                let auth = self.auth_for(ep, if own { &creds } else { &None });
                let (dir, host) = (self.certs_dir.clone(), ep.reference.registry().to_string());
                let tls = tokio::task::spawn_blocking(move || super::tls::load(&dir, &host))
                    .await
                    .map_err(|e| ImageError::Internal(e.to_string()))??;
                let http = RegistryHttp::new(ep, self.stall, USER_AGENT, tls.as_ref(), &self.http)?;
                let location = ep.reference.whole();
                phases.mark("endpoint");
                tracing::debug!(image = %name, endpoint = %location, mirror = ep.mirror, "fetching manifest");
                match self
                    .fetch_top(&http, &ep.reference, auth.as_ref(), &name, &location)
                    .await
                {
                    Ok((m, authz)) => {
                        // Blobs come the same way, with the authorization obtained here.
                        found = Some((
                            Source {
                                http,
                                authz,
                                reference: ep.reference.clone(),
                                location,
                            },
                            m,
                        ));
                        break;
                    }
                    Err(e) => {
                        tracing::info!(image = %name, endpoint = %location, error = %e, "endpoint failed");
                        failures.push((location, e));
                    }
                }
            }
            let Some((src, (top_bytes, top_digest))) = found else {
                return Err(combine_failures(&name, failures));
            };
            phases.mark("auth_manifest");
            // The signature policy, before any layer is fetched.
            let trusted = self
                .check_trust(&src, r, &top_digest, namespace, &name)
                .await?;
            phases.mark("trust");

            // An index: choose this host's platform and fetch its manifest.
            let (manifest_bytes, manifest_digest, index) = match manifest::parse(&name, &top_bytes)? {
                Parsed::Manifest(_) => (top_bytes.clone(), top_digest.clone(), None),
                Parsed::Index(entries) => {
                    let entry =
                        manifest::select_platform(&entries).ok_or_else(|| ImageError::NotFound {
                            reference: name.clone(),
                            detail: format!(
                                "no manifest for linux/{} in the image index",
                                manifest::host_platform().0
                            ),
                        })?;
                    if entry.size > manifest::MAX_DOCUMENT {
                        return Err(ImageError::Corrupt(format!(
                            "{name}: the index declares a manifest of {} bytes (limit {})",
                            entry.size,
                            manifest::MAX_DOCUMENT
                        )));
                    }
                    let pinned = src.reference.clone_with_digest(entry.digest.clone());
                    let bytes = self
                        .within(
                            &name,
                            src.http.manifest(&pinned, &src.authz, &name, &src.location),
                        )
                        .await??;
                    verify_document(
                        &format!("manifest {}", entry.digest),
                        &bytes,
                        &entry.digest,
                        Some(entry.size),
                    )?;
                    (
                        bytes,
                        entry.digest.clone(),
                        Some((top_bytes.clone(), top_digest.clone())),
                    )
                }
            };
            let Parsed::Manifest(m) = manifest::parse(&name, &manifest_bytes)? else {
                return Err(ImageError::Corrupt(format!(
                    "{name}: an index points to another index"
                )));
            };

            let _doc_lease = store.lease(
                [manifest_digest.clone(), m.config.digest.clone()]
                    .into_iter()
                    .chain(index.as_ref().map(|(_, d)| d.clone())),
            );
            phases.mark("index");
            let config_bytes = self.fetch_document(&src, &m.config, &name).await?;
            phases.mark("config");
            let config = manifest::parse_config(&name, &config_bytes)?;
            let plan = manifest::plan_layers(&name, &m, &config)?;
            let _layer_lease = store.lease(plan.iter().map(|(_, _, chain)| chain.clone()));

            let total: u64 = plan
                .iter()
                .fold(0u64, |a, (d, _, _)| a.saturating_add(d.size));
            let layers =
                futures::future::try_join_all(plan.iter().map(|(desc, diff_id, chain)| {
                    self.layer(store, &src, desc, diff_id, chain, &name)
                }))
                .await?;
            phases.mark("layers");

            let mut rec = manifest::build_record(RecordParts {
                config_digest: m.config.digest.clone(),
                config_size: config_bytes.len() as u64,
                config,
                manifest_digest,
                index_digest: index.as_ref().map(|(_, d)| d.clone()),
                layers,
                repo_tags: reference::tagged(r).into_iter().collect(),
                repo_digests: vec![reference::digested(r, &top_digest)],
            });
            if let Some(t) = trusted {
                use base64::Engine as _;
                rec.signatures = t.sigstore;
                rec.simple_signatures = t
                    .simple
                    .iter()
                    .map(|s| base64::engine::general_purpose::STANDARD.encode(s))
                    .collect();
                rec.verified = Some(t.accepted.describe());
            }
            // Disk writes and fsyncs: off the async workers.
            let st = store.clone();
            let config_digest = m.config.digest.clone();
            let rec = tokio::task::spawn_blocking(move || {
                if let Some((bytes, digest)) = &index {
                    st.put_blob(digest, bytes)?;
                }
                st.put_blob(&rec.manifest_digest, &manifest_bytes)?;
                st.put_blob(&config_digest, &config_bytes)?;
                st.commit_image(rec)
            })
            .await
            .map_err(|e| ImageError::Internal(format!("committing the image: {e}")))??;
            phases.mark("commit");
            tracing::info!(
                image = %name, id = %rec.id, from = %src.location, bytes = total,
                elapsed_ms = started.elapsed().as_millis(), "image pulled"
            );
            Ok(rec)
        }
        .await;
        phases.finish(&result);
        result
    }

    /// The signature policy for `namespace` applied to the image `r` whose top-level manifest
    /// is `digest`: its signatures fetched when a requirement needs them (sigstore ones from
    /// the registry when registries.d sets `use-sigstore-attachments`, simple ones from its
    /// `lookaside`). A refusal is PermissionDenied naming the requirement. `None`: no policy.
    async fn check_trust(
        &self,
        src: &Source,
        r: &Reference,
        digest: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Trusted>, ImageError> {
        let Some(policy) = self.trust.load(namespace).await? else {
            return Ok(None);
        };
        let image = r.whole();
        let reqs = policy.requirements_for(&image).1;
        let (needs_sigstore, needs_simple) = (
            reqs.iter().any(policy::Requirement::needs_sigstore),
            reqs.iter().any(policy::Requirement::needs_simple),
        );
        let rd = if needs_sigstore || needs_simple {
            let dir = self.trust.registries_d.clone();
            tokio::task::spawn_blocking(move || policy::RegistriesD::load(&dir))
                .await
                .map_err(|e| ImageError::Internal(e.to_string()))?
                .map_err(ImageError::Unsupported)?
        } else {
            policy::RegistriesD::default()
        };
        let mut sigstore = Vec::new();
        let mut simple = Vec::new();
        let mut hints = Vec::new();
        if needs_sigstore {
            if rd.uses_sigstore_attachments(&image) {
                sigstore = self.sigstore_signatures(src, digest, name).await?;
            } else {
                hints.push("registries.d does not set use-sigstore-attachments for this repository, so no sigstore signature was looked for");
            }
        }
        if needs_simple {
            match rd.lookaside(&image) {
                Some(base) => {
                    simple = self
                        .simple_signatures(&base, r.repository(), digest, name)
                        .await?;
                }
                None => hints.push("registries.d names no lookaside for this repository, so no GPG signature was looked for"),
            }
        }
        let (img, dg) = (image.clone(), digest.to_string());
        let (sigstore, simple, verdict) = tokio::task::spawn_blocking(move || {
            let found = policy::Signatures {
                sigstore: &sigstore,
                simple: &simple,
            };
            let v = policy.evaluate(&img, &dg, found, &super::gpg::verify);
            (sigstore, simple, v)
        })
        .await
        .map_err(|e| ImageError::Internal(e.to_string()))?;
        match verdict {
            Ok(a) => {
                tracing::info!(image = %name, namespace, verified = %a.describe(), "image accepted by the signature policy");
                Ok(Some(Trusted {
                    sigstore,
                    simple,
                    accepted: a,
                }))
            }
            Err(mut why) => {
                for h in hints {
                    why.push_str(&format!(" ({h})"));
                }
                Err(ImageError::Rejected(why))
            }
        }
    }

    /// The simple signatures (`signature-1`, `signature-2`, … until one is missing) of manifest
    /// `digest` in the lookaside store `base` (`file://` or `http(s)://`).
    async fn simple_signatures(
        &self,
        base: &str,
        repository: &str,
        digest: &str,
        name: &str,
    ) -> Result<Vec<Vec<u8>>, ImageError> {
        let fail = |e: String| ImageError::Registry {
            reference: name.to_string(),
            detail: format!("reading signatures from {base}: {e}"),
        };
        let mut out = Vec::new();
        let client = if base.starts_with("http://") || base.starts_with("https://") {
            Some(
                super::http::client_builder()
                    .timeout(Duration::from_secs(30))
                    .user_agent(USER_AGENT)
                    .build()
                    .map_err(|e| fail(e.to_string()))?,
            )
        } else if base.starts_with("file://") {
            None
        } else {
            return Err(ImageError::Unsupported(format!(
                "lookaside {base:?}: only file://, http:// and https:// are supported"
            )));
        };
        for i in 1..=MAX_SIGNATURES {
            let url = policy::lookaside_url(base, repository, digest, i);
            let got = match &client {
                None => {
                    let path = std::path::PathBuf::from(url.trim_start_matches("file://"));
                    tokio::task::spawn_blocking(move || read_bounded(&path, MAX_PAYLOAD))
                        .await
                        .map_err(|e| ImageError::Internal(e.to_string()))?
                        .map_err(|e| fail(e.to_string()))?
                }
                Some(c) => {
                    let resp = c.get(&url).send().await.map_err(|e| fail(e.to_string()))?;
                    match resp.status() {
                        reqwest::StatusCode::NOT_FOUND => None,
                        s if s.is_success() => {
                            // Read in chunks, stopping past the cap: never the whole body.
                            let mut resp = resp;
                            let mut b = Vec::new();
                            while let Some(chunk) =
                                resp.chunk().await.map_err(|e| fail(e.to_string()))?
                            {
                                b.extend_from_slice(&chunk);
                                if b.len() as u64 > MAX_PAYLOAD {
                                    return Err(fail(format!(
                                        "{url}: larger than {MAX_PAYLOAD} bytes"
                                    )));
                                }
                            }
                            Some(b)
                        }
                        s => return Err(fail(format!("{url}: HTTP {s}"))),
                    }
                }
            };
            match got {
                Some(b) => out.push(b),
                None => break,
            }
        }
        Ok(out)
    }

    /// The sigstore signatures cosign stores beside manifest `digest` (the tag
    /// `sha256-<hex>.sig`: a manifest whose layers are payloads, each with its signature in an
    /// annotation). No such tag: none.
    async fn sigstore_signatures(
        &self,
        src: &Source,
        digest: &str,
        name: &str,
    ) -> Result<Vec<SigstoreSignature>, ImageError> {
        use base64::Engine as _;
        let tag = policy::signature_tag(digest);
        let sig_ref = Reference::with_tag(
            src.reference.registry().to_string(),
            src.reference.repository().to_string(),
            tag.clone(),
        );
        let bytes = match self
            .within(
                name,
                src.http.manifest(&sig_ref, &src.authz, name, &src.location),
            )
            .await?
        {
            Ok(b) => b,
            Err(ImageError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let m: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Corrupt(format!("{name}: signature manifest {tag}: {e}")))?;
        let mut out = Vec::new();
        for layer in m["layers"].as_array().into_iter().flatten() {
            if layer["mediaType"].as_str() != Some(policy::COSIGN_LAYER_TYPE) {
                continue;
            }
            let Some(sig) = layer["annotations"][policy::COSIGN_SIGNATURE_ANNOTATION].as_str()
            else {
                continue;
            };
            if out.len() == MAX_SIGNATURES {
                tracing::warn!(image = %name, "more than {MAX_SIGNATURES} signatures; the rest are ignored");
                break;
            }
            let desc: Descriptor = serde_json::from_value(layer.clone()).map_err(|e| {
                ImageError::Corrupt(format!("{name}: signature manifest {tag}: {e}"))
            })?;
            if desc.size > MAX_PAYLOAD {
                continue;
            }
            let payload = self.fetch_document(src, &desc, name).await?;
            out.push(SigstoreSignature {
                payload: base64::engine::general_purpose::STANDARD.encode(payload),
                signature: sig.to_string(),
            });
        }
        Ok(out)
    }

    /// The request's credentials, else what the auth file holds for this endpoint.
    fn auth_for(&self, ep: &Endpoint, creds: &Option<Credentials>) -> Option<Credentials> {
        creds.clone().or_else(|| {
            self.auth_file
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(|f| f.lookup(ep.reference.registry(), ep.reference.repository()))
        })
    }

    async fn within<T>(
        &self,
        name: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, ImageError> {
        match self.stall {
            Some(d) => tokio::time::timeout(d, fut)
                .await
                .map_err(|_| ImageError::Stalled {
                    reference: name.to_string(),
                    secs: d.as_secs(),
                }),
            None => Ok(fut.await),
        }
    }

    /// The top-level manifest or index (size-capped), checked against the reference's digest
    /// when it has one, and how the endpoint authorised it.
    async fn fetch_top(
        &self,
        http: &RegistryHttp,
        r: &Reference,
        auth: Option<&Credentials>,
        name: &str,
        location: &str,
    ) -> Result<((Bytes, String), Authorization), ImageError> {
        let (bytes, authz) = self
            .within(name, async {
                let authz = http.authorize(r, auth, name).await?;
                let bytes = http.manifest(r, &authz, name, location).await?;
                Ok::<_, ImageError>((bytes, authz))
            })
            .await??;
        let digest = sha256_digest(&bytes);
        if let Some(want) = r.digest() {
            if want != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest of {name}"),
                    expected: want.into(),
                    actual: digest,
                });
            }
        }
        Ok(((bytes, digest), authz))
    }

    /// A small blob (the config), read whole and checked.
    async fn fetch_document(
        &self,
        src: &Source,
        desc: &Descriptor,
        name: &str,
    ) -> Result<Vec<u8>, ImageError> {
        if desc.size > manifest::MAX_DOCUMENT {
            return Err(ImageError::Corrupt(format!(
                "{name}: config of {} bytes is too large",
                desc.size
            )));
        }
        let mut stream = self.within(name, src.blob(desc, name)).await??;
        let mut data = Vec::with_capacity(usize::try_from(desc.size).unwrap_or(0));
        while let Some(chunk) = self.within(name, stream.next()).await? {
            let chunk = chunk.map_err(|e| read_error(name, &desc.digest, e))?;
            data.extend_from_slice(&chunk);
            if data.len() as u64 > desc.size {
                break;
            }
        }
        verify_document(
            &format!("config {}", desc.digest),
            &data,
            &desc.digest,
            Some(desc.size),
        )?;
        Ok(data)
    }

    /// One layer: reused when its chain ID is stored, otherwise downloaded and unpacked at once.
    /// Its phases are its own (PullLayer): layers are fetched in parallel, so not PullImage's.
    async fn layer(
        &self,
        store: &Arc<Store>,
        src: &Source,
        desc: &Descriptor,
        diff_id: &str,
        chain: &str,
        name: &str,
    ) -> Result<LayerRecord, ImageError> {
        let mut phases = crate::telemetry::Phases::start("PullLayer");
        let result: Result<LayerRecord, ImageError> = async {
            let record = |digest: String, size: u64, unpacked_size: u64| LayerRecord {
                chain_id: chain.to_string(),
                diff_id: diff_id.to_string(),
                digest,
                size,
                media_type: desc.media_type.clone(),
                unpacked_size,
            };
            if store.layer_exists(chain) {
                tracing::debug!(image = %name, layer = %desc.digest, "layer already stored, reused");
                self.counters.layers_reused.fetch_add(1, Relaxed);
                return Ok(record(
                    desc.digest.clone(),
                    desc.size,
                    layer_unpacked_size(store, chain).unwrap_or(0),
                ));
            }
            let _permit = self
                .downloads
                .acquire()
                .await
                .map_err(|_| ImageError::Internal("download limiter closed".into()))?;
            phases.mark("slot");
            let mut stream = self.within(name, src.blob(desc, name)).await??;
            phases.mark("blob_request");

            let tmp = store.temp_dir("layer-")?;
            let expect = LayerExpect {
                what: format!("layer {} of {name}", desc.digest),
                digest: Some(desc.digest.clone()),
                size: Some(desc.size),
                diff_id: Some(diff_id.to_string()),
            };
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
            // The unpacker owns the temporary directory: if anything fails, or this pull is
            // cancelled, it is removed once the unpacker has stopped writing into it.
            let unpacker = tokio::task::spawn_blocking(move || {
                let diff = tmp.path().join("diff");
                std::fs::create_dir(&diff)
                    .map_err(|e| ImageError::io("creating layer directory", e))?;
                let u = unpack_layer(
                    ChannelReader {
                        rx,
                        cur: Bytes::new(),
                    },
                    &expect,
                    &diff,
                )?;
                Ok::<_, ImageError>((tmp, u))
            });

            let mut received: u64 = 0;
            let mut last_log = Instant::now();
            let mut failed = None;
            loop {
                let next = match self.within(name, stream.next()).await {
                    Ok(n) => n,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                let Some(chunk) = next else { break };
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        failed = Some(read_error(name, &desc.digest, e));
                        break;
                    }
                };
                received += chunk.len() as u64;
                self.counters.bytes.fetch_add(chunk.len() as u64, Relaxed);
                if received > desc.size {
                    failed = Some(ImageError::SizeMismatch {
                        what: format!("layer {} of {name}", desc.digest),
                        expected: desc.size,
                        actual: received,
                    });
                    break;
                }
                if received == chunk.len() as u64 {
                    self.counters
                        .layer_progress(name, &desc.digest.to_string(), received, desc.size);
                }
                if last_log.elapsed() >= PROGRESS_EVERY {
                    last_log = Instant::now();
                    self.counters
                        .layer_progress(name, &desc.digest.to_string(), received, desc.size);
                    tracing::info!(image = %name, layer = %desc.digest, received, total = desc.size, "pull progress");
                }
                if tx.send(chunk).await.is_err() {
                    break; // the unpacker stopped; its error says why
                }
            }
            drop(tx);
            let unpacked = unpacker
                .await
                .map_err(|e| ImageError::Internal(format!("layer unpacker: {e}")))?;
            if let Some(e) = failed {
                return Err(e);
            }
            let (tmp, u) = unpacked?;
            phases.mark("transfer_unpack");
            let rec = record(u.digest, u.size, u.unpacked_size);
            let (st, r2) = (store.clone(), rec.clone());
            tokio::task::spawn_blocking(move || st.commit_layer(tmp, &r2))
                .await
                .map_err(|e| ImageError::Internal(format!("committing a layer: {e}")))??;
            phases.mark("commit_layer");
            Ok(rec)
        }
        .await;
        phases.finish(&result);
        result
    }
}

fn layer_unpacked_size(store: &Store, chain: &str) -> Option<u64> {
    let p = store.layer_diff_path(chain).with_file_name("layer.json");
    crate::state::read_json::<LayerRecord>(&p)
        .ok()
        .map(|l| l.unpacked_size)
}

fn verify_document(
    what: &str,
    data: &[u8],
    digest: &str,
    size: Option<u64>,
) -> Result<(), ImageError> {
    if let Some(s) = size {
        if data.len() as u64 != s {
            return Err(ImageError::SizeMismatch {
                what: what.into(),
                expected: s,
                actual: data.len() as u64,
            });
        }
    }
    let actual = sha256_digest(data);
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            what: what.into(),
            expected: digest.into(),
            actual,
        });
    }
    Ok(())
}

fn read_error(name: &str, digest: &str, e: std::io::Error) -> ImageError {
    // oci-client checks digests while streaming and reports a mismatch as an I/O error.
    let text = error_chain(&e);
    if text.contains("Expected") || text.to_lowercase().contains("digest") {
        return ImageError::Corrupt(format!("blob {digest} of {name}: {text}"));
    }
    ImageError::Registry {
        reference: name.into(),
        detail: format!("reading blob {digest}: {text}"),
    }
}

/// When every endpoint failed: the registry's own answer decides the kind (a mirror that lacks
/// the image says little); the message lists every endpoint.
pub(super) fn combine_failures(name: &str, mut failures: Vec<(String, ImageError)>) -> ImageError {
    let Some((_, last)) = failures.pop() else {
        return ImageError::Internal(format!("{name}: no endpoint to pull from"));
    };
    if failures.is_empty() {
        return last;
    }
    let mirrors: Vec<String> = failures
        .iter()
        .map(|(ep, e)| format!("mirror {ep}: {e}"))
        .collect();
    let suffix = format!(" (also tried: {})", mirrors.join("; "));
    match last {
        ImageError::NotFound { reference, detail } => ImageError::NotFound {
            reference,
            detail: detail + &suffix,
        },
        ImageError::Unauthenticated { reference, detail } => ImageError::Unauthenticated {
            reference,
            detail: detail + &suffix,
        },
        ImageError::Registry { reference, detail } => ImageError::Registry {
            reference,
            detail: detail + &suffix,
        },
        other => other,
    }
}

/// A blocking reader over the chunks the download task sends; EOF when the sender is dropped.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}
