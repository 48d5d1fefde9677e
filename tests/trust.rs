//! Image trust end to end: a containers-policy.json with sigstoreSigned requirements, images
//! signed here with throwaway keys in cosign's format (the payload as a layer of the
//! `sha256-<digest>.sig` tag, the signature in its annotation) and pushed to a local registry;
//! accepted, unsigned, wrong key, tampered, per-namespace policies, and the check again at
//! CreateContainer.

#[macro_use]
mod common;

use base64::Engine as _;
use common::*;
use ferrio::cri::api;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use std::path::Path;
use std::process::Command;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

struct Key(EcdsaKeyPair);

impl Key {
    fn new() -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        Key(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    fn public_pem(&self) -> String {
        // The SubjectPublicKeyInfo of a P-256 point: the fixed algorithm header, then the point.
        let mut der = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        der.extend_from_slice(self.0.public_key().as_ref());
        let body = b64(&der);
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

    fn sign(&self, payload: &[u8]) -> String {
        b64(self.0.sign(&SystemRandom::new(), payload).unwrap().as_ref())
    }
}

fn sh(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Copies the busybox test image to `<registry>/<repo>:<tag>`; returns its manifest digest.
fn push_busybox(reg: &Registry, repo: &str, tag: &str) -> String {
    let src = test_images().join("busybox.tar");
    sh(Command::new("skopeo").args([
        "--insecure-policy",
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", src.display()),
        &format!("docker://{}/{repo}:{tag}", reg.addr()),
    ]));
    let bytes = sh(Command::new("curl").args([
        "-sf",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        &format!("http://{}/v2/{repo}/manifests/{tag}", reg.addr()),
    ]));
    ferrio::image::unpack::sha256_digest(&bytes)
}

/// cosign's simple-signing payload for `reference` at `digest`.
fn payload(reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": {"creator": "ferrio tests"}
    }))
    .unwrap()
}

