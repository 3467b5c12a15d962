//! An indexed object store: the apiserver's state, and (as a lagging copy) the controller's cache.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::effect::{CompactString, Kind, ObjectRef};
use model::observed::PodView;
use rustc_hash::FxHashMap;

use super::object::Obj;
use super::pod::Pod;

/// Objects by reference, with the indexes the simulated controllers need to stay incremental
/// at 20,000 pods: dependents by owner UID, pods by node and by claim, nodes by label key.
/// Lookups go through hash maps keyed by `&str` (no allocation, no string-comparing tree walk);
/// the names of each kind and namespace are also kept sorted, for listing in key order.
#[derive(Debug, Default, Clone)]
pub struct Store {
    objects: BTreeMap<Kind, FxHashMap<CompactString, FxHashMap<CompactString, Obj>>>,
    /// Names by kind and namespace, in order (changed only by creates and removals).
    names: BTreeMap<Kind, BTreeMap<CompactString, BTreeSet<CompactString>>>,
    by_uid: FxHashMap<String, ObjectRef>,
    dependents: FxHashMap<String, BTreeSet<ObjectRef>>,
    pods_by_node: FxHashMap<CompactString, BTreeSet<ObjectRef>>,
    /// Pods by namespace and the claims they name, each with its `PodView` (what reconciles read
    /// of it), kept current on every write so that an observation copies views instead of
    /// deriving them.
    pods_by_claim: FxHashMap<CompactString, FxHashMap<CompactString, BTreeMap<ObjectRef, PodView>>>,
    nodes_by_label_key: FxHashMap<String, BTreeSet<CompactString>>,
    /// Pods by namespace and `release` label: how an observation finds a runtime's workers.
    pods_by_release: FxHashMap<CompactString, FxHashMap<String, BTreeSet<ObjectRef>>>,
}

impl Store {
    /// The object at `key`.
    pub fn get(&self, key: &ObjectRef) -> Option<&Obj> {
        self.get_named(key.kind, &key.namespace, &key.name)
    }

    /// The object of this kind, namespace and name.
    pub fn get_named(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Obj> {
        let namespace = if kind.is_cluster_scoped() { "" } else { namespace };
        self.objects.get(&kind)?.get(namespace)?.get(name)
    }

    /// The reference of the object with `uid`.
    pub fn by_uid(&self, uid: &str) -> Option<&ObjectRef> {
        self.by_uid.get(uid)
    }

    /// Every object of `kind`, in key order.
    pub fn list(&self, kind: Kind) -> impl Iterator<Item = &Obj> {
        self.names.get(&kind).into_iter().flat_map(move |namespaces| {
            namespaces.iter().flat_map(move |(namespace, names)| {
                names.iter().filter_map(move |name| self.get_named(kind, namespace, name))
            })
        })
    }

    /// Number of objects of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.objects.get(&kind).map_or(0, |namespaces| namespaces.values().map(FxHashMap::len).sum())
    }

