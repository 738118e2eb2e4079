//! Drift detection by watching: a pass that finds every managed object as it left it sends no
//! dry run, and an edited or deleted object is re-applied within seconds.
//!
//! Flux's kustomize-controller dry-runs every managed object on every pass to learn that nothing
//! changed (a cluster of 20,000 managed objects on a 10-minute interval: 2,000 dry runs a
//! minute). Here every object a pass applies, or finds unchanged, leaves a baseline: what was
//! applied (a hash) and the object's fingerprint as the API server returned it. One
//! metadata-only watch per kind, on the objects carrying the Kustomization labels, follows each
//! baselined object. The next pass skips an object's GET and dry run only when all of these hold:
//! what it would apply hashes the same; the kind's watch is in step (listed, and no error since);
//! the object's fingerprint is still the baseline's; and the baseline is younger than
//! `BASELINE_TTL`. Anything else (a kind not yet watched, a watch that failed and relists, an
//! edit, a deletion) falls back to the dry run, as Flux does it. An edit or deletion of a
//! baselined object triggers the Kustomization that applied it.
//!
//! The fingerprint is the object's uid, labels and annotations with `metadata.generation` for
//! kinds that keep one (status updates change neither), else its `resourceVersion`.
//!
//! A baseline is only ever recorded from an answer the pass got with its own credentials (the
//! Kustomization's ServiceAccount, when it names one), so the controller's wider watch decides
//! nothing a tenant could not see; `BASELINE_TTL` bounds how long a revoked permission goes
//! unnoticed on an object nobody touches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DynamicObject, PartialObjectMeta};
use kube::discovery::ApiResource;
use kube::runtime::reflector::ObjectRef as KubeRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::Value;

use super::inventory::{OWNER_NAME, ObjectRef};
use crate::api::Kustomization;
use crate::controller::watch::WatchBackoff;

/// How long a baseline stands in for a dry run.
pub const BASELINE_TTL: Duration = Duration::from_secs(30 * 60);
/// Past this many baselines the oldest go first, then all (every object is dry-run again).
const MAX_BASELINES: usize = 500_000;
/// A Kustomization is re-applied for drift at most this often: another controller that keeps
/// changing a field the Kustomization sets (an autoscaler and `replicas`) makes a tug of war
/// at this pace, not at the API server's.
pub const MIN_TRIGGER_GAP: Duration = Duration::from_secs(30);

/// The Kustomization a pass applies for, as (namespace, name).
pub type Owner = (String, String);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Kind {
    group: String,
    version: String,
    plural: String,
}

impl Kind {
    fn of(resource: &ApiResource) -> Self {
        Kind {
            group: resource.group.clone(),
            version: resource.version.clone(),
            plural: resource.plural.clone(),
        }
    }
}

/// An object within its kind: (namespace, name).
type Name = (String, String);

struct Baseline {
    desired: u64,
    seen: u64,
    /// The fingerprint the watch has now; `None` when a relist did not find the object.
    current: Option<u64>,
    owner: Owner,
    at: Instant,
}

#[derive(Default)]
struct KindWatch {
    /// Listed, and no error since.
    synced: bool,
    /// Fingerprints of baselined objects met during a relist, until it is done.
    relisting: Option<HashMap<Name, u64>>,
}

#[derive(Default)]
struct State {
    kinds: HashMap<Kind, KindWatch>,
    baselines: HashMap<Kind, HashMap<Name, Baseline>>,
    count: usize,
}

/// What a kind's watch saw, reduced to what drift detection reads.
#[derive(Debug)]
enum Seen {
    Listing,
    Listed(Name, u64),
    ListDone,
    Changed(Name, u64),
    Deleted(Name),
    Failed,
}

impl State {
    fn unchanged(&self, kind: &Kind, name: &Name, desired: u64, now: Instant) -> bool {
        let synced = self.kinds.get(kind).is_some_and(|k| k.synced);
        let baseline = self.baselines.get(kind).and_then(|b| b.get(name));
        synced
            && baseline.is_some_and(|b| {
                b.desired == desired
                    && b.current == Some(b.seen)
                    && now.duration_since(b.at) < BASELINE_TTL
            })
    }

