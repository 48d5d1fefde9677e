//! The image service: pull, store, list, resolve, remove and import OCI images.
//!
//! `reference` normalises names, `registries` and `auth` decide where and as whom to pull,
//! `pull` talks to registries (`http` makes the size-capped requests oci-client would read whole), `unpack` turns layer tars into overlayfs lower dirs, `store`
//! keeps it all on disk, `archive` imports tarballs. This file ties them together and
//! coalesces concurrent pulls of one image.

pub mod archive;
pub mod auth;
mod error;
mod gpg;
pub mod http;
pub mod manifest;
pub mod pinned;
pub mod policy;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod store;
pub mod tls;
pub mod unpack;

pub use error::ImageError;
pub use store::{ImageRecord, LayerRecord, Store};

use crate::config::Config;
use auth::{AuthFile, Credentials};
use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};
use pull::Puller;
use registries::RegistriesConf;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type PullResult = BoxFuture<'static, Result<ImageRecord, ImageError>>;
type PullFuture = Shared<PullResult>;

pub struct Images {
    store: Arc<Store>,
    puller: Arc<Puller>,
    /// Pulls in flight by normalised reference. Weak: when every caller has gone (deadline,
    /// cancellation), the pull itself is dropped and cancelled.
    inflight: Mutex<HashMap<String, WeakShared<PullResult>>>,
    /// Who uses an image (set by the engine), for RemoveImage.
    users: std::sync::RwLock<Option<ImageUsers>>,
    import_dir: PathBuf,
    /// `image.pinned_images`, compiled (reloaded on SIGHUP).
    pinned: std::sync::RwLock<Arc<pinned::PinnedImages>>,
    /// IDs of the images the import dir brought (pinned: they may not be pullable again).
    imported: std::sync::RwLock<std::collections::HashSet<String>>,
    /// `image.short_name_mode` (empty: registries.conf's), reloaded on SIGHUP.
    short_name_mode: std::sync::RwLock<String>,
    /// CreateContainer's signature-policy acceptances ([`Images::check_trust`]).
    trust_verdicts: Mutex<HashMap<VerdictKey, Accepted>>,
}

/// What a policy accepted at CreateContainer: (namespace, image ID, digest, names checked).
type VerdictKey = (String, String, String, Vec<String>);

/// An acceptance, valid while the policy (requirements and key material, as loaded) and the
/// image's signatures are the same.
struct Accepted {
    /// Shared by the acceptances under one policy.
    policy: Arc<policy::Policy>,
    sigstore: Vec<policy::SigstoreSignature>,
    simple: Vec<String>,
}

/// Most acceptances kept; past it they are all dropped and made again as creates come.
const MAX_TRUST_VERDICTS: usize = 512;

/// What image pulls did since the daemon started (read by the metrics endpoint).
#[derive(Debug, Default)]
pub struct PullCounters {
    /// PullImage calls that returned an image (a caller joining another's pull counts too).
    pub succeeded: AtomicU64,
    /// PullImage calls that failed (cancelled ones count neither way).
    pub failed: AtomicU64,
    /// Layer blob bytes received from registries, failed pulls included.
    pub bytes: AtomicU64,
    /// Layers already in the store, not downloaded again.
    pub layers_reused: AtomicU64,
    /// Pulls downloading now: image → progress (for `ferrio status`).
    pub active: std::sync::Mutex<std::collections::HashMap<String, PullProgress>>,
}

/// How far a pull in progress has come.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullProgress {
    pub image: String,
    /// Unix seconds when the pull began.
    pub started: i64,
    /// Layer digest → (bytes received, layer size).
    pub layers: std::collections::BTreeMap<String, (u64, u64)>,
}

impl PullCounters {
    /// Pulls in progress, oldest first.
    pub fn in_progress(&self) -> Vec<PullProgress> {
        let mut v: Vec<PullProgress> = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|p| p.started);
        v
    }

    pub(crate) fn layer_progress(&self, image: &str, layer: &str, received: u64, total: u64) {
        if let Some(p) = self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(image)
        {
            p.layers.insert(layer.to_string(), (received, total));
        }
    }
}

/// Registers a pull as in progress until dropped.
pub(crate) struct ActivePull<'a> {
    counters: &'a PullCounters,
    image: String,
}

impl<'a> ActivePull<'a> {
    pub(crate) fn new(counters: &'a PullCounters, image: &str) -> Self {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        counters
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                image.to_string(),
                PullProgress {
                    image: image.to_string(),
                    started,
                    layers: Default::default(),
                },
            );
        ActivePull {
            counters,
            image: image.to_string(),
        }
    }
}

