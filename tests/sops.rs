//! SOPS decryption against what the real `sops` CLI encrypts (age keys from `age-keygen`):
//! every format Flux decrypts, the MAC, and the failures a wrong, missing or tampered file
//! gives. No plaintext ever appears in an error.

mod support;

use std::collections::BTreeMap;

use driftless::apply::sops::{Format, Keyring, decrypt_file};
use driftless::apply::yaml::{Ordered, ordered_documents};
use k8s_openapi::ByteString;
use support::sops::{AgeKey, Sops};

fn keyring(keys: &[&AgeKey]) -> Keyring {
    let data: BTreeMap<String, ByteString> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                format!("k{i}.agekey"),
                ByteString(k.identity.clone().into_bytes()),
            )
        })
        .collect();
    Keyring::from_secret(&data, "Secret 'test/sops-keys'").unwrap()
}

const SECRET: &str = concat!(
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  labels: {app: web}\n",
    "type: Opaque\nstringData:\n  password: hunter2-plaintext\n  port: 5432\n  ratio: 1.50\n",
    "  on: yes\n  enabled: true\n  when: 2001-12-14\n  list: [a, 1, {deep: x}]\n  empty: ''\n",
    "  unicode: \"caf\\u00e9 \\U0001F600\"\n",
);

fn setup() -> (Sops, AgeKey) {
    let platform = support::platform();
    let sops = Sops::new(&platform);
    let key = sops.age_key();
    (sops, key)
}

/// The same documents; a timestamp may come back as its RFC 3339 text (a quoted string in the
/// YAML written back: what kustomize and the API server make of it either way).
fn decrypted_equals_plain(decrypted: &[u8], plain: &str) {
    fn text_times(node: Ordered) -> Ordered {
        match node {
            Ordered::Time(t) => Ordered::Str(t),
            Ordered::Seq(items) => Ordered::Seq(items.into_iter().map(text_times).collect()),
            Ordered::Map(entries) => Ordered::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, text_times(v)))
                    .collect(),
            ),
            other => other,
        }
    }
    let docs = |text: &str| -> Vec<Ordered> {
        ordered_documents(text)
            .unwrap()
            .into_iter()
            .map(text_times)
            .collect()
    };
    assert_eq!(docs(std::str::from_utf8(decrypted).unwrap()), docs(plain));
}

#[test]
fn yaml_with_every_scalar_type_decrypts_to_what_was_encrypted() {
    let (sops, key) = setup();
    let keys = keyring(&[&key]);
    for args in [
        &[][..],
        &["--encrypted-regex", "^(data|stringData)$"][..],
        &["--unencrypted-suffix", "_plain"][..],
    ] {
        let encrypted = sops.encrypt(&key.recipient, "secret.yaml", SECRET, args);
        assert!(!encrypted.contains("hunter2-plaintext"));
        let plain = decrypt_file(encrypted.as_bytes(), Format::Yaml, &keys).unwrap();
        decrypted_equals_plain(&plain, SECRET);
    }
}

#[test]
fn multi_document_yaml_json_dotenv_and_binary() {
    let (sops, key) = setup();
    let keys = keyring(&[&key]);
    let docs = "a: 1\nb: [x, y]\n---\nc: {d: e}\n";
    let encrypted = sops.encrypt(&key.recipient, "docs.yaml", docs, &[]);
    decrypted_equals_plain(
        &decrypt_file(encrypted.as_bytes(), Format::Yaml, &keys).unwrap(),
        docs,
    );

    let json = r#"{"user": "admin", "n": 3, "f": 2.5, "nested": {"list": [true, "s"]}}"#;
    let encrypted = sops.encrypt(&key.recipient, "creds.json", json, &[]);
    decrypted_equals_plain(
        &decrypt_file(encrypted.as_bytes(), Format::Json, &keys).unwrap(),
        json,
    );

    let env = "USER=admin\nPASSWORD=s3cr3t=with=equals\nMULTI=line1\\nline2\n";
    let encrypted = sops.encrypt(&key.recipient, "app.env", env, &[]);
    let plain = decrypt_file(encrypted.as_bytes(), Format::Dotenv, &keys).unwrap();
    assert_eq!(String::from_utf8(plain).unwrap(), env);

    let binary = "any bytes: \u{1}\u{2} and text\n";
    let encrypted = sops.encrypt(&key.recipient, "blob.bin", binary, &[]);
    let plain = decrypt_file(encrypted.as_bytes(), Format::Binary, &keys).unwrap();
    assert_eq!(String::from_utf8(plain).unwrap(), binary);
}

