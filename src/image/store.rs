//! The image store on disk:
//!
//! ```text
//! <dir>/blobs/sha256/<hex>       manifests, indexes and configs, content-addressed
//! <dir>/layers/<chain-hex>/      one unpacked layer: diff/ (the overlayfs lower dir) + layer.json
//! <dir>/records/<id-hex>.json    one image: tags, digests, layers (written atomically, last)
//! <dir>/tmp/                     work in flight; emptied at every start
//! ```
//!
//! Layers are shared between images through their chain ID. A record is written only after all
//! of its layers and blobs are in place, so an image becomes visible whole or not at all, even
//! after `kill -9`. Layers and blobs that no record references (and no pull holds a lease on)
//! are removed when an image is removed and at start.

use super::unpack::sha256_digest;
use super::{reference, ImageError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub chain_id: String,
    pub diff_id: String,
    /// Digest and size of the layer blob as distributed (compressed).
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// Size of the uncompressed tar stream.
    pub unpacked_size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the image config: the one image ID used everywhere.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub manifest_digest: String,
    #[serde(default)]
    pub index_digest: Option<String>,
    /// Config size plus the layers' uncompressed sizes: what the image takes on disk.
    pub size: u64,
    pub layers: Vec<LayerRecord>,
    /// The config's `User`.
    #[serde(default)]
    pub user: String,
    /// When the image was stored (ns since the epoch).
    pub stored_at: i64,
    /// The sigstore signatures found for it at pull time, kept for the policy's check at
    /// CreateContainer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<super::policy::SigstoreSignature>,
    /// The simple (GPG) signatures found for it at pull time (base64 of each OpenPGP message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub simple_signatures: Vec<String>,
    /// What accepted it at its last pull under a signature policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
}

impl ImageRecord {
    pub fn id_hex(&self) -> &str {
        self.id.strip_prefix("sha256:").unwrap_or(&self.id)
    }
    fn blobs(&self) -> impl Iterator<Item = &String> {
        [&self.id, &self.manifest_digest]
            .into_iter()
            .chain(self.index_digest.iter())
    }
}

fn hex_of(digest: &str) -> Result<&str, ImageError> {
    reference::check_digest(digest).map_err(ImageError::Corrupt)?;
    Ok(&digest[7..])
}

#[derive(Default)]
struct State {
    records: BTreeMap<String, ImageRecord>,
    /// Layer chain IDs and blob digests that pulls in flight are using.
    leases: HashMap<String, usize>,
}

pub struct Store {
    dir: PathBuf,
    state: Mutex<State>,
}

/// Keeps layers and blobs from garbage collection while a pull or import uses them.
pub struct Lease {
    store: Arc<Store>,
    keys: Vec<String>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut st = self.store.lock();
        for k in &self.keys {
            if let Some(n) = st.leases.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    st.leases.remove(k);
                }
            }
        }
    }
}

