//! Block I/O classes: named sets of cgroup block I/O parameters (weights and throttling per
//! device) that a container is put in by an NRI plugin (`blockio_class`) or by annotation, read
//! from the file `runtime.blockio_config_file` in the format of goresctrl's blockio package
//! (what CRI-O's and containerd's `blockio_config_file` take):
//!
//! ```yaml
//! Classes:
//!   slow:
//!     - Weight: 80                 # no Devices: the class's default weight
//!     - Devices: [/dev/vd*]        # globs; symlinks resolved; block devices only
//!       ThrottleReadBps: 50M       # Kubernetes quantities: 50M = 50e6, 10Mi = 10 * 2^20
//!       ThrottleWriteIOPS: 5k
//!       Weight: 50
//! ```
//!
//! Devices are resolved when the file is read; a later entry for the same device overrides an
//! earlier one. The result is the OCI `linux.resources.blockIO` object.

use super::SpecError;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The annotations that choose a container's class (goresctrl's keys, which CRI-O reads): the
/// container's own, then the pod's for that container by name, then the pod's for all.
pub const CONTAINER_ANNOTATION: &str = "io.kubernetes.cri.blockio-class";
pub const POD_ANNOTATION: &str = "blockio.resources.beta.kubernetes.io/pod";
pub const POD_CONTAINER_ANNOTATION_PREFIX: &str = "blockio.resources.beta.kubernetes.io/container.";

/// Largest class file read.
const MAX_FILE: u64 = 1 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "Classes", default)]
    classes: BTreeMap<String, Vec<Entry>>,
}

/// A quantity as YAML gives it: `50M` or `80`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Quantity {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(rename = "Devices")]
    devices: Option<Vec<String>>,
    #[serde(rename = "ThrottleReadBps")]
    throttle_read_bps: Option<Quantity>,
    #[serde(rename = "ThrottleWriteBps")]
    throttle_write_bps: Option<Quantity>,
    #[serde(rename = "ThrottleReadIOPS")]
    throttle_read_iops: Option<Quantity>,
    #[serde(rename = "ThrottleWriteIOPS")]
    throttle_write_iops: Option<Quantity>,
    #[serde(rename = "Weight")]
    weight: Option<Quantity>,
}

/// The classes of a file, each as the OCI `blockIO` object it stands for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Classes {
    classes: BTreeMap<String, Value>,
}

/// A block device a pattern matched: (major, minor).
pub type DeviceNumber = (u64, u64);

impl Classes {
    /// Reads the class file at `path`, resolving device globs on this host.
    pub fn load(path: &Path) -> Result<Classes, SpecError> {
        use std::io::Read;
        let what = |e: &dyn std::fmt::Display| {
            SpecError::Invalid(format!("block I/O classes {}: {e}", path.display()))
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE + 1).read_to_string(&mut text))
            .map_err(|e| what(&e))?;
        if text.len() as u64 > MAX_FILE {
            return Err(what(&format!("larger than {MAX_FILE} bytes")));
        }
        Self::parse(&text, &resolve_devices).map_err(|e| what(&e))
    }

    /// Parses a class file; `devices` turns a `Devices` list into block device numbers.
    pub fn parse(
        text: &str,
        devices: &dyn Fn(&[String]) -> Vec<DeviceNumber>,
    ) -> Result<Classes, String> {
        let file: File = if text.trim().is_empty() {
            File {
                classes: BTreeMap::new(),
            }
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?
        };
        let mut classes = BTreeMap::new();
        for (name, entries) in file.classes {
            let class = build_class(&entries, devices).map_err(|e| format!("class {name}: {e}"))?;
            classes.insert(name, class);
        }
        Ok(Classes { classes })
    }

    /// The OCI `blockIO` object of class `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.classes.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.classes.keys().map(String::as_str).collect()
    }
}

/// The class a container's annotations (or its pod's) choose, if any.
pub fn class_from_annotations<'a>(
    container_name: &str,
    container: &'a BTreeMap<String, String>,
    pod: &'a BTreeMap<String, String>,
) -> Option<&'a str> {
    container
        .get(CONTAINER_ANNOTATION)
        .or_else(|| {
            pod.get(&format!(
                "{POD_CONTAINER_ANNOTATION_PREFIX}{container_name}"
            ))
        })
        .or_else(|| pod.get(POD_ANNOTATION))
        .map(String::as_str)
}

