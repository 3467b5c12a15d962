//! What each pair's reconciles created or wrote that the driver's cache does not show yet.
//!
//! A watch delivers a controller's own writes back with a lag, so an observation can miss an
//! object the controller created a moment ago; teardown deletes only what it sees and would let
//! the runtime go while such an object exists (`Observed::unconfirmed_creates`). These are the
//! expectations a controller keeps of its own writes. Both drivers keep them with this type: the
//! simulator as is, the controller behind a lock.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::effect::{Effect, Kind, ObjectRef};
use crate::engine::RuntimeResource;
use crate::observed::Observed;
use crate::time::Millis;
use crate::watch::PairKey;

impl<R: RuntimeResource> Observed<R> {
    /// The metadata of `target` as observed, if this observation holds it.
    pub fn meta_of(&self, target: &ObjectRef) -> Option<&ObjectMeta> {
        let meta = match target.kind {
            Kind::Dataset => self.dataset.as_deref().map(|o| &o.metadata),
            Kind::JuiceFSRuntime => self.runtime.as_deref().map(|o| o.meta()),
            Kind::StatefulSet => self.workers.as_deref().map(|o| &o.metadata),
            Kind::DaemonSet => self.fuse.as_deref().map(|o| &o.metadata),
            Kind::PersistentVolume => self.persistent_volume.as_deref().map(|o| &o.metadata),
            Kind::PersistentVolumeClaim => self.persistent_volume_claim.as_deref().map(|o| &o.metadata),
            Kind::Node | Kind::Pod => None,
        }?;
        let named = meta.name.as_deref() == Some(target.name.as_str())
            && meta.namespace.as_deref().unwrap_or_default() == target.namespace;
        named.then_some(meta)
    }

    /// The object `effect` creates, seen from this observation: the target of an apply that the
    /// observation does not hold.
    pub fn created_by(&self, effect: &Effect) -> Option<ObjectRef> {
        let Effect::Apply(object) = effect else { return None };
        let target = object.object_ref();
        self.meta_of(&target).is_none().then_some(target)
    }
}

/// Objects created per pair, until the driver's cache holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnconfirmedCreates {
    by_pair: BTreeMap<PairKey, BTreeSet<ObjectRef>>,
}

impl UnconfirmedCreates {
    /// Remembers objects a reconcile of `pair` created.
    pub fn record(&mut self, pair: &PairKey, created: impl IntoIterator<Item = ObjectRef>) {
        let mut created = created.into_iter().peekable();
        if created.peek().is_some() {
            self.by_pair.entry(pair.clone()).or_default().extend(created);
        }
    }

    /// The objects of `pair` the cache does not hold yet (`holds` answers for the cache); the
    /// others are forgotten.
    pub fn unseen(&mut self, pair: &PairKey, holds: impl Fn(&ObjectRef) -> bool) -> Vec<ObjectRef> {
        let Some(created) = self.by_pair.get_mut(pair) else { return Vec::new() };
        created.retain(|key| !holds(key));
        let unseen = created.iter().cloned().collect();
        if created.is_empty() {
            self.by_pair.remove(pair);
        }
        unseen
    }

    /// Forgets everything (a restart loses its expectations, and its relisted cache is fresh).
    pub fn clear(&mut self) {
        self.by_pair.clear();
    }
}

/// The resourceVersions of this driver's writes to datasets and runtimes whose watch events have
/// not come back yet: the write contract's "read your own writes".
///
/// A reconcile of a pair whose dataset or runtime has a write still on its way decides from a
/// cache that predates that write: every guarded write it sends then fails with 409, and every
/// write after a finalizer removal finds the object gone. So the driver records the version
/// each write returned, lets the watch confirm it (an event carrying that version, a deletion,
/// or a relist), and does not reconcile the pair meanwhile: the event itself triggers the next
/// reconcile. Watch events of one object arrive in order, so the driver's own write is seen
/// before any later write by someone else. A write that changed nothing gets no event: the
/// driver records only writes that moved the object past the version it observed. And a write
/// whose event never shows (a watch that broke) stops holding the pair after
/// [`PendingWrites::MAX_WAIT_MS`]: a late reconcile may then meet one conflict, never a stall.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingWrites {
    /// Object → what is awaited, when it was written, and the write's sequence number.
    by_object: BTreeMap<ObjectRef, (Awaited, Millis, u64)>,
    /// Sequence number of the last recorded write.
    last_seq: u64,
    /// Per kind whose watch is relisting: the last write recorded before the relist began.
    relisting: BTreeMap<Kind, u64>,
}

/// True when a write made at `at` may still be awaited at `now`: less than
/// [`PendingWrites::MAX_WAIT_MS`] apart either way. Concurrent reconciles read the clock when
/// they start and record when they end, so a record may come with an earlier `now` than one
/// already kept, and must neither drop nor ignore it; a clock that stepped back further than
/// that holds nothing.
fn is_recent(at: Millis, now: Millis) -> bool {
    at.0.abs_diff(now.0) < PendingWrites::MAX_WAIT_MS
}

