//! Amazon ECR logins: which hosts are ECR registries, and the `AWS:<password>` login that
//! ECR's `GetAuthorizationToken` gives for AWS keys.

use base64::Engine;
use serde::Deserialize;

use super::auth::{self, RegistryLogin, Token, cached_token};
use super::aws::{AwsAuth, StaticKeys, send_signed, session_keys};

/// The DNS suffixes of the partitions ECR registries live in (as Flux's registry pattern
/// lists them), and the dual-stack `on.aws`.
const PARTITION_SUFFIXES: [&str; 7] = [
    "amazonaws.com",
    "amazonaws.com.cn",
    "amazonaws.eu",
    "sc2s.sgov.gov",
    "c2s.ic.gov",
    "cloud.adc-e.uk",
    "csp.hci.ic.gov",
];

/// The public gallery's registry host.
pub const PUBLIC_REGISTRY: &str = "public.ecr.aws";
/// ECR Public's API lives in one region.
const PUBLIC_REGION: &str = "us-east-1";

/// What the hosts an `aws` OCIRepository may name look like, for messages.
pub const HOST_PATTERNS: &str = "<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn] (or another AWS partition's suffix), <account>.dkr-ecr.<region>.on.aws, or public.ecr.aws";

/// An ECR registry, as its host names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcrRegistry {
    Private { region: String, api_suffix: String },
    Public,
}

impl EcrRegistry {
    /// The registry a host (`host`, no port: ECR listens on 443 only) names, if it is ECR's.
    ///
    /// Flux matches an unanchored pattern, which also accepts hosts such as
    /// `1.dkr.ecr.us-east-1.amazonaws.com.example.net`; here the whole host must be ECR's,
    /// since the login goes wherever the host points.
    pub fn parse(host: &str) -> Option<EcrRegistry> {
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        if host == PUBLIC_REGISTRY {
            return Some(EcrRegistry::Public);
        }
        let labels: Vec<&str> = host.split('.').collect();
        let account =
            |l: &str| !l.is_empty() && l.len() <= 12 && l.bytes().all(|b| b.is_ascii_digit());
        match labels.as_slice() {
            [acct, "dkr-ecr", region, "on", "aws"] if account(acct) => {
                // Dual-stack registries use the partition's regular API host.
                let suffix = match region.starts_with("cn-") {
                    true => "amazonaws.com.cn",
                    false => "amazonaws.com",
                };
                private(region, suffix)
            }
            [acct, "dkr", "ecr" | "ecr-fips", region, suffix @ ..] if account(acct) => {
                let suffix = suffix.join(".");
                PARTITION_SUFFIXES
                    .contains(&suffix.as_str())
                    .then(|| private(region, &suffix))
                    .flatten()
            }
            _ => None,
        }
    }

    /// The region the login is made in (and STS is called in).
    pub fn region(&self) -> &str {
        match self {
            EcrRegistry::Private { region, .. } => region,
            EcrRegistry::Public => PUBLIC_REGION,
        }
    }

    /// The API endpoint: `AWS_ENDPOINT_URL_ECR` (`AWS_ENDPOINT_URL_ECR_PUBLIC`) when the
    /// operator sets it, as the AWS SDKs read it, else the region's own.
    pub fn api_endpoint(&self) -> String {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match self {
            EcrRegistry::Private { region, api_suffix } => env("AWS_ENDPOINT_URL_ECR")
                .unwrap_or_else(|| format!("https://api.ecr.{region}.{api_suffix}")),
            EcrRegistry::Public => env("AWS_ENDPOINT_URL_ECR_PUBLIC")
                .unwrap_or_else(|| format!("https://api.ecr-public.{PUBLIC_REGION}.amazonaws.com")),
        }
    }

    /// The service's signing name, and the JSON 1.1 target of GetAuthorizationToken.
    fn operation(&self) -> (&'static str, &'static str) {
        match self {
            EcrRegistry::Private { .. } => (
                "ecr",
                "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
            ),
            EcrRegistry::Public => ("ecr-public", "SpencerFrontendService.GetAuthorizationToken"),
        }
    }
}

