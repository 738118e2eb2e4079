//! SHA-256 digests in Flux's `sha256:<hex>` form, computed while bytes stream past.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// The algorithm prefix Flux writes in `status.artifact.digest`.
pub const SHA256_PREFIX: &str = "sha256:";

/// Size and digest of a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDigest {
    /// Number of bytes.
    pub size: u64,
    /// Lower-case hex SHA-256, without the algorithm prefix.
    pub hex: String,
}

impl ContentDigest {
    /// The digest in Flux's `sha256:<hex>` form.
    pub fn to_flux_digest(&self) -> String {
        format!("{SHA256_PREFIX}{}", self.hex)
    }
}

/// A writer that hashes and counts what it forwards, so producers never re-read their output.
pub struct DigestWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> DigestWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes accepted by the inner writer so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Returns the inner writer and the digest of everything written through it.
    pub fn finish(self) -> (W, ContentDigest) {
        let digest = ContentDigest {
            size: self.written,
            hex: hex::encode(self.hasher.finalize()),
        };
        (self.inner, digest)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only hash what the inner writer really took; a short write is retried by the caller.
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes a whole stream with constant memory.
pub fn digest_reader(mut reader: impl Read) -> io::Result<ContentDigest> {
    let mut writer = DigestWriter::new(io::sink());
    io::copy(&mut reader, &mut writer)?;
    Ok(writer.finish().1)
}

/// Extracts the hex part of a SHA-256 digest given as `sha256:<hex>` or as bare hex
/// (Flux's fetcher treats a bare hex as SHA-256). Other algorithms yield `None`.
pub fn sha256_hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix(SHA256_PREFIX).unwrap_or(digest);
    let well_formed = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_writer_counts_and_hashes_forwarded_bytes() {
        let mut writer = DigestWriter::new(Vec::new());
        writer.write_all(b"hello ").unwrap();
        writer.write_all(b"world").unwrap();
        let (inner, digest) = writer.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(digest.size, 11);
        assert_eq!(
            digest.to_flux_digest(),
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[test]
    fn digest_reader_of_empty_stream() {
        let digest = digest_reader(io::empty()).unwrap();
        assert_eq!(digest.size, 0);
        assert_eq!(digest.hex, EMPTY_SHA256);
    }

    #[test]
    fn sha256_hex_accepts_prefixed_and_bare_forms_only() {
        assert_eq!(
            sha256_hex_of(&format!("sha256:{EMPTY_SHA256}")),
            Some(EMPTY_SHA256)
        );
        assert_eq!(sha256_hex_of(EMPTY_SHA256), Some(EMPTY_SHA256));
        assert_eq!(sha256_hex_of("sha512:abcd"), None);
        assert_eq!(sha256_hex_of("sha256:zz"), None);
        assert_eq!(sha256_hex_of(""), None);
    }
}
