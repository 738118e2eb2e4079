//! A SOPS file as a tenant's artifact holds it, in each format, decrypted with a fixed age
//! key: never a panic, only a decryption result or an error; an error never repeats the
//! first byte-run of the key's identity.
#![no_main]

use std::sync::LazyLock;

use driftless::apply::sops::{Format, Keyring, decrypt_file};
use libfuzzer_sys::fuzz_target;

/// An age identity made for this target (not a secret anywhere else).
const IDENTITY: &str = "AGE-SECRET-KEY-12JADLQTKZM8T9W5FKLH0HPPTKZC3X8G0MW2G420CHUNL7QG7L7JQZ27NJ4";

static KEYS: LazyLock<Keyring> = LazyLock::new(|| {
    let entries = [("fuzz.agekey", IDENTITY.as_bytes())];
    Keyring::from_entries(entries, "Secret 'fuzz/keys'").unwrap_or_else(|e| panic!("{e}"))
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, content)) = data.split_first() else {
        return;
    };
    let format = [Format::Yaml, Format::Json, Format::Dotenv, Format::Binary, Format::Ini]
        [usize::from(selector) % 5];
    if let Err(e) = decrypt_file(content, format, &KEYS) {
        assert!(!e.contains(IDENTITY));
    }
});
