//! What a reconcile decides: effects as plain values, plus when to look again.
//!
//! The simulator applies effects to its in-memory apiserver; the controller turns each into one
//! HTTP request (server-side apply, a status merge patch, a label merge patch, a JSON patch of
//! finalizers, a delete, an Event). Neither interprets them beyond that.

use std::collections::BTreeMap;
use std::fmt;

pub use compact_str::CompactString;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::api::{DatasetStatus, RuntimeStatus};

/// The kinds of object the model reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `data.fluid.io/v1alpha1` Dataset.
    Dataset,
    /// `data.fluid.io/v1alpha1` JuiceFSRuntime.
    JuiceFSRuntime,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `v1` PersistentVolume (cluster-scoped).
    PersistentVolume,
    /// `v1` PersistentVolumeClaim.
    PersistentVolumeClaim,
    /// `v1` Node (cluster-scoped).
    Node,
    /// `v1` Pod.
    Pod,
}

impl Kind {
    /// The kind as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dataset => "Dataset",
            Kind::JuiceFSRuntime => "JuiceFSRuntime",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::PersistentVolume => "PersistentVolume",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
        }
    }

    /// True for kinds without a namespace.
    pub fn is_cluster_scoped(self) -> bool {
        matches!(self, Kind::PersistentVolume | Kind::Node)
    }
}

/// A reference to one object: kind, namespace (empty when cluster-scoped) and name.
///
/// The names are compact strings: a name of up to 24 bytes (most are) lives inline, so a copy
/// allocates nothing and a comparison reads no other memory. Drivers key maps and queues by it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// The kind.
    pub kind: Kind,
    /// The namespace, empty for cluster-scoped kinds.
    pub namespace: CompactString,
    /// The name.
    pub name: CompactString,
}

impl ObjectRef {
    /// A namespaced object.
    pub fn namespaced(kind: Kind, namespace: &str, name: &str) -> Self {
        Self { kind, namespace: namespace.into(), name: name.into() }
    }

    /// A cluster-scoped object.
    pub fn cluster(kind: Kind, name: &str) -> Self {
        Self { kind, namespace: CompactString::default(), name: name.into() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind.as_str(), self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
        }
    }
}

/// A whole object to create or update by server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// The cache workers.
    StatefulSet(Box<StatefulSet>),
    /// The FUSE clients.
    DaemonSet(Box<DaemonSet>),
    /// The dataset's static PV.
    PersistentVolume(Box<PersistentVolume>),
    /// The dataset's PVC.
    PersistentVolumeClaim(Box<PersistentVolumeClaim>),
}

impl Object {
    /// Which object this is.
    pub fn object_ref(&self) -> ObjectRef {
        let (kind, meta) = match self {
            Object::StatefulSet(o) => (Kind::StatefulSet, &o.metadata),
            Object::DaemonSet(o) => (Kind::DaemonSet, &o.metadata),
            Object::PersistentVolume(o) => (Kind::PersistentVolume, &o.metadata),
            Object::PersistentVolumeClaim(o) => (Kind::PersistentVolumeClaim, &o.metadata),
        };
        ObjectRef {
            kind,
            namespace: meta.namespace.as_deref().unwrap_or_default().into(),
            name: meta.name.as_deref().unwrap_or_default().into(),
        }
    }
}

/// A status to write through the status subresource (merge patch of the whole status).
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// A dataset's status.
    Dataset(Box<DatasetStatus>),
    /// A runtime's status.
    Runtime(Box<RuntimeStatus>),
}

/// Event severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventType {
    /// Something a person may want to know.
    Normal,
    /// Something a person must act on.
    Warning,
}

impl EventType {
    /// The spelling of the Kubernetes Event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One thing the model wants done. The order within a [`Decision`] is the order to do them in.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Create or update this object by server-side apply (field manager `ferrofluid`).
    Apply(Object),
    /// Replace the status of `target` (status subresource).
    PatchStatus {
        /// The dataset or runtime.
        target: ObjectRef,
        /// Its whole new status.
        status: Status,
        /// The resourceVersion the status was computed from: a stale write gets 409, not a lost
        /// update (the dataset and runtime reconcilers both write dataset status).
        resource_version: Option<String>,
    },
    /// Merge-patch labels of `target`: `Some(value)` sets a key, `None` removes it. Only the keys
    /// listed are touched, so labels other controllers own survive.
    PatchLabels {
        /// Usually a Node; also datasets and runtimes (`fluid.io/dataset-id`).
        target: ObjectRef,
        /// Keys to set or remove.
        labels: BTreeMap<String, Option<String>>,
        /// The resourceVersion this write was decided on (`crate::write`): set for datasets and
        /// runtimes, whose status is written from the same view; `None` for nodes, which
        /// kubelets write all the time and whose keys here are ours alone.
        resource_version: Option<String>,
    },
    /// Append an ownerReference to `target`, unless one with the same UID is there.
    AddOwnerReference {
        /// The object to own.
        target: ObjectRef,
        /// The owner.
        owner: OwnerReference,
        /// The resourceVersion this write was decided on (`crate::write`): a write to an object
        /// that changed since gets 409, never a lost update. `None` writes unguarded.
        resource_version: Option<String>,
    },
    /// Add `finalizer` to `target`.
    AddFinalizer {
        /// The object.
        target: ObjectRef,
        /// The finalizer.
        finalizer: String,
        /// The resourceVersion this write was decided on (`crate::write`): a write to an object
        /// that changed since gets 409, never a lost update. `None` writes unguarded.
        resource_version: Option<String>,
    },
    /// Remove `finalizer` from `target`.
    RemoveFinalizer {
        /// The object.
        target: ObjectRef,
        /// The finalizer.
        finalizer: String,
        /// The resourceVersion this write was decided on (`crate::write`): a write to an object
        /// that changed since gets 409, never a lost update. `None` writes unguarded.
        resource_version: Option<String>,
    },
    /// Delete `target` (foreground propagation is not needed: owners are set on what we create).
    Delete(ObjectRef),
    /// Record a Kubernetes Event about `regarding`.
    Event {
        /// The object the event is about.
        regarding: ObjectRef,
        /// Normal or Warning.
        type_: EventType,
        /// A one-word CamelCase reason.
        reason: String,
        /// A sentence a person can act on.
        message: String,
    },
}

