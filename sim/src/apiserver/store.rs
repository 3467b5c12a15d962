//! An indexed object store: the apiserver's state, and (as a lagging copy) the controller's cache.

use std::collections::{BTreeMap, BTreeSet};

use model::effect::{Kind, ObjectRef};

use super::object::Obj;

/// Objects by reference, with the indexes the simulated controllers need to stay incremental
/// at 20,000 pods: dependents by owner UID, pods by node and by claim, nodes by label key.
#[derive(Debug, Default, Clone)]
pub struct Store {
    objects: BTreeMap<ObjectRef, Obj>,
    by_uid: BTreeMap<String, ObjectRef>,
    dependents: BTreeMap<String, BTreeSet<ObjectRef>>,
    pods_by_node: BTreeMap<String, BTreeSet<ObjectRef>>,
    pods_by_claim: BTreeMap<(String, String), BTreeSet<ObjectRef>>,
    nodes_by_label_key: BTreeMap<String, BTreeSet<String>>,
}

impl Store {
    /// The object at `key`.
    pub fn get(&self, key: &ObjectRef) -> Option<&Obj> {
        self.objects.get(key)
    }

    /// The object of this kind, namespace and name.
    pub fn get_named(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Obj> {
        let namespace = if kind.is_cluster_scoped() { "" } else { namespace };
        self.objects.get(&ObjectRef { kind, namespace: namespace.to_string(), name: name.to_string() })
    }

    /// The reference of the object with `uid`.
    pub fn by_uid(&self, uid: &str) -> Option<&ObjectRef> {
        self.by_uid.get(uid)
    }

    /// Every object of `kind`, in key order.
    pub fn list(&self, kind: Kind) -> impl Iterator<Item = &Obj> {
        let start = ObjectRef { kind, namespace: String::new(), name: String::new() };
        self.objects.range(start..).take_while(move |(key, _)| key.kind == kind).map(|(_, obj)| obj)
    }

    /// Number of objects of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.list(kind).count()
    }

    /// Every object, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectRef, &Obj)> {
        self.objects.iter()
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
        self.pods_by_claim.get(&(namespace.to_string(), claim.to_string())).into_iter().flatten()
    }

    /// Names of nodes that carry label `key` (any value).
    pub fn nodes_with_label_key(&self, key: &str) -> impl Iterator<Item = &String> {
        self.nodes_by_label_key.get(key).into_iter().flatten()
    }

    /// Inserts or replaces an object, keeping the indexes right. Returns the previous version.
    pub fn put(&mut self, obj: Obj) -> Option<Obj> {
        let key = obj.object_ref();
        let previous = self.objects.remove(&key);
        if let Some(old) = &previous {
            self.unindex(&key, old);
        }
        self.index(&key, &obj);
        self.objects.insert(key, obj);
        previous
    }

    /// Removes an object. Returns it.
    pub fn remove(&mut self, key: &ObjectRef) -> Option<Obj> {
        let old = self.objects.remove(key)?;
        self.unindex(key, &old);
        Some(old)
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
                if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    self.pods_by_node.entry(node).or_default().insert(key.clone());
                }
                for claim in claims_of(pod) {
                    self.pods_by_claim.entry((key.namespace.clone(), claim)).or_default().insert(key.clone());
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
                if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    remove_from(&mut self.pods_by_node, &node, key);
                }
                for claim in claims_of(pod) {
                    remove_from(&mut self.pods_by_claim, &(key.namespace.clone(), claim), key);
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

fn remove_from<K: Ord + Clone, V: Ord>(index: &mut BTreeMap<K, BTreeSet<V>>, key: &K, value: &V) {
    if let Some(set) = index.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// The PVC names a pod's volumes refer to.
pub fn claims_of(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(|volumes| {
            volumes.iter().filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone())).collect()
        })
        .unwrap_or_default()
}
