//! Runtime status from observed workloads: phases, counters, conditions and cache states.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSetStatus, StatefulSetStatus};

use super::conditions::{self, Wanted};
use crate::api::{RuntimePhase, RuntimeStatus};
use crate::observed::{CacheSample, PodView};
use crate::quantity::format_bytes;
use crate::time::{Millis, format_duration_ms};

/// Fluid's phase rule: nothing wanted or all ready is `Ready`, some ready is `PartialReady`
/// (usable), none is `NotReady`.
pub fn phase_from_counts(desired: i32, ready: i32) -> RuntimePhase {
    if desired <= 0 || ready >= desired {
        RuntimePhase::Ready
    } else if ready > 0 {
        RuntimePhase::PartialReady
    } else {
        RuntimePhase::NotReady
    }
}

/// True when a phase means the component can serve.
pub fn is_usable(phase: RuntimePhase) -> bool {
    matches!(phase, RuntimePhase::Ready | RuntimePhase::PartialReady)
}

/// True for a runtime whose setup is done: its workers were usable once (`setupDuration` set).
pub fn is_set_up(status: &RuntimeStatus) -> bool {
    status.setup_duration.is_some()
}

/// True for a set-up runtime with no usable worker: what Fluid counts as a failed health check
/// (`runtime_sync_healthcheck_error_total`).
pub fn is_unhealthy(status: &RuntimeStatus) -> bool {
    is_set_up(status) && !is_usable(status.worker_phase)
}

/// Cache keys of `status.cacheStates`, as Fluid names them.
pub mod cache_keys {
    /// Bytes cached, human-readable.
    pub const CACHED: &str = "cached";
    /// Cache capacity of the ready workers, human-readable.
    pub const CACHE_CAPACITY: &str = "cacheCapacity";
    /// Cached bytes over the dataset's total size.
    pub const CACHED_PERCENTAGE: &str = "cachedPercentage";
    /// Hits over reads.
    pub const CACHE_HIT_RATIO: &str = "cacheHitRatio";
}

/// What the status computation reads.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    /// The status as observed (conditions and set-once fields are carried over).
    pub previous: Option<&'a RuntimeStatus>,
    /// Desired worker replicas.
    pub desired_workers: i32,
    /// Worker replicas before this reconcile's apply, when they change now.
    pub scaled_from: Option<i32>,
    /// The worker StatefulSet's status; `None` when it does not exist (even after our apply).
    pub workers: Option<&'a StatefulSetStatus>,
    /// The FUSE DaemonSet's status; `None` when it does not exist (even after our apply).
    pub fuse: Option<&'a DaemonSetStatus>,
    /// Worker pods, to select cache samples of ready workers.
    pub worker_pods: &'a [PodView],
    /// Cache samples.
    pub cache_samples: &'a [CacheSample],
    /// Cache capacity one worker brings.
    pub capacity_per_worker_bytes: u64,
    /// Label selector of the worker pods.
    pub selector: String,
    /// When the runtime was created, for `setupDuration`.
    pub created: Option<Millis>,
}

