//! The scenario file format. Unknown keys are errors; every error names the file, the line and
//! column, the field, and what is allowed.
//!
//! ```yaml
//! name: The seed article's JuiceFS flow runs end to end
//! description: …
//! seed: 7
//! cluster:
//!   nodes: 3                      # or a list: [{name, labels, capacity, taints}]
//!   capacity: {pods: 110, cpu: "8", memory: 32Gi}
//! timing: {pod_start: 2s, watch_latency: 50ms}
//! steps:
//!   - at: 0s
//!     apply: |                    # multi-document YAML, a list of manifests, or one manifest
//!       apiVersion: data.fluid.io/v1alpha1
//!       kind: Dataset
//!       …
//!   - expect: Dataset/default/jfsdemo status.phase == Bound
//!     within: 2m
//!   - run: until converged
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, PodSpec, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::effect::{Kind, ObjectRef};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::expect::Expectation;
use crate::apiserver::object::{kind_names, parse_kind};
use crate::apiserver::{Obj, Pod};
use crate::error::Error;

/// A parsed scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows, as a sentence.
    pub name: String,
    /// A longer explanation.
    #[serde(default)]
    pub description: String,
    /// The seed of the run (`--seed` overrides it).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The nodes.
    pub cluster: Cluster,
    /// Timing overrides.
    #[serde(default)]
    pub timing: Timing,
    /// Virtual time allowed to converge after the last step (default 30m).
    #[serde(default)]
    pub budget: Option<Duration>,
    /// The timeline.
    pub steps: Vec<Step>,
}

fn default_seed() -> u64 {
    1
}

/// A duration written with units: `0s`, `500ms`, `2m30s`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub u64);

/// Parses `2m30s`, `500ms`, `1h`, `0`.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(0);
    }
    let bad = || {
        format!("invalid duration `{text}`: write a number with units h, m, s or ms, like `90s`, `2m30s` or `500ms`")
    };
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else {
            return Err(bad());
        };
        total = total.saturating_add(number.saturating_mul(unit_ms));
        rest = &rest[len..];
    }
    Ok(total)
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with units, like `90s`, `2m30s` or `500ms`")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                parse_duration(text).map(Duration).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
                if n == 0 {
                    Ok(Duration(0))
                } else {
                    Err(E::custom(format!("invalid duration `{n}`: a duration needs units, like `{n}s` or `{n}ms`")))
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
                Err(E::custom(format!("invalid duration `{n}`: a duration needs units, like `{n}s` or `{n}ms`")))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Node resources.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Maximum pods.
    #[serde(default)]
    pub pods: Option<u32>,
    /// CPU, e.g. `"8"` or `"4000m"`.
    #[serde(default)]
    pub cpu: Option<String>,
    /// Memory, e.g. `32Gi`.
    #[serde(default)]
    pub memory: Option<String>,
}

/// A taint effect.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum TaintEffect {
    /// Pods without a toleration are not scheduled there.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Pods without a toleration are not scheduled and are evicted.
    NoExecute,
}

/// A node taint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaintSpec {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: Option<String>,
    /// Effect: `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: TaintEffect,
}

/// One listed node.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Name.
    pub name: String,
    /// Labels (`kubernetes.io/hostname` is added).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Resources (default: the cluster's).
    #[serde(default)]
    pub capacity: Option<Capacity>,
    /// Taints.
    #[serde(default)]
    pub taints: Vec<TaintSpec>,
}

/// Nodes by count (`node-1` … `node-N`) or listed.
#[derive(Debug, Clone, PartialEq)]
pub enum Nodes {
    /// This many identical nodes.
    Count(u32),
    /// These nodes.
    List(Vec<NodeSpec>),
}

impl<'de> Deserialize<'de> for Nodes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodesVisitor;
        impl<'de> Visitor<'de> for NodesVisitor {
            type Value = Nodes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node count (like `3`) or a list of nodes with `name`, `labels`, `capacity`, `taints`")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Nodes, E> {
                u32::try_from(n).map(Nodes::Count).map_err(|_| E::custom(format!("{n} nodes is too many")))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Nodes, A::Error> {
                let mut out = Vec::new();
                while let Some(node) = seq.next_element::<NodeSpec>()? {
                    out.push(node);
                }
                Ok(Nodes::List(out))
            }
        }
        deserializer.deserialize_any(NodesVisitor)
    }
}

