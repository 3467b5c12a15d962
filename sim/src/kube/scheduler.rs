//! The scheduler: filters (volumes, nodeSelector, node affinity, taints, pod anti-affinity,
//! capacity) and scores (preferred node affinity, preferred anti-affinity, least allocated).
//!
//! Like kube-scheduler it stops filtering once it has found enough feasible nodes
//! (`percentageOfNodesToScore`'s adaptive default), starting where the previous scan stopped,
//! and breaks score ties at random (from the seeded scheduler stream).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, Taint, Toleration};
use model::effect::{Kind, ObjectRef};

use crate::apiserver::selector::{matches_label_selector, matches_node_term};
use crate::apiserver::store::claims_of;
use crate::rng::Stream;
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

struct Candidate {
    name: String,
    node: Arc<Node>,
}

impl Sim {
    /// Schedules one pod, or records why it stays Pending.
    pub(crate) fn schedule(&mut self, key: &ObjectRef) {
        let Some(pod) = self.api.store.get(key).and_then(|o| o.as_pod()).cloned() else {
            self.kube.unschedulable.remove(key);
            self.kube.pending_reason.remove(key);
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() || pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
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
                return self.unschedulable(key, &pod, format!("persistentvolumeclaim \"{claim}\" not found"));
            };
            if pvc.metadata.deletion_timestamp.is_some() {
                return self.unschedulable(key, &pod, format!("persistentvolumeclaim \"{claim}\" is being deleted"));
            }
            let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            if phase != "Bound" {
                return self.unschedulable(
                    key,
                    &pod,
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

        let spec = pod.spec.clone().unwrap_or_default();
        let affinity = spec.affinity.clone().unwrap_or_default();
        let node_affinity = affinity.node_affinity.clone().unwrap_or_default();
        let required_terms = node_affinity
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .map(|r| r.node_selector_terms.clone());
        // A term with matchFields metadata.name pins the candidates (the DaemonSet controller's way).
        let pinned: Option<Vec<String>> = required_terms.as_ref().and_then(|terms| {
            let mut names = Vec::new();
            for term in terms {
                let fields = term.match_fields.as_deref().unwrap_or(&[]);
                let pin = fields.iter().find(|f| f.key == "metadata.name" && f.operator == "In")?;
                names.extend(pin.values.clone().unwrap_or_default());
            }
            Some(names)
        });

        let all_nodes: Vec<Candidate> = match &pinned {
            Some(names) => names
                .iter()
                .filter_map(|n| {
                    self.api
                        .store
                        .get_named(Kind::Node, "", n)
                        .and_then(|o| o.as_node())
                        .map(|node| Candidate { name: n.clone(), node: node.clone() })
                })
                .collect(),
            None => Vec::new(),
        };
        let node_count = if pinned.is_some() { all_nodes.len() } else { self.kube.node_names.len() };
        if node_count == 0 {
            return self.unschedulable(key, &pod, "0/0 nodes are available: no nodes in the cluster".to_string());
        }
        let percentage = (50usize.saturating_sub(node_count / 125)).max(5);
        let to_find = if node_count <= 100 { node_count } else { (node_count * percentage / 100).max(100) };

        let tolerations = spec.tolerations.clone().unwrap_or_default();
        let requests = pod_requests(&pod);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut feasible: Vec<Candidate> = Vec::new();
        let mut examined = 0usize;
        let start = if pinned.is_some() { 0 } else { self.kube.next_start_node % node_count };
        let node_names = if pinned.is_some() { Default::default() } else { self.kube.node_names.clone() };
        let total = if pinned.is_some() { all_nodes.len() } else { node_names.len() };
        let mut pinned_nodes = all_nodes.into_iter();
        for i in 0..total {
            if feasible.len() >= to_find {
                break;
            }
            let candidate = if pinned.is_some() {
                match pinned_nodes.next() {
                    Some(candidate) => candidate,
                    None => break,
                }
            } else {
                let name = &node_names[(start + i) % total];
                let Some(node) = self.api.store.get_named(Kind::Node, "", name).and_then(|o| o.as_node()) else {
                    continue;
                };
                Candidate { name: name.clone(), node: node.clone() }
            };
            examined += 1;
            match self.filter(key, &pod, &candidate, &tolerations, required_terms.as_deref(), &volume_terms, requests) {
                Ok(()) => feasible.push(candidate),
                Err(reason) => *reasons.entry(reason).or_default() += 1,
            }
        }
        if pinned.is_none() {
            self.kube.next_start_node = (start + examined) % node_count.max(1);
        }
        if feasible.is_empty() {
            let detail: Vec<String> = reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
            return self.unschedulable(key, &pod, format!("0/{node_count} nodes are available: {}", detail.join(", ")));
        }
        let chosen = self.score(key, &pod, feasible);
        self.kube.unschedulable.remove(key);
        self.kube.pending_reason.remove(key);
        let node_name = chosen.clone();
        let result = self.api.modify(key, None, |obj| {
            let Some(pod) = obj.pod_mut() else { return false };
            pod.spec.get_or_insert_with(Default::default).node_name = Some(node_name.clone());
            let status = pod.status.get_or_insert_with(Default::default);
            set_condition(status.conditions.get_or_insert_with(Vec::new), "PodScheduled", "True", None, None);
            true
        });
        if result.is_ok() {
            trace!(self, "scheduler", key.to_string(), "scheduled on {chosen}");
        }
    }

    fn unschedulable(&mut self, key: &ObjectRef, _pod: &Pod, reason: String) {
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

    #[allow(clippy::too_many_arguments)]
    fn filter(
        &self,
        key: &ObjectRef,
        pod: &Pod,
        candidate: &Candidate,
        tolerations: &[Toleration],
        required_terms: Option<&[k8s_openapi::api::core::v1::NodeSelectorTerm]>,
        volume_terms: &[Vec<k8s_openapi::api::core::v1::NodeSelectorTerm>],
        requests: Requests,
    ) -> Result<(), String> {
        let node = &candidate.node;
        let labels = node.metadata.labels.as_ref();
        let spec = node.spec.clone().unwrap_or_default();
        if spec.unschedulable == Some(true) {
            return Err("node(s) were unschedulable".to_string());
        }
        for taint in spec.taints.iter().flatten() {
            if (taint.effect == "NoSchedule" || taint.effect == "NoExecute") && !tolerates(tolerations, taint) {
                return Err(format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    taint.key,
                    taint.value.clone().unwrap_or_default()
                ));
            }
        }
        if !node_ready(node) {
            return Err("node(s) were not ready".to_string());
        }
        if let Some(selector) = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref())
            && !selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            return Err("node(s) didn't match Pod's node affinity/selector".to_string());
        }
        if let Some(terms) = required_terms
            && !terms.iter().any(|t| matches_node_term(t, &candidate.name, labels))
        {
            return Err("node(s) didn't match Pod's node affinity/selector".to_string());
        }
        for terms in volume_terms {
            if !terms.iter().any(|t| matches_node_term(t, &candidate.name, labels)) {
                return Err("node(s) had volume node affinity conflict".to_string());
            }
        }
        // Capacity: pod count, CPU, memory.
        let allocatable = node.status.as_ref().and_then(|s| s.allocatable.clone()).unwrap_or_default();
        let max_pods = allocatable.get("pods").and_then(|q| q.0.parse::<usize>().ok()).unwrap_or(110);
        let mut used = Requests::default();
        let mut count = 0usize;
        let mut node_pods: Vec<Arc<Pod>> = Vec::new();
        for other in self.api.store.pods_on_node(&candidate.name) {
            if other == key {
                continue;
            }
            let Some(other) = self.api.store.get(other).and_then(|o| o.as_pod()) else { continue };
            let phase = other.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                continue;
            }
            count += 1;
            let r = pod_requests(other);
            used.cpu_millis += r.cpu_millis;
            used.memory_bytes += r.memory_bytes;
            node_pods.push(other.clone());
        }
        if count + 1 > max_pods {
            return Err("Too many pods".to_string());
        }
        if let Some(cpu) = allocatable.get("cpu").and_then(|q| cpu_millis(&q.0))
            && requests.cpu_millis > 0
            && used.cpu_millis + requests.cpu_millis > cpu
        {
            return Err("Insufficient cpu".to_string());
        }
        if let Some(memory) = allocatable.get("memory").and_then(|q| memory_bytes(&q.0))
            && requests.memory_bytes > 0
            && used.memory_bytes + requests.memory_bytes > memory
        {
            return Err("Insufficient memory".to_string());
        }
        // Required pod anti-affinity, both ways.
        let anti = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.clone())
            .unwrap_or_default();
        for term in &anti {
            let selector = term.label_selector.clone().unwrap_or_default();
            let namespaces = term.namespaces.clone().unwrap_or_else(|| vec![key.namespace.clone()]);
            let all_namespaces = term
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.match_labels.is_none() && s.match_expressions.is_none());
            let domain = self.topology_pods(&candidate.name, labels, &term.topology_key, &node_pods);
            let clash = domain.iter().any(|other| {
                (all_namespaces || namespaces.contains(&other.metadata.namespace.clone().unwrap_or_default()))
                    && matches_label_selector(&selector, other.metadata.labels.as_ref())
            });
            if clash {
                return Err("node(s) didn't match pod anti-affinity rules".to_string());
            }
        }
        for other in &node_pods {
            let terms = other
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
            for term in terms.into_iter().flatten().filter(|t| t.topology_key == HOSTNAME) {
                let selector = term.label_selector.clone().unwrap_or_default();
                let other_ns = other.metadata.namespace.clone().unwrap_or_default();
                let namespaces = term.namespaces.clone().unwrap_or_else(|| vec![other_ns]);
                let all_namespaces = term
                    .namespace_selector
                    .as_ref()
                    .is_some_and(|s| s.match_labels.is_none() && s.match_expressions.is_none());
                if (all_namespaces || namespaces.contains(&key.namespace))
                    && matches_label_selector(&selector, pod.metadata.labels.as_ref())
                {
                    return Err("node(s) didn't satisfy existing pods anti-affinity rules".to_string());
                }
            }
        }
        Ok(())
    }

    /// Pods in the topology domain of `node` for `topology_key` (the node itself for hostname).
    fn topology_pods(
        &self,
        _node: &str,
        labels: Option<&BTreeMap<String, String>>,
        topology_key: &str,
        node_pods: &[Arc<Pod>],
    ) -> Vec<Arc<Pod>> {
        if topology_key == HOSTNAME || topology_key.is_empty() {
            return node_pods.to_vec();
        }
        let Some(value) = labels.and_then(|l| l.get(topology_key)) else { return Vec::new() };
        let mut out = Vec::new();
        for other_node in self.api.store.nodes_with_label_key(topology_key) {
            let same = self
                .api
                .store
                .get_named(Kind::Node, "", other_node)
                .and_then(|o| o.meta().labels.as_ref())
                .and_then(|l| l.get(topology_key))
                == Some(value);
            if !same {
                continue;
            }
            for pod in self.api.store.pods_on_node(other_node) {
                if let Some(pod) = self.api.store.get(pod).and_then(|o| o.as_pod()) {
                    out.push(pod.clone());
                }
            }
        }
        out
    }

    fn score(&mut self, key: &ObjectRef, pod: &Pod, feasible: Vec<Candidate>) -> String {
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.clone()).unwrap_or_default();
        let preferred_nodes = affinity
            .node_affinity
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .unwrap_or_default();
        let preferred_anti = affinity
            .pod_anti_affinity
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .unwrap_or_default();
        let mut raw: Vec<(i64, i64, i64)> = Vec::with_capacity(feasible.len());
        for candidate in &feasible {
            let labels = candidate.node.metadata.labels.as_ref();
            let node_affinity: i64 = preferred_nodes
                .iter()
                .filter(|p| matches_node_term(&p.preference, &candidate.name, labels))
                .map(|p| i64::from(p.weight))
                .sum();
            let pods: Vec<Arc<Pod>> = self
                .api
                .store
                .pods_on_node(&candidate.name)
                .filter(|k| *k != key)
                .filter_map(|k| self.api.store.get(k).and_then(|o| o.as_pod()).cloned())
                .collect();
            let mut anti: i64 = 0;
            for weighted in &preferred_anti {
                let term = &weighted.pod_affinity_term;
                let selector = term.label_selector.clone().unwrap_or_default();
                let namespaces = term.namespaces.clone().unwrap_or_else(|| vec![key.namespace.clone()]);
                let domain = self.topology_pods(&candidate.name, labels, &term.topology_key, &pods);
                let matching = domain
                    .iter()
                    .filter(|p| namespaces.contains(&p.metadata.namespace.clone().unwrap_or_default()))
                    .filter(|p| matches_label_selector(&selector, p.metadata.labels.as_ref()))
                    .count() as i64;
                anti -= i64::from(weighted.weight) * matching;
            }
            let allocatable = candidate.node.status.as_ref().and_then(|s| s.allocatable.clone()).unwrap_or_default();
            let max_pods = allocatable.get("pods").and_then(|q| q.0.parse::<i64>().ok()).unwrap_or(110).max(1);
            let free = 100 - (pods.len() as i64 * 100 / max_pods).min(100);
            raw.push((node_affinity, anti, free));
        }
        let max_affinity = raw.iter().map(|r| r.0).max().unwrap_or(0);
        let (min_anti, max_anti) =
            (raw.iter().map(|r| r.1).min().unwrap_or(0), raw.iter().map(|r| r.1).max().unwrap_or(0));
        let mut best: Option<(i64, usize)> = None;
        let mut ties = 0u64;
        for (i, (affinity, anti, free)) in raw.iter().enumerate() {
            let affinity_score = if max_affinity > 0 { affinity * 100 / max_affinity } else { 0 };
            let anti_score = if max_anti > min_anti { (anti - min_anti) * 100 / (max_anti - min_anti) } else { 0 };
            let total = 2 * affinity_score + 2 * anti_score + free;
            match best {
                Some((score, _)) if total < score => {}
                Some((score, _)) if total == score => {
                    ties += 1;
                    if self.rng.below(Stream::Scheduler, ties + 1) == 0 {
                        best = Some((total, i));
                    }
                }
                _ => {
                    ties = 0;
                    best = Some((total, i));
                }
            }
        }
        feasible[best.map(|b| b.1).unwrap_or(0)].name.clone()
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