/// Computes the whole runtime status.
pub fn runtime_status(input: &StatusInput<'_>, now: Millis) -> RuntimeStatus {
    let mut status = input.previous.cloned().unwrap_or_default();
    let sts_status = input.workers;
    let workers_ready = sts_status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let workers_current = sts_status.map(|s| s.current_replicas.unwrap_or(s.replicas)).unwrap_or(0);
    let workers_available = sts_status.and_then(|s| s.available_replicas).unwrap_or(0);

    status.desired_worker_number_scheduled = input.desired_workers;
    status.current_worker_number_scheduled = workers_current;
    status.worker_number_ready = workers_ready;
    status.worker_number_available = Some(workers_available);
    status.worker_number_unavailable = Some((input.desired_workers - workers_available).max(0));
    status.worker_phase = if input.workers.is_some() {
        phase_from_counts(input.desired_workers, workers_ready)
    } else {
        RuntimePhase::None
    };
    status.worker_reason =
        Some(worker_reason(input.desired_workers, workers_ready, input.workers.is_some(), input.worker_pods));

    let ds_status = input.fuse;
    let fuse_desired = ds_status.map(|s| s.desired_number_scheduled).unwrap_or(0);
    let fuse_ready = ds_status.map(|s| s.number_ready).unwrap_or(0);
    status.desired_fuse_number_scheduled = fuse_desired;
    status.current_fuse_number_scheduled = ds_status.map(|s| s.current_number_scheduled).unwrap_or(0);
    status.fuse_number_ready = fuse_ready;
    status.fuse_number_available = Some(ds_status.and_then(|s| s.number_available).unwrap_or(0));
    status.fuse_number_unavailable = Some(ds_status.and_then(|s| s.number_unavailable).unwrap_or(0));
    // Unlike Fluid, which always reports FUSE Ready (#4209), report what the DaemonSet shows.
    status.fuse_phase =
        if input.fuse.is_some() { phase_from_counts(fuse_desired, fuse_ready) } else { RuntimePhase::None };
    status.fuse_reason = Some(fuse_reason(fuse_desired, fuse_ready, input.fuse.is_some()));
    status.selector = Some(input.selector.clone());
    status.cache_states = cache_states(input, workers_ready);

    if status.setup_duration.is_none()
        && is_usable(status.worker_phase)
        && let Some(created) = input.created
    {
        status.setup_duration = Some(format_duration_ms(now.since(created)));
    }
    set_conditions(&mut status, input, now);
    status
}

fn worker_reason(desired: i32, ready: i32, exists: bool, worker_pods: &[PodView]) -> String {
    if !exists {
        return "the worker StatefulSet is not created yet".to_string();
    }
    if ready >= desired {
        return format!("{ready} of {desired} cache workers are ready");
    }
    // The scheduler's own words, which Fluid's users otherwise find only on the pod (#5099).
    let unplaced = worker_pods.iter().find_map(|pod| Some((pod, pod.unschedulable.as_deref()?)));
    if let Some((pod, message)) = unplaced {
        return format!(
            "{ready} of {desired} cache workers are ready; worker pod {} cannot be scheduled: {message}",
            pod.name
        );
    }
    format!(
        "{ready} of {desired} cache workers are ready; check the worker pods' events for scheduling, image or resource problems"
    )
}

fn fuse_reason(desired: i32, ready: i32, exists: bool) -> String {
    match (exists, desired) {
        (false, _) => "the FUSE DaemonSet is not created yet".to_string(),
        (true, 0) => "no node runs a pod that uses the dataset yet, so no FUSE client is needed".to_string(),
        _ => format!("{ready} of {desired} FUSE clients are ready"),
    }
}

fn set_conditions(status: &mut RuntimeStatus, input: &StatusInput<'_>, now: Millis) {
    let conditions = &mut status.conditions;
    if input.workers.is_some() {
        let message = format!("worker StatefulSet for {} replicas is created", input.desired_workers);
        conditions::set(
            conditions,
            Wanted { type_: conditions::WORKERS_INITIALIZED, status: true, reason: "WorkersCreated", message },
            now,
        );
        let usable = is_usable(status.worker_phase);
        let reason = if usable { "WorkersReady" } else { "WorkersNotReady" };
        let message = status.worker_reason.clone().unwrap_or_default();
        conditions::set(conditions, Wanted { type_: conditions::WORKERS_READY, status: usable, reason, message }, now);
    }
    if input.fuse.is_some() {
        let message =
            "FUSE DaemonSet is created; it starts a client on each node labelled by the CSI plugin".to_string();
        conditions::set(
            conditions,
            Wanted { type_: conditions::FUSES_INITIALIZED, status: true, reason: "FusesCreated", message },
            now,
        );
        let ready = status.fuse_phase == RuntimePhase::Ready;
        let reason = if ready { "FusesReady" } else { "FusesNotReady" };
        let message = status.fuse_reason.clone().unwrap_or_default();
        conditions::set(conditions, Wanted { type_: conditions::FUSES_READY, status: ready, reason, message }, now);
    }
    if let Some(from) = input.scaled_from {
        let to = input.desired_workers;
        let (type_, stale, reason) = if to > from {
            (conditions::WORKERS_SCALED_OUT, conditions::WORKERS_SCALED_IN, "WorkersScaledOut")
        } else {
            (conditions::WORKERS_SCALED_IN, conditions::WORKERS_SCALED_OUT, "WorkersScaledIn")
        };
        conditions::remove(conditions, stale);
        let message = format!("workers scaled from {from} to {to} replicas");
        conditions::set(conditions, Wanted { type_, status: true, reason, message }, now);
    }
}

