//! The nodes each DaemonSet wants, kept current as nodes change: a DaemonSet sync reads them here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, NodeSelector, Toleration};
use model::effect::{CompactString, Kind, ObjectRef};
use rustc_hash::FxHashMap;

use super::daemonset::{daemon_tolerations, should_run};
use crate::sim::Sim;

/// The nodes each DaemonSet wants (nodeSelector, required node affinity, taints its pods
/// tolerate), by its key, for the UID and generation they were computed at. A sync reads them
/// here instead of testing every candidate node; a node change re-tests that node for the
/// DaemonSets that read its changed labels (or for all of them after a spec or status change).
#[derive(Debug, Clone, Default)]
pub struct WantedIndex {
    by_daemonset: FxHashMap<ObjectRef, WantedNodes>,
}

#[derive(Debug, Clone)]
struct WantedNodes {
    uid: String,
    generation: i64,
    /// The pods' tolerations: the template's and the DaemonSet controller's own.
    tolerations: Arc<[Toleration]>,
    nodes: BTreeSet<CompactString>,
}

impl WantedIndex {
    /// Forgets a DaemonSet that is gone.
    pub fn forget(&mut self, key: &ObjectRef) {
        self.by_daemonset.remove(key);
    }

    /// The filed entry of `key`, if it was computed for `ds`'s spec.
    fn current(&self, key: &ObjectRef, ds: &DaemonSet) -> Option<&WantedNodes> {
        self.by_daemonset.get(key).filter(|filed| filed.is_of(ds))
    }
}

impl WantedNodes {
    /// True when these were computed for this DaemonSet's spec (its UID and generation).
    fn is_of(&self, ds: &DaemonSet) -> bool {
        ds.metadata.uid.as_deref().unwrap_or_default() == self.uid
            && ds.metadata.generation.unwrap_or(0) == self.generation
    }
}

/// What a DaemonSet version asks of a node.
struct NodeTerms<'a> {
    selector: &'a BTreeMap<String, String>,
    required: Option<&'a NodeSelector>,
}

fn node_terms(ds: &DaemonSet) -> NodeTerms<'_> {
    static NO_SELECTOR: BTreeMap<String, String> = BTreeMap::new();
    let pod_spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    NodeTerms {
        selector: pod_spec.and_then(|s| s.node_selector.as_ref()).unwrap_or(&NO_SELECTOR),
        required: pod_spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()),
    }
}

impl Sim {
    /// The nodes `ds` wants and its pods' tolerations: filed ones while they are of its current
    /// spec, else computed over the candidate nodes and filed.
    pub(super) fn wanted_nodes(
        &mut self,
        key: &ObjectRef,
        ds: &DaemonSet,
    ) -> (BTreeSet<CompactString>, Arc<[Toleration]>) {
        if let Some(filed) = self.kube.daemon_wanted.current(key, ds) {
            return (filed.nodes.clone(), filed.tolerations.clone());
        }
        let template_spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
        let mut tolerations = template_spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
        tolerations.extend(daemon_tolerations());
        let tolerations: Arc<[Toleration]> = tolerations.into();
        let terms = node_terms(ds);
        let candidates: Vec<CompactString> = match terms.selector.keys().next() {
            Some(first) => self.api.store.nodes_with_label_key(first).cloned().collect(),
            None => self.kube.node_names.iter().cloned().collect(),
        };
        let mut nodes: BTreeSet<CompactString> = BTreeSet::new();
        for name in candidates {
            let Some(node) = self.api.store.get_named(Kind::Node, "", &name).and_then(|o| o.as_node()) else {
                continue;
            };
            if should_run(node, &name, terms.selector, terms.required, &tolerations) {
                nodes.insert(name);
            }
        }
        let filed = WantedNodes {
            uid: ds.metadata.uid.clone().unwrap_or_default(),
            generation: ds.metadata.generation.unwrap_or(0),
            tolerations: tolerations.clone(),
            nodes: nodes.clone(),
        };
        self.kube.daemon_wanted.by_daemonset.insert(key.clone(), filed);
        (nodes, tolerations)
    }

    /// A node changed (`node` None: it is gone): re-tests it for each of `daemonsets` that has
    /// wanted nodes filed. An entry of another spec than the DaemonSet's current one is dropped
    /// (its next sync computes it afresh).
    pub(crate) fn refresh_wanted(&mut self, daemonsets: &BTreeSet<ObjectRef>, name: &str, node: Option<&Node>) {
        for key in daemonsets {
            let Some(filed) = self.kube.daemon_wanted.by_daemonset.get_mut(key) else { continue };
            let ds = self.api.store.get(key).and_then(|o| o.as_daemonset());
            let Some(ds) = ds.filter(|ds| filed.is_of(ds)) else {
                self.kube.daemon_wanted.by_daemonset.remove(key);
                continue;
            };
            let terms = node_terms(ds);
            if node.is_some_and(|node| should_run(node, name, terms.selector, terms.required, &filed.tolerations)) {
                if !filed.nodes.contains(name) {
                    filed.nodes.insert(name.into());
                }
            } else {
                filed.nodes.remove(name);
            }
        }
    }
}
