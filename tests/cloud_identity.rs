//! OCIRepository `provider: aws` end to end: the controller's own identity (IRSA web identity,
//! EKS Pod Identity) and a ServiceAccount's (object-level workload identity) turned into an
//! ECR login by moto's STS and ECR, and used on a TLS registry that answers to an ECR host name
//! (through a proxy that maps the name to it) and takes only the login ECR gave.

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
        let routes = [
            (ecr_host(&account) + ":443", registry.clone()),
            (ecr_host(OTHER_ACCOUNT) + ":443", registry.clone()),
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
        let out = tokio::process::Command::new(support::controller::driftless_bin())
            .arg("artifact")
            .args(args)
            .args(["--provider", "aws"])
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
