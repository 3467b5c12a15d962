//! One node: its registration (the Node object, its status and its Lease heartbeat), its
//! namespaces, its pods (one worker each, fed by a watch of the pods bound to it), and its
//! power: down stops the heartbeat and every process and mount on it; up boots it afresh.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::api::storage::v1::{CSINode, CSINodeDriver, CSINodeSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::nodens::NodeNamespace;
use super::pod::{self, PodCommand};
use super::podnet::{self, GATEWAY, NodeSubnet, PodNet};
use super::volumes::NodeVolumes;
use crate::error::{Error, Result};

/// How the agent runs pods, for every node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directories put first on containers' `PATH`: the workspace's binaries, `juicefs`.
    pub program_dirs: Vec<PathBuf>,
    /// Run JuiceFS cache workers' real command (false: they idle).
    pub run_workers: bool,
    /// CrashLoopBackOff's first delay and its cap.
    pub restart_backoff_ms: u64,
    /// See `restart_backoff_ms`.
    pub restart_backoff_max_ms: u64,
    /// Where node logs go.
    pub state_dir: PathBuf,
    /// Lease renewal period (kubelet: a quarter of the 40 s lease).
    pub lease_renew_ms: u64,
    /// Give pods whose every container idles a network namespace too (false: they share the
    /// node's address, which saves a thousand namespaces in the benchmarks; nothing listens
    /// in them).
    pub network_for_idle_pods: bool,
}

/// A node as the agent registers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's name.
    pub name: String,
    /// `status.capacity` (and allocatable): cpu, memory, pods, …
    #[serde(default = "default_capacity")]
    pub capacity: BTreeMap<String, String>,
    /// Extra labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints it registers with.
    #[serde(default)]
    pub taints: Vec<Taint>,
}

/// 8 CPUs, 32 GiB and 110 pods, as the simulator's default node.
pub fn default_capacity() -> BTreeMap<String, String> {
    BTreeMap::from([("cpu".into(), "8".into()), ("memory".into(), "32Gi".into()), ("pods".into(), "110".into())])
}

/// One boot of a node: what its pods share.
pub struct NodeContext {
    /// The node's name.
    pub name: String,
    /// The API client, authenticated as `system:node:<name>`.
    pub client: kube::Client,
    /// Agent settings.
    pub settings: Arc<Settings>,
    /// The node's address, which host-network pods share: the pods' gateway.
    pub host_ip: String,
    /// Events as `kubelet`.
    pub recorder: Recorder,
    ns: Arc<NodeNamespace>,
    volumes: NodeVolumes,
    subnet: Arc<NodeSubnet>,
    nets: Mutex<BTreeMap<String, Arc<PodNet>>>,
}

impl NodeContext {
    /// The node's namespaces.
    pub fn ns(&self) -> &NodeNamespace {
        &self.ns
    }

    /// The node's volume manager.
    pub fn volumes(&self) -> &NodeVolumes {
        &self.volumes
    }

    /// Where this node's container logs go.
    pub fn log_dir(&self) -> PathBuf {
        pod::log_dir(&self.settings.state_dir, &self.name)
    }

    /// The pod's network namespace, created on first use; its IP.
    pub async fn pod_network(&self, uid: &str) -> Result<Ipv4Addr> {
        if let Some(net) = self.nets.lock().unwrap_or_else(PoisonError::into_inner).get(uid) {
            return Ok(net.ip);
        }
        let tag: String = uid.chars().filter(char::is_ascii_alphanumeric).take(6).collect();
        let net = Arc::new(podnet::create(&self.subnet, &tag).await?);
        let ip = net.ip;
        self.nets.lock().unwrap_or_else(PoisonError::into_inner).insert(uid.to_string(), net);
        Ok(ip)
    }

    /// The pod's network namespace file, if it has one.
    pub fn pod_network_path(&self, uid: &str) -> Option<PathBuf> {
        self.nets.lock().unwrap_or_else(PoisonError::into_inner).get(uid).map(|net| net.path())
    }

