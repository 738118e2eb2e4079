//! Sigstore trusted roots (`trusted_root.json`): the certificate authorities that issue signing
//! certificates and the transparency logs that vouch for signatures, each trusted for a time range.

// The public-good Sigstore root is compiled in, so keyless verification never needs the network.

use std::sync::{Arc, LazyLock};

use base64::Engine;
use serde::Deserialize;

/// The public-good Sigstore instance as its TUF repository publishes it (sigstore/root-signing
/// `targets/trusted_root.json`, 2026-08-21): Fulcio, Rekor v1 (rekor.sigstore.dev) and v2
/// (log2025-1.rekor.sigstore.dev), the CT logs and the timestamp authority.
const PUBLIC_GOOD_JSON: &str = include_str!("public-good-trusted-root.json");

static PUBLIC_GOOD: LazyLock<Arc<TrustedRoot>> = LazyLock::new(|| {
    Arc::new(
        TrustedRoot::from_json(PUBLIC_GOOD_JSON.as_bytes())
            .expect("the embedded public-good trusted root parses"),
    )
});

#[derive(Debug, Clone, Default)]
pub struct TrustedRoot {
    pub logs: Vec<TransparencyLog>,
    pub authorities: Vec<CertificateAuthority>,
    /// Certificate-transparency logs, whose timestamps Fulcio embeds in its certificates.
    pub ct_logs: Vec<TransparencyLog>,
    /// RFC 3161 timestamp authorities (their signing certificate first in each chain).
    pub timestamp_authorities: Vec<CertificateAuthority>,
}

#[derive(Debug, Clone)]
pub struct TransparencyLog {
    pub base_url: String,
    /// DER SubjectPublicKeyInfo of the log's signing key.
    pub public_key: Vec<u8>,
    /// The log's id as entries name it: SHA-256 of its public key.
    pub key_id: Vec<u8>,
    pub valid_for: TimeRange,
}

#[derive(Debug, Clone)]
pub struct CertificateAuthority {
    pub uri: String,
    /// DER certificates, the issuer of signing certificates first and the root last.
    pub chain: Vec<Vec<u8>>,
    pub valid_for: TimeRange,
}

/// A validity window; an open end is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeRange {
    pub start: Option<jiff::Timestamp>,
    pub end: Option<jiff::Timestamp>,
}

impl TimeRange {
    pub fn contains(&self, t: jiff::Timestamp) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t <= e)
    }
}

impl TrustedRoot {
    pub fn public_good() -> Arc<TrustedRoot> {
        PUBLIC_GOOD.clone()
    }

    /// Parses the Sigstore `trusted_root.json` format (protobuf-specs `TrustedRoot`, JSON).
    pub fn from_json(bytes: &[u8]) -> Result<TrustedRoot, String> {
        let doc: wire::TrustedRoot = serde_json::from_slice(bytes)
            .map_err(|e| format!("trusted_root.json is not a Sigstore trusted root: {e}"))?;
        if !doc.media_type.is_empty()
            && !doc
                .media_type
                .starts_with("application/vnd.dev.sigstore.trustedroot")
        {
            return Err(format!(
                "trusted_root.json has media type '{}', not a Sigstore trusted root",
                doc.media_type
            ));
        }
        let logs = logs_of(doc.tlogs, "tlogs")?;
        // As sigstore-go: a transparency-log key with no start of validity is no key to trust.
        if let Some(log) = logs.iter().find(|l| l.valid_for.start.is_none()) {
            return Err(format!(
                "trusted_root.json: the key of log '{}' has no validFor.start",
                log.base_url
            ));
        }
        let ct_logs = logs_of(doc.ctlogs, "ctlogs")?;
        let timestamp_authorities = authorities_of(doc.timestamp_authorities)?;
        let authorities = authorities_of(doc.certificate_authorities)?;
        if logs.is_empty() && authorities.is_empty() {
            return Err(
                "trusted_root.json lists no certificate authorities and no transparency logs"
                    .into(),
            );
        }
        Ok(TrustedRoot {
            logs,
            authorities,
            ct_logs,
            timestamp_authorities,
        })
    }

    pub fn log(&self, key_id: &[u8]) -> Option<&TransparencyLog> {
        self.logs.iter().find(|l| l.key_id == key_id)
    }
}

/// Transparency or certificate-transparency logs (`field` names them in errors).
fn logs_of(list: Vec<wire::Log>, field: &str) -> Result<Vec<TransparencyLog>, String> {
    list.into_iter()
        .map(|log| {
            Ok(TransparencyLog {
                key_id: decode(&log.log_id.key_id, &format!("{field}[].logId.keyId"))?,
                public_key: decode(
                    &log.public_key.raw_bytes,
                    &format!("{field}[].publicKey.rawBytes"),
                )?,
                valid_for: log.public_key.valid_for.parse()?,
                base_url: log.base_url,
            })
        })
        .collect()
}

