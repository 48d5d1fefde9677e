//! The registry requests ferrio makes with its own HTTP client rather than through oci-client,
//! because oci-client reads their answers whole before anyone can check their size: the
//! manifest or index (at most `manifest::MAX_DOCUMENT`: refused from its `Content-Length`, or as
//! soon as more than that has arrived), the token endpoint's answer and error bodies (at most
//! [`MAX_SMALL_BODY`]). The authorisation worked out here is handed to oci-client, which streams
//! the blobs with it.

use super::auth::Credentials;
use super::manifest;
use super::registries::Endpoint;
use super::unpack::error_chain;
use super::ImageError;
use bytes::{Bytes, BytesMut};
use oci_client::Reference;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde::Deserialize;
use sha2::Digest;
use std::time::Duration;

/// Largest token-endpoint answer or registry error body read.
pub const MAX_SMALL_BODY: u64 = 64 << 10;

/// How the manifest request (and, through oci-client, the blob requests) are authorised.
/// `Debug` never shows a secret.
#[derive(Clone, PartialEq)]
pub enum Authorization {
    None,
    Basic { username: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authorization::None => write!(f, "None"),
            Authorization::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Authorization::Bearer(_) => write!(f, "Bearer(<redacted>)"),
        }
    }
}

impl Authorization {
    /// `req` with this authorisation's header.
    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Authorization::None => req,
            Authorization::Basic { username, password } => req.basic_auth(username, Some(password)),
            Authorization::Bearer(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
        }
    }
}

/// What `GET /v2/` asked for.
#[derive(Debug, PartialEq)]
enum Challenge {
    /// No `WWW-Authenticate`: nothing to send.
    None,
    Bearer {
        realm: String,
        service: Option<String>,
    },
    /// Basic or another scheme: credentials, if any, go as HTTP basic auth.
    Other,
}

/// A reqwest client builder whose TLS uses rustls with `ring`, installed as the process's
/// provider on first use (reqwest is built without a provider of its own: `ring` is smaller
/// than aws-lc and already verifies signatures here).
pub fn client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

/// The HTTP clients of [`RegistryHttp`], kept between pulls: building one costs about 10 ms
/// (reqwest's rustls set-up loads the system's CA certificates), once per pull otherwise. A
/// client holds no credentials (every request carries its own `Authorization`), only its TLS
/// material and connection pool, so one is shared by every pull with the same TLS material.
#[derive(Default)]
pub struct HttpClients(std::sync::Mutex<std::collections::HashMap<Vec<u8>, reqwest::Client>>);

/// Distinct TLS configurations kept (registries with their own certs.d material, each).
const HTTP_CLIENTS_KEPT: usize = 64;

impl HttpClients {
    fn get_or_build(
        &self,
        key: Vec<u8>,
        build: impl FnOnce() -> Result<reqwest::Client, ImageError>,
    ) -> Result<reqwest::Client, ImageError> {
        if let Some(c) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(c.clone());
        }
        let client = build()?;
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= HTTP_CLIENTS_KEPT {
            map.clear();
        }
        Ok(map.entry(key).or_insert(client).clone())
    }
}

/// One registry endpoint, reached over https, or http when it is insecure.
pub struct RegistryHttp {
    client: reqwest::Client,
    scheme: &'static str,
    /// The read timeout: hitting it is a stalled pull, as for blobs.
    stall: Option<Duration>,
}

impl RegistryHttp {
    pub fn new(
        ep: &Endpoint,
        stall: Option<Duration>,
        user_agent: &str,
        tls: Option<&super::tls::RegistryTls>,
        clients: &HttpClients,
    ) -> Result<Self, ImageError> {
        // What the client is made of: the same key, the same client.
        let mut key = sha2::Sha256::new();
        key.update(user_agent.as_bytes());
        key.update(format!("{stall:?}").as_bytes());
        if let Some(t) = tls {
            for pem in &t.roots {
                key.update((pem.len() as u64).to_be_bytes());
                key.update(pem);
            }
            key.update(b"identity");
            if let Some(id) = &t.identity {
                key.update(id);
            }
        }
        let client = clients.get_or_build(key.finalize().to_vec(), || {
            Self::build_client(stall, user_agent, tls)
        })?;
        Ok(RegistryHttp {
            client,
            scheme: if ep.insecure { "http" } else { "https" },
            stall,
        })
    }

