//! Pod status as kubelet reports it: the phase, the conditions it owns, each container's state.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP,
    PodCondition, PodIP,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

/// What kubelet knows of one container.
#[derive(Debug, Clone)]
pub struct ContainerReport {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// Running since, if running.
    pub running_since: Option<jiff::Timestamp>,
    /// Waiting, with this reason (e.g. `ContainerCreating`, `CrashLoopBackOff`) and message.
    pub waiting: Option<(String, String)>,
    /// How it last ended: exit code and when.
    pub last_exit: Option<(i32, jiff::Timestamp)>,
    /// Passing its readiness probe (or has none) while running.
    pub ready: bool,
    /// Restarts so far.
    pub restarts: i32,
    /// Its process, for `containerID`.
    pub pid: Option<u32>,
}

/// The pod as a whole.
#[derive(Debug, Clone)]
pub struct PodReport {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    pub phase: &'static str,
    /// The node's address.
    pub host_ip: String,
    /// The pod's address (the host's on the host network); empty before the sandbox exists.
    pub pod_ip: String,
    /// Volumes are set up and the sandbox exists.
    pub initialized: bool,
    /// When kubelet first took the pod.
    pub start_time: jiff::Timestamp,
    /// Its containers.
    pub containers: Vec<ContainerReport>,
}

fn time(t: jiff::Timestamp) -> Time {
    Time(t)
}

impl ContainerReport {
    fn status(&self) -> ContainerStatus {
        let state = if let Some(since) = self.running_since {
            ContainerState {
                running: Some(ContainerStateRunning { started_at: Some(time(since)) }),
                ..Default::default()
            }
        } else if let Some((reason, message)) = &self.waiting {
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: Some(message.clone()).filter(|m| !m.is_empty()),
                }),
                ..Default::default()
            }
        } else {
            ContainerState {
                waiting: Some(ContainerStateWaiting { reason: Some("ContainerCreating".into()), message: None }),
                ..Default::default()
            }
        };
        let last_state = self.last_exit.map(|(code, at)| ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                finished_at: Some(time(at)),
                reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("ferrofluid-node-agent://{}", self.image),
            container_id: self.pid.map(|pid| format!("ferrofluid-node-agent://{pid}")),
            ready: self.ready && self.running_since.is_some(),
            started: Some(self.running_since.is_some()),
            restart_count: self.restarts,
            state: Some(state),
            last_state,
            ..Default::default()
        }
    }
}

impl PodReport {
    /// True when every container runs and is ready.
    pub fn ready(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(|c| c.ready && c.running_since.is_some())
    }

    /// The strategic merge patch of `status` kubelet sends; conditions merge by type, so the
    /// scheduler's `PodScheduled` stays.
    pub fn patch(&self) -> Value {
        let now = jiff::Timestamp::now();
        let condition = |type_: &str, ok: bool, reason: Option<&str>| PodCondition {
            type_: type_.to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: reason.map(str::to_string),
            last_transition_time: Some(time(now)),
            ..Default::default()
        };
        let ready = self.ready();
        let not_ready = (!ready).then_some("ContainersNotReady");
        let conditions = vec![
            condition("PodReadyToStartContainers", self.initialized, None),
            condition("Initialized", self.initialized, None),
            condition("ContainersReady", ready, not_ready),
            condition("Ready", ready, not_ready),
        ];
        let statuses: Vec<ContainerStatus> = self.containers.iter().map(ContainerReport::status).collect();
        let mut status = json!({
            "phase": self.phase,
            "hostIP": self.host_ip,
            "hostIPs": [HostIP { ip: self.host_ip.clone() }],
            "startTime": time(self.start_time),
            "conditions": conditions,
            "containerStatuses": statuses,
        });
        if !self.pod_ip.is_empty() {
            status["podIP"] = json!(self.pod_ip);
            status["podIPs"] = json!([PodIP { ip: self.pod_ip.clone() }]);
        }
        json!({ "status": status })
    }
}
