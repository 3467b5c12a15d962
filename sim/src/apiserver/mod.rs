//! The in-memory apiserver: resourceVersions, UIDs, 409s, finalizers, deletion and watch changes.
//!
//! Semantics kept from Kubernetes because controllers trip over them:
//! * every write bumps one global resourceVersion; a write with a stale precondition gets 409;
//! * `delete` of an object with finalizers only sets `deletionTimestamp`; the object goes when
//!   its last finalizer is removed. Pods bound to a node terminate gracefully: the kubelet
//!   removes them once their containers and volumes are down;
//! * apply is server-side apply of a whole object: spec fields are merged in (fields others set,
//!   like a PV's `claimRef.uid`, survive), labels, annotations and ownerReferences are merged by
//!   key, status and finalizers are kept; an apply that changes nothing bumps nothing;
//! * status is a subresource: a status write never changes spec or generation; a spec write
//!   bumps the generation of workloads and custom resources, whoever makes it;
//! * every change is recorded as a [`Change`] for the watch fan-out.

pub mod object;
pub mod pod;
pub mod schema;
pub mod selector;
pub mod store;

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use model::effect::{Kind, ObjectRef};
use model::time::Millis;

pub use object::Obj;
pub use pod::Pod;
pub use store::Store;

/// A refused write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 409: the object changed since the resourceVersion the writer read.
    Conflict {
        /// The object.
        object: ObjectRef,
        /// What the writer expected.
        expected: String,
        /// What the object has.
        actual: String,
    },
    /// 404.
    NotFound(ObjectRef),
    /// 409 AlreadyExists on create.
    AlreadyExists(ObjectRef),
    /// 422 Invalid: the object an apply would store does not decode; the message names the field.
    Invalid {
        /// The object.
        object: ObjectRef,
        /// What is wrong, and where.
        message: String,
    },
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Conflict { object, expected, actual } => {
                write!(f, "409 Conflict on {object}: resourceVersion {expected} is stale (now {actual})")
            }
            ApiError::NotFound(object) => write!(f, "404 NotFound: {object}"),
            ApiError::AlreadyExists(object) => write!(f, "409 AlreadyExists: {object}"),
            ApiError::Invalid { object, message } => write!(f, "422 Invalid: {object}: {message}"),
        }
    }
}

/// 422 for a custom resource its CRD's schema refuses, as the real API server answers.
fn refuse_invalid(obj: &Obj) -> Result<(), ApiError> {
    let kind = obj.kind();
    if !matches!(kind, Kind::Dataset | Kind::JuiceFSRuntime) {
        return Ok(());
    }
    let problems = schema::validate(kind.as_str(), &obj.to_json());
    if problems.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid { object: obj.object_ref(), message: problems.join("; ") })
}

/// One change, as a watch delivers it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The object.
    pub key: ObjectRef,
    /// Before (None: created).
    pub old: Option<Obj>,
    /// After (None: deleted).
    pub new: Option<Obj>,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The object is gone.
    Removed,
    /// It has finalizers or must terminate gracefully: `deletionTimestamp` is set.
    Terminating,
    /// It was already terminating.
    AlreadyTerminating,
}

/// The apiserver.
#[derive(Debug, Default)]
pub struct ApiServer {
    /// The objects.
    pub store: Store,
    resource_version: u64,
    uid_counter: u64,
    /// Changes since the last drain, in order.
    pub changes: Vec<Change>,
    /// Number of writes served.
    pub writes: u64,
    /// Which fields each object was last applied with (the keys of its `spec`, `metadata.labels`
    /// and `metadata.annotations`), so that an apply that no longer names a field removes it, as
    /// server-side apply does with a manager's own fields (one applier per object, like
    /// kubectl's last-applied three-way merge). Fields others wrote are kept.
    last_applied: FxHashMap<ObjectRef, AppliedKeys>,
}

