//! Reflector stores → `model::observed::Observed`, through the model's one observation
//! (`model::observe`): this file only looks objects up; which ones a reconcile sees is the model's.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef as StoreRef, Store, store::Writer};

use crate::index::{IndexedWriter, NodeIndex, PodIndex, Shared};
use model::api::{Dataset, JuiceFSRuntime};
use model::labels::DatasetKeys;
use model::observe::{ClusterView, KeepPod};
use model::observed::{CacheSample, CommonLabels, Observed, PodView, pod_uses_claim};

/// Read handles of every reflector the controllers share.
#[derive(Clone)]
pub struct Stores {
    /// Datasets.
    pub datasets: Store<Dataset>,
    /// JuiceFS runtimes.
    pub runtimes: Store<JuiceFSRuntime>,
    /// Worker StatefulSets (and any other; we look up by name).
    pub stateful_sets: Store<StatefulSet>,
    /// FUSE DaemonSets.
    pub daemon_sets: Store<DaemonSet>,
    /// PersistentVolumes.
    pub persistent_volumes: Store<PersistentVolume>,
    /// PersistentVolumeClaims.
    pub persistent_volume_claims: Store<PersistentVolumeClaim>,
    /// Nodes.
    pub nodes: Store<Node>,
    /// Pods, trimmed by [`trim_pod`].
    pub pods: Store<Pod>,
    /// Namespaces: one being deleted admits no new objects.
    pub namespaces: Store<Namespace>,
    /// The latest JuiceFS cache sample of each worker pod, filled by the scraper.
    pub cache_samples: crate::cache_metrics::CacheSamples,
    /// Pods by claim and by `release` label, fed with [`Stores::pods`].
    pub pod_index: Shared<PodIndex>,
    /// Nodes by label key, fed with [`Stores::nodes`].
    pub node_index: Shared<NodeIndex>,
    /// The last [`cluster_common_labels`] set, by a fingerprint of the datasets it was built from.
    common_labels: Arc<std::sync::Mutex<Option<FingerprintedLabels>>>,
    /// This controller's writes to datasets and runtimes that the watches have not shown yet.
    pub pending_writes: Arc<std::sync::Mutex<model::unconfirmed::PendingWrites>>,
}

/// A common-label set and the fingerprint of the datasets it was built from.
type FingerprintedLabels = (u64, Arc<CommonLabels>);

/// Write handles matching [`Stores`]; the watchers (or tests) feed them.
pub struct Writers {
    /// Datasets.
    pub datasets: Writer<Dataset>,
    /// JuiceFS runtimes.
    pub runtimes: Writer<JuiceFSRuntime>,
    /// StatefulSets.
    pub stateful_sets: Writer<StatefulSet>,
    /// DaemonSets.
    pub daemon_sets: Writer<DaemonSet>,
    /// PersistentVolumes.
    pub persistent_volumes: Writer<PersistentVolume>,
    /// PersistentVolumeClaims.
    pub persistent_volume_claims: Writer<PersistentVolumeClaim>,
    /// Nodes, and their index.
    pub nodes: IndexedWriter<Node, NodeIndex>,
    /// Pods, and their index.
    pub pods: IndexedWriter<Pod, PodIndex>,
    /// Namespaces.
    pub namespaces: Writer<Namespace>,
}

impl Stores {
    /// True when the store of `object`'s kind holds it (pods and nodes: always, they are not
    /// objects the model creates).
    pub fn holds(&self, object: &model::effect::ObjectRef) -> bool {
        use model::effect::Kind;
        let (namespace, name) = (object.namespace.as_str(), object.name.as_str());
        match object.kind {
            Kind::Dataset => namespaced(&self.datasets, namespace, name).is_some(),
            Kind::JuiceFSRuntime => namespaced(&self.runtimes, namespace, name).is_some(),
            Kind::StatefulSet => namespaced(&self.stateful_sets, namespace, name).is_some(),
            Kind::DaemonSet => namespaced(&self.daemon_sets, namespace, name).is_some(),
            Kind::PersistentVolumeClaim => namespaced(&self.persistent_volume_claims, namespace, name).is_some(),
            Kind::PersistentVolume => cluster(&self.persistent_volumes, name).is_some(),
            Kind::Node | Kind::Pod => true,
        }
    }

