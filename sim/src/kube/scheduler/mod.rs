//! The scheduler: filters (volumes, nodeSelector, node affinity, taints, pod anti-affinity,
//! capacity) and scores (preferred node affinity, preferred anti-affinity, least allocated).
//!
//! It scores every feasible node, like kube-scheduler with `percentageOfNodesToScore: 100`,
//! reading nodes and their pods from its own cache ([`cache`]) as kube-scheduler does, and
//! breaks ties by a seeded order, so another seed places pods differently.

pub mod cache;
mod filter;
mod score;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorTerm, PodAffinityTerm, PodCondition, PreferredSchedulingTerm, Taint, Toleration,
};
use model::effect::{Kind, ObjectRef};

use self::cache::NodeId;
use self::score::{DomainCounts, term_covers, term_scope};
use crate::apiserver::Pod;
use crate::apiserver::store::claims_of;
use crate::sim::Sim;
use crate::trace;

/// The hostname label, the usual anti-affinity topology.
pub const HOSTNAME: &str = "kubernetes.io/hostname";

/// Requests of a pod: milli-CPU and memory bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// Milli-CPU.
    pub cpu_millis: u64,
    /// Bytes.
    pub memory_bytes: u64,
}

/// Parses a CPU quantity (`500m`, `2`, `1.5`) into millicores.
pub fn cpu_millis(text: &str) -> Option<u64> {
    if let Some(milli) = text.strip_suffix('m') {
        return milli.parse().ok();
    }
    text.parse::<f64>().ok().map(|cores| (cores * 1000.0).round() as u64)
}

/// Parses a memory quantity (`1Gi`, `512Mi`, `1G`, `1000`) into bytes.
pub fn memory_bytes(text: &str) -> Option<u64> {
    model::quantity::Quantity(text.to_string()).to_bytes("memory").ok()
}

/// The sum of a pod's container requests.
pub fn pod_requests(pod: &Pod) -> Requests {
    let mut total = Requests::default();
    for container in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        let Some(requests) = container.resources.as_ref().and_then(|r| r.requests.as_ref()) else { continue };
        if let Some(cpu) = requests.get("cpu").and_then(|q| cpu_millis(&q.0)) {
            total.cpu_millis += cpu;
        }
        if let Some(memory) = requests.get("memory").and_then(|q| memory_bytes(&q.0)) {
            total.memory_bytes += memory;
        }
    }
    total
}

/// True when `tolerations` tolerate `taint`.
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = match t.operator.as_deref() {
            Some("Exists") => t.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key),
            _ => {
                t.key.as_deref() == Some(taint.key.as_str())
                    && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
            }
        };
        effect_ok && key_ok
    })
}

/// True when the node is Ready.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What one decision reads from the pod being scheduled, worked out once.
struct PodNeeds<'a> {
    key: &'a ObjectRef,
    pod: &'a Pod,
    tolerations: &'a [Toleration],
    required_terms: Option<&'a [NodeSelectorTerm]>,
    volume_terms: Vec<Vec<NodeSelectorTerm>>,
    requests: Requests,
    /// Per required anti-affinity term: the pods it names, per domain (any count blocks).
    blocked: Vec<DomainCounts<'a>>,
    /// Preferred node affinity terms.
    preferred_nodes: &'a [PreferredSchedulingTerm],
    /// Per preferred anti-affinity term: its weight and the pods it names, per domain.
    preferred_anti: Vec<(i64, DomainCounts<'a>)>,
}

/// A named node in the scan's heap: its score, then its rank and id reversed (the greatest is
/// the best: the highest score, then the lowest rank, then the lowest id).
type Ranked = (i64, Reverse<(u64, u64)>, Reverse<NodeId>);

/// Where the scan looks.
enum Candidates {
    /// Every node (the cache's load order).
    ByLoad,
    /// These nodes only (a pin, or a narrow nodeSelector), least loaded first.
    Listed(Vec<NodeId>),
}

