//! Which dataset/runtime pairs a changed object concerns: the watch mappings both drivers use.
//!
//! Over-triggering is harmless (a reconcile at the fixpoint writes nothing, and a driver skips a
//! key whose dataset and runtime are both gone), so the mappings err on the side of more keys.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolume, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::effect::CompactString;
use crate::labels::{self, DatasetKeys};
use crate::observed::claim_names;
use crate::volume::{ATTR_RUNTIME_NAME, ATTR_RUNTIME_NAMESPACE};

/// The kind of owner that makes a StatefulSet or DaemonSet a runtime's.
pub const RUNTIME_OWNER_KIND: &str = "JuiceFSRuntime";

/// A dataset/runtime pair, the key of both reconcilers: they share namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PairKey {
    /// Namespace (inline up to 24 bytes, as the names: a driver makes keys on every watch event).
    pub namespace: CompactString,
    /// Name.
    pub name: CompactString,
}

impl PairKey {
    /// The pair `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl std::fmt::Display for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A dataset, a runtime or a dataset's PVC: the pair named like it (dataset PVCs carry the
/// dataset's name). None without a namespace and name.
pub fn pair_of_named(meta: &ObjectMeta) -> Option<PairKey> {
    Some(PairKey::new(meta.namespace.as_deref()?, meta.name.as_deref()?))
}

/// A StatefulSet or DaemonSet: the runtime of Fluid's API group that owns it.
pub fn pairs_of_owned(meta: &ObjectMeta) -> Vec<PairKey> {
    let Some(namespace) = meta.namespace.as_deref() else { return Vec::new() };
    meta.owner_references
        .iter()
        .flatten()
        .filter(|owner| owner.kind == RUNTIME_OWNER_KIND && owner.api_version.starts_with(labels::GROUP))
        .map(|owner| PairKey::new(namespace, &owner.name))
        .collect()
}

/// A PV: the claim it is bound to, else the runtime named in its CSI attributes.
pub fn pair_of_volume(volume: &PersistentVolume) -> Option<PairKey> {
    let spec = volume.spec.as_ref()?;
    if let Some(claim) = &spec.claim_ref
        && let (Some(namespace), Some(name)) = (claim.namespace.as_deref(), claim.name.as_deref())
    {
        return Some(PairKey::new(namespace, name));
    }
    let attributes = spec.csi.as_ref()?.volume_attributes.as_ref()?;
    Some(PairKey::new(attributes.get(ATTR_RUNTIME_NAMESPACE)?, attributes.get(ATTR_RUNTIME_NAME)?))
}

/// A pod: the pair of every PVC it names, and the runtime owning its StatefulSet (a worker).
/// `stateful_set` resolves an owner reference of kind StatefulSet through the driver's cache
/// (worker StatefulSet names may be shortened with a hash, so the owner is resolved exactly, not
/// guessed from the name). Sorted, without repeats.
pub fn pairs_of_pod(
    meta: &ObjectMeta,
    spec: Option<&PodSpec>,
    stateful_set: impl Fn(&OwnerReference) -> Option<Arc<StatefulSet>>,
) -> Vec<PairKey> {
    let Some(namespace) = meta.namespace.as_deref() else { return Vec::new() };
    let mut pairs: Vec<PairKey> = claim_names(spec).map(|claim| PairKey::new(namespace, claim)).collect();
    for owner in meta.owner_references.iter().flatten().filter(|o| o.kind == "StatefulSet") {
        if let Some(owner) = stateful_set(owner) {
            pairs.extend(pairs_of_owned(&owner.metadata));
        }
    }
    pairs.sort();
    pairs.dedup();
    pairs
}

/// Which pair each node label key belongs to: every key a dataset may set on a node (FUSE,
/// common, runtime and capacity labels), kept from the datasets a driver watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLabelOwners {
    pair_by_key: BTreeMap<String, PairKey>,
    keys_by_pair: BTreeMap<PairKey, Vec<String>>,
}

impl NodeLabelOwners {
    /// Files the label keys of the dataset `pair` (replacing those of an earlier version, whose
    /// UID may have differed: long names hash the UID into their keys).
    pub fn insert(&mut self, pair: &PairKey, keys: &DatasetKeys, runtime_type: &str) {
        let label_keys = keys.all_node_label_keys(runtime_type);
        if self.keys_by_pair.get(pair) == Some(&label_keys) {
            return;
        }
        self.remove(pair);
        for key in &label_keys {
            self.pair_by_key.insert(key.clone(), pair.clone());
        }
        self.keys_by_pair.insert(pair.clone(), label_keys);
    }

    /// Forgets the label keys of the dataset `pair`.
    pub fn remove(&mut self, pair: &PairKey) {
        for key in self.keys_by_pair.remove(pair).into_iter().flatten() {
            if self.pair_by_key.get(&key) == Some(pair) {
                self.pair_by_key.remove(&key);
            }
        }
    }

    /// The pair whose dataset sets node label `key`.
    pub fn pair_of(&self, key: &str) -> Option<&PairKey> {
        self.pair_by_key.get(key)
    }
}

/// True for a node label key a dataset may set (FUSE, common, runtime and capacity labels).
pub fn is_dataset_label_key(key: &str) -> bool {
    key.starts_with(labels::FUSE_PREFIX) || key.starts_with(labels::COMMON_PREFIX)
}

/// A node: the pairs whose labels changed on it. With the previous labels unknown (`old` None,
/// as for a watch event, which carries only the new object) every dataset label it carries
/// counts; otherwise only keys added, removed or changed. Sorted, without repeats.
pub fn pairs_of_node(
    old: Option<&BTreeMap<String, String>>,
    new: Option<&BTreeMap<String, String>>,
    owners: &NodeLabelOwners,
) -> Vec<PairKey> {
    let empty = BTreeMap::new();
    let new = new.unwrap_or(&empty);
    let ours = |key: &&String| is_dataset_label_key(key);
    let mut pairs: Vec<PairKey> = match old {
        None => new.keys().filter(ours).filter_map(|key| owners.pair_of(key)).cloned().collect(),
        Some(old) => old
            .keys()
            .chain(new.keys())
            .filter(ours)
            .filter(|key| old.get(*key) != new.get(*key))
            .filter_map(|key| owners.pair_of(key))
            .cloned()
            .collect(),
    };
    pairs.sort();
    pairs.dedup();
    pairs
}

#[cfg(test)]
mod tests;