    fn record(&mut self, kind: Kind, name: Name, desired: u64, seen: u64, owner: Owner) {
        if self.count >= MAX_BASELINES {
            self.shed(Instant::now());
        }
        let baselines = self.baselines.entry(kind).or_default();
        let fresh = Baseline {
            desired,
            seen,
            // Just read from the API server: as fresh as the watch, or fresher.
            current: Some(seen),
            owner,
            at: Instant::now(),
        };
        if baselines.insert(name, fresh).is_none() {
            self.count += 1;
        }
    }

    fn forget(&mut self, kind: &Kind, name: &Name) {
        if let Some(baselines) = self.baselines.get_mut(kind)
            && baselines.remove(name).is_some()
        {
            self.count -= 1;
        }
    }

    /// Old baselines go first; if that is not enough, all of them.
    fn shed(&mut self, now: Instant) {
        for baselines in self.baselines.values_mut() {
            baselines.retain(|_, b| now.duration_since(b.at) < BASELINE_TTL);
        }
        self.count = self.baselines.values().map(HashMap::len).sum();
        if self.count >= MAX_BASELINES {
            self.baselines.clear();
            self.count = 0;
        }
    }

    /// Applies what the watch of `kind` saw; returns the Kustomizations to reconcile now.
    fn observe(&mut self, kind: &Kind, seen: Seen) -> Vec<Owner> {
        let watch = self.kinds.entry(kind.clone()).or_default();
        let baselines = self.baselines.entry(kind.clone()).or_default();
        let mut owners = Vec::new();
        match seen {
            Seen::Listing => watch.relisting = Some(HashMap::new()),
            Seen::Listed(name, fingerprint) => {
                if baselines.contains_key(&name) {
                    watch
                        .relisting
                        .get_or_insert_default()
                        .insert(name, fingerprint);
                }
            }
            Seen::ListDone => {
                let listed = watch.relisting.take().unwrap_or_default();
                for (name, b) in baselines.iter_mut() {
                    b.current = listed.get(name).copied();
                    if b.current != Some(b.seen) {
                        owners.push(b.owner.clone());
                    }
                }
                watch.synced = true;
            }
            Seen::Changed(name, fingerprint) => {
                if let Some(b) = baselines.get_mut(&name) {
                    b.current = Some(fingerprint);
                    if fingerprint != b.seen {
                        owners.push(b.owner.clone());
                    }
                }
            }
            Seen::Deleted(name) => {
                // Gone: its owner's next pass has no baseline and applies it again.
                if let Some(b) = baselines.remove(&name) {
                    self.count -= 1;
                    owners.push(b.owner);
                }
            }
            Seen::Failed => watch.synced = false,
        }
        let mut unique = HashSet::new();
        owners.retain(|o| unique.insert(o.clone()));
        owners
    }
}

/// When a Kustomization whose objects changed is reconciled: at once, unless it was within
/// `MIN_TRIGGER_GAP`, then at the end of the gap, once however many changes came meanwhile.
#[derive(Default)]
struct Pacer {
    /// When each owner was last triggered, and whether a trigger waits for the gap's end.
    last: HashMap<Owner, (Instant, bool)>,
}

#[derive(Debug, PartialEq, Eq)]
enum Pace {
    Now,
    After(Duration),
    AlreadyWaiting,
}

impl Pacer {
    fn pace(&mut self, owner: &Owner, now: Instant) -> Pace {
        if self.last.len() > 10_000 {
            self.last
                .retain(|_, (at, waiting)| *waiting || now.duration_since(*at) < MIN_TRIGGER_GAP);
        }
        match self.last.get_mut(owner) {
            Some((_, true)) => Pace::AlreadyWaiting,
            Some((at, waiting)) if now.duration_since(*at) < MIN_TRIGGER_GAP => {
                *waiting = true;
                Pace::After(MIN_TRIGGER_GAP - now.duration_since(*at))
            }
            _ => {
                self.last.insert(owner.clone(), (now, false));
                Pace::Now
            }
        }
    }

