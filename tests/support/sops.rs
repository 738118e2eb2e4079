//! The real `sops` CLI (built by hack/testbin.sh from github.com/getsops/sops/v3) and
//! `age-keygen` (filippo.io/age): test fixtures are encrypted with them at test time.

use std::path::PathBuf;
use std::process::Command;

use super::Platform;

pub struct Sops {
    bin: PathBuf,
    age_keygen: PathBuf,
    dir: tempfile::TempDir,
}

/// An age key: the identity file's text (what a `*.agekey` Secret entry holds) and its
/// recipient.
pub struct AgeKey {
    pub identity: String,
    pub recipient: String,
}

impl Sops {
    pub fn new(platform: &Platform) -> Sops {
        let bin = PathBuf::from(&platform.env["DRIFTLESS_TESTBIN"]).join("bin");
        Sops {
            bin: bin.join("sops"),
            age_keygen: bin.join("age-keygen"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn age_key(&self) -> AgeKey {
        let out = Command::new(&self.age_keygen)
            .output()
            .expect("run age-keygen");
        assert!(out.status.success(), "age-keygen: {out:?}");
        let identity = String::from_utf8(out.stdout).unwrap();
        let recipient = identity
            .lines()
            .find_map(|l| l.strip_prefix("# public key: "))
            .expect("age-keygen prints the public key")
            .to_string();
        AgeKey {
            identity,
            recipient,
        }
    }

    /// `sops encrypt --age <recipient> [args]` of `plain`, written to a file named `name` (its
    /// extension tells sops the format, unless `args` say otherwise).
    pub fn encrypt(&self, recipient: &str, name: &str, plain: &str, args: &[&str]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, plain).unwrap();
        let out = Command::new(&self.bin)
            .arg("encrypt")
            .args(["--age", recipient])
            .args(args)
            .arg(&path)
            .env_remove("SOPS_AGE_KEY_FILE")
            .output()
            .expect("run sops");
        assert!(
            out.status.success(),
            "sops encrypt {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("sops output is text")
    }
}