impl Store {
    /// Opens (creating) the store, empties tmp/, loads the records and removes what no record
    /// references: the debris of a pull that was killed.
    pub fn open(dir: &Path) -> Result<Arc<Store>, ImageError> {
        let io = |what: &str, p: &Path, e| ImageError::io(format!("{what} {}", p.display()), e);
        for sub in ["blobs/sha256", "layers", "records", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| io("creating", &p, e))?;
        }
        let tmp = dir.join("tmp");
        for e in fs::read_dir(&tmp)
            .map_err(|e| io("reading", &tmp, e))?
            .flatten()
        {
            let p = e.path();
            let r = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(|e| io("removing", &p, e))?;
        }
        // A layer directory without layer.json was never committed.
        let ldir = dir.join("layers");
        for e in fs::read_dir(&ldir)
            .map_err(|e| io("reading", &ldir, e))?
            .flatten()
        {
            if !e.path().join("layer.json").is_file() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let mut records = BTreeMap::new();
        let rdir = dir.join("records");
        for e in fs::read_dir(&rdir)
            .map_err(|e| io("reading", &rdir, e))?
            .flatten()
        {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match crate::state::read_json::<ImageRecord>(&p) {
                Ok(r) => {
                    records.insert(r.id.clone(), r);
                }
                Err(err) => {
                    // Kept aside, with every layer: nobody can tell which layers it names, and
                    // one may be a running container's. GC waits until an operator removes it.
                    let aside = dir.join("records-unreadable");
                    let _ = fs::create_dir_all(&aside);
                    let to = aside.join(e.file_name());
                    tracing::error!(path = %p.display(), kept = %to.display(), error = %err,
                        "unreadable image record kept aside; layer garbage collection is off until it is removed");
                    fs::rename(&p, &to).map_err(|e| io("moving aside", &p, e))?;
                }
            }
        }
        let store = Arc::new(Store {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                records,
                leases: HashMap::new(),
            }),
        });
        // An image whose layer vanished is not usable: drop its record rather than serve it.
        {
            let mut st = store.lock();
            let broken: Vec<String> = st
                .records
                .values()
                .filter(|r| r.layers.iter().any(|l| !store.layer_exists(&l.chain_id)))
                .map(|r| r.id.clone())
                .collect();
            for id in broken {
                tracing::warn!(%id, "removing image record whose layers are missing");
                if let Some(r) = st.records.remove(&id) {
                    let _ = fs::remove_file(store.record_path(&r));
                }
            }
            let trash = store.gc_locked(&st);
            drop(st);
            drop(trash);
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_path(&self, r: &ImageRecord) -> PathBuf {
        self.dir
            .join("records")
            .join(format!("{}.json", r.id_hex()))
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.dir.join("blobs/sha256").join(hex_of(digest)?))
    }

    fn layer_dir(&self, chain_id: &str) -> PathBuf {
        self.dir
            .join("layers")
            .join(chain_id.strip_prefix("sha256:").unwrap_or(chain_id))
    }

    /// The unpacked layer: the directory to use as an overlayfs lower dir.
    /// The directory holding every layer (`layers/<chain>/diff`): idmapped whole for pods with
    /// their own user namespace.
    pub fn layers_root(&self) -> PathBuf {
        self.dir.join("layers")
    }

    pub fn layer_diff_path(&self, chain_id: &str) -> PathBuf {
        self.layer_dir(chain_id).join("diff")
    }

    pub fn layer_exists(&self, chain_id: &str) -> bool {
        self.layer_dir(chain_id).join("layer.json").is_file()
    }

    /// A fresh directory under tmp/, removed when dropped unless committed.
    pub fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir, ImageError> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.dir.join("tmp"))
            .map_err(|e| ImageError::io("creating a directory in the image store's tmp/", e))
    }

    /// Leases keys (chain IDs, blob digests) so garbage collection leaves them alone.
    pub fn lease(self: &Arc<Self>, keys: impl IntoIterator<Item = String>) -> Lease {
        let keys: Vec<String> = keys.into_iter().collect();
        let mut st = self.lock();
        for k in &keys {
            *st.leases.entry(k.clone()).or_default() += 1;
        }
        Lease {
            store: self.clone(),
            keys,
        }
    }

    /// Moves an unpacked layer (`tmp` holding `diff/`) into place. If another pull got there
    /// first, its copy is kept and `tmp` is removed.
    pub fn commit_layer(
        &self,
        tmp: tempfile::TempDir,
        rec: &LayerRecord,
    ) -> Result<(), ImageError> {
        // Not fsynced: the syncfs before the image record flushes it (`commit_image`).
        crate::state::write_json_volatile(&tmp.path().join("layer.json"), rec)
            .map_err(|e| ImageError::io("writing layer.json", e))?;
        let target = self.layer_dir(&rec.chain_id);
        if self.layer_exists(&rec.chain_id) {
            return Ok(());
        }
        // rename(2) of a directory onto an existing non-empty one fails: whoever renamed first
        // wins, and the loser's copy is removed with its TempDir.
        match fs::rename(tmp.path(), &target) {
            Ok(()) => {
                let _ = tmp.keep();
                Ok(())
            }
            Err(_) if self.layer_exists(&rec.chain_id) => Ok(()),
            Err(e) => Err(ImageError::io(
                format!("moving layer into {}", target.display()),
                e,
            )),
        }
    }

    /// Stores a blob after checking that `data` has `digest`.
    pub fn put_blob(&self, digest: &str, data: &[u8]) -> Result<(), ImageError> {
        let actual = sha256_digest(data);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: "blob".into(),
                expected: digest.into(),
                actual,
            });
        }
        let p = self.blob_path(digest)?;
        if p.exists() {
            return Ok(());
        }
        // Not fsynced: every blob is written before the image record that names it, and the
        // syncfs before that record flushes it (`commit_image`).
        crate::state::write_volatile(&p, data)
            .map_err(|e| ImageError::io(format!("writing {}", p.display()), e))
    }

    pub fn blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let p = self.blob_path(digest)?;
        fs::read(&p).map_err(|e| ImageError::io(format!("reading blob {digest}"), e))
    }

    /// Stores an image record, merging tags and digests with an existing record of the same ID,
    /// and moves each of its tags away from any other image.
    pub fn commit_image(&self, mut rec: ImageRecord) -> Result<ImageRecord, ImageError> {
        // Unpacked files are written without fsync; flush them all before the record that makes
        // them visible, so a power loss cannot leave a visible image with truncated files.
        crate::sys::sync_filesystem(&self.dir)
            .map_err(|e| ImageError::io("syncing the image store", e))?;
        let mut st = self.lock();
        if let Some(old) = st.records.get(&rec.id) {
            for t in &old.repo_tags {
                if !rec.repo_tags.contains(t) {
                    rec.repo_tags.push(t.clone());
                }
            }
            for d in &old.repo_digests {
                if !rec.repo_digests.contains(d) {
                    rec.repo_digests.push(d.clone());
                }
            }
            for s in &old.signatures {
                if !rec.signatures.contains(s) {
                    rec.signatures.push(s.clone());
                }
            }
            for s in &old.simple_signatures {
                if !rec.simple_signatures.contains(s) {
                    rec.simple_signatures.push(s.clone());
                }
            }
            if rec.verified.is_none() {
                rec.verified.clone_from(&old.verified);
            }
        }
        rec.repo_tags.sort();
        rec.repo_digests.sort();
        let others: Vec<String> = st
            .records
            .values()
            .filter(|o| o.id != rec.id && o.repo_tags.iter().any(|t| rec.repo_tags.contains(t)))
            .map(|o| o.id.clone())
            .collect();
        for id in others {
            let Some(mut o) = st.records.get(&id).cloned() else {
                continue;
            };
            o.repo_tags.retain(|t| !rec.repo_tags.contains(t));
            tracing::info!(image = %o.id, "tag moved to image {}", rec.id);
            crate::state::write_json(&self.record_path(&o), &o)
                .map_err(|e| ImageError::io("writing image record", e))?;
            st.records.insert(id, o);
        }
        crate::state::write_json(&self.record_path(&rec), &rec)
            .map_err(|e| ImageError::io("writing image record", e))?;
        st.records.insert(rec.id.clone(), rec.clone());
        Ok(rec)
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.lock().records.values().cloned().collect()
    }

    /// Finds an image by full ID (with or without `sha256:`), by tag or digest reference, or by
    /// a unique ID prefix, in that order.
    /// The image whose ID, or unique ID prefix, `s` is.
    pub fn resolve_id(&self, s: &str) -> Option<ImageRecord> {
        let st = self.lock();
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() == 64 {
            if let Some(r) = st.records.get(&format!("sha256:{hex}")) {
                return Some(r.clone());
            }
        }
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut it = st.records.values().filter(|r| r.id_hex().starts_with(hex));
            if let (Some(one), None) = (it.next(), it.next()) {
                return Some(one.clone());
            }
        }
        None
    }

    pub fn resolve(&self, s: &str) -> Option<ImageRecord> {
        let st = self.lock();
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() == 64 {
            if let Some(r) = st.records.get(&format!("sha256:{hex}")) {
                return Some(r.clone());
            }
        }
        if let Ok(r) = reference::parse(s) {
            let found = match r.digest() {
                Some(d) => {
                    let name = reference::digested(&r, d);
                    st.records.values().find(|i| i.repo_digests.contains(&name))
                }
                None => {
                    let name = reference::tagged(&r).unwrap_or_default();
                    st.records.values().find(|i| i.repo_tags.contains(&name))
                }
            };
            if let Some(f) = found {
                return Some(f.clone());
            }
        }
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut it = st.records.values().filter(|r| r.id_hex().starts_with(hex));
            if let (Some(one), None) = (it.next(), it.next()) {
                return Some(one.clone());
            }
        }
        None
    }

    /// Removes the image that `s` resolves to (all its tags), then frees what nothing else uses.
    /// Returns the removed image's ID, `None` when there was no such image.
    pub fn remove(&self, s: &str) -> Result<Option<String>, ImageError> {
        let Some(rec) = self.resolve(s) else {
            return Ok(None);
        };
        let mut st = self.lock();
        if st.records.remove(&rec.id).is_none() {
            return Ok(None);
        }
        match fs::remove_file(self.record_path(&rec)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                st.records.insert(rec.id.clone(), rec);
                return Err(ImageError::io("removing image record", e));
            }
        }
        let trash = self.gc_locked(&st);
        drop(st);
        drop(trash);
        Ok(Some(rec.id))
    }

    /// Whether image records that could not be read are kept aside (`records-unreadable/`).
    fn has_unreadable_records(&self) -> bool {
        fs::read_dir(self.dir.join("records-unreadable")).is_ok_and(|mut rd| rd.next().is_some())
    }

    /// Removes layers and blobs that no record references and no lease holds. Under the lock
    /// they are only renamed into tmp/ (cheap); the returned directory is deleted by its drop,
    /// after the caller released the lock.
    fn gc_locked(&self, st: &State) -> Option<tempfile::TempDir> {
        if self.has_unreadable_records() {
            tracing::warn!(dir = %self.dir.join("records-unreadable").display(),
                "layer garbage collection skipped: unreadable image records are kept aside there");
            return None;
        }
        let trash = self.temp_dir("gc-").ok()?;
        let mut keep: HashSet<String> = st.leases.keys().cloned().collect();
        for r in st.records.values() {
            keep.extend(r.blobs().cloned());
            keep.extend(r.layers.iter().map(|l| l.chain_id.clone()));
        }
        let mut n = 0;
        for dir in [self.dir.join("layers"), self.dir.join("blobs/sha256")] {
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // Dot files are atomic writes in flight.
                if name.starts_with('.') || keep.contains(&format!("sha256:{name}")) {
                    continue;
                }
                n += 1;
                let p = e.path();
                match fs::rename(&p, trash.path().join(n.to_string())) {
                    Ok(()) => tracing::debug!(path = %p.display(), "freed unused image data"),
                    Err(err) => {
                        tracing::warn!(path = %p.display(), error = %err, "could not free unused image data")
                    }
                }
            }
        }
        Some(trash)
    }

    /// Bytes and inodes the store uses.
    pub fn usage(&self) -> Result<(u64, u64), ImageError> {
        crate::sys::disk_usage(&self.dir)
            .map_err(|e| ImageError::io("measuring the image store", e))
    }
}

