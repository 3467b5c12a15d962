//! The stored pod: Kubernetes' `Pod` with its spec behind an `Arc`, shared between versions.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::observed::{PodPhase, PodView};

/// A pod as the simulated apiserver stores it. Most pod writes are status writes (scheduler
/// conditions, kubelet phases), and every write keeps the old version alive for the watch
/// fan-out and the lagging controller cache; sharing the spec means such a write copies the
/// metadata and status, not the spec (for a FUSE pod, most of the object). Field names are
/// Kubernetes', so code reads `pod.spec`, `pod.status` as it would on a `Pod`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pod {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// The spec, shared until written ([`Pod::spec_mut`]).
    pub spec: Option<Arc<PodSpec>>,
    /// The status.
    pub status: Option<PodStatus>,
}

impl From<k8s_openapi::api::core::v1::Pod> for Pod {
    fn from(pod: k8s_openapi::api::core::v1::Pod) -> Self {
        Self { metadata: pod.metadata, spec: pod.spec.map(Arc::new), status: pod.status }
    }
}

impl Pod {
    /// The Kubernetes pod (a copy: for JSON output, not for hot paths).
    pub fn to_kube(&self) -> k8s_openapi::api::core::v1::Pod {
        k8s_openapi::api::core::v1::Pod {
            metadata: self.metadata.clone(),
            spec: self.spec.as_deref().cloned(),
            status: self.status.clone(),
        }
    }

    /// The spec, copied on write (created empty when absent).
    pub fn spec_mut(&mut self) -> &mut PodSpec {
        Arc::make_mut(self.spec.get_or_insert_with(Default::default))
    }

    /// True when both versions have the same spec; versions that share it compare in O(1).
    pub fn same_spec(&self, other: &Pod) -> bool {
        match (&self.spec, &other.spec) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            (None, None) => true,
            _ => false,
        }
    }

    /// True once the pod succeeded or failed (`model::observed::PodPhase::is_completed`): it
    /// runs nothing, holds no resources and uses no volume any more.
    pub fn is_completed(&self) -> bool {
        PodPhase::parse(self.status.as_ref().and_then(|s| s.phase.as_deref())).is_completed()
    }

    /// What the model reads of this pod.
    pub fn view(&self) -> PodView {
        PodView::from_parts(&self.metadata, self.spec.as_deref(), self.status.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_write_shares_the_spec_and_a_spec_write_does_not() {
        let spec = PodSpec { node_name: Some("node-1".into()), ..Default::default() };
        let first = Arc::new(Pod::from(k8s_openapi::api::core::v1::Pod { spec: Some(spec), ..Default::default() }));
        let mut status_write = first.clone();
        Arc::make_mut(&mut status_write).status =
            Some(PodStatus { phase: Some("Running".into()), ..Default::default() });
        assert!(Arc::ptr_eq(first.spec.as_ref().unwrap(), status_write.spec.as_ref().unwrap()));
        assert_eq!(first.status, None, "the old version keeps its status");
        assert!(first.same_spec(&status_write));
        let mut spec_write = status_write.clone();
        Arc::make_mut(&mut spec_write).spec_mut().node_name = Some("node-2".into());
        assert_eq!(status_write.spec.as_ref().unwrap().node_name.as_deref(), Some("node-1"));
        assert_eq!(spec_write.view().node_name.as_deref(), Some("node-2"));
        assert!(!spec_write.same_spec(&status_write));
        assert_eq!(spec_write.to_kube().spec.unwrap().node_name.as_deref(), Some("node-2"));
    }
}
