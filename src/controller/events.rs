//! Kubernetes Events with Flux's reasons, reported as the controller Flux users know.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// The API server refuses longer event notes.
const MAX_NOTE: usize = 1024;

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, controller: &str) -> Self {
        let instance = std::env::var("HOSTNAME").ok();
        Events { recorder: Recorder::new(client, Reporter { controller: controller.into(), instance }) }
    }

    pub async fn normal(&self, object: &ObjectReference, reason: &str, message: &str) {
        self.publish(object, EventType::Normal, reason, message).await;
    }

    pub async fn warning(&self, object: &ObjectReference, reason: &str, message: &str) {
        self.publish(object, EventType::Warning, reason, message).await;
    }

    async fn publish(&self, object: &ObjectReference, type_: EventType, reason: &str, message: &str) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(message, MAX_NOTE)),
            action: "Reconcile".into(),
            secondary: None,
        };
        // An event that cannot be written must not fail the reconcile that caused it.
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(reason, error = %e, "failed to publish event");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
