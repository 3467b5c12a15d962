//! The built-in Kubernetes controllers the flow needs, each a task on one shared queue.
//!
//! Every task is level-triggered: it reads the apiserver and converges one object (a pod to
//! schedule, a StatefulSet, a DaemonSet, a PVC to bind or protect, an owner's dependents to
//! collect, a node's lifecycle, a pod on a kubelet). Watches queue tasks after
//! `kube_latency_ms`; a task asked for twice before it runs runs once.

pub mod daemon_nodes;
pub mod daemon_pods;
pub mod daemonset;
pub mod gc;
pub mod nodelifecycle;
pub mod pvc;
pub mod scheduler;
pub mod statefulset;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use model::effect::{CompactString, Kind, ObjectRef};

use crate::apiserver::store::claims_of;
use crate::apiserver::{Change, Pod};
use crate::sim::Sim;

/// One unit of work of a built-in controller.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KubeTask {
    /// Scheduler: place this pending pod.
    Schedule(ObjectRef),
    /// StatefulSet controller: converge this StatefulSet.
    StatefulSet(ObjectRef),
    /// DaemonSet controller: converge this DaemonSet.
    DaemonSet(ObjectRef),
    /// PV controller: bind this PVC.
    Bind(ObjectRef),
    /// pvc-protection controller: this PVC's finalizer.
    PvcProtection(ObjectRef),
    /// pv-protection controller: this PV's finalizer.
    PvProtection(ObjectRef),
    /// Garbage collector: the dependents of a vanished owner (by UID).
    Collect(String),
    /// Garbage collector: an object whose owners may not exist.
    Orphan(ObjectRef),
    /// Node-lifecycle controller: this node's readiness and evictions.
    NodeLifecycle(CompactString),
    /// PodGC: force-delete the Terminating pods of this out-of-service node.
    PodGc(CompactString),
    /// Kubelet of `node`: sync this pod.
    Kubelet {
        /// The node.
        node: CompactString,
        /// The pod.
        pod: ObjectRef,
    },
    /// CSI plugin of this node: a FUSE recovery pass (a tick of its recovery loop).
    Recover(CompactString),
    /// Kubelet's volume manager of this node: unstage volumes no pod uses (a retry).
    VolumeManager(CompactString),
}

impl KubeTask {
    /// The kubelet of `node` syncs `pod`.
    pub fn kubelet(node: &str, pod: &ObjectRef) -> Self {
        KubeTask::Kubelet { node: node.into(), pod: pod.clone() }
    }

    /// The node whose kubelet or CSI plugin runs the task (whose mounts it may change).
    pub fn node(&self) -> Option<&str> {
        match self {
            KubeTask::Kubelet { node, .. } | KubeTask::Recover(node) | KubeTask::VolumeManager(node) => Some(node),
            _ => None,
        }
    }
}

/// State of the built-in controllers that is not in the apiserver.
#[derive(Debug, Default, Clone)]
pub struct KubeState {
    /// Pods the scheduler could not place; retried when nodes or pods change.
    pub unschedulable: BTreeSet<ObjectRef>,
    /// The scheduler's cache of nodes and the pods bound to them.
    pub scheduler: scheduler::cache::SchedulerCache,
    /// DaemonSets by the node label keys they read (nodeSelector and required node affinity).
    pub daemonsets_by_label_key: BTreeMap<String, BTreeSet<ObjectRef>>,
    /// DaemonSets that read no node label (they want every node their pods tolerate).
    pub daemonsets_everywhere: BTreeSet<ObjectRef>,
    /// The nodes each DaemonSet wants, kept current as nodes change.
    pub daemon_wanted: daemon_nodes::WantedIndex,
    /// The last reason each pending pod was given, so the trace says it once.
    pub pending_reason: BTreeMap<ObjectRef, String>,
    /// Every node name, in order (the scheduler's scan list).
    pub node_names: std::sync::Arc<Vec<model::effect::CompactString>>,
    /// The template hash of each workload by UID, for the generation it was computed at (a
    /// hash serializes the whole pod template; the template changes only with the generation).
    pub template_hashes: BTreeMap<String, (i64, String)>,
    /// What the DaemonSet controller reads of each DaemonSet's pods, by the DaemonSet's UID.
    pub daemon_pods: daemon_pods::DaemonPods,
    /// The pod spec each DaemonSet's pods share, by UID, for the generation it was built at.
    pub daemon_pod_specs: BTreeMap<String, (i64, std::sync::Arc<k8s_openapi::api::core::v1::PodSpec>)>,
}

