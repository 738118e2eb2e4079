//! A real `driftless source-controller` process for one test: watching only the test's
//! namespace, storing into a directory of its own, on free ports, stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Platform;

pub struct SourceController {
    child: Option<Child>,
    pub storage: PathBuf,
    pub storage_port: u16,
    pub metrics_port: u16,
    pub log: PathBuf,
    namespace: String,
    platform: Platform,
    waits_for_lease: bool,
    _dir: Option<tempfile::TempDir>,
}

/// The driftless binary tests run: `DRIFTLESS_TEST_BINARY` when set (a private copy, which no
/// other build sharing the target directory can replace mid-run), else the one Cargo built.
pub fn driftless_binary() -> PathBuf {
    std::env::var_os("DRIFTLESS_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_driftless")))
}

/// Debug logs unless the caller chose a level (clap refuses a flag given twice).
fn default_log_level(extra_args: &[&str]) -> Option<&'static str> {
    let chosen = extra_args.iter().any(|a| a.starts_with("--log-level"));
    (!chosen).then_some("--log-level=debug")
}

/// A free local port, never one this test process handed out before: the OS may give a port
/// it just released again, and two controllers (or one controller's metrics and artifact
/// servers) must not race for it.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

impl SourceController {
    /// Start a controller for `namespace` with a fresh storage directory.
    pub fn start(platform: &Platform, namespace: &str, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let mut c = Self::start_with_storage(platform, namespace, &storage, extra_args);
        c._dir = Some(dir);
        c
    }

    /// Start a controller over an existing storage directory (a restart).
    pub fn start_with_storage(
        platform: &Platform,
        namespace: &str,
        storage: &Path,
        extra_args: &[&str],
    ) -> Self {
        let (storage_port, metrics_port, health_port) = (free_port(), free_port(), free_port());
        let log = storage.with_extension(format!("controller-{storage_port}.log"));
        std::fs::create_dir_all(storage).unwrap();
        let child = Command::new(driftless_binary())
            .arg("source-controller")
            .arg(format!("--storage-path={}", storage.display()))
            .arg(format!("--storage-addr=127.0.0.1:{storage_port}"))
            .arg(format!("--storage-adv-addr=127.0.0.1:{storage_port}"))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg(format!("--health-addr=127.0.0.1:{health_port}"))
            .arg("--watch-all-namespaces=false")
            .args(default_log_level(extra_args))
            .args(extra_args)
            .env("KUBECONFIG", platform.kubeconfig())
            .env("RUNTIME_NAMESPACE", namespace)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start driftless source-controller");
        let mut controller = SourceController {
            child: Some(child),
            storage: storage.to_path_buf(),
            storage_port,
            metrics_port,
            log,
            namespace: namespace.to_string(),
            platform: platform.clone(),
            waits_for_lease: extra_args.contains(&"--enable-leader-election"),
            _dir: None,
        };
        controller.wait_healthy(health_port);
        controller
    }

    fn wait_healthy(&mut self, port: u16) {
        let lease_only = self.waits_for_lease;
        wait_healthy(
            self.child.as_mut().unwrap(),
            "source-controller",
            port,
            lease_only,
            &self.log,
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stop the process (SIGTERM, then SIGKILL) and keep its storage.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }

    /// SIGKILL: the process dies without releasing anything (a node failure, an OOM kill).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The same storage, a new process: what a pod restart with a persistent volume does.
    pub fn restart(&mut self) -> SourceController {
        self.stop();
        let mut next = SourceController::start_with_storage(
            &self.platform.clone(),
            &self.namespace.clone(),
            &self.storage.clone(),
            &[],
        );
        next._dir = self._dir.take();
        next
    }

    /// The process's peak resident set size (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.pid())
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").1
    }
}

/// A process's CPU time from `/proc/<pid>/stat` (utime and stime, in clock ticks).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it are fixed.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 of stat(5), counted from the state field (3) after the name.
    let total = ticks(11) + ticks(12);
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(total * 1_000_000 / per_second)
}

/// A process's peak resident set size (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

impl Drop for SourceController {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until a controller process is ready (or, for a replica waiting for the leader Lease,
/// alive and listening), failing with its log if it exits or takes too long.
fn wait_healthy(child: &mut Child, role: &str, port: u16, lease_only: bool, log: &Path) {
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{role} exited with {status}; log:\n{}", log_text());
        }
        let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if listening && (lease_only || http_get(port, "/readyz").0 == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{role} not healthy; log:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops a controller process: SIGTERM, then SIGKILL after 10 s.
fn stop_child(mut child: Child) {
    terminate(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The status of a GET, or `None` while nothing listens on the port.
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(http_get(port, path).0)
}

/// A plain HTTP/1.0 GET over loopback: status and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let (status, body) = http_get_bytes(port, path);
    (status, String::from_utf8_lossy(&body).to_string())
}

pub fn http_get_bytes(port: u16, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, raw[split + 4..].to_vec())
}

/// A real `driftless apply-controller` process for one test: watching only the test's
/// namespace, with the platform's kustomize, on free ports, stopped on drop.
pub struct ApplyController {
    child: Option<Child>,
    pub metrics_port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ApplyController {
    pub fn start(platform: &Platform, namespace: &str, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (metrics_port, health_port) = (free_port(), free_port());
        let log = dir.path().join("apply-controller.log");
        let kustomize = Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin/kustomize");
        let child = Command::new(driftless_binary())
            .arg("apply-controller")
            .arg(format!("--kustomize-path={}", kustomize.display()))
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg(format!("--health-addr=127.0.0.1:{health_port}"))
            .arg("--watch-all-namespaces=false")
            .arg("--requeue-dependency=2s")
            .arg("--health-check-poll=500ms")
            .args(default_log_level(extra_args))
            .args(extra_args)
            .env("KUBECONFIG", platform.kubeconfig())
            .env("RUNTIME_NAMESPACE", namespace)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start driftless apply-controller");
        let mut controller = ApplyController {
            child: Some(child),
            metrics_port,
            log,
            _dir: dir,
        };
        wait_healthy(
            controller.child.as_mut().unwrap(),
            "apply-controller",
            health_port,
            false,
            &controller.log,
        );
        controller
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.child.as_ref().map(|c| c.id()).unwrap_or(0))
    }

    /// A counter or gauge from /metrics (the sum over its label sets).
    pub fn metric(&self, name: &str) -> f64 {
        http_get(self.metrics_port, "/metrics")
            .1
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for ApplyController {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}