#[test]
fn any_of_several_recipients_opens_the_file() {
    let (sops, key) = setup();
    let other = sops.age_key();
    let both = format!("{},{}", key.recipient, other.recipient);
    let encrypted = sops.encrypt(&both, "secret.yaml", SECRET, &[]);
    let plain = decrypt_file(encrypted.as_bytes(), Format::Yaml, &keyring(&[&other])).unwrap();
    decrypted_equals_plain(&plain, SECRET);
}

#[test]
fn tampering_a_wrong_key_and_no_key_fail_naming_the_cause_without_plaintext() {
    let (sops, key) = setup();
    let encrypted = sops.encrypt(
        &key.recipient,
        "secret.yaml",
        SECRET,
        &["--encrypted-regex", "^(data|stringData)$"],
    );
    let keys = keyring(&[&key]);
    let fails = |content: &str, keys: &Keyring| {
        let e = decrypt_file(content.as_bytes(), Format::Yaml, keys).unwrap_err();
        assert!(!e.contains("hunter2"), "plaintext in {e}");
        e
    };
    // An unencrypted value changed: only the MAC can tell.
    let renamed = encrypted.replace("name: db", "name: other");
    assert_ne!(renamed, encrypted);
    let e = fails(&renamed, &keys);
    assert!(e.starts_with("MAC mismatch"), "{e}");
    // The rule fields are not authenticated: switching to a comment rule must not turn the
    // MAC check off.
    let by_comment = renamed.replace("encrypted_regex:", "encrypted_comment_regex:");
    assert_ne!(by_comment, renamed);
    let e = fails(&by_comment, &keys);
    assert!(e.starts_with("MAC mismatch"), "{e}");
    // A value moved to another key: its path is the additional data.
    let moved = encrypted.replacen("password:", "stolen:", 1);
    let e = fails(&moved, &keys);
    assert!(
        e.contains("could not decrypt value at 'stringData.stolen'")
            && e.contains("message authentication failed"),
        "{e}"
    );
    // A ciphertext changed.
    let at = encrypted.find("password: ENC[AES256_GCM,data:").unwrap() + 31;
    let mut bytes = encrypted.clone().into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let e = fails(&String::from_utf8(bytes).unwrap(), &keys);
    assert!(e.contains("message authentication failed"), "{e}");
    // Another age key.
    let stranger = sops.age_key();
    let e = fails(&encrypted, &keyring(&[&stranger]));
    assert!(
        e.starts_with("cannot get sops data key") && e.contains(&key.recipient),
        "{e}"
    );
    // No key at all.
    let e = fails(&encrypted, &keyring(&[]));
    assert!(e.contains("no age identity in the Secret"), "{e}");
}

#[test]
fn a_malformed_age_key_entry_is_named() {
    let data = BTreeMap::from([(
        "bad.agekey".to_string(),
        ByteString(b"AGE-SECRET-KEY-NOTAKEY\n".to_vec()),
    )]);
    let e = Keyring::from_secret(&data, "Secret 'test/keys'").unwrap_err();
    assert!(
        e.starts_with("failed to import 'bad.agekey' data from sops decryption Secret 'test/keys'"),
        "{e}"
    );
}

#[test]
fn openpgp_keys_from_gpg_open_the_file() {
    let (sops, _) = setup();
    let pgp = sops.pgp_key();
    let encrypted = sops.encrypt_to(&["--pgp", &pgp.fingerprint], "secret.yaml", SECRET, &[]);
    assert!(encrypted.contains("BEGIN PGP MESSAGE"));
    let data = BTreeMap::from([(
        "key.asc".to_string(),
        ByteString(pgp.armored_secret.clone().into_bytes()),
    )]);
    let keys = Keyring::from_secret(&data, "Secret 'test/pgp'").unwrap();
    let plain = decrypt_file(encrypted.as_bytes(), Format::Yaml, &keys).unwrap();
    decrypted_equals_plain(&plain, SECRET);
    // Another OpenPGP key does not.
    let other = sops.pgp_key();
    let data = BTreeMap::from([(
        "other.asc".to_string(),
        ByteString(other.armored_secret.into_bytes()),
    )]);
    let keys = Keyring::from_secret(&data, "Secret 'test/pgp'").unwrap();
    let e = decrypt_file(encrypted.as_bytes(), Format::Yaml, &keys).unwrap_err();
    assert!(e.contains(&format!("pgp {}", pgp.fingerprint)), "{e}");
}

