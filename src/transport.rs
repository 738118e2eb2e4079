//! How driftless reaches a server over HTTP: the connection settings (TLS material, proxy,
//! plain HTTP) and the Secrets that give them, the clients built from them, and errors that
//! name their cause.

use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// Connection settings that decide the HTTP client: TLS material, proxy, plain HTTP.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Transport {
    /// Plain HTTP, and without a CA, no TLS verification (Flux's `insecure`).
    pub insecure: bool,
    /// PEM CA certificates added to the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key, for mTLS.
    pub client_identity_pem: Option<Vec<u8>>,
    /// Proxy URL, with optional basic credentials.
    pub proxy: Option<ProxyConfig>,
    /// Upper bound for each request other than blob downloads (`spec.timeout`).
    pub request_timeout: Option<Duration>,
    /// For token services (`Transport::token_service`): no redirect is followed, since the
    /// request body carries secrets that a redirect would take elsewhere.
    pub token_service: bool,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyConfig {
    pub address: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for ProxyConfig {
    // The password never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("address", &self.address)
            .field("username", &self.username)
            .finish()
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("insecure", &self.insecure)
            .field("ca", &self.ca_pem.is_some())
            .field("client_identity", &self.client_identity_pem.is_some())
            .field("proxy", &self.proxy.as_ref().map(|p| &p.address))
            .finish()
    }
}

impl Transport {
    /// Everything that decides the HTTP connection, from the spec and its Secrets.
    pub fn new(insecure: bool, tls: Option<TlsMaterial>, proxy: Option<ProxyConfig>) -> Self {
        let tls = tls.unwrap_or_default();
        Transport {
            insecure,
            ca_pem: tls.ca_pem,
            client_identity_pem: tls.identity_pem,
            proxy,
            request_timeout: None,
            token_service: false,
        }
    }

    /// The controller's own connection to a cloud's token service: its trust store and
    /// environment proxy, no redirects, and at most `TOKEN_SERVICE_TIMEOUT` a request.
    pub fn token_service() -> Self {
        Transport {
            token_service: true,
            ..Default::default()
        }
    }
}

/// How long a token service may take to answer, all told: a slow answer holds up every object
/// waiting for the same token.
pub const TOKEN_SERVICE_TIMEOUT: Duration = Duration::from_secs(30);

/// PEM material for TLS: extra CA certificates and a client certificate with its key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca_pem: Option<Vec<u8>>,
    pub identity_pem: Option<Vec<u8>>,
}

