//! The scheduler's cache, as kube-scheduler keeps one: per-node facts and usage, bound pods by
//! label, and nodes ordered by load, all updated from watch events so a decision never scans.
//!
//! Nodes and pods are interned to small integer ids: a selector that matches thousands of pods
//! walks a posting list of ids instead of looking each pod up by name.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use model::effect::ObjectRef;
use rustc_hash::FxHashMap;

use super::{HOSTNAME, Requests, cpu_millis, memory_bytes, node_ready, pod_requests};
use crate::apiserver::Pod;
use crate::apiserver::selector::matches_label_selector;

/// The least-allocated score of an empty node.
pub const FREE_SCORE_MAX: i64 = 100;

/// A node's id in the cache.
pub type NodeId = u32;
type PodId = u32;

/// Load is kept in parts per million of a node's pod capacity, so the order is finer than the
/// 0–100 score and pods spread one per node before any node gets a second.
const LOAD_SCALE: u64 = 1_000_000;

/// What the filters read from a node, parsed once per node change.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// The node.
    pub node: Arc<Node>,
    /// `Ready` is true.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Taints that keep pods off (`NoSchedule`, `NoExecute`).
    pub taints: Vec<Taint>,
    /// `allocatable.pods` (110 when absent, as the kubelet's default).
    pub max_pods: usize,
    /// `allocatable.cpu`, if set.
    pub cpu_millis: Option<u64>,
    /// `allocatable.memory`, if set.
    pub memory_bytes: Option<u64>,
}

impl NodeFacts {
    fn new(node: &Arc<Node>) -> Self {
        let spec = node.spec.as_ref();
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        let quantity = |key: &str| allocatable.and_then(|a| a.get(key)).map(|q| q.0.as_str());
        Self {
            node: node.clone(),
            ready: node_ready(node),
            unschedulable: spec.and_then(|s| s.unschedulable) == Some(true),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .cloned()
                .collect(),
            max_pods: quantity("pods").and_then(|q| q.parse().ok()).unwrap_or(110),
            cpu_millis: quantity("cpu").and_then(cpu_millis),
            memory_bytes: quantity("memory").and_then(memory_bytes),
        }
    }

    /// The node's labels.
    pub fn labels(&self) -> Option<&BTreeMap<String, String>> {
        self.node.metadata.labels.as_ref()
    }
}

/// The pods bound to one node that still hold resources (not Succeeded or Failed).
#[derive(Debug, Clone, Default)]
pub struct NodeUsage {
    pods: BTreeSet<PodId>,
    /// The sum of their requests.
    pub requested: Requests,
    repelling: BTreeSet<PodId>,
}

impl NodeUsage {
    /// Number of pods.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

#[derive(Debug, Clone)]
struct NodeSlot {
    name: String,
    /// None until the node exists (pods may name a node that does not, yet or any more).
    facts: Option<NodeFacts>,
    usage: NodeUsage,
    tie: u64,
}

#[derive(Debug, Clone)]
struct PodSlot {
    node: NodeId,
    pod: Arc<Pod>,
}

/// Which namespaces a pod-affinity term covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceScope {
    /// Every namespace (an empty `namespaceSelector`).
    All,
    /// These namespaces.
    Only(Vec<String>),
}

impl NamespaceScope {
    /// True when the scope covers `namespace`.
    pub fn covers(&self, namespace: &str) -> bool {
        match self {
            NamespaceScope::All => true,
            NamespaceScope::Only(namespaces) => namespaces.iter().any(|n| n == namespace),
        }
    }
}

/// Per node id, how many bound pods a term names, and the nodes with any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermCounts {
    /// Count per node id (ids past the end count 0).
    pub counts: Arc<Vec<i64>>,
    /// Nodes whose count is above 0, in no order.
    pub touched: Arc<Vec<NodeId>>,
}

/// The counts of a term asked about recently, kept current as pods come and go: every worker
/// placement asks about "any dataset worker", which names thousands of pods.
#[derive(Debug, Clone)]
struct KeptTerm {
    selector: LabelSelector,
    scope: NamespaceScope,
    counts: TermCounts,
    used_at: u64,
}

/// How many terms' counts are kept (the least recently asked goes first).
const KEPT_TERMS_MAX: usize = 8;

