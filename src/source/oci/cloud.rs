//! Registry logins from cloud identity (`spec.provider`: aws, azure, gcp): the controller's own
//! identity, or with `spec.serviceAccountName` that ServiceAccount's, turned into the
//! registry's own login (ECR, ACR, Artifact Registry); with `generic`, a ServiceAccount that
//! opts in to Flux's `kubernetes` credential provider lends its own token. Used only when no
//! pull secret gives credentials, as in Flux.

use k8s_openapi::api::core::v1::ServiceAccount;

use crate::api::OCIRepository;
use crate::api::oci_repository::OCIProvider;
use crate::controller::conditions::reason;
use crate::controller::outcome::Failure;
use crate::controller::pass::Pass;
use crate::identity::auth::RegistryLogin;
use crate::identity::aws::{AwsAuth, operator_sts_endpoint, role_arn};
use crate::identity::ecr::{self, EcrRegistry};
use crate::identity::endpoints::CloudService;
use crate::identity::entra::EntraCredential;
use crate::identity::google::GoogleCredential;
use crate::identity::workload::{self, Identity};
use crate::identity::{acr, gar, sa_token};
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
        let login = match self.obj.spec.provider {
            OCIProvider::Generic => return self.service_account_token(url, transport).await,
            OCIProvider::Aws => self.ecr_login(url, transport).await?,
            OCIProvider::Azure => self.acr_login(url, transport).await?,
            OCIProvider::Gcp => self.gar_login(url, transport).await?,
        };
        Ok(Credentials::CloudLogin {
            username: login.username,
            password: login.password,
        })
    }

    async fn ecr_login(
        &self,
        url: &RepositoryUrl,
        transport: &Transport,
    ) -> Result<RegistryLogin, Failure> {
        let registry = EcrRegistry::parse(&url.registry).ok_or_else(|| {
            misconfigured(format!(
                "the registry '{}' is not an Amazon ECR registry: provider 'aws' sends AWS credentials only to hosts of the form {}",
                url.registry,
                ecr::HOST_PATTERNS
            ))
        })?;
        check_transport(transport, "aws")?;
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
        ecr::login(&self.credential_http()?, &registry, &endpoint, &auth)
            .await
            .map_err(|e| auth_failed(format!("failed to get credential from 'aws': {e}")))
    }

    /// An Entra ID token for ACR's scope, exchanged at the registry (which must be an ACR
    /// host: the token is sent to it) for its refresh token.
    async fn acr_login(
        &self,
        url: &RepositoryUrl,
        transport: &Transport,
    ) -> Result<RegistryLogin, Failure> {
        if !acr::is_registry(&url.registry) {
            return Err(misconfigured(format!(
                "the registry '{}' is not an Azure Container Registry: provider 'azure' sends Entra ID tokens only to hosts of the form {}",
                url.registry,
                acr::HOST_PATTERNS
            )));
        }
        check_transport(transport, "azure")?;
        let credential = match self.object_identity().await? {
            Some((identity, sa)) => {
                EntraCredential::for_service_account(identity, &sa).map_err(auth_failed)?
            }
            None => EntraCredential::from_environment(),
        };
        acr::login(&self.credential_http()?, &url.registry, &credential)
            .await
            .map_err(|e| auth_failed(format!("failed to get credential from 'azure': {e}")))
    }

    /// A Google access token, sent to the registry (which must be Google's) as the
    /// `oauth2accesstoken` user's password.
    async fn gar_login(
        &self,
        url: &RepositoryUrl,
        transport: &Transport,
    ) -> Result<RegistryLogin, Failure> {
        if !gar::is_registry(&url.registry) {
            return Err(misconfigured(format!(
                "the registry '{}' is not a Google registry: provider 'gcp' sends Google access tokens only to {}",
                url.registry,
                gar::HOST_PATTERNS
            )));
        }
        check_transport(transport, "gcp")?;
        let credential = match self.object_identity().await? {
            Some((identity, sa)) => {
                GoogleCredential::for_service_account(identity, &sa).map_err(auth_failed)?
            }
            None => GoogleCredential::from_environment().map_err(auth_failed)?,
        };
        gar::login(&self.credential_http()?, &credential)
            .await
            .map_err(|e| auth_failed(format!("failed to get credential from 'gcp': {e}")))
    }

    /// `spec.serviceAccountName`'s own token, when the ServiceAccount opts in
    /// (`credential.auth.fluxcd.io/provider: kubernetes`): bearer, or Basic with its
    /// `credential.auth.fluxcd.io/username`. Without the opt-in, anonymous.
    async fn service_account_token(
        &self,
        url: &RepositoryUrl,
        transport: &Transport,
    ) -> Result<Credentials, Failure> {
        let own = self.obj.spec.service_account_name.as_deref();
        let Some((identity, sa)) = workload::borrow(&self.ctx.client, &self.namespace(), own, None)
            .await
            .map_err(auth_failed)?
        else {
            return Ok(Credentials::Anonymous);
        };
        let Some(credential) = sa_token::credential(&sa, &url.registry).map_err(auth_failed)?
        else {
            return Ok(Credentials::Anonymous);
        };
        // The object's author names the host, and with it the default audience: only TLS
        // that the controller's own roots vouch for keeps such a token from anyone but that
        // host's owner (a proxy of the author's with a CA of the author's could read it).
        if credential.default_audience && (transport.insecure || transport.ca_pem.is_some()) {
            return Err(auth_failed(format!(
                "a ServiceAccount token for the registry's own name ('{}') is sent only over TLS that the controller's trust store vouches for: without spec.insecure and the CA of spec.certSecretRef, or with an explicit {} annotation",
                url.registry,
                sa_token::AUDIENCES
            )));
        }
        let token = sa_token::token(&identity, &credential)
            .await
            .map_err(|e| auth_failed(format!("failed to get credential from 'kubernetes': {e}")))?;
        Ok(match credential.username {
            Some(username) => Credentials::Basic {
                username,
                password: token,
            },
            None => Credentials::RegistryToken(token),
        })
    }

    /// Token services are reached with the controller's own transport: never the object's
    /// proxy or CA.
    fn credential_http(&self) -> Result<reqwest::Client, Failure> {
        self.ctx
            .http_clients
            .get(Transport::token_service())
            .map_err(|e| auth_failed(format!("failed to build the credential client: {e}")))
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
fn check_transport(transport: &Transport, provider: &str) -> Result<(), Failure> {
    if transport.insecure {
        return Err(misconfigured(format!(
            "cloud provider credentials are sent only over TLS: spec.insecure cannot be used with provider '{provider}'"
        )));
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
