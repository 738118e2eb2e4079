//! A tenant's Notary Project `trustpolicy.json` (the verification Secret), then the statement
//! for a repository, its actions and its trusted identities against a subject.
#![no_main]

use driftless::verify::notation::trust_policy::{Check, TrustPolicy, parse_dn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = TrustPolicy::parse(data) else {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = parse_dn(text);
        }
        return;
    };
    for path in ["r.io/app", "registry.example.com:5000/a/b"] {
        if let Ok(statement) = policy.applicable(path) {
            for check in [Check::Integrity, Check::Authenticity, Check::Revocation] {
                let _ = statement.action(check);
            }
            if let Ok(subject) = parse_dn("C=US, ST=WA, O=Driftless Test, CN=signer") {
                let _ = statement.trusts_subject(&subject);
            }
        }
    }
});
