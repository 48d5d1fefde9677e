use super::*;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

const IMAGE: &str = "registry.example.com:5000/team/app:1.0";
const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn no_gpg(_: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
    Err("no GPG here".into())
}

/// Evaluates with sigstore signatures only.
fn ev(
    p: &Policy,
    image: &str,
    digest: &str,
    sigs: &[SigstoreSignature],
) -> Result<Accepted, String> {
    p.evaluate(
        image,
        digest,
        Signatures {
            sigstore: sigs,
            simple: &[],
        },
        &no_gpg,
    )
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn pem_of(der: &[u8]) -> String {
    let body = b64(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

struct Key {
    pair: EcdsaKeyPair,
    pem: String,
}

/// A throwaway P-256 key pair.
fn p256_pair() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap()
}

/// The SubjectPublicKeyInfo of a P-256 point: the fixed algorithm header, then the point.
fn p256_spki(point: &[u8]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    der.extend_from_slice(point);
    der
}

fn key() -> Key {
    let pair = p256_pair();
    Key {
        pem: pem_of(&p256_spki(pair.public_key().as_ref())),
        pair,
    }
}

fn payload(reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": COSIGN_TYPE
        },
        "optional": null
    }))
    .unwrap()
}

fn sign(k: &Key, payload: &[u8]) -> SigstoreSignature {
    let sig = k.pair.sign(&SystemRandom::new(), payload).unwrap();
    SigstoreSignature {
        payload: b64(payload),
        signature: b64(sig.as_ref()),
    }
}

fn policy(json: serde_json::Value, keys: &[(&str, &Key)]) -> Policy {
    let files: BTreeMap<String, String> = keys
        .iter()
        .map(|(n, k)| (n.to_string(), k.pem.clone()))
        .collect();
    Policy::parse(
        &serde_json::to_vec(&json).unwrap(),
        "test.json",
        &|p: &Path| {
            files
                .get(&p.display().to_string())
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| format!("{}: no such file", p.display()))
        },
    )
    .unwrap()
}

#[test]
fn scopes_go_from_the_whole_reference_to_the_domain_wildcards() {
    assert_eq!(
        scopes_of(IMAGE),
        [
            IMAGE,
            "registry.example.com:5000/team/app",
            "registry.example.com:5000/team",
            "registry.example.com:5000",
            "*.example.com",
            "*.com"
        ]
    );
    assert_eq!(
        scopes_of(&format!("docker.io/library/busybox@{DIGEST}")),
        [
            format!("docker.io/library/busybox@{DIGEST}"),
            "docker.io/library/busybox".into(),
            "docker.io/library".into(),
            "docker.io".into(),
            "*.io".into()
        ]
    );
}

