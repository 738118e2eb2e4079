//! SPIFFE mTLS between the controllers, as Flux 2.10 has it: the source-controller's artifact
//! server requires an X.509-SVID of an authorized SPIFFE ID (`--authorized-artifact-client-
//! spiffe-id`), consumers check the server's (`--authorized-artifact-server-spiffe-id`), and
//! events go to an authorized event server (`--authorized-event-server-spiffe-id`). The SVIDs and
//! trust bundles come from the SPIFFE Workload API at `SPIFFE_ENDPOINT_SOCKET`.
//!
//! Flux keeps advertising `http://` artifact URLs (the API does not change) and its clients
//! switch to `https://` in memory when mTLS is configured; so does driftless.
//!
//! The Workload API client (`spiffe`) and the rustls configurations that follow SVID and bundle
//! rotation (`spiffe-rustls`) are maintained crates; this module only maps Flux's flags and ID
//! patterns onto them.

use std::sync::Arc;

use anyhow::Context as _;
use spiffe::{SpiffeId, X509Source};
use spiffe_rustls::{mtls_client, mtls_server};

/// One authorized-ID flag value, as Flux reads it: `spiffe://td/path` (exactly that ID),
/// `spiffe://td/path/` (every ID under that path), `spiffe://td` (every ID of the trust
/// domain); a trust domain of `self` is this workload's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPattern {
    trust_domain: String,
    match_path: PathMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathMatch {
    Any,
    Exact(String),
    Prefix(String),
}

impl IdPattern {
    /// The flag value's parser: a malformed ID stops the controller at start-up, as in Flux.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("{text:?} is not a SPIFFE ID (spiffe://<trust domain>/...)"))?;
        let (trust_domain, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let td_ok = !trust_domain.is_empty()
            && trust_domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        let path_ok = path.split('/').skip(1).enumerate().all(|(i, segment)| {
            let last = i + 2 == path.split('/').count();
            (segment.is_empty() && last)
                || (!segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)))
        });
        if !td_ok || !path_ok {
            return Err(format!("{text:?} is not a valid SPIFFE ID"));
        }
        let match_path = match path {
            "" => PathMatch::Any,
            p if p.ends_with('/') => PathMatch::Prefix(p.to_string()),
            p => PathMatch::Exact(p.to_string()),
        };
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            match_path,
        })
    }

    /// Whether `peer` (`spiffe://td/path`) matches, `own_trust_domain` standing in for `self`.
    fn matches(&self, peer: &str, own_trust_domain: &str) -> bool {
        let Some(rest) = peer.strip_prefix("spiffe://") else {
            return false;
        };
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let wanted_td = if self.trust_domain == "self" {
            own_trust_domain
        } else {
            &self.trust_domain
        };
        td == wanted_td
            && match &self.match_path {
                PathMatch::Any => true,
                PathMatch::Exact(p) => path == p,
                PathMatch::Prefix(p) => path.starts_with(p.as_str()),
            }
    }
}

/// Who may be on the other end of a connection.
#[derive(Debug, Clone)]
struct Authorized {
    patterns: Vec<IdPattern>,
    own_trust_domain: String,
    /// This workload's own ID, authorized too: the replicas of one controller talk to each
    /// other (a follower fetching from the leader).
    own_id: Option<String>,
}

impl Authorized {
    fn allows(&self, peer: &SpiffeId) -> bool {
        let peer = peer.to_string();
        self.own_id.as_deref() == Some(peer.as_str())
            || self
                .patterns
                .iter()
                .any(|p| p.matches(&peer, &self.own_trust_domain))
    }
}

/// This process's SPIFFE workload: its SVIDs and bundles, kept current by the Workload API.
#[derive(Clone)]
pub struct Workload {
    source: X509Source,
    own_id: String,
    own_trust_domain: String,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("own_id", &self.own_id)
            .finish_non_exhaustive()
    }
}

/// Both servers are HTTP/1.1 only.
const ALPN: [&[u8]; 1] = [b"http/1.1"];

impl Workload {
    /// Connects to the Workload API at `SPIFFE_ENDPOINT_SOCKET` and waits for the first SVID.
    pub async fn connect() -> anyhow::Result<Self> {
        let endpoint = std::env::var("SPIFFE_ENDPOINT_SOCKET")
            .ok()
            .filter(|s| !s.is_empty())
            .context(
                "SPIFFE mTLS is configured but SPIFFE_ENDPOINT_SOCKET (the Workload API socket) is not set",
            )?;
        Self::connect_to(&endpoint).await
    }

