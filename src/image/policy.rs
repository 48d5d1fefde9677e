//! Image trust: containers-policy.json(5), as CRI-O, Podman and skopeo read it, enforced when an
//! image is pulled and again when a container is created from it.
//!
//! A policy maps scopes of the `docker` transport (`host/repo:tag`, `host/repo`, its parent
//! namespaces, `host`, `*.domain`, then `""`) to requirements, with `default` for the rest; every
//! requirement of the most specific scope must be satisfied. Supported: `insecureAcceptAnything`,
//! `reject`, `sigstoreSigned` with public keys (`keyPath`, `keyPaths`, `keyData`, `keyDatas`:
//! ECDSA P-256/P-384, RSA, Ed25519 in PEM), verified offline over cosign's payload, and
//! `signedBy` with GPG keyrings (simple signing: OpenPGP signed messages from a lookaside store,
//! verified by the host's `gpgv`), each with every `signedIdentity` form. `sigstoreSigned` with
//! Fulcio or Rekor is parsed and refused by name: an image under it is never accepted.
//!
//! Which policy applies: `<signature_policy_dir>/<namespace>.json` for a pod namespace that has
//! one (CRI-O's `signature_policy_dir`), else `signature_policy`. No policy file: everything
//! is accepted (as containerd does; a warning is logged at start).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest policy or key file read.
const MAX_FILE: u64 = 1 << 20;

/// The payload type of simple signing (GPG).
pub const SIMPLE_TYPE: &str = "atomic container signature";
/// cosign's payload type.
pub const COSIGN_TYPE: &str = "cosign container image signature";
/// The annotation of a cosign signature layer that holds the signature (base64).
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The media type of a cosign signature layer (its blob is the payload).
pub const COSIGN_LAYER_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// A signature as stored with the image: the payload that was signed and the signature over it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SigstoreSignature {
    /// base64 of the payload bytes.
    pub payload: String,
    /// base64 of the signature.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    MatchRepoDigestOrExact,
    MatchRepository,
    MatchExact,
    ExactReference(String),
    ExactRepository(String),
    RemapIdentity {
        prefix: String,
        signed_prefix: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
    /// Public keys, with where they came from.
    SigstoreSigned {
        keys: Vec<(String, PublicKey)>,
        identity: Identity,
    },
    /// GPG keyrings (binary or armored), with where they came from.
    SignedBy {
        keyrings: Vec<(String, Vec<u8>)>,
        identity: Identity,
    },
    /// Known to the format, not verified by ferrio: never satisfied.
    Unsupported(String),
}

/// Verifies an OpenPGP signed message with a keyring and returns the signed content
/// (`gpg::verify` on the host; injectable for tests).
pub type GpgVerify<'a> = &'a dyn Fn(&[u8], &[u8]) -> Result<Vec<u8>, String>;

/// The signatures found for an image, of both kinds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signatures<'a> {
    pub sigstore: &'a [SigstoreSignature],
    /// Simple signing: OpenPGP signed messages (raw bytes).
    pub simple: &'a [Vec<u8>],
}

impl Requirement {
    pub fn name(&self) -> String {
        match self {
            Requirement::InsecureAcceptAnything => "insecureAcceptAnything".into(),
            Requirement::Reject => "reject".into(),
            Requirement::SigstoreSigned { .. } => "sigstoreSigned".into(),
            Requirement::SignedBy { .. } => "signedBy".into(),
            Requirement::Unsupported(what) => what.clone(),
        }
    }

    pub fn needs_sigstore(&self) -> bool {
        matches!(self, Requirement::SigstoreSigned { .. })
    }

    pub fn needs_simple(&self) -> bool {
        matches!(self, Requirement::SignedBy { .. })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Where it was read from (for messages).
    pub source: String,
    default: Vec<Requirement>,
    docker: BTreeMap<String, Vec<Requirement>>,
}

/// What verified an accepted image.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub policy: String,
    pub scope: String,
    /// e.g. `insecureAcceptAnything`, `sigstoreSigned (key /etc/keys/a.pub)`.
    pub by: Vec<String>,
}

