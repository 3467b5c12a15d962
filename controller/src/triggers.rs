//! Which dataset/runtime pairs a changed object concerns: pure mappers from any watched kind to pair keys.
//!
//! Over-triggering is harmless (a reconcile at the fixpoint writes nothing, and a key without a
//! dataset or runtime is skipped by the controller), so mappers err on the side of more keys.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef as StoreRef, Store};
use model::api::Dataset;
use model::labels;

use crate::observe::dataset_keys;

/// A dataset/runtime pair: they share namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PairKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl PairKey {
    /// The pair `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self { namespace: namespace.to_string(), name: name.to_string() }
    }

    /// The key of a namespaced object named like the pair (a dataset, runtime or PVC).
    pub fn of<K: Resource>(object: &K) -> Option<Self> {
        Some(Self::new(object.meta().namespace.as_deref()?, object.meta().name.as_deref()?))
    }
}

/// A dataset or a runtime: its own pair.
pub fn from_pair_object<K: Resource>(object: &K) -> Vec<PairKey> {
    PairKey::of(object).into_iter().collect()
}

/// A StatefulSet or DaemonSet: the runtime that owns it.
pub fn from_owned<K: Resource>(object: &K) -> Vec<PairKey> {
    let Some(namespace) = object.meta().namespace.as_deref() else { return Vec::new() };
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .filter(|owner| owner.kind == "JuiceFSRuntime" && owner.api_version.starts_with(labels::GROUP))
        .map(|owner| PairKey::new(namespace, &owner.name))
        .collect()
}

/// A PVC: the dataset of the same name (the model names dataset PVCs after the dataset).
pub fn from_claim(claim: &PersistentVolumeClaim) -> Vec<PairKey> {
    from_pair_object(claim)
}

/// A PV: the claim it is bound to, else the runtime named in its CSI attributes.
pub fn from_volume(volume: &PersistentVolume) -> Vec<PairKey> {
    let spec = volume.spec.as_ref();
    let claim = spec.and_then(|s| s.claim_ref.as_ref());
    if let Some((Some(namespace), Some(name))) = claim.map(|c| (c.namespace.as_deref(), c.name.as_deref())) {
        return vec![PairKey::new(namespace, name)];
    }
    let attributes = spec.and_then(|s| s.csi.as_ref()).and_then(|csi| csi.volume_attributes.as_ref());
    let get = |key: &str| attributes.and_then(|a| a.get(key)).map(String::as_str);
    match (get(model::volume::ATTR_RUNTIME_NAMESPACE), get(model::volume::ATTR_RUNTIME_NAME)) {
        (Some(namespace), Some(name)) => vec![PairKey::new(namespace, name)],
        _ => Vec::new(),
    }
}

/// A pod: every dataset whose PVC it names, and the runtime owning its StatefulSet (worker pods).
pub fn from_pod(pod: &Pod, stateful_sets: &Store<StatefulSet>) -> Vec<PairKey> {
    let Some(namespace) = pod.metadata.namespace.as_deref() else { return Vec::new() };
    let claims = model::observed::claim_names(pod.spec.as_ref()).map(|claim| PairKey::new(namespace, claim));
    // Worker StatefulSet names may be shortened with a hash, so resolve the owner exactly.
    let owners = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == "StatefulSet")
        .filter_map(|o| stateful_sets.get(&StoreRef::new(&o.name).within(namespace)))
        .flat_map(|sts| from_owned(sts.as_ref()));
    let mut keys: Vec<PairKey> = claims.chain(owners).collect();
    keys.sort();
    keys.dedup();
    keys
}

