//! Where credentials the controller holds may be sent.

// The controller's ambient identity (its environment, its pod's or node's cloud identity) and
// the tokens it mints for an object's ServiceAccount stand for the controller, not for the
// tenant who wrote the object. A tenant who could point them at a host of its choosing would
// walk away with them, so they go only to the cloud's own service hosts over HTTPS, or to
// hosts the operator lists in `--allowed-ambient-credential-endpoints`. Credentials from an
// object's own Secret are the tenant's, and go wherever its endpoint points.

use reqwest::Url;
use url_host::normalized_domain;

/// The source-controller flag that lists the extra hosts.
pub const ALLOW_FLAG: &str = "--allowed-ambient-credential-endpoints";

/// A cloud service that may receive the controller's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudService {
    /// AWS Security Token Service: receives the web identity token.
    AwsSts,
    /// Amazon S3: receives requests signed with the controller's keys and session token.
    AwsS3,
    /// Amazon ECR's API: receives GetAuthorizationToken signed with the controller's keys.
    AwsEcr,
    /// Azure Blob Storage: receives the controller's Entra ID access token.
    AzureBlob,
    /// Google Cloud Storage: receives the controller's OAuth access token.
    GoogleStorage,
}

impl CloudService {
    pub fn name(self) -> &'static str {
        match self {
            CloudService::AwsSts => "AWS STS",
            CloudService::AwsS3 => "Amazon S3",
            CloudService::AwsEcr => "Amazon ECR",
            CloudService::AzureBlob => "Azure Blob Storage",
            CloudService::GoogleStorage => "Google Cloud Storage",
        }
    }

    /// Whether `host` (lower case, without a trailing dot) is one of the service's own.
    fn owns(self, host: &str) -> bool {
        match self {
            CloudService::AwsSts => aws::is_sts(host),
            CloudService::AwsS3 => aws::is_s3(host),
            CloudService::AwsEcr => aws::is_ecr_api(host),
            CloudService::AzureBlob => azure::is_blob(host),
            CloudService::GoogleStorage => host == "storage.googleapis.com",
        }
    }
}

/// One `--allowed-ambient-credential-endpoints` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    host: String,
    port: u16,
    /// The entry was written `http://...`: the operator accepts plain HTTP to it.
    plain_http: bool,
}

/// The operator's exceptions to the rule; empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmbientEndpoints {
    allowed: Vec<Allowed>,
}

/// Why credentials were not sent; the message names the endpoint and the way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The endpoint as it can be shown: no user information, no query.
    pub endpoint: String,
    pub service: CloudService,
    why: &'static str,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refusing to send the controller's credentials to '{}': {}; credentials the controller holds (its own cloud identity, or workload identity tokens it obtains) go only to genuine {} endpoints over HTTPS, unless the operator allows the host with {ALLOW_FLAG}",
            self.endpoint,
            self.why,
            self.service.name()
        )
    }
}

impl std::error::Error for Refused {}

impl AmbientEndpoints {
    /// Parses the flag: comma-separated `host`, `host:port`, `https://host[:port]` (HTTPS
    /// only, port 443 by default) or `http://host[:port]` (plain HTTP too, port 80 by
    /// default).
    pub fn parse(flag: &str) -> Result<Self, String> {
        let allowed = flag
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(parse_entry)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AmbientEndpoints { allowed })
    }

    /// Whether the controller's credentials for `service` may be sent to `url`.
    pub fn check(&self, service: CloudService, url: &str) -> Result<(), Refused> {
        let refused = |endpoint: String, why| Refused {
            endpoint,
            service,
            why,
        };
        let parsed = match Url::parse(url) {
            Ok(u) if u.has_host() && matches!(u.scheme(), "http" | "https") => u,
            _ => return Err(refused(shown(url), "it is not an http(s) URL with a host")),
        };
        let endpoint = origin(&parsed);
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(refused(endpoint, "it carries user information"));
        }
        if self.allows(&parsed) {
            return Ok(());
        }
        let genuine = parsed.port().is_none()
            && normalized_domain(&parsed).is_some_and(|host| service.owns(&host));
        match (genuine, parsed.scheme()) {
            (false, _) => Err(refused(
                endpoint,
                "it is not one of the service's own hosts",
            )),
            (true, "https") => Ok(()),
            (true, _) => Err(refused(endpoint, "it is plain HTTP")),
        }
    }

    fn allows(&self, url: &Url) -> bool {
        let Some(host) = url_host::normalized(url) else {
            return false;
        };
        let port = url.port_or_known_default();
        self.allowed.iter().any(|a| {
            a.host == host && Some(a.port) == port && (url.scheme() == "https" || a.plain_http)
        })
    }
}