fn cache_states(input: &StatusInput<'_>, workers_ready: i32) -> BTreeMap<String, String> {
    let ready_pods: Vec<&str> = input.worker_pods.iter().filter(|p| p.ready).map(|p| &*p.name).collect();
    let samples: Vec<&CacheSample> =
        input.cache_samples.iter().filter(|s| ready_pods.contains(&s.pod_name.as_str())).collect();
    let cached_bytes: u64 = samples.iter().map(|s| s.cached_bytes).sum();
    let hits: u64 = samples.iter().map(|s| s.cache_hits).sum();
    let misses: u64 = samples.iter().map(|s| s.cache_misses).sum();
    let used_space_bytes = samples.iter().map(|s| s.used_space_bytes).max().unwrap_or(0);
    let capacity_bytes = input.capacity_per_worker_bytes.saturating_mul(u64::try_from(workers_ready).unwrap_or(0));
    let mut states = BTreeMap::new();
    states.insert(cache_keys::CACHED.to_string(), format_bytes(cached_bytes));
    states.insert(cache_keys::CACHE_CAPACITY.to_string(), format_bytes(capacity_bytes));
    states.insert(cache_keys::CACHED_PERCENTAGE.to_string(), percentage(cached_bytes, used_space_bytes));
    states.insert(cache_keys::CACHE_HIT_RATIO.to_string(), percentage(hits, hits + misses));
    states
}

/// `part / whole` as Fluid shows it (`45.3%`); `0.0%` for an empty whole.
pub fn percentage(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0.0%".to_string();
    }
    let tenths = (u128::from(part.min(whole)) * 1000 + u128::from(whole) / 2) / u128::from(whole);
    format!("{}.{}%", tenths / 10, tenths % 10)
}

/// The dataset's `ufsTotal`: the largest volume usage a ready worker reported.
pub fn ufs_total(worker_pods: &[PodView], cache_samples: &[CacheSample]) -> Option<String> {
    cache_samples
        .iter()
        .filter(|s| worker_pods.iter().any(|p| p.ready && *p.name == *s.pod_name))
        .map(|s| s.used_space_bytes)
        .max()
        .map(format_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_set_up_runtime_without_a_usable_worker_is_unhealthy() {
        let status = |set_up: bool, phase: RuntimePhase| RuntimeStatus {
            setup_duration: set_up.then(|| "3s".to_string()),
            worker_phase: phase,
            ..Default::default()
        };
        assert!(is_unhealthy(&status(true, RuntimePhase::NotReady)));
        assert!(!is_unhealthy(&status(true, RuntimePhase::PartialReady)), "one worker serves");
        assert!(!is_unhealthy(&status(false, RuntimePhase::NotReady)), "still setting up: a setup error, not health");
        assert!(is_set_up(&status(true, RuntimePhase::Ready)) && !is_set_up(&status(false, RuntimePhase::Ready)));
    }

    #[test]
    fn phases_follow_fluid() {
        assert_eq!(phase_from_counts(0, 0), RuntimePhase::Ready);
        assert_eq!(phase_from_counts(2, 2), RuntimePhase::Ready);
        assert_eq!(phase_from_counts(2, 1), RuntimePhase::PartialReady);
        assert_eq!(phase_from_counts(2, 0), RuntimePhase::NotReady);
        assert!(is_usable(RuntimePhase::PartialReady));
        assert!(!is_usable(RuntimePhase::NotReady));
    }

    #[test]
    fn percentages_round_to_tenths() {
        assert_eq!(percentage(0, 0), "0.0%");
        assert_eq!(percentage(1, 3), "33.3%");
        assert_eq!(percentage(2, 3), "66.7%");
        assert_eq!(percentage(5, 5), "100.0%");
        assert_eq!(percentage(9, 5), "100.0%");
    }
}
