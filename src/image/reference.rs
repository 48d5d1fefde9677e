//! Image references, normalised the way every Kubernetes runtime does:
//! `busybox` → `docker.io/library/busybox:latest`, `foo/bar@sha256:…` → `docker.io/foo/bar@sha256:…`.

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
    let r: Reference = s.parse().map_err(|e| invalid(format!("{e}")))?;
    if r.repository().bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid("repository name must be lowercase".into()));
    }
    if let Some(d) = r.digest() {
        check_digest(d).map_err(invalid)?;
    }
    Ok(r)
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
    fn invalid_references_are_rejected_with_the_reason() {
        for bad in [
            "",
            "UPPER/case",
            "a b",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            ":tag",
            "x\0y",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                matches!(e, ImageError::InvalidReference { .. }),
                "{bad}: {e}"
            );
        }
    }
}