    /// The resourceVersion at which the store holds `object` (datasets and runtimes).
    pub fn resource_version_of(&self, object: &model::effect::ObjectRef) -> Option<String> {
        use model::effect::Kind;
        let (namespace, name) = (object.namespace.as_str(), object.name.as_str());
        match object.kind {
            Kind::Dataset => namespaced(&self.datasets, namespace, name)?.metadata.resource_version.clone(),
            Kind::JuiceFSRuntime => namespaced(&self.runtimes, namespace, name)?.metadata.resource_version.clone(),
            _ => None,
        }
    }

    /// Empty stores and their writers.
    pub fn new() -> (Stores, Writers) {
        let (datasets, datasets_w) = reflector::store();
        let (runtimes, runtimes_w) = reflector::store();
        let (stateful_sets, stateful_sets_w) = reflector::store();
        let (daemon_sets, daemon_sets_w) = reflector::store();
        let (persistent_volumes, persistent_volumes_w) = reflector::store();
        let (persistent_volume_claims, persistent_volume_claims_w) = reflector::store();
        let (nodes, nodes_w) = reflector::store();
        let (pods, pods_w) = reflector::store();
        let (namespaces, namespaces_w) = reflector::store();
        let stores = Stores {
            datasets,
            runtimes,
            stateful_sets,
            daemon_sets,
            persistent_volumes,
            persistent_volume_claims,
            nodes,
            pods,
            namespaces,
            cache_samples: Default::default(),
            pod_index: Shared::default(),
            node_index: Shared::default(),
            common_labels: Default::default(),
            pending_writes: Default::default(),
        };
        let writers = Writers {
            datasets: datasets_w,
            runtimes: runtimes_w,
            stateful_sets: stateful_sets_w,
            daemon_sets: daemon_sets_w,
            persistent_volumes: persistent_volumes_w,
            persistent_volume_claims: persistent_volume_claims_w,
            nodes: IndexedWriter::new(nodes_w, stores.node_index.clone()),
            pods: IndexedWriter::new(pods_w, stores.pod_index.clone()),
            namespaces: namespaces_w,
        };
        (stores, writers)
    }

    /// Resolves once every store has had its initial list; before that a missing object may
    /// only be unlisted, and the model would act on an absence that is not real.
    pub async fn wait_until_ready(&self) {
        // A dropped writer means shutdown; the caller stops anyway.
        let _ = futures::join!(
            self.datasets.wait_until_ready(),
            self.runtimes.wait_until_ready(),
            self.stateful_sets.wait_until_ready(),
            self.daemon_sets.wait_until_ready(),
            self.persistent_volumes.wait_until_ready(),
            self.persistent_volume_claims.wait_until_ready(),
            self.nodes.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.namespaces.wait_until_ready(),
        );
    }
}

fn namespaced<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>> {
    store.get(&StoreRef::new(name).within(namespace))
}

fn cluster<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, name: &str) -> Option<Arc<K>> {
    store.get(&StoreRef::new(name))
}