/// True when a pod change is one its kubelet acts on: the pod came, went, was bound, was
/// replaced or started terminating. Status writes (the kubelet's own) are not: a real kubelet's
/// pod worker already holds that state.
fn kubelet_cares(change: &Change) -> bool {
    let (Some(old), Some(new)) =
        (change.old.as_ref().and_then(|o| o.as_pod()), change.new.as_ref().and_then(|o| o.as_pod()))
    else {
        return true;
    };
    let same_meta = old.shares_metadata(new);
    old.node_name() != new.node_name()
        || (!same_meta
            && (old.metadata.uid != new.metadata.uid
                || old.metadata.deletion_timestamp != new.metadata.deletion_timestamp))
}

/// True when a pod change matters to pvc-protection: the pod came or went, its claims changed,
/// it started terminating or it completed.
fn pvc_protection_cares(old: Option<&Arc<Pod>>, new: Option<&Arc<Pod>>) -> bool {
    let (Some(old), Some(new)) = (old, new) else { return true };
    !old.same_spec(new)
        || old.metadata.deletion_timestamp != new.metadata.deletion_timestamp
        || old.is_completed() != new.is_completed()
}

/// The node label keys a DaemonSet version reads: those of its pods' nodeSelector and of their
/// required node affinity's expressions. None when it reads none (it wants every node).
fn daemonset_label_keys(obj: Option<&crate::apiserver::Obj>) -> Option<BTreeSet<&str>> {
    let spec = obj?.as_daemonset()?.spec.as_ref()?.template.spec.as_ref()?;
    let mut keys: BTreeSet<&str> = spec.node_selector.iter().flatten().map(|(key, _)| key.as_str()).collect();
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    let expressions =
        required.into_iter().flat_map(|r| &r.node_selector_terms).flat_map(|t| t.match_expressions.iter().flatten());
    keys.extend(expressions.map(|e| e.key.as_str()));
    (!keys.is_empty()).then_some(keys)
}

/// True when a change of a workload touched only its status: same generation (the apiserver
/// bumps it on every spec change), and no deletion, finalizer or owner change.
fn status_only(change: &Change) -> bool {
    let (Some(old), Some(new)) = (&change.old, &change.new) else { return false };
    let (old, new) = (old.meta(), new.meta());
    old.generation == new.generation
        && old.deletion_timestamp == new.deletion_timestamp
        && old.finalizers == new.finalizers
        && old.owner_references == new.owner_references
}

fn controller_owner(
    obj: &crate::apiserver::Obj,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    obj.meta().owner_references.iter().flatten().find(|o| o.controller == Some(true))
}

