//! OCIRepository `spec.provider` end to end, through a proxy that gives the platform's TLS
//! registries cloud host names:
//! - `aws`: the controller's own identity (IRSA web identity, EKS Pod Identity) and a
//!   ServiceAccount's (object-level workload identity) turned into an ECR login by moto's STS
//!   and ECR, used on a registry that answers to an ECR name and takes only that login;
//! - `azure`: Entra ID tokens (from a token service that checks the assertion it is given)
//!   exchanged at hack/cloud-registry.py's ACR `/oauth2/exchange`;
//! - `gcp`: Google access tokens from the metadata server or its Google STS, taken by its
//!   Artifact Registry.

mod support;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::{Api, Client};

use driftless::api::OCIRepository;
use driftless::oci::registry::Credentials;
use driftless::transport::Transport;
use support::controller::SourceController;
use support::oci::{FLUX_LAYER, client_with, flux_layer, push_flux_artifact};
use support::proxy::Proxy;
use support::relay::Relay;
use support::source::{Expect, Message, Sources, case, condition, revision};

/// An account other than the registry's: a login made with its keys is refused.
const OTHER_ACCOUNT: &str = "111111111111";

struct Env {
    platform: support::Platform,
    client: Client,
    ns: support::TestNamespace,
    /// moto behind a relay: its plain-HTTP requests are kept, and it can be taken down.
    aws: Relay,
    proxy: Proxy,
    account: String,
}

impl Env {
    async fn new(prefix: &str) -> Env {
        let platform = support::platform();
        let client = platform.client().await;
        support::install_crds(&client).await;
        let ns = support::TestNamespace::new(&platform, &client, prefix).await;
        let moto = platform.env["DRIFTLESS_MOTO"].trim_start_matches("http://");
        let aws = Relay::start(moto).await;
        let registry = platform.env["DRIFTLESS_CLOUD_REGISTRY"].clone();
        let account = platform.env["DRIFTLESS_ECR_ACCOUNT"].clone();
        let clouds = platform.env["DRIFTLESS_CLOUD_TOKEN_REGISTRY"].clone();
        let routes = [
            (ecr_host(&account) + ":443", registry.clone()),
            (ecr_host(OTHER_ACCOUNT) + ":443", registry.clone()),
            (format!("{ACR_HOST}:443"), clouds.clone()),
            (format!("{GAR_HOST}:443"), clouds.clone()),
            ("sts.googleapis.com:443".into(), clouds.clone()),
            ("iamcredentials.googleapis.com:443".into(), clouds),
        ];
        let routes: Vec<(&str, &str)> = routes
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let proxy = Proxy::start_routing(None, &routes).await;
        Env {
            platform,
            client,
            ns,
            aws,
            proxy,
            account,
        }
    }

    /// What every controller here shares: AWS endpoints at moto (allowed to receive the
    /// controller's credentials), the proxy that gives the registry its ECR names, and the
    /// platform CA in the controller's trust store.
    fn controller(&self, identity: &[(&str, String)]) -> SourceController {
        self.controller_with_args(identity, &[])
    }

    fn controller_with_args(&self, identity: &[(&str, String)], args: &[&str]) -> SourceController {
        let endpoint = format!("http://{}", self.aws.address);
        let mut vars: Vec<(&str, String)> = vec![
            ("AWS_ENDPOINT_URL_STS", endpoint.clone()),
            ("AWS_ENDPOINT_URL_ECR", endpoint.clone()),
            (
                "HTTPS_PROXY",
                format!("http://127.0.0.1:{}", self.proxy.port),
            ),
            ("NO_PROXY", "127.0.0.1,localhost".into()),
            (
                "SSL_CERT_FILE",
                self.platform.env["DRIFTLESS_REGISTRY_CA"].clone(),
            ),
        ];
        vars.extend(identity.iter().cloned());
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let allow = format!("--allowed-ambient-credential-endpoints={endpoint}");
        let mut all = vec![allow.as_str()];
        all.extend_from_slice(args);
        SourceController::start_with_env(&self.platform, &self.ns.name, &all, &vars)
    }

    /// Push an artifact to the cloud registry (with the login it takes); returns its digest.
    async fn push(&self, repo: &str) -> String {
        let ca = std::fs::read(&self.platform.env["DRIFTLESS_REGISTRY_CA"]).unwrap();
        let registry = client_with(
            &self.platform.env["DRIFTLESS_CLOUD_REGISTRY"],
            Credentials::Basic {
                username: "AWS".into(),
                password: format!("{}-auth-token", self.account),
            },
            Transport {
                ca_pem: Some(ca),
                ..Default::default()
            },
        );
        let layer = flux_layer(&[("app.yaml", "kind: ConfigMap\n")]);
        push_flux_artifact(&registry, repo, "latest", layer, FLUX_LAYER, &[]).await
    }

