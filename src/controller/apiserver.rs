//! How the controllers reach the Kubernetes API server: kube's inferred configuration, with
//! the proxy chosen as Go's clients choose it.
//!
//! kube-client 5 takes `HTTPS_PROXY` for the API server from the environment but tests
//! `NO_PROXY` against the proxy's own address instead of the server's, so an operator's
//! `HTTPS_PROXY` with `NO_PROXY=<the API server>` (Flux's documented proxy setup) would send the
//! API server's traffic to the proxy. Here `NO_PROXY` is matched against the server.

use std::net::IpAddr;

/// The inferred configuration, its proxy decided against the API server's address.
pub async fn config() -> Result<kube::Config, kube::config::InferConfigError> {
    let mut config = kube::Config::infer().await?;
    // A kubeconfig's own `proxy-url` is kept, as client-go keeps it.
    let from_env = env_proxy().and_then(|u| u.parse::<http::Uri>().ok());
    if config.proxy_url.is_some() && config.proxy_url == from_env {
        let no_proxy = std::env::var("NO_PROXY")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| std::env::var("no_proxy").ok())
            .unwrap_or_default();
        if bypasses(&no_proxy, &config.cluster_url) {
            config.proxy_url = None;
        }
    }
    Ok(config)
}

/// `HTTPS_PROXY`, as kube reads it.
fn env_proxy() -> Option<String> {
    ["HTTPS_PROXY", "https_proxy"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// Whether a `NO_PROXY` list exempts `target`, as Go's `httpproxy` reads it: `*`; an IP
/// address or CIDR range; a domain, which covers itself and its subdomains (with a leading `.`
/// or `*.`, its subdomains only); names and addresses optionally with `:port`.
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
        Some((name, p)) if !name.contains(':') => match p.parse::<u16>() {
            Ok(p) => (name, Some(p)),
            Err(_) => return false,
        },
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
        let server = uri("https://127.0.0.1:6443");
        for list in [
            "127.0.0.1",
            "localhost,127.0.0.1",
            "127.0.0.0/8",
            "*",
            "127.0.0.1:6443",
        ] {
            assert!(bypasses(list, &server), "{list}");
        }
        for list in ["", "10.0.0.0/8", "127.0.0.2", "127.0.0.1:443", "localhost"] {
            assert!(!bypasses(list, &server), "{list}");
        }
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