/// Chain IDs of a layer stack: chain(0) = diff(0); chain(n) = sha256(chain(n-1) + " " + diff(n)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, tags: &[&str], layers: &[&str]) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec![],
            manifest_digest: id.into(),
            index_digest: None,
            size: 1,
            layers: layers
                .iter()
                .map(|c| LayerRecord {
                    chain_id: c.to_string(),
                    diff_id: c.to_string(),
                    digest: c.to_string(),
                    size: 1,
                    media_type: String::new(),
                    unpacked_size: 1,
                })
                .collect(),
            user: String::new(),
            stored_at: 0,
            signatures: Vec::new(),
            simple_signatures: Vec::new(),
            verified: None,
        }
    }

    fn digest(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn put_layer(s: &Store, chain: &str) {
        let tmp = s.temp_dir("t").unwrap();
        fs::create_dir(tmp.path().join("diff")).unwrap();
        s.commit_layer(tmp, &rec(chain, &[], &[chain]).layers[0])
            .unwrap();
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let d = [digest(1), digest(2)];
        let c = chain_ids(&d);
        assert_eq!(c[0], d[0]);
        assert_eq!(c[1], sha256_digest(format!("{} {}", d[0], d[1]).as_bytes()));
    }

    #[test]
    fn tags_move_resolution_and_gc_of_shared_layers() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (a, b, l1, l2) = (digest(0xa), digest(0xb), digest(1), digest(2));
        put_layer(&s, &l1);
        put_layer(&s, &l2);
        s.commit_image(rec(
            &a,
            &["docker.io/library/x:1", "docker.io/library/x:latest"],
            &[&l1],
        ))
        .unwrap();
        s.commit_image(rec(&b, &["docker.io/library/x:latest"], &[&l1, &l2]))
            .unwrap();
        // The tag moved to b; a keeps its other tag.
        assert_eq!(s.resolve("x").unwrap().id, b);
        assert_eq!(s.resolve("x:1").unwrap().id, a);
        assert_eq!(s.resolve(&a).unwrap().id, a);
        assert_eq!(s.resolve(&a[7..]).unwrap().id, a);
        assert_eq!(s.resolve("0a0a").unwrap().id, a);
        assert!(s.resolve("x:nope").is_none());
        // Removing b frees l2 but not the shared l1.
        assert_eq!(s.remove("x:latest").unwrap(), Some(b.clone()));
        assert!(s.layer_exists(&l1) && !s.layer_exists(&l2));
        assert_eq!(s.remove("x:latest").unwrap(), None);
        // Records survive a reopen.
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.list().len(), 1);
        assert_eq!(s.resolve("x:1").unwrap().id, a);
    }

    #[test]
    fn open_removes_debris_and_leases_protect_layers() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let l = digest(3);
        fs::create_dir_all(dir.path().join("tmp/half-done/diff")).unwrap();
        {
            let _lease = s.lease([l.clone()]);
            put_layer(&s, &l);
            s.commit_image(rec(&digest(9), &[], &[])).unwrap();
            s.remove(&digest(9)).unwrap(); // runs gc, which must keep the leased layer
            assert!(s.layer_exists(&l));
        }
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(
            !s.layer_exists(&l),
            "an unreferenced layer is removed at start"
        );
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn an_unreadable_record_is_kept_aside_with_the_layers() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (a, b, l1, l2) = (digest(0xa), digest(0xb), digest(1), digest(2));
        put_layer(&s, &l1);
        put_layer(&s, &l2);
        s.commit_image(rec(&a, &["docker.io/library/a:1"], &[&l1]))
            .unwrap();
        s.commit_image(rec(&b, &["docker.io/library/b:1"], &[&l2]))
            .unwrap();
        drop(s);
        let path = fs::read_dir(dir.path().join("records"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| fs::read_to_string(p).unwrap().contains(&a))
            .unwrap();
        fs::write(&path, b"{ torn").unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(s.resolve(&a).is_none());
        assert!(dir
            .path()
            .join("records-unreadable")
            .join(path.file_name().unwrap())
            .is_file());
        // Neither the open nor removing another image frees the unreadable record's layer.
        assert!(s.layer_exists(&l1));
        assert_eq!(s.remove("b:1").unwrap(), Some(b));
        assert!(s.layer_exists(&l1));
        // Once the operator removed it, GC runs again.
        fs::remove_dir_all(dir.path().join("records-unreadable")).unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert!(!s.layer_exists(&l1) && !s.layer_exists(&l2));
    }
}