impl Effect {
    /// A Warning event about `regarding`.
    pub fn warning(regarding: ObjectRef, reason: &str, message: String) -> Self {
        Effect::Event { regarding, type_: EventType::Warning, reason: reason.to_string(), message }
    }

    /// The object this effect touches.
    pub fn target(&self) -> ObjectRef {
        match self {
            Effect::Apply(object) => object.object_ref(),
            Effect::PatchStatus { target, .. }
            | Effect::PatchLabels { target, .. }
            | Effect::AddOwnerReference { target, .. }
            | Effect::AddFinalizer { target, .. }
            | Effect::RemoveFinalizer { target, .. }
            | Effect::Delete(target)
            | Effect::Event { regarding: target, .. } => target.clone(),
        }
    }

    /// The resourceVersion a write was decided on, its precondition (`crate::write`).
    pub fn precondition(&self) -> Option<&str> {
        match self {
            Effect::PatchStatus { resource_version, .. }
            | Effect::PatchLabels { resource_version, .. }
            | Effect::AddOwnerReference { resource_version, .. }
            | Effect::AddFinalizer { resource_version, .. }
            | Effect::RemoveFinalizer { resource_version, .. } => resource_version.as_deref(),
            Effect::Apply(_) | Effect::Delete(_) | Effect::Event { .. } => None,
        }
    }

    /// A short verb for traces and metrics: `apply`, `status`, `labels`, ….
    pub fn verb(&self) -> &'static str {
        match self {
            Effect::Apply(_) => "apply",
            Effect::PatchStatus { .. } => "status",
            Effect::PatchLabels { .. } => "labels",
            Effect::AddOwnerReference { .. } => "owner",
            Effect::AddFinalizer { .. } => "add-finalizer",
            Effect::RemoveFinalizer { .. } => "remove-finalizer",
            Effect::Delete(_) => "delete",
            Effect::Event { .. } => "event",
        }
    }

    /// True for effects that change the cluster's state (everything but events).
    pub fn is_write(&self) -> bool {
        !matches!(self, Effect::Event { .. })
    }
}

/// Moves each status patch before the first other write to its object, keeping every other
/// effect in order.
fn status_patches_first(effects: &mut Vec<Effect>) {
    let mut index = 0;
    while index < effects.len() {
        if let Effect::PatchStatus { target, .. } = &effects[index] {
            let first_write = effects[..index].iter().position(|e| e.is_write() && e.target() == *target);
            if let Some(position) = first_write {
                let patch = effects.remove(index);
                effects.insert(position, patch);
            }
        }
        index += 1;
    }
}

/// When to reconcile again, whether or not anything changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Requeue {
    /// Only when a watched object changes.
    AwaitChange,
    /// After this many milliseconds.
    AfterMs(u64),
}

/// The result of one reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do, in order.
    pub effects: Vec<Effect>,
    /// When to look again.
    pub requeue: Requeue,
}

impl Decision {
    /// A decision whose status patches come before any other write to the same object: a status
    /// patch carries the resourceVersion it was computed from, and an earlier finalizer or label
    /// write in the same decision would make it stale, a conflict with ourselves.
    pub fn new(mut effects: Vec<Effect>, requeue: Requeue) -> Self {
        status_patches_first(&mut effects);
        Self { effects, requeue }
    }

    /// A decision with no effects.
    pub fn idle(requeue: Requeue) -> Self {
        Self { effects: Vec::new(), requeue }
    }

    /// The effects that write state; a reconcile at the fixpoint yields none.
    pub fn writes(&self) -> impl Iterator<Item = &Effect> {
        self.effects.iter().filter(|effect| effect.is_write())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> Effect {
        let regarding = ObjectRef::namespaced(Kind::Dataset, "ns", name);
        Effect::Event { regarding, type_: EventType::Normal, reason: "R".into(), message: "m".into() }
    }

    #[test]
    fn status_patches_move_before_other_writes_to_the_same_object_only() {
        let dataset = ObjectRef::namespaced(Kind::Dataset, "ns", "a");
        let other = ObjectRef::namespaced(Kind::Dataset, "ns", "b");
        let finalizer = |target: &ObjectRef| Effect::AddFinalizer {
            target: target.clone(),
            finalizer: "f".into(),
            resource_version: Some("1".into()),
        };
        let status = |target: &ObjectRef| Effect::PatchStatus {
            target: target.clone(),
            status: Status::Dataset(Box::default()),
            resource_version: Some("1".into()),
        };
        let decision = Decision::new(
            vec![event("a"), finalizer(&other), finalizer(&dataset), status(&other), status(&dataset)],
            Requeue::AwaitChange,
        );
        let order: Vec<String> = decision.effects.iter().map(|e| format!("{} {}", e.verb(), e.target().name)).collect();
        assert_eq!(order, ["event a", "status b", "add-finalizer b", "status a", "add-finalizer a"]);
    }
}
