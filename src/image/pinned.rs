//! Which images are pinned (`Image.pinned`): kubelet's image GC never removes a pinned image.
//! An image is pinned when one of its names matches `image.pinned_images`, or when it came
//! from the air-gap import dir (it may not be pullable again).
//!
//! Patterns, as CRI-O's `pinned_images` takes them (case-insensitive): an exact name
//! (`registry.k8s.io/pause:3.10`), a trailing `*` for a prefix (`registry.k8s.io/pause*`), a
//! leading and trailing `*` for a substring (`*pause*`). A `*` anywhere else is refused. A
//! pattern is matched against each of the image's tags and repo digests, as the store names
//! them (normalised: `docker.io/library/busybox:1.36`).

/// One `pinned_images` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Contains(String),
}

/// The compiled `pinned_images` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedImages(Vec<Pattern>);

impl PinnedImages {
    /// Compiles the config's patterns; a pattern that is empty or has a `*` elsewhere than at
    /// its ends is an error naming it.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut out = Vec::with_capacity(patterns.len());
        for p in patterns {
            let lower = p.to_ascii_lowercase();
            let (inner, pattern) = if let Some(mid) = lower
                .strip_prefix('*')
                .and_then(|r| r.strip_suffix('*'))
                .filter(|m| !m.is_empty())
            {
                (mid, Pattern::Contains(mid.to_string()))
            } else if let Some(prefix) = lower.strip_suffix('*') {
                (prefix, Pattern::Prefix(prefix.to_string()))
            } else {
                (lower.as_str(), Pattern::Exact(lower.clone()))
            };
            if inner.is_empty() || inner.contains('*') {
                return Err(format!(
                    "image.pinned_images: {p:?} is not a name, a name with a trailing *, or *keyword*"
                ));
            }
            out.push(pattern);
        }
        Ok(PinnedImages(out))
    }

    /// Whether one of `names` matches a pattern.
    pub fn matches<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> bool {
        if self.0.is_empty() {
            return false;
        }
        names.into_iter().any(|n| {
            let n = n.to_ascii_lowercase();
            self.0.iter().any(|p| match p {
                Pattern::Exact(e) => n == *e,
                Pattern::Prefix(pre) => n.starts_with(pre.as_str()),
                Pattern::Contains(k) => n.contains(k.as_str()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_prefix_and_keyword_patterns() {
        let p = PinnedImages::new(&names(&[
            "registry.k8s.io/pause:3.10",
            "docker.io/library/busy*",
            "*Agent*",
        ]))
        .unwrap();
        assert!(p.matches(&names(&["registry.k8s.io/pause:3.10"])));
        assert!(p.matches(&names(&["REGISTRY.k8s.io/pause:3.10"])));
        assert!(!p.matches(&names(&["registry.k8s.io/pause:3.9"])));
        assert!(p.matches(&names(&["x/y:1", "docker.io/library/busybox:1.36"])));
        assert!(!p.matches(&names(&["quay.io/docker.io/library/busybox:1"])));
        assert!(p.matches(&names(&["example.com/security-agent@sha256:00"])));
        assert!(!p.matches(&names(&["example.com/other:1"])));
        assert!(!PinnedImages::default().matches(&names(&["a"])));
    }

    #[test]
    fn stars_elsewhere_are_refused() {
        for bad in ["", "*", "**", "a*b", "*a", "a**", "*a*b*"] {
            let e = PinnedImages::new(&names(&[bad])).unwrap_err();
            assert!(e.contains("pinned_images"), "{bad}: {e}");
        }
    }
}
