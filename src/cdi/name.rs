//! CDI names: the `kind` of a spec file (`vendor.com/class`), device names, and the fully
//! qualified device names (`vendor.com/class=name`) that CreateContainer's `cdi_devices` holds.
//!
//! The rules, from the CDI specification: the vendor is a DNS-subdomain-like label (letters,
//! digits, `.`, `-`, `_`; a letter first, a letter or digit last; at most 253 characters); the
//! class is at most 63 characters of the same alphabet, a letter or digit at both ends (dots
//! are allowed since spec v0.6.0); a device name starts and ends with a letter or digit and may
//! hold `.`, `-`, `_` and `:` in between (a leading digit is allowed since spec v0.5.0).

use std::fmt;

/// The longest vendor (DNS subdomain) the specification allows.
const MAX_VENDOR: usize = 253;
/// The longest class (the name segment of a kind) the specification allows.
const MAX_CLASS: usize = 63;

/// A fully qualified CDI device name, `vendor/class=name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QualifiedName {
    pub vendor: String,
    pub class: String,
    pub name: String,
}

impl QualifiedName {
    /// Parses and validates `vendor.com/class=name`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<QualifiedName, String> {
        let (kind, name) = text
            .split_once('=')
            .ok_or_else(|| "expected vendor.com/class=name: no '='".to_string())?;
        let (vendor, class) = parse_kind(kind)?;
        check_device_name(name)?;
        Ok(QualifiedName {
            vendor: vendor.to_string(),
            class: class.to_string(),
            name: name.to_string(),
        })
    }

    /// The device's kind, `vendor/class`.
    pub fn kind(&self) -> String {
        format!("{}/{}", self.vendor, self.class)
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}={}", self.vendor, self.class, self.name)
    }
}

/// Splits and validates a kind, `vendor.com/class`.
pub fn parse_kind(kind: &str) -> Result<(&str, &str), String> {
    let (vendor, class) = kind
        .split_once('/')
        .ok_or_else(|| format!("kind {kind:?} is not vendor.com/class: no '/'"))?;
    check_vendor(vendor).map_err(|e| format!("kind {kind:?}: vendor {e}"))?;
    check_class(class).map_err(|e| format!("kind {kind:?}: class {e}"))?;
    Ok((vendor, class))
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// Checks the first, middle and last characters of `s` against the given rules.
fn check_chars(
    s: &str,
    max: usize,
    first: fn(char) -> bool,
    first_what: &str,
    middle: &[char],
) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > max {
        return Err(format!("{s:?} is longer than {max} characters"));
    }
    let chars: Vec<char> = s.chars().collect();
    if !first(chars[0]) {
        return Err(format!("{s:?} must start with {first_what}"));
    }
    if let Some(bad) = chars
        .iter()
        .copied()
        .find(|&c| !is_alnum(c) && !middle.contains(&c))
    {
        return Err(format!("{s:?} holds the invalid character {bad:?}"));
    }
    if !is_alnum(chars[chars.len() - 1]) {
        return Err(format!("{s:?} must end with a letter or digit"));
    }
    Ok(())
}

fn check_vendor(vendor: &str) -> Result<(), String> {
    check_chars(
        vendor,
        MAX_VENDOR,
        |c| c.is_ascii_alphabetic(),
        "a letter",
        &['.', '-', '_'],
    )
}

fn check_class(class: &str) -> Result<(), String> {
    check_chars(
        class,
        MAX_CLASS,
        is_alnum,
        "a letter or digit",
        &['.', '-', '_'],
    )
}

/// Validates a device name as a spec file gives it (without the kind).
pub fn check_device_name(name: &str) -> Result<(), String> {
    check_chars(
        name,
        usize::MAX,
        is_alnum,
        "a letter or digit",
        &['.', '-', '_', ':'],
    )
    .map_err(|e| format!("device name {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_parse_into_their_parts() {
        let q = QualifiedName::parse("vendor.com/gpu=0:1").unwrap();
        assert_eq!(
            (q.vendor.as_str(), q.class.as_str(), q.name.as_str()),
            ("vendor.com", "gpu", "0:1")
        );
        assert_eq!(q.kind(), "vendor.com/gpu");
        assert_eq!(q.to_string(), "vendor.com/gpu=0:1");
        assert!(QualifiedName::parse("foo.bar.baz/foo-bar123.B_az=all").is_ok());
    }

    #[test]
    fn malformed_names_say_what_is_wrong() {
        for (bad, says) in [
            ("vendor.com/gpu", "no '='"),
            ("gpu=0", "no '/'"),
            ("vendor.com/gpu/x=0", "invalid character '/'"),
            ("/gpu=0", "vendor is empty"),
            ("vendor.com/=0", "class is empty"),
            ("vendor.com/gpu=", "device name is empty"),
            ("1vendor.com/gpu=0", "must start with a letter"),
            ("vendor.com/gpu-=0", "must end with a letter or digit"),
            ("vendor.com/gpu=a b", "invalid character ' '"),
            ("vendor.com/gpu=-a", "must start with a letter or digit"),
        ] {
            let err = QualifiedName::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let long_class = format!("vendor.com/{}=0", "c".repeat(64));
        assert!(QualifiedName::parse(&long_class)
            .unwrap_err()
            .contains("longer than 63"));
    }
}
