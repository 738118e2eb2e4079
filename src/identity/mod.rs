//! Cloud identity: the credentials the controller holds or obtains for an object's
//! ServiceAccount (AWS chains and SigV4, workload identity tokens, a cache of short-lived
//! tokens), and where they may be sent.

pub mod auth;
pub mod aws;
pub mod cache;
pub mod ecr;
pub mod endpoints;
pub mod workload;
