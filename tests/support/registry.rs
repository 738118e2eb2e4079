//! A registry of its own for a test: the platform's registry binary (Debian's docker-registry,
//! CNCF distribution 2.8) with a notifications endpoint, which the shared platform registry has
//! not (its events would go to whichever test listens).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait::poll;

/// `docker-registry` (the platform's registry binary) on a port of its own, sending its
/// notifications to `endpoint` with the token; stopped on drop.
pub struct NotifyingRegistry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl NotifyingRegistry {
    pub async fn start(endpoint: &str, token: &str) -> NotifyingRegistry {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", super::controller::free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n\
                 http: {{addr: \"{addr}\"}}\nnotifications:\n  endpoints:\n  - name: driftless\n\
                 \x20   url: {endpoint}\n    headers: {{Authorization: [\"Bearer {token}\"]}}\n\
                 \x20   timeout: 2s\n    threshold: 3\n    backoff: 1s\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let probe = format!("http://{addr}/v2/");
        poll(
            "the notifying registry to serve",
            Duration::from_secs(60),
            async || reqwest::get(&probe).await.ok().map(|_| ()),
        )
        .await;
        NotifyingRegistry {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for NotifyingRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
