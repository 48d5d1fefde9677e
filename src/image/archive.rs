//! Importing images from tarballs, for nodes without a registry: OCI archives (an OCI image
//! layout in a tar: `oci-layout`, `index.json`, `blobs/`) and `docker save` archives
//! (`manifest.json` with `Config`, `RepoTags` and `Layers`). Either may be gzip- or
//! zstd-compressed. Digests are checked exactly as for a pull.

use super::manifest::{self, Descriptor, Parsed, RecordParts};
use super::store::{ImageRecord, LayerRecord, Store};
use super::unpack::{self, sha256_digest, unpack_layer, Compression, LayerExpect};
use super::{reference, ImageError};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The annotation containerd and nerdctl write with the full image name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Imports every image in the archive at `path` (blocking). Returns the stored records.
pub fn import(store: &Arc<Store>, path: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let what = path.display().to_string();
    let file = File::open(path).map_err(|e| ImageError::io(format!("opening {what}"), e))?;
    let tmp = store.temp_dir("import-")?;
    {
        let (reader, _) =
            unpack::decompressor(file).map_err(|e| ImageError::Corrupt(format!("{what}: {e}")))?;
        let budget = unpack::HeaderBudget::default();
        let mut ar = tar::Archive::new(unpack::Bounded::new(reader, &budget));
        ar.set_preserve_permissions(false);
        ar.set_preserve_ownerships(false);
        let dst = tmp
            .path()
            .canonicalize()
            .unwrap_or(tmp.path().to_path_buf());
        // Directory entries are skipped: only files are read from the archive, and unpacking a
        // file creates its parents. (tar's own `unpack` would hold every directory entry until
        // the end, in memory.) Entries outside the archive root are skipped, as `unpack` does.
        // Links must stay inside the archive (docker save links one layer.tar to another), and
        // devices and FIFOs have no place in an image archive: a read of either never ends.
        unpack::for_each_entry(&mut ar, &budget, &what, |entry| {
            use tar::EntryType as T;
            let kind = entry.header().entry_type();
            let member = || {
                entry
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            };
            match kind {
                T::Directory => return Ok(()),
                T::Regular | T::Continuous => {}
                T::Symlink | T::Link => {
                    let name = entry.path().map_err(|e| corrupt(&what, e))?.into_owned();
                    let target = entry
                        .link_name()
                        .map_err(|e| corrupt(&what, e))?
                        .unwrap_or_default()
                        .into_owned();
                    // A symlink's target is relative to its own directory, a hard link's to
                    // the archive root.
                    let base = if kind == T::Symlink {
                        name.parent().unwrap_or(Path::new("")).to_path_buf()
                    } else {
                        PathBuf::new()
                    };
                    if !stays_inside(&base, &target) {
                        return Err(ImageError::Corrupt(format!(
                            "{what}: member {} links to {} outside the archive; refused",
                            name.display(),
                            target.display()
                        )));
                    }
                }
                other => {
                    return Err(ImageError::Corrupt(format!(
                        "{what}: member {} is a {other:?} entry, not a file, directory or link; refused",
                        member()
                    )))
                }
            }
            entry.unpack_in(&dst).map(drop).map_err(|e| {
                ImageError::Corrupt(format!(
                    "{what}: not a readable tar archive: {}",
                    unpack::error_chain(&e)
                ))
            })
        })?;
    }
    let root = tmp.path();
    if root.join("index.json").is_file() {
        import_oci(store, root, &what)
    } else if root.join("manifest.json").is_file() {
        import_docker(store, root, &what)
    } else {
        Err(ImageError::InvalidArgument(format!(
            "{what}: neither an OCI archive (index.json) nor a docker-save archive (manifest.json)"
        )))
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Corrupt(format!("{what}: not a readable tar archive: {e}"))
}

/// Whether `target`, taken from `base` (both relative to the archive root), names a path inside
/// the archive: not absolute, and never above the root on the way.
fn stays_inside(base: &Path, target: &Path) -> bool {
    use std::path::Component as C;
    let mut depth: usize = 0;
    for c in base.components().chain(target.components()) {
        match c {
            C::Normal(_) => depth += 1,
            C::CurDir => {}
            C::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            C::RootDir | C::Prefix(_) => return false,
        }
    }
    true
}

/// JSON documents of an archive that name no size (index.json, manifest.json) are read up to
/// the cap a registry's manifests get.
const DOCUMENT_CAP: u64 = manifest::MAX_DOCUMENT;

/// Reads a member of the unpacked archive: a regular file that resolves inside the archive, of
/// at most `cap` bytes (a blob's descriptor size).
fn read_file(root: &Path, rel: &str, what: &str, cap: u64) -> Result<Vec<u8>, ImageError> {
    let p = resolve_inside(root, rel, what)?;
    crate::state::read_capped(&p, cap)
        .map_err(|e| ImageError::Corrupt(format!("{what}: reading {rel}: {e}")))
}

/// `rel` below `root`, with its symlinks resolved, refused unless it is still below `root`.
fn resolve_inside(root: &Path, rel: &str, what: &str) -> Result<PathBuf, ImageError> {
    let p = safe_join(root, rel, what)?;
    let real = p
        .canonicalize()
        .map_err(|e| ImageError::Corrupt(format!("{what}: {rel}: {e}")))?;
    let real_root = root
        .canonicalize()
        .map_err(|e| ImageError::io("resolving the import directory", e))?;
    if !real.starts_with(&real_root) {
        return Err(ImageError::Corrupt(format!(
            "{what}: {rel} resolves outside the archive; refused"
        )));
    }
    Ok(real)
}

/// A blob's descriptor size as a read cap (a descriptor without one gets the document cap).
fn blob_cap(size: u64) -> u64 {
    if size > 0 {
        size
    } else {
        DOCUMENT_CAP
    }
}

fn safe_join(root: &Path, rel: &str, what: &str) -> Result<PathBuf, ImageError> {
    let p = Path::new(rel);
    if p.components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        return Err(ImageError::Corrupt(format!(
            "{what}: path {rel:?} leaves the archive"
        )));
    }
    Ok(root.join(p))
}