/// TLS material from a `certSecretRef` Secret: `ca.crt` and/or `tls.crt` + `tls.key`
/// (with Flux's legacy `caFile`/`certFile`/`keyFile` keys as fallbacks).
pub fn tls_from_secret(data: &BTreeMap<String, Vec<u8>>) -> Result<TlsMaterial, String> {
    let get = |k: &str, legacy: &str| {
        data.get(k)
            .or_else(|| data.get(legacy))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let ca = get("ca.crt", "caFile");
    let identity = match (get("tls.crt", "certFile"), get("tls.key", "keyFile")) {
        (Some(mut cert), Some(key)) => {
            cert.push(b'\n');
            cert.extend_from_slice(&key);
            Some(cert)
        }
        (None, None) => None,
        _ => return Err("'tls.crt' and 'tls.key' must be set together".into()),
    };
    if ca.is_none() && identity.is_none() {
        return Err("secret holds neither 'ca.crt' nor 'tls.crt' and 'tls.key'".into());
    }
    Ok(TlsMaterial {
        ca_pem: ca,
        identity_pem: identity,
    })
}

/// A proxy from a `proxySecretRef` Secret: `address` (required), `username`, `password`.
pub fn proxy_from_secret(data: &BTreeMap<String, Vec<u8>>) -> Result<ProxyConfig, String> {
    let text = |k: &str| {
        data.get(k)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let address = text("address").ok_or("secret has no 'address' key")?;
    let scheme_ok = ["http://", "https://", "socks5://"]
        .iter()
        .any(|s| address.starts_with(s));
    if !scheme_ok {
        return Err(format!(
            "proxy address '{}' must start with http://, https:// or socks5://",
            without_userinfo(&address)
        ));
    }
    Ok(ProxyConfig {
        address,
        username: text("username"),
        password: text("password"),
    })
}

/// An address with any `user:password@` removed, for messages.
fn without_userinfo(address: &str) -> String {
    let (scheme, rest) = address
        .split_once("://")
        .map_or(("", address), |(s, r)| (s, r));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    if scheme.is_empty() {
        rest.to_string()
    } else {
        format!("{scheme}://{rest}")
    }
}

/// An HTTP client that connects as `transport` says and gives up on a read stalled for a minute.
pub fn build_http_client(
    transport: &Transport,
    user_agent: &str,
    connect_timeout: Duration,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .connect_timeout(connect_timeout)
        .read_timeout(Duration::from_secs(60))
        .pool_idle_timeout(Duration::from_secs(90));
    if let Some(ca) = &transport.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(ca)
            .map_err(|e| format!("invalid CA certificate: {e}"))?;
        builder = builder.tls_certs_merge(certs);
    } else if transport.insecure && transport.client_identity_pem.is_none() {
        // Flux skips verification only when `insecure` is set and no certSecretRef was given.
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(identity) = &transport.client_identity_pem {
        let identity = reqwest::Identity::from_pem(identity)
            .map_err(|e| format!("invalid client certificate or key: {e}"))?;
        builder = builder.identity(identity);
    }
    if transport.token_service {
        builder = builder
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TOKEN_SERVICE_TIMEOUT);
    }
    if let Some(proxy) = &transport.proxy {
        let mut p = reqwest::Proxy::all(&proxy.address)
            .map_err(|e| format!("invalid proxy address: {e}"))?;
        if let Some(user) = &proxy.username {
            p = p.basic_auth(user, proxy.password.as_deref().unwrap_or_default());
        }
        builder = builder.proxy(p);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build HTTP client: {e}"))
}

pub use crate::util::error_chain;

/// How long the sources' clients wait for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Clients are kept per transport; past this many the cache starts over, so rotated TLS
/// material cannot grow it without bound.
const MAX_CLIENTS: usize = 4096;

/// One HTTP client per transport (TLS material, proxy), shared by every object using it:
/// building one loads the system roots.
pub struct HttpClients {
    user_agent: String,
    clients: Mutex<HashMap<Transport, reqwest::Client>>,
}

impl HttpClients {
    pub fn new(user_agent: &str) -> Self {
        HttpClients {
            user_agent: user_agent.to_string(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, transport: Transport) -> Result<reqwest::Client, String> {
        let mut clients = self.clients.lock().expect("http client cache lock");
        if let Some(client) = clients.get(&transport) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let client = build_http_client(&transport, &self.user_agent, CONNECT_TIMEOUT)?;
        clients.insert(transport, client.clone());
        Ok(client)
    }
}

/// At most the first `max` bytes of a body (what is left is not read); errors end it early.
pub async fn read_prefix(response: reqwest::Response, max: u64) -> Vec<u8> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() as u64 >= max {
            break;
        }
    }
    body
}

/// Token and STS answers are a few KiB from an honest endpoint, and the endpoint may be one a
/// tenant named (`spec.sts.endpoint`, a key's `token_uri`, a Secret's `authorityHost`).
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// A token or STS answer as text, at most `MAX_ANSWER_BYTES` of it: what is cut off a longer
/// one is never read, and the rest then fails to parse.
pub async fn answer_text(response: reqwest::Response) -> String {
    String::from_utf8_lossy(&read_prefix(response, MAX_ANSWER_BYTES).await).into_owned()
}

/// A token service's JSON answer, read within bounds: a success parsed, a refusal explained
/// (`what` was refused (HTTP n): the OAuth `error_description`, else the start of the body).
pub async fn token_answer<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    what: &str,
) -> Result<T, String> {
    let status = response.status();
    let body = answer_text(response).await;
    if !status.is_success() {
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error_description")?.as_str().map(str::to_string))
            .unwrap_or_else(|| crate::util::truncate(&body, 200));
        return Err(format!(
            "{what} was refused (HTTP {}): {detail}",
            status.as_u16()
        ));
    }
    serde_json::from_str(&body).map_err(|e| format!("{what}: invalid answer: {e}"))
}

/// The longest `Retry-After` honoured: a server asking for more is asked again after this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` as delta-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

/// One `Retry-After` value, parsed as [`retry_after`] does.
#[doc(hidden)] // public for the fuzz targets only
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let after = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = jiff::fmt::rfc2822::DateTimeParser::new()
                .parse_timestamp(value)
                .ok()?;
            let left = at.duration_since(jiff::Timestamp::now());
            Duration::try_from(left).unwrap_or(Duration::ZERO)
        }
    };
    Some(after.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, value: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([(key.to_string(), value.as_bytes().to_vec())])
    }

    #[test]
    fn tls_and_proxy_secrets() {
        let mut data = secret("tls.crt", "CERT");
        assert!(tls_from_secret(&data).unwrap_err().contains("together"));
        data.insert("tls.key".into(), b"KEY".to_vec());
        let tls = tls_from_secret(&data).unwrap();
        assert!(tls.ca_pem.is_none() && tls.identity_pem.unwrap().starts_with(b"CERT"));
        let tls = tls_from_secret(&secret("caFile", "CA")).unwrap();
        assert_eq!(tls.ca_pem.unwrap(), b"CA");
        assert!(tls_from_secret(&secret("other", "x")).is_err());

        assert!(proxy_from_secret(&secret("username", "u")).is_err());
        assert!(proxy_from_secret(&secret("address", "proxy:3128")).is_err());
        let err = proxy_from_secret(&secret("address", "user:hunter2@proxy:3128")).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        let p = proxy_from_secret(&secret("address", "http://proxy:3128")).unwrap();
        assert_eq!(p.address, "http://proxy:3128");
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date_and_capped() {
        let headers = |value: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            h
        };
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&headers("999999999")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new()), None);
        let in_a_minute = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&in_a_minute)
            .unwrap();
        let wait = retry_after(&headers(&date)).unwrap();
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(
            retry_after(&headers("Sun, 06 Nov 1994 08:49:37 GMT")),
            Some(Duration::ZERO)
        );
    }
}