    /// Every object, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (ObjectRef, &Obj)> {
        self.names.iter().flat_map(move |(kind, namespaces)| {
            namespaces.iter().flat_map(move |(namespace, names)| {
                names.iter().filter_map(move |name| {
                    let obj = self.get_named(*kind, namespace, name)?;
                    Some((ObjectRef { kind: *kind, namespace: namespace.clone(), name: name.clone() }, obj))
                })
            })
        })
    }

    /// Objects that name `owner_uid` in their ownerReferences.
    pub fn dependents(&self, owner_uid: &str) -> impl Iterator<Item = &ObjectRef> {
        self.dependents.get(owner_uid).into_iter().flatten()
    }

    /// Pods bound to `node`.
    pub fn pods_on_node(&self, node: &str) -> impl Iterator<Item = &ObjectRef> {
        self.pods_by_node.get(node).into_iter().flatten()
    }

    /// Pods in `namespace` that name PVC `claim`.
    pub fn pods_using_claim(&self, namespace: &str, claim: &str) -> impl Iterator<Item = &ObjectRef> {
        self.claim_users(namespace, claim).map(|(key, _)| key)
    }

    /// Pods in `namespace` that name PVC `claim`, with their views, in key order.
    pub fn claim_users(&self, namespace: &str, claim: &str) -> impl Iterator<Item = (&ObjectRef, &PodView)> {
        self.pods_by_claim.get(namespace).and_then(|claims| claims.get(claim)).into_iter().flatten()
    }

    /// Pods in `namespace` labelled `release=<release>`, in key order.
    pub fn pods_released_as(&self, namespace: &str, release: &str) -> impl Iterator<Item = &ObjectRef> {
        self.pods_by_release.get(namespace).and_then(|releases| releases.get(release)).into_iter().flatten()
    }

    /// Names of nodes that carry label `key` (any value).
    pub fn nodes_with_label_key(&self, key: &str) -> impl Iterator<Item = &CompactString> {
        self.nodes_by_label_key.get(key).into_iter().flatten()
    }

    /// Inserts or replaces an object, keeping the indexes right. Returns the previous version.
    pub fn put(&mut self, obj: Obj) -> Option<Obj> {
        let key = obj.object_ref();
        self.put_at(&key, obj)
    }

    /// [`Store::put`] for a caller that holds the object's reference already (copies no key
    /// unless the object is new to the store).
    pub fn put_at(&mut self, key: &ObjectRef, obj: Obj) -> Option<Obj> {
        debug_assert_eq!(*key, obj.object_ref());
        let namespaces = self.objects.entry(key.kind).or_default();
        let objects = match namespaces.get_mut(&key.namespace) {
            Some(objects) => objects,
            None => namespaces.entry(key.namespace.clone()).or_default(),
        };
        let current = obj.clone();
        let previous = match objects.get_mut(&key.name) {
            Some(slot) => Some(std::mem::replace(slot, obj)),
            None => {
                objects.insert(key.name.clone(), obj);
                let names = self.names.entry(key.kind).or_default();
                names.entry(key.namespace.clone()).or_default().insert(key.name.clone());
                None
            }
        };
        match &previous {
            Some(old) => self.reindex(key, old, &current),
            None => self.index(key, &current),
        }
        previous
    }

    /// Removes an object. Returns it.
    pub fn remove(&mut self, key: &ObjectRef) -> Option<Obj> {
        let namespaces = self.objects.get_mut(&key.kind)?;
        let objects = namespaces.get_mut(&key.namespace)?;
        let old = objects.remove(&key.name)?;
        if objects.is_empty() {
            namespaces.remove(&key.namespace);
        }
        if let Some(namespaces) = self.names.get_mut(&key.kind)
            && let Some(names) = namespaces.get_mut(&key.namespace)
        {
            names.remove(&key.name);
            if names.is_empty() {
                namespaces.remove(&key.namespace);
            }
        }
        self.unindex(key, &old);
        Some(old)
    }

    /// Moves a replaced object between index entries: only the facts that changed (most writes
    /// are status writes, which change nothing indexed but a pod's view).
    fn reindex(&mut self, key: &ObjectRef, old: &Obj, new: &Obj) {
        let (old_meta, new_meta) = (old.meta(), new.meta());
        // Pod versions share their metadata until it is written: then nothing in it moved.
        let same_meta = matches!((old, new), (Obj::Pod(a), Obj::Pod(b)) if a.shares_metadata(b));
        if !same_meta && old_meta.uid != new_meta.uid {
            if let Some(uid) = &old_meta.uid
                && self.by_uid.get(uid) == Some(key)
            {
                self.by_uid.remove(uid);
            }
            if let Some(uid) = &new_meta.uid {
                self.by_uid.insert(uid.clone(), key.clone());
            }
        }
        if !same_meta && old_meta.owner_references != new_meta.owner_references {
            for owner in old_meta.owner_references.iter().flatten() {
                remove_from(&mut self.dependents, &owner.uid, key);
            }
            for owner in new_meta.owner_references.iter().flatten() {
                self.dependents.entry(owner.uid.clone()).or_default().insert(key.clone());
            }
        }
        match (old, new) {
            (Obj::Pod(old), Obj::Pod(new)) => {
                if !same_meta && release_of(old_meta) != release_of(new_meta) {
                    self.unindex_release(key, old_meta);
                    self.index_release(key, new_meta);
                }
                if old.node_name() != new.node_name() {
                    if let Some(node) = old.node_name() {
                        remove_from(&mut self.pods_by_node, node, key);
                    }
                    if let Some(node) = new.node_name() {
                        self.pods_by_node.entry(node.into()).or_default().insert(key.clone());
                    }
                }
                let same_volumes = match (&old.spec, &new.spec) {
                    (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b) || a.volumes == b.volumes,
                    (a, b) => a.is_none() && b.is_none(),
                };
                if same_volumes {
                    self.refresh_claim_views(key, new);
                } else {
                    self.unindex_claims(key, old);
                    self.index_claims(key, new);
                }
            }
            (Obj::Node(old), Obj::Node(new)) => {
                let (old_labels, new_labels) = (old.metadata.labels.as_ref(), new.metadata.labels.as_ref());
                for label in old_labels.iter().flat_map(|l| l.keys()) {
                    if !new_labels.is_some_and(|l| l.contains_key(label)) {
                        remove_from(&mut self.nodes_by_label_key, label, &key.name);
                    }
                }
                for label in new_labels.iter().flat_map(|l| l.keys()) {
                    if !old_labels.is_some_and(|l| l.contains_key(label)) {
                        self.nodes_by_label_key.entry(label.clone()).or_default().insert(key.name.clone());
                    }
                }
            }
            _ => {}
        }
    }

    fn index_release(&mut self, key: &ObjectRef, meta: &ObjectMeta) {
        if let Some(release) = release_of(meta) {
            let releases = self.pods_by_release.entry(key.namespace.clone()).or_default();
            releases.entry(release.to_string()).or_default().insert(key.clone());
        }
    }

    fn unindex_release(&mut self, key: &ObjectRef, meta: &ObjectMeta) {
        if let Some(release) = release_of(meta)
            && let Some(releases) = self.pods_by_release.get_mut(&key.namespace)
        {
            remove_from(releases, release, key);
            if releases.is_empty() {
                self.pods_by_release.remove(&key.namespace);
            }
        }
    }

    fn index_claims(&mut self, key: &ObjectRef, pod: &Pod) {
        let claims = claims_of(pod);
        if claims.is_empty() {
            return;
        }
        let view = pod.view();
        let by_claim = self.pods_by_claim.entry(key.namespace.clone()).or_default();
        for claim in claims {
            by_claim.entry(claim.into()).or_default().insert(key.clone(), view.clone());
        }
    }

    fn unindex_claims(&mut self, key: &ObjectRef, pod: &Pod) {
        if let Some(by_claim) = self.pods_by_claim.get_mut(&key.namespace) {
            for claim in claims_of(pod) {
                if let Some(users) = by_claim.get_mut(claim.as_str()) {
                    users.remove(key);
                    if users.is_empty() {
                        by_claim.remove(claim.as_str());
                    }
                }
            }
        }
    }

    fn refresh_claim_views(&mut self, key: &ObjectRef, pod: &Pod) {
        let Some(by_claim) = self.pods_by_claim.get_mut(&key.namespace) else { return };
        for claim in model::observed::claim_names(pod.spec.as_deref()) {
            if let Some(view) = by_claim.get_mut(claim).and_then(|users| users.get_mut(key)) {
                pod.refresh_view(view);
            }
        }
    }

    fn index(&mut self, key: &ObjectRef, obj: &Obj) {
        let meta = obj.meta();
        if let Some(uid) = &meta.uid {
            self.by_uid.insert(uid.clone(), key.clone());
        }
        for owner in meta.owner_references.iter().flatten() {
            self.dependents.entry(owner.uid.clone()).or_default().insert(key.clone());
        }
        match obj {
            Obj::Pod(pod) => {
                if let Some(node) = pod.node_name() {
                    self.pods_by_node.entry(node.into()).or_default().insert(key.clone());
                }
                self.index_release(key, meta);
                self.index_claims(key, pod);
            }
            Obj::Node(node) => {
                for label in node.metadata.labels.iter().flatten().map(|(k, _)| k) {
                    self.nodes_by_label_key.entry(label.clone()).or_default().insert(key.name.clone());
                }
            }
            _ => {}
        }
    }

    fn unindex(&mut self, key: &ObjectRef, obj: &Obj) {
        let meta = obj.meta();
        if let Some(uid) = &meta.uid
            && self.by_uid.get(uid) == Some(key)
        {
            self.by_uid.remove(uid);
        }
        for owner in meta.owner_references.iter().flatten() {
            remove_from(&mut self.dependents, &owner.uid, key);
        }
        match obj {
            Obj::Pod(pod) => {
                if let Some(node) = pod.node_name() {
                    remove_from(&mut self.pods_by_node, node, key);
                }
                self.unindex_release(key, meta);
                self.unindex_claims(key, pod);
            }
            Obj::Node(node) => {
                for label in node.metadata.labels.iter().flatten().map(|(k, _)| k) {
                    remove_from(&mut self.nodes_by_label_key, label, &key.name);
                }
            }
            _ => {}
        }
    }
}

