//! The node-lifecycle controller, its taint manager and PodGC, as measured on a real control
//! plane: a silent node turns NotReady (Ready=Unknown, unreachable taints) after
//! `node_monitor_grace_ms`; its pods turn not-ready; after `pod_eviction_timeout_ms` (the
//! pods' `tolerationSeconds` for the unreachable taint) pods that do not tolerate it forever are
//! evicted: deleted gracefully, so with the kubelet gone they stay Terminating (a StatefulSet
//! does not replace them) until the kubelet comes back and finishes them, or until an SRE
//! taints the node `node.kubernetes.io/out-of-service` and PodGC force-deletes them. DaemonSet
//! pods tolerate unreachable and stay. The taint manager also evicts at once the pods that do
//! not tolerate a NoExecute taint someone put on the node (out-of-service among them).

use k8s_openapi::api::core::v1::{Node, NodeCondition, Taint};
use model::effect::{Kind, ObjectRef};

use super::KubeTask;
use super::scheduler::{node_ready, set_condition, tolerates};
use crate::sim::Sim;
use crate::trace;

/// The taint key of an unreachable node.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// The taint key of a node not ready (posted by its kubelet, which the simulator's nodes never do).
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The taint an SRE puts on a node that is shut down for good, so that its pods move
/// (non-graceful node shutdown): PodGC force-deletes its Terminating pods.
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// How often PodGC runs (kube-controller-manager's `gcCheckPeriod`).
pub const POD_GC_PERIOD_MS: u64 = 20_000;

/// NoExecute taints of `node` that the taint manager evicts for without a timer: any but the
/// node-lifecycle controller's own, whose evictions wait for the pods' `tolerationSeconds`.
pub(super) fn user_no_execute_taints(node: &Node) -> Vec<Taint> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    taints.iter().filter(|t| t.effect == "NoExecute" && t.key != UNREACHABLE && t.key != NOT_READY).cloned().collect()
}

/// True when the node carries the out-of-service taint (NoExecute, any value).
pub fn out_of_service(node: &Node) -> bool {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    taints.iter().any(|t| t.key == OUT_OF_SERVICE && t.effect == "NoExecute")
}

impl Sim {
    /// Stops a node: its kubelet, CSI plugin, FUSE daemons and workers go silent.
    pub fn node_down(&mut self, node: &str) {
        let now_ms = self.clock.now_ms();
        let Some(state) = self.nodes.get_mut(node) else {
            trace!(self, "fault", format!("Node/{node}"), "node down: no such node");
            return;
        };
        state.up = false;
        state.down_since_ms = Some(now_ms);
        // Its app pods stop reading.
        let readers: Vec<(crate::control::Pair, ObjectRef)> = state
            .pods
            .iter()
            .flat_map(|(key, run)| {
                run.volumes.iter().filter_map(|v| crate::kubelet::volume_pair(v).map(|p| (p, key.clone())))
            })
            .collect();
        for (pair, key) in readers {
            self.workers.stop_read(&pair, &key, now_ms);
        }
        self.kube_queue.cancel(&KubeTask::Recover(node.into()));
        trace!(self, "fault", format!("Node/{node}"), "node goes down: kubelet, CSI plugin and FUSE daemons stop");
        self.cache_nodes_changed(None);
        let at = now_ms + self.config.node_monitor_grace_ms;
        self.kick_at(KubeTask::NodeLifecycle(node.into()), at);
    }

