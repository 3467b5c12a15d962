//! The simulated controller's cache (the apiserver's store, or its lagging copy) as the model's
//! `ClusterView`: the simulator observes through `model::observe::observe`, as the controller does.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use model::api::{Dataset, JuiceFSRuntime};
use model::effect::Kind;
use model::observe::{ClusterView, KeepPod};
use model::observed::{CacheSample, PodView};

use crate::apiserver::Store;

/// A store to observe, with the cache samples the simulated workers report.
pub struct StoreView<'a> {
    /// The store.
    pub store: &'a Store,
    /// The samples of worker pods (what the controller's scraper would have).
    pub samples: &'a dyn Fn(&[PodView]) -> Vec<CacheSample>,
}

impl StoreView<'_> {
    fn named(&self, kind: Kind, namespace: &str, name: &str) -> Option<&crate::apiserver::Obj> {
        self.store.get_named(kind, namespace, name)
    }
}

impl ClusterView for StoreView<'_> {
    fn dataset(&self, namespace: &str, name: &str) -> Option<Arc<Dataset>> {
        self.named(Kind::Dataset, namespace, name)?.as_dataset().cloned()
    }

    fn runtime(&self, namespace: &str, name: &str) -> Option<Arc<JuiceFSRuntime>> {
        self.named(Kind::JuiceFSRuntime, namespace, name)?.as_runtime().cloned()
    }

    fn stateful_set(&self, namespace: &str, name: &str) -> Option<Arc<StatefulSet>> {
        self.named(Kind::StatefulSet, namespace, name)?.as_statefulset().cloned()
    }

    fn daemon_set(&self, namespace: &str, name: &str) -> Option<Arc<DaemonSet>> {
        self.named(Kind::DaemonSet, namespace, name)?.as_daemonset().cloned()
    }

    fn persistent_volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.named(Kind::PersistentVolume, "", name)?.as_pv().cloned()
    }

    fn persistent_volume_claim(&self, namespace: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.named(Kind::PersistentVolumeClaim, namespace, name)?.as_pvc().cloned()
    }

    fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.named(Kind::Node, "", name)?.as_node().cloned()
    }

    /// The simulator deletes no namespaces.
    fn namespace_terminating(&self, _namespace: &str) -> bool {
        false
    }

    fn pods_released_as(&self, namespace: &str, release: &str, keep: &KeepPod<'_>) -> Vec<PodView> {
        let pods = self.store.pods_released_as(namespace, release).filter_map(|key| self.store.get(key)?.as_pod());
        pods.filter(|pod| keep(pod.metadata.labels.as_ref())).map(|pod| pod.view()).collect()
    }

    fn claim_users(&self, namespace: &str, claim: &str) -> Vec<PodView> {
        self.store.claim_users(namespace, claim).map(|(_, view)| view.clone()).collect()
    }

    fn nodes_with_label_key(&self, key: &str, each: &mut dyn FnMut(&str)) {
        for node in self.store.nodes_with_label_key(key) {
            each(node);
        }
    }

    fn cache_samples(&self, worker_pods: &[PodView]) -> Vec<CacheSample> {
        (self.samples)(worker_pods)
    }
}
