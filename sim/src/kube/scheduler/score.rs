//! Scoring: preferred node affinity and preferred pod anti-affinity, normalized over all nodes,
//! plus the least-allocated score; and the nodes a preferred term names, which alone can score
//! above the rest.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodAffinityTerm;

use super::PodNeeds;
use super::cache::{self, NodeId};
use crate::apiserver::selector::{matches_label_selector, matches_node_term};
use crate::sim::Sim;

/// How many pods a pod-affinity term names in each topology domain.
pub(super) enum DomainCounts<'a> {
    /// Hostname topology: per node id, dense (a term like "any dataset worker" names thousands),
    /// as the scheduler cache keeps them.
    ByNode(cache::TermCounts),
    /// Another topology key: per value of that node label.
    ByLabel {
        /// The topology key.
        topology_key: String,
        /// Count per label value.
        counts: BTreeMap<&'a str, i64>,
    },
}

impl DomainCounts<'_> {
    /// The count in node `id`'s domain.
    pub(super) fn of(&self, cache: &cache::SchedulerCache, id: NodeId) -> i64 {
        match self {
            DomainCounts::ByNode(term) => term.counts.get(id as usize).copied().unwrap_or(0),
            DomainCounts::ByLabel { topology_key, counts } => {
                cache.domain_of(id, topology_key).and_then(|d| counts.get(d).copied()).unwrap_or(0)
            }
        }
    }
}

/// True when a pod-affinity term covers pods in `namespace`: its own namespace list (default:
/// the pod's), or every namespace for an empty `namespaceSelector`.
pub(super) fn term_covers(term: &PodAffinityTerm, own_namespace: &str, namespace: &str) -> bool {
    covers_every_namespace(term)
        || match &term.namespaces {
            Some(list) => list.iter().any(|n| n == namespace),
            None => own_namespace == namespace,
        }
}

/// True for an empty `namespaceSelector`: the term covers every namespace.
fn covers_every_namespace(term: &PodAffinityTerm) -> bool {
    term.namespace_selector.as_ref().is_some_and(|s| s.match_labels.is_none() && s.match_expressions.is_none())
}

/// The namespaces a pod-affinity term covers (see [`term_covers`]).
pub(super) fn term_scope(term: &PodAffinityTerm, own_namespace: &str) -> cache::NamespaceScope {
    match (&term.namespaces, covers_every_namespace(term)) {
        (_, true) => cache::NamespaceScope::All,
        (Some(list), false) => cache::NamespaceScope::Only(list.clone()),
        (None, false) => cache::NamespaceScope::Only(vec![own_namespace.to_string()]),
    }
}

/// True when `labels` match the term's selector (an absent selector matches every pod).
pub(super) fn term_selects(term: &PodAffinityTerm, labels: Option<&BTreeMap<String, String>>) -> bool {
    term.label_selector.as_ref().is_none_or(|selector| matches_label_selector(selector, labels))
}

/// Nodes a preferred term names, with their raw (affinity, penalty), in id order. Dense: a
/// Shared worker's spread term names every node that runs a dataset worker, thousands of them.
pub(super) struct NamedNodes {
    scored: Vec<(NodeId, (i64, i64))>,
    /// Membership by node id, when there are enough to be worth a table over every node.
    table: Option<Vec<bool>>,
}

/// Below this many named nodes, membership is a binary search (most pods name none).
const MEMBERSHIP_TABLE_FROM: usize = 64;

impl NamedNodes {
    fn new(scored: Vec<(NodeId, (i64, i64))>, node_slots: usize) -> Self {
        let table = (scored.len() >= MEMBERSHIP_TABLE_FROM).then(|| {
            let mut table = vec![false; node_slots];
            for (id, _) in &scored {
                table[*id as usize] = true;
            }
            table
        });
        Self { scored, table }
    }

    /// True when a preferred term names node `id`.
    pub(super) fn contains(&self, id: NodeId) -> bool {
        match &self.table {
            Some(table) => table.get(id as usize).copied().unwrap_or(false),
            None => self.scored.binary_search_by_key(&id, |(node, _)| *node).is_ok(),
        }
    }

    /// The named nodes with their raw (affinity, penalty), in id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &(NodeId, (i64, i64))> {
        self.scored.iter()
    }
}

/// Score parts that are the same for every node a preferred term does not name.
pub(super) struct Scoring {
    pub(super) max_affinity: i64,
    pub(super) max_penalty: i64,
}

