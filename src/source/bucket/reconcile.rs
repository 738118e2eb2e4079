//! The Bucket reconciler (reference §8.3): credentials → client → streamed listing into the
//! etag index → revision → incremental mirror sync → deterministic tarball.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::azure::{self, AccountUrl, AzureClient};
use super::client::{BucketClient, BucketError, ListLimits, Listed};
use super::gcs::{self, GcsAuth, GcsClient, ServiceAccountKey};
use super::index::{EtagStyle, Index, KeyFilter, Skip, normalize_etag};
use super::mirror::{Mirror, SyncError, SyncLimits};
use super::s3::{AwsAuth, S3Client, StaticKeys};
use super::workload;
use crate::api::bucket::{BucketProvider, STSProvider};
use crate::api::{Artifact, Bucket, BucketStatus};
use crate::artifact::archive::KeepAll;
use crate::artifact::extract::ExtractLimits;
use crate::artifact::ignore::SOURCE_IGNORE_FILE;
use crate::controller::conditions::{self as cond, reason};
use crate::controller::requeue::parse_duration;
use crate::source::oci::credentials::{proxy_from_secret, tls_from_secret, transport};
use crate::source::oci::registry::Transport;
use crate::source::pass::{Failure, Pass, SourceObject, impl_source_status};
use k8s_openapi::api::core::v1::ServiceAccount;

/// The root `.sourceignore` is read whole; past this it is not a pattern file.
const MAX_SOURCE_IGNORE_BYTES: u64 = 1 << 20;
/// How many unsafe keys a warning names, and how much of each.
const UNSAFE_EXAMPLES: usize = 5;
const UNSAFE_EXAMPLE_BYTES: usize = 200;

impl_source_status!(BucketStatus);

impl SourceObject for Bucket {
    type Status = BucketStatus;
    const KIND: &'static str = "Bucket";
    const STORAGE_KIND: &'static str = "bucket";
    fn status(&self) -> Option<&BucketStatus> {
        self.status.as_ref()
    }
    fn interval(&self) -> &str {
        &self.spec.interval
    }
    fn suspended(&self) -> bool {
        self.spec.suspend
    }
    fn run(
        pass: &mut Pass<'_, Self>,
    ) -> impl std::future::Future<Output = Result<(), Failure>> + Send {
        pass.run_bucket()
    }
}

/// The listing, filtered and indexed as it streams in.
struct Listing {
    index: Index,
    /// Versions of the objects the mirror lacks (GCS generations), to bind downloads to.
    versions: HashMap<String, String>,
    unsafe_keys: Vec<(String, &'static str)>,
    unsafe_count: usize,
    total_bytes: u64,
    source_ignore: Option<Vec<u8>>,
}

/// What a listed object is checked against as the listing streams in.
struct Admission<'a> {
    filter: KeyFilter,
    style: EtagStyle,
    recorded: Option<&'a Index>,
    max_object_bytes: u64,
    limits: ExtractLimits,
}

