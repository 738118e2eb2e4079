//! An endpoint a tenant would point the controller at to collect its credentials (or a cloud
//! service no test can reach, standing in for it): it counts every connection, records every
//! request, and answers what the test tells it to.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Past this, a request is cut off (a test endpoint has no use for more).
const MAX_REQUEST: usize = 1 << 20;

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Status, extra headers and body of an answer.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

pub struct Listener {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Listener {
    pub async fn start(answer: fn(&Request) -> Answer) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let log = log.clone();
                tokio::spawn(async move {
                    if let Some(request) = serve(conn, answer).await {
                        log.lock().unwrap().push(request);
                    }
                });
            }
        });
        Listener {
            port,
            connections,
            requests,
        }
    }

    /// `127.0.0.1:<port>`
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// TCP connections accepted so far, whether or not a request followed.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// One request per connection, answered and closed.
async fn serve(mut conn: TcpStream, answer: fn(&Request) -> Answer) -> Option<Request> {
    let request = read_request(&mut conn).await?;
    let (status, headers, body) = answer(&request);
    let mut head = format!(
        "HTTP/1.1 {status} Test\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body.as_bytes()).await;
    Some(request)
}

async fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = conn.read(&mut buf).await.ok()?;
        raw.extend_from_slice(&buf[..n]);
        if let Some(request) = parse(&raw) {
            return Some(request);
        }
        if n == 0 || raw.len() > MAX_REQUEST {
            return None;
        }
    }
}

/// The request once its head and its Content-Length worth of body have arrived.
fn parse(raw: &[u8]) -> Option<Request> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let body = raw.get(split + 4..split + 4 + length)?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(body).to_string(),
    })
}
