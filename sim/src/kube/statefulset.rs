//! The StatefulSet controller: stable ordinals, ordered or parallel creation, scale-down from
//! the highest ordinal, rolling replacement of pods on an old template, and the status counters
//! (`replicas`, `readyReplicas`, `currentReplicas`, `updatedReplicas`, `availableReplicas`).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSetStatus;
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use model::effect::{Kind, ObjectRef};
use model::observed::PodPhase;

use crate::apiserver::{Obj, Pod};
use crate::sim::Sim;
use crate::trace;

/// The label with the template revision of a pod.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// A stable hash of a pod template, as the revision name's suffix.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    format!("{:010x}", u64::from(model::labels::fnv1a_32(&bytes)) * 0x9e37_79b9 % 0xff_ffff_ffff)
}

/// A pod made from a pod template's metadata and `spec`, owned by the workload `owner` (the
/// DaemonSet controller passes no spec: its pods share one, [`crate::apiserver::Pod::share_spec`]).
pub fn pod_from_template(
    template_metadata: Option<&ObjectMeta>,
    spec: Option<PodSpec>,
    namespace: &str,
    name: &str,
    owner: OwnerReference,
    extra_labels: BTreeMap<String, String>,
) -> Pod {
    let mut labels = template_metadata.and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.extend(extra_labels);
    Pod::from(k8s_openapi::api::core::v1::Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: template_metadata.and_then(|m| m.annotations.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec,
        status: None,
    })
}

/// An ownerReference to `obj` as its controller.
pub fn controller_reference(obj: &Obj, api_version: &str) -> OwnerReference {
    let meta = obj.meta();
    OwnerReference {
        api_version: api_version.to_string(),
        kind: obj.kind().as_str().to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

impl Sim {
    /// Converges one StatefulSet.
    pub(crate) fn sync_statefulset(&mut self, key: &ObjectRef) {
        let Some(obj) = self.api.store.get(key).cloned() else { return };
        let Some(sts) = obj.as_statefulset().cloned() else { return };
        if sts.metadata.deletion_timestamp.is_some() {
            return;
        }
        // Borrowed, not cloned: the spec holds the whole pod template.
        let no_spec = Default::default();
        let spec: &k8s_openapi::api::apps::v1::StatefulSetSpec = sts.spec.as_ref().unwrap_or(&no_spec);
        let replicas = spec.replicas.unwrap_or(1).max(0) as usize;
        let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
        let revision = format!("{}-{}", key.name, self.template_hash_of(&sts.metadata, &spec.template));
        let uid = sts.metadata.uid.clone().unwrap_or_default();
        let prefix = format!("{}-", key.name);
        let mut pods: BTreeMap<usize, Arc<Pod>> = BTreeMap::new();
        for pod_key in self.api.store.dependents(&uid) {
            let Some(pod) = self.api.store.get(pod_key).and_then(|o| o.as_pod()) else { continue };
            if let Some(ordinal) = pod_key.name.strip_prefix(&prefix).and_then(|o| o.parse::<usize>().ok()) {
                pods.insert(ordinal, pod.clone());
            }
        }
        let owner = controller_reference(&obj, "apps/v1");

        // Failed pods are replaced.
        for (ordinal, pod) in &pods {
            if pod.phase() == PodPhase::Failed && !pod.is_deleting() {
                let pod_key = ObjectRef::namespaced(Kind::Pod, &key.namespace, &format!("{prefix}{ordinal}"));
                trace!(self, "statefulset", pod_key.to_string(), "delete failed pod for recreation");
                let _ = self.api.delete(&pod_key, self.clock.wall());
            }
        }

        // Create missing ordinals below `replicas`.
        let mut blocked = false;
        for ordinal in 0..replicas {
            match pods.get(&ordinal) {
                Some(pod) => {
                    if !parallel && !pod.is_available() {
                        blocked = true;
                    }
                }
                None => {
                    if blocked {
                        break;
                    }
                    let name = format!("{prefix}{ordinal}");
                    let extra = BTreeMap::from([
                        ("statefulset.kubernetes.io/pod-name".to_string(), name.clone()),
                        ("apps.kubernetes.io/pod-index".to_string(), ordinal.to_string()),
                        (REVISION_LABEL.to_string(), revision.clone()),
                    ]);
                    let mut pod = pod_from_template(
                        spec.template.metadata.as_ref(),
                        spec.template.spec.clone(),
                        &key.namespace,
                        &name,
                        owner.clone(),
                        extra,
                    );
                    if pod.spec.is_some() {
                        let pod_spec = pod.spec_mut();
                        pod_spec.hostname = Some(name.clone());
                        pod_spec.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
                    }
                    if self.api.create(Obj::Pod(Arc::new(pod)), self.clock.wall()).is_ok() {
                        trace!(
                            self,
                            "statefulset",
                            format!("Pod/{}/{name}", key.namespace),
                            "create (ordinal {ordinal} of {})",
                            key.name
                        );
                    }
                    if !parallel {
                        blocked = true;
                    }
                }
            }
        }

        // Scale down from the highest ordinal.
        let excess: Vec<usize> = pods.keys().copied().filter(|o| *o >= replicas).rev().collect();
        for ordinal in excess {
            let pod = &pods[&ordinal];
            if pod.is_deleting() {
                if !parallel {
                    break;
                }
                continue;
            }
            let pod_key = ObjectRef::namespaced(Kind::Pod, &key.namespace, &format!("{prefix}{ordinal}"));
            trace!(self, "statefulset", pod_key.to_string(), "delete (scale down to {replicas})");
            let _ = self.api.delete(&pod_key, self.clock.wall());
            if !parallel {
                break;
            }
        }

        // Rolling update: replace the highest pod on an old revision once all are ready.
        let rolling = spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()).unwrap_or("RollingUpdate")
            == "RollingUpdate";
        let all_ready = (0..replicas).all(|o| pods.get(&o).is_some_and(|p| p.is_available()));
        if rolling && all_ready {
            let stale = (0..replicas)
                .rev()
                .find(|o| pods[o].metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)) != Some(&revision));
            if let Some(ordinal) = stale {
                let pod_key = ObjectRef::namespaced(Kind::Pod, &key.namespace, &format!("{prefix}{ordinal}"));
                trace!(self, "statefulset", pod_key.to_string(), "delete (template changed, rolling update)");
                let _ = self.api.delete(&pod_key, self.clock.wall());
            }
        }

        // Status, from the pods as they are now.
        let mut status = StatefulSetStatus { observed_generation: sts.metadata.generation, ..Default::default() };
        let (mut ready_count, mut updated, mut count) = (0, 0, 0);
        for pod_key in self.api.store.dependents(&uid) {
            let Some(pod) = self.api.store.get(pod_key).and_then(|o| o.as_pod()) else { continue };
            count += 1;
            if pod.is_ready() && pod.phase() == PodPhase::Running {
                ready_count += 1;
            }
            if pod.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)) == Some(&revision) {
                updated += 1;
            }
        }
        status.replicas = count;
        status.ready_replicas = Some(ready_count);
        status.available_replicas = Some(ready_count);
        status.updated_replicas = Some(updated);
        status.current_replicas = Some(updated);
        status.current_revision = Some(revision.clone());
        status.update_revision = Some(revision);
        let unchanged = sts.status.as_ref() == Some(&status);
        if !unchanged {
            let _ = self.api.modify(key, None, |obj| {
                let Some(sts) = obj.statefulset_mut() else { return false };
                sts.status = Some(status);
                true
            });
        }
    }
}
