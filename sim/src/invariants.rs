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
//! * **published-target-serves-its-dataset**: every mount at a pod's CSI target on an up node
//!   has a publish record in the CSI plugin (or recovery could never repair it), is of a FUSE
//!   mount made at that record's `fluid_path` (never of another dataset), and is read-only when
//!   the record says so.
//!
//! At convergence (liveness):
//! * **labels-match-reality**: each bound runtime's common label is on exactly the nodes that run
//!   its Running workers; its FUSE label is on every node with a Running app pod of the dataset,
//!   and FUSE pods run exactly on the nodes with the FUSE label; datasets without a runtime leave
//!   no label behind.
//! * **fixpoint-yields-no-writes**: both reconcilers, run on the apiserver's state for every
//!   pair, return no write effects.
//! * **no-stuck-deletion**: every terminating object is held by a pod that still uses the dataset.
//! * **app-mount-is-live**: every Running pod on an up node that uses a dataset PVC reads it
//!   through a healthy bind of the live FUSE mount at the volume's `fluid_path`, read-only when
//!   it asked so (not broken: "transport endpoint is not connected"; not a dead daemon's mount).
//! * **staged-volumes-in-use**: on every up node, each volume kubelet staged and each stage
//!   record of the CSI plugin belongs to a pod the kubelet runs there (kubelet unstages the
//!   rest, after a reboot too).

use std::collections::{BTreeMap, BTreeSet};

use model::api::DatasetPhase;
use model::effect::{Kind, ObjectRef};
use model::labels::{CREATED_BY, CREATED_BY_FLUID, DatasetKeys};
use model::volume::{ATTR_FUSE_LABEL_KEY, ATTR_RUNTIME_NAME, ATTR_RUNTIME_NAMESPACE};

use crate::apiserver::{Change, Pod};
use crate::control::Pair;
use crate::fuse::{is_fuse_pod, is_worker_pod};
use crate::kubelet::RunPhase;
use crate::mounts::TargetHealth;
use crate::sim::Sim;

/// A dataset volume of a pod: where kubelet publishes it and what it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetVolume {
    /// The pod's volume name.
    pub name: String,
    /// The publish target on the pod's node.
    pub target_path: String,
    /// The FUSE mount point it binds.
    pub fluid_path: String,
    /// The pod asked for it read-only.
    pub read_only: bool,
}