/// The cache.
#[derive(Debug, Clone, Default)]
pub struct SchedulerCache {
    nodes: Vec<NodeSlot>,
    node_ids: FxHashMap<String, NodeId>,
    /// `(load, tie-break, id)` of every existing node: the first feasible is the least loaded.
    by_load: BTreeSet<(u64, u64, NodeId)>,
    node_count: usize,
    pods: Vec<Option<PodSlot>>,
    pod_ids: FxHashMap<ObjectRef, PodId>,
    free_pod_ids: Vec<PodId>,
    /// Bound pods by label key, then value, to find the pods a selector names without a scan.
    pods_by_label: FxHashMap<String, BTreeMap<String, BTreeSet<PodId>>>,
    /// Mixed into the tie-break so that another seed spreads pods differently.
    seed: u64,
    /// Counts of recently asked terms (filled by a read, so behind a cell).
    kept_terms: RefCell<Vec<KeptTerm>>,
    /// A clock for `kept_terms`' eviction.
    term_asks: Cell<u64>,
}

/// The node a pod holds resources on, if it does.
fn counted(pod: &Pod) -> Option<&str> {
    if pod.is_completed() {
        return None;
    }
    pod.node_name()
}

/// The pod's required anti-affinity terms (it repels newcomers that match them).
pub fn required_anti_affinity(pod: &Pod) -> &[k8s_openapi::api::core::v1::PodAffinityTerm] {
    pod.affinity()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref())
        .unwrap_or_default()
}

