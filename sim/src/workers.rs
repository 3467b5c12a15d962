//! Simulated JuiceFS cache workers: what their metrics endpoint would report.
//!
//! Each app pod that mounts a dataset reads it once, front to back, at `read_rate_bytes_per_s`.
//! Blocks not in a serving worker's cache are misses and land in the caches of the workers
//! serving at that moment, split evenly; the rest are hits. A cache lives in its node's cache
//! directory, so a worker reports what its node holds: one rescheduled onto an empty node starts
//! empty, one back on its node finds its disk cache again, and a reboot empties a memory cache
//! (an `emptyDir` cache goes with its pod). Each worker reports at most its tieredstore quota.
//! Between two changes of the serving workers every figure is a pure function of virtual time
//! and the pods' start and stop times, so samples are deterministic and stop changing once the
//! reads are done. Figures are those of the controller's last scrape (every
//! `metrics_scrape_ms`), as in a cluster.

use std::collections::{BTreeMap, BTreeSet};

use model::effect::{Kind, ObjectRef};
use model::observed::{CacheSample, PodPhase, PodView};

use crate::control::Pair;
use crate::sim::Sim;

/// JuiceFS's block size, the unit of hits and misses.
pub const BLOCK_BYTES: u64 = 4 << 20;

/// One app pod's read of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSession {
    /// When the pod started reading.
    pub start_ms: u64,
    /// When it stopped (pod gone), if it did.
    pub end_ms: Option<u64>,
}

/// What one node's cache directory holds of one dataset, and the traffic its worker served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeCache {
    /// Bytes of blocks cached here (before the quota caps what the worker reports).
    pub cached_bytes: u64,
    /// Bytes read from this cache.
    pub hit_bytes: u64,
    /// Bytes that missed and were fetched into this cache.
    pub miss_bytes: u64,
}

/// One dataset's caches at a moment, and which nodes' workers serve from then on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Checkpoint {
    at_ms: u64,
    serving: BTreeSet<String>,
    nodes: BTreeMap<String, NodeCache>,
}

/// How reads fill caches: the dataset's size, the read rate.
#[derive(Debug, Clone, Copy)]
pub struct ReadModel {
    /// Size of the dataset's remote data.
    pub ufs_bytes: u64,
    /// Read rate of each app pod.
    pub rate_bytes_per_s: u64,
}

/// Reads and caches by dataset.
#[derive(Debug, Clone, Default)]
pub struct WorkerSim {
    reads: BTreeMap<Pair, BTreeMap<(ObjectRef, u64), ReadSession>>,
    /// Checkpoints by dataset, oldest first: one at each change of the serving workers or of a
    /// node's cache; only those a scrape may still ask for are kept.
    caches: BTreeMap<Pair, Vec<Checkpoint>>,
}

impl WorkerSim {
    /// An app pod starts reading the dataset `pair`.
    pub fn start_read(&mut self, pair: &Pair, pod: &ObjectRef, now_ms: u64) {
        let sessions = self.reads.entry(pair.clone()).or_default();
        let open = sessions.iter().any(|((p, _), s)| p == pod && s.end_ms.is_none());
        if !open {
            sessions.insert((pod.clone(), now_ms), ReadSession { start_ms: now_ms, end_ms: None });
        }
    }

    /// The pod stops reading.
    pub fn stop_read(&mut self, pair: &Pair, pod: &ObjectRef, now_ms: u64) {
        if let Some(sessions) = self.reads.get_mut(pair) {
            for ((p, _), session) in sessions.iter_mut() {
                if p == pod && session.end_ms.is_none() {
                    session.end_ms = Some(now_ms);
                }
            }
        }
    }