/// True for kubelet's publish target of a CSI volume of a pod.
fn is_csi_target(path: &str) -> bool {
    path.starts_with(model::node::kubelet::KUBELET_ROOT)
        && path.contains("/pods/")
        && path.contains("/volumes/kubernetes.io~csi/")
        && path.ends_with("/mount")
}

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
        found.extend(self.mount_safety());
        for (invariant, message) in found {
            self.violate(invariant, message);
        }
    }

    /// **published-target-serves-its-dataset**, over every up node's mount table.
    fn mount_safety(&self) -> Vec<(&'static str, String)> {
        let mut found = Vec::new();
        let mut nodes: Vec<_> = self.nodes.iter().filter(|(_, n)| n.up).collect();
        nodes.sort_by(|a, b| a.0.cmp(b.0));
        for (node, state) in nodes {
            for entry in state.mounts.entries().iter().filter(|e| is_csi_target(&e.mount_point)) {
                let invariant = "published-target-serves-its-dataset";
                let target = &entry.mount_point;
                let Some(record) = state.publish_records.get(target) else {
                    found.push((
                        invariant,
                        format!("{target} on {node} is mounted, but the CSI plugin has no record of it"),
                    ));
                    continue;
                };
                let origin = state.mounts.origin(&entry.major_minor);
                if origin != Some(record.fluid_path.trim_end_matches('/')) {
                    found.push((
                        invariant,
                        format!(
                            "{target} on {node} mounts device {} of {}, not of {}",
                            entry.major_minor,
                            origin.unwrap_or("no FUSE mount"),
                            record.fluid_path
                        ),
                    ));
                }
                if record.bind.read_only && !entry.read_only {
                    found.push((
                        invariant,
                        format!("{target} on {node} was published read-only but a mount there is read-write"),
                    ));
                }
            }
        }
        found
    }

    /// The dataset volumes of `pod` (claims bound to a PV of the Fluid CSI driver), as kubelet
    /// publishes them.
    pub fn dataset_volumes(&self, pod: &Pod) -> Vec<DatasetVolume> {
        let store = &self.api.store;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let identity = model::node::kubelet::PodIdentity::of(&pod.metadata, pod.spec.as_deref());
        let mut out = Vec::new();
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(claim) = &volume.persistent_volume_claim else { continue };
            let pvc =
                store.get_named(Kind::PersistentVolumeClaim, namespace, &claim.claim_name).and_then(|o| o.as_pvc());
            let Some(pv_name) = pvc.and_then(|pvc| pvc.spec.as_ref()?.volume_name.clone()) else { continue };
            let Some(pv) = store.get_named(Kind::PersistentVolume, "", &pv_name).and_then(|o| o.as_pv()) else {
                continue;
            };
            let Some(csi) =
                pv.spec.as_ref().and_then(|s| s.csi.as_ref()).filter(|c| c.driver == model::volume::CSI_DRIVER)
            else {
                continue;
            };
            let Some(csi_volume) = model::node::kubelet::pod_csi_volume(&identity, volume, pv, true) else { continue };
            let fluid_path = csi.volume_attributes.as_ref().and_then(|a| a.get(model::volume::ATTR_FLUID_PATH));
            out.push(DatasetVolume {
                name: volume.name.clone(),
                target_path: csi_volume.publish.target_path,
                fluid_path: fluid_path.cloned().unwrap_or_default(),
                read_only: csi_volume.publish.readonly,
            });
        }
        out
    }

    /// How `volume` of `pod` serves it on its node; Err says why there is nothing to judge.
    pub fn volume_health(&self, pod: &Pod, volume: &DatasetVolume) -> Result<TargetHealth, String> {
        let node = pod.node_name().ok_or("the pod is not scheduled")?;
        let state = self.nodes.get(node).ok_or_else(|| format!("{node} has no kubelet"))?;
        if !state.up {
            return Err(format!("{node} is down"));
        }
        Ok(state.mounts.target_health(&volume.target_path, &volume.fluid_path))
    }

    /// **app-mount-is-live**: what breaks it, one line per volume.
    fn app_mount_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for obj in self.api.store.list(Kind::Pod) {
            let Some(pod) = obj.as_pod().filter(|p| running(p) && p.metadata.deletion_timestamp.is_none()) else {
                continue;
            };
            let up = pod.node_name().and_then(|n| self.nodes.get(n)).is_some_and(|n| n.up);
            if !up {
                continue;
            }
            for volume in self.dataset_volumes(pod) {
                let seen = match self.volume_health(pod, &volume) {
                    Ok(TargetHealth::Live { read_only }) if read_only || !volume.read_only => continue,
                    Ok(TargetHealth::Live { .. }) => "live but read-write, and the pod asked read-only".to_string(),
                    Ok(health) => health.to_string(),
                    Err(why) => why,
                };
                problems.push(format!(
                    "app-mount-is-live: {} on {} reads volume {} through {}: {seen}",
                    obj.object_ref(),
                    pod.node_name().unwrap_or_default(),
                    volume.name,
                    volume.target_path
                ));
            }
        }
        problems
    }

    /// **staged-volumes-in-use**: what breaks it, one line per volume.
    fn staged_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut nodes: Vec<_> = self.nodes.iter().filter(|(_, n)| n.up && n.csi_up).collect();
        nodes.sort_by(|a, b| a.0.cmp(b.0));
        for (node, state) in nodes {
            let in_use: BTreeSet<&str> =
                state.pods.values().flat_map(|r| r.volumes.iter().map(|v| v.request.volume_id.as_str())).collect();
            let staged: BTreeSet<&str> =
                state.staged.iter().chain(state.stage_records.keys()).map(String::as_str).collect();
            for volume in staged.difference(&in_use) {
                let by = match (state.staged.contains(*volume), state.stage_records.contains_key(*volume)) {
                    (true, true) => "kubelet staged it and the CSI plugin keeps its stage record",
                    (true, false) => "kubelet staged it",
                    _ => "the CSI plugin keeps its stage record",
                };
                problems.push(format!(
                    "staged-volumes-in-use: Node/{node} still has volume {volume} staged ({by}) but no pod there uses it"
                ));
            }
        }
        problems
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
        problems.extend(self.app_mount_problems());
        problems.extend(self.staged_problems());
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

