//! Tests of both reconcilers over a tiny in-memory world that applies their effects.

mod dataset_flow;
mod deletion;
mod idempotence;
mod setup_flow;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSetStatus, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    Node, PersistentVolumeClaimVolumeSource, Pod, PodCondition, PodSpec, PodStatus, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Config, reconcile_dataset, reconcile_runtime};
use crate::api::{Dataset, DatasetSpec, JuiceFSRuntime, JuiceFSRuntimeSpec, Level, MediumType, Mount, TieredStore};
use crate::effect::{Decision, Effect, Kind, Object, Status};
use crate::engine::juicefs::JuiceFsEngine;
use crate::labels::DatasetKeys;
use crate::observed::{Observed, PodView, pod_uses_claim, relevant_nodes};
use crate::quantity::Quantity;
use crate::time::Millis;

const NS: &str = "default";
const NAME: &str = "jfsdemo";
const DATASET_UID: &str = "0b8f4f1e-1c5a-4f0e-9d55-6c1f0f3b2a10";
const RUNTIME_UID: &str = "7c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5";
const T0: Millis = Millis(1_700_000_000_000);

fn meta(name: &str, uid: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(NS.to_string()),
        uid: Some(uid.to_string()),
        resource_version: Some("1".to_string()),
        creation_timestamp: Some(T0.to_time()),
        ..ObjectMeta::default()
    }
}

/// The seed article's Dataset.
fn seed_dataset(name: &str) -> Dataset {
    let spec = DatasetSpec {
        mounts: vec![Mount {
            name: "test".to_string(),
            mount_point: "juicefs:///demo".to_string(),
            options: BTreeMap::from([("bucket".to_string(), "<bucket>".to_string())]),
            ..Mount::default()
        }],
        ..DatasetSpec::default()
    };
    Dataset { metadata: meta(name, DATASET_UID), spec, status: None }
}

/// The seed article's JuiceFSRuntime.
fn seed_runtime(name: &str, replicas: i32) -> JuiceFSRuntime {
    let level = Level {
        medium_type: MediumType::Memory,
        volume_type: None,
        volume_source: None,
        path: Some("/dev/shm".to_string()),
        quota: Some(Quantity::from("40960Mi")),
        quota_list: None,
        high: None,
        low: None,
    };
    let spec = JuiceFSRuntimeSpec {
        replicas: Some(replicas),
        tieredstore: Some(TieredStore { levels: vec![level] }),
        ..JuiceFSRuntimeSpec::default()
    };
    JuiceFSRuntime { metadata: meta(name, RUNTIME_UID), spec, status: None }
}

fn node(name: &str) -> Node {
    Node { metadata: ObjectMeta { name: Some(name.to_string()), ..ObjectMeta::default() }, ..Node::default() }
}