impl Sim {
    /// Routes a change to the built-in controllers and kubelets that watch it.
    pub(crate) fn route_kube(&mut self, change: &Change) {
        let key = change.key.clone();
        if change.new.is_none()
            && let Some(uid) = change.old.as_ref().and_then(|o| o.meta().uid.clone())
            && self.api.store.dependents(&uid).next().is_some()
        {
            self.kick(KubeTask::Collect(uid));
        }
        if let Some(new) = &change.new {
            // An owner reference that names a missing owner dangles from the start: the garbage
            // collector's graph sees it and collects the dependent. Live owners need no task: if
            // one goes later, its removal queues the collection of its dependents.
            let owners = new.meta().owner_references.as_deref().unwrap_or_default();
            let old_owners = change.old.as_ref().and_then(|o| o.meta().owner_references.as_deref());
            let old_owners = old_owners.unwrap_or_default();
            // Versions that share their metadata (most pod writes) share the list: no compare.
            if !std::ptr::eq(owners, old_owners)
                && owners != old_owners
                && owners.iter().any(|o| self.api.store.by_uid(&o.uid).is_none())
            {
                self.kick(KubeTask::Orphan(key.clone()));
            }
        }
        if matches!(key.kind, Kind::StatefulSet | Kind::DaemonSet)
            && change.new.is_none()
            && let Some(uid) = change.old.as_ref().and_then(|o| o.meta().uid.as_ref())
        {
            self.kube.template_hashes.remove(uid);
            self.kube.daemon_pod_specs.remove(uid);
        }
        match key.kind {
            Kind::Pod => self.route_pod(change),
            Kind::Node => self.route_node(change),
            // A workload's own status write changes nothing its controller acts on.
            Kind::StatefulSet if !status_only(change) => self.kick(KubeTask::StatefulSet(key)),
            Kind::DaemonSet if !status_only(change) => {
                self.index_daemonset(change);
                self.kick(KubeTask::DaemonSet(key));
            }
            Kind::StatefulSet | Kind::DaemonSet => {}
            Kind::PersistentVolume => {
                if change.new.is_some() {
                    self.kick(KubeTask::PvProtection(key.clone()));
                }
                for obj in change.old.iter().chain(change.new.iter()) {
                    let claim = obj.as_pv().and_then(|pv| pv.spec.as_ref()?.claim_ref.clone());
                    if let Some(claim) = claim {
                        let pvc = ObjectRef::namespaced(
                            Kind::PersistentVolumeClaim,
                            claim.namespace.as_deref().unwrap_or("default"),
                            claim.name.as_deref().unwrap_or_default(),
                        );
                        self.kick(KubeTask::Bind(pvc));
                    }
                }
            }
            Kind::PersistentVolumeClaim => {
                self.kick(KubeTask::Bind(key.clone()));
                self.kick(KubeTask::PvcProtection(key.clone()));
                let users: Vec<ObjectRef> =
                    self.api.store.pods_using_claim(&key.namespace, &key.name).cloned().collect();
                for pod in users {
                    self.kick_pod(&pod);
                }
            }
            Kind::Dataset | Kind::JuiceFSRuntime => {}
        }
    }

    /// Queues whatever a pod needs next: scheduling or its kubelet.
    fn kick_pod(&mut self, pod: &ObjectRef) {
        let Some(obj) = self.api.store.get(pod).and_then(|o| o.as_pod()) else { return };
        match obj.node_name().map(CompactString::from) {
            Some(node) => self.kick(KubeTask::Kubelet { node, pod: pod.clone() }),
            None if obj.metadata.deletion_timestamp.is_none() => self.kick(KubeTask::Schedule(pod.clone())),
            None => {}
        }
    }

