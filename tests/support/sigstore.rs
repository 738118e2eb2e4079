//! Offline Sigstore for tests: a local "Fulcio" CA and transparency-log key made by
//! `hack/sigstore-testlog`, the real cosign v3 signing Sigstore bundles with them, and the real
//! cosign verifying what the controller is asked to verify.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::Platform;
use super::cosign::PASSWORD;

pub const SUBJECT: &str = "signer@test.invalid";
pub const ISSUER: &str = "https://oidc.test.invalid";
/// Expressions matching exactly SUBJECT and ISSUER.
pub const SUBJECT_RE: &str = "^signer@test\\.invalid$";
pub const ISSUER_RE: &str = "^https://oidc\\.test\\.invalid$";
/// The index `log` gives the entries it adds.
pub const LOG_INDEX: i64 = 42;

/// Builds cosign v3 once per test binary (`hack/testbin.sh cosign3`, a no-op once built).
pub fn ensure_cosign3() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(super::repo_root().join("hack/testbin.sh"))
            .arg("cosign3")
            .status()
            .expect("run hack/testbin.sh cosign3");
        assert!(status.success(), "hack/testbin.sh cosign3 failed");
    });
}

/// A signing identity: a leaf certificate for one SAN and issuer, its cosign key, and the
/// trusted root cosign checks the certificate against when signing.
pub struct Identity {
    dir: PathBuf,
    trusted_root: PathBuf,
}

