//! Notary Project signature envelopes (notaryproject/specifications, `signature-envelope-jws.md`
//! and `signature-envelope-cose.md`): a JWS in flattened JSON serialization
//! (`application/jose+json`) or a `COSE_Sign1_Tagged` (`application/cose`), each holding the
//! signed descriptor of the artifact, the signing scheme and time, the certificate chain and an
//! optional RFC 3161 countersignature. `open` checks the envelope's integrity: its critical
//! headers, that its algorithm is the one its certificate's key dictates, and the signature.
//! The COSE structures are read with `coset`; the signature is checked with aws-lc-rs.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use coset::cbor::value::Value;
use coset::{
    CoseSign1, Label, RegisteredLabel, RegisteredLabelWithPrivate, TaggedCborSerializable, iana,
};
use serde::Deserialize;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

pub const JWS_MEDIA_TYPE: &str = "application/jose+json";
pub const COSE_MEDIA_TYPE: &str = "application/cose";
const PAYLOAD_CONTENT_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";

const SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
const SIGNING_TIME: &str = "io.cncf.notary.signingTime";
const AUTHENTIC_SIGNING_TIME: &str = "io.cncf.notary.authenticSigningTime";
const EXPIRY: &str = "io.cncf.notary.expiry";
const VERIFICATION_PLUGIN: &str = "io.cncf.notary.verificationPlugin";
const VERIFICATION_PLUGIN_MIN_VERSION: &str = "io.cncf.notary.verificationPluginMinVersion";
const SIGNING_AGENT: &str = "io.cncf.notary.signingAgent";
const TIMESTAMP_SIGNATURE: &str = "io.cncf.notary.timestampSignature";

/// Most certificates one chain may hold.
const MAX_CHAIN: usize = 10;

/// The signing schemes of the Notary Project.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SigningScheme {
    /// `notary.x509`: the signing time is the signer's claim; a timestamp makes it authentic.
    X509,
    /// `notary.x509.signingAuthority`: a signing authority attests the time.
    SigningAuthority,
}

/// The descriptor of what was signed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetArtifact {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

/// An envelope whose signature verified with its leaf certificate's key.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub target: TargetArtifact,
    /// DER certificates, the signing certificate first.
    pub chain: Vec<Vec<u8>>,
    pub scheme: SigningScheme,
    pub signing_time: jiff::Timestamp,
    pub expiry: Option<jiff::Timestamp>,
    /// The signature value (what an RFC 3161 countersignature stamps).
    pub signature: Vec<u8>,
    /// A DER RFC 3161 timestamp token over the signature.
    pub timestamp: Option<Vec<u8>>,
    pub signing_agent: Option<String>,
}

/// Reads and checks the integrity of an envelope of `media_type`.
pub fn open(media_type: &str, bytes: &[u8]) -> Result<Envelope, String> {
    match media_type {
        JWS_MEDIA_TYPE => open_jws(bytes),
        COSE_MEDIA_TYPE => open_cose(bytes),
        other => Err(format!(
            "signature envelope type '{}' is not supported",
            crate::util::truncate(other, 80)
        )),
    }
}

/// The signed attributes both envelope formats carry, before they are checked.
struct Signed {
    algorithm: Algorithm,
    critical: Vec<String>,
    content_type: Option<String>,
    scheme: Option<String>,
    signing_time: Option<jiff::Timestamp>,
    authentic_signing_time: Option<jiff::Timestamp>,
    expiry: Option<jiff::Timestamp>,
    /// The names of every protected header present.
    headers: Vec<String>,
}

/// The signature algorithms of the Notary Project, each bound to one key type and size.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Algorithm {
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
}

impl Algorithm {
    fn from_jws(name: &str) -> Result<Algorithm, String> {
        Ok(match name {
            "PS256" => Algorithm::Ps256,
            "PS384" => Algorithm::Ps384,
            "PS512" => Algorithm::Ps512,
            "ES256" => Algorithm::Es256,
            "ES384" => Algorithm::Es384,
            "ES512" => Algorithm::Es512,
            other => {
                return Err(format!(
                    "signature algorithm '{}' is not supported",
                    crate::util::truncate(other, 40)
                ));
            }
        })
    }

