//! A small forward HTTP proxy for proxySecretRef tests: it relays connections to the real
//! registry and records what passed through it, optionally demanding Basic credentials.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub port: u16,
    /// The request lines the proxy relayed.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Start on a free port; with `credentials`, requests without the matching
    /// `Proxy-Authorization: Basic ...` get 407.
    pub async fn start(credentials: Option<(&str, &str)>) -> Proxy {
        Self::start_routing(credentials, &[]).await
    }

    /// As `start`, and connections to an authority in `routes` (`host:port`, as the client
    /// names it) go to the address it maps to: how tests give a local server a cloud's host
    /// name, with TLS still ending at that server.
    pub async fn start_routing(
        credentials: Option<(&str, &str)>,
        routes: &[(&str, &str)],
    ) -> Proxy {
        let routes: Arc<Vec<(String, String)>> = Arc::new(
            routes
                .iter()
                .map(|(from, to)| (from.to_string(), to.to_string()))
                .collect(),
        );
        use base64::Engine;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let expected = credentials.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (log, expected, routes) = (log.clone(), expected.clone(), routes.clone());
                tokio::spawn(async move {
                    let _ = relay(client, log, expected, &routes).await;
                });
            }
        });
        Proxy { port, seen }
    }
}

async fn relay(
    mut client: TcpStream,
    log: Arc<Mutex<Vec<String>>>,
    expected: Option<String>,
    routes: &[(String, String)],
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let request_line = text.lines().next().unwrap_or_default().to_string();
    let authorized = expected.as_ref().is_none_or(|want| {
        text.lines().any(|l| {
            l.split_once(':').is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("proxy-authorization") && value.trim() == want.as_str()
            })
        })
    });
    if !authorized {
        client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    }
    log.lock().unwrap().push(request_line.clone());
    let target = request_line.split_whitespace().nth(1).unwrap_or_default();
    let authority = target
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or_default().to_string())
        .unwrap_or_else(|| target.to_string());
    let authority = routes
        .iter()
        .find(|(from, _)| from.eq_ignore_ascii_case(&authority))
        .map_or(authority, |(_, to)| to.clone());
    let mut upstream = TcpStream::connect(&authority).await?;
    if request_line.starts_with("CONNECT ") {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
    } else {
        upstream.write_all(&head).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
