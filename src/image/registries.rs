//! The subset of containers-registries.conf(5) v2 that decides where an image is pulled from:
//! `[[registry]]` with `prefix`, `location`, `insecure`, `blocked`, `mirror-by-digest-only`, and
//! `[[registry.mirror]]` with `location`, `insecure`, `pull-from-mirror`; mirrors are tried in
//! order, then the registry's own location. Short names (no registry in the name) resolve
//! through `[aliases]` and `unqualified-search-registries` under `short-name-mode`, as CRI-O
//! resolves them — never silently to docker.io. Drop-ins (containers-registries.conf.d(5)):
//! `<file>.d/*.conf` in name order after the file; a drop-in's `[[registry]]` replaces the one
//! with the same prefix, its search registries and mode replace the earlier ones when set, its
//! aliases are merged (an empty value removes one). Keys ferrio does not use (credential
//! helpers) are accepted and ignored.

use super::{reference, ImageError};
use oci_client::Reference;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RegistriesConf {
    pub registry: Vec<RegistryEntry>,
    /// Registries a short name is looked up in, in order.
    pub unqualified_search_registries: Option<Vec<String>>,
    /// `enforcing` (the default), `permissive` or `disabled`.
    pub short_name_mode: Option<String>,
    /// Short name → fully qualified repository.
    pub aliases: std::collections::BTreeMap<String, String>,
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

/// How a short name may resolve (registries.conf's `short-name-mode`, CRI-O's
/// `short_name_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortNameMode {
    /// One search registry, or an alias; more than one search registry is an error (a daemon
    /// cannot ask which one was meant).
    Enforcing,
    /// Every search registry in order when there is more than one.
    Permissive,
    /// Every search registry in order.
    Disabled,
}

impl ShortNameMode {
    pub fn parse(s: &str, source: &str) -> Result<Self, ImageError> {
        match s {
            "enforcing" => Ok(Self::Enforcing),
            "permissive" => Ok(Self::Permissive),
            "disabled" => Ok(Self::Disabled),
            other => Err(ImageError::InvalidArgument(format!(
                "{source}: short-name-mode {other:?} is not enforcing, permissive or disabled"
            ))),
        }
    }
}

