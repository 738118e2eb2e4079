//! The advertised address artifact URLs are built with (`--storage-adv-addr`, reference §5.6).

use std::fs;

use super::StorageError;

/// The host (or `http(s)://` prefix) clients reach the artifact server at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertisedHost(String);

impl AdvertisedHost {
    pub fn new(host: impl Into<String>) -> Self {
        Self(host.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `http://<host>/<path>`, or `<host>/<path>` when the host is already an `http(s)://`
    /// prefix (how operators advertise HTTPS through a proxy).
    pub fn url_for(&self, rel_path: &str) -> String {
        let path = rel_path.trim_start_matches('/');
        let host = &self.0;
        if host.starts_with("http://") || host.starts_with("https://") {
            format!("{}/{path}", host.trim_end_matches('/'))
        } else {
            format!("http://{host}/{path}")
        }
    }
}

/// The host artifact URLs use, derived like Flux does: `--storage-adv-addr` if set, else
/// `--storage-addr` with an empty host turned into `localhost` and `0.0.0.0` into this
/// machine's hostname (`$HOSTNAME` first).
pub fn advertised_host_from_addr(
    storage_addr: &str,
    adv_addr: &str,
) -> Result<String, StorageError> {
    if !adv_addr.is_empty() {
        return Ok(adv_addr.to_string());
    }
    advertised_host_with(storage_addr, system_hostname)
}

fn advertised_host_with(
    storage_addr: &str,
    hostname: impl FnOnce() -> Option<String>,
) -> Result<String, StorageError> {
    let invalid = |reason| StorageError::InvalidAddress {
        addr: storage_addr.to_string(),
        reason,
    };
    let (host, port) = split_host_port(storage_addr).map_err(invalid)?;
    let host = match host {
        "" => "localhost".to_string(),
        "0.0.0.0" => {
            hostname().ok_or_else(|| invalid("0.0.0.0 given but the hostname is unknown"))?
        }
        other => other.to_string(),
    };
    Ok(join_host_port(&host, port))
}

/// Go's `net.SplitHostPort`, enough for listen addresses.
fn split_host_port(addr: &str) -> Result<(&str, &str), &'static str> {
    if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("missing ']' in address")?;
        let port = after.strip_prefix(':').ok_or("missing port in address")?;
        return Ok((host, port));
    }
    let (host, port) = addr.rsplit_once(':').ok_or("missing port in address")?;
    if host.contains(':') {
        return Err("too many colons in address");
    }
    Ok((host, port))
}

fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn system_hostname() -> Option<String> {
    let from_env = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty());
    from_env.or_else(|| {
        fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_for_honours_scheme_prefixes() {
        let host = AdvertisedHost::new("source-controller.flux-system.svc.cluster.local.");
        assert_eq!(
            host.url_for("/a/b"),
            "http://source-controller.flux-system.svc.cluster.local./a/b"
        );
        let host = AdvertisedHost::new("https://artifacts.example.com");
        assert_eq!(host.url_for("a/b"), "https://artifacts.example.com/a/b");
        let host = AdvertisedHost::new("http://proxy:8080/prefix/");
        assert_eq!(host.url_for("a/b"), "http://proxy:8080/prefix/a/b");
        let host = AdvertisedHost::new("localhost:9090");
        assert_eq!(host.url_for("a/b"), "http://localhost:9090/a/b");
    }

    #[test]
    fn advertised_host_derivation() {
        let host = || Some("pod-1".to_string());
        assert_eq!(
            advertised_host_with(":9090", host).unwrap(),
            "localhost:9090"
        );
        assert_eq!(
            advertised_host_with("0.0.0.0:9090", host).unwrap(),
            "pod-1:9090"
        );
        assert_eq!(
            advertised_host_with("10.0.0.1:80", host).unwrap(),
            "10.0.0.1:80"
        );
        assert_eq!(
            advertised_host_with("[::1]:9090", host).unwrap(),
            "[::1]:9090"
        );
        assert!(advertised_host_with("9090", host).is_err());
        assert!(advertised_host_with("::1:9090", host).is_err());
        assert!(advertised_host_with("0.0.0.0:9090", || None).is_err());
        assert_eq!(
            advertised_host_from_addr(":9090", "adv.example:80").unwrap(),
            "adv.example:80"
        );
    }
}
