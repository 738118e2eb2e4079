//! Cloud identity: where the credentials the controller itself holds may be used.

// Bucket sources use it today; the cloud providers of OCI sources are meant to share the same rule.

pub mod endpoints;
