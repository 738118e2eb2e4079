//! OCI registries: the distribution API client, credentials and reference resolution.
