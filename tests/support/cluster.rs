//! A cluster of a test's own: its own etcd and kube-apiserver (the platform's binaries and
//! certificate authority), so a test can kill and restart them, compact etcd, or throttle a
//! user through priority and fairness without disturbing the tests that share the platform.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;

use super::Platform;
use super::controller::free_port;

pub struct PrivateCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pki: PathBuf,
    apiserver_flags: Vec<String>,
    etcd: Option<Child>,
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: Option<Child>,
    pub port: u16,
    /// An admin kubeconfig (the platform's admin certificate, system:masters).
    pub kubeconfig: PathBuf,
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl PrivateCluster {
    /// etcd and kube-apiserver (with `apiserver_flags` added), both ready.
    pub fn start(platform: &Platform, apiserver_flags: &[&str]) -> PrivateCluster {
        let dir = tempfile::tempdir().unwrap();
        let state = PathBuf::from(&platform.env["DRIFTLESS_PLATFORM_DIR"]);
        let port = free_port();
        let kubeconfig = dir.path().join("kubeconfig");
        let admin = std::fs::read_to_string(platform.kubeconfig()).unwrap();
        let server = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap()
            .to_string();
        std::fs::write(
            &kubeconfig,
            admin.replace(&server, &format!("https://127.0.0.1:{port}")),
        )
        .unwrap();
        let mut cluster = PrivateCluster {
            bin: Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin"),
            pki: state.join("pki"),
            apiserver_flags: apiserver_flags.iter().map(|f| f.to_string()).collect(),
            etcd: None,
            etcd_client: free_port(),
            etcd_peer: free_port(),
            apiserver: None,
            port,
            kubeconfig,
            dir,
        };
        cluster.start_etcd();
        cluster.start_apiserver();
        cluster
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap()
    }

    pub fn log_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Starts etcd over its data directory (kept across restarts) and waits until it is ready.
    pub fn start_etcd(&mut self) {
        let (client, peer) = (self.etcd_client, self.etcd_peer);
        let child = Command::new(self.bin.join("etcd"))
            .args([
                "--name",
                "private",
                "--log-level",
                "warn",
                "--unsafe-no-fsync",
            ])
            .arg("--data-dir")
            .arg(self.dir.path().join("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=private=http://127.0.0.1:{peer}"))
            .stdout(Stdio::null())
            .stderr(self.log("etcd"))
            .spawn()
            .expect("start etcd");
        self.etcd = Some(child);
        self.wait_ok(
            "etcd",
            &["-sf", &format!("http://127.0.0.1:{client}/readyz")],
        );
    }

    /// SIGKILL: etcd dies with whatever it was doing.
    pub fn kill_etcd(&mut self) {
        kill(&mut self.etcd);
    }

    pub fn start_apiserver(&mut self) {
        let pki = &self.pki;
        let port = self.port;
        let child = Command::new(self.bin.join("kube-apiserver"))
            .args(&self.apiserver_flags)
            .arg(format!(
                "--etcd-servers=http://127.0.0.1:{}",
                self.etcd_client
            ))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .args([
                "--endpoint-reconciler-type=none",
                "--authorization-mode=RBAC",
            ])
            .arg(format!("--secure-port={port}"))
            .arg(format!(
                "--tls-cert-file={}",
                pki.join("apiserver.crt").display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                pki.join("apiserver.key").display()
            ))
            .arg(format!("--client-ca-file={}", pki.join("ca.crt").display()))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg(format!("--service-account-issuer=https://127.0.0.1:{port}"))
            .arg(format!(
                "--service-account-key-file={}",
                pki.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                pki.join("sa.key").display()
            ))
            .args([
                "--allow-privileged=true",
                "--disable-admission-plugins=ServiceAccount",
            ])
            .arg(format!(
                "--cert-dir={}",
                self.dir.path().join("apiserver-certs").display()
            ))
            .stdout(Stdio::null())
            .stderr(self.log("kube-apiserver"))
            .spawn()
            .expect("start kube-apiserver");
        self.apiserver = Some(child);
        let (ca, crt, key) = (
            pki.join("ca.crt"),
            pki.join("admin.crt"),
            pki.join("admin.key"),
        );
        let readyz = format!("https://127.0.0.1:{port}/readyz");
        self.wait_ok(
            "kube-apiserver",
            &[
                "-sf",
                "--cacert",
                &ca.display().to_string(),
                "--cert",
                &crt.display().to_string(),
                "--key",
                &key.display().to_string(),
                &readyz,
            ],
        );
    }

    /// SIGKILL: the API server dies with its open watches and requests.
    pub fn kill_apiserver(&mut self) {
        kill(&mut self.apiserver);
    }

    fn wait_ok(&self, what: &str, curl: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ok = Command::new("curl")
                .args(curl)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} not ready within 90s:\n{}",
                self.log_text(what)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub async fn client(&self) -> Client {
        super::client_of(&self.kubeconfig).await
    }

    /// A kubeconfig for user `name` (a client certificate from the platform's CA, in no
    /// group), to `server` (`host:port`, a proxy's, say).
    pub fn user_kubeconfig(&self, name: &str, server: &str) -> PathBuf {
        let dir = self.dir.path();
        let (key, csr, crt) = (
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}.csr")),
            dir.join(format!("{name}.crt")),
        );
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let path = |p: &Path| p.display().to_string();
        // An extension makes it an X.509 v3 certificate, the only kind rustls accepts.
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").unwrap();
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &path(&key),
            "-out",
            &path(&csr),
            "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &path(&csr),
            "-CA",
            &path(&self.pki.join("ca.crt")),
            "-CAkey",
            &path(&self.pki.join("ca.key")),
            "-CAcreateserial",
            "-out",
            &path(&crt),
            "-days",
            "1",
            "-extfile",
            &path(&ext),
        ]);
        let b64 = |p: &Path| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap())
        };
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: private\n  cluster:\n    server: https://{server}\n    certificate-authority-data: {}\nusers:\n- name: {name}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: private\n  context: {{cluster: private, user: {name}}}\ncurrent-context: private\n",
            b64(&self.pki.join("ca.crt")),
            b64(&crt),
            b64(&key)
        );
        std::fs::write(&kubeconfig, text).unwrap();
        kubeconfig
    }

    async fn etcd_call(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}{path}", self.etcd_client);
        let answer = reqwest::Client::new()
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("etcd's HTTP gateway");
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        assert!(status.is_success(), "etcd {path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// etcd's current revision.
    pub async fn etcd_revision(&self) -> i64 {
        // A range over one key that need not exist: the answer's header carries the revision.
        let answer = self
            .etcd_call("/v3/kv/range", serde_json::json!({"key": "Lw=="}))
            .await;
        answer["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("etcd revision")
    }

    /// Compacts etcd's history up to its current revision: a watch from any older
    /// resourceVersion now ends in 410 Gone.
    pub async fn compact(&self) -> i64 {
        let revision = self.etcd_revision().await;
        self.etcd_call(
            "/v3/kv/compaction",
            serde_json::json!({"revision": revision.to_string(), "physical": true}),
        )
        .await;
        revision
    }

    /// The API server's /metrics, read as the admin.
    pub async fn metrics(&self) -> String {
        let client = self.client().await;
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        client.request_text(request).await.expect("GET /metrics")
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        kill(&mut self.apiserver);
        kill(&mut self.etcd);
    }
}
