//! Types shared by Fluid's resources: tiered store, users, images, conditions and runtime status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::Quantity;

/// Cache medium of a tiered-store level.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub enum MediumType {
    /// Memory, typically `/dev/shm`.
    #[serde(rename = "MEM")]
    Memory,
    /// Solid-state disk.
    #[serde(rename = "SSD")]
    Ssd,
    /// Hard disk.
    #[serde(rename = "HDD")]
    Hdd,
}

impl MediumType {
    /// The spelling in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            MediumType::Memory => "MEM",
            MediumType::Ssd => "SSD",
            MediumType::Hdd => "HDD",
        }
    }
}

/// How a tiered-store level's directory is provided to the worker and FUSE pods.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum VolumeType {
    /// A host directory (the default).
    #[default]
    #[serde(rename = "hostPath")]
    HostPath,
    /// A pod-local emptyDir (memory-backed for `MEM`).
    #[serde(rename = "emptyDir")]
    EmptyDir,
    /// A volume claim template.
    #[serde(rename = "volumeTemplate")]
    VolumeTemplate,
}

/// One tier of the cache.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Level {
    /// Cache medium: `MEM`, `SSD` or `HDD`.
    #[serde(rename = "mediumtype")]
    pub medium_type: MediumType,
    /// How the directory is provided: `hostPath` (default), `emptyDir` or `volumeTemplate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<VolumeType>,
    /// A custom volume source for the level (kept verbatim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::api::common::preserve_unknown")]
    pub volume_source: Option<serde_json::Value>,
    /// Cache directories, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub path: Option<String>,
    /// Quota of the whole tier, split evenly over its paths (bytes unless a unit is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quantity>,
    /// One quota per path, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^((\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?)(,((\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?))*$"
    ))]
    pub quota_list: Option<String>,
    /// High watermark ratio, e.g. `"0.95"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0(\.[0-9]+)?|1(\.0+)?)$"))]
    pub high: Option<String>,
    /// Low watermark ratio, e.g. `"0.7"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0(\.[0-9]+)?|1(\.0+)?)$"))]
    pub low: Option<String>,
}

/// The cache tiers of a runtime.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct TieredStore {
    /// The tiers, fastest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<Level>,
}

/// A user and group to run as, or to own a dataset's files.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct User {
    /// User id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<i64>,
    /// Group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<i64>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// An image, its tag and its pull policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionSpec {
    /// Image repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,
}

/// Extra labels and annotations for generated pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct PodMetadata {
    /// Labels to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations to add.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// When the FUSE pod of a node is removed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum FuseCleanPolicy {
    /// Remove it as soon as no pod on the node uses the volume.
    OnDemand,
    /// Keep it until the runtime is deleted (the default).
    #[default]
    OnRuntimeDeleted,
    /// Fluid's upgrade policy: remove it when the FUSE DaemonSet changed. ferrofluid accepts it
    /// and keeps FUSE pods like `OnRuntimeDeleted`; FUSE pods are replaced by deleting them
    /// (the DaemonSet uses `OnDelete`).
    OnFuseChanged,
}

impl FuseCleanPolicy {
    /// The spelling in manifests and PV attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            FuseCleanPolicy::OnDemand => "OnDemand",
            FuseCleanPolicy::OnRuntimeDeleted => "OnRuntimeDeleted",
            FuseCleanPolicy::OnFuseChanged => "OnFuseChanged",
        }
    }

    /// Parses the PV attribute; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "OnDemand" => Some(FuseCleanPolicy::OnDemand),
            "OnRuntimeDeleted" | "" => Some(FuseCleanPolicy::OnRuntimeDeleted),
            "OnFuseChanged" => Some(FuseCleanPolicy::OnFuseChanged),
            _ => None,
        }
    }
}

/// Pod network of a component.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NetworkMode {
    /// The host's network.
    HostNetwork,
    /// The pod's own network.
    ContainerNetwork,
    /// Unset: the engine's default.
    #[serde(rename = "")]
    Default,
}

/// How long and how often to retry cleaning a worker's cache on teardown.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanCachePolicy {
    /// Seconds to wait for a cache clean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i32>,
    /// Attempts before giving up on a cache clean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry_attempts: Option<i32>,
}

