//! Manifests, indexes and configs: parsing, platform choice, and the image record they make.
//! Shared by registry pulls and archive imports.

use super::store::{chain_ids, ImageRecord, LayerRecord};
use super::ImageError;
use serde::Deserialize;
use std::collections::HashMap;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// What ferrio accepts when it asks a registry for a manifest.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// Largest manifest or config accepted (they are JSON documents of a few KiB).
pub const MAX_DOCUMENT: u64 = 8 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

/// A manifest or an index, told apart by media type or by shape.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    schema_version: i64,
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

pub enum Parsed {
    Index(Vec<Descriptor>),
    Manifest(Manifest),
}

pub fn parse(what: &str, data: &[u8]) -> Result<Parsed, ImageError> {
    let m: AnyManifest = serde_json::from_slice(data)
        .map_err(|e| ImageError::Corrupt(format!("{what}: not a valid manifest: {e}")))?;
    if m.schema_version != 2 {
        return Err(ImageError::Unsupported(format!(
            "{what}: manifest schema version {} is not supported (only 2)",
            m.schema_version
        )));
    }
    let is_index = matches!(m.media_type.as_str(), OCI_INDEX | DOCKER_LIST)
        || (m.media_type.is_empty() && m.manifests.is_some());
    if is_index {
        return Ok(Parsed::Index(m.manifests.unwrap_or_default()));
    }
    match (m.config, m.layers) {
        (Some(config), Some(layers)) => Ok(Parsed::Manifest(Manifest { config, layers })),
        _ => Err(ImageError::Unsupported(format!(
            "{what}: media type {:?} is neither an image manifest nor an index",
            m.media_type
        ))),
    }
}

/// This host's platform in OCI terms.
pub fn host_platform() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "riscv64" => ("riscv64", None),
        "s390x" => ("s390x", None),
        other => (other, None),
    }
}

/// The index entry for this host: linux, the host's architecture, and the host's variant when
/// the entry names one (arm64 without a variant is v8).
pub fn select_platform(entries: &[Descriptor]) -> Option<&Descriptor> {
    let (arch, variant) = host_platform();
    let fits = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == "linux"
                && p.architecture == arch
                && match (&p.variant, variant) {
                    (Some(v), Some(hv)) => v == hv,
                    _ => true,
                }
        })
    };
    entries.iter().find(fits)
}

/// The parts of an image config that ferrio reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigDoc {
    #[serde(default)]
    pub config: Option<ConfigInner>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConfigInner {
    #[serde(rename = "User", default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

pub fn parse_config(what: &str, data: &[u8]) -> Result<ConfigDoc, ImageError> {
    let c: ConfigDoc = serde_json::from_slice(data)
        .map_err(|e| ImageError::Corrupt(format!("{what}: not a valid image config: {e}")))?;
    for d in &c.rootfs.diff_ids {
        super::reference::check_digest(d)
            .map_err(|e| ImageError::Corrupt(format!("{what}: diff ID: {e}")))?;
    }
    Ok(c)
}

/// Layer plans: for each manifest layer, the diff ID the config promises and its chain ID.
pub fn plan_layers(
    what: &str,
    m: &Manifest,
    config: &ConfigDoc,
) -> Result<Vec<(Descriptor, String, String)>, ImageError> {
    if m.layers.len() != config.rootfs.diff_ids.len() {
        return Err(ImageError::Corrupt(format!(
            "{what}: the manifest has {} layers but the config lists {} diff IDs",
            m.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    for l in &m.layers {
        super::reference::check_digest(&l.digest)
            .map_err(|e| ImageError::Corrupt(format!("{what}: layer: {e}")))?;
    }
    let chains = chain_ids(&config.rootfs.diff_ids);
    Ok(m.layers
        .iter()
        .cloned()
        .zip(config.rootfs.diff_ids.iter().cloned())
        .zip(chains)
        .map(|((d, diff), chain)| (d, diff, chain))
        .collect())
}

pub struct RecordParts {
    pub config_digest: String,
    pub config_size: u64,
    pub config: ConfigDoc,
    pub manifest_digest: String,
    pub index_digest: Option<String>,
    pub layers: Vec<LayerRecord>,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
}

pub fn build_record(p: RecordParts) -> ImageRecord {
    let size = p.config_size + p.layers.iter().map(|l| l.unpacked_size).sum::<u64>();
    let stored_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    ImageRecord {
        id: p.config_digest,
        repo_tags: p.repo_tags,
        repo_digests: p.repo_digests,
        manifest_digest: p.manifest_digest,
        index_digest: p.index_digest,
        size,
        layers: p.layers,
        user: p.config.config.and_then(|c| c.user).unwrap_or_default(),
        stored_at,
        signatures: Vec::new(),
        simple_signatures: Vec::new(),
        verified: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, os: &str, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: format!("sha256:{}", hex::encode([n; 32])),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: variant.map(Into::into),
            }),
            annotations: HashMap::new(),
        }
    }

    #[test]
    fn the_host_platform_is_chosen_from_an_index() {
        let (arch, variant) = host_platform();
        let entries = vec![
            entry("s390x", None, "linux", 1),
            entry(arch, None, "windows", 2),
            entry(arch, variant, "linux", 3),
        ];
        assert_eq!(select_platform(&entries).unwrap().digest, entries[2].digest);
        assert!(select_platform(&entries[..2]).is_none());
    }

    #[test]
    fn manifests_and_indexes_are_told_apart() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(parse("x", idx).unwrap(), Parsed::Index(_)));
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"sha256:{h}","size":3}},"layers":[]}}"#,
            h = hex::encode([1u8; 32])
        );
        assert!(matches!(
            parse("x", m.as_bytes()).unwrap(),
            Parsed::Manifest(_)
        ));
        assert!(parse("x", br#"{"schemaVersion":1}"#).is_err());
        assert!(parse("x", b"not json").is_err());
    }

    #[test]
    fn layer_count_must_match_the_config() {
        let m = Manifest {
            config: entry("a", None, "linux", 1),
            layers: vec![entry("a", None, "linux", 2)],
        };
        let c = ConfigDoc::default();
        assert!(plan_layers("x", &m, &c).is_err());
    }
}
