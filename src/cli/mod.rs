//! The CI side: `driftless artifact ...`.

pub mod push;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum ArtifactCommand {
    /// Package a directory or file and push it as a Flux OCI artifact.
    Push(Box<push::PushArgs>),
    /// Pull an artifact and extract its content.
    Pull,
    /// Add a tag to an artifact.
    Tag,
    /// List the tags of a repository with their source and revision.
    List,
    /// Compare a directory or artifact with another artifact.
    Diff,
}
