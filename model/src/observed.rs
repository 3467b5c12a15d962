//! What a reconcile of one dataset/runtime pair sees: a read-only snapshot.
//!
//! Both drivers (the simulator's store, the controller's reflector stores) build it with
//! `crate::observe::observe`, so both select the same objects the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{Dataset, JuiceFSRuntime};
use crate::effect::{CompactString, ObjectRef};
use crate::labels::DatasetKeys;

/// The lifecycle phase of a pod, as the model needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodPhase {
    /// Not yet running (scheduling, pulling, waiting for volumes).
    Pending,
    /// Running.
    Running,
    /// Completed successfully.
    Succeeded,
    /// Completed with a failure.
    Failed,
    /// The kubelet lost contact.
    Unknown,
}

impl PodPhase {
    /// Parses `status.phase`; anything unknown is [`PodPhase::Unknown`].
    pub fn parse(text: Option<&str>) -> Self {
        match text {
            Some("Pending") | None => PodPhase::Pending,
            Some("Running") => PodPhase::Running,
            Some("Succeeded") => PodPhase::Succeeded,
            Some("Failed") => PodPhase::Failed,
            Some(_) => PodPhase::Unknown,
        }
    }

    /// The phase of a pod with this status (none yet: `Pending`).
    pub fn of(status: Option<&PodStatus>) -> Self {
        Self::parse(status.and_then(|s| s.phase.as_deref()))
    }

    /// True once the pod can no longer use a volume.
    pub fn is_completed(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

/// The parts of a pod the model reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodView {
    /// Namespace. Names are inline up to 24 bytes: drivers keep views current and copy them
    /// into every observation, which then reads no pointer into scattered allocations.
    pub namespace: CompactString,
    /// Name.
    pub name: CompactString,
    /// The node it is bound to, if scheduled.
    pub node_name: Option<CompactString>,
    /// Phase.
    pub phase: PodPhase,
    /// The `Ready` condition is true.
    pub ready: bool,
    /// It has a deletionTimestamp.
    pub deleting: bool,
    /// Why the scheduler cannot place it: the message of its `PodScheduled=False` condition
    /// (kube-scheduler's "0/3 nodes are available: …").
    pub unschedulable: Option<String>,
}

impl PodView {
    /// Reads a Kubernetes pod.
    pub fn from_pod(pod: &Pod) -> Self {
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        Self::from_parts(&pod.metadata, node_name, pod.status.as_ref())
    }

    /// Reads a pod from its parts (for drivers that store the spec apart, shared between
    /// versions of the pod): metadata, `spec.nodeName` and status.
    pub fn from_parts(metadata: &ObjectMeta, node_name: Option<&str>, status: Option<&PodStatus>) -> Self {
        let mut view = Self {
            namespace: CompactString::from(metadata.namespace.as_deref().unwrap_or_default()),
            name: CompactString::from(metadata.name.as_deref().unwrap_or_default()),
            node_name: None,
            phase: PodPhase::Unknown,
            ready: false,
            deleting: false,
            unschedulable: None,
        };
        view.refresh(metadata, node_name, status);
        view
    }

    /// Brings the view of an earlier version of the same pod up to date, allocating only for a
    /// node that changed (drivers that keep views current on every pod write call this).
    pub fn refresh(&mut self, metadata: &ObjectMeta, node_name: Option<&str>, status: Option<&PodStatus>) {
        if self.node_name.as_deref() != node_name {
            self.node_name = node_name.map(CompactString::from);
        }
        self.phase = PodPhase::of(status);
        self.ready = is_ready(status);
        self.deleting = metadata.deletion_timestamp.is_some();
        let unschedulable = unschedulable_message(status);
        if self.unschedulable.as_deref() != unschedulable {
            self.unschedulable = unschedulable.map(str::to_string);
        }
    }

