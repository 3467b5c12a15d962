//! ferrofluid's controller inside the simulator: informer cache, work queues and the reconcile
//! driver that builds an `Observed`, calls the model and applies its effects.
//!
//! Nothing here decides anything about datasets: the decisions are `model::reconcile`'s. This
//! module only does what the real controller's plumbing does: watch, cache (with a lag when
//! stale reads are injected), dedupe keys, requeue after `Decision.requeue`, back off after a
//! failed write, and apply effects in order, stopping at the first that fails.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use model::effect::{Decision, Effect, Kind, Object, ObjectRef, Requeue, Status};
use model::engine::juicefs::{JuiceFsEngine, RUNTIME_TYPE};
use model::labels::DatasetKeys;
use model::observed::{Observed, PodView};
use model::reconcile::{reconcile_dataset, reconcile_runtime};
use model::retry::{Failure, Retries};
use model::write::WriteChain;

use crate::apiserver::{ApiError, Change, Obj, Store};
use crate::invariants::Violation;
pub use crate::queue::{DelayQueue, Due};
use crate::rng::Stream;
use crate::sim::{Event, Sim};
use crate::trace;

/// The dataset/runtime pair `namespace/name`: the key of both reconcilers (the model's).
pub type Pair = model::watch::PairKey;

/// The two reconcilers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reconciler {
    /// `model::reconcile::reconcile_dataset`.
    Dataset,
    /// `model::reconcile::reconcile_runtime`.
    Runtime,
}

impl Reconciler {
    /// The trace actor.
    pub fn actor(self) -> &'static str {
        match self {
            Reconciler::Dataset => "dataset-ctl",
            Reconciler::Runtime => "runtime-ctl",
        }
    }
}

/// The controller's in-memory state: everything a restart loses.
#[derive(Debug)]
pub struct Control {
    /// False while the controller is restarting.
    pub up: bool,
    /// The informer cache while it lags the apiserver (stale reads injected, or watch events
    /// still on their way); None while it is in step, when reads go to the apiserver's store:
    /// the same objects, without a second copy of every index to keep.
    cache: Option<Store>,
    feed: VecDeque<(u64, Change)>,
    queues: [DelayQueue<Pair>; 2],
    /// Consecutive failures per reconcile target, under the model's retry policy (the controller's).
    retries: Retries<(Reconciler, Pair)>,
    label_owners: model::watch::NodeLabelOwners,
    common_labels: BTreeMap<Pair, String>,
    /// `common_labels`' values, shared with every `Observed` until a dataset comes or goes.
    common_label_set: Arc<model::observed::CommonLabels>,
    /// Changes applied to the lagging cache so far (what a reused observation must not have missed).
    cache_changes: u64,
    /// Objects each pair's reconciles created that the cache did not show yet: the expectations
    /// the controller keeps of its own writes, with the model's rules.
    unconfirmed_creates: model::unconfirmed::UnconfirmedCreates,
    /// Writes to datasets and runtimes the cache has not shown yet: a pair waits for its own
    /// writes before it decides again, with the model's rules, as the controller does.
    pending_writes: model::unconfirmed::PendingWrites,
    /// The last observation and when it was made: both reconcilers of a pair are notified
    /// together and run as adjacent events, and the second reads what the first read unless
    /// something was written or fed in between.
    last_observed: Option<(ObservedAt, Observed)>,
    /// The model's configuration.
    pub config: model::reconcile::Config,
}

impl Control {
    /// A running controller with an empty cache.
    pub fn new(config: model::reconcile::Config) -> Self {
        Self {
            up: true,
            cache: None,
            feed: VecDeque::new(),
            queues: [DelayQueue::default(), DelayQueue::default()],
            retries: Retries::default(),
            label_owners: Default::default(),
            common_labels: BTreeMap::new(),
            common_label_set: Default::default(),
            cache_changes: 0,
            unconfirmed_creates: Default::default(),
            pending_writes: Default::default(),
            last_observed: None,
            config,
        }
    }