    fn spec(&self, account: &str, repo: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut spec = serde_json::json!({
            "url": format!("oci://{}/{repo}", ecr_host(account)),
            "interval": "10m", "provider": "aws",
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        spec
    }

    /// A token the API server issues for a ServiceAccount, as EKS projects it into a pod.
    async fn projected_token(&self, sa: &str, audience: &str) -> std::path::PathBuf {
        self.service_account(sa, &[]).await;
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![audience.into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let issued = Api::<ServiceAccount>::namespaced(self.client.clone(), &self.ns.name)
            .create_token_request(sa, &PostParams::default(), &request)
            .await
            .unwrap();
        let path = std::env::temp_dir().join(format!("{}-{sa}.token", self.ns.name));
        std::fs::write(&path, issued.status.unwrap().token.unwrap()).unwrap();
        path
    }

    async fn service_account(&self, name: &str, annotations: &[(&str, String)]) {
        let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": annotations.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()},
        }))
        .unwrap();
        Api::<ServiceAccount>::namespaced(self.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
    }

    /// STS AssumeRoleWithWebIdentity calls that reached moto for `role`.
    fn assume_role_calls(&self, role: &str) -> usize {
        let encoded = role.replace(':', "%3A").replace('/', "%2F");
        self.aws
            .plain_text()
            .split("Action=AssumeRoleWithWebIdentity")
            .skip(1)
            .filter(|call| {
                let body = call.split("HTTP/1.1").next().unwrap_or_default();
                body.contains(&format!("RoleArn={encoded}"))
            })
            .count()
    }

    fn ecr_calls(&self) -> usize {
        self.aws
            .plain_text()
            .matches("AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken")
            .count()
    }
}

impl Env {
    /// `driftless artifact ARGS --provider aws` with AWS keys in its environment, the ECR API
    /// at moto and the registry's ECR name through the proxy. It runs without blocking: the
    /// relay and the proxy serve it from this test's runtime.
    async fn cli(&self, keys: &[(&str, String)], args: &[&str]) -> (bool, String) {
        self.cli_as("aws", keys, args).await
    }