impl Drop for ActivePull<'_> {
    fn drop(&mut self) {
        self.counters
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.image);
    }
}

/// A snapshot of [`PullCounters`]' totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullCounts {
    pub succeeded: u64,
    pub failed: u64,
    pub bytes: u64,
    pub layers_reused: u64,
}

/// Used bytes and inodes of the image store.
#[derive(Debug, Clone)]
pub struct FsUsage {
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
    pub timestamp_ns: i64,
}

/// What one archive import produced.
#[derive(Debug, Clone)]
pub struct Imported {
    pub path: PathBuf,
    pub images: Vec<ImageRecord>,
}

/// The uid (numeric user) or user name (otherwise) of an image config's `User`.
pub fn image_user(user: &str) -> (Option<i64>, String) {
    let u = user.split(':').next().unwrap_or("");
    if u.is_empty() {
        return (None, String::new());
    }
    match u.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, u.to_string()),
    }
}

/// The container (if any) that uses an image, by image ID.
pub type ImageUsers = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl Images {
    /// Opens the store and reads registries.conf and the auth file (blocking).
    pub fn open(cfg: &Config) -> Result<Arc<Images>, ImageError> {
        let store = Store::open(&cfg.image_dir())?;
        let (registries, auth_file) = Self::load_pull_config(cfg)?;
        registries.short_name_mode(&cfg.image.short_name_mode)?;
        let stall = (cfg.image.pull_progress_timeout > 0)
            .then(|| Duration::from_secs(cfg.image.pull_progress_timeout));
        // A policy that does not parse refuses every pull and create: say so now.
        match policy::load_for(&cfg.image.signature_policy, Path::new(""), "") {
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                policy = %cfg.image.signature_policy.display(),
                "no signature policy file: every image is accepted"
            ),
            Err(e) => {
                tracing::error!(error = %e, "the signature policy is invalid: every pull and create will be refused until it is fixed")
            }
        }
        let puller = Puller {
            registries: std::sync::RwLock::new(registries),
            auth_file: std::sync::RwLock::new(auth_file),
            insecure: cfg.image.insecure_registries.clone(),
            stall,
            downloads: Arc::new(tokio::sync::Semaphore::new(
                cfg.image.max_concurrent_downloads,
            )),
            counters: Arc::default(),
            certs_dir: cfg.image.certs_dir.clone(),
            http: Default::default(),
            trust: pull::Trust {
                policy: cfg.image.signature_policy.clone(),
                policy_dir: cfg.image.signature_policy_dir.clone(),
                registries_d: cfg.image.registries_d.clone(),
            },
        };
        let pinned = pinned::PinnedImages::new(&cfg.image.pinned_images)
            .map_err(ImageError::InvalidArgument)?;
        let imported = imported_ids(&store);
        Ok(Arc::new(Images {
            store,
            puller: Arc::new(puller),
            inflight: Mutex::new(HashMap::new()),
            users: std::sync::RwLock::new(None),
            import_dir: cfg.import_dir(),
            pinned: std::sync::RwLock::new(Arc::new(pinned)),
            imported: std::sync::RwLock::new(imported),
            short_name_mode: std::sync::RwLock::new(cfg.image.short_name_mode.clone()),
            trust_verdicts: Mutex::new(HashMap::new()),
        }))
    }

    #[allow(clippy::type_complexity)]
    fn load_pull_config(
        cfg: &Config,
    ) -> Result<(Arc<RegistriesConf>, Option<Arc<AuthFile>>), ImageError> {
        let registries = RegistriesConf::load(&cfg.image.registries_conf)?;
        let auth_file = if cfg.image.global_auth_file.as_os_str().is_empty() {
            None
        } else {
            Some(Arc::new(AuthFile::load(&cfg.image.global_auth_file)?))
        };
        Ok((Arc::new(registries), auth_file))
    }

    /// Reads registries.conf and the auth file again (SIGHUP, blocking). Pulls already under
    /// way keep what they started with; a file that does not load leaves the old one in force.
    pub fn reload(&self, cfg: &Config) -> Result<(), ImageError> {
        let (registries, auth_file) = Self::load_pull_config(cfg)?;
        let pinned = pinned::PinnedImages::new(&cfg.image.pinned_images)
            .map_err(ImageError::InvalidArgument)?;
        // Everything checked before anything is replaced: a bad part keeps all as it was.
        registries.short_name_mode(&cfg.image.short_name_mode)?;
        *self.pinned.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pinned);
        *self
            .short_name_mode
            .write()
            .unwrap_or_else(|p| p.into_inner()) = cfg.image.short_name_mode.clone();
        *self
            .puller
            .registries
            .write()
            .unwrap_or_else(|p| p.into_inner()) = registries;
        *self
            .puller
            .auth_file
            .write()
            .unwrap_or_else(|p| p.into_inner()) = auth_file;
        Ok(())
    }

    /// Pulls downloading now, with the last progress each layer reported.
    pub fn pulls_in_progress(&self) -> Vec<PullProgress> {
        self.puller.counters.in_progress()
    }

    pub fn pull_counts(&self) -> PullCounts {
        let c = &self.puller.counters;
        PullCounts {
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            layers_reused: c.layers_reused.load(Ordering::Relaxed),
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The registries configuration in force.
    fn registries(&self) -> Arc<registries::RegistriesConf> {
        self.puller
            .registries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The fully qualified references a short name stands for (see
    /// `RegistriesConf::short_name_candidates`).
    fn candidates(&self, name: &str, pull: bool) -> Result<Vec<oci_client::Reference>, ImageError> {
        let conf = self.registries();
        let configured = self
            .short_name_mode
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mode = conf.short_name_mode(&configured)?;
        conf.short_name_candidates(name, mode, pull)
    }

    /// The signature policy of pod namespace `namespace` applied again to a stored image, as
    /// CreateContainer names it (`requested`), with the signatures found when it was pulled:
    /// an image pulled under another namespace's policy, imported, or stored before the policy
    /// changed runs only where the policy accepts it. The name checked is `requested` when it
    /// is one of the image's names, else each of them (one accepted is enough).
    pub async fn check_trust(
        &self,
        rec: &ImageRecord,
        requested: &str,
        namespace: &str,
    ) -> Result<(), ImageError> {
        let Some(policy) = self.puller.trust.load(namespace).await? else {
            return Ok(());
        };
        let digest = rec.index_digest.as_ref().unwrap_or(&rec.manifest_digest);
        let known = |n: &String| rec.repo_tags.contains(n) || rec.repo_digests.contains(n);
        let names: Vec<String> = match reference::parse(requested).map(|r| r.whole()) {
            Ok(n) if known(&n) => vec![n],
            _ => rec
                .repo_tags
                .iter()
                .chain(&rec.repo_digests)
                .cloned()
                .collect(),
        };
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        // An acceptance made before with the same policy and signatures stands: a signedBy
        // requirement would run gpgv again for every create of the image.
        let key: VerdictKey = (
            namespace.to_string(),
            rec.id.clone(),
            digest.clone(),
            names.clone(),
        );
        let same = |a: &Accepted| {
            *a.policy == policy && a.sigstore == rec.signatures && a.simple == rec.simple_signatures
        };
        if self
            .trust_verdicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .is_some_and(same)
        {
            return Ok(());
        }
        let accepted = Accepted {
            policy: Arc::new(policy.clone()),
            sigstore: rec.signatures.clone(),
            simple: rec.simple_signatures.clone(),
        };
        // Off the async workers: a signedBy requirement runs gpgv.
        let (rec, digest) = (rec.clone(), digest.clone());
        let why = tokio::task::spawn_blocking(move || {
            use base64::Engine as _;
            let simple: Vec<Vec<u8>> = rec
                .simple_signatures
                .iter()
                .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .collect();
            let found = policy::Signatures {
                sigstore: &rec.signatures,
                simple: &simple,
            };
            let mut why = Vec::new();
            for n in &names {
                match policy.evaluate(n, &digest, found, &gpg::verify) {
                    Ok(_) => return Vec::new(),
                    Err(e) => why.push(e),
                }
            }
            why
        })
        .await
        .map_err(|e| ImageError::Internal(e.to_string()))?;
        if why.is_empty() {
            let mut verdicts = self
                .trust_verdicts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if verdicts.len() >= MAX_TRUST_VERDICTS {
                verdicts.clear();
            }
            // One copy of a policy (its keyrings may be large) for all its acceptances.
            let mut accepted = accepted;
            if let Some(p) = verdicts
                .values()
                .find(|a| a.policy == accepted.policy)
                .map(|a| a.policy.clone())
            {
                accepted.policy = p;
            }
            verdicts.insert(key, accepted);
            return Ok(());
        }
        Err(ImageError::Rejected(format!(
            "image {requested} may not run in namespace {namespace:?}: {}",
            why.join("; ")
        )))
    }

    /// Pulls an image. A short name is tried at each registry it may stand for, in order, until
    /// one has it. Concurrent pulls of the same reference share one download.
    /// `namespace`: the pod namespace the pull is for (its signature policy), empty if none.
    pub async fn pull(
        &self,
        image: &str,
        creds: Option<Credentials>,
        namespace: &str,
    ) -> Result<ImageRecord, ImageError> {
        if !reference::is_short(image) {
            return self
                .pull_one(reference::parse(image)?, creds, namespace)
                .await;
        }
        // Checked as a reference first, so that a malformed short name says so.
        reference::parse(image)?;
        let mut failures = Vec::new();
        for r in self.candidates(image, true)? {
            let whole = r.whole();
            match self.pull_one(r, creds.clone(), namespace).await {
                Ok(rec) => return Ok(rec),
                Err(e) => {
                    tracing::info!(image, candidate = %whole, error = %e, "short name: candidate failed");
                    failures.push((whole, e));
                }
            }
        }
        Err(pull::combine_failures(image, failures))
    }

    async fn pull_one(
        &self,
        r: oci_client::Reference,
        creds: Option<Credentials>,
        namespace: &str,
    ) -> Result<ImageRecord, ImageError> {
        // Pulls are merged only when they would authenticate alike (an anonymous caller, or
        // one with other credentials, never gets an image through someone else's authorised
        // pull; the key holds a digest of the credentials, never the secret) and fall under
        // the same namespace's signature policy.
        let key = format!(
            "{}#{}#{namespace}",
            r.whole(),
            auth::fingerprint(creds.as_ref())
        );
        let ns = namespace.to_string();
        let fut: PullFuture = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.get(&key).and_then(|w| w.upgrade()) {
                Some(f) => {
                    tracing::info!(image = %key, "joining a pull already in progress");
                    f
                }
                None => {
                    let store = self.store.clone();
                    let puller = self.puller.clone();
                    let f = async move { puller.pull(&store, &r, creds, &ns).await }
                        .boxed()
                        .shared();
                    if let Some(w) = f.downgrade() {
                        inflight.insert(key.clone(), w);
                    }
                    f
                }
            }
        };
        let result = fut.await;
        let counter = match &result {
            Ok(_) => &self.puller.counters.succeeded,
            Err(_) => &self.puller.counters.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if inflight
            .get(&key)
            .is_some_and(|w| w.upgrade().is_none_or(|f| f.peek().is_some()))
        {
            inflight.remove(&key);
        }
        result
    }

    /// All images, or the one that `filter` resolves to.
    pub fn list(&self, filter: Option<&str>) -> Vec<ImageRecord> {
        match filter.filter(|f| !f.is_empty()) {
            Some(f) => self.resolve(f).into_iter().collect(),
            None => self.store.list(),
        }
    }

    /// The stored image `s` names: an ID or unique ID prefix, a fully qualified reference, or
    /// a short name through its alias and the search registries (the first stored candidate).
    fn resolve(&self, s: &str) -> Option<ImageRecord> {
        if !reference::is_short(s) {
            return self.store.resolve(s);
        }
        if let Some(r) = self.store.resolve_id(s) {
            return Some(r);
        }
        self.candidates(s, false)
            .ok()?
            .iter()
            .find_map(|r| self.store.resolve(&r.whole()))
    }

    /// Whether kubelet's image GC must leave `rec` alone: a name of it matches
    /// `image.pinned_images`, or the import dir brought it.
    pub fn is_pinned(&self, rec: &ImageRecord) -> bool {
        self.imported
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&rec.id)
            || self
                .pinned
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .matches(rec.repo_tags.iter().chain(&rec.repo_digests))
    }

    /// The image a tag, digest reference, ID or unique ID prefix names.
    pub fn status(&self, s: &str) -> Option<ImageRecord> {
        self.resolve(s)
    }

    /// The image config as JSON, for verbose status.
    pub fn config_json(&self, rec: &ImageRecord) -> Result<serde_json::Value, ImageError> {
        let data = self.store.blob(&rec.id)?;
        serde_json::from_slice(&data)
            .map_err(|e| ImageError::Corrupt(format!("config of {}: {e}", rec.id)))
    }

    /// Tells the store who uses images: `users(image_id)` names a container whose rootfs or
    /// image volume is made from that image (the engine's live records; so a restart rebuilds
    /// it). RemoveImage refuses such an image.
    pub fn set_users(&self, users: ImageUsers) {
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Some(users);
    }

    /// Removes an image and all its tags; `None` when it did not exist. An image a container
    /// still uses is refused (FailedPrecondition naming the container, as CRI-O does): its
    /// layers are that container's lower layers.
    pub async fn remove(&self, s: &str) -> Result<Option<String>, ImageError> {
        let Some(rec) = self.resolve(s) else {
            return Ok(None);
        };
        let users = self.users.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(container) = users.and_then(|u| u(&rec.id)) {
            return Err(ImageError::InUse {
                image: s.to_string(),
                container,
            });
        }
        let store = self.store.clone();
        let s = rec.id.clone();
        tokio::task::spawn_blocking(move || store.remove(&s))
            .await
            .map_err(|e| ImageError::Internal(e.to_string()))?
    }

    pub async fn usage(&self) -> Result<FsUsage, ImageError> {
        let store = self.store.clone();
        let (used_bytes, inodes_used) = tokio::task::spawn_blocking(move || store.usage())
            .await
            .map_err(|e| ImageError::Internal(e.to_string()))??;
        Ok(FsUsage {
            mountpoint: self.store.dir().to_path_buf(),
            used_bytes,
            inodes_used,
            timestamp_ns: now_ns(),
        })
    }

    /// Imports archives (paths on this host), one after the other.
    pub async fn import(&self, paths: Vec<PathBuf>) -> Result<Vec<Imported>, ImageError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || import_paths(&store, &paths))
            .await
            .map_err(|e| ImageError::Internal(e.to_string()))?
    }

    /// Imports each archive of the import dir that was not imported before (blocking).
    /// A file is known by name, size and modification time; failures are logged and retried at
    /// the next start.
    pub fn import_dir_once(&self) -> Result<Vec<Imported>, ImageError> {
        let out = import_dir_once(&self.store, &self.import_dir);
        *self.imported.write().unwrap_or_else(|p| p.into_inner()) = imported_ids(&self.store);
        out
    }
}

