//! Image references, normalised the way every Kubernetes runtime does:
//! `busybox` → `docker.io/library/busybox:latest`, `foo/bar@sha256:…` → `docker.io/foo/bar@sha256:…`.
//!
//! The grammar (distribution's reference grammar) is checked here by hand rather than with
//! `Reference::from_str`: oci-spec compiles its reference regex, Unicode classes included, into
//! about 7 MB of heap that a daemon then keeps for good — half of ferrio's idle memory. The
//! parsed parts build an `oci_client::Reference` through its plain constructors.

use super::ImageError;
use oci_client::Reference;

/// Parses and normalises a reference. A reference with neither tag nor digest gets `:latest`.
pub fn parse(s: &str) -> Result<Reference, ImageError> {
    let invalid = |reason: String| ImageError::InvalidReference {
        reference: s.to_string(),
        reason,
    };
    if s.is_empty() {
        return Err(invalid("empty".into()));
    }
    if s.len() > 4096 || s.contains(char::is_whitespace) || s.contains('\0') {
        return Err(invalid("contains whitespace or NUL, or is too long".into()));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    // A tag follows the last ':' that comes after the last '/' (a registry port comes before).
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(d) = digest {
        check_digest(d).map_err(invalid)?;
    }
    if let Some(t) = tag {
        check_tag(t).map_err(invalid)?;
    }
    let (registry, repository) = split_name(name).map_err(invalid)?;
    if repository.len() > 255 {
        return Err(invalid("repository name is longer than 255 bytes".into()));
    }
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => {
            Reference::with_tag_and_digest(registry, repository, t.into(), d.into())
        }
        (None, Some(d)) => Reference::with_digest(registry, repository, d.into()),
        (t, None) => Reference::with_tag(registry, repository, t.unwrap_or("latest").into()),
    })
}

/// `[\w][\w.-]{0,127}` with ASCII word characters.
fn check_tag(t: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !t.is_empty()
        && t.len() <= 128
        && word(t.as_bytes()[0])
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {t:?}"))
    }
}

/// A registry host: dot-separated components of letters, digits and inner hyphens, with an
/// optional `:port`.
fn check_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
    };
    host.split('.').all(component)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A path component: lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn check_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_digit() || ch.is_ascii_lowercase() {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__" or one or more "-", then an alphanumeric.
        let start = i;
        match ch {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !(b[i].is_ascii_digit() || b[i].is_ascii_lowercase()) {
            return false;
        }
    }
    true
}

/// Splits a name into registry and repository, Docker-style: the first component is a
/// registry when it has a '.' or ':' or is `localhost`; otherwise the registry is docker.io,
/// whose single-component names live under `library/`.
fn split_name(name: &str) -> Result<(String, String), String> {
    let (mut domain, remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if !check_domain(first) {
                return Err(format!("invalid registry {first:?}"));
            }
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if remainder.is_empty() {
        return Err("empty repository name".into());
    }
    for c in remainder.split('/') {
        if c.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("repository name must be lowercase".into());
        }
        if !check_path_component(c) {
            return Err(format!("invalid repository name component {c:?}"));
        }
    }
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    let repository = if domain == "docker.io" && !remainder.contains('/') {
        format!("library/{remainder}")
    } else {
        remainder
    };
    Ok((domain, repository))
}

/// Whether `s` names no registry (`busybox`, `library/busybox:1`, `foo/bar@sha256:…`): its
/// first component is not a host (no `.` or `:`, not `localhost`), or it has only one. An image
/// ID or ID prefix is short too; callers try those first.
pub fn is_short(s: &str) -> bool {
    let name = s.split('@').next().unwrap_or(s);
    match name.split_once('/') {
        Some((first, _)) => !(first.contains('.') || first.contains(':') || first == "localhost"),
        None => true,
    }
}

/// A reference's name and its `:tag`, `@digest` or both, apart (`a/b:1` → (`a/b`, `:1`)).
pub fn split_suffix(s: &str) -> (&str, &str) {
    let end = s.find('@').unwrap_or(s.len());
    let name_tag = &s[..end];
    let cut = match name_tag.rfind(':') {
        Some(i) if !name_tag[i..].contains('/') => i,
        _ => end,
    };
    (&s[..cut], &s[cut..])
}