fn app_pod(name: &str, node_name: &str, claim: &str, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta { name: Some(name.to_string()), namespace: Some(NS.to_string()), ..ObjectMeta::default() },
        spec: Some(PodSpec {
            node_name: Some(node_name.to_string()),
            volumes: Some(vec![Volume {
                name: "data".to_string(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.to_string(),
                    read_only: None,
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }),
        status: Some(PodStatus { phase: Some(phase.to_string()), ..PodStatus::default() }),
    }
}

/// A small cluster: one dataset/runtime pair, its workloads, pods and nodes, and a clock.
/// `apply` plays the apiserver and the workload controllers just enough to close the loop.
#[derive(Debug, Clone)]
struct World {
    observed: Observed,
    /// Common labels of datasets other than ours, as if they existed in the cluster.
    other_datasets: std::collections::BTreeSet<String>,
    pods: Vec<Pod>,
    all_nodes: Vec<std::sync::Arc<Node>>,
    now: Millis,
    config: Config,
    next_version: u64,
}

impl World {
    fn new(dataset: Option<Dataset>, runtime: Option<JuiceFSRuntime>) -> Self {
        let mut observed = Observed::empty(NS, NAME);
        observed.dataset = dataset.map(std::sync::Arc::new);
        observed.runtime = runtime.map(std::sync::Arc::new);
        let all_nodes = ["node-a", "node-b", "node-c"].into_iter().map(|n| std::sync::Arc::new(node(n))).collect();
        let mut world = Self {
            observed,
            other_datasets: Default::default(),
            pods: Vec::new(),
            all_nodes,
            now: T0,
            config: Config::default(),
            next_version: 2,
        };
        world.refresh();
        world
    }

    fn seed() -> Self {
        Self::new(Some(seed_dataset(NAME)), Some(seed_runtime(NAME, 1)))
    }

    fn keys(&self) -> DatasetKeys {
        let dataset = self.observed.dataset.as_deref().expect("dataset");
        DatasetKeys::new(NS, &self.observed.name, dataset.metadata.uid.as_deref()).expect("keys")
    }

    fn reconcile_dataset(&self) -> Decision {
        reconcile_dataset(&self.observed, &self.config, self.now)
    }

    fn reconcile_runtime(&self) -> Decision {
        reconcile_runtime(&JuiceFsEngine, &self.observed, &self.config, self.now)
    }

    /// Rebuilds the derived parts of the view, as a driver would from its stores.
    fn refresh(&mut self) {
        let claim = self.observed.name.clone();
        self.observed.claim_users =
            self.pods.iter().filter(|p| pod_uses_claim(p, &claim)).map(PodView::from_pod).collect();
        self.observed.cluster_common_labels = std::sync::Arc::new(
            self.observed
                .dataset
                .as_ref()
                .and_then(|d| DatasetKeys::new(NS, &self.observed.name, d.metadata.uid.as_deref()).ok())
                .map(|k| k.common_label())
                .into_iter()
                .chain(self.other_datasets.iter().cloned())
                .collect(),
        );
        let keys =
            self.observed.dataset.as_deref().and_then(|d| DatasetKeys::new(NS, &claim, d.metadata.uid.as_deref()).ok());
        let label_keys = keys.map(|k| self.observed.node_label_keys(&k, "juicefs")).unwrap_or_default();
        self.observed.nodes = relevant_nodes(&label_keys, &self.observed.worker_pods, &self.all_nodes);
    }

    fn bump(&mut self) -> Option<String> {
        self.next_version += 1;
        Some(self.next_version.to_string())
    }

    /// Applies effects in order, like an apiserver would (no conflicts).
    fn apply(&mut self, decision: &Decision) {
        for effect in &decision.effects {
            self.apply_one(effect);
        }
        self.refresh();
    }

    fn apply_one(&mut self, effect: &Effect) {
        let version = self.bump();
        let observed = &mut self.observed;
        match effect {
            Effect::Apply(Object::StatefulSet(sts)) => {
                let status = observed.workers.as_deref().and_then(|w| w.status.clone());
                let mut sts = (**sts).clone();
                sts.status = status.or_else(|| Some(StatefulSetStatus::default()));
                sts.metadata.resource_version = version;
                observed.workers = Some(std::sync::Arc::new(sts));
            }
            Effect::Apply(Object::DaemonSet(ds)) => {
                let status = observed.fuse.as_deref().and_then(|f| f.status.clone());
                let mut ds = (**ds).clone();
                ds.status = status.or_else(|| Some(DaemonSetStatus::default()));
                ds.metadata.resource_version = version;
                observed.fuse = Some(std::sync::Arc::new(ds));
            }
            Effect::Apply(Object::PersistentVolume(pv)) => {
                observed.persistent_volume = Some(std::sync::Arc::new((**pv).clone()))
            }
            Effect::Apply(Object::PersistentVolumeClaim(pvc)) => {
                observed.persistent_volume_claim = Some(std::sync::Arc::new((**pvc).clone()))
            }
            Effect::PatchStatus { status: Status::Dataset(status), resource_version, .. } => {
                let dataset = std::sync::Arc::make_mut(observed.dataset.as_mut().expect("dataset exists"));
                assert_current(resource_version, &dataset.metadata, effect);
                dataset.status = Some((**status).clone());
                dataset.metadata.resource_version = version;
            }
            Effect::PatchStatus { status: Status::Runtime(status), resource_version, .. } => {
                let runtime = std::sync::Arc::make_mut(observed.runtime.as_mut().expect("runtime exists"));
                assert_current(resource_version, &runtime.metadata, effect);
                runtime.status = Some((**status).clone());
                runtime.metadata.resource_version = version;
            }
            Effect::PatchLabels { target, labels, .. } => {
                let meta = match target.kind {
                    Kind::Node => {
                        let node = self.all_nodes.iter_mut().find(|n| n.metadata.name.as_deref() == Some(&target.name));
                        &mut std::sync::Arc::make_mut(node.expect("node exists")).metadata
                    }
                    Kind::Dataset => {
                        &mut std::sync::Arc::make_mut(observed.dataset.as_mut().expect("dataset")).metadata
                    }
                    Kind::JuiceFSRuntime => {
                        &mut std::sync::Arc::make_mut(observed.runtime.as_mut().expect("runtime")).metadata
                    }
                    other => panic!("unexpected label target {other:?}"),
                };
                meta.resource_version = version;
                let current = meta.labels.get_or_insert_with(BTreeMap::new);
                for (key, value) in labels {
                    match value {
                        Some(value) => current.insert(key.clone(), value.clone()),
                        None => current.remove(key),
                    };
                }
            }
            Effect::AddOwnerReference { owner, .. } => {
                let runtime = std::sync::Arc::make_mut(observed.runtime.as_mut().expect("runtime"));
                runtime.metadata.resource_version = version;
                runtime.metadata.owner_references.get_or_insert_with(Vec::new).push(owner.clone());
            }
            Effect::AddFinalizer { target, finalizer, .. } => {
                let meta = self.meta_of(target.kind);
                meta.resource_version = version;
                meta.finalizers.get_or_insert_with(Vec::new).push(finalizer.clone());
            }
            Effect::RemoveFinalizer { target, finalizer, .. } => {
                let kind = target.kind;
                let meta = self.meta_of(kind);
                if let Some(all) = meta.finalizers.as_mut() {
                    all.retain(|f| f != finalizer);
                }
                let gone = meta.deletion_timestamp.is_some() && meta.finalizers.as_ref().is_none_or(|f| f.is_empty());
                if gone {
                    self.remove(kind);
                }
            }
            Effect::Delete(target) => {
                let kind = target.kind;
                let now = self.now.to_time();
                let meta = self.meta_of(kind);
                if meta.finalizers.as_ref().is_none_or(|f| f.is_empty()) {
                    self.remove(kind);
                } else {
                    meta.deletion_timestamp = Some(now);
                }
            }
            Effect::Event { .. } => {}
        }
    }

    fn meta_of(&mut self, kind: Kind) -> &mut ObjectMeta {
        let observed = &mut self.observed;
        match kind {
            Kind::Dataset => &mut std::sync::Arc::make_mut(observed.dataset.as_mut().expect("dataset")).metadata,
            Kind::JuiceFSRuntime => &mut std::sync::Arc::make_mut(observed.runtime.as_mut().expect("runtime")).metadata,
            Kind::StatefulSet => &mut std::sync::Arc::make_mut(observed.workers.as_mut().expect("workers")).metadata,
            Kind::DaemonSet => &mut std::sync::Arc::make_mut(observed.fuse.as_mut().expect("fuse")).metadata,
            Kind::PersistentVolume => {
                &mut std::sync::Arc::make_mut(observed.persistent_volume.as_mut().expect("pv")).metadata
            }
            Kind::PersistentVolumeClaim => {
                &mut std::sync::Arc::make_mut(observed.persistent_volume_claim.as_mut().expect("pvc")).metadata
            }
            other => panic!("unexpected target {other:?}"),
        }
    }

    fn remove(&mut self, kind: Kind) {
        let observed = &mut self.observed;
        match kind {
            Kind::Dataset => observed.dataset = None,
            Kind::JuiceFSRuntime => observed.runtime = None,
            Kind::StatefulSet => observed.workers = None,
            Kind::DaemonSet => observed.fuse = None,
            Kind::PersistentVolume => observed.persistent_volume = None,
            Kind::PersistentVolumeClaim => observed.persistent_volume_claim = None,
            _ => {}
        }
    }

    /// Plays the StatefulSet controller and kubelet: `ready` of the desired workers run, on
    /// nodes in order.
    fn workers_run(&mut self, ready: i32) {
        let sts = std::sync::Arc::make_mut(self.observed.workers.as_mut().expect("workers applied"));
        let desired = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        sts.status = Some(StatefulSetStatus {
            replicas: desired,
            ready_replicas: Some(ready),
            current_replicas: Some(desired),
            available_replicas: Some(ready),
            ..StatefulSetStatus::default()
        });
        let base = sts.metadata.name.clone().unwrap_or_default();
        self.observed.worker_pods = (0..ready)
            .map(|ordinal| PodView {
                namespace: NS.into(),
                name: format!("{base}-{ordinal}").into(),
                node_name: Some(format!("node-{}", ["a", "b", "c"][ordinal as usize % 3]).into()),
                phase: crate::observed::PodPhase::Running,
                ready: true,
                deleting: false,
                unschedulable: None,
            })
            .collect();
        self.refresh();
    }

    /// Reconciles both until neither writes, at most `rounds` times; returns every effect seen.
    fn settle(&mut self, rounds: usize) -> Vec<Effect> {
        let mut seen = Vec::new();
        for _ in 0..rounds {
            let dataset = self.reconcile_dataset();
            self.apply(&dataset);
            let runtime = self.reconcile_runtime();
            self.apply(&runtime);
            let quiet = dataset.writes().next().is_none() && runtime.writes().next().is_none();
            seen.extend(dataset.effects);
            seen.extend(runtime.effects);
            if quiet {
                return seen;
            }
        }
        panic!("did not settle in {rounds} rounds; last effects: {seen:#?}");
    }

    fn node_labels(&self, name: &str) -> BTreeMap<String, String> {
        let node = self.all_nodes.iter().find(|n| n.metadata.name.as_deref() == Some(name)).expect("node");
        node.metadata.labels.clone().unwrap_or_default()
    }

    fn label_node(&mut self, name: &str, key: &str) {
        let node = self.all_nodes.iter_mut().find(|n| n.metadata.name.as_deref() == Some(name)).expect("node");
        std::sync::Arc::make_mut(node)
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), "true".to_string());
        self.refresh();
    }
}

/// The apiserver's optimistic concurrency: a status patch computed from an older object is a 409.
/// Within one decision that would be a conflict with ourselves, so tests fail on it.
fn assert_current(resource_version: &Option<String>, meta: &ObjectMeta, effect: &Effect) {
    if let Some(expected) = resource_version {
        assert_eq!(Some(expected), meta.resource_version.as_ref(), "stale status patch (a 409): {effect:?}");
    }
}

fn ready_pod_condition() -> PodCondition {
    PodCondition { type_: "Ready".to_string(), status: "True".to_string(), ..PodCondition::default() }
}

fn verbs(effects: &[Effect]) -> Vec<String> {
    effects.iter().map(|e| format!("{} {}", e.verb(), e.target())).collect()
}