#[test]
fn the_most_specific_scope_wins_and_every_requirement_must_hold() {
    let k = key();
    let p = policy(
        serde_json::json!({
            "default": [{"type": "reject"}],
            "transports": {"docker": {
                "registry.example.com:5000": [{"type": "insecureAcceptAnything"}],
                "registry.example.com:5000/team": [
                    {"type": "insecureAcceptAnything"},
                    {"type": "sigstoreSigned", "keyPath": "/k.pub"}
                ],
                "": [{"type": "reject"}]
            }, "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}}
        }),
        &[("/k.pub", &k)],
    );
    // Unsigned under team/: the sigstore requirement fails, naming itself.
    let e = ev(&p, IMAGE, DIGEST, &[]).unwrap_err();
    assert!(
        e.contains("sigstoreSigned") && e.contains("registry.example.com:5000/team"),
        "{e}"
    );
    let good = sign(&k, &payload(IMAGE, DIGEST));
    let a = ev(&p, IMAGE, DIGEST, std::slice::from_ref(&good)).unwrap();
    assert_eq!(a.scope, "registry.example.com:5000/team");
    assert_eq!(
        a.by,
        ["insecureAcceptAnything", "sigstoreSigned (key /k.pub)"]
    );
    // Elsewhere on that registry: accepted unsigned; other registries: the transport's "".
    assert!(ev(&p, "registry.example.com:5000/other/x:1", DIGEST, &[]).is_ok());
    let e = ev(&p, "docker.io/library/busybox:1", DIGEST, &[]).unwrap_err();
    assert!(e.contains("reject"), "{e}");
}

#[test]
fn wrong_key_tampered_payload_other_digest_and_other_identity_are_refused() {
    let (k, other) = (key(), key());
    let p = policy(
        serde_json::json!({"default": [{"type": "sigstoreSigned", "keyPath": "/k.pub"}]}),
        &[("/k.pub", &k)],
    );
    let wrong_key = sign(&other, &payload(IMAGE, DIGEST));
    let e = ev(&p, IMAGE, DIGEST, &[wrong_key]).unwrap_err();
    assert!(e.contains("does not verify"), "{e}");
    let mut tampered = sign(&k, &payload(IMAGE, DIGEST));
    tampered.payload = b64(&payload("registry.example.com:5000/team/evil:1.0", DIGEST));
    assert!(ev(&p, IMAGE, DIGEST, &[tampered]).is_err());
    let other_digest = sign(&k, &payload(IMAGE, &DIGEST.replace('1', "2")));
    let e = ev(&p, IMAGE, DIGEST, &[other_digest]).unwrap_err();
    assert!(e.contains("not sha256:1111"), "{e}");
    let other_tag = sign(
        &k,
        &payload("registry.example.com:5000/team/app:2.0", DIGEST),
    );
    let e = ev(&p, IMAGE, DIGEST, std::slice::from_ref(&other_tag)).unwrap_err();
    assert!(e.contains("does not match"), "{e}");
    // By digest, matchRepoDigestOrExact takes any tag of the repository.
    let by_digest = format!("registry.example.com:5000/team/app@{DIGEST}");
    assert!(ev(&p, &by_digest, DIGEST, &[other_tag]).is_ok());
    // One good signature among bad ones is enough.
    let good = sign(&k, &payload(IMAGE, DIGEST));
    let bad = sign(&other, &payload(IMAGE, DIGEST));
    assert!(ev(&p, IMAGE, DIGEST, &[bad, good]).is_ok());
}

#[test]
fn signed_identities() {
    let img = "r.example/a/b:1";
    let by_digest = format!("r.example/a/b@{DIGEST}");
    let m = |id: Identity, image: &str, signed: &str| identity_matches(&id, image, signed);
    assert!(m(Identity::MatchExact, img, img));
    assert!(!m(Identity::MatchExact, img, "r.example/a/b:2"));
    assert!(!m(Identity::MatchExact, &by_digest, &by_digest));
    assert!(m(Identity::MatchRepository, img, "r.example/a/b:2"));
    assert!(!m(Identity::MatchRepository, img, "r.example/a/c:1"));
    assert!(m(
        Identity::ExactReference("r.example/x/y:3".into()),
        img,
        "r.example/x/y:3"
    ));
    assert!(m(
        Identity::ExactRepository("r.example/x/y".into()),
        img,
        "r.example/x/y:9"
    ));
    let remap = Identity::RemapIdentity {
        prefix: "mirror.example/a".into(),
        signed_prefix: "r.example/a".into(),
    };
    assert!(m(remap.clone(), "mirror.example/a/b:1", img));
    assert!(!m(remap, "mirror.example/ab/b:1", "r.example/ab/b:1"));
}

#[test]
fn unsupported_and_malformed_requirements() {
    let p = policy(
        serde_json::json!({"default": [{"type": "sigstoreSigned", "fulcio": {"caPath": "/ca.pem"}}]}),
        &[],
    );
    let e = ev(&p, IMAGE, DIGEST, &[]).unwrap_err();
    assert!(e.contains("Fulcio") && e.contains("not supported"), "{e}");
    for (json, want) in [
        (serde_json::json!({"default": []}), "no requirement"),
        (
            serde_json::json!({"default": [{"type": "trustMe"}]}),
            "unknown requirement type",
        ),
        (
            serde_json::json!({"default": [{"type": "reject", "keyPath": "/x"}]}),
            "unknown field",
        ),
        (
            serde_json::json!({"default": [{"type": "sigstoreSigned"}]}),
            "needs keyPath",
        ),
        (
            serde_json::json!({"default": [{"type": "sigstoreSigned", "keyPath": "/missing.pub"}]}),
            "no such file",
        ),
    ] {
        let e = Policy::parse(&serde_json::to_vec(&json).unwrap(), "t", &|p: &Path| {
            Err(format!("{}: no such file", p.display()))
        })
        .unwrap_err();
        assert!(e.contains(want), "{json}: {e}");
    }
}

#[test]
fn per_namespace_policy_files_override_the_default_one() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("policy.json");
    let ns_dir = dir.path().join("policies");
    std::fs::create_dir(&ns_dir).unwrap();
    assert_eq!(load_for(&default, &ns_dir, "prod").unwrap(), None);
    std::fs::write(
        &default,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    std::fs::write(
        ns_dir.join("prod.json"),
        r#"{"default":[{"type":"reject"}]}"#,
    )
    .unwrap();
    let prod = load_for(&default, &ns_dir, "prod").unwrap().unwrap();
    assert!(ev(&prod, IMAGE, DIGEST, &[]).is_err());
    let dev = load_for(&default, &ns_dir, "dev").unwrap().unwrap();
    assert!(ev(&dev, IMAGE, DIGEST, &[]).is_ok());
    // A namespace is a file name, never a path.
    let odd = load_for(&default, &ns_dir, "../policies/prod")
        .unwrap()
        .unwrap();
    assert!(ev(&odd, IMAGE, DIGEST, &[]).is_ok());
}

#[test]
fn registries_d_turns_sigstore_attachments_on_by_namespace() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("default.yaml"),
        "default-docker:\n  lookaside: file:///var/lib/containers/sigstore\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("team.yaml"),
        "docker:\n  registry.example.com:5000/team:\n    use-sigstore-attachments: true\n",
    )
    .unwrap();
    let r = RegistriesD::load(dir.path()).unwrap();
    assert!(r.uses_sigstore_attachments(IMAGE));
    assert!(!r.uses_sigstore_attachments("registry.example.com:5000/other:1"));
    assert!(!RegistriesD::load(&dir.path().join("none"))
        .unwrap()
        .uses_sigstore_attachments(IMAGE));
    assert_eq!(
        signature_tag(DIGEST),
        format!("sha256-{}.sig", &DIGEST[7..])
    );
}

