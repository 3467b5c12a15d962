//! One pod on one node, as kubelet's pod worker runs it: the sandbox (a network namespace),
//! the volumes (retried with backoff, each failure a `FailedMount` event), the containers
//! (restarted by the restart policy with CrashLoopBackOff's doubling delay), readiness probes,
//! status reports; and on deletion the preStop hooks, SIGTERM, the grace period, volume
//! teardown and the final delete.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use tokio::sync::{mpsc, watch};

use super::container::{self, Launch, Running};
use super::env::{KeyedData, container_env, expand, referenced_sources};
use super::images::{IDLE_ARGV, Program, program};
use super::node::NodeContext;
use super::nodens::{Bind, Propagation};
use super::probes;
use super::status::{ContainerReport, PodReport};
use super::volumes::{PodVolumes, mount_source};
use crate::error::{Error, Result};

/// Something the agent's control socket asks of a pod.
#[derive(Debug)]
pub enum PodCommand {
    /// SIGKILL the container's process (all containers when `None`): a crash.
    Kill(Option<String>),
    /// Report each running container's root (as the agent reaches it) under the pod's key.
    Roots(String, mpsc::Sender<(String, BTreeMap<String, String>)>),
}

/// Shortest and longest delay between two attempts to set up volumes (kubelet's volume manager).
const MOUNT_RETRY_MS: (u64, u64) = (500, 32_000);

struct Slot {
    spec: Container,
    program: Program,
    running: Option<Running>,
    ready: bool,
    restarts: i32,
    last_exit: Option<(i32, jiff::Timestamp)>,
    /// Not before this instant (CrashLoopBackOff), and the next delay.
    restart_at: Option<tokio::time::Instant>,
    backoff: Duration,
    /// When the readiness probe runs next.
    probe_at: tokio::time::Instant,
    registered: bool,
    /// Exited for good (the restart policy keeps it down).
    finished: bool,
}

/// Runs the pod whose versions arrive on `versions` until it is gone from the node.
pub async fn run(
    ctx: Arc<NodeContext>,
    versions: watch::Receiver<Option<Arc<Pod>>>,
    commands: mpsc::Receiver<PodCommand>,
) {
    let Some(pod) = versions.borrow().clone() else { return };
    let key = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let mut worker = Worker::new(ctx, pod, versions, commands);
    if let Err(err) = worker.run().await {
        tracing::warn!(node = %worker.ctx.name, pod = %key, %err, "pod worker stopped");
    }
}

struct Worker {
    ctx: Arc<NodeContext>,
    pod: Arc<Pod>,
    versions: watch::Receiver<Option<Arc<Pod>>>,
    commands: mpsc::Receiver<PodCommand>,
    slots: Vec<Slot>,
    exits_tx: mpsc::UnboundedSender<usize>,
    exits: mpsc::UnboundedReceiver<usize>,
    volumes: PodVolumes,
    pod_ip: String,
    initialized: bool,
    start_time: jiff::Timestamp,
    waiting_reason: Option<(String, String)>,
    last_report: Option<serde_json::Value>,
    last_event: Option<String>,
    /// Per condition type: its status and since when.
    transitions: BTreeMap<String, (bool, jiff::Timestamp)>,
}

