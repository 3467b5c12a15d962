//! Secondary indexes over the pod and node reflector stores, fed by the same watch events, so
//! that an observation looks pods and nodes up instead of walking every one in the cluster.
//!
//! An [`IndexedWriter`] stands where the reflector's `Writer` stood: each watch event goes to
//! the writer and to the index, which follows the writer's relist rule (an `Init` ... `InitDone`
//! relist replaces the whole index at `InitDone`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Resource;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use model::api::Dataset;
use model::watch::NodeLabelOwners;

use crate::observe::dataset_keys;

/// Anything that takes watch events: a reflector `Writer`, or one with an index beside it.
pub trait ApplyEvent<K> {
    /// Applies one watch event.
    fn apply_watcher_event(&mut self, event: &Event<K>);
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> ApplyEvent<K> for Writer<K> {
    fn apply_watcher_event(&mut self, event: &Event<K>) {
        Writer::apply_watcher_event(self, event);
    }
}

/// A writer that also confirms this controller's own writes as their watch events come back
/// (`model::unconfirmed::PendingWrites`).
pub struct ConfirmingWriter<W> {
    inner: W,
    kind: model::effect::Kind,
    pending: Arc<std::sync::Mutex<model::unconfirmed::PendingWrites>>,
}

impl<W> ConfirmingWriter<W> {
    /// Feeds `inner`, and confirms writes to objects of `kind` in `pending`.
    pub fn new(
        inner: W,
        kind: model::effect::Kind,
        pending: Arc<std::sync::Mutex<model::unconfirmed::PendingWrites>>,
    ) -> Self {
        Self { inner, kind, pending }
    }
}

impl<K: Resource<DynamicType = ()>, W: ApplyEvent<K>> ApplyEvent<K> for ConfirmingWriter<W> {
    fn apply_watcher_event(&mut self, event: &Event<K>) {
        // The store first: once a write is confirmed, a reconcile may read it.
        self.inner.apply_watcher_event(event);
        let target = |object: &K| {
            model::effect::ObjectRef::namespaced(
                self.kind,
                object.meta().namespace.as_deref().unwrap_or_default(),
                object.meta().name.as_deref().unwrap_or_default(),
            )
        };
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Apply(object) => pending.seen(&target(object), object.meta().resource_version.as_deref()),
            Event::Delete(object) => pending.deleted(&target(object)),
            // A relist's objects reach the store all at once, at its end.
            Event::Init => pending.relist_started(self.kind),
            Event::InitApply(_) => {}
            Event::InitDone => pending.relisted(self.kind),
        }
    }
}

/// An index kept from objects of kind `K`.
pub trait Index<K>: Sized {
    /// The object was added or changed.
    fn upsert(&mut self, object: &K);
    /// The object was deleted.
    fn remove(&mut self, object: &K);
    /// An empty index configured like this one (a relist builds one up).
    fn empty_like(&self) -> Self;
}

/// A shared, read-mostly index.
pub type Shared<I> = Arc<RwLock<I>>;

/// Reads a shared index (a writer that panicked leaves it readable).
pub fn read<I>(index: &Shared<I>) -> RwLockReadGuard<'_, I> {
    index.read().unwrap_or_else(PoisonError::into_inner)
}

/// A reflector writer and an index fed by the same events.
pub struct IndexedWriter<K: Resource<DynamicType = ()> + Clone + 'static, I> {
    writer: Writer<K>,
    index: Shared<I>,
    relisting: Option<I>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static, I: Index<K>> IndexedWriter<K, I> {
    /// Feeds `writer` and `index`.
    pub fn new(writer: Writer<K>, index: Shared<I>) -> Self {
        Self { writer, index, relisting: None }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static, I: Index<K>> ApplyEvent<K> for IndexedWriter<K, I> {
    /// Applies one watch event to the store and the index.
    fn apply_watcher_event(&mut self, event: &Event<K>) {
        self.writer.apply_watcher_event(event);
        let mut index = self.index.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Init => self.relisting = Some(index.empty_like()),
            Event::InitApply(object) => self.relisting.get_or_insert_with(|| index.empty_like()).upsert(object),
            Event::InitDone => {
                let relisted = self.relisting.take().unwrap_or_else(|| index.empty_like());
                *index = relisted;
            }
            Event::Apply(object) => index.upsert(object),
            Event::Delete(object) => index.remove(object),
        }
    }
}

fn namespace_and_name<K: Resource>(object: &K) -> Option<(String, String)> {
    Some((object.meta().namespace.clone()?, object.meta().name.clone()?))
}

/// Pods by the claims they name and by their `release` label (workers carry their runtime's
/// name there), per namespace. Values are pod names.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_claim: BTreeMap<(String, String), BTreeSet<String>>,
    by_release: BTreeMap<(String, String), BTreeSet<String>>,
    /// What each pod was filed under, to unfile it.
    filed: BTreeMap<(String, String), (Vec<String>, Option<String>)>,
}

