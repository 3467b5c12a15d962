//! Invariant checkers that run beside the system (TigerBeetle's checkers).
//!
//! Safety, after every event:
//! * **one-runtime-per-dataset**: a runtime is owned by at most one Dataset, and that dataset
//!   has its name; a dataset's `status.runtimes` names at most one runtime, the one of its name.
//! * **pv-needs-bound-dataset**: a PV created by ferrofluid (annotation `CreatedBy: fluid`)
//!   exists only while (a) its dataset records the binding (`status.runtimes` non-empty and
//!   phase `Bound`, `Failed`, `Updating` or `DataMigrating`), or (b) its runtime is terminating
//!   (teardown deletes the PV first), or (c) its dataset is gone or terminating while its
//!   runtime still exists (garbage collection of the runtime, then its teardown, are in flight).
//! * **pvc-in-use-not-deleted**: a PVC never disappears while a Running pod names it.
//! * **fuse-label-under-running-pod**: a node never loses a dataset's FUSE label while a
//!   Running pod there has that dataset's volume published.
//!
//! At convergence (liveness):
//! * **labels-match-reality**: each bound runtime's common label is on exactly the nodes that run
//!   its Running workers; its FUSE label is on every node with a Running app pod of the dataset,
//!   and FUSE pods run exactly on the nodes with the FUSE label; datasets without a runtime leave
//!   no label behind.
//! * **fixpoint-yields-no-writes**: both reconcilers, run on the apiserver's state for every
//!   pair, return no write effects.
//! * **no-stuck-deletion**: every terminating object is held by a pod that still uses the dataset.

use std::collections::{BTreeMap, BTreeSet};

use model::api::DatasetPhase;
use model::effect::{Kind, ObjectRef};
use model::labels::{CREATED_BY, CREATED_BY_FLUID, DatasetKeys};
use model::volume::{ATTR_FUSE_LABEL_KEY, ATTR_RUNTIME_NAME, ATTR_RUNTIME_NAMESPACE};

use crate::apiserver::Change;
use crate::control::Pair;
use crate::fuse::{is_fuse_pod, is_worker_pod};
use crate::kubelet::RunPhase;
use crate::sim::Sim;

/// Nodes where one pair's Running pods are.
#[derive(Debug, Default)]
struct PairPlacement {
    workers: BTreeSet<String>,
    fuse: BTreeSet<String>,
    apps: BTreeSet<String>,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// When it was seen.
    pub at_ms: u64,
    /// Which invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invariant {} violated at {}: {}", self.invariant, crate::clock::format_ms(self.at_ms), self.message)
    }
}