impl Accepted {
    pub fn describe(&self) -> String {
        format!(
            "{} (policy {}, scope {})",
            self.by.join(", "),
            self.policy,
            if self.scope.is_empty() {
                "default"
            } else {
                &self.scope
            }
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Vec<Value>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<Value>>>,
}

fn read_small(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut buf))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if buf.len() as u64 > MAX_FILE {
        return Err(format!("{}: larger than {MAX_FILE} bytes", path.display()));
    }
    Ok(buf)
}

/// The policy that applies to pulls and creates for pod namespace `namespace` (empty: none
/// given), or `None` when there is no policy file at all.
pub fn load_for(policy: &Path, dir: &Path, namespace: &str) -> Result<Option<Policy>, String> {
    if !namespace.is_empty() && !dir.as_os_str().is_empty() && valid_namespace(namespace) {
        let p = dir.join(format!("{namespace}.json"));
        if p.exists() {
            return Policy::load(&p).map(Some);
        }
    }
    if policy.as_os_str().is_empty() || !policy.exists() {
        return Ok(None);
    }
    Policy::load(policy).map(Some)
}

fn valid_namespace(ns: &str) -> bool {
    ns.len() <= 253 && !ns.starts_with('.') && !ns.contains(['/', '\0'])
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, String> {
        let bytes = read_small(path)?;
        let base = path.parent().unwrap_or(Path::new("/"));
        Policy::parse(&bytes, &path.display().to_string(), &|p: &Path| {
            read_small(&if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            })
        })
    }

    /// Parses a policy; `read` reads a key file it names.
    pub fn parse(
        bytes: &[u8],
        source: &str,
        read: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
    ) -> Result<Policy, String> {
        let bad = |e: String| format!("signature policy {source}: {e}");
        let raw: RawPolicy = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if raw.default.is_empty() {
            return Err(bad("\"default\" has no requirement".into()));
        }
        let reqs = |list: &[Value]| -> Result<Vec<Requirement>, String> {
            list.iter().map(|v| requirement(v, read)).collect()
        };
        let default = reqs(&raw.default).map_err(|e| bad(format!("default: {e}")))?;
        let mut docker = BTreeMap::new();
        for (transport, scopes) in raw.transports {
            if transport != "docker" {
                // Other transports (docker-daemon, oci, …) never apply to a registry pull.
                continue;
            }
            for (scope, list) in scopes {
                if list.is_empty() {
                    return Err(bad(format!("docker scope {scope:?} has no requirement")));
                }
                let r = reqs(&list).map_err(|e| bad(format!("docker scope {scope:?}: {e}")))?;
                docker.insert(scope, r);
            }
        }
        Ok(Policy {
            source: source.to_string(),
            default,
            docker,
        })
    }

    /// The most specific scope for `image` (`host/repo:tag` or `host/repo@digest`) and its
    /// requirements.
    pub fn requirements_for(&self, image: &str) -> (String, &[Requirement]) {
        for scope in scopes_of(image) {
            if let Some(r) = self.docker.get(&scope) {
                return (scope, r);
            }
        }
        (String::new(), &self.default)
    }

    /// Whether `image`, whose top-level manifest has `digest`, is accepted given the signatures
    /// found for it. The error names the requirement that failed.
    pub fn evaluate(
        &self,
        image: &str,
        digest: &str,
        found: Signatures<'_>,
        gpg: GpgVerify<'_>,
    ) -> Result<Accepted, String> {
        let signatures = found.sigstore;
        let (scope, reqs) = self.requirements_for(image);
        let mut by = Vec::new();
        let scope_name = if scope.is_empty() {
            "the default".to_string()
        } else {
            format!("scope {scope:?}")
        };
        for r in reqs {
            let what = |detail: String| {
                format!(
                    "{image} is rejected by the signature policy {} ({scope_name}): {} {detail}",
                    self.source,
                    r.name()
                )
            };
            match r {
                Requirement::InsecureAcceptAnything => by.push(r.name()),
                Requirement::Reject => return Err(what("rejects every image".into())),
                Requirement::Unsupported(_) => {
                    return Err(what(
                        "is not supported by ferrio, so nothing satisfies it".into(),
                    ))
                }
                Requirement::SigstoreSigned { keys, identity } => {
                    if signatures.is_empty() {
                        return Err(what("found no sigstore signature of the image".into()));
                    }
                    let k = first_valid(signatures, keys, |s, key| {
                        verify_sigstore(s, key, image, digest, identity)
                    })
                    .map_err(&what)?;
                    by.push(format!("sigstoreSigned (key {k})"));
                }
                Requirement::SignedBy { keyrings, identity } => {
                    if found.simple.is_empty() {
                        return Err(what("found no signature of the image".into()));
                    }
                    let k = first_valid(found.simple, keyrings, |sig, keyring| {
                        gpg(keyring, sig).and_then(|payload| {
                            check_payload(&payload, SIMPLE_TYPE, image, digest, identity)
                        })
                    })
                    .map_err(&what)?;
                    by.push(format!("signedBy (keyring {k})"));
                }
            }
        }
        Ok(Accepted {
            policy: self.source.clone(),
            scope,
            by,
        })
    }
}