impl ApiServer {
    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    fn next_rv(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn commit(&mut self, key: ObjectRef, mut obj: Obj) -> Obj {
        let rv = self.next_rv();
        obj.set_resource_version(rv);
        let old = self.store.put_at(&key, obj.clone());
        self.writes += 1;
        self.changes.push(Change { key, old, new: Some(obj.clone()) });
        obj
    }

    /// Creates `obj`. Assigns uid, creationTimestamp, resourceVersion and generation.
    pub fn create(&mut self, mut obj: Obj, now: Millis) -> Result<Obj, ApiError> {
        let key = obj.object_ref();
        refuse_invalid(&obj)?;
        if self.store.get(&key).is_some() {
            return Err(ApiError::AlreadyExists(key));
        }
        self.uid_counter += 1;
        let uid = format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            0x5eed_0000u32 + (self.uid_counter as u32 >> 16),
            self.uid_counter & 0xffff,
            self.uid_counter
        );
        let meta = obj.meta_mut();
        meta.uid = Some(uid);
        meta.creation_timestamp = Some(now.to_time());
        meta.deletion_timestamp = None;
        meta.generation = Some(1);
        if key.kind.is_cluster_scoped() {
            meta.namespace = None;
        } else if meta.namespace.as_deref().unwrap_or("").is_empty() {
            meta.namespace = Some("default".to_string());
        }
        let key = obj.object_ref();
        Ok(self.commit(key, obj))
    }

    /// Server-side apply of a whole object (see the module docs). Returns the stored object and
    /// whether anything changed.
    pub fn apply(&mut self, obj: Obj, now: Millis) -> Result<(Obj, bool), ApiError> {
        let key = obj.object_ref();
        refuse_invalid(&obj)?;
        let applied = obj.to_json();
        let applied_keys = AppliedKeys::of(&applied);
        let Some(current) = self.store.get(&key).cloned() else {
            let created = self.create(obj, now)?;
            self.last_applied.insert(key, applied_keys);
            return Ok((created, true));
        };
        let last = self.last_applied.get(&key).cloned().unwrap_or_default();
        let before = current.to_json();
        let mut merged_json = before.clone();
        if let (Some(target), Some(source)) = (merged_json.as_object_mut(), applied.as_object()) {
            if let Some(spec) = source.get("spec") {
                let slot = target.entry("spec").or_insert(serde_json::Value::Null);
                merge_json(slot, &last, path_hash(0, "spec"), spec);
            }
            let meta = target.entry("metadata").or_insert_with(|| serde_json::json!({}));
            if let Some(source_meta) = source.get("metadata") {
                let no_keys = serde_json::json!({});
                for field in ["labels", "annotations"] {
                    let path = path_hash(path_hash(0, "metadata"), field);
                    let value = source_meta.get(field).unwrap_or(&serde_json::Value::Null);
                    if value.is_null() && !last.contains(path) {
                        continue;
                    }
                    let slot = meta.as_object_mut().map(|m| m.entry(field).or_insert(serde_json::json!({})));
                    if let Some(slot) = slot {
                        merge_json(slot, &last, path, if value.is_null() { &no_keys } else { value });
                    }
                }
                if let Some(owners) = source_meta.get("ownerReferences").and_then(|o| o.as_array()) {
                    let list =
                        meta.as_object_mut().map(|m| m.entry("ownerReferences").or_insert(serde_json::json!([])));
                    if let Some(serde_json::Value::Array(list)) = list {
                        for owner in owners {
                            if !list.iter().any(|o| o.get("uid") == owner.get("uid")) {
                                list.push(owner.clone());
                            }
                        }
                    }
                }
            }
        }
        if merged_json == before {
            self.last_applied.insert(key, applied_keys);
            return Ok((current, false));
        }
        let spec_changed = merged_json.get("spec") != before.get("spec");
        // Refused whole: the stored object and the applier's recorded fields stay as they were.
        let mut merged = decode_merged(&key, merged_json)?;
        self.last_applied.insert(key.clone(), applied_keys);
        if spec_changed {
            let generation = current.meta().generation.unwrap_or(1) + 1;
            merged.meta_mut().generation = Some(generation);
        }
        Ok((self.commit(key, merged), true))
    }

