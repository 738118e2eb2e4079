//! Controller processes for tests: one launcher (program, arguments, environment, a log file,
//! a readiness wait on the probe endpoint, stopped on drop) that starts driftless's
//! source-controller and apply-controller and Flux's own controllers alike.

use std::ffi::{OsStr, OsString};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Platform;

/// The binary under test: cargo's, or `DRIFTLESS_BIN` (as hack/test-chart takes it) when a
/// build directory shared between checkouts may hold another checkout's binary.
pub fn driftless_bin() -> PathBuf {
    std::env::var_os("DRIFTLESS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_driftless")))
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

/// When a started process counts as up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// `/readyz` on the health port answers 200.
    Ready,
    /// The health port accepts connections: a replica waiting for the leader Lease is alive
    /// but, by design, not ready.
    Listening,
}

/// How one controller process is started. Every controller gets free metrics and health
/// ports, the platform's kubeconfig, one namespace to watch and a log file; the caller adds
/// its own arguments and environment.
pub struct Launcher {
    role: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log: PathBuf,
    readiness: Readiness,
    limit: Duration,
    metrics_port: u16,
    health_port: u16,
}

impl Launcher {
    /// `program`, watching only `namespace` of the platform, logging (stderr) to `log`.
    pub fn new(
        role: &str,
        program: impl Into<PathBuf>,
        platform: &Platform,
        namespace: &str,
        log: impl Into<PathBuf>,
    ) -> Self {
        let (metrics_port, health_port) = (free_port(), free_port());
        Launcher {
            role: role.to_string(),
            program: program.into(),
            args: vec![
                "--watch-all-namespaces=false".into(),
                format!("--metrics-addr=127.0.0.1:{metrics_port}").into(),
                format!("--health-addr=127.0.0.1:{health_port}").into(),
            ],
            env: vec![
                ("KUBECONFIG".into(), platform.kubeconfig().into()),
                ("RUNTIME_NAMESPACE".into(), namespace.into()),
            ],
            log: log.into(),
            readiness: Readiness::Ready,
            limit: Duration::from_secs(30),
            metrics_port,
            health_port,
        }
    }

    /// The driftless binary under test running `subcommand`, with debug logs unless the caller
    /// picks a level in `extra_args` (clap refuses a flag given twice).
    pub fn driftless(
        subcommand: &str,
        platform: &Platform,
        namespace: &str,
        log: impl Into<PathBuf>,
        extra_args: &[&str],
    ) -> Self {
        let mut launcher = Launcher::new(subcommand, driftless_bin(), platform, namespace, log);
        launcher.args.insert(0, subcommand.into());
        if !extra_args.iter().any(|a| a.starts_with("--log-level")) {
            launcher = launcher.arg("--log-level=debug");
        }
        if extra_args.contains(&"--enable-leader-election") {
            launcher = launcher.readiness(Readiness::Listening);
        }
        launcher.args(extra_args)
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// How long the process may take to get ready (a cold Go controller takes longer).
    pub fn within(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Starts the process and waits until it is ready, failing with its log if it exits first
    /// or takes longer than the limit.
    pub fn start(self) -> Process {
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&self.log)
                    .unwrap_or_else(|e| panic!("create {}: {e}", self.log.display())),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("start {} ({}): {e}", self.role, self.program.display()));
        let mut process = Process {
            child: Some(child),
            role: self.role,
            log: self.log,
            metrics_port: self.metrics_port,
            health_port: self.health_port,
        };
        process.wait_ready(self.readiness, self.limit);
        process
    }
}

/// A started controller process; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Process {
    child: Option<Child>,
    role: String,
    pub log: PathBuf,
    pub metrics_port: u16,
    pub health_port: u16,
}