/// The cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The nodes.
    pub nodes: Nodes,
    /// Default resources of every node.
    #[serde(default)]
    pub capacity: Option<Capacity>,
    /// Labels added to every counted node.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Size of each dataset's remote data, e.g. `2Gi` (default 1Gi).
    #[serde(default)]
    pub ufs_size: Option<String>,
}

/// One node of the cluster section as both clusters build it: counted nodes carry the
/// cluster's labels, listed ones their own; a node without capacity gets the cluster's.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedNode {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Resources.
    pub capacity: Capacity,
    /// Taints, as the Node spec holds them.
    pub taints: Vec<k8s_openapi::api::core::v1::Taint>,
}

impl Cluster {
    /// The nodes, resolved.
    pub fn resolved_nodes(&self) -> Vec<ResolvedNode> {
        let default_capacity = self.capacity.clone().unwrap_or_default();
        match &self.nodes {
            Nodes::Count(n) => (1..=*n)
                .map(|i| ResolvedNode {
                    name: format!("node-{i}"),
                    labels: self.labels.clone(),
                    capacity: default_capacity.clone(),
                    taints: Vec::new(),
                })
                .collect(),
            Nodes::List(list) => list
                .iter()
                .map(|spec| ResolvedNode {
                    name: spec.name.clone(),
                    labels: spec.labels.clone(),
                    capacity: spec.capacity.clone().unwrap_or_else(|| default_capacity.clone()),
                    taints: spec
                        .taints
                        .iter()
                        .map(|t| k8s_openapi::api::core::v1::Taint {
                            key: t.key.clone(),
                            value: t.value.clone(),
                            effect: format!("{:?}", t.effect),
                            time_added: None,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// Timing overrides (all optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Built-in controllers' reaction time.
    pub kube_latency: Option<Duration>,
    /// Watch notification latency to ferrofluid's controller.
    pub watch_latency: Option<Duration>,
    /// Container start time.
    pub pod_start: Option<Duration>,
    /// Graceful termination time.
    pub pod_stop: Option<Duration>,
    /// FUSE mount time after the FUSE container starts.
    pub fuse_mount: Option<Duration>,
    /// Kubelet retry of a waiting NodePublish.
    pub publish_retry: Option<Duration>,
    /// Container restart delay after a crash.
    pub restart_delay: Option<Duration>,
    /// Controller restart time.
    pub controller_restart: Option<Duration>,
    /// CSI plugin restart time.
    pub csi_restart: Option<Duration>,
    /// A silent node turns NotReady after this long.
    pub node_monitor_grace: Option<Duration>,
    /// Pods on a NotReady node are evicted after this long.
    pub pod_eviction_timeout: Option<Duration>,
    /// CSI mount-recovery period (`0s` turns recovery off, as the plugin's `--recover-period-ms 0`).
    pub recover_period: Option<Duration>,
    /// The model's periodic resync.
    pub resync: Option<Duration>,
    /// The model's polite retry.
    pub retry: Option<Duration>,
}

/// Manifests to apply, decoded at load time.
#[derive(Debug, Clone)]
pub struct Manifests(pub Vec<Obj>);

fn yaml_to_objects(value: serde_yaml_ng::Value, what: &str) -> Result<Vec<Obj>, String> {
    match value {
        serde_yaml_ng::Value::String(text) => {
            let mut out = Vec::new();
            for (index, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
                let value = serde_yaml_ng::Value::deserialize(document).map_err(|error| {
                    let at = error
                        .location()
                        .map(|l| format!(" (line {} column {} of the manifest text)", l.line(), l.column()))
                        .unwrap_or_default();
                    format!("{what}: document {}: {error}{at}", index + 1)
                })?;
                if value.is_null() {
                    continue;
                }
                let json = serde_json::to_value(&value).map_err(|e| format!("{what}: document {}: {e}", index + 1))?;
                out.push(Obj::from_manifest(json).map_err(|e| format!("{what}: document {}: {e}", index + 1))?);
            }
            Ok(out)
        }
        serde_yaml_ng::Value::Sequence(items) => {
            let mut out = Vec::new();
            for (index, item) in items.into_iter().enumerate() {
                let json = serde_json::to_value(&item).map_err(|e| format!("{what}[{index}]: {e}"))?;
                out.push(Obj::from_manifest(json).map_err(|e| format!("{what}[{index}]: {e}"))?);
            }
            Ok(out)
        }
        mapping @ serde_yaml_ng::Value::Mapping(_) => {
            let json = serde_json::to_value(&mapping).map_err(|e| format!("{what}: {e}"))?;
            Ok(vec![Obj::from_manifest(json).map_err(|e| format!("{what}: {e}"))?])
        }
        _ => Err(format!("{what}: expected manifests as YAML text, a list of manifests, or one manifest")),
    }
}

impl<'de> Deserialize<'de> for Manifests {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_yaml_ng::Value::deserialize(deserializer)?;
        yaml_to_objects(value, "apply").map(Manifests).map_err(de::Error::custom)
    }
}

/// `Kind/namespace/name` or `Kind/name` (namespace `default`, or none for nodes and PVs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference(pub ObjectRef);

/// Parses an object reference.
pub fn parse_reference(text: &str) -> Result<ObjectRef, String> {
    let parts: Vec<&str> = text.trim().split('/').collect();
    let kind = parse_kind(parts[0])
        .ok_or_else(|| format!("`{text}`: unknown kind `{}`; allowed kinds: {}", parts[0], kind_names()))?;
    let (namespace, name) = match (kind.is_cluster_scoped(), parts.as_slice()) {
        (true, [_, name]) => ("", *name),
        (false, [_, name]) => ("default", *name),
        (false, [_, ns, name]) => (*ns, *name),
        _ => {
            return Err(format!(
                "`{text}`: write `Kind/namespace/name` or `Kind/name` (cluster-scoped kinds: `Node/name`, `PersistentVolume/name`)"
            ));
        }
    };
    if name.is_empty() {
        return Err(format!("`{text}`: the name is empty"));
    }
    Ok(if kind.is_cluster_scoped() {
        ObjectRef::cluster(kind, name)
    } else {
        ObjectRef::namespaced(kind, namespace, name)
    })
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_reference(&text).map(Reference).map_err(de::Error::custom)
    }
}

/// `namespace/name` of a pod or runtime (namespace `default` when omitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacedName(pub String, pub String);

impl<'de> Deserialize<'de> for NamespacedName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.split('/').collect::<Vec<_>>().as_slice() {
            [name] if !name.is_empty() => Ok(NamespacedName("default".to_string(), name.to_string())),
            [ns, name] if !ns.is_empty() && !name.is_empty() => Ok(NamespacedName(ns.to_string(), name.to_string())),
            _ => Err(de::Error::custom(format!("`{text}`: write `namespace/name` or `name`"))),
        }
    }
}

/// A pod that uses a PVC (shorthand for a Pod manifest).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodStep {
    /// Pod name.
    pub name: String,
    /// Namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The PVC it mounts at `/data`.
    pub claim: String,
    /// Node selector.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Pin to a node (sets `spec.nodeName`, bypassing the scheduler).
    #[serde(default)]
    pub node: Option<String>,
    /// Mount the claim read-only.
    #[serde(default)]
    pub read_only: bool,
}

fn default_namespace() -> String {
    "default".to_string()
}

impl PodStep {
    /// The pod manifest.
    pub fn to_pod(&self) -> Obj {
        let pod = k8s_openapi::api::core::v1::Pod {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".to_string(),
                    image: Some("nginx".to_string()),
                    volume_mounts: Some(vec![VolumeMount {
                        name: "data".to_string(),
                        mount_path: "/data".to_string(),
                        ..Default::default()
                    }]),
                    resources: Some(ResourceRequirements::default()),
                    ..Default::default()
                }],
                volumes: Some(vec![Volume {
                    name: "data".to_string(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: self.claim.clone(),
                        read_only: self.read_only.then_some(true),
                    }),
                    ..Default::default()
                }]),
                node_selector: (!self.node_selector.is_empty()).then(|| self.node_selector.clone()),
                node_name: self.node.clone(),
                ..Default::default()
            }),
            status: None,
        };
        Obj::Pod(Arc::new(Pod::from(pod)))
    }
}