    /// The waiting trigger went out.
    fn sent(&mut self, owner: &Owner, now: Instant) {
        self.last.insert(owner.clone(), (now, false));
    }
}

/// The baselines and the watches of every kind the controller applied.
#[derive(Clone)]
pub struct DriftWatch {
    client: Client,
    state: Arc<Mutex<State>>,
    triggers: Triggers,
}

/// Sends Kustomizations to reconcile, paced.
#[derive(Clone)]
struct Triggers {
    send: mpsc::UnboundedSender<KubeRef<Kustomization>>,
    pacer: Arc<Mutex<Pacer>>,
}

impl Triggers {
    fn trigger(&self, owner: Owner) {
        let pace = self
            .pacer
            .lock()
            .expect("drift pacer lock")
            .pace(&owner, Instant::now());
        match pace {
            Pace::Now => self.send(&owner),
            Pace::AlreadyWaiting => {}
            Pace::After(wait) => {
                let triggers = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    triggers
                        .pacer
                        .lock()
                        .expect("drift pacer lock")
                        .sent(&owner, Instant::now());
                    triggers.send(&owner);
                });
            }
        }
    }

    fn send(&self, (namespace, name): &Owner) {
        tracing::debug!(namespace, name, "managed objects changed: reconciling");
        let _ = self
            .send
            .unbounded_send(KubeRef::new(name).within(namespace));
    }
}

impl DriftWatch {
    /// The watch, and the stream of Kustomizations whose objects changed under them
    /// (`Controller::reconcile_on`).
    pub fn new(
        client: Client,
    ) -> (
        Self,
        impl futures::Stream<Item = KubeRef<Kustomization>> + Send + 'static,
    ) {
        let (send, changed) = mpsc::unbounded();
        let watch = DriftWatch {
            client,
            state: Arc::default(),
            triggers: Triggers {
                send,
                pacer: Arc::default(),
            },
        };
        (watch, changed)
    }

    /// Whether the object `r` of `resource`, about to be applied as `desired` (its
    /// `desired_hash`), is as this controller left it. The first ask for a kind starts its
    /// watch (and answers no).
    pub fn unchanged(&self, resource: &ApiResource, r: &ObjectRef, desired: u64) -> bool {
        let kind = Kind::of(resource);
        let mut state = self.state.lock().expect("drift state lock");
        if !state.kinds.contains_key(&kind) {
            state.kinds.insert(kind.clone(), KindWatch::default());
            self.spawn_watch(kind, resource.clone());
            return false;
        }
        state.unchanged(&kind, &name_of(r), desired, Instant::now())
    }

    /// The baseline of an object applied (or found unchanged) as `desired`, with the metadata
    /// the API server answered.
    pub fn record(
        &self,
        resource: &ApiResource,
        r: &ObjectRef,
        desired: u64,
        meta: &ObjectMeta,
        owner: &Owner,
    ) {
        let mut state = self.state.lock().expect("drift state lock");
        state.record(
            Kind::of(resource),
            name_of(r),
            desired,
            fingerprint(meta),
            owner.clone(),
        );
    }

    /// No baseline for `r` (it is skipped, or failed).
    pub fn forget(&self, resource: &ApiResource, r: &ObjectRef) {
        let mut state = self.state.lock().expect("drift state lock");
        state.forget(&Kind::of(resource), &name_of(r));
    }

    fn spawn_watch(&self, kind: Kind, resource: ApiResource) {
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.client.clone(), &resource);
        let config = watcher::Config::default().labels(OWNER_NAME);
        let (state, triggers) = (self.state.clone(), self.triggers.clone());
        tokio::spawn(async move {
            let mut events = watcher(api, config)
                .backoff(WatchBackoff::default())
                .boxed();
            while let Some(event) = events.next().await {
                let seen = match event {
                    Ok(event) => seen(event),
                    Err(e) => {
                        tracing::debug!(kind = resource.kind, error = %crate::util::error_chain(&e), "drift watch failed; dry runs until it lists again");
                        Some(Seen::Failed)
                    }
                };
                let Some(seen) = seen else { continue };
                let owners = state.lock().expect("drift state lock").observe(&kind, seen);
                for owner in owners {
                    triggers.trigger(owner);
                }
            }
        });
    }
}

