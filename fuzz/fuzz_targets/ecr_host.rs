//! The registry host of an OCIRepository with `provider: aws` (the tenant's `spec.url`): a host
//! taken as ECR's names an ECR host, and the API endpoint made from it is AWS's own.
#![no_main]

use driftless::identity::ecr::EcrRegistry;
use driftless::identity::endpoints::{AmbientEndpoints, CloudService};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(host) = std::str::from_utf8(data) else {
        return;
    };
    let Some(registry) = EcrRegistry::parse(host) else {
        return;
    };
    let lower = host.to_ascii_lowercase();
    assert!(
        lower.trim_end_matches('.') == "public.ecr.aws" || lower.contains(".dkr"),
        "{host:?} taken as ECR"
    );
    assert!(!host.contains([':', '/', '@', '?', '#']), "{host:?} carries more than a host");
    if let EcrRegistry::Private { region, api_suffix } = &registry {
        let endpoint = format!("https://api.ecr.{region}.{api_suffix}");
        // Only the regular partitions' API hosts are on the allow-list; a genuine-looking host
        // must never reach a host outside AWS's suffixes.
        if AmbientEndpoints::default().check(CloudService::AwsEcr, &endpoint).is_ok() {
            assert!(api_suffix.starts_with("amazonaws.com"), "{endpoint}");
        }
    }
});