impl Sim {
    /// Schedules one pod, or records why it stays Pending.
    ///
    /// It filters and scores like kube-scheduler with `percentageOfNodesToScore: 100`, except that
    /// preferred terms are normalized over all nodes rather than the feasible ones, so every node
    /// has a score of its own. That makes it a best-first search: only the few nodes a preferred
    /// term names can score above the rest, and among the rest the least loaded scores highest,
    /// so nodes are tried in score order and the first that passes the filters wins. Ties break
    /// by a seeded order, so another seed places pods differently.
    pub(crate) fn schedule(&mut self, key: &ObjectRef) {
        let Some(pod) = self.api.store.get(key).and_then(|o| o.as_pod()).cloned() else {
            self.kube.unschedulable.remove(key);
            self.kube.pending_reason.remove(key);
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() || pod.node_name().is_some() {
            self.kube.unschedulable.remove(key);
            self.kube.pending_reason.remove(key);
            return;
        }
        // Volume binding: every PVC must exist and be bound; a PV's node affinity filters nodes.
        let mut volume_terms = Vec::new();
        for claim in claims_of(&pod) {
            let Some(pvc) =
                self.api.store.get_named(Kind::PersistentVolumeClaim, &key.namespace, &claim).and_then(|o| o.as_pvc())
            else {
                return self.unschedulable(key, format!("persistentvolumeclaim \"{claim}\" not found"));
            };
            if pvc.metadata.deletion_timestamp.is_some() {
                return self.unschedulable(key, format!("persistentvolumeclaim \"{claim}\" is being deleted"));
            }
            let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            if phase != "Bound" {
                return self.unschedulable(
                    key,
                    format!("pod has unbound immediate PersistentVolumeClaims (\"{claim}\" is {phase})"),
                );
            }
            let volume = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
            if let Some(pv) = self.api.store.get_named(Kind::PersistentVolume, "", &volume).and_then(|o| o.as_pv())
                && let Some(required) =
                    pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref())
            {
                volume_terms.push(required.node_selector_terms.clone());
            }
        }
        let chosen = match self.choose_node(key, &pod, volume_terms) {
            Ok(node) => node,
            Err(reason) => return self.unschedulable(key, reason),
        };
        self.kube.unschedulable.remove(key);
        self.kube.pending_reason.remove(key);
        let result = self.api.modify(key, None, |obj| {
            let Some(pod) = obj.pod_mut() else { return false };
            pod.bind(&chosen);
            let status = pod.status.get_or_insert_with(Default::default);
            set_condition(status.conditions.get_or_insert_with(Vec::new), "PodScheduled", "True", None, None);
            true
        });
        if result.is_ok() {
            trace!(self, "scheduler", key.to_string(), "scheduled on {chosen}");
        }
    }

