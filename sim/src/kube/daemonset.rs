//! The DaemonSet controller: one pod per matching node (nodeSelector, required node affinity,
//! taints), pinned with a `metadata.name` node-affinity term as the real controller does;
//! `OnDelete` keeps pods on an old template, `RollingUpdate` replaces them one at a time; status
//! counts desired, current, ready, available, unavailable and misscheduled pods.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSetStatus;
use k8s_openapi::api::core::v1::{
    Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Toleration,
};
use model::effect::{CompactString, ObjectRef};

use super::daemon_pods::DaemonPod;
use super::scheduler::tolerates;
use super::statefulset::{REVISION_LABEL, controller_reference, pod_from_template};
use crate::apiserver::selector::matches_node_term;
use crate::apiserver::{Deleted, Obj, Pod};
use crate::sim::Sim;
use crate::trace;

/// Tolerations the DaemonSet controller adds to every pod it makes.
pub(super) fn daemon_tolerations() -> Vec<Toleration> {
    let mut out = Vec::new();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        out.push(Toleration {
            key: Some(key.to_string()),
            operator: Some("Exists".to_string()),
            effect: Some(effect.to_string()),
            ..Default::default()
        });
    }
    out
}

impl Sim {
    /// The spec every pod of a DaemonSet shares: its template's, with the daemon tolerations
    /// and without affinity (each pod's own, pinned to its node). Built once per generation.
    fn daemon_pod_spec(
        &mut self,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        template_spec: &k8s_openapi::api::core::v1::PodSpec,
        tolerations: &[Toleration],
    ) -> Arc<k8s_openapi::api::core::v1::PodSpec> {
        let (uid, generation) = (meta.uid.clone().unwrap_or_default(), meta.generation.unwrap_or(0));
        if let Some((at, spec)) = self.kube.daemon_pod_specs.get(&uid)
            && *at == generation
        {
            return spec.clone();
        }
        let spec = Arc::new(k8s_openapi::api::core::v1::PodSpec {
            tolerations: Some(tolerations.to_vec()),
            affinity: None,
            node_name: None,
            ..template_spec.clone()
        });
        self.kube.daemon_pod_specs.insert(uid, (generation, spec.clone()));
        spec
    }

    /// Converges one DaemonSet.
    pub(crate) fn sync_daemonset(&mut self, key: &ObjectRef) {
        let Some(obj) = self.api.store.get(key).cloned() else { return };
        let Some(ds) = obj.as_daemonset().cloned() else { return };
        if ds.metadata.deletion_timestamp.is_some() {
            return;
        }
        // Borrowed, not cloned: a FUSE template is large and this runs on every pod change.
        let no_spec = Default::default();
        let spec: &k8s_openapi::api::apps::v1::DaemonSetSpec = ds.spec.as_ref().unwrap_or(&no_spec);
        let template = &spec.template;
        let no_pod_spec = Default::default();
        let pod_spec: &k8s_openapi::api::core::v1::PodSpec = template.spec.as_ref().unwrap_or(&no_pod_spec);
        let revision = format!("{}-{}", key.name, self.template_hash_of(&ds.metadata, template));
        let (wanted, tolerations) = self.wanted_nodes(key, &ds);

        // Pods by node, as the watch showed them before this sync (the index is current after
        // every event). The status counts what the writes below leave, as it did before them.
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let index = self.kube.daemon_pods.take(&uid);
        let mut by_node: BTreeMap<&str, Vec<(&ObjectRef, &DaemonPod)>> = BTreeMap::new();
        for (pod_key, pod) in &index {
            by_node.entry(pod.node.as_str()).or_default().push((pod_key, pod));
        }
        let mut counts = StatusCounts::default();
        for pod in index.values() {
            counts.add(pod, &wanted, &revision, 1);
        }
        // A pod this sync removed leaves the count (one it only marked terminating stays).
        let delete = |sim: &mut Sim, pod_key: &ObjectRef, pod: &DaemonPod, counts: &mut StatusCounts| {
            if sim.api.delete(pod_key, sim.clock.wall()) == Ok(Deleted::Removed) {
                counts.add(pod, &wanted, &revision, -1);
            }
        };

        let owner = controller_reference(&obj, "apps/v1");
        let now = self.clock.wall();
        // Pods get the metadata of the template and share one spec per DaemonSet generation.
        for node in &wanted {
            let pods: &[(&ObjectRef, &DaemonPod)] = by_node.get(node.as_str()).map_or(&[], Vec::as_slice);
            let live: Vec<&(&ObjectRef, &DaemonPod)> = pods.iter().filter(|(_, p)| !p.deleting).collect();
            for (pod_key, pod) in &live {
                if pod.failed {
                    trace!(self, "daemonset", pod_key.to_string(), "delete failed pod for recreation");
                    delete(self, pod_key, pod, &mut counts);
                }
            }
            if pods.is_empty() {
                let name = format!("{}-{}", key.name, self.rng.suffix(5));
                let extra = BTreeMap::from([(REVISION_LABEL.to_string(), revision.clone())]);
                let metadata = template.metadata.as_ref();
                let mut pod = pod_from_template(metadata, None, &key.namespace, &name, owner.clone(), extra);
                pod.share_spec(self.daemon_pod_spec(&ds.metadata, pod_spec, &tolerations));
                if let Some(affinity) = &pod_spec.affinity {
                    *pod.affinity_mut() = affinity.clone();
                }
                pin_to_node(&mut pod, node);
                if self.api.create(Obj::Pod(Arc::new(pod)), now).is_ok() {
                    counts.current += 1;
                    counts.updated += 1;
                    trace!(
                        self,
                        "daemonset",
                        format!("Pod/{}/{name}", key.namespace),
                        "create for node {node} ({})",
                        key.name
                    );
                }
            }
            for (pod_key, pod) in live.iter().skip(1) {
                delete(self, pod_key, pod, &mut counts);
            }
        }
        for (node, pods) in &by_node {
            if wanted.contains(*node) {
                continue;
            }
            for (pod_key, pod) in pods {
                if !pod.deleting {
                    trace!(
                        self,
                        "daemonset",
                        pod_key.to_string(),
                        "delete: node {node} no longer matches {}",
                        key.name
                    );
                    delete(self, pod_key, pod, &mut counts);
                }
            }
        }

        // RollingUpdate replaces one stale pod at a time; OnDelete (the FUSE default) never does.
        let strategy =
            spec.update_strategy.as_ref().and_then(|u| u.type_.clone()).unwrap_or_else(|| "RollingUpdate".to_string());
        if strategy == "RollingUpdate" {
            let on = |n: &CompactString| by_node.get(n.as_str()).into_iter().flatten();
            let all_ready = wanted.iter().all(|n| on(n).any(|(_, p)| p.available));
            if all_ready {
                let stale = wanted
                    .iter()
                    .flat_map(on)
                    .find(|(_, p)| p.revision.as_deref() != Some(revision.as_str()) && !p.deleting);
                if let Some((pod_key, pod)) = stale {
                    trace!(self, "daemonset", pod_key.to_string(), "delete (template changed, rolling update)");
                    delete(self, pod_key, pod, &mut counts);
                }
            }
        }
        drop(by_node);
        self.kube.daemon_pods.put_back(uid, index);

        let status = counts.status(ds.metadata.generation, wanted.len() as i32);
        if ds.status.as_ref() != Some(&status) {
            let _ = self.api.modify(key, None, |obj| {
                let Some(ds) = obj.daemonset_mut() else { return false };
                ds.status = Some(status);
                true
            });
        }
    }
}