/// Stores signatures (payload, base64 signature) of manifest `digest` in `repo` as cosign
/// does: the tag `sha256-<hex>.sig`.
fn push_signatures(reg: &Registry, repo: &str, digest: &str, sigs: &[(Vec<u8>, String)]) {
    let config = reg.put_blob(repo, b"{}");
    let layers: Vec<serde_json::Value> = sigs
        .iter()
        .map(|(p, s)| {
            serde_json::json!({
                "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                "size": p.len(),
                "digest": reg.put_blob(repo, p),
                "annotations": {"dev.cosignproject.cosign/signature": s}
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": config},
        "layers": layers
    });
    let tag = format!("{}.sig", digest.replacen(':', "-", 1));
    reg.put_manifest(repo, &tag, &manifest);
}

async fn pull_in(
    d: &Daemon,
    image: &str,
    namespace: Option<&str>,
) -> Result<String, tonic::Status> {
    d.images()
        .await
        .pull_image(api::PullImageRequest {
            image: Some(spec(image)),
            auth: None,
            sandbox_config: namespace.map(|ns| {
                let mut p = pod_config("trust", Path::new("/tmp"));
                p.metadata.as_mut().unwrap().namespace = ns.into();
                p
            }),
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

/// ImageStatus's verbose info of image `id`.
async fn status_info(d: &Daemon, id: &str) -> serde_json::Value {
    let st = d
        .images()
        .await
        .image_status(api::ImageStatusRequest {
            image: Some(spec(id)),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&st.info["info"]).unwrap()
}

fn write_policy(path: &Path, scope: &str, key: &Path) {
    let policy = serde_json::json!({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {"docker": {
            scope: [{"type": "sigstoreSigned", "keyPath": key, "signedIdentity": {"type": "matchRepoDigestOrExact"}}]
        }}
    });
    std::fs::write(path, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstore_policy_at_pull_and_at_create() {
    e2e!();
    let reg = Registry::start(None);
    let addr = reg.addr();
    let (key, other_key) = (Key::new(), Key::new());
    // Signed right; unsigned; signed by another key; a signature for another digest.
    let digest = push_busybox(&reg, "trust/signed", "1");
    for (repo, _) in [
        ("trust/unsigned", 0),
        ("trust/wrongkey", 1),
        ("trust/tampered", 2),
    ] {
        assert_eq!(push_busybox(&reg, repo, "1"), digest);
    }
    let plain = push_busybox(&reg, "plain/busybox", "1");
    let signed = format!("{addr}/trust/signed:1");
    let p = payload(&signed, &digest);
    push_signatures(&reg, "trust/signed", &digest, &[(p.clone(), key.sign(&p))]);
    let wrong = format!("{addr}/trust/wrongkey:1");
    let p = payload(&wrong, &digest);
    push_signatures(
        &reg,
        "trust/wrongkey",
        &digest,
        &[(p.clone(), other_key.sign(&p))],
    );
    let tampered = format!("{addr}/trust/tampered:1");
    let other_digest = format!("sha256:{}", "0".repeat(64));
    let p = payload(&tampered, &other_digest);
    push_signatures(
        &reg,
        "trust/tampered",
        &digest,
        &[(p.clone(), key.sign(&p))],
    );

    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("cosign.pub");
    std::fs::write(&key_file, key.public_pem()).unwrap();
    let policy = dir.path().join("policy.json");
    write_policy(&policy, &format!("{addr}/trust"), &key_file);
    let ns_dir = dir.path().join("policies");
    std::fs::create_dir(&ns_dir).unwrap();
    std::fs::write(
        ns_dir.join("locked.json"),
        r#"{"default": [{"type": "reject"}]}"#,
    )
    .unwrap();
    let regd = dir.path().join("registries.d");
    std::fs::create_dir(&regd).unwrap();
    std::fs::write(
        regd.join("default.yaml"),
        "default-docker:\n  use-sigstore-attachments: true\n",
    )
    .unwrap();
    let d = Daemon::start(DaemonOpts {
        extra_config: format!(
            "signature_policy = {:?}\nsignature_policy_dir = {:?}\nregistries_d = {:?}\n",
            policy.display().to_string(),
            ns_dir.display().to_string(),
            regd.display().to_string()
        ),
        ..Default::default()
    });

    // Accepted, and what verified it is kept.
    let id = pull_in(&d, &signed, None).await.expect("a signed image");
    let info = status_info(&d, &id).await;
    let verified = info["verified"].as_str().unwrap_or_default();
    assert!(
        verified.contains("sigstoreSigned") && verified.contains(&key_file.display().to_string()),
        "{info}"
    );
    assert_eq!(info["signatures"], 1);

    // Refused, each naming the requirement and why.
    for (image, why) in [
        (format!("{addr}/trust/unsigned:1"), "no sigstore signature"),
        (wrong.clone(), "does not verify with the key"),
        (tampered.clone(), "not sha256:"),
    ] {
        let e = pull_in(&d, &image, None).await.expect_err(&image);
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{image}: {e:?}");
        assert!(
            e.message().contains("sigstoreSigned")
                && e.message().contains(why)
                && e.message().contains(&format!("{addr}/trust")),
            "{image}: {}",
            e.message()
        );
    }
    // The namespace's own policy: `locked` rejects everything, even the signed image.
    let e = pull_in(&d, &signed, Some("locked")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("reject"), "{}", e.message());
    assert!(pull_in(&d, &signed, Some("dev")).await.is_ok());
    // Another client, the CLI: the same refusal.
    let out = Command::new(env!("CARGO_BIN_EXE_ferrio"))
        .arg("--config")
        .arg(&d.config)
        .arg("--listen")
        .arg(&d.socket)
        .args(["image", "pull", &format!("{addr}/trust/unsigned:1")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no sigstore signature"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // And gRPC C-core (Python grpcio): the same status.
    let py = std::env::var_os("FERRIO_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/var/cache/ferrio/pyenv/bin/python".into());
    let out = sh(Command::new(&py)
        .arg(repo_root().join("tests/clients/grpcio_pull.py"))
        .arg(format!("unix:{}", d.socket.display()))
        .arg(format!("{addr}/trust/unsigned:1")));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["code"], "PERMISSION_DENIED", "{v}");
    assert!(
        v["details"]
            .as_str()
            .is_some_and(|d| d.contains("no sigstore signature")),
        "{v}"
    );

    // At CreateContainer: the pod's namespace's policy again.
    let plain_ref = format!("{addr}/plain/busybox:1");
    assert_eq!(pull_in(&d, &plain_ref, None).await.unwrap().len(), 71);
    let _ = plain;
    let mut rt = d.runtime().await;
    let logs = d.dir.path().join("logs");
    let mut locked = pod_config("locked-pod", &logs);
    locked.metadata.as_mut().unwrap().namespace = "locked".into();
    let locked_pod = run_pod(&mut rt, locked.clone(), "").await;
    for image in [&plain_ref, &signed] {
        let e = rt
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: locked_pod.id.clone(),
                config: Some(sh_container("c", image, "echo hi")),
                sandbox_config: Some(locked.clone()),
            })
            .await
            .expect_err("the locked namespace rejects every image");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("may not run in namespace \"locked\"")
                && e.message().contains("reject"),
            "{}",
            e.message()
        );
    }
    // In another namespace the signed image runs: its stored signature verifies again.
    let open = pod_config("open-pod", &logs);
    let open_pod = run_pod(&mut rt, open.clone(), "").await;
    let c = create_start(
        &mut rt,
        &open_pod,
        &open,
        sh_container("signed", &signed, "echo ran; sleep 60"),
    )
    .await;
    assert!(!c.is_empty());
    // A policy change applies to images already stored: under a key that did not sign it,
    // the signed image no longer runs by that name.
    let other_file = dir.path().join("other.pub");
    std::fs::write(&other_file, other_key.public_pem()).unwrap();
    write_policy(&policy, &format!("{addr}/trust"), &other_file);
    {
        let image = signed.as_str();
        let e = rt
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: open_pod.id.clone(),
                config: Some(sh_container("again", image, "echo hi")),
                sandbox_config: Some(open.clone()),
            })
            .await
            .expect_err("the new key did not sign it");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("does not verify"), "{}", e.message());
    }
    // By its ID it still runs: the same image is also stored as plain/busybox:1, which the
    // policy accepts unsigned, and one accepted name is enough.
    create_start(
        &mut rt,
        &open_pod,
        &open,
        sh_container("by-id", &id, "sleep 60"),
    )
    .await;
    for p in [&open_pod, &locked_pod] {
        finish_pod(&d, p).await;
    }
}

/// A throwaway GnuPG home with one signing key; the agent is stopped when dropped.
struct GpgHome {
    dir: tempfile::TempDir,
    fingerprint: String,
}

impl GpgHome {
    fn new(name: &str) -> GpgHome {
        let dir = tempfile::tempdir().unwrap();
        let gpg = |args: &[&str]| {
            sh(Command::new("gpg")
                .env("GNUPGHOME", dir.path())
                .args(["--batch", "--quiet"])
                .args(args))
        };
        gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("{name} <{name}@ferrio.test>"),
            "ed25519",
            "sign",
            "never",
        ]);
        let list = String::from_utf8(gpg(&["--list-keys", "--with-colons"])).unwrap();
        let fingerprint = list
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .map(|f| f.trim_end_matches(':').to_string())
            .expect("a fingerprint");
        let public = gpg(&["--export", &fingerprint]);
        std::fs::write(dir.path().join("public.gpg"), public).unwrap();
        GpgHome { dir, fingerprint }
    }

    fn keyring(&self) -> std::path::PathBuf {
        self.dir.path().join("public.gpg")
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.dir.path())
            .args(["--kill", "all"])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_by_gpg_with_signatures_skopeo_wrote_to_a_lookaside() {
    e2e!();
    let reg = Registry::start(None);
    let addr = reg.addr();
    let (key, other) = (GpgHome::new("signer"), GpgHome::new("stranger"));
    let dir = tempfile::tempdir().unwrap();
    let lookaside = dir.path().join("sigstore");
    // skopeo (containers/image, what CRI-O and Podman use) signs and writes the lookaside.
    let staging = dir.path().join("registries.d-staging");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(
        staging.join("staging.yaml"),
        format!(
            "docker:\n  {addr}/gpg:\n    lookaside-staging: file://{}\n",
            lookaside.display()
        ),
    )
    .unwrap();
    let src = format!(
        "oci-archive:{}",
        test_images().join("busybox.tar").display()
    );
    for (repo, signer) in [
        ("gpg/signed", Some(&key)),
        ("gpg/stranger", Some(&other)),
        ("gpg/unsigned", None),
    ] {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "--registries.d"])
            .arg(&staging)
            .args(["copy", "-q", "--dest-tls-verify=false"]);
        if let Some(g) = signer {
            cmd.env("GNUPGHOME", g.dir.path())
                .args(["--sign-by", &g.fingerprint]);
        }
        sh(cmd.args([src.as_str(), &format!("docker://{addr}/{repo}:1")]));
    }
    let regd = dir.path().join("registries.d");
    std::fs::create_dir(&regd).unwrap();
    std::fs::write(
        regd.join("gpg.yaml"),
        format!(
            "docker:\n  {addr}/gpg:\n    lookaside: file://{}\n",
            lookaside.display()
        ),
    )
    .unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        serde_json::to_vec(&serde_json::json!({
            "default": [{"type": "insecureAcceptAnything"}],
            "transports": {"docker": {format!("{addr}/gpg"): [
                {"type": "signedBy", "keyType": "GPGKeys", "keyPath": key.keyring()}
            ]}}
        }))
        .unwrap(),
    )
    .unwrap();
    let d = Daemon::start(DaemonOpts {
        extra_config: format!(
            "signature_policy = {:?}\nregistries_d = {:?}\n",
            policy.display().to_string(),
            regd.display().to_string()
        ),
        ..Default::default()
    });
    let signed = format!("{addr}/gpg/signed:1");
    let id = pull_in(&d, &signed, None).await.expect("signed by the key");
    let info = status_info(&d, &id).await;
    assert!(
        info["verified"]
            .as_str()
            .is_some_and(|v| v.contains("signedBy")),
        "{info}"
    );
    for (image, why) in [
        (format!("{addr}/gpg/unsigned:1"), "found no signature"),
        (
            format!("{addr}/gpg/stranger:1"),
            "does not verify with the keyring",
        ),
    ] {
        let e = pull_in(&d, &image, None).await.expect_err(&image);
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("signedBy") && e.message().contains(why),
            "{image}: {}",
            e.message()
        );
    }
    // At create, the kept signature is checked again (gpgv runs again).
    let mut rt = d.runtime().await;
    let pcfg = pod_config("gpg-pod", &d.dir.path().join("logs"));
    let pod = run_pod(&mut rt, pcfg.clone(), "").await;
    create_start(
        &mut rt,
        &pod,
        &pcfg,
        sh_container("signed", &signed, "sleep 60"),
    )
    .await;
    finish_pod(&d, &pod).await;
}
