//! `driftless artifact verify`: the verification the source-controller does before it pulls
//! (cosign signatures found as `.sig` tags or Sigstore bundle referrers; public keys, or keyless
//! against a trusted root with identity rules; or Notary Project signatures under a trust
//! policy), for operators and CI.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;

use super::registry::{RegistryArgs, Target};
use crate::api::oci_repository::VerifiedSignature;
use crate::verify::notation::trust_policy::TrustPolicy;
use crate::verify::notation::{NotationPolicy, certificates_of};
use crate::verify::oci::{
    NotationError, NotationOutcome, VerifyError, verify_manifest, verify_notation,
};
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
    /// `cosign` (keys or keyless) or `notation` (`--trust-policy` and `--ca-cert`): what
    /// `spec.verify.provider` names (`--provider` is the registry's, for credentials).
    #[arg(long, value_enum, default_value_t = Provider::Cosign)]
    pub verify_provider: Provider,
    /// Notation: a `trustpolicy.json` (version 1.0), as in the verification Secret.
    #[arg(long, value_name = "FILE")]
    pub trust_policy: Option<PathBuf>,
    /// Notation: a trusted certificate (PEM or DER), for every `ca:`, `signingAuthority:` and
    /// `tsa:` store of the trust policy, as the Secret's `*.crt`/`*.pem` entries are; repeat
    /// for several.
    #[arg(long = "ca-cert", value_name = "FILE")]
    pub ca_certs: Vec<PathBuf>,
    /// `text` (for people) or `json` (what `status.verifiedSignature` holds, plus the URL).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Cosign,
    Notation,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

pub async fn run(args: VerifyArgs, registry: &RegistryArgs) -> anyhow::Result<()> {
    if args.verify_provider == Provider::Notation {
        return run_notation(args, registry).await;
    }
    if args.trust_policy.is_some() || !args.ca_certs.is_empty() {
        bail!("--trust-policy and --ca-cert are for --verify-provider notation");
    }
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

async fn run_notation(args: VerifyArgs, registry: &RegistryArgs) -> anyhow::Result<()> {
    let policy = notation_policy(&args)?;
    let target = Target::parse(&args.url)?;
    let client = registry.client(&target.url).await?;
    let digest = target.digest(&client).await?;
    let path = format!("{}/{}", target.url.registry, target.url.repository);
    let url = format!("oci://{}@{digest}", target.url);
    let outcome = verify_notation(&client, &target.url.repository, &digest, &path, &policy)
        .await
        .map_err(|e| match e {
            NotationError::Registry(e) => {
                anyhow::anyhow!("looking up signatures of {url}: {e}")
            }
            NotationError::Refused(why) => anyhow::anyhow!("{url} is not verified: {why}"),
        })?;
    match outcome {
        NotationOutcome::Verified(verified) => print(&url, &verified.summary(), args.output),
        // The controller pulls such an artifact (as Flux does) but reports no verification; a
        // check in CI fails, naming why.
        NotationOutcome::Ignored(why) => bail!("{url} is not verified: {why}"),
    }
}

/// The trust policy and trusted certificates from the flags.
fn notation_policy(args: &VerifyArgs) -> anyhow::Result<NotationPolicy> {
    if !args.keys.is_empty() || args.trusted_root.is_some() {
        bail!("--key and --trusted-root are for --verify-provider cosign");
    }
    let path = args
        .trust_policy
        .as_ref()
        .context("--verify-provider notation needs --trust-policy")?;
    let json = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let policy =
        TrustPolicy::parse(&json).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if args.ca_certs.is_empty() {
        bail!("--verify-provider notation needs at least one --ca-cert");
    }
    let mut certificates = Vec::new();
    for path in &args.ca_certs {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        certificates.extend(
            certificates_of(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        );
    }
    Ok(NotationPolicy {
        policy,
        certificates,
    })
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
