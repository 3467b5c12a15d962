//! Kubelet's volume-manager rules for a CSI volume of a pod: where it is staged and published,
//! with which capability and context. The simulated kubelet and the testbed's node agent both
//! build their CSI requests here, so the two speak to the plugin alike.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{CSIPersistentVolumeSource, PersistentVolume, PodSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use super::request::{AccessMode, Capability, PublishRequest, StageRequest, UnpublishRequest, UnstageRequest};

/// Kubelet's root directory.
pub const KUBELET_ROOT: &str = "/var/lib/kubelet";

/// The volume context keys kubelet adds when the CSIDriver sets `podInfoOnMount`.
pub const POD_INFO_NAME: &str = "csi.storage.k8s.io/pod.name";
/// See [`POD_INFO_NAME`].
pub const POD_INFO_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
/// See [`POD_INFO_NAME`].
pub const POD_INFO_UID: &str = "csi.storage.k8s.io/pod.uid";
/// See [`POD_INFO_NAME`].
pub const POD_INFO_SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
/// See [`POD_INFO_NAME`]: `"false"` for a persistent volume.
pub const POD_INFO_EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";

/// The global staging path of a CSI volume on a node: one per volume handle, shared by every pod
/// of the node that uses it (`plugins/kubernetes.io/csi/<driver>/<sha256 of handle>/globalmount`).
pub fn staging_path(driver: &str, volume_handle: &str) -> String {
    let digest = Sha256::digest(volume_handle.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("{KUBELET_ROOT}/plugins/kubernetes.io/csi/{driver}/{hex}/globalmount")
}

/// The per-pod publish target of a CSI persistent volume.
pub fn target_path(pod_uid: &str, pv_name: &str) -> String {
    format!("{KUBELET_ROOT}/pods/{pod_uid}/volumes/kubernetes.io~csi/{pv_name}/mount")
}

/// The capability kubelet asks for: a filesystem mount in the mode of the PV's *first* access
/// mode (ReadWriteOnce when the PV lists none), with the PV's mount options as mount flags.
pub fn capability_for(access_modes: &[String], mount_options: &[String]) -> Capability {
    let mode = match access_modes.first().map(String::as_str) {
        Some("ReadWriteMany") => AccessMode::MultiNodeMultiWriter,
        Some("ReadOnlyMany") => AccessMode::MultiNodeReaderOnly,
        Some("ReadWriteOncePod") => AccessMode::SingleNodeSingleWriter,
        _ => AccessMode::SingleNodeWriter,
    };
    let mut capability = Capability::mount(mode);
    capability.access_type = super::AccessType::Mount { mount_flags: mount_options.to_vec() };
    capability
}

/// One CSI volume of a pod, as kubelet sees it: which PV, and the four requests it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCsiVolume {
    /// The pod's volume name.
    pub volume_name: String,
    /// The PV bound to the claim.
    pub pv_name: String,
    /// The CSI driver.
    pub driver: String,
    /// NodeStageVolume.
    pub stage: StageRequest,
    /// NodePublishVolume.
    pub publish: PublishRequest,
}

impl PodCsiVolume {
    /// NodeUnpublishVolume for the same target.
    pub fn unpublish(&self) -> UnpublishRequest {
        UnpublishRequest { volume_id: self.publish.volume_id.clone(), target_path: self.publish.target_path.clone() }
    }

    /// NodeUnstageVolume for the same staging path.
    pub fn unstage(&self) -> UnstageRequest {
        UnstageRequest {
            volume_id: self.stage.volume_id.clone(),
            staging_target_path: self.stage.staging_target_path.clone(),
        }
    }
}

/// Who a volume is published for: what a `podInfoOnMount` driver learns of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodIdentity {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`: names the pod's directory under kubelet's root.
    pub uid: String,
    /// `spec.serviceAccountName`, `default` when unset.
    pub service_account: String,
}

impl PodIdentity {
    /// The identity of a pod object.
    pub fn of(metadata: &ObjectMeta, spec: Option<&PodSpec>) -> Self {
        Self {
            name: metadata.name.clone().unwrap_or_default(),
            namespace: metadata.namespace.clone().unwrap_or_default(),
            uid: metadata.uid.clone().unwrap_or_default(),
            service_account: spec.and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".to_string()),
        }
    }
}

/// The CSI requests for `volume` of the pod `pod`, whose claim is bound to `pv`. `None` when the
/// volume is no claim or the PV is not a CSI volume. `pod_info_on_mount` is the CSIDriver's flag
/// of the same name.
pub fn pod_csi_volume(
    pod: &PodIdentity,
    volume: &Volume,
    pv: &PersistentVolume,
    pod_info_on_mount: bool,
) -> Option<PodCsiVolume> {
    let claim = volume.persistent_volume_claim.as_ref()?;
    let spec = pv.spec.as_ref()?;
    let csi: &CSIPersistentVolumeSource = spec.csi.as_ref()?;
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let uid = pod.uid.clone();
    let capability = capability_for(
        spec.access_modes.as_deref().unwrap_or_default(),
        spec.mount_options.as_deref().unwrap_or_default(),
    );
    let attributes = csi.volume_attributes.clone().unwrap_or_default();
    let mut publish_context = attributes.clone();
    if pod_info_on_mount {
        publish_context.extend(pod_info(pod));
    }
    let staging = staging_path(&csi.driver, &csi.volume_handle);
    Some(PodCsiVolume {
        volume_name: volume.name.clone(),
        pv_name: pv_name.clone(),
        driver: csi.driver.clone(),
        stage: StageRequest {
            volume_id: csi.volume_handle.clone(),
            staging_target_path: staging.clone(),
            capability: Some(capability.clone()),
            volume_context: attributes,
        },
        publish: PublishRequest {
            volume_id: csi.volume_handle.clone(),
            staging_target_path: staging,
            target_path: target_path(&uid, &pv_name),
            capability: Some(capability),
            // Read-only when the pod's claim says so or the PV's CSI source does.
            readonly: claim.read_only.unwrap_or(false) || csi.read_only.unwrap_or(false),
            volume_context: publish_context,
        },
    })
}