fn seen(event: watcher::Event<PartialObjectMeta<DynamicObject>>) -> Option<Seen> {
    let named = |o: &PartialObjectMeta<DynamicObject>| {
        let meta = &o.metadata;
        let name = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        (name, fingerprint(meta))
    };
    Some(match event {
        watcher::Event::Init => Seen::Listing,
        watcher::Event::InitApply(o) => {
            let (name, f) = named(&o);
            Seen::Listed(name, f)
        }
        watcher::Event::InitDone => Seen::ListDone,
        watcher::Event::Apply(o) => {
            let (name, f) = named(&o);
            Seen::Changed(name, f)
        }
        watcher::Event::Delete(o) => Seen::Deleted(named(&o).0),
    })
}

fn name_of(r: &ObjectRef) -> Name {
    (r.namespace.clone(), r.name.clone())
}

/// What changes when the object's spec, labels or annotations change, and not with its status.
pub fn fingerprint(meta: &ObjectMeta) -> u64 {
    let mut h = DefaultHasher::new();
    meta.uid.hash(&mut h);
    match meta.generation {
        Some(generation) if generation > 0 => generation.hash(&mut h),
        _ => meta.resource_version.hash(&mut h),
    }
    let empty = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&empty).hash(&mut h);
    meta.annotations.as_ref().unwrap_or(&empty).hash(&mut h);
    h.finish()
}

