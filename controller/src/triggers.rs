//! Which dataset/runtime pairs a changed object concerns: pure mappers from any watched kind to pair keys.
//!
//! Over-triggering is harmless (a reconcile at the fixpoint writes nothing, and a key without a
//! dataset or runtime is skipped by the controller), so mappers err on the side of more keys.

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef as StoreRef, Store};
use model::api::{Dataset, JuiceFSRuntime};
use model::labels;

use crate::observe::dataset_keys;

/// A dataset/runtime pair: they share namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PairKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl PairKey {
    /// The pair `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self { namespace: namespace.to_string(), name: name.to_string() }
    }

    /// The key of a namespaced object named like the pair (a dataset, runtime or PVC).
    pub fn of<K: Resource>(object: &K) -> Option<Self> {
        Some(Self::new(object.meta().namespace.as_deref()?, object.meta().name.as_deref()?))
    }
}

/// A dataset or a runtime: its own pair.
pub fn from_pair_object<K: Resource>(object: &K) -> Vec<PairKey> {
    PairKey::of(object).into_iter().collect()
}

/// A StatefulSet or DaemonSet: the runtime that owns it.
pub fn from_owned<K: Resource>(object: &K) -> Vec<PairKey> {
    let Some(namespace) = object.meta().namespace.as_deref() else { return Vec::new() };
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|owner| owner.kind == "JuiceFSRuntime" && owner.api_version.starts_with(labels::GROUP))
        .map(|owner| PairKey::new(namespace, &owner.name))
        .collect()
}

/// A PVC: the dataset of the same name (the model names dataset PVCs after the dataset).
pub fn from_claim(claim: &PersistentVolumeClaim) -> Vec<PairKey> {
    from_pair_object(claim)
}

/// A PV: the claim it is bound to, else the runtime named in its CSI attributes.
pub fn from_volume(volume: &PersistentVolume) -> Vec<PairKey> {
    let spec = volume.spec.as_ref();
    if let Some(claim) = spec.and_then(|s| s.claim_ref.as_ref()) {
        if let (Some(namespace), Some(name)) = (claim.namespace.as_deref(), claim.name.as_deref()) {
            return vec![PairKey::new(namespace, name)];
        }
    }
    let attributes = spec.and_then(|s| s.csi.as_ref()).and_then(|csi| csi.volume_attributes.as_ref());
    let get = |key: &str| attributes.and_then(|a| a.get(key)).map(String::as_str);
    match (get(model::volume::ATTR_RUNTIME_NAMESPACE), get(model::volume::ATTR_RUNTIME_NAME)) {
        (Some(namespace), Some(name)) => vec![PairKey::new(namespace, name)],
        _ => Vec::new(),
    }
}

/// A pod: every dataset whose PVC it names, and the runtime owning its StatefulSet (worker pods).
pub fn from_pod(pod: &Pod, stateful_sets: &Store<StatefulSet>) -> Vec<PairKey> {
    let Some(namespace) = pod.metadata.namespace.as_deref() else { return Vec::new() };
    let claims = pod
        .spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|claim| PairKey::new(namespace, &claim.claim_name));
    // Worker StatefulSet names may be shortened with a hash, so resolve the owner exactly.
    let owners = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "StatefulSet")
        .filter_map(|o| stateful_sets.get(&StoreRef::new(&o.name).within(namespace)))
        .flat_map(|sts| from_owned(sts.as_ref()));
    let mut keys: Vec<PairKey> = claims.chain(owners).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// A node: every dataset one of whose label keys the node carries.
pub fn from_node(node: &Node, datasets: &Store<Dataset>, runtime_type: &str) -> Vec<PairKey> {
    let Some(node_labels) = node.metadata.labels.as_ref() else { return Vec::new() };
    let ours = |key: &String| key.starts_with(labels::FUSE_PREFIX) || key.starts_with(labels::COMMON_PREFIX);
    if !node_labels.keys().any(ours) {
        return Vec::new();
    }
    let mut keys: Vec<PairKey> = datasets
        .state()
        .iter()
        .filter_map(|dataset| {
            let pair = PairKey::of(dataset.as_ref())?;
            let keys = dataset_keys(Some(dataset), &pair.namespace, &pair.name)?;
            keys.all_node_label_keys(runtime_type)
                .iter()
                .any(|key| node_labels.contains_key(key))
                .then_some(pair)
        })
        .collect();
    keys.sort();
    keys
}

/// Type witnesses, so callers can name the mapper for each watched kind.
pub fn from_dataset(dataset: &Dataset) -> Vec<PairKey> {
    from_pair_object(dataset)
}

/// See [`from_dataset`].
pub fn from_runtime(runtime: &JuiceFSRuntime) -> Vec<PairKey> {
    from_pair_object(runtime)
}

/// See [`from_owned`].
pub fn from_stateful_set(sts: &StatefulSet) -> Vec<PairKey> {
    from_owned(sts)
}

/// See [`from_owned`].
pub fn from_daemon_set(ds: &DaemonSet) -> Vec<PairKey> {
    from_owned(ds)
}