impl SchedulerCache {
    /// An empty cache whose ties break by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, ..Self::default() }
    }

    fn slot_for(&mut self, name: &str) -> NodeId {
        if let Some(id) = self.node_ids.get(name) {
            return *id;
        }
        let id = self.nodes.len() as NodeId;
        let tie = model::labels::fnv1a_64(format!("{}/{name}", self.seed).as_bytes());
        self.nodes.push(NodeSlot { name: name.to_string(), facts: None, usage: NodeUsage::default(), tie });
        self.node_ids.insert(name.to_string(), id);
        id
    }

    /// A node was added, changed or (with `None`) deleted.
    pub fn observe_node(&mut self, name: &str, node: Option<&Arc<Node>>) {
        let id = self.slot_for(name);
        self.unorder(id);
        let slot = &mut self.nodes[id as usize];
        let existed = slot.facts.is_some();
        slot.facts = node.map(NodeFacts::new);
        match (existed, slot.facts.is_some()) {
            (false, true) => self.node_count += 1,
            (true, false) => self.node_count -= 1,
            _ => {}
        }
        self.order(id);
    }

    /// A pod was added, changed or (with `None`) deleted.
    pub fn observe_pod(&mut self, key: &ObjectRef, new: Option<&Arc<Pod>>) {
        // A status write (most pod writes) leaves every index as it is: swap the pod in place.
        if let (Some(pod), Some(id)) = (new, self.pod_ids.get(key))
            && let Some(slot) = self.pods[*id as usize].as_mut()
            && counted(pod).is_some_and(|node| node == self.nodes[slot.node as usize].name)
            // Versions share their metadata until it changes: most writes need no label compare.
            && (slot.pod.shares_metadata(pod) || slot.pod.metadata.labels == pod.metadata.labels)
            && slot.pod.same_spec(pod)
        {
            slot.pod = pod.clone();
            return;
        }
        if let Some(id) = self.pod_ids.remove(key) {
            self.forget_pod(id);
        }
        let Some(pod) = new else { return };
        let Some(node_name) = counted(pod) else { return };
        let node = self.slot_for(node_name);
        let id = match self.free_pod_ids.pop() {
            Some(id) => id,
            None => {
                self.pods.push(None);
                (self.pods.len() - 1) as PodId
            }
        };
        self.unorder(node);
        let usage = &mut self.nodes[node as usize].usage;
        let requests = pod_requests(pod);
        usage.requested.cpu_millis += requests.cpu_millis;
        usage.requested.memory_bytes += requests.memory_bytes;
        if !required_anti_affinity(pod).is_empty() {
            usage.repelling.insert(id);
        }
        usage.pods.insert(id);
        for (label, value) in pod.metadata.labels.iter().flatten() {
            self.pods_by_label.entry(label.clone()).or_default().entry(value.clone()).or_default().insert(id);
        }
        self.count_in_kept_terms(pod, node, 1);
        self.pods[id as usize] = Some(PodSlot { node, pod: pod.clone() });
        self.pod_ids.insert(key.clone(), id);
        self.order(node);
    }

    fn forget_pod(&mut self, id: PodId) {
        let Some(PodSlot { node, pod }) = self.pods[id as usize].take() else { return };
        self.count_in_kept_terms(&pod, node, -1);
        self.unorder(node);
        let usage = &mut self.nodes[node as usize].usage;
        let requests = pod_requests(&pod);
        usage.requested.cpu_millis = usage.requested.cpu_millis.saturating_sub(requests.cpu_millis);
        usage.requested.memory_bytes = usage.requested.memory_bytes.saturating_sub(requests.memory_bytes);
        usage.pods.remove(&id);
        usage.repelling.remove(&id);
        for (label, value) in pod.metadata.labels.iter().flatten() {
            let Some(values) = self.pods_by_label.get_mut(label) else { continue };
            if let Some(set) = values.get_mut(value) {
                set.remove(&id);
                if set.is_empty() {
                    values.remove(value);
                }
            }
            if values.is_empty() {
                self.pods_by_label.remove(label);
            }
        }
        self.free_pod_ids.push(id);
        self.order(node);
    }

    fn order_key(&self, id: NodeId) -> Option<(u64, u64, NodeId)> {
        let slot = self.nodes.get(id as usize)?;
        let facts = slot.facts.as_ref()?;
        let load = slot.usage.pods.len() as u64 * LOAD_SCALE / facts.max_pods.max(1) as u64;
        Some((load, slot.tie, id))
    }

    fn order(&mut self, id: NodeId) {
        if let Some(key) = self.order_key(id) {
            self.by_load.insert(key);
        }
    }

    fn unorder(&mut self, id: NodeId) {
        if let Some(key) = self.order_key(id) {
            self.by_load.remove(&key);
        }
    }

    /// The id of the node `name`, if it exists.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.node_ids.get(name).copied().filter(|id| self.nodes[*id as usize].facts.is_some())
    }

    /// The name of node `id`.
    pub fn node_name(&self, id: NodeId) -> &str {
        &self.nodes[id as usize].name
    }

    /// The place of node `id` in the load order (lower comes first).
    pub fn rank(&self, id: NodeId) -> (u64, u64) {
        self.order_key(id).map_or((u64::MAX, u64::MAX), |(load, tie, _)| (load, tie))
    }

    /// Every node, least loaded first.
    pub fn nodes_by_load(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.by_load.iter().map(|(_, _, id)| *id)
    }

    /// Number of node ids handed out (a bound for per-node arrays).
    pub fn node_slots(&self) -> usize {
        self.nodes.len()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// The facts of node `id`, if it exists.
    pub fn facts(&self, id: NodeId) -> Option<&NodeFacts> {
        self.nodes.get(id as usize)?.facts.as_ref()
    }

    /// The usage of node `id`.
    pub fn usage(&self, id: NodeId) -> &NodeUsage {
        &self.nodes[id as usize].usage
    }

    /// The pods on node `id` with required anti-affinity terms.
    pub fn repelling_pods(&self, id: NodeId) -> impl Iterator<Item = &Arc<Pod>> {
        self.usage(id).repelling.iter().filter_map(|p| self.pods[*p as usize].as_ref().map(|slot| &slot.pod))
    }

    /// `100 - used%` of the node's pod capacity: the least-allocated score, at most
    /// [`FREE_SCORE_MAX`] (an empty node).
    pub fn free_score(&self, id: NodeId) -> i64 {
        let Some(facts) = self.facts(id) else { return 0 };
        let count = self.usage(id).pods.len() as i64;
        FREE_SCORE_MAX - (count * FREE_SCORE_MAX / facts.max_pods.max(1) as i64).min(FREE_SCORE_MAX)
    }

    /// How many bound pods in `scope` match `selector`, per node. Kept current from then on, so
    /// asking again costs a lookup, not a walk over the pods.
    pub fn term_counts(&self, selector: &LabelSelector, scope: &NamespaceScope) -> TermCounts {
        let asked_at = self.term_asks.get() + 1;
        self.term_asks.set(asked_at);
        let mut kept = self.kept_terms.borrow_mut();
        if let Some(term) = kept.iter_mut().find(|term| term.selector == *selector && term.scope == *scope) {
            term.used_at = asked_at;
            return term.counts.clone();
        }
        let mut counts = vec![0i64; self.nodes.len()];
        let mut touched = Vec::new();
        for node in self.nodes_of_pods_matching(selector, &|namespace| scope.covers(namespace)) {
            if counts[node as usize] == 0 {
                touched.push(node);
            }
            counts[node as usize] += 1;
        }
        let counts = TermCounts { counts: Arc::new(counts), touched: Arc::new(touched) };
        if kept.len() >= KEPT_TERMS_MAX
            && let Some(oldest) = kept.iter().enumerate().min_by_key(|(_, term)| term.used_at).map(|(at, _)| at)
        {
            kept.swap_remove(oldest);
        }
        kept.push(KeptTerm {
            selector: selector.clone(),
            scope: scope.clone(),
            counts: counts.clone(),
            used_at: asked_at,
        });
        counts
    }

    /// Counts a pod coming to (`delta` 1) or leaving (-1) `node` in every kept term it matches.
    fn count_in_kept_terms(&mut self, pod: &Pod, node: NodeId, delta: i64) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        for term in self.kept_terms.get_mut().iter_mut() {
            if !term.scope.covers(namespace) || !matches_label_selector(&term.selector, pod.metadata.labels.as_ref()) {
                continue;
            }
            let counts = Arc::make_mut(&mut term.counts.counts);
            if counts.len() <= node as usize {
                counts.resize(node as usize + 1, 0);
            }
            let before = counts[node as usize];
            counts[node as usize] += delta;
            let after = counts[node as usize];
            let touched = Arc::make_mut(&mut term.counts.touched);
            if before == 0 && after > 0 {
                touched.push(node);
            } else if before > 0
                && after == 0
                && let Some(at) = touched.iter().position(|n| *n == node)
            {
                touched.swap_remove(at);
            }
        }
    }

    /// The node of every bound pod whose labels match `selector`, in namespaces `namespaces`
    /// accepts. Walks the label index when the selector names a label or value.
    pub fn nodes_of_pods_matching(&self, selector: &LabelSelector, namespaces: &dyn Fn(&str) -> bool) -> Vec<NodeId> {
        let mut out = Vec::new();
        // A selector of one requirement is answered exactly by its posting lists: no need to
        // match each pod's labels again (the common "any dataset worker" term names thousands).
        let requirements = selector.match_labels.as_ref().map_or(0, |m| m.len())
            + selector.match_expressions.as_ref().map_or(0, |e| e.len());
        let postings = self.narrowest_posting(selector);
        let exact = requirements == 1 && postings.is_some();
        let mut visit = |id: PodId| {
            if let Some(slot) = self.pods[id as usize].as_ref()
                && namespaces(slot.pod.metadata.namespace.as_deref().unwrap_or_default())
                && (exact || matches_label_selector(selector, slot.pod.metadata.labels.as_ref()))
            {
                out.push(slot.node);
            }
        };
        match postings {
            Some(postings) => postings.into_iter().flatten().for_each(|id| visit(*id)),
            None => (0..self.pods.len() as PodId).for_each(&mut visit),
        }
        out
    }

    /// The posting lists whose union holds every pod `selector` may match (the smallest such
    /// choice); None when it names nothing indexable (only `NotIn` or `DoesNotExist`, or empty).
    fn narrowest_posting<'a>(&'a self, selector: &LabelSelector) -> Option<Vec<&'a BTreeSet<PodId>>> {
        let mut best: Option<(usize, Vec<&'a BTreeSet<PodId>>)> = None;
        let mut consider = |lists: Vec<&'a BTreeSet<PodId>>| {
            let size = lists.iter().map(|l| l.len()).sum();
            if best.as_ref().is_none_or(|(s, _)| size < *s) {
                best = Some((size, lists));
            }
        };
        let posting = |key: &str, value: &str| self.pods_by_label.get(key)?.get(value);
        for (key, value) in selector.match_labels.iter().flatten() {
            consider(posting(key, value).into_iter().collect());
        }
        for requirement in selector.match_expressions.iter().flatten() {
            match requirement.operator.as_str() {
                "In" => {
                    consider(requirement.values.iter().flatten().filter_map(|v| posting(&requirement.key, v)).collect())
                }
                "Exists" => {
                    consider(self.pods_by_label.get(&requirement.key).into_iter().flat_map(BTreeMap::values).collect())
                }
                _ => {}
            }
        }
        best.map(|(_, lists)| lists)
    }

    /// The topology domain of node `id` for `topology_key`: the node itself for the hostname
    /// key, else its value of that label.
    pub fn domain_of(&self, id: NodeId, topology_key: &str) -> Option<&str> {
        if topology_key == HOSTNAME || topology_key.is_empty() {
            return Some(self.node_name(id));
        }
        self.facts(id)?.labels()?.get(topology_key).map(String::as_str)
    }
}