    /// The work queue of `reconciler`.
    pub fn queue(&mut self, reconciler: Reconciler) -> &mut DelayQueue<Pair> {
        &mut self.queues[reconciler as usize]
    }

    /// True while watch events are still on their way into the cache.
    pub fn has_pending_feed(&self) -> bool {
        !self.feed.is_empty()
    }

    /// True when a key waits for a watch notification or a backoff retry.
    pub fn has_urgent(&self) -> bool {
        self.queues.iter().any(DelayQueue::has_urgent)
    }

    /// What the controller reads: its lagging cache, else (in step) the apiserver's `store`.
    pub fn view<'a>(&'a self, store: &'a Store) -> &'a Store {
        self.cache.as_ref().unwrap_or(store)
    }

    /// Applies the watch events that have arrived by `now_ms` to the cache; once every one has
    /// and no lag is set (`lag_ms` 0), the cache is in step and reads go to the apiserver again.
    fn sync_cache(&mut self, now_ms: u64, lag_ms: u64) {
        while self.feed.front().is_some_and(|(at, _)| *at <= now_ms) {
            let Some((_, change)) = self.feed.pop_front() else { break };
            self.apply_to_cache(change);
        }
        if self.feed.is_empty() && lag_ms == 0 {
            self.cache = None;
        }
    }

    /// Starts a lagging cache: the apiserver's `store` as it was before `unrouted`, the changes
    /// (in order) that watchers have not been told of yet.
    fn start_lagging(&mut self, store: &Store, unrouted: &[Change]) {
        let mut cache = store.clone();
        for change in unrouted.iter().rev() {
            match &change.old {
                Some(obj) => {
                    cache.put_at(&change.key, obj.clone());
                }
                None => {
                    cache.remove(&change.key);
                }
            }
        }
        self.cache = Some(cache);
    }

    fn apply_to_cache(&mut self, change: Change) {
        self.cache_changes += 1;
        if matches!(change.key.kind, Kind::Dataset | Kind::JuiceFSRuntime) {
            match &change.new {
                Some(obj) => self.pending_writes.seen(&change.key, obj.resource_version()),
                None => self.pending_writes.deleted(&change.key),
            }
        }
        match change.new {
            Some(obj) => {
                if self.index_dataset(&obj) {
                    self.rebuild_common_label_set();
                }
                if let Some(cache) = &mut self.cache {
                    cache.put_at(&change.key, obj);
                }
            }
            None => {
                if change.key.kind == Kind::Dataset {
                    let pair = Pair::new(&change.key.namespace, &change.key.name);
                    self.label_owners.remove(&pair);
                    if self.common_labels.remove(&pair).is_some() {
                        self.rebuild_common_label_set();
                    }
                }
                if let Some(cache) = &mut self.cache {
                    cache.remove(&change.key);
                }
            }
        }
    }

    /// Indexes a dataset's label keys; true when its common label is new (the shared set is stale).
    fn index_dataset(&mut self, obj: &Obj) -> bool {
        let Some(dataset) = obj.as_dataset() else { return false };
        let key = obj.object_ref();
        let pair = Pair::new(&key.namespace, &key.name);
        if let Ok(keys) = DatasetKeys::new(&key.namespace, &key.name, dataset.metadata.uid.as_deref()) {
            self.label_owners.insert(&pair, &keys, model::engine::juicefs::RUNTIME_TYPE);
            let common = keys.common_label();
            if self.common_labels.get(&pair) != Some(&common) {
                self.common_labels.insert(pair, common);
                return true;
            }
        }
        false
    }

    fn rebuild_common_label_set(&mut self) {
        self.common_label_set = Arc::new(self.common_labels.values().cloned().collect());
    }

