//! Typed objects as the apiserver stores them: one enum of Kubernetes and Fluid types behind `Arc`.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::api::{Dataset, JuiceFSRuntime};
use model::effect::{Kind, ObjectRef};

use super::pod::Pod;

/// One stored object. Cloning is cheap (an `Arc`); writers copy on write with [`Obj::meta_mut`]
/// and the typed `*_mut` accessors, so a reconcile never re-decodes JSON.
#[derive(Debug, Clone)]
pub enum Obj {
    /// `data.fluid.io/v1alpha1` Dataset.
    Dataset(Arc<Dataset>),
    /// `data.fluid.io/v1alpha1` JuiceFSRuntime.
    Runtime(Arc<JuiceFSRuntime>),
    /// `apps/v1` StatefulSet.
    StatefulSet(Arc<StatefulSet>),
    /// `apps/v1` DaemonSet.
    DaemonSet(Arc<DaemonSet>),
    /// `v1` PersistentVolume.
    PersistentVolume(Arc<PersistentVolume>),
    /// `v1` PersistentVolumeClaim.
    PersistentVolumeClaim(Arc<PersistentVolumeClaim>),
    /// `v1` Node.
    Node(Arc<Node>),
    /// `v1` Pod (its spec shared between versions, see [`Pod`]).
    Pod(Arc<Pod>),
}