/// True for a namespace being deleted (its deletion timestamp set, or phase `Terminating`).
pub fn is_terminating(namespace: &Namespace) -> bool {
    namespace.metadata.deletion_timestamp.is_some()
        || namespace.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// The pair's keys, if its dataset is known and its names fit (or it has a UID).
pub fn dataset_keys(dataset: Option<&Dataset>, namespace: &str, name: &str) -> Option<DatasetKeys> {
    let uid = dataset.and_then(|d| d.metadata.uid.as_deref());
    DatasetKeys::new(namespace, name, uid).ok()
}

/// Everything one reconcile of the pair `namespace/name` reads, from the stores as they are now:
/// the model's one observation (`model::observe::observe`) over [`Stores`].
pub fn observe(stores: &Stores, runtime_type: &str, namespace: &str, name: &str) -> Observed {
    model::observe::observe(stores, runtime_type, namespace, name, stores.common_labels())
}

/// The reflector stores as the model reads them; pods and nodes are looked up through the
/// indexes, not by walking every pod and node of the cluster.
impl ClusterView for Stores {
    fn dataset(&self, namespace: &str, name: &str) -> Option<Arc<Dataset>> {
        namespaced(&self.datasets, namespace, name)
    }

    fn runtime(&self, namespace: &str, name: &str) -> Option<Arc<JuiceFSRuntime>> {
        namespaced(&self.runtimes, namespace, name)
    }

    fn stateful_set(&self, namespace: &str, name: &str) -> Option<Arc<StatefulSet>> {
        namespaced(&self.stateful_sets, namespace, name)
    }

    fn daemon_set(&self, namespace: &str, name: &str) -> Option<Arc<DaemonSet>> {
        namespaced(&self.daemon_sets, namespace, name)
    }

    fn persistent_volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        cluster(&self.persistent_volumes, name)
    }

    fn persistent_volume_claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        namespaced(&self.persistent_volume_claims, namespace, name)
    }

    fn node(&self, name: &str) -> Option<Arc<Node>> {
        cluster(&self.nodes, name)
    }

    fn namespace_terminating(&self, namespace: &str) -> bool {
        cluster(&self.namespaces, namespace).is_some_and(|ns| is_terminating(&ns))
    }

    fn pods_released_as(&self, namespace: &str, release: &str, keep: &KeepPod<'_>) -> Vec<PodView> {
        let index = crate::index::read(&self.pod_index);
        let released = index.released_as(namespace, release).filter_map(|name| namespaced(&self.pods, namespace, name));
        released.filter(|pod| keep(pod.metadata.labels.as_ref())).map(|pod| PodView::from_pod(&pod)).collect()
    }

    fn claim_users(&self, namespace: &str, claim: &str) -> Vec<PodView> {
        let index = crate::index::read(&self.pod_index);
        index
            .claim_users(namespace, claim)
            .filter_map(|name| namespaced(&self.pods, namespace, name))
            .filter(|pod| pod_uses_claim(pod, claim))
            .map(|pod| PodView::from_pod(&pod))
            .collect()
    }

    fn nodes_with_label_key(&self, key: &str, each: &mut dyn FnMut(&str)) {
        let index = crate::index::read(&self.node_index);
        for node in index.with_label_key(key) {
            each(node);
        }
    }

    fn cache_samples(&self, worker_pods: &[PodView]) -> Vec<CacheSample> {
        let Ok(samples) = self.cache_samples.read() else { return Vec::new() };
        worker_pods
            .iter()
            .filter_map(|pod| samples.get(&(pod.namespace.to_string(), pod.name.to_string())).cloned())
            .collect()
    }
}

impl Stores {
    /// The common label key of every dataset, shared between observations until a dataset
    /// comes, goes or gets a new UID: a fingerprint of who the datasets are (cheap hashing, no
    /// formatting) decides whether the set is rebuilt. Status updates do not rebuild it.
    pub fn common_labels(&self) -> Arc<CommonLabels> {
        let datasets = self.datasets.state();
        // Order-independent: the store lists in no fixed order.
        let fingerprint = datasets.iter().fold(datasets.len() as u64, |sum, d| {
            let meta = &d.metadata;
            let who = [meta.namespace.as_deref(), meta.name.as_deref(), meta.uid.as_deref()];
            let mut bytes = Vec::with_capacity(96);
            for part in who {
                bytes.extend_from_slice(part.unwrap_or_default().as_bytes());
                bytes.push(0);
            }
            sum.wrapping_add(model::labels::fnv1a_64(&bytes))
        });
        let mut cached = self.common_labels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, set)) = cached.as_ref()
            && *at == fingerprint
        {
            return set.clone();
        }
        let set = Arc::new(cluster_common_labels(&self.datasets));
        *cached = Some((fingerprint, set.clone()));
        set
    }
}

/// The common label key of every dataset in the store.
pub fn cluster_common_labels(datasets: &Store<Dataset>) -> CommonLabels {
    model::observed::common_labels_of(datasets.state().iter().map(|dataset| dataset.as_ref()))
}