    fn route_pod(&mut self, change: &Change) {
        let key = &change.key;
        let (old, new) = (change.old.as_ref(), change.new.as_ref());
        let (old_pod, new_pod) = (old.and_then(|o| o.as_pod()), new.and_then(|o| o.as_pod()));
        self.kube.scheduler.observe_pod(key, new_pod);
        self.kube.daemon_pods.observe(key, old_pod.map(|p| &**p), new_pod.map(|p| &**p));
        let mut freed_capacity = new.is_none();
        if let Some(pod) = new_pod {
            let scheduled = pod.node_name().is_some();
            // A pending pod's own status write (the scheduler's "Unschedulable") is no reason to
            // try again; a new pod or a changed spec is.
            let new_or_respecified = old_pod.is_none_or(|old| !old.same_spec(pod));
            if !scheduled && pod.metadata.deletion_timestamp.is_none() && new_or_respecified {
                self.kick(KubeTask::Schedule(key.clone()));
            }
            freed_capacity |= pod.is_completed();
        }
        // Old and new name the same owner, node and claims but for a binding, a re-parenting or a
        // replacement: kick each once.
        let mut owners: Vec<(&str, &str)> = Vec::with_capacity(2);
        for owner in old.into_iter().chain(new).filter_map(controller_owner) {
            let owner = (owner.kind.as_str(), owner.name.as_str());
            if !owners.contains(&owner) {
                owners.push(owner);
            }
        }
        let owners: Vec<KubeTask> = owners
            .into_iter()
            .filter_map(|(kind, name)| match kind {
                "StatefulSet" => {
                    Some(KubeTask::StatefulSet(ObjectRef::namespaced(Kind::StatefulSet, &key.namespace, name)))
                }
                "DaemonSet" => Some(KubeTask::DaemonSet(ObjectRef::namespaced(Kind::DaemonSet, &key.namespace, name))),
                _ => None,
            })
            .collect();
        for task in owners {
            self.kick(task);
        }
        if kubelet_cares(change) {
            let node_of = |pod: Option<&Arc<Pod>>| pod.and_then(|p| p.node_name().map(CompactString::from));
            let (old_node, new_node) = (node_of(old_pod), node_of(new_pod));
            for node in old_node.iter().chain(new_node.iter().filter(|n| Some(*n) != old_node.as_ref())) {
                self.kick(KubeTask::kubelet(node, key));
            }
        }
        // pvc-protection cares whether a pod uses a claim and may still run: not status writes.
        if pvc_protection_cares(old_pod, new_pod) {
            let mut claims: Vec<String> = old_pod.into_iter().chain(new_pod).flat_map(|p| claims_of(p)).collect();
            claims.sort();
            claims.dedup();
            for claim in claims {
                self.kick(KubeTask::PvcProtection(ObjectRef::namespaced(
                    Kind::PersistentVolumeClaim,
                    &key.namespace,
                    &claim,
                )));
            }
        }
        if freed_capacity {
            self.retry_unschedulable();
        }
    }

    /// Queues every pod the scheduler could not place.
    pub(crate) fn retry_unschedulable(&mut self) {
        let pods: Vec<ObjectRef> = self.kube.unschedulable.iter().cloned().collect();
        for pod in pods {
            self.kick(KubeTask::Schedule(pod));
        }
    }

    fn route_node(&mut self, change: &Change) {
        if change.old.is_none() && change.new.is_some() && !self.nodes.contains_key(change.key.name.as_str()) {
            // A node joined during the run: its machine comes with a kubelet and a CSI plugin.
            self.start_kubelet(&change.key.name);
        }
        let taints_of = |obj: Option<&crate::apiserver::Obj>| {
            obj.and_then(|o| o.as_node()).map(|node| nodelifecycle::user_no_execute_taints(node)).unwrap_or_default()
        };
        let new_taints = taints_of(change.new.as_ref());
        if !new_taints.is_empty() && taints_of(change.old.as_ref()) != new_taints {
            // The taint manager evicts what does not tolerate a NoExecute taint put on the node.
            self.kick(KubeTask::NodeLifecycle(change.key.name.clone()));
        }
        self.kube.scheduler.observe_node(&change.key.name, change.new.as_ref().and_then(|o| o.as_node()));
        let names = Arc::make_mut(&mut self.kube.node_names);
        match (change.old.is_some(), change.new.is_some()) {
            (false, true) => {
                if let Err(at) = names.binary_search(&change.key.name) {
                    names.insert(at, change.key.name.clone());
                }
            }
            (true, false) => {
                if let Ok(at) = names.binary_search(&change.key.name) {
                    names.remove(at);
                }
            }
            _ => {}
        }
        let empty = BTreeMap::new();
        let old_labels = change.old.as_ref().and_then(|o| o.meta().labels.as_ref()).unwrap_or(&empty);
        let new_labels = change.new.as_ref().and_then(|o| o.meta().labels.as_ref()).unwrap_or(&empty);
        let spec_or_status_changed = match (&change.old, &change.new) {
            (Some(old), Some(new)) => {
                let (old, new) = (old.as_node(), new.as_node());
                old.map(|n| (&n.spec, n.status.as_ref().map(|s| &s.conditions)))
                    != new.map(|n| (&n.spec, n.status.as_ref().map(|s| &s.conditions)))
            }
            _ => true,
        };
        let mut daemonsets: BTreeSet<ObjectRef> = BTreeSet::new();
        if spec_or_status_changed {
            for set in self.kube.daemonsets_by_label_key.values() {
                daemonsets.extend(set.iter().cloned());
            }
            daemonsets.extend(self.kube.daemonsets_everywhere.iter().cloned());
        } else {
            for label in old_labels.keys().chain(new_labels.keys()) {
                if old_labels.get(label) != new_labels.get(label)
                    && let Some(set) = self.kube.daemonsets_by_label_key.get(label)
                {
                    daemonsets.extend(set.iter().cloned());
                }
            }
        }
        let node = change.new.as_ref().and_then(|o| o.as_node());
        self.refresh_wanted(&daemonsets, &change.key.name, node.map(|n| &**n));
        for ds in daemonsets {
            self.kick(KubeTask::DaemonSet(ds));
        }
        if old_labels != new_labels || spec_or_status_changed {
            self.retry_unschedulable();
        }
    }

