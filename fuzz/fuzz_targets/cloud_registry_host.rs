//! The registry host of an OCIRepository with a cloud `provider` (the tenant's `spec.url`),
//! which receives that cloud's login: a host taken as ECR's, ACR's or Google's is wholly such a
//! host (no port, user information or path), and the ECR API endpoint made from it is AWS's own.
#![no_main]

use driftless::identity::ecr::EcrRegistry;
use driftless::identity::endpoints::{AmbientEndpoints, CloudService};
use driftless::identity::{acr, gar};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(host) = std::str::from_utf8(data) else {
        return;
    };
    let lower = host.to_ascii_lowercase();
    let lower = lower.trim_end_matches('.');
    let only_a_host = || {
        assert!(
            !host.contains([':', '/', '@', '?', '#', ' ']),
            "{host:?} carries more than a host"
        )
    };
    if acr::is_registry(host) {
        only_a_host();
        assert!(
            ["azurecr.io", "azurecr.cn", "azurecr.de", "azurecr.us"]
                .iter()
                .any(|s| lower.ends_with(&format!(".{s}"))),
            "{host:?} taken as ACR"
        );
    }
    if gar::is_registry(host) {
        only_a_host();
        assert!(
            lower == "gcr.io"
                || lower.ends_with(".gcr.io")
                || lower.ends_with("-docker.pkg.dev")
                || lower == "docker.s3nsregistry.fr",
            "{host:?} taken as Google's"
        );
    }
    let Some(registry) = EcrRegistry::parse(host) else {
        return;
    };
    only_a_host();
    assert!(
        lower == "public.ecr.aws" || lower.contains(".dkr"),
        "{host:?} taken as ECR"
    );
    if let EcrRegistry::Private { region, api_suffix } = &registry {
        let endpoint = format!("https://api.ecr.{region}.{api_suffix}");
        // Only the regular partitions' API hosts are on the allow-list; a genuine-looking host
        // must never reach a host outside AWS's suffixes.
        if AmbientEndpoints::default()
            .check(CloudService::AwsEcr, &endpoint)
            .is_ok()
        {
            assert!(api_suffix.starts_with("amazonaws.com"), "{endpoint}");
        }
    }
});