    /// Re-lists everything from the apiserver (a start or restart).
    fn relist(&mut self, store: &Store) {
        self.cache = None;
        self.feed.clear();
        // The fresh list holds every write made before it.
        self.pending_writes = Default::default();
        self.label_owners = Default::default();
        self.common_labels.clear();
        for obj in store.list(Kind::Dataset) {
            self.index_dataset(obj);
        }
        self.rebuild_common_label_set();
    }

    /// Which dataset each node label key belongs to.
    pub fn label_owners(&self) -> &model::watch::NodeLabelOwners {
        &self.label_owners
    }
}

/// When an observation was made: the pair, the event that made it, the time, and the writes,
/// cache changes and faults up to then. An equal stamp at the next event means the same
/// observation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObservedAt {
    pair: Pair,
    event: u64,
    now_ms: u64,
    writes: u64,
    cache_changes: u64,
    faults: u64,
}

/// Builds the `Observed` of `pair` from `store` (the cache, or the apiserver at a fixpoint check)
/// with the model's one observation, as the controller does.
pub fn build_observed(
    sim_store: &Store,
    pair: &Pair,
    common_labels: &Arc<model::observed::CommonLabels>,
    samples: &dyn Fn(&[PodView]) -> Vec<model::observed::CacheSample>,
) -> Observed {
    let view = crate::view::StoreView { store: sim_store, samples };
    model::observe::observe(&view, RUNTIME_TYPE, &pair.namespace, &pair.name, common_labels.clone())
}

/// Calls the model for one reconciler.
pub fn decide(
    reconciler: Reconciler,
    observed: &Observed,
    config: &model::reconcile::Config,
    now: model::time::Millis,
) -> Decision {
    match reconciler {
        Reconciler::Dataset => reconcile_dataset(observed, config, now),
        Reconciler::Runtime => reconcile_runtime(&JuiceFsEngine, observed, config, now),
    }
}

impl Sim {
    /// Enqueues both reconcilers for `pair` after the watch latency (plus `extra_ms`, the cache
    /// lag: an informer notifies only once its cache holds the change).
    pub fn notify(&mut self, pair: &Pair) {
        self.notify_after(pair, 0);
    }

    fn notify_after(&mut self, pair: &Pair, extra_ms: u64) {
        if !self.control.up {
            return;
        }
        let at = self.clock.now_ms() + extra_ms + self.faults.watch_latency_ms(self.config.watch_latency_ms);
        for reconciler in [Reconciler::Dataset, Reconciler::Runtime] {
            let queue = self.control.queue(reconciler);
            let added = if extra_ms > 0 { queue.add_after_cache(pair, at) } else { queue.add(pair, at) };
            if let Some(token) = added {
                self.clock.schedule_at(at, Event::Reconcile { reconciler, key: pair.clone(), token });
            }
        }
    }

    fn requeue(&mut self, reconciler: Reconciler, pair: &Pair, at_ms: u64, why: crate::control::Due) {
        if let Some(token) = self.control.queue(reconciler).add_why(pair, at_ms, why) {
            self.clock.schedule_at(at_ms, Event::Reconcile { reconciler, key: pair.clone(), token });
        }
    }

    /// How far the controller's reads lag the apiserver: the configured or injected stale reads.
    fn stale_reads_ms(&self) -> u64 {
        self.faults.stale_reads_ms.max(self.config.stale_reads_ms)
    }

    /// Before watchers hear of `batch`: a controller that will read late needs a cache of its own,
    /// as the apiserver's store was before the batch.
    pub(crate) fn prepare_control_cache(&mut self, batch: &[Change]) {
        if self.control.up && self.control.cache.is_none() && self.stale_reads_ms() > 0 {
            self.control.start_lagging(&self.api.store, batch);
        }
    }

