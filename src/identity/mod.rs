//! Cloud and object identity: what the controller's own credentials may be used for. Bucket
//! sources use it today; the cloud providers of OCI sources are meant to share the same rule.

pub mod endpoints;
