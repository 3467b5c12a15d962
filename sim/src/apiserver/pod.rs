//! The stored pod: Kubernetes' `Pod` with its metadata and spec behind `Arc`s, shared between versions.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Affinity, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::observed::{PodPhase, PodView};

/// A pod as the simulated apiserver stores it. Most pod writes are status writes (scheduler
/// conditions, kubelet phases), and every write keeps the old version alive for the watch
/// fan-out and the lagging controller cache, so the parts a write rarely changes are shared
/// between versions: the metadata and the spec sit behind `Arc`s. What changes on every write
/// or differs between otherwise equal pods is kept beside them: `metadata.resourceVersion`
/// ([`Pod::resource_version`]), `spec.nodeName` ([`Pod::node_name`], set by a binding) and
/// `spec.affinity` ([`Pod::affinity`], the node a DaemonSet pins each of its pods to, so that
/// its pods share one spec). The shared metadata and spec never hold those three. Field names
/// are Kubernetes', so code reads `pod.spec`, `pod.status` as it would on a `Pod`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pod {
    /// Standard object metadata but for `resourceVersion`, shared until written
    /// ([`Pod::metadata_mut`]).
    pub metadata: Arc<ObjectMeta>,
    resource_version: Option<String>,
    /// The spec but for `nodeName` and `affinity`, shared until written ([`Pod::spec_mut`]).
    pub spec: Option<Arc<PodSpec>>,
    node_name: Option<String>,
    affinity: Option<Arc<Affinity>>,
    /// The status.
    pub status: Option<PodStatus>,
}

impl From<k8s_openapi::api::core::v1::Pod> for Pod {
    fn from(pod: k8s_openapi::api::core::v1::Pod) -> Self {
        let (mut metadata, mut spec) = (pod.metadata, pod.spec);
        let node_name = spec.as_mut().and_then(|s| s.node_name.take());
        let affinity = spec.as_mut().and_then(|s| s.affinity.take()).map(Arc::new);
        let resource_version = metadata.resource_version.take();
        Self {
            metadata: Arc::new(metadata),
            resource_version,
            spec: spec.map(Arc::new),
            node_name,
            affinity,
            status: pod.status,
        }
    }
}

impl Pod {
    /// The Kubernetes pod (a copy: for JSON output, not for hot paths).
    pub fn to_kube(&self) -> k8s_openapi::api::core::v1::Pod {
        k8s_openapi::api::core::v1::Pod {
            metadata: ObjectMeta {
                resource_version: self.resource_version.clone(),
                ..ObjectMeta::clone(&self.metadata)
            },
            spec: match (self.spec.as_deref(), &self.node_name, &self.affinity) {
                (None, None, None) => None,
                (spec, node_name, affinity) => Some(PodSpec {
                    node_name: node_name.clone(),
                    affinity: affinity.as_deref().cloned(),
                    ..spec.cloned().unwrap_or_default()
                }),
            },
            status: self.status.clone(),
        }
    }

    /// The spec, copied on write (created empty when absent). Not for `nodeName` or
    /// `affinity`: see [`Pod::bind`] and [`Pod::affinity_mut`].
    pub fn spec_mut(&mut self) -> &mut PodSpec {
        Arc::make_mut(self.spec.get_or_insert_with(Default::default))
    }

    /// Shares `spec` (whose `nodeName` and `affinity` must be unset) as this pod's spec.
    pub fn share_spec(&mut self, spec: Arc<PodSpec>) {
        debug_assert!(spec.node_name.is_none() && spec.affinity.is_none(), "kept beside the shared spec");
        self.spec = Some(spec);
    }

    /// `spec.affinity`.
    pub fn affinity(&self) -> Option<&Affinity> {
        self.affinity.as_deref()
    }

    /// `spec.affinity`, copied on write (created empty when absent).
    pub fn affinity_mut(&mut self) -> &mut Affinity {
        Arc::make_mut(self.affinity.get_or_insert_with(Default::default))
    }

