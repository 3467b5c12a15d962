//! A kubelet per node, with its CSI node plugin: runs pods, sets up their volumes through the
//! model's node decisions, tears them down on deletion, and repairs broken bind mounts
//! (`model::node::plan_recover_mounts`, as the real plugin's recovery loop).
//!
//! The plugin's recovery runs every `recover_period_ms` from the plugin's start, over the
//! publish records in its state directory, as the real one does. A pass that finds everything
//! healthy or waiting changes nothing, so the simulator schedules only the ticks that act: after
//! any change of a node's mounts it asks the model whether a record needs a repair, and if so
//! queues the plugin's next tick (a timer firing forever would keep the cluster busy for good).
//!
//! A restarted kubelet (a node back from a reboot) finds on disk what it had staged and each
//! pod's volume directories; it reconstructs them, publishes again for pods that still run here
//! and unpublishes and unstages the rest, as the real kubelet's volume reconstruction does.
//!
//! For a pod that uses a dataset PVC (a PV whose CSI driver is `fuse.csi.fluid.io`):
//! NodeStage (`model::node::plan_stage`: unmount a broken FUSE mount, record, label the node so
//! the FUSE DaemonSet starts a pod here) → NodePublish (`plan_publish`: wait for the FUSE mount at
//! `fluid_path`, then bind it onto the pod's target) → start the containers. On deletion:
//! NodeUnpublish (`plan_unpublish`) → remove the pod → NodeUnstage (`plan_unstage`: under
//! `OnDemand`, remove the node label once no bind mount is left). The sim executes the plans
//! against its mount table; it decides nothing itself.

use std::collections::{BTreeMap, BTreeSet};

use model::effect::{Kind, ObjectRef};
use model::node::{
    DUPLICATE_MOUNT_THRESHOLD, FuseType, MountPlan, PathState, PublishRecord, PublishRequest, PublishStep, RecoverPlan,
    RecoverView, StageRecord, StageRequest, UnpublishRequest, UnpublishStep, UnstageRequest, count_volume_bind_mounts,
    plan_publish, plan_recover_mounts, plan_stage, plan_unpublish, plan_unstage,
};
use model::volume::{ATTR_FLUID_PATH, CSI_DRIVER};

use crate::apiserver::Pod;
use crate::fuse::is_fuse_pod;
use crate::kube::KubeTask;
use crate::kube::scheduler::set_condition;
use crate::mounts::MountTable;
use crate::sim::Sim;
use crate::trace;

/// Where a pod is in the kubelet's hands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunPhase {
    /// Setting up volumes.
    Preparing,
    /// Volumes ready; containers start at this time.
    Starting {
        /// When the containers are up.
        at_ms: u64,
    },
    /// Containers running.
    Running,
    /// Containers crashed; restarted at this time.
    Crashed {
        /// When they restart.
        restart_at_ms: u64,
    },
    /// Terminating; containers stop at this time.
    Stopping {
        /// When they are down.
        at_ms: u64,
    },
    /// Found on disk by a restarted kubelet: volumes published before the restart, containers
    /// not running. Set up again if the pod still runs here, else torn down.
    Reconstructed,
}

/// One CSI volume of a pod, as the kubelet tracks it.
#[derive(Debug, Clone)]
pub struct VolumeRun {
    /// The NodePublishVolume request the kubelet sends for it, built once by kubelet's rules
    /// (`model::node::kubelet::pod_csi_volume`).
    pub request: PublishRequest,
    /// The NodeStageVolume request, built by the same rules.
    pub stage: StageRequest,
    /// NodePublish succeeded.
    pub published: bool,
}

/// A pod the kubelet runs.
#[derive(Debug, Clone)]
pub struct PodRun {
    /// The pod's UID (a recreated pod of the same name is another run).
    pub uid: String,
    /// Where it is.
    pub phase: RunPhase,
    /// Its dataset volumes.
    pub volumes: Vec<VolumeRun>,
    /// For FUSE pods: when the daemon's mount is up.
    pub fuse_mount_at_ms: Option<u64>,
    /// For FUSE pods: where the daemon mounted and the device of its mount, while it serves it
    /// (its preStop hook unmounts that path, whatever became of the runtime since).
    pub fuse_mount: Option<(String, String)>,
    /// For a stopping FUSE pod: the device its daemon still serves through binds of its mount,
    /// until the grace period's SIGKILL.
    pub serving_until_killed: Option<String>,
    /// The last waiting note traced, so waits are traced once.
    pub note: String,
}