impl Worker {
    fn new(
        ctx: Arc<NodeContext>,
        pod: Arc<Pod>,
        versions: watch::Receiver<Option<Arc<Pod>>>,
        commands: mpsc::Receiver<PodCommand>,
    ) -> Self {
        let is_worker = pod.metadata.owner_references.iter().flatten().any(|o| o.kind == "StatefulSet");
        let now = tokio::time::Instant::now();
        let slots = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| Slot {
                program: program(c, is_worker, ctx.settings.run_workers),
                spec: c.clone(),
                running: None,
                ready: false,
                restarts: 0,
                last_exit: None,
                restart_at: None,
                backoff: Duration::from_millis(ctx.settings.restart_backoff_ms),
                probe_at: now,
                registered: false,
                finished: false,
            })
            .collect();
        let (exits_tx, exits) = mpsc::unbounded_channel();
        Self {
            ctx,
            pod,
            versions,
            commands,
            slots,
            exits_tx,
            exits,
            volumes: PodVolumes::default(),
            pod_ip: String::new(),
            initialized: false,
            start_time: jiff::Timestamp::now(),
            waiting_reason: Some(("ContainerCreating".into(), String::new())),
            last_report: None,
            last_event: None,
            transitions: BTreeMap::new(),
        }
    }

    fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or_default()
    }

    fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }

    /// On the node's network: asked for, or (when the agent is told so) a pod that only idles.
    fn host_network(&self) -> bool {
        let idle =
            self.slots.iter().all(|s| matches!(s.program, Program::Idle { .. }) && s.spec.readiness_probe.is_none());
        self.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false)
            || (idle && !self.ctx.settings.network_for_idle_pods)
    }

    /// Takes the newest version; false once the pod is gone or being deleted.
    fn refresh(&mut self) -> bool {
        match self.versions.borrow_and_update().clone() {
            Some(pod) => {
                let alive = pod.metadata.deletion_timestamp.is_none();
                self.pod = pod;
                alive
            }
            None => false,
        }
    }

    fn terminal(&self) -> bool {
        matches!(self.pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
    }

    async fn run(&mut self) -> Result<()> {
        if !self.refresh() {
            return self.terminate().await;
        }
        if self.terminal() {
            // A finished pod stays until somebody deletes it.
            while self.versions.changed().await.is_ok() && self.refresh() {}
            return self.terminate().await;
        }
        self.report().await;
        if !self.prepare().await? {
            return self.terminate().await;
        }
        self.waiting_reason = None;
        for slot in 0..self.slots.len() {
            self.start_container(slot).await;
        }
        self.report().await;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                changed = self.versions.changed() => {
                    if changed.is_err() || !self.refresh() {
                        break;
                    }
                }
                Some(command) = self.commands.recv() => self.command(command).await,
                Some(slot) = self.exits.recv() => self.exited(slot).await,
                _ = tick.tick() => self.tick().await,
            }
        }
        self.terminate().await
    }

    /// Sandbox and volumes, retried until they are ready; false when the pod went away first.
    async fn prepare(&mut self) -> Result<bool> {
        let mut delay_ms = MOUNT_RETRY_MS.0;
        loop {
            match self.try_prepare().await {
                Ok(()) => {
                    self.initialized = true;
                    return Ok(true);
                }
                Err(err) => {
                    let (reason, message) = match &err {
                        Error::NotReady { reason, message } => (*reason, message.clone()),
                        other => ("FailedMount", other.to_string()),
                    };
                    self.event(EventType::Warning, reason, &message).await;
                    self.waiting_reason = Some(("ContainerCreating".into(), message));
                    self.report().await;
                }
            }
            let pause = tokio::time::sleep(Duration::from_millis(delay_ms));
            tokio::select! {
                _ = pause => {}
                changed = self.versions.changed() => {
                    if changed.is_err() || !self.refresh() {
                        return Ok(false);
                    }
                }
            }
            delay_ms = (delay_ms * 2).min(MOUNT_RETRY_MS.1);
        }
    }

    async fn try_prepare(&mut self) -> Result<()> {
        if self.pod_ip.is_empty() {
            self.pod_ip = if self.host_network() {
                self.ctx.host_ip.clone()
            } else {
                self.ctx.pod_network(self.uid()).await?.to_string()
            };
        }
        let pod = Arc::clone(&self.pod);
        self.ctx.volumes().setup(&pod, &mut self.volumes).await
    }

    async fn start_container(&mut self, slot: usize) {
        match self.launch(slot).await {
            Ok(Some(running)) => {
                let s = &mut self.slots[slot];
                s.running = Some(running);
                s.ready = s.spec.readiness_probe.is_none();
                let delay = s.spec.readiness_probe.as_ref().and_then(|p| p.initial_delay_seconds).unwrap_or(0);
                s.probe_at = tokio::time::Instant::now() + Duration::from_secs(delay.max(0) as u64);
                let name = s.spec.name.clone();
                self.event(EventType::Normal, "Started", &format!("Started container {name}")).await;
            }
            Ok(None) => {}
            Err(err) => {
                let name = self.slots[slot].spec.name.clone();
                let message = format!("container {name}: {err}");
                self.event(EventType::Warning, "Failed", &message).await;
                let s = &mut self.slots[slot];
                s.restart_at = Some(tokio::time::Instant::now() + s.backoff);
                s.backoff = (s.backoff * 2).min(Duration::from_millis(self.ctx.settings.restart_backoff_max_ms));
            }
        }
    }

    /// Starts the container's process; `None` for the registrar, which runs in the agent.
    async fn launch(&mut self, slot: usize) -> Result<Option<Running>> {
        let spec = self.slots[slot].spec.clone();
        let argv = match &self.slots[slot].program {
            Program::Registrar { .. } => return Ok(None),
            Program::Command(argv) => argv.clone(),
            Program::Idle { reason } => {
                tracing::debug!(pod = %self.name(), container = %spec.name, %reason, "idle container");
                IDLE_ARGV.iter().map(|s| s.to_string()).collect()
            }
        };
        let data = self.keyed_data().await?;
        let mut env = container_env(&self.pod, &spec, &self.pod_ip, &self.ctx.host_ip, &data)?;
        let argv: Vec<String> = argv.iter().map(|arg| expand(arg, &env)).collect();
        env.push(("PATH".into(), container::container_path(&self.ctx.settings.program_dirs)));
        env.push(("HOME".into(), "/root".into()));
        let mut binds = Vec::new();
        let mut propagation = Propagation::Private;
        for mount in spec.volume_mounts.iter().flatten() {
            let Some(source) = mount_source(&self.volumes.paths, &mount.name, mount.sub_path.as_deref()) else {
                continue;
            };
            let asked = match mount.mount_propagation.as_deref() {
                Some("Bidirectional") => Propagation::Bidirectional,
                Some("HostToContainer") => Propagation::HostToContainer,
                _ => Propagation::Private,
            };
            propagation = propagation.max(asked);
            if source != mount.mount_path {
                binds.push(Bind {
                    source,
                    target: mount.mount_path.clone(),
                    read_only: mount.read_only.unwrap_or(false),
                });
            }
        }
        let log = self.ctx.log_dir().join(format!("{}_{}_{}.log", self.namespace(), self.name(), spec.name));
        let netns = (!self.host_network()).then(|| self.ctx.pod_network_path(self.uid())).flatten();
        let launch = Launch { argv, env, netns, propagation, binds, log };
        let running = container::start(self.ctx.ns(), &launch, slot, self.exits_tx.clone()).await?;
        Ok(Some(running))
    }

    async fn keyed_data(&self) -> Result<KeyedData> {
        let (secrets, config_maps) = referenced_sources(&self.pod);
        let mut data = KeyedData::default();
        let client = self.ctx.client.clone();
        for name in secrets {
            let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), self.namespace());
            if let Some(secret) = api
                .get_opt(&name)
                .await
                .map_err(|e| Error::kube(format!("get Secret {}/{name}", self.namespace()), e))?
            {
                let mut values: BTreeMap<String, String> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                values.extend(secret.string_data.unwrap_or_default());
                data.secrets.insert(name, values);
            }
        }
        for name in config_maps {
            let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), self.namespace());
            if let Some(cm) = api
                .get_opt(&name)
                .await
                .map_err(|e| Error::kube(format!("get ConfigMap {}/{name}", self.namespace()), e))?
            {
                data.config_maps.insert(name, cm.data.unwrap_or_default());
            }
        }
        Ok(data)
    }

    async fn command(&mut self, command: PodCommand) {
        match command {
            PodCommand::Roots(key, reply) => {
                let roots = self
                    .slots
                    .iter()
                    .filter_map(|s| s.running.as_ref().map(|r| (s.spec.name.clone(), r.root().display().to_string())))
                    .collect();
                let _ = reply.send((key, roots)).await;
            }
            PodCommand::Kill(container) => {
                for slot in &self.slots {
                    if container.as_deref().is_none_or(|c| c == slot.spec.name)
                        && let Some(running) = &slot.running
                    {
                        running.kill_all();
                    }
                }
            }
        }
    }

    async fn exited(&mut self, slot: usize) {
        let Some(code) = self.slots[slot].running.as_ref().and_then(Running::exit_code) else { return };
        let policy = self.pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into());
        let max = Duration::from_millis(self.ctx.settings.restart_backoff_max_ms);
        let base = Duration::from_millis(self.ctx.settings.restart_backoff_ms);
        let s = &mut self.slots[slot];
        let ran_for =
            s.running.as_ref().map(|r| jiff::Timestamp::now().duration_since(r.started_at)).unwrap_or_default();
        s.running = None;
        s.ready = false;
        s.last_exit = Some((code, jiff::Timestamp::now()));
        // A container that ran ten minutes without trouble starts its backoff afresh.
        if ran_for.as_secs() >= 600 {
            s.backoff = base;
        }
        let restart = match policy.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        if restart {
            s.restart_at = Some(tokio::time::Instant::now() + s.backoff);
            s.backoff = (s.backoff * 2).min(max);
        } else {
            s.finished = true;
        }
        let name = s.spec.name.clone();
        tracing::info!(node = %self.ctx.name, pod = %self.name(), container = %name, code, restart, "container exited");
        self.report().await;
    }

    async fn tick(&mut self) {
        let now = tokio::time::Instant::now();
        for slot in 0..self.slots.len() {
            let due = self.slots[slot].restart_at.is_some_and(|at| at <= now);
            if due {
                self.slots[slot].restart_at = None;
                self.slots[slot].restarts += 1;
                self.start_container(slot).await;
            }
            self.probe(slot, now).await;
            if let Program::Registrar { socket } = self.slots[slot].program.clone()
                && !self.slots[slot].registered
            {
                match self.ctx.register_driver(&socket).await {
                    Ok(()) => {
                        self.slots[slot].registered = true;
                        self.slots[slot].ready = true;
                    }
                    Err(err) => tracing::debug!(node = %self.ctx.name, %socket, %err, "plugin not registered yet"),
                }
            }
        }
        self.report().await;
    }

    async fn probe(&mut self, slot: usize, now: tokio::time::Instant) {
        let s = &self.slots[slot];
        let (Some(probe), Some(running)) = (s.spec.readiness_probe.clone(), s.running.as_ref()) else { return };
        if s.probe_at > now {
            return;
        }
        let ok = probes::check(&probe, &s.spec, &self.pod_ip, running).await;
        let period = probe.period_seconds.unwrap_or(10).max(1) as u64;
        let s = &mut self.slots[slot];
        // Probe quickly until first ready, then at the probe's period.
        let next = if s.ready || ok { Duration::from_secs(period) } else { Duration::from_millis(500) };
        s.probe_at = now + next;
        s.ready = ok;
    }

    fn report_value(&self) -> PodReport {
        let containers = self
            .slots
            .iter()
            .map(|s| {
                let running_since = match &s.program {
                    Program::Registrar { .. } => s.registered.then_some(self.start_time),
                    _ => s.running.as_ref().map(|r| r.started_at),
                };
                let waiting = if running_since.is_some() {
                    None
                } else if s.restart_at.is_some() {
                    Some((
                        "CrashLoopBackOff".to_string(),
                        format!("back-off {:?} restarting failed container={}", s.backoff, s.spec.name),
                    ))
                } else {
                    self.waiting_reason.clone()
                };
                let terminated = if s.finished { s.last_exit } else { None };
                let waiting = if terminated.is_some() { None } else { waiting };
                ContainerReport {
                    name: s.spec.name.clone(),
                    image: s.spec.image.clone().unwrap_or_default(),
                    running_since,
                    waiting,
                    terminated,
                    last_exit: if s.finished { None } else { s.last_exit },
                    ready: s.ready,
                    restarts: s.restarts,
                    pid: s.running.as_ref().map(|r| r.pid),
                }
            })
            .collect();
        // As kubelet: every container ended for good is Succeeded if all exited 0, else Failed.
        let all_finished = !self.slots.is_empty() && self.slots.iter().all(|s| s.finished);
        let phase = if all_finished {
            if self.slots.iter().all(|s| s.last_exit.is_some_and(|(code, _)| code == 0)) {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if self.initialized && !self.slots.is_empty() {
            "Running"
        } else {
            "Pending"
        };
        PodReport {
            transitions: self.transitions.clone(),
            phase,
            host_ip: self.ctx.host_ip.clone(),
            pod_ip: self.pod_ip.clone(),
            initialized: self.initialized,
            start_time: self.start_time,
            containers,
        }
    }

    /// Patches the pod's status when what it reports changed (times aside). A condition keeps
    /// its transition time until its status flips.
    async fn report(&mut self) {
        let now = jiff::Timestamp::now();
        let report = self.report_value();
        for (type_, ok) in report.condition_statuses() {
            let entry = self.transitions.entry(type_.to_string()).or_insert((ok, now));
            if entry.0 != ok {
                *entry = (ok, now);
            }
        }
        let report = PodReport { transitions: self.transitions.clone(), ..report };
        let mut fingerprint = report.patch();
        strip_times(&mut fingerprint);
        if self.last_report.as_ref() == Some(&fingerprint) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), self.namespace());
        match api.patch_status(self.name(), &PatchParams::default(), &Patch::Strategic(report.patch())).await {
            Ok(_) => self.last_report = Some(fingerprint),
            Err(err) => tracing::warn!(node = %self.ctx.name, pod = %self.name(), %err, "status patch failed"),
        }
    }

    async fn event(&mut self, type_: EventType, reason: &str, message: &str) {
        let text = format!("{reason}: {message}");
        if self.last_event.as_deref() == Some(text.as_str()) {
            return;
        }
        self.last_event = Some(text);
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: self.pod.metadata.name.clone(),
            namespace: self.pod.metadata.namespace.clone(),
            uid: self.pod.metadata.uid.clone(),
            ..Default::default()
        };
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(message.to_string()),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(err) = self.ctx.recorder.publish(&event, &reference).await {
            tracing::debug!(node = %self.ctx.name, pod = %self.name(), %err, "event not recorded");
        }
    }

    /// preStop hooks, SIGTERM, grace period, SIGKILL; volumes torn down; the pod deleted.
    async fn terminate(&mut self) -> Result<()> {
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .clamp(0, 30) as u64;
        let grace = Duration::from_secs(grace.max(1));
        let pod = self.name().to_string();
        tracing::info!(node = %self.ctx.name, %pod, ?grace, "stopping the pod");
        for slot in &mut self.slots {
            let Some(running) = slot.running.as_mut() else { continue };
            if let Some(hook) =
                slot.spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).and_then(|h| h.exec.as_ref())
            {
                let argv = hook.command.clone().unwrap_or_default();
                if let Err(err) = running.exec(&argv, grace).await {
                    tracing::info!(container = %slot.spec.name, %err, "preStop hook failed");
                }
            }
            let code = running.stop(grace).await;
            tracing::info!(node = %self.ctx.name, %pod, container = %slot.spec.name, code, "container stopped");
            slot.running = None;
        }
        for slot in &mut self.slots {
            if let Program::Registrar { socket } = &slot.program
                && slot.registered
            {
                self.ctx.deregister_driver(socket).await;
                slot.registered = false;
            }
        }
        let mut delay_ms = MOUNT_RETRY_MS.0;
        let uid = self.uid().to_string();
        while let Err(err) = self.ctx.volumes().teardown(&uid, &mut self.volumes).await {
            tracing::warn!(node = %self.ctx.name, pod = %self.name(), %err, "volume teardown failed; retrying");
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            delay_ms = (delay_ms * 2).min(MOUNT_RETRY_MS.1);
        }
        self.ctx.release_pod_network(self.uid()).await;
        tracing::info!(node = %self.ctx.name, pod = %self.name(), "volumes torn down");
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), self.namespace());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: self.pod.metadata.uid.clone(), resource_version: None }),
            ..DeleteParams::default()
        };
        // kubelet's last word on the pod: retried, or the pod would stay Terminating.
        let mut delay_ms = MOUNT_RETRY_MS.0;
        loop {
            match api.delete(self.name(), &params).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return Ok(()),
                Err(e) if delay_ms >= MOUNT_RETRY_MS.1 => {
                    return Err(Error::kube(format!("delete Pod {}/{}", self.namespace(), self.name()), e));
                }
                Err(e) => {
                    tracing::warn!(node = %self.ctx.name, pod = %self.name(), %e, "final delete failed; retrying")
                }
            }
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            delay_ms *= 2;
        }
    }
}

/// Removes the timestamps from a status patch, so that two reports compare by content.
fn strip_times(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|key, _| {
                !matches!(key.as_str(), "lastTransitionTime" | "startedAt" | "finishedAt" | "startTime")
            });
            map.values_mut().for_each(strip_times);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_times),
        _ => {}
    }
}

/// The pod's log directory name on the node.
pub fn log_dir(root: &std::path::Path, node: &str) -> PathBuf {
    root.join(node).join("logs")
}
