//! Injected faults: settings that stay (conflict rate, stale reads, slow watches) and one-shot
//! faults (node down/up, pod crash, controller restart, FUSE crash, CSI plugin restart).

use model::effect::{Kind, ObjectRef};

use crate::sim::{Event, Sim};
use crate::trace;

/// Fault settings in force.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Probability that a controller write is refused with 409.
    pub conflict_rate: f64,
    /// Extra lag of the controller's cache behind the apiserver.
    pub stale_reads_ms: u64,
    /// Extra latency of watch notifications to the controller.
    pub slow_watch_ms: u64,
    /// CSI plugin restarts not yet finished.
    pub csi_restarts_pending: usize,
}

impl Faults {
    /// The watch latency in force.
    pub fn watch_latency_ms(&self, base_ms: u64) -> u64 {
        base_ms + self.slow_watch_ms
    }
}

/// A fault a scenario step can inject.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The node stops: its kubelet, CSI plugin and FUSE daemons go silent.
    NodeDown(String),
    /// The node comes back (rebooted: empty mount table).
    NodeUp(String),
    /// The pod's containers crash; the kubelet restarts them.
    PodCrash(ObjectRef),
    /// ferrofluid's controller restarts and loses its cache and queues.
    ControllerRestart,
    /// Controller writes get 409 with this probability.
    ConflictRate(f64),
    /// The controller's cache lags this much.
    StaleReads(u64),
    /// Watch notifications take this much longer.
    SlowWatches(u64),
    /// Every FUSE daemon on the node crashes: its mounts turn "transport endpoint is not connected".
    FuseCrash(String),
    /// The node's CSI plugin restarts: in-flight calls are lost and retried by the kubelet.
    CsiRestart(String),
}

impl Sim {
    /// Injects `fault` now.
    pub fn inject(&mut self, fault: &Fault) {
        self.stats.faults += 1;
        match fault {
            Fault::NodeDown(node) => self.node_down(node),
            Fault::NodeUp(node) => self.node_up(node),
            Fault::PodCrash(pod) => self.pod_crash(pod),
            Fault::ControllerRestart => self.controller_restart(),
            Fault::ConflictRate(rate) => {
                self.faults.conflict_rate = *rate;
                trace!(self, "fault", "apiserver", "controller writes now get 409 Conflict with probability {rate}");
            }
            Fault::StaleReads(lag_ms) => {
                self.faults.stale_reads_ms = *lag_ms;
                trace!(
                    self,
                    "fault",
                    "controller",
                    "informer cache now lags the apiserver by {}",
                    crate::clock::format_duration(*lag_ms)
                );
            }
            Fault::SlowWatches(latency_ms) => {
                self.faults.slow_watch_ms = *latency_ms;
                trace!(
                    self,
                    "fault",
                    "controller",
                    "watch notifications now take {} longer",
                    crate::clock::format_duration(*latency_ms)
                );
            }
            Fault::FuseCrash(node) => self.fuse_crash(node),
            Fault::CsiRestart(node) => self.csi_restart(node),
        }
        self.settle();
    }

    /// Crashes every FUSE pod on `node`.
    fn fuse_crash(&mut self, node: &str) {
        let fuse_pods: Vec<ObjectRef> = self
            .api
            .store
            .pods_on_node(node)
            .filter(|key| self.api.store.get(key).and_then(|o| o.as_pod()).is_some_and(|p| crate::fuse::is_fuse_pod(p)))
            .cloned()
            .collect();
        if fuse_pods.is_empty() {
            trace!(self, "fault", format!("Node/{node}"), "FUSE crash: no FUSE pod runs on the node");
        }
        for pod in fuse_pods {
            self.pod_crash(&pod);
        }
    }

    /// Restarts the CSI plugin of `node`: unavailable for a while; its stage records persist
    /// (they are files in its state directory), in-flight publish waits are dropped.
    fn csi_restart(&mut self, node: &str) {
        let Some(state) = self.nodes.get_mut(node) else {
            trace!(self, "fault", format!("Node/{node}"), "CSI restart: no such node");
            return;
        };
        state.csi_up = false;
        // Its recovery loop dies with it and starts over when it is back.
        self.kube_queue.cancel(&crate::kube::KubeTask::Recover(node.into()));
        self.faults.csi_restarts_pending += 1;
        trace!(self, "fault", format!("Node/{node}"), "CSI plugin restarts: in-flight calls are lost");
        let delay = self.config.csi_restart_ms;
        self.clock.schedule_in(delay, Event::CsiUp { node: node.to_string() });
    }

    /// The CSI plugin of `node` is back; the kubelet retries what waited on it.
    pub(crate) fn csi_up(&mut self, node: &str) {
        self.faults.csi_restarts_pending = self.faults.csi_restarts_pending.saturating_sub(1);
        let now_ms = self.clock.now_ms();
        if let Some(state) = self.nodes.get_mut(node) {
            state.csi_up = true;
            // Its recovery loop starts over, and looks at every record again.
            state.csi_started_at_ms = now_ms;
            state.recovery_checked_generation = None;
        }
        trace!(self, "csi", format!("Node/{node}"), "CSI plugin is back");
        let pods: Vec<ObjectRef> = self.api.store.pods_on_node(node).cloned().collect();
        for pod in pods {
            self.kick(crate::kube::KubeTask::Kubelet { node: node.into(), pod });
        }
    }

    /// True when an object of this reference exists.
    pub fn exists(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        self.api.store.get_named(kind, namespace, name).is_some()
    }
}
