//! `driftless artifact` against the platform's real registries: the binary, as CI runs it.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::oci::{FLUX_LAYER, client, gzip, push_flux_artifact};

fn driftless(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(args)
        .env("HOME", "/nonexistent")
        .output()
        .expect("run driftless")
}

/// `driftless artifact ARGS --insecure-registry` (the platform's registries speak plain HTTP).
fn artifact(args: &[&str]) -> Output {
    let mut all = vec!["artifact"];
    all.extend_from_slice(args);
    all.push("--insecure-registry");
    driftless(&all)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "driftless failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "driftless should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

fn read_tree(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                out.push((rel, std::fs::read_to_string(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: prod\nspec:\n  replicas: 2\n";
const CONFIG: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: prod\ndata:\n  level: info\n";

#[test]
fn push_pull_tag_list_and_reproducible_digests() {
    let platform = support::platform();
    let registry = platform.registry().to_string();
    let repo = unique("cli/app");
    let src = tempfile::tempdir().unwrap();
    write_tree(
        src.path(),
        &[
            ("deploy/web.yaml", DEPLOY),
            ("deploy/config.yaml", CONFIG),
            (".git/HEAD", "ref"),
        ],
    );
    let url = format!("oci://{registry}/{repo}:v1.0.0");
    let push = |extra: &[&str]| {
        let mut args = vec![
            "artifact",
            "push",
            &url,
            "--path",
            src.path().to_str().unwrap(),
            "--source",
            "https://github.com/org/app",
            "--revision",
            "main@sha1:abc",
            "--insecure-registry",
            "-o",
            "json",
            "--annotations",
            "team=platform",
        ];
        args.extend_from_slice(extra);
        serde_json::from_str::<serde_json::Value>(&ok(&driftless(&args))).unwrap()
    };
    let first = push(&["--reproducible"]);
    let second = push(&["--reproducible"]);
    assert_eq!(
        first["digest"], second["digest"],
        "--reproducible pushes of the same input have the same digest"
    );
    let third = push(&[]);
    assert_ne!(
        first["digest"], third["digest"],
        "without --reproducible the created time changes the digest"
    );

    // The manifest carries Flux's media types and annotations.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (repo_only, digest, reg) = (
        repo.clone(),
        first["digest"].as_str().unwrap().to_string(),
        registry.clone(),
    );
    let manifest = rt.block_on(async move {
        client(&reg)
            .get_manifest(&repo_only, &digest)
            .await
            .unwrap()
    });
    let m: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.cncf.flux.config.v1+json"
    );
    assert_eq!(m["layers"][0]["mediaType"], FLUX_LAYER);
    assert_eq!(
        m["annotations"]["org.opencontainers.image.source"],
        "https://github.com/org/app"
    );
    assert_eq!(
        m["annotations"]["org.opencontainers.image.revision"],
        "main@sha1:abc"
    );
    assert_eq!(
        m["annotations"]["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
    assert_eq!(m["annotations"]["team"], "platform");

    let out = tempfile::tempdir().unwrap();
    let pulled = ok(&artifact(&[
        "pull",
        &url,
        "--output",
        out.path().to_str().unwrap(),
    ]));
    assert!(pulled.contains("revision: main@sha1:abc"), "{pulled}");
    assert_eq!(
        read_tree(out.path()),
        vec![
            ("deploy/config.yaml".into(), CONFIG.into()),
            ("deploy/web.yaml".into(), DEPLOY.into())
        ],
        ".git is left out"
    );

    ok(&artifact(&[
        "tag", &url, "--tag", "stable", "--tag", "latest",
    ]));
    let list = ok(&artifact(&[
        "list",
        &format!("oci://{registry}/{repo}"),
        "-o",
        "json",
    ]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let urls: Vec<&str> = rows.iter().map(|r| r["url"].as_str().unwrap()).collect();
    assert_eq!(urls.len(), 3, "{urls:?}");
    assert!(
        rows.iter()
            .all(|r| r["digest"] == third["digest"] && r["revision"] == "main@sha1:abc"),
        "{list}"
    );
    let semver = ok(&artifact(&[
        "list",
        &format!("oci://{registry}/{repo}"),
        "--semver",
        ">=1.0.0",
        "-o",
        "json",
    ]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&semver).unwrap();
    assert_eq!(rows.len(), 1, "only the version tag: {semver}");
}

#[test]
fn diff_directory_and_object_aware_artifact_diff() {
    let platform = support::platform();
    let registry = platform.registry().to_string();
    let repo = unique("cli/diff");
    let a = tempfile::tempdir().unwrap();
    write_tree(
        a.path(),
        &[(
            "all.yaml",
            &format!(
                "{DEPLOY}---\n{CONFIG}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: old\n  namespace: prod\n"
            ),
        )],
    );
    let b = tempfile::tempdir().unwrap();
    let changed_deploy = DEPLOY.replace("replicas: 2", "replicas: 3");
    write_tree(
        b.path(),
        &[
            ("web.yaml", &changed_deploy),
            ("config.yaml", CONFIG),
            (
                "svc.yaml",
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: prod\n",
            ),
        ],
    );
    let push = |dir: &Path, tag: &str| {
        ok(&artifact(&[
            "push",
            &format!("oci://{registry}/{repo}:{tag}"),
            "--path",
            dir.to_str().unwrap(),
            "--source",
            "s",
            "--revision",
            tag,
        ]));
    };
    push(a.path(), "a");
    push(b.path(), "b");
    let (ua, ub) = (
        format!("oci://{registry}/{repo}:a"),
        format!("oci://{registry}/{repo}:b"),
    );

    let same = artifact(&["diff", &ua, "--path", a.path().to_str().unwrap()]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "a directory equal to the artifact: {}",
        String::from_utf8_lossy(&same.stdout)
    );
    let differs = artifact(&["diff", &ua, "--path", b.path().to_str().unwrap()]);
    assert_eq!(
        differs.status.code(),
        Some(1),
        "a different directory exits 1"
    );

    let out = artifact(&["diff", &ua, &ub, "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["added"], serde_json::json!(["/Service/prod/web"]));
    assert_eq!(d["removed"], serde_json::json!(["/Secret/prod/old"]));
    assert_eq!(d["changed"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["changed"][0]["id"], "apps/Deployment/prod/web");
    let diff = d["changed"][0]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-  replicas: 2") && diff.contains("+  replicas: 3"),
        "{diff}"
    );
    let same = artifact(&["diff", &ua, &ua]);
    assert_eq!(same.status.code(), Some(0));
}

#[test]
fn bad_input_fails_clearly() {
    let platform = support::platform();
    let registry = platform.registry().to_string();
    let repo = unique("cli/bad");
    let missing = failed(&artifact(&[
        "push",
        &format!("oci://{registry}/{repo}:v1"),
        "--path",
        "/nonexistent/dir",
        "--source",
        "s",
        "--revision",
        "r",
    ]));
    assert!(missing.contains("/nonexistent/dir"), "{missing}");

    let unreachable = failed(&artifact(&[
        "pull",
        "oci://127.0.0.1:1/app:v1",
        "--output",
        "/tmp/x",
    ]));
    assert!(
        unreachable.contains("127.0.0.1:1") && unreachable.to_lowercase().contains("connect"),
        "{unreachable}"
    );

    let basic = &platform.env["DRIFTLESS_REGISTRY_BASIC"];
    let src = tempfile::tempdir().unwrap();
    write_tree(src.path(), &[("a.yaml", CONFIG)]);
    let user = &platform.env["DRIFTLESS_REGISTRY_USER"];
    let wrong = failed(&artifact(&[
        "push",
        &format!("oci://{basic}/{repo}:v1"),
        "--path",
        src.path().to_str().unwrap(),
        "--source",
        "s",
        "--revision",
        "r",
        "--creds",
        &format!("{user}:wrong"),
    ]));
    assert!(wrong.contains("unauthorized"), "{wrong}");
    let right = format!("{user}:{}", platform.env["DRIFTLESS_REGISTRY_PASSWORD"]);
    ok(&artifact(&[
        "push",
        &format!("oci://{basic}/{repo}:v1"),
        "--path",
        src.path().to_str().unwrap(),
        "--source",
        "s",
        "--revision",
        "r",
        "--creds",
        &right,
    ]));

    // An archive that tries to escape on pull is refused and nothing lands outside the output.
    let mut raw = Vec::new();
    let mut h = tar::Header::new_old();
    h.as_mut_bytes()[..12].copy_from_slice(b"../escape.tx");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    raw.extend_from_slice(h.as_bytes());
    raw.extend_from_slice(b"x");
    raw.resize(2048, 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (reg, r) = (registry.clone(), repo.clone());
    rt.block_on(async move {
        push_flux_artifact(&client(&reg), &r, "evil", gzip(&raw), FLUX_LAYER, &[]).await
    });
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("out");
    let evil = failed(&artifact(&[
        "pull",
        &format!("oci://{registry}/{repo}:evil"),
        "--output",
        out.to_str().unwrap(),
    ]));
    assert!(evil.contains("../escape.tx"), "{evil}");
    assert!(
        !parent.path().join("escape.tx").exists(),
        "nothing written outside the output directory"
    );
}

#[test]
fn docker_config_credential_helpers_supply_credentials() {
    use std::os::unix::fs::PermissionsExt;
    let platform = support::platform();
    let basic = platform.env["DRIFTLESS_REGISTRY_BASIC"].clone();
    let (user, password) = (
        &platform.env["DRIFTLESS_REGISTRY_USER"],
        &platform.env["DRIFTLESS_REGISTRY_PASSWORD"],
    );
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-driftless-test");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\nread host || true\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$host\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = home.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers": {{"{basic}": "driftless-test"}}}}"#),
    )
    .unwrap();
    let src = tempfile::tempdir().unwrap();
    write_tree(src.path(), &[("a.yaml", CONFIG)]);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args([
            "artifact",
            "push",
            &format!("oci://{basic}/{}:v1", unique("cli/helper")),
            "--path",
            src.path().to_str().unwrap(),
        ])
        .args(["--source", "s", "--revision", "r", "--insecure-registry"])
        .env("DOCKER_CONFIG", &docker)
        .env("PATH", path)
        .output()
        .unwrap();
    ok(&out);
}

/// `artifact push` of a one-ConfigMap directory (made under `dir`) to `url`; its digest.
fn push_one_manifest(dir: &Path, url: &str) -> String {
    write_tree(&dir.join("m"), &[("app.yaml", "kind: ConfigMap\n")]);
    let pushed = ok(&artifact(&[
        "push",
        url,
        "--path",
        dir.join("m").to_str().unwrap(),
        "--source",
        "s",
        "--revision",
        "r",
        "--output",
        "json",
    ]));
    serde_json::from_str::<serde_json::Value>(&pushed).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn cosign(dir: &Path, args: &[&str]) -> Output {
    support::cosign::cosign(&support::platform(), dir, args)
}

#[tokio::test(flavor = "multi_thread")]
async fn pushed_artifacts_are_signed_as_cosign_signs_them() {
    let platform = support::platform();
    let dir = tempfile::tempdir().unwrap();
    let out = cosign(dir.path(), &["generate-key-pair"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write_tree(&dir.path().join("m"), &[("app.yaml", "kind: ConfigMap\n")]);
    let repo = format!("{}/{}", platform.registry(), unique("signed"));
    let push = |key: &str, password: &str| {
        Command::new(env!("CARGO_BIN_EXE_driftless"))
            .args(["artifact", "push", &format!("oci://{repo}:v1"), "--path"])
            .arg(dir.path().join("m"))
            .args([
                "--source",
                "https://example.com/repo",
                "--revision",
                "main@sha1:1234",
            ])
            // Reproducible: the second push has the same digest, which gets a second signature.
            .args([
                "--reproducible",
                "--insecure-registry",
                "--output",
                "json",
                "--sign-key",
            ])
            .arg(dir.path().join(key))
            .env("COSIGN_PASSWORD", password)
            .env("HOME", "/nonexistent")
            .output()
            .unwrap()
    };
    let wrong = failed(&push("cosign.key", "not-the-password"));
    assert!(
        wrong.contains("wrong password (COSIGN_PASSWORD)"),
        "{wrong}"
    );
    assert!(
        client(platform.registry())
            .list_tags(repo.split_once('/').unwrap().1)
            .await
            .is_err(),
        "nothing is pushed with a key that does not open"
    );

    let out = push("cosign.key", support::cosign::PASSWORD);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "",
        "no progress lines when stderr is not a terminal"
    );
    let pushed: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    let digest = pushed["digest"].as_str().unwrap();
    assert!(pushed["signature"].as_str().unwrap().starts_with("sha256:"));
    let by_digest = format!("{repo}@{digest}");
    let verify = |public: &str| {
        cosign(
            dir.path(),
            &[
                "verify",
                "--key",
                public,
                "--insecure-ignore-tlog=true",
                "--allow-http-registry",
                &by_digest,
            ],
        )
    };
    let out = verify("cosign.pub");
    assert!(
        out.status.success(),
        "real cosign accepts the signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        claims[0]["critical"]["image"]["docker-manifest-digest"],
        digest
    );

    // Another key does not verify it; after signing with that key too, both do.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    assert!(cosign(&other, &["generate-key-pair"]).status.success());
    let other_pub = other.join("cosign.pub").display().to_string();
    assert!(
        !verify(&other_pub).status.success(),
        "a signature is bound to its key"
    );
    ok(&push("other/cosign.key", support::cosign::PASSWORD));
    assert!(
        verify(&other_pub).status.success(),
        "the second signature was added"
    );
    assert!(
        verify("cosign.pub").status.success(),
        "next to the first one"
    );
}

/// `driftless artifact verify`: the controller's verification from the command line. An
/// unsigned artifact, one signed with another key, and a keyless signature of another identity
/// are each refused with a non-zero exit naming why; the signing key and the keyless identity
/// (logged, against the test's trusted root) verify it, in text and JSON.
#[tokio::test(flavor = "multi_thread")]
async fn verify_checks_signatures_as_the_controller_does() {
    use support::sigstore::{ISSUER, SUBJECT, Sigstore};
    let platform = support::platform();
    let keys = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    support::cosign::generate_key_pair(&platform, keys.path());
    support::cosign::generate_key_pair(&platform, other.path());
    let other_pub = keys.path().join("other.pub");
    std::fs::copy(other.path().join("cosign.pub"), &other_pub).unwrap();
    let trusted = keys.path().join("cosign.pub");
    let name = unique("verified");
    let url = format!("oci://{}/{name}:v1", platform.registry());
    let digest = push_one_manifest(keys.path(), &url);
    let by_digest = format!("oci://{}/{name}@{digest}", platform.registry());
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", url.as_str()];
        args.extend_from_slice(extra);
        artifact(&args)
    };
    let key = |path: &Path| path.to_str().unwrap().to_string();

    let unsigned = failed(&verify(&["--key", &key(&trusted)]));
    assert!(
        unsigned.contains(&format!("{by_digest} is not verified: it has no signature")),
        "{unsigned}"
    );
    support::cosign::sign(
        &platform,
        keys.path(),
        "cosign.key",
        &format!("{}/{name}@{digest}", platform.registry()),
    );
    let text = ok(&verify(&["--key", &key(&trusted)]));
    assert!(text.contains(&format!("verified:  {by_digest}")), "{text}");
    assert!(text.contains("signer:    key cosign.pub"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&verify(&["--key", &key(&trusted), "-o", "json"]))).unwrap();
    assert_eq!(
        (&json["key"], &json["digest"], &json["url"], &json["format"]),
        (
            &serde_json::json!("cosign.pub"),
            &serde_json::json!(digest),
            &serde_json::json!(by_digest),
            &serde_json::json!("cosign-signature-tag")
        )
    );
    let refused = failed(&verify(&["--key", &key(&other_pub)]));
    assert!(
        refused.contains("a signature was not made by any of the keys [other.pub]"),
        "{refused}"
    );

    // Keyless: the test CA's identity, logged in the test's log.
    let sigstore = Sigstore::new(&platform);
    let root = keys.path().join("trusted_root.json");
    std::fs::write(&root, sigstore.trusted_root()).unwrap();
    sigstore.sign_keyless(
        &sigstore.signer(),
        &format!("{}/{name}@{digest}", platform.registry()),
    );
    sigstore.log(platform.registry(), &name, &digest);
    let keyless = |identity: &str| {
        verify(&[
            "--certificate-identity",
            identity,
            "--certificate-oidc-issuer",
            ISSUER,
            "--trusted-root",
            root.to_str().unwrap(),
            "-o",
            "json",
        ])
    };
    let json: serde_json::Value = serde_json::from_str(&ok(&keyless(SUBJECT))).unwrap();
    assert_eq!(
        (&json["subject"], &json["issuer"], &json["format"]),
        (
            &serde_json::json!(SUBJECT),
            &serde_json::json!(ISSUER),
            &serde_json::json!("sigstore-bundle")
        )
    );
    assert!(json["logIndex"].is_i64(), "{json}");
    let stranger = failed(&keyless("someone-else@test.invalid"));
    assert!(stranger.contains("is not verified"), "{stranger}");
    assert!(
        stranger.contains(SUBJECT),
        "names the identity found: {stranger}"
    );
    let no_identity = failed(&verify(&["--trusted-root", root.to_str().unwrap()]));
    assert!(
        no_identity.contains("keyless verification needs --certificate-identity"),
        "{no_identity}"
    );
}

/// `artifact verify --verify-provider notation`: the controller's Notary Project verification, with a
/// trust policy and CA certificates from files, against signatures made by the real notation.
#[tokio::test]
async fn verify_checks_notation_signatures_under_a_trust_policy() {
    use support::notation::{Notation, SIGNER_IDENTITY};
    let platform = support::platform();
    let notation = Notation::new(&platform);
    let dir = tempfile::tempdir().unwrap();
    let name = unique("notation");
    let url = format!("oci://{}/{name}:v1", platform.registry());
    let digest = push_one_manifest(dir.path(), &url);
    let by_digest = format!("oci://{}/{name}@{digest}", platform.registry());
    let write = |file: &str, bytes: Vec<u8>| {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_string()
    };
    let policy = |level: &str, identity: &str| {
        serde_json::json!({"version": "1.0", "trustPolicies": [{
            "name": "ci", "registryScopes": ["*"], "signatureVerification": {"level": level},
            "trustStores": ["ca:ci"], "trustedIdentities": [identity]}]})
        .to_string()
        .into_bytes()
    };
    let strict = write("strict.json", policy("strict", SIGNER_IDENTITY));
    let audit = write(
        "audit.json",
        policy("audit", "x509.subject: C=US, ST=WA, O=Nobody"),
    );
    let root = write("root.crt", notation.certificate("root.crt"));
    let other = write("other.crt", notation.certificate("other-root.crt"));
    let verify = |policy: &str, ca: &str, extra: &[&str]| {
        let mut args = vec![
            "verify",
            url.as_str(),
            "--verify-provider",
            "notation",
            "--trust-policy",
            policy,
            "--ca-cert",
            ca,
        ];
        args.extend_from_slice(extra);
        artifact(&args)
    };

    let unsigned = failed(&verify(&strict, &root, &[]));
    assert!(
        unsigned.contains(&format!(
            "{by_digest} is not verified: no signature is associated with"
        )),
        "{unsigned}"
    );
    notation.sign(
        &format!("{}/{name}@{digest}", platform.registry()),
        "cose",
        &[],
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&verify(&strict, &root, &["-o", "json"]))).unwrap();
    assert_eq!(
        (
            &json["provider"],
            &json["format"],
            &json["digest"],
            &json["url"]
        ),
        (
            &serde_json::json!("notation"),
            &serde_json::json!("notation-cose"),
            &serde_json::json!(digest),
            &serde_json::json!(by_digest)
        )
    );
    let wrong_ca = failed(&verify(&strict, &other, &[]));
    assert!(
        wrong_ca
            .contains("the signature's certificate chain does not contain any trusted certificate"),
        "{wrong_ca}"
    );
    // Audit lets the controller pull it, reporting no verification; a CI check fails.
    let audited = failed(&verify(&audit, &root, &[]));
    assert!(audited.contains("only logs it"), "{audited}");
    let refused = failed(&artifact(&[
        "verify",
        &url,
        "--verify-provider",
        "notation",
        "--ca-cert",
        &root,
    ]));
    assert!(
        refused.contains("--verify-provider notation needs --trust-policy"),
        "{refused}"
    );
}