#[cfg(test)]
mod tests {
    use model::node::{MountPlan, PublishRecord};

    use crate::sim::{Sim, SimConfig};

    const FLUID_A: &str = "/runtime-mnt/juicefs/default/a/juicefs-fuse";
    const FLUID_B: &str = "/runtime-mnt/juicefs/default/b/juicefs-fuse";
    const TARGET: &str = "/var/lib/kubelet/pods/u-1/volumes/kubernetes.io~csi/default-a/mount";

    fn one_node() -> Sim {
        let mut sim = Sim::new(SimConfig { trace: false, ..SimConfig::default() });
        sim.add_node_sim("node-1");
        sim
    }

    fn record(fluid_path: &str, read_only: bool) -> PublishRecord {
        PublishRecord {
            volume_id: "default-a".to_string(),
            fluid_path: fluid_path.to_string(),
            bind: MountPlan { source: fluid_path.to_string(), target: TARGET.to_string(), read_only },
        }
    }

    fn safety(sim: &Sim) -> Vec<String> {
        sim.mount_safety().into_iter().map(|(invariant, message)| format!("{invariant}: {message}")).collect()
    }

    #[test]
    fn a_target_mount_must_have_a_record_and_be_of_the_records_dataset() {
        let mut sim = one_node();
        let node = sim.nodes.get_mut("node-1").unwrap();
        node.mounts.mount_fuse(FLUID_A, "JuiceFS:a");
        node.mounts.mount_fuse(FLUID_B, "JuiceFS:b");
        node.mounts.bind(FLUID_B, TARGET, false);
        assert_eq!(
            safety(&sim),
            [format!(
                "published-target-serves-its-dataset: {TARGET} on node-1 is mounted, but the CSI plugin has no record of it"
            )]
        );
        sim.nodes.get_mut("node-1").unwrap().publish_records.insert(TARGET.to_string(), record(FLUID_A, false));
        assert_eq!(
            safety(&sim),
            [format!(
                "published-target-serves-its-dataset: {TARGET} on node-1 mounts device 0:102 of {FLUID_B}, not of {FLUID_A}"
            )]
        );
        let node = sim.nodes.get_mut("node-1").unwrap();
        node.mounts.bind(FLUID_A, TARGET, false);
        node.publish_records.insert(TARGET.to_string(), record(FLUID_A, true));
        let seen = safety(&sim);
        assert!(
            seen.iter().any(|s| s.ends_with("was published read-only but a mount there is read-write")),
            "{seen:?}"
        );
        // A down node's mounts are not looked at (its kubelet cannot be asked to fix them).
        sim.nodes.get_mut("node-1").unwrap().up = false;
        assert!(safety(&sim).is_empty());
    }

    #[test]
    fn a_staged_volume_no_pod_uses_is_reported_at_convergence() {
        let mut sim = one_node();
        sim.nodes.get_mut("node-1").unwrap().staged.insert("default-a".to_string());
        assert_eq!(
            sim.staged_problems(),
            [
                "staged-volumes-in-use: Node/node-1 still has volume default-a staged (kubelet staged it) but no pod there uses it"
            ]
        );
        sim.nodes.get_mut("node-1").unwrap().csi_up = false;
        assert!(sim.staged_problems().is_empty(), "nothing is asked of a restarting plugin");
    }
}