/// Drops what no reconcile reads from a pod before it enters the store: the store holds every
/// pod of the cluster, and containers, statuses and managed fields are most of a pod's bytes.
/// Keeps what `PodView::from_pod`, `pod_uses_claim` and the trigger mapping read.
pub fn trim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.as_mut() {
        let node_name = spec.node_name.take();
        let volumes = spec.volumes.take().map(|volumes| {
            volumes
                .into_iter()
                .filter(|v| v.persistent_volume_claim.is_some())
                .map(|v| k8s_openapi::api::core::v1::Volume {
                    name: v.name,
                    persistent_volume_claim: v.persistent_volume_claim,
                    ..Default::default()
                })
                .collect()
        });
        *spec = k8s_openapi::api::core::v1::PodSpec { node_name, volumes, ..Default::default() };
    }
    if let Some(status) = pod.status.as_mut() {
        let phase = status.phase.take();
        let pod_ip = status.pod_ip.take();
        let conditions =
            // Ready, and PodScheduled only while false (the scheduler's reason), without its times.
            status.conditions.take().map(|conditions| {
                conditions
                    .into_iter()
                    .filter(|c| c.type_ == "Ready" || (c.type_ == "PodScheduled" && c.status == "False"))
                    .map(|c| k8s_openapi::api::core::v1::PodCondition {
                        last_probe_time: None,
                        last_transition_time: None,
                        ..c
                    })
                    .collect()
            });
        *status = k8s_openapi::api::core::v1::PodStatus { phase, conditions, pod_ip, ..Default::default() };
    }
}

/// Keeps only a node's name and labels (all `NodeView` reads): a node's status lists every
/// image it holds and is often the largest object in a cluster.
pub fn trim_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    node.spec = None;
    node.status = None;
}

/// Drops managed fields, which no reconcile reads, from any object before it enters a store.
pub fn trim_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Keeps of a worker StatefulSet what the model reads: metadata (the inputs hash, owners),
/// replicas, selector and status. The pod template, most of each object's size, is never read:
/// the hash annotation says whether it is current.
pub fn trim_stateful_set(set: &mut StatefulSet) {
    set.metadata.managed_fields = None;
    if let Some(spec) = set.spec.as_mut() {
        spec.template = Default::default();
        spec.volume_claim_templates = None;
    }
}