    /// Brings a node back (a reboot: empty mount table); the kubelet reconstructs its volumes
    /// from disk and starts its pods again.
    pub fn node_up(&mut self, node: &str) {
        let now_ms = self.clock.now_ms();
        let Some(state) = self.nodes.get_mut(node) else {
            trace!(self, "fault", format!("Node/{node}"), "node up: no such node");
            return;
        };
        state.up = true;
        state.down_since_ms = None;
        state.reboot(now_ms);
        // The node posts status again: no NotReady or eviction timer of its silence is due.
        self.kube_queue.cancel(&KubeTask::NodeLifecycle(node.into()));
        let reconstructed: Vec<ObjectRef> = state.pods.keys().cloned().collect();
        trace!(self, "fault", format!("Node/{node}"), "node comes back (rebooted, mount table empty)");
        if !reconstructed.is_empty() {
            let staged = self.nodes[node].staged.len();
            trace!(
                self,
                format!("kubelet/{node}"),
                format!("Node/{node}"),
                "reconstructed from disk: {staged} staged volume(s), volumes of {} pod(s)",
                reconstructed.len()
            );
        }
        let key = ObjectRef::cluster(Kind::Node, node);
        let _ = self.api.modify(&key, None, |obj| {
            let Some(node) = obj.node_mut() else { return false };
            set_node_ready(node, "True");
            if let Some(taints) = node.spec.as_mut().and_then(|s| s.taints.as_mut()) {
                taints.retain(|t| t.key != UNREACHABLE);
            }
            true
        });
        let pods: Vec<ObjectRef> = self.api.store.pods_on_node(node).cloned().collect();
        for pod in &pods {
            let _ = self.api.modify(pod, None, |obj| {
                let Some(pod) = obj.pod_mut() else { return false };
                let status = pod.status.get_or_insert_with(Default::default);
                status.phase = Some("Pending".to_string());
                set_condition(
                    status.conditions.get_or_insert_with(Vec::new),
                    "Ready",
                    "False",
                    Some("NodeRestarted"),
                    None,
                );
                true
            });
            self.kick(KubeTask::kubelet(node, pod));
        }
        // Pods gone while the node was down: their reconstructed volumes are torn down.
        for pod in reconstructed.iter().filter(|key| !pods.contains(key)) {
            self.kick(KubeTask::kubelet(node, pod));
        }
        // Once the pods are known again, volumes none of them uses are unstaged.
        self.kick(KubeTask::VolumeManager(node.into()));
        self.cache_nodes_changed(Some(node));
        self.retry_unschedulable();
    }

    /// Node-lifecycle pass for one node: readiness and unreachable evictions of a silent node,
    /// then the taint manager's evictions for NoExecute taints and PodGC's turn.
    pub(crate) fn node_lifecycle(&mut self, node: &str) {
        let Some(state) = self.nodes.get(node) else { return };
        if let Some(down_since_ms) = state.down_since_ms {
            self.unreachable_lifecycle(node, down_since_ms);
        }
        self.taint_evictions(node);
    }

    fn unreachable_lifecycle(&mut self, node: &str, down_since_ms: u64) {
        let now_ms = self.clock.now_ms();
        let not_ready_at = down_since_ms + self.config.node_monitor_grace_ms;
        let evict_at = not_ready_at + self.config.pod_eviction_timeout_ms;
        let key = ObjectRef::cluster(Kind::Node, node);
        if now_ms >= not_ready_at {
            let changed = self.api.modify(&key, None, |obj| {
                let Some(node) = obj.node_mut() else { return false };
                let was_ready = super::scheduler::node_ready(node);
                if !was_ready {
                    return false;
                }
                set_node_ready(node, "Unknown");
                let taints = node.spec.get_or_insert_with(Default::default).taints.get_or_insert_with(Vec::new);
                for effect in ["NoSchedule", "NoExecute"] {
                    taints.push(Taint {
                        key: UNREACHABLE.to_string(),
                        effect: effect.to_string(),
                        value: None,
                        time_added: None,
                    });
                }
                true
            });
            if changed == Ok(true) {
                trace!(
                    self,
                    "node-lifecycle",
                    key.to_string(),
                    "NotReady (Ready=Unknown): kubelet stopped posting status; tainted {UNREACHABLE}"
                );
                let pods: Vec<ObjectRef> = self.api.store.pods_on_node(node).cloned().collect();
                for pod in pods {
                    let _ = self.api.modify(&pod, None, |obj| {
                        let Some(pod) = obj.pod_mut() else { return false };
                        let status = pod.status.get_or_insert_with(Default::default);
                        set_condition(
                            status.conditions.get_or_insert_with(Vec::new),
                            "Ready",
                            "False",
                            Some("NodeNotReady"),
                            Some("the node is unreachable"),
                        )
                    });
                }
            }
        }
        if now_ms >= evict_at {
            let unreachable =
                Taint { key: UNREACHABLE.to_string(), effect: "NoExecute".to_string(), value: None, time_added: None };
            let pods: Vec<ObjectRef> = self.api.store.pods_on_node(node).cloned().collect();
            for pod in pods {
                let Some(obj) = self.api.store.get(&pod).and_then(|o| o.as_pod()) else { continue };
                if obj.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let tolerations = obj.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
                let forever =
                    tolerations.iter().any(|t| t.toleration_seconds.is_none()) && tolerates(&tolerations, &unreachable);
                if forever {
                    continue;
                }
                self.evict(
                    &pod,
                    &format!("evicted from unreachable node {node}: Terminating while its kubelet is gone"),
                );
            }
        } else {
            let next = if now_ms >= not_ready_at { evict_at } else { not_ready_at };
            self.kick_at(KubeTask::NodeLifecycle(node.into()), next);
        }
    }

