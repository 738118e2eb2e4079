//! The apply-controller: Flux `Kustomization`s built from source artifacts and kept applied
//! with server-side apply, inventory, prune and health checks.

pub mod build;
pub mod cel;
mod cloud_cluster;
mod cluster;
pub mod context;
pub mod controller;
pub mod drift;
pub mod fetch;
pub mod health;
pub mod history;
pub mod ignore;
pub mod interrupt;
pub mod inventory;
pub mod reconcile;
pub mod sandbox;
pub mod selector;
pub mod sops;
pub mod ssa;
pub mod substitute;
pub mod yaml;