fn build_class(
    entries: &[Entry],
    devices: &dyn Fn(&[String]) -> Vec<DeviceNumber>,
) -> Result<Value, String> {
    let mut weight: Option<i64> = None;
    // Per kind, device → value; a later entry overrides.
    let kinds = [
        "weightDevice",
        "throttleReadBpsDevice",
        "throttleWriteBpsDevice",
        "throttleReadIOpsDevice",
        "throttleWriteIOpsDevice",
    ];
    let mut per_device: [BTreeMap<DeviceNumber, i64>; 5] = Default::default();
    for e in entries {
        let w = e
            .weight
            .as_ref()
            .map(|q| quantity("Weight", q, 10, 1000))
            .transpose()?;
        let throttles = [
            ("ThrottleReadBps", &e.throttle_read_bps),
            ("ThrottleWriteBps", &e.throttle_write_bps),
            ("ThrottleReadIOPS", &e.throttle_read_iops),
            ("ThrottleWriteIOPS", &e.throttle_write_iops),
        ]
        .map(|(n, q)| q.as_ref().map(|q| quantity(n, q, 0, i64::MAX)).transpose());
        let mut t = [None; 4];
        for (i, r) in throttles.into_iter().enumerate() {
            t[i] = r?;
        }
        match &e.devices {
            None => {
                if t.iter().any(Option::is_some) {
                    return Err("throttling needs Devices".into());
                }
                if w.is_some() {
                    weight = w;
                }
            }
            Some(globs) => {
                for dev in devices(globs) {
                    if let Some(w) = w {
                        per_device[0].insert(dev, w);
                    }
                    for (i, v) in t.iter().enumerate() {
                        if let Some(v) = v {
                            per_device[i + 1].insert(dev, *v);
                        }
                    }
                }
            }
        }
    }
    let mut out = Map::new();
    if let Some(w) = weight {
        out.insert("weight".into(), json!(w));
    }
    for (i, kind) in kinds.iter().enumerate() {
        if per_device[i].is_empty() {
            continue;
        }
        let field = if i == 0 { "weight" } else { "rate" };
        let list: Vec<Value> = per_device[i]
            .iter()
            .map(|((major, minor), v)| json!({"major": major, "minor": minor, field: v}))
            .collect();
        out.insert((*kind).into(), Value::Array(list));
    }
    Ok(Value::Object(out))
}

/// A Kubernetes quantity (`50M`, `10Mi`, `5k`, `1.5G`, `1e3`, `80`) as an integer, rounded up,
/// within `min..=max`. Written here: the format is small and no maintained crate parses it.
fn quantity(field: &str, q: &Quantity, min: i64, max: i64) -> Result<i64, String> {
    let v = match q {
        Quantity::Number(n) => *n,
        Quantity::Text(s) => {
            parse_quantity(s).ok_or_else(|| format!("{field}: bad quantity {s:?}"))?
        }
    };
    if v < min || v > max {
        return Err(format!("{field}: {v} is outside {min}..={max}"));
    }
    Ok(v)
}

fn parse_quantity(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() || num.starts_with('.') || num.matches('.').count() > 1 {
        return None;
    }
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            10f64.powi(exp)
        }
        _ => return None,
    };
    let v = (num.parse::<f64>().ok()? * factor).ceil();
    // In range and integral, so the cast is exact (or saturates at the top).
    #[allow(clippy::cast_possible_truncation)]
    (v.is_finite() && v >= 0.0 && v <= i64::MAX as f64).then_some(v as i64)
}