#[test]
fn signed_by_checks_what_the_keyring_verified() {
    // A fake gpgv: "signatures" are `keyring-name|payload`, valid for that keyring only.
    let gpg = |keyring: &[u8], sig: &[u8]| -> Result<Vec<u8>, String> {
        let sig = std::str::from_utf8(sig).unwrap();
        let (ring, payload) = sig.split_once('|').unwrap();
        if ring.as_bytes() == keyring {
            Ok(payload.as_bytes().to_vec())
        } else {
            Err("a GPG signature does not verify with the keyring: NO_PUBKEY".into())
        }
    };
    let p = Policy::parse(
        br#"{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/ring"}]}"#,
        "t",
        &|_: &Path| Ok(b"ring-a".to_vec()),
    )
    .unwrap();
    let simple_payload = |r: &str, d: &str| {
        String::from_utf8(payload(r, d))
            .unwrap()
            .replace(COSIGN_TYPE, SIMPLE_TYPE)
    };
    let check = |sigs: &[Vec<u8>]| {
        p.evaluate(
            IMAGE,
            DIGEST,
            Signatures {
                sigstore: &[],
                simple: sigs,
            },
            &gpg,
        )
    };
    let good = format!("ring-a|{}", simple_payload(IMAGE, DIGEST)).into_bytes();
    let a = check(&[good]).unwrap();
    assert_eq!(a.by, ["signedBy (keyring /ring)"]);
    let e = check(&[]).unwrap_err();
    assert!(e.contains("signedBy found no signature"), "{e}");
    let other_ring = format!("ring-b|{}", simple_payload(IMAGE, DIGEST)).into_bytes();
    let e = check(&[other_ring]).unwrap_err();
    assert!(e.contains("NO_PUBKEY"), "{e}");
    // A cosign payload is not a simple signing one.
    let cosign = format!(
        "ring-a|{}",
        String::from_utf8(payload(IMAGE, DIGEST)).unwrap()
    )
    .into_bytes();
    assert!(check(&[cosign]).unwrap_err().contains("type"));
    let other_image = format!("ring-a|{}", simple_payload("r.example/x:1", DIGEST)).into_bytes();
    assert!(check(&[other_image])
        .unwrap_err()
        .contains("does not match"));
}

#[test]
fn registries_d_lookaside_by_the_most_specific_entry_that_sets_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "default-docker:\n  sigstore: https://sigs.example/default\ndocker:\n  registry.example.com:5000/team:\n    use-sigstore-attachments: true\n  registry.example.com:5000:\n    lookaside: file:///srv/sigs\n",
    )
    .unwrap();
    let r = RegistriesD::load(dir.path()).unwrap();
    // team/ sets only use-sigstore-attachments: its lookaside comes from the registry's entry.
    assert_eq!(r.lookaside(IMAGE).as_deref(), Some("file:///srv/sigs"));
    assert_eq!(
        r.lookaside("docker.io/library/busybox:1").as_deref(),
        Some("https://sigs.example/default")
    );
    assert_eq!(
        lookaside_url("file:///srv/sigs/", "team/app", DIGEST, 2),
        format!(
            "file:///srv/sigs/team/app@sha256={}/signature-2",
            &DIGEST[7..]
        )
    );
}

#[test]
fn key_types_from_their_subject_public_key_info() {
    // Ed25519: the SubjectPublicKeyInfo header, then the 32-byte key.
    let rng = SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(ed.public_key().as_ref());
    let key = public_key(pem_of(&der).as_bytes()).unwrap();
    assert_eq!(key.kind, KeyKind::Ed25519);
    assert!(key.verifies(b"payload", ed.sign(b"payload").as_ref()));
    assert!(!key.verifies(b"other", ed.sign(b"payload").as_ref()));
    // A P-256 key does not verify an Ed25519 signature, nor the other way round.
    let p256 = key_from(&p256_pair());
    assert_eq!(p256.kind, KeyKind::EcdsaP256);
    assert!(!p256.verifies(b"payload", ed.sign(b"payload").as_ref()));
    // An EC key on a curve cosign does not use (secp256k1) is refused by name, and so is what
    // is not a PEM key.
    let mut k1 = vec![
        0x30, 0x56, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05,
        0x2b, 0x81, 0x04, 0x00, 0x0a, 0x03, 0x42, 0x00,
    ];
    k1.extend_from_slice(&[0x04; 65]);
    let e = public_key(pem_of(&k1).as_bytes()).unwrap_err();
    assert!(e.contains("curve 1.3.132.0.10"), "{e}");
    let e = public_key(b"not a key").unwrap_err();
    assert!(e.contains("not a PEM public key"), "{e}");
}

fn key_from(pair: &EcdsaKeyPair) -> PublicKey {
    public_key(pem_of(&p256_spki(pair.public_key().as_ref())).as_bytes()).unwrap()
}