fn requirement(
    v: &Value,
    read: &dyn Fn(&Path) -> Result<Vec<u8>, String>,
) -> Result<Requirement, String> {
    let obj = v.as_object().ok_or("a requirement is not an object")?;
    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or("a requirement has no \"type\"")?;
    let allowed: &[&str] = match ty {
        "insecureAcceptAnything" | "reject" => &["type"],
        "signedBy" => &[
            "type",
            "keyType",
            "keyPath",
            "keyPaths",
            "keyData",
            "signedIdentity",
        ],
        "sigstoreSigned" => &[
            "type",
            "keyPath",
            "keyPaths",
            "keyData",
            "keyDatas",
            "fulcio",
            "pki",
            "rekorPublicKeyPath",
            "rekorPublicKeyPaths",
            "rekorPublicKeyData",
            "rekorPublicKeyDatas",
            "signedIdentity",
        ],
        other => return Err(format!("unknown requirement type {other:?}")),
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{ty}: unknown field {k:?}"));
    }
    match ty {
        "insecureAcceptAnything" => Ok(Requirement::InsecureAcceptAnything),
        "reject" => Ok(Requirement::Reject),
        "signedBy" => {
            match obj
                .get("keyType")
                .and_then(Value::as_str)
                .unwrap_or("GPGKeys")
            {
                "GPGKeys" => {}
                other => return Err(format!("signedBy: unknown keyType {other:?}")),
            }
            let mut keyrings = Vec::new();
            for p in str_list(obj, "keyPath")?
                .into_iter()
                .chain(str_list(obj, "keyPaths")?)
            {
                keyrings.push((p.clone(), read(Path::new(&p))?));
            }
            if let Some(d) = obj.get("keyData").and_then(Value::as_str) {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .map_err(|e| format!("keyData: {e}"))?;
                keyrings.push(("keyData".into(), bytes));
            }
            if keyrings.is_empty() {
                return Err("signedBy needs keyPath, keyPaths or keyData".into());
            }
            let identity = match obj.get("signedIdentity") {
                None => Identity::MatchRepoDigestOrExact,
                Some(v) => identity(v)?,
            };
            Ok(Requirement::SignedBy { keyrings, identity })
        }
        _ => {
            if obj.contains_key("fulcio") || obj.contains_key("pki") {
                return Ok(Requirement::Unsupported(
                    "sigstoreSigned with Fulcio or PKI certificates".into(),
                ));
            }
            if obj.keys().any(|k| k.starts_with("rekor")) {
                return Ok(Requirement::Unsupported(
                    "sigstoreSigned with a Rekor transparency log".into(),
                ));
            }
            let mut keys = Vec::new();
            for p in str_list(obj, "keyPath")?
                .into_iter()
                .chain(str_list(obj, "keyPaths")?)
            {
                let pem = read(Path::new(&p))?;
                keys.push((
                    p.clone(),
                    public_key(&pem).map_err(|e| format!("{p}: {e}"))?,
                ));
            }
            for (i, d) in str_list(obj, "keyData")?
                .into_iter()
                .chain(str_list(obj, "keyDatas")?)
                .enumerate()
            {
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(d.trim())
                    .map_err(|e| format!("keyData: {e}"))?;
                keys.push((
                    format!("keyData #{}", i + 1),
                    public_key(&pem).map_err(|e| format!("keyData: {e}"))?,
                ));
            }
            if keys.is_empty() {
                return Err("sigstoreSigned needs keyPath, keyPaths, keyData or keyDatas".into());
            }
            let identity = match obj.get("signedIdentity") {
                None => Identity::MatchRepoDigestOrExact,
                Some(v) => identity(v)?,
            };
            Ok(Requirement::SigstoreSigned { keys, identity })
        }
    }
}