impl Process {
    fn wait_ready(&mut self, readiness: Readiness, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "{} exited with {status}; log:\n{}",
                    self.role,
                    self.log_text()
                );
            }
            let up = match readiness {
                Readiness::Listening => listening(self.health_port),
                Readiness::Ready => http_get_status(self.health_port, "/readyz") == Some(200),
            };
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {limit:?}; log:\n{}",
                self.role,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after 10 s: a graceful shutdown, bounded.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL: the process dies without releasing anything (a node failure, an OOM kill).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

    /// A counter or gauge from /metrics (the sum over its label sets).
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real `driftless source-controller` process for one test: watching only the test's
/// namespace, storing into a directory of its own, with a temporary directory of its own
/// (`TMPDIR`, where it unpacks what it pulls), on free ports, stopped on drop.
pub struct SourceController {
    process: Process,
    pub storage: PathBuf,
    /// The process's `TMPDIR`: pulled layers are downloaded and extracted under it.
    pub tmp: PathBuf,
    pub storage_port: u16,
    pub metrics_port: u16,
    pub log: PathBuf,
    namespace: String,
    platform: Platform,
    _dir: Option<tempfile::TempDir>,
}

impl SourceController {
    /// Start a controller for `namespace` with a fresh storage directory.
    pub fn start(platform: &Platform, namespace: &str, extra_args: &[&str]) -> Self {
        Self::start_with_env(platform, namespace, extra_args, &[])
    }

    /// Start a controller with extra environment variables (its ambient cloud identity).
    pub fn start_with_env(
        platform: &Platform,
        namespace: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let mut c = Self::spawn(platform, namespace, &storage, None, extra_args, env);
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
        Self::spawn(platform, namespace, storage, None, extra_args, &[])
    }

    /// Start a controller over `storage`, serving artifacts on `storage_port`: a restart that
    /// keeps the address the statuses name, as a pod keeps its Service.
    pub fn start_at(
        platform: &Platform,
        namespace: &str,
        storage: &Path,
        storage_port: u16,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(
            platform,
            namespace,
            storage,
            Some(storage_port),
            extra_args,
            env,
        )
    }

    fn spawn(
        platform: &Platform,
        namespace: &str,
        storage: &Path,
        storage_port: Option<u16>,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let storage_port = storage_port.unwrap_or_else(free_port);
        let log = storage.with_extension(format!("controller-{storage_port}.log"));
        let tmp = storage.with_extension("tmp");
        std::fs::create_dir_all(storage).unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        let mut launcher =
            Launcher::driftless("source-controller", platform, namespace, &log, extra_args)
                .arg(format!("--storage-path={}", storage.display()))
                .arg(format!("--storage-addr=127.0.0.1:{storage_port}"))
                .env("TMPDIR", &tmp);
        // Replicas behind one Service advertise its name instead of their own address.
        if !extra_args
            .iter()
            .any(|a| a.starts_with("--storage-adv-addr"))
        {
            launcher = launcher.arg(format!("--storage-adv-addr=127.0.0.1:{storage_port}"));
        }
        for (k, v) in env {
            launcher = launcher.env(k, v);
        }
        let process = launcher.start();
        SourceController {
            metrics_port: process.metrics_port,
            process,
            storage: storage.to_path_buf(),
            tmp,
            storage_port,
            log,
            namespace: namespace.to_string(),
            platform: platform.clone(),
            _dir: None,
        }
    }

    pub fn health_port(&self) -> u16 {
        self.process.health_port
    }

    /// `/readyz` answers 200: the replica leads, or follows in step with the leader.
    pub fn is_ready(&self) -> bool {
        http_get_status(self.process.health_port, "/readyz") == Some(200)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Stop the process (SIGTERM, then SIGKILL) and keep its storage.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// SIGKILL: the process dies without releasing anything (a node failure, an OOM kill).
    pub fn kill(&mut self) {
        self.process.kill();
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
        self.process.peak_rss_kib()
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        self.process.cpu_time()
    }

    pub fn metrics(&self) -> String {
        self.process.metrics()
    }

    /// A counter or gauge from /metrics (the sum over the series `name` starts).
    pub fn metric(&self, name: &str) -> f64 {
        self.process.metric(name)
    }

    pub fn process(&self) -> &Process {
        &self.process
    }
}

/// A real `driftless apply-controller` process for one test: watching only the test's
/// namespace, with the platform's kustomize, on free ports, stopped on drop.
pub struct ApplyController {
    process: Process,
    pub metrics_port: u16,
    pub log: PathBuf,
    /// The process's `TMPDIR`: artifacts are extracted and builds run under it.
    pub tmp: PathBuf,
    _dir: tempfile::TempDir,
}

impl ApplyController {
    pub fn start(platform: &Platform, namespace: &str, extra_args: &[&str]) -> Self {
        Self::start_with_env(platform, namespace, extra_args, &[])
    }