/// Scale a runtime's workers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleStep {
    /// The runtime, `namespace/name`.
    pub runtime: NamespacedName,
    /// New `spec.replicas`.
    pub replicas: i32,
}

/// Put a taint on a node, as `kubectl taint nodes <node> <key>=<value>:<effect>` (an SRE marking
/// a dead node `node.kubernetes.io/out-of-service`, say). A taint of the same key and effect is
/// replaced.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaintStep {
    /// The node.
    pub node: String,
    /// The taint's key.
    pub key: String,
    /// Its value.
    #[serde(default)]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: TaintEffect,
}

/// Remove a node's taints of one key, as `kubectl taint nodes <node> <key>-`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UntaintStep {
    /// The node.
    pub node: String,
    /// The taint key to remove.
    pub key: String,
}

/// How far to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSpec {
    /// Until nothing is pending and a reconcile of every pair writes nothing.
    Converged,
    /// Until this virtual time.
    Until(u64),
    /// For this long.
    For(u64),
}

impl<'de> Deserialize<'de> for RunSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let allowed = "allowed: `until converged`, `until <time>` (like `until 5m`), `for <duration>` (like `for 30s`)";
        match words.as_slice() {
            ["until", "converged"] | ["converged"] => Ok(RunSpec::Converged),
            ["until", time] => {
                parse_duration(time).map(RunSpec::Until).map_err(|e| de::Error::custom(format!("run: {e}; {allowed}")))
            }
            ["for", time] => {
                parse_duration(time).map(RunSpec::For).map_err(|e| de::Error::custom(format!("run: {e}; {allowed}")))
            }
            _ => Err(de::Error::custom(format!("run: `{text}` is not a run instruction; {allowed}"))),
        }
    }
}