    /// The metadata, copied on write. Not for `resourceVersion`: see
    /// [`Pod::set_resource_version`].
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        Arc::make_mut(&mut self.metadata)
    }

    /// `metadata.resourceVersion`.
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// Sets `metadata.resourceVersion` without copying the rest of the metadata.
    pub fn set_resource_version(&mut self, resource_version: String) {
        self.resource_version = Some(resource_version);
    }

    /// The node the pod is bound to (`spec.nodeName`).
    pub fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }

    /// Binds the pod to `node` (sets `spec.nodeName`) without copying the rest of the spec.
    pub fn bind(&mut self, node: &str) {
        self.node_name = Some(node.to_string());
    }

    /// True when both versions hold the very same metadata: a status write or a binding made
    /// one from the other, so nothing in the metadata (labels, owners, deletion) changed.
    pub fn shares_metadata(&self, other: &Pod) -> bool {
        Arc::ptr_eq(&self.metadata, &other.metadata)
    }

    /// True when both versions hold the very same shared spec (its volumes, hence its claims,
    /// are the same; `nodeName` and `affinity` are kept beside it and may differ).
    pub fn shares_spec(&self, other: &Pod) -> bool {
        self.spec.as_ref().zip(other.spec.as_ref()).is_some_and(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// True when both versions have the same spec; versions that share it compare in O(1).
    pub fn same_spec(&self, other: &Pod) -> bool {
        self.node_name == other.node_name
            && same_shared(&self.affinity, &other.affinity)
            && same_shared(&self.spec, &other.spec)
    }

    /// True once the pod succeeded or failed (`model::observed::PodPhase::is_completed`): it
    /// runs nothing, holds no resources and uses no volume any more.
    pub fn is_completed(&self) -> bool {
        self.phase().is_completed()
    }

    /// Its phase (`model::observed::PodPhase::of`).
    pub fn phase(&self) -> PodPhase {
        PodPhase::of(self.status.as_ref())
    }

    /// True when its `Ready` condition is `True` (`model::observed::is_ready`).
    pub fn is_ready(&self) -> bool {
        model::observed::is_ready(self.status.as_ref())
    }

    /// True once it has a deletionTimestamp.
    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Running, ready and not terminating: what workload controllers count as available.
    pub fn is_available(&self) -> bool {
        self.phase() == PodPhase::Running && self.is_ready() && !self.is_deleting()
    }

    /// What the model reads of this pod.
    pub fn view(&self) -> PodView {
        PodView::from_parts(&self.metadata, self.node_name(), self.status.as_ref())
    }

    /// Brings `view`, that of an earlier version of this pod, up to date in place.
    pub fn refresh_view(&self, view: &mut PodView) {
        view.refresh(&self.metadata, self.node_name(), self.status.as_ref());
    }
}

/// Equal parts shared between versions: the same `Arc` compares in O(1).
fn same_shared<T: PartialEq>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        (a, b) => a.is_none() && b.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_write_shares_the_spec_and_a_spec_write_does_not() {
        let spec = PodSpec { node_name: Some("node-1".into()), ..Default::default() };
        let first = Arc::new(Pod::from(k8s_openapi::api::core::v1::Pod { spec: Some(spec), ..Default::default() }));
        assert_eq!(first.node_name(), Some("node-1"));
        assert_eq!(first.spec.as_ref().unwrap().node_name, None, "kept beside the shared spec");
        let mut status_write = first.clone();
        let writing = Arc::make_mut(&mut status_write);
        writing.status = Some(PodStatus { phase: Some("Running".into()), ..Default::default() });
        writing.set_resource_version("8".into());
        assert!(Arc::ptr_eq(first.spec.as_ref().unwrap(), status_write.spec.as_ref().unwrap()));
        assert!(Arc::ptr_eq(&first.metadata, &status_write.metadata), "a new resourceVersion copies no metadata");
        assert_eq!(status_write.to_kube().metadata.resource_version.as_deref(), Some("8"));
        assert_eq!(first.resource_version(), None);
        assert_eq!(first.status, None, "the old version keeps its status");
        assert!(first.same_spec(&status_write));
        let mut binding = status_write.clone();
        Arc::make_mut(&mut binding).bind("node-2");
        assert!(Arc::ptr_eq(first.spec.as_ref().unwrap(), binding.spec.as_ref().unwrap()), "a binding shares it too");
        assert_eq!(status_write.node_name(), Some("node-1"));
        assert_eq!(binding.view().node_name.as_deref(), Some("node-2"));
        assert!(!binding.same_spec(&status_write));
        assert_eq!(binding.to_kube().spec.unwrap().node_name.as_deref(), Some("node-2"));
        let mut spec_write = binding.clone();
        Arc::make_mut(&mut spec_write).spec_mut().priority = Some(7);
        Arc::make_mut(&mut spec_write).metadata_mut().labels = Some([("a".to_string(), "b".to_string())].into());
        assert!(binding.metadata.labels.is_none(), "a metadata write copies it");
        assert!(!spec_write.same_spec(&binding));
        assert!(binding.shares_metadata(&first) && binding.shares_spec(&first), "a binding shares both");
        assert!(!spec_write.shares_spec(&binding) && !spec_write.shares_metadata(&binding));
        assert!(!Pod::default().shares_spec(&Pod::default()), "no spec is not a shared one");
        assert_eq!(spec_write.to_kube().spec.unwrap().node_name.as_deref(), Some("node-2"));
        // A pod with neither spec nor node has no spec in its manifest.
        assert_eq!(Pod::default().to_kube().spec, None);
    }
}
