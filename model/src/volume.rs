//! The static PV and PVC of a dataset, and the CSI volume attributes they carry.

/// The CSI driver name, which `GetPluginInfo` must return and the PV names.
pub const CSI_DRIVER: &str = "fuse.csi.fluid.io";
/// The storage class of dataset PVs and PVCs.
pub const STORAGE_CLASS: &str = "fluid";
/// Default PVC and PV capacity, overridable with [`crate::labels::PVC_STORAGE_REQUEST`].
pub const DEFAULT_CAPACITY: &str = "100Pi";
/// Volume attribute: the host directory where the FUSE daemon mounts the dataset.
pub const ATTR_FLUID_PATH: &str = "fluid_path";
/// Volume attribute: the FUSE filesystem type (`JuiceFS` for JuiceFS).
pub const ATTR_MOUNT_TYPE: &str = "mount_type";
/// Volume attribute: the runtime's namespace.
pub const ATTR_RUNTIME_NAMESPACE: &str = "runtime_namespace";
/// Volume attribute: the runtime's name.
pub const ATTR_RUNTIME_NAME: &str = "runtime_name";
/// Volume attribute: the node label key that starts the FUSE pod (computed once by the controller).
pub const ATTR_FUSE_LABEL_KEY: &str = "mount_pod_node_selector_key";
/// Volume attribute: the node label value that starts the FUSE pod.
pub const ATTR_FUSE_LABEL_VALUE: &str = "mount_pod_node_selector_value";
/// Volume attribute: a sub-directory of the FUSE mount to publish instead of its root.
pub const ATTR_SUB_PATH: &str = "fluid_sub_path";
/// Volume attribute: the FUSE clean policy, `OnRuntimeDeleted` (default) or `OnDemand`.
pub const ATTR_CLEAN_POLICY: &str = "fuse_clean_policy";
/// Default root of FUSE mounts on the host.
pub const DEFAULT_MOUNT_ROOT: &str = "/runtime-mnt";

use kube::Resource;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeSpec, VolumeNodeAffinity,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::api::{Dataset, FuseCleanPolicy};
use crate::engine::{Engine, EngineInput, RuntimeResource};
use crate::error::ModelError;
use crate::labels::{self, DatasetKeys, WorkloadNames};
use crate::quantity::parse_bytes;

/// The access mode Fluid gives a dataset that names none.
pub const DEFAULT_ACCESS_MODE: &str = "ReadOnlyMany";
/// Retain: the PV never deletes data; ferrofluid deletes the PV object itself on teardown.
pub const RECLAIM_POLICY: &str = "Retain";

/// Everything the PV and PVC of one dataset are built from.
#[derive(Debug, Clone)]
pub struct VolumeInput<'a> {
    /// The dataset (namespace, name, access modes, capacity annotation).
    pub dataset: &'a Dataset,
    /// The dataset's keys: the fuse label and the identity labels.
    pub keys: &'a DatasetKeys,
    /// PV and PVC names.
    pub names: &'a WorkloadNames,
    /// Host directory of the FUSE mount.
    pub fluid_path: String,
    /// FUSE filesystem type, e.g. `JuiceFS`.
    pub mount_type: &'a str,
    /// The runtime's namespace.
    pub runtime_namespace: &'a str,
    /// The runtime's name.
    pub runtime_name: &'a str,
    /// When the FUSE pod of a node goes away.
    pub clean_policy: FuseCleanPolicy,
    /// The runtime's extra FUSE node selector; non-empty means the PV gets a node affinity.
    pub fuse_node_selector: BTreeMap<String, String>,
    /// Publish this sub-directory of the FUSE mount (relative), instead of its root.
    pub sub_path: Option<String>,
}

impl<'a> VolumeInput<'a> {
    /// The volume input of an engine's dataset/runtime pair, without a sub-path.
    pub fn from_engine<E: Engine>(engine: &E, input: &'a EngineInput<'a, E::Runtime>) -> Self {
        let meta = input.runtime.meta();
        Self {
            dataset: input.dataset,
            keys: input.keys,
            names: input.names,
            fluid_path: engine.fluid_path(input),
            mount_type: engine.mount_type(),
            runtime_namespace: meta.namespace.as_deref().unwrap_or_default(),
            runtime_name: meta.name.as_deref().unwrap_or_default(),
            clean_policy: input.runtime.fuse_clean_policy(),
            fuse_node_selector: input.runtime.fuse_node_selector(),
            sub_path: None,
        }
    }

