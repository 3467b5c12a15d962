//! Simulated JuiceFS cache workers: what their metrics endpoint would report.
//!
//! Each app pod that mounts a dataset reads it once, front to back, at `read_rate_bytes_per_s`.
//! Blocks read for the first time are misses and land in the workers' caches (split evenly over
//! the ready workers, each bounded by its tieredstore quota); re-reads are hits. Everything is a
//! pure function of virtual time and the pods' start and stop times, so samples are
//! deterministic and stop changing once the reads are done. Figures are those of the
//! controller's last scrape (every `metrics_scrape_ms`), as in a cluster.

use std::collections::BTreeMap;

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

/// Reads by dataset.
#[derive(Debug, Clone, Default)]
pub struct WorkerSim {
    reads: BTreeMap<Pair, BTreeMap<(ObjectRef, u64), ReadSession>>,
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
        let now_ms = sim.clock.now_ms();
        let scraped_at_ms = now_ms - now_ms % sim.config.metrics_scrape_ms.max(1);
        let total = self.bytes_read(pair, scraped_at_ms, ufs, sim.config.read_rate_bytes_per_s);
        let unique = total.min(ufs);
        let quota = sim
            .api
            .store
            .get_named(Kind::JuiceFSRuntime, &pair.namespace, &pair.name)
            .and_then(|o| o.as_runtime())
            .and_then(|r| model::engine::juicefs::cache_plan(r.spec.tieredstore.as_ref()).ok())
            .and_then(|plan| plan.total_quota_bytes)
            .unwrap_or(u64::MAX);
        let n = ready.len() as u64;
        ready
            .iter()
            .map(|pod| CacheSample {
                pod_name: pod.name.to_string(),
                cached_bytes: (unique / n).min(quota),
                cache_hits: (total - unique) / BLOCK_BYTES / n,
                cache_misses: unique / BLOCK_BYTES / n,
                used_space_bytes: ufs,
            })
            .collect()
    }
}