/// Block devices matching `globs` on this host (symlinks resolved, each device once); a pattern
/// that matches nothing, or matches something that is not a block device, is logged.
fn resolve_devices(globs: &[String]) -> Vec<DeviceNumber> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    for pattern in globs {
        let paths: Vec<_> = match glob::glob(pattern) {
            Ok(p) => p.filter_map(Result::ok).collect(),
            Err(e) => {
                tracing::warn!(pattern = %pattern, error = %e, "block I/O classes: bad device pattern");
                continue;
            }
        };
        if paths.is_empty() {
            tracing::warn!(pattern = %pattern, "block I/O classes: no device matches");
        }
        for p in paths {
            match std::fs::metadata(&p) {
                Ok(m) if m.file_type().is_block_device() => {
                    let rdev = m.rdev();
                    let dev = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
                    if !out.contains(&dev) {
                        out.push(dev);
                    }
                }
                Ok(_) => {
                    tracing::warn!(path = %p.display(), "block I/O classes: not a block device")
                }
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "block I/O classes: device")
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(globs: &[String]) -> Vec<DeviceNumber> {
        globs
            .iter()
            .flat_map(|g| match g.as_str() {
                "/dev/vd*" => vec![(254, 0), (254, 16)],
                "/dev/vda" => vec![(254, 0)],
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn classes_become_oci_block_io_with_later_entries_overriding() {
        let c = Classes::parse(
            "Classes:\n  slow:\n    - Weight: 80\n    - Devices: [/dev/vd*]\n      ThrottleReadBps: 50M\n      ThrottleWriteIOPS: 5k\n      Weight: \"50\"\n    - Devices: [/dev/vda]\n      ThrottleReadBps: 1Mi\n  empty: []\n",
            &fake,
        )
        .unwrap();
        assert_eq!(c.names(), ["empty", "slow"]);
        assert_eq!(c.get("empty"), Some(&json!({})));
        assert_eq!(
            c.get("slow").unwrap(),
            &json!({
                "weight": 80,
                "weightDevice": [
                    {"major": 254, "minor": 0, "weight": 50},
                    {"major": 254, "minor": 16, "weight": 50}
                ],
                "throttleReadBpsDevice": [
                    {"major": 254, "minor": 0, "rate": 1048576},
                    {"major": 254, "minor": 16, "rate": 50000000}
                ],
                "throttleWriteIOpsDevice": [
                    {"major": 254, "minor": 0, "rate": 5000},
                    {"major": 254, "minor": 16, "rate": 5000}
                ]
            })
        );
        assert!(c.get("fast").is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (text, want) in [
            (
                "Classes:\n  a:\n    - Weight: 5\n",
                "Weight: 5 is outside 10..=1000",
            ),
            (
                "Classes:\n  a:\n    - ThrottleReadBps: 1M\n",
                "throttling needs Devices",
            ),
            (
                "Classes:\n  a:\n    - Devices: [/dev/vda]\n      ThrottleReadBps: fast\n",
                "bad quantity",
            ),
            ("Classes:\n  a:\n    - Wieght: 50\n", "unknown field"),
            ("Klasses: {}\n", "unknown field"),
        ] {
            let e = Classes::parse(text, &fake).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert_eq!(Classes::parse("", &fake).unwrap(), Classes::default());
    }

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        for (s, v) in [
            ("80", 80),
            ("50M", 50_000_000),
            ("10Mi", 10 << 20),
            ("5k", 5000),
            ("1.5G", 1_500_000_000),
            ("1e3", 1000),
            ("2Ki", 2048),
            ("1500m", 2),
        ] {
            assert_eq!(parse_quantity(s), Some(v), "{s}");
        }
        for s in ["", "M", "-1", "1.2.3", "10 Q", ".5", "1e99999"] {
            assert_eq!(parse_quantity(s), None, "{s}");
        }
    }

    #[test]
    fn annotations_choose_the_container_s_then_the_pod_s_per_container_then_the_pod_s() {
        let m = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let pod = m(&[
            (POD_ANNOTATION, "all"),
            (
                "blockio.resources.beta.kubernetes.io/container.db",
                "db-class",
            ),
        ]);
        assert_eq!(class_from_annotations("web", &m(&[]), &pod), Some("all"));
        assert_eq!(
            class_from_annotations("db", &m(&[]), &pod),
            Some("db-class")
        );
        let own = m(&[(CONTAINER_ANNOTATION, "own")]);
        assert_eq!(class_from_annotations("db", &own, &pod), Some("own"));
        assert_eq!(class_from_annotations("db", &m(&[]), &m(&[])), None);
    }

    #[test]
    fn a_real_block_device_resolves_and_other_files_do_not() {
        // /dev/null is a character device; a missing path matches nothing.
        assert!(resolve_devices(&["/dev/null".into(), "/nonexistent*".into()]).is_empty());
        let blocks: Vec<_> = std::fs::read_dir("/sys/class/block")
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        if let Some(name) = blocks.first() {
            let path = format!("/dev/{}", name.to_string_lossy());
            if Path::new(&path).exists() {
                assert_eq!(resolve_devices(&[path.clone(), path]).len(), 1);
            }
        }
    }
}
