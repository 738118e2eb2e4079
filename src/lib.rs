//! driftless: Gitless GitOps source and apply controllers, wire-compatible with Flux.

// The modules, lowest layer first (hack/module-graph keeps every import pointing down): `util`,
// `api` (the CRDs), `controller` (what every reconciler shares), `identity`, `transport` (HTTP
// connections), `oci` (the registry client), `artifact` (archiving, storing and serving tarballs),
// `verify` (signatures), then the two controllers `source` and `apply`, and `cli` on top.

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