    /// Changes an object in place. `change` returns whether it changed anything; nothing is
    /// written (and no resourceVersion spent) when it did not. A `precondition` resourceVersion
    /// that differs from the stored one gets 409. Removing the last finalizer of a terminating
    /// object removes it.
    pub fn modify(
        &mut self,
        key: &ObjectRef,
        precondition: Option<&str>,
        change: impl FnOnce(&mut Obj) -> bool,
    ) -> Result<bool, ApiError> {
        let Some(current) = self.store.get(key) else {
            return Err(ApiError::NotFound(key.clone()));
        };
        if let Some(expected) = precondition {
            let actual = current.resource_version().unwrap_or_default().to_string();
            if actual != expected {
                return Err(ApiError::Conflict { object: key.clone(), expected: expected.to_string(), actual });
            }
        }
        let before = current.clone();
        let mut obj = current.clone();
        if !change(&mut obj) {
            return Ok(false);
        }
        // As the real apiserver: a spec change of a workload or custom resource bumps the
        // generation, whoever wrote it (controllers tell status-only writes by it).
        let tracks_generation =
            matches!(key.kind, Kind::Dataset | Kind::JuiceFSRuntime | Kind::StatefulSet | Kind::DaemonSet);
        if tracks_generation && !obj.same_spec(&before) {
            let generation = before.meta().generation.unwrap_or(1) + 1;
            obj.meta_mut().generation = Some(generation);
        }
        let finished = obj.is_deleting() && obj.finalizers().is_empty() && key.kind != model::effect::Kind::Pod;
        if finished {
            self.remove(key);
        } else {
            self.commit(key.clone(), obj);
        }
        Ok(true)
    }

    /// Deletes an object: sets `deletionTimestamp` when it has finalizers (or is a pod bound to
    /// a node, which its kubelet terminates), removes it otherwise.
    pub fn delete(&mut self, key: &ObjectRef, now: Millis) -> Result<Deleted, ApiError> {
        let Some(current) = self.store.get(key) else {
            return Err(ApiError::NotFound(key.clone()));
        };
        if current.is_deleting() {
            return Ok(Deleted::AlreadyTerminating);
        }
        let graceful_pod = current.as_pod().is_some_and(|pod| pod.node_name().is_some());
        if current.finalizers().is_empty() && !graceful_pod {
            self.remove(key);
            return Ok(Deleted::Removed);
        }
        let mut obj = current.clone();
        obj.meta_mut().deletion_timestamp = Some(now.to_time());
        if graceful_pod {
            obj.meta_mut().deletion_grace_period_seconds = Some(30);
        }
        self.commit(key.clone(), obj);
        Ok(Deleted::Terminating)
    }

    /// Removes an object outright (a force delete, or the end of a graceful pod deletion).
    pub fn remove(&mut self, key: &ObjectRef) -> Option<Obj> {
        let old = self.store.remove(key)?;
        self.last_applied.remove(key);
        self.next_rv();
        self.writes += 1;
        self.changes.push(Change { key: key.clone(), old: Some(old.clone()), new: None });
        Some(old)
    }

    /// Merges label changes into `key`: `Some` sets a key, `None` removes it.
    pub fn patch_labels(
        &mut self,
        key: &ObjectRef,
        labels: &BTreeMap<String, Option<String>>,
    ) -> Result<bool, ApiError> {
        self.patch_labels_guarded(key, None, labels)
    }

    /// [`Self::patch_labels`], refused with 409 unless the object is at `precondition` (if any).
    pub fn patch_labels_guarded(
        &mut self,
        key: &ObjectRef,
        precondition: Option<&str>,
        labels: &BTreeMap<String, Option<String>>,
    ) -> Result<bool, ApiError> {
        self.modify(key, precondition, |obj| {
            let current = obj.meta().labels.as_ref();
            let unchanged = labels.iter().all(|(label, value)| current.and_then(|l| l.get(label)) == value.as_ref());
            if unchanged {
                return false;
            }
            let next = obj.meta_mut().labels.get_or_insert_with(BTreeMap::new);
            for (label, value) in labels {
                match value {
                    Some(value) => {
                        next.insert(label.clone(), value.clone());
                    }
                    None => {
                        next.remove(label);
                    }
                }
            }
            true
        })
    }

    /// Drains the changes recorded since the last drain.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }
}

/// The keys an apply set (every map key under `spec`, `metadata.labels` and
/// `metadata.annotations`), as sorted hashes of their paths: a three-way merge only asks whether a
/// key was applied last time, and a few hundred bytes per object is all that costs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AppliedKeys {
    path_hashes: Vec<u64>,
}

