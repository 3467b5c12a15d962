//! Cache-node labels: the nodes that run this dataset's workers carry its labels, no others do.
//!
//! Fluid counts `fluid.io/dataset-num` up and down, which drifts when a patch is lost. Here the
//! count is recomputed from the common labels actually on the node, so a resync repairs drift.

use std::collections::{BTreeMap, BTreeSet};

use crate::effect::{Effect, Kind, ObjectRef};
use crate::engine::NodeCapacity;
use crate::labels::{self, CapacityKind, DatasetKeys};
use crate::observed::NodeView;
use crate::quantity::format_label_bytes;

/// The label facts of one dataset.
#[derive(Debug, Clone)]
pub struct CacheLabels<'a> {
    /// The dataset's keys.
    pub keys: &'a DatasetKeys,
    /// Runtime type segment, e.g. `juicefs`; `None` when no runtime is left to say which type
    /// it was (then the runtime and capacity labels of every type are unwanted).
    pub runtime_type: Option<&'a str>,
    /// Exclusive placement: cache nodes carry `fluid_exclusive`.
    pub exclusive: bool,
    /// Our value of `fluid_exclusive` (also removed after a switch to shared placement).
    pub exclusive_value: String,
    /// Capacity one worker brings.
    pub capacity: NodeCapacity,
    /// Common labels of every dataset in the cluster.
    pub cluster_common_labels: &'a crate::observed::CommonLabels,
}

impl CacheLabels<'_> {
    /// The labels a node running one of our workers must carry (without `dataset-num`).
    fn wanted_on_cache_node(&self) -> BTreeMap<String, Option<String>> {
        let keys = self.keys;
        let mut wanted = BTreeMap::new();
        wanted.insert(keys.common_label(), Some("true".to_string()));
        if let Some(runtime_type) = self.runtime_type {
            wanted.insert(keys.runtime_label(runtime_type), Some("true".to_string()));
            let capacity_value = |bytes: u64| (bytes > 0).then(|| format_label_bytes(bytes));
            let capacity = [
                (CapacityKind::Memory, self.capacity.memory_bytes),
                (CapacityKind::Disk, self.capacity.disk_bytes),
                (CapacityKind::Total, self.capacity.total_bytes()),
            ];
            for (kind, bytes) in capacity {
                wanted.insert(keys.capacity_label(runtime_type, kind), capacity_value(bytes));
            }
        }
        if self.exclusive {
            wanted.insert(labels::EXCLUSIVE.to_string(), Some(self.exclusive_value.clone()));
        }
        wanted
    }

    /// The labels a node without our workers must not carry; `with_fuse` also drops the FUSE
    /// label (teardown only: otherwise the CSI plugin owns it).
    fn unwanted(&self, with_fuse: bool) -> BTreeMap<String, Option<String>> {
        let runtime_types = match &self.runtime_type {
            Some(runtime_type) => std::slice::from_ref(runtime_type),
            None => labels::RUNTIME_TYPES,
        };
        let fuse = self.keys.fuse_label();
        runtime_types
            .iter()
            .flat_map(|runtime_type| self.keys.all_node_label_keys(runtime_type))
            .filter(|key| with_fuse || *key != fuse)
            .map(|key| (key, None))
            .collect()
    }
}

/// Label patches that make `nodes` agree with `worker_nodes` (where our workers run).
pub fn sync_effects(labels_of: &CacheLabels<'_>, nodes: &[NodeView], worker_nodes: &BTreeSet<String>) -> Vec<Effect> {
    let on_cache_node = labels_of.wanted_on_cache_node();
    let elsewhere = labels_of.unwanted(false);
    nodes
        .iter()
        .filter_map(|node| {
            let wanted = if worker_nodes.contains(node.name()) { &on_cache_node } else { &elsewhere };
            patch_for(labels_of, node, wanted)
        })
        .collect()
}