/// The pod counts of a DaemonSet's status.
#[derive(Debug, Default)]
struct StatusCounts {
    current: i32,
    ready: i32,
    updated: i32,
    misscheduled: i32,
}

impl StatusCounts {
    /// Counts `pod` in (`sign` 1) or out (-1): on a wanted node it is current, ready if running
    /// and ready, updated if of the current revision; elsewhere it is misscheduled.
    fn add(&mut self, pod: &DaemonPod, wanted: &BTreeSet<CompactString>, revision: &str, sign: i32) {
        if wanted.contains(pod.node.as_str()) {
            self.current += sign;
            self.ready += sign * i32::from(pod.ready_running);
            self.updated += sign * i32::from(pod.revision.as_deref() == Some(revision));
        } else {
            self.misscheduled += sign;
        }
    }

    fn status(&self, observed_generation: Option<i64>, desired: i32) -> DaemonSetStatus {
        DaemonSetStatus {
            observed_generation,
            desired_number_scheduled: desired,
            current_number_scheduled: self.current,
            number_ready: self.ready,
            number_available: Some(self.ready),
            number_unavailable: Some((desired - self.ready).max(0)),
            number_misscheduled: self.misscheduled,
            updated_number_scheduled: Some(self.updated),
            ..Default::default()
        }
    }
}

pub(super) fn should_run(
    node: &Node,
    name: &str,
    selector: &BTreeMap<String, String>,
    required: Option<&NodeSelector>,
    tolerations: &[Toleration],
) -> bool {
    let labels = node.metadata.labels.as_ref();
    if !selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
        return false;
    }
    if let Some(required) = required
        && !required.node_selector_terms.iter().any(|t| matches_node_term(t, name, labels))
    {
        return false;
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    taints.iter().filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute").all(|t| tolerates(tolerations, t))
}

/// The node a daemon pod runs on or is pinned to.
pub(super) fn pod_node_target(pod: &Pod) -> Option<CompactString> {
    if let Some(node) = pod.node_name() {
        return Some(node.into());
    }
    let terms = pod.affinity()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?;
    terms.node_selector_terms.iter().find_map(|t| {
        t.match_fields
            .as_ref()?
            .iter()
            .find(|f| f.key == "metadata.name")?
            .values
            .as_ref()?
            .first()
            .map(|name| name.as_str().into())
    })
}

/// Pins a daemon pod to `node` with a `metadata.name` term (replacing the template's required
/// node affinity, as the DaemonSet controller does).
fn pin_to_node(pod: &mut Pod, node: &str) {
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".to_string(),
            operator: "In".to_string(),
            values: Some(vec![node.to_string()]),
        }]),
    };
    let node_affinity = pod.affinity_mut().node_affinity.get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution =
        Some(NodeSelector { node_selector_terms: vec![term] });
}