impl AppliedKeys {
    /// The keys `applied` (a manifest as JSON) sets.
    fn of(applied: &serde_json::Value) -> Self {
        let mut path_hashes = Vec::new();
        if let Some(spec) = applied.get("spec") {
            collect_paths(spec, path_hash(0, "spec"), &mut path_hashes);
        }
        let metadata = path_hash(0, "metadata");
        for field in ["labels", "annotations"] {
            if let Some(value) = applied.get("metadata").and_then(|m| m.get(field)) {
                let path = path_hash(metadata, field);
                path_hashes.push(path);
                collect_paths(value, path, &mut path_hashes);
            }
        }
        path_hashes.sort_unstable();
        path_hashes.dedup();
        Self { path_hashes }
    }

    /// True when the key at `path` was applied.
    fn contains(&self, path: u64) -> bool {
        self.path_hashes.binary_search(&path).is_ok()
    }
}

/// The hash of the path `parent` + `key` (a fixed hash: the same on every run and machine).
fn path_hash(parent: u64, key: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write_u64(parent);
    hasher.write(key.as_bytes());
    hasher.write_u8(0xff);
    hasher.finish()
}

fn collect_paths(value: &serde_json::Value, path: u64, out: &mut Vec<u64>) {
    if let serde_json::Value::Object(map) = value {
        for (key, child) in map {
            let child_path = path_hash(path, key);
            out.push(child_path);
            collect_paths(child, child_path, out);
        }
    }
}

/// The object a merge produced, or a 422 naming the object and the field that does not decode.
fn decode_merged(key: &ObjectRef, merged: serde_json::Value) -> Result<Obj, ApiError> {
    Obj::from_manifest(merged).map_err(|message| ApiError::Invalid { object: key.clone(), message })
}

