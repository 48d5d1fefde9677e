//! The subset of containers-registries.conf(5) v2 that decides where an image is pulled from:
//! `[[registry]]` with `prefix`, `location`, `insecure`, `blocked`, `mirror-by-digest-only`, and
//! `[[registry.mirror]]` with `location`, `insecure`, `pull-from-mirror`. Mirrors are tried in
//! order, then the registry's own location. Keys of the format that ferrio does not use
//! (short-name aliases, search registries, credential helpers) are accepted and ignored.

use super::{reference, ImageError};
use oci_client::Reference;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RegistriesConf {
    pub registry: Vec<RegistryEntry>,
    /// The v1 format's table; present means the file is v1, which ferrio does not read.
    registries: Option<toml::Value>,
    #[serde(skip)]
    source: String,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RegistryEntry {
    pub prefix: String,
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    pub mirror_by_digest_only: bool,
    pub mirror: Vec<MirrorEntry>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct MirrorEntry {
    pub location: String,
    pub insecure: bool,
    /// "all" (default), "digest-only" or "tag-only".
    pub pull_from_mirror: String,
}

/// One place to try, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// The reference rewritten to this endpoint's location.
    pub reference: Reference,
    pub insecure: bool,
    pub mirror: bool,
}

impl RegistriesConf {
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(ImageError::io(format!("reading {}", path.display()), e)),
        };
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, source: &str) -> Result<Self, ImageError> {
        let mut conf: RegistriesConf = toml::from_str(text)
            .map_err(|e| ImageError::InvalidArgument(format!("registries config {source}: {e}")))?;
        if conf.registries.is_some() {
            return Err(ImageError::InvalidArgument(format!(
                "registries config {source}: the v1 format ([registries.*]) is not supported; use [[registry]] (v2)"
            )));
        }
        conf.source = source.to_string();
        for r in &mut conf.registry {
            if r.prefix.is_empty() {
                r.prefix = r.location.clone();
            }
            if r.prefix.is_empty() {
                return Err(ImageError::InvalidArgument(format!(
                    "registries config {source}: a [[registry]] needs a prefix or a location"
                )));
            }
            if r.prefix.starts_with("*.") && !r.location.is_empty() {
                return Err(ImageError::InvalidArgument(format!(
                    "registries config {source}: wildcard prefix {} cannot have a location",
                    r.prefix
                )));
            }
            for m in &r.mirror {
                if !matches!(
                    m.pull_from_mirror.as_str(),
                    "" | "all" | "digest-only" | "tag-only"
                ) {
                    return Err(ImageError::InvalidArgument(format!(
                        "registries config {source}: pull-from-mirror {:?} is not all, digest-only or tag-only",
                        m.pull_from_mirror
                    )));
                }
            }
        }
        Ok(conf)
    }

    /// The most specific `[[registry]]` entry for `name` (`registry/repo[:tag][@digest]`), with the
    /// length of the part its prefix matched.
    fn lookup(&self, r: &Reference) -> Option<(&RegistryEntry, usize)> {
        let name = r.whole();
        let mut best: Option<(&RegistryEntry, usize, usize)> = None; // entry, matched len, specificity
        for e in &self.registry {
            let m = if let Some(suffix) = e.prefix.strip_prefix("*.") {
                let host = r.registry();
                let host_no_port = host.split(':').next().unwrap_or(host);
                (host_no_port.ends_with(&format!(".{suffix}")))
                    .then_some((host.len(), e.prefix.len()))
            } else if name.starts_with(&e.prefix)
                && matches!(
                    name.as_bytes().get(e.prefix.len()),
                    None | Some(b'/' | b':' | b'@')
                )
            {
                // A prefix must match a whole host, or whole path components.
                Some((e.prefix.len(), e.prefix.len() + 1000))
            } else {
                None
            };
            if let Some((len, spec)) = m {
                if best.is_none_or(|(_, _, s)| spec > s) {
                    best = Some((e, len, spec));
                }
            }
        }
        best.map(|(e, len, _)| (e, len))
    }

    /// Where to pull `r` from, in order: the matching entry's mirrors, then its location (or the
    /// reference itself when no entry matches). `insecure` lists extra plain-HTTP registries.
    pub fn endpoints(
        &self,
        r: &Reference,
        insecure: &[String],
    ) -> Result<Vec<Endpoint>, ImageError> {
        let is_insecure = |reference: &Reference, flag: bool| {
            let reg = reference.registry();
            let host = reg.rsplit_once(':').map_or(reg, |(h, _)| h);
            // An entry without a port covers every port of its host.
            flag || insecure
                .iter()
                .any(|h| h == reg || (!h.contains(':') && h == host))
        };
        let Some((entry, matched)) = self.lookup(r) else {
            return Ok(vec![Endpoint {
                reference: r.clone(),
                insecure: is_insecure(r, false),
                mirror: false,
            }]);
        };
        if entry.blocked {
            return Err(ImageError::Blocked {
                reference: r.whole(),
                prefix: entry.prefix.clone(),
                conf: self.source.clone(),
            });
        }
        let name = r.whole();
        let rest = &name[matched..];
        let rewrite = |location: &str| -> Result<Reference, ImageError> {
            if location.is_empty() {
                return Ok(r.clone());
            }
            let s = format!("{location}{rest}");
            reference::parse(&s).map_err(|e| {
                ImageError::InvalidArgument(format!(
                    "registries config {}: rewriting {name} with location {location:?}: {e}",
                    self.source
                ))
            })
        };
        let mut out = Vec::new();
        let by_digest = r.digest().is_some();
        for m in &entry.mirror {
            let mode = if m.pull_from_mirror.is_empty() {
                if entry.mirror_by_digest_only {
                    "digest-only"
                } else {
                    "all"
                }
            } else {
                m.pull_from_mirror.as_str()
            };
            let allowed = match mode {
                "digest-only" => by_digest,
                "tag-only" => !by_digest,
                _ => true,
            };
            if !allowed {
                continue;
            }
            let reference = rewrite(&m.location)?;
            out.push(Endpoint {
                insecure: is_insecure(&reference, m.insecure),
                reference,
                mirror: true,
            });
        }
        let reference = rewrite(&entry.location)?;
        out.push(Endpoint {
            insecure: is_insecure(&reference, entry.insecure),
            reference,
            mirror: false,
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(conf: &str, image: &str) -> Vec<(String, bool, bool)> {
        let c = RegistriesConf::parse(conf, "test.conf").unwrap();
        let r = reference::parse(image).unwrap();
        c.endpoints(&r, &[])
            .unwrap()
            .into_iter()
            .map(|e| (e.reference.whole(), e.insecure, e.mirror))
            .collect()
    }

    const CONF: &str = r#"
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "127.0.0.1:5001"
insecure = true

[[registry.mirror]]
location = "mirror.example.com/dockerhub"

[[registry]]
prefix = "docker.io/library/busybox"
location = "127.0.0.1:5000/ferrio-test/busybox"
insecure = true

[[registry]]
location = "blocked.example.com"
blocked = true

[[registry]]
prefix = "*.internal.example"
insecure = true
"#;

    #[test]
    fn mirrors_in_order_then_the_registry() {
        assert_eq!(
            eps(CONF, "alpine:3"),
            vec![
                ("127.0.0.1:5001/library/alpine:3".into(), true, true),
                (
                    "mirror.example.com/dockerhub/library/alpine:3".into(),
                    false,
                    true
                ),
                ("docker.io/library/alpine:3".into(), false, false),
            ]
        );
    }

    #[test]
    fn longest_prefix_wins_and_location_replaces_it() {
        assert_eq!(
            eps(CONF, "busybox:1.36"),
            vec![(
                "127.0.0.1:5000/ferrio-test/busybox:1.36".into(),
                true,
                false
            )]
        );
        // "busyboxx" must not match the prefix ".../busybox".
        assert_eq!(
            eps(CONF, "busyboxx").last().unwrap().0,
            "docker.io/library/busyboxx:latest"
        );
    }

    #[test]
    fn blocked_registry_is_an_error() {
        let c = RegistriesConf::parse(CONF, "test.conf").unwrap();
        let r = reference::parse("blocked.example.com/x/y:1").unwrap();
        let e = c.endpoints(&r, &[]).unwrap_err();
        assert!(matches!(e, ImageError::Blocked { .. }), "{e}");
        assert!(e.to_string().contains("test.conf"));
    }

    #[test]
    fn wildcard_prefix_and_unmatched_reference() {
        assert_eq!(
            eps(CONF, "reg.internal.example/a/b:1"),
            vec![("reg.internal.example/a/b:1".into(), true, false)]
        );
        assert_eq!(
            eps(CONF, "quay.io/x/y:2"),
            vec![("quay.io/x/y:2".into(), false, false)]
        );
    }

    #[test]
    fn digest_only_mirrors_are_skipped_for_tags() {
        let conf = r#"
[[registry]]
prefix = "example.com"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m1.example.com"
[[registry.mirror]]
location = "m2.example.com"
pull-from-mirror = "tag-only"
"#;
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let by_tag: Vec<_> = eps(conf, "example.com/a:1")
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(by_tag, vec!["m2.example.com/a:1", "example.com/a:1"]);
        let by_digest: Vec<_> = eps(conf, &format!("example.com/a@{d}"))
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            by_digest,
            vec![
                format!("m1.example.com/a@{d}"),
                format!("example.com/a@{d}")
            ]
        );
    }

    #[test]
    fn insecure_list_from_config_applies() {
        let c = RegistriesConf::default();
        let r = reference::parse("127.0.0.1:5000/a:1").unwrap();
        let e = c.endpoints(&r, &["127.0.0.1:5000".into()]).unwrap();
        assert!(e[0].insecure);
        assert!(c.endpoints(&r, &["127.0.0.1".into()]).unwrap()[0].insecure);
        assert!(!c.endpoints(&r, &["127.0.0.1:5001".into()]).unwrap()[0].insecure);
    }

    #[test]
    fn v1_format_and_bad_values_are_rejected() {
        assert!(RegistriesConf::parse("[registries.search]\nregistries = []\n", "x").is_err());
        assert!(RegistriesConf::parse("[[registry]]\nprefix=\"a.com\"\n[[registry.mirror]]\nlocation=\"b\"\npull-from-mirror=\"some\"\n", "x").is_err());
        assert!(RegistriesConf::parse("[[registry]]\ninsecure = true\n", "x").is_err());
    }
}