    /// The node for the pod, or the "0/N nodes are available" message.
    fn choose_node(
        &self,
        key: &ObjectRef,
        pod: &Pod,
        volume_terms: Vec<Vec<NodeSelectorTerm>>,
    ) -> Result<String, String> {
        let cache = &self.kube.scheduler;
        let needs = self.needs(key, pod, volume_terms);
        let (candidates, node_count) = self.candidates(pod, needs.required_terms);
        if node_count == 0 {
            return Err("0/0 nodes are available: no nodes in the cluster".to_string());
        }
        let listed: Option<BTreeSet<NodeId>> = match &candidates {
            Candidates::Listed(ids) => Some(ids.iter().copied().collect()),
            Candidates::ByLoad => None,
        };
        let in_candidates = |id: &NodeId| listed.as_ref().is_none_or(|l| l.contains(id));
        let (special, scoring) = self.special_nodes(&needs);
        let base_bonus = scoring.total(0, 0, 0);
        // The named nodes, best first (the highest score, then the lowest rank, then the lowest
        // id); the rest come from the load order. A heap: the scan usually stops after a few.
        // A named node that scores below every unnamed one even when empty (a crowded node of a
        // spread term) can only come after them all: it waits in `outranked`, unscored.
        let ranked_entry = |id: NodeId, affinity: i64, penalty: i64| {
            (scoring.total(affinity, penalty, cache.free_score(id)), Reverse(cache.rank(id)), Reverse(id))
        };
        let mut outranked: Vec<(NodeId, i64, i64)> = Vec::new();
        let mut ranked: BinaryHeap<Ranked> = match &special {
            Some(special) => special
                .iter()
                .filter(|(id, _)| in_candidates(id))
                .filter_map(|(id, (affinity, penalty))| {
                    if scoring.total(*affinity, *penalty, cache::FREE_SCORE_MAX) < base_bonus {
                        outranked.push((*id, *affinity, *penalty));
                        return None;
                    }
                    Some(ranked_entry(*id, *affinity, *penalty))
                })
                .collect(),
            None => {
                let all: Vec<NodeId> = match &candidates {
                    Candidates::ByLoad => cache.nodes_by_load().collect(),
                    Candidates::Listed(ids) => ids.clone(),
                };
                all.into_iter()
                    .map(|id| {
                        let (affinity, penalty) = self.preferences(&needs, id);
                        ranked_entry(id, affinity, penalty)
                    })
                    .collect()
            }
        };
        let rest: Box<dyn Iterator<Item = NodeId>> = match (&special, &candidates) {
            (None, _) => Box::new(std::iter::empty()),
            (Some(special), Candidates::ByLoad) => {
                Box::new(cache.nodes_by_load().filter(move |id| !special.contains(*id)))
            }
            (Some(special), Candidates::Listed(ids)) => {
                Box::new(ids.iter().copied().filter(move |id| !special.contains(*id)))
            }
        };
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut examined = 0usize;
        let mut try_node = |id: NodeId, reasons: &mut BTreeMap<String, usize>| {
            examined += 1;
            match self.filter(&needs, id) {
                Ok(()) => true,
                Err(reason) => {
                    *reasons.entry(reason).or_default() += 1;
                    false
                }
            }
        };
        for id in rest {
            // Named nodes that score higher (or as high and come first) go before this one.
            let here = (base_bonus + cache.free_score(id), Reverse(cache.rank(id)));
            while let Some(&(score, rank, Reverse(named))) = ranked.peek()
                && (score, rank) >= here
            {
                ranked.pop();
                if try_node(named, &mut reasons) {
                    return Ok(cache.node_name(named).to_string());
                }
            }
            if try_node(id, &mut reasons) {
                return Ok(cache.node_name(id).to_string());
            }
        }
        ranked.extend(outranked.into_iter().map(|(id, affinity, penalty)| ranked_entry(id, affinity, penalty)));
        while let Some((_, _, Reverse(named))) = ranked.pop() {
            if try_node(named, &mut reasons) {
                return Ok(cache.node_name(named).to_string());
            }
        }
        // Nodes a pin or nodeSelector left out of the scan did not match it.
        let unexamined = node_count.saturating_sub(examined);
        if unexamined > 0 {
            *reasons.entry("node(s) didn't match Pod's node affinity/selector".to_string()).or_default() += unexamined;
        }
        let detail: Vec<String> = reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        Err(format!("0/{node_count} nodes are available: {}", detail.join(", ")))
    }