/// The name of the first key that `check` accepts one of `signatures` with; else why none did.
fn first_valid<S, K>(
    signatures: &[S],
    keys: &[(String, K)],
    check: impl Fn(&S, &K) -> Result<(), String>,
) -> Result<String, String> {
    let mut why = Vec::new();
    for s in signatures {
        for (name, key) in keys {
            match check(s, key) {
                Ok(()) => return Ok(name.clone()),
                Err(e) => why.push(e),
            }
        }
    }
    why.sort();
    why.dedup();
    Err(format!("found no valid signature: {}", why.join("; ")))
}

/// A field that is one string or a list of strings.
fn str_list(obj: &serde_json::Map<String, Value>, k: &str) -> Result<Vec<String>, String> {
    match obj.get(k) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{k}: not a list of strings"))
            })
            .collect(),
        Some(_) => Err(format!("{k}: not a string")),
    }
}

fn identity(v: &Value) -> Result<Identity, String> {
    let field = |k: &str| -> Result<String, String> {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("signedIdentity: missing {k:?}"))
    };
    match v.get("type").and_then(Value::as_str) {
        Some("matchRepoDigestOrExact") => Ok(Identity::MatchRepoDigestOrExact),
        Some("matchRepository") => Ok(Identity::MatchRepository),
        Some("matchExact") => Ok(Identity::MatchExact),
        Some("exactReference") => Ok(Identity::ExactReference(field("dockerReference")?)),
        Some("exactRepository") => Ok(Identity::ExactRepository(field("dockerRepository")?)),
        Some("remapIdentity") => Ok(Identity::RemapIdentity {
            prefix: field("prefix")?,
            signed_prefix: field("signedPrefix")?,
        }),
        other => Err(format!("signedIdentity: unknown type {other:?}")),
    }
}

/// A public key a sigstore signature may be made with: its type (from its
/// SubjectPublicKeyInfo) and the key bits in the form `ring` takes (the EC point, PKCS#1 RSA
/// key or Ed25519 key).
#[derive(Debug, Clone, PartialEq)]
pub struct PublicKey {
    kind: KeyKind,
    raw: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Rsa,
    Ed25519,
}

/// The key in a PEM `PUBLIC KEY` block (SubjectPublicKeyInfo): ECDSA P-256 or P-384, RSA, or
/// Ed25519, the key types cosign signs with.
fn public_key(pem: &[u8]) -> Result<PublicKey, String> {
    use rustls_pki_types::pem::PemObject;
    use spki::der::Decode;
    use spki::ObjectIdentifier as Oid;
    const EC: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
    const RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
    let der = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(pem)
        .map_err(|e| format!("not a PEM public key: {e:?}"))?;
    let info = spki::SubjectPublicKeyInfoRef::from_der(der.as_ref())
        .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
    let raw = info
        .subject_public_key
        .as_bytes()
        .ok_or("the key's bit string is not whole bytes")?
        .to_vec();
    let kind = match info.algorithm.oid {
        EC => {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|e| format!("an EC key without its curve: {e}"))?;
            match curve {
                P256 => KeyKind::EcdsaP256,
                P384 => KeyKind::EcdsaP384,
                other => return Err(format!("EC curve {other} is not supported")),
            }
        }
        RSA => KeyKind::Rsa,
        ED25519 => KeyKind::Ed25519,
        other => return Err(format!("key algorithm {other} is not supported")),
    };
    Ok(PublicKey { kind, raw })
}

impl PublicKey {
    /// Whether `signature` over `message` verifies with this key.
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{self as sig, UnparsedPublicKey};
        let ok = |alg: &'static dyn sig::VerificationAlgorithm| {
            UnparsedPublicKey::new(alg, &self.raw)
                .verify(message, signature)
                .is_ok()
        };
        match self.kind {
            KeyKind::EcdsaP256 => ok(&sig::ECDSA_P256_SHA256_ASN1),
            KeyKind::EcdsaP384 => ok(&sig::ECDSA_P384_SHA384_ASN1),
            KeyKind::Rsa => {
                ok(&sig::RSA_PKCS1_2048_8192_SHA256) || ok(&sig::RSA_PSS_2048_8192_SHA256)
            }
            KeyKind::Ed25519 => ok(&sig::ED25519),
        }
    }
}

