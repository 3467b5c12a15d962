//! The FUSE DaemonSet: one JuiceFS client per node that carries the dataset's fuse label.

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, HostPathVolumeSource, PodSpec, PodTemplateSpec, SecurityContext, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::api::JuiceFSRuntime;
use crate::api::common::NetworkMode;
use crate::engine::EngineInput;
use crate::error::ModelError;
use crate::labels;

use super::cache::cache_plan;
use super::command::{Role, host_mount_path, mount_script};
use super::pod::{
    DEFAULT_PULL_POLICY, cache_volumes, container_env, option_cache_dirs, owner_reference, plain_env, pod_metadata,
    resolve_image, user_volumes,
};
use super::workers::{metrics_ports, umount_on_stop};
use super::{FUSE_CONTAINER, RUNTIME_TYPE};

/// Name of the volume that carries the FUSE mount to the host.
pub const MOUNT_VOLUME: &str = "juicefs-fuse-mount";
/// Name of the `/dev/fuse` volume.
pub const DEV_FUSE_VOLUME: &str = "dev-fuse";
/// Priority of FUSE pods: evicting one breaks every app pod on the node (Fluid's `criticalFusePod`).
pub const FUSE_PRIORITY_CLASS: &str = "system-node-critical";

/// Builds the FUSE DaemonSet. Its nodeSelector is `{keys.fuse_label(): "true"}` plus the user's,
/// so a FUSE pod starts only where CSI NodeStage put the label.
pub(crate) fn build(input: &EngineInput<'_, JuiceFSRuntime>) -> Result<DaemonSet, ModelError> {
    let runtime = input.runtime;
    let (namespace, name) = (input.namespace(), input.name());
    let fuse = runtime.spec.fuse.clone().unwrap_or_default();
    let cache = cache_plan(runtime.spec.tieredstore.as_ref())?;
    let script = mount_script(input, Role::Fuse, &cache)?;
    let fluid_path = input.fluid_path();
    let host_path = host_mount_path(&input.config.mount_root, &namespace, &name);

    let selector_labels = labels::workload_labels(&name, RUNTIME_TYPE, "fuse");
    let mut object_labels = selector_labels.clone();
    object_labels.insert(labels::DATASET_ID.to_string(), input.keys.dataset_id());
    let (pod_labels, pod_annotations) =
        pod_metadata(runtime.spec.pod_metadata.as_ref(), fuse.pod_metadata.as_ref(), object_labels.clone());

    // The user's selector first: the fuse label must win.
    let mut node_selector = fuse.node_selector.clone();
    node_selector.insert(input.keys.fuse_label(), "true".to_string());

    let mut volumes = vec![
        host_path_volume(MOUNT_VOLUME, &host_path, "DirectoryOrCreate"),
        host_path_volume(DEV_FUSE_VOLUME, "/dev/fuse", "CharDevice"),
    ];
    let mut volume_mounts = vec![
        VolumeMount {
            name: MOUNT_VOLUME.to_string(),
            mount_path: host_path.clone(),
            mount_propagation: Some("Bidirectional".to_string()),
            ..Default::default()
        },
        VolumeMount { name: DEV_FUSE_VOLUME.to_string(), mount_path: "/dev/fuse".to_string(), ..Default::default() },
    ];
    let (cache_vols, cache_mounts) = cache_volumes(&cache, &option_cache_dirs(Some(&fuse.options)));
    volumes.extend(cache_vols);
    volume_mounts.extend(cache_mounts);
    volumes.extend(user_volumes(input, &fuse.volume_mounts, "spec.fuse.volumeMounts")?);
    volume_mounts.extend(fuse.volume_mounts.iter().cloned());

    // The FUSE image follows `juicefsVersion` unless `fuse.image` says otherwise.
    let version = runtime.spec.juicefs_version.as_ref();
    let image = resolve_image(
        fuse.image.as_deref().or(version.and_then(|v| v.image.as_deref())),
        fuse.image_tag.as_deref().or(version.and_then(|v| v.image_tag.as_deref())),
        &input.config.fuse_image,
    );
    let identity = vec![
        plain_env("FLUID_RUNTIME_TYPE", RUNTIME_TYPE),
        plain_env("FLUID_RUNTIME_NS", &namespace),
        plain_env("FLUID_RUNTIME_NAME", &name),
    ];
    let container = Container {
        name: FUSE_CONTAINER.to_string(),
        image: Some(image),
        image_pull_policy: Some(
            fuse.image_pull_policy
                .clone()
                .or_else(|| version.and_then(|v| v.image_pull_policy.clone()))
                .unwrap_or_else(|| DEFAULT_PULL_POLICY.to_string()),
        ),
        command: Some(vec!["sh".to_string(), "-c".to_string(), script]),
        env: Some(container_env(input.dataset, &fuse.env, identity)?),
        ports: Some(metrics_ports(&[])),
        resources: super::memory::fuse_resources(input.runtime),
        security_context: Some(SecurityContext {
            privileged: Some(true),
            run_as_user: Some(0),
            capabilities: Some(Capabilities { add: Some(vec!["SYS_ADMIN".to_string()]), drop: None }),
            ..Default::default()
        }),
        lifecycle: Some(umount_on_stop(&fluid_path)),
        volume_mounts: Some(volume_mounts),
        ..Default::default()
    };
    let host_network = fuse.network_mode == Some(NetworkMode::HostNetwork);
    let pull_secrets =
        if fuse.image_pull_secrets.is_empty() { &runtime.spec.image_pull_secrets } else { &fuse.image_pull_secrets };
    let pod_spec = PodSpec {
        node_selector: Some(node_selector),
        // A FUSE pod must run wherever an app pod needs it, taints or not (Fluid's chart).
        tolerations: Some(vec![Toleration { operator: Some("Exists".to_string()), ..Default::default() }]),
        priority_class_name: Some(FUSE_PRIORITY_CLASS.to_string()),
        containers: vec![container],
        volumes: Some(volumes),
        host_network: host_network.then_some(true),
        dns_policy: host_network.then(|| "ClusterFirstWithHostNet".to_string()),
        enable_service_links: Some(false),
        image_pull_secrets: (!pull_secrets.is_empty()).then(|| pull_secrets.clone()),
        restart_policy: Some("Always".to_string()),
        ..Default::default()
    };
    Ok(DaemonSet {
        metadata: ObjectMeta {
            name: Some(input.names.fuse.clone()),
            namespace: Some(namespace),
            labels: Some(object_labels),
            owner_references: Some(vec![owner_reference(runtime)?]),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            // Fluid's default: a FUSE pod is only replaced when deleted, never under a running app.
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                rolling_update: None,
            }),
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

fn host_path_volume(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.to_string(),
        host_path: Some(HostPathVolumeSource { path: path.to_string(), type_: Some(type_.to_string()) }),
        ..Default::default()
    }
}
