//! Pieces shared by the worker and FUSE pods: owner reference, image, secret env and cache volumes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HostPathVolumeSource, SecretKeySelector, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use crate::api::common::{MediumType, PodMetadata, VolumeType};
use crate::api::{Dataset, JuiceFSRuntime};
use crate::engine::EngineInput;
use crate::error::ModelError;

use super::cache::CachePlan;
use super::command::{env_var_name, first_mount, merged_encrypt_options};

/// Default pull policy, as Fluid's `DefaultImagePullPolicy`.
pub const DEFAULT_PULL_POLICY: &str = "IfNotPresent";

/// The controller owner reference to the runtime, so workloads go away with it.
pub(crate) fn owner_reference(runtime: &JuiceFSRuntime) -> Result<OwnerReference, ModelError> {
    let uid = runtime.metadata.uid.clone().filter(|uid| !uid.is_empty());
    Ok(OwnerReference {
        api_version: "data.fluid.io/v1alpha1".to_string(),
        kind: "JuiceFSRuntime".to_string(),
        name: runtime.metadata.name.clone().ok_or(ModelError::MissingField { field: "metadata.name".into() })?,
        uid: uid.ok_or(ModelError::MissingField { field: "metadata.uid".into() })?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// `repository:tag` from the user's image and tag, falling back to `default` part by part.
pub(crate) fn resolve_image(image: Option<&str>, tag: Option<&str>, default: &str) -> String {
    let (default_repo, default_tag) = split_image(default);
    let repo = image.map(str::trim).filter(|s| !s.is_empty()).unwrap_or(default_repo);
    let tag = tag.map(str::trim).filter(|s| !s.is_empty()).or(default_tag);
    match tag {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo.to_string(),
    }
}

/// Splits `repo[:tag]`, minding a registry port (`host:5000/repo:tag`).
fn split_image(image: &str) -> (&str, Option<&str>) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (image, None),
    }
}

/// One env var per encrypted option (`access-key` → `ACCESS_KEY`), read from its Secret.
pub(crate) fn secret_env(dataset: &Dataset) -> Result<Vec<EnvVar>, ModelError> {
    let mount = first_mount(dataset)?;
    merged_encrypt_options(dataset, mount)
        .into_iter()
        .map(|option| {
            let name = env_var_name(&option.name).ok_or_else(|| {
                ModelError::invalid(
                    "dataset.spec.mounts[0].encryptOptions",
                    format!("{:?} cannot be an environment variable name", option.name),
                )
            })?;
            let secret = &option.value_from.secret_key_ref;
            Ok(EnvVar {
                name,
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.name.clone(),
                        key: secret.key.clone(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            })
        })
        .collect()
}

/// `JFS_FOREGROUND=1` (as Fluid's charts), then the secrets, then the user's own variables.
pub(crate) fn container_env(dataset: &Dataset, user: &[EnvVar], extra: Vec<EnvVar>) -> Result<Vec<EnvVar>, ModelError> {
    let mut env = vec![plain_env("JFS_FOREGROUND", "1")];
    env.extend(secret_env(dataset)?);
    env.extend(extra);
    env.extend(user.iter().cloned());
    Ok(env)
}

/// A plain `name=value` env var.
pub(crate) fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value.to_string()), value_from: None }
}

/// Volumes and mounts of the cache directories: hostPath (DirectoryOrCreate) or emptyDir
/// (memory-backed for `MEM`), each mounted at its own path. `extra_dirs` are directories the
/// user named in a `cache-dir` option; they are hostPaths, as in Fluid.
pub(crate) fn cache_volumes(cache: &CachePlan, extra_dirs: &[String]) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let planned = cache.dirs.iter().map(|dir| (dir.path.as_str(), cache.volume_type));
    let extra = extra_dirs.iter().map(|path| (path.as_str(), VolumeType::HostPath));
    for (path, volume_type) in planned.chain(extra) {
        if seen.contains(&path) {
            continue;
        }
        seen.push(path);
        let name = format!("cache-dir-{}", seen.len());
        let mut volume = Volume { name: name.clone(), ..Default::default() };
        match volume_type {
            VolumeType::EmptyDir => {
                let medium = (cache.medium == Some(MediumType::Memory)).then(|| "Memory".to_string());
                volume.empty_dir = Some(EmptyDirVolumeSource { medium, size_limit: None });
            }
            // volumeTemplate is refused by validation; treat it as a hostPath if it gets here.
            VolumeType::HostPath | VolumeType::VolumeTemplate => {
                volume.host_path =
                    Some(HostPathVolumeSource { path: path.to_string(), type_: Some("DirectoryOrCreate".to_string()) });
            }
        }
        volumes.push(volume);
        mounts.push(VolumeMount { name, mount_path: path.to_string(), ..Default::default() });
    }
    (volumes, mounts)
}

/// Directories named by a user `cache-dir` option, `:`-separated, that need a volume.
pub(crate) fn option_cache_dirs(options: Option<&BTreeMap<String, String>>) -> Vec<String> {
    options
        .and_then(|options| options.get("cache-dir"))
        .map(|dirs| dirs.split(':').map(str::trim).filter(|dir| dir.starts_with('/')).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The user's volumes that `mounts` refer to, from `spec.volumes`. Errors name `field`.
pub(crate) fn user_volumes(
    input: &EngineInput<'_, JuiceFSRuntime>,
    mounts: &[VolumeMount],
    field: &str,
) -> Result<Vec<Volume>, ModelError> {
    let mut volumes: Vec<Volume> = Vec::new();
    for (index, mount) in mounts.iter().enumerate() {
        if volumes.iter().any(|volume| volume.name == mount.name) {
            continue;
        }
        let volume = input.runtime.spec.volumes.iter().find(|volume| volume.name == mount.name).ok_or_else(|| {
            ModelError::invalid(
                format!("{field}[{index}].name"),
                format!("no volume named {:?} in spec.volumes", mount.name),
            )
        })?;
        volumes.push(volume.clone());
    }
    Ok(volumes)
}

/// Pod labels and annotations: the runtime's `podMetadata`, then the component's; `ours` last so
/// a user label can never break a selector.
pub(crate) fn pod_metadata(
    runtime_level: Option<&PodMetadata>,
    component: Option<&PodMetadata>,
    ours: BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = BTreeMap::new();
    let mut annotations = BTreeMap::new();
    for metadata in [runtime_level, component].into_iter().flatten() {
        labels.extend(metadata.labels.clone());
        annotations.extend(metadata.annotations.clone());
    }
    labels.extend(ours);
    (labels, annotations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_fall_back_part_by_part() {
        let default = "juicedata/juicefs-fuse:ce-v1.1.0-rc1";
        assert_eq!(resolve_image(None, None, default), default);
        assert_eq!(
            resolve_image(Some("juicedata/juicefs-fuse"), Some("ce-v1.1.1"), default),
            "juicedata/juicefs-fuse:ce-v1.1.1"
        );
        assert_eq!(resolve_image(Some("my/jfs"), None, default), "my/jfs:ce-v1.1.0-rc1");
        assert_eq!(resolve_image(None, Some("nightly"), default), "juicedata/juicefs-fuse:nightly");
        assert_eq!(resolve_image(Some(""), Some(" "), default), default);
        assert_eq!(resolve_image(None, Some("v2"), "registry:5000/jfs"), "registry:5000/jfs:v2");
    }
}