    async fn cli_as(
        &self,
        provider: &str,
        keys: &[(&str, String)],
        args: &[&str],
    ) -> (bool, String) {
        let out = tokio::process::Command::new(support::controller::driftless_bin())
            .arg("artifact")
            .args(args)
            .args(["--provider", provider])
            .envs(keys.iter().map(|(k, v)| (*k, v.as_str())))
            .env("HOME", "/nonexistent")
            .env(
                "AWS_ENDPOINT_URL_ECR",
                format!("http://{}", self.aws.address),
            )
            .env(
                "HTTPS_PROXY",
                format!("http://127.0.0.1:{}", self.proxy.port),
            )
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("SSL_CERT_FILE", &self.platform.env["DRIFTLESS_REGISTRY_CA"])
            .output()
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Env {
    /// Session keys of `role` from moto's STS, asked directly (not through the relay), by the
    /// names of its answer: `AccessKeyId`, `SecretAccessKey`, `SessionToken`, `Expiration`.
    async fn moto_keys(&self, role: &str) -> impl Fn(&str) -> String + use<> {
        let answer = reqwest::Client::new()
            .post(&self.platform.env["DRIFTLESS_MOTO"])
            .form(&[
                ("Action", "AssumeRoleWithWebIdentity"),
                ("Version", "2011-06-15"),
                ("RoleArn", role),
                ("RoleSessionName", "driftless-tests"),
                ("WebIdentityToken", "test"),
            ])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        move |tag: &str| driftless::identity::auth::xml_text(&answer, tag).unwrap()
    }
}

fn ecr_host(account: &str) -> String {
    format!("{account}.dkr.ecr.us-east-1.amazonaws.com")
}

fn role(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/{name}")
}

#[tokio::test]
async fn irsa_web_identity_logs_in_to_ecr_and_a_non_ecr_url_stalls() {
    let e = Env::new("ecr-irsa").await;
    let repo = format!("{}/app", e.ns.name);
    let digest = e.push(&repo).await;
    let token = e
        .projected_token("driftless-controller", "sts.amazonaws.com")
        .await;
    let controller_role = role(&e.account, "driftless-controller");
    let controller = e.controller(&[
        ("AWS_ROLE_ARN", controller_role.clone()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
    ]);
    let sources: Sources<OCIRepository> = Sources::new(&e.client, &e.ns.name, &controller);
    let results = sources
        .run_cases(&[
            case(
                "ecr",
                e.spec(&e.account, &repo, serde_json::json!({})),
                Expect::ready(format!("latest@{digest}")),
            ),
            case(
                "not-ecr",
                serde_json::json!({
                    "url": format!("oci://{}/{repo}", e.platform.registry()),
                    "interval": "10m", "provider": "aws", "insecure": true,
                }),
                Expect::stalled(
                    "InvalidProviderConfiguration",
                    Message::contains("is not an Amazon ECR registry"),
                ),
            ),
            case(
                "ecr-plain-http",
                e.spec(&e.account, &repo, serde_json::json!({"insecure": true})),
                Expect::stalled(
                    "InvalidProviderConfiguration",
                    Message::contains("only over TLS"),
                ),
            ),
        ])
        .await;
    let message = &condition(&results["not-ecr"], "Stalled").unwrap().message;
    assert!(message.contains("dkr.ecr"), "names the pattern: {message}");
    assert!(
        e.assume_role_calls(&controller_role) >= 1,
        "the controller's web identity went to STS"
    );
    assert!(e.ecr_calls() >= 1, "the login came from ECR");
    let seen = e.proxy.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.starts_with(&format!("CONNECT {}:443", ecr_host(&e.account)))),
        "the registry was reached under its ECR name: {seen:?}"
    );
}

/// A ServiceAccount's role gives the login; the controller's own role (in another account,
/// whose login the registry refuses) is not used for it. Several objects of one identity make
/// one STS exchange. With AWS unreachable the stored artifact stays served.
#[tokio::test]
async fn object_identity_uses_the_service_accounts_role_once_and_outages_keep_the_artifact() {
    let e = Env::new("ecr-object").await;
    let repo = format!("{}/app", e.ns.name);
    let digest = e.push(&repo).await;
    let token = e
        .projected_token("driftless-controller", "sts.amazonaws.com")
        .await;
    let controller_role = role(OTHER_ACCOUNT, "driftless-controller");
    let controller = e.controller(&[
        ("AWS_ROLE_ARN", controller_role.clone()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
    ]);
    let reader_role = role(&e.account, "app-reader");
    e.service_account(
        "app-reader",
        &[("eks.amazonaws.com/role-arn", reader_role.clone())],
    )
    .await;
    e.service_account("unannotated", &[]).await;
    let sources: Sources<OCIRepository> = Sources::new(&e.client, &e.ns.name, &controller);
    let with_sa = |sa: &str| {
        e.spec(
            &e.account,
            &repo,
            serde_json::json!({"serviceAccountName": sa}),
        )
    };
    let results = sources
        .run_cases(&[
            case(
                "reader-1",
                with_sa("app-reader"),
                Expect::ready(format!("latest@{digest}")),
            ),
            case(
                "reader-2",
                with_sa("app-reader"),
                Expect::ready(format!("latest@{digest}")),
            ),
            case(
                "reader-3",
                with_sa("app-reader"),
                Expect::ready(format!("latest@{digest}")),
            ),
            case(
                "controller-identity",
                e.spec(&e.account, &repo, serde_json::json!({})),
                Expect::fetch_failed("OCIArtifactPullFailed", Message::Any),
            ),
            // Retried, not stalled: annotating the ServiceAccount later heals the object.
            case(
                "no-role",
                with_sa("unannotated"),
                Expect::fetch_failed(
                    "AuthenticationFailed",
                    Message::contains("invalid eks.amazonaws.com/role-arn annotation: ''"),
                ),
            ),
        ])
        .await;
    assert_eq!(
        e.assume_role_calls(&reader_role),
        1,
        "one STS exchange for three objects of one identity"
    );
    assert!(
        e.assume_role_calls(&controller_role) >= 1,
        "the controller's own role was used for the object that names no ServiceAccount"
    );

    // AWS goes away: the login cannot be renewed (moto's logins are already expired), the
    // object fails with the cause, and the artifact stays served.
    let before = results["reader-1"].clone();
    let served = sources.download(&before);
    e.aws.set_down(true);
    let failed = sources.request_reconcile("reader-1").await;
    let fetch_failed = condition(&failed, "FetchFailed").expect("FetchFailed");
    assert_eq!(fetch_failed.reason, "AuthenticationFailed");
    let message = &fetch_failed.message;
    assert!(message.contains("GetAuthorizationToken"), "{message}");
    assert_eq!(
        revision(&failed),
        revision(&before),
        "the last artifact is kept"
    );
    assert_eq!(sources.download(&failed), served, "and still served");
    e.aws.set_down(false);
}

/// EKS Pod Identity's agent hands out these keys (a role of the registry's account, from moto's
/// STS) to a caller bearing this token; a test sets them before the controller starts.
static POD_IDENTITY_KEYS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
const POD_IDENTITY_TOKEN: &str = "eks-pod-identity-token";

/// The Pod Identity agent's answer, as EKS documents it: the role's keys as JSON for the right
/// `Authorization` token, 401 otherwise.
fn pod_identity_agent(request: &support::listener::Request) -> support::listener::Answer {
    match (request.path.as_str(), request.header("authorization")) {
        ("/v1/credentials", Some(POD_IDENTITY_TOKEN)) => (
            200,
            vec![("content-type", "application/json".into())],
            POD_IDENTITY_KEYS.get().cloned().unwrap_or_default(),
        ),
        _ => (401, vec![], r#"{"Message":"invalid token"}"#.into()),
    }
}

#[tokio::test]
async fn eks_pod_identity_credentials_log_in_to_ecr() {
    let e = Env::new("ecr-pod-identity").await;
    let repo = format!("{}/app", e.ns.name);
    let digest = e.push(&repo).await;
    // The keys of a role in the registry's account, as the agent would have them.
    let role_arn = role(&e.account, "pod-identity");
    let field = e.moto_keys(&role_arn).await;
    POD_IDENTITY_KEYS
        .set(
            serde_json::json!({
                "AccessKeyId": field("AccessKeyId"),
                "SecretAccessKey": field("SecretAccessKey"),
                "Token": field("SessionToken"),
                "Expiration": field("Expiration"),
            })
            .to_string(),
        )
        .unwrap();
    let agent = support::listener::Listener::start(pod_identity_agent).await;
    let token_file = std::env::temp_dir().join(format!("{}-pod-identity.token", e.ns.name));
    std::fs::write(&token_file, POD_IDENTITY_TOKEN).unwrap();
    let controller = e.controller(&[
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{}/v1/credentials", agent.address()),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.display().to_string(),
        ),
    ]);
    let sources: Sources<OCIRepository> = Sources::new(&e.client, &e.ns.name, &controller);
    sources
        .run_cases(&[case(
            "ecr",
            e.spec(&e.account, &repo, serde_json::json!({})),
            Expect::ready(format!("latest@{digest}")),
        )])
        .await;
    let asked = agent.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.header("authorization") == Some(POD_IDENTITY_TOKEN)),
        "the agent was asked with the projected token: {asked:?}"
    );
}

/// `driftless artifact push|list|pull --provider aws` in CI: the job's AWS keys (here a role of
/// the registry's account, from moto's STS) logged in to ECR by the same code as the controller.
#[tokio::test]
async fn the_cli_logs_in_to_ecr_with_the_environments_aws_identity() {
    let e = Env::new("ecr-cli").await;
    let field = e.moto_keys(&role(&e.account, "ci")).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), "kind: ConfigMap\n").unwrap();
    let url = format!("oci://{}/{}/app:v1", ecr_host(&e.account), e.ns.name);
    let keys = [
        ("AWS_ACCESS_KEY_ID", field("AccessKeyId")),
        ("AWS_SECRET_ACCESS_KEY", field("SecretAccessKey")),
        ("AWS_SESSION_TOKEN", field("SessionToken")),
    ];
    let path = dir.path().to_str().unwrap();
    let (ok, out) = e
        .cli(
            &keys,
            &[
                "push",
                &url,
                "--path",
                path,
                "--source",
                "s",
                "--revision",
                "r",
            ],
        )
        .await;
    assert!(ok, "push: {out}");
    let (ok, out) = e.cli(&keys, &["list", url.trim_end_matches(":v1")]).await;
    assert!(ok && out.contains("v1"), "list: {out}");
    assert!(e.ecr_calls() >= 2, "each command logged in through ECR");
    let (ok, out) = e
        .cli(
            &keys,
            &[
                "push",
                &url.replace(&ecr_host(&e.account), e.platform.registry()),
                "--path",
                path,
                "--source",
                "s",
                "--revision",
                "r",
            ],
        )
        .await;
    assert!(
        !ok && out.contains("is not an Amazon ECR registry"),
        "{out}"
    );
}