    /// Bytes read from `pair` by `now_ms`, all pods together.
    pub fn bytes_read(&self, pair: &Pair, now_ms: u64, ufs_bytes: u64, rate_bytes_per_s: u64) -> u64 {
        self.reads
            .get(pair)
            .map(|sessions| {
                sessions
                    .values()
                    .map(|s| {
                        let elapsed_ms = s.end_ms.unwrap_or(now_ms).min(now_ms).saturating_sub(s.start_ms);
                        (u128::from(rate_bytes_per_s) * u128::from(elapsed_ms) / 1000).min(u128::from(ufs_bytes)) as u64
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    /// `from` carried forward to `to_ms`: the reads in between fill the serving nodes' caches.
    fn advance(&self, pair: &Pair, from: &Checkpoint, to_ms: u64, reads: ReadModel) -> Checkpoint {
        let mut next = from.clone();
        next.at_ms = to_ms.max(from.at_ms);
        let read = |at_ms| self.bytes_read(pair, at_ms, reads.ufs_bytes, reads.rate_bytes_per_s);
        let read_bytes = read(next.at_ms).saturating_sub(read(from.at_ms));
        let serving = from.serving.len() as u64;
        if serving == 0 || read_bytes == 0 {
            return next;
        }
        let cached: u64 = from.serving.iter().filter_map(|node| from.nodes.get(node)).map(|c| c.cached_bytes).sum();
        let missed = read_bytes.min(reads.ufs_bytes.saturating_sub(cached));
        let hit = read_bytes - missed;
        for node in &from.serving {
            let cache = next.nodes.entry(node.clone()).or_default();
            cache.cached_bytes += missed / serving;
            cache.miss_bytes += missed / serving;
            cache.hit_bytes += hit / serving;
        }
        next
    }

    /// The caches of `pair` at `at_ms` (empty before its first worker served).
    fn at(&self, pair: &Pair, at_ms: u64, reads: ReadModel) -> Option<Checkpoint> {
        let checkpoints = self.caches.get(pair)?;
        let last = checkpoints.iter().rev().find(|c| c.at_ms <= at_ms)?;
        Some(self.advance(pair, last, at_ms, reads))
    }

    /// Records a change at `now_ms`: `serving` are the nodes whose workers serve `pair` from now
    /// on, and `lost` the nodes whose cache of it is gone. `scraped_at_ms` is the last scrape
    /// (checkpoints before it are dropped once a later one covers it).
    pub fn change(
        &mut self,
        pair: &Pair,
        now_ms: u64,
        serving: BTreeSet<String>,
        lost: &[&str],
        reads: ReadModel,
        scraped_at_ms: u64,
    ) {
        let current = match self.caches.get(pair).and_then(|c| c.last()) {
            Some(last) => self.advance(pair, last, now_ms, reads),
            None if serving.is_empty() => return,
            None => Checkpoint { at_ms: now_ms, ..Checkpoint::default() },
        };
        let lost_any = lost.iter().any(|node| current.nodes.get(*node).is_some_and(|c| c.cached_bytes > 0));
        if current.serving == serving && !lost_any {
            return;
        }
        let mut next = current;
        next.serving = serving;
        for node in lost {
            if let Some(cache) = next.nodes.get_mut(*node) {
                cache.cached_bytes = 0;
            }
        }
        let checkpoints = self.caches.entry(pair.clone()).or_default();
        checkpoints.push(next);
        let keep_from = checkpoints.iter().rposition(|c| c.at_ms <= scraped_at_ms).unwrap_or(0);
        checkpoints.drain(..keep_from);
    }

    /// The datasets that have caches.
    pub fn cached_pairs(&self) -> Vec<Pair> {
        self.caches.keys().cloned().collect()
    }

    /// The samples the ready worker pods among `pods` report.
    pub fn samples(&self, sim: &Sim, pair: &Pair, pods: &[PodView]) -> Vec<CacheSample> {
        let ready: Vec<&PodView> = pods
            .iter()
            .filter(|p| p.phase == PodPhase::Running && p.ready && !p.deleting)
            .filter(|p| p.node_name.as_deref().is_some_and(|n| sim.nodes.get(n).is_some_and(|n| n.up)))
            .collect();
        if ready.is_empty() {
            return Vec::new();
        }
        let ufs = sim.config.ufs_bytes;
        let caches = self.at(pair, sim.scraped_at_ms(), sim.read_model()).unwrap_or_default();
        let quota = sim
            .api
            .store
            .get_named(Kind::JuiceFSRuntime, &pair.namespace, &pair.name)
            .and_then(|o| o.as_runtime())
            .and_then(|r| model::engine::juicefs::cache_plan(r.spec.tieredstore.as_ref()).ok())
            .and_then(|plan| plan.total_quota_bytes)
            .unwrap_or(u64::MAX);
        ready
            .iter()
            .map(|pod| {
                let node = pod.node_name.as_deref().unwrap_or_default();
                let cache = caches.nodes.get(node).cloned().unwrap_or_default();
                CacheSample {
                    pod_name: pod.name.to_string(),
                    cached_bytes: cache.cached_bytes.min(quota),
                    cache_hits: cache.hit_bytes / BLOCK_BYTES,
                    cache_misses: cache.miss_bytes / BLOCK_BYTES,
                    used_space_bytes: ufs,
                }
            })
            .collect()
    }
}

impl Sim {
    /// When the controller last scraped the workers' metrics.
    pub fn scraped_at_ms(&self) -> u64 {
        let now_ms = self.clock.now_ms();
        now_ms - now_ms % self.config.metrics_scrape_ms.max(1)
    }

    /// How reads fill caches in this run.
    pub fn read_model(&self) -> ReadModel {
        ReadModel { ufs_bytes: self.config.ufs_bytes, rate_bytes_per_s: self.config.read_rate_bytes_per_s }
    }

    /// The nodes whose workers of `pair` serve now: Running, ready, not terminating, node up.
    pub fn serving_nodes(&self, pair: &Pair) -> BTreeSet<String> {
        let names =
            model::labels::WorkloadNames::new(&pair.namespace, &pair.name, model::engine::juicefs::RUNTIME_TYPE);
        let store = &self.api.store;
        let Some(uid) =
            store.get_named(Kind::StatefulSet, &pair.namespace, &names.workers).and_then(|o| o.meta().uid.clone())
        else {
            return BTreeSet::new();
        };
        store
            .dependents(&uid)
            .filter_map(|key| store.get(key).and_then(|o| o.as_pod()))
            .filter(|pod| {
                pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && pod.is_ready()
                    && pod.metadata.deletion_timestamp.is_none()
            })
            .filter_map(|pod| pod.node_name().map(str::to_string))
            .filter(|node| self.nodes.get(node.as_str()).is_some_and(|n| n.up))
            .collect()
    }

    /// Tells the cache model that `pair`'s serving workers may have changed, and that the caches
    /// on `lost` nodes are gone.
    pub(crate) fn cache_changed(&mut self, pair: &Pair, lost: &[&str]) {
        let serving = self.serving_nodes(pair);
        let (now_ms, reads, scraped_at_ms) = (self.clock.now_ms(), self.read_model(), self.scraped_at_ms());
        self.workers.change(pair, now_ms, serving, lost, reads, scraped_at_ms);
    }

    /// A worker pod changed: its dataset's serving workers may have changed; a removed worker
    /// whose cache is an `emptyDir` takes its node's cache with it.
    pub(crate) fn route_cache(&mut self, change: &crate::apiserver::Change) {
        if change.key.kind != Kind::Pod {
            return;
        }
        let pod = change.new.as_ref().or(change.old.as_ref()).and_then(|o| o.as_pod()).cloned();
        let Some(pod) = pod.filter(|p| crate::fuse::is_worker_pod(p)) else { return };
        let Some((namespace, name)) = self.runtime_of_pod(&pod) else { return };
        let pair = Pair::new(&namespace, &name);
        let gone_from = pod.node_name().filter(|_| change.new.is_none() && self.cache_in_pod(&pair));
        self.cache_changed(&pair, gone_from.as_slice());
    }

    /// A node went down or came back: every dataset's serving workers may have changed; a
    /// rebooted node (`rebooted`) lost the caches kept in memory or in a pod.
    pub(crate) fn cache_nodes_changed(&mut self, rebooted: Option<&str>) {
        for pair in self.workers.cached_pairs() {
            let volatile = self.cache_in_pod(&pair)
                || self.cache_plan_of(&pair).is_some_and(|plan| plan.medium == Some(model::api::MediumType::Memory));
            let lost: Vec<&str> = rebooted.filter(|_| volatile).into_iter().collect();
            self.cache_changed(&pair, &lost);
        }
    }

    fn cache_plan_of(&self, pair: &Pair) -> Option<model::engine::juicefs::CachePlan> {
        let runtime = self.api.store.get_named(Kind::JuiceFSRuntime, &pair.namespace, &pair.name)?.as_runtime()?;
        model::engine::juicefs::cache_plan(runtime.spec.tieredstore.as_ref()).ok()
    }

    /// True when `pair`'s cache lives in its worker pod (an `emptyDir`), not on its node.
    fn cache_in_pod(&self, pair: &Pair) -> bool {
        self.cache_plan_of(pair).is_some_and(|plan| plan.volume_type == model::api::common::VolumeType::EmptyDir)
    }
}