impl Scoring {
    /// Preferred node affinity and preferred anti-affinity (weight 2 each, normalized over all
    /// nodes), plus the least-allocated score.
    pub(super) fn total(&self, affinity: i64, penalty: i64, free: i64) -> i64 {
        let affinity_score = if self.max_affinity > 0 { affinity * 100 / self.max_affinity } else { 0 };
        let anti_score = if self.max_penalty > 0 { (self.max_penalty - penalty) * 100 / self.max_penalty } else { 0 };
        2 * affinity_score + 2 * anti_score + free
    }
}

impl Sim {
    /// The nodes a preferred term names, with their raw (affinity, penalty), and the scoring
    /// that normalizes them; None when a term could name any node (say `NotIn`), so that every
    /// node needs its own score.
    pub(super) fn special_nodes(&self, needs: &PodNeeds<'_>) -> (Option<NamedNodes>, Scoring) {
        let cache = &self.kube.scheduler;
        let mut named: Vec<NodeId> = Vec::new();
        let mut any_node = false;
        // Preferred node affinity by node, over the nodes each term can name (a node outside
        // them matches no term: their affinity is 0 without reading their labels).
        let mut affinity: Vec<(NodeId, i64)> = Vec::new();
        for preferred in needs.preferred_nodes {
            let term = &preferred.preference;
            let pinned = term.match_fields.iter().flatten().find(|f| f.key == "metadata.name" && f.operator == "In");
            let mut term_nodes: Vec<NodeId> = if let Some(pin) = pinned {
                pin.values.iter().flatten().filter_map(|n| cache.node_id(n)).collect()
            } else {
                let key =
                    term.match_expressions.iter().flatten().find(|e| e.operator == "In" || e.operator == "Exists");
                match key {
                    Some(requirement) => {
                        self.api.store.nodes_with_label_key(&requirement.key).filter_map(|n| cache.node_id(n)).collect()
                    }
                    None => {
                        any_node = true;
                        Vec::new()
                    }
                }
            };
            term_nodes.sort_unstable();
            term_nodes.dedup();
            for id in &term_nodes {
                let labels = cache.facts(*id).and_then(|f| f.labels());
                if matches_node_term(term, cache.node_name(*id), labels) {
                    affinity.push((*id, i64::from(preferred.weight)));
                }
            }
            named.extend(term_nodes);
        }
        affinity.sort_unstable();
        for (_, counts) in &needs.preferred_anti {
            match counts {
                DomainCounts::ByNode(term) => named.extend(term.touched.iter().copied()),
                DomainCounts::ByLabel { topology_key, counts } => {
                    for node in self.api.store.nodes_with_label_key(topology_key).filter_map(|n| cache.node_id(n)) {
                        if cache.domain_of(node, topology_key).is_some_and(|d| counts.contains_key(d)) {
                            named.push(node);
                        }
                    }
                }
            }
        }
        named.sort_unstable();
        named.dedup();
        let affinity_of = |id: NodeId| {
            let from = affinity.partition_point(|(node, _)| *node < id);
            affinity[from..].iter().take_while(|(node, _)| *node == id).map(|(_, weight)| weight).sum::<i64>()
        };
        let penalty_of = |id: NodeId| -> i64 {
            needs.preferred_anti.iter().map(|(weight, counts)| weight * counts.of(cache, id)).sum()
        };
        let scored: Vec<(NodeId, (i64, i64))> =
            named.into_iter().map(|id| (id, (affinity_of(id), penalty_of(id)))).collect();
        let scoring = Scoring {
            max_affinity: scored.iter().map(|(_, s)| s.0).max().unwrap_or(0),
            max_penalty: scored.iter().map(|(_, s)| s.1).max().unwrap_or(0),
        };
        if any_node {
            // The maxima over every node: nodes outside `named` have affinity from the
            // unindexable term only, so take it over all of them.
            let all_affinity = cache.nodes_by_load().map(|id| self.preferences(needs, id).0).max().unwrap_or(0);
            let scoring = Scoring { max_affinity: all_affinity.max(scoring.max_affinity), ..scoring };
            return (None, scoring);
        }
        (Some(NamedNodes::new(scored, cache.node_slots())), scoring)
    }

    /// Raw preferred node affinity and preferred anti-affinity penalty of node `id`.
    pub(super) fn preferences(&self, needs: &PodNeeds<'_>, id: NodeId) -> (i64, i64) {
        let cache = &self.kube.scheduler;
        let labels = cache.facts(id).and_then(|f| f.labels());
        let name = cache.node_name(id);
        let affinity = needs
            .preferred_nodes
            .iter()
            .filter(|p| matches_node_term(&p.preference, name, labels))
            .map(|p| i64::from(p.weight))
            .sum();
        let penalty = needs.preferred_anti.iter().map(|(weight, counts)| weight * counts.of(cache, id)).sum();
        (affinity, penalty)
    }
}