/// One or several expectations.
#[derive(Debug, Clone)]
pub struct Expectations(pub Vec<Expectation>);

impl<'de> Deserialize<'de> for Expectations {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_yaml_ng::Value::deserialize(deserializer)?;
        let texts: Vec<String> = match value {
            serde_yaml_ng::Value::String(text) => vec![text],
            serde_yaml_ng::Value::Sequence(items) => items
                .into_iter()
                .map(|item| match item {
                    serde_yaml_ng::Value::String(text) => Ok(text),
                    _ => Err(de::Error::custom(
                        "expect: each expectation is a string like `Dataset/default/demo status.phase == Bound`",
                    )),
                })
                .collect::<Result<_, D::Error>>()?,
            _ => {
                return Err(de::Error::custom(
                    "expect: write a string like `Dataset/default/demo status.phase == Bound`, or a list of them",
                ));
            }
        };
        texts
            .iter()
            .map(|t| Expectation::parse(t).map_err(de::Error::custom))
            .collect::<Result<_, _>>()
            .map(Expectations)
    }
}

/// A fault-rate value between 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub f64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rate = f64::deserialize(deserializer)?;
        if (0.0..=1.0).contains(&rate) {
            Ok(Rate(rate))
        } else {
            Err(de::Error::custom(format!("conflict_rate: {rate} is not a probability between 0 and 1")))
        }
    }
}

/// The keys a step may have.
pub const STEP_ACTIONS: &[&str] = &[
    "apply",
    "delete",
    "pod",
    "scale",
    "taint",
    "untaint",
    "expect",
    "run",
    "node_down",
    "node_up",
    "pod_crash",
    "controller_restart",
    "conflict_rate",
    "stale_reads",
    "slow_watches",
    "fuse_crash",
    "csi_restart",
];

/// Where the fault steps begin in [`STEP_ACTIONS`].
const FIRST_FAULT_STEP: usize = 8;

