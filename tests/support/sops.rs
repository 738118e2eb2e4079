//! The real `sops` CLI (built by hack/testbin.sh from github.com/getsops/sops/v3),
//! `age-keygen` (filippo.io/age) and Debian's `gpg`: test fixtures are encrypted with them at
//! test time.

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

pub struct PgpKey {
    pub fingerprint: String,
    pub armored_secret: String,
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

    /// Writes a `.sops.yaml` beside the files this helper encrypts (what only its creation
    /// rules can set, such as comment regexes).
    pub fn config(&self, text: &str) {
        std::fs::write(self.dir.path().join(".sops.yaml"), text).unwrap();
    }

    /// An OpenPGP key made by gpg in this helper's own keyring (no passphrase): its
    /// fingerprint and its armored secret key (what a `*.asc` Secret entry holds).
    pub fn pgp_key(&self) -> PgpKey {
        let home = self.gnupg_home();
        static KEYS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = KEYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let uid = format!("driftless test {n} <test-{n}@driftless.invalid>");
        let gpg = |args: &[&str]| {
            let out = Command::new("gpg")
                .env("GNUPGHOME", &home)
                .args(["--batch", "--yes", "--passphrase", ""])
                .args(args)
                .output()
                .expect("run gpg (Debian's gnupg)");
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        gpg(&["--quick-gen-key", &uid, "default", "default", "never"]);
        let listing = gpg(&["--with-colons", "--list-secret-keys", &uid]);
        let fingerprint = listing
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .expect("the new key's fingerprint");
        let armored_secret = gpg(&["--armor", "--export-secret-keys", &fingerprint]);
        PgpKey {
            fingerprint,
            armored_secret,
        }
    }

    fn gnupg_home(&self) -> PathBuf {
        let home = self.dir.path().join("gnupg");
        if !home.exists() {
            std::fs::create_dir(&home).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        home
    }

    /// `sops encrypt --age <recipient> [args]` of `plain`, written to a file named `name` (its
    /// extension tells sops the format, unless `args` say otherwise).
    pub fn encrypt(&self, recipient: &str, name: &str, plain: &str, args: &[&str]) -> String {
        self.encrypt_to(&["--age", recipient], name, plain, args)
    }

    /// `sops encrypt <keys> [args]`, with this helper's gpg keyring.
    pub fn encrypt_to(&self, keys: &[&str], name: &str, plain: &str, args: &[&str]) -> String {
        self.encrypt_env(keys, &[], name, plain, args)
    }

    /// `encrypt_to` with more environment variables (AWS credentials and endpoints).
    pub fn encrypt_env(
        &self,
        keys: &[&str],
        env: &[(&str, &str)],
        name: &str,
        plain: &str,
        args: &[&str],
    ) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, plain).unwrap();
        let out = Command::new(&self.bin)
            .current_dir(self.dir.path())
            .envs(env.iter().copied())
            .arg("encrypt")
            .args(keys)
            .args(args)
            .arg(&path)
            .env_remove("SOPS_AGE_KEY_FILE")
            .env("GNUPGHOME", self.gnupg_home())
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
