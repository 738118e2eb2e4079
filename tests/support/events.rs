//! A stand-in for Flux's notification-controller event endpoint: records every event the
//! controller forwards (`--events-addr`), so tests can read them as Flux would receive them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::source::WAIT;

pub struct EventReceiver {
    pub addr: String,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl EventReceiver {
    pub async fn start() -> EventReceiver {
        let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let sink = received.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |axum::Json(event): axum::Json<serde_json::Value>| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(event);
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        EventReceiver {
            addr: format!("http://127.0.0.1:{port}/"),
            received,
        }
    }

    /// The controller flag that sends events here.
    pub fn flag(&self) -> String {
        format!("--events-addr={}", self.addr)
    }

    /// Every event received so far.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }

    /// The first received event that `matches`, waiting for it.
    pub async fn wait_for(
        &self,
        what: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(event) = self.received.lock().unwrap().iter().find(|e| matches(e)) {
                return event.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} event forwarded: {:?}",
                self.received.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
