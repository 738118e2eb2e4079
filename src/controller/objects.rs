//! Small readers of Kubernetes objects that every controller needs.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

/// The finalizer every Flux controller puts on the objects it reconciles.
pub const FINALIZER: &str = "finalizers.fluxcd.io";
/// The annotation `flux reconcile` sets to ask for a pass now.
pub const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";

/// A Secret's data, with `stringData` filling keys `data` lacks.
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in secret.string_data.clone().unwrap_or_default() {
        data.entry(k).or_insert_with(|| v.into_bytes());
    }
    data
}

/// Kubernetes errors as Flux prints them (`secrets "x" not found`).
pub fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}