fn running(pod: &crate::apiserver::Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

impl Sim {
    fn violate(&mut self, invariant: &'static str, message: String) {
        let violation = Violation { at_ms: self.clock.now_ms(), invariant, message };
        crate::trace!(self, "invariant", invariant, "VIOLATED: {}", violation.message);
        self.violations.push(violation);
    }

    /// The safety invariants over the whole store.
    pub fn check_safety(&mut self) {
        let mut found = Vec::new();
        for obj in self.api.store.list(Kind::JuiceFSRuntime) {
            let key = obj.object_ref();
            let owners: Vec<_> = obj.meta().owner_references.iter().flatten().filter(|o| o.kind == "Dataset").collect();
            if owners.len() > 1 || owners.iter().any(|o| o.name != key.name) {
                let names: Vec<&str> = owners.iter().map(|o| o.name.as_str()).collect();
                found.push(("one-runtime-per-dataset", format!("{key} is owned by datasets {names:?}")));
            }
        }
        for obj in self.api.store.list(Kind::Dataset) {
            let key = obj.object_ref();
            let Some(dataset) = obj.as_dataset() else { continue };
            let runtimes = dataset.status.as_ref().map(|s| s.runtimes.clone()).unwrap_or_default();
            if runtimes.len() > 1 || runtimes.iter().any(|r| r.name != key.name || r.namespace != key.namespace) {
                let names: Vec<String> = runtimes.iter().map(|r| format!("{}/{}", r.namespace, r.name)).collect();
                found.push(("one-runtime-per-dataset", format!("{key} records runtimes {names:?}")));
            }
        }
        for obj in self.api.store.list(Kind::PersistentVolume) {
            let Some(pv) = obj.as_pv() else { continue };
            let ours = pv.metadata.annotations.as_ref().and_then(|a| a.get(CREATED_BY)).map(String::as_str)
                == Some(CREATED_BY_FLUID);
            if !ours || pv.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let attributes = pv
                .spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .and_then(|c| c.volume_attributes.clone())
                .unwrap_or_default();
            let (Some(namespace), Some(name)) =
                (attributes.get(ATTR_RUNTIME_NAMESPACE), attributes.get(ATTR_RUNTIME_NAME))
            else {
                continue;
            };
            let dataset = self.api.store.get_named(Kind::Dataset, namespace, name).and_then(|o| o.as_dataset());
            let runtime = self.api.store.get_named(Kind::JuiceFSRuntime, namespace, name);
            let bound = dataset.is_some_and(|d| {
                d.status.as_ref().is_some_and(|s| {
                    !s.runtimes.is_empty()
                        && matches!(
                            s.phase,
                            DatasetPhase::Bound
                                | DatasetPhase::Failed
                                | DatasetPhase::Updating
                                | DatasetPhase::DataMigrating
                        )
                })
            });
            let runtime_terminating = runtime.is_some_and(|r| r.is_deleting());
            let dataset_going = dataset.is_none_or(|d| d.metadata.deletion_timestamp.is_some()) && runtime.is_some();
            if !(bound || runtime_terminating || dataset_going) {
                let phase = dataset
                    .and_then(|d| d.status.as_ref().map(|s| s.phase.as_str().to_string()))
                    .unwrap_or_else(|| "(no dataset)".to_string());
                found.push((
                    "pv-needs-bound-dataset",
                    format!(
                        "{} exists but dataset {namespace}/{name} is {phase} and its runtime is {}",
                        obj.object_ref(),
                        if runtime.is_some() { "not terminating" } else { "gone" }
                    ),
                ));
            }
        }
        for (invariant, message) in found {
            self.violate(invariant, message);
        }
    }

    /// Invariants checked on the change itself.
    pub(crate) fn check_on_change(&mut self, change: &Change) {
        match change.key.kind {
            Kind::PersistentVolumeClaim if change.new.is_none() => {
                let key = &change.key;
                let users: Vec<String> = self
                    .api
                    .store
                    .pods_using_claim(&key.namespace, &key.name)
                    .filter(|p| self.api.store.get(p).and_then(|o| o.as_pod()).is_some_and(|p| running(p)))
                    .map(|p| p.to_string())
                    .collect();
                if !users.is_empty() {
                    self.violate(
                        "pvc-in-use-not-deleted",
                        format!("{key} was deleted while {} still run with it", users.join(", ")),
                    );
                }
            }
            Kind::Node => {
                let (Some(old), Some(new)) = (&change.old, &change.new) else { return };
                let empty = Default::default();
                let old_labels = old.meta().labels.as_ref().unwrap_or(&empty);
                let new_labels = new.meta().labels.as_ref().unwrap_or(&empty);
                let removed: Vec<&String> = old_labels
                    .keys()
                    .filter(|k| k.starts_with(model::labels::FUSE_PREFIX) && !new_labels.contains_key(*k))
                    .collect();
                if removed.is_empty() {
                    return;
                }
                let node = change.key.name.clone();
                let Some(state) = self.nodes.get(node.as_str()) else { return };
                let mut users = Vec::new();
                for (pod, run) in &state.pods {
                    // A pod the apiserver no longer has (evicted from a down node) is not the
                    // control plane's to protect: its node cannot be told to stop it either.
                    if run.phase != RunPhase::Running || self.api.store.get(pod).is_none() {
                        continue;
                    }
                    for volume in run.volumes.iter().filter(|v| v.published) {
                        let key = volume.request.volume_context.get(ATTR_FUSE_LABEL_KEY).cloned().unwrap_or_default();
                        if removed.contains(&&key) {
                            users.push(format!("{pod} ({key})"));
                        }
                    }
                }
                if !users.is_empty() {
                    self.violate(
                        "fuse-label-under-running-pod",
                        format!("Node/{node} lost its FUSE label while {} run with the volume", users.join(", ")),
                    );
                }
            }
            _ => {}
        }
    }

    /// Where each pair's Running (not terminating) workers, FUSE pods and app pods are, in one
    /// pass over the pods.
    fn running_pods_by_pair(&self) -> BTreeMap<Pair, PairPlacement> {
        let mut placed: BTreeMap<Pair, PairPlacement> = BTreeMap::new();
        for pod in self.api.store.list(Kind::Pod).filter_map(|o| o.as_pod()) {
            if !running(pod) || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(node) = pod.node_name().map(str::to_string) else { continue };
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            if (is_worker_pod(pod) || is_fuse_pod(pod))
                && let Some((ns, name)) = self.runtime_of_pod(pod)
            {
                let entry = placed.entry(Pair::new(&ns, &name)).or_default();
                let nodes = if is_worker_pod(pod) { &mut entry.workers } else { &mut entry.fuse };
                nodes.insert(node.clone());
            }
            for claim in crate::apiserver::store::claims_of(pod) {
                placed.entry(Pair::new(namespace, &claim)).or_default().apps.insert(node.clone());
            }
        }
        placed
    }

    /// The convergence invariants. Empty when everything holds.
    pub fn check_converged(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let store = &self.api.store;
        let placed = self.running_pods_by_pair();
        let none = PairPlacement::default();
        for pair in self.pairs() {
            let placement = placed.get(&pair).unwrap_or(&none);
            let dataset = store.get_named(Kind::Dataset, &pair.namespace, &pair.name);
            let runtime = store.get_named(Kind::JuiceFSRuntime, &pair.namespace, &pair.name);
            let uid = dataset.and_then(|d| d.meta().uid.clone());
            let Ok(keys) = DatasetKeys::new(&pair.namespace, &pair.name, uid.as_deref()) else { continue };
            let labelled = |key: &str| -> BTreeSet<String> {
                store
                    .nodes_with_label_key(key)
                    .filter(|n| {
                        store
                            .get_named(Kind::Node, "", n)
                            .and_then(|o| o.meta().labels.as_ref())
                            .and_then(|l| l.get(key))
                            .map(String::as_str)
                            == Some("true")
                    })
                    .map(|name| name.to_string())
                    .collect()
            };
            let bound = dataset
                .and_then(|d| d.as_dataset())
                .is_some_and(|d| d.status.as_ref().is_some_and(|s| s.phase == DatasetPhase::Bound));
            match runtime {
                Some(runtime) if !runtime.is_deleting() && bound => {
                    let common = labelled(&keys.common_label());
                    let workers = &placement.workers;
                    if common != *workers {
                        problems.push(format!("labels-match-reality: {pair}: common label {} is on {common:?} but Running workers are on {workers:?}", keys.common_label()));
                    }
                    let fuse = labelled(&keys.fuse_label());
                    let apps = &placement.apps;
                    if !apps.is_subset(&fuse) {
                        problems.push(format!("labels-match-reality: {pair}: app pods run on {apps:?} but the FUSE label {} is only on {fuse:?}", keys.fuse_label()));
                    }
                    let fuse_pods = &placement.fuse;
                    if *fuse_pods != fuse {
                        problems.push(format!("labels-match-reality: {pair}: FUSE pods run on {fuse_pods:?} but the FUSE label is on {fuse:?}"));
                    }
                }
                None => {
                    for key in keys.all_node_label_keys(model::engine::juicefs::RUNTIME_TYPE) {
                        let left: Vec<&model::effect::CompactString> = store.nodes_with_label_key(&key).collect();
                        if !left.is_empty() {
                            problems.push(format!(
                                "labels-match-reality: {pair} has no runtime but label {key} is still on {left:?}"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        for (reconciler, pair, effect) in self.fixpoint_writes() {
            problems.push(format!("fixpoint-yields-no-writes: {} {pair} would still {}", reconciler.actor(), effect));
        }
        for (key, obj) in store.iter() {
            if !obj.is_deleting() || key.kind == Kind::Pod {
                continue;
            }
            let claim_name = match key.kind {
                Kind::Dataset | Kind::JuiceFSRuntime | Kind::PersistentVolumeClaim => key.name.clone(),
                _ => Default::default(),
            };
            let held = !claim_name.is_empty()
                && store
                    .pods_using_claim(&key.namespace, &claim_name)
                    .filter_map(|p| store.get(p).and_then(|o| o.as_pod()))
                    .any(|p| !p.is_completed());
            if !held {
                problems.push(format!(
                    "no-stuck-deletion: {key} is terminating with finalizers {:?} and nothing holds it",
                    obj.finalizers()
                ));
            }
        }
        problems
    }

    /// A reference by kind, namespace and name.
    pub fn reference(kind: Kind, namespace: &str, name: &str) -> ObjectRef {
        if kind.is_cluster_scoped() {
            ObjectRef::cluster(kind, name)
        } else {
            ObjectRef::namespaced(kind, namespace, name)
        }
    }
}