    /// Deletes the pod's network namespace.
    pub async fn release_pod_network(&self, uid: &str) {
        let net = self.nets.lock().unwrap_or_else(PoisonError::into_inner).remove(uid);
        if let Some(net) = net.and_then(|n| Arc::try_unwrap(n).ok()) {
            net.delete().await;
        }
    }

    /// Registers the CSI plugin at `socket` and lists its driver in the node's CSINode.
    pub async fn register_driver(&self, socket: &str) -> Result<()> {
        let (driver, node_id) = self.volumes.register(socket).await?;
        self.update_csinode(&driver, Some(node_id)).await?;
        tracing::info!(node = %self.name, %driver, %socket, "CSI driver registered");
        Ok(())
    }

    /// Forgets the plugin at `socket` and drops it from the CSINode.
    pub async fn deregister_driver(&self, socket: &str) {
        if let Some(driver) = self.volumes.deregister(socket)
            && let Err(err) = self.update_csinode(&driver, None).await
        {
            tracing::warn!(node = %self.name, %driver, %err, "cannot drop the driver from the CSINode");
        }
    }

    async fn update_csinode(&self, driver: &str, node_id: Option<String>) -> Result<()> {
        let api: Api<CSINode> = Api::all(self.client.clone());
        let what = |verb: &str| format!("{verb} CSINode/{}", self.name);
        let existing = api.get_opt(&self.name).await.map_err(|e| Error::kube(what("get"), e))?;
        let mut drivers = existing.as_ref().map(|c| c.spec.drivers.clone()).unwrap_or_default();
        drivers.retain(|d| d.name != driver);
        if let Some(node_id) = node_id {
            drivers.push(CSINodeDriver { name: driver.to_string(), node_id, ..Default::default() });
        }
        match existing {
            Some(_) => {
                api.patch(
                    &self.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "drivers": drivers } })),
                )
                .await
                .map_err(|e| Error::kube(what("patch"), e))?;
            }
            None => {
                let csinode = CSINode {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        owner_references: Some(vec![self.node_owner().await?]),
                        ..Default::default()
                    },
                    spec: CSINodeSpec { drivers },
                };
                api.create(&PostParams::default(), &csinode).await.map_err(|e| Error::kube(what("create"), e))?;
            }
        }
        Ok(())
    }

    async fn node_owner(&self) -> Result<OwnerReference> {
        let node = Api::<Node>::all(self.client.clone())
            .get(&self.name)
            .await
            .map_err(|e| Error::kube(format!("get Node/{}", self.name), e))?;
        Ok(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.name.clone(),
            uid: node.metadata.uid.unwrap_or_default(),
            ..Default::default()
        })
    }
}

/// Commands to a node.
#[derive(Debug)]
pub enum NodeCommand {
    /// Power off: heartbeat, processes and mounts stop.
    Down(oneshot::Sender<Result<()>>),
    /// Power on (a fresh boot).
    Up(oneshot::Sender<Result<()>>),
    /// Crash a container of a pod on this node (all when `container` is `None`).
    Kill { namespace: String, pod: String, container: Option<String>, reply: oneshot::Sender<Result<()>> },
    /// The node's mount table, or where its root is reached.
    Inspect(oneshot::Sender<Result<NodeView>>),
}

/// What `Inspect` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    /// Whether the node is up.
    pub up: bool,
    /// Its root as the agent reaches it (`/proc/<pid>/root`); empty while down.
    pub root: String,
    /// Its `/proc/self/mountinfo`; empty while down.
    pub mountinfo: String,
    /// Pods the node runs: `namespace/name` → container → its process's root.
    pub containers: BTreeMap<String, BTreeMap<String, String>>,
}

/// The agent's side of a node.
#[derive(Clone)]
pub struct NodeHandle {
    /// The node's name.
    pub name: String,
    tx: mpsc::Sender<NodeCommand>,
}

