//! The CI side: `driftless artifact ...`.

pub mod conformance;
pub mod diff;
pub mod fetch;
pub mod list;
pub mod pull;
pub mod push;
pub mod registry;
pub mod sign;
pub mod tag;
pub mod verify;

use clap::Subcommand;

/// Steps of a long upload or download, on stderr when a person watches it (a terminal) and
/// nowhere otherwise, so that scripts read only the result on stdout.
pub struct Progress {
    on: bool,
}

impl Progress {
    pub fn new() -> Self {
        use std::io::IsTerminal;
        Progress {
            on: std::io::stderr().is_terminal(),
        }
    }

    pub fn step(&self, message: impl std::fmt::Display) {
        if self.on {
            eprintln!("► {message}");
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// `12.3 KiB`, for progress lines.
pub fn human_size(bytes: usize) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    }
}

#[derive(Subcommand, Debug)]
pub enum ArtifactCommand {
    /// Package a directory or file and push it as a Flux OCI artifact.
    Push(Box<push::PushArgs>),
    /// Pull an artifact and extract its content.
    Pull(pull::PullArgs),
    /// Add tags to an artifact.
    Tag(tag::TagArgs),
    /// List the tags of a repository with their source and revision.
    List(list::ListArgs),
    /// Compare a directory or an artifact with an artifact; exits 1 when they differ.
    Diff(diff::DiffArgs),
    /// Verify an artifact's cosign signature as the source-controller does before it pulls;
    /// exits non-zero naming why when it is not verified.
    Verify(verify::VerifyArgs),
}

/// Run a verb; `Ok(false)` means "differs" for `diff` (exit code 1).
pub async fn run(
    command: ArtifactCommand,
    registry: &registry::RegistryArgs,
) -> anyhow::Result<bool> {
    match command {
        ArtifactCommand::Push(args) => push::run(*args, registry).await.map(|_| true),
        ArtifactCommand::Pull(args) => pull::run(args, registry).await.map(|_| true),
        ArtifactCommand::Tag(args) => tag::run(args, registry).await.map(|_| true),
        ArtifactCommand::List(args) => list::run(args, registry).await.map(|_| true),
        ArtifactCommand::Diff(args) => diff::run(args, registry).await.map(|differs| !differs),
        ArtifactCommand::Verify(args) => verify::run(args, registry).await.map(|_| true),
    }
}