/// What a pass would apply, hashed.
pub fn desired_hash(object: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_vec(object).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind() -> Kind {
        Kind {
            group: String::new(),
            version: "v1".into(),
            plural: "configmaps".into(),
        }
    }

    fn name(n: &str) -> Name {
        ("apps".into(), n.into())
    }

    fn owner() -> Owner {
        ("flux-system".into(), "apps".into())
    }

    /// A kind whose watch has listed, with `a` baselined at fingerprint 7 for desired 1.
    fn listed_with_a() -> State {
        let mut s = State::default();
        s.observe(&kind(), Seen::Listing);
        s.observe(&kind(), Seen::ListDone);
        s.record(kind(), name("a"), 1, 7, owner());
        s
    }

    #[test]
    fn an_object_as_left_needs_no_dry_run() {
        let s = listed_with_a();
        assert!(s.unchanged(&kind(), &name("a"), 1, Instant::now()));
    }

    #[test]
    fn anything_else_falls_back_to_the_dry_run() {
        let s = listed_with_a();
        let now = Instant::now();
        assert!(!s.unchanged(&kind(), &name("a"), 2, now), "other desired");
        assert!(!s.unchanged(&kind(), &name("b"), 1, now), "no baseline");
        assert!(
            !s.unchanged(&kind(), &name("a"), 1, now + BASELINE_TTL),
            "baseline too old"
        );
        let mut unwatched = State::default();
        unwatched.record(kind(), name("a"), 1, 7, owner());
        assert!(
            !unwatched.unchanged(&kind(), &name("a"), 1, now),
            "kind not listed yet"
        );
    }

    #[test]
    fn an_edit_triggers_the_owner_and_needs_a_dry_run() {
        let mut s = listed_with_a();
        assert_eq!(
            s.observe(&kind(), Seen::Changed(name("a"), 8)),
            vec![owner()]
        );
        assert!(!s.unchanged(&kind(), &name("a"), 1, Instant::now()));
        // Its own write seen again (or a status update): no trigger.
        let mut s = listed_with_a();
        assert!(s.observe(&kind(), Seen::Changed(name("a"), 7)).is_empty());
        assert!(s.unchanged(&kind(), &name("a"), 1, Instant::now()));
        // Objects without a baseline are not followed.
        assert!(s.observe(&kind(), Seen::Changed(name("b"), 1)).is_empty());
    }

    #[test]
    fn a_deletion_triggers_the_owner() {
        let mut s = listed_with_a();
        assert_eq!(s.observe(&kind(), Seen::Deleted(name("a"))), vec![owner()]);
        assert!(!s.unchanged(&kind(), &name("a"), 1, Instant::now()));
    }

    #[test]
    fn a_failed_watch_means_dry_runs_until_the_relist_and_the_relist_finds_what_changed() {
        let mut s = listed_with_a();
        s.record(kind(), name("b"), 1, 3, owner());
        s.observe(&kind(), Seen::Failed);
        assert!(!s.unchanged(&kind(), &name("a"), 1, Instant::now()));
        s.observe(&kind(), Seen::Listing);
        s.observe(&kind(), Seen::Listed(name("a"), 7));
        s.observe(&kind(), Seen::Listed(name("c"), 1));
        assert!(
            !s.unchanged(&kind(), &name("a"), 1, Instant::now()),
            "still listing"
        );
        // b was deleted during the gap: its owner is told, once.
        assert_eq!(s.observe(&kind(), Seen::ListDone), vec![owner()]);
        assert!(s.unchanged(&kind(), &name("a"), 1, Instant::now()));
        assert!(!s.unchanged(&kind(), &name("b"), 1, Instant::now()));
    }

    #[test]
    fn forgotten_and_shed_baselines_mean_dry_runs() {
        let mut s = listed_with_a();
        s.forget(&kind(), &name("a"));
        assert!(!s.unchanged(&kind(), &name("a"), 1, Instant::now()));
        assert_eq!(s.count, 0);
        s.record(kind(), name("a"), 1, 7, owner());
        s.count = MAX_BASELINES;
        s.record(kind(), name("b"), 1, 7, owner());
        assert_eq!(s.count, 2, "full: counted again, fresh baselines kept");
        assert!(s.unchanged(&kind(), &name("a"), 1, Instant::now()));
        s.shed(Instant::now() + BASELINE_TTL);
        assert_eq!(s.count, 0, "old ones go first");
        assert!(!s.unchanged(&kind(), &name("b"), 1, Instant::now()));
    }

    #[test]
    fn drift_triggers_a_kustomization_at_most_once_per_gap() {
        let mut p = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(p.pace(&owner(), t0), Pace::Now);
        let soon = t0 + Duration::from_secs(10);
        assert_eq!(
            p.pace(&owner(), soon),
            Pace::After(MIN_TRIGGER_GAP - Duration::from_secs(10))
        );
        assert_eq!(
            p.pace(&owner(), soon),
            Pace::AlreadyWaiting,
            "one wait, however many changes"
        );
        let other = ("apps".to_string(), "other".to_string());
        assert_eq!(
            p.pace(&other, soon),
            Pace::Now,
            "each Kustomization paced alone"
        );
        p.sent(&owner(), t0 + MIN_TRIGGER_GAP);
        assert!(matches!(
            p.pace(&owner(), t0 + MIN_TRIGGER_GAP),
            Pace::After(_)
        ));
        assert_eq!(
            p.pace(&owner(), t0 + MIN_TRIGGER_GAP * 3),
            Pace::AlreadyWaiting
        );
    }

    #[test]
    fn status_updates_do_not_change_a_generation_keeping_fingerprint() {
        let meta = |rv: &str, generation: Option<i64>, label: &str| ObjectMeta {
            uid: Some("u".into()),
            resource_version: Some(rv.into()),
            generation,
            labels: Some(BTreeMap::from([("l".to_string(), label.to_string())])),
            ..Default::default()
        };
        assert_eq!(
            fingerprint(&meta("1", Some(2), "x")),
            fingerprint(&meta("5", Some(2), "x"))
        );
        assert_ne!(
            fingerprint(&meta("1", Some(2), "x")),
            fingerprint(&meta("1", Some(3), "x"))
        );
        assert_ne!(
            fingerprint(&meta("1", Some(2), "x")),
            fingerprint(&meta("1", Some(2), "y"))
        );
        assert_ne!(
            fingerprint(&meta("1", None, "x")),
            fingerprint(&meta("2", None, "x")),
            "no generation: every write counts"
        );
    }
}