impl NodeHandle {
    /// Sends `command` built around a reply channel and waits for the reply.
    pub async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<Result<T>>) -> NodeCommand) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(command(reply)).await.map_err(|_| Error::Config(format!("node {} is gone", self.name)))?;
        answer.await.map_err(|_| Error::Config(format!("node {} did not answer", self.name)))?
    }
}

struct PodEntry {
    key: String,
    versions: watch::Sender<Option<Arc<Pod>>>,
    commands: mpsc::Sender<PodCommand>,
    task: JoinHandle<()>,
}

type PodMap = Arc<Mutex<BTreeMap<String, PodEntry>>>;

struct Boot {
    ctx: Arc<NodeContext>,
    tasks: Vec<JoinHandle<()>>,
    pods: PodMap,
}

/// Starts node `spec` (booted), authenticated by `client`; numbered `index` for its pod subnet.
pub async fn start(spec: NodeSpec, index: u8, client: kube::Client, settings: Arc<Settings>) -> Result<NodeHandle> {
    let (tx, mut rx) = mpsc::channel(16);
    let subnet = Arc::new(NodeSubnet::new(index));
    let mut actor = NodeActor { spec: spec.clone(), client, settings, subnet, boot: None };
    actor.boot().await?;
    tokio::spawn(async move {
        while let Some(command) = rx.recv().await {
            actor.handle(command).await;
        }
        actor.power_off().await;
    });
    Ok(NodeHandle { name: spec.name, tx })
}

struct NodeActor {
    spec: NodeSpec,
    client: kube::Client,
    settings: Arc<Settings>,
    subnet: Arc<NodeSubnet>,
    boot: Option<Boot>,
}

impl NodeActor {
    async fn handle(&mut self, command: NodeCommand) {
        match command {
            NodeCommand::Down(reply) => {
                self.power_off().await;
                let _ = reply.send(Ok(()));
            }
            NodeCommand::Up(reply) => {
                let result = if self.boot.is_some() { Ok(()) } else { self.boot().await };
                let _ = reply.send(result);
            }
            NodeCommand::Kill { namespace, pod, container, reply } => {
                let key = format!("{namespace}/{pod}");
                let commands = self.boot.as_ref().and_then(|b| {
                    b.pods
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .values()
                        .find(|e| e.key == key)
                        .map(|e| e.commands.clone())
                });
                let result = match commands {
                    // Never wait on a pod busy setting up or stopping: the node would hang.
                    Some(commands) => commands
                        .try_send(PodCommand::Kill(container))
                        .map_err(|e| Error::Config(format!("pod {key} cannot take the command now: {e}"))),
                    None => Err(Error::Config(format!("pod {key} does not run on node {}", self.spec.name))),
                };
                let _ = reply.send(result);
            }
            NodeCommand::Inspect(reply) => {
                let _ = reply.send(self.inspect().await);
            }
        }
    }