/// Kubelet, CSI plugin and mount table of one node.
#[derive(Debug, Clone)]
pub struct NodeSim {
    /// The node is up.
    pub up: bool,
    /// When it went down.
    pub down_since_ms: Option<u64>,
    /// The CSI plugin is serving.
    pub csi_up: bool,
    /// When the CSI plugin last started: its recovery ticks every `recover_period_ms` from here.
    pub csi_started_at_ms: u64,
    /// The mount table.
    pub mounts: MountTable,
    /// The CSI plugin's stage records (files in its state directory: they survive restarts).
    pub stage_records: BTreeMap<String, StageRecord>,
    /// The CSI plugin's publish records by target, for FUSE recovery (files in its state
    /// directory: they survive restarts and reboots, and go with NodeUnpublish).
    pub publish_records: BTreeMap<String, PublishRecord>,
    /// Volumes the kubelet has staged here (global mount directories: on disk).
    pub staged: BTreeSet<String>,
    /// Staged volumes a restarted kubelet found on disk: staged again before any publish.
    pub uncertain: BTreeSet<String>,
    /// Pods the kubelet runs.
    pub pods: BTreeMap<ObjectRef, PodRun>,
    /// The mount generation the recovery scheduler last looked at.
    pub recovery_checked_generation: Option<u64>,
}

impl Default for NodeSim {
    fn default() -> Self {
        Self {
            up: true,
            down_since_ms: None,
            csi_up: true,
            csi_started_at_ms: 0,
            mounts: MountTable::default(),
            stage_records: BTreeMap::new(),
            publish_records: BTreeMap::new(),
            staged: BTreeSet::new(),
            uncertain: BTreeSet::new(),
            pods: BTreeMap::new(),
            recovery_checked_generation: None,
        }
    }
}

impl NodeSim {
    /// A reboot at `now_ms`: mounts and containers are gone; what is on disk stays (the CSI
    /// state directory, kubelet's staging directories and its pods' volume directories), and the
    /// restarted kubelet reconstructs its volumes from it.
    pub fn reboot(&mut self, now_ms: u64) {
        self.mounts.reboot();
        self.uncertain = self.staged.clone();
        let pods = std::mem::take(&mut self.pods);
        for (key, mut run) in pods {
            run.volumes.retain(|v| v.published);
            if run.volumes.is_empty() {
                continue;
            }
            run.phase = RunPhase::Reconstructed;
            run.fuse_mount_at_ms = None;
            run.fuse_mount = None;
            run.note.clear();
            self.pods.insert(key, run);
        }
        self.csi_up = true;
        self.csi_started_at_ms = now_ms;
        self.recovery_checked_generation = None;
    }
}

enum Setup {
    Ready,
    Wait(String),
}