/// The step names that inject a fault, `node_down` to `csi_restart`.
pub const FAULT_STEP_ACTIONS: &[&str] = STEP_ACTIONS.split_at(FIRST_FAULT_STEP).1;

/// A step as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: Option<Duration>,
    within: Option<Duration>,
    note: Option<String>,
    apply: Option<Manifests>,
    delete: Option<Reference>,
    pod: Option<PodStep>,
    scale: Option<ScaleStep>,
    taint: Option<TaintStep>,
    untaint: Option<UntaintStep>,
    expect: Option<Expectations>,
    run: Option<RunSpec>,
    node_down: Option<String>,
    node_up: Option<String>,
    pod_crash: Option<NamespacedName>,
    controller_restart: Option<bool>,
    conflict_rate: Option<Rate>,
    stale_reads: Option<Duration>,
    slow_watches: Option<Duration>,
    fuse_crash: Option<String>,
    csi_restart: Option<String>,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Create or update objects (server-side apply, as `kubectl apply --server-side`).
    Apply(Vec<Obj>),
    /// Delete an object.
    Delete(ObjectRef),
    /// Create a pod that uses a PVC.
    Pod(PodStep),
    /// Set a runtime's replicas.
    Scale(ScaleStep),
    /// Taint a node.
    Taint(TaintStep),
    /// Remove a node's taints of one key.
    Untaint(UntaintStep),
    /// Check expectations (now, or `within` a duration).
    Expect(Vec<Expectation>),
    /// Run the clock.
    Run(RunSpec),
    /// Inject a fault.
    Fault(crate::faults::Fault),
}

/// One step of the timeline.
#[derive(Debug, Clone)]
pub struct Step {
    /// When (absolute virtual time); None: right after the previous step.
    pub at_ms: Option<u64>,
    /// For expectations: how long they may take to hold.
    pub within_ms: Option<u64>,
    /// A note for the trace.
    pub note: Option<String>,
    /// What it does.
    pub action: Action,
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use crate::faults::Fault;
        let raw = RawStep::deserialize(deserializer)?;
        let mut actions = Vec::new();
        if let Some(m) = raw.apply {
            actions.push(Action::Apply(m.0));
        }
        if let Some(r) = raw.delete {
            actions.push(Action::Delete(r.0));
        }
        if let Some(p) = raw.pod {
            actions.push(Action::Pod(p));
        }
        if let Some(s) = raw.scale {
            actions.push(Action::Scale(s));
        }
        if let Some(t) = raw.taint {
            actions.push(Action::Taint(t));
        }
        if let Some(u) = raw.untaint {
            actions.push(Action::Untaint(u));
        }
        if let Some(e) = raw.expect {
            actions.push(Action::Expect(e.0));
        }
        if let Some(r) = raw.run {
            actions.push(Action::Run(r));
        }
        if let Some(n) = raw.node_down {
            actions.push(Action::Fault(Fault::NodeDown(n)));
        }
        if let Some(n) = raw.node_up {
            actions.push(Action::Fault(Fault::NodeUp(n)));
        }
        if let Some(NamespacedName(ns, name)) = raw.pod_crash {
            actions.push(Action::Fault(Fault::PodCrash(ObjectRef::namespaced(Kind::Pod, &ns, &name))));
        }
        if let Some(restart) = raw.controller_restart {
            if !restart {
                return Err(de::Error::custom(
                    "controller_restart: write `controller_restart: true` (false does nothing)",
                ));
            }
            actions.push(Action::Fault(Fault::ControllerRestart));
        }
        if let Some(Rate(rate)) = raw.conflict_rate {
            actions.push(Action::Fault(Fault::ConflictRate(rate)));
        }
        if let Some(Duration(lag)) = raw.stale_reads {
            actions.push(Action::Fault(Fault::StaleReads(lag)));
        }
        if let Some(Duration(latency)) = raw.slow_watches {
            actions.push(Action::Fault(Fault::SlowWatches(latency)));
        }
        if let Some(n) = raw.fuse_crash {
            actions.push(Action::Fault(Fault::FuseCrash(n)));
        }
        if let Some(n) = raw.csi_restart {
            actions.push(Action::Fault(Fault::CsiRestart(n)));
        }
        if actions.len() != 1 {
            return Err(de::Error::custom(format!(
                "a step does exactly one thing: give one of {} (besides `at`, `within` and `note`); this step gives {}",
                STEP_ACTIONS.iter().map(|a| format!("`{a}`")).collect::<Vec<_>>().join(", "),
                actions.len()
            )));
        }
        let action = actions.remove(0);
        if raw.within.is_some() && !matches!(action, Action::Expect(_)) {
            return Err(de::Error::custom("`within` only goes with `expect`"));
        }
        Ok(Step { at_ms: raw.at.map(|d| d.0), within_ms: raw.within.map(|d| d.0), note: raw.note, action })
    }
}