fn private(region: &str, suffix: &str) -> Option<EcrRegistry> {
    super::endpoints::is_aws_region(region).then(|| EcrRegistry::Private {
        region: region.to_string(),
        api_suffix: suffix.to_string(),
    })
}

/// The login for `registry`, made with the keys `auth` stands for (fetched through `http`);
/// cached per identity (`AwsAuth::identity_key`), registry and endpoint until shortly before
/// ECR says it lapses.
pub async fn login(
    http: &reqwest::Client,
    registry: &EcrRegistry,
    endpoint: &str,
    auth: &AwsAuth,
) -> Result<RegistryLogin, String> {
    let kind: &[u8] = match registry {
        EcrRegistry::Private { .. } => b"private",
        EcrRegistry::Public => b"public",
    };
    let key = auth::cache_key(&[
        b"ecr",
        auth.identity_key().as_bytes(),
        kind,
        registry.region().as_bytes(),
        endpoint.as_bytes(),
    ]);
    let value = cached_token(&key, || async {
        let keys = session_keys(auth, http, registry.region())
            .await?
            .ok_or("no AWS credentials")?;
        authorization_token(http, registry, endpoint, &keys).await
    })
    .await?;
    let (username, password): (String, String) =
        serde_json::from_str(&value).map_err(|e| e.to_string())?;
    Ok(RegistryLogin { username, password })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorizationData {
    authorization_token: Option<String>,
    /// Seconds since the epoch, as the JSON protocols send timestamps.
    expires_at: Option<f64>,
}

/// GetAuthorizationToken, signed with `keys`; the token decoded into a cache entry.
async fn authorization_token(
    http: &reqwest::Client,
    registry: &EcrRegistry,
    endpoint: &str,
    keys: &StaticKeys,
) -> Result<Token, String> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|e| format!("invalid ECR endpoint '{endpoint}': {e}"))?;
    let (service, target) = registry.operation();
    let body = b"{}";
    let headers = [
        ("content-type", "application/x-amz-json-1.1".to_string()),
        ("x-amz-target", target.to_string()),
    ];
    let (status, text) = send_signed(
        http,
        "POST",
        url,
        service,
        &headers,
        body.to_vec(),
        keys,
        registry.region(),
    )
    .await
    .map_err(|e| format!("ECR GetAuthorizationToken at {endpoint} failed: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "ECR GetAuthorizationToken at {endpoint} was refused: {}",
            service_error(&text).unwrap_or_else(|| format!("HTTP {}", status.as_u16()))
        ));
    }
    let answer: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("invalid GetAuthorizationToken answer: {e}"))?;
    // ECR answers with a list, ECR Public with one object.
    let data = match &answer["authorizationData"] {
        serde_json::Value::Array(items) => items.first().cloned(),
        serde_json::Value::Object(_) => Some(answer["authorizationData"].clone()),
        _ => None,
    }
    .ok_or("no authorization data returned")?;
    let data: AuthorizationData = serde_json::from_value(data)
        .map_err(|e| format!("invalid GetAuthorizationToken answer: {e}"))?;
    let token = data
        .authorization_token
        .ok_or("authorization token is nil")?;
    let expires_at = data
        .expires_at
        .ok_or("authorization token expiration is nil")?;
    let (username, password) = decode_token(&token)?;
    Ok(Token {
        value: serde_json::json!([username, password]).to_string(),
        expires: lapse(expires_at),
    })
}

/// `base64("user:password")`, as ECR encodes the login.
fn decode_token(token: &str) -> Result<(String, String), String> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|e| format!("failed to parse authorization token: {e}"))?;
    let text = String::from_utf8(decoded).map_err(|_| "invalid authorization token format")?;
    match text.split(':').collect::<Vec<_>>().as_slice() {
        [user, password] if !user.is_empty() => Ok((user.to_string(), password.to_string())),
        _ => Err("invalid authorization token format".into()),
    }
}

