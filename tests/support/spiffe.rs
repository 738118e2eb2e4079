//! The test platform's SPIFFE Workload API (hack/spiffe-workload-api, built on go-spiffe by
//! hack/testbin.sh): one CA for the trust domain `driftless.test`, one Unix socket per workload
//! identity, X.509-SVIDs re-issued at half their lifetime.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Platform;

pub const TRUST_DOMAIN: &str = "driftless.test";

pub struct WorkloadApi {
    child: Child,
    sockets: HashMap<String, PathBuf>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// `spiffe://driftless.test/<name>`.
pub fn id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/{name}")
}

impl WorkloadApi {
    /// Serves `spiffe://driftless.test/<name>` for each name, SVIDs living `ttl`; returns once
    /// every socket listens.
    pub fn start(platform: &Platform, names: &[&str], ttl: Duration) -> WorkloadApi {
        let dir = tempfile::tempdir().unwrap();
        let bin = Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin/spiffe-workload-api");
        let log = dir.path().join("workload-api.log");
        let mut command = Command::new(&bin);
        command
            .arg(format!("--trust-domain={TRUST_DOMAIN}"))
            .arg(format!("--ttl={}ms", ttl.as_millis()))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut sockets = HashMap::new();
        for name in names {
            let socket = dir.path().join(format!("{name}.sock"));
            command.arg(format!("--serve={}={}", socket.display(), id(name)));
            sockets.insert(name.to_string(), socket);
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {}: {e} (hack/testbin.sh builds it)",
                bin.display()
            )
        });
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert_eq!(
            first.trim(),
            "ready",
            "spiffe-workload-api: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        WorkloadApi {
            child,
            sockets,
            log,
            _dir: dir,
        }
    }

    /// `SPIFFE_ENDPOINT_SOCKET` for the workload `name`.
    pub fn endpoint(&self, name: &str) -> String {
        format!("unix://{}", self.sockets[name].display())
    }

    /// How many X.509-SVIDs were issued for `name` so far (a first one, then one per rotation,
    /// per connected client).
    pub fn issued(&self, name: &str) -> usize {
        let line = format!("issued an X.509-SVID for {}", id(name));
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.ends_with(&line))
            .count()
    }
}

impl Drop for WorkloadApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