/// Every kind a manifest may have, with its apiVersion, for error messages.
pub const KINDS: &[(&str, &str)] = &[
    ("data.fluid.io/v1alpha1", "Dataset"),
    ("data.fluid.io/v1alpha1", "JuiceFSRuntime"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("v1", "PersistentVolume"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Node"),
    ("v1", "Pod"),
];

/// Parses a kind name as written in manifests and scenario references.
pub fn parse_kind(text: &str) -> Option<Kind> {
    Some(match text {
        "Dataset" => Kind::Dataset,
        "JuiceFSRuntime" => Kind::JuiceFSRuntime,
        "StatefulSet" => Kind::StatefulSet,
        "DaemonSet" => Kind::DaemonSet,
        "PersistentVolume" => Kind::PersistentVolume,
        "PersistentVolumeClaim" => Kind::PersistentVolumeClaim,
        "Node" => Kind::Node,
        "Pod" => Kind::Pod,
        _ => return None,
    })
}

/// The allowed kind names, comma-separated, for error messages.
pub fn kind_names() -> String {
    KINDS.iter().map(|(_, kind)| *kind).collect::<Vec<_>>().join(", ")
}

macro_rules! each {
    ($obj:expr, $o:ident => $body:expr) => {
        match $obj {
            Obj::Dataset($o) => $body,
            Obj::Runtime($o) => $body,
            Obj::StatefulSet($o) => $body,
            Obj::DaemonSet($o) => $body,
            Obj::PersistentVolume($o) => $body,
            Obj::PersistentVolumeClaim($o) => $body,
            Obj::Node($o) => $body,
            Obj::Pod($o) => $body,
        }
    };
}

impl Obj {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            Obj::Dataset(_) => Kind::Dataset,
            Obj::Runtime(_) => Kind::JuiceFSRuntime,
            Obj::StatefulSet(_) => Kind::StatefulSet,
            Obj::DaemonSet(_) => Kind::DaemonSet,
            Obj::PersistentVolume(_) => Kind::PersistentVolume,
            Obj::PersistentVolumeClaim(_) => Kind::PersistentVolumeClaim,
            Obj::Node(_) => Kind::Node,
            Obj::Pod(_) => Kind::Pod,
        }
    }

    /// The metadata.
    pub fn meta(&self) -> &ObjectMeta {
        each!(self, o => &o.metadata)
    }

    /// The metadata, copied on write. Not for `resourceVersion`: see
    /// [`Obj::set_resource_version`].
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Obj::Pod(o) => Arc::make_mut(o).metadata_mut(),
            Obj::Dataset(o) => &mut Arc::make_mut(o).metadata,
            Obj::Runtime(o) => &mut Arc::make_mut(o).metadata,
            Obj::StatefulSet(o) => &mut Arc::make_mut(o).metadata,
            Obj::DaemonSet(o) => &mut Arc::make_mut(o).metadata,
            Obj::PersistentVolume(o) => &mut Arc::make_mut(o).metadata,
            Obj::PersistentVolumeClaim(o) => &mut Arc::make_mut(o).metadata,
            Obj::Node(o) => &mut Arc::make_mut(o).metadata,
        }
    }

    /// `metadata.resourceVersion` (a pod keeps it beside its shared metadata).
    pub fn resource_version(&self) -> Option<&str> {
        match self {
            Obj::Pod(pod) => pod.resource_version(),
            other => other.meta().resource_version.as_deref(),
        }
    }

    /// Sets `metadata.resourceVersion`.
    pub fn set_resource_version(&mut self, resource_version: String) {
        match self {
            Obj::Pod(pod) => Arc::make_mut(pod).set_resource_version(resource_version),
            other => other.meta_mut().resource_version = Some(resource_version),
        }
    }

    /// Which object this is (the namespace is dropped for cluster-scoped kinds).
    pub fn object_ref(&self) -> ObjectRef {
        let kind = self.kind();
        let meta = self.meta();
        let namespace = if kind.is_cluster_scoped() { "" } else { meta.namespace.as_deref().unwrap_or_default() };
        ObjectRef { kind, namespace: namespace.into(), name: meta.name.as_deref().unwrap_or_default().into() }
    }

    /// The object as JSON, with `apiVersion` and `kind`, for expectations and summaries.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = self.serialized();
        if let Some(map) = value.as_object_mut() {
            let kind = self.kind().as_str();
            let api_version = KINDS.iter().find(|(_, k)| *k == kind).map(|(v, _)| *v).unwrap_or("v1");
            map.insert("apiVersion".to_string(), serde_json::Value::from(api_version));
            map.insert("kind".to_string(), serde_json::Value::from(kind));
        }
        value
    }

    /// The object as its type serializes it.
    fn serialized(&self) -> serde_json::Value {
        let value = match self {
            Obj::Dataset(o) => serde_json::to_value(o.as_ref()),
            Obj::Runtime(o) => serde_json::to_value(o.as_ref()),
            Obj::StatefulSet(o) => serde_json::to_value(o.as_ref()),
            Obj::DaemonSet(o) => serde_json::to_value(o.as_ref()),
            Obj::PersistentVolume(o) => serde_json::to_value(o.as_ref()),
            Obj::PersistentVolumeClaim(o) => serde_json::to_value(o.as_ref()),
            Obj::Node(o) => serde_json::to_value(o.as_ref()),
            Obj::Pod(pod) => serde_json::to_value(pod.to_kube()),
        };
        value.unwrap_or(serde_json::Value::Null)
    }

    /// Decodes a manifest by its `kind` (and checks its `apiVersion`).
    pub fn from_manifest(value: serde_json::Value) -> Result<Obj, String> {
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .map(str::to_string)
            .ok_or_else(|| format!("the manifest has no `kind`; allowed kinds: {}", kind_names()))?;
        let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("").to_string();
        let kind = kind.as_str();
        let Some((expected_version, _)) = KINDS.iter().find(|(_, k)| *k == kind) else {
            return Err(format!("unknown kind `{kind}`; allowed kinds: {}", kind_names()));
        };
        if api_version != *expected_version {
            return Err(format!("{kind}: apiVersion `{api_version}` is not served; use `{expected_version}`"));
        }
        // The error names the field it is about (`spec.containers: invalid type: …`).
        fn decode<T: serde::de::DeserializeOwned>(kind: &str, value: serde_json::Value) -> Result<Arc<T>, String> {
            serde_path_to_error::deserialize(value).map(Arc::new).map_err(|error| format!("{kind}: {error}"))
        }
        let obj = match kind {
            "Dataset" => Obj::Dataset(decode(kind, value)?),
            "JuiceFSRuntime" => Obj::Runtime(decode(kind, value)?),
            "StatefulSet" => Obj::StatefulSet(decode(kind, value)?),
            "DaemonSet" => Obj::DaemonSet(decode(kind, value)?),
            "PersistentVolume" => Obj::PersistentVolume(decode(kind, value)?),
            "PersistentVolumeClaim" => Obj::PersistentVolumeClaim(decode(kind, value)?),
            "Node" => Obj::Node(decode(kind, value)?),
            _ => {
                let pod: Arc<k8s_openapi::api::core::v1::Pod> = decode(kind, value)?;
                Obj::Pod(Arc::new(Arc::unwrap_or_clone(pod).into()))
            }
        };
        if obj.meta().name.as_deref().unwrap_or("").is_empty() {
            return Err(format!("{kind}: metadata.name is required"));
        }
        let mut obj = obj;
        if !obj.kind().is_cluster_scoped() && obj.meta().namespace.as_deref().unwrap_or("").is_empty() {
            obj.meta_mut().namespace = Some("default".to_string());
        }
        Ok(obj)
    }

    /// True when both versions have the same spec (a pod's shared spec compares in O(1)).
    pub fn same_spec(&self, other: &Obj) -> bool {
        match (self, other) {
            (Obj::Dataset(a), Obj::Dataset(b)) => a.spec == b.spec,
            (Obj::Runtime(a), Obj::Runtime(b)) => a.spec == b.spec,
            (Obj::StatefulSet(a), Obj::StatefulSet(b)) => a.spec == b.spec,
            (Obj::DaemonSet(a), Obj::DaemonSet(b)) => a.spec == b.spec,
            (Obj::PersistentVolume(a), Obj::PersistentVolume(b)) => a.spec == b.spec,
            (Obj::PersistentVolumeClaim(a), Obj::PersistentVolumeClaim(b)) => a.spec == b.spec,
            (Obj::Node(a), Obj::Node(b)) => a.spec == b.spec,
            (Obj::Pod(a), Obj::Pod(b)) => a.same_spec(b),
            _ => false,
        }
    }

    /// The pod, if this is one.
    pub fn as_pod(&self) -> Option<&Arc<Pod>> {
        if let Obj::Pod(pod) = self { Some(pod) } else { None }
    }

    /// The node, if this is one.
    pub fn as_node(&self) -> Option<&Arc<Node>> {
        if let Obj::Node(node) = self { Some(node) } else { None }
    }

    /// True when metadata.deletionTimestamp is set.
    pub fn is_deleting(&self) -> bool {
        self.meta().deletion_timestamp.is_some()
    }

    /// The finalizers.
    pub fn finalizers(&self) -> &[String] {
        self.meta().finalizers.as_deref().unwrap_or(&[])
    }
}