impl RegistriesConf {
    /// Reads `path` (missing: no rules) and its drop-ins, `<path>.d/*.conf` in name order.
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let read = |p: &Path| -> Result<Option<Self>, ImageError> {
            match std::fs::read_to_string(p) {
                Ok(t) => Self::parse(&t, &p.display().to_string()).map(Some),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ImageError::io(format!("reading {}", p.display()), e)),
            }
        };
        let mut conf = read(path)?.unwrap_or_else(|| Self {
            source: path.display().to_string(),
            ..Default::default()
        });
        let dir = PathBuf::from(format!("{}.d", path.display()));
        let mut dropins: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(ImageError::io(format!("reading {}", dir.display()), e)),
        };
        dropins.sort();
        for p in dropins {
            if let Some(d) = read(&p)? {
                conf.merge(d);
            }
        }
        Ok(conf)
    }

    /// Lays a drop-in over this configuration.
    fn merge(&mut self, d: RegistriesConf) {
        for r in d.registry {
            self.registry.retain(|e| e.prefix != r.prefix);
            self.registry.push(r);
        }
        if d.unqualified_search_registries.is_some() {
            self.unqualified_search_registries = d.unqualified_search_registries;
        }
        if d.short_name_mode.is_some() {
            self.short_name_mode = d.short_name_mode;
        }
        for (k, v) in d.aliases {
            if v.is_empty() {
                self.aliases.remove(&k);
            } else {
                self.aliases.insert(k, v);
            }
        }
        self.source = format!("{} (+ {})", self.source, d.source);
    }

    /// The mode in force: `configured` (ferrio's `image.short_name_mode`) if set, else the
    /// file's, else enforcing.
    pub fn short_name_mode(&self, configured: &str) -> Result<ShortNameMode, ImageError> {
        match (configured, self.short_name_mode.as_deref()) {
            ("", None | Some("")) => Ok(ShortNameMode::Enforcing),
            ("", Some(m)) => ShortNameMode::parse(m, &self.source),
            (m, _) => ShortNameMode::parse(m, "image.short_name_mode"),
        }
    }

    /// The fully qualified references a short name stands for, in the order to try them: its
    /// alias, else the search registries. For a pull (`pull`), an alias-less name with more
    /// than one search registry under `enforcing`, or with none at all, is an error saying
    /// what to configure; a local lookup takes every candidate (and may get none).
    pub fn short_name_candidates(
        &self,
        name: &str,
        mode: ShortNameMode,
        pull: bool,
    ) -> Result<Vec<Reference>, ImageError> {
        // Tags and digests are not part of an alias: "img:tag" uses the alias of "img".
        let (repo, suffix) = reference::split_suffix(name);
        let invalid = |reason: String| ImageError::InvalidReference {
            reference: name.to_string(),
            reason,
        };
        if let Some(target) = self.aliases.get(repo) {
            return Ok(vec![reference::parse(&format!("{target}{suffix}"))
                .map_err(|e| {
                    invalid(format!(
                        "alias {repo:?} = {target:?} in {}: {e}",
                        self.source
                    ))
                })?]);
        }
        let search = self.unqualified_search_registries.as_deref().unwrap_or(&[]);
        if pull {
            if search.is_empty() {
                return Err(invalid(format!(
                    "a short name, and {} has no alias for it and no unqualified-search-registries: use a fully qualified name such as docker.io/{name}",
                    self.source
                )));
            }
            if search.len() > 1 && mode == ShortNameMode::Enforcing {
                return Err(invalid(format!(
                    "a short name that is ambiguous: short-name-mode is enforcing and {} lists {} unqualified-search-registries ({}); use a fully qualified name or an alias",
                    self.source,
                    search.len(),
                    search.join(", ")
                )));
            }
        }
        search
            .iter()
            .map(|reg| {
                reference::parse(&format!("{reg}/{name}"))
                    .map_err(|e| invalid(format!("with search registry {reg:?}: {e}")))
            })
            .collect()
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

    fn names(v: Vec<Reference>) -> Vec<String> {
        v.into_iter().map(|r| r.whole()).collect()
    }

    #[test]
    fn short_names_resolve_through_aliases_and_search_registries_by_mode() {
        use ShortNameMode::*;
        let c = RegistriesConf::parse(
            r#"
unqualified-search-registries = ["quay.io", "docker.io"]
[aliases]
"bb" = "docker.io/library/busybox"
"tools/x" = "reg.example:5000/team/x"
"#,
            "r.conf",
        )
        .unwrap();
        // An alias wins in every mode; the tag or digest comes along.
        for mode in [Enforcing, Permissive, Disabled] {
            assert_eq!(
                names(c.short_name_candidates("bb:1.36", mode, true).unwrap()),
                ["docker.io/library/busybox:1.36"]
            );
        }
        assert_eq!(
            names(c.short_name_candidates("tools/x", Enforcing, true).unwrap()),
            ["reg.example:5000/team/x:latest"]
        );
        // Two search registries: ambiguous when enforcing, both in order otherwise.
        let e = c
            .short_name_candidates("alpine", Enforcing, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ambiguous") && e.contains("quay.io, docker.io"),
            "{e}"
        );
        for mode in [Permissive, Disabled] {
            assert_eq!(
                names(c.short_name_candidates("alpine", mode, true).unwrap()),
                ["quay.io/alpine:latest", "docker.io/library/alpine:latest"]
            );
        }
        // A local lookup takes every candidate, whatever the mode.
        assert_eq!(
            c.short_name_candidates("alpine", Enforcing, false)
                .unwrap()
                .len(),
            2
        );
        // No alias and no search registry: refused for a pull, nothing for a lookup.
        let none = RegistriesConf::default();
        let e = none
            .short_name_candidates("alpine", Enforcing, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unqualified-search-registries") && e.contains("docker.io/alpine"),
            "{e}"
        );
        assert!(none
            .short_name_candidates("alpine", Enforcing, false)
            .unwrap()
            .is_empty());
        // The mode: ferrio's setting, else the file's, else enforcing.
        assert_eq!(none.short_name_mode("").unwrap(), Enforcing);
        let p = RegistriesConf::parse("short-name-mode = \"permissive\"\n", "p").unwrap();
        assert_eq!(p.short_name_mode("").unwrap(), Permissive);
        assert_eq!(p.short_name_mode("disabled").unwrap(), Disabled);
        assert!(p.short_name_mode("sometimes").is_err());
    }

    #[test]
    fn drop_ins_replace_by_prefix_override_settings_and_merge_aliases() {
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("registries.conf");
        std::fs::write(
            &main,
            r#"
unqualified-search-registries = ["docker.io"]
[aliases]
"a" = "docker.io/library/a"
"b" = "docker.io/library/b"
[[registry]]
prefix = "example.com"
location = "one.example.com"
[[registry]]
prefix = "other.com"
blocked = true
"#,
        )
        .unwrap();
        let dir = d.path().join("registries.conf.d");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("20-later.conf"),
            "[aliases]\n\"b\" = \"\"\n\"c\" = \"quay.io/c\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("10-first.conf"),
            "unqualified-search-registries = [\"quay.io\"]\nshort-name-mode = \"disabled\"\n[[registry]]\nprefix = \"example.com\"\nlocation = \"two.example.com\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("ignored.txt"), "not toml [").unwrap();
        let c = RegistriesConf::load(&main).unwrap();
        assert_eq!(
            c.unqualified_search_registries.as_deref(),
            Some(&["quay.io".to_string()][..])
        );
        assert_eq!(c.short_name_mode("").unwrap(), ShortNameMode::Disabled);
        assert_eq!(
            c.aliases.keys().collect::<Vec<_>>(),
            vec!["a", "c"],
            "b removed by an empty value"
        );
        let r = reference::parse("example.com/x:1").unwrap();
        assert_eq!(
            c.endpoints(&r, &[]).unwrap()[0].reference.whole(),
            "two.example.com/x:1"
        );
        let blocked = reference::parse("other.com/x:1").unwrap();
        assert!(
            c.endpoints(&blocked, &[]).is_err(),
            "kept from the main file"
        );
        // A bad drop-in is an error naming it; a missing main file with drop-ins is fine.
        std::fs::write(dir.join("30-bad.conf"), "short-name-mode = [").unwrap();
        let e = RegistriesConf::load(&main).unwrap_err().to_string();
        assert!(e.contains("30-bad.conf"), "{e}");
        std::fs::remove_file(dir.join("30-bad.conf")).unwrap();
        std::fs::remove_file(&main).unwrap();
        let c = RegistriesConf::load(&main).unwrap();
        assert_eq!(c.aliases.len(), 1);
    }

    #[test]
    fn v1_format_and_bad_values_are_rejected() {
        assert!(RegistriesConf::parse("[registries.search]\nregistries = []\n", "x").is_err());
        assert!(RegistriesConf::parse("[[registry]]\nprefix=\"a.com\"\n[[registry.mirror]]\nlocation=\"b\"\npull-from-mirror=\"some\"\n", "x").is_err());
        assert!(RegistriesConf::parse("[[registry]]\ninsecure = true\n", "x").is_err());
    }
}