    fn namespace(&self) -> Result<&'a str, ModelError> {
        self.dataset
            .metadata
            .namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .ok_or(ModelError::MissingField { field: "dataset.metadata.namespace".to_string() })
    }

    /// The dataset's access modes, or Fluid's default `ReadOnlyMany`.
    pub fn access_modes(&self) -> Vec<String> {
        if self.dataset.spec.access_modes.is_empty() {
            vec![DEFAULT_ACCESS_MODE.to_string()]
        } else {
            self.dataset.spec.access_modes.clone()
        }
    }

    /// The capacity: the dataset's `pvc.fluid.io/resources.requests.storage` annotation, checked, or `100Pi`.
    pub fn capacity(&self) -> Result<Quantity, ModelError> {
        let annotations = self.dataset.metadata.annotations.as_ref();
        match annotations.and_then(|a| a.get(labels::PVC_STORAGE_REQUEST)) {
            None => Ok(Quantity(DEFAULT_CAPACITY.to_string())),
            Some(value) => {
                let field = format!("dataset.metadata.annotations[{}]", labels::PVC_STORAGE_REQUEST);
                let bytes = parse_bytes(value).map_err(|reason| ModelError::BadQuantity {
                    field: field.clone(),
                    value: value.clone(),
                    reason,
                })?;
                if bytes == 0 {
                    return Err(ModelError::invalid(
                        field,
                        "a volume of 0 bytes cannot be bound; give a size such as 10Gi",
                    ));
                }
                Ok(Quantity(value.trim().to_string()))
            }
        }
    }

    /// The CSI volume attributes, as `NodeStageVolume`/`NodePublishVolume` read them.
    pub fn volume_attributes(&self) -> Result<BTreeMap<String, String>, ModelError> {
        let mut attributes = BTreeMap::from([
            (ATTR_FLUID_PATH.to_string(), self.fluid_path.clone()),
            (ATTR_MOUNT_TYPE.to_string(), self.mount_type.to_string()),
            (ATTR_RUNTIME_NAMESPACE.to_string(), self.runtime_namespace.to_string()),
            (ATTR_RUNTIME_NAME.to_string(), self.runtime_name.to_string()),
            (ATTR_FUSE_LABEL_KEY.to_string(), self.keys.fuse_label()),
            (ATTR_FUSE_LABEL_VALUE.to_string(), "true".to_string()),
            (ATTR_CLEAN_POLICY.to_string(), self.clean_policy.as_str().to_string()),
        ]);
        if let Some(sub_path) = self.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub_path.starts_with('/') || sub_path.split('/').any(|part| part == "..") {
                return Err(ModelError::invalid(
                    ATTR_SUB_PATH,
                    format!("{sub_path:?} must be relative to the FUSE mount and must not contain '..'"),
                ));
            }
            attributes.insert(ATTR_SUB_PATH.to_string(), sub_path.to_string());
        }
        Ok(attributes)
    }

    /// Labels of the PV and PVC: the common label (how Fluid's webhook spots dataset PVCs) and the dataset id.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (self.keys.common_label(), "true".to_string()),
            (labels::DATASET_ID.to_string(), self.keys.dataset_id()),
        ])
    }

    /// `CreatedBy: fluid`: Fluid (and ferrofluid) delete only PVs and PVCs carrying it.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(labels::CREATED_BY.to_string(), labels::CREATED_BY_FLUID.to_string())])
    }
}