    fn from_cose(alg: &coset::Algorithm) -> Result<Algorithm, String> {
        use iana::Algorithm as A;
        Ok(match alg {
            RegisteredLabelWithPrivate::Assigned(A::PS256) => Algorithm::Ps256,
            RegisteredLabelWithPrivate::Assigned(A::PS384) => Algorithm::Ps384,
            RegisteredLabelWithPrivate::Assigned(A::PS512) => Algorithm::Ps512,
            RegisteredLabelWithPrivate::Assigned(A::ES256) => Algorithm::Es256,
            RegisteredLabelWithPrivate::Assigned(A::ES384) => Algorithm::Es384,
            RegisteredLabelWithPrivate::Assigned(A::ES512) => Algorithm::Es512,
            other => return Err(format!("signature algorithm {other:?} is not supported")),
        })
    }

    /// JWS and COSE both encode ECDSA signatures as fixed-size `r || s`.
    fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            Algorithm::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Algorithm::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
            Algorithm::Es512 => &signature::ECDSA_P521_SHA512_FIXED,
        }
    }

    /// The algorithm the Notary Project assigns to a key: RSA 2048/3072/4096 bits or the
    /// NIST curves P-256/384/521, nothing else.
    fn for_key(cert: &X509Certificate<'_>) -> Result<Algorithm, String> {
        const P256: &str = "1.2.840.10045.3.1.7";
        const P384: &str = "1.3.132.0.34";
        const P521: &str = "1.3.132.0.35";
        let spki = cert.public_key();
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => match rsa.key_size() {
                2048 => Ok(Algorithm::Ps256),
                3072 => Ok(Algorithm::Ps384),
                4096 => Ok(Algorithm::Ps512),
                bits => Err(format!("RSA key size {bits} bits is not supported")),
            },
            Ok(PublicKey::EC(_)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|oid| oid.to_id_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    P256 => Ok(Algorithm::Es256),
                    P384 => Ok(Algorithm::Es384),
                    P521 => Ok(Algorithm::Es512),
                    _ => Err(format!("EC curve '{curve}' is not supported")),
                }
            }
            _ => Err("the signing certificate's key is neither RSA nor EC".into()),
        }
    }
}

