//! Image manifests and indexes from a registry: what parses re-serialises to the same value.
#![no_main]

use driftless::oci::pull::{metadata, select_layer};
use driftless::oci::registry::{ImageIndex, ImageManifest};
use driftless::oci::semver::HELM_CHART_LAYER;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = serde_json::from_slice::<ImageManifest>(data) {
        let _ = select_layer(&manifest, None);
        let _ = select_layer(&manifest, Some(HELM_CHART_LAYER));
        let _ = metadata(&manifest);
        let json = serde_json::to_vec(&manifest).expect("a manifest serialises");
        let again: ImageManifest = serde_json::from_slice(&json).expect("and parses again");
        assert_eq!(again, manifest);
    }
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(data) {
        let json = serde_json::to_vec(&index).expect("an index serialises");
        let again: ImageIndex = serde_json::from_slice(&json).expect("and parses again");
        assert_eq!(again, index);
    }
});