impl Identity {
    pub fn certificate(&self) -> PathBuf {
        self.dir.join("leaf.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("leaf.key")
    }
}

/// One test's trust: a CA, a log key, the `trusted_root.json` naming both, and cosign's
/// configuration for signing without a public log.
pub struct Sigstore {
    platform: Platform,
    dir: tempfile::TempDir,
}

impl Sigstore {
    pub fn new(platform: &Platform) -> Sigstore {
        ensure_cosign3();
        let s = Sigstore {
            platform: platform.clone(),
            dir: tempfile::tempdir().unwrap(),
        };
        let d = s.path();
        s.testlog(&[
            "ca",
            "--dir",
            &p(&d.join("ca")),
            "--subject",
            SUBJECT,
            "--issuer",
            ISSUER,
        ]);
        s.testlog(&["log-key", "--out", &p(&d.join("log-key.pem"))]);
        s.testlog(&[
            "trusted-root",
            "--chain",
            &p(&d.join("ca/chain.pem")),
            "--log-key",
            &p(&d.join("log-key.pem")),
            "--out",
            &p(&d.join("trusted_root.json")),
        ]);
        s.cosign3_ok(&["signing-config", "create", "--out", "sc-empty.json"]);
        s.import_key(&d.join("ca"));
        s
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn trusted_root(&self) -> Vec<u8> {
        std::fs::read(self.path().join("trusted_root.json")).unwrap()
    }

    /// The identity the CA was made with (SUBJECT, ISSUER).
    pub fn signer(&self) -> Identity {
        Identity {
            dir: self.path().join("ca"),
            trusted_root: self.path().join("trusted_root.json"),
        }
    }

    /// Another identity issued by the same trusted CA.
    pub fn identity(&self, name: &str, subject: &str, issuer: &str) -> Identity {
        let dir = self.path().join(name);
        let ca = p(&self.path().join("ca"));
        self.testlog(&[
            "ca",
            "--dir",
            &p(&dir),
            "--reuse-ca",
            &ca,
            "--subject",
            subject,
            "--issuer",
            issuer,
        ]);
        self.import_key(&dir);
        Identity {
            dir,
            trusted_root: self.path().join("trusted_root.json"),
        }
    }

    /// An identity from a CA the trusted root does not list.
    pub fn untrusted_identity(&self, name: &str) -> Identity {
        let dir = self.path().join(name);
        self.testlog(&[
            "ca",
            "--dir",
            &p(&dir),
            "--subject",
            SUBJECT,
            "--issuer",
            ISSUER,
        ]);
        self.import_key(&dir);
        // cosign checks the certificate when signing: give it a root that trusts this CA.
        let trusted_root = dir.join("trusted_root.json");
        self.testlog(&[
            "trusted-root",
            "--chain",
            &p(&dir.join("chain.pem")),
            "--log-key",
            &p(&self.path().join("log-key.pem")),
            "--out",
            &p(&trusted_root),
        ]);
        Identity { dir, trusted_root }
    }

    fn import_key(&self, dir: &Path) {
        let args = [
            "import-key-pair",
            "--key",
            "leaf-key.pem",
            "--output-key-prefix",
            "leaf",
        ];
        cosign2_ok(&self.platform, dir, &args);
    }

    /// cosign v3 signs `reference` (by digest) keyless-style with `identity`'s certificate,
    /// writing a Sigstore bundle with no log entry.
    pub fn sign_keyless(&self, identity: &Identity, reference: &str) {
        self.cosign3_ok(&[
            "sign",
            "--key",
            &p(&identity.key()),
            "--certificate",
            &p(&identity.certificate()),
            "--signing-config",
            "sc-empty.json",
            "--trusted-root",
            &p(&identity.trusted_root),
            "--allow-http-registry",
            "-y",
            reference,
        ]);
    }

    /// cosign v3 attests `reference` (by digest) with `identity`'s certificate: an in-toto
    /// statement of `predicate_type` (a `cosign attest --type`) in a Sigstore bundle, no log entry.
    pub fn attest_keyless(&self, identity: &Identity, reference: &str, predicate_type: &str) {
        self.attest(
            &[
                "--key",
                &p(&identity.key()),
                "--certificate",
                &p(&identity.certificate()),
                "--trusted-root",
                &p(&identity.trusted_root),
            ],
            reference,
            predicate_type,
        );
    }

    /// cosign v3 attests `reference` with a cosign key, as a Sigstore bundle.
    pub fn attest_with_key(&self, key: &Path, reference: &str, predicate_type: &str) {
        let trusted_root = p(&self.path().join("trusted_root.json"));
        self.attest(
            &["--key", &p(key), "--trusted-root", &trusted_root],
            reference,
            predicate_type,
        );
    }

    fn attest(&self, signer: &[&str], reference: &str, predicate_type: &str) {
        let predicate = self.path().join("predicate.json");
        let claim = r#"{"buildType":"https://example.com/build/v1","builder":{"id":"https://example.com/builder"}}"#;
        std::fs::write(&predicate, claim).unwrap();
        let mut args = vec!["attest"];
        args.extend_from_slice(signer);
        let predicate = p(&predicate);
        args.extend_from_slice(&[
            "--predicate",
            &predicate,
            "--type",
            predicate_type,
            "--signing-config",
            "sc-empty.json",
            "--allow-http-registry",
            "-y",
            reference,
        ]);
        self.cosign3_ok(&args);
    }

    /// cosign v2 signs `reference` keyless-style in the legacy format (`sha256-<hex>.sig`, the
    /// certificate and chain in annotations), with no log entry.
    pub fn sign_keyless_legacy(&self, identity: &Identity, reference: &str) {
        cosign2_ok(
            &self.platform,
            self.path(),
            &[
                "sign",
                "--key",
                &p(&identity.key()),
                "--certificate",
                &p(&identity.certificate()),
                "--certificate-chain",
                &p(&identity.dir.join("chain.pem")),
                "--tlog-upload=false",
                "--allow-http-registry",
                "-y",
                reference,
            ],
        );
    }

    /// cosign v3 signs `reference` with a cosign key, as a Sigstore bundle.
    pub fn sign_with_key(&self, key: &Path, reference: &str) {
        self.cosign3_ok(&[
            "sign",
            "--key",
            &p(key),
            "--signing-config",
            "sc-empty.json",
            "--trusted-root",
            "trusted_root.json",
            "--allow-http-registry",
            "-y",
            reference,
        ]);
    }

    /// Adds an entry of this test's log (signed entry timestamp and inclusion proof) to every
    /// bundle attached to `digest`.
    pub fn log(&self, registry: &str, repo: &str, digest: &str) {
        self.add_log_entry(registry, repo, digest, &[]);
    }

    /// Like `log`, with an inclusion proof but no signed entry timestamp.
    pub fn log_without_timestamp(&self, registry: &str, repo: &str, digest: &str) {
        self.add_log_entry(registry, repo, digest, &["--no-promise"]);
    }

    fn add_log_entry(&self, registry: &str, repo: &str, digest: &str, extra: &[&str]) {
        self.testlog_entry("add-log-entry", registry, repo, digest, extra);
    }

    /// Adds this test's log entry (a signed entry timestamp) to every `.sig` signature of
    /// `digest`, as cosign v2 records a Rekor upload.
    pub fn log_legacy(&self, registry: &str, repo: &str, digest: &str) {
        self.testlog_entry("add-legacy-log-entry", registry, repo, digest, &[]);
    }

    /// `sigstore-testlog COMMAND` for `digest`, signed with this test's log key.
    fn testlog_entry(
        &self,
        command: &str,
        registry: &str,
        repo: &str,
        digest: &str,
        extra: &[&str],
    ) {
        let key = p(&self.path().join("log-key.pem"));
        let index = LOG_INDEX.to_string();
        let mut args = vec![
            command,
            "--registry",
            registry,
            "--repo",
            repo,
            "--digest",
            digest,
            "--log-key",
            &key,
            "--log-index",
            &index,
        ];
        args.extend_from_slice(extra);
        self.testlog(&args);
    }

    /// The real cosign v2 `verify` of a legacy signature with this test's trusted root.
    pub fn cosign2_verify(&self, reference: &str, subject_re: &str, issuer_re: &str) -> Output {
        let args = verify_args(reference, subject_re, issuer_re);
        super::cosign::cosign(&self.platform, self.path(), &args)
    }

    pub fn copy_bundle(&self, registry: &str, repo: &str, from: &str, to: &str) {
        self.testlog(&[
            "copy-bundle",
            "--registry",
            registry,
            "--repo",
            repo,
            "--from",
            from,
            "--to",
            to,
        ]);
    }

    pub fn corrupt_signature(&self, registry: &str, repo: &str, digest: &str) {
        self.testlog(&[
            "corrupt-signature",
            "--registry",
            registry,
            "--repo",
            repo,
            "--digest",
            digest,
        ]);
    }

    /// The real `cosign verify` (v3) with this test's trusted root and identity expressions.
    pub fn cosign_verify(&self, reference: &str, subject_re: &str, issuer_re: &str) -> Output {
        self.cosign3(&verify_args(reference, subject_re, issuer_re))
    }

    fn testlog(&self, args: &[&str]) -> Output {
        let out = Command::new(super::repo_root().join("hack/sigstore-testlog"))
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("run hack/sigstore-testlog");
        assert!(
            out.status.success(),
            "sigstore-testlog {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn cosign3(&self, args: &[&str]) -> Output {
        Command::new(Path::new(&self.platform.env["DRIFTLESS_TESTBIN"]).join("bin/cosign3"))
            .args(args)
            .current_dir(self.path())
            .env("COSIGN_PASSWORD", PASSWORD)
            .env("HOME", self.path())
            .output()
            .expect("run cosign3")
    }

    fn cosign3_ok(&self, args: &[&str]) -> Output {
        let out = self.cosign3(args);
        assert!(
            out.status.success(),
            "cosign3 {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// `cosign verify` against this test's trusted root (the tlog checked, the SCT not: the test
/// CA embeds none).
fn verify_args<'a>(reference: &'a str, subject_re: &'a str, issuer_re: &'a str) -> Vec<&'a str> {
    vec![
        "verify",
        "--trusted-root",
        "trusted_root.json",
        "--certificate-identity-regexp",
        subject_re,
        "--certificate-oidc-issuer-regexp",
        issuer_re,
        "--insecure-ignore-sct",
        "--allow-http-registry",
        reference,
    ]
}

/// cosign v2 with `args`, which must succeed.
fn cosign2_ok(platform: &Platform, dir: &Path, args: &[&str]) {
    let out = super::cosign::cosign(platform, dir, args);
    assert!(
        out.status.success(),
        "cosign {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