    /// Connects to the Workload API at `endpoint` (`unix:///path`) and waits for the first SVID.
    pub async fn connect_to(endpoint: &str) -> anyhow::Result<Self> {
        tracing::info!(%endpoint, "waiting for an X.509-SVID from the SPIFFE Workload API");
        let source = X509Source::builder()
            .endpoint(endpoint)
            .build()
            .await
            .with_context(|| format!("connecting to the SPIFFE Workload API at {endpoint}"))?;
        let svid = source
            .svid()
            .context("no X.509-SVID from the SPIFFE Workload API")?;
        let own_id = svid.spiffe_id().to_string();
        let own_trust_domain = svid.spiffe_id().trust_domain_name().to_string();
        tracing::info!(spiffe_id = %own_id, "SPIFFE workload identity");
        Ok(Self {
            source,
            own_id,
            own_trust_domain,
        })
    }

    fn authorized(&self, patterns: &[IdPattern], with_self: bool) -> Authorized {
        Authorized {
            patterns: patterns.to_vec(),
            own_trust_domain: self.own_trust_domain.clone(),
            own_id: with_self.then(|| self.own_id.clone()),
        }
    }

    /// The artifact server's TLS: its own SVID, and a client SVID required, from `patterns` or
    /// this workload's own ID (its other replicas).
    pub fn server_config(
        &self,
        patterns: &[IdPattern],
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let authorized = self.authorized(patterns, true);
        let config = mtls_server(self.source.clone())
            .authorize(move |peer: &SpiffeId| authorized.allows(peer))
            .with_alpn_protocols(ALPN)
            .build()
            .context("building the SPIFFE mTLS server configuration")?;
        Ok(Arc::new(config))
    }

    /// A client's TLS: its own SVID presented, the server's ID checked against `patterns`
    /// (and this workload's own ID when `with_self`).
    pub fn client_config(
        &self,
        patterns: &[IdPattern],
        with_self: bool,
    ) -> anyhow::Result<rustls::ClientConfig> {
        let authorized = self.authorized(patterns, with_self);
        mtls_client(self.source.clone())
            .authorize(move |peer: &SpiffeId| authorized.allows(peer))
            .with_alpn_protocols(ALPN)
            .build()
            .context("building the SPIFFE mTLS client configuration")
    }
}

/// An HTTP client presenting `tls` (a [`Workload::client_config`]).
pub fn http_client(
    builder: reqwest::ClientBuilder,
    tls: rustls::ClientConfig,
) -> anyhow::Result<reqwest::Client> {
    builder
        .use_preconfigured_tls(tls)
        .build()
        .context("building the SPIFFE mTLS HTTP client")
}

/// `http://…` as `https://…`, as Flux's clients rewrite advertised URLs when mTLS is on (the
/// port stays what the URL says, so a URL without one goes to 443).
pub fn https_url(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(patterns: &[&str], peer: &str) -> bool {
        let patterns: Vec<_> = patterns
            .iter()
            .map(|p| IdPattern::parse(p).unwrap())
            .collect();
        patterns.iter().any(|p| p.matches(peer, "cluster.local"))
    }

    #[test]
    fn flux_id_patterns_match_exactly_by_prefix_or_by_trust_domain() {
        let kc = "spiffe://cluster.local/ns/flux-system/sa/kustomize-controller";
        assert!(allows(
            &["spiffe://cluster.local/ns/flux-system/sa/kustomize-controller"],
            kc
        ));
        assert!(!allows(
            &["spiffe://cluster.local/ns/flux-system/sa/kustomize"],
            kc
        ));
        assert!(allows(&["spiffe://cluster.local/ns/flux-system/"], kc));
        assert!(!allows(&["spiffe://cluster.local/ns/flux/"], kc));
        assert!(allows(&["spiffe://cluster.local"], kc));
        assert!(!allows(&["spiffe://other.example"], kc));
        assert!(allows(&["spiffe://self/ns/flux-system/"], kc));
        assert!(!allows(
            &["spiffe://self/ns/flux-system/"],
            "spiffe://other/ns/flux-system/sa/x"
        ));
        assert!(!allows(
            &["spiffe://cluster.local/ns/flux-system/sa/kustomize-controller"],
            "spiffe://cluster.local/ns/flux-system/sa/kustomize-controller/x"
        ));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "cluster.local/ns/x",
            "https://cluster.local/x",
            "spiffe://",
            "spiffe://Cluster.Local/x",
            "spiffe://td/a//b",
            "spiffe://td/../x",
            "spiffe://td/a b",
        ] {
            assert!(IdPattern::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "spiffe://td",
            "spiffe://td/",
            "spiffe://td/a/b",
            "spiffe://td/a/",
        ] {
            assert!(IdPattern::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn advertised_urls_switch_to_https() {
        assert_eq!(
            https_url("http://source-controller.flux-system.svc.cluster.local./a/b.tar.gz"),
            "https://source-controller.flux-system.svc.cluster.local./a/b.tar.gz"
        );
        assert_eq!(
            https_url("http://10.0.0.1:9090/x"),
            "https://10.0.0.1:9090/x"
        );
        assert_eq!(https_url("https://x/y"), "https://x/y");
    }
}