fn blob_rel(digest: &str, what: &str) -> Result<String, ImageError> {
    reference::check_digest(digest).map_err(|e| ImageError::Corrupt(format!("{what}: {e}")))?;
    Ok(format!("blobs/sha256/{}", &digest[7..]))
}

#[derive(Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

fn import_oci(store: &Arc<Store>, root: &Path, what: &str) -> Result<Vec<ImageRecord>, ImageError> {
    let index: OciIndex =
        serde_json::from_slice(&read_file(root, "index.json", what, DOCUMENT_CAP)?)
            .map_err(|e| ImageError::Corrupt(format!("{what}: index.json: {e}")))?;
    if index.manifests.is_empty() {
        return Err(ImageError::InvalidArgument(format!(
            "{what}: index.json lists no image"
        )));
    }
    let mut out = Vec::new();
    for top in &index.manifests {
        let name = image_name(top);
        let top_bytes = read_file(
            root,
            &blob_rel(&top.digest, what)?,
            what,
            blob_cap(top.size),
        )?;
        check(what, &top_bytes, &top.digest)?;
        let (manifest_bytes, manifest_digest, index_blob) = match manifest::parse(what, &top_bytes)?
        {
            Parsed::Manifest(_) => (top_bytes, top.digest.clone(), None),
            Parsed::Index(entries) => {
                let Some(e) = manifest::select_platform(&entries) else {
                    tracing::warn!(archive = %what, digest = %top.digest, "no manifest for this platform in the archive's index; skipped");
                    continue;
                };
                let b = read_file(root, &blob_rel(&e.digest, what)?, what, blob_cap(e.size))?;
                check(what, &b, &e.digest)?;
                (b, e.digest.clone(), Some((top_bytes, top.digest.clone())))
            }
        };
        let Parsed::Manifest(m) = manifest::parse(what, &manifest_bytes)? else {
            return Err(ImageError::Corrupt(format!("{what}: nested index")));
        };
        let config_bytes = read_file(
            root,
            &blob_rel(&m.config.digest, what)?,
            what,
            blob_cap(m.config.size),
        )?;
        check(what, &config_bytes, &m.config.digest)?;
        let config = manifest::parse_config(what, &config_bytes)?;
        let plan = manifest::plan_layers(what, &m, &config)?;
        let _lease = store.lease(
            plan.iter()
                .map(|p| p.2.clone())
                .chain([manifest_digest.clone(), m.config.digest.clone()]),
        );
        let mut layers = Vec::new();
        for (desc, diff_id, chain) in &plan {
            let src = resolve_inside(root, &blob_rel(&desc.digest, what)?, what)?;
            let expect = LayerExpect {
                what: format!("{what}: layer {}", desc.digest),
                digest: Some(desc.digest.clone()),
                size: Some(desc.size),
                diff_id: Some(diff_id.clone()),
            };
            layers.push(store_layer(store, &src, expect, chain, &desc.media_type)?);
        }
        let repo_tags: Vec<String> = name
            .as_ref()
            .and_then(reference::tagged)
            .into_iter()
            .collect();
        let top_digest = index_blob
            .as_ref()
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| manifest_digest.clone());
        let repo_digests = name
            .as_ref()
            .map(|r| reference::digested(r, &top_digest))
            .into_iter()
            .collect();
        if let Some((b, d)) = &index_blob {
            store.put_blob(d, b)?;
        }
        store.put_blob(&manifest_digest, &manifest_bytes)?;
        store.put_blob(&m.config.digest, &config_bytes)?;
        let rec = store.commit_image(manifest::build_record(RecordParts {
            config_digest: m.config.digest.clone(),
            config_size: config_bytes.len() as u64,
            config,
            manifest_digest,
            index_digest: index_blob.map(|(_, d)| d),
            layers,
            repo_tags,
            repo_digests,
        }))?;
        out.push(rec);
    }
    Ok(out)
}

