//! Cloud identity: the credentials the controller holds or obtains for an object's
//! ServiceAccount (AWS chains and SigV4, Entra ID and Google tokens, workload identity tokens,
//! a cache of short-lived tokens), the registry logins they give (ECR, ACR, Artifact
//! Registry, ServiceAccount tokens), and where they may be sent.

pub mod acr;
pub mod auth;
pub mod aws;
pub mod cache;
pub mod ecr;
pub mod endpoints;
pub mod entra;
pub mod gar;
pub mod google;
pub mod sa_token;
pub mod workload;
