//! Kubernetes Events with Flux's reasons, reported as the controller Flux users know.

// kube-runtime's `Recorder` folds every event with the same reason into one series and keeps
// the first note, so a second `NewArtifact` would still show the first revision. Flux (through
// client-go) keeps events apart when their messages differ and only counts exact repeats; this
// recorder does the same.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

/// The API server refuses longer event notes.
const MAX_NOTE: usize = 1024;
/// Repeats within this window count up one event instead of creating another.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// Past this many remembered series the cache starts over.
const MAX_SERIES: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Clone)]
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    series: Arc<Mutex<HashMap<SeriesKey, Series>>>,
    /// Flux's `--events-addr`: notification-controller's event endpoint.
    forward: Option<Forwarder>,
}

#[derive(Clone)]
struct Forwarder {
    http: reqwest::Client,
    url: String,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    object: String,
    type_: EventType,
    reason: String,
    note: String,
}

struct Series {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

impl Events {
    pub fn new(client: Client, controller: &str) -> Self {
        let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| controller.to_string());
        Events {
            client,
            controller: controller.into(),
            instance,
            series: Arc::new(Mutex::new(HashMap::new())),
            forward: None,
        }
    }

    /// Also POST every event, in Flux's event format, to `url` (notification-controller), so
    /// Flux Alerts and Providers keep working. With `mtls` (SPIFFE, `--authorized-event-server-
    /// spiffe-id`) the events go over HTTPS to the same host and port, presenting this
    /// workload's SVID, as Flux's recorder does.
    pub fn forwarding_to(
        mut self,
        url: &str,
        mtls: Option<rustls::ClientConfig>,
    ) -> Result<Self, String> {
        if url.is_empty() {
            return Ok(self);
        }
        let builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(15));
        let (http, url) = match mtls {
            None => (builder.build(), url.to_string()),
            Some(tls) => (
                builder.use_preconfigured_tls(tls).build(),
                super::spiffe::https_url(url),
            ),
        };
        self.forward = Some(Forwarder {
            http: http.map_err(|e| format!("events client: {e}"))?,
            url,
        });
        Ok(self)
    }

    /// `metadata` is forwarded with the event (Flux puts revisions and the object's
    /// `event.toolkit.fluxcd.io/*` annotations there).
    pub async fn normal(
        &self,
        object: &ObjectReference,
        reason: &str,
        message: &str,
        metadata: BTreeMap<String, String>,
    ) {
        self.publish(object, EventType::Normal, reason, message, metadata)
            .await;
    }

    pub async fn warning(
        &self,
        object: &ObjectReference,
        reason: &str,
        message: &str,
        metadata: BTreeMap<String, String>,
    ) {
        self.publish(object, EventType::Warning, reason, message, metadata)
            .await;
    }

    async fn publish(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
        metadata: BTreeMap<String, String>,
    ) {
        if let Some(forward) = &self.forward {
            forward.send(flux_event(
                object,
                type_,
                reason,
                message,
                metadata,
                &self.controller,
                &self.instance,
            ));
        }
        let note = crate::util::truncate(message, MAX_NOTE);
        let key = SeriesKey {
            object: object.uid.clone().unwrap_or_default(),
            type_,
            reason: reason.into(),
            note: note.clone(),
        };
        // An event that cannot be written must not fail the reconcile that caused it.
        let result = match self.repeat_of(&key) {
            Some((namespace, name, count)) => self.bump(&namespace, &name, count).await,
            None => self.create(object, &key).await,
        };
        if let Err(e) = result {
            tracing::warn!(reason, error = %e, "failed to publish event");
        }
    }

    /// The event this one repeats, with its new count, if it was seen recently.
    fn repeat_of(&self, key: &SeriesKey) -> Option<(String, String, i32)> {
        let mut series = self.series.lock().expect("event series lock");
        let s = series
            .get_mut(key)
            .filter(|s| s.last.elapsed() < SERIES_WINDOW)?;
        s.count += 1;
        s.last = Instant::now();
        Some((s.namespace.clone(), s.name.clone(), s.count))
    }

    async fn bump(&self, namespace: &str, name: &str, count: i32) -> Result<(), kube::Error> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let series = EventSeries {
            count,
            last_observed_time: MicroTime(jiff::Timestamp::now()),
        };
        let patch = serde_json::json!({"series": series});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    async fn create(&self, object: &ObjectReference, key: &SeriesKey) -> Result<(), kube::Error> {
        let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            object.name.clone().unwrap_or_default(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(jiff::Timestamp::now())),
            action: Some("Reconcile".into()),
            reason: Some(key.reason.clone()),
            note: Some(key.note.clone()),
            type_: Some(format!("{:?}", key.type_)),
            regarding: Some(object.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        let mut series = self.series.lock().expect("event series lock");
        if series.len() >= MAX_SERIES {
            series.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
            if series.len() >= MAX_SERIES {
                // Still full of fresh series: forgetting them only costs a new event object.
                series.clear();
            }
        }
        series.insert(
            key.clone(),
            Series {
                namespace,
                name,
                count: 1,
                last: Instant::now(),
            },
        );
        Ok(())
    }
}

/// fluxcd/pkg `event/v1beta1.Event`, as notification-controller reads it.
fn flux_event(
    object: &ObjectReference,
    type_: EventType,
    reason: &str,
    message: &str,
    metadata: BTreeMap<String, String>,
    controller: &str,
    instance: &str,
) -> serde_json::Value {
    let timestamp = crate::util::now_whole_seconds().to_string();
    let mut event = serde_json::json!({
        "involvedObject": object,
        "severity": if type_ == EventType::Warning { "error" } else { "info" },
        "timestamp": timestamp,
        "message": message,
        "reason": reason,
        "reportingController": controller,
        "reportingInstance": instance,
    });
    if !metadata.is_empty() {
        event["metadata"] = serde_json::json!(metadata);
    }
    event
}

impl Forwarder {
    /// Fire and forget with a few retries, as Flux's recorder does: a slow or absent
    /// notification-controller never holds up a reconcile.
    fn send(&self, event: serde_json::Value) {
        let (http, url) = (self.http.clone(), self.url.clone());
        tokio::spawn(async move {
            for attempt in 0..4u32 {
                match http.post(&url).json(&event).send().await {
                    Ok(resp) if resp.status().is_success() => return,
                    Ok(resp) if resp.status().is_client_error() => {
                        tracing::warn!(status = %resp.status(), %url, "notification-controller refused an event");
                        return;
                    }
                    Ok(resp) => {
                        tracing::debug!(status = %resp.status(), attempt, "forwarding an event failed")
                    }
                    Err(e) => tracing::debug!(error = %e, attempt, "forwarding an event failed"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(500 * 2u64.pow(attempt))).await;
            }
            tracing::warn!(%url, "gave up forwarding an event to notification-controller");
        });
    }
}