impl Listing {
    /// Indexes one listed object, or skips it; the artifact's limits are enforced here, as
    /// keys arrive, so a listing that would break them ends before memory holds it.
    fn add(&mut self, object: Listed, admission: &Admission<'_>) -> Result<(), BucketError> {
        match admission.filter.check(&object.key) {
            Ok(()) => {}
            Err(Skip::Unsafe(why)) => {
                self.note_unsafe(&object.key, why);
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
        let (max_object, limits) = (admission.max_object_bytes, admission.limits);
        if object.size > max_object {
            return Err(BucketError::Limit(format!(
                "object '{}' is {} bytes, over the per-object limit of {max_object} bytes (--bucket-max-object-size)",
                object.key, object.size
            )));
        }
        self.total_bytes = self.total_bytes.saturating_add(object.size);
        if self.total_bytes > limits.max_bytes {
            return Err(BucketError::Limit(format!(
                "objects to store total more than {0} bytes, over the artifact limit of {0} bytes (--artifact-max-bytes)",
                limits.max_bytes
            )));
        }
        let etag = normalize_etag(admission.style, &object.etag);
        if let Some(version) = object.version
            && admission.recorded.and_then(|r| r.get(&object.key)) != Some(etag.as_str())
        {
            self.versions.insert(object.key.clone(), version);
        }
        self.index.insert(object.key, etag);
        if self.index.len() as u64 > limits.max_files {
            return Err(BucketError::Limit(format!(
                "more than {0} objects to store, over the artifact limit of {0} files (--artifact-max-files)",
                limits.max_files
            )));
        }
        Ok(())
    }

    /// Counts a skipped key; the first few are kept, cut short, for the warning.
    fn note_unsafe(&mut self, key: &str, why: &'static str) {
        self.unsafe_count += 1;
        if self.unsafe_keys.len() < UNSAFE_EXAMPLES {
            self.unsafe_keys
                .push((crate::util::truncate(key, UNSAFE_EXAMPLE_BYTES), why));
        }
    }
}

impl Pass<'_, Bucket> {
    async fn run_bucket(&mut self) -> Result<(), Failure> {
        let previous_digest = self.previous_digest();
        let client = self.bucket_client().await?;
        let mirror = self.mirror()?;
        let recorded = mirror.recorded();
        let timeout = parse_duration(&self.obj.spec.timeout).unwrap_or(Duration::from_secs(60));
        let mut listing =
            tokio::time::timeout(timeout, self.list_objects(&client, recorded.as_ref()))
                .await
                .map_err(|_| {
                    self.bucket_failure(format!(
                        "indexation of objects from bucket '{}' timed out after {timeout:?}",
                        self.obj.spec.bucket_name
                    ))
                })??;
        self.warn_unsafe_keys(&listing).await;
        let revision = listing.index.revision();
        if self
            .status
            .artifact
            .as_ref()
            .is_some_and(|a| a.revision == revision)
        {
            self.conditions.delete(cond::FETCH_FAILED);
            self.conditions.delete(cond::ARTIFACT_OUTDATED);
            self.mark_stored(&revision);
            tracing::debug!(object = %self.ctx.key(self.obj), %revision, "artifact up-to-date with remote revision");
            return Ok(());
        }
        self.announce_new_revision(&format!("new upstream revision '{revision}'"))
            .await;
        let limits = SyncLimits {
            concurrency: self.ctx.config.bucket_concurrency,
            max_object_bytes: self.ctx.config.bucket_max_object_bytes,
        };
        let sync = mirror.sync(
            &client,
            &mut listing.index,
            recorded,
            &listing.versions,
            listing.source_ignore.as_deref(),
            limits,
        );
        let stats = tokio::time::timeout(timeout, sync)
            .await
            .map_err(|_| {
                self.bucket_failure(format!(
                    "fetch from bucket '{}' timed out after {timeout:?}",
                    self.obj.spec.bucket_name
                ))
            })?
            .map_err(|e| match e {
                SyncError::Storage(m) => Failure::storage(reason::DIRECTORY_CREATION_FAILED, m),
                e => self.bucket_failure(format!(
                    "fetch from bucket '{}' failed: {e}",
                    self.obj.spec.bucket_name
                )),
            })?;
        tracing::debug!(object = %self.ctx.key(self.obj), downloaded = stats.downloaded, bytes = stats.downloaded_bytes, removed = stats.removed, "mirror synced");
        self.ctx
            .metrics
            .record_bucket_sync(stats.downloaded, stats.downloaded_bytes);
        // Objects that changed or vanished during the downloads are in the index now.
        let revision = listing.index.revision();
        let (artifact, latest_url) = self.store(&mirror, &revision).await?;
        self.record_artifact(artifact.clone(), latest_url);
        self.status.observed_ignore = self.obj.spec.ignore.clone();
        self.mark_stored(&revision);
        if previous_digest.as_deref() != Some(artifact.digest.as_str()) {
            let message = format!(
                "stored artifact with {} fetched files from '{}' bucket",
                listing.index.len(),
                self.obj.spec.bucket_name
            );
            self.emit_new_artifact(&artifact, &message, &[]).await;
        }
        Ok(())
    }

    fn bucket_failure(&self, message: String) -> Failure {
        Failure::fetch(reason::BUCKET_OPERATION_FAILED, message)
    }

    fn mirror(&self) -> Result<Mirror, Failure> {
        let dir = self
            .ctx
            .storage
            .object_dir(Bucket::STORAGE_KIND, &self.namespace(), &self.name())
            .map_err(|e| Failure::storage(reason::INVALID_PATH, e.to_string()))?;
        Ok(Mirror::new(&dir))
    }

    /// Bucket existence, the root `.sourceignore`, then the listing page by page.
    async fn list_objects(
        &self,
        client: &BucketClient,
        recorded: Option<&Index>,
    ) -> Result<Listing, Failure> {
        let bucket = &self.obj.spec.bucket_name;
        match client.bucket_exists().await {
            Ok(true) => {}
            Ok(false) => return Err(self.bucket_failure(format!("bucket '{bucket}' not found"))),
            Err(e) => {
                return Err(self.bucket_failure(format!(
                    "failed to confirm existence of '{bucket}' bucket: {e}"
                )));
            }
        }
        let source_ignore = client
            .read_small(SOURCE_IGNORE_FILE, MAX_SOURCE_IGNORE_BYTES)
            .await
            .map_err(|e| {
                self.bucket_failure(format!("failed to get '{SOURCE_IGNORE_FILE}' object: {e}"))
            })?;
        let filter = KeyFilter::new(
            source_ignore
                .as_deref()
                .map(String::from_utf8_lossy)
                .as_deref(),
            self.obj.spec.ignore.as_deref(),
        );
        let mut listing = Listing {
            index: Index::default(),
            versions: HashMap::new(),
            unsafe_keys: Vec::new(),
            unsafe_count: 0,
            total_bytes: 0,
            source_ignore,
        };
        let admission = Admission {
            filter,
            style: client.etag_style(),
            recorded,
            max_object_bytes: self.ctx.config.bucket_max_object_bytes,
            limits: self.ctx.config.limits,
        };
        let mut add_page = |page: Vec<Listed>| -> Result<(), BucketError> {
            page.into_iter()
                .try_for_each(|object| listing.add(object, &admission))
        };
        let prefix = self.obj.spec.prefix.clone().unwrap_or_default();
        let limits = ListLimits {
            max_bytes: self.ctx.config.bucket_max_listing_bytes,
        };
        client
            .list(&prefix, limits, &mut add_page)
            .await
            .map_err(|e| {
                self.bucket_failure(format!(
                    "indexation of objects from bucket '{bucket}' failed: listing objects from bucket '{bucket}' failed: {e}"
                ))
            })?;
        Ok(listing)
    }

    async fn warn_unsafe_keys(&self, listing: &Listing) {
        if listing.unsafe_count == 0 {
            return;
        }
        let examples: Vec<String> = listing
            .unsafe_keys
            .iter()
            .map(|(key, why)| format!("'{}' ({why})", key.escape_debug()))
            .collect();
        let message = format!(
            "skipped {} object key(s) that cannot be stored as files inside the artifact: {}{}",
            listing.unsafe_count,
            examples.join(", "),
            if listing.unsafe_count > examples.len() {
                ", ..."
            } else {
                ""
            }
        );
        self.warn(reason::UNSAFE_OBJECT_KEYS, &message).await;
    }

    /// Archives the mirror as `bucket/<ns>/<name>/<hex>.tar.gz` and points `latest` at it.
    async fn store(
        &self,
        mirror: &Mirror,
        revision: &str,
    ) -> Result<(Artifact, Option<String>), Failure> {
        let (ns, name) = (self.namespace(), self.name());
        let storage = self.ctx.storage.clone();
        let files = mirror.files();
        let file_name = format!("{}.tar.gz", revision.trim_start_matches("sha256:"));
        let (stored, latest) = tokio::task::spawn_blocking(move || {
            let stored = storage.write_archive_artifact(
                Bucket::STORAGE_KIND,
                &ns,
                &name,
                &file_name,
                &files,
                &KeepAll,
            )?;
            let latest = storage
                .set_latest(Bucket::STORAGE_KIND, &ns, &name, &stored.path)
                .inspect_err(|e| tracing::debug!(error = %e, "failed to update status URL symlink"))
                .ok();
            Ok::<_, crate::artifact::storage::StorageError>((stored, latest))
        })
        .await
        .map_err(|e| Failure::storage(reason::ARCHIVE_OPERATION_FAILED, e.to_string()))?
        .map_err(|e| {
            Failure::storage(
                reason::ARCHIVE_OPERATION_FAILED,
                format!("unable to archive artifact to storage: {e}"),
            )
        })?;
        Ok((
            Artifact {
                url: self.ctx.storage.url_for(&stored.path),
                path: stored.path,
                revision: revision.to_string(),
                digest: stored.digest,
                last_update_time: Time(stored.last_update),
                size: i64::try_from(stored.size).ok(),
                metadata: None,
            },
            latest,
        ))
    }

    fn mark_stored(&mut self, revision: &str) {
        self.conditions.mark_true(
            cond::ARTIFACT_IN_STORAGE,
            reason::SUCCEEDED,
            &format!("stored artifact: revision '{revision}'"),
        );
    }

    /// The client for the spec's provider, with its credentials, TLS and proxy.
    async fn bucket_client(&self) -> Result<BucketClient, Failure> {
        let spec = &self.obj.spec;
        self.validate_sts()?;
        let object_identity = self.object_identity().await?;
        let secret = match &spec.secret_ref {
            None => None,
            Some(r) => Some((
                r.name.clone(),
                self.read_secret(&r.name).await.map_err(|e| {
                    Failure::fetch(
                        reason::AUTHENTICATION_FAILED,
                        format!(
                            "failed to get secret '{}/{}': {e}",
                            self.namespace(),
                            r.name
                        ),
                    )
                })?,
            )),
        };
        let http = self.http_client().await?;
        let auth_failed = |m: String| Failure::fetch(reason::AUTHENTICATION_FAILED, m);
        let invalid =
            |name: &str, what: &str| auth_failed(format!("invalid '{name}' secret data: {what}"));
        match spec.provider {
            BucketProvider::Generic | BucketProvider::Aws => {
                let auth = match &secret {
                    Some((name, data)) => {
                        let (access, secret_key) = (data.get("accesskey"), data.get("secretkey"));
                        let (Some(access), Some(secret_key)) = (access, secret_key) else {
                            return Err(invalid(
                                name,
                                "required fields 'accesskey' and 'secretkey'",
                            ));
                        };
                        if access.is_empty() && secret_key.is_empty() {
                            AwsAuth::Anonymous
                        } else {
                            AwsAuth::Static(StaticKeys {
                                access_key: String::from_utf8_lossy(access).trim().to_string(),
                                secret_key: String::from_utf8_lossy(secret_key).trim().to_string(),
                                session_token: None,
                            })
                        }
                    }
                    None => match &object_identity {
                        Some((identity, sa)) => AwsAuth::ObjectWebIdentity {
                            identity: identity.clone(),
                            role_arn: workload::required_annotation(sa, workload::AWS_ROLE_ARN)
                                .map_err(auth_failed)?,
                            sts_endpoint: spec.sts.as_ref().map(|s| s.endpoint.clone()),
                        },
                        None => self.ambient_aws_auth().await?,
                    },
                };
                S3Client::new(
                    http,
                    &spec.endpoint,
                    spec.insecure,
                    &spec.bucket_name,
                    spec.region.as_deref(),
                    auth,
                )
                .map(BucketClient::S3)
                .map_err(|e| {
                    Failure::stalled(reason::URL_INVALID, format!("invalid endpoint: {e}"))
                })
            }
            BucketProvider::Gcp => {
                let base = gcs::base_url(&spec.endpoint, spec.insecure);
                let auth = match &secret {
                    Some((name, data)) => {
                        let json = data
                            .get("serviceaccount")
                            .ok_or_else(|| invalid(name, "required fields 'serviceaccount'"))?;
                        GcsAuth::ServiceAccount(
                            ServiceAccountKey::parse(json).map_err(|e| invalid(name, &e))?,
                        )
                    }
                    None => match &object_identity {
                        Some((identity, sa)) => GcsAuth::ObjectWorkloadIdentity {
                            identity: identity.clone(),
                            provider: workload::annotation(sa, workload::GCP_PROVIDER),
                            impersonate: workload::annotation(sa, workload::GCP_SERVICE_ACCOUNT),
                        },
                        None => ambient_gcs_auth(&base).map_err(auth_failed)?,
                    },
                };
                Ok(BucketClient::Gcs(GcsClient::new(
                    http,
                    base,
                    &spec.bucket_name,
                    auth,
                )))
            }
            BucketProvider::Azure => {
                let account = AccountUrl::parse(&spec.endpoint, spec.insecure)
                    .map_err(|e| Failure::stalled(reason::URL_INVALID, e))?;
                let auth = match &secret {
                    Some((name, data)) => {
                        azure::auth_from_secret(data, &account).map_err(|e| invalid(name, &e))?
                    }
                    None => match &object_identity {
                        Some((identity, sa)) => azure::AzureAuth::Entra(
                            azure::EntraCredential::ObjectWorkloadIdentity {
                                authority: std::env::var("AZURE_AUTHORITY_HOST")
                                    .unwrap_or_else(|_| azure::DEFAULT_AUTHORITY.into()),
                                tenant: workload::annotation(sa, workload::AZURE_TENANT_ID)
                                    .or_else(|| std::env::var("AZURE_TENANT_ID").ok())
                                    .ok_or_else(|| {
                                        auth_failed(format!(
                                            "service account '{}' has no '{}' annotation and AZURE_TENANT_ID is not set",
                                            identity.name,
                                            workload::AZURE_TENANT_ID
                                        ))
                                    })?,
                                client_id: workload::required_annotation(sa, workload::AZURE_CLIENT_ID)
                                    .map_err(auth_failed)?,
                                identity: identity.clone(),
                            },
                        ),
                        None => azure::ambient_auth(),
                    },
                };
                Ok(BucketClient::Azure(AzureClient::new(
                    http,
                    account,
                    &spec.bucket_name,
                    auth,
                )))
            }
        }
    }

    /// `spec.serviceAccountName` and its ServiceAccount, when object-level workload identity
    /// is asked for and allowed (Flux's `ObjectLevelWorkloadIdentity` gate).
    async fn object_identity(
        &self,
    ) -> Result<Option<(workload::Identity, ServiceAccount)>, Failure> {
        let Some(name) = &self.obj.spec.service_account_name else {
            return Ok(None);
        };
        if !self.ctx.config.object_level_workload_identity {
            return Err(Failure::stalled(
                reason::FEATURE_GATE_DISABLED,
                "to use spec.serviceAccountName for provider authentication please enable the ObjectLevelWorkloadIdentity feature gate in the controller",
            ));
        }
        if self.obj.spec.provider == BucketProvider::Generic {
            return Err(Failure::stalled(
                reason::INVALID_PROVIDER_CONFIGURATION,
                "ServiceAccountName is not supported for the 'generic' Bucket provider",
            ));
        }
        let identity = workload::Identity {
            client: self.ctx.client.clone(),
            namespace: self.namespace(),
            name: name.clone(),
        };
        let sa = identity
            .service_account()
            .await
            .map_err(|e| Failure::fetch(reason::AUTHENTICATION_FAILED, e))?;
        Ok(Some((identity, sa)))
    }

    /// Flux re-validates what the CEL rules check, for objects stored before the rules.
    fn validate_sts(&self) -> Result<(), Failure> {
        let spec = &self.obj.spec;
        let Some(sts) = &spec.sts else { return Ok(()) };
        let invalid = |m: &str| Failure::stalled(reason::INVALID_STS_CONFIGURATION, m.to_string());
        match (spec.provider, sts.provider) {
            (BucketProvider::Aws, STSProvider::Aws) => {
                if sts.secret_ref.is_some() || sts.cert_secret_ref.is_some() {
                    return Err(invalid(
                        "spec.sts.secretRef and spec.sts.certSecretRef are not required for the 'aws' STS provider",
                    ));
                }
            }
            (BucketProvider::Generic, STSProvider::Ldap) => {}
            (BucketProvider::Aws, _) => {
                return Err(invalid(
                    "'aws' is the only supported STS provider for the 'aws' Bucket provider",
                ));
            }
            (BucketProvider::Generic, _) => {
                return Err(invalid(
                    "'ldap' is the only supported STS provider for the 'generic' Bucket provider",
                ));
            }
            _ => {
                return Err(invalid(
                    "STS configuration is only supported for the 'aws' and 'generic' Bucket providers",
                ));
            }
        }
        match reqwest::Url::parse(&sts.endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
            _ => Err(Failure::stalled(
                reason::URL_INVALID,
                format!("failed to parse STS endpoint '{}'", sts.endpoint),
            )),
        }
    }

    /// Without a Secret: LDAP STS for `generic` when configured, else anonymous; the AWS
    /// default chain for `aws`.
    async fn ambient_aws_auth(&self) -> Result<AwsAuth, Failure> {
        let spec = &self.obj.spec;
        match (&spec.provider, &spec.sts) {
            (BucketProvider::Aws, sts) => Ok(AwsAuth::Chain {
                sts_endpoint: sts.as_ref().map(|s| s.endpoint.clone()),
            }),
            (_, Some(sts)) if sts.provider == STSProvider::Ldap => {
                let Some(r) = &sts.secret_ref else {
                    return Err(Failure::fetch(
                        reason::AUTHENTICATION_FAILED,
                        "spec.sts.secretRef with 'username' and 'password' is required for the 'ldap' STS provider",
                    ));
                };
                let data = self.read_secret(&r.name).await.map_err(|e| {
                    Failure::fetch(
                        reason::AUTHENTICATION_FAILED,
                        format!(
                            "failed to get secret '{}/{}': {e}",
                            self.namespace(),
                            r.name
                        ),
                    )
                })?;
                let text = |k: &str| {
                    data.get(k)
                        .map(|v| String::from_utf8_lossy(v).trim().to_string())
                        .filter(|v| !v.is_empty())
                };
                let (Some(username), Some(password)) = (text("username"), text("password")) else {
                    return Err(Failure::fetch(
                        reason::AUTHENTICATION_FAILED,
                        format!(
                            "invalid '{}' secret data for 'ldap' STS provider: required fields username, password",
                            r.name
                        ),
                    ));
                };
                Ok(AwsAuth::Ldap {
                    endpoint: sts.endpoint.clone(),
                    username,
                    password,
                })
            }
            _ => Ok(AwsAuth::Anonymous),
        }
    }

    async fn http_client(&self) -> Result<reqwest::Client, Failure> {
        let spec = &self.obj.spec;
        let auth_failed = |m: String| Failure::fetch(reason::AUTHENTICATION_FAILED, m);
        let tls = match &spec.cert_secret_ref {
            None => None,
            Some(r) => Some(
                self.parse_secret(&r.name, tls_from_secret)
                    .await
                    .map_err(|e| auth_failed(format!("failed to get TLS config: {e}")))?,
            ),
        };
        let proxy = match &spec.proxy_secret_ref {
            None => None,
            Some(r) => Some(
                self.parse_secret(&r.name, proxy_from_secret)
                    .await
                    .map_err(|e| auth_failed(format!("failed to get proxy URL: {e}")))?,
            ),
        };
        // `insecure` means plain HTTP for buckets; certificate checks stay on.
        let transport: Transport = transport(false, tls, proxy);
        self.ctx.http_client(transport).map_err(auth_failed)
    }
}

/// GCP without a Secret: `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata server for
/// Google's endpoint; other endpoints (emulators, gateways) are used anonymously.
fn ambient_gcs_auth(base: &str) -> Result<GcsAuth, String> {
    if let Ok(path) = std::env::var("GOOGLE_APPLICATION_CREDENTIALS")
        && !path.is_empty()
    {
        let json = std::fs::read(&path)
            .map_err(|e| format!("reading GOOGLE_APPLICATION_CREDENTIALS {path}: {e}"))?;
        return ServiceAccountKey::parse(&json).map(GcsAuth::ServiceAccount);
    }
    Ok(match base == gcs::GOOGLE_ENDPOINT {
        true => GcsAuth::Metadata,
        false => GcsAuth::Anonymous,
    })
}