    /// Refiles a changed DaemonSet: out under the node label keys the old version read, in under
    /// the new version's.
    fn index_daemonset(&mut self, change: &Change) {
        let key = &change.key;
        match daemonset_label_keys(change.old.as_ref()) {
            Some(keys) => {
                for label in keys {
                    if let Some(set) = self.kube.daemonsets_by_label_key.get_mut(label) {
                        set.remove(key);
                        if set.is_empty() {
                            self.kube.daemonsets_by_label_key.remove(label);
                        }
                    }
                }
            }
            None => {
                self.kube.daemonsets_everywhere.remove(key);
            }
        }
        if change.new.is_none() {
            self.kube.daemon_wanted.forget(key);
            return;
        }
        match daemonset_label_keys(change.new.as_ref()) {
            Some(keys) => {
                for label in keys {
                    self.kube.daemonsets_by_label_key.entry(label.to_string()).or_default().insert(key.clone());
                }
            }
            None => {
                self.kube.daemonsets_everywhere.insert(key.clone());
            }
        }
    }

    /// The revision hash of a workload's pod template, computed once per generation.
    pub(crate) fn template_hash_of(
        &mut self,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    ) -> String {
        let (uid, generation) = (meta.uid.clone().unwrap_or_default(), meta.generation.unwrap_or(0));
        if let Some((at, hash)) = self.kube.template_hashes.get(&uid)
            && *at == generation
        {
            return hash.clone();
        }
        let hash = statefulset::template_hash(template);
        self.kube.template_hashes.insert(uid, (generation, hash.clone()));
        hash
    }

    /// Runs one built-in controller task.
    pub(crate) fn run_kube_task(&mut self, task: KubeTask) {
        match task {
            KubeTask::Schedule(pod) => self.schedule(&pod),
            KubeTask::StatefulSet(sts) => self.sync_statefulset(&sts),
            KubeTask::DaemonSet(ds) => self.sync_daemonset(&ds),
            KubeTask::Bind(pvc) => self.bind_claim(&pvc),
            KubeTask::PvcProtection(pvc) => self.protect_claim(&pvc),
            KubeTask::PvProtection(pv) => self.protect_volume(&pv),
            KubeTask::Collect(uid) => self.collect(&uid),
            KubeTask::Orphan(key) => self.collect_orphan(&key),
            KubeTask::NodeLifecycle(node) => self.node_lifecycle(&node),
            KubeTask::PodGc(node) => self.pod_gc(&node),
            KubeTask::Kubelet { node, pod } => self.kubelet_sync(&node, &pod),
            KubeTask::Recover(node) => self.recover_mounts(&node),
            KubeTask::VolumeManager(node) => self.volume_manager(&node),
        }
    }
}

#[cfg(test)]
mod tests;
