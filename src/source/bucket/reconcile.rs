//! The Bucket reconciler (reference §8.3): credentials → client → streamed listing into the
//! etag index → revision → incremental mirror sync → deterministic tarball.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::azure::{self, AccountUrl, AzureAuth, AzureClient, EntraCredential};
use super::client::BucketClient;
use super::gcs::{self, GcsAuth, GcsClient, GoogleCredential, ServiceAccountKey};
use super::index::{EtagStyle, Index, KeyFilter, Skip, normalize_etag};
use super::mirror::{Mirror, SyncError, SyncLimits};
use super::object::{BucketError, ListLimits, Listed};
use super::s3::{self, AwsAuth, S3Client, StaticKeys};
use crate::api::bucket::{BucketProvider, STSProvider};
use crate::api::{Artifact, Bucket, BucketStatus};
use crate::artifact::archive::KeepAll;
use crate::artifact::extract::ExtractLimits;
use crate::artifact::ignore::{MAX_SOURCE_IGNORE_BYTES, SOURCE_IGNORE_FILE};
use crate::controller::conditions::{self as cond, reason};
use crate::controller::outcome::{Failure, Summary};
use crate::controller::pass::Pass;
use crate::controller::pass::{FrameError, Reconciled};
use crate::controller::requeue::parse_duration;
use crate::identity::aws::role_arn;
use crate::identity::endpoints::{CloudService, aws_regional_sts};
use crate::identity::workload;
use crate::source::context::Context;
use crate::source::steps::{self, SOURCE_SUMMARY, SourceFailure, SourceObject, impl_source_status};
use crate::transport::{ProxyConfig, TlsMaterial, Transport, proxy_from_secret, tls_from_secret};
use k8s_openapi::api::core::v1::ServiceAccount;

/// How many unsafe keys a warning names, and how much of each.
const UNSAFE_EXAMPLES: usize = 5;
const UNSAFE_EXAMPLE_BYTES: usize = 200;

impl_source_status!(BucketStatus);

impl Reconciled for Bucket {
    type Status = BucketStatus;
    type Context = Context;
    type Memo = ();
    const KIND: &'static str = "Bucket";
    const SUMMARY: Summary = SOURCE_SUMMARY;
    const FRAME_FAILURE: &'static str = cond::FETCH_FAILED;
    fn status(&self) -> Option<&BucketStatus> {
        self.status.as_ref()
    }
    fn suspended(&self) -> bool {
        self.spec.suspend
    }
    fn interval(&self) -> &str {
        &self.spec.interval
    }
    fn durations(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("spec.interval", &self.spec.interval),
            ("spec.timeout", &self.spec.timeout),
        ]
    }
    async fn begin(pass: &mut Pass<'_, Self>) {
        steps::begin(pass).await
    }
    async fn run(pass: &mut Pass<'_, Self>) -> Result<(), Failure> {
        pass.run_bucket().await
    }
    async fn cleanup(obj: &Self, ctx: &Context) -> Result<(), FrameError> {
        steps::remove_artifacts(obj, ctx).await
    }
}

