//! The Bucket mirror's record of what its files hold: any record file reads without a panic, and
//! an index of listed keys and etags (NUL-separated pairs, as a hostile bucket may name them)
//! reads back as it was written.
#![no_main]

use driftless::source::bucket::index::{EtagStyle, Index, normalize_etag, unsafe_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Index::read_from(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut listed = Index::default();
    let mut fields = text.split('\0');
    while let (Some(key), Some(etag)) = (fields.next(), fields.next()) {
        if !key.is_empty() && unsafe_key(key).is_none() {
            listed.insert(key.to_string(), normalize_etag(EtagStyle::Plain, etag));
        }
    }
    // A record that does not read back is only a cold mirror; one that reads back different
    // would serve stale files.
    if let Some(again) = round_trip(&listed) {
        assert_eq!(again, listed);
    }
});

fn round_trip(index: &Index) -> Option<Index> {
    let mut file = Vec::new();
    index.write_to(&mut file).ok()?;
    Index::read_from(file.as_slice()).ok()
}