    /// Feeds an apiserver change to the controller: into the cache after the stale-read lag,
    /// and as a notification for the pairs it concerns.
    pub(crate) fn route_control(&mut self, change: &Change) {
        if !self.control.up {
            return;
        }
        let lag = self.stale_reads_ms();
        let now = self.clock.now_ms();
        // An informer delivers in order: a change never overtakes one still queued behind a
        // longer lag (else the older change would land later and leave the cache stale).
        let due = (now + lag).max(self.control.feed.back().map_or(0, |(at, _)| *at));
        if due <= now {
            self.control.sync_cache(now, lag);
            self.control.apply_to_cache(change.clone());
        } else {
            debug_assert!(self.control.cache.is_some(), "a late change needs a lagging cache");
            self.control.feed.push_back((due, change.clone()));
        }
        for pair in self.pairs_of_change(change) {
            self.notify_after(&pair, due.saturating_sub(now));
        }
    }

    /// Which pairs a change concerns: the model's watch mappings (those of the controller),
    /// over both versions of the object. Like kube-runtime, which drops a trigger for an object
    /// missing from its store, pairs with neither a dataset nor a runtime are left out, but for
    /// the change of a dataset or runtime itself (its deletion must reach the other reconciler).
    fn pairs_of_change(&self, change: &Change) -> BTreeSet<Pair> {
        use model::watch;
        let key = &change.key;
        let mut pairs = BTreeSet::new();
        if matches!(key.kind, Kind::Dataset | Kind::JuiceFSRuntime) {
            pairs.insert(Pair::new(&key.namespace, &key.name));
            return pairs;
        }
        if key.kind == Kind::Node {
            fn labels(obj: &Option<Obj>) -> Option<&BTreeMap<String, String>> {
                obj.as_ref().and_then(|o| o.meta().labels.as_ref())
            }
            // A created node had no labels before (the apiserver knows both versions).
            let none = BTreeMap::new();
            let old = labels(&change.old).unwrap_or(&none);
            pairs.extend(watch::pairs_of_node(Some(old), labels(&change.new), self.control.label_owners()));
        }
        // A pod version that shares its metadata and spec with the next (a status write or a
        // binding) names the same pairs: map the new one only.
        let same_pod = match (&change.old, &change.new) {
            (Some(Obj::Pod(old)), Some(Obj::Pod(new))) => old.shares_metadata(new) && old.shares_spec(new),
            _ => false,
        };
        let old = change.old.iter().filter(|_| !same_pod);
        for obj in old.chain(change.new.iter()) {
            match obj {
                Obj::StatefulSet(_) | Obj::DaemonSet(_) => pairs.extend(watch::pairs_of_owned(obj.meta())),
                Obj::PersistentVolume(pv) => pairs.extend(watch::pair_of_volume(pv)),
                Obj::PersistentVolumeClaim(_) => pairs.extend(watch::pair_of_named(obj.meta())),
                Obj::Pod(pod) => pairs.extend(watch::pairs_of_pod(&pod.metadata, pod.spec.as_deref(), |owner| {
                    let cache = self.control.view(&self.api.store);
                    cache.get(cache.by_uid(&owner.uid)?)?.as_statefulset().cloned()
                })),
                _ => {}
            }
        }
        let store = &self.api.store;
        pairs.retain(|pair| {
            store.get_named(Kind::Dataset, &pair.namespace, &pair.name).is_some()
                || store.get_named(Kind::JuiceFSRuntime, &pair.namespace, &pair.name).is_some()
        });
        pairs
    }

    /// The cache samples the simulated workers report for `pods`.
    fn samples_for(&self, pair: &Pair, pods: &[PodView]) -> Vec<model::observed::CacheSample> {
        self.workers.samples(self, pair, pods)
    }

    /// After a run of `pair`: queues it again for a watch event its cache had not yet seen.
    pub(crate) fn reconcile_followup(&mut self, reconciler: Reconciler, pair: &Pair) {
        let now_ms = self.clock.now_ms();
        let queue = self.control.queue(reconciler);
        let Some(at_ms) = queue.take_followup(pair, now_ms) else { return };
        // Still after the cache: a retry queued earlier by this run must not swallow it.
        if let Some(token) = queue.add_after_cache(pair, at_ms) {
            self.clock.schedule_at(at_ms, Event::Reconcile { reconciler, key: pair.clone(), token });
        }
    }