/// A pod's `release` label.
fn release_of(meta: &ObjectMeta) -> Option<&str> {
    meta.labels.as_ref()?.get(model::labels::RELEASE).map(String::as_str)
}

/// Takes `value` out of `index[key]`, dropping the entry once its set is empty.
fn remove_from<K, V>(index: &mut FxHashMap<K, BTreeSet<V>>, key: &str, value: &V)
where
    K: std::borrow::Borrow<str> + std::hash::Hash + Eq,
    V: Ord,
{
    if let Some(set) = index.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// The PVC names a pod's volumes refer to (`model::observed::claim_names`).
pub fn claims_of(pod: &Pod) -> Vec<String> {
    model::observed::claim_names(pod.spec.as_deref()).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaimVolumeSource, PodSpec, PodStatus, Volume};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use proptest::prelude::*;

    use super::*;

    /// One write: pod `index` (node, claims bitmask, owner, uid) or node `index` (labels bitmask).
    #[derive(Debug, Clone)]
    enum Write {
        Pod {
            index: u8,
            node: Option<u8>,
            claims: u8,
            owner: u8,
            uid: u8,
            /// 0: no `release` label; else `r-<n>`.
            release: u8,
        },
        Node {
            index: u8,
            labels: u8,
        },
        RemovePod {
            index: u8,
        },
        /// A status write or a binding of the stored pod: the new version shares its metadata
        /// and spec with the old one, as most pod writes do.
        PodStatusOrBinding {
            index: u8,
            node: Option<u8>,
            phase: u8,
        },
    }

    fn write() -> impl Strategy<Value = Write> {
        prop_oneof![
            (0..4u8, proptest::option::of(0..3u8), 0..4u8, 0..3u8, 0..2u8, 0..3u8).prop_map(
                |(index, node, claims, owner, uid, release)| Write::Pod { index, node, claims, owner, uid, release }
            ),
            (0..3u8, 0..8u8).prop_map(|(index, labels)| Write::Node { index, labels }),
            (0..4u8).prop_map(|index| Write::RemovePod { index }),
            (0..4u8, proptest::option::of(0..3u8), 0..3u8).prop_map(|(index, node, phase)| Write::PodStatusOrBinding {
                index,
                node,
                phase
            }),
        ]
    }

    fn pod(index: u8, node: Option<u8>, claims: u8, owner: u8, uid: u8, release: u8) -> Obj {
        let volumes = (0..2)
            .filter(|bit| claims & (1 << bit) != 0)
            .map(|bit| Volume {
                name: format!("v{bit}"),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: format!("claim-{bit}"),
                    read_only: None,
                }),
                ..Volume::default()
            })
            .collect();
        let metadata = ObjectMeta {
            name: Some(format!("pod-{index}")),
            namespace: Some("default".into()),
            uid: Some(format!("pod-{index}-uid-{uid}")),
            owner_references: (owner > 0)
                .then(|| vec![OwnerReference { uid: format!("owner-{owner}"), ..OwnerReference::default() }]),
            labels: (release > 0)
                .then(|| [(model::labels::RELEASE.to_string(), format!("r-{release}"))].into_iter().collect()),
            ..ObjectMeta::default()
        };
        let spec =
            PodSpec { volumes: Some(volumes), node_name: node.map(|n| format!("node-{n}")), ..PodSpec::default() };
        Obj::Pod(Arc::new(Pod::from(k8s_openapi::api::core::v1::Pod { metadata, spec: Some(spec), status: None })))
    }

    fn node(index: u8, labels: u8) -> Obj {
        let labels = (0..3).filter(|bit| labels & (1 << bit) != 0).map(|bit| (format!("key-{bit}"), "v".to_string()));
        let metadata = ObjectMeta {
            name: Some(format!("node-{index}")),
            uid: Some(format!("node-{index}-uid")),
            labels: Some(labels.collect()),
            ..ObjectMeta::default()
        };
        Obj::Node(Arc::new(Node { metadata, ..Node::default() }))
    }

    /// Everything the indexes answer, for the names the writes can produce.
    fn answers(store: &Store) -> Vec<String> {
        let mut out = Vec::new();
        for n in 0..3 {
            out.push(format!("node-{n}: {:?}", store.pods_on_node(&format!("node-{n}")).collect::<Vec<_>>()));
            out.push(format!("key-{n}: {:?}", store.nodes_with_label_key(&format!("key-{n}")).collect::<Vec<_>>()));
            out.push(format!("owner-{n}: {:?}", store.dependents(&format!("owner-{n}")).collect::<Vec<_>>()));
            out.push(format!("r-{n}: {:?}", store.pods_released_as("default", &format!("r-{n}")).collect::<Vec<_>>()));
            out.push(format!(
                "claim-{n}: {:?}",
                store.claim_users("default", &format!("claim-{n}")).collect::<Vec<_>>()
            ));
        }
        for (key, obj) in store.iter() {
            let uid = obj.meta().uid.clone().unwrap_or_default();
            out.push(format!("{uid}: {:?} for {key:?}", store.by_uid(&uid)));
        }
        out
    }

    proptest! {
        /// Writes move objects between index entries fact by fact; whatever the history, the
        /// indexes answer as if the final objects had been written once into an empty store.
        #[test]
        fn incremental_indexes_match_a_fresh_build(writes in proptest::collection::vec(write(), 1..40)) {
            let mut store = Store::default();
            for write in writes {
                match write {
                    Write::Pod { index, node, claims, owner, uid, release } => {
                        store.put(pod(index, node, claims, owner, uid, release));
                    }
                    Write::Node { index, labels } => {
                        store.put(node(index, labels));
                    }
                    Write::RemovePod { index } => {
                        store.remove(&ObjectRef::namespaced(Kind::Pod, "default", &format!("pod-{index}")));
                    }
                    Write::PodStatusOrBinding { index, node, phase } => {
                        let key = ObjectRef::namespaced(Kind::Pod, "default", &format!("pod-{index}"));
                        let Some(mut pod) = store.get(&key).and_then(|o| o.as_pod()).cloned() else { continue };
                        let writing = Arc::make_mut(&mut pod);
                        match node {
                            Some(node) => writing.bind(&format!("node-{node}")),
                            None => {
                                let phase = ["Running", "Succeeded", "Failed"][phase as usize];
                                writing.status = Some(PodStatus { phase: Some(phase.into()), ..PodStatus::default() });
                            }
                        }
                        store.put(Obj::Pod(pod));
                    }
                }
            }
            let mut fresh = Store::default();
            for (_, obj) in store.iter() {
                fresh.put(obj.clone());
            }
            prop_assert_eq!(answers(&store), answers(&fresh));
        }
    }
}