/// When a login that ECR says lapses at `expires_at` (epoch seconds) lapses here.
fn lapse(expires_at: f64) -> std::time::Instant {
    // `as` saturates (and takes NaN to 0, a time long past).
    auth::lapses_at(expires_at as i64)
}

/// `__type` and `message` of an AWS JSON protocol error.
fn service_error(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let kind = v["__type"]
        .as_str()
        .map(|t| t.rsplit('#').next().unwrap_or(t));
    let message = v["message"].as_str().or(v["Message"].as_str());
    match (kind, message) {
        (Some(k), Some(m)) => Some(format!("{k}: {m}")),
        (Some(k), None) => Some(k.to_string()),
        (None, Some(m)) => Some(m.to_string()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_are_recognised_whole() {
        let private = |region: &str, suffix: &str| {
            Some(EcrRegistry::Private {
                region: region.into(),
                api_suffix: suffix.into(),
            })
        };
        for (host, want) in [
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                private("us-east-1", "amazonaws.com"),
            ),
            (
                "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com",
                private("us-gov-west-1", "amazonaws.com"),
            ),
            (
                "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn",
                private("cn-north-1", "amazonaws.com.cn"),
            ),
            (
                "123456789012.DKR.ECR.eu-west-1.amazonaws.com.",
                private("eu-west-1", "amazonaws.com"),
            ),
            (
                "123456789012.dkr-ecr.ap-south-1.on.aws",
                private("ap-south-1", "amazonaws.com"),
            ),
            ("public.ecr.aws", Some(EcrRegistry::Public)),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com.example.net",
                None,
            ),
            ("evil.123456789012.dkr.ecr.us-east-1.amazonaws.com", None),
            ("123456789012.dkr.ecr.not_a_region.amazonaws.com", None),
            ("abc.dkr.ecr.us-east-1.amazonaws.com", None),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.co", None),
            ("ghcr.io", None),
            ("public.ecr.aws.example.net", None),
        ] {
            assert_eq!(EcrRegistry::parse(host), want, "{host}");
        }
    }

    #[test]
    fn api_endpoints_follow_the_registry() {
        let r = EcrRegistry::parse("1.dkr.ecr.cn-north-1.amazonaws.com.cn").unwrap();
        if std::env::var_os("AWS_ENDPOINT_URL_ECR").is_none() {
            assert_eq!(
                r.api_endpoint(),
                "https://api.ecr.cn-north-1.amazonaws.com.cn"
            );
        }
        assert_eq!(EcrRegistry::Public.region(), "us-east-1");
    }

    #[test]
    fn tokens_decode_into_basic_logins() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            decode_token(&b64("AWS:secret")).unwrap(),
            ("AWS".to_string(), "secret".to_string())
        );
        assert!(decode_token(&b64("AWS:a:b")).is_err());
        assert!(decode_token(&b64("nocolon")).is_err());
        assert!(decode_token("%%%").unwrap_err().contains("failed to parse"));
    }

    #[test]
    fn service_errors_name_type_and_message() {
        assert_eq!(
            service_error(r#"{"__type":"com.amazonaws#AccessDeniedException","message":"no"}"#)
                .as_deref(),
            Some("AccessDeniedException: no")
        );
        assert_eq!(service_error("<html>"), None);
    }

    #[test]
    fn lapses_are_bounded() {
        let now = auth::unix_now() as f64;
        let soon = lapse(now + 60.0);
        assert!(soon <= std::time::Instant::now() + std::time::Duration::from_secs(61));
        let far = lapse(f64::MAX);
        assert!(far <= std::time::Instant::now() + std::time::Duration::from_secs(12 * 3600 + 1));
        assert!(lapse(f64::NAN) <= std::time::Instant::now() + std::time::Duration::from_secs(1));
    }
}