/// `--default-service-account` (Flux's lockdown): an object that names no ServiceAccount
/// borrows that one of its namespace, never the controller's identity; without it there, the
/// object fails with Flux's lockdown message.
#[tokio::test]
async fn the_default_service_account_locks_out_the_controllers_identity() {
    let e = Env::new("ecr-lockdown").await;
    let repo = format!("{}/app", e.ns.name);
    let digest = e.push(&repo).await;
    let token = e
        .projected_token("driftless-controller", "sts.amazonaws.com")
        .await;
    // The controller's own role would get a login the registry refuses.
    let controller = e.controller_with_args(
        &[
            ("AWS_ROLE_ARN", role(OTHER_ACCOUNT, "driftless-controller")),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.display().to_string()),
        ],
        &["--default-service-account=tenant-default"],
    );
    let tenant_role = role(&e.account, "tenant-default");
    e.service_account(
        "tenant-default",
        &[("eks.amazonaws.com/role-arn", tenant_role.clone())],
    )
    .await;
    let sources: Sources<OCIRepository> = Sources::new(&e.client, &e.ns.name, &controller);
    sources
        .run_cases(&[case(
            "locked",
            e.spec(&e.account, &repo, serde_json::json!({})),
            Expect::ready(format!("latest@{digest}")),
        )])
        .await;
    assert_eq!(
        e.assume_role_calls(&tenant_role),
        1,
        "the default SA's role"
    );
    assert_eq!(
        e.assume_role_calls(&role(OTHER_ACCOUNT, "driftless-controller")),
        0,
        "never the controller's own"
    );

    Api::<ServiceAccount>::namespaced(e.client.clone(), &e.ns.name)
        .delete("tenant-default", &Default::default())
        .await
        .unwrap();
    let failed = sources.request_reconcile("locked").await;
    let fetch_failed = condition(&failed, "FetchFailed").expect("FetchFailed");
    assert!(
        fetch_failed
            .message
            .contains("your cluster is subject to multi-tenant workload identity lockdown"),
        "{}",
        fetch_failed.message
    );
}

// Azure and Google: hack/cloud-registry.py answers as ACR under ACR_HOST and as Artifact
// Registry under GAR_HOST, and takes only the platform's Entra ID and Google tokens.

const ACR_HOST: &str = "driftless.azurecr.io";
const GAR_HOST: &str = "europe-docker.pkg.dev";
const ACR_SCOPE: &str = "https://containerregistry.azure.net/.default";
const TENANT: &str = "driftless-tenant";
const ACR_CLIENT: &str = "acr-reader";

impl Env {
    /// Push an artifact to the cloud token registry with its admin login; returns its digest.
    async fn push_to_clouds(&self, repo: &str) -> String {
        let ca = std::fs::read(&self.platform.env["DRIFTLESS_REGISTRY_CA"]).unwrap();
        let registry = client_with(
            &self.platform.env["DRIFTLESS_CLOUD_TOKEN_REGISTRY"],
            Credentials::Basic {
                username: self.platform.env["DRIFTLESS_REGISTRY_USER"].clone(),
                password: self.platform.env["DRIFTLESS_REGISTRY_PASSWORD"].clone(),
            },
            Transport {
                ca_pem: Some(ca),
                ..Default::default()
            },
        );
        let layer = flux_layer(&[("app.yaml", "kind: ConfigMap\n")]);
        push_flux_artifact(&registry, repo, "latest", layer, FLUX_LAYER, &[]).await
    }

    /// What hack/cloud-registry.py logged so far (the identities it accepted, among others).
    fn cloud_registry_log(&self) -> String {
        std::fs::read_to_string(&self.platform.env["DRIFTLESS_CLOUD_TOKEN_REGISTRY_LOG"])
            .unwrap_or_default()
    }

    fn cloud_spec(
        &self,
        provider: &str,
        host: &str,
        repo: &str,
        sa: Option<&str>,
    ) -> serde_json::Value {
        let mut spec = serde_json::json!({
            "url": format!("oci://{host}/{repo}"), "interval": "10m", "provider": provider,
        });
        if let Some(sa) = sa {
            spec["serviceAccountName"] = sa.into();
        }
        spec
    }
}

fn form(body: &str) -> std::collections::HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    token
        .split('.')
        .nth(1)
        .and_then(|c| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .ok()
        })
        .and_then(|c| serde_json::from_slice(&c).ok())
        .unwrap_or_default()
}

fn json_answer(status: u16, body: serde_json::Value) -> support::listener::Answer {
    (
        status,
        vec![("Content-Type", "application/json".into())],
        body.to_string(),
    )
}