impl PodIndex {
    /// Names of the pods in `namespace` that name PVC `claim`, in order.
    pub fn claim_users(&self, namespace: &str, claim: &str) -> impl Iterator<Item = &String> {
        self.by_claim.get(&(namespace.to_string(), claim.to_string())).into_iter().flatten()
    }

    /// Names of the pods in `namespace` whose `release` label is `release`, in order.
    pub fn released_as(&self, namespace: &str, release: &str) -> impl Iterator<Item = &String> {
        self.by_release.get(&(namespace.to_string(), release.to_string())).into_iter().flatten()
    }
}

/// Takes `name` out of `index[key]`, dropping the entry once it is empty.
fn unfile<K: Ord>(index: &mut BTreeMap<K, BTreeSet<String>>, key: K, name: &str) {
    if let Some(names) = index.get_mut(&key) {
        names.remove(name);
        if names.is_empty() {
            index.remove(&key);
        }
    }
}

impl Index<Pod> for PodIndex {
    fn upsert(&mut self, pod: &Pod) {
        self.remove(pod);
        let Some((namespace, name)) = namespace_and_name(pod) else { return };
        let claims: Vec<String> = model::observed::claim_names(pod.spec.as_ref()).map(str::to_string).collect();
        let release = pod.metadata.labels.as_ref().and_then(|l| l.get(model::labels::RELEASE)).cloned();
        for claim in &claims {
            self.by_claim.entry((namespace.clone(), claim.clone())).or_default().insert(name.clone());
        }
        if let Some(release) = &release {
            self.by_release.entry((namespace.clone(), release.clone())).or_default().insert(name.clone());
        }
        self.filed.insert((namespace, name), (claims, release));
    }

    fn empty_like(&self) -> Self {
        Self::default()
    }

    fn remove(&mut self, pod: &Pod) {
        let Some(key) = namespace_and_name(pod) else { return };
        let Some((claims, release)) = self.filed.remove(&key) else { return };
        let (namespace, name) = key;
        for claim in claims {
            unfile(&mut self.by_claim, (namespace.clone(), claim), &name);
        }
        if let Some(release) = release {
            unfile(&mut self.by_release, (namespace, release), &name);
        }
    }
}

/// Nodes by the keys of their labels. Values are node names.
#[derive(Debug, Default)]
pub struct NodeIndex {
    by_label_key: BTreeMap<String, BTreeSet<String>>,
    filed: BTreeMap<String, Vec<String>>,
}

impl NodeIndex {
    /// Names of the nodes that carry label `key`, in order.
    pub fn with_label_key(&self, key: &str) -> impl Iterator<Item = &String> {
        self.by_label_key.get(key).into_iter().flatten()
    }
}

impl Index<Node> for NodeIndex {
    fn upsert(&mut self, node: &Node) {
        self.remove(node);
        let Some(name) = node.metadata.name.clone() else { return };
        let keys: Vec<String> = node.metadata.labels.iter().flatten().map(|(k, _)| k.clone()).collect();
        for key in &keys {
            self.by_label_key.entry(key.clone()).or_default().insert(name.clone());
        }
        self.filed.insert(name, keys);
    }

    fn empty_like(&self) -> Self {
        Self::default()
    }

    fn remove(&mut self, node: &Node) {
        let Some(name) = node.metadata.name.as_ref() else { return };
        let Some(keys) = self.filed.remove(name) else { return };
        for key in keys {
            unfile(&mut self.by_label_key, key, name);
        }
    }
}

/// Which dataset each node label key belongs to (`model::watch::NodeLabelOwners`), fed with the
/// datasets' watch events, so that a node event maps to pairs without walking every dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetLabelIndex {
    runtime_type: &'static str,
    owners: NodeLabelOwners,
}