/// What a pending write waits to see.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Awaited {
    /// An event with the version the write returned.
    Version(String),
    /// The object's deletion: the write removed the last finalizer of an object being
    /// deleted, and the API server answers such a write with the version it had before.
    Deletion,
}

impl PendingWrites {
    /// How long a write is awaited at most.
    pub const MAX_WAIT_MS: u64 = 10_000;

    /// Remembers that a write to `object` at `now` returned `resource_version`, the object
    /// having been observed at `observed` before. Only datasets and runtimes are tracked: they
    /// are what both reconcilers write with guards.
    pub fn record(&mut self, object: ObjectRef, resource_version: String, observed: Option<&str>, now: Millis) {
        if observed != Some(resource_version.as_str()) {
            self.insert(object, Awaited::Version(resource_version), now);
        }
    }

    /// Remembers that a write to `object` at `now` let it go (its last finalizer removed while
    /// it was being deleted): the pair waits until the watch shows the deletion.
    pub fn record_deletion(&mut self, object: ObjectRef, now: Millis) {
        self.insert(object, Awaited::Deletion, now);
    }

    fn insert(&mut self, object: ObjectRef, awaited: Awaited, now: Millis) {
        if !matches!(object.kind, Kind::Dataset | Kind::JuiceFSRuntime) {
            return;
        }
        // Writes whose events never came are dropped here, so the set does not grow.
        self.by_object.retain(|_, (_, at, _)| is_recent(*at, now));
        self.last_seq += 1;
        self.by_object.insert(object, (awaited, now, self.last_seq));
    }

    /// A watch event showed `object` at `resource_version`: a pending write is confirmed when
    /// the versions match.
    pub fn seen(&mut self, object: &ObjectRef, resource_version: Option<&str>) {
        let confirmed = match self.by_object.get(object) {
            Some((Awaited::Version(rv), _, _)) => Some(rv.as_str()) == resource_version,
            _ => false,
        };
        if confirmed {
            self.by_object.remove(object);
        }
    }

    /// `object` was deleted: nothing of it is awaited any more.
    pub fn deleted(&mut self, object: &ObjectRef) {
        self.by_object.remove(object);
    }

    /// The watch of `kind` starts a relist. The objects it lists replace the cache only once
    /// the relist is done, so nothing is confirmed by them one by one.
    pub fn relist_started(&mut self, kind: Kind) {
        self.relisting.insert(kind, self.last_seq);
    }

    /// The watch of `kind` finished its relist: its cache holds every write recorded before the
    /// relist began. Writes recorded since are still awaited.
    pub fn relisted(&mut self, kind: Kind) {
        let before = self.relisting.remove(&kind).unwrap_or(self.last_seq);
        self.by_object.retain(|object, (_, _, seq)| object.kind != kind || *seq > before);
    }

    /// True at `now` while a write to the pair's dataset or runtime has not come back (and
    /// was made less than [`Self::MAX_WAIT_MS`] ago).
    pub fn awaits(&self, pair: &PairKey, now: Millis) -> bool {
        [Kind::Dataset, Kind::JuiceFSRuntime].into_iter().any(|kind| {
            let object = ObjectRef::namespaced(kind, &pair.namespace, &pair.name);
            self.by_object.get(&object).is_some_and(|(_, at, _)| is_recent(*at, now))
        })
    }

    /// How many writes are awaited.
    pub fn len(&self) -> usize {
        self.by_object.len()
    }

