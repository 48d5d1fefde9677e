//! Registry credentials: from the PullImage request, or from an auth file in the usual
//! `{"auths": {"registry[/namespace]": {"auth": "base64(user:pass)"}}}` format
//! (containers-auth.json(5), docker's config.json). Secrets never reach a log: `Debug` redacts them.

use super::ImageError;
use base64::Engine;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Clone, PartialEq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// A registry bearer token sent as is (`registry_token`).
    Bearer(String),
    /// An OAuth2 refresh token (`identity_token`), exchanged at the registry's token endpoint.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Credentials::Bearer(_) => write!(f, "Bearer(<redacted>)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

/// A digest that tells credentials apart without holding them (`anonymous` for none): the
/// SHA-256 of their kind and fields, each length-prefixed.
pub fn fingerprint(creds: Option<&Credentials>) -> String {
    use sha2::{Digest, Sha256};
    let Some(c) = creds else {
        return "anonymous".into();
    };
    let mut h = Sha256::new();
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    match c {
        Credentials::Basic { username, password } => {
            field("basic");
            field(username);
            field(password);
        }
        Credentials::Bearer(t) => {
            field("bearer");
            field(t);
        }
        Credentials::IdentityToken(t) => {
            field("identity");
            field(t);
        }
    }
    hex::encode(h.finalize())
}

/// The CRI AuthConfig fields, without the transport's types.
#[derive(Default)]
pub struct RequestAuth<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub auth: &'a str,
    pub identity_token: &'a str,
    pub registry_token: &'a str,
}

impl RequestAuth<'_> {
    /// The credentials this request carries, if any. Precedence: registry token, identity token,
    /// username/password, then `auth`.
    pub fn credentials(&self) -> Result<Option<Credentials>, ImageError> {
        if !self.registry_token.is_empty() {
            return Ok(Some(Credentials::Bearer(self.registry_token.to_string())));
        }
        if !self.identity_token.is_empty() {
            return Ok(Some(Credentials::IdentityToken(
                self.identity_token.to_string(),
            )));
        }
        if !self.username.is_empty() {
            return Ok(Some(Credentials::Basic {
                username: self.username.to_string(),
                password: self.password.to_string(),
            }));
        }
        if !self.auth.is_empty() {
            return decode_auth(self.auth)
                .map(Some)
                .map_err(|e| ImageError::InvalidArgument(format!("auth.auth: {e}")));
        }
        Ok(None)
    }
}

/// Decodes `base64(username:password)`.
fn decode_auth(s: &str) -> Result<Credentials, String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| "not valid base64".to_string())?;
    let text = String::from_utf8(raw).map_err(|_| "not UTF-8 after base64 decoding".to_string())?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| "not of the form username:password".to_string())?;
    Ok(Credentials::Basic {
        username: u.to_string(),
        password: p.to_string(),
    })
}

#[derive(Deserialize)]
struct AuthFileJson {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

/// A loaded auth file: keys normalised to `host[:port][/path]`.
#[derive(Debug, Default, Clone)]
pub struct AuthFile {
    entries: HashMap<String, Credentials>,
}

impl AuthFile {
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ImageError::io(format!("reading auth file {}", path.display()), e))?;
        Self::parse(&text)
            .map_err(|e| ImageError::InvalidArgument(format!("auth file {}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let json: AuthFileJson = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut entries = HashMap::new();
        for (key, e) in json.auths {
            let req = RequestAuth {
                username: &e.username,
                password: &e.password,
                auth: &e.auth,
                identity_token: &e.identitytoken,
                registry_token: &e.registrytoken,
            };
            let creds = req
                .credentials()
                .map_err(|err| format!("entry {key:?}: {err}"))?;
            if let Some(c) = creds {
                entries.insert(normalize_key(&key), c);
            }
        }
        Ok(AuthFile { entries })
    }

    /// Credentials for `registry` and `repository`, most specific key first:
    /// `reg/ns/repo`, `reg/ns`, `reg`.
    pub fn lookup(&self, registry: &str, repository: &str) -> Option<Credentials> {
        let mut key = format!("{registry}/{repository}");
        loop {
            if let Some(c) = self.entries.get(&key) {
                return Some(c.clone());
            }
            match key.rfind('/') {
                Some(i) => key.truncate(i),
                None => break,
            }
        }
        None
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://reg:5000` → `reg:5000`.
fn normalize_key(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    match k {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other
            .strip_prefix("index.docker.io/")
            .map(|rest| format!("docker.io/{rest}"))
            .unwrap_or_else(|| other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn request_precedence_and_decoding() {
        let r = RequestAuth {
            auth: &b64("u:p:w"),
            ..Default::default()
        };
        assert_eq!(
            r.credentials().unwrap(),
            Some(Credentials::Basic {
                username: "u".into(),
                password: "p:w".into()
            })
        );
        let r = RequestAuth {
            username: "a",
            password: "b",
            registry_token: "t",
            ..Default::default()
        };
        assert_eq!(
            r.credentials().unwrap(),
            Some(Credentials::Bearer("t".into()))
        );
        let r = RequestAuth {
            auth: "!!!",
            ..Default::default()
        };
        assert!(r.credentials().is_err());
        assert_eq!(RequestAuth::default().credentials().unwrap(), None);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials::Basic {
            username: "me".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Bearer("tok".into())).contains("tok"));
    }

    #[test]
    fn fingerprints_tell_credentials_apart() {
        let basic = |u: &str, p: &str| Credentials::Basic {
            username: u.into(),
            password: p.into(),
        };
        let a = fingerprint(Some(&basic("alice", "s3cret")));
        assert_eq!(a, fingerprint(Some(&basic("alice", "s3cret"))));
        assert_ne!(a, fingerprint(Some(&basic("alice", "other"))));
        // Field boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            fingerprint(Some(&basic("ab", "c"))),
            fingerprint(Some(&basic("a", "bc")))
        );
        assert_ne!(a, fingerprint(None));
        assert_ne!(
            fingerprint(Some(&Credentials::Bearer("t".into()))),
            fingerprint(Some(&Credentials::IdentityToken("t".into())))
        );
        assert!(!a.contains("s3cret"));
    }

    #[test]
    fn auth_file_lookup_most_specific_first() {
        let text = format!(
            r#"{{"auths": {{
                "127.0.0.1:5000": {{"auth": "{}"}},
                "127.0.0.1:5000/team": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}}
            }}}}"#,
            b64("all:1"),
            b64("team:2"),
            b64("hub:3")
        );
        let f = AuthFile::parse(&text).unwrap();
        let user = |reg: &str, repo: &str| match f.lookup(reg, repo) {
            Some(Credentials::Basic { username, .. }) => username,
            other => format!("{other:?}"),
        };
        assert_eq!(user("127.0.0.1:5000", "team/app"), "team");
        assert_eq!(user("127.0.0.1:5000", "other/app"), "all");
        assert_eq!(user("docker.io", "library/busybox"), "hub");
        assert!(f.lookup("quay.io", "x/y").is_none());
    }
}
