//! Runtime engines: how a runtime kind turns a dataset and its runtime into Kubernetes objects.
//!
//! The reconcile functions are generic over [`Engine`]; JuiceFS ([`juicefs::JuiceFsEngine`]) is
//! the first. An engine only *builds* objects; the reconcile decides whether to apply them.

pub mod juicefs;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};

use crate::api::{Dataset, FuseCleanPolicy, RuntimeStatus, TieredStore};
use crate::error::ModelError;
use crate::labels::{DatasetKeys, WorkloadNames};

/// Images, paths and knobs that come from the operator's configuration, not from the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Root of FUSE mounts on every host (Fluid's `MOUNT_ROOT`, default `/runtime-mnt`).
    pub mount_root: String,
    /// Default worker image, `repository:tag`.
    pub worker_image: String,
    /// Default FUSE image, `repository:tag`.
    pub fuse_image: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            mount_root: crate::volume::DEFAULT_MOUNT_ROOT.to_string(),
            worker_image: juicefs::DEFAULT_IMAGE.to_string(),
            fuse_image: juicefs::DEFAULT_IMAGE.to_string(),
        }
    }
}

/// What every runtime kind exposes to the generic reconcile.
pub trait RuntimeResource: kube::Resource<DynamicType = ()> + Clone {
    /// The spec, hashed to decide whether the workloads built from it must be applied again.
    type Spec: serde::Serialize;
    /// The spec.
    fn spec(&self) -> &Self::Spec;
    /// Desired number of cache workers (`spec.replicas`, default 1... engines decide).
    fn replicas(&self) -> i32;
    /// The cache tiers, if any.
    fn tieredstore(&self) -> Option<&TieredStore>;
    /// The observed status, if any.
    fn runtime_status(&self) -> Option<&RuntimeStatus>;
    /// When FUSE pods go away.
    fn fuse_clean_policy(&self) -> FuseCleanPolicy;
    /// The user's extra FUSE node selector.
    fn fuse_node_selector(&self) -> BTreeMap<String, String>;
}

/// Everything an engine needs to build the objects of one dataset/runtime pair.
#[derive(Debug, Clone, Copy)]
pub struct EngineInput<'a, R> {
    /// The dataset.
    pub dataset: &'a Dataset,
    /// The runtime.
    pub runtime: &'a R,
    /// The dataset's label keys (the one source of every key).
    pub keys: &'a DatasetKeys,
    /// The names of the runtime's objects.
    pub names: &'a WorkloadNames,
    /// Operator configuration.
    pub config: &'a EngineConfig,
}

/// Cache capacity a worker brings to its node, split by medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeCapacity {
    /// Bytes of `MEM` tiers.
    pub memory_bytes: u64,
    /// Bytes of `SSD` and `HDD` tiers.
    pub disk_bytes: u64,
}

impl NodeCapacity {
    /// Both together.
    pub fn total_bytes(&self) -> u64 {
        self.memory_bytes.saturating_add(self.disk_bytes)
    }
}

/// A runtime kind.
pub trait Engine {
    /// The runtime resource this engine serves.
    type Runtime: RuntimeResource;

    /// The type segment in labels and paths, e.g. `juicefs`.
    fn runtime_type(&self) -> &'static str;
    /// The PV's `mount_type` attribute, e.g. `JuiceFS`.
    fn mount_type(&self) -> &'static str;
    /// The runtime's finalizer.
    fn finalizer(&self) -> &'static str;
    /// Checks the runtime against its dataset. Every problem is returned, each naming its field.
    fn validate(&self, input: &EngineInput<'_, Self::Runtime>) -> Result<(), Vec<ModelError>>;
    /// The host directory where the FUSE daemon mounts the dataset (the PV's `fluid_path`).
    fn fluid_path(&self, input: &EngineInput<'_, Self::Runtime>) -> String;
    /// A master StatefulSet, for engines that have one (JuiceFS has none).
    fn master(&self, input: &EngineInput<'_, Self::Runtime>) -> Result<Option<StatefulSet>, ModelError>;
    /// The cache worker StatefulSet.
    fn workers(&self, input: &EngineInput<'_, Self::Runtime>) -> Result<StatefulSet, ModelError>;
    /// The FUSE DaemonSet, gated by the node label `keys.fuse_label() = "true"`.
    fn fuse(&self, input: &EngineInput<'_, Self::Runtime>) -> Result<DaemonSet, ModelError>;
    /// Things that are allowed but probably not meant (e.g. a unitless quota of a few KiB),
    /// reported once as Warning events when the workers are first created.
    fn spec_warnings(&self, _input: &EngineInput<'_, Self::Runtime>) -> Vec<String> {
        Vec::new()
    }
    /// Cache capacity one worker brings to its node.
    fn node_capacity(&self, input: &EngineInput<'_, Self::Runtime>) -> Result<NodeCapacity, ModelError>;
}