impl Sim {
    fn node_up_and_known(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|n| n.up)
    }

    fn set_pod_status(&mut self, key: &ObjectRef, phase: &str, ready: bool, reason: Option<&str>) {
        let now = self.clock.wall();
        let _ = self.api.modify(key, None, |obj| {
            let Some(pod) = obj.pod_mut() else { return false };
            let status = pod.status.get_or_insert_with(Default::default);
            let mut changed = status.phase.as_deref() != Some(phase);
            status.phase = Some(phase.to_string());
            if phase == "Running" && status.start_time.is_none() {
                status.start_time = Some(now.to_time());
                changed = true;
            }
            let conditions = status.conditions.get_or_insert_with(Vec::new);
            changed |= set_condition(conditions, "Ready", if ready { "True" } else { "False" }, reason, None);
            changed |= set_condition(conditions, "ContainersReady", if ready { "True" } else { "False" }, reason, None);
            changed
        });
    }

    /// Syncs one pod on `node`: set up, start, crash-restart, or tear down.
    pub(crate) fn kubelet_sync(&mut self, node: &str, key: &ObjectRef) {
        if !self.node_up_and_known(node) {
            return;
        }
        let now_ms = self.clock.now_ms();
        let pod = self.api.store.get(key).and_then(|o| o.as_pod()).cloned();
        let here = pod.as_ref().is_some_and(|p| p.node_name() == Some(node));
        let pod_uid = pod.as_ref().and_then(|p| p.metadata.uid.as_deref());
        let run = self.nodes[node].pods.get(key);
        if run.is_some_and(|run| !here || pod_uid != Some(run.uid.as_str())) {
            // The pod we ran is gone (removed, or replaced by a namesake): tear its volumes down.
            self.teardown_run(node, key);
        }
        let Some(pod) = pod.filter(|_| here) else {
            self.volume_manager(node);
            return;
        };
        let no_phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default().is_empty();
        if pod.metadata.deletion_timestamp.is_some() {
            self.terminate(node, key, &pod);
            return;
        }
        if pod.is_completed() {
            return;
        }
        if let Some(run) = self.nodes.get_mut(node).and_then(|n| n.pods.get_mut(key))
            && run.phase == RunPhase::Reconstructed
        {
            // The pod still runs here: its containers start again, after its volumes are
            // published again onto the targets found on disk.
            run.phase = RunPhase::Preparing;
            for volume in &mut run.volumes {
                volume.published = false;
            }
        }
        if !self.nodes[node].pods.contains_key(key) {
            let volumes = self.resolve_volumes(key, &pod);
            let Some(volumes) = volumes else {
                return;
            };
            let run = PodRun {
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                phase: RunPhase::Preparing,
                volumes,
                fuse_mount_at_ms: None,
                fuse_mount: None,
                serving_until_killed: None,
                note: String::new(),
            };
            if let Some(state) = self.nodes.get_mut(node) {
                state.pods.insert(key.clone(), run);
            }
            if no_phase {
                self.set_pod_status(key, "Pending", false, Some("ContainerCreating"));
            }
        }
        let run_phase = self.nodes[node].pods[key].phase.clone();
        match run_phase {
            RunPhase::Preparing => match self.setup_volumes(node, key) {
                Setup::Ready => {
                    let at_ms = now_ms + self.config.pod_start_ms;
                    if let Some(run) = self.nodes.get_mut(node).and_then(|n| n.pods.get_mut(key)) {
                        run.phase = RunPhase::Starting { at_ms };
                    }
                    self.kick_at(KubeTask::kubelet(node, key), at_ms);
                }
                Setup::Wait(note) => {
                    let changed = self.nodes.get_mut(node).and_then(|n| n.pods.get_mut(key)).is_some_and(|run| {
                        let changed = run.note != note;
                        run.note = note.clone();
                        changed
                    });
                    if changed {
                        trace!(self, format!("kubelet/{node}"), key.to_string(), "waits: {note}");
                    }
                    let at_ms = now_ms + self.config.publish_retry_ms;
                    self.kick_at(KubeTask::kubelet(node, key), at_ms);
                }
            },
            RunPhase::Starting { at_ms } | RunPhase::Crashed { restart_at_ms: at_ms } => {
                if now_ms < at_ms {
                    self.kick_at(KubeTask::kubelet(node, key), at_ms);
                    return;
                }
                let restarted = matches!(run_phase, RunPhase::Crashed { .. });
                if let Some(run) = self.nodes.get_mut(node).and_then(|n| n.pods.get_mut(key)) {
                    run.phase = RunPhase::Running;
                }
                self.set_pod_status(key, "Running", true, None);
                trace!(
                    self,
                    format!("kubelet/{node}"),
                    key.to_string(),
                    "{}",
                    if restarted { "containers restarted: Running, Ready" } else { "Running, Ready" }
                );
                self.on_started(node, key, &pod);
            }
            RunPhase::Running => {
                let mount_at = self.nodes[node].pods[key].fuse_mount_at_ms;
                if let Some(at_ms) = mount_at {
                    if now_ms >= at_ms {
                        self.fuse_mount(node, key, &pod);
                    } else {
                        self.kick_at(KubeTask::kubelet(node, key), at_ms);
                    }
                }
            }
            RunPhase::Stopping { .. } | RunPhase::Reconstructed => {}
        }
    }

    /// What the containers do once started: a FUSE daemon mounts, a worker serves, an app reads.
    fn on_started(&mut self, node: &str, key: &ObjectRef, pod: &Pod) {
        let now_ms = self.clock.now_ms();
        if is_fuse_pod(pod) {
            let at_ms = now_ms + self.config.fuse_mount_ms;
            if let Some(run) = self.nodes.get_mut(node).and_then(|n| n.pods.get_mut(key)) {
                run.fuse_mount_at_ms = Some(at_ms);
            }
            self.kick_at(KubeTask::kubelet(node, key), at_ms);
        }
        let pairs: Vec<_> = self.nodes[node].pods[key].volumes.iter().filter_map(volume_pair).collect();
        for pair in pairs {
            self.workers.start_read(&pair, key, now_ms);
        }
    }

    /// The FUSE daemon of `key` mounts its dataset.
    fn fuse_mount(&mut self, node: &str, key: &ObjectRef, pod: &Pod) {
        if let Some(run) = self.nodes.get_mut(node).and_then(|n| n.pods.get_mut(key)) {
            run.fuse_mount_at_ms = None;
        }
        let Some((path, source)) = self.fuse_mount_path(pod) else {
            trace!(
                self,
                format!("fuse/{node}"),
                key.to_string(),
                "cannot tell where to mount: runtime and PV are gone"
            );
            return;
        };
        let Some(state) = self.nodes.get_mut(node) else { return };
        let device = state.mounts.mount_fuse(&path, &source);
        if let Some(run) = state.pods.get_mut(key) {
            run.fuse_mount = Some((path.clone(), device.clone()));
        }
        trace!(self, format!("fuse/{node}"), key.to_string(), "mounted {source} at {path} (device {device})");
        // Whoever waits for this mount (a publish, a recovery) tries again now.
        let waiting: Vec<ObjectRef> = self.nodes[node]
            .pods
            .iter()
            .filter(|(_, run)| run.phase == RunPhase::Preparing)
            .map(|(k, _)| k.clone())
            .collect();
        for pod in waiting {
            self.kick(KubeTask::Kubelet { node: node.into(), pod });
        }
    }

    /// Resolves a pod's PVC volumes to CSI volumes. None while a PVC or PV is missing.
    fn resolve_volumes(&mut self, key: &ObjectRef, pod: &Pod) -> Option<Vec<VolumeRun>> {
        let mut out = Vec::new();
        let identity = model::node::kubelet::PodIdentity::of(&pod.metadata, pod.spec.as_deref());
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(claim) = &volume.persistent_volume_claim else { continue };
            let pvc = self
                .api
                .store
                .get_named(Kind::PersistentVolumeClaim, &key.namespace, &claim.claim_name)
                .and_then(|o| o.as_pvc())?;
            let pv_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone())?;
            let pv = self.api.store.get_named(Kind::PersistentVolume, "", &pv_name).and_then(|o| o.as_pv())?;
            let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.as_ref()) else { continue };
            if csi.driver != CSI_DRIVER {
                continue;
            }
            let Some(csi_volume) = model::node::kubelet::pod_csi_volume(&identity, volume, pv, true) else { continue };
            out.push(VolumeRun { request: csi_volume.publish, stage: csi_volume.stage, published: false });
        }
        Some(out)
    }

    /// Stages and publishes every dataset volume of a pod, as far as it can now.
    fn setup_volumes(&mut self, node: &str, key: &ObjectRef) -> Setup {
        // Taken out for the duration (stage and publish read the node's mounts, not the run).
        let Some(mut volumes) =
            self.nodes.get_mut(node).and_then(|n| n.pods.get_mut(key)).map(|run| std::mem::take(&mut run.volumes))
        else {
            return Setup::Ready;
        };
        let setup = self.setup_each(node, key, &mut volumes);
        if let Some(run) = self.nodes.get_mut(node).and_then(|n| n.pods.get_mut(key)) {
            run.volumes = volumes;
        }
        setup
    }

    fn setup_each(&mut self, node: &str, key: &ObjectRef, volumes: &mut [VolumeRun]) -> Setup {
        for volume in volumes.iter_mut() {
            if volume.published {
                continue;
            }
            if !self.nodes[node].csi_up {
                return Setup::Wait(format!(
                    "CSI plugin on {node} is restarting; NodeStage/NodePublish of {} will be retried",
                    volume.request.volume_id
                ));
            }
            let state = &self.nodes[node];
            let volume_id = &volume.request.volume_id;
            let staged = state.staged.contains(volume_id) && !state.uncertain.contains(volume_id);
            if !staged && let Err(note) = self.stage(node, volume) {
                return Setup::Wait(note);
            }
            match self.publish(node, key, volume) {
                Ok(bind) => {
                    volume.published = true;
                    // The plugin saves a record of each bind it makes, for FUSE recovery.
                    if let Some(bind) = bind
                        && let Some(state) = self.nodes.get_mut(node)
                    {
                        let fluid_path =
                            volume.request.volume_context.get(ATTR_FLUID_PATH).cloned().unwrap_or_default();
                        let record = PublishRecord { volume_id: volume.request.volume_id.clone(), fluid_path, bind };
                        state.publish_records.insert(record.bind.target.clone(), record);
                    }
                }
                Err(note) => return Setup::Wait(note),
            }
        }
        Setup::Ready
    }

    fn stage(&mut self, node: &str, volume: &VolumeRun) -> Result<(), String> {
        let request = volume.stage.clone();
        let fluid_path = volume.request.volume_context.get(ATTR_FLUID_PATH).cloned().unwrap_or_default();
        let fluid_state = self.nodes[node].mounts.state(&fluid_path);
        let plan = plan_stage(&request, fluid_state)
            .map_err(|refusal| format!("NodeStageVolume refused ({:?}): {refusal}", refusal.kind))?;
        if let Some(broken) = &plan.unmount_broken_fluid_path {
            if let Some(state) = self.nodes.get_mut(node) {
                while state.mounts.state(broken) == PathState::Broken && state.mounts.unmount(broken) {}
            }
            trace!(
                self,
                format!("csi/{node}"),
                format!("Node/{node}"),
                "NodeStageVolume: unmounted broken FUSE mount {broken}"
            );
        }
        if let Some(state) = self.nodes.get_mut(node) {
            state.stage_records.insert(volume.request.volume_id.clone(), plan.record.clone());
        }
        let labels = BTreeMap::from([(plan.label.key.clone(), Some(plan.label.value.clone()))]);
        let node_key = ObjectRef::cluster(Kind::Node, node);
        match self.api.patch_labels(&node_key, &labels) {
            Ok(changed) => {
                if changed {
                    trace!(
                        self,
                        format!("csi/{node}"),
                        node_key.to_string(),
                        "NodeStageVolume {}: label {}={}",
                        volume.request.volume_id,
                        plan.label.key,
                        plan.label.value
                    );
                } else {
                    trace!(
                        self,
                        format!("csi/{node}"),
                        node_key.to_string(),
                        "NodeStageVolume {}: label {} already set",
                        volume.request.volume_id,
                        plan.label.key
                    );
                }
            }
            Err(error) => return Err(format!("NodeStageVolume: labelling the node failed: {error}")),
        }
        if let Some(state) = self.nodes.get_mut(node) {
            state.staged.insert(volume.request.volume_id.clone());
            state.uncertain.remove(&volume.request.volume_id);
        }
        Ok(())
    }

    /// Runs NodePublishVolume; returns the bind it made, if it made one.
    fn publish(&mut self, node: &str, key: &ObjectRef, volume: &VolumeRun) -> Result<Option<MountPlan>, String> {
        let request = &volume.request;
        let fluid_path = volume.request.volume_context.get(ATTR_FLUID_PATH).cloned().unwrap_or_default();
        for _ in 0..8 {
            let mounts = &self.nodes[node].mounts;
            let step = plan_publish(request, mounts.state(&fluid_path), mounts.state(&volume.request.target_path))
                .map_err(|refusal| format!("NodePublishVolume refused ({:?}): {refusal}", refusal.kind))?;
            let Some(state) = self.nodes.get_mut(node) else { return Err("node is gone".to_string()) };
            match step {
                PublishStep::AlreadyPublished => return Ok(None),
                PublishStep::UnmountBrokenTarget { target } => {
                    state.mounts.unmount(&target);
                    trace!(
                        self,
                        format!("csi/{node}"),
                        key.to_string(),
                        "NodePublishVolume: unmounted broken target {target}"
                    );
                }
                PublishStep::RemountReadOnly { target } => {
                    state.mounts.remount_read_only(&target);
                    return Ok(None);
                }
                PublishStep::WaitForFuse { fluid_path } => {
                    return Err(format!(
                        "NodePublishVolume {}: FUSE mount at {fluid_path} is not ready",
                        volume.request.volume_id
                    ));
                }
                PublishStep::BindMount(plan) => {
                    if !state.mounts.bind(&plan.source, &plan.target, plan.read_only) {
                        return Err(format!("NodePublishVolume: nothing mounted at {}", plan.source));
                    }
                    trace!(
                        self,
                        format!("csi/{node}"),
                        key.to_string(),
                        "NodePublishVolume: bind {} -> {}{}",
                        plan.source,
                        short_target(&plan.target),
                        if plan.read_only { " (ro)" } else { "" }
                    );
                    return Ok(Some(plan));
                }
            }
        }
        Err(format!("NodePublishVolume {}: did not settle in 8 steps", volume.request.volume_id))
    }

    /// Unpublishes one target until the model says done.
    fn unpublish(&mut self, node: &str, key: &ObjectRef, volume: &VolumeRun) {
        let request = UnpublishRequest {
            volume_id: volume.request.volume_id.clone(),
            target_path: volume.request.target_path.clone(),
        };
        let (mut unmounted, mut removed) = (0, false);
        for _ in 0..16 {
            let Some(state) = self.nodes.get_mut(node) else { return };
            let step = match plan_unpublish(&request, state.mounts.state(&volume.request.target_path)) {
                Ok(step) => step,
                Err(refusal) => {
                    trace!(self, format!("csi/{node}"), key.to_string(), "NodeUnpublishVolume refused: {refusal}");
                    return;
                }
            };
            match step {
                UnpublishStep::Done => {
                    // After the unmount: recovery never binds it again.
                    state.publish_records.remove(&volume.request.target_path);
                    break;
                }
                UnpublishStep::Unmount { target, .. } => {
                    state.mounts.unmount(&target);
                    unmounted += 1;
                }
                UnpublishStep::RemoveTarget { target } => {
                    state.mounts.rmdir(&target);
                    removed = true;
                }
            }
        }
        if unmounted == 0 && removed {
            trace!(
                self,
                format!("csi/{node}"),
                key.to_string(),
                "NodeUnpublishVolume {}: nothing mounted at {}; removed the directory",
                volume.request.volume_id,
                short_target(&volume.request.target_path)
            );
        } else if unmounted > 0 {
            trace!(
                self,
                format!("csi/{node}"),
                key.to_string(),
                "NodeUnpublishVolume {}: unmounted {}",
                volume.request.volume_id,
                short_target(&volume.request.target_path)
            );
        }
    }

    /// Starts or finishes the termination of a pod marked for deletion.
    fn terminate(&mut self, node: &str, key: &ObjectRef, pod: &Pod) {
        let now_ms = self.clock.now_ms();
        let phase = self.nodes[node].pods.get(key).map(|r| r.phase.clone());
        match phase {
            Some(RunPhase::Stopping { at_ms }) if now_ms < at_ms => {
                self.kick_at(KubeTask::kubelet(node, key), at_ms);
            }
            Some(RunPhase::Stopping { .. } | RunPhase::Reconstructed) | None => {
                // Containers are down: tear the volumes down, then release the pod object.
                self.fuse_killed(node, key);
                self.teardown_run(node, key);
                self.api.remove(key);
                trace!(self, format!("kubelet/{node}"), key.to_string(), "terminated and removed");
                self.volume_manager(node);
            }
            Some(_) => {
                let mut at_ms = now_ms + self.config.pod_stop_ms;
                if is_fuse_pod(pod) && self.fuse_stop(node, key, pod) {
                    // The daemon serves the binds of its mount until the grace period's SIGKILL.
                    let grace_s = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
                    at_ms = now_ms + u64::try_from(grace_s).unwrap_or(30) * 1000;
                }
                if let Some(run) = self.nodes.get_mut(node).and_then(|n| n.pods.get_mut(key)) {
                    run.phase = RunPhase::Stopping { at_ms };
                }
                self.kick_at(KubeTask::kubelet(node, key), at_ms);
            }
        }
    }

    /// Unpublishes a run's volumes and forgets it; the volume manager unstages later.
    fn teardown_run(&mut self, node: &str, key: &ObjectRef) {
        let Some(run) = self.nodes.get_mut(node).and_then(|n| n.pods.remove(key)) else { return };
        let now_ms = self.clock.now_ms();
        for volume in &run.volumes {
            if volume.published {
                self.unpublish(node, key, volume);
            }
            if let Some(pair) = volume_pair(volume) {
                self.workers.stop_read(&pair, key, now_ms);
            }
        }
    }

    /// The kubelet's volume manager: unstage every staged volume no pod here uses any more.
    pub(crate) fn volume_manager(&mut self, node: &str) {
        let Some(state) = self.nodes.get(node) else { return };
        if !state.up {
            return;
        }
        let in_use: BTreeSet<String> =
            state.pods.values().flat_map(|r| r.volumes.iter().map(|v| v.request.volume_id.clone())).collect();
        let idle: Vec<String> = state.staged.iter().filter(|v| !in_use.contains(*v)).cloned().collect();
        for volume_id in idle {
            if !self.nodes[node].csi_up {
                let at_ms = self.clock.now_ms() + self.config.publish_retry_ms;
                self.kick_at(KubeTask::VolumeManager(node.into()), at_ms);
                return;
            }
            let staging_target_path = model::node::kubelet::staging_path(CSI_DRIVER, &volume_id);
            let request = UnstageRequest { volume_id: volume_id.clone(), staging_target_path };
            let state = &self.nodes[node];
            let record = state.stage_records.get(&volume_id).cloned();
            let remaining = record
                .as_ref()
                .map(|r| count_volume_bind_mounts(state.mounts.entries(), &volume_id, &r.fluid_path))
                .unwrap_or(0);
            let actor = format!("csi/{node}");
            match plan_unstage(&request, record.as_ref(), remaining) {
                Ok(plan) => {
                    if let Some(label) = &plan.remove_label {
                        let node_key = ObjectRef::cluster(Kind::Node, node);
                        let labels = BTreeMap::from([(label.clone(), None)]);
                        if self.api.patch_labels(&node_key, &labels).is_err() {
                            continue;
                        }
                        trace!(
                            self,
                            actor,
                            node_key.to_string(),
                            "NodeUnstageVolume {volume_id}: removed label {label} (OnDemand)"
                        );
                    } else {
                        trace!(
                            self,
                            actor,
                            format!("Node/{node}"),
                            "NodeUnstageVolume {volume_id}: label kept (OnRuntimeDeleted)"
                        );
                    }
                    if let Some(state) = self.nodes.get_mut(node) {
                        if plan.forget_record {
                            state.stage_records.remove(&volume_id);
                        }
                        state.staged.remove(&volume_id);
                        state.uncertain.remove(&volume_id);
                    }
                }
                Err(refusal) => {
                    trace!(self, actor, format!("Node/{node}"), "NodeUnstageVolume {volume_id} refused: {refusal}");
                    let at_ms = self.clock.now_ms() + self.config.publish_retry_ms;
                    self.kick_at(KubeTask::VolumeManager(node.into()), at_ms);
                }
            }
        }
    }

    /// A FUSE pod stops gracefully: its preStop hook unmounts `fluid_path`, then SIGTERM. A
    /// daemon whose mount is still bound elsewhere (app pods') keeps serving those binds, as a
    /// real `juicefs` does, until the grace period's SIGKILL ([`Self::fuse_killed`]); one without
    /// binds exits. True when it keeps serving.
    fn fuse_stop(&mut self, node: &str, key: &ObjectRef, pod: &Pod) -> bool {
        let Some(state) = self.nodes.get_mut(node) else { return false };
        let mounted = state.pods.get_mut(key).and_then(|run| {
            run.fuse_mount_at_ms = None;
            run.fuse_mount.take()
        });
        let (path, device) = match mounted {
            Some((path, device)) => (Some(path), Some(device)),
            None => (self.fuse_mount_path(pod).map(|(path, _)| path), None),
        };
        let Some(state) = self.nodes.get_mut(node) else { return false };
        if let Some(path) = &path
            && state.mounts.unmount(path)
        {
            trace!(self, format!("fuse/{node}"), key.to_string(), "preStop: unmounted {path}");
        }
        let Some(state) = self.nodes.get_mut(node) else { return false };
        let Some(device) = device.filter(|d| state.mounts.is_live(d)) else { return false };
        let binds = state.mounts.entries().iter().filter(|e| e.major_minor == device).count();
        if binds == 0 {
            state.mounts.kill_device(&device);
            return false;
        }
        if let Some(run) = state.pods.get_mut(key) {
            run.serving_until_killed = Some(device.clone());
        }
        trace!(
            self,
            format!("fuse/{node}"),
            key.to_string(),
            "SIGTERM: the FUSE daemon keeps serving {binds} bind(s) of its mount (device {device}) until the grace period ends"
        );
        true
    }

    /// The grace period of a stopping FUSE pod is over: SIGKILL ends its daemon, and the binds
    /// it still served turn "transport endpoint is not connected".
    fn fuse_killed(&mut self, node: &str, key: &ObjectRef) {
        let Some(state) = self.nodes.get_mut(node) else { return };
        let Some(device) = state.pods.get_mut(key).and_then(|run| run.serving_until_killed.take()) else { return };
        if !state.mounts.is_live(&device) {
            return;
        }
        state.mounts.kill_device(&device);
        let binds = state.mounts.entries().iter().filter(|e| e.major_minor == device).count();
        trace!(
            self,
            format!("fuse/{node}"),
            key.to_string(),
            "SIGKILL after the grace period (device {device}): {binds} bind(s) of its mount are broken (transport endpoint is not connected)"
        );
    }

    /// The CSI plugin's recovery pass over its publish records (`model::node::plan_recover_mounts`,
    /// as `csi`'s `recover_once`): binds on top of stale mounts once the FUSE mount is back,
    /// forgets records whose target is gone.
    pub(crate) fn recover_mounts(&mut self, node: &str) {
        let Some(state) = self.nodes.get(node) else { return };
        if !state.up || !state.csi_up {
            return;
        }
        let records: Vec<PublishRecord> = state.publish_records.values().cloned().collect();
        for record in records {
            let plan = recover_plan(&self.nodes[node].mounts, &record);
            let owner = self.owner_of_target(node, &record.bind.target);
            let Some(state) = self.nodes.get_mut(node) else { return };
            let plan = match plan {
                Ok(plan) => plan,
                Err(refusal) => {
                    trace!(self, format!("csi/{node}"), owner, "FUSE recovery refused: {refusal}");
                    continue;
                }
            };
            match plan {
                RecoverPlan::Healthy | RecoverPlan::WaitForFuse { .. } => {}
                RecoverPlan::Forget => {
                    state.publish_records.remove(&record.bind.target);
                }
                RecoverPlan::Repair(repairs) => {
                    for repair in repairs {
                        // Duplicates over the threshold first, then a bind on top of the dead
                        // mount, never after unmounting it (Fluid #3399).
                        for _ in 0..repair.unmount_duplicates {
                            state.mounts.unmount(&repair.bind.target);
                        }
                        let bind = &repair.bind;
                        if state.mounts.bind(&bind.source, &bind.target, bind.read_only) {
                            trace!(
                                self,
                                format!("csi/{node}"),
                                owner.clone(),
                                "FUSE recovery of {}: bind {} -> {}{} on top of the dead mount",
                                record.volume_id,
                                bind.source,
                                short_target(&bind.target),
                                if bind.read_only { " (ro)" } else { "" }
                            );
                        }
                    }
                }
            }
        }
    }

    /// The pod a CSI target belongs to, for the trace (the node when no pod here has it).
    fn owner_of_target(&self, node: &str, target: &str) -> String {
        let runs = self.nodes.get(node).map(|n| &n.pods);
        runs.into_iter()
            .flatten()
            .find(|(_, run)| run.volumes.iter().any(|v| v.request.target_path == target))
            .map_or_else(|| format!("Node/{node}"), |(key, _)| key.to_string())
    }

    /// Queues the CSI plugin's next recovery tick on `node` when a pass would act on what the
    /// node's mounts are now: a record to repair or to forget. Called after anything that may
    /// have changed the mounts; it looks again only when they did change.
    pub(crate) fn schedule_recovery(&mut self, node: &str) {
        let period_ms = self.config.recover_period_ms;
        let Some(state) = self.nodes.get_mut(node) else { return };
        if period_ms == 0 || !state.up || !state.csi_up {
            return;
        }
        let generation = state.mounts.generation();
        if state.recovery_checked_generation == Some(generation) {
            return;
        }
        state.recovery_checked_generation = Some(generation);
        let acts = state.publish_records.values().any(|record| {
            matches!(recover_plan(&state.mounts, record), Ok(RecoverPlan::Repair(_) | RecoverPlan::Forget))
        });
        if acts {
            // The plugin's loop sleeps a period, then passes: ticks at start + k * period.
            let since_ms = self.clock.now_ms().saturating_sub(state.csi_started_at_ms);
            let at_ms = state.csi_started_at_ms + (since_ms / period_ms + 1) * period_ms;
            self.kick_at(KubeTask::Recover(node.into()), at_ms);
        }
    }

    /// Crashes a pod's containers; the kubelet restarts them after `restart_delay_ms`.
    pub fn pod_crash(&mut self, key: &ObjectRef) {
        let Some(pod) = self.api.store.get(key).and_then(|o| o.as_pod()).cloned() else {
            trace!(self, "fault", key.to_string(), "pod crash: no such pod");
            return;
        };
        let Some(node) = pod.node_name().map(model::effect::CompactString::from) else {
            trace!(self, "fault", key.to_string(), "pod crash: the pod is not scheduled");
            return;
        };
        let running = self.nodes.get(&node).and_then(|n| n.pods.get(key)).is_some_and(|r| r.phase == RunPhase::Running);
        if !running || !self.node_up_and_known(&node) {
            trace!(self, "fault", key.to_string(), "pod crash: the pod is not running");
            return;
        }
        let restart_at_ms = self.clock.now_ms() + self.config.restart_delay_ms;
        if let Some(run) = self.nodes.get_mut(&node).and_then(|n| n.pods.get_mut(key)) {
            run.phase = RunPhase::Crashed { restart_at_ms };
            run.fuse_mount_at_ms = None;
        }
        trace!(
            self,
            "fault",
            key.to_string(),
            "containers crash on {node}; restart in {}",
            crate::clock::format_duration(self.config.restart_delay_ms)
        );
        let fuse_device = self
            .nodes
            .get_mut(&node)
            .and_then(|n| n.pods.get_mut(key))
            .and_then(|r| r.fuse_mount.take())
            .map(|(_, device)| device);
        if is_fuse_pod(&pod)
            && let Some((path, _)) = self.fuse_mount_path(&pod)
            && let Some(state) = self.nodes.get_mut(&node)
            && let Some(device) = fuse_device.or_else(|| state.mounts.device_at(&path))
        {
            state.mounts.kill_device(&device);
            trace!(
                self,
                format!("fuse/{node}"),
                key.to_string(),
                "FUSE daemon died: {path} is broken (transport endpoint is not connected)"
            );
        }
        self.set_pod_status(key, "Running", false, Some("CrashLoopBackOff"));
        let _ = self.api.modify(key, None, |obj| {
            let Some(pod) = obj.pod_mut() else { return false };
            let status = pod.status.get_or_insert_with(Default::default);
            let statuses = status.container_statuses.get_or_insert_with(Vec::new);
            if statuses.is_empty() {
                statuses.push(Default::default());
            }
            statuses[0].restart_count += 1;
            true
        });
        self.kick_at(KubeTask::kubelet(&node, key), restart_at_ms);
        self.schedule_recovery(&node);
    }

    /// Registers the nodes of the cluster with their kubelets.
    pub fn add_node_sim(&mut self, name: &str) {
        let now_ms = self.clock.now_ms();
        self.nodes.entry(name.into()).or_insert_with(|| NodeSim { csi_started_at_ms: now_ms, ..NodeSim::default() });
    }

    /// The kubelet of a Node applied during the run starts, with its CSI plugin, and posts the
    /// node's status as a kubelet registering with an existing Node object does: Ready, and a
    /// pod capacity when the manifest gave none.
    pub(crate) fn start_kubelet(&mut self, name: &str) {
        self.add_node_sim(name);
        let key = ObjectRef::cluster(Kind::Node, name);
        let _ = self.api.modify(&key, None, |obj| {
            let Some(node) = obj.node_mut() else { return false };
            let status = node.status.get_or_insert_with(Default::default);
            for resources in [&mut status.capacity, &mut status.allocatable] {
                resources
                    .get_or_insert_with(Default::default)
                    .entry("pods".to_string())
                    .or_insert_with(|| k8s_openapi::apimachinery::pkg::api::resource::Quantity("110".to_string()));
            }
            crate::kube::nodelifecycle::set_node_ready(node, "True");
            true
        });
        trace!(self, format!("kubelet/{name}"), key.to_string(), "kubelet started: registered the node, Ready");
    }
}