    /// True if the pod may still be using a volume: not completed (deleting pods included,
    /// because their containers may still run).
    pub fn may_use_volumes(&self) -> bool {
        !self.phase.is_completed()
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// True when a pod with this status is ready: its `Ready` condition is `True`.
pub fn is_ready(status: Option<&PodStatus>) -> bool {
    status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The scheduler's message while a pod with this status cannot be placed: its `PodScheduled`
/// condition is `False` (any reason; kube-scheduler says `Unschedulable`).
pub fn unschedulable_message(status: Option<&PodStatus>) -> Option<&str> {
    let conditions = status?.conditions.as_ref()?;
    let scheduled = conditions.iter().find(|c| c.type_ == "PodScheduled")?;
    (scheduled.status == "False").then(|| scheduled.message.as_deref().unwrap_or("no reason given"))
}

/// The names of the PVCs a pod's volumes refer to, in volume order: what makes a pod a user
/// of a dataset (drivers index and route pods by it).
pub fn claim_names(spec: Option<&PodSpec>) -> impl Iterator<Item = &str> {
    spec.into_iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(|volume| volume.persistent_volume_claim.as_ref())
        .map(|claim| claim.claim_name.as_str())
}

/// Returns true when `pod` names the PVC `claim_name` in one of its volumes.
pub fn pod_uses_claim(pod: &Pod, claim_name: &str) -> bool {
    claim_names(pod.spec.as_ref()).any(|claim| claim == claim_name)
}

/// A node as the model reads it: its name and labels, shared with the driver's cache.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    node: Arc<Node>,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl NodeView {
    /// Reads a Kubernetes node.
    pub fn from_node(node: &Arc<Node>) -> Self {
        Self { node: node.clone() }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    /// Its labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }
}

/// Cache figures one worker reported (from JuiceFS's metrics endpoint, or the simulator).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheSample {
    /// The worker pod.
    pub pod_name: String,
    /// Bytes in the worker's block cache (`juicefs_blockcache_bytes`).
    pub cached_bytes: u64,
    /// Block-cache hits.
    pub cache_hits: u64,
    /// Block-cache misses.
    pub cache_misses: u64,
    /// Bytes used in the whole volume (`juicefs_used_space`), the dataset's UFS total.
    pub used_space_bytes: u64,
}

/// Everything one reconcile of the dataset/runtime pair `namespace/name` reads. Objects are
/// shared (`Arc`) with the driver's cache, as kube's reflector stores hand them out.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed<R = JuiceFSRuntime> {
    /// Namespace of the pair.
    pub namespace: String,
    /// Name of the pair (dataset, runtime and PVC share it).
    pub name: String,
    /// The dataset `namespace/name`.
    pub dataset: Option<Arc<Dataset>>,
    /// The runtime `namespace/name`.
    pub runtime: Option<Arc<R>>,
    /// The master StatefulSet, for engines that have one.
    pub master: Option<Arc<StatefulSet>>,
    /// The worker StatefulSet, by its derived name.
    pub workers: Option<Arc<StatefulSet>>,
    /// The FUSE DaemonSet, by its derived name.
    pub fuse: Option<Arc<DaemonSet>>,
    /// The PV `<namespace>-<name>`.
    pub persistent_volume: Option<Arc<PersistentVolume>>,
    /// The PVC `namespace/name`.
    pub persistent_volume_claim: Option<Arc<PersistentVolumeClaim>>,
    /// Pods of the worker StatefulSet (selected by its labels).
    pub worker_pods: Vec<PodView>,
    /// Pods in the namespace that name the PVC.
    pub claim_users: Vec<PodView>,
    /// Nodes that run a worker pod of this runtime or carry one of this dataset's label keys
    /// (those [`Observed::node_label_keys`] picks). Build it with [`relevant_nodes`].
    pub nodes: Vec<NodeView>,
    /// The common label key (`fluid.io/s-…`) of every dataset in the cluster, this one included,
    /// so that `fluid.io/dataset-num` is computed rather than counted up and down. Shared: a
    /// driver rebuilds it only when a dataset comes or goes, not per reconcile.
    pub cluster_common_labels: Arc<CommonLabels>,
    /// Cache samples of the worker pods, by pod name.
    pub cache_samples: Vec<CacheSample>,
    /// Objects of this pair the controller created that its cache does not show yet (an
    /// informer lags the writes it did not see come back). A driver keeps them from its own
    /// writes and forgets each once its cache holds it.
    pub unconfirmed_creates: Vec<ObjectRef>,
    /// The pair's namespace is being deleted: the API server refuses new objects in it (403),
    /// and the namespace controller deletes the pair next.
    pub namespace_terminating: bool,
}

impl<R> Observed<R> {
    /// An empty view of the pair `namespace/name`: nothing exists yet.
    pub fn empty(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            dataset: None,
            runtime: None,
            master: None,
            workers: None,
            fuse: None,
            persistent_volume: None,
            persistent_volume_claim: None,
            worker_pods: Vec::new(),
            claim_users: Vec::new(),
            nodes: Vec::new(),
            cluster_common_labels: Arc::default(),
            cache_samples: Vec::new(),
            unconfirmed_creates: Vec::new(),
            namespace_terminating: false,
        }
    }
}

/// The common label keys of every dataset in a cluster. Hashed: a reconcile asks it about each
/// dataset label on each node it looks at, and only ever asks whether a key is in it.
pub type CommonLabels = rustc_hash::FxHashSet<String>;

/// The common label of each of `datasets` (those with a namespace and a name, and keys: a long
/// name needs the UID): what `Observed::cluster_common_labels` holds.
pub fn common_labels_of<'a>(datasets: impl IntoIterator<Item = &'a Dataset>) -> CommonLabels {
    datasets
        .into_iter()
        .filter_map(|dataset| {
            let meta = &dataset.metadata;
            let keys = DatasetKeys::new(meta.namespace.as_deref()?, meta.name.as_deref()?, meta.uid.as_deref());
            keys.ok().map(|keys| keys.common_label())
        })
        .collect()
}

