//! The `Dataset` resource: where the data lives, and its binding status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::User;

/// Where the data lives. Paired 1:1 with a runtime of the same namespace and name.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "data.fluid.io",
    version = "v1alpha1",
    kind = "Dataset",
    namespaced,
    status = "DatasetStatus",
    derive = "PartialEq",
    shortname = "dataset",
    category = "fluid",
    printcolumn = r#"{"name":"Ufs Total Size","type":"string","jsonPath":".status.ufsTotal"}"#,
    printcolumn = r#"{"name":"Cached","type":"string","jsonPath":".status.cacheStates.cached"}"#,
    printcolumn = r#"{"name":"Cache Capacity","type":"string","jsonPath":".status.cacheStates.cacheCapacity"}"#,
    printcolumn = r#"{"name":"Cached Percentage","type":"string","jsonPath":".status.cacheStates.cachedPercentage"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"HCFS URL","type":"string","jsonPath":".status.hcfs.endpoint","priority":10}"#,
    printcolumn = r#"{"name":"Total Files","type":"string","jsonPath":".status.fileNum","priority":11}"#,
    printcolumn = r#"{"name":"Cache Hit Ratio","type":"string","jsonPath":".status.cacheStates.cacheHitRatio","priority":10}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DatasetSpec {
    /// The remote locations that make up the dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Owner of the dataset's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<User>,
    /// Nodes where the cache may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<CacheableNodeAffinity>,
    /// Tolerations for the cache workers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Access modes of the PV and PVC, e.g. `ReadOnlyMany` (the default) or `ReadWriteMany`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = { "type": "string", "enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"] }))]
    pub access_modes: Vec<String>,
    /// Runtimes bound to the dataset (informational).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<RuntimeRef>,
    /// `Exclusive` (default): one dataset's cache per node; `Shared`: datasets share nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Where to restore metadata from a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_restore_location: Option<DataRestoreLocation>,
    /// Options applied to every mount.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shared_options: BTreeMap<String, String>,
    /// Secret-backed options applied to every mount.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_encrypt_options: Vec<EncryptOption>,
}

/// One remote location.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// The location: `juicefs:///demo`, `s3://bucket/path`, `pvc://claim/sub`, ….
    #[schemars(length(min = 5))]
    pub mount_point: String,
    /// Engine options for this mount.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Name of the mount (the JuiceFS volume name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Path of the mount inside the dataset (default `/<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Shared between users.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// Options whose values come from Secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypt_options: Vec<EncryptOption>,
}

/// An option whose value is read from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptOption {
    /// Option name, e.g. `metaurl`, `access-key`.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Where the value comes from.
    #[serde(default)]
    pub value_from: EncryptOptionSource,
}

/// Source of an [`EncryptOption`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptOptionSource {
    /// A key of a Secret in the dataset's namespace.
    #[serde(default)]
    pub secret_key_ref: SecretKeySelector,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct SecretKeySelector {
    /// Secret name.
    #[serde(default)]
    pub name: String,
    /// Key inside the Secret.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// Required node affinity of the cache.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct CacheableNodeAffinity {
    /// Copied verbatim into the workers' required node affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<NodeSelector>,
}

/// A runtime bound to the dataset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeRef {
    /// Runtime name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Runtime namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// `Accelerate`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub category: String,
    /// Runtime type, e.g. `juicefs`.
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
    /// Master replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_replicas: Option<i32>,
}

/// Dataset placement mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Placement {
    /// One dataset's cache per node (the default).
    Exclusive,
    /// Several datasets may cache on one node.
    Shared,
    /// Unset, treated as exclusive.
    #[serde(rename = "")]
    Unset,
}

impl Placement {
    /// True unless the placement is `Shared`.
    pub fn is_exclusive(placement: Option<Placement>) -> bool {
        !matches!(placement, Some(Placement::Shared))
    }
}

/// Where to restore metadata from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataRestoreLocation {
    /// `local://…` or `pvc://<pvc>/…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Node holding a `local://` backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

/// Dataset phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, PartialOrd, Ord, JsonSchema)]
pub enum DatasetPhase {
    /// Just created.
    #[default]
    #[serde(rename = "")]
    None,
    /// No runtime bound.
    NotBound,
    /// Bound to a ready runtime.
    Bound,
    /// The bound runtime is unhealthy.
    Failed,
    /// Waiting.
    Pending,
    /// Mounts are changing.
    Updating,
    /// A data migration runs.
    DataMigrating,
}

impl DatasetPhase {
    /// The spelling in status.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetPhase::None => "",
            DatasetPhase::NotBound => "NotBound",
            DatasetPhase::Bound => "Bound",
            DatasetPhase::Failed => "Failed",
            DatasetPhase::Pending => "Pending",
            DatasetPhase::Updating => "Updating",
            DatasetPhase::DataMigrating => "DataMigrating",
        }
    }
}

/// A dataset condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetCondition {
    /// `Ready`, `NotReady`, `RuntimeScheduled`, `Initialized`, `Updating`, `UpdateReady`, or
    /// ferrofluid's `DeletionBlocked`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A one-word reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A message a person can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the condition was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// HDFS-compatible endpoint (Alluxio).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HcfsStatus {
    /// Endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Version of the underlying filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlayer_file_system_version: Option<String>,
}

/// Observed state of a dataset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetStatus {
    /// `NotBound`, `Bound`, `Failed`, ….
    #[serde(default)]
    pub phase: DatasetPhase,
    /// Conditions, one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<DatasetCondition>,
    /// Cache figures copied from the runtime.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cache_states: BTreeMap<String, String>,
    /// Total size of the remote data, human-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ufs_total: Option<String>,
    /// Number of files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_num: Option<String>,
    /// Mounts as they were when bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// The binding record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runtimes: Vec<RuntimeRef>,
    /// HDFS-compatible endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hcfs: Option<HcfsStatus>,
    /// Running data operations by type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub operation_ref: BTreeMap<String, String>,
    /// Reference datasets that mount this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dataset_ref: Vec<String>,
}
