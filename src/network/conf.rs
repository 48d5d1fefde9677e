//! CNI network configuration: the files in the network directory (`/etc/cni/net.d`).
//!
//! A `.conflist` holds a network (`name`, `cniVersion` or `cniVersions`, `plugins`, optional
//! `disableCheck` / `disableGC`); a `.conf` or `.json` file holds a single plugin's config, which
//! is wrapped into a one-plugin list as the CNI spec's libraries do. Files are read in name
//! order; the chosen network is the first valid one (or the one named by `default_network`).

use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// CNI spec versions ferrio speaks, oldest first. 0.3.x results have the 0.4.0 shape.
const SUPPORTED: &[Version] = &[
    Version(0, 3, 0),
    Version(0, 3, 1),
    Version(0, 4, 0),
    Version(1, 0, 0),
    Version(1, 1, 0),
];

/// A CNI spec version (`major.minor.patch`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.split('.').map(|p| p.parse::<u32>().ok());
        let v = Version(it.next()??, it.next()??, it.next().unwrap_or(Some(0))?);
        it.next().is_none().then_some(v)
    }

    /// CHECK exists from 0.4.0 on.
    pub fn has_check(self) -> bool {
        self >= Version(0, 4, 0)
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub fn has_status_and_gc(self) -> bool {
        self >= Version(1, 1, 0)
    }

    fn supported(self) -> bool {
        SUPPORTED.contains(&self) || (self.0 == 1 && self >= Version(1, 0, 0))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Why a network could not be loaded. Every message names the directory or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("reading CNI network directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI network config {file}: {message}")]
    Invalid { file: PathBuf, message: String },
    #[error("no CNI network config in {dir}{}", skipped(.problems))]
    NoNetwork { dir: PathBuf, problems: Vec<String> },
    #[error("CNI network {name:?} not found in {dir}{}", skipped(.problems))]
    NotFound {
        dir: PathBuf,
        name: String,
        problems: Vec<String>,
    },
}

fn skipped(p: &[String]) -> String {
    if p.is_empty() {
        String::new()
    } else {
        format!(" (skipped: {})", p.join("; "))
    }
}

impl crate::error::ErrorKind for ConfError {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::FailedPrecondition
    }
}

/// One plugin of a network.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    /// The plugin binary's name (`type`).
    pub plugin_type: String,
    /// The capabilities it declares (`"capabilities": {"portMappings": true}`).
    pub capabilities: BTreeSet<String>,
    /// Its config as written, sent on stdin with `name`, `cniVersion` and more added.
    pub raw: Map<String, Value>,
}

/// A network: a list of plugins run in order.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub name: String,
    /// The version used with the plugins (the highest supported one of `cniVersions`, else
    /// `cniVersion`).
    pub version: Version,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<PluginConf>,
    /// Where it was read from.
    pub file: PathBuf,
    /// The list as a conflist document (a `.conf` already wrapped), kept in the attachment
    /// cache so that DEL runs the plugins the ADD ran.
    pub document: Value,
}

impl NetworkList {
    /// Parses a file's bytes; `.conf` / `.json` files are wrapped into a list.
    pub fn parse(file: &Path, bytes: &[u8]) -> Result<NetworkList, ConfError> {
        let invalid = |message: String| ConfError::Invalid {
            file: file.to_path_buf(),
            message,
        };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let Value::Object(mut obj) = value else {
            return Err(invalid("not a JSON object".into()));
        };
        let is_list = file.extension().is_some_and(|e| e == "conflist");
        if !is_list {
            if obj.contains_key("plugins") {
                return Err(invalid(
                    "a .conf/.json file holds one plugin; a plugin list goes in a .conflist".into(),
                ));
            }
            // Wrap: the list takes the plugin's name and version.
            let mut list = Map::new();
            for k in ["name", "cniVersion"] {
                if let Some(v) = obj.get(k) {
                    list.insert(k.into(), v.clone());
                }
            }
            obj.remove("name");
            obj.remove("cniVersion");
            list.insert("plugins".into(), Value::Array(vec![Value::Object(obj)]));
            obj = list;
        }
        Self::from_document(file, obj).map_err(invalid)
    }

