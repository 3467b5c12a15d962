//! One way to observe: every driver builds a reconcile's [`Observed`] with [`observe`], over its
//! own cache behind the small read trait [`ClusterView`].
//!
//! The trait only looks objects up; which objects a reconcile sees (a runtime's workers by their
//! labels, a claim's users, the nodes that matter) is decided here, once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};

use crate::api::{Dataset, JuiceFSRuntime};
use crate::labels::{self, DatasetKeys, WorkloadNames};
use crate::observed::{CacheSample, CommonLabels, Observed, PodView, relevant_nodes};

/// What [`ClusterView::pods_released_as`] asks of each pod's labels: keep it or not.
pub type KeepPod<'a> = dyn Fn(Option<&BTreeMap<String, String>>) -> bool + 'a;

/// A driver's read-only view of its cluster cache (the simulator's store, the controller's
/// reflector stores). Lookups by name return the object shared with the cache.
pub trait ClusterView {
    /// The dataset `namespace/name`.
    fn dataset(&self, namespace: &str, name: &str) -> Option<Arc<Dataset>>;
    /// The JuiceFS runtime `namespace/name`.
    fn runtime(&self, namespace: &str, name: &str) -> Option<Arc<JuiceFSRuntime>>;
    /// The StatefulSet `namespace/name`.
    fn stateful_set(&self, namespace: &str, name: &str) -> Option<Arc<StatefulSet>>;
    /// The DaemonSet `namespace/name`.
    fn daemon_set(&self, namespace: &str, name: &str) -> Option<Arc<DaemonSet>>;
    /// The PersistentVolume `name`.
    fn persistent_volume(&self, name: &str) -> Option<Arc<PersistentVolume>>;
    /// The PersistentVolumeClaim `namespace/name`.
    fn persistent_volume_claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>>;
    /// The node `name`.
    fn node(&self, name: &str) -> Option<Arc<Node>>;
    /// True when the namespace is being deleted.
    fn namespace_terminating(&self, namespace: &str) -> bool;
    /// Views of the pods in `namespace` labelled `release=<release>` (an index lookup) whose
    /// labels `keep` accepts; [`observe`] keeps the runtime's workers. A view is built only for
    /// a kept pod: the FUSE pods of a release are one per node.
    fn pods_released_as(&self, namespace: &str, release: &str, keep: &KeepPod<'_>) -> Vec<PodView>;
    /// Views of the pods in `namespace` whose volumes name the PVC `claim`
    /// (`crate::observed::claim_names`).
    fn claim_users(&self, namespace: &str, claim: &str) -> Vec<PodView>;
    /// Calls `each` with the name of every node that carries the label `key`, any value.
    fn nodes_with_label_key(&self, key: &str, each: &mut dyn FnMut(&str));
    /// The latest cache sample of each of `worker_pods` that has one.
    fn cache_samples(&self, worker_pods: &[PodView]) -> Vec<CacheSample>;
}

/// Everything one reconcile of the pair `namespace/name` with a runtime of `runtime_type` reads
/// from `view`. `common_labels` is the cluster's set (drivers keep it between observations);
/// `unconfirmed_creates` is left for the driver, which alone knows its own writes.
pub fn observe(
    view: &impl ClusterView,
    runtime_type: &str,
    namespace: &str,
    name: &str,
    common_labels: Arc<CommonLabels>,
) -> Observed {
    let names = WorkloadNames::new(namespace, name, runtime_type);
    let mut observed = Observed::empty(namespace, name);
    observed.namespace_terminating = view.namespace_terminating(namespace);
    observed.dataset = view.dataset(namespace, name);
    observed.runtime = view.runtime(namespace, name);
    observed.workers = view.stateful_set(namespace, &names.workers);
    observed.fuse = view.daemon_set(namespace, &names.fuse);
    observed.persistent_volume = view.persistent_volume(&names.persistent_volume);
    observed.persistent_volume_claim = view.persistent_volume_claim(namespace, &names.persistent_volume_claim);

    // Workers by their labels, not through the StatefulSet: pods outlive a deleted set, and
    // their nodes keep cache labels until they are gone.
    let release = labels::bounded_name(name, labels::KEY_LENGTH_LIMIT);
    let is_worker =
        |pod_labels: Option<&BTreeMap<String, String>>| labels::role_of(pod_labels).is_worker_of(name, runtime_type);
    let mut worker_pods = view.pods_released_as(namespace, &release, &is_worker);
    worker_pods.sort();
    let mut claim_users = view.claim_users(namespace, &names.persistent_volume_claim);
    claim_users.sort();

    // A dataset already gone leaves its UID on the runtime's owner reference, and a long name's
    // label keys are built on it: without it the nodes that still carry them go unseen and keep
    // the labels for good (parity found `fluid.io/f-<uid>` left on a node after teardown).
    let uid = observed
        .dataset
        .as_deref()
        .and_then(|d| d.metadata.uid.clone())
        .or_else(|| observed.runtime.as_deref().and_then(crate::reconcile::runtime::dataset_uid_from_owner));
    let label_keys = DatasetKeys::new(namespace, name, uid.as_deref())
        .map(|keys| observed.node_label_keys(&keys, runtime_type))
        .unwrap_or_default();
    let mut candidates: BTreeSet<String> =
        worker_pods.iter().filter_map(|pod| pod.node_name.as_deref().map(str::to_string)).collect();
    for key in &label_keys {
        view.nodes_with_label_key(key, &mut |node| {
            candidates.insert(node.to_string());
        });
    }
    let nodes: Vec<Arc<Node>> = candidates.iter().filter_map(|node| view.node(node)).collect();
    observed.nodes = relevant_nodes(&label_keys, &worker_pods, &nodes);
    observed.cache_samples = view.cache_samples(&worker_pods);
    observed.worker_pods = worker_pods;
    observed.claim_users = claim_users;
    observed.cluster_common_labels = common_labels;
    observed
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::observed::{NodeView, pod_uses_claim};

    /// A cluster as plain lists, read by walking them: the rules [`observe`] applies must give
    /// the same answer over this as over a driver's indexes.
    #[derive(Default)]
    struct Lists {
        datasets: Vec<Arc<Dataset>>,
        runtimes: Vec<Arc<JuiceFSRuntime>>,
        pods: Vec<Pod>,
        nodes: Vec<Arc<Node>>,
    }

    fn meta(namespace: &str, name: &str) -> ObjectMeta {
        ObjectMeta { name: Some(name.into()), namespace: Some(namespace.into()), ..Default::default() }
    }

    impl ClusterView for Lists {
        fn dataset(&self, namespace: &str, name: &str) -> Option<Arc<Dataset>> {
            self.datasets.iter().find(|d| d.metadata == meta(namespace, name)).cloned()
        }
        fn runtime(&self, namespace: &str, name: &str) -> Option<Arc<JuiceFSRuntime>> {
            let same = |r: &&Arc<JuiceFSRuntime>| {
                r.metadata.namespace.as_deref() == Some(namespace) && r.metadata.name.as_deref() == Some(name)
            };
            self.runtimes.iter().find(same).cloned()
        }
        fn stateful_set(&self, _: &str, _: &str) -> Option<Arc<StatefulSet>> {
            None
        }
        fn daemon_set(&self, _: &str, _: &str) -> Option<Arc<DaemonSet>> {
            None
        }
        fn persistent_volume(&self, _: &str) -> Option<Arc<PersistentVolume>> {
            None
        }
        fn persistent_volume_claim(&self, _: &str, _: &str) -> Option<Arc<PersistentVolumeClaim>> {
            None
        }
        fn node(&self, name: &str) -> Option<Arc<Node>> {
            self.nodes.iter().find(|n| n.metadata.name.as_deref() == Some(name)).cloned()
        }
        fn namespace_terminating(&self, namespace: &str) -> bool {
            namespace == "going"
        }
        fn pods_released_as(&self, namespace: &str, release: &str, keep: &KeepPod<'_>) -> Vec<PodView> {
            let released = |pod: &&Pod| {
                pod.metadata.namespace.as_deref() == Some(namespace)
                    && pod.metadata.labels.as_ref().and_then(|l| l.get(labels::RELEASE)).map(String::as_str)
                        == Some(release)
            };
            let kept = self.pods.iter().filter(released).filter(|pod| keep(pod.metadata.labels.as_ref()));
            kept.map(PodView::from_pod).collect()
        }
        fn claim_users(&self, namespace: &str, claim: &str) -> Vec<PodView> {
            let users = self.pods.iter().filter(|p| p.metadata.namespace.as_deref() == Some(namespace));
            users.filter(|pod| pod_uses_claim(pod, claim)).map(PodView::from_pod).collect()
        }
        fn nodes_with_label_key(&self, key: &str, each: &mut dyn FnMut(&str)) {
            for node in self.nodes.iter().filter(|n| n.metadata.labels.as_ref().is_some_and(|l| l.contains_key(key))) {
                each(node.metadata.name.as_deref().unwrap_or_default());
            }
        }
        fn cache_samples(&self, worker_pods: &[PodView]) -> Vec<CacheSample> {
            let sample = |pod: &PodView| CacheSample {
                pod_name: pod.name.to_string(),
                cached_bytes: 1,
                cache_hits: 0,
                cache_misses: 0,
                used_space_bytes: 2,
            };
            worker_pods.iter().map(sample).collect()
        }
    }

    fn pod(name: &str, node: &str, labels: BTreeMap<String, String>, claim: Option<&str>) -> Pod {
        use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, PodSpec, Volume};
        let volume = claim.map(|claim| Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                read_only: None,
            }),
            ..Default::default()
        });
        let spec =
            PodSpec { node_name: Some(node.into()), volumes: Some(volume.into_iter().collect()), ..Default::default() };
        Pod { metadata: ObjectMeta { labels: Some(labels), ..meta("team", name) }, spec: Some(spec), status: None }
    }

    fn node(name: &str, label: Option<&str>) -> Arc<Node> {
        let labels = label.map(|key| BTreeMap::from([(key.to_string(), "true".to_string())]));
        Arc::new(Node {
            metadata: ObjectMeta { name: Some(name.into()), labels, ..Default::default() },
            ..Default::default()
        })
    }

    #[test]
    fn a_long_named_runtime_whose_dataset_is_gone_still_sees_the_nodes_with_its_uid_labels() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let (namespace, name, uid) = ("ml-platform-research", "analytics-training-images-imagenet-2012", "u-1");
        let keys = DatasetKeys::new(namespace, name, Some(uid)).expect("keys");
        assert!(keys.uses_uid(), "the names are long enough to need the UID");
        let owner = OwnerReference { kind: "Dataset".into(), name: name.into(), uid: uid.into(), ..Default::default() };
        let mut runtime = JuiceFSRuntime::new(name, Default::default());
        runtime.metadata.namespace = Some(namespace.into());
        runtime.metadata.owner_references = Some(vec![owner]);
        runtime.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let cluster = Lists {
            runtimes: vec![Arc::new(runtime)],
            nodes: vec![node("node-1", None), node("node-2", Some(&keys.fuse_label()))],
            ..Default::default()
        };
        let observed = observe(&cluster, "juicefs", namespace, name, Arc::default());
        let nodes: Vec<&str> = observed.nodes.iter().map(NodeView::name).collect();
        assert_eq!(nodes, ["node-2"], "the FUSE label under the UID is found, so teardown can remove it");
    }

    #[test]
    fn workers_are_the_pods_with_the_worker_labels_of_the_runtime_whatever_owns_them() {
        let worker = labels::workload_labels("data", "juicefs", "worker");
        let fuse = labels::workload_labels("data", "juicefs", "fuse");
        let other_runtime = labels::workload_labels("other", "juicefs", "worker");
        let mut released_only = BTreeMap::new();
        released_only.insert(labels::RELEASE.to_string(), "data".to_string());
        let cluster = Lists {
            runtimes: Vec::new(),
            datasets: vec![Arc::new(Dataset {
                metadata: meta("team", "data"),
                spec: Default::default(),
                status: None,
            })],
            pods: vec![
                pod("data-juicefs-worker-1", "node-b", worker.clone(), None),
                pod("data-juicefs-worker-0", "node-a", worker, None),
                pod("data-juicefs-fuse-x", "node-c", fuse, None),
                pod("other-juicefs-worker-0", "node-d", other_runtime, None),
                pod("impostor", "node-e", released_only, None),
                pod("app", "node-f", BTreeMap::new(), Some("data")),
                pod("unrelated-app", "node-g", BTreeMap::new(), Some("elsewhere")),
            ],
            nodes: ["node-a", "node-b", "node-c", "node-d", "node-e", "node-f"]
                .into_iter()
                .map(|name| node(name, None))
                .chain([node("cached", Some("fluid.io/s-juicefs-team-data")), node("foreign", Some("fluid.io/s-x"))])
                .collect(),
        };
        let observed = observe(&cluster, "juicefs", "team", "data", Arc::default());
        let names = |pods: &[PodView]| pods.iter().map(|p| p.name.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&observed.worker_pods), ["data-juicefs-worker-0", "data-juicefs-worker-1"], "sorted");
        assert_eq!(names(&observed.claim_users), ["app"]);
        let nodes: Vec<&str> = observed.nodes.iter().map(NodeView::name).collect();
        assert_eq!(nodes, ["cached", "node-a", "node-b"], "worker nodes and those with the dataset's cache label");
        assert_eq!(observed.cache_samples.len(), 2, "one sample per worker");
        assert!(observed.dataset.is_some() && observed.runtime.is_none() && !observed.namespace_terminating);
        assert!(observe(&cluster, "juicefs", "going", "data", Arc::default()).namespace_terminating);
    }
}