/// Metadata synchronisation policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataSyncPolicy {
    /// Sync metadata automatically (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_sync: Option<bool>,
}

/// Runtime management knobs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeManagement {
    /// Cache cleaning on teardown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_cache_policy: Option<CleanCachePolicy>,
    /// Metadata sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_sync_policy: Option<MetadataSyncPolicy>,
}

/// A component's common knobs (worker, master, job worker).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    /// Replicas of this component, where the engine honours it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Container ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<k8s_openapi::api::core::v1::ContainerPort>,
    /// Resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Engine options (`juicefs` flags for JuiceFS).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Whether the component runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Extra node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Extra volume mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Extra pod labels and annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metadata: Option<PodMetadata>,
    /// Pod network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
}

/// Phase of a runtime component.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, PartialOrd, Ord, JsonSchema)]
pub enum RuntimePhase {
    /// Not started yet.
    #[default]
    #[serde(rename = "")]
    None,
    /// Started, nothing ready.
    NotReady,
    /// Some replicas ready (usable).
    PartialReady,
    /// All replicas ready.
    Ready,
}

impl RuntimePhase {
    /// The spelling in status.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimePhase::None => "",
            RuntimePhase::NotReady => "NotReady",
            RuntimePhase::PartialReady => "PartialReady",
            RuntimePhase::Ready => "Ready",
        }
    }
}

/// A runtime condition, as Fluid reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeCondition {
    /// `WorkersInitialized`, `WorkersReady`, `WorkersScaledIn`, `FusesReady`, ….
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
    /// When this was last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// Status shared by every runtime kind (Fluid's `RuntimeStatus`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStatus {
    /// Phase of the master (JuiceFS has none, so it mirrors the workers).
    #[serde(default)]
    pub master_phase: RuntimePhase,
    /// Why the master is in its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_reason: Option<String>,
    /// Phase of the workers.
    #[serde(default)]
    pub worker_phase: RuntimePhase,
    /// Why the workers are in their phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_reason: Option<String>,
    /// Phase of the FUSE clients.
    #[serde(default)]
    pub fuse_phase: RuntimePhase,
    /// Why the FUSE clients are in their phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuse_reason: Option<String>,
    /// Master replicas wanted.
    #[serde(default)]
    pub desired_master_number_scheduled: i32,
    /// Master replicas scheduled.
    #[serde(default)]
    pub current_master_number_scheduled: i32,
    /// Master replicas ready.
    #[serde(default)]
    pub master_number_ready: i32,
    /// Worker replicas wanted.
    #[serde(default)]
    pub desired_worker_number_scheduled: i32,
    /// Worker replicas scheduled.
    #[serde(default)]
    pub current_worker_number_scheduled: i32,
    /// Worker replicas ready.
    #[serde(default)]
    pub worker_number_ready: i32,
    /// Worker replicas available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_number_available: Option<i32>,
    /// Worker replicas unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_number_unavailable: Option<i32>,
    /// FUSE pods wanted.
    #[serde(default)]
    pub desired_fuse_number_scheduled: i32,
    /// FUSE pods scheduled.
    #[serde(default)]
    pub current_fuse_number_scheduled: i32,
    /// FUSE pods ready.
    #[serde(default)]
    pub fuse_number_ready: i32,
    /// FUSE pods available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuse_number_available: Option<i32>,
    /// FUSE pods unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuse_number_unavailable: Option<i32>,
    /// Conditions, one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RuntimeCondition>,
    /// Name of the values ConfigMap (Fluid compatibility; ferrofluid renders no Helm values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_file: Option<String>,
    /// How long setup took, set once when the runtime is first ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_duration: Option<String>,
    /// Cache figures: `cached`, `cacheCapacity`, `cachedPercentage`, ….
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cache_states: BTreeMap<String, String>,
    /// Label selector of the worker pods, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// When the mounts were last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_time: Option<Time>,
    /// Where workers may run, for cache-aware scheduling of clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_affinity: Option<k8s_openapi::api::core::v1::NodeAffinity>,
}

/// Schema for a field kept verbatim (structural-schema friendly).
pub fn preserve_unknown(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}