    /// Builds a list from a conflist document (also used for cached documents).
    pub fn from_document(file: &Path, mut obj: Map<String, Value>) -> Result<NetworkList, String> {
        let name = match obj.get("name") {
            Some(Value::String(s)) if valid_name(s) => s.clone(),
            Some(Value::String(s)) => {
                return Err(format!(
                    "network name {s:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
                ))
            }
            _ => return Err("missing \"name\"".into()),
        };
        let version = choose_version(&obj)?;
        obj.insert("cniVersion".into(), Value::String(version.to_string()));
        let flag = |k: &str| -> Result<bool, String> {
            match obj.get(k) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(format!("{k:?} must be a boolean")),
            }
        };
        let disable_check = flag("disableCheck")?;
        let disable_gc = flag("disableGC")?;
        let Some(Value::Array(list)) = obj.get("plugins") else {
            return Err("missing \"plugins\" list".into());
        };
        if list.is_empty() {
            return Err("\"plugins\" is empty".into());
        }
        let mut plugins = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let Value::Object(raw) = p else {
                return Err(format!("plugins[{i}] is not an object"));
            };
            let plugin_type = match raw.get("type") {
                Some(Value::String(t)) if !t.is_empty() && !t.contains('/') && t != ".." => {
                    t.clone()
                }
                Some(t) => return Err(format!("plugins[{i}]: bad \"type\" {t}")),
                None => return Err(format!("plugins[{i}]: missing \"type\"")),
            };
            let capabilities = match raw.get("capabilities") {
                Some(Value::Object(c)) => c
                    .iter()
                    .filter(|(_, v)| v.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect(),
                _ => BTreeSet::new(),
            };
            plugins.push(PluginConf {
                plugin_type,
                capabilities,
                raw: raw.clone(),
            });
        }
        Ok(NetworkList {
            name,
            version,
            disable_check,
            disable_gc,
            plugins,
            file: file.to_path_buf(),
            document: Value::Object(obj),
        })
    }
}

/// CNI network names: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn choose_version(obj: &Map<String, Value>) -> Result<Version, String> {
    if let Some(Value::Array(vs)) = obj.get("cniVersions") {
        let best = vs
            .iter()
            .filter_map(|v| v.as_str().and_then(Version::parse))
            .filter(|v| v.supported())
            .max();
        if let Some(v) = best {
            return Ok(v);
        }
    }
    match obj.get("cniVersion") {
        Some(Value::String(s)) => match Version::parse(s) {
            Some(v) if v.supported() => Ok(v),
            _ => Err(format!(
                "cniVersion {s:?} is not supported (supported: 0.3.0, 0.3.1, 0.4.0, 1.x)"
            )),
        },
        None if obj.contains_key("cniVersions") => {
            Err("none of \"cniVersions\" is supported (supported: 0.3.0, 0.3.1, 0.4.0, 1.x)".into())
        }
        _ => Err("missing \"cniVersion\"".into()),
    }
}

