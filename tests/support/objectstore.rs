//! The platform's object stores from a test: filled and listed through `hack/objectstore`
//! (the providers' own Python SDKs, an implementation independent of ours), and reached
//! through a counting reverse proxy so a test can count the requests a reconcile makes.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Platform;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// SeaweedFS
    S3,
    /// rclone serve s3 (unquoted ETags)
    S3b,
    Gcs,
    /// fake-gcs-server on its memory backend: object names kept and listed as given.
    GcsVerbatim,
    Azure,
}

impl Provider {
    pub fn tool_name(self) -> &'static str {
        match self {
            Provider::S3 => "s3",
            Provider::S3b => "s3b",
            Provider::Gcs | Provider::GcsVerbatim => "gcs",
            Provider::Azure => "azure",
        }
    }

    /// `spec.provider`
    pub fn spec_provider(self) -> &'static str {
        match self {
            Provider::S3 | Provider::S3b => "generic",
            Provider::Gcs | Provider::GcsVerbatim => "gcp",
            Provider::Azure => "azure",
        }
    }

    /// host:port of the server.
    pub fn address(self, platform: &Platform) -> String {
        let raw = match self {
            Provider::S3 => &platform.env["DRIFTLESS_S3_ENDPOINT"],
            Provider::S3b => &platform.env["DRIFTLESS_S3B_ENDPOINT"],
            Provider::Gcs => &platform.env["DRIFTLESS_GCS_ENDPOINT"],
            Provider::GcsVerbatim => &platform.env["DRIFTLESS_GCS_VERBATIM_ENDPOINT"],
            Provider::Azure => &platform.env["DRIFTLESS_AZURE_ENDPOINT"],
        };
        let rest = raw.split_once("://").map_or(raw.as_str(), |(_, r)| r);
        rest.split('/').next().unwrap().to_string()
    }

    /// `spec.endpoint` for a server at `address` (the proxy's, usually).
    pub fn endpoint(self, platform: &Platform, address: &str) -> String {
        match self {
            Provider::S3 | Provider::S3b => address.to_string(),
            Provider::Gcs | Provider::GcsVerbatim => format!("http://{address}"),
            Provider::Azure => format!(
                "http://{address}/{}",
                platform.env["DRIFTLESS_AZURE_ACCOUNT"]
            ),
        }
    }

    /// The Secret data that authenticates to the server (none for the GCS emulator).
    pub fn secret(self, platform: &Platform) -> Option<serde_json::Value> {
        match self {
            Provider::S3 | Provider::S3b => Some(serde_json::json!({
                "accesskey": platform.env["DRIFTLESS_S3_ACCESS_KEY"],
                "secretkey": platform.env["DRIFTLESS_S3_SECRET_KEY"],
            })),
            Provider::Gcs | Provider::GcsVerbatim => None,
            Provider::Azure => Some(serde_json::json!({
                "accountKey": platform.env["DRIFTLESS_AZURE_KEY"],
            })),
        }
    }
}

pub struct ObjectStore {
    pub provider: Provider,
    platform: Platform,
}

impl ObjectStore {
    pub fn new(platform: &Platform, provider: Provider) -> Self {
        ObjectStore {
            provider,
            platform: platform.clone(),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> String {
        let mut child = Command::new(&self.platform.env["DRIFTLESS_OBJECTSTORE_TOOL"])
            .arg(self.provider.tool_name())
            .args(args)
            .envs(
                self.platform
                    .env
                    .iter()
                    .filter(|(k, _)| k.starts_with("DRIFTLESS_")),
            )
            .envs((self.provider == Provider::GcsVerbatim).then(|| {
                (
                    "DRIFTLESS_GCS_ENDPOINT",
                    &self.platform.env["DRIFTLESS_GCS_VERBATIM_ENDPOINT"],
                )
            }))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hack/objectstore");
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            if let Some(bytes) = stdin {
                input.write_all(bytes).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "objectstore {} {args:?}: {}",
            self.provider.tool_name(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn mkbucket(&self, bucket: &str) {
        self.run(&["mkbucket", bucket], None);
    }

    pub fn put(&self, bucket: &str, key: &str, content: &[u8]) {
        self.run(&["put", bucket, key, "-"], Some(content));
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        self.run(&["delete", bucket, key], None);
    }

    pub fn bulk(&self, bucket: &str, prefix: &str, count: usize, size: usize) {
        self.run(
            &[
                "bulk",
                bucket,
                prefix,
                &count.to_string(),
                &size.to_string(),
            ],
            None,
        );
    }

    /// `(key, etag)` as Flux indexes them, from the provider's own SDK.
    pub fn list(&self, bucket: &str, prefix: Option<&str>) -> Vec<(String, String)> {
        let mut args = vec!["list", bucket];
        if let Some(p) = prefix {
            args.extend(["--prefix", p]);
        }
        let listed: Vec<serde_json::Value> = serde_json::from_str(&self.run(&args, None)).unwrap();
        listed
            .iter()
            .map(|o| {
                (
                    o["key"].as_str().unwrap().to_string(),
                    o["etag"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The revision Flux computes for these keys: sha256 over sorted `key etag\n` lines.
    pub fn flux_revision(
        &self,
        bucket: &str,
        prefix: Option<&str>,
        keep: impl Fn(&str) -> bool,
    ) -> String {
        let mut lines: Vec<(String, String)> = self
            .list(bucket, prefix)
            .into_iter()
            .filter(|(k, _)| !k.ends_with('/') && k != ".sourceignore" && keep(k))
            .collect();
        lines.sort();
        let mut h = Sha256::new();
        for (k, e) in lines {
            h.update(format!("{k} {e}\n"));
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

/// A reverse proxy in front of one server that records every request line it relays
/// (each request on a kept-alive connection too).
pub struct CountingProxy {
    pub address: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (log, upstream) = (requests.clone(), upstream.to_string());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (log, upstream) = (log.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = relay(client, server, log).await;
                    }
                });
            }
        });
        CountingProxy { address, requests }
    }

    /// Request lines (`GET /path HTTP/1.1`) relayed so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }

    /// GETs whose path contains `needle` (object downloads, say).
    pub fn gets(&self, needle: &str) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| r.starts_with("GET ") && r.contains(needle))
            .collect()
    }
}

/// Copies the server's answers back untouched and parses the client's side request by
/// request (heads, then Content-Length bodies) so each request line is seen.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    log: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let answers =
        tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let n = client_read.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
        log.lock()
            .unwrap()
            .push(head.lines().next().unwrap_or_default().to_string());
        let body_len: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + body_len {
            let n = client_read.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let take = (end + 4 + body_len).min(buf.len());
        server_write.write_all(&buf[..take]).await?;
        buf.drain(..take);
    }
    let _ = server_write.shutdown().await;
    let _ = answers.await;
    Ok(())
}