/// Entra ID's token endpoint for TENANT, as far as ACR logins use it: the client-credentials
/// grant for ACR's scope, with ACR_CLIENT's client secret or a ServiceAccount token (audience
/// `api://AzureADTokenExchange`) as the assertion; it answers with the token the platform's ACR
/// takes, and refuses anything else naming the reason.
fn entra(request: &support::listener::Request) -> support::listener::Answer {
    let f = form(&request.body);
    let field = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
    let claims = jwt_claims(field("client_assertion"));
    let audience_ok = claims["aud"]
        .as_array()
        .is_some_and(|a| a.contains(&serde_json::json!("api://AzureADTokenExchange")));
    let refusal = if request.path != format!("/{TENANT}/oauth2/v2.0/token") {
        Some(format!("unknown tenant in {}", request.path))
    } else if field("grant_type") != "client_credentials" || field("scope") != ACR_SCOPE {
        Some(format!(
            "grant {} for scope {}",
            field("grant_type"),
            field("scope")
        ))
    } else if field("client_id") != ACR_CLIENT {
        Some(format!(
            "AADSTS700016: application {} not found",
            field("client_id")
        ))
    } else if field("client_secret") == "acr-reader-secret" {
        None
    } else if field("client_assertion_type")
        != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        || !audience_ok
    {
        Some(format!(
            "AADSTS700024: client assertion not accepted: {claims}"
        ))
    } else {
        None
    };
    match refusal {
        // The token names whom it was issued to: the registry's log tells whose reached it.
        None => {
            let who = claims["sub"].as_str().unwrap_or("secret");
            let token = format!(
                "{}:{}:{who}",
                support::platform().env["DRIFTLESS_ENTRA_TOKEN_PREFIX"],
                field("client_id")
            );
            json_answer(
                200,
                serde_json::json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"}),
            )
        }
        Some(why) => json_answer(
            400,
            serde_json::json!({"error": "invalid_client", "error_description": why}),
        ),
    }
}

/// The pod's Azure workload identity (the federated token file) logs in to ACR through the
/// registry's token exchange; a ServiceAccount's identity does so with its own token, one
/// Entra ID request for several objects; a ServiceAccount without Flux's annotations fails
/// with Flux's message; a host that is not ACR's never receives the token.
#[tokio::test]
async fn azure_identities_log_in_to_acr_through_its_token_exchange() {
    let e = Env::new("acr").await;
    let repo = format!("{}/app", e.ns.name);
    let digest = e.push_to_clouds(&repo).await;
    let entra = support::listener::Listener::start(entra).await;
    let federated = e
        .projected_token("driftless-controller", "api://AzureADTokenExchange")
        .await;
    let controller = e.controller(&[
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            federated.display().to_string(),
        ),
        ("AZURE_CLIENT_ID", ACR_CLIENT.into()),
        ("AZURE_TENANT_ID", TENANT.into()),
        (
            "AZURE_AUTHORITY_HOST",
            format!("http://{}", entra.address()),
        ),
    ]);
    let annotations = |client: &str| {
        vec![
            ("azure.workload.identity/tenant-id", TENANT.to_string()),
            ("azure.workload.identity/client-id", client.to_string()),
        ]
    };
    e.service_account("acr-reader", &annotations(ACR_CLIENT))
        .await;
    e.service_account("stranger", &annotations("unknown-client"))
        .await;
    e.service_account(
        "no-tenant",
        &[("azure.workload.identity/client-id", ACR_CLIENT.to_string())],
    )
    .await;
    let sources: Sources<OCIRepository> = Sources::new(&e.client, &e.ns.name, &controller);
    let spec = |sa: Option<&str>| e.cloud_spec("azure", ACR_HOST, &repo, sa);
    let revision = format!("latest@{digest}");
    sources
        .run_cases(&[
            case("controller", spec(None), Expect::ready(revision.clone())),
            case(
                "object-1",
                spec(Some("acr-reader")),
                Expect::ready(revision.clone()),
            ),
            case(
                "object-2",
                spec(Some("acr-reader")),
                Expect::ready(revision.clone()),
            ),
            case(
                "stranger",
                spec(Some("stranger")),
                Expect::fetch_failed(
                    "AuthenticationFailed",
                    Message::contains("AADSTS700016: application unknown-client not found"),
                ),
            ),
            case(
                "no-tenant",
                spec(Some("no-tenant")),
                Expect::fetch_failed(
                    "AuthenticationFailed",
                    Message::contains("failed to get provider identity from service account"),
                ),
            ),
            case(
                "not-acr",
                serde_json::json!({"url": format!("oci://{}/{repo}", e.platform.registry()),
                                   "interval": "10m", "provider": "azure"}),
                Expect::stalled(
                    "InvalidProviderConfiguration",
                    Message::contains("is not an Azure Container Registry"),
                ),
            ),
        ])
        .await;
    let no_tenant = sources
        .wait_failing("no-tenant", "AuthenticationFailed")
        .await;
    let message = &condition(&no_tenant, "FetchFailed").unwrap().message;
    assert!(
        message.contains("azure tenant ID is not set in the service account annotation azure.workload.identity/tenant-id"),
        "{message}"
    );

    let asked = entra.requests();
    let subjects: Vec<String> = asked
        .iter()
        .map(|r| {
            let claims = jwt_claims(form(&r.body).get("client_assertion").unwrap());
            claims["sub"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    let of = |sa: &str| {
        let sub = format!("system:serviceaccount:{}:{sa}", e.ns.name);
        subjects.iter().filter(|s| **s == sub).count()
    };
    assert_eq!(
        of("driftless-controller"),
        1,
        "the pod's federated token: {subjects:?}"
    );
    assert_eq!(
        of("acr-reader"),
        1,
        "one exchange for two objects of one identity: {subjects:?}"
    );
    assert!(
        of("stranger") >= 1,
        "the stranger's own token was used: {subjects:?}"
    );
    assert_eq!(of("no-tenant"), 0, "an incomplete identity asks nothing");
    let log = e.cloud_registry_log();
    for sa in ["driftless-controller", "acr-reader"] {
        let exchanged = format!(
            "acr exchange ok for {ACR_CLIENT}:system:serviceaccount:{}:{sa} at {ACR_HOST}",
            e.ns.name
        );
        assert!(log.contains(&exchanged), "{exchanged}");
    }
    let seen = e.proxy.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.starts_with(&format!("CONNECT {ACR_HOST}:443"))),
        "the registry was reached under its ACR name: {seen:?}"
    );

    // Flux's per-object token cache series, gone with the object.
    let series = |name: &str| {
        format!(
            "{{event_type=\"cache_miss\",kind=\"OCIRepository\",name=\"{name}\",namespace=\"{}\",operation=\"reconcile\"}}",
            e.ns.name
        )
    };
    let named = |metrics: &str, name: &str| {
        metrics
            .lines()
            .any(|l| l.starts_with(&format!("gotk_token_cache_events_total{}", series(name))))
    };
    let metrics = controller.metrics();
    assert!(named(&metrics, "controller"), "{metrics}");
    sources
        .api
        .delete("controller", &Default::default())
        .await
        .unwrap();
    sources.wait_gone("controller").await;
    let metrics = controller.metrics();
    assert!(
        !named(&metrics, "controller"),
        "forgotten with the object: {metrics}"
    );
}