/// Merges `source` (an applied configuration) into `target` (the live object at `path`): maps
/// merge key by key, anything else (lists too) is replaced, a `null` removes the key, and a key
/// that the `last` apply set but `source` no longer names is removed (a three-way merge: keys
/// others set stay).
fn merge_json(target: &mut serde_json::Value, last: &AppliedKeys, path: u64, source: &serde_json::Value) {
    match (target, source) {
        (serde_json::Value::Object(target), serde_json::Value::Object(source)) => {
            target.retain(|key, _| source.contains_key(key) || !last.contains(path_hash(path, key)));
            for (key, value) in source {
                if value.is_null() {
                    target.remove(key);
                } else {
                    let slot = target.entry(key.clone()).or_insert(serde_json::Value::Null);
                    merge_json(slot, last, path_hash(path, key), value);
                }
            }
        }
        (target, source) => *target = source.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::Arc;

    fn pvc(name: &str) -> Obj {
        Obj::PersistentVolumeClaim(Arc::new(PersistentVolumeClaim {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("default".into()), ..Default::default() },
            ..Default::default()
        }))
    }

    #[test]
    fn a_merge_that_does_not_decode_is_refused_naming_the_object_and_the_field() {
        let key = ObjectRef::namespaced(Kind::DaemonSet, "default", "fuse");
        let merged = serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "fuse", "namespace": "default"},
            "spec": {"minReadySeconds": "soon"}
        });
        let error = decode_merged(&key, merged).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, ApiError::Invalid { ref object, .. } if *object == key));
        assert!(
            text.starts_with("422 Invalid: DaemonSet/default/fuse") && text.contains("spec.minReadySeconds"),
            "{text}"
        );
    }

    #[test]
    fn finalizers_hold_deletion_and_stale_writes_conflict() {
        let mut api = ApiServer::default();
        let created = api.create(pvc("a"), Millis(0)).unwrap();
        let key = created.object_ref();
        let rv = created.resource_version().unwrap().to_string();
        api.modify(&key, Some(&rv), |o| {
            o.meta_mut().finalizers = Some(vec!["f".into()]);
            true
        })
        .unwrap();
        let stale = api.modify(&key, Some(&rv), |_| true).unwrap_err();
        assert!(matches!(stale, ApiError::Conflict { .. }));
        assert_eq!(api.delete(&key, Millis(5)).unwrap(), Deleted::Terminating);
        assert!(api.store.get(&key).is_some());
        api.modify(&key, None, |o| {
            o.meta_mut().finalizers = Some(vec![]);
            true
        })
        .unwrap();
        assert!(api.store.get(&key).is_none());
    }

    #[test]
    fn apply_without_change_spends_no_resource_version() {
        let mut api = ApiServer::default();
        api.apply(pvc("a"), Millis(0)).unwrap();
        let rv = api.resource_version();
        let (_, changed) = api.apply(pvc("a"), Millis(1)).unwrap();
        assert!(!changed);
        assert_eq!(api.resource_version(), rv);
    }

    fn daemonset(labels: serde_json::Value, node_selector: serde_json::Value) -> Obj {
        Obj::from_manifest(serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "fuse", "namespace": "default", "labels": labels},
            "spec": {
                "selector": {"matchLabels": {"app": "fuse"}},
                "template": {"spec": {"nodeSelector": node_selector, "containers": [{"name": "fuse"}]}}
            }
        }))
        .expect("a DaemonSet")
    }

    #[test]
    fn an_apply_removes_what_it_no_longer_names_and_keeps_what_others_wrote() {
        let mut api = ApiServer::default();
        let both = serde_json::json!({"a": "true", "b": "true"});
        api.apply(daemonset(both.clone(), both), Millis(0)).unwrap();
        let key = ObjectRef::namespaced(Kind::DaemonSet, "default", "fuse");
        let by_someone_else = BTreeMap::from([("c".to_string(), Some("true".to_string()))]);
        api.patch_labels(&key, &by_someone_else).unwrap();

        let only_a = serde_json::json!({"a": "true"});
        let (applied, changed) = api.apply(daemonset(only_a.clone(), only_a), Millis(1)).unwrap();
        assert!(changed);
        let labels: Vec<&String> = applied.meta().labels.iter().flatten().map(|(k, _)| k).collect();
        assert_eq!(labels, ["a", "c"], "b was applied before and is not now; c is someone else's");
        let ds = applied.as_daemonset().expect("a DaemonSet");
        let template = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("a template");
        let selector: Vec<&String> = template.node_selector.iter().flatten().map(|(k, _)| k).collect();
        assert_eq!(selector, ["a"]);
        assert_eq!(applied.meta().generation, Some(2), "the spec changed");

        // An apply without labels drops the ones it applied, not the others'.
        let unlabelled = Obj::from_manifest(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "fuse", "namespace": "default"},
            "spec": ds.spec.clone()
        }))
        .expect("a DaemonSet");
        let (applied, _) = api.apply(unlabelled, Millis(2)).unwrap();
        let labels: Vec<&String> = applied.meta().labels.iter().flatten().map(|(k, _)| k).collect();
        assert_eq!(labels, ["c"]);

        // Gone and created again: nothing is remembered from before.
        api.remove(&key);
        assert!(!api.last_applied.contains_key(&key), "a removed object's applied fields are forgotten");
        api.apply(daemonset(serde_json::json!({"x": "1"}), serde_json::json!({})), Millis(3)).unwrap();
        let remembered = api.last_applied.get(&key).expect("applied keys");
        let labels = path_hash(path_hash(0, "metadata"), "labels");
        assert!(remembered.contains(path_hash(labels, "x")) && !remembered.contains(path_hash(labels, "a")));
    }

    #[test]
    fn the_store_lists_in_key_order_whatever_the_order_of_writes() {
        let mut api = ApiServer::default();
        for name in ["c", "a", "d", "b"] {
            api.create(pvc(name), Millis(0)).unwrap();
        }
        api.remove(&pvc("d").object_ref());
        api.modify(&pvc("a").object_ref(), None, |o| {
            o.meta_mut().labels = Some([("k".to_string(), "v".to_string())].into());
            true
        })
        .unwrap();
        let names: Vec<String> =
            api.store.list(Kind::PersistentVolumeClaim).filter_map(|o| o.meta().name.clone()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(api.store.count(Kind::PersistentVolumeClaim), 3);
        let keys: Vec<String> = api.store.iter().map(|(key, _)| key.name.to_string()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert!(api.store.get(&pvc("d").object_ref()).is_none());
        for name in ["a", "b", "c"] {
            api.remove(&pvc(name).object_ref());
        }
        assert_eq!(api.store.list(Kind::PersistentVolumeClaim).count(), 0);
        assert_eq!(api.store.iter().count(), 0, "an emptied namespace leaves no name behind");
    }
}
