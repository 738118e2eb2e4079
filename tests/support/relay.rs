//! A TCP relay in front of one of the platform's registries, on its own 127.0.0.1 port: it can
//! make the registry unreachable for a while, and it tells TLS from plain-HTTP connections and
//! keeps every byte sent in plain HTTP, so a test sees what would have travelled in clear.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Plain-HTTP bytes kept, at most (enough for every request head of a test).
const MAX_PLAIN_BYTES: usize = 4 * 1024 * 1024;

pub struct Relay {
    /// `127.0.0.1:<port>`.
    pub address: String,
    state: Arc<Shared>,
}

struct Shared {
    /// Down: open connections are cut, and new ones closed once their first byte was read.
    down: tokio::sync::watch::Sender<bool>,
    tls_connections: AtomicUsize,
    plain_connections: AtomicUsize,
    plain_bytes: Mutex<Vec<u8>>,
}

impl Relay {
    pub async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Shared {
            down: tokio::sync::watch::Sender::new(false),
            tls_connections: AtomicUsize::new(0),
            plain_connections: AtomicUsize::new(0),
            plain_bytes: Mutex::new(Vec::new()),
        });
        let (shared, upstream) = (state.clone(), upstream.to_string());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (shared, upstream) = (shared.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = relay(client, &upstream, &shared).await;
                });
            }
        });
        Relay { address, state }
    }

    /// While down, the registry cannot be reached through the relay.
    pub fn set_down(&self, down: bool) {
        self.state.down.send_replace(down);
    }

    pub fn tls_connections(&self) -> usize {
        self.state.tls_connections.load(Ordering::SeqCst)
    }

    pub fn plain_connections(&self) -> usize {
        self.state.plain_connections.load(Ordering::SeqCst)
    }

    /// Everything clients sent in plain HTTP, as text.
    pub fn plain_text(&self) -> String {
        String::from_utf8_lossy(&self.state.plain_bytes.lock().unwrap()).into_owned()
    }
}

async fn relay(mut client: TcpStream, upstream: &str, shared: &Shared) -> std::io::Result<()> {
    let mut first = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut first)).await;
    let Ok(Ok(1)) = read else {
        return Ok(());
    };
    // A TLS connection starts with a handshake record (content type 22).
    let plain = first[0] != 0x16;
    if plain {
        shared.plain_connections.fetch_add(1, Ordering::SeqCst);
        keep(shared, &first);
    } else {
        shared.tls_connections.fetch_add(1, Ordering::SeqCst);
    }
    let mut down = shared.down.subscribe();
    if *down.borrow() {
        return Ok(());
    }
    let upstream = TcpStream::connect(upstream).await?;
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_upstream, mut to_upstream) = upstream.into_split();
    to_upstream.write_all(&first).await?;
    let outbound = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from_client.read(&mut buf).await?;
            if n == 0 {
                return to_upstream.shutdown().await;
            }
            if plain {
                keep(shared, &buf[..n]);
            }
            to_upstream.write_all(&buf[..n]).await?;
        }
    };
    let inbound = tokio::io::copy(&mut from_upstream, &mut to_client);
    tokio::select! {
        _ = async { tokio::join!(outbound, inbound) } => {}
        _ = down.wait_for(|down| *down) => {}
    }
    Ok(())
}

fn keep(shared: &Shared, bytes: &[u8]) {
    let mut kept = shared.plain_bytes.lock().unwrap();
    let room = MAX_PLAIN_BYTES.saturating_sub(kept.len());
    kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
}
