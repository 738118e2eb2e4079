//! driftless: Gitless GitOps source and apply controllers, wire-compatible with Flux.
//!
//! The module tree follows the data: `api` (the CRDs), `source` (resolving and fetching
//! upstream content), `artifact` (archiving, storing and serving tarballs) and `controller`
//! (what every reconciler shares).

pub mod api;
pub mod apply;
pub mod artifact;
pub mod cli;
pub mod controller;
pub mod identity;
pub mod oci;
pub mod source;
pub mod transport;
pub mod util;
pub mod verify;
