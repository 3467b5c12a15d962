//! Pure reconcile functions: observed state and `now` in, a [`Decision`] out.
//!
//! Two reconcilers share one key, the dataset/runtime pair `namespace/name`:
//! - [`dataset`]: finalizer, `NotBound` on creation, deletion blocked while pods use the PVC,
//!   and reset to `NotBound` when the runtime has gone.
//! - [`runtime`]: the seed article's steps: bind by ownerReference, workers, FUSE DaemonSet,
//!   readiness (`NotReady` → `PartialReady` → `Ready`), `Bound`, PV and PVC, periodic sync of
//!   cache states, health and replicas, cache-node labels, and teardown on deletion.
//!
//! Both are idempotent: once a decision's effects are applied, reconciling again yields no
//! write effects (proptest-checked in `tests`).

pub mod conditions;
pub mod dataset;
pub mod node_labels;
pub mod runtime;
pub mod status;
#[cfg(test)]
mod tests;

use crate::engine::EngineConfig;

pub use dataset::reconcile_dataset;
pub use runtime::reconcile_runtime;

/// Operator configuration for the reconcilers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Images and paths for the engines.
    pub engine: EngineConfig,
    /// Periodic resync of a healthy runtime (cache states, health, labels), in milliseconds.
    pub resync_ms: u64,
    /// Retry interval while waiting on something outside our control (a missing dataset, a
    /// pod that still uses a PVC), in milliseconds.
    pub retry_ms: u64,
    /// A PVC Terminating this long with no pod using it gets its protection finalizer removed.
    pub pvc_protection_grace_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self { engine: EngineConfig::default(), resync_ms: 60_000, retry_ms: 10_000, pvc_protection_grace_ms: 30_000 }
    }
}