    fn build_client(
        stall: Option<Duration>,
        user_agent: &str,
        tls: Option<&super::tls::RegistryTls>,
    ) -> Result<reqwest::Client, ImageError> {
        let mut b = client_builder()
            .user_agent(user_agent)
            .connect_timeout(Duration::from_secs(30));
        if let Some(t) = tls {
            let bad = |what: &str, e: reqwest::Error| {
                ImageError::InvalidArgument(format!(
                    "{}: {what}: {}",
                    t.dir.display(),
                    error_chain(&e)
                ))
            };
            for pem in &t.roots {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| bad("a CA certificate", e))?;
                b = b.tls_certs_merge(certs);
            }
            if let Some(id) = &t.identity {
                b = b.identity(
                    reqwest::Identity::from_pem(id)
                        .map_err(|e| bad("the client certificate or key", e))?,
                );
            }
        }
        if let Some(d) = stall {
            b = b.read_timeout(d);
        }
        b.build()
            .map_err(|e| ImageError::Internal(format!("HTTP client: {}", error_chain(&e))))
    }

    /// A request that failed: a read timeout is a stalled pull, anything else a registry error.
    fn failed(&self, name: &str, url: &str, e: &reqwest::Error) -> ImageError {
        match self.stall {
            Some(d) if e.is_timeout() => ImageError::Stalled {
                reference: name.into(),
                secs: d.as_secs(),
            },
            _ => ImageError::Registry {
                reference: name.into(),
                detail: format!("{url}: {}", error_chain(e)),
            },
        }
    }

    fn base(&self, r: &Reference) -> String {
        format!("{}://{}", self.scheme, r.resolve_registry())
    }

    /// Asks `GET /v2/` how to authenticate and does it: a bearer token from the realm (asked
    /// with the username and password as basic auth, or with the OAuth2 refresh token of an
    /// `identity_token`, or anonymously), or the username and password as basic auth, or
    /// nothing. A registry token is used as is, without asking.
    pub async fn authorize(
        &self,
        r: &Reference,
        creds: Option<&Credentials>,
        name: &str,
    ) -> Result<Authorization, ImageError> {
        if let Some(Credentials::Bearer(t)) = creds {
            return Ok(Authorization::Bearer(t.clone()));
        }
        let url = format!("{}/v2/", self.base(r));
        let res = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| self.failed(name, &url, &e))?;
        let challenge = parse_challenge(res.headers().get(WWW_AUTHENTICATE));
        drop(res); // the body says nothing we need
        Ok(match challenge {
            Challenge::None => Authorization::None,
            Challenge::Other => match creds {
                Some(Credentials::Basic { username, password }) => Authorization::Basic {
                    username: username.clone(),
                    password: password.clone(),
                },
                Some(Credentials::IdentityToken(_)) => {
                    return Err(ImageError::Unauthenticated {
                        reference: name.into(),
                        detail: format!(
                            "{url} does not offer bearer tokens: an identity_token (OAuth2 \
                             refresh token) cannot be used with it"
                        ),
                    })
                }
                _ => Authorization::None,
            },
            Challenge::Bearer { realm, service } => {
                let scope = format!("repository:{}:pull", r.repository());
                let mut params = vec![("scope", scope.as_str())];
                if let Some(s) = &service {
                    params.push(("service", s));
                }
                let req = match creds {
                    // OAuth2 refresh-token grant (the distribution token spec's POST form).
                    Some(Credentials::IdentityToken(refresh)) => {
                        params.extend([
                            ("grant_type", "refresh_token"),
                            ("refresh_token", refresh.as_str()),
                            ("client_id", "ferrio"),
                        ]);
                        self.client.post(&realm).form(&params)
                    }
                    Some(Credentials::Basic { username, password }) => self
                        .client
                        .get(&realm)
                        .query(&params)
                        .basic_auth(username, Some(password)),
                    _ => self.client.get(&realm).query(&params),
                };
                Authorization::Bearer(self.token(req, &realm, name).await?)
            }
        })
    }

    /// Sends a token request and reads the token from its (small) JSON answer.
    async fn token(
        &self,
        req: reqwest::RequestBuilder,
        realm: &str,
        name: &str,
    ) -> Result<String, ImageError> {
        let res = req.send().await.map_err(|e| self.failed(name, realm, &e))?;
        let status = res.status();
        let body = match read_capped(res, MAX_SMALL_BODY).await {
            Ok(Capped::Body(b)) => b,
            Ok(Capped::TooLarge) => {
                return Err(ImageError::Registry {
                    reference: name.into(),
                    detail: format!(
                        "token endpoint {realm}: answer larger than {MAX_SMALL_BODY} bytes"
                    ),
                })
            }
            Err(e) => return Err(self.failed(name, realm, &e)),
        };
        if status != StatusCode::OK {
            return Err(ImageError::Unauthenticated {
                reference: name.into(),
                detail: format!(
                    "token endpoint {realm} answered {status}: {}",
                    printable(&body)
                ),
            });
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let t: TokenAnswer = serde_json::from_slice(&body).map_err(|e| ImageError::Registry {
            reference: name.into(),
            detail: format!("token endpoint {realm}: not a token answer: {e}"),
        })?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if token.is_empty() {
            return Err(ImageError::Registry {
                reference: name.into(),
                detail: format!("token endpoint {realm}: the answer holds no token"),
            });
        }
        Ok(token)
    }

    /// A blob's bytes as they arrive (the caller checks its digest and size). Used when the
    /// registry wants a client certificate, which oci-client cannot present.
    pub async fn blob(
        &self,
        r: &Reference,
        digest: &str,
        authz: &Authorization,
        name: &str,
        location: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>, ImageError>
    {
        use futures::{StreamExt, TryStreamExt};
        let url = format!("{}/v2/{}/blobs/{digest}", self.base(r), r.repository());
        let req = authz.apply(self.client.get(&url));
        let res = req.send().await.map_err(|e| self.failed(name, &url, &e))?;
        let status = res.status();
        if status != StatusCode::OK {
            let body = match read_capped(res, MAX_SMALL_BODY).await {
                Ok(Capped::Body(b)) => b,
                Ok(Capped::TooLarge) | Err(_) => Bytes::new(),
            };
            return Err(status_error(name, location, &url, status, &body));
        }
        Ok(res.bytes_stream().map_err(std::io::Error::other).boxed())
    }

    /// The manifest or index `r` names, read with a cap of `manifest::MAX_DOCUMENT`. When the
    /// registry sends `Docker-Content-Digest`, the body must match it (the caller checks the
    /// reference's own digest).
    pub async fn manifest(
        &self,
        r: &Reference,
        authz: &Authorization,
        name: &str,
        location: &str,
    ) -> Result<Bytes, ImageError> {
        let url = format!(
            "{}/v2/{}/manifests/{}{}",
            self.base(r),
            r.repository(),
            r.digest().or(r.tag()).unwrap_or("latest"),
            r.namespace()
                .map(|ns| format!("?ns={ns}"))
                .unwrap_or_default()
        );
        let req = authz.apply(
            self.client
                .get(&url)
                .header(ACCEPT, manifest::ACCEPTED.join(", ")),
        );
        let res = req.send().await.map_err(|e| self.failed(name, &url, &e))?;
        let status = res.status();
        let header_digest = res
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        if status != StatusCode::OK {
            let body = match read_capped(res, MAX_SMALL_BODY).await {
                Ok(Capped::Body(b)) => b,
                Ok(Capped::TooLarge) | Err(_) => Bytes::new(),
            };
            return Err(status_error(name, location, &url, status, &body));
        }
        let too_large = || {
            ImageError::Corrupt(format!(
                "{name}: {location}: manifest larger than {} bytes; refused",
                manifest::MAX_DOCUMENT
            ))
        };
        let body = match read_capped(res, manifest::MAX_DOCUMENT).await {
            Ok(Capped::Body(b)) => b,
            Ok(Capped::TooLarge) => return Err(too_large()),
            Err(e) => {
                return Err(self.failed(name, &format!("{location}: reading the manifest"), &e))
            }
        };
        if let Some(d) = header_digest {
            check_header_digest(&body, &d).map_err(|detail| {
                ImageError::Corrupt(format!("{name}: {location}: manifest: {detail}"))
            })?;
        }
        Ok(body)
    }
}

enum Capped {
    Body(Bytes),
    TooLarge,
}

/// Reads a body of at most `cap` bytes: a larger `Content-Length` is refused before reading,
/// and reading stops as soon as more than `cap` bytes have arrived.
async fn read_capped(mut res: reqwest::Response, cap: u64) -> Result<Capped, reqwest::Error> {
    if res.content_length().is_some_and(|n| n > cap) {
        return Ok(Capped::TooLarge);
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = res.chunk().await? {
        if (buf.len() + chunk.len()) as u64 > cap {
            return Ok(Capped::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Capped::Body(buf.freeze()))
}

fn parse_challenge(h: Option<&reqwest::header::HeaderValue>) -> Challenge {
    let Some(h) = h else {
        return Challenge::None;
    };
    let Ok(text) = h.to_str() else {
        return Challenge::Other;
    };
    for c in http_auth::parser::ChallengeParser::new(text).flatten() {
        if !c.scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        let param = |name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        if let Some(realm) = param("realm") {
            return Challenge::Bearer {
                realm,
                service: param("service"),
            };
        }
    }
    Challenge::Other
}

/// Checks `body` against a `Docker-Content-Digest` value (sha256, sha384 or sha512).
fn check_header_digest(body: &[u8], digest: &str) -> Result<(), String> {
    let (alg, want) = digest
        .split_once(':')
        .ok_or_else(|| format!("Docker-Content-Digest {digest:?} is not a digest"))?;
    let got = match alg {
        "sha256" => hex::encode(sha2::Sha256::digest(body)),
        "sha384" => hex::encode(sha2::Sha384::digest(body)),
        "sha512" => hex::encode(sha2::Sha512::digest(body)),
        other => {
            return Err(format!(
                "Docker-Content-Digest: unsupported algorithm {other:?}"
            ))
        }
    };
    if got != want {
        return Err(format!(
            "digest mismatch: the registry announced {digest}, the body is {alg}:{got}"
        ));
    }
    Ok(())
}

/// At most 512 characters of a (registry-controlled) body, for an error message.
fn printable(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t: String = text.trim().chars().take(512).collect();
    t.replace(['\n', '\r'], " ")
}

#[derive(Deserialize)]
struct Envelope {
    errors: Vec<EnvelopeError>,
}

#[derive(Deserialize)]
struct EnvelopeError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// A non-200 answer as an image error of the right kind: 401 and the registry error codes
/// UNAUTHORIZED/DENIED are `Unauthenticated`, 404 and the *_UNKNOWN codes `NotFound`.
fn status_error(
    name: &str,
    location: &str,
    url: &str,
    status: StatusCode,
    body: &[u8],
) -> ImageError {
    let reference = name.to_string();
    let envelope = status
        .is_client_error()
        .then(|| serde_json::from_slice::<Envelope>(body).ok())
        .flatten();
    let what = match &envelope {
        Some(e) => e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        None => printable(body),
    };
    let detail = format!("{location}: {url} answered {status}: {what}");
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return ImageError::Unauthenticated { reference, detail };
    }
    if let Some(e) = &envelope {
        let has = |codes: &[&str]| e.errors.iter().any(|x| codes.contains(&x.code.as_str()));
        if has(&["UNAUTHORIZED", "DENIED"]) {
            return ImageError::Unauthenticated { reference, detail };
        }
        if has(&[
            "MANIFEST_UNKNOWN",
            "NAME_UNKNOWN",
            "BLOB_UNKNOWN",
            "NOT_FOUND",
        ]) {
            return ImageError::NotFound { reference, detail };
        }
    }
    if status == StatusCode::NOT_FOUND {
        return ImageError::NotFound { reference, detail };
    }
    ImageError::Registry { reference, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn challenges() {
        let h = HeaderValue::from_static(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="x""#,
        );
        assert_eq!(
            parse_challenge(Some(&h)),
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            }
        );
        let h = HeaderValue::from_static(r#"Basic realm="Registry Realm""#);
        assert_eq!(parse_challenge(Some(&h)), Challenge::Other);
        assert_eq!(parse_challenge(None), Challenge::None);
    }

    #[test]
    fn header_digests_are_checked() {
        let d = format!("sha256:{}", hex::encode(sha2::Sha256::digest(b"{}")));
        assert!(check_header_digest(b"{}", &d).is_ok());
        assert!(check_header_digest(b"{ }", &d)
            .unwrap_err()
            .contains("mismatch"));
        assert!(check_header_digest(b"{}", "md5:00").is_err());
    }

    #[test]
    fn status_errors_have_the_right_kind() {
        let e = |status: u16, body: &str| {
            status_error(
                "img",
                "loc",
                "url",
                StatusCode::from_u16(status).unwrap(),
                body.as_bytes(),
            )
        };
        assert!(matches!(e(401, ""), ImageError::Unauthenticated { .. }));
        assert!(matches!(e(404, "nope"), ImageError::NotFound { .. }));
        let unknown = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        let nf = e(400, unknown);
        assert!(matches!(nf, ImageError::NotFound { .. }));
        assert!(
            nf.to_string()
                .contains("MANIFEST_UNKNOWN: manifest unknown"),
            "{nf}"
        );
        assert!(matches!(
            e(400, r#"{"errors":[{"code":"DENIED"}]}"#),
            ImageError::Unauthenticated { .. }
        ));
        assert!(matches!(e(500, unknown), ImageError::Registry { .. }));
        assert_eq!(printable(&[b'x'; 4096]).len(), 512);
    }

    #[test]
    fn debug_redacts_secrets() {
        let b = Authorization::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{b:?}").contains("hunter2"));
        assert!(!format!("{:?}", Authorization::Bearer("tok".into())).contains("tok"));
    }
}