pub fn import_paths(store: &Arc<Store>, paths: &[PathBuf]) -> Result<Vec<Imported>, ImageError> {
    let mut out = Vec::new();
    for p in paths {
        let images = archive::import(store, p)?;
        for i in &images {
            tracing::info!(archive = %p.display(), id = %i.id, tags = ?i.repo_tags, "image imported");
        }
        out.push(Imported {
            path: p.clone(),
            images,
        });
    }
    Ok(out)
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct ImportedFile {
    size: u64,
    mtime_ns: i128,
    /// The images the archive held (pinned). Books of older versions lack it.
    #[serde(default)]
    ids: Vec<String>,
}

/// The import dir's book: archive file name → what was imported from it.
const IMPORT_BOOK: &str = "imported.json";

/// The IDs of every image the import dir brought, from its book.
fn imported_ids(store: &Store) -> std::collections::HashSet<String> {
    let done: HashMap<String, ImportedFile> =
        crate::state::read_json(&store.dir().join(IMPORT_BOOK)).unwrap_or_default();
    done.into_values().flat_map(|f| f.ids).collect()
}

pub fn import_dir_once(store: &Arc<Store>, dir: &Path) -> Result<Vec<Imported>, ImageError> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(vec![]);
    };
    let book = store.dir().join(IMPORT_BOOK);
    let mut done: HashMap<String, ImportedFile> =
        crate::state::read_json(&book).unwrap_or_default();
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut out = Vec::new();
    for p in files {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let mut seen = ImportedFile {
            size: meta.len(),
            mtime_ns,
            ids: Vec::new(),
        };
        let key = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if done
            .get(&key)
            .is_some_and(|d| (d.size, d.mtime_ns) == (seen.size, seen.mtime_ns))
        {
            continue;
        }
        match archive::import(store, &p) {
            Ok(images) => {
                for i in &images {
                    tracing::info!(archive = %p.display(), id = %i.id, tags = ?i.repo_tags, "image imported from the import dir");
                }
                seen.ids = images.iter().map(|i| i.id.clone()).collect();
                done.insert(key, seen);
                crate::state::write_json(&book, &done)
                    .map_err(|e| ImageError::io("writing imported.json", e))?;
                out.push(Imported { path: p, images });
            }
            Err(e) => {
                tracing::error!(archive = %p.display(), error = %e, "import failed; will retry at next start")
            }
        }
    }
    Ok(out)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_user_is_split_into_uid_or_name() {
        assert_eq!(super::image_user("1002"), (Some(1002), String::new()));
        assert_eq!(super::image_user("1002:1002"), (Some(1002), String::new()));
        assert_eq!(super::image_user("www-data"), (None, "www-data".into()));
        assert_eq!(
            super::image_user("www-data:www-data"),
            (None, "www-data".into())
        );
        assert_eq!(super::image_user(""), (None, String::new()));
    }
}