impl SourceObject for Bucket {
    const STORAGE_KIND: &'static str = "bucket";
    fn timeout(&self) -> &str {
        &self.spec.timeout
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
            tracing::debug!(object = %self.key(), %revision, "artifact up-to-date with remote revision");
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
                e => self
                    .bucket_failure(format!(
                        "fetch from bucket '{}' failed: {e}",
                        self.obj.spec.bucket_name
                    ))
                    .honouring_retry_after(e.retry_after()),
            })?;
        tracing::debug!(object = %self.key(), downloaded = stats.downloaded, bytes = stats.downloaded_bytes, removed = stats.removed, "mirror synced");
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
            .object_dir(&self.obj.artifact_location())
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
                return Err(self
                    .bucket_failure(format!(
                        "failed to confirm existence of '{bucket}' bucket: {e}"
                    ))
                    .honouring_retry_after(e.retry_after()));
            }
        }
        let source_ignore = client
            .read_small(SOURCE_IGNORE_FILE, MAX_SOURCE_IGNORE_BYTES)
            .await
            .map_err(|e| {
                self.bucket_failure(format!("failed to get '{SOURCE_IGNORE_FILE}' object: {e}"))
                    .honouring_retry_after(e.retry_after())
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
                .honouring_retry_after(e.retry_after())
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
        let location = self.obj.artifact_location();
        let storage = self.ctx.storage.clone();
        let files = mirror.files();
        let file_name = format!("{}.tar.gz", revision.trim_start_matches("sha256:"));
        let (stored, latest) = tokio::task::spawn_blocking(move || {
            let stored = storage.write_archive_artifact(&location, &file_name, &files, &KeepAll)?;
            let latest = storage
                .set_latest(&location, &stored.path)
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
            crate::source::store::status_artifact(&self.ctx.storage, stored, revision, None),
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
        self.validate_sts()?;
        let identity = self.object_identity().await?;
        let secret = match &self.obj.spec.secret_ref {
            None => None,
            Some(r) => Some((r.name.clone(), self.bucket_secret(&r.name).await?)),
        };
        let transport = self.bucket_transport().await?;
        match self.obj.spec.provider {
            BucketProvider::Generic | BucketProvider::Aws => {
                self.s3_client(secret, identity, transport).await
            }
            BucketProvider::Gcp => self.gcs_client(secret, identity, transport),
            BucketProvider::Azure => self.azure_client(secret, identity, transport),
        }
    }

    async fn bucket_secret(&self, name: &str) -> Result<SecretData, Failure> {
        self.read_secret(name).await.map_err(|e| {
            auth_failed(format!(
                "failed to get secret '{}/{name}': {e}",
                self.namespace()
            ))
        })
    }

    async fn s3_client(
        &self,
        secret: Option<(String, SecretData)>,
        identity: Option<(workload::Identity, ServiceAccount)>,
        transport: BucketTransport,
    ) -> Result<BucketClient, Failure> {
        let spec = &self.obj.spec;
        let (auth, controller_held) = match (&secret, identity) {
            (Some((name, data)), _) => (aws_secret_auth(name, data)?, false),
            (None, Some((identity, sa))) => {
                let role_arn = role_arn(&identity, &sa).map_err(auth_failed)?;
                let sts_endpoint = spec.sts.as_ref().map(|s| s.endpoint.clone());
                let auth = AwsAuth::ObjectWebIdentity {
                    identity,
                    role_arn,
                    sts_endpoint,
                };
                (auth, true)
            }
            (None, None) => self.ambient_aws_auth().await?,
        };
        let origin = s3::endpoint_origin(&spec.endpoint, spec.insecure)
            .map_err(|e| Failure::stalled(reason::URL_INVALID, format!("invalid endpoint: {e}")))?;
        if controller_held {
            self.guard_aws(&origin)?;
        }
        let http = self.http_for(transport, controller_held, &origin)?;
        S3Client::new(
            http.storage,
            &spec.endpoint,
            spec.insecure,
            &spec.bucket_name,
            spec.region.as_deref(),
            auth,
        )
        .map(|c| BucketClient::S3(c.with_credential_http(http.credentials)))
        .map_err(|e| Failure::stalled(reason::URL_INVALID, format!("invalid endpoint: {e}")))
    }

    fn gcs_client(
        &self,
        secret: Option<(String, SecretData)>,
        identity: Option<(workload::Identity, ServiceAccount)>,
        transport: BucketTransport,
    ) -> Result<BucketClient, Failure> {
        let spec = &self.obj.spec;
        let base = gcs::base_url(&spec.endpoint, spec.insecure);
        let auth = match (&secret, identity) {
            (Some((name, data)), _) => {
                let json = data
                    .get("serviceaccount")
                    .ok_or_else(|| invalid_secret(name, "required fields 'serviceaccount'"))?;
                GcsAuth::Google(GoogleCredential::ServiceAccount(
                    ServiceAccountKey::parse(json).map_err(|e| invalid_secret(name, &e))?,
                ))
            }
            (None, Some((identity, sa))) => GcsAuth::Google(
                GoogleCredential::for_service_account(identity, &sa).map_err(auth_failed)?,
            ),
            (None, None) => ambient_gcs_auth(&base).map_err(auth_failed)?,
        };
        let controller_held = secret.is_none() && !matches!(auth, GcsAuth::Anonymous);
        if controller_held {
            self.guard(CloudService::GoogleStorage, &base)?;
        }
        let http = self.http_for(transport, controller_held, &base)?;
        let client = GcsClient::new(http.storage, base, &spec.bucket_name, auth);
        Ok(BucketClient::Gcs(
            client.with_credential_http(http.credentials),
        ))
    }

    fn azure_client(
        &self,
        secret: Option<(String, SecretData)>,
        identity: Option<(workload::Identity, ServiceAccount)>,
        transport: BucketTransport,
    ) -> Result<BucketClient, Failure> {
        let spec = &self.obj.spec;
        let account = AccountUrl::parse(&spec.endpoint, spec.insecure)
            .map_err(|e| Failure::stalled(reason::URL_INVALID, e))?;
        let auth = match (&secret, identity) {
            (Some((name, data)), _) => {
                azure::auth_from_secret(data, &account).map_err(|e| invalid_secret(name, &e))?
            }
            (None, Some((identity, sa))) => azure_object_auth(identity, &sa)?,
            (None, None) => azure::ambient_auth(),
        };
        // A Secret naming only a client ID selects the node's managed identity: the
        // controller's credential, not the tenant's.
        let controller_held = match &auth {
            AzureAuth::Entra(EntraCredential::ManagedIdentity { .. }) => true,
            AzureAuth::Anonymous => false,
            _ => secret.is_none(),
        };
        if controller_held {
            self.guard(CloudService::AzureBlob, &account.base)?;
        }
        let http = self.http_for(transport, controller_held, &account.base)?;
        let client = AzureClient::new(http.storage, account, &spec.bucket_name, auth);
        Ok(BucketClient::Azure(
            client.with_credential_http(http.credentials),
        ))
    }

    /// The controller's AWS credentials: its web identity token goes to AWS STS alone (the
    /// object's `sts.endpoint`, else the regional one its `region` names), the requests
    /// signed with the keys STS returns to Amazon S3 alone.
    fn guard_aws(&self, origin: &str) -> Result<(), Failure> {
        let spec = &self.obj.spec;
        let region = spec.region.as_deref().filter(|r| !r.is_empty());
        let regional = aws_regional_sts(region.unwrap_or(s3::DEFAULT_REGION)).map_err(|e| {
            Failure::stalled(
                reason::INVALID_PROVIDER_CONFIGURATION,
                format!("invalid spec.region: {e}"),
            )
        })?;
        let sts = spec.sts.as_ref().map_or(regional, |s| s.endpoint.clone());
        self.ctx
            .config
            .ambient_endpoints
            .check(CloudService::AwsSts, &sts)
            .map_err(|e| Failure::stalled(reason::INVALID_STS_CONFIGURATION, e.to_string()))?;
        self.guard(CloudService::AwsS3, origin)
    }

    /// Credentials the controller holds go to `url` only when `identity::endpoints` allows.
    fn guard(&self, service: CloudService, url: &str) -> Result<(), Failure> {
        self.ctx
            .config
            .ambient_endpoints
            .check(service, url)
            .map_err(|e| Failure::stalled(reason::INVALID_PROVIDER_CONFIGURATION, e.to_string()))
    }

    /// The bucket's HTTP client, and the one credentials are fetched with. The controller's
    /// credentials are fetched over the controller's own transport (the object's proxy would
    /// see its plain-HTTP metadata requests), and are never sent trusting a CA the object
    /// brings or through the object's proxy in plain HTTP: either would let the object's
    /// owner read them on the way to a genuine endpoint.
    fn http_for(
        &self,
        transport: BucketTransport,
        controller_held: bool,
        target: &str,
    ) -> Result<BucketHttp, Failure> {
        if controller_held {
            check_controller_transport(&transport, target)?;
        }
        let sts = transport
            .sts_tls
            .map(|tls| Transport::new(false, Some(tls), transport.proxy.clone()));
        let storage = self
            .ctx
            .http_clients
            .get(Transport::new(false, transport.tls, transport.proxy))
            .map_err(auth_failed)?;
        let credentials = match (controller_held, sts) {
            (true, _) => self
                .ctx
                .http_clients
                .get(Transport::token_service())
                .map_err(auth_failed)?,
            // An LDAP STS endpoint with its own CA or client certificate (`spec.sts.certSecretRef`).
            (false, Some(sts)) => self.ctx.http_clients.get(sts).map_err(auth_failed)?,
            (false, None) => storage.clone(),
        };
        Ok(BucketHttp {
            storage,
            credentials,
        })
    }

    /// `spec.serviceAccountName` and its ServiceAccount: object-level workload identity, always
    /// on since Flux 2.10 retired its `ObjectLevelWorkloadIdentity` gate.
    async fn object_identity(
        &self,
    ) -> Result<Option<(workload::Identity, ServiceAccount)>, Failure> {
        let spec = &self.obj.spec;
        if spec.service_account_name.is_some() && spec.provider == BucketProvider::Generic {
            return Err(Failure::stalled(
                reason::INVALID_PROVIDER_CONFIGURATION,
                "ServiceAccountName is not supported for the 'generic' Bucket provider",
            ));
        }
        // The lockdown's default identity stands in only where the controller's would be used.
        let default = match (spec.provider, &spec.secret_ref) {
            (BucketProvider::Generic, _) | (_, Some(_)) => None,
            _ => self.ctx.config.default_service_account.as_deref(),
        };
        workload::borrow(
            &self.ctx.client,
            &self.namespace(),
            spec.service_account_name.as_deref(),
            default,
        )
        .await
        .map_err(|e| Failure::fetch(reason::AUTHENTICATION_FAILED, e))
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
    /// default chain for `aws`. True when the credentials are the controller's.
    async fn ambient_aws_auth(&self) -> Result<(AwsAuth, bool), Failure> {
        let spec = &self.obj.spec;
        match (&spec.provider, &spec.sts) {
            (BucketProvider::Aws, sts) => Ok((
                AwsAuth::Chain {
                    sts_endpoint: sts.as_ref().map(|s| s.endpoint.clone()),
                },
                true,
            )),
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
                let auth = AwsAuth::Ldap {
                    endpoint: sts.endpoint.clone(),
                    username,
                    password,
                };
                Ok((auth, false))
            }
            _ => Ok((AwsAuth::Anonymous, false)),
        }
    }

    /// The TLS material and proxy of `certSecretRef` and `proxySecretRef`.
    async fn bucket_transport(&self) -> Result<BucketTransport, Failure> {
        let spec = &self.obj.spec;
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
        let sts_tls = match spec.sts.as_ref().and_then(|s| s.cert_secret_ref.as_ref()) {
            None => None,
            Some(r) => Some(
                self.parse_secret(&r.name, tls_from_secret)
                    .await
                    .map_err(|e| auth_failed(format!("failed to get STS TLS config: {e}")))?,
            ),
        };
        Ok(BucketTransport {
            tls,
            proxy,
            sts_tls,
        })
    }
}

/// A Secret's data by key.
type SecretData = BTreeMap<String, Vec<u8>>;

/// What `certSecretRef` and `proxySecretRef` ask for. `insecure` means plain HTTP for
/// buckets; certificate checks stay on.
struct BucketTransport {
    tls: Option<TlsMaterial>,
    proxy: Option<ProxyConfig>,
    /// `spec.sts.certSecretRef`: TLS towards the (LDAP) STS endpoint only.
    sts_tls: Option<TlsMaterial>,
}

struct BucketHttp {
    /// Talks to the bucket's endpoint, with the object's TLS and proxy.
    storage: reqwest::Client,
    /// Fetches the credentials.
    credentials: reqwest::Client,
}

fn auth_failed(message: String) -> Failure {
    Failure::fetch(reason::AUTHENTICATION_FAILED, message)
}

fn invalid_secret(name: &str, what: &str) -> Failure {
    auth_failed(format!("invalid '{name}' secret data: {what}"))
}

/// `accesskey` and `secretkey`, both present; both empty means anonymous access.
fn aws_secret_auth(name: &str, data: &SecretData) -> Result<AwsAuth, Failure> {
    let (Some(access), Some(secret_key)) = (data.get("accesskey"), data.get("secretkey")) else {
        return Err(invalid_secret(
            name,
            "required fields 'accesskey' and 'secretkey'",
        ));
    };
    if access.is_empty() && secret_key.is_empty() {
        return Ok(AwsAuth::Anonymous);
    }
    Ok(AwsAuth::Static(StaticKeys {
        access_key: String::from_utf8_lossy(access).trim().to_string(),
        secret_key: String::from_utf8_lossy(secret_key).trim().to_string(),
        session_token: None,
    }))
}

/// The ServiceAccount's `azure.workload.identity/*` identity, its token as the assertion.
fn azure_object_auth(
    identity: workload::Identity,
    sa: &ServiceAccount,
) -> Result<AzureAuth, Failure> {
    EntraCredential::for_service_account(identity, sa)
        .map(AzureAuth::Entra)
        .map_err(auth_failed)
}

/// With the controller's credentials, a CA from the object is not trusted, and the object's
/// proxy is only used to tunnel HTTPS.
fn check_controller_transport(transport: &BucketTransport, target: &str) -> Result<(), Failure> {
    let refuse = |m: &str| Failure::stalled(reason::INVALID_PROVIDER_CONFIGURATION, m.to_string());
    if transport.tls.as_ref().is_some_and(|t| t.ca_pem.is_some()) {
        return Err(refuse(
            "the CA certificate of spec.certSecretRef cannot be trusted with the controller's credentials (with a proxy it could stand in for the cloud service); add the CA to the controller's trust store instead",
        ));
    }
    if transport.proxy.is_some() && !target.starts_with("https://") {
        return Err(refuse(
            "spec.proxySecretRef cannot carry the controller's credentials over plain HTTP",
        ));
    }
    Ok(())
}

/// GCP without a Secret: `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata server for
/// Google's endpoint; other endpoints (gateways) are used anonymously, and so is the
/// operator's `STORAGE_EMULATOR_HOST`, as Google's own libraries use it.
fn ambient_gcs_auth(base: &str) -> Result<GcsAuth, String> {
    if std::env::var("STORAGE_EMULATOR_HOST").is_ok_and(|h| !h.is_empty()) {
        return Ok(GcsAuth::Anonymous);
    }
    match GoogleCredential::from_environment()? {
        GoogleCredential::Metadata if base != gcs::GOOGLE_ENDPOINT => Ok(GcsAuth::Anonymous),
        credential => Ok(GcsAuth::Google(credential)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(ca: bool, client_cert: bool, proxy: bool) -> BucketTransport {
        let tls = TlsMaterial {
            ca_pem: ca.then(|| b"-----BEGIN CERTIFICATE-----".to_vec()),
            identity_pem: client_cert.then(|| b"-----BEGIN CERTIFICATE-----".to_vec()),
        };
        BucketTransport {
            tls: (ca || client_cert).then_some(tls),
            proxy: proxy.then(|| ProxyConfig {
                address: "http://proxy.tenant:3128".into(),
                username: None,
                password: None,
            }),
            sts_tls: None,
        }
    }

    #[test]
    fn the_controllers_credentials_trust_no_ca_of_the_object_and_tunnel_through_its_proxy() {
        let https = "https://sts.eu-west-1.amazonaws.com";
        let refused = |t: BucketTransport, target: &str| {
            check_controller_transport(&t, target)
                .err()
                .map(|f| (f.reason, f.is_stalled(), f.message))
        };
        let (reason, stalled, message) = refused(transport(true, false, false), https).unwrap();
        assert_eq!(
            (reason, stalled),
            (reason::INVALID_PROVIDER_CONFIGURATION, true)
        );
        assert!(message.contains("spec.certSecretRef"), "{message}");
        assert!(refused(transport(true, true, true), https).is_some());
        let (_, _, message) = refused(transport(false, false, true), "http://minio:9000").unwrap();
        assert!(message.contains("spec.proxySecretRef"), "{message}");
        assert!(refused(transport(false, true, true), https).is_none());
        assert!(refused(transport(false, false, false), "http://minio:9000").is_none());
    }
}
