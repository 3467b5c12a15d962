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
    /// Ended for good: exit code and when.
    pub terminated: Option<(i32, jiff::Timestamp)>,
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
    /// Per condition type: its status and since when (the last transition).
    pub transitions: std::collections::BTreeMap<String, (bool, jiff::Timestamp)>,
}

fn time(t: jiff::Timestamp) -> Time {
    Time(t)
}

/// A container that exited with `code` at `at`.
fn terminated((code, at): (i32, jiff::Timestamp)) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            finished_at: Some(time(at)),
            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl ContainerReport {
    fn status(&self) -> ContainerStatus {
        let state = if let Some(since) = self.running_since {
            ContainerState {
                running: Some(ContainerStateRunning { started_at: Some(time(since)) }),
                ..Default::default()
            }
        } else if let Some(ended) = self.terminated {
            terminated(ended)
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
        let last_state = self.last_exit.map(terminated);
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

    /// The conditions kubelet owns and whether each holds.
    pub fn condition_statuses(&self) -> [(&'static str, bool); 4] {
        let ready = self.ready();
        [
            ("PodReadyToStartContainers", self.initialized),
            ("Initialized", self.initialized),
            ("ContainersReady", ready),
            ("Ready", ready),
        ]
    }

    /// The strategic merge patch of `status` kubelet sends; conditions merge by type, so the
    /// scheduler's `PodScheduled` stays.
    pub fn patch(&self) -> Value {
        let now = jiff::Timestamp::now();
        let conditions: Vec<PodCondition> = self
            .condition_statuses()
            .into_iter()
            .map(|(type_, ok)| PodCondition {
                type_: type_.to_string(),
                status: if ok { "True" } else { "False" }.to_string(),
                reason: (!ok && type_.ends_with("Ready") && type_ != "PodReadyToStartContainers")
                    .then(|| "ContainersNotReady".to_string()),
                last_transition_time: Some(time(self.transitions.get(type_).map_or(now, |(_, at)| *at))),
                ..Default::default()
            })
            .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn container(running: bool, terminated: Option<i32>) -> ContainerReport {
        let at: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        ContainerReport {
            name: "c".into(),
            image: "i".into(),
            running_since: running.then_some(at),
            waiting: None,
            terminated: terminated.map(|code| (code, at)),
            last_exit: None,
            ready: running,
            restarts: 0,
            pid: None,
        }
    }

    #[test]
    fn a_finished_container_is_terminated_and_conditions_keep_their_transition_times() {
        let since: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let report = PodReport {
            phase: "Failed",
            host_ip: "10.244.0.1".into(),
            pod_ip: String::new(),
            initialized: true,
            start_time: since,
            containers: vec![container(false, Some(3))],
            transitions: [("Initialized".to_string(), (true, since))].into_iter().collect(),
        };
        let patch = report.patch();
        let status = &patch["status"];
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3);
        assert!(status.get("podIP").is_none(), "no address before the sandbox");
        let initialized = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Initialized").unwrap();
        assert_eq!(initialized["lastTransitionTime"], "2026-01-01T00:00:00Z");
        let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("ContainersNotReady")));
        assert!(PodReport { containers: vec![container(true, None)], ..report }.ready());
    }
}
