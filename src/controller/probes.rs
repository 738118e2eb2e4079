//! The HTTP servers every controller runs beside its reconciles (metrics, health and readiness
//! probes), started in the background on Go-style listen addresses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// How long a client may take to send a request's headers (Flux's artifact server: 10s). The
/// wait for the next request on a kept-alive connection counts too, so an idle connection is
/// closed after it as well (Flux keeps idle connections for 120s; its clients reconnect).
pub const READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Start an HTTP/1.1 server in the background; a bind failure stops start-up.
pub async fn serve(addr: &str, router: Router, what: &'static str) -> anyhow::Result<()> {
    serve_over(addr, router, what, None).await
}

/// [`serve`] over TLS with `tls` (the artifact server with SPIFFE mTLS): a client that does not
/// complete the handshake (no certificate, or one the configuration refuses) never reaches the
/// router.
pub async fn serve_tls(
    addr: &str,
    router: Router,
    what: &'static str,
    tls: Arc<rustls::ServerConfig>,
) -> anyhow::Result<()> {
    serve_over(
        addr,
        router,
        what,
        Some(tokio_rustls::TlsAcceptor::from(tls)),
    )
    .await
}

async fn serve_over(
    addr: &str,
    router: Router,
    what: &'static str,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<()> {
    let addr = listen_addr(addr)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{what}: binding {addr}"))?;
    tracing::info!(%addr, tls = tls.is_some(), "{what} listening");
    tokio::spawn(accept(listener, router, what, READ_HEADER_TIMEOUT, tls));
    Ok(())
}

/// One task per connection; a client that stalls only ever holds its own connection.
async fn accept(
    listener: tokio::net::TcpListener,
    router: Router,
    what: &'static str,
    header_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "{what}: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (router, tls) = (router.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, router, what, header_timeout).await,
                // The handshake gets the same bound as the request headers.
                Some(tls) => match tokio::time::timeout(header_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, router, what, header_timeout).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "{what}: TLS handshake refused"),
                    Err(_) => tracing::debug!("{what}: TLS handshake timed out"),
                },
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    router: Router,
    what: &'static str,
    header_timeout: Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        tower::ServiceExt::oneshot(router.clone(), request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "{what}: connection ended");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(header_timeout: Duration) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/ok", get(|| async { "ok" }));
        tokio::spawn(accept(listener, router, "test", header_timeout, None));
        addr
    }

    /// Reads until the server closes the connection; the bytes it sent.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out));
        read.await
            .expect("the server kept the connection open")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_disconnected() {
        let addr = server(Duration::from_millis(300)).await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let answer = until_closed(&mut slow).await;
        assert!(!answer.contains("200 OK"), "{answer}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn requests_are_served_and_idle_connections_closed() {
        let addr = server(Duration::from_millis(300)).await;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The answer comes, then the kept-alive connection is closed once it idles.
        let answer = until_closed(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
    }
}
