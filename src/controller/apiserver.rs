//! How the controllers reach the Kubernetes API server: kube's inferred configuration, always
//! without a proxy.
//!
//! kube-client 5 takes `HTTPS_PROXY` from the environment for a kubeconfig's server (in-cluster
//! it never does), tests `NO_PROXY` against the proxy's own address instead of the server's, and
//! without its `http-proxy` feature cannot tunnel at all — so a controller run with Flux's
//! documented proxy setup (`HTTPS_PROXY` for registries and clouds, `NO_PROXY` for the cluster)
//! could not start. The API server is reached directly, as in-cluster; `HTTPS_PROXY` and
//! `NO_PROXY` keep applying to registries, buckets and cloud endpoints.

use std::net::IpAddr;

/// The inferred configuration, without a proxy for the API server.
pub async fn config() -> Result<kube::Config, kube::config::InferConfigError> {
    let mut config = kube::Config::infer().await?;
    if let Some(proxy) = config.proxy_url.take() {
        let no_proxy = std::env::var("NO_PROXY")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| std::env::var("no_proxy").ok())
            .unwrap_or_default();
        if !bypasses(&no_proxy, &config.cluster_url) {
            tracing::warn!(
                api_server = %config.cluster_url,
                %proxy,
                "the proxy would apply to the API server, which driftless reaches directly; add it to NO_PROXY to silence this"
            );
        }
    }
    Ok(config)
}

/// Whether a `NO_PROXY` list exempts `target`, as Go's `httpproxy` reads it: `localhost` and
/// loopback addresses always; `*`; an IP address or CIDR range; a domain, which covers itself
/// and its subdomains (with a leading `.` or `*.`, its subdomains only); names and addresses
/// optionally with `:port` (`[v6]:port`). Empty entries are skipped.
pub fn bypasses(no_proxy: &str, target: &http::Uri) -> bool {
    let Some(host) = target.host() else {
        return false;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = target.port_u16().unwrap_or(match target.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    let ip = host.parse::<IpAddr>().ok();
    if host == "localhost" || ip.is_some_and(|ip| ip.is_loopback()) {
        return true;
    }
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| entry == "*" || entry_matches(&entry.to_ascii_lowercase(), &host, ip, port))
}

fn entry_matches(entry: &str, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
    if let Some((net, bits)) = entry.split_once('/') {
        return match (net.parse::<IpAddr>(), bits.parse::<u8>(), ip) {
            (Ok(net), Ok(bits), Some(ip)) => in_cidr(ip, net, bits),
            _ => false,
        };
    }
    if let Ok(addr) = entry
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Some(addr) == ip;
    }
    let (name, entry_port) = match entry.rsplit_once(':') {
        Some((name, p))
            if !name.contains(':') || (name.starts_with('[') && name.ends_with(']')) =>
        {
            match p.parse::<u16>() {
                Ok(p) => (name, Some(p)),
                Err(_) => return false,
            }
        }
        _ => (entry, None),
    };
    if let Ok(addr) = name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Some(addr) == ip && entry_port.is_none_or(|p| p == port);
    }
    if entry_port.is_some_and(|p| p != port) {
        return false;
    }
    let (domain, subdomains_only) = match name.strip_prefix("*.").or_else(|| name.strip_prefix('.'))
    {
        Some(d) => (d, true),
        None => (name, false),
    };
    !domain.is_empty()
        && ((host == domain && !subdomains_only) || host.ends_with(&format!(".{domain}")))
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn no_proxy_is_matched_against_the_api_server() {
        // Loopback never goes through a proxy, whatever the list says.
        for server in [
            "https://127.0.0.1:6443",
            "https://localhost:6443",
            "https://[::1]:6443",
        ] {
            assert!(bypasses("", &uri(server)), "{server}");
        }
        let server = uri("https://10.96.0.1:6443");
        for list in [
            "10.96.0.1",
            "a,,10.96.0.1,",
            "10.0.0.0/8",
            "*",
            "10.96.0.1:6443",
        ] {
            assert!(bypasses(list, &server), "{list}");
        }
        for list in ["", "10.96.0.2", "10.96.0.1:443", "localhost", "11.0.0.0/8"] {
            assert!(!bypasses(list, &server), "{list}");
        }
        assert!(bypasses("[fd00::1]:6443", &uri("https://[fd00::1]:6443")));
        assert!(!bypasses("[fd00::1]:443", &uri("https://[fd00::1]:6443")));
        let named = uri("https://api.cluster.example.com");
        for list in [
            "example.com",
            ".example.com",
            "*.example.com",
            "api.cluster.example.com:443",
        ] {
            assert!(bypasses(list, &named), "{list}");
        }
        for list in [
            "ample.com",
            "cluster.example.co",
            "api.cluster.example.com:6443",
        ] {
            assert!(!bypasses(list, &named), "{list}");
        }
        assert!(bypasses("fd00::/8", &uri("https://[fd00::1]:6443")));
        assert!(bypasses("10.96.0.1", &uri("https://10.96.0.1")));
        assert!(!bypasses("10.96.0.0/33", &uri("https://10.96.0.1")));
        assert!(bypasses("0.0.0.0/0", &uri("https://10.96.0.1")));
        let bare = uri("https://example.com");
        assert!(bypasses("example.com", &bare));
        assert!(
            !bypasses(".example.com", &bare),
            "a leading dot: subdomains only"
        );
    }
}