impl DatasetLabelIndex {
    /// An empty index of the label keys datasets served by `runtime_type` set on nodes.
    pub fn new(runtime_type: &'static str) -> Self {
        Self { runtime_type, owners: NodeLabelOwners::default() }
    }

    /// The owners of node label keys.
    pub fn owners(&self) -> &NodeLabelOwners {
        &self.owners
    }
}

impl Index<Dataset> for DatasetLabelIndex {
    fn upsert(&mut self, dataset: &Dataset) {
        let Some(pair) = model::watch::pair_of_named(&dataset.metadata) else { return };
        match dataset_keys(Some(dataset), &pair.namespace, &pair.name) {
            Some(keys) => self.owners.insert(&pair, &keys, self.runtime_type),
            None => self.owners.remove(&pair),
        }
    }

    fn remove(&mut self, dataset: &Dataset) {
        if let Some(pair) = model::watch::pair_of_named(&dataset.metadata) {
            self.owners.remove(&pair);
        }
    }

    fn empty_like(&self) -> Self {
        Self::new(self.runtime_type)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, PodSpec, Volume};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::reflector;

    use super::*;

    fn pod(name: &str, claim: &str, release: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: release.map(|r| [(model::labels::RELEASE.to_string(), r.to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(vec![Volume {
                    name: "data".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.into(),
                        read_only: None,
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn names<'a>(it: impl Iterator<Item = &'a String>) -> Vec<&'a str> {
        it.map(String::as_str).collect()
    }

    #[test]
    fn pods_are_filed_moved_and_unfiled_with_the_store() {
        let (store, writer) = reflector::store::<Pod>();
        let index: Shared<PodIndex> = Default::default();
        let mut w = IndexedWriter::new(writer, index.clone());
        w.apply_watcher_event(&Event::Apply(pod("a", "data", None)));
        w.apply_watcher_event(&Event::Apply(pod("b", "data", Some("jfs"))));
        assert_eq!(names(read(&index).claim_users("default", "data")), ["a", "b"]);
        assert_eq!(names(read(&index).released_as("default", "jfs")), ["b"]);
        // A pod that changes its claim moves; a deleted one goes.
        w.apply_watcher_event(&Event::Apply(pod("a", "other", None)));
        w.apply_watcher_event(&Event::Delete(pod("b", "data", Some("jfs"))));
        assert!(read(&index).claim_users("default", "data").next().is_none());
        assert_eq!(names(read(&index).claim_users("default", "other")), ["a"]);
        assert!(read(&index).released_as("default", "jfs").next().is_none());
        assert_eq!(store.state().len(), 1);
    }

    #[test]
    fn a_relist_replaces_the_index_at_its_end_as_it_replaces_the_store() {
        let (store, writer) = reflector::store::<Pod>();
        let index: Shared<PodIndex> = Default::default();
        let mut w = IndexedWriter::new(writer, index.clone());
        w.apply_watcher_event(&Event::Apply(pod("gone", "data", None)));
        w.apply_watcher_event(&Event::Init);
        w.apply_watcher_event(&Event::InitApply(pod("kept", "data", None)));
        // Until InitDone, readers see the old state in both.
        assert_eq!(names(read(&index).claim_users("default", "data")), ["gone"]);
        w.apply_watcher_event(&Event::InitDone);
        assert_eq!(names(read(&index).claim_users("default", "data")), ["kept"]);
        assert_eq!(store.state().len(), 1);
    }

    #[test]
    fn nodes_are_filed_by_label_key() {
        let (_store, writer) = reflector::store::<Node>();
        let index: Shared<NodeIndex> = Default::default();
        let mut w = IndexedWriter::new(writer, index.clone());
        let node = |labels: &[&str]| Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                labels: Some(labels.iter().map(|k| (k.to_string(), "true".to_string())).collect()),
                ..Default::default()
            },
            ..Default::default()
        };
        w.apply_watcher_event(&Event::Apply(node(&["fluid.io/f-default-a"])));
        assert_eq!(names(read(&index).with_label_key("fluid.io/f-default-a")), ["n1"]);
        w.apply_watcher_event(&Event::Apply(node(&["fluid.io/s-default-a"])));
        assert!(read(&index).with_label_key("fluid.io/f-default-a").next().is_none());
        assert_eq!(names(read(&index).with_label_key("fluid.io/s-default-a")), ["n1"]);
    }
}
