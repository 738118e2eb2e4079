//! Containment of a panic in one object's reconcile, so it costs that object a failed pass and not the process.

// A panic is a bug that some input reached, in our code or a dependency's. The reconcile
// futures run inside kube-runtime's controller stream, where an unwinding panic would end the
// controller and so every tenant's reconciles.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// A reconcile that panicked, with the panic's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reconciliation panicked (a driftless bug, please report it): {0}")]
pub struct Panicked(pub String);

/// Runs a kind's steps for the object `key` (`<namespace>/<name>`), catching a panic in them,
/// so the frame can report it on the object.
pub async fn guard_steps<T>(key: &str, steps: impl Future<Output = T>) -> Result<T, Panicked> {
    let steps = async move {
        panic_if_asked(key);
        steps.await
    };
    guard(key, steps).await
}

/// Runs `work` for the object `key`, catching a panic in it.
///
/// Unwind safety: after a panic nothing of `work` is reused except through its owner's
/// status write, which starts again from the object; shared state is behind locks that
/// tolerate poisoning or is append-only (metrics).
pub async fn guard<T>(key: &str, work: impl Future<Output = T>) -> Result<T, Panicked> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|payload| {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_string());
            tracing::error!(object = %key, panic = %message, "reconcile panicked");
            Panicked(message)
        })
}

/// Debug builds only (the test suite's): `DRIFTLESS_TEST_PANIC_OBJECTS=<ns>/<name>,...`
/// makes those objects' reconciles panic, so the tests can prove the guard on the real
/// controller. Release builds have no such path.
#[cfg(debug_assertions)]
fn panic_if_asked(key: &str) {
    let asked = std::env::var("DRIFTLESS_TEST_PANIC_OBJECTS").unwrap_or_default();
    if asked.split(',').any(|k| k == key) {
        panic!("test-requested panic for {key}");
    }
}

#[cfg(not(debug_assertions))]
fn panic_if_asked(_key: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_and_a_value_passes_through() {
        assert_eq!(guard("ns/a", async { 7 }).await, Ok(7));
        let caught = guard("ns/a", async {
            let v: Vec<u8> = Vec::new();
            #[allow(clippy::unnecessary_operation)]
            v[3]
        })
        .await
        .unwrap_err();
        assert!(caught.0.contains("index out of bounds"), "{caught}");
        let caught = guard_steps("ns/b", async { panic!("boom {}", 1) })
            .await
            .unwrap_err();
        assert_eq!(caught.0, "boom 1");
    }
}
