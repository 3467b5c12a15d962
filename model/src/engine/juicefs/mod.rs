//! The JuiceFS engine (community edition): a worker StatefulSet and a FUSE DaemonSet per dataset, no master.
//!
//! Follows Fluid's `pkg/ddc/juicefs` and `charts/juicefs`: the worker and the FUSE client both
//! run `juicefs mount` of the dataset's volume with the tieredstore as cache; the FUSE client
//! mounts at the PV's `fluid_path` with Bidirectional propagation so the CSI plugin can bind it
//! into app pods. Where ferrofluid departs from Fluid it says so at the spot.

mod cache;
mod command;
mod fuse;
mod memory;
mod metrics;
mod pod;
mod validate;
mod workers;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};

use crate::api::common::MediumType;
use crate::api::{FuseCleanPolicy, JuiceFSRuntime, RuntimeStatus, TieredStore};
use crate::engine::{Engine, EngineInput, NodeCapacity, RuntimeResource};
use crate::error::ModelError;
use crate::labels;

pub use cache::{CacheDir, CachePlan, DEFAULT_CACHE_DIR, cache_plan, quota_warnings, split_paths};
pub use command::{
    JUICEFS_MOUNT_FLAGS, METRICS_PORT, env_var_name, fuse_mount_script, shell_quote, subdir_of, worker_mount_script,
};
pub use fuse::{DEV_FUSE_VOLUME, FUSE_PRIORITY_CLASS, MOUNT_VOLUME};
pub use metrics::{METRIC_CACHE_HITS, METRIC_CACHE_MISSES, METRIC_CACHED_BYTES, METRIC_USED_SPACE, parse_cache_sample};
pub use validate::warnings;
pub use workers::{placement_label, worker_affinity, worker_pod_labels, worker_tolerations};

/// Fluid's default community-edition image: the `runtime.juicefs.fuse.ceimage` value that Fluid's
/// chart (`charts/fluid/fluid/values.yaml`) passes as `JUICEFS_CE_IMAGE_ENV`; the controller's
/// built-in fallback (`pkg/common/juicefs.go` `DefaultCEImage`) is `ce-v1.1.0-beta2`.
pub const DEFAULT_IMAGE: &str = "juicedata/mount:ce-v1.3.0";
/// Type segment of labels and paths.
pub const RUNTIME_TYPE: &str = "juicefs";
/// The PV's `mount_type` (Fluid's `JuiceFSMountType`).
pub const MOUNT_TYPE: &str = "JuiceFS";
/// Container name of the worker.
pub const WORKER_CONTAINER: &str = "juicefs-worker";
/// Container name of the FUSE client.
pub const FUSE_CONTAINER: &str = "juicefs-fuse";

/// The JuiceFS engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JuiceFsEngine;

impl RuntimeResource for JuiceFSRuntime {
    type Spec = crate::api::JuiceFSRuntimeSpec;

    fn spec(&self) -> &Self::Spec {
        &self.spec
    }

    /// `spec.replicas`; absent means 0, as Fluid's `int32 replicas,omitempty` without a default
    /// ("need to be specified"). Negative values are refused by validation and read as 0 here.
    fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(0).max(0)
    }

    fn tieredstore(&self) -> Option<&TieredStore> {
        self.spec.tieredstore.as_ref()
    }

    fn runtime_status(&self) -> Option<&RuntimeStatus> {
        self.status.as_ref()
    }

    fn fuse_clean_policy(&self) -> FuseCleanPolicy {
        self.spec.fuse.as_ref().and_then(|fuse| fuse.clean_policy).unwrap_or_default()
    }

    fn fuse_node_selector(&self) -> BTreeMap<String, String> {
        self.spec.fuse.as_ref().map(|fuse| fuse.node_selector.clone()).unwrap_or_default()
    }
}

impl Engine for JuiceFsEngine {
    type Runtime = JuiceFSRuntime;

    fn runtime_type(&self) -> &'static str {
        RUNTIME_TYPE
    }

    fn mount_type(&self) -> &'static str {
        MOUNT_TYPE
    }

    fn finalizer(&self) -> &'static str {
        labels::JUICEFS_RUNTIME_FINALIZER
    }

    fn validate(&self, input: &EngineInput<'_, JuiceFSRuntime>) -> Result<(), Vec<ModelError>> {
        validate::validate(input)
    }

    fn fluid_path(&self, input: &EngineInput<'_, JuiceFSRuntime>) -> String {
        input.fluid_path()
    }

    fn master(&self, _input: &EngineInput<'_, JuiceFSRuntime>) -> Result<Option<StatefulSet>, ModelError> {
        Ok(None)
    }

    fn workers(&self, input: &EngineInput<'_, JuiceFSRuntime>) -> Result<StatefulSet, ModelError> {
        workers::build(input)
    }

    fn fuse(&self, input: &EngineInput<'_, JuiceFSRuntime>) -> Result<DaemonSet, ModelError> {
        fuse::build(input)
    }

    /// The cache one worker brings to its node: `levels[0]` (the only level JuiceFS uses), by medium.
    fn spec_warnings(&self, input: &EngineInput<'_, JuiceFSRuntime>) -> Vec<String> {
        validate::warnings(input)
    }

    fn node_capacity(&self, input: &EngineInput<'_, JuiceFSRuntime>) -> Result<NodeCapacity, ModelError> {
        let plan = cache_plan(input.runtime.spec.tieredstore.as_ref())?;
        let bytes = plan.total_quota_bytes.unwrap_or(0);
        Ok(match plan.medium {
            Some(MediumType::Memory) => NodeCapacity { memory_bytes: bytes, disk_bytes: 0 },
            Some(MediumType::Ssd | MediumType::Hdd) => NodeCapacity { memory_bytes: 0, disk_bytes: bytes },
            None => NodeCapacity::default(),
        })
    }
}
