//! A memory cache tier needs memory: the FUSE client's request is raised to the tier's quota,
//! and a quota over its memory limit is refused (Fluid's `transform_resources.go` rule).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;

use crate::api::{JuiceFSRuntime, MediumType};
use crate::error::ModelError;
use crate::quantity::parse_bytes;

/// The quota of the first tier when it is in memory and the FUSE options do not size the cache
/// themselves (`cache-size`): what the FUSE container's memory must hold.
fn memory_quota(runtime: &JuiceFSRuntime) -> Option<(&str, u64)> {
    let level = runtime.spec.tieredstore.as_ref()?.levels.first()?;
    if level.medium_type != MediumType::Memory {
        return None;
    }
    let sized_by_option = runtime.spec.fuse.as_ref().is_some_and(|fuse| fuse.options.contains_key("cache-size"));
    if sized_by_option {
        return None;
    }
    let quota = level.quota.as_ref()?;
    Some((quota.0.as_str(), parse_bytes(&quota.0).ok()?))
}

fn memory_of(list: Option<&std::collections::BTreeMap<String, KubeQuantity>>) -> Option<u64> {
    parse_bytes(&list?.get("memory")?.0).ok()
}

/// Refuses a memory tier larger than the FUSE container's memory limit.
pub fn check(runtime: &JuiceFSRuntime) -> Result<(), ModelError> {
    let Some((quota, quota_bytes)) = memory_quota(runtime) else { return Ok(()) };
    let resources = runtime.spec.fuse.as_ref().and_then(|fuse| fuse.resources.as_ref());
    match memory_of(resources.and_then(|r| r.limits.as_ref())) {
        Some(limit_bytes) if limit_bytes > 0 && quota_bytes > limit_bytes => Err(ModelError::invalid(
            "spec.tieredstore.levels[0].quota",
            format!(
                "the memory tier's {quota} is more than spec.fuse.resources.limits.memory ({limit_bytes} bytes): the FUSE client would be killed for its cache; raise the limit or lower the quota"
            ),
        )),
        _ => Ok(()),
    }
}

/// The FUSE container's resources: as given, with the memory request raised to a memory
/// tier's quota when it is missing or lower.
pub fn fuse_resources(runtime: &JuiceFSRuntime) -> Option<ResourceRequirements> {
    let given = runtime.spec.fuse.as_ref().and_then(|fuse| fuse.resources.clone());
    let Some((quota, quota_bytes)) = memory_quota(runtime) else { return given };
    let mut resources = given.unwrap_or_default();
    let requested = memory_of(resources.requests.as_ref()).unwrap_or(0);
    if requested < quota_bytes {
        resources
            .requests
            .get_or_insert_with(Default::default)
            .insert("memory".to_string(), KubeQuantity(quota.to_string()));
    }
    Some(resources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JuiceFSFuseSpec, JuiceFSRuntimeSpec, TieredStore};

    fn runtime(medium: MediumType, quota: &str, fuse: Option<JuiceFSFuseSpec>) -> JuiceFSRuntime {
        let level =
            serde_json::from_value(serde_json::json!({"mediumtype": medium, "path": "/dev/shm", "quota": quota}))
                .expect("a level");
        let spec =
            JuiceFSRuntimeSpec { tieredstore: Some(TieredStore { levels: vec![level] }), fuse, ..Default::default() };
        JuiceFSRuntime::new("demo", spec)
    }

    fn fuse_with(requests: Option<&str>, limits: Option<&str>, options: &[(&str, &str)]) -> JuiceFSFuseSpec {
        let list = |memory: Option<&str>| {
            memory.map(|m| std::collections::BTreeMap::from([("memory".to_string(), KubeQuantity(m.into()))]))
        };
        JuiceFSFuseSpec {
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..Default::default()
            }),
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn requested(resources: Option<ResourceRequirements>) -> Option<String> {
        Some(resources?.requests?.get("memory")?.0.clone())
    }

    #[test]
    fn a_memory_tier_raises_the_fuse_memory_request_to_its_quota() {
        assert_eq!(requested(fuse_resources(&runtime(MediumType::Memory, "2Gi", None))), Some("2Gi".into()));
        let low = runtime(MediumType::Memory, "2Gi", Some(fuse_with(Some("1Gi"), None, &[])));
        assert_eq!(requested(fuse_resources(&low)), Some("2Gi".into()), "a lower request is raised");
        let high = runtime(MediumType::Memory, "2Gi", Some(fuse_with(Some("4Gi"), None, &[])));
        assert_eq!(requested(fuse_resources(&high)), Some("4Gi".into()), "a higher request stays");
        let ssd = runtime(MediumType::Ssd, "2Gi", None);
        assert_eq!(fuse_resources(&ssd), None, "only a memory tier");
        let sized = runtime(MediumType::Memory, "2Gi", Some(fuse_with(None, None, &[("cache-size", "1024")])));
        assert_eq!(requested(fuse_resources(&sized)), None, "cache-size sizes the cache itself");
    }

    #[test]
    fn a_memory_tier_over_the_fuse_memory_limit_is_refused_naming_the_quota() {
        let over = runtime(MediumType::Memory, "4Gi", Some(fuse_with(None, Some("2Gi"), &[])));
        let error = check(&over).unwrap_err().to_string();
        assert!(error.starts_with("spec.tieredstore.levels[0].quota:") && error.contains("4Gi"), "{error}");
        assert!(check(&runtime(MediumType::Memory, "2Gi", Some(fuse_with(None, Some("2Gi"), &[])))).is_ok());
        assert!(check(&runtime(MediumType::Ssd, "4Gi", Some(fuse_with(None, Some("2Gi"), &[])))).is_ok());
    }
}