/// The static PV of a dataset, pre-bound to its PVC. No ownerReference: teardown deletes it explicitly.
pub fn persistent_volume(input: &VolumeInput<'_>) -> Result<PersistentVolume, ModelError> {
    let namespace = input.namespace()?;
    let node_affinity = (!input.fuse_node_selector.is_empty()).then(|| VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(
                    input
                        .fuse_node_selector
                        .iter()
                        .map(|(key, value)| NodeSelectorRequirement {
                            key: key.clone(),
                            operator: "In".to_string(),
                            values: Some(vec![value.clone()]),
                        })
                        .collect(),
                ),
                match_fields: None,
            }],
        }),
    });
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(input.names.persistent_volume.clone()),
            labels: Some(input.labels()),
            annotations: Some(input.annotations()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(input.access_modes()),
            capacity: Some(BTreeMap::from([("storage".to_string(), input.capacity()?)])),
            csi: Some(CSIPersistentVolumeSource {
                driver: CSI_DRIVER.to_string(),
                volume_handle: input.names.persistent_volume.clone(),
                volume_attributes: Some(input.volume_attributes()?),
                ..Default::default()
            }),
            claim_ref: Some(ObjectReference {
                namespace: Some(namespace.to_string()),
                name: Some(input.names.persistent_volume_claim.clone()),
                ..Default::default()
            }),
            persistent_volume_reclaim_policy: Some(RECLAIM_POLICY.to_string()),
            storage_class_name: Some(STORAGE_CLASS.to_string()),
            volume_mode: Some("Filesystem".to_string()),
            node_affinity,
            ..Default::default()
        }),
        status: None,
    })
}