    /// `start`, with more environment variables.
    pub fn start_with_env(
        platform: &Platform,
        namespace: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let kustomize = Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin/kustomize");
        let flag = format!("--kustomize-path={}", kustomize.display());
        let args: Vec<&str> = std::iter::once(flag.as_str())
            .chain(extra_args.iter().copied())
            .collect();
        Self::spawn(platform, namespace, &args, env)
    }

    /// `start` with no `--kustomize-path`: the platform's kustomize is found on `PATH` (its
    /// directory first), as in Flux's image.
    pub fn start_with_kustomize_on_path(platform: &Platform, namespace: &str) -> Self {
        let bin = Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin");
        let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .unwrap();
        Self::spawn(
            platform,
            namespace,
            &[],
            &[("PATH", path.to_str().unwrap())],
        )
    }

    fn spawn(
        platform: &Platform,
        namespace: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("apply-controller.log");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let mut launcher =
            Launcher::driftless("apply-controller", platform, namespace, &log, extra_args)
                .args(["--requeue-dependency=2s", "--health-check-poll=500ms"])
                .env("TMPDIR", &tmp);
        for (key, value) in env {
            launcher = launcher.env(key, value);
        }
        let process = launcher.start();
        ApplyController {
            metrics_port: process.metrics_port,
            process,
            log,
            tmp,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL: the process dies mid-work, releasing nothing.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn peak_rss_kib(&self) -> u64 {
        self.process.peak_rss_kib()
    }

    /// The process, for what benches measure of it (CPU time, peak RSS).
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// A counter or gauge from /metrics (the sum over its label sets).
    pub fn metric(&self, name: &str) -> f64 {
        self.process.metric(name)
    }
}

/// A process's CPU time from `/proc/<pid>/stat`, in clock ticks: its own (utime and stime) and
/// that of the children it waited for (cutime and cstime: the kustomize builds the
/// apply-controller runs, which Flux's kustomize-controller runs in its own process).
pub fn cpu_time(pid: u32) -> Duration {
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
    // Fields 14 to 17 of stat(5), counted from the state field (3) after the name.
    let total = ticks(11) + ticks(12) + ticks(13) + ticks(14);
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(total * 1_000_000 / per_second)
}

/// A process's peak resident set size (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// The process's resident set size now (`VmRSS`), in KiB; 0 once it has exited.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Something accepts connections on the loopback port.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
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

/// Leader election on short timings, so that a test sees a Lease change hands in seconds.
pub const ELECTION: &[&str] = &[
    "--enable-leader-election",
    "--leader-election-lease-duration=6s",
    "--leader-election-renew-deadline=4s",
    // client-go (and so Flux) refuses a retry period (5s by default) that is not shorter than
    // the renew deadline; so does driftless.
    "--leader-election-retry-period=1s",
];

/// The source-controller's Lease (unsharded).
pub const SOURCE_LEASE: &str = "source-controller-leader-election";

/// Who holds the source-controller's Lease, if anyone.
pub async fn source_lease_holder(
    leases: &kube::Api<k8s_openapi::api::coordination::v1::Lease>,
) -> Option<String> {
    leases
        .get_opt(SOURCE_LEASE)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// A GET over loopback that reports a refused or broken connection instead of panicking.
pub fn try_get(port: u16, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    std::io::Write::write_fmt(
        &mut stream,
        format_args!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut raw).map_err(|e| format!("read: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP head")?;
    let status = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let length = String::from_utf8_lossy(&raw[..split])
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        });
    let body = raw[split + 4..].to_vec();
    if length.is_some_and(|l| l != body.len()) {
        return Err(format!("body cut at {} bytes", body.len()));
    }
    Ok((status, body))
}