/// Certificate or timestamp authorities: each with a chain and a validity.
fn authorities_of(list: Vec<wire::Authority>) -> Result<Vec<CertificateAuthority>, String> {
    list.into_iter()
        .map(|ca| {
            let chain = ca
                .cert_chain
                .certificates
                .iter()
                .map(|c| decode(&c.raw_bytes, "certChain"))
                .collect::<Result<Vec<_>, String>>()?;
            if chain.is_empty() {
                return Err(format!("authority '{}' has no certificates", ca.uri));
            }
            Ok(CertificateAuthority {
                uri: ca.uri,
                chain,
                valid_for: ca.valid_for.parse()?,
            })
        })
        .collect()
}

fn decode(b64: &str, field: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("trusted_root.json: {field} is not base64: {e}"))
}

/// The JSON shapes of protobuf-specs' `TrustedRoot` (only what verification reads).
mod wire {
    use super::*;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TrustedRoot {
        #[serde(default)]
        pub media_type: String,
        #[serde(default)]
        pub tlogs: Vec<Log>,
        #[serde(default)]
        pub certificate_authorities: Vec<Authority>,
        #[serde(default)]
        pub ctlogs: Vec<Log>,
        #[serde(default)]
        pub timestamp_authorities: Vec<Authority>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Log {
        #[serde(default)]
        pub base_url: String,
        pub public_key: PublicKey,
        pub log_id: LogId,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PublicKey {
        pub raw_bytes: String,
        #[serde(default)]
        pub valid_for: Range,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct LogId {
        pub key_id: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Authority {
        #[serde(default)]
        pub uri: String,
        pub cert_chain: Chain,
        #[serde(default)]
        pub valid_for: Range,
    }

    #[derive(Deserialize)]
    pub struct Chain {
        #[serde(default)]
        pub certificates: Vec<Raw>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Raw {
        pub raw_bytes: String,
    }

    #[derive(Deserialize, Default)]
    pub struct Range {
        pub start: Option<String>,
        pub end: Option<String>,
    }

    impl Range {
        pub fn parse(&self) -> Result<TimeRange, String> {
            let at = |s: &Option<String>| {
                s.as_deref()
                    .map(|s| {
                        s.parse::<jiff::Timestamp>()
                            .map_err(|e| format!("trusted_root.json: bad time '{s}': {e}"))
                    })
                    .transpose()
            };
            Ok(TimeRange {
                start: at(&self.start)?,
                end: at(&self.end)?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_public_good_root_lists_fulcio_and_rekor() {
        let root = TrustedRoot::public_good();
        assert!(
            root.authorities
                .iter()
                .any(|a| a.uri == "https://fulcio.sigstore.dev")
        );
        let rekor = root
            .logs
            .iter()
            .find(|l| l.base_url == "https://rekor.sigstore.dev")
            .expect("rekor");
        use sha2::Digest;
        assert_eq!(
            sha2::Sha256::digest(&rekor.public_key).as_slice(),
            rekor.key_id
        );
    }

    #[test]
    fn the_embedded_root_knows_rekor_v2_and_the_timestamp_authority() {
        let root = TrustedRoot::public_good();
        assert!(
            root.logs
                .iter()
                .any(|l| l.base_url == "https://log2025-1.rekor.sigstore.dev")
        );
        assert!(
            root.timestamp_authorities
                .iter()
                .any(|t| t.uri.starts_with("https://timestamp.sigstore.dev"))
        );
        assert!(root.ct_logs.iter().any(|l| l.base_url.ends_with("/2022")));
    }

    #[test]
    fn time_ranges_are_inclusive_and_open_ended() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let r = TimeRange {
            start: Some(t("2024-01-01T00:00:00Z")),
            end: None,
        };
        assert!(r.contains(t("2024-01-01T00:00:00Z")));
        assert!(r.contains(t("2099-01-01T00:00:00Z")));
        assert!(!r.contains(t("2023-12-31T23:59:59Z")));
    }

    #[test]
    fn refuses_documents_that_trust_nothing_or_are_not_roots() {
        assert!(
            TrustedRoot::from_json(b"{}")
                .unwrap_err()
                .contains("no certificate")
        );
        assert!(TrustedRoot::from_json(b"[1]").is_err());
        let other = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#;
        assert!(
            TrustedRoot::from_json(other)
                .unwrap_err()
                .contains("media type")
        );
    }
}
