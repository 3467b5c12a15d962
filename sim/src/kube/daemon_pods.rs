//! The DaemonSet controller's index of its pods: what a sync reads of each, kept current from the watch.

use std::collections::BTreeMap;

use model::effect::{CompactString, ObjectRef};
use model::observed::PodPhase;
use rustc_hash::FxHashMap;

use super::statefulset::REVISION_LABEL;
use crate::apiserver::Pod;

/// What a DaemonSet sync reads of one of its pods. A sync walks every pod of its DaemonSet, and
/// reading these from one map spares it a store lookup and a visit to each pod's scattered parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonPod {
    /// The node it runs on or is pinned to (empty: neither).
    pub node: CompactString,
    /// Its `controller-revision-hash` label.
    pub revision: Option<String>,
    /// It has a deletionTimestamp.
    pub deleting: bool,
    /// Its phase is `Failed`.
    pub failed: bool,
    /// Running, ready and not terminating.
    pub available: bool,
    /// Running and ready (terminating or not): what the status counts as ready.
    pub ready_running: bool,
}

impl DaemonPod {
    /// Reads a pod.
    pub fn of(pod: &Pod) -> Self {
        let mut summary = Self {
            node: CompactString::default(),
            revision: pod.metadata.labels.as_ref().and_then(|labels| labels.get(REVISION_LABEL)).cloned(),
            deleting: pod.is_deleting(),
            failed: false,
            available: false,
            ready_running: false,
        };
        summary.refresh(pod);
        summary
    }

    /// Brings the summary of an earlier version that shares `pod`'s metadata up to date: its node
    /// and status may have changed, its labels and deletion not.
    fn refresh(&mut self, pod: &Pod) {
        let node = super::daemonset::pod_node_target(pod).unwrap_or_default();
        if self.node != node {
            self.node = node;
        }
        self.failed = pod.phase() == PodPhase::Failed;
        self.available = pod.is_available();
        self.ready_running = pod.is_ready() && pod.phase() == PodPhase::Running;
    }
}

/// Pods by the UID of each DaemonSet that their ownerReferences name (what the garbage
/// collector's dependents index holds for a DaemonSet), in key order.
#[derive(Debug, Clone, Default)]
pub struct DaemonPods {
    by_owner: FxHashMap<String, BTreeMap<ObjectRef, DaemonPod>>,
}

impl DaemonPods {
    /// Files a pod change: out under the old version's DaemonSet owners, in under the new's.
    pub fn observe(&mut self, key: &ObjectRef, old: Option<&Pod>, new: Option<&Pod>) {
        // A status write or a binding (most pod writes) shares the metadata: same owners, same
        // labels; the filed summaries are refreshed in place.
        if let (Some(old), Some(new)) = (old, new)
            && old.shares_metadata(new)
        {
            for uid in daemonset_owner_uids(new) {
                if let Some(summary) = self.by_owner.get_mut(uid).and_then(|pods| pods.get_mut(key)) {
                    summary.refresh(new);
                }
            }
            return;
        }
        for uid in old.into_iter().flat_map(daemonset_owner_uids) {
            if let Some(pods) = self.by_owner.get_mut(uid) {
                pods.remove(key);
                if pods.is_empty() {
                    self.by_owner.remove(uid);
                }
            }
        }
        let Some(new) = new else { return };
        let mut owners = daemonset_owner_uids(new).peekable();
        if owners.peek().is_none() {
            return;
        }
        let summary = DaemonPod::of(new);
        for uid in owners {
            match self.by_owner.get_mut(uid) {
                Some(pods) => pods.insert(key.clone(), summary.clone()),
                None => self.by_owner.entry(uid.to_string()).or_default().insert(key.clone(), summary.clone()),
            };
        }
    }

    /// Takes the pods of the DaemonSet `uid` out, for a sync that writes while it reads them;
    /// give them back with [`DaemonPods::put_back`] (no pod change is filed in between: changes
    /// are routed after the sync).
    pub fn take(&mut self, uid: &str) -> BTreeMap<ObjectRef, DaemonPod> {
        self.by_owner.remove(uid).unwrap_or_default()
    }

    /// Gives back what [`DaemonPods::take`] took.
    pub fn put_back(&mut self, uid: String, pods: BTreeMap<ObjectRef, DaemonPod>) {
        if !pods.is_empty() {
            self.by_owner.insert(uid, pods);
        }
    }

    /// The pods of the DaemonSet `uid`, in key order.
    pub fn of(&self, uid: &str) -> impl Iterator<Item = (&ObjectRef, &DaemonPod)> {
        self.by_owner.get(uid).into_iter().flatten()
    }
}