macro_rules! typed_accessors {
    ($($variant:ident, $ty:ty, $get:ident, $get_mut:ident;)*) => {
        impl Obj {
            $(
                /// The typed object, if it is of this kind.
                pub fn $get(&self) -> Option<&Arc<$ty>> {
                    if let Obj::$variant(o) = self { Some(o) } else { None }
                }
                /// The typed object, copied on write, if it is of this kind.
                pub fn $get_mut(&mut self) -> Option<&mut $ty> {
                    if let Obj::$variant(o) = self { Some(Arc::make_mut(o)) } else { None }
                }
            )*
        }
    };
}

typed_accessors! {
    Dataset, Dataset, as_dataset, dataset_mut;
    Runtime, JuiceFSRuntime, as_runtime, runtime_mut;
    StatefulSet, StatefulSet, as_statefulset, statefulset_mut;
    DaemonSet, DaemonSet, as_daemonset, daemonset_mut;
    PersistentVolume, PersistentVolume, as_pv, pv_mut;
    PersistentVolumeClaim, PersistentVolumeClaim, as_pvc, pvc_mut;
    Node, Node, as_node_obj, node_mut;
    Pod, Pod, as_pod_obj, pod_mut;
}

/// Short text for an object reference in traces: `Kind/ns/name` or `Kind/name`.
pub fn describe(object: &ObjectRef) -> String {
    object.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"}, "spec": spec})
    }

    #[test]
    fn a_pod_manifest_round_trips_with_its_spec_shared_and_defaulted_namespace() {
        let spec = serde_json::json!({"containers": [{"name": "app", "image": "nginx"}], "nodeName": "node-1"});
        let mut manifest = pod(spec.clone());
        manifest["metadata"]["resourceVersion"] = "42".into();
        let obj = Obj::from_manifest(manifest).expect("a pod");
        assert_eq!(obj.resource_version(), Some("42"));
        assert_eq!(obj.to_json()["metadata"]["resourceVersion"], "42");
        assert_eq!(obj.object_ref(), ObjectRef::namespaced(Kind::Pod, "default", "app"));
        let json = obj.to_json();
        assert_eq!((json["apiVersion"].as_str(), json["kind"].as_str()), (Some("v1"), Some("Pod")));
        assert_eq!(json["spec"], spec);
    }

    #[test]
    fn a_bad_manifest_is_refused_naming_what_is_wrong() {
        let refusal = |value| Obj::from_manifest(value).expect_err("refused");
        let wrong_type = refusal(pod(serde_json::json!({"containers": "nginx"})));
        assert!(wrong_type.starts_with("Pod: spec.containers: invalid type"), "{wrong_type}");
        let nameless = refusal(serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}}));
        assert_eq!(nameless, "Pod: metadata.name is required");
        let version = refusal(serde_json::json!({"apiVersion": "apps/v1", "kind": "Pod", "metadata": {"name": "a"}}));
        assert_eq!(version, "Pod: apiVersion `apps/v1` is not served; use `v1`");
        let unknown = refusal(serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}));
        assert!(unknown.starts_with("unknown kind `Service`; allowed kinds: Dataset,"), "{unknown}");
    }
}
