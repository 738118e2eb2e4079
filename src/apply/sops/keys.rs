//! The keys of `spec.decryption.secretRef` (Flux's `ImportKeys`), and a file's data key
//! recovered with them.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use k8s_openapi::ByteString;
use pgp::composed::{Deserializable, Message, SignedSecretKey};
use pgp::types::Password;

use zeroize::Zeroizing;

use super::cipher::DataKey;
use super::cloud::{self, VaultToken};
use super::kms::{self, KmsAccess};
use super::metadata::{MasterKey, Metadata};
use super::shamir;
use super::vault_login::VaultLogin;
use crate::identity::aws::{AwsAuth, StaticKeys};
use crate::identity::entra::EntraCredential;
use crate::identity::google::GoogleCredential;

/// What one Kustomization may decrypt with.
pub struct Keyring {
    /// Where the keys came from, for messages: `Secret '<ns>/<name>'`.
    source: String,
    age: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// OpenPGP secret keys (without passphrase, as Flux imports them with `gpg --batch`).
    pgp: Vec<SignedSecretKey>,
    /// The keys of a `sops.aws-kms` entry.
    aws_keys: Option<StaticKeys>,
    /// The credential of a `sops.azure-kv` entry.
    azure: Option<EntraCredential>,
    /// The credential of a `sops.gcp-kms` entry.
    gcp: Option<GoogleCredential>,
    /// The token of a `sops.vault-token` entry.
    vault: Option<String>,
    /// How KMS is reached, once the controller has said (`with_kms`), or why it cannot be.
    kms: Option<Result<KmsAccess, String>>,
    /// How the other clouds' key services are reached (`with_kms`).
    cloud: Option<CloudAccess>,
}

/// Credentials for Azure Key Vault, Cloud KMS and Vault transit, each the Secret's, else the
/// object's identity, else the controller's; or why there is none.
struct CloudAccess {
    http: reqwest::Client,
    azure: Result<EntraCredential, String>,
    gcp: Result<GoogleCredential, String>,
    vault: Result<VaultToken, String>,
}

/// The identities of `spec.decryption.serviceAccountName` (or the default), per cloud; each is
/// an error when the ServiceAccount lacks what that cloud needs (reported only when a key of
/// that cloud is tried).
pub struct ObjectIdentity {
    pub aws: Result<AwsAuth, String>,
    pub azure: Result<EntraCredential, String>,
    pub gcp: Result<GoogleCredential, String>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("source", &self.source)
            .field("age", &self.age.len())
            .field("pgp", &self.pgp.len())
            .finish()
    }
}

