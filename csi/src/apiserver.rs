//! Node label patching: the [`NodeLabeler`] trait, a kube implementation and an in-memory one.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};

use crate::error::{CsiError, Result};

/// Sets and removes one label on a node, touching no other label.
pub trait NodeLabeler: Send + Sync + 'static {
    /// Sets `key=value` on node `node`. Idempotent.
    fn set_label(&self, node: &str, key: &str, value: &str) -> impl Future<Output = Result<()>> + Send;
    /// Removes `key` from node `node`. Idempotent: a missing key is success.
    fn remove_label(&self, node: &str, key: &str) -> impl Future<Output = Result<()>> + Send;
}

/// Patches the Node object through the API server with a JSON merge patch that names only
/// our key (`null` deletes it), so concurrent writers of other labels are never overwritten.
#[derive(Clone)]
pub struct KubeLabeler {
    nodes: Api<Node>,
}

impl KubeLabeler {
    /// A labeler using `client` (in-cluster config in production).
    pub fn new(client: kube::Client) -> Self {
        Self { nodes: Api::all(client) }
    }

    async fn patch(&self, node: &str, key: &str, value: Option<&str>) -> Result<()> {
        let patch = serde_json::json!({ "metadata": { "labels": { key: value } } });
        self.nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|source| CsiError::Kube { node: node.to_string(), source: Box::new(source) })
    }
}

impl NodeLabeler for KubeLabeler {
    async fn set_label(&self, node: &str, key: &str, value: &str) -> Result<()> {
        self.patch(node, key, Some(value)).await
    }

    async fn remove_label(&self, node: &str, key: &str) -> Result<()> {
        self.patch(node, key, None).await
    }
}

/// Labels kept in memory, for tests: node name → key → value.
#[derive(Debug, Default, Clone)]
pub struct MemoryLabeler {
    nodes: Arc<Mutex<BTreeMap<String, BTreeMap<String, String>>>>,
}

impl MemoryLabeler {
    /// The labels of `node` now.
    pub fn labels(&self, node: &str) -> BTreeMap<String, String> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner).get(node).cloned().unwrap_or_default()
    }
}

impl NodeLabeler for MemoryLabeler {
    async fn set_label(&self, node: &str, key: &str, value: &str) -> Result<()> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.entry(node.to_string()).or_default().insert(key.to_string(), value.to_string());
        Ok(())
    }

    async fn remove_label(&self, node: &str, key: &str) -> Result<()> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(labels) = nodes.get_mut(node) {
            labels.remove(key);
        }
        Ok(())
    }
}