/// The scopes of `image` (`host[:port]/repo[:tag|@digest]`), most specific first.
pub fn scopes_of(image: &str) -> Vec<String> {
    let mut out = vec![image.to_string()];
    let repo = match image.find('@') {
        Some(i) => &image[..i],
        None => {
            // A tag follows the last ':' after the last '/'.
            let slash = image.rfind('/').unwrap_or(0);
            match image[slash..].rfind(':') {
                Some(i) => &image[..slash + i],
                None => image,
            }
        }
    };
    let mut ns = repo;
    loop {
        if ns != image {
            out.push(ns.to_string());
        }
        match ns.rfind('/') {
            Some(i) => ns = &ns[..i],
            None => break,
        }
    }
    // Wildcards over the host's domain: `*.example.com`, then `*.com`.
    let host = repo.split('/').next().unwrap_or("");
    let host = host.split(':').next().unwrap_or(host);
    let mut rest = host;
    while let Some(i) = rest.find('.') {
        rest = &rest[i + 1..];
        out.push(format!("*.{rest}"));
    }
    out.dedup();
    out
}

/// `host/repo` of a reference string, and its tag or digest part (`:tag` / `@digest`).
fn split_ref(r: &str) -> (&str, &str) {
    if let Some(i) = r.find('@') {
        return (&r[..i], &r[i..]);
    }
    let slash = r.rfind('/').unwrap_or(0);
    match r[slash..].rfind(':') {
        Some(i) => (&r[..slash + i], &r[slash + i..]),
        None => (r, ""),
    }
}

/// A signature's `docker-reference` in the form `image` has (normalized the same way).
fn normalize(r: &str) -> Result<String, String> {
    let parsed = super::reference::parse(r).map_err(|e| e.to_string())?;
    Ok(parsed.whole())
}

fn identity_matches(id: &Identity, image: &str, signed: &str) -> bool {
    let (img_repo, img_tail) = split_ref(image);
    let (sig_repo, _) = split_ref(signed);
    match id {
        Identity::MatchExact => image == signed && !img_tail.starts_with('@'),
        Identity::MatchRepoDigestOrExact => {
            if img_tail.starts_with('@') {
                img_repo == sig_repo
            } else {
                image == signed
            }
        }
        Identity::MatchRepository => img_repo == sig_repo,
        Identity::ExactReference(r) => normalize(r).is_ok_and(|r| r == signed),
        Identity::ExactRepository(r) => normalize(r).is_ok_and(|r| split_ref(&r).0 == sig_repo),
        Identity::RemapIdentity {
            prefix,
            signed_prefix,
        } => {
            let remapped = match image.strip_prefix(prefix.as_str()) {
                Some(rest)
                    if rest.is_empty()
                        || prefix.ends_with('/')
                        || rest.starts_with(['/', ':', '@']) =>
                {
                    format!("{signed_prefix}{rest}")
                }
                _ => image.to_string(),
            };
            identity_matches(&Identity::MatchRepoDigestOrExact, &remapped, signed)
        }
    }
}

/// Checks one sigstore signature with one key: the signature over the payload, then what the
/// payload says (its type, the manifest digest, the identity).
fn verify_sigstore(
    s: &SigstoreSignature,
    key: &PublicKey,
    image: &str,
    digest: &str,
    identity: &Identity,
) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64
        .decode(&s.payload)
        .map_err(|e| format!("payload: {e}"))?;
    let signature = b64
        .decode(s.signature.trim())
        .map_err(|e| format!("signature encoding: {e}"))?;
    if !key.verifies(&payload, &signature) {
        return Err("a signature does not verify with the key".into());
    }
    check_payload(&payload, COSIGN_TYPE, image, digest, identity)
}