impl Keyring {
    /// The keys of a decryption Secret's entries: `*.agekey` (age identities, one per line),
    /// `*.asc` (OpenPGP), `sops.aws-kms`, `sops.azure-kv`, `sops.gcp-kms`,
    /// `sops.vault-token`; other entries are not keys.
    pub fn from_secret(data: &BTreeMap<String, ByteString>, source: &str) -> Result<Self, String> {
        Self::from_entries(
            data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())),
            source,
        )
    }

    /// `from_secret`, from (name, content) pairs.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        source: &str,
    ) -> Result<Self, String> {
        let mut keyring = Keyring {
            source: source.to_string(),
            age: Vec::new(),
            pgp: Vec::new(),
            aws_keys: None,
            azure: None,
            gcp: None,
            vault: None,
            kms: None,
            cloud: None,
        };
        for (name, value) in entries {
            let failed = |e: String| {
                format!("failed to import '{name}' data from sops decryption {source}: {e}")
            };
            match name.rsplit_once('.').map(|(_, ext)| ext) {
                Some("agekey") => {
                    let file = age::IdentityFile::from_buffer(value)
                        .and_then(|f| f.into_identities().map_err(std::io::Error::other))
                        .map_err(|e| {
                            failed(format!("failed to parse and add to age identities: {e}"))
                        })?;
                    keyring.age.extend(file);
                }
                Some("asc") => keyring.pgp.extend(
                    secret_keys(value)
                        .map_err(|e| failed(format!("failed to import OpenPGP keys: {e}")))?,
                ),
                _ if name == "sops.aws-kms" => {
                    keyring.aws_keys = Some(kms::static_keys(value).map_err(failed)?);
                }
                _ if name == "sops.azure-kv" => {
                    keyring.azure = Some(cloud::azure_credential(value).map_err(failed)?);
                }
                _ if name == "sops.gcp-kms" => {
                    keyring.gcp = Some(cloud::gcp_credential(value).map_err(failed)?);
                }
                _ if name == "sops.vault-token" => {
                    keyring.vault = Some(cloud::vault_token(value).map_err(failed)?);
                }
                _ => {}
            }
        }
        Ok(keyring)
    }

    /// The key services through `http`, each with the Secret's entry, else the object's
    /// ServiceAccount identity (`object`), else the controller's own identity (Flux's order).
    /// Vault: the Secret's token, else a Kubernetes auth `vault_login`, else the controller's
    /// `VAULT_TOKEN`.
    pub fn with_kms(
        mut self,
        http: reqwest::Client,
        object: Option<ObjectIdentity>,
        vault_login: Option<VaultLogin>,
    ) -> Self {
        let (aws, azure, gcp) = match object {
            Some(o) => (Some(o.aws), Some(o.azure), Some(o.gcp)),
            None => (None, None, None),
        };
        let auth = match (self.aws_keys.clone(), aws) {
            (Some(keys), _) => Ok(AwsAuth::Static(keys)),
            (None, Some(object)) => object,
            (None, None) => Ok(AwsAuth::Chain { sts_endpoint: None }),
        };
        self.kms = Some(auth.map(|auth| KmsAccess {
            http: http.clone(),
            auth,
        }));
        let azure = match (self.azure.clone(), azure) {
            (Some(own), _) => Ok(own),
            (None, Some(object)) => object,
            (None, None) => Ok(EntraCredential::from_environment()),
        };
        let gcp = match (self.gcp.clone(), gcp) {
            (Some(own), _) => Ok(own),
            (None, Some(object)) => object,
            (None, None) => GoogleCredential::from_environment(),
        };
        let controller = VaultToken::from_environment();
        let vault = match (self.vault.clone(), vault_login, controller) {
            (Some(own), _, _) => Ok(VaultToken::Secret(own)),
            (None, Some(login), controller) => Ok(VaultToken::Login {
                login: Arc::new(login),
                controller,
            }),
            (None, None, Some(controller)) => Ok(VaultToken::Controller(controller)),
            (None, None, None) => {
                Err("no Vault token: add a sops.vault-token entry to the decryption Secret".into())
            }
        };
        self.cloud = Some(CloudAccess {
            http,
            azure,
            gcp,
            vault,
        });
        self
    }

    /// The data key: from the first master key this keyring opens, or, when the file splits
    /// it across key groups, combined from the shares of `shamir_threshold` groups (a share
    /// from any key of its group). Every failure is named: the key, and why it did not open.
    pub fn data_key(&self, metadata: &Metadata) -> Result<DataKey, String> {
        let mut failures = Vec::new();
        if let [group] = metadata.groups.as_slice() {
            return match self.open_any(group, &mut failures) {
                Some(key) => DataKey::new(&key),
                None => Err(self.none_opened(&failures)),
            };
        }
        let threshold = match metadata.shamir_threshold {
            0 => metadata.groups.len(),
            t => usize::try_from(t).unwrap_or(usize::MAX),
        };
        let mut shares = Vec::new();
        for group in &metadata.groups {
            if shares.len() == threshold {
                break;
            }
            shares.extend(self.open_any(group, &mut failures));
        }
        if shares.len() < threshold {
            return Err(format!(
                "{} (the data key is split across {} key groups and needs {threshold}; {} opened)",
                self.none_opened(&failures),
                metadata.groups.len(),
                shares.len()
            ));
        }
        let key = Zeroizing::new(
            shamir::combine(&shares)
                .map_err(|e| format!("cannot combine the key groups' shares: {e}"))?,
        );
        DataKey::new(&key)
    }

    /// What the first key of `group` to open holds, in sops's order: age, then OpenPGP, then
    /// the rest as the file lists them (no KMS call when a local key opens the file).
    fn open_any(
        &self,
        group: &[MasterKey],
        failures: &mut Vec<String>,
    ) -> Option<Zeroizing<Vec<u8>>> {
        let rank = |k: &MasterKey| match k {
            MasterKey::Age { .. } => 0,
            MasterKey::Pgp { .. } => 1,
            _ => 2,
        };
        let mut keys: Vec<&MasterKey> = group.iter().collect();
        keys.sort_by_key(|k| rank(k));
        for key in keys {
            match self.open(key) {
                Ok(plain) => return Some(plain),
                Err(why) => failures.push(format!("{}: {why}", key.describe())),
            }
        }
        None
    }

    fn none_opened(&self, failures: &[String]) -> String {
        format!(
            "cannot get sops data key: none of the file's keys can be opened with {}: {}",
            self.source,
            failures.join("; ")
        )
    }

    fn open(&self, key: &MasterKey) -> Result<Zeroizing<Vec<u8>>, String> {
        match key {
            MasterKey::Age { enc, .. } => self.open_age(enc),
            MasterKey::Pgp { enc, .. } => self.open_pgp(enc),
            MasterKey::Kms {
                arn,
                enc,
                role,
                context,
            } => {
                let access = match &self.kms {
                    Some(Ok(access)) => access,
                    Some(Err(why)) => return Err(why.clone()),
                    None => return Err("no access to AWS KMS configured".into()),
                };
                block_on(kms::decrypt(access, arn, enc, role, context))?
            }
            MasterKey::AzureKv {
                vault_url,
                name,
                version,
                enc,
            } => {
                let cloud = self.cloud()?;
                let credential = cloud.azure.as_ref().map_err(Clone::clone)?;
                block_on(cloud::azure_decrypt(
                    &cloud.http,
                    credential,
                    vault_url,
                    name,
                    version,
                    enc,
                ))?
            }
            MasterKey::GcpKms { resource_id, enc } => {
                let cloud = self.cloud()?;
                let credential = cloud.gcp.as_ref().map_err(Clone::clone)?;
                block_on(cloud::gcp_decrypt(
                    &cloud.http,
                    credential,
                    resource_id,
                    enc,
                ))?
            }
            MasterKey::Vault {
                address,
                engine_path,
                key_name,
                enc,
            } => {
                let cloud = self.cloud()?;
                let token = cloud.vault.as_ref().map_err(Clone::clone)?;
                block_on(cloud::vault_decrypt(
                    &cloud.http,
                    token,
                    address,
                    engine_path,
                    key_name,
                    enc,
                ))?
            }
            MasterKey::Other { kind, .. } => {
                Err(format!("{kind} keys are not supported by driftless"))
            }
        }
    }

    fn cloud(&self) -> Result<&CloudAccess, String> {
        self.cloud
            .as_ref()
            .ok_or_else(|| "no access to cloud key services configured".to_string())
    }

    /// Keys are used without a passphrase, as Flux's `gpg --batch` import needs them.
    fn open_pgp(&self, enc: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        if self.pgp.is_empty() {
            return Err("no OpenPGP key in the Secret".into());
        }
        let (message, _) = Message::from_string(enc).map_err(|e| e.to_string())?;
        let no_password = Password::empty();
        let passwords = vec![&no_password; self.pgp.len()];
        let mut message = message
            .decrypt_with_keys(passwords, self.pgp.iter().collect())
            .map_err(|e| e.to_string())?;
        if message.is_compressed() {
            message = message.decompress().map_err(|e| e.to_string())?;
        }
        read_data_key(message)
    }

    fn open_age(&self, enc: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        if self.age.is_empty() {
            return Err("no age identity in the Secret".into());
        }
        let armored = age::armor::ArmoredReader::new(enc.as_bytes());
        let decryptor = age::Decryptor::new(armored).map_err(|e| e.to_string())?;
        let identities = self.age.iter().map(|i| i.as_ref() as &dyn age::Identity);
        let reader = decryptor.decrypt(identities).map_err(|e| e.to_string())?;
        read_data_key(reader)
    }
}

/// The secret keys of an armored block (`gpg --export-secret-keys --armor`).
fn secret_keys(armored: &[u8]) -> Result<Vec<SignedSecretKey>, String> {
    let text = std::str::from_utf8(armored).map_err(|_| "not armored text".to_string())?;
    let (keys, _) = SignedSecretKey::from_string_many(text).map_err(|e| e.to_string())?;
    keys.map(|k| k.map_err(|e| e.to_string())).collect()
}

/// What a master key holds (a data key, or a share of one), read with a bound (a hostile
/// file's "key" could be a decompression bomb).
fn read_data_key(reader: impl Read) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut plain = Zeroizing::new(Vec::new());
    reader
        .take(64)
        .read_to_end(&mut plain)
        .map_err(|e| e.to_string())?;
    Ok(plain)
}

/// Runs a KMS call from the blocking threads decryption runs on (or from a plain thread).
fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, String> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(future)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(future))
            .map_err(|e| format!("no runtime for the KMS call: {e}")),
    }
}
