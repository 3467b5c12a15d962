//! Tests of the watch mappings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Volume,
};

use super::*;

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta { name: Some(name.into()), namespace: namespace.map(Into::into), ..ObjectMeta::default() }
}

fn owner(kind: &str, api_version: &str, name: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        ..OwnerReference::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn owners_of(datasets: &[(&str, &str)]) -> NodeLabelOwners {
    let mut owners = NodeLabelOwners::default();
    for (namespace, name) in datasets {
        let keys = DatasetKeys::new(namespace, name, Some("u")).expect("keys");
        owners.insert(&PairKey::new(namespace, name), &keys, "juicefs");
    }
    owners
}

#[test]
fn named_objects_map_to_their_own_pair_and_need_a_namespace() {
    assert_eq!(pair_of_named(&meta(Some("default"), "jfsdemo")), Some(PairKey::new("default", "jfsdemo")));
    assert_eq!(pair_of_named(&meta(None, "jfsdemo")), None);
    assert_eq!(PairKey::new("default", "jfsdemo").to_string(), "default/jfsdemo");
}

#[test]
fn workloads_map_to_their_owning_runtime_of_fluids_group_only() {
    let mut sts = meta(Some("default"), "jfsdemo-juicefs-worker");
    assert!(pairs_of_owned(&sts).is_empty());
    sts.owner_references = Some(vec![
        owner("JuiceFSRuntime", "data.fluid.io/v1alpha1", "jfsdemo"),
        owner("JuiceFSRuntime", "example.com/v1", "impostor"),
        owner("Deployment", "apps/v1", "someone-else"),
    ]);
    assert_eq!(pairs_of_owned(&sts), [PairKey::new("default", "jfsdemo")]);
    sts.namespace = None;
    assert!(pairs_of_owned(&sts).is_empty());
}

#[test]
fn volumes_map_through_their_claim_or_else_their_attributes() {
    let mut pv = PersistentVolume { metadata: meta(None, "default-jfsdemo"), ..PersistentVolume::default() };
    assert_eq!(pair_of_volume(&pv), None);
    pv.spec = Some(PersistentVolumeSpec {
        csi: Some(CSIPersistentVolumeSource {
            volume_attributes: Some(labels(&[(ATTR_RUNTIME_NAMESPACE, "default"), (ATTR_RUNTIME_NAME, "my-data")])),
            ..CSIPersistentVolumeSource::default()
        }),
        ..PersistentVolumeSpec::default()
    });
    assert_eq!(pair_of_volume(&pv), Some(PairKey::new("default", "my-data")));
    pv.spec.as_mut().expect("spec").claim_ref = Some(ObjectReference {
        namespace: Some("default".into()),
        name: Some("jfsdemo".into()),
        ..ObjectReference::default()
    });
    assert_eq!(pair_of_volume(&pv), Some(PairKey::new("default", "jfsdemo")));
}

#[test]
fn pods_map_to_their_claims_and_their_worker_runtime_resolved_exactly() {
    let mut sts = StatefulSet { metadata: meta(Some("default"), "short-hashed-name"), ..StatefulSet::default() };
    sts.metadata.owner_references =
        Some(vec![owner("JuiceFSRuntime", "data.fluid.io/v1alpha1", "a-very-long-runtime")]);
    let sts = Arc::new(sts);
    let mut pod = meta(Some("default"), "short-hashed-name-0");
    pod.owner_references = Some(vec![owner("StatefulSet", "apps/v1", "short-hashed-name")]);
    let claim = |name: &str| Volume {
        name: format!("v-{name}"),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: name.into(), read_only: None }),
        ..Volume::default()
    };
    let spec =
        PodSpec { volumes: Some(vec![claim("jfsdemo"), claim("jfsdemo"), claim("other")]), ..PodSpec::default() };
    let resolve = |o: &OwnerReference| (o.name == "short-hashed-name").then(|| sts.clone());
    assert_eq!(
        pairs_of_pod(&pod, Some(&spec), resolve),
        [
            PairKey::new("default", "a-very-long-runtime"),
            PairKey::new("default", "jfsdemo"),
            PairKey::new("default", "other")
        ]
    );
    // An owner the driver cannot resolve (not yet in its cache) adds nothing.
    assert_eq!(pairs_of_pod(&pod, None, |_| None), Vec::<PairKey>::new());
}

#[test]
fn a_node_seen_whole_maps_to_every_dataset_whose_label_it_carries() {
    let owners = owners_of(&[("default", "jfsdemo"), ("default", "jfs"), ("team-a", "demo")]);
    assert!(pairs_of_node(None, None, &owners).is_empty());
    let node = labels(&[
        ("fluid.io/f-default-jfsdemo", "true"),
        ("fluid.io/s-h-juicefs-m-team-a-demo", "1Gi"),
        ("fluid.io/f-default-unknown", "true"),
        ("kubernetes.io/os", "linux"),
    ]);
    assert_eq!(
        pairs_of_node(None, Some(&node), &owners),
        [PairKey::new("default", "jfsdemo"), PairKey::new("team-a", "demo")]
    );
}

#[test]
fn a_node_change_maps_only_to_the_datasets_whose_labels_changed() {
    let owners = owners_of(&[("default", "jfsdemo"), ("team-a", "demo")]);
    let old = labels(&[("fluid.io/f-default-jfsdemo", "true"), ("fluid.io/s-team-a-demo", "true")]);
    let mut new = old.clone();
    new.insert("kubernetes.io/os".into(), "linux".into());
    assert!(pairs_of_node(Some(&old), Some(&new), &owners).is_empty());
    new.remove("fluid.io/s-team-a-demo");
    assert_eq!(pairs_of_node(Some(&old), Some(&new), &owners), [PairKey::new("team-a", "demo")]);
    new.insert("fluid.io/f-default-jfsdemo".into(), "false".into());
    assert_eq!(
        pairs_of_node(Some(&old), Some(&new), &owners),
        [PairKey::new("default", "jfsdemo"), PairKey::new("team-a", "demo")]
    );
    // A deleted node: all its dataset labels went.
    assert_eq!(pairs_of_node(Some(&old), None, &owners).len(), 2);
}

#[test]
fn label_owners_follow_a_dataset_that_is_replaced_or_removed() {
    let pair = PairKey::new("default", &"long".repeat(20));
    let mut owners = NodeLabelOwners::default();
    let first = DatasetKeys::new(&pair.namespace, &pair.name, Some("uid-one")).expect("keys");
    owners.insert(&pair, &first, "juicefs");
    assert_eq!(owners.pair_of(&first.fuse_label()), Some(&pair));
    // A namesake with a new UID: long names hash the UID in, so the old keys must go.
    let second = DatasetKeys::new(&pair.namespace, &pair.name, Some("uid-two")).expect("keys");
    assert_ne!(first.fuse_label(), second.fuse_label());
    owners.insert(&pair, &second, "juicefs");
    assert_eq!(owners.pair_of(&first.fuse_label()), None);
    assert_eq!(owners.pair_of(&second.fuse_label()), Some(&pair));
    owners.remove(&pair);
    assert_eq!(owners, NodeLabelOwners::default());
}
