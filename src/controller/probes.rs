//! The HTTP servers every controller runs beside its reconciles (metrics, health and readiness
//! probes), started in the background on Go-style listen addresses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use super::metrics::Metrics;

/// `/metrics`, and `/healthz` + `/readyz`; readiness stays false until the caller sets the
/// returned flag (the source-controller: once storage is reconciled and the artifact server is
/// up, on the leader).
pub async fn serve_probes(
    metrics_addr: &str,
    health_addr: &str,
    metrics: &Metrics,
) -> anyhow::Result<Arc<AtomicBool>> {
    let render = metrics.clone();
    serve(
        metrics_addr,
        Router::new().route("/metrics", get(move || async move { render.render() })),
        "metrics",
    )
    .await?;
    let ready = Arc::new(AtomicBool::new(false));
    let readiness = ready.clone();
    let readyz = move || {
        let status = match readiness.load(Ordering::Relaxed) {
            true => (StatusCode::OK, "ok"),
            false => (StatusCode::SERVICE_UNAVAILABLE, "not ready"),
        };
        async move { status }
    };
    let probes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    serve(health_addr, probes, "health").await?;
    Ok(ready)
}

/// Start an HTTP server in the background; a bind failure stops start-up.
pub async fn serve(addr: &str, router: Router, what: &'static str) -> anyhow::Result<()> {
    let addr = listen_addr(addr)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{what}: binding {addr}"))?;
    tracing::info!(%addr, "{what} listening");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "{what} stopped");
        }
    });
    Ok(())
}

/// Go-style listen addresses: `:9090` means every interface.
pub fn listen_addr(addr: &str) -> anyhow::Result<SocketAddr> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    full.parse()
        .with_context(|| format!("invalid listen address '{addr}'"))
}
