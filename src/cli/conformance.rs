//! `driftless sigstore-conformance`: the client protocol of sigstore-conformance
//! (github.com/sigstore/sigstore-conformance, `docs/cli_protocol.md`), for verification only,
//! so that the suite's bundle-verify cases run against the verifier the controller uses.
//! Exit status 0: verified; non-zero: refused (the reason on stderr).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::util::pem_blocks;
use crate::verify::IdentityMatch;
use crate::verify::bundle;
use crate::verify::sigstore::{
    PUBLIC_GOOD_TRUSTED_ROOT, STAGING_TRUSTED_ROOT, Signed, Signer, TrustedRoot, sha256_digest,
};

#[derive(Subcommand, Debug)]
pub enum ConformanceCommand {
    /// Verify a Sigstore bundle over a file or a `sha256:` digest.
    VerifyBundle(VerifyBundleArgs),
}

#[derive(Args, Debug)]
pub struct VerifyBundleArgs {
    /// Use the staging instance's trusted root (compiled in) when none is given.
    #[arg(long)]
    pub staging: bool,
    #[arg(long)]
    pub bundle: PathBuf,
    #[arg(long, requires = "certificate_oidc_issuer", conflicts_with = "key")]
    pub certificate_identity: Option<String>,
    #[arg(long, requires = "certificate_identity")]
    pub certificate_oidc_issuer: Option<String>,
    /// A PEM public key (managed-key bundles).
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long)]
    pub trusted_root: Option<PathBuf>,
    /// The artifact: a file, or `sha256:<hex>` that is not a path on disk (for an in-toto
    /// statement, the digest of one of its subjects).
    pub file_or_digest: String,
}

pub fn run(command: ConformanceCommand) -> anyhow::Result<()> {
    let ConformanceCommand::VerifyBundle(args) = command;
    let root = match &args.trusted_root {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None if args.staging => STAGING_TRUSTED_ROOT.as_bytes().to_vec(),
        None => PUBLIC_GOOD_TRUSTED_ROOT.as_bytes().to_vec(),
    };
    let root = TrustedRoot::from_json(&root).map_err(anyhow::Error::msg)?;
    let json = std::fs::read(&args.bundle)
        .with_context(|| format!("reading {}", args.bundle.display()))?;
    let bundle = bundle::parse(&json).map_err(anyhow::Error::msg)?;
    let key = match &args.key {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let Some(der) = pem_blocks(&pem, "PUBLIC KEY").into_iter().next() else {
                bail!("{} holds no PEM public key", path.display());
            };
            Some(der)
        }
        None => None,
    };
    let rules = match (&args.certificate_identity, &args.certificate_oidc_issuer) {
        (Some(identity), Some(issuer)) => vec![IdentityMatch::exact(issuer, identity)],
        _ => Vec::new(),
    };
    let signer = match &key {
        Some(der) => Signer::Key(der),
        None if rules.is_empty() => {
            bail!("give --key, or --certificate-identity and --certificate-oidc-issuer")
        }
        None => Signer::Identity(&rules),
    };
    let is_path = std::path::Path::new(&args.file_or_digest).exists();
    let artifact;
    let signed = match sha256_digest(&args.file_or_digest).filter(|_| !is_path) {
        Some(digest) => Signed::Sha256(digest),
        None => {
            artifact = std::fs::read(&args.file_or_digest)
                .with_context(|| format!("reading {}", args.file_or_digest))?;
            Signed::Bytes(&artifact)
        }
    };
    let proved = root
        .verify(&bundle, signed, signer)
        .map_err(anyhow::Error::msg)?;
    match proved.identity {
        Some((subject, issuer)) => println!("verified: signed by {subject} (issuer {issuer})"),
        None => println!("verified: signed by the key"),
    }
    Ok(())
}