/// The UIDs of the DaemonSets a pod's ownerReferences name.
fn daemonset_owner_uids(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.metadata.owner_references.iter().flatten().filter(|o| o.kind == "DaemonSet").map(|o| o.uid.as_str())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
    use model::effect::Kind;

    use super::*;

    fn pod(name: &str, owners: &[(&str, &str)], node: Option<&str>, phase: &str, ready: bool) -> Pod {
        let owner_references = owners
            .iter()
            .map(|(kind, uid)| OwnerReference { kind: kind.to_string(), uid: uid.to_string(), ..Default::default() })
            .collect();
        let labels = [(REVISION_LABEL.to_string(), "fuse-1".to_string())].into();
        let condition = PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            ..Default::default()
        };
        let mut pod = Pod::from(k8s_openapi::api::core::v1::Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("team".into()),
                owner_references: Some(owner_references),
                labels: Some(labels),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![condition]),
                ..Default::default()
            }),
        });
        if let Some(node) = node {
            pod.bind(node);
        }
        pod
    }

    fn key(name: &str) -> ObjectRef {
        ObjectRef::namespaced(Kind::Pod, "team", name)
    }

    fn names(index: &DaemonPods, uid: &str) -> Vec<String> {
        index.of(uid).map(|(key, _)| key.name.to_string()).collect()
    }

    #[test]
    fn the_index_follows_each_pod_through_its_owners_and_its_life() {
        let mut index = DaemonPods::default();
        let pending = pod("fuse-b", &[("DaemonSet", "ds-1")], None, "Pending", false);
        index.observe(&key("fuse-b"), None, Some(&pending));
        let running = pod("fuse-a", &[("DaemonSet", "ds-1")], Some("node-1"), "Running", true);
        index.observe(&key("fuse-a"), None, Some(&running));
        let worker = pod("worker-0", &[("StatefulSet", "sts-1")], Some("node-1"), "Running", true);
        index.observe(&key("worker-0"), None, Some(&worker));
        assert_eq!(names(&index, "ds-1"), ["fuse-a", "fuse-b"], "in key order; a StatefulSet's pod is not filed");
        assert_eq!(index.of("sts-1").count(), 0);
        let (_, summary) = index.of("ds-1").next().expect("filed");
        assert_eq!(
            summary,
            &DaemonPod {
                node: "node-1".into(),
                revision: Some("fuse-1".into()),
                deleting: false,
                failed: false,
                available: true,
                ready_running: true,
            }
        );

        // A status write and a binding share the metadata: the summary is refreshed in place.
        let mut failed = pending.clone();
        failed.status.as_mut().expect("a status").phase = Some("Failed".into());
        index.observe(&key("fuse-b"), Some(&pending), Some(&failed));
        let mut bound = failed.clone();
        bound.bind("node-2");
        index.observe(&key("fuse-b"), Some(&failed), Some(&bound));
        let (_, summary) = index.of("ds-1").nth(1).expect("filed");
        assert!(summary.failed && summary.node == "node-2" && !summary.available, "{summary:?}");
        index.observe(&key("fuse-b"), Some(&bound), Some(&pending));

        // A deletion keeps it (terminating), a re-parenting moves it, a removal drops it.
        let mut terminating = running.clone();
        terminating.metadata_mut().deletion_timestamp = Some(Time(Default::default()));
        index.observe(&key("fuse-a"), Some(&running), Some(&terminating));
        let (_, summary) = index.of("ds-1").next().expect("still filed");
        assert!(summary.deleting && !summary.available && summary.ready_running);
        let adopted = pod("fuse-b", &[("DaemonSet", "ds-2")], None, "Failed", false);
        index.observe(&key("fuse-b"), Some(&pending), Some(&adopted));
        assert_eq!(names(&index, "ds-1"), ["fuse-a"]);
        assert!(index.of("ds-2").all(|(_, pod)| pod.failed && pod.node.is_empty()));
        index.observe(&key("fuse-a"), Some(&terminating), None);
        assert_eq!(index.of("ds-1").count(), 0);

        // A sync takes a DaemonSet's pods out and gives them back.
        let taken = index.take("ds-2");
        assert_eq!((taken.len(), index.of("ds-2").count()), (1, 0));
        index.put_back("ds-2".into(), taken);
        assert_eq!(names(&index, "ds-2"), ["fuse-b"]);
        index.put_back("ds-3".into(), BTreeMap::new());
        assert!(!index.by_owner.contains_key("ds-3"), "no empty entry");
    }
}