    async fn inspect(&self) -> Result<NodeView> {
        let Some(boot) = &self.boot else {
            return Ok(NodeView {
                up: false,
                root: String::new(),
                mountinfo: String::new(),
                containers: BTreeMap::new(),
            });
        };
        let (tx, mut rx) = mpsc::channel(64);
        let senders: Vec<(String, mpsc::Sender<PodCommand>)> = boot
            .pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|e| (e.key.clone(), e.commands.clone()))
            .collect();
        for (key, commands) in senders {
            let _ = commands.try_send(PodCommand::Roots(key, tx.clone()));
        }
        drop(tx);
        let mut containers = BTreeMap::new();
        while let Ok(Some((key, roots))) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            containers.insert(key, roots);
        }
        Ok(NodeView {
            up: true,
            root: boot.ctx.ns().host_path("/").display().to_string(),
            mountinfo: boot.ctx.ns().mountinfo()?,
            containers,
        })
    }

    async fn boot(&mut self) -> Result<()> {
        let name = self.spec.name.clone();
        let ns = Arc::new(NodeNamespace::start(&name).await?);
        std::fs::create_dir_all(pod::log_dir(&self.settings.state_dir, &name))
            .map_err(|e| Error::io("create log directory", pod::log_dir(&self.settings.state_dir, &name), e))?;
        let reporter = Reporter { controller: "kubelet".into(), instance: Some(name.clone()) };
        let ctx = Arc::new(NodeContext {
            name: name.clone(),
            client: self.client.clone(),
            settings: Arc::clone(&self.settings),
            host_ip: GATEWAY.to_string(),
            recorder: Recorder::new(self.client.clone(), reporter),
            volumes: NodeVolumes::new(Arc::clone(&ns), self.client.clone()),
            ns,
            subnet: Arc::clone(&self.subnet),
            nets: Mutex::new(BTreeMap::new()),
        });
        register(&self.client, &self.spec, &self.subnet.cidr()).await?;
        let pods: PodMap = Arc::new(Mutex::new(BTreeMap::new()));
        let heartbeat = tokio::spawn(heartbeat(self.client.clone(), self.spec.clone(), self.settings.lease_renew_ms));
        let watch = tokio::spawn(watch_pods(Arc::clone(&ctx), Arc::clone(&pods)));
        tracing::info!(node = %name, "node up");
        self.boot = Some(Boot { ctx, tasks: vec![heartbeat, watch], pods });
        Ok(())
    }

    /// Stops everything of the node and waits until its processes and mounts are gone.
    async fn power_off(&mut self) {
        let Some(boot) = self.boot.take() else { return };
        let entries: Vec<PodEntry> =
            std::mem::take(&mut *boot.pods.lock().unwrap_or_else(PoisonError::into_inner)).into_values().collect();
        let tasks = boot.tasks.into_iter().chain(entries.into_iter().map(|e| e.task));
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        let name = boot.ctx.name.clone();
        // Namespaces of pods aborted half-way through their sandbox are not in the map.
        podnet::delete_node_namespaces(&self.subnet).await;
        match Arc::try_unwrap(boot.ctx) {
            Ok(ctx) => {
                let NodeContext { ns, volumes, .. } = ctx;
                drop(volumes);
                match Arc::try_unwrap(ns) {
                    Ok(ns) => ns.stop().await,
                    Err(_) => tracing::warn!(node = %name, "node namespace still referenced; it ends with the agent"),
                }
            }
            Err(_) => tracing::warn!(node = %name, "node context still referenced; its namespace ends with the agent"),
        }
        tracing::info!(node = %name, "node down");
    }
}

/// Creates the Node object, or takes it over after a reboot, and reports its status.
async fn register(client: &kube::Client, spec: &NodeSpec, pod_cidr: &str) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let what = |verb: &str| format!("{verb} Node/{}", spec.name);
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), spec.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
    ]);
    labels.extend(spec.labels.clone());
    if api.get_opt(&spec.name).await.map_err(|e| Error::kube(what("get"), e))?.is_none() {
        let node: Node = serde_json::from_value(json!({
            "metadata": { "name": spec.name, "labels": labels },
            "spec": { "podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "taints": spec.taints },
        }))
        .map_err(|e| Error::Config(format!("node {}: {e}", spec.name)))?;
        match api.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::kube(what("create"), e)),
        }
    }
    report_status(client, spec, true).await
}