/// The GKE/GCE metadata server's token for the node's service account: `Metadata-Flavor`
/// required, scopes named.
fn metadata_server(request: &support::listener::Request) -> support::listener::Answer {
    let token_path = "/computeMetadata/v1/instance/service-accounts/default/token?scopes=";
    match (
        request.header("metadata-flavor"),
        request.path.strip_prefix(token_path),
    ) {
        (Some("Google"), Some(scopes)) if scopes.contains("cloud-platform") => json_answer(
            200,
            serde_json::json!({"access_token": format!("{}:node", support::platform().env["DRIFTLESS_GOOGLE_TOKEN_PREFIX"]), "expires_in": 3599, "token_type": "Bearer"}),
        ),
        _ => (404, vec![], "not found".into()),
    }
}

/// The node's Google identity (metadata server) logs in to Artifact Registry, and so does
/// the CLI in CI; a ServiceAccount with Flux's workload identity pool annotation exchanges its
/// token at Google STS and impersonates its Google service account; bad annotations fail with
/// Flux's messages; a host that is not Google's never receives a token.
#[tokio::test]
async fn google_identities_log_in_to_artifact_registry() {
    let e = Env::new("gar").await;
    let repo = format!("project/{}/app", e.ns.name);
    let digest = e.push_to_clouds(&repo).await;
    let metadata = support::listener::Listener::start(metadata_server).await;
    let controller = e.controller(&[("GCE_METADATA_HOST", metadata.address())]);
    let pool = "projects/123456/locations/global/workloadIdentityPools/driftless/providers/kube";
    e.service_account(
        "gar-reader",
        &[
            (
                "gcp.auth.fluxcd.io/workload-identity-provider",
                pool.to_string(),
            ),
            (
                "iam.gke.io/gcp-service-account",
                "reader@project.iam.gserviceaccount.com".to_string(),
            ),
        ],
    )
    .await;
    e.service_account(
        "bad-gsa",
        &[(
            "iam.gke.io/gcp-service-account",
            "reader@example.com".to_string(),
        )],
    )
    .await;
    let sources: Sources<OCIRepository> = Sources::new(&e.client, &e.ns.name, &controller);
    let spec = |sa: Option<&str>| e.cloud_spec("gcp", GAR_HOST, &repo, sa);
    let revision = format!("latest@{digest}");
    sources
        .run_cases(&[
            case("node", spec(None), Expect::ready(revision.clone())),
            case("federated", spec(Some("gar-reader")), Expect::ready(revision.clone())),
            case(
                "bad-gsa",
                spec(Some("bad-gsa")),
                Expect::fetch_failed(
                    "AuthenticationFailed",
                    Message::contains("invalid iam.gke.io/gcp-service-account annotation: 'reader@example.com'. must match"),
                ),
            ),
            case(
                "not-google",
                serde_json::json!({"url": format!("oci://{}/{repo}", e.platform.registry()),
                                   "interval": "10m", "provider": "gcp"}),
                Expect::stalled(
                    "InvalidProviderConfiguration",
                    Message::contains("is not a Google registry"),
                ),
            ),
        ])
        .await;
    assert_eq!(
        metadata.requests().len(),
        1,
        "the node's token is fetched once"
    );
    let log = e.cloud_registry_log();
    let federated = format!("system:serviceaccount:{}:gar-reader", e.ns.name);
    for line in [
        "gar login ok for node".to_string(),
        format!("google sts ok for {federated}"),
        format!(
            "google impersonation ok for reader@project.iam.gserviceaccount.com by {federated}"
        ),
        "gar login ok for gsa:reader@project.iam.gserviceaccount.com".to_string(),
    ] {
        assert!(log.contains(&line), "the registry's log lacks: {line}");
    }
    let seen = e.proxy.seen.lock().unwrap().clone();
    for host in [
        GAR_HOST,
        "sts.googleapis.com",
        "iamcredentials.googleapis.com",
    ] {
        assert!(
            seen.iter()
                .any(|l| l.starts_with(&format!("CONNECT {host}:443"))),
            "{host} was reached: {seen:?}"
        );
    }

    let url = format!("oci://{GAR_HOST}/{repo}");
    let node = [("GCE_METADATA_HOST", metadata.address())];
    let (ok, out) = e.cli_as("gcp", &node, &["list", &url]).await;
    assert!(ok && out.contains("latest"), "list: {out}");
    let (ok, out) = e
        .cli_as(
            "gcp",
            &[("GCE_METADATA_HOST", "127.0.0.1:9".into())],
            &["list", &url],
        )
        .await;
    assert!(
        !ok && out.contains("metadata server is unreachable"),
        "{out}"
    );

    // CI's own workload identity federation: an external_account credentials file (as `gcloud
    // iam workload-identity-pools create-cred-config` writes it) whose subject token is a
    // ServiceAccount token for the pool's audience, exchanged at STS and for `ci@`'s token.
    let audience = format!("//iam.googleapis.com/{pool}");
    let subject = e.projected_token("ci-runner", &audience).await;
    let config = std::env::temp_dir().join(format!("{}-external-account.json", e.ns.name));
    let external_account = |source: serde_json::Value| {
        serde_json::json!({
            "type": "external_account",
            "audience": audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": "https://sts.googleapis.com/v1/token",
            "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/ci@project.iam.gserviceaccount.com:generateAccessToken",
            "credential_source": source,
        })
        .to_string()
    };
    std::fs::write(
        &config,
        external_account(serde_json::json!({"file": subject})),
    )
    .unwrap();
    let federation = [(
        "GOOGLE_APPLICATION_CREDENTIALS",
        config.to_string_lossy().into_owned(),
    )];
    let (ok, out) = e.cli_as("gcp", &federation, &["list", &url]).await;
    assert!(ok && out.contains("latest"), "list: {out}");
    let runner = format!("system:serviceaccount:{}:ci-runner", e.ns.name);
    let log = e.cloud_registry_log();
    for line in [
        format!("google sts ok for {runner}"),
        format!("google impersonation ok for ci@project.iam.gserviceaccount.com by {runner}"),
        "gar login ok for gsa:ci@project.iam.gserviceaccount.com".to_string(),
    ] {
        assert!(log.contains(&line), "the registry's log lacks: {line}");
    }
    // A subject token for another audience is refused by STS, and the CLI says so.
    let elsewhere = e
        .projected_token("ci-elsewhere", "https://elsewhere.example")
        .await;
    std::fs::write(
        &config,
        external_account(serde_json::json!({"file": elsewhere})),
    )
    .unwrap();
    let (ok, out) = e.cli_as("gcp", &federation, &["list", &url]).await;
    assert!(
        !ok && out.contains("the Google STS token exchange was refused"),
        "{out}"
    );
}

