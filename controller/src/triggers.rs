//! Which dataset/runtime pairs a watch event concerns: the model's mappings (`model::watch`) over
//! the reflector stores and indexes.
//!
//! Over-triggering is harmless (a reconcile at the fixpoint writes nothing, and a key without a
//! dataset or runtime is skipped by kube-runtime, which finds no object in its store).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef as StoreRef, Store};
use model::watch;
pub use model::watch::PairKey;

use crate::index::{DatasetLabelIndex, Shared, read};

/// The pair named like a namespaced object (a dataset, runtime or PVC).
pub fn pair_of<K: Resource>(object: &K) -> Option<PairKey> {
    watch::pair_of_named(object.meta())
}

/// A dataset or a runtime: its own pair.
pub fn from_pair_object<K: Resource>(object: &K) -> Vec<PairKey> {
    pair_of(object).into_iter().collect()
}

/// A StatefulSet or DaemonSet: the runtime that owns it.
pub fn from_owned<K: Resource>(object: &K) -> Vec<PairKey> {
    watch::pairs_of_owned(object.meta())
}

/// A PVC: the dataset of the same name (the model names dataset PVCs after the dataset).
pub fn from_claim(claim: &PersistentVolumeClaim) -> Vec<PairKey> {
    from_pair_object(claim)
}

/// A PV: the claim it is bound to, else the runtime named in its CSI attributes.
pub fn from_volume(volume: &PersistentVolume) -> Vec<PairKey> {
    watch::pair_of_volume(volume).into_iter().collect()
}

/// A pod: every dataset whose PVC it names, and the runtime owning its StatefulSet (worker pods),
/// resolved through the StatefulSet store.
pub fn from_pod(pod: &Pod, stateful_sets: &Store<StatefulSet>) -> Vec<PairKey> {
    let Some(namespace) = pod.metadata.namespace.as_deref() else { return Vec::new() };
    watch::pairs_of_pod(&pod.metadata, pod.spec.as_ref(), |owner| {
        stateful_sets.get(&StoreRef::new(&owner.name).within(namespace))
    })
}

/// Maps node events as the simulator does: to the datasets whose labels changed since the node
/// was last seen (a watch event carries only the new object, so the dataset labels of each node
/// are remembered here), to every dataset whose label it carries the first time it is seen, and
/// to every dataset whose label it carried when it is deleted. Only dataset labels are kept, a
/// few per node, and only for live nodes: a deleted node's entry goes with its delete event, and
/// nodes a relist dropped silently are forgotten once the history outgrows the live nodes.
#[derive(Debug, Default)]
pub struct NodeLabelHistory {
    dataset_labels_by_node: Mutex<HashMap<String, BTreeMap<String, String>>>,
}

/// The history is pruned of nodes missing from the store when it holds more than this many
/// entries per live node (amortized: one walk per doubling).
const HISTORY_ENTRIES_PER_LIVE_NODE: usize = 2;
/// ... and never below this many entries.
const HISTORY_PRUNE_FLOOR: usize = 64;

impl NodeLabelHistory {
    /// The pairs a node event concerns; remembers the node's dataset labels for the next one.
    /// `live_nodes` is the node store, which the watcher updates before it maps an event: a node
    /// missing from it was deleted. (During a relist the store still shows the old list, so a
    /// node that joined meanwhile counts as deleted once: it over-triggers, which is harmless.)
    pub fn pairs(&self, node: &Node, datasets: &Shared<DatasetLabelIndex>, live_nodes: &Store<Node>) -> Vec<PairKey> {
        let labels = node.metadata.labels.iter().flatten();
        let ours: BTreeMap<String, String> =
            labels.filter(|(key, _)| watch::is_dataset_label_key(key)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let name = node.metadata.name.clone().unwrap_or_default();
        // A poisoned map only loses history: the next event counts every label, as a first one.
        let mut seen = self.dataset_labels_by_node.lock().unwrap_or_else(PoisonError::into_inner);
        let index = read(datasets);
        if live_nodes.get(&StoreRef::new(&name)).is_none() {
            let carried = seen.remove(&name).unwrap_or(ours);
            return watch::pairs_of_node(Some(&carried), None, index.owners());
        }
        let previous = seen.insert(name, ours.clone());
        if seen.len() > (HISTORY_ENTRIES_PER_LIVE_NODE * live_nodes.len()).max(HISTORY_PRUNE_FLOOR) {
            seen.retain(|name, _| live_nodes.get(&StoreRef::new(name)).is_some());
        }
        watch::pairs_of_node(previous.as_ref(), Some(&ours), index.owners())
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.dataset_labels_by_node.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, PodSpec, Volume};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use model::api::{Dataset, DatasetSpec};

    use super::*;
    use crate::index::{ApplyEvent, IndexedWriter};

    fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta { name: Some(name.into()), namespace: namespace.map(Into::into), ..ObjectMeta::default() }
    }

