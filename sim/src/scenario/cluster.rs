//! What scenario expectations and the parity summary read: implemented by the simulator and by a
//! snapshot of a real cluster, so both are judged by the same code.

use std::collections::BTreeMap;

use model::effect::{Kind, ObjectRef};
use serde_json::Value;

use crate::apiserver::selector::matches_equality;
use crate::sim::Sim;

/// A cluster as the scenario checks see it.
pub trait ClusterRead {
    /// The object as JSON, as the apiserver would serve it.
    fn object(&self, key: &ObjectRef) -> Option<Value>;
    /// Every object of `kind`, as JSON.
    fn objects(&self, kind: Kind) -> Vec<Value>;
    /// How many objects of `kind` (in `namespace`, when given) match the equality `selector`;
    /// with `running`, only Running pods that are not being deleted.
    fn count(&self, kind: Kind, namespace: Option<&str>, selector: &[(String, Option<String>)], running: bool) -> i64;
    /// What `pod` reads through its dataset volume `volume` on its node: `live`, `broken`,
    /// `detached` or `unmounted`; Err says why there is nothing to judge.
    fn mount_state(&self, pod: &ObjectRef, volume: &str) -> Result<&'static str, String>;
    /// Whether the node is powered on (None: no such node).
    fn node_up(&self, node: &str) -> Option<bool>;
}

/// Whether a pod object (JSON) is Running and not being deleted.
pub fn pod_running(pod: &Value) -> bool {
    pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && pod.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)
}

/// Counts JSON objects as [`ClusterRead::count`] does.
pub fn count_json<'a>(
    objects: impl IntoIterator<Item = &'a Value>,
    namespace: Option<&str>,
    selector: &[(String, Option<String>)],
    running: bool,
) -> i64 {
    objects
        .into_iter()
        .filter(|o| namespace.is_none_or(|ns| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)))
        .filter(|o| {
            let labels: Option<BTreeMap<String, String>> =
                o.pointer("/metadata/labels").and_then(|l| serde_json::from_value(l.clone()).ok());
            matches_equality(selector, labels.as_ref())
        })
        .filter(|o| !running || pod_running(o))
        .count() as i64
}

impl ClusterRead for Sim {
    fn object(&self, key: &ObjectRef) -> Option<Value> {
        self.get(key).map(|o| o.to_json())
    }

    fn objects(&self, kind: Kind) -> Vec<Value> {
        self.api.store.list(kind).map(|o| o.to_json()).collect()
    }

    fn count(&self, kind: Kind, namespace: Option<&str>, selector: &[(String, Option<String>)], running: bool) -> i64 {
        self.api
            .store
            .list(kind)
            .filter(|o| namespace.is_none_or(|ns| o.meta().namespace.as_deref() == Some(ns)))
            .filter(|o| matches_equality(selector, o.meta().labels.as_ref()))
            .filter(|o| {
                !running
                    || o.as_pod().is_some_and(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                            && p.metadata.deletion_timestamp.is_none()
                    })
            })
            .count() as i64
    }

    fn mount_state(&self, pod: &ObjectRef, volume: &str) -> Result<&'static str, String> {
        let found = self.get(pod).and_then(|o| o.as_pod()).ok_or_else(|| format!("{pod} does not exist"))?;
        let volumes = self.dataset_volumes(found);
        let Some(dataset_volume) = volumes.iter().find(|v| v.name == volume) else {
            let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
            return Err(format!("{pod} has no bound dataset volume `{volume}` (it has {names:?})"));
        };
        Ok(Sim::volume_health(self, found, dataset_volume)?.word())
    }

    fn node_up(&self, node: &str) -> Option<bool> {
        self.nodes.get(node).map(|n| n.up)
    }
}