/// What FUSE recovery does with `record` on a node with these mounts (the plugin's view: the
/// mount table, and `stat` of the FUSE mount point and of the target).
fn recover_plan(mounts: &MountTable, record: &PublishRecord) -> Result<RecoverPlan, model::node::Refusal> {
    let fuse_type = FuseType::of(Some("JuiceFS"));
    let view = RecoverView {
        mounts: mounts.entries(),
        fluid_path: &record.fluid_path,
        fluid_probe: mounts.probe(&record.fluid_path),
        target: &record.bind.target,
        target_probe: mounts.probe(&record.bind.target),
        fuse_type: &fuse_type,
        duplicate_threshold: DUPLICATE_MOUNT_THRESHOLD,
    };
    plan_recover_mounts(record, &view)
}

/// The dataset pair a CSI volume belongs to, from its attributes.
pub fn volume_pair(volume: &VolumeRun) -> Option<crate::control::Pair> {
    let namespace = volume.request.volume_context.get(model::volume::ATTR_RUNTIME_NAMESPACE)?;
    let name = volume.request.volume_context.get(model::volume::ATTR_RUNTIME_NAME)?;
    Some(crate::control::Pair::new(namespace, name))
}

/// `…/pods/<uid>/volumes/…/mount` shortened for the trace.
fn short_target(target: &str) -> String {
    match target.find("/volumes/") {
        Some(at) => format!("<pod>{}", &target[at..]),
        None => target.to_string(),
    }
}