    /// What a reconcile of `pair` sees now: the controller's cache, its expectations of its own
    /// creates, the cluster's common labels and the workers' last scraped metrics.
    fn observe(&mut self, pair: &Pair) -> Observed {
        // Taken out while the view borrows the cache beside it.
        let mut expectations = std::mem::take(&mut self.control.unconfirmed_creates);
        let common = self.control.common_label_set.clone();
        let view = self.control.view(&self.api.store);
        let unseen = expectations.unseen(pair, |key| view.get(key).is_some());
        let mut observed = build_observed(view, pair, &common, &|pods| self.samples_for(pair, pods));
        observed.unconfirmed_creates = unseen;
        self.control.unconfirmed_creates = expectations;
        observed
    }

    /// Runs one reconcile of `pair` and applies its effects.
    pub(crate) fn reconcile(&mut self, reconciler: Reconciler, pair: &Pair) {
        if !self.control.up {
            return;
        }
        let now_ms = self.clock.now_ms();
        self.control.sync_cache(now_ms, self.stale_reads_ms());
        let wall = self.clock.wall();
        if self.control.pending_writes.awaits(pair, wall) {
            // Deciding now would read a cache without this controller's last writes.
            let wait_ms = self.control.retries.policy().own_write_wait_ms;
            let wait = crate::clock::format_duration(wait_ms);
            trace!(
                self,
                reconciler.actor(),
                reconciled_object(reconciler, pair),
                "own writes not seen yet: look again in {wait}"
            );
            self.requeue(reconciler, pair, now_ms + wait_ms, crate::control::Due::Timer);
            return;
        }
        let stamp = |sim: &Self, event| ObservedAt {
            pair: pair.clone(),
            event,
            now_ms: sim.clock.now_ms(),
            writes: sim.api.writes,
            cache_changes: sim.control.cache_changes,
            faults: sim.stats.faults,
        };
        let fresh = stamp(self, self.stats.events);
        let observed = match self.control.last_observed.take() {
            Some((at, observed)) if at == stamp(self, self.stats.events.saturating_sub(1)) => {
                // Checked where safety is: a reused view must be the one a fresh build makes.
                if self.config.check_every_event && observed != self.observe(pair) {
                    self.violations.push(Violation {
                        at_ms: now_ms,
                        invariant: "reused-observation-is-current",
                        message: format!(
                            "the {reconciler:?} reconcile of {pair} reused an observation that is out of date"
                        ),
                    });
                }
                observed
            }
            _ => self.observe(pair),
        };
        let decision = decide(reconciler, &observed, &self.control.config, self.clock.wall());
        let creates: Vec<Option<ObjectRef>> = decision.effects.iter().map(|e| observed.created_by(e)).collect();
        let decided_on: BTreeMap<ObjectRef, Option<String>> = [Kind::Dataset, Kind::JuiceFSRuntime]
            .map(|kind| {
                let object = ObjectRef::namespaced(kind, &pair.namespace, &pair.name);
                let version = observed.meta_of(&object).and_then(|meta| meta.resource_version.clone());
                (object, version)
            })
            .into();
        self.control.last_observed = Some((fresh, observed));
        self.stats.reconciles += 1;
        let actor = reconciler.actor();
        let mut failed = None;
        let mut chain = WriteChain::new();
        // Dataset and runtime → the version our last write to it left (None: it went).
        let mut written: BTreeMap<ObjectRef, Option<String>> = BTreeMap::new();
        for (effect, created) in decision.effects.iter().zip(creates) {
            let target = effect.target();
            match self.apply_effect(effect, &mut chain) {
                Ok(()) => {
                    if effect.is_write() && decided_on.contains_key(&target) {
                        let now = self.api.store.get(&target).and_then(|o| o.resource_version()).map(str::to_string);
                        written.insert(target.clone(), now);
                    }
                    self.control.unconfirmed_creates.record(pair, created);
                    self.stats.effects += 1;
                    trace!(self, actor, target.to_string(), "{}", effect);
                }
                Err(error) => {
                    if matches!(error, ApiError::Conflict { .. }) {
                        self.stats.conflicts += 1;
                    }
                    trace!(self, actor, target.to_string(), "{} failed: {error}", effect.verb());
                    failed = Some(error);
                    break;
                }
            }
        }
        self.await_own_writes(written, &decided_on, wall);
        let key = (reconciler, pair.clone());
        if let Some(error) = failed {
            let failure = failure_of(&error);
            let delay = self.control.retries.failed(key, failure);
            let why = match failure {
                Failure::Race => "after a race",
                Failure::Other => "with backoff",
            };
            trace!(
                self,
                actor,
                reconciled_object(reconciler, pair),
                "requeue {why} in {}",
                crate::clock::format_duration(delay)
            );
            self.requeue(reconciler, pair, now_ms + delay, crate::control::Due::Urgent);
            return;
        }
        self.control.retries.succeeded(&key);
        if let Requeue::AfterMs(delay) = decision.requeue {
            self.requeue(reconciler, pair, now_ms + delay, crate::control::Due::Timer);
        }
    }