/// Parses scenario text; `path` names it in errors.
pub fn parse_str(text: &str, path: &str) -> Result<Scenario, Error> {
    let scenario: Scenario = serde_yaml_ng::from_str(text).map_err(|error| {
        let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        Error::Scenario { path: path.to_string(), line, column, message: error.to_string() }
    })?;
    let mut last = 0;
    for (index, step) in scenario.steps.iter().enumerate() {
        if let Some(at) = step.at_ms {
            if at < last {
                return Err(Error::Scenario {
                    path: path.to_string(),
                    line: 0,
                    column: 0,
                    message: format!(
                        "steps[{index}]: `at: {}` is earlier than the step before it ({}); steps run in time order",
                        crate::clock::format_duration(at),
                        crate::clock::format_duration(last)
                    ),
                });
            }
            last = at;
        }
    }
    check_node_references(&scenario, path)?;
    if scenario.name.trim().is_empty() {
        return Err(Error::Scenario {
            path: path.to_string(),
            line: 1,
            column: 1,
            message: "name: say what the scenario shows, as a sentence".to_string(),
        });
    }
    Ok(scenario)
}

impl Nodes {
    /// The node names the cluster will have, in order (`node-1` … for a count).
    pub fn names(&self) -> Vec<String> {
        match self {
            Nodes::Count(count) => (1..=*count).map(|i| format!("node-{i}")).collect(),
            Nodes::List(nodes) => nodes.iter().map(|node| node.name.clone()).collect(),
        }
    }
}

/// A fault or taint that names a node the cluster does not have would silently test nothing:
/// refuse it, listing the nodes there are (the cluster's, and those applied by an earlier step).
fn check_node_references(scenario: &Scenario, path: &str) -> Result<(), Error> {
    let mut names = scenario.cluster.nodes.names();
    for (index, step) in scenario.steps.iter().enumerate() {
        let (field, node) = match &step.action {
            Action::Apply(objects) => {
                let applied = objects.iter().map(|o| o.object_ref()).filter(|key| key.kind == Kind::Node);
                names.extend(applied.map(|key| key.name.to_string()));
                continue;
            }
            Action::Fault(crate::faults::Fault::NodeDown(node)) => ("node_down", node),
            Action::Fault(crate::faults::Fault::NodeUp(node)) => ("node_up", node),
            Action::Fault(crate::faults::Fault::FuseCrash(node)) => ("fuse_crash", node),
            Action::Fault(crate::faults::Fault::CsiRestart(node)) => ("csi_restart", node),
            Action::Taint(TaintStep { node, .. }) => ("taint.node", node),
            Action::Untaint(UntaintStep { node, .. }) => ("untaint.node", node),
            _ => continue,
        };
        if !names.contains(node) {
            let shown: Vec<String> = names.iter().take(8).cloned().collect();
            let more = if names.len() > shown.len() { ", …" } else { "" };
            return Err(Error::Scenario {
                path: path.to_string(),
                line: 0,
                column: 0,
                message: format!(
                    "steps[{index}].{field}: no node `{node}` in the cluster; its nodes are {}{more}",
                    shown.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// Reads and parses a scenario file.
pub fn load(path: &Path) -> Result<Scenario, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse_str(&text, &path.display().to_string())
}