/// `registry/repository`, e.g. `docker.io/library/busybox`.
pub fn repository(r: &Reference) -> String {
    format!("{}/{}", r.registry(), r.repository())
}

/// The tagged name (`docker.io/library/busybox:1`), when the reference has a tag.
pub fn tagged(r: &Reference) -> Option<String> {
    r.tag().map(|t| format!("{}:{}", repository(r), t))
}

/// The digested name (`docker.io/library/busybox@sha256:…`).
pub fn digested(r: &Reference, digest: &str) -> String {
    format!("{}@{}", repository(r), digest)
}

/// Checks that `d` is `sha256:` and 64 lowercase hex digits.
pub fn check_digest(d: &str) -> Result<(), String> {
    match d.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "unsupported digest {d:?} (only sha256 is supported)"
        )),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn short_names_and_suffixes() {
        for short in [
            "busybox",
            "busybox:1",
            "library/busybox",
            "a/b/c@sha256:00",
            "abc123",
        ] {
            assert!(super::is_short(short), "{short}");
        }
        for long in [
            "docker.io/library/busybox",
            "localhost/x",
            "127.0.0.1:5000/a:1",
            "reg.example/a@sha256:00",
        ] {
            assert!(!super::is_short(long), "{long}");
        }
        assert_eq!(super::split_suffix("a/b:1"), ("a/b", ":1"));
        assert_eq!(super::split_suffix("a/b"), ("a/b", ""));
        assert_eq!(super::split_suffix("a:1@sha256:00"), ("a", ":1@sha256:00"));
        assert_eq!(super::split_suffix("a@sha256:00"), ("a", "@sha256:00"));
    }

    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_are_normalised() {
        let r = parse("busybox").unwrap();
        assert_eq!(tagged(&r).unwrap(), "docker.io/library/busybox:latest");
        let r = parse("foo/bar:1.2").unwrap();
        assert_eq!(tagged(&r).unwrap(), "docker.io/foo/bar:1.2");
        let r = parse("index.docker.io/library/busybox:1").unwrap();
        assert_eq!(tagged(&r).unwrap(), "docker.io/library/busybox:1");
    }

    #[test]
    fn registries_with_ports_and_localhost() {
        let r = parse("127.0.0.1:5000/ferrio-test/busybox:1.36").unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "ferrio-test/busybox");
        assert_eq!(r.tag(), Some("1.36"));
        let r = parse("localhost/busybox").unwrap();
        assert_eq!(r.registry(), "localhost");
    }

    #[test]
    fn digest_and_tag_plus_digest() {
        let r = parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(digested(&r, D), format!("docker.io/library/busybox@{D}"));
        let r = parse(&format!("quay.io/a/b:v1@{D}")).unwrap();
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest(), Some(D));
    }

    #[test]
    fn separators_and_odd_forms() {
        for ok in [
            "a__b/c.d-e--f",
            "a/b_c",
            "my-registry.example.com/team/app:v1.2_3-rc",
            "[::1]:5000/a",
        ] {
            // IPv6 literals are not part of this grammar; everything else here is valid.
            let r = parse(ok);
            assert_eq!(r.is_ok(), !ok.starts_with('['), "{ok}: {r:?}");
        }
        let r = parse("localhost:5000/a/b").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("localhost:5000", "a/b", Some("latest"))
        );
        let r = parse("library/busybox").unwrap();
        assert_eq!(r.whole(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn invalid_references_are_rejected_with_the_reason() {
        for bad in [
            "",
            "UPPER/case",
            "a b",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            ":tag",
            "x\0y",
            "a//b",
            "-a/b",
            "a_/b",
            "a/b:-tag",
            "a/b:",
            "bad_host:5000x/a",
            "localhost:/a",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                matches!(e, ImageError::InvalidReference { .. }),
                "{bad}: {e}"
            );
        }
    }
}