    /// Remembers the writes of a reconcile that the cache does not show yet (`written`: object →
    /// the version the last write left, None when the write let it go), as the controller does.
    fn await_own_writes(
        &mut self,
        written: BTreeMap<ObjectRef, Option<String>>,
        decided_on: &BTreeMap<ObjectRef, Option<String>>,
        wall: model::time::Millis,
    ) {
        for (object, now) in written {
            let cached =
                self.control.view(&self.api.store).get(&object).map(|o| o.resource_version().map(str::to_string));
            let pending = &mut self.control.pending_writes;
            match now {
                Some(version) if cached != Some(Some(version.clone())) => {
                    let before = decided_on.get(&object).cloned().flatten();
                    pending.record(object, version, before.as_deref(), wall);
                }
                None if cached.is_some() => pending.record_deletion(object, wall),
                _ => {}
            }
        }
    }

    /// Applies one effect through the apiserver, as the controller's client would: guarded by
    /// the resourceVersion `chain` gives it, and recorded there once it succeeded.
    fn apply_effect(&mut self, effect: &Effect, chain: &mut WriteChain) -> Result<(), ApiError> {
        let guard = chain.guard_of(effect);
        self.send_effect(effect, guard.as_deref())?;
        let target = effect.target();
        chain.record_effect(effect, self.api.store.get(&target).and_then(|o| o.resource_version()));
        Ok(())
    }