    fn owner(kind: &str, api_version: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            ..OwnerReference::default()
        }
    }

    fn dataset(namespace: &str, name: &str) -> Dataset {
        let mut metadata = meta(Some(namespace), name);
        metadata.uid = Some("u".into());
        Dataset { metadata, spec: DatasetSpec::default(), status: None }
    }

    #[test]
    fn pods_resolve_their_worker_statefulset_through_the_store() {
        let (sts_store, mut sts_writer) = reflector::store::<StatefulSet>();
        let mut sts = StatefulSet { metadata: meta(Some("default"), "short-hashed-name"), ..StatefulSet::default() };
        sts.metadata.owner_references =
            Some(vec![owner("JuiceFSRuntime", "data.fluid.io/v1alpha1", "a-very-long-runtime")]);
        sts_writer.apply_watcher_event(&Event::Apply(sts));
        let mut pod = Pod { metadata: meta(Some("default"), "short-hashed-name-0"), ..Pod::default() };
        pod.metadata.owner_references = Some(vec![owner("StatefulSet", "apps/v1", "short-hashed-name")]);
        pod.spec = Some(PodSpec {
            volumes: Some(vec![Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: "jfsdemo".into(),
                    read_only: None,
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        });
        assert_eq!(
            from_pod(&pod, &sts_store),
            [PairKey::new("default", "a-very-long-runtime"), PairKey::new("default", "jfsdemo")]
        );
        // Another namespace's StatefulSet of that name is not its owner.
        pod.metadata.namespace = Some("other".into());
        assert_eq!(from_pod(&pod, &sts_store), [PairKey::new("other", "jfsdemo")]);
    }

    /// A dataset label index fed, through its writer, with these datasets.
    fn indexed_datasets(
        datasets: &[(&str, &str)],
    ) -> (Shared<DatasetLabelIndex>, IndexedWriter<Dataset, DatasetLabelIndex>) {
        let (_store, writer) = reflector::store::<Dataset>();
        let index: Shared<DatasetLabelIndex> = std::sync::Arc::new(DatasetLabelIndex::new("juicefs").into());
        let mut writer = IndexedWriter::new(writer, index.clone());
        for (namespace, name) in datasets {
            writer.apply_watcher_event(&Event::Apply(dataset(namespace, name)));
        }
        (index, writer)
    }

    fn node_named(name: &str, labels: &[(&str, &str)]) -> Node {
        let mut metadata = meta(None, name);
        metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        Node { metadata, ..Node::default() }
    }

    fn node_with(labels: &[(&str, &str)]) -> Node {
        node_named("node-a", labels)
    }

    /// A node store that holds `nodes`, and its writer.
    fn live(nodes: &[Node]) -> (Store<Node>, reflector::store::Writer<Node>) {
        let (store, mut writer) = reflector::store::<Node>();
        for node in nodes {
            writer.apply_watcher_event(&Event::Apply(node.clone()));
        }
        (store, writer)
    }

    #[test]
    fn nodes_map_to_the_datasets_whose_labels_changed_since_last_seen() {
        let (index, _writer) = indexed_datasets(&[("default", "jfsdemo"), ("default", "jfs"), ("team-a", "demo")]);
        let history = NodeLabelHistory::default();
        let (nodes, _node_writer) = live(&[node_with(&[])]);
        assert!(history.pairs(&node_with(&[]), &index, &nodes).is_empty());
        let labelled = node_with(&[
            ("fluid.io/f-default-jfsdemo", "true"),
            ("fluid.io/s-h-juicefs-m-team-a-demo", "1Gi"),
            ("kubernetes.io/os", "linux"),
        ]);
        assert_eq!(
            history.pairs(&labelled, &index, &nodes),
            [PairKey::new("default", "jfsdemo"), PairKey::new("team-a", "demo")]
        );
        assert!(history.pairs(&labelled, &index, &nodes).is_empty(), "a heartbeat changes no dataset label");
        // A removed label concerns its dataset too (the watch event shows only what is left).
        let removed = node_with(&[("fluid.io/s-h-juicefs-m-team-a-demo", "2Gi"), ("kubernetes.io/os", "linux")]);
        assert_eq!(
            history.pairs(&removed, &index, &nodes),
            [PairKey::new("default", "jfsdemo"), PairKey::new("team-a", "demo")]
        );
        // A node seen for the first time counts every dataset label it carries.
        assert_eq!(NodeLabelHistory::default().pairs(&removed, &index, &nodes), [PairKey::new("team-a", "demo")]);
    }

    #[test]
    fn a_deleted_node_concerns_the_datasets_it_carried_and_is_forgotten() {
        let (index, _writer) = indexed_datasets(&[("default", "jfsdemo"), ("team-a", "demo")]);
        let history = NodeLabelHistory::default();
        let labelled = node_with(&[("fluid.io/f-default-jfsdemo", "true"), ("fluid.io/s-team-a-demo", "true")]);
        let (nodes, mut node_writer) = live(std::slice::from_ref(&labelled));
        assert_eq!(history.pairs(&labelled, &index, &nodes).len(), 2);
        assert_eq!(history.remembered(), 1);
        // The watcher applies the delete to the store before it maps the event.
        node_writer.apply_watcher_event(&Event::Delete(labelled.clone()));
        assert_eq!(
            history.pairs(&labelled, &index, &nodes),
            [PairKey::new("default", "jfsdemo"), PairKey::new("team-a", "demo")]
        );
        assert_eq!(history.remembered(), 0);
    }

    #[test]
    fn nodes_a_relist_dropped_are_forgotten_once_the_history_outgrows_the_live_nodes() {
        let (index, _writer) = indexed_datasets(&[("default", "jfsdemo")]);
        let history = NodeLabelHistory::default();
        let names: Vec<String> = (0..HISTORY_PRUNE_FLOOR + 1).map(|i| format!("node-{i:03}")).collect();
        let all: Vec<Node> = names.iter().map(|name| node_named(name, &[])).collect();
        let (nodes, mut node_writer) = live(&all);
        for node in &all[..HISTORY_PRUNE_FLOOR] {
            history.pairs(node, &index, &nodes);
        }
        assert_eq!(history.remembered(), HISTORY_PRUNE_FLOOR);
        // A relist that misses every node but the last one: no delete events for the rest.
        node_writer.apply_watcher_event(&Event::Init);
        node_writer.apply_watcher_event(&Event::InitApply(all[HISTORY_PRUNE_FLOOR].clone()));
        node_writer.apply_watcher_event(&Event::InitDone);
        history.pairs(&all[HISTORY_PRUNE_FLOOR], &index, &nodes);
        assert_eq!(history.remembered(), 1, "only the live node is remembered");
    }

    #[test]
    fn the_dataset_label_index_follows_watch_events_and_relists() {
        let (index, mut writer) = indexed_datasets(&[("default", "jfsdemo"), ("team-a", "demo")]);
        let owner = |key: &str| read(&index).owners().pair_of(key).cloned();
        assert_eq!(owner("fluid.io/f-default-jfsdemo"), Some(PairKey::new("default", "jfsdemo")));
        writer.apply_watcher_event(&Event::Delete(dataset("team-a", "demo")));
        assert_eq!(owner("fluid.io/s-team-a-demo"), None);
        // A relist without `default/jfsdemo` forgets it at its end, keeping the runtime type.
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(dataset("team-a", "demo")));
        assert_eq!(owner("fluid.io/f-default-jfsdemo"), Some(PairKey::new("default", "jfsdemo")));
        writer.apply_watcher_event(&Event::InitDone);
        assert_eq!(owner("fluid.io/f-default-jfsdemo"), None);
        assert_eq!(owner("fluid.io/s-juicefs-team-a-demo"), Some(PairKey::new("team-a", "demo")));
    }
}
