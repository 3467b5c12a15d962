//! An indexed object store: the apiserver's state, and (as a lagging copy) the controller's cache.

use std::collections::{BTreeMap, BTreeSet};

use model::effect::{Kind, ObjectRef};
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
    objects: BTreeMap<Kind, FxHashMap<String, FxHashMap<String, Obj>>>,
    /// Names by kind and namespace, in order (changed only by creates and removals).
    names: BTreeMap<Kind, BTreeMap<String, BTreeSet<String>>>,
    by_uid: FxHashMap<String, ObjectRef>,
    dependents: FxHashMap<String, BTreeSet<ObjectRef>>,
    pods_by_node: FxHashMap<String, BTreeSet<ObjectRef>>,
    /// Pods by namespace and the claims they name, each with its `PodView` (what reconciles read
    /// of it), kept current on every write so that an observation copies views instead of
    /// deriving them.
    pods_by_claim: FxHashMap<String, FxHashMap<String, BTreeMap<ObjectRef, PodView>>>,
    nodes_by_label_key: FxHashMap<String, BTreeSet<String>>,
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

    /// Names of nodes that carry label `key` (any value).
    pub fn nodes_with_label_key(&self, key: &str) -> impl Iterator<Item = &String> {
        self.nodes_by_label_key.get(key).into_iter().flatten()
    }

    /// Inserts or replaces an object, keeping the indexes right. Returns the previous version.
    pub fn put(&mut self, obj: Obj) -> Option<Obj> {
        let key = obj.object_ref();
        let namespaces = self.objects.entry(key.kind).or_default();
        let objects = match namespaces.get_mut(&key.namespace) {
            Some(objects) => objects,
            None => namespaces.entry(key.namespace.clone()).or_default(),
        };
        let current = Some(obj.clone());
        let previous = match objects.get_mut(&key.name) {
            Some(slot) => Some(std::mem::replace(slot, obj)),
            None => {
                objects.insert(key.name.clone(), obj);
                let names = self.names.entry(key.kind).or_default();
                names.entry(key.namespace.clone()).or_default().insert(key.name.clone());
                None
            }
        };
        match (&previous, &current) {
            // Most writes are status updates: nothing indexed changed but a pod's view.
            (Some(old), Some(new)) if same_index_facts(old, new) => {
                if let Obj::Pod(pod) = new {
                    self.refresh_claim_views(&key, pod);
                }
            }
            _ => {
                if let Some(old) = &previous {
                    self.unindex(&key, old);
                }
                if let Some(new) = &current {
                    self.index(&key, new);
                }
            }
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

    fn refresh_claim_views(&mut self, key: &ObjectRef, pod: &Pod) {
        let mut view = None;
        for claim in claims_of(pod) {
            if let Some(slot) = self
                .pods_by_claim
                .get_mut(&key.namespace)
                .and_then(|claims| claims.get_mut(&claim))
                .and_then(|users| users.get_mut(key))
            {
                let fresh = view.get_or_insert_with(|| pod.view());
                if slot != fresh {
                    *slot = fresh.clone();
                }
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
                if let Some(node) = pod.node_name().map(str::to_string) {
                    self.pods_by_node.entry(node).or_default().insert(key.clone());
                }
                let view = pod.view();
                let claims = self.pods_by_claim.entry(key.namespace.clone()).or_default();
                for claim in claims_of(pod) {
                    claims.entry(claim).or_default().insert(key.clone(), view.clone());
                }
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
                if let Some(node) = pod.node_name().map(str::to_string) {
                    remove_from(&mut self.pods_by_node, &node, key);
                }
                if let Some(claims) = self.pods_by_claim.get_mut(&key.namespace) {
                    for claim in claims_of(pod) {
                        if let Some(users) = claims.get_mut(&claim) {
                            users.remove(key);
                            if users.is_empty() {
                                claims.remove(&claim);
                            }
                        }
                    }
                }
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

/// True when two versions of an object file under the same index entries.
fn same_index_facts(old: &Obj, new: &Obj) -> bool {
    let (a, b) = (old.meta(), new.meta());
    if a.uid != b.uid || a.owner_references != b.owner_references {
        return false;
    }
    match (old, new) {
        (Obj::Pod(a), Obj::Pod(b)) => {
            a.node_name() == b.node_name() && a.spec.as_ref().map(|s| &s.volumes) == b.spec.as_ref().map(|s| &s.volumes)
        }
        (Obj::Node(a), Obj::Node(b)) => {
            let (a, b) = (a.metadata.labels.iter().flatten(), b.metadata.labels.iter().flatten());
            a.map(|(k, _)| k).eq(b.map(|(k, _)| k))
        }
        _ => true,
    }
}

/// Takes `value` out of `index[key]`, dropping the entry once its set is empty.
fn remove_from<V: Ord>(index: &mut FxHashMap<String, BTreeSet<V>>, key: &str, value: &V) {
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
