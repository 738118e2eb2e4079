//! `driftless artifact verify`: the verification the source-controller does before it pulls
//! (cosign signatures found as `.sig` tags or Sigstore bundle referrers; public keys, or keyless
//! against a trusted root with identity rules), for operators and CI.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;

use super::registry::{RegistryArgs, Target};
use crate::api::oci_repository::VerifiedSignature;
use crate::verify::oci::{VerifyError, verify_manifest};
use crate::verify::sigstore::TrustedRoot;
use crate::verify::{IdentityMatch, NamedKey, Policy, Unverified};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// What to verify: `oci://<host>/<repository>:<tag>` or `...@sha256:<hex>`.
    pub url: String,
    /// A PEM public key (as `cosign generate-key-pair` writes it) that may have signed the
    /// artifact; repeat for several. Without any key, verification is keyless.
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// Keyless: the certificate identity (subject alternative name), exactly.
    #[arg(long, conflicts_with = "certificate_identity_regexp")]
    pub certificate_identity: Option<String>,
    /// Keyless: a regular expression the certificate identity must match (unanchored, as
    /// Flux's `matchOIDCIdentity.subject`).
    #[arg(long)]
    pub certificate_identity_regexp: Option<String>,
    /// Keyless: the OIDC issuer recorded in the certificate, exactly.
    #[arg(long, conflicts_with = "certificate_oidc_issuer_regexp")]
    pub certificate_oidc_issuer: Option<String>,
    /// Keyless: a regular expression the OIDC issuer must match (unanchored).
    #[arg(long)]
    pub certificate_oidc_issuer_regexp: Option<String>,
    /// Keyless: a Sigstore `trusted_root.json` (default: the public-good instance's, compiled
    /// in; no network is used either way).
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
    /// `text` (for people) or `json` (what `status.verifiedSignature` holds, plus the URL).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

pub async fn run(args: VerifyArgs, registry: &RegistryArgs) -> anyhow::Result<()> {
    let policy = policy(&args)?;
    let target = Target::parse(&args.url)?;
    let client = registry.client(&target.url).await?;
    let digest = target.digest(&client).await?;
    let verified = verify_manifest(&client, &target.url.repository, &digest, &policy)
        .await
        .map_err(|e| match e {
            VerifyError::Registry(e) => {
                anyhow::anyhow!("looking up signatures of oci://{}@{digest}: {e}", target.url)
            }
            VerifyError::Unverified(Unverified::NoSignatures) => anyhow::anyhow!(
                "oci://{}@{digest} is not verified: it has no signature (no cosign signature tag, no Sigstore bundle referrer)",
                target.url
            ),
            VerifyError::Unverified(Unverified::Rejected(reasons)) => anyhow::anyhow!(
                "oci://{}@{digest} is not verified: {}",
                target.url,
                reasons.join("; ")
            ),
        })?;
    let url = format!("oci://{}@{digest}", target.url);
    print(&url, &verified.summary(), args.output)
}

/// The keys, or the trusted root and identity rule, from the flags.
fn policy(args: &VerifyArgs) -> anyhow::Result<Policy> {
    let keyless_flags = args.certificate_identity.is_some()
        || args.certificate_identity_regexp.is_some()
        || args.certificate_oidc_issuer.is_some()
        || args.certificate_oidc_issuer_regexp.is_some()
        || args.trusted_root.is_some();
    if !args.keys.is_empty() {
        if keyless_flags {
            bail!(
                "--key and the keyless flags (--certificate-*, --trusted-root) exclude each other"
            );
        }
        return args
            .keys
            .iter()
            .map(|path| {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| path.display().to_string());
                NamedKey::from_pem(&name, &pem)
                    .with_context(|| format!("{} holds no PEM public key", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Policy::Keys);
    }
    let rule = |exact: &Option<String>, regexp: &Option<String>, flag: &str| match (exact, regexp) {
        (Some(exact), _) => Ok(format!("^{}$", regex::escape(exact))),
        (None, Some(regexp)) => Ok(regexp.clone()),
        (None, None) => Err(anyhow::anyhow!(
            "keyless verification needs --{flag} or --{flag}-regexp (or give --key)"
        )),
    };
    let subject = rule(
        &args.certificate_identity,
        &args.certificate_identity_regexp,
        "certificate-identity",
    )?;
    let issuer = rule(
        &args.certificate_oidc_issuer,
        &args.certificate_oidc_issuer_regexp,
        "certificate-oidc-issuer",
    )?;
    let identity = IdentityMatch::new(&issuer, &subject).map_err(anyhow::Error::msg)?;
    let root = match &args.trusted_root {
        Some(path) => {
            let json =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Arc::new(
                TrustedRoot::from_json(&json)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            )
        }
        None => TrustedRoot::public_good(),
    };
    Ok(Policy::Keyless {
        root,
        identities: vec![identity],
    })
}

fn print(url: &str, signature: &VerifiedSignature, output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        let mut json = serde_json::to_value(signature)?;
        json["url"] = serde_json::Value::String(url.to_string());
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!("verified:  {url}");
    println!("signature: {}", signature.format);
    match (&signature.key, &signature.subject, &signature.issuer) {
        (Some(key), _, _) => println!("signer:    key {key}"),
        (None, Some(subject), Some(issuer)) => {
            println!("signer:    {subject} (issuer {issuer})")
        }
        _ => {}
    }
    if let (Some(log), Some(index)) = (&signature.log_url, signature.log_index) {
        let at = signature
            .integrated_time
            .as_deref()
            .map(|t| format!(", integrated {t}"))
            .unwrap_or_default();
        println!("logged:    {log} index {index}{at}");
    }
    if let Some(at) = &signature.timestamped_at {
        println!("timestamp: {at}");
    }
    Ok(())
}
