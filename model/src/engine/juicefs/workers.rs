//! The worker StatefulSet: cache workers placed per the dataset's placement (Fluid's `pkg/ctrl/affinity.go`).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, ExecAction, Lifecycle, LifecycleHandler, NodeAffinity, NodeSelectorRequirement,
    NodeSelectorTerm, PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec, PreferredSchedulingTerm,
    SecurityContext, Toleration, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};

use crate::api::common::NetworkMode;
use crate::api::{Dataset, JuiceFSRuntime, Placement};
use crate::engine::{EngineInput, RuntimeResource};
use crate::error::ModelError;
use crate::labels::{self, DatasetKeys};

use super::cache::cache_plan;
use super::command::{METRICS_PORT, Role, mount_script};
use super::pod::{
    DEFAULT_PULL_POLICY, cache_volumes, container_env, option_cache_dirs, owner_reference, pod_metadata, resolve_image,
    user_volumes,
};
use super::{RUNTIME_TYPE, WORKER_CONTAINER};

/// Weight of the preferred node affinity towards nodes running this dataset's FUSE.
pub const FUSE_NODE_WEIGHT: i32 = 100;
/// Weight of the shared-placement preference for nodes without other datasets' workers.
pub const SHARED_SPREAD_WEIGHT: i32 = 50;

/// The placement value written on worker pods: `Exclusive` unless the dataset says `Shared`.
pub fn placement_label(dataset: &Dataset) -> &'static str {
    if Placement::is_exclusive(dataset.spec.placement) { "Exclusive" } else { "Shared" }
}

fn selector(key: &str, operator: &str, values: Option<Vec<String>>) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: key.to_string(),
            operator: operator.to_string(),
            values,
        }]),
        match_labels: None,
    }
}

fn on_same_host(label_selector: LabelSelector) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(label_selector),
        topology_key: labels::HOSTNAME.to_string(),
        ..Default::default()
    }
}

/// Like [`on_same_host`], but counting pods of every namespace (an empty `namespaceSelector`):
/// without it a term only sees the worker's own namespace, and exclusive datasets in two
/// namespaces would share a node and fight over its `fluid_exclusive` label.
fn on_same_host_in_any_namespace(label_selector: LabelSelector) -> PodAffinityTerm {
    PodAffinityTerm { namespace_selector: Some(LabelSelector::default()), ..on_same_host(label_selector) }
}

/// The worker affinity of Fluid's §2.5.
///
/// Exclusive: no two workers of any datasets on a node. Shared: no two workers of the same
/// dataset on a node, never next to an exclusive dataset's worker, and preferably alone. Always:
/// prefer nodes that already run this dataset's FUSE, and obey the dataset's required affinity.
pub fn worker_affinity(dataset: &Dataset, keys: &DatasetKeys) -> Affinity {
    let pod_anti_affinity =
        if Placement::is_exclusive(dataset.spec.placement) {
            PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![on_same_host_in_any_namespace(
                    selector(labels::POD_DATASET, "Exists", None),
                )]),
                preferred_during_scheduling_ignored_during_execution: None,
            }
        } else {
            PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![
                    on_same_host(selector(labels::POD_DATASET, "In", Some(vec![keys.dataset_id()]))),
                    on_same_host_in_any_namespace(selector(
                        labels::POD_PLACEMENT,
                        "In",
                        Some(vec!["Exclusive".to_string()]),
                    )),
                ]),
                preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                    weight: SHARED_SPREAD_WEIGHT,
                    pod_affinity_term: on_same_host_in_any_namespace(selector(labels::POD_DATASET, "Exists", None)),
                }]),
            }
        };
    let node_affinity = NodeAffinity {
        preferred_during_scheduling_ignored_during_execution: Some(vec![PreferredSchedulingTerm {
            weight: FUSE_NODE_WEIGHT,
            preference: NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: keys.fuse_label(),
                    operator: "In".to_string(),
                    values: Some(vec!["true".to_string()]),
                }]),
                match_fields: None,
            },
        }]),
        required_during_scheduling_ignored_during_execution: dataset
            .spec
            .node_affinity
            .as_ref()
            .and_then(|affinity| affinity.required.clone()),
    };
    Affinity { node_affinity: Some(node_affinity), pod_affinity: None, pod_anti_affinity: Some(pod_anti_affinity) }
}

/// The dataset's tolerations, without `tolerationSeconds` (as Fluid: workers are never evicted on a timer).
pub fn worker_tolerations(dataset: &Dataset) -> Option<Vec<Toleration>> {
    let tolerations: Vec<Toleration> = dataset
        .spec
        .tolerations
        .iter()
        .cloned()
        .map(|toleration| Toleration { toleration_seconds: None, ..toleration })
        .collect();
    (!tolerations.is_empty()).then_some(tolerations)
}