    /// One effect as one request, with `guard` as its precondition.
    fn send_effect(&mut self, effect: &Effect, guard: Option<&str>) -> Result<(), ApiError> {
        let now = self.clock.wall();
        let conflict_rate = self.faults.conflict_rate;
        if effect.is_write() && self.rng.chance(Stream::Faults, conflict_rate) {
            let target = effect.target();
            let actual = self.api.store.get(&target).and_then(|o| o.resource_version()).unwrap_or_default().to_string();
            return Err(ApiError::Conflict { object: target, expected: "(injected)".to_string(), actual });
        }
        match effect {
            Effect::Apply(object) => {
                let obj = match object {
                    Object::StatefulSet(o) => Obj::StatefulSet(Arc::new((**o).clone())),
                    Object::DaemonSet(o) => Obj::DaemonSet(Arc::new((**o).clone())),
                    Object::PersistentVolume(o) => Obj::PersistentVolume(Arc::new((**o).clone())),
                    Object::PersistentVolumeClaim(o) => Obj::PersistentVolumeClaim(Arc::new((**o).clone())),
                };
                self.api.apply(obj, now).map(|_| ())
            }
            Effect::PatchStatus { target, status, .. } => {
                let status = status.clone();
                self.api
                    .modify(target, guard, |obj| match (obj, status) {
                        (Obj::Dataset(d), Status::Dataset(s)) => {
                            Arc::make_mut(d).status = Some(*s);
                            true
                        }
                        (Obj::Runtime(r), Status::Runtime(s)) => {
                            Arc::make_mut(r).status = Some(*s);
                            true
                        }
                        _ => false,
                    })
                    .map(|_| ())
            }
            Effect::PatchLabels { target, labels, .. } => {
                self.api.patch_labels_guarded(target, guard, labels).map(|_| ())
            }
            Effect::AddOwnerReference { target, owner, .. } => self
                .api
                .modify(target, guard, |obj| {
                    let meta = obj.meta_mut();
                    let owners = meta.owner_references.get_or_insert_with(Vec::new);
                    if owners.iter().any(|o| o.uid == owner.uid) {
                        return false;
                    }
                    owners.push(owner.clone());
                    true
                })
                .map(|_| ()),
            Effect::AddFinalizer { target, finalizer, .. } => self
                .api
                .modify(target, guard, |obj| {
                    if obj.finalizers().contains(finalizer) {
                        return false;
                    }
                    obj.meta_mut().finalizers.get_or_insert_with(Vec::new).push(finalizer.clone());
                    true
                })
                .map(|_| ()),
            Effect::RemoveFinalizer { target, finalizer, .. } => self
                .api
                .modify(target, guard, |obj| {
                    if !obj.finalizers().contains(finalizer) {
                        return false;
                    }
                    obj.meta_mut().finalizers.get_or_insert_with(Vec::new).retain(|f| f != finalizer);
                    true
                })
                .map(|_| ()),
            Effect::Delete(target) => match self.api.delete(target, now) {
                Ok(_) | Err(ApiError::NotFound(_)) => Ok(()),
                Err(error) => Err(error),
            },
            Effect::Event { .. } => Ok(()),
        }
    }

    /// A controller restart: drop the cache, the work queues and backoffs; come back later.
    pub fn controller_restart(&mut self) {
        self.control.up = false;
        self.control.cache = None;
        self.control.last_observed = None;
        self.control.unconfirmed_creates.clear();
        self.control.pending_writes = Default::default();
        self.control.feed.clear();
        for queue in &mut self.control.queues {
            queue.clear();
        }
        self.control.retries.clear();
        self.control.label_owners = Default::default();
        self.control.common_labels.clear();
        self.control.rebuild_common_label_set();
        trace!(self, "fault", "controller", "controller restarts: work queues and cache dropped");
        let delay = self.config.controller_restart_ms;
        self.clock.schedule_in(delay, Event::ControllerUp);
    }

    /// The controller (re)starts: re-list everything and enqueue every pair.
    pub fn controller_up(&mut self) {
        self.control.up = true;
        self.control.relist(&self.api.store);
        trace!(
            self,
            "controller",
            "controller",
            "started: listed {} datasets, {} runtimes",
            self.api.store.count(Kind::Dataset),
            self.api.store.count(Kind::JuiceFSRuntime)
        );
        for pair in self.pairs() {
            self.notify(&pair);
        }
    }