/// Label patches that strip every label this dataset set, the FUSE label included.
pub fn teardown_effects(labels_of: &CacheLabels<'_>, nodes: &[NodeView]) -> Vec<Effect> {
    let unwanted = labels_of.unwanted(true);
    nodes.iter().filter_map(|node| patch_for(labels_of, node, &unwanted)).collect()
}

/// Label patches that strip what a dataset without a runtime left on nodes (a CSI NodeStage
/// that raced the runtime's teardown labels a node after the teardown read it), keeping the
/// FUSE label on `keep_fuse_on`, the nodes where a pod that uses the claim still runs.
pub fn orphan_effects(labels_of: &CacheLabels<'_>, nodes: &[NodeView], keep_fuse_on: &BTreeSet<String>) -> Vec<Effect> {
    let (keeping_fuse, all) = (labels_of.unwanted(false), labels_of.unwanted(true));
    nodes
        .iter()
        .filter_map(|node| {
            patch_for(labels_of, node, if keep_fuse_on.contains(node.name()) { &keeping_fuse } else { &all })
        })
        .collect()
}

/// The patch that applies `wanted` to `node`, also dropping our stale `fluid_exclusive` claim
/// (another dataset's claim is not ours to remove) and recomputing `fluid.io/dataset-num` from
/// the common labels the node will carry. Reads the node's labels without copying them.
fn patch_for(
    labels_of: &CacheLabels<'_>,
    node: &NodeView,
    wanted: &BTreeMap<String, Option<String>>,
) -> Option<Effect> {
    let current = node.labels();
    let drop_exclusive =
        !wanted.contains_key(labels::EXCLUSIVE) && current.get(labels::EXCLUSIVE) == Some(&labels_of.exclusive_value);
    let counted = |key: &str| key.starts_with(labels::COMMON_PREFIX) && labels_of.cluster_common_labels.contains(key);
    let kept = current
        .range::<str, _>((std::ops::Bound::Included(labels::COMMON_PREFIX), std::ops::Bound::Unbounded))
        .take_while(|(key, _)| key.starts_with(labels::COMMON_PREFIX))
        .filter(|(key, _)| counted(key) && wanted.get(*key).is_none_or(Option::is_some))
        .count();
    let added =
        wanted.iter().filter(|(key, value)| value.is_some() && !current.contains_key(*key) && counted(key)).count();
    let count = kept + added;
    let mut patch: BTreeMap<String, Option<String>> = wanted
        .iter()
        .filter(|(key, value)| current.get(*key) != value.as_ref())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if drop_exclusive {
        patch.insert(labels::EXCLUSIVE.to_string(), None);
    }
    // Compared as text without formatting it: most nodes already carry the right count.
    let count_is_current = match current.get(labels::DATASET_NUM) {
        None => count == 0,
        Some(text) => count > 0 && is_canonical_decimal(text, count),
    };
    if !count_is_current {
        patch.insert(labels::DATASET_NUM.to_string(), (count > 0).then(|| count.to_string()));
    }
    if patch.is_empty() {
        return None;
    }
    Some(Effect::PatchLabels {
        target: ObjectRef::cluster(Kind::Node, node.name()),
        labels: patch,
        resource_version: None,
    })
}

/// True when `text` is `n` written as `n.to_string()` writes it (no sign, no leading zero).
fn is_canonical_decimal(text: &str, n: usize) -> bool {
    let leading_zero = text.len() > 1 && text.starts_with('0');
    !text.starts_with('+') && !leading_zero && text.parse::<usize>() == Ok(n)
}

#[cfg(test)]
mod decimal_tests {
    use super::is_canonical_decimal;

    #[test]
    fn only_the_canonical_spelling_of_a_count_matches_it() {
        assert!(is_canonical_decimal("3", 3) && is_canonical_decimal("0", 0) && is_canonical_decimal("12", 12));
        for (text, n) in [("03", 3), ("+3", 3), ("3 ", 3), ("", 0), ("4", 3), ("x", 3)] {
            assert!(!is_canonical_decimal(text, n), "{text:?} is not {n}");
        }
    }
}