/// The pod's identity as kubelet passes it to a `podInfoOnMount` driver.
fn pod_info(pod: &PodIdentity) -> BTreeMap<String, String> {
    BTreeMap::from([
        (POD_INFO_NAME.to_string(), pod.name.clone()),
        (POD_INFO_NAMESPACE.to_string(), pod.namespace.clone()),
        (POD_INFO_UID.to_string(), pod.uid.clone()),
        (POD_INFO_SERVICE_ACCOUNT.to_string(), pod.service_account.clone()),
        (POD_INFO_EPHEMERAL.to_string(), "false".to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pv(access_modes: &[&str]) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "default-demo" },
            "spec": {
                "accessModes": access_modes,
                "mountOptions": ["noatime"],
                "csi": {
                    "driver": "fuse.csi.fluid.io",
                    "volumeHandle": "default-demo",
                    "volumeAttributes": { "fluid_path": "/runtime-mnt/juicefs/default/demo/juicefs-fuse" }
                }
            }
        }))
        .unwrap()
    }

    fn app_pod(read_only: bool) -> (Pod, Volume) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "app", "namespace": "default", "uid": "u-1" },
            "spec": {
                "containers": [{ "name": "c" }],
                "volumes": [{ "name": "data", "persistentVolumeClaim": { "claimName": "demo", "readOnly": read_only } }]
            }
        }))
        .unwrap();
        let volume = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0].clone();
        (pod, volume)
    }

    #[test]
    fn paths_are_kubelets() {
        // sha256("default-demo"), as `sha256sum` prints it.
        assert_eq!(
            staging_path("fuse.csi.fluid.io", "default-demo"),
            "/var/lib/kubelet/plugins/kubernetes.io/csi/fuse.csi.fluid.io/8a980dd55fc42b22a60356fd1e31175002b96fec3fdf80f7a230729b58deca18/globalmount"
        );
        assert_eq!(
            target_path("u-1", "default-demo"),
            "/var/lib/kubelet/pods/u-1/volumes/kubernetes.io~csi/default-demo/mount"
        );
    }

    #[test]
    fn the_first_access_mode_decides_the_capability() {
        let mode = |modes: &[&str]| {
            let modes: Vec<String> = modes.iter().map(|m| m.to_string()).collect();
            capability_for(&modes, &[]).access_mode
        };
        assert_eq!(mode(&["ReadOnlyMany", "ReadWriteMany"]), Some(AccessMode::MultiNodeReaderOnly));
        assert_eq!(mode(&["ReadWriteMany"]), Some(AccessMode::MultiNodeMultiWriter));
        assert_eq!(mode(&["ReadWriteOncePod"]), Some(AccessMode::SingleNodeSingleWriter));
        assert_eq!(mode(&[]), Some(AccessMode::SingleNodeWriter));
    }

    #[test]
    fn requests_carry_attributes_pod_info_and_read_only() {
        let (pod, volume) = app_pod(true);
        let pod = PodIdentity::of(&pod.metadata, pod.spec.as_ref());
        let v = pod_csi_volume(&pod, &volume, &pv(&["ReadWriteMany"]), true).expect("a CSI volume");
        assert_eq!(v.stage.volume_id, "default-demo");
        assert_eq!(v.stage.staging_target_path, v.publish.staging_target_path);
        assert!(v.publish.readonly);
        assert!(!v.stage.volume_context.contains_key(POD_INFO_NAME), "stage gets the PV's attributes only");
        assert_eq!(v.publish.volume_context.get(POD_INFO_UID).map(String::as_str), Some("u-1"));
        assert_eq!(v.publish.volume_context.get(POD_INFO_SERVICE_ACCOUNT).map(String::as_str), Some("default"));
        assert_eq!(
            v.stage.capability.unwrap().access_type,
            super::super::AccessType::Mount { mount_flags: vec!["noatime".to_string()] }
        );
        let (pod, volume) = app_pod(false);
        let pod = PodIdentity::of(&pod.metadata, pod.spec.as_ref());
        let v = pod_csi_volume(&pod, &volume, &pv(&["ReadWriteMany"]), false).unwrap();
        assert!(!v.publish.readonly);
        assert!(!v.publish.volume_context.contains_key(POD_INFO_NAME));
        assert_eq!(v.unpublish().target_path, v.publish.target_path);
    }
}