/// Builds the worker StatefulSet.
pub(crate) fn build(input: &EngineInput<'_, JuiceFSRuntime>) -> Result<StatefulSet, ModelError> {
    let runtime = input.runtime;
    let (namespace, name) = (input.namespace(), input.name());
    let worker = runtime.spec.worker.clone().unwrap_or_default();
    let cache = cache_plan(runtime.spec.tieredstore.as_ref())?;
    let script = mount_script(input, Role::Worker, &cache)?;
    let fluid_path = input.fluid_path();

    let selector_labels = labels::workload_labels(&name, RUNTIME_TYPE, "worker");
    let object_labels = worker_pod_labels(&name, input.dataset, input.keys);
    let (pod_labels, pod_annotations) =
        pod_metadata(runtime.spec.pod_metadata.as_ref(), worker.pod_metadata.as_ref(), object_labels.clone());

    let (mut volumes, mut volume_mounts) = cache_volumes(&cache, &option_cache_dirs(Some(&worker.options)));
    volumes.extend(user_volumes(input, &worker.volume_mounts, "spec.worker.volumeMounts")?);
    volume_mounts.extend(worker.volume_mounts.iter().cloned());

    let version = runtime.spec.juicefs_version.as_ref();
    let container = Container {
        name: WORKER_CONTAINER.to_string(),
        image: Some(resolve_image(
            version.and_then(|v| v.image.as_deref()),
            version.and_then(|v| v.image_tag.as_deref()),
            &input.config.worker_image,
        )),
        image_pull_policy: Some(
            version.and_then(|v| v.image_pull_policy.clone()).unwrap_or_else(|| DEFAULT_PULL_POLICY.to_string()),
        ),
        command: Some(vec!["sh".to_string(), "-c".to_string(), script]),
        env: Some(container_env(input.dataset, &worker.env, Vec::new())?),
        ports: Some(metrics_ports(&worker.ports)),
        resources: worker.resources.clone(),
        security_context: Some(SecurityContext { privileged: Some(true), run_as_user: Some(0), ..Default::default() }),
        lifecycle: Some(umount_on_stop(&fluid_path)),
        volume_mounts: Some(volume_mounts),
        ..Default::default()
    };
    let host_network = worker.network_mode == Some(NetworkMode::HostNetwork);
    let pod_spec = PodSpec {
        affinity: Some(worker_affinity(input.dataset, input.keys)),
        tolerations: worker_tolerations(input.dataset),
        node_selector: (!worker.node_selector.is_empty()).then(|| worker.node_selector.clone()),
        containers: vec![container],
        volumes: Some(volumes),
        host_network: host_network.then_some(true),
        dns_policy: host_network.then(|| "ClusterFirstWithHostNet".to_string()),
        enable_service_links: Some(false),
        image_pull_secrets: (!runtime.spec.image_pull_secrets.is_empty())
            .then(|| runtime.spec.image_pull_secrets.clone()),
        restart_policy: Some("Always".to_string()),
        ..Default::default()
    };
    Ok(StatefulSet {
        metadata: ObjectMeta {
            name: Some(input.names.workers.clone()),
            namespace: Some(namespace),
            labels: Some(object_labels),
            owner_references: Some(vec![owner_reference(runtime)?]),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(runtime.replicas()),
            service_name: Some(input.names.workers.clone()),
            pod_management_policy: Some("Parallel".to_string()),
            selector: LabelSelector { match_labels: Some(selector_labels), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!pod_annotations.is_empty()).then_some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// The metrics port plus any the user declares.
pub(crate) fn metrics_ports(user: &[ContainerPort]) -> Vec<ContainerPort> {
    let mut ports = vec![ContainerPort {
        name: Some("metrics".to_string()),
        container_port: METRICS_PORT,
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }];
    ports.extend(user.iter().filter(|port| port.container_port != METRICS_PORT).cloned());
    ports
}

/// `preStop: umount <path>`, so a stopping pod leaves no dead mount behind.
pub(crate) fn umount_on_stop(path: &str) -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["sh".to_string(), "-c".to_string(), format!("umount {}", super::shell_quote(path))]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Labels a worker pod carries, for callers that match pods.
pub fn worker_pod_labels(runtime_name: &str, dataset: &Dataset, keys: &DatasetKeys) -> BTreeMap<String, String> {
    let mut labels = labels::workload_labels(runtime_name, RUNTIME_TYPE, "worker");
    labels.insert(labels::POD_DATASET.to_string(), keys.dataset_id());
    labels.insert(labels::POD_PLACEMENT.to_string(), placement_label(dataset).to_string());
    labels.insert(labels::DATASET_ID.to_string(), keys.dataset_id());
    labels
}