/// The checks shared by both formats, once the signature bytes and their input are known.
fn seal(
    signed: Signed,
    payload: &[u8],
    chain: Vec<Vec<u8>>,
    signature: Vec<u8>,
    signing_input: &[u8],
    timestamp: Option<Vec<u8>>,
    signing_agent: Option<String>,
) -> Result<Envelope, String> {
    if signed.content_type.as_deref() != Some(PAYLOAD_CONTENT_TYPE) {
        return Err(format!(
            "the payload content type is {:?}, not '{PAYLOAD_CONTENT_TYPE}'",
            signed.content_type.as_deref().unwrap_or("absent")
        ));
    }
    let scheme = match signed.scheme.as_deref() {
        Some("notary.x509") => SigningScheme::X509,
        Some("notary.x509.signingAuthority") => SigningScheme::SigningAuthority,
        other => return Err(format!("signing scheme {other:?} is not supported")),
    };
    check_critical(&signed, scheme)?;
    let signing_time = match scheme {
        SigningScheme::X509 => signed.signing_time,
        SigningScheme::SigningAuthority => signed.authentic_signing_time,
    }
    .ok_or("signing-time not present")?;
    if signed.expiry.is_some_and(|expiry| expiry <= signing_time) {
        return Err("expiry cannot be equal or before the signing time".into());
    }
    if chain.is_empty() || chain.len() > MAX_CHAIN {
        return Err(format!(
            "the envelope holds {} certificates, not 1 to {MAX_CHAIN}",
            chain.len()
        ));
    }
    let (_, leaf) = X509Certificate::from_der(&chain[0])
        .map_err(|e| format!("the signing certificate is not valid X.509: {e}"))?;
    let expected = Algorithm::for_key(&leaf)?;
    if signed.algorithm != expected {
        return Err(format!(
            "the signature algorithm {:?} does not match the signing key, which requires {expected:?}",
            signed.algorithm
        ));
    }
    UnparsedPublicKey::new(signed.algorithm.verification(), leaf.public_key().raw)
        .verify(signing_input, &signature)
        .map_err(|_| "the signature does not verify with the signing certificate's key")?;
    let target = serde_json::from_slice::<Payload>(payload)
        .map_err(|e| format!("the signed payload is not a Notary Project payload: {e}"))?
        .target_artifact;
    Ok(Envelope {
        target,
        chain,
        scheme,
        signing_time,
        expiry: signed.expiry,
        signature,
        timestamp,
        signing_agent,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    target_artifact: TargetArtifact,
}

/// The headers the spec makes critical must be marked so, and what is marked critical must be
/// there (Notary's rules). A verification plugin is refused: driftless runs none, as Flux runs
/// none.
fn check_critical(signed: &Signed, scheme: SigningScheme) -> Result<(), String> {
    let present = |name: &str| signed.headers.iter().any(|h| h == name);
    if present(VERIFICATION_PLUGIN) || present(VERIFICATION_PLUGIN_MIN_VERSION) {
        return Err("the signature requires a verification plugin, which is not supported".into());
    }
    let mut required = vec![SIGNING_SCHEME];
    if signed.expiry.is_some() {
        required.push(EXPIRY);
    }
    if scheme == SigningScheme::SigningAuthority {
        required.push(AUTHENTIC_SIGNING_TIME);
    }
    let unmarked: Vec<&str> = required
        .into_iter()
        .filter(|name| !signed.critical.iter().any(|c| c == name))
        .collect();
    if !unmarked.is_empty() {
        return Err(format!(
            "these required headers are not marked as critical: {unmarked:?}"
        ));
    }
    if let Some(absent) = signed.critical.iter().find(|c| !present(c)) {
        return Err(format!(
            "'{}' header is marked critical but not present",
            crate::util::truncate(absent, 80)
        ));
    }
    Ok(())
}

// ---- JWS -------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Jws {
    payload: String,
    protected: String,
    #[serde(default)]
    header: JwsHeader,
    signature: String,
}

#[derive(Deserialize, Default)]
struct JwsHeader {
    #[serde(default)]
    x5c: Vec<String>,
    #[serde(rename = "io.cncf.notary.signingAgent")]
    signing_agent: Option<String>,
    #[serde(rename = "io.cncf.notary.timestampSignature")]
    timestamp: Option<String>,
}

#[derive(Deserialize)]
struct JwsProtected {
    alg: String,
    cty: Option<String>,
    #[serde(default)]
    crit: Vec<String>,
    #[serde(rename = "io.cncf.notary.signingScheme")]
    scheme: Option<String>,
    #[serde(rename = "io.cncf.notary.signingTime")]
    signing_time: Option<String>,
    #[serde(rename = "io.cncf.notary.authenticSigningTime")]
    authentic_signing_time: Option<String>,
    #[serde(rename = "io.cncf.notary.expiry")]
    expiry: Option<String>,
}

fn open_jws(bytes: &[u8]) -> Result<Envelope, String> {
    let jws: Jws = serde_json::from_slice(bytes)
        .map_err(|e| format!("the JWS envelope is not flattened JWS JSON: {e}"))?;
    let url = |field: &str, value: &str| {
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|e| format!("the JWS {field} is not base64url: {e}"))
    };
    let protected_json = url("protected header", &jws.protected)?;
    let header: JwsProtected = serde_json::from_slice(&protected_json)
        .map_err(|e| format!("the JWS protected header is invalid: {e}"))?;
    let time = |name: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|t| {
                t.parse::<jiff::Timestamp>()
                    .map_err(|e| format!("'{name}' is not an RFC 3339 time: {e}"))
            })
            .transpose()
    };
    let headers =
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&protected_json)
            .map_err(|e| format!("the JWS protected header is invalid: {e}"))?
            .keys()
            .cloned()
            .collect();
    let signed = Signed {
        algorithm: Algorithm::from_jws(&header.alg)?,
        critical: header.crit.clone(),
        content_type: header.cty.clone(),
        scheme: header.scheme.clone(),
        signing_time: time(SIGNING_TIME, &header.signing_time)?,
        authentic_signing_time: time(AUTHENTIC_SIGNING_TIME, &header.authentic_signing_time)?,
        expiry: time(EXPIRY, &header.expiry)?,
        headers,
    };
    let payload = url("payload", &jws.payload)?;
    let signature = url("signature", &jws.signature)?;
    let chain = jws
        .header
        .x5c
        .iter()
        .take(MAX_CHAIN + 1)
        .map(|c| {
            STANDARD
                .decode(c)
                .map_err(|e| format!("an x5c certificate is not base64: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let timestamp = jws
        .header
        .timestamp
        .as_deref()
        .map(|t| {
            STANDARD
                .decode(t)
                .map_err(|e| format!("the timestamp countersignature is not base64: {e}"))
        })
        .transpose()?;
    let signing_input = format!("{}.{}", jws.protected, jws.payload);
    seal(
        signed,
        &payload,
        chain,
        signature,
        signing_input.as_bytes(),
        timestamp,
        jws.header.signing_agent,
    )
}

// ---- COSE ------------------------------------------------------------------------------

fn open_cose(bytes: &[u8]) -> Result<Envelope, String> {
    let sign1 = CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| format!("the COSE envelope is not a tagged COSE_Sign1: {e}"))?;
    let protected = &sign1.protected.header;
    let text = |label: &str| {
        protected.rest.iter().find_map(|(l, v)| match l {
            Label::Text(t) if t == label => Some(v),
            _ => None,
        })
    };
    let time = |label: &str| -> Result<Option<jiff::Timestamp>, String> {
        let Some(value) = text(label) else {
            return Ok(None);
        };
        let seconds = match value {
            Value::Tag(1, inner) => inner.as_integer().and_then(|i| i64::try_from(i).ok()),
            _ => None,
        }
        .ok_or_else(|| format!("'{label}' is not a CBOR epoch time (tag 1)"))?;
        jiff::Timestamp::from_second(seconds)
            .map(Some)
            .map_err(|e| format!("'{label}' is out of range: {e}"))
    };
    let critical = protected
        .crit
        .iter()
        .map(|c| match c {
            RegisteredLabelWithPrivate::Text(t) => t.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    let content_type = match &protected.content_type {
        Some(RegisteredLabel::Text(t)) => Some(t.clone()),
        Some(other) => Some(format!("{other:?}")),
        None => None,
    };
    let headers = protected
        .rest
        .iter()
        .map(|(label, _)| match label {
            Label::Text(t) => t.clone(),
            Label::Int(i) => i.to_string(),
        })
        .collect();
    let signed = Signed {
        algorithm: Algorithm::from_cose(
            protected
                .alg
                .as_ref()
                .ok_or("the COSE envelope names no algorithm")?,
        )?,
        critical,
        content_type,
        scheme: text(SIGNING_SCHEME)
            .and_then(|v| v.as_text())
            .map(str::to_string),
        signing_time: time(SIGNING_TIME)?,
        authentic_signing_time: time(AUTHENTIC_SIGNING_TIME)?,
        expiry: time(EXPIRY)?,
        headers,
    };
    let unprotected = |label: &Label| {
        sign1
            .unprotected
            .rest
            .iter()
            .find_map(|(l, v)| (l == label).then_some(v))
    };
    let chain = match unprotected(&Label::Int(iana::HeaderParameter::X5Chain as i64)) {
        Some(Value::Array(many)) => many
            .iter()
            .take(MAX_CHAIN + 1)
            .map(|v| {
                v.as_bytes()
                    .cloned()
                    .ok_or("an x5chain entry is not a byte string")
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("the COSE x5chain is not an array of certificates".into()),
        None => Vec::new(),
    };
    let timestamp = match unprotected(&Label::Text(TIMESTAMP_SIGNATURE.into())) {
        Some(Value::Bytes(token)) => Some(token.clone()),
        Some(_) => return Err("the timestamp countersignature is not a byte string".into()),
        None => None,
    };
    let signing_agent = unprotected(&Label::Text(SIGNING_AGENT.into()))
        .and_then(|v| v.as_text())
        .map(str::to_string);
    let payload = sign1
        .payload
        .as_deref()
        .ok_or("the COSE envelope has a detached payload")?;
    let signing_input = sign1.tbs_data(b"");
    seal(
        signed,
        payload,
        chain,
        sign1.signature.clone(),
        &signing_input,
        timestamp,
        signing_agent,
    )
}
