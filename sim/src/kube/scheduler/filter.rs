//! The filters a node must pass: cordon, taints, readiness, nodeSelector, required node
//! affinity, volume node affinity, capacity, and required pod anti-affinity both ways.

use super::cache::{self, NodeId};
use super::score::{term_covers, term_selects};
use super::{HOSTNAME, PodNeeds, tolerates};
use crate::apiserver::selector::matches_node_term;
use crate::sim::Sim;

impl Sim {
    /// The filters, from the cache: cordon, taints, readiness, nodeSelector, required node
    /// affinity, volume node affinity, capacity, and required pod anti-affinity both ways.
    pub(super) fn filter(&self, needs: &PodNeeds<'_>, id: NodeId) -> Result<(), String> {
        let cache = &self.kube.scheduler;
        let Some(facts) = cache.facts(id) else { return Err("node(s) were not found".to_string()) };
        let name = cache.node_name(id);
        if facts.unschedulable {
            return Err("node(s) were unschedulable".to_string());
        }
        // kube-scheduler v1.36's words, which no longer name the taint (seen on the testbed).
        if facts.taints.iter().any(|taint| !tolerates(needs.tolerations, taint)) {
            return Err("node(s) had untolerated taint(s)".to_string());
        }
        if !facts.ready {
            return Err("node(s) were not ready".to_string());
        }
        let labels = facts.labels();
        if let Some(selector) = needs.pod.spec.as_ref().and_then(|s| s.node_selector.as_ref())
            && !selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        {
            return Err("node(s) didn't match Pod's node affinity/selector".to_string());
        }
        if let Some(terms) = &needs.required_terms
            && !terms.iter().any(|t| matches_node_term(t, name, labels))
        {
            return Err("node(s) didn't match Pod's node affinity/selector".to_string());
        }
        if needs.volume_terms.iter().any(|terms| !terms.iter().any(|t| matches_node_term(t, name, labels))) {
            return Err("node(s) had volume node affinity conflict".to_string());
        }
        let usage = cache.usage(id);
        if usage.pod_count() + 1 > facts.max_pods {
            return Err("Too many pods".to_string());
        }
        if let Some(cpu) = facts.cpu_millis
            && needs.requests.cpu_millis > 0
            && usage.requested.cpu_millis + needs.requests.cpu_millis > cpu
        {
            return Err("Insufficient cpu".to_string());
        }
        if let Some(memory) = facts.memory_bytes
            && needs.requests.memory_bytes > 0
            && usage.requested.memory_bytes + needs.requests.memory_bytes > memory
        {
            return Err("Insufficient memory".to_string());
        }
        if needs.blocked.iter().any(|counts| counts.of(cache, id) > 0) {
            return Err("node(s) didn't match pod anti-affinity rules".to_string());
        }
        for other in cache.repelling_pods(id) {
            let other_ns = other.metadata.namespace.as_deref().unwrap_or_default();
            let repelled = cache::required_anti_affinity(other).iter().any(|term| {
                term.topology_key == HOSTNAME
                    && term_covers(term, other_ns, &needs.key.namespace)
                    && term_selects(term, needs.pod.metadata.labels.as_ref())
            });
            if repelled {
                return Err("node(s) didn't satisfy existing pods anti-affinity rules".to_string());
            }
        }
        Ok(())
    }
}
