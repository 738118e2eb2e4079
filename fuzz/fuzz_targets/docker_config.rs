//! Pull secrets (`.dockerconfigjson`, `.dockercfg`) and proxy Secrets of a tenant.
#![no_main]

use std::collections::BTreeMap;

use driftless::oci::credentials::DockerConfig;
use driftless::transport::proxy_from_secret;
use libfuzzer_sys::fuzz_target;

const REPOSITORIES: &[(&str, &str)] = &[
    ("index.docker.io", "library/nginx"),
    ("ghcr.io", "org/app"),
    ("localhost:5000", "a/b/c"),
    ("123.dkr.ecr.eu-west-1.amazonaws.com", "app"),
];

fuzz_target!(|data: &[u8]| {
    for key in [".dockerconfigjson", ".dockercfg"] {
        let secret = BTreeMap::from([(key.to_string(), data.to_vec())]);
        if let Ok(config) = DockerConfig::from_secret_data(&secret) {
            for (registry, repository) in REPOSITORIES {
                let _ = config.lookup(registry, repository);
            }
        }
    }
    let _ = proxy_from_secret(&BTreeMap::from([("address".to_string(), data.to_vec())]));
});