#[test]
fn comment_rule_files_decrypt_with_their_mac_checked() {
    let (sops, key) = setup();
    let keys = keyring(&[&key]);
    let plain = "a: plain\n# sops:enc\nb: secret-by-comment\nc: 3\n";
    sops.config(&format!(
        "creation_rules:\n- encrypted_comment_regex: sops:enc\n  age: {}\n",
        key.recipient
    ));
    let encrypted = sops.encrypt_to(&[], "comments.yaml", plain, &[]);
    assert!(encrypted.contains("encrypted_comment_regex"));
    assert!(!encrypted.contains("secret-by-comment"));
    let decrypted = decrypt_file(encrypted.as_bytes(), Format::Yaml, &keys).unwrap();
    decrypted_equals_plain(&decrypted, plain);
    let edited = encrypted.replace("a: plain", "a: edited");
    let e = decrypt_file(edited.as_bytes(), Format::Yaml, &keys).unwrap_err();
    assert!(e.starts_with("MAC mismatch"), "{e}");
}

/// A data key split across three key groups with a threshold of two (Shamir secret sharing, as
/// `shamir_threshold` and `key_groups` in `.sops.yaml` make it): any two groups' keys open the
/// file, one alone does not, and the message says how many shares were needed.
#[test]
fn shamir_key_groups_open_with_a_threshold_of_their_keys() {
    let (sops, first) = setup();
    let second = sops.age_key();
    let third = sops.age_key();
    sops.config(&format!(
        "creation_rules:\n- shamir_threshold: 2\n  key_groups:\n  - age: [{}]\n  - age: [{}]\n  - age: [{}]\n",
        first.recipient, second.recipient, third.recipient
    ));
    let encrypted = sops.encrypt_to(&[], "split.yaml", SECRET, &[]);
    assert!(encrypted.contains("shamir_threshold: 2"), "{encrypted}");
    for pair in [[&first, &second], [&first, &third], [&second, &third]] {
        let plain = decrypt_file(encrypted.as_bytes(), Format::Yaml, &keyring(&pair)).unwrap();
        decrypted_equals_plain(&plain, SECRET);
    }
    let e = decrypt_file(encrypted.as_bytes(), Format::Yaml, &keyring(&[&third])).unwrap_err();
    assert!(e.contains("needs 2; 1 opened"), "{e}");
    assert!(!e.contains("hunter2-plaintext"));
}

/// INI files (as a `secretGenerator` reads them): sections and keys decrypt to the text sops
/// itself would print, with comments and the `[sops]` section gone; a tampered value fails the
/// MAC.
#[test]
fn ini_files_decrypt_to_ini() {
    let (sops, key) = setup();
    let keys = keyring(&[&key]);
    let plain = "[db]\nhost     = example.internal\npassword = s3cr3t;with#marks\n\n[app]\nmode = `a;b`\n";
    let source = "; database\n[db]\nhost = example.internal\npassword = `s3cr3t;with#marks`\n\n[app]\nmode = `a;b`\n";
    let encrypted = sops.encrypt(&key.recipient, "app.ini", source, &[]);
    assert!(encrypted.contains("[sops]") && !encrypted.contains("s3cr3t"), "{encrypted}");
    let decrypted = decrypt_file(encrypted.as_bytes(), Format::Ini, &keys).unwrap();
    assert_eq!(
        String::from_utf8(decrypted).unwrap(),
        plain.replace("s3cr3t;with#marks", "`s3cr3t;with#marks`")
    );
    let mut lines: Vec<String> = encrypted.lines().map(str::to_string).collect();
    let at = lines.iter().position(|l| l.starts_with("host")).unwrap();
    let other = lines.iter().position(|l| l.starts_with("mode")).unwrap();
    let value = lines[other].split_once('=').unwrap().1.to_string();
    lines[at] = format!("host ={value}");
    let e = decrypt_file(lines.join("\n").as_bytes(), Format::Ini, &keys).unwrap_err();
    assert!(!e.contains("s3cr3t"), "{e}");
}