    fn needs<'a>(&'a self, key: &'a ObjectRef, pod: &'a Pod, volume_terms: Vec<Vec<NodeSelectorTerm>>) -> PodNeeds<'a> {
        let spec = pod.spec.as_ref();
        let affinity = pod.affinity();
        let required_terms = affinity
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|r| r.node_selector_terms.as_slice());
        let preferred_nodes = affinity
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
            .unwrap_or_default();
        let anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let cache = &self.kube.scheduler;
        let matching_domains = |term: &PodAffinityTerm| -> DomainCounts<'a> {
            let selector = term.label_selector.clone().unwrap_or_default();
            if term.topology_key == HOSTNAME || term.topology_key.is_empty() {
                return DomainCounts::ByNode(cache.term_counts(&selector, &term_scope(term, &key.namespace)));
            }
            let nodes = cache.nodes_of_pods_matching(&selector, &|ns| term_covers(term, &key.namespace, ns));
            let mut counts: BTreeMap<&'a str, i64> = BTreeMap::new();
            for node in nodes {
                if let Some(domain) = cache.domain_of(node, &term.topology_key) {
                    *counts.entry(domain).or_default() += 1;
                }
            }
            DomainCounts::ByLabel { topology_key: term.topology_key.clone(), counts }
        };
        let blocked = anti
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            .into_iter()
            .flatten()
            .map(matching_domains)
            .collect();
        let preferred_anti = anti
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
            .into_iter()
            .flatten()
            .map(|w| (i64::from(w.weight), matching_domains(&w.pod_affinity_term)))
            .collect();
        PodNeeds {
            key,
            pod,
            tolerations: spec.and_then(|s| s.tolerations.as_deref()).unwrap_or_default(),
            required_terms,
            volume_terms,
            requests: pod_requests(pod),
            blocked,
            preferred_nodes,
            preferred_anti,
        }
    }

    /// Where to look, and how many nodes the decision is over (for the "0/N" message).
    fn candidates(&self, pod: &Pod, required_terms: Option<&[NodeSelectorTerm]>) -> (Candidates, usize) {
        let cache = &self.kube.scheduler;
        let rank_sorted = |names: &mut dyn Iterator<Item = &str>| {
            let mut ids: Vec<NodeId> = names.filter_map(|n| cache.node_id(n)).collect();
            ids.sort_by_cached_key(|id| cache.rank(*id));
            ids.dedup();
            ids
        };
        // A term with matchFields metadata.name pins the candidates (the DaemonSet controller's way).
        let pinned: Option<Vec<String>> = required_terms.and_then(|terms| {
            let mut names = Vec::new();
            for term in terms {
                let fields = term.match_fields.as_deref().unwrap_or(&[]);
                let pin = fields.iter().find(|f| f.key == "metadata.name" && f.operator == "In")?;
                names.extend(pin.values.clone().unwrap_or_default());
            }
            Some(names)
        });
        if let Some(names) = pinned {
            let ids = rank_sorted(&mut names.iter().map(String::as_str));
            let count = ids.len();
            return (Candidates::Listed(ids), count);
        }
        let node_count = cache.node_count();
        let selector = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
        let narrowest = selector
            .into_iter()
            .flatten()
            .map(|(label, _)| (label, self.api.store.nodes_with_label_key(label).count()))
            .min_by_key(|(_, count)| *count);
        match narrowest {
            Some((label, count)) if count * 4 <= node_count => {
                let mut labelled = self.api.store.nodes_with_label_key(label).map(|name| name.as_str());
                (Candidates::Listed(rank_sorted(&mut labelled)), node_count)
            }
            _ => (Candidates::ByLoad, node_count),
        }
    }

    fn unschedulable(&mut self, key: &ObjectRef, reason: String) {
        // Pods waiting for a PVC are retried by PVC changes, not by every node change.
        if reason.starts_with("0/") {
            self.kube.unschedulable.insert(key.clone());
        } else {
            self.kube.unschedulable.remove(key);
        }
        if self.kube.pending_reason.get(key) == Some(&reason) {
            return;
        }
        self.kube.pending_reason.insert(key.clone(), reason.clone());
        trace!(self, "scheduler", key.to_string(), "stays Pending: {reason}");
        let message = reason.clone();
        let _ = self.api.modify(key, None, |obj| {
            let Some(pod) = obj.pod_mut() else { return false };
            let status = pod.status.get_or_insert_with(Default::default);
            status.phase.get_or_insert_with(|| "Pending".to_string());
            set_condition(
                status.conditions.get_or_insert_with(Vec::new),
                "PodScheduled",
                "False",
                Some("Unschedulable"),
                Some(&message),
            )
        });
    }
}

/// Sets a pod condition; returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<PodCondition>,
    type_: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> bool {
    let wanted = PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.map(str::to_string),
        message: message.map(str::to_string),
        ..Default::default()
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing)
            if existing.status == wanted.status
                && existing.reason == wanted.reason
                && existing.message == wanted.message =>
        {
            false
        }
        Some(existing) => {
            *existing = wanted;
            true
        }
        None => {
            conditions.push(wanted);
            true
        }
    }
}

#[cfg(test)]
mod tests;