    /// Deletes a pod gracefully (the eviction API): its kubelet, when it has one, finishes it.
    fn evict(&mut self, pod: &ObjectRef, why: &str) {
        let now = self.clock.wall();
        if self.api.delete(pod, now).is_ok() {
            trace!(self, "node-lifecycle", pod.to_string(), "{why}");
        }
    }

    /// The taint manager: pods that do not tolerate a NoExecute taint put on the node are
    /// evicted at once. Then, on an out-of-service node that is not ready, PodGC's next pass
    /// force-deletes the Terminating pods.
    fn taint_evictions(&mut self, node: &str) {
        let Some(node_obj) = self.api.store.get_named(Kind::Node, "", node).and_then(|o| o.as_node()).cloned() else {
            return;
        };
        let taints = user_no_execute_taints(&node_obj);
        if taints.is_empty() {
            return;
        }
        let pods: Vec<ObjectRef> = self.api.store.pods_on_node(node).cloned().collect();
        for pod in &pods {
            let Some(obj) = self.api.store.get(pod).and_then(|o| o.as_pod()) else { continue };
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let tolerations = obj.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
            if let Some(taint) = taints.iter().find(|t| !tolerates(tolerations, t)) {
                let why = format!("evicted: node {node} is tainted {}:{}", taint.key, taint.effect);
                self.evict(pod, &why);
            }
        }
        let terminating =
            self.api.store.pods_on_node(node).any(|pod| self.api.store.get(pod).is_some_and(|o| o.is_deleting()));
        if out_of_service(&node_obj) && !node_ready(&node_obj) && terminating {
            let now_ms = self.clock.now_ms();
            let at_ms = (now_ms / POD_GC_PERIOD_MS + 1) * POD_GC_PERIOD_MS;
            self.kick_at(KubeTask::PodGc(node.into()), at_ms);
        }
    }

    /// PodGC's pass for one node: a node out of service and not ready gets its Terminating pods
    /// force-deleted (their kubelet will never finish them).
    pub(crate) fn pod_gc(&mut self, node: &str) {
        let Some(node_obj) = self.api.store.get_named(Kind::Node, "", node).and_then(|o| o.as_node()) else { return };
        if !out_of_service(node_obj) || node_ready(node_obj) {
            return;
        }
        let terminating: Vec<ObjectRef> = self
            .api
            .store
            .pods_on_node(node)
            .filter(|pod| self.api.store.get(pod).is_some_and(|o| o.is_deleting()))
            .cloned()
            .collect();
        for pod in terminating {
            self.api.remove(&pod);
            trace!(self, "pod-gc", pod.to_string(), "force-deleted: Terminating on out-of-service node {node}");
        }
    }
}

/// Sets the node's Ready condition.
pub fn set_node_ready(node: &mut k8s_openapi::api::core::v1::Node, status: &str) {
    let conditions = node.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(condition) => condition.status = status.to_string(),
        None => conditions.push(NodeCondition {
            type_: "Ready".to_string(),
            status: status.to_string(),
            ..Default::default()
        }),
    }
}