/// Reports capacity, addresses and conditions; `booted` (a registration) also sets the
/// conditions' transition time, which a heartbeat leaves as it was.
async fn report_status(client: &kube::Client, spec: &NodeSpec, booted: bool) -> Result<()> {
    let now = jiff::Timestamp::now().to_string();
    let capacity: BTreeMap<String, Quantity> =
        spec.capacity.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        let mut condition =
            json!({ "type": type_, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now });
        if booted {
            condition["lastTransitionTime"] = json!(now);
        }
        condition
    };
    let status = json!({ "status": {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            { "type": "InternalIP", "address": GATEWAY.to_string() },
            { "type": "Hostname", "address": spec.name },
        ],
        "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "ferrofluid testbed",
            "containerRuntimeVersion": format!("ferrofluid-node-agent://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": "v1.36.3", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
    }});
    Api::<Node>::all(client.clone())
        .patch_status(&spec.name, &PatchParams::default(), &Patch::Strategic(status))
        .await
        .map_err(|e| Error::kube(format!("patch Node/{} status", spec.name), e))?;
    Ok(())
}

/// Renews the node's Lease every `renew_ms` and reports its status every minute.
async fn heartbeat(client: kube::Client, spec: NodeSpec, renew_ms: u64) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut ticks: u64 = 0;
    loop {
        let now = MicroTime(jiff::Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta { name: Some(spec.name.clone()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(spec.name.clone()),
                lease_duration_seconds: Some(40),
                renew_time: Some(now),
                ..Default::default()
            }),
        };
        let renewed = match leases.get_opt(&spec.name).await {
            Ok(Some(_)) => leases
                .patch(&spec.name, &PatchParams::default(), &Patch::Merge(json!({ "spec": { "renewTime": lease.spec.as_ref().and_then(|s| s.renew_time.clone()), "holderIdentity": spec.name } })))
                .await
                .map(|_| ()),
            Ok(None) => leases.create(&PostParams::default(), &lease).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(err) = renewed {
            tracing::warn!(node = %spec.name, %err, "lease renewal failed");
        }
        ticks += 1;
        if ticks.is_multiple_of((60_000 / renew_ms.max(1)).max(1))
            && let Err(err) = report_status(&client, &spec, false).await
        {
            tracing::warn!(node = %spec.name, %err, "status report failed");
        }
        tokio::time::sleep(Duration::from_millis(renew_ms)).await;
    }
}

/// Watches the pods bound to the node and keeps one worker per pod.
async fn watch_pods(ctx: Arc<NodeContext>, pods: PodMap) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.name));
    let mut stream = watcher(api, config).boxed();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => seen.clear(),
            Ok(watcher::Event::InitApply(pod)) => {
                seen.insert(pod.metadata.uid.clone().unwrap_or_default());
                dispatch(&ctx, &pods, pod);
            }
            Ok(watcher::Event::InitDone) => {
                let mut map = pods.lock().unwrap_or_else(PoisonError::into_inner);
                for (uid, entry) in map.iter() {
                    if !seen.contains(uid) {
                        let _ = entry.versions.send(None);
                    }
                }
                map.retain(|uid, entry| seen.contains(uid) || !entry.task.is_finished());
            }
            Ok(watcher::Event::Apply(pod)) => dispatch(&ctx, &pods, pod),
            Ok(watcher::Event::Delete(pod)) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let map = pods.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(entry) = map.get(&uid) {
                    let _ = entry.versions.send(None);
                }
            }
            Err(err) => {
                tracing::warn!(node = %ctx.name, %err, "pod watch error");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        pods.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, entry| !entry.task.is_finished());
    }
}

fn dispatch(ctx: &Arc<NodeContext>, pods: &PodMap, pod: Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let key = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let pod = Arc::new(pod);
    let mut map = pods.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(entry) = map.get(&uid)
        && !entry.task.is_finished()
    {
        let _ = entry.versions.send(Some(pod));
        return;
    }
    if pod.metadata.deletion_timestamp.is_some() && map.contains_key(&uid) {
        return;
    }
    let (versions, receiver) = watch::channel(Some(pod));
    let (commands, command_rx) = mpsc::channel(8);
    let task = tokio::spawn(pod::run(Arc::clone(ctx), receiver, command_rx));
    map.insert(uid, PodEntry { key, versions, commands, task });
}