/// Keeps of a FUSE DaemonSet what the model reads: metadata, selector and status.
pub fn trim_daemon_set(set: &mut DaemonSet) {
    set.metadata.managed_fields = None;
    if let Some(spec) = set.spec.as_mut() {
        spec.template = Default::default();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
    use k8s_openapi::api::core::v1::{
        Container, Node, PersistentVolumeClaimVolumeSource, Pod, PodCondition, PodSpec, PodStatus, Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
    use kube::runtime::watcher::Event;
    use model::api::{Dataset, DatasetSpec, JuiceFSRuntime, JuiceFSRuntimeSpec};
    use model::observed::{PodPhase, PodView};

    use super::*;

    const UID: &str = "5d0b7a3c-1f2e-4c5d-9e8f-0a1b2c3d4e5f";

    fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: namespace.map(str::to_string),
            uid: Some(UID.to_string()),
            ..ObjectMeta::default()
        }
    }

    fn mk_dataset(namespace: &str, name: &str) -> Dataset {
        Dataset { metadata: meta(Some(namespace), name), spec: DatasetSpec::default(), status: None }
    }

    fn mk_pod(namespace: &str, name: &str, node: &str, labels: &[(&str, &str)], claim: Option<&str>) -> Pod {
        let mut metadata = meta(Some(namespace), name);
        metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        Pod {
            metadata,
            spec: Some(PodSpec {
                node_name: Some(node.to_string()),
                containers: vec![Container {
                    name: "app".to_string(),
                    image: Some("nginx".to_string()),
                    ..Container::default()
                }],
                volumes: claim.map(|claim| {
                    vec![Volume {
                        name: "data".to_string(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: claim.to_string(),
                            read_only: None,
                        }),
                        ..Volume::default()
                    }]
                }),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".to_string()),
                conditions: Some(vec![
                    PodCondition { type_: "Ready".to_string(), status: "True".to_string(), ..PodCondition::default() },
                    PodCondition {
                        type_: "PodScheduled".to_string(),
                        status: "True".to_string(),
                        ..PodCondition::default()
                    },
                ]),
                ..PodStatus::default()
            }),
        }
    }

    fn mk_node(name: &str, labels: &[(&str, &str)]) -> Node {
        let mut metadata = meta(None, name);
        metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        Node { metadata, ..Node::default() }
    }

    fn named<K: Default + Resource>(namespace: Option<&str>, name: &str) -> K {
        let mut object = K::default();
        *object.meta_mut() = meta(namespace, name);
        object
    }

    fn apply<K>(writer: &mut impl crate::index::ApplyEvent<K>, object: K) {
        writer.apply_watcher_event(&Event::Apply(object));
    }

    fn worker_labels() -> Vec<(&'static str, &'static str)> {
        vec![("app", "juicefs"), ("release", "jfsdemo"), ("role", "juicefs-worker")]
    }

    #[test]
    fn an_empty_cluster_observes_nothing() {
        let (stores, _writers) = Stores::new();
        let observed = observe(&stores, "juicefs", "default", "jfsdemo");
        assert!(observed.dataset.is_none() && observed.runtime.is_none() && observed.workers.is_none());
        assert!(observed.nodes.is_empty() && observed.worker_pods.is_empty() && observed.claim_users.is_empty());
        assert!(observed.cluster_common_labels.is_empty());
    }

    #[test]
    fn workloads_keep_what_the_model_reads_and_lose_their_templates() {
        let mut set: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "w", "annotations": { "ferrofluid.io/spec-hash": "h" }, "managedFields": [{}] },
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": { "app": "juicefs" } },
                "serviceName": "w",
                "template": { "metadata": { "labels": { "app": "juicefs" } }, "spec": { "containers": [{ "name": "c", "image": "i" }] } }
            },
            "status": { "replicas": 2, "readyReplicas": 1 }
        }))
        .unwrap();
        trim_stateful_set(&mut set);
        let spec = set.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert!(spec.selector.match_labels.is_some() && spec.template.spec.is_none());
        assert_eq!(set.status.as_ref().unwrap().ready_replicas, Some(1));
        assert!(set.metadata.managed_fields.is_none() && set.metadata.annotations.is_some());
        let mut fuse: DaemonSet = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "f" },
            "spec": { "selector": {}, "template": { "spec": { "containers": [{ "name": "c" }] } } },
            "status": { "currentNumberScheduled": 1, "desiredNumberScheduled": 1, "numberMisscheduled": 0, "numberReady": 1 }
        }))
        .unwrap();
        trim_daemon_set(&mut fuse);
        assert!(fuse.spec.as_ref().unwrap().template.spec.is_none());
        assert_eq!(fuse.status.as_ref().unwrap().number_ready, 1);
    }

    #[test]
    fn a_namespace_being_deleted_is_observed_as_terminating() {
        let (stores, mut w) = Stores::new();
        apply(&mut w.namespaces, named::<Namespace>(None, "live"));
        let mut going = named::<Namespace>(None, "going");
        going.status = Some(k8s_openapi::api::core::v1::NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        });
        apply(&mut w.namespaces, going);
        assert!(!observe(&stores, "juicefs", "live", "jfsdemo").namespace_terminating);
        assert!(observe(&stores, "juicefs", "going", "jfsdemo").namespace_terminating);
        assert!(!observe(&stores, "juicefs", "unlisted", "jfsdemo").namespace_terminating);
    }

    #[test]
    fn objects_are_selected_by_their_derived_names() {
        let (stores, mut w) = Stores::new();
        apply(&mut w.datasets, mk_dataset("default", "jfsdemo"));
        apply(&mut w.datasets, mk_dataset("other", "jfsdemo"));
        apply(
            &mut w.runtimes,
            JuiceFSRuntime {
                metadata: meta(Some("default"), "jfsdemo"),
                spec: JuiceFSRuntimeSpec::default(),
                status: None,
            },
        );
        apply(&mut w.stateful_sets, named::<StatefulSet>(Some("default"), "jfsdemo-juicefs-worker"));
        apply(&mut w.stateful_sets, named::<StatefulSet>(Some("default"), "unrelated"));
        apply(&mut w.daemon_sets, named::<DaemonSet>(Some("default"), "jfsdemo-juicefs-fuse"));
        apply(&mut w.persistent_volumes, named(None, "default-jfsdemo"));
        apply(&mut w.persistent_volume_claims, named(Some("default"), "jfsdemo"));
        let observed = observe(&stores, "juicefs", "default", "jfsdemo");
        assert_eq!(observed.dataset.unwrap().metadata.namespace.as_deref(), Some("default"));
        assert!(observed.runtime.is_some());
        assert_eq!(observed.workers.unwrap().metadata.name.as_deref(), Some("jfsdemo-juicefs-worker"));
        assert_eq!(observed.fuse.unwrap().metadata.name.as_deref(), Some("jfsdemo-juicefs-fuse"));
        assert!(observed.persistent_volume.is_some() && observed.persistent_volume_claim.is_some());
        let expected: CommonLabels =
            ["fluid.io/s-default-jfsdemo", "fluid.io/s-other-jfsdemo"].map(String::from).into_iter().collect();
        assert_eq!(*observed.cluster_common_labels, expected);
    }

    #[test]
    fn worker_pods_and_claim_users_are_picked_from_the_namespace_sorted() {
        let (stores, mut w) = Stores::new();
        apply(&mut w.datasets, mk_dataset("default", "jfsdemo"));
        apply(&mut w.pods, mk_pod("default", "jfsdemo-juicefs-worker-1", "node-b", &worker_labels(), None));
        apply(&mut w.pods, mk_pod("default", "jfsdemo-juicefs-worker-0", "node-a", &worker_labels(), None));
        apply(&mut w.pods, mk_pod("other", "jfsdemo-juicefs-worker-0", "node-c", &worker_labels(), None));
        apply(&mut w.pods, mk_pod("default", "demo-app", "node-c", &[], Some("jfsdemo")));
        apply(&mut w.pods, mk_pod("default", "elsewhere", "node-c", &[], Some("other-claim")));
        let observed = observe(&stores, "juicefs", "default", "jfsdemo");
        let names: Vec<&str> = observed.worker_pods.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["jfsdemo-juicefs-worker-0", "jfsdemo-juicefs-worker-1"]);
        assert_eq!(
            observed.claim_users,
            [PodView {
                namespace: "default".into(),
                name: "demo-app".into(),
                node_name: Some("node-c".into()),
                phase: PodPhase::Running,
                ready: true,
                deleting: false,
                unschedulable: None,
            }]
        );
    }

    #[test]
    fn relevant_nodes_are_worker_nodes_and_nodes_with_our_keys() {
        let (stores, mut w) = Stores::new();
        apply(&mut w.datasets, mk_dataset("default", "jfsdemo"));
        apply(&mut w.pods, mk_pod("default", "jfsdemo-juicefs-worker-0", "node-a", &worker_labels(), None));
        apply(&mut w.nodes, mk_node("node-a", &[]));
        apply(&mut w.nodes, mk_node("node-b", &[("fluid.io/f-default-jfsdemo", "true")]));
        apply(&mut w.nodes, mk_node("node-c", &[("fluid.io/f-default-other", "true")]));
        let observed = observe(&stores, "juicefs", "default", "jfsdemo");
        let names: Vec<&str> = observed.nodes.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["node-a", "node-b"]);
    }

    #[test]
    fn the_common_label_set_is_shared_until_a_dataset_comes_or_goes() {
        let (stores, mut w) = Stores::new();
        apply(&mut w.datasets, mk_dataset("default", "jfsdemo"));
        let first = observe(&stores, "juicefs", "default", "jfsdemo").cluster_common_labels;
        // A status write: the same datasets, so the same set, not a rebuilt copy.
        let mut with_status = mk_dataset("default", "jfsdemo");
        with_status.status = Some(Default::default());
        apply(&mut w.datasets, with_status);
        let second = observe(&stores, "juicefs", "default", "jfsdemo").cluster_common_labels;
        assert!(Arc::ptr_eq(&first, &second));
        // A new dataset joins the set; its deletion leaves it again.
        let other = mk_dataset("other", "data");
        apply(&mut w.datasets, other.clone());
        let third = observe(&stores, "juicefs", "default", "jfsdemo").cluster_common_labels;
        let both: CommonLabels =
            ["fluid.io/s-default-jfsdemo", "fluid.io/s-other-data"].map(String::from).into_iter().collect();
        assert_eq!(*third, both);
        w.datasets.apply_watcher_event(&Event::Delete(other));
        let fourth = observe(&stores, "juicefs", "default", "jfsdemo").cluster_common_labels;
        assert_eq!(*fourth, ["fluid.io/s-default-jfsdemo".to_string()].into_iter().collect());
    }

    #[test]
    fn a_deleted_object_disappears_from_the_next_observation() {
        let (stores, mut w) = Stores::new();
        let dataset = mk_dataset("default", "jfsdemo");
        apply(&mut w.datasets, dataset.clone());
        assert!(observe(&stores, "juicefs", "default", "jfsdemo").dataset.is_some());
        w.datasets.apply_watcher_event(&Event::Delete(dataset));
        assert!(observe(&stores, "juicefs", "default", "jfsdemo").dataset.is_none());
    }

    #[test]
    fn trimming_a_pod_keeps_everything_the_model_reads() {
        let mut pod = mk_pod("default", "demo-app", "node-c", &[("role", "x")], Some("jfsdemo"));
        pod.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        pod.metadata.annotations = Some(BTreeMap::from([("big".to_string(), "x".repeat(1000))]));
        let before = PodView::from_pod(&pod);
        let mut trimmed = pod.clone();
        trim_pod(&mut trimmed);
        assert_eq!(PodView::from_pod(&trimmed), before);
        assert!(model::observed::pod_uses_claim(&trimmed, "jfsdemo"));
        assert_eq!(trimmed.metadata.labels, pod.metadata.labels);
        assert!(trimmed.spec.unwrap().containers.is_empty());
        assert!(trimmed.metadata.managed_fields.is_none() && trimmed.metadata.annotations.is_none());
        let conditions = trimmed.status.unwrap().conditions.unwrap();
        assert_eq!(conditions.len(), 1, "Ready; PodScheduled only while false");

        // A pod the scheduler cannot place keeps the scheduler's message.
        let mut pending = pod.clone();
        let status = pending.status.as_mut().unwrap();
        status.phase = Some("Pending".into());
        status.conditions = Some(vec![PodCondition {
            type_: "PodScheduled".to_string(),
            status: "False".to_string(),
            reason: Some("Unschedulable".into()),
            message: Some("0/3 nodes are available: 3 node(s) had untolerated taint {gpu: true}.".into()),
            ..PodCondition::default()
        }]);
        let before = PodView::from_pod(&pending);
        assert!(before.unschedulable.as_deref().is_some_and(|m| m.contains("untolerated taint")));
        trim_pod(&mut pending);
        assert_eq!(PodView::from_pod(&pending), before);
    }

    #[test]
    fn the_stores_say_which_created_objects_they_hold() {
        use model::effect::{Kind, ObjectRef};
        let (stores, mut w) = Stores::new();
        let volume = PersistentVolume {
            metadata: ObjectMeta { name: Some("default-jfsdemo".into()), ..ObjectMeta::default() },
            ..PersistentVolume::default()
        };
        apply(&mut w.persistent_volumes, volume);
        assert!(stores.holds(&ObjectRef::cluster(Kind::PersistentVolume, "default-jfsdemo")));
        assert!(!stores.holds(&ObjectRef::cluster(Kind::PersistentVolume, "default-other")));
        assert!(!stores.holds(&ObjectRef::namespaced(Kind::PersistentVolumeClaim, "default", "jfsdemo")));
        assert!(!stores.holds(&ObjectRef::namespaced(Kind::StatefulSet, "default", "jfsdemo-juicefs-worker")));
    }
}