/// The PVC `<ns>/<name>` of a dataset, bound to its PV by name and by the common label.
pub fn persistent_volume_claim(input: &VolumeInput<'_>) -> Result<PersistentVolumeClaim, ModelError> {
    let namespace = input.namespace()?;
    Ok(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(input.names.persistent_volume_claim.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(input.labels()),
            annotations: Some(input.annotations()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(input.access_modes()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), input.capacity()?)])),
                limits: None,
            }),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(input.keys.common_label(), "true".to_string())])),
                match_expressions: None,
            }),
            storage_class_name: Some(STORAGE_CLASS.to_string()),
            volume_mode: Some("Filesystem".to_string()),
            volume_name: Some(input.names.persistent_volume.clone()),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::JuiceFSRuntime;
    use crate::engine::EngineConfig;
    use crate::engine::juicefs::JuiceFsEngine;
    use proptest::prelude::*;

    const UID: &str = "5d0b7a3c-1f2e-4c5d-9e8f-0a1b2c3d4e5f";

    fn dataset(yaml_extra: &str) -> Dataset {
        let yaml = format!(
            "apiVersion: data.fluid.io/v1alpha1\nkind: Dataset\nmetadata:\n  name: jfsdemo\n  namespace: default\n  uid: {UID}\n{yaml_extra}spec:\n  mounts:\n    - name: test\n      mountPoint: juicefs:///demo\n"
        );
        serde_yaml_ng::from_str(&yaml).unwrap()
    }

    struct Fixture {
        dataset: Dataset,
        keys: DatasetKeys,
        names: WorkloadNames,
    }

    impl Fixture {
        fn new(dataset: Dataset) -> Self {
            let (ns, name) = (dataset.metadata.namespace.clone().unwrap(), dataset.metadata.name.clone().unwrap());
            let keys = DatasetKeys::new(&ns, &name, dataset.metadata.uid.as_deref()).unwrap();
            let names = WorkloadNames::new(&ns, &name, "juicefs");
            Self { dataset, keys, names }
        }

        fn input(&self) -> VolumeInput<'_> {
            VolumeInput {
                dataset: &self.dataset,
                keys: &self.keys,
                names: &self.names,
                fluid_path: "/runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse".to_string(),
                mount_type: "JuiceFS",
                runtime_namespace: "default",
                runtime_name: "jfsdemo",
                clean_policy: FuseCleanPolicy::OnRuntimeDeleted,
                fuse_node_selector: BTreeMap::new(),
                sub_path: None,
            }
        }
    }

    #[test]
    fn pv_matches_the_seed_and_fluid() {
        let fixture = Fixture::new(dataset(""));
        let pv = persistent_volume(&fixture.input()).unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("default-jfsdemo"));
        assert_eq!(pv.metadata.namespace, None);
        assert_eq!(pv.metadata.owner_references, None);
        let labels = pv.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["fluid.io/s-default-jfsdemo"], "true");
        assert_eq!(labels["fluid.io/dataset-id"], "default-jfsdemo");
        assert_eq!(pv.metadata.annotations.as_ref().unwrap()["CreatedBy"], "fluid");
        let spec = pv.spec.unwrap();
        let csi = spec.csi.unwrap();
        assert_eq!(csi.driver, "fuse.csi.fluid.io");
        assert_eq!(csi.volume_handle, "default-jfsdemo");
        let attrs = csi.volume_attributes.unwrap();
        assert_eq!(attrs["fluid_path"], "/runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse");
        assert_eq!(attrs["mount_type"], "JuiceFS");
        assert_eq!(attrs["runtime_namespace"], "default");
        assert_eq!(attrs["runtime_name"], "jfsdemo");
        assert_eq!(attrs["mount_pod_node_selector_key"], "fluid.io/f-default-jfsdemo");
        assert_eq!(attrs["mount_pod_node_selector_value"], "true");
        assert_eq!(attrs["fuse_clean_policy"], "OnRuntimeDeleted");
        assert!(!attrs.contains_key("fluid_sub_path"));
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Retain"));
        assert_eq!(spec.storage_class_name.as_deref(), Some("fluid"));
        assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
        assert_eq!(spec.access_modes, Some(vec!["ReadOnlyMany".to_string()]));
        assert_eq!(spec.capacity.unwrap()["storage"], Quantity("100Pi".into()));
        let claim = spec.claim_ref.unwrap();
        assert_eq!((claim.namespace.as_deref(), claim.name.as_deref()), (Some("default"), Some("jfsdemo")));
        assert_eq!(spec.node_affinity, None);
    }

    #[test]
    fn pvc_is_bound_to_the_pv() {
        let fixture = Fixture::new(dataset(""));
        let pvc = persistent_volume_claim(&fixture.input()).unwrap();
        assert_eq!(pvc.metadata.name.as_deref(), Some("jfsdemo"));
        assert_eq!(pvc.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(pvc.metadata.owner_references, None);
        assert_eq!(pvc.metadata.annotations.as_ref().unwrap()["CreatedBy"], "fluid");
        assert_eq!(pvc.metadata.labels.as_ref().unwrap()["fluid.io/s-default-jfsdemo"], "true");
        let spec = pvc.spec.unwrap();
        assert_eq!(spec.volume_name.as_deref(), Some("default-jfsdemo"));
        assert_eq!(spec.storage_class_name.as_deref(), Some("fluid"));
        assert_eq!(spec.access_modes, Some(vec!["ReadOnlyMany".to_string()]));
        assert_eq!(spec.resources.unwrap().requests.unwrap()["storage"], Quantity("100Pi".into()));
        let pv = persistent_volume(&fixture.input()).unwrap();
        // The PVC's selector matches the PV's labels, so binding by selector agrees with volumeName.
        let pv_labels = pv.metadata.labels.unwrap();
        for (key, value) in spec.selector.unwrap().match_labels.unwrap() {
            assert_eq!(pv_labels.get(&key), Some(&value));
        }
    }

    #[test]
    fn access_modes_and_capacity_come_from_the_dataset() {
        let annotation = format!("  annotations:\n    {}: 20Gi\n", labels::PVC_STORAGE_REQUEST);
        let mut ds = dataset(&annotation);
        ds.spec.access_modes = vec!["ReadWriteMany".into()];
        let fixture = Fixture::new(ds);
        let pv = persistent_volume(&fixture.input()).unwrap();
        let spec = pv.spec.unwrap();
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteMany".to_string()]));
        assert_eq!(spec.capacity.unwrap()["storage"], Quantity("20Gi".into()));
        let pvc = persistent_volume_claim(&fixture.input()).unwrap();
        assert_eq!(pvc.spec.unwrap().resources.unwrap().requests.unwrap()["storage"], Quantity("20Gi".into()));
    }

    #[test]
    fn a_bad_capacity_annotation_is_an_error_naming_it() {
        for bad in ["lots", "0", "-1Gi"] {
            let annotation = format!("  annotations:\n    {}: \"{bad}\"\n", labels::PVC_STORAGE_REQUEST);
            let fixture = Fixture::new(dataset(&annotation));
            let err = persistent_volume(&fixture.input()).unwrap_err();
            assert_eq!(
                err.field(),
                Some("dataset.metadata.annotations[pvc.fluid.io/resources.requests.storage]"),
                "{bad}"
            );
            assert!(persistent_volume_claim(&fixture.input()).is_err());
        }
    }

    #[test]
    fn fuse_node_selector_becomes_pv_node_affinity() {
        let fixture = Fixture::new(dataset(""));
        let mut input = fixture.input();
        input.fuse_node_selector = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        input.clean_policy = FuseCleanPolicy::OnDemand;
        input.sub_path = Some("models/v1".to_string());
        let spec = persistent_volume(&input).unwrap().spec.unwrap();
        let terms = spec.node_affinity.unwrap().required.unwrap().node_selector_terms;
        let expr = &terms[0].match_expressions.as_ref().unwrap()[0];
        assert_eq!((expr.key.as_str(), expr.operator.as_str()), ("zone", "In"));
        assert_eq!(expr.values.as_deref(), Some(&["a".to_string()][..]));
        let attrs = spec.csi.unwrap().volume_attributes.unwrap();
        assert_eq!(attrs["fuse_clean_policy"], "OnDemand");
        assert_eq!(attrs["fluid_sub_path"], "models/v1");
    }

    #[test]
    fn escaping_sub_paths_are_refused() {
        let fixture = Fixture::new(dataset(""));
        for bad in ["/etc", "../x", "a/../../b"] {
            let mut input = fixture.input();
            input.sub_path = Some(bad.to_string());
            assert_eq!(persistent_volume(&input).unwrap_err().field(), Some(ATTR_SUB_PATH), "{bad}");
        }
    }

    #[test]
    fn missing_namespace_is_an_error() {
        let mut ds = dataset("");
        let fixture = Fixture::new(ds.clone());
        ds.metadata.namespace = None;
        let input = VolumeInput { dataset: &ds, ..fixture.input() };
        assert_eq!(persistent_volume(&input).unwrap_err().field(), Some("dataset.metadata.namespace"));
    }

    #[test]
    fn from_engine_fills_the_runtime_fields() {
        let fixture = Fixture::new(dataset(""));
        let runtime: JuiceFSRuntime = serde_yaml_ng::from_str(
            "apiVersion: data.fluid.io/v1alpha1\nkind: JuiceFSRuntime\nmetadata:\n  name: jfsdemo\n  namespace: default\nspec:\n  fuse:\n    cleanPolicy: OnDemand\n    nodeSelector:\n      zone: a\n",
        )
        .unwrap();
        let config = EngineConfig::default();
        let engine_input = EngineInput {
            dataset: &fixture.dataset,
            runtime: &runtime,
            keys: &fixture.keys,
            names: &fixture.names,
            config: &config,
        };
        let input = VolumeInput::from_engine(&JuiceFsEngine, &engine_input);
        assert_eq!(input.fluid_path, "/runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse");
        assert_eq!(input.mount_type, "JuiceFS");
        assert_eq!((input.runtime_namespace, input.runtime_name), ("default", "jfsdemo"));
        assert_eq!(input.clean_policy, FuseCleanPolicy::OnDemand);
        assert_eq!(input.fuse_node_selector["zone"], "a");
    }

    proptest! {
        /// The PV's fuse label key is the dataset's, and long names fall back to the UID.
        #[test]
        fn pv_keys_follow_dataset_keys(name in "[a-z][a-z0-9-]{0,55}[a-z0-9]") {
            let mut ds = dataset("");
            ds.metadata.name = Some(name.clone());
            let fixture = Fixture::new(ds);
            let pv = persistent_volume(&fixture.input()).unwrap();
            let attrs = pv.spec.unwrap().csi.unwrap().volume_attributes.unwrap();
            prop_assert_eq!(&attrs[ATTR_FUSE_LABEL_KEY], &fixture.keys.fuse_label());
            prop_assert!(pv.metadata.labels.unwrap().contains_key(&fixture.keys.common_label()));
            prop_assert_eq!(attrs[ATTR_FUSE_LABEL_KEY].ends_with(UID), fixture.keys.uses_uid());
        }
    }
}