    /// True when no write is awaited.
    pub fn is_empty(&self) -> bool {
        self.by_object.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PersistentVolume;

    use super::*;
    use crate::effect::Object;

    #[test]
    fn a_created_object_is_unseen_until_the_cache_holds_it() {
        let mut expectations = UnconfirmedCreates::default();
        let pair = PairKey::new("default", "demo");
        let other = PairKey::new("default", "other");
        let volume = ObjectRef::cluster(Kind::PersistentVolume, "default-demo");
        let claim = ObjectRef::namespaced(Kind::PersistentVolumeClaim, "default", "demo");
        expectations.record(&pair, [volume.clone(), claim.clone()]);
        expectations.record(&other, []);
        assert_eq!(expectations.unseen(&pair, |_| false), [volume.clone(), claim.clone()]);
        assert!(expectations.unseen(&other, |_| false).is_empty(), "each pair its own");
        let awaited = std::slice::from_ref(&volume);
        assert_eq!(expectations.unseen(&pair, |key| *key == claim), awaited, "the claim showed up");
        assert_eq!(expectations.unseen(&pair, |_| false), awaited, "and is not awaited again");
        assert!(expectations.unseen(&pair, |_| true).is_empty());
        assert_eq!(expectations, UnconfirmedCreates::default(), "nothing kept once everything was seen");
    }

    #[test]
    fn a_pair_awaits_its_own_writes_until_the_watch_shows_them() {
        let mut pending = PendingWrites::default();
        let t = Millis(1_000_000);
        let pair = PairKey::new("default", "demo");
        let dataset = ObjectRef::namespaced(Kind::Dataset, "default", "demo");
        let runtime = ObjectRef::namespaced(Kind::JuiceFSRuntime, "default", "demo");
        pending.record(ObjectRef::namespaced(Kind::StatefulSet, "default", "demo"), "9".into(), Some("8"), t);
        assert!(pending.is_empty(), "only datasets and runtimes are tracked");
        pending.record(dataset.clone(), "10".into(), Some("10"), t);
        assert!(pending.is_empty(), "a write that changed nothing gets no event, so it is not awaited");
        pending.record(dataset.clone(), "10".into(), Some("9"), t);
        pending.record(dataset.clone(), "12".into(), Some("9"), t);
        pending.record(runtime.clone(), "11".into(), None, t);
        assert!(pending.awaits(&pair, t) && !pending.awaits(&PairKey::new("default", "other"), t));
        pending.seen(&dataset, Some("10"));
        assert!(pending.awaits(&pair, t), "an older version of the dataset is not the last write");
        pending.seen(&dataset, Some("12"));
        assert_eq!(pending.len(), 1);
        pending.seen(&runtime, Some("13"));
        assert!(pending.awaits(&pair, t), "a version this driver did not write confirms nothing");
        let late = Millis(t.0 + PendingWrites::MAX_WAIT_MS);
        assert!(!pending.awaits(&pair, late), "a write whose event never came stops holding the pair");
        let stepped_back = Millis(t.0 - PendingWrites::MAX_WAIT_MS);
        assert!(!pending.awaits(&pair, stepped_back), "a clock that stepped back holds nothing");
        assert!(pending.awaits(&pair, Millis(t.0 - 1)), "a reconcile that read the clock just before is held");
        pending.relist_started(Kind::Dataset);
        pending.relisted(Kind::Dataset);
        assert!(pending.awaits(&pair, t), "a dataset relist says nothing of the runtime");
        pending.deleted(&runtime);
        assert!(!pending.awaits(&pair, t) && pending.is_empty());
        pending.record(runtime.clone(), "20".into(), Some("19"), t);
        pending.relist_started(Kind::JuiceFSRuntime);
        pending.record(dataset.clone(), "30".into(), Some("29"), t);
        pending.record(runtime.clone(), "21".into(), Some("20"), t);
        pending.relisted(Kind::JuiceFSRuntime);
        assert_eq!(pending.len(), 2, "a write made during the relist may be missing from its list");
        pending.relist_started(Kind::JuiceFSRuntime);
        pending.relisted(Kind::JuiceFSRuntime);
        pending.relist_started(Kind::Dataset);
        pending.relisted(Kind::Dataset);
        assert!(pending.is_empty());
        pending.record(dataset.clone(), "40".into(), Some("39"), t);
        pending.record(runtime.clone(), "41".into(), Some("40"), late);
        assert_eq!(pending.len(), 1, "recording drops writes whose events never came");
        pending.deleted(&runtime);
        // The write that removed the last finalizer: the object's deletion is what comes back.
        pending.record_deletion(runtime.clone(), t);
        pending.seen(&runtime, Some("21"));
        assert!(pending.awaits(&pair, t), "a later version of a deleted object confirms nothing");
        pending.deleted(&runtime);
        assert!(pending.is_empty());
    }

    /// Found on the real control plane (1,000 pairs, 16 reconciles at once): a reconcile that
    /// started earlier recorded its writes after a later one, and dropped the later one's
    /// pending write as "in the future"; the pair's next reconcile read a cache without its own
    /// finalizer and got 409 (47 conflicts in the run).
    #[test]
    fn a_record_made_with_an_earlier_clock_keeps_the_later_ones() {
        let mut pending = PendingWrites::default();
        let t = Millis(1_000_000);
        let dataset = |name: &str| ObjectRef::namespaced(Kind::Dataset, "bench", name);
        pending.record(dataset("p0029"), "12".into(), Some("10"), Millis(t.0 + 150));
        pending.record(dataset("p0030"), "13".into(), Some("11"), t);
        assert_eq!(pending.len(), 2);
        assert!(pending.awaits(&PairKey::new("bench", "p0029"), Millis(t.0 + 120)));
    }

    #[test]
    fn an_apply_creates_what_the_observation_does_not_hold() {
        let mut observed: Observed = Observed::empty("default", "demo");
        let volume = |name: &str| PersistentVolume {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            ..PersistentVolume::default()
        };
        observed.persistent_volume = Some(std::sync::Arc::new(volume("default-demo")));
        let apply = |name: &str| Effect::Apply(Object::PersistentVolume(Box::new(volume(name))));
        assert_eq!(observed.created_by(&apply("default-demo")), None, "observed: an update");
        assert_eq!(
            observed.created_by(&apply("default-other")),
            Some(ObjectRef::cluster(Kind::PersistentVolume, "default-other")),
            "another name is not the observed one"
        );
        let delete = Effect::Delete(ObjectRef::cluster(Kind::PersistentVolume, "default-other"));
        assert_eq!(observed.created_by(&delete), None, "only applies create");
    }
}
