//! The node-lifecycle controller: a silent node turns NotReady (Ready=Unknown, unreachable
//! taints) after `node_monitor_grace_ms`; its pods turn not-ready; after
//! `pod_eviction_timeout_ms` pods that do not tolerate `node.kubernetes.io/unreachable` are
//! evicted and, the kubelet being gone, removed at once (Kubernetes' out-of-service behaviour),
//! so their StatefulSet recreates them elsewhere. DaemonSet pods tolerate it and stay.

use k8s_openapi::api::core::v1::{NodeCondition, Taint};
use model::effect::{Kind, ObjectRef};

use super::KubeTask;
use super::scheduler::{set_condition, tolerates};
use crate::sim::Sim;
use crate::trace;

/// The taint key of an unreachable node.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

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
        trace!(self, "fault", format!("Node/{node}"), "node goes down: kubelet, CSI plugin and FUSE daemons stop");
        let at = now_ms + self.config.node_monitor_grace_ms;
        self.kick_at(KubeTask::NodeLifecycle(node.into()), at);
    }

    /// Brings a node back (a reboot: empty mount table); the kubelet starts its pods again.
    pub fn node_up(&mut self, node: &str) {
        let Some(state) = self.nodes.get_mut(node) else {
            trace!(self, "fault", format!("Node/{node}"), "node up: no such node");
            return;
        };
        state.up = true;
        state.down_since_ms = None;
        state.reboot();
        trace!(self, "fault", format!("Node/{node}"), "node comes back (rebooted, mount table empty)");
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
        self.retry_unschedulable();
    }

    /// Node-lifecycle pass for one node.
    pub(crate) fn node_lifecycle(&mut self, node: &str) {
        let Some(state) = self.nodes.get(node) else { return };
        let Some(down_since_ms) = state.down_since_ms else { return };
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
                let tolerations = obj.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
                let forever =
                    tolerations.iter().any(|t| t.toleration_seconds.is_none()) && tolerates(&tolerations, &unreachable);
                if forever {
                    continue;
                }
                trace!(self, "node-lifecycle", pod.to_string(), "evicted from unreachable node {node} and removed");
                self.api.remove(&pod);
            }
        } else {
            let next = if now_ms >= not_ready_at { evict_at } else { not_ready_at };
            self.kick_at(KubeTask::NodeLifecycle(node.into()), next);
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
