//! OCI test helpers: artifacts pushed the way `flux push artifact` pushes them, hostile layers,
//! and the registry's access log for counting requests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub const FLUX_LAYER: &str = driftless::cli::push::FLUX_LAYER_MEDIA_TYPE;
use driftless::oci::registry::{Credentials, RegistryClient};
use driftless::transport::Transport;
use flate2::Compression;
use flate2::write::GzEncoder;

/// A gzip tarball laid out as `flux push artifact` writes it: the root `.` first, then paths
/// relative to it, uid/gid 0, zero times, modes from the files.
pub fn flux_layer(files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mut dirs = std::collections::BTreeSet::new();
    let mut root = tar::Header::new_gnu();
    root.set_entry_type(tar::EntryType::Directory);
    root.set_mode(0o755);
    root.set_size(0);
    root.set_mtime(0);
    root.set_cksum();
    tar.append_data(&mut root, ".", std::io::empty()).unwrap();
    for (path, content) in files {
        let mut parent = Path::new(path).parent();
        let mut chain = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.to_path_buf());
            parent = p.parent();
        }
        for dir in chain.into_iter().rev() {
            if dirs.insert(dir.clone()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(0);
                h.set_cksum();
                tar.append_data(&mut h, &dir, std::io::empty()).unwrap();
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Gzip raw tar bytes (for hostile archives built by hand).
pub fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(raw).unwrap();
    gz.finish().unwrap()
}

pub fn client(registry: &str) -> RegistryClient {
    client_with(
        registry,
        Credentials::Anonymous,
        Transport {
            insecure: true,
            ..Default::default()
        },
    )
}

pub fn client_with(
    registry: &str,
    credentials: Credentials,
    transport: Transport,
) -> RegistryClient {
    RegistryClient::new(registry, credentials, &transport, "driftless-tests").unwrap()
}

/// Push one layer with Flux's config and layer media types and annotations; returns the
/// manifest digest.
pub async fn push_flux_artifact(
    client: &RegistryClient,
    repo: &str,
    tag: &str,
    layer: Vec<u8>,
    layer_media_type: &str,
    annotations: &[(&str, &str)],
) -> String {
    let created = "2026-11-29T00:00:00Z";
    let mut all: BTreeMap<String, String> = BTreeMap::from([
        ("org.opencontainers.image.created".into(), created.into()),
        (
            "org.opencontainers.image.source".into(),
            "https://github.com/example/manifests".into(),
        ),
        (
            "org.opencontainers.image.revision".into(),
            format!("main@sha1:{}", "0".repeat(40)),
        ),
    ]);
    all.extend(
        annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    driftless::cli::push::push_layer(client, repo, tag, layer, layer_media_type, created, all)
        .await
        .expect("push artifact")
}

/// Requests the registry logged for a repository: `(method, path)` pairs, in order.
pub fn registry_requests(log: &Path, repo: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let needle = format!(" /v2/{repo}/");
    text.lines()
        .filter_map(|line| {
            let quoted = line.split('"').nth(1)?;
            let mut parts = quoted.split(' ');
            let (method, path) = (parts.next()?, parts.next()?);
            format!(" {path}")
                .starts_with(&needle)
                .then(|| (method.to_string(), path.to_string()))
        })
        .collect()
}

/// `lines` lines of 64 hex digits derived from `seed`: content that gzip hardly compresses
/// (about 34 bytes a line once gzipped), so sizes on disk and streamed downloads mean something.
pub fn hex_lines(seed: &str, lines: usize) -> String {
    use sha2::{Digest, Sha256};
    (0..lines)
        .map(|line| hex::encode(Sha256::digest(format!("{seed} {line}"))) + "\n")
        .collect()
}
