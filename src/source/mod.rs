//! Upstream sources: resolving references, fetching content and turning it into artifacts.

pub mod bucket;
pub mod context;
pub mod controller;
pub mod handover;
pub mod oci;
pub mod pulled;
pub mod receiver;
pub mod replica;
pub mod steps;
pub mod store;
pub mod verified;
