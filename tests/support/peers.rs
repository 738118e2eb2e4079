//! The real peer tools tests drive (built by `hack/testbin.sh`): the flux CLI, helm.

use std::process::Command;
use std::time::Duration;

/// Builds a peer (`hack/testbin.sh TARGET`, a no-op once built), one build at a time: the tests
/// of a binary run in parallel and a cold build of one target must not race itself.
pub fn ensure_built(target: &str) {
    static BUILDS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let status = Command::new(super::repo_root().join("hack/testbin.sh"))
        .arg(target)
        .status()
        .expect("run hack/testbin.sh");
    assert!(status.success(), "hack/testbin.sh {target} failed");
}

/// One of Flux's controllers (built from its Go module by `hack/testbin.sh flux-<name>`),
/// watching one namespace, stopped on drop.
pub struct FluxController {
    pub process: super::controller::Process,
    _dir: tempfile::TempDir,
    _storage: Option<tempfile::TempDir>,
}

impl FluxController {
    pub fn start(
        platform: &super::Platform,
        namespace: &str,
        name: &str,
        extra: &[String],
    ) -> Self {
        ensure_built(&format!("flux-{name}"));
        let binary = std::path::Path::new(&platform.env["DRIFTLESS_TESTBIN"])
            .join("bin")
            .join(name);
        let dir = tempfile::tempdir().unwrap();
        let process = super::controller::Launcher::new(
            name,
            binary,
            platform,
            namespace,
            dir.path().join(format!("{name}.log")),
        )
        .args(["--enable-leader-election=false", "--log-level=debug"])
        .args(extra)
        .env("HOME", dir.path())
        .within(Duration::from_secs(60))
        .start();
        FluxController {
            process,
            _dir: dir,
            _storage: None,
        }
    }

    /// Flux's source-controller, storing artifacts in a directory of its own and serving them
    /// on a free port.
    pub fn source_controller(
        platform: &super::Platform,
        namespace: &str,
        extra: &[String],
    ) -> Self {
        let storage = tempfile::tempdir().unwrap();
        let port = super::controller::free_port();
        let mut args = vec![
            format!("--storage-path={}", storage.path().display()),
            format!("--storage-addr=127.0.0.1:{port}"),
            format!("--storage-adv-addr=127.0.0.1:{port}"),
        ];
        args.extend_from_slice(extra);
        let mut controller = Self::start(platform, namespace, "source-controller", &args);
        controller._storage = Some(storage);
        controller
    }

    /// `Flux <name> v<version>`, as hack/testbin.sh recorded the version it built.
    pub fn title(platform: &super::Platform, name: &str) -> String {
        let bin = std::path::Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin");
        let version =
            std::fs::read_to_string(bin.join(format!(".{name}.version"))).unwrap_or_default();
        format!("Flux {name} v{}", version.trim())
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}

/// The flux CLI (at the version hack/testbin.sh pins, built from its Go module) against the
/// platform.
pub fn flux(platform: &super::Platform, args: &[&str]) -> std::process::Output {
    ensure_built("flux");
    let home = tempfile::tempdir().unwrap();
    Command::new(std::path::Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin/flux"))
        .args(args)
        .env("KUBECONFIG", platform.kubeconfig())
        .env("HOME", home.path())
        .output()
        .expect("run flux")
}

/// The real `helm` (hack/testbin.sh), with its configuration in `home`.
pub fn helm(platform: &super::Platform, home: &std::path::Path, args: &[&str]) -> String {
    let out =
        Command::new(std::path::Path::new(&platform.env["DRIFTLESS_TESTBIN"]).join("bin/helm"))
            .args(args)
            .env("HOME", home)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .expect("run helm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {args:?}: {text}");
    text
}

/// Chart `demo` at `version` (its `templates/cm.yaml` is `template`), packaged and pushed by
/// the real `helm` to `charts` (`host/path`, plain HTTP); the manifest digest helm printed.
pub fn push_demo_chart(
    platform: &super::Platform,
    home: &std::path::Path,
    charts: &str,
    version: &str,
    template: &str,
) -> String {
    let dir = home.join(format!("demo-{version}"));
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: demo\nversion: {version}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("templates/cm.yaml"), template).unwrap();
    let out = home.join("packages");
    helm(
        platform,
        home,
        &[
            "package",
            dir.to_str().unwrap(),
            "-d",
            out.to_str().unwrap(),
        ],
    );
    let tgz = out.join(format!("demo-{version}.tgz"));
    let charts = format!("oci://{charts}");
    let pushed = helm(
        platform,
        home,
        &["push", tgz.to_str().unwrap(), &charts, "--plain-http"],
    );
    pushed
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in: {pushed}"))
        .to_string()
}