/// The image's name from the index annotations: containerd's full name, or an OCI ref name that
/// is a full reference (a bare tag names no repository, so such an image stays untagged).
fn image_name(d: &Descriptor) -> Option<oci_client::Reference> {
    if let Some(n) = d.annotations.get(CONTAINERD_NAME) {
        if let Ok(r) = reference::parse(n) {
            return Some(r);
        }
    }
    let n = d.annotations.get(OCI_REF_NAME)?;
    if n.contains('/') {
        return reference::parse(n).ok();
    }
    None
}

fn check(what: &str, data: &[u8], digest: &str) -> Result<(), ImageError> {
    let actual = sha256_digest(data);
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            what: format!("{what}: blob"),
            expected: digest.into(),
            actual,
        });
    }
    Ok(())
}

fn store_layer(
    store: &Arc<Store>,
    src: &Path,
    expect: LayerExpect,
    chain: &str,
    media_type: &str,
) -> Result<LayerRecord, ImageError> {
    if store.layer_exists(chain) {
        if let Ok(l) = crate::state::read_json::<LayerRecord>(
            &store.layer_diff_path(chain).with_file_name("layer.json"),
        ) {
            return Ok(LayerRecord {
                media_type: media_type.to_string(),
                ..l
            });
        }
    }
    let f = File::open(src).map_err(|e| ImageError::Corrupt(format!("{}: {e}", expect.what)))?;
    let meta = f
        .metadata()
        .map_err(|e| ImageError::Corrupt(format!("{}: {e}", expect.what)))?;
    if !meta.is_file() {
        return Err(ImageError::Corrupt(format!(
            "{}: not a regular file",
            expect.what
        )));
    }
    if let Some(size) = expect.size.filter(|s| meta.len() != *s) {
        return Err(ImageError::SizeMismatch {
            what: expect.what.clone(),
            expected: size,
            actual: meta.len(),
        });
    }
    let tmp = store.temp_dir("layer-")?;
    let diff = tmp.path().join("diff");
    std::fs::create_dir(&diff).map_err(|e| ImageError::io("creating layer directory", e))?;
    let u = unpack_layer(f, &expect, &diff)?;
    let media_type = if media_type.is_empty() {
        match u.compression {
            Compression::Gzip => manifest::DOCKER_LAYER_GZIP,
            _ => manifest::DOCKER_LAYER_TAR,
        }
    } else {
        media_type
    };
    let rec = LayerRecord {
        chain_id: chain.to_string(),
        diff_id: u.diff_id,
        digest: u.digest,
        size: u.size,
        media_type: media_type.to_string(),
        unpacked_size: u.unpacked_size,
    };
    store.commit_layer(tmp, &rec)?;
    Ok(rec)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SynthDescriptor {
    media_type: String,
    size: u64,
    digest: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SynthManifest {
    schema_version: u32,
    media_type: &'static str,
    config: SynthDescriptor,
    layers: Vec<SynthDescriptor>,
}

fn import_docker(
    store: &Arc<Store>,
    root: &Path,
    what: &str,
) -> Result<Vec<ImageRecord>, ImageError> {
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&read_file(root, "manifest.json", what, DOCUMENT_CAP)?)
            .map_err(|e| ImageError::Corrupt(format!("{what}: manifest.json: {e}")))?;
    let mut out = Vec::new();
    for entry in entries {
        let config_bytes = read_file(root, &entry.config, what, DOCUMENT_CAP)?;
        let config_digest = sha256_digest(&config_bytes);
        let config = manifest::parse_config(what, &config_bytes)?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(ImageError::Corrupt(format!(
                "{what}: {} layers but the config lists {} diff IDs",
                entry.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let chains = super::store::chain_ids(&config.rootfs.diff_ids);
        let _lease = store.lease(chains.iter().cloned());
        let mut layers = Vec::new();
        for ((rel, diff_id), chain) in entry
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .zip(&chains)
        {
            let src = resolve_inside(root, rel, what)?;
            let expect = LayerExpect {
                what: format!("{what}: layer {rel}"),
                diff_id: Some(diff_id.clone()),
                ..Default::default()
            };
            layers.push(store_layer(store, &src, expect, chain, "")?);
        }
        // docker save carries no manifest: write the one a registry would have served.
        let synth = SynthManifest {
            schema_version: 2,
            media_type: manifest::DOCKER_MANIFEST,
            config: SynthDescriptor {
                media_type: manifest::DOCKER_CONFIG.into(),
                size: config_bytes.len() as u64,
                digest: config_digest.clone(),
            },
            layers: layers
                .iter()
                .map(|l| SynthDescriptor {
                    media_type: l.media_type.clone(),
                    size: l.size,
                    digest: l.digest.clone(),
                })
                .collect(),
        };
        let manifest_bytes =
            serde_json::to_vec(&synth).map_err(|e| ImageError::Internal(e.to_string()))?;
        let manifest_digest = sha256_digest(&manifest_bytes);
        let mut repo_tags = Vec::new();
        for t in entry.repo_tags.unwrap_or_default() {
            let r = reference::parse(&t)
                .map_err(|e| ImageError::Corrupt(format!("{what}: RepoTags: {e}")))?;
            repo_tags.extend(reference::tagged(&r));
        }
        store.put_blob(&manifest_digest, &manifest_bytes)?;
        store.put_blob(&config_digest, &config_bytes)?;
        let rec = store.commit_image(manifest::build_record(RecordParts {
            config_digest,
            config_size: config_bytes.len() as u64,
            config,
            manifest_digest,
            index_digest: None,
            layers,
            repo_tags,
            repo_digests: vec![],
        }))?;
        out.push(rec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What goes into a test archive besides regular files.
    enum Member<'a> {
        File(&'a str, Vec<u8>),
        Symlink(&'a str, &'a str),
        HardLink(&'a str, &'a str),
        Fifo(&'a str),
        CharDevice(&'a str),
    }

    fn tar_of(members: &[Member]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for m in members {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match m {
                Member::File(p, data) => {
                    h.set_size(data.len() as u64);
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_cksum();
                    b.append_data(&mut h, p, data.as_slice()).unwrap();
                    continue;
                }
                Member::Symlink(p, t) | Member::HardLink(p, t) => {
                    h.set_entry_type(if matches!(m, Member::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    b.append_link(&mut h, p, t).unwrap();
                    continue;
                }
                Member::Fifo(p) => {
                    h.set_entry_type(tar::EntryType::Fifo);
                    h.set_path(p).unwrap();
                }
                Member::CharDevice(p) => {
                    h.set_entry_type(tar::EntryType::Char);
                    h.set_device_major(1).unwrap();
                    h.set_device_minor(5).unwrap();
                    h.set_path(p).unwrap();
                }
            }
            h.set_cksum();
            b.append(&h, std::io::empty()).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// A one-layer docker-save archive; `config` is how the config member is stored.
    fn docker_save(config: impl FnOnce(Vec<u8>) -> Vec<Member<'static>>) -> Vec<u8> {
        let layer = tar_of(&[Member::File("hello", b"hi\n".to_vec())]);
        let diff_id = sha256_digest(&layer);
        let cfg = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}}}}"#
        )
        .into_bytes();
        let manifest =
            br#"[{"Config":"c.json","RepoTags":["example.com/t:1"],"Layers":["l1/layer.tar"]}]"#
                .to_vec();
        let mut members = vec![
            Member::File("manifest.json", manifest),
            Member::File("l0/layer.tar", layer),
            // docker save links a layer it has already written.
            Member::Symlink("l1/layer.tar", "../l0/layer.tar"),
        ];
        members.extend(config(cfg));
        tar_of(&members)
    }

    fn import_bytes(data: &[u8]) -> (tempfile::TempDir, Result<Vec<ImageRecord>, ImageError>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("images")).unwrap();
        let path = dir.path().join("a.tar");
        std::fs::write(&path, data).unwrap();
        let r = import(&store, &path);
        (dir, r)
    }

    #[test]
    fn links_inside_the_archive_are_followed() {
        let (_d, r) = import_bytes(&docker_save(|cfg| {
            vec![
                Member::File("blobs/c", cfg),
                Member::HardLink("c.json", "blobs/c"),
            ]
        }));
        let images = r.unwrap();
        assert_eq!(images[0].repo_tags, ["example.com/t:1"]);
    }

    #[test]
    fn links_out_of_the_archive_devices_and_fifos_are_refused() {
        // A valid config on the host, reached through a symlink: never read.
        let host = tempfile::tempdir().unwrap();
        let outside = host.path().join("config.json");
        let target: &'static str = Box::leak(outside.display().to_string().into_boxed_str());
        let data = docker_save(|cfg| {
            std::fs::write(&outside, &cfg).unwrap();
            vec![Member::Symlink("c.json", target)]
        });
        let (_d, r) = import_bytes(&data);
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("links to") && e.contains("outside the archive"),
            "{e}"
        );
        for (name, members) in [
            (
                "climbing symlink",
                vec![Member::Symlink("x/c.json", "../../../etc/passwd")],
            ),
            (
                "hard link out",
                vec![Member::HardLink("c.json", "../../etc/passwd")],
            ),
            ("fifo", vec![Member::Fifo("c.json")]),
            ("device", vec![Member::CharDevice("c.json")]),
        ] {
            let data = docker_save(move |_| members);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let (_d, r) = import_bytes(&data);
                let _ = tx.send(r.map(drop).map_err(|e| e.to_string()));
            });
            let r = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{name}: the import does not end"));
            let e = r.expect_err(name);
            assert!(e.contains("refused"), "{name}: {e}");
        }
    }

    #[test]
    fn a_blob_larger_than_its_descriptor_is_not_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 4096]).unwrap();
        let e = read_file(dir.path(), "big", "t", 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than 100 bytes"), "{e}");
        assert_eq!(read_file(dir.path(), "big", "t", 4096).unwrap().len(), 4096);
    }

    #[test]
    fn an_archive_with_a_huge_long_name_is_refused_at_the_header_cap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("images")).unwrap();
        // A GNU long-name entry declaring 1 GiB, followed by 4 MiB of name bytes.
        let mut h = tar::Header::new_gnu();
        h.set_path("././@LongLink").unwrap();
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 30);
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.resize(data.len() + (4 << 20), b'a');
        let path = dir.path().join("evil.tar");
        std::fs::write(&path, &data).unwrap();
        let e = import(&store, &path).unwrap_err();
        assert!(matches!(e, ImageError::Corrupt(_)), "{e:?}");
        let msg = e.to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(msg.contains("larger than 256 KiB; refused"), "{msg}");
    }
}
