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
    let plain =
        "[db]\nhost     = example.internal\npassword = s3cr3t;with#marks\n\n[app]\nmode = `a;b`\n";
    let source = "; database\n[db]\nhost = example.internal\npassword = `s3cr3t;with#marks`\n\n[app]\nmode = `a;b`\n";
    let encrypted = sops.encrypt(&key.recipient, "app.ini", source, &[]);
    assert!(
        encrypted.contains("[sops]") && !encrypted.contains("s3cr3t"),
        "{encrypted}"
    );
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

/// Azure Key Vault and GCP Cloud KMS keys, against the platform's stand-ins for the two services
/// (hack/cloud-registry.py: real RSA-OAEP-256 and AES-GCM under keys it makes; no emulator of
/// either service can be installed here), reached under their own names through a routing
/// proxy. The Cloud KMS file is encrypted by the real sops (its REST client); the Key Vault
/// entry is what sops writes, made from the data key of an age-encrypted sops file (sops needs
/// Entra ID's real discovery endpoints to encrypt with Key Vault). Tokens come from the Secret's
/// `sops.gcp-kms` service account key and `sops.azure-kv` service principal; a Key Vault URL
/// that is not a Key Vault host never receives one.
#[tokio::test(flavor = "multi_thread")]
async fn azure_key_vault_and_cloud_kms_keys_open_the_file() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use support::listener::{Listener, Request};

    let platform = support::platform();
    let sops = Sops::new(&platform);
    let clouds = platform.env["DRIFTLESS_CLOUD_TOKEN_REGISTRY"].clone();
    let ca_path = std::path::Path::new(&platform.env["DRIFTLESS_PLATFORM_DIR"]).join("pki/ca.crt");
    let ca = std::fs::read(&ca_path).unwrap();
    let routes = [
        ("team.vault.azure.net:443", clouds.as_str()),
        ("cloudkms.googleapis.com:443", clouds.as_str()),
    ];
    let proxy = support::proxy::Proxy::start_routing(None, &routes).await;
    let http = reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(format!("http://127.0.0.1:{}", proxy.port)).unwrap())
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();

    // Google's OAuth endpoint for the service account key, and Entra ID's for the principal.
    fn google_oauth(request: &Request) -> support::listener::Answer {
        let ok = request
            .body
            .contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
        let token = format!(
            "{}:kms-reader",
            support::platform().env["DRIFTLESS_GOOGLE_TOKEN_PREFIX"]
        );
        let body =
            serde_json::json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"});
        (
            if ok { 200 } else { 400 },
            vec![("content-type", "application/json".into())],
            body.to_string(),
        )
    }
    fn entra(request: &Request) -> support::listener::Answer {
        let ok = request.path == "/tenant-1/oauth2/v2.0/token"
            && request.body.contains("client_secret=kv-secret")
            && request
                .body
                .contains("scope=https%3A%2F%2Fvault.azure.net%2F.default");
        let token = format!(
            "{}:kv-reader",
            support::platform().env["DRIFTLESS_ENTRA_TOKEN_PREFIX"]
        );
        let body =
            serde_json::json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"});
        (
            if ok { 200 } else { 400 },
            vec![("content-type", "application/json".into())],
            body.to_string(),
        )
    }
    let oauth = Listener::start(google_oauth).await;
    let entra_id = Listener::start(entra).await;

    // Cloud KMS: the real sops encrypts through the stand-in.
    let resource = "projects/p1/locations/global/keyRings/r1/cryptoKeys/k1";
    let google_token = format!("{}:sops", platform.env["DRIFTLESS_GOOGLE_TOKEN_PREFIX"]);
    let endpoint = format!("https://{clouds}");
    let encrypted = sops.encrypt_env(
        &["--gcp-kms", resource],
        &[
            ("SOPS_GCP_KMS_CLIENT_TYPE", "rest"),
            ("SOPS_GCP_KMS_ENDPOINT", &endpoint),
            ("SSL_CERT_FILE", ca_path.to_str().unwrap()),
            ("GOOGLE_OAUTH_ACCESS_TOKEN", &google_token),
        ],
        "gcp.yaml",
        SECRET,
        &[],
    );
    assert!(encrypted.contains("gcp_kms:") && !encrypted.contains("hunter2-plaintext"));
    let key = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .unwrap();
    let service_account = serde_json::json!({
        "type": "service_account",
        "client_email": "kms-reader@p1.iam.gserviceaccount.com",
        "private_key": String::from_utf8(key.stdout).unwrap(),
        "token_uri": format!("http://{}/token", oauth.address()),
    });
    let gcp_keys = Keyring::from_entries(
        [("sops.gcp-kms", service_account.to_string().as_bytes())],
        "Secret 'test/gcp'",
    )
    .unwrap()
    .with_kms(http.clone(), None, None);
    let file = encrypted.clone();
    let plain =
        tokio::task::spawn_blocking(move || decrypt_file(file.as_bytes(), Format::Yaml, &gcp_keys))
            .await
            .unwrap()
            .unwrap();
    decrypted_equals_plain(&plain, SECRET);
    assert_eq!(oauth.requests().len(), 1, "one token for the key");

    // Key Vault: the data key of an age-encrypted file, encrypted by the vault.
    let age_key = sops.age_key();
    let json_plain = r#"{"user": "admin", "password": "hunter2-plaintext"}"#;
    let encrypted = sops.encrypt(&age_key.recipient, "kv.json", json_plain, &[]);
    let mut file: serde_json::Value = serde_json::from_str(&encrypted).unwrap();
    let armored = file["sops"]["age"][0]["enc"].as_str().unwrap().to_string();
    let identity = age::IdentityFile::from_buffer(age_key.identity.as_bytes())
        .unwrap()
        .into_identities()
        .unwrap();
    let decryptor =
        age::Decryptor::new(age::armor::ArmoredReader::new(armored.as_bytes())).unwrap();
    let mut data_key = Vec::new();
    std::io::Read::read_to_end(
        &mut decryptor
            .decrypt(identity.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .unwrap(),
        &mut data_key,
    )
    .unwrap();
    let vault_token = format!("{}:test", platform.env["DRIFTLESS_ENTRA_TOKEN_PREFIX"]);
    let wrapped: serde_json::Value = http
        .post("https://team.vault.azure.net/keys/sops/v1/encrypt?api-version=2025-07-01")
        .bearer_auth(vault_token)
        .json(
            &serde_json::json!({"alg": "RSA-OAEP-256", "value": URL_SAFE_NO_PAD.encode(&data_key)}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sops_section = file["sops"].as_object_mut().unwrap();
    sops_section.remove("age");
    sops_section.insert(
        "azure_kv".into(),
        serde_json::json!([{
            "vault_url": "https://team.vault.azure.net",
            "name": "sops",
            "version": "v1",
            "created_at": "2026-12-04T00:00:00Z",
            "enc": wrapped["value"],
        }]),
    );
    let principal = serde_json::json!({
        "tenantId": "tenant-1",
        "clientId": "kv-client",
        "clientSecret": "kv-secret",
        "authorityHost": format!("http://{}/", entra_id.address()),
    });
    let kv_keys = std::sync::Arc::new(
        Keyring::from_entries(
            [("sops.azure-kv", principal.to_string().as_bytes())],
            "Secret 'test/azure'",
        )
        .unwrap()
        .with_kms(http.clone(), None, None),
    );
    // The values keep sops's key order (the MAC is over the values in file order): only the
    // `sops` object, last in the file, is written anew.
    let with_sops = |sops: &serde_json::Value| {
        let at = encrypted.rfind("\"sops\":").unwrap();
        format!("{}\"sops\": {sops}\n}}\n", &encrypted[..at])
    };
    let kv_file = with_sops(&file["sops"]);
    let keys = kv_keys.clone();
    let plain =
        tokio::task::spawn_blocking(move || decrypt_file(kv_file.as_bytes(), Format::Json, &keys))
            .await
            .unwrap()
            .unwrap();
    decrypted_equals_plain(&plain, json_plain);

    // A file naming another host as its Key Vault gets no token.
    file["sops"]["azure_kv"][0]["vault_url"] =
        serde_json::json!("https://vault.azure.net.attacker.example");
    let asked = entra_id.requests().len();
    let hostile = with_sops(&file["sops"]);
    let keys = kv_keys.clone();
    let e =
        tokio::task::spawn_blocking(move || decrypt_file(hostile.as_bytes(), Format::Json, &keys))
            .await
            .unwrap()
            .unwrap_err();
    assert!(e.contains("no Entra ID token is sent there"), "{e}");
    assert!(!e.contains("hunter2-plaintext"));
    assert_eq!(entra_id.requests().len(), asked, "no token asked for it");
}

/// Vault transit keys, against the platform's Vault dev server (its transit engine): the real
/// sops encrypts with `--hc-vault-transit`; the Secret's `sops.vault-token` opens the file; a
/// token Vault does not know is refused by Vault, and the message names the backend.
#[tokio::test(flavor = "multi_thread")]
async fn vault_transit_keys_open_the_file_with_the_secrets_token() {
    let platform = support::platform();
    let sops = Sops::new(&platform);
    let address = platform.env["DRIFTLESS_VAULT_ADDR"].clone();
    let root = platform.env["DRIFTLESS_VAULT_TOKEN"].clone();
    let key = format!("{address}/v1/transit/keys/sops");
    let encrypted = sops.encrypt_env(
        &["--hc-vault-transit", &key],
        &[("VAULT_TOKEN", &root)],
        "vault.yaml",
        SECRET,
        &[],
    );
    assert!(
        encrypted.contains("hc_vault:") && encrypted.contains("vault:v1:"),
        "{encrypted}"
    );
    let decrypt = |token: &str| {
        let keys = Keyring::from_entries(
            [("sops.vault-token", token.as_bytes())],
            "Secret 'test/vault'",
        )
        .unwrap()
        .with_kms(reqwest::Client::new(), None, None);
        let file = encrypted.clone();
        tokio::task::spawn_blocking(move || decrypt_file(file.as_bytes(), Format::Yaml, &keys))
    };
    let plain = decrypt(&format!("{root}\n")).await.unwrap().unwrap();
    decrypted_equals_plain(&plain, SECRET);
    let e = decrypt("s.not-a-vault-token").await.unwrap().unwrap_err();
    assert!(
        e.contains("Vault transit backend 'transit/decrypt/sops'")
            && e.contains("permission denied"),
        "{e}"
    );
    assert!(!e.contains("hunter2-plaintext"));
}
