//! The `JuiceFSRuntime` resource: a small JuiceFS cache cluster for one dataset.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, ResourceRequirements, Volume, VolumeMount};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    ComponentSpec, FuseCleanPolicy, NetworkMode, PodMetadata, RuntimeManagement, RuntimeStatus, TieredStore, User,
    VersionSpec,
};

/// A JuiceFS cache cluster: worker replicas, cache tiers, and the FUSE client.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "data.fluid.io",
    version = "v1alpha1",
    kind = "JuiceFSRuntime",
    namespaced,
    status = "RuntimeStatus",
    derive = "PartialEq",
    shortname = "juicefs",
    category = "fluid",
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.currentWorkerNumberScheduled","labelSelectorPath":".status.selector"}"#,
    printcolumn = r#"{"name":"Ready Workers","type":"integer","priority":10,"jsonPath":".status.workerNumberReady"}"#,
    printcolumn = r#"{"name":"Desired Workers","type":"integer","priority":10,"jsonPath":".status.desiredWorkerNumberScheduled"}"#,
    printcolumn = r#"{"name":"Worker Phase","type":"string","jsonPath":".status.workerPhase"}"#,
    printcolumn = r#"{"name":"Ready Fuses","type":"integer","priority":10,"jsonPath":".status.fuseNumberReady"}"#,
    printcolumn = r#"{"name":"Desired Fuses","type":"integer","priority":10,"jsonPath":".status.desiredFuseNumberScheduled"}"#,
    printcolumn = r#"{"name":"Fuse Phase","type":"string","jsonPath":".status.fusePhase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct JuiceFSRuntimeSpec {
    /// Image of the workers (and of the FUSE client unless `fuse.image` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub juicefs_version: Option<VersionSpec>,
    /// The image that creates users in the containers (Fluid's `InitUsersSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_users: Option<InitUsersSpec>,
    /// Master (JuiceFS has none; kept for compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<ComponentSpec>,
    /// Cache workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<ComponentSpec>,
    /// Job workers (kept for compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_worker: Option<ComponentSpec>,
    /// The FUSE client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuse: Option<JuiceFSFuseSpec>,
    /// Cache tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tieredstore: Option<TieredStore>,
    /// Extra configuration files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<Vec<String>>,
    /// Number of cache workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// User to run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<User>,
    /// Do not expose Prometheus metrics.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_prometheus: bool,
    /// Extra volumes for worker and FUSE pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Extra labels and annotations for all pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metadata: Option<PodMetadata>,
    /// Pull secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Cache cleaning and metadata sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management: Option<RuntimeManagement>,
}

/// The init container that creates users for the runtime (Fluid's `InitUsersSpec`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitUsersSpec {
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
    /// Environment variables, name to value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The JuiceFS FUSE client.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JuiceFSFuseSpec {
    /// FUSE image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// FUSE image tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// `juicefs mount` options, e.g. `attr-cache: "7200"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Extra node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// When FUSE pods go away: `OnRuntimeDeleted` (default) or `OnDemand`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_policy: Option<FuseCleanPolicy>,
    /// Extra volume mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Extra pod labels and annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_metadata: Option<PodMetadata>,
    /// Pod network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    /// Pull secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}