/// `--provider azure` in CI: a service principal's secret from the environment, logged in to
/// ACR by the same exchange as the controller.
#[tokio::test]
async fn the_cli_logs_in_to_acr_with_the_environments_service_principal() {
    let e = Env::new("acr-cli").await;
    let repo = format!("{}/app", e.ns.name);
    e.push_to_clouds(&repo).await;
    let entra = support::listener::Listener::start(entra).await;
    let principal = |secret: &str| {
        vec![
            ("AZURE_TENANT_ID", TENANT.to_string()),
            ("AZURE_CLIENT_ID", ACR_CLIENT.to_string()),
            ("AZURE_CLIENT_SECRET", secret.to_string()),
            (
                "AZURE_AUTHORITY_HOST",
                format!("http://{}", entra.address()),
            ),
        ]
    };
    let url = format!("oci://{ACR_HOST}/{repo}");
    let (ok, out) = e
        .cli_as("azure", &principal("acr-reader-secret"), &["list", &url])
        .await;
    assert!(ok && out.contains("latest"), "list: {out}");
    let (ok, out) = e
        .cli_as("azure", &principal("wrong"), &["list", &url])
        .await;
    assert!(
        !ok && out.contains("the Entra ID token request was refused"),
        "{out}"
    );
    let (ok, out) = e
        .cli_as(
            "azure",
            &principal("acr-reader-secret"),
            &["list", &format!("oci://{GAR_HOST}/{repo}")],
        )
        .await;
    assert!(
        !ok && out.contains("is not an Azure Container Registry"),
        "{out}"
    );
    assert_eq!(
        entra.requests().len(),
        2,
        "a host that is not ACR's asks for no token"
    );
    let exchanged = format!("acr exchange ok for {ACR_CLIENT}:secret at {ACR_HOST}");
    assert!(e.cloud_registry_log().contains(&exchanged), "{exchanged}");
}

/// Logins are renewed when their cache entry lapses (here after a second, with
/// `--token-cache-max-duration=1s`), with the federated token file read afresh: the kubelet
/// rotates it. The object stays Ready on its artifact throughout.
#[tokio::test]
async fn lapsed_logins_are_renewed_with_the_rotated_federated_token() {
    let e = Env::new("acr-renew").await;
    let repo = format!("{}/app", e.ns.name);
    let digest = e.push_to_clouds(&repo).await;
    let entra = support::listener::Listener::start(entra).await;
    let federated = e
        .projected_token("driftless-controller", "api://AzureADTokenExchange")
        .await;
    let controller = e.controller_with_args(
        &[
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                federated.display().to_string(),
            ),
            ("AZURE_CLIENT_ID", ACR_CLIENT.into()),
            ("AZURE_TENANT_ID", TENANT.into()),
            (
                "AZURE_AUTHORITY_HOST",
                format!("http://{}", entra.address()),
            ),
        ],
        &["--token-cache-max-duration=1s"],
    );
    let sources: Sources<OCIRepository> = Sources::new(&e.client, &e.ns.name, &controller);
    let expected = format!("latest@{digest}");
    sources
        .run_cases(&[case(
            "renewed",
            e.cloud_spec("azure", ACR_HOST, &repo, None),
            Expect::ready(expected.clone()),
        )])
        .await;
    assert_eq!(entra.requests().len(), 1);

    // The kubelet's rotation: the same file now holds a new token (of another ServiceAccount,
    // so that its use can be told apart).
    let rotated = e
        .projected_token("rotated", "api://AzureADTokenExchange")
        .await;
    std::fs::copy(&rotated, &federated).unwrap();
    let subject = format!("system:serviceaccount:{}:rotated", e.ns.name);
    let used_rotated = || {
        entra.requests().iter().any(|r| {
            jwt_claims(
                form(&r.body)
                    .get("client_assertion")
                    .map_or("", String::as_str),
            )["sub"]
                == subject.as_str()
        })
    };
    let deadline = std::time::Instant::now() + support::source::WAIT;
    while !used_rotated() {
        assert!(
            std::time::Instant::now() < deadline,
            "the login was not renewed with the rotated token: {:?}",
            entra.requests().len()
        );
        let obj = sources.request_reconcile("renewed").await;
        assert_eq!(revision(&obj), expected, "still serving the artifact");
    }
}