/// A node: every dataset one of whose label keys the node carries.
pub fn from_node(node: &Node, datasets: &Store<Dataset>, runtime_type: &str) -> Vec<PairKey> {
    let Some(node_labels) = node.metadata.labels.as_ref() else { return Vec::new() };
    let ours = |key: &String| key.starts_with(labels::FUSE_PREFIX) || key.starts_with(labels::COMMON_PREFIX);
    if !node_labels.keys().any(ours) {
        return Vec::new();
    }
    let mut keys: Vec<PairKey> = datasets
        .state()
        .iter()
        .filter_map(|dataset| {
            let pair = PairKey::of(dataset.as_ref())?;
            let keys = dataset_keys(Some(dataset), &pair.namespace, &pair.name)?;
            keys.all_node_label_keys(runtime_type).iter().any(|key| node_labels.contains_key(key)).then_some(pair)
        })
        .collect();
    keys.sort();
    keys
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, ObjectReference, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, PodSpec,
        Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;
    use model::api::DatasetSpec;

    use super::*;

    fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta { name: Some(name.into()), namespace: namespace.map(Into::into), ..ObjectMeta::default() }
    }

    fn owner(kind: &str, api_version: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            ..OwnerReference::default()
        }
    }

    #[test]
    fn workloads_map_to_their_owning_runtime_only() {
        let mut sts =
            StatefulSet { metadata: meta(Some("default"), "jfsdemo-juicefs-worker"), ..StatefulSet::default() };
        assert!(from_owned(&sts).is_empty());
        sts.metadata.owner_references = Some(vec![
            owner("JuiceFSRuntime", "data.fluid.io/v1alpha1", "jfsdemo"),
            owner("Deployment", "apps/v1", "someone-else"),
        ]);
        assert_eq!(from_owned(&sts), [PairKey::new("default", "jfsdemo")]);
    }

    #[test]
    fn volumes_map_through_their_claim_or_attributes() {
        let mut pv = PersistentVolume { metadata: meta(None, "default-jfsdemo"), ..PersistentVolume::default() };
        assert!(from_volume(&pv).is_empty());
        pv.spec = Some(PersistentVolumeSpec {
            csi: Some(CSIPersistentVolumeSource {
                volume_attributes: Some(
                    [("runtime_namespace", "default"), ("runtime_name", "my-data")]
                        .map(|(k, v)| (k.into(), v.into()))
                        .into(),
                ),
                ..CSIPersistentVolumeSource::default()
            }),
            ..PersistentVolumeSpec::default()
        });
        assert_eq!(from_volume(&pv), [PairKey::new("default", "my-data")]);
        pv.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
            namespace: Some("default".into()),
            name: Some("jfsdemo".into()),
            ..ObjectReference::default()
        });
        assert_eq!(from_volume(&pv), [PairKey::new("default", "jfsdemo")]);
    }

    #[test]
    fn pods_map_to_the_claims_they_use_and_their_worker_runtime() {
        let (sts_store, mut sts_writer) = reflector::store::<StatefulSet>();
        let mut sts = StatefulSet { metadata: meta(Some("default"), "short-hashed-name"), ..StatefulSet::default() };
        sts.metadata.owner_references =
            Some(vec![owner("JuiceFSRuntime", "data.fluid.io/v1alpha1", "a-very-long-runtime")]);
        sts_writer.apply_watcher_event(&Event::Apply(sts));
        let mut pod = Pod { metadata: meta(Some("default"), "short-hashed-name-0"), ..Pod::default() };
        pod.metadata.owner_references = Some(vec![owner("StatefulSet", "apps/v1", "short-hashed-name")]);
        pod.spec = Some(PodSpec {
            volumes: Some(vec![Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: "jfsdemo".into(),
                    read_only: None,
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        });
        assert_eq!(
            from_pod(&pod, &sts_store),
            [PairKey::new("default", "a-very-long-runtime"), PairKey::new("default", "jfsdemo")]
        );
    }

    #[test]
    fn nodes_map_to_the_datasets_whose_keys_they_carry() {
        let (datasets, mut writer) = reflector::store::<Dataset>();
        for (namespace, name) in [("default", "jfsdemo"), ("default", "jfs"), ("team-a", "demo")] {
            let mut metadata = meta(Some(namespace), name);
            metadata.uid = Some("u".into());
            writer.apply_watcher_event(&Event::Apply(Dataset { metadata, spec: DatasetSpec::default(), status: None }));
        }
        let mut node = Node { metadata: meta(None, "node-a"), ..Node::default() };
        assert!(from_node(&node, &datasets, "juicefs").is_empty());
        node.metadata.labels = Some(
            [
                ("fluid.io/f-default-jfsdemo", "true"),
                ("fluid.io/s-h-juicefs-m-team-a-demo", "1Gi"),
                ("kubernetes.io/os", "linux"),
            ]
            .map(|(k, v)| (k.into(), v.into()))
            .into(),
        );
        assert_eq!(
            from_node(&node, &datasets, "juicefs"),
            [PairKey::new("default", "jfsdemo"), PairKey::new("team-a", "demo")]
        );
    }
}
