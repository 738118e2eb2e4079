//! Toxiproxy (github.com/Shopify/toxiproxy/v2, built by hack/testbin.sh): a real TCP fault
//! injector put between a controller and a service, driven over its HTTP API: outages, latency,
//! connections reset or cut after some bytes, stalls.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::Platform;
use super::controller::free_port;
use super::wait::poll;

pub struct Toxiproxy {
    child: Child,
    api: String,
    http: reqwest::Client,
}

impl Toxiproxy {
    pub async fn start(platform: &Platform) -> Toxiproxy {
        let bin = Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin/toxiproxy-server");
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {}: {e} (hack/testbin.sh builds it)",
                    bin.display()
                )
            });
        let toxiproxy = Toxiproxy {
            child,
            api: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        poll("toxiproxy's API", Duration::from_secs(30), async || {
            let version = toxiproxy.http.get(format!("{}/version", toxiproxy.api));
            version
                .send()
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        })
        .await;
        toxiproxy
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.api));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("toxiproxy API");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "toxiproxy {method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A proxy to `upstream` (`host:port`); the `127.0.0.1:<port>` it listens on.
    pub async fn proxy(&self, name: &str, upstream: &str) -> String {
        let listen = format!("127.0.0.1:{}", free_port());
        let body = json!({"name": name, "listen": listen, "upstream": upstream, "enabled": true});
        self.call(reqwest::Method::POST, "/proxies", Some(body))
            .await;
        listen
    }

    /// Enabled: connections pass; disabled: refused, and open ones are closed (an outage).
    pub async fn set_enabled(&self, proxy: &str, enabled: bool) {
        let body = json!({"enabled": enabled});
        self.call(
            reqwest::Method::POST,
            &format!("/proxies/{proxy}"),
            Some(body),
        )
        .await;
    }

    /// Adds toxic `name` of `kind` on the responses (`downstream`) through `proxy`.
    pub async fn add_toxic(&self, proxy: &str, name: &str, kind: &str, attributes: Value) {
        let body = json!({"name": name, "type": kind, "stream": "downstream", "toxicity": 1.0,
                          "attributes": attributes});
        self.call(
            reqwest::Method::POST,
            &format!("/proxies/{proxy}/toxics"),
            Some(body),
        )
        .await;
    }

    pub async fn remove_toxic(&self, proxy: &str, name: &str) {
        self.call(
            reqwest::Method::DELETE,
            &format!("/proxies/{proxy}/toxics/{name}"),
            None,
        )
        .await;
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