/// `provider: generic` with a ServiceAccount that opts in to Flux's `kubernetes` credential
/// provider: the API server issues the ServiceAccount a token for the registry's name, sent as
/// a bearer token (or, with a username annotation, as the Basic password at the token
/// endpoint); the registry accepts it only after its own TokenReview. A token for the
/// registry's own name goes only over TLS the controller trusts (an object CA needs explicit
/// audiences); tokens for another audience are refused by the registry; unsupported
/// annotations fail naming themselves; without the opt-in the object stays anonymous.
#[tokio::test]
async fn service_account_tokens_reach_a_registry_that_reviews_them() {
    let e = Env::new("sa-token").await;
    let repo = format!("{}/app", e.ns.name);
    let digest = e.push_to_clouds(&repo).await;
    let controller = e.controller(&[]);
    let ca = std::fs::read_to_string(&e.platform.env["DRIFTLESS_REGISTRY_CA"]).unwrap();
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "registry-ca"}, "stringData": {"ca.crt": ca},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(e.client.clone(), &e.ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    fn opt_in<'a>(extra: &[(&'a str, &str)]) -> Vec<(&'a str, String)> {
        let mut a = vec![(
            "credential.auth.fluxcd.io/provider",
            "kubernetes".to_string(),
        )];
        a.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        a
    }
    e.service_account(
        "bearer",
        &opt_in(&[("credential.auth.fluxcd.io/type", "jwt")]),
    )
    .await;
    e.service_account(
        "basic",
        &opt_in(&[
            ("credential.auth.fluxcd.io/username", "flux"),
            ("credential.auth.fluxcd.io/expiration-seconds", "900"),
        ]),
    )
    .await;
    e.service_account(
        "elsewhere",
        &opt_in(&[(
            "credential.auth.fluxcd.io/audiences",
            "https://other-registry.example",
        )]),
    )
    .await;
    e.service_account(
        "x509",
        &opt_in(&[("credential.auth.fluxcd.io/type", "x509")]),
    )
    .await;
    e.service_account("anonymous", &[]).await;
    let registry = e.platform.env["DRIFTLESS_CLOUD_TOKEN_REGISTRY"].clone();
    e.service_account(
        "explicit",
        &opt_in(&[("credential.auth.fluxcd.io/audiences", registry.as_str())]),
    )
    .await;
    // The controller trusts the platform CA (SSL_CERT_FILE); `with_ca` adds it as the object's.
    let spec = |sa: &str| {
        serde_json::json!({
            "url": format!("oci://{registry}/{repo}"), "interval": "10m", "serviceAccountName": sa,
        })
    };
    let with_ca = |sa: &str| {
        let mut s = spec(sa);
        s["certSecretRef"] = serde_json::json!({"name": "registry-ca"});
        s
    };
    let sources: Sources<OCIRepository> = Sources::new(&e.client, &e.ns.name, &controller);
    let revision = format!("latest@{digest}");
    sources
        .run_cases(&[
            case("bearer", spec("bearer"), Expect::ready(revision.clone())),
            case("basic", spec("basic"), Expect::ready(revision.clone())),
            case(
                "explicit",
                with_ca("explicit"),
                Expect::ready(revision.clone()),
            ),
            case(
                "default-with-ca",
                with_ca("bearer"),
                Expect::fetch_failed(
                    "AuthenticationFailed",
                    Message::contains("credential.auth.fluxcd.io/audiences"),
                ),
            ),
            case(
                "elsewhere",
                with_ca("elsewhere"),
                Expect::fetch_failed("OCIArtifactPullFailed", Message::contains("401")),
            ),
            case(
                "x509",
                spec("x509"),
                Expect::fetch_failed(
                    "AuthenticationFailed",
                    Message::contains("unsupported credential type 'x509'"),
                ),
            ),
            case(
                "anonymous",
                spec("anonymous"),
                Expect::fetch_failed("OCIArtifactPullFailed", Message::contains("401")),
            ),
        ])
        .await;
    let log = e.cloud_registry_log();
    let reviewed = |how: &str, sa: &str| {
        log.contains(&format!(
            "tokenreview {how} for system:serviceaccount:{}:{sa}",
            e.ns.name
        ))
    };
    assert!(reviewed("bearer ok", "bearer"), "the bearer token passed");
    assert!(reviewed("basic ok", "basic"), "the Basic password passed");
    assert!(
        reviewed("bearer ok", "explicit"),
        "the explicit audience passed"
    );
    assert!(
        reviewed("bearer refused", "elsewhere") && !reviewed("bearer ok", "elsewhere"),
        "a token for another audience reached the registry and was refused there"
    );
    assert!(
        !log.contains(&format!("system:serviceaccount:{}:anonymous", e.ns.name)),
        "no token without the opt-in"
    );
}