impl<R: kube::Resource> Observed<R> {
    /// The label keys that make a node relevant to a reconcile of this pair ([`relevant_nodes`]),
    /// asked once `dataset` and `runtime` are set. While the runtime lives, the FUSE label is the
    /// CSI plugin's and label sync has nothing to do on a node that carries only it, so those
    /// nodes (one per node that runs a pod of the dataset: far more than its cache nodes) are
    /// not read. With the runtime absent or going, its teardown strips the FUSE label too.
    pub fn node_label_keys(&self, keys: &DatasetKeys, runtime_type: &str) -> Vec<String> {
        let runtime_lives = self.runtime.as_deref().is_some_and(|r| r.meta().deletion_timestamp.is_none());
        if runtime_lives { keys.cache_node_label_keys(runtime_type) } else { keys.all_node_label_keys(runtime_type) }
    }
}

/// Picks the nodes a reconcile needs: those running one of `worker_pods`, and those carrying any
/// of `our_keys`, the dataset's node label keys that [`Observed::node_label_keys`] picks (which a
/// driver also needs to look candidates up). Output is sorted by name.
pub fn relevant_nodes<'a>(
    our_keys: &[String],
    worker_pods: &[PodView],
    all_nodes: impl IntoIterator<Item = &'a Arc<Node>>,
) -> Vec<NodeView> {
    let worker_nodes: BTreeSet<&str> = worker_pods.iter().filter_map(|p| p.node_name.as_deref()).collect();
    let mut nodes: Vec<NodeView> = all_nodes
        .into_iter()
        .filter(|node| {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            let labels = node.metadata.labels.as_ref();
            worker_nodes.contains(name)
                || labels.is_some_and(|labels| our_keys.iter().any(|key| labels.contains_key(key)))
        })
        .map(NodeView::from_node)
        .collect();
    nodes.sort_by(|a, b| a.name().cmp(b.name()));
    nodes
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, Volume};

    use super::*;

    #[test]
    fn a_pod_uses_the_claims_its_volumes_name_and_no_other() {
        let claim = |name: &str| Volume {
            name: format!("v-{name}"),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: name.into(),
                read_only: None,
            }),
            ..Default::default()
        };
        let scratch =
            Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() };
        let spec = PodSpec { volumes: Some(vec![claim("b"), scratch, claim("a")]), ..Default::default() };
        assert_eq!(claim_names(Some(&spec)).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(claim_names(None).count(), 0);
        let pod = Pod { spec: Some(spec), ..Default::default() };
        assert!(pod_uses_claim(&pod, "a") && !pod_uses_claim(&pod, "tmp") && !pod_uses_claim(&Pod::default(), "a"));
    }

    #[test]
    fn a_view_refreshed_through_a_pods_life_equals_a_fresh_one() {
        use k8s_openapi::api::core::v1::PodCondition;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let metadata = ObjectMeta { name: Some("app".into()), namespace: Some("team".into()), ..Default::default() };
        let mut view = PodView::from_parts(&metadata, None, None);
        assert_eq!(
            (view.phase, view.ready, view.deleting, view.node_name.as_deref()),
            (PodPhase::Pending, false, false, None)
        );
        let ready = PodCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() };
        let running = PodStatus { phase: Some("Running".into()), conditions: Some(vec![ready]), ..Default::default() };
        let deleting = ObjectMeta { deletion_timestamp: Some(Time(Default::default())), ..metadata.clone() };
        let failed = PodStatus { phase: Some("Failed".into()), ..Default::default() };
        let steps: [(&ObjectMeta, Option<&str>, Option<&PodStatus>); 5] = [
            (&metadata, Some("node-1"), None),
            (&metadata, Some("node-1"), Some(&running)),
            (&deleting, Some("node-1"), Some(&running)),
            (&deleting, Some("node-2"), Some(&failed)),
            (&metadata, None, None),
        ];
        for (meta, node, status) in steps {
            view.refresh(meta, node, status);
            assert_eq!(view, PodView::from_parts(meta, node, status));
        }
        let pod = Pod { metadata: deleting, status: Some(running), ..Default::default() };
        let seen = PodView::from_pod(&pod);
        assert!(seen.ready && seen.deleting && seen.phase == PodPhase::Running && seen.key() == "team/app");
    }

    #[test]
    fn the_common_labels_are_those_of_datasets_with_keys() {
        let dataset = |namespace: Option<&str>, name: &str, uid: Option<&str>| Dataset {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: namespace.map(Into::into),
                uid: uid.map(Into::into),
                ..Default::default()
            },
            spec: Default::default(),
            status: None,
        };
        let long = "d".repeat(60);
        let datasets = [
            dataset(Some("team"), "data", None),
            dataset(None, "no-namespace", None),
            dataset(Some("team"), &long, None),
            dataset(Some("team"), &long, Some("uid-1")),
        ];
        let mut common: Vec<String> = common_labels_of(&datasets).into_iter().collect();
        common.sort();
        assert_eq!(
            common,
            ["fluid.io/s-team-data", "fluid.io/s-uid-1"],
            "no keys without a namespace, or a UID for a long name"
        );
    }

    #[test]
    fn nodes_with_only_the_fuse_label_are_read_only_while_the_runtime_is_absent_or_going() {
        let keys = DatasetKeys::new("team", "data", None).expect("short names");
        let node = |name: &str, labels: &[&str]| {
            let labels = labels.iter().map(|key| (key.to_string(), "true".to_string())).collect();
            Arc::new(Node {
                metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() },
                ..Default::default()
            })
        };
        let nodes = [
            node("cache", &["fluid.io/s-team-data", "fluid.io/f-team-data"]),
            node("fuse-only", &["fluid.io/f-team-data"]),
            node("other", &["fluid.io/f-team-other"]),
        ];
        let names = |observed: &Observed| {
            let keys = observed.node_label_keys(&keys, "juicefs");
            relevant_nodes(&keys, &[], &nodes).iter().map(|n| n.name().to_string()).collect::<Vec<_>>()
        };
        let mut observed = Observed::empty("team", "data");
        assert_eq!(names(&observed), ["cache", "fuse-only"], "no runtime: an orphan cleanup strips the FUSE label");
        let mut runtime = JuiceFSRuntime::new("data", Default::default());
        observed.runtime = Some(Arc::new(runtime.clone()));
        assert_eq!(names(&observed), ["cache"], "a live runtime leaves the FUSE label to the CSI plugin");
        runtime.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()));
        observed.runtime = Some(Arc::new(runtime));
        assert_eq!(names(&observed), ["cache", "fuse-only"], "teardown strips the FUSE label too");
    }
}
