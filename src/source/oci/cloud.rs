//! Registry logins from cloud identity (`spec.provider`: aws; azure and gcp to come): the
//! controller's own identity, or with `spec.serviceAccountName` that ServiceAccount's, turned
//! into the registry's own login. Used only when no pull secret gives credentials, as in Flux.

use k8s_openapi::api::core::v1::ServiceAccount;

use crate::api::OCIRepository;
use crate::api::oci_repository::OCIProvider;
use crate::controller::conditions::reason;
use crate::controller::outcome::Failure;
use crate::controller::pass::Pass;
use crate::identity::aws::{AwsAuth, operator_sts_endpoint, role_arn};
use crate::identity::ecr::{self, EcrRegistry};
use crate::identity::endpoints::CloudService;
use crate::identity::workload::{self, Identity};
use crate::oci::reference::RepositoryUrl;
use crate::oci::registry::Credentials;
use crate::source::steps::SourceFailure;
use crate::transport::Transport;

impl Pass<'_, OCIRepository> {
    /// The login `spec.provider` gives for the registry, refused (stalled) when the URL is not
    /// that cloud's registry or the connection could let another party read it.
    pub(super) async fn cloud_credentials(
        &self,
        url: &RepositoryUrl,
        transport: &Transport,
    ) -> Result<Credentials, Failure> {
        match self.obj.spec.provider {
            OCIProvider::Generic => Ok(Credentials::Anonymous),
            OCIProvider::Aws => self.ecr_login(url, transport).await,
            other => {
                let provider = serde_json::to_value(other).unwrap_or_default();
                Err(Failure::stalled(
                    reason::UNSUPPORTED_PROVIDER,
                    format!(
                        "provider {provider} is not yet supported by driftless: use spec.secretRef with registry credentials, or provider 'generic' or 'aws'"
                    ),
                ))
            }
        }
    }

    async fn ecr_login(
        &self,
        url: &RepositoryUrl,
        transport: &Transport,
    ) -> Result<Credentials, Failure> {
        let registry = EcrRegistry::parse(&url.registry).ok_or_else(|| {
            misconfigured(format!(
                "the registry '{}' is not an Amazon ECR registry: provider 'aws' sends AWS credentials only to hosts of the form {}",
                url.registry,
                ecr::HOST_PATTERNS
            ))
        })?;
        check_transport(transport)?;
        let endpoint = registry.api_endpoint();
        self.guard(CloudService::AwsEcr, &endpoint)?;
        let region = registry.region();
        let auth = match self.object_identity().await? {
            Some((identity, sa)) => {
                let role_arn = role_arn(&identity, &sa).map_err(auth_failed)?;
                let sts = operator_sts_endpoint(region).map_err(misconfigured)?;
                self.guard(CloudService::AwsSts, &sts)?;
                AwsAuth::ObjectWebIdentity {
                    identity,
                    role_arn,
                    sts_endpoint: Some(sts),
                }
            }
            None => {
                self.guard_controller_sts(region)?;
                AwsAuth::Chain { sts_endpoint: None }
            }
        };
        let http = self
            .ctx
            .http_clients
            .get(Transport::default())
            .map_err(|e| auth_failed(format!("failed to build the credential client: {e}")))?;
        let login = ecr::login(&http, &registry, &endpoint, &auth)
            .await
            .map_err(|e| auth_failed(format!("failed to get credential from 'aws': {e}")))?;
        Ok(Credentials::CloudLogin {
            username: login.username,
            password: login.password,
        })
    }

    /// `spec.serviceAccountName` (else `--default-service-account`): that ServiceAccount's
    /// identity, never the controller's.
    async fn object_identity(&self) -> Result<Option<(Identity, ServiceAccount)>, Failure> {
        workload::borrow(
            &self.ctx.client,
            &self.namespace(),
            self.obj.spec.service_account_name.as_deref(),
            self.ctx.config.default_service_account.as_deref(),
        )
        .await
        .map_err(auth_failed)
    }

    /// The STS the controller's web identity token would go to (`AWS_ENDPOINT_URL_STS` or the
    /// registry region's), when the controller has one.
    fn guard_controller_sts(&self, region: &str) -> Result<(), Failure> {
        let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
        let static_keys = set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY");
        if !set("AWS_WEB_IDENTITY_TOKEN_FILE") || static_keys {
            return Ok(());
        }
        let sts = operator_sts_endpoint(region).map_err(misconfigured)?;
        self.guard(CloudService::AwsSts, &sts)
    }

    fn guard(&self, service: CloudService, url: &str) -> Result<(), Failure> {
        self.ctx
            .config
            .ambient_endpoints
            .check(service, url)
            .map_err(|e| misconfigured(e.to_string()))
    }
}

/// The login goes over TLS, trusting only the controller's roots: a CA of the object's
/// (with its proxy) could stand in for the registry and read it.
fn check_transport(transport: &Transport) -> Result<(), Failure> {
    if transport.insecure {
        return Err(misconfigured(
            "cloud provider credentials are sent only over TLS: spec.insecure cannot be used with provider 'aws'".to_string(),
        ));
    }
    if transport.ca_pem.is_some() {
        return Err(misconfigured(
            "the CA certificate of spec.certSecretRef cannot be trusted with cloud provider credentials (with a proxy it could stand in for the registry); add the CA to the controller's trust store instead".to_string(),
        ));
    }
    Ok(())
}

fn misconfigured(message: String) -> Failure {
    Failure::stalled(reason::INVALID_PROVIDER_CONFIGURATION, message)
}

fn auth_failed(message: String) -> Failure {
    Failure::fetch(reason::AUTHENTICATION_FAILED, message)
}