/// What a verified payload says: its type, the manifest digest and the identity, checked
/// against the image.
fn check_payload(
    payload: &[u8],
    kind: &str,
    image: &str,
    digest: &str,
    identity: &Identity,
) -> Result<(), String> {
    let p: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("a signed payload is not JSON: {e}"))?;
    let critical = &p["critical"];
    if critical["type"].as_str() != Some(kind) {
        return Err(format!("a signed payload's type is {}", critical["type"]));
    }
    let signed_digest = critical["image"]["docker-manifest-digest"]
        .as_str()
        .unwrap_or("");
    if signed_digest != digest {
        return Err(format!(
            "a signature is for manifest {signed_digest}, not {digest}"
        ));
    }
    let signed_ref = critical["identity"]["docker-reference"]
        .as_str()
        .ok_or("a signed payload has no identity")?;
    let signed = normalize(signed_ref).map_err(|e| format!("signed identity: {e}"))?;
    if !identity_matches(identity, image, &signed) {
        return Err(format!(
            "a signature is for {signed_ref}, which does not match {image}"
        ));
    }
    Ok(())
}

/// registries.d (containers-registries.d(5)): whether sigstore signatures of images in a
/// repository are looked up as attachments in the registry (`use-sigstore-attachments`), by the
/// most specific `docker` namespace entry, else `default-docker`.
#[derive(Debug, Default, Clone)]
pub struct RegistriesD {
    /// `default-docker`, when a file has it.
    default: Option<Namespace>,
    docker: BTreeMap<String, Namespace>,
}

/// One entry's settings that ferrio reads.
#[derive(Debug, Default, Clone)]
struct Namespace {
    use_sigstore_attachments: Option<bool>,
    /// `lookaside` (or its older name `sigstore`): where simple signatures are read.
    lookaside: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawRegistriesD {
    #[serde(rename = "default-docker", default)]
    default_docker: Option<RawNs>,
    #[serde(default)]
    docker: BTreeMap<String, RawNs>,
}

#[derive(Deserialize, Default)]
struct RawNs {
    #[serde(rename = "use-sigstore-attachments")]
    use_sigstore_attachments: Option<bool>,
    lookaside: Option<String>,
    sigstore: Option<String>,
    // lookaside-staging, sigstore-staging: where signing tools write; not read here.
    #[serde(flatten)]
    _rest: BTreeMap<String, serde_yaml_ng::Value>,
}

impl From<RawNs> for Namespace {
    fn from(r: RawNs) -> Namespace {
        Namespace {
            use_sigstore_attachments: r.use_sigstore_attachments,
            lookaside: r.lookaside.or(r.sigstore),
        }
    }
}

impl RegistriesD {
    /// Reads every `*.yaml` in `dir` (none: nothing configured).
    pub fn load(dir: &Path) -> Result<RegistriesD, String> {
        let mut out = RegistriesD::default();
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Ok(out);
        };
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let text = read_small(&f)?;
            let raw: RawRegistriesD =
                serde_yaml_ng::from_slice(&text).map_err(|e| format!("{}: {e}", f.display()))?;
            if let Some(d) = raw.default_docker {
                if out.default.is_some() {
                    return Err(format!("{}: a second default-docker", f.display()));
                }
                out.default = Some(d.into());
            }
            for (ns, v) in raw.docker {
                if out.docker.contains_key(&ns) {
                    return Err(format!("{}: {ns} is configured twice", f.display()));
                }
                out.docker.insert(ns, v.into());
            }
        }
        Ok(out)
    }

    /// The most specific entry that sets a field, else `default-docker`'s (as
    /// containers/image reads registries.d).
    fn setting<T>(&self, image: &str, field: impl Fn(&Namespace) -> Option<T>) -> Option<T> {
        scopes_of(image)
            .iter()
            .filter_map(|s| self.docker.get(s))
            .chain(self.default.iter())
            .find_map(field)
    }

    pub fn uses_sigstore_attachments(&self, image: &str) -> bool {
        self.setting(image, |n| n.use_sigstore_attachments)
            .unwrap_or(false)
    }

    /// The lookaside base URL for `image` (`file:///…`, `http(s)://…`), if any.
    pub fn lookaside(&self, image: &str) -> Option<String> {
        self.setting(image, |n| n.lookaside.clone())
    }
}

/// Where simple signature `index` (from 1) of manifest `digest` of `repository` (its path in
/// the registry, no host) lives under a lookaside base URL.
pub fn lookaside_url(base: &str, repository: &str, digest: &str, index: usize) -> String {
    format!(
        "{}/{repository}@{}/signature-{index}",
        base.trim_end_matches('/'),
        digest.replacen(':', "=", 1)
    )
}

/// The tag cosign stores the signatures of manifest `digest` under.
pub fn signature_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1) + ".sig"
}

#[cfg(test)]
mod tests;