fn parse_entry(entry: &str) -> Result<Allowed, String> {
    let invalid = |why: &str| {
        format!("{ALLOW_FLAG}: '{entry}' must be host[:port] or http(s)://host[:port]: {why}")
    };
    let with_scheme = match entry.contains("://") {
        true => entry.to_string(),
        false => format!("https://{entry}"),
    };
    let url = Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme is neither http nor https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("user information is not allowed"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a path, query or fragment is not allowed"));
    }
    let host = url_host::normalized(&url).ok_or_else(|| invalid("no usable host"))?;
    Ok(Allowed {
        host,
        port: url.port_or_known_default().unwrap_or(443),
        plain_http: url.scheme() == "http",
    })
}

/// `scheme://host[:port]` of a parsed URL: what a message may show of it.
fn origin(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// An unparsable endpoint, shown without what could be a secret in it.
fn shown(raw: &str) -> String {
    let raw = raw.split(['?', '#']).next().unwrap_or_default();
    let (scheme, rest) = raw.split_once("://").unwrap_or(("", raw));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let shown = match scheme.is_empty() {
        true => rest.to_string(),
        false => format!("{scheme}://{rest}"),
    };
    shown.chars().take(200).collect()
}

/// The default regional STS endpoint, `https://sts.<region>.amazonaws.com[.cn]`. The region
/// comes from the object (or from a server's answer), so it is checked to be a region name
/// before it becomes part of a host the web identity token is posted to.
pub fn aws_regional_sts(region: &str) -> Result<String, String> {
    aws_regional("sts", region)
}

/// The region's KMS endpoint, `https://kms.<region>.amazonaws.com[.cn]` (the region comes
/// from a key ARN in a tenant's file).
pub fn aws_regional_kms(region: &str) -> Result<String, String> {
    aws_regional("kms", region)
}

fn aws_regional(service: &str, region: &str) -> Result<String, String> {
    if !aws::is_region(region) {
        return Err(format!(
            "'{}' is not an AWS region name",
            region.chars().take(64).collect::<String>()
        ));
    }
    let suffix = match region.starts_with("cn-") {
        true => "amazonaws.com.cn",
        false => "amazonaws.com",
    };
    Ok(format!("https://{service}.{region}.{suffix}"))
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`, ...: a name that may become part of a host.
pub fn is_aws_region(s: &str) -> bool {
    aws::is_region(s)
}

/// Dot-separated DNS labels (letters, digits, inner hyphens; 1 to 63 each): a name a
/// registry host may have under a cloud's suffix.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

mod url_host {
    use reqwest::Url;

    /// The host a URL connects to: a DNS name in lower case without one trailing dot (the
    /// same name for DNS), or an IP literal as the URL parser normalised it.
    pub fn normalized(url: &Url) -> Option<String> {
        match ip_literal(url)? {
            true => url.host_str().map(str::to_string),
            false => normalized_domain(url),
        }
    }

    /// The URL's DNS name, when it has one (not an IP literal).
    pub fn normalized_domain(url: &Url) -> Option<String> {
        if ip_literal(url)? {
            return None;
        }
        let domain = url.host_str()?.to_ascii_lowercase();
        let domain = domain.strip_suffix('.').unwrap_or(&domain);
        let labels_ok = domain
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        labels_ok.then(|| domain.to_string())
    }

    fn ip_literal(url: &Url) -> Option<bool> {
        let host = url.host_str()?;
        Some(host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok())
    }
}

mod aws {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Partition {
        /// `amazonaws.com`: the commercial and GovCloud regions.
        Global,
        /// `amazonaws.com.cn`
        China,
        /// `api.aws`: dual-stack (IPv6) endpoints of the commercial regions.
        DualStack,
    }

    fn split(host: &str) -> Option<(Vec<&str>, Partition)> {
        let (prefix, partition) = if let Some(p) = host.strip_suffix(".amazonaws.com.cn") {
            (p, Partition::China)
        } else if let Some(p) = host.strip_suffix(".amazonaws.com") {
            (p, Partition::Global)
        } else {
            (host.strip_suffix(".api.aws")?, Partition::DualStack)
        };
        Some((prefix.split('.').collect(), partition))
    }

    /// `us-east-1`, `us-gov-west-1`, `cn-north-1`, `ap-southeast-4`, `eusc-de-east-1`, ...
    pub fn is_region(s: &str) -> bool {
        let parts: Vec<&str> = s.split('-').collect();
        let [first, middle @ .., last] = parts.as_slice() else {
            return false;
        };
        (2..=4).contains(&first.len())
            && first.bytes().all(|b| b.is_ascii_lowercase())
            && !middle.is_empty()
            && middle
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
            && (1..=2).contains(&last.len())
            && last.bytes().all(|b| b.is_ascii_digit())
    }

    /// A region that lives in the partition (China's regions only under `.com.cn`).
    fn in_partition(region: &str, partition: Partition) -> bool {
        is_region(region) && region.starts_with("cn-") == (partition == Partition::China)
    }

    /// The endpoint-specific name of an interface VPC endpoint, `vpce-<id>[-<suffix>...]`.
    fn is_vpce_id(label: &str) -> bool {
        label.len() <= 63
            && label.strip_prefix("vpce-").is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    }

    pub fn is_sts(host: &str) -> bool {
        let Some((labels, partition)) = split(host) else {
            return false;
        };
        match (labels.as_slice(), partition) {
            (["sts"], Partition::Global) => true,
            (["sts" | "sts-fips", region], _) => in_partition(region, partition),
            ([vpce, "sts", region, "vpce"], Partition::Global | Partition::China) => {
                is_vpce_id(vpce) && in_partition(region, partition)
            }
            _ => false,
        }
    }

    /// `api.ecr.<region>`, `ecr-fips.<region>` and ECR Public's `api.ecr-public.us-east-1`.
    pub fn is_ecr_api(host: &str) -> bool {
        let Some((labels, partition)) = split(host) else {
            return false;
        };
        match (labels.as_slice(), partition) {
            (["api", "ecr-public", "us-east-1"], Partition::Global) => true,
            (["api", "ecr", region], Partition::Global | Partition::China)
            | (["ecr-fips", region], Partition::Global) => in_partition(region, partition),
            _ => false,
        }
    }

    pub fn is_s3(host: &str) -> bool {
        let Some((labels, partition)) = split(host) else {
            return false;
        };
        if partition == Partition::DualStack {
            return false;
        }
        match labels.as_slice() {
            ["s3" | "s3-external-1"] => partition == Partition::Global,
            ["s3" | "s3-fips", region] | ["s3" | "s3-fips", "dualstack", region] => {
                in_partition(region, partition)
            }
            [vpce, "s3", region, "vpce"] => is_vpce_id(vpce) && in_partition(region, partition),
            // The legacy dash form, `s3-us-west-2.amazonaws.com`.
            [legacy] => legacy
                .strip_prefix("s3-")
                .is_some_and(|region| in_partition(region, partition)),
            _ => false,
        }
    }
}

mod azure {
    /// The blob service suffixes of the public, US Government and China clouds.
    const BLOB_SUFFIXES: [&str; 3] = [
        ".blob.core.windows.net",
        ".blob.core.usgovcloudapi.net",
        ".blob.core.chinacloudapi.cn",
    ];

    /// `<account>.blob.core.windows.net` (and the sovereign clouds' equivalents), the
    /// read-access secondary `<account>-secondary.blob...`, and Azure DNS zone endpoints
    /// `<account>.z<NN>.blob.storage.azure.net`.
    pub fn is_blob(host: &str) -> bool {
        if let Some(account) = BLOB_SUFFIXES.iter().find_map(|s| host.strip_suffix(s)) {
            return is_account(account);
        }
        let Some(prefix) = host.strip_suffix(".blob.storage.azure.net") else {
            return false;
        };
        let Some((account, zone)) = prefix.split_once('.') else {
            return false;
        };
        let zone_ok = zone.len() == 3
            && zone.starts_with('z')
            && zone[1..].bytes().all(|b| b.is_ascii_digit());
        zone_ok && is_account(account)
    }

    /// Storage account names: 3 to 24 lower-case letters and digits.
    fn is_account(label: &str) -> bool {
        let name = label.strip_suffix("-secondary").unwrap_or(label);
        (3..=24).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> AmbientEndpoints {
        AmbientEndpoints::default()
    }

    fn ok(service: CloudService, url: &str) -> bool {
        none().check(service, url).is_ok()
    }

    #[test]
    fn genuine_aws_sts_hosts() {
        for url in [
            "https://sts.amazonaws.com",
            "https://sts.amazonaws.com/",
            "https://sts.us-east-1.amazonaws.com",
            "https://sts.us-gov-west-1.amazonaws.com",
            "https://sts-fips.us-east-2.amazonaws.com",
            "https://sts.cn-north-1.amazonaws.com.cn",
            "https://sts.eu-west-1.api.aws",
            "https://sts-fips.us-west-2.api.aws",
            "https://vpce-0123abcd-njisq19r.sts.us-east-1.vpce.amazonaws.com",
            "https://vpce-0123abcd-njisq19r-us-east-1a.sts.us-east-1.vpce.amazonaws.com",
            "https://STS.US-EAST-1.AMAZONAWS.COM",
            "https://sts.us-east-1.amazonaws.com.",
            "https://sts.us-east-1.amazonaws.com:443",
        ] {
            assert!(ok(CloudService::AwsSts, url), "{url} is genuine AWS STS");
        }
    }

    #[test]
    fn lookalike_and_unsafe_sts_endpoints_are_refused() {
        for url in [
            "http://sts.amazonaws.com",
            "http://127.0.0.1:8080/",
            "https://127.0.0.1",
            "https://[::1]",
            "https://sts.amazonaws.com.evil.com",
            "https://evilamazonaws.com",
            "https://sts.evilamazonaws.com",
            "https://evil.com/.sts.amazonaws.com",
            "https://evil.com?.sts.amazonaws.com",
            "https://evil.com#.sts.amazonaws.com",
            "https://sts.amazonaws.com@evil.com",
            "https://sts.amazonaws.com:x@evil.com",
            "https://user@sts.amazonaws.com",
            "https://evil.com\\@sts.amazonaws.com",
            "https://sts.amazonaws.com:8443",
            "https://sts.amazonaws.com..",
            "https://sts..amazonaws.com",
            "https://sts.evil.com.amazonaws.com",
            "https://sts.us-east-1.evil.amazonaws.com",
            "https://s3.us-east-1.amazonaws.com",
            "https://sts.cn-north-1.amazonaws.com",
            "https://sts.us-east-1.amazonaws.com.cn",
            "https://sts.api.aws",
            "https://evil.sts.us-east-1.vpce.amazonaws.com",
            "https://ec2-1-2-3-4.compute-1.amazonaws.com",
            "https://abc.execute-api.us-east-1.amazonaws.com",
            "https://my-lb-1.us-east-1.elb.amazonaws.com",
            "ftp://sts.amazonaws.com",
            "sts.amazonaws.com",
            "not a url",
        ] {
            assert!(!ok(CloudService::AwsSts, url), "{url} must be refused");
        }
    }

    #[test]
    fn genuine_and_lookalike_s3_hosts() {
        for url in [
            "https://s3.amazonaws.com",
            "https://s3-external-1.amazonaws.com",
            "https://s3.eu-west-1.amazonaws.com",
            "https://s3-eu-west-1.amazonaws.com",
            "https://s3-fips.us-gov-west-1.amazonaws.com",
            "https://s3.dualstack.ap-southeast-2.amazonaws.com",
            "https://s3-fips.dualstack.us-east-1.amazonaws.com",
            "https://s3.cn-northwest-1.amazonaws.com.cn",
            "https://s3.dualstack.cn-north-1.amazonaws.com.cn",
            "https://vpce-1a2b3c4d-5e6f.s3.us-east-1.vpce.amazonaws.com",
        ] {
            assert!(ok(CloudService::AwsS3, url), "{url} is genuine S3");
        }
        for url in [
            "http://s3.amazonaws.com",
            "https://s3.amazonaws.com.evil.com",
            "https://evils3.amazonaws.com",
            "https://bucket.s3-website-us-east-1.amazonaws.com",
            "https://s3-evil.amazonaws.com",
            "https://s3.evil.amazonaws.com",
            "https://s3.amazonaws.com.cn",
            "https://s3.cn-north-1.amazonaws.com",
            "https://s3.eu-west-1.api.aws",
            "https://sts.amazonaws.com",
            "https://s3.amazonaws.com@127.0.0.1",
            "https://127.0.0.1:9000",
        ] {
            assert!(!ok(CloudService::AwsS3, url), "{url} must be refused");
        }
    }

    #[test]
    fn genuine_and_lookalike_azure_blob_hosts() {
        for url in [
            "https://acct.blob.core.windows.net",
            "https://acct.blob.core.windows.net/",
            "https://acct-secondary.blob.core.windows.net",
            "https://acct123.blob.core.usgovcloudapi.net",
            "https://acct.blob.core.chinacloudapi.cn",
            "https://acct.z12.blob.storage.azure.net",
            "https://ACCT.BLOB.CORE.WINDOWS.NET.",
        ] {
            assert!(ok(CloudService::AzureBlob, url), "{url} is genuine blob");
        }
        for url in [
            "http://acct.blob.core.windows.net",
            "https://blob.core.windows.net",
            "https://a.blob.core.windows.net",
            "https://acct.blob.core.windows.net.evil.com",
            "https://acct.evilblob.core.windows.net",
            "https://x.acct.blob.core.windows.net",
            "https://acct.web.core.windows.net",
            "https://acct.azurewebsites.net",
            "https://acct.blob.core.windows.net:10000",
            "https://acct.blob.core.windows.net@evil.com",
            "https://acct.z1.blob.storage.azure.net",
            "https://127.0.0.1:10000/devstoreaccount1",
            "http://127.0.0.1:10000/devstoreaccount1",
        ] {
            assert!(!ok(CloudService::AzureBlob, url), "{url} must be refused");
        }
    }

    #[test]
    fn genuine_and_lookalike_ecr_api_hosts() {
        for url in [
            "https://api.ecr.us-east-1.amazonaws.com",
            "https://api.ecr.cn-north-1.amazonaws.com.cn",
            "https://ecr-fips.us-gov-west-1.amazonaws.com",
            "https://api.ecr-public.us-east-1.amazonaws.com",
        ] {
            assert!(ok(CloudService::AwsEcr, url), "{url} is genuine ECR");
        }
        for url in [
            "http://api.ecr.us-east-1.amazonaws.com",
            "https://api.ecr.us-east-1.amazonaws.com.evil.com",
            "https://api.ecr.cn-north-1.amazonaws.com",
            "https://x.api.ecr.us-east-1.amazonaws.com",
            "https://123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "https://api.ecr-public.eu-west-1.amazonaws.com",
            "https://api.ecr.us-east-1.amazonaws.com:8443",
            "http://127.0.0.1:5000",
        ] {
            assert!(!ok(CloudService::AwsEcr, url), "{url} must be refused");
        }
    }

    #[test]
    fn google_storage_is_one_host() {
        assert!(ok(
            CloudService::GoogleStorage,
            "https://storage.googleapis.com"
        ));
        assert!(ok(
            CloudService::GoogleStorage,
            "https://Storage.GoogleAPIs.com."
        ));
        for url in [
            "http://storage.googleapis.com",
            "https://storage.googleapis.com.evil.com",
            "https://evilstorage.googleapis.com",
            "https://x.storage.googleapis.com",
            "https://storage.googleapis.com:4443",
            "https://storage.googleapis.com@127.0.0.1",
            "http://127.0.0.1:4443",
        ] {
            assert!(
                !ok(CloudService::GoogleStorage, url),
                "{url} must be refused"
            );
        }
    }

    #[test]
    fn refusals_name_the_endpoint_without_secrets_and_the_way_out() {
        let err = none()
            .check(
                CloudService::AwsSts,
                "http://user:pass@127.0.0.1:9999/x?token=secret",
            )
            .unwrap_err();
        assert_eq!(err.endpoint, "http://127.0.0.1:9999");
        let message = err.to_string();
        assert!(message.contains("'http://127.0.0.1:9999'"), "{message}");
        assert!(message.contains(ALLOW_FLAG), "{message}");
        assert!(!message.contains("pass") && !message.contains("secret"));
        let plain = none()
            .check(CloudService::AwsS3, "http://s3.amazonaws.com")
            .unwrap_err();
        assert!(plain.to_string().contains("plain HTTP"), "{plain}");
        let junk = none()
            .check(CloudService::AwsSts, "x://u:p@host?q=secret")
            .unwrap_err();
        assert_eq!(junk.endpoint, "x://host");
    }

    #[test]
    fn the_allow_list_names_hosts_ports_and_schemes() {
        let allow = AmbientEndpoints::parse(
            " minio.internal:9000, https://sts.corp.example, http://127.0.0.1:8080,[::1]:7000,Upper.Example.",
        )
        .unwrap();
        let yes = |s, u| allow.check(s, u).is_ok();
        assert!(yes(CloudService::AwsS3, "https://minio.internal:9000"));
        assert!(yes(CloudService::AwsS3, "https://MINIO.internal.:9000"));
        assert!(!yes(CloudService::AwsS3, "http://minio.internal:9000"));
        assert!(!yes(CloudService::AwsS3, "https://minio.internal"));
        assert!(!yes(CloudService::AwsS3, "https://minio.internal:9001"));
        assert!(!yes(CloudService::AwsS3, "https://x.minio.internal:9000"));
        assert!(yes(CloudService::AwsSts, "https://sts.corp.example/"));
        assert!(yes(CloudService::AwsSts, "https://sts.corp.example:443/"));
        assert!(!yes(CloudService::AwsSts, "https://sts.corp.example:8443/"));
        assert!(yes(CloudService::AwsSts, "http://127.0.0.1:8080/"));
        assert!(yes(CloudService::AwsSts, "https://127.0.0.1:8080/"));
        assert!(!yes(CloudService::AwsSts, "http://127.0.0.2:8080/"));
        assert!(!yes(CloudService::AwsSts, "http://localhost:8080/"));
        assert!(yes(CloudService::AzureBlob, "https://[::1]:7000/acct"));
        assert!(yes(CloudService::AzureBlob, "https://upper.example/"));
        assert!(
            !yes(CloudService::AwsSts, "http://u:p@127.0.0.1:8080/"),
            "user information is never sent"
        );
        assert!(yes(CloudService::AwsSts, "https://sts.amazonaws.com"));
    }

    #[test]
    fn bad_allow_list_entries_are_refused() {
        assert_eq!(AmbientEndpoints::parse("").unwrap(), none());
        assert_eq!(AmbientEndpoints::parse(" , ").unwrap(), none());
        for entry in [
            "ftp://h",
            "https://u@h",
            "https://h/path",
            "https://h?q",
            "h:notaport",
            "https://",
            "*.example.com",
        ] {
            let err = AmbientEndpoints::parse(entry).unwrap_err();
            assert!(err.contains(ALLOW_FLAG), "{entry}: {err}");
        }
    }

    #[test]
    fn regional_sts_comes_only_from_region_names() {
        assert_eq!(
            aws_regional_sts("eu-west-1").unwrap(),
            "https://sts.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            aws_regional_sts("us-gov-west-1").unwrap(),
            "https://sts.us-gov-west-1.amazonaws.com"
        );
        assert_eq!(
            aws_regional_sts("cn-north-1").unwrap(),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
        for region in [
            "",
            "evil.com/",
            "x.attacker.com#",
            "us-east-1.evil.com",
            "us-east",
            "us--1",
            "US-EAST-1",
            "us-east-123",
            "u-east-1",
        ] {
            assert!(aws_regional_sts(region).is_err(), "{region}");
        }
        for region in [
            "eu-west-1",
            "us-gov-east-1",
            "cn-northwest-1",
            "ap-southeast-4",
        ] {
            let url = aws_regional_sts(region).unwrap();
            assert!(ok(CloudService::AwsSts, &url), "{url} passes the check");
        }
    }
}