    /// Reconciles every pair against the apiserver's current state (no lag) and returns the
    /// write effects any reconciler would still make: empty at a fixpoint.
    pub fn fixpoint_writes(&self) -> Vec<(Reconciler, Pair, Effect)> {
        let datasets = self.api.store.list(Kind::Dataset).filter_map(|obj| obj.as_dataset());
        let common = Arc::new(model::observed::common_labels_of(datasets.map(|dataset| dataset.as_ref())));
        let mut writes = Vec::new();
        for pair in self.pairs() {
            let observed = build_observed(&self.api.store, &pair, &common, &|pods| self.samples_for(&pair, pods));
            for reconciler in [Reconciler::Dataset, Reconciler::Runtime] {
                let decision = decide(reconciler, &observed, &self.control.config, self.clock.wall());
                writes.extend(decision.writes().map(|e| (reconciler, pair.clone(), e.clone())));
            }
        }
        writes
    }
}

/// The object a reconciler is named after in the trace: its dataset or its runtime.
fn reconciled_object(reconciler: Reconciler, pair: &Pair) -> String {
    let kind = if reconciler == Reconciler::Dataset { Kind::Dataset } else { Kind::JuiceFSRuntime };
    ObjectRef::namespaced(kind, &pair.namespace, &pair.name).to_string()
}

/// How the retry policy reads a refused write: a 409 or 404 is a race with another writer,
/// as the controller reads it.
fn failure_of(error: &ApiError) -> Failure {
    match error {
        ApiError::Conflict { .. } | ApiError::NotFound(_) | ApiError::AlreadyExists(_) => Failure::Race,
        ApiError::Invalid { .. } => Failure::Other,
    }
}

/// The trace name of an object reference.
pub fn object_name(key: &ObjectRef) -> String {
    key.to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use model::api::{DatasetPhase, DatasetStatus};

    use super::*;
    use crate::sim::SimConfig;

    /// The write contract (`model::write`), as `controller/tests/verifier.rs` checks it for the
    /// controller's executor with the same sequence: writes decided on one resourceVersion pass
    /// while this run's own guarded writes moved it; after an unguarded write they are stale.
    #[test]
    fn one_runs_guarded_writes_chain_their_resource_versions() {
        let mut sim = Sim::new(SimConfig { trace: false, ..SimConfig::default() });
        let manifest = serde_json::json!({
            "apiVersion": "data.fluid.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": "jfsdemo", "namespace": "default"},
            "spec": {"mounts": [{"mountPoint": "juicefs:///", "name": "jfsdemo"}]}
        });
        let now = sim.clock.wall();
        sim.api.create(Obj::from_manifest(manifest).expect("dataset"), now).expect("create");
        let target = ObjectRef::namespaced(Kind::Dataset, "default", "jfsdemo");
        let decided_on = sim.api.store.get(&target).and_then(|o| o.resource_version()).map(str::to_string);
        let dataset_id = BTreeMap::from([("fluid.io/dataset-id".to_string(), Some("default-jfsdemo".to_string()))]);
        let status = DatasetStatus { phase: DatasetPhase::NotBound, ..Default::default() };
        let effects = [
            Effect::PatchStatus {
                target: target.clone(),
                status: Status::Dataset(Box::new(status)),
                resource_version: decided_on.clone(),
            },
            Effect::AddFinalizer {
                target: target.clone(),
                finalizer: "fluid-dataset-controller-finalizer".into(),
                resource_version: decided_on.clone(),
            },
            Effect::PatchLabels { target: target.clone(), labels: dataset_id.clone(), resource_version: None },
            Effect::PatchLabels {
                target: target.clone(),
                labels: BTreeMap::from([("team".to_string(), Some("a".to_string()))]),
                resource_version: decided_on,
            },
        ];
        let mut chain = WriteChain::new();
        let outcomes: Vec<bool> = effects.iter().map(|effect| sim.apply_effect(effect, &mut chain).is_ok()).collect();
        assert_eq!(outcomes, [true, true, true, false], "the unguarded write ended the chain");
        let stored = sim.api.store.get(&target).expect("dataset");
        assert_eq!(stored.finalizers(), ["fluid-dataset-controller-finalizer"]);
        assert!(!stored.meta().labels.as_ref().is_some_and(|l| l.contains_key("team")), "the stale write was refused");
    }
}
