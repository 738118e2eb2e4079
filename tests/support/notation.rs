//! The real notation CLI (v1.3.2, built from its Go module by `hack/testbin.sh notation`) with a
//! local test PKI (`hack/notation-pki`), isolated from the user's configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

use super::Platform;

/// The subject `hack/notation-pki` gives the signing certificate.
pub const SIGNER_IDENTITY: &str = "x509.subject: C=US, ST=WA, O=Driftless Test";

/// Builds notation once per test binary (a no-op once built).
fn ensure_notation() {
    static BUILT: Once = Once::new();
    BUILT.call_once(|| {
        let status = Command::new(super::repo_root().join("hack/testbin.sh"))
            .arg("notation")
            .status()
            .expect("run hack/testbin.sh notation");
        assert!(status.success(), "hack/testbin.sh notation failed");
    });
}

/// A notation configuration signing with a fresh test PKI.
pub struct Notation {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Notation {
    pub fn new(platform: &Platform) -> Notation {
        ensure_notation();
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let out = Command::new(super::repo_root().join("hack/notation-pki"))
            .arg(&pki)
            .output()
            .expect("run hack/notation-pki");
        assert!(
            out.status.success(),
            "hack/notation-pki: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        let keys = serde_json::json!({
            "default": "test",
            "keys": [{"name": "test", "keyPath": pki.join("leaf-key.pem"),
                      "certPath": pki.join("leaf-chain.crt")}],
        });
        std::fs::write(config.join("signingkeys.json"), keys.to_string()).unwrap();
        Notation {
            bin: Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin/notation"),
            dir,
        }
    }

    /// A certificate of the test PKI: `root.crt` (trusted) or `other-root.crt` (another CA).
    pub fn certificate(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join("pki").join(name)).unwrap()
    }

    fn notation(&self, args: &[&str]) -> Output {
        let home = self.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        Command::new(&self.bin)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("NOTATION_CONFIG", self.dir.path().join("config"))
            .env("NOTATION_CACHE", self.dir.path().join("cache"))
            .env("NOTATION_LIBEXEC", self.dir.path().join("libexec"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("DOCKER_CONFIG", home.join(".docker"))
            .output()
            .expect("run notation")
    }

    /// `notation sign` of `reference` (by digest) over plain HTTP, in envelope `format` (`jws`
    /// or `cose`), with `extra` flags.
    pub fn sign(&self, reference: &str, format: &str, extra: &[&str]) {
        let mut args = vec!["sign", "--insecure-registry", "--signature-format", format];
        args.extend_from_slice(extra);
        args.push(reference);
        let out = self.notation(&args);
        assert!(
            out.status.success(),
            "notation {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