/// Loads the network from `dir`: the first valid file by name, or the network named `default`.
/// Invalid files are skipped (and named in the error when nothing is found).
pub fn load_dir(dir: &Path, default: &str) -> Result<NetworkList, ConfError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ConfError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    });
    let mut files: Vec<PathBuf> = match rd {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
            })
            .collect(),
        // A directory that does not exist yet is "no network": a CNI installer may create it.
        Err(ConfError::ReadDir { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    let mut problems = Vec::new();
    for f in files {
        let bytes = match std::fs::read(&f) {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("{}: {e}", f.display()));
                continue;
            }
        };
        match NetworkList::parse(&f, &bytes) {
            Ok(net) if default.is_empty() || net.name == default => return Ok(net),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "skipping CNI network config");
                problems.push(match e {
                    ConfError::Invalid { file, message } => {
                        format!("{}: {message}", file.display())
                    }
                    e => e.to_string(),
                });
            }
        }
    }
    if default.is_empty() {
        Err(ConfError::NoNetwork {
            dir: dir.to_path_buf(),
            problems,
        })
    } else {
        Err(ConfError::NotFound {
            dir: dir.to_path_buf(),
            name: default.to_string(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    const LIST: &str = r#"{"cniVersion":"1.0.0","name":"NAME","plugins":[
        {"type":"bridge","bridge":"br0","ipam":{"type":"host-local","subnet":"10.0.0.0/24"}},
        {"type":"portmap","capabilities":{"portMappings":true,"other":false}}]}"#;

    #[test]
    fn first_file_by_name_wins() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "20-b.conflist", &LIST.replace("NAME", "b"));
        write(d.path(), "10-a.conflist", &LIST.replace("NAME", "a"));
        write(d.path(), "05-ignored.txt", "not a config");
        let net = load_dir(d.path(), "").unwrap();
        assert_eq!(net.name, "a");
        assert_eq!(net.version, Version(1, 0, 0));
        assert_eq!(net.plugins.len(), 2);
        assert_eq!(net.plugins[0].plugin_type, "bridge");
        assert_eq!(
            net.plugins[1].capabilities,
            BTreeSet::from(["portMappings".to_string()])
        );
        assert!(net.file.ends_with("10-a.conflist"));
    }

    #[test]
    fn default_network_selects_by_name() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "10-a.conflist", &LIST.replace("NAME", "a"));
        write(d.path(), "20-b.conflist", &LIST.replace("NAME", "b"));
        assert_eq!(load_dir(d.path(), "b").unwrap().name, "b");
        let err = load_dir(d.path(), "c").unwrap_err().to_string();
        assert!(err.contains("\"c\" not found"), "{err}");
    }

    #[test]
    fn single_plugin_conf_is_wrapped_into_a_list() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "10-one.conf",
            r#"{"cniVersion":"0.4.0","name":"one","type":"bridge","bridge":"cni0"}"#,
        );
        let net = load_dir(d.path(), "").unwrap();
        assert_eq!(net.name, "one");
        assert_eq!(net.version, Version(0, 4, 0));
        assert_eq!(net.plugins.len(), 1);
        assert_eq!(net.plugins[0].plugin_type, "bridge");
        assert_eq!(net.plugins[0].raw["bridge"], "cni0");
        assert!(!net.plugins[0].raw.contains_key("name"));
        assert_eq!(net.document["plugins"][0]["type"], "bridge");
        assert_eq!(net.document["cniVersion"], "0.4.0");
        // .json is a single-plugin file too.
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "x.json",
            r#"{"cniVersion":"1.0.0","name":"j","type":"loopback"}"#,
        );
        assert_eq!(
            load_dir(d.path(), "").unwrap().plugins[0].plugin_type,
            "loopback"
        );
    }

    #[test]
    fn bad_json_error_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "10-bad.conflist", "{\"name\": ");
        let err = load_dir(d.path(), "").unwrap_err().to_string();
        assert!(err.contains("10-bad.conflist"), "{err}");
        assert!(err.contains("no CNI network config"), "{err}");
        // A valid file after it is still used.
        write(d.path(), "20-good.conflist", &LIST.replace("NAME", "good"));
        assert_eq!(load_dir(d.path(), "").unwrap().name, "good");
        // Parsing the bad file alone names it.
        let err = NetworkList::parse(Path::new("/x/10-bad.conflist"), b"{\"name\": ")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("CNI network config /x/10-bad.conflist:"),
            "{err}"
        );
    }

    #[test]
    fn invalid_documents_are_explained() {
        let p = Path::new("/x/a.conflist");
        let cases = [
            (
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#,
                "missing \"name\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"a b","plugins":[{"type":"x"}]}"#,
                "must match",
            ),
            (
                r#"{"cniVersion":"0.2.0","name":"a","plugins":[{"type":"x"}]}"#,
                "not supported",
            ),
            (
                r#"{"name":"a","plugins":[{"type":"x"}]}"#,
                "missing \"cniVersion\"",
            ),
            (r#"{"cniVersion":"1.0.0","name":"a","plugins":[]}"#, "empty"),
            (
                r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"../x"}]}"#,
                "bad \"type\"",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"a","plugins":[{}]}"#,
                "missing \"type\"",
            ),
        ];
        for (doc, want) in cases {
            let err = NetworkList::parse(p, doc.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{doc}: {err}");
        }
    }

    #[test]
    fn cni_versions_picks_the_highest_supported() {
        let doc = r#"{"cniVersion":"0.4.0","cniVersions":["0.4.0","1.1.0","9.0.0"],"name":"a",
            "disableGC":true,"plugins":[{"type":"x"}]}"#;
        let net = NetworkList::parse(Path::new("a.conflist"), doc.as_bytes()).unwrap();
        assert_eq!(net.version, Version(1, 1, 0));
        assert!(net.disable_gc && !net.disable_check);
        assert_eq!(net.document["cniVersion"], "1.1.0");
    }

    #[test]
    fn missing_directory_is_no_network() {
        let err = load_dir(Path::new("/nonexistent/cni"), "").unwrap_err();
        assert!(matches!(err, ConfError::NoNetwork { .. }), "{err}");
    }

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(Version::parse("1.0.0"), Some(Version(1, 0, 0)));
        assert_eq!(Version::parse("0.4"), Some(Version(0, 4, 0)));
        assert_eq!(Version::parse("1.x.0"), None);
        assert!(Version(0, 4, 0).has_check() && !Version(0, 3, 1).has_check());
        assert!(Version(1, 1, 0).has_status_and_gc() && !Version(1, 0, 0).has_status_and_gc());
    }
}
