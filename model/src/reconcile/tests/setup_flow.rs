//! The seed article's setup flow, step by step, plus scaling, health and labels.

use super::*;
use crate::api::{DatasetPhase, RuntimePhase};
use crate::effect::EventType;
use crate::labels;
use crate::reconcile::conditions;
use crate::volume;

#[test]
fn a_new_dataset_gets_its_finalizer_and_goes_not_bound() {
    let world = World::new(Some(seed_dataset(NAME)), None);
    let decision = world.reconcile_dataset();
    // The status patch goes first: it carries the resourceVersion the finalizer write would bump.
    assert_eq!(verbs(&decision.effects), ["status Dataset/default/jfsdemo", "add-finalizer Dataset/default/jfsdemo"]);
    let Effect::PatchStatus { status: Status::Dataset(status), resource_version, .. } = &decision.effects[0] else {
        panic!()
    };
    assert_eq!(status.phase, DatasetPhase::NotBound);
    assert_eq!(resource_version.as_deref(), Some("1"));
    let ready = &status.conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str(), ready.reason.as_deref()),
        ("Ready", "False", Some("NoRuntime"))
    );
    assert!(ready.message.as_deref().unwrap().contains("create a runtime named jfsdemo"));
}

#[test]
fn a_runtime_without_dataset_waits_with_a_warning() {
    let world = World::new(None, Some(seed_runtime(NAME, 1)));
    let decision = world.reconcile_runtime();
    assert_eq!(verbs(&decision.effects), ["event JuiceFSRuntime/default/jfsdemo"]);
    let Effect::Event { type_, reason, message, .. } = &decision.effects[0] else { panic!() };
    assert_eq!((*type_, reason.as_str()), (EventType::Warning, "NoDatasetToBind"));
    assert!(message.contains("default/jfsdemo"));
    assert_eq!(decision.requeue, crate::effect::Requeue::AfterMs(world.config.retry_ms));
}

#[test]
fn the_runtime_owns_its_dataset_and_creates_workers_and_fuse() {
    let world = World::seed();
    let decision = world.reconcile_runtime();
    let verbs = verbs(&decision.effects);
    assert_eq!(
        verbs,
        [
            "status JuiceFSRuntime/default/jfsdemo",
            "owner JuiceFSRuntime/default/jfsdemo",
            "add-finalizer JuiceFSRuntime/default/jfsdemo",
            "status Dataset/default/jfsdemo",
            "labels Dataset/default/jfsdemo",
            "labels JuiceFSRuntime/default/jfsdemo",
            "event JuiceFSRuntime/default/jfsdemo",
            "apply StatefulSet/default/jfsdemo-juicefs-worker",
            "apply DaemonSet/default/jfsdemo-juicefs-fuse",
        ]
    );
    let Effect::AddOwnerReference { owner, .. } = &decision.effects[1] else { panic!() };
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("Dataset", DATASET_UID, Some(true)));
    let Effect::Event { reason, message, .. } = &decision.effects[6] else { panic!() };
    assert_eq!(reason, "RuntimeSpecWarning");
    assert!(message.contains("metaurl"), "the seed's dataset names no metaurl secret: {message}");
    let Effect::Apply(Object::DaemonSet(fuse)) = &decision.effects[8] else { panic!() };
    let selector = fuse.spec.as_ref().unwrap().template.spec.as_ref().unwrap().node_selector.clone().unwrap();
    assert_eq!(selector.get("fluid.io/f-default-jfsdemo").map(String::as_str), Some("true"));
}

#[test]
fn readiness_goes_not_ready_then_partial_then_ready_and_binds_the_dataset() {
    let mut world = World::new(Some(seed_dataset(NAME)), Some(seed_runtime(NAME, 2)));
    world.settle(5);
    let runtime_status = || world.observed.runtime.as_deref().unwrap().status.clone().unwrap();
    assert_eq!(runtime_status().worker_phase, RuntimePhase::NotReady);
    assert_eq!(world.observed.dataset.as_deref().unwrap().status.as_ref().unwrap().phase, DatasetPhase::NotBound);
    assert!(world.observed.persistent_volume.is_none(), "no PV before the dataset is bound");

    world.workers_run(1);
    world.settle(5);
    let status = world.observed.runtime.as_deref().unwrap().status.clone().unwrap();
    assert_eq!(status.worker_phase, RuntimePhase::PartialReady);
    assert_eq!((status.worker_number_ready, status.desired_worker_number_scheduled), (1, 2));
    let dataset_status = world.observed.dataset.as_deref().unwrap().status.clone().unwrap();
    assert_eq!(dataset_status.phase, DatasetPhase::Bound);
    assert_eq!(dataset_status.runtimes[0].type_, "juicefs");
    assert!(world.observed.persistent_volume.is_some() && world.observed.persistent_volume_claim.is_some());

    world.workers_run(2);
    world.settle(5);
    let status = world.observed.runtime.as_deref().unwrap().status.clone().unwrap();
    assert_eq!(status.worker_phase, RuntimePhase::Ready);
    assert_eq!(status.setup_duration.as_deref(), Some("0s"));
    assert!(status.conditions.iter().any(|c| c.type_ == conditions::WORKERS_READY && c.status == "True"));
}

#[test]
fn the_pv_and_pvc_carry_what_the_csi_plugin_needs() {
    let mut world = World::seed();
    world.settle(5);
    world.workers_run(1);
    world.settle(5);
    let pv = (*world.observed.persistent_volume.clone().unwrap()).clone();
    let csi = pv.spec.as_ref().unwrap().csi.clone().unwrap();
    assert_eq!(csi.driver, volume::CSI_DRIVER);
    assert_eq!(csi.volume_handle, "default-jfsdemo");
    let attributes = csi.volume_attributes.unwrap();
    assert_eq!(attributes[volume::ATTR_FLUID_PATH], "/runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse");
    assert_eq!(attributes[volume::ATTR_MOUNT_TYPE], "JuiceFS");
    assert_eq!(attributes[volume::ATTR_FUSE_LABEL_KEY], world.keys().fuse_label());
    let spec = pv.spec.unwrap();
    assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Retain"));
    assert_eq!(spec.storage_class_name.as_deref(), Some("fluid"));
    let claim = spec.claim_ref.unwrap();
    assert_eq!((claim.namespace.as_deref(), claim.name.as_deref()), (Some(NS), Some(NAME)));
    let pvc = (*world.observed.persistent_volume_claim.clone().unwrap()).clone();
    assert_eq!(pvc.spec.unwrap().volume_name.as_deref(), Some("default-jfsdemo"));
}

#[test]
fn losing_every_worker_fails_the_dataset_and_their_return_binds_it_again() {
    let mut world = World::seed();
    world.settle(5);
    world.workers_run(1);
    world.settle(5);
    world.workers_run(0);
    world.settle(5);
    let status = world.observed.dataset.as_deref().unwrap().status.clone().unwrap();
    assert_eq!(status.phase, DatasetPhase::Failed);
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("False", Some("WorkersNotReady")));
    world.workers_run(1);
    world.settle(5);
    assert_eq!(world.observed.dataset.as_deref().unwrap().status.as_ref().unwrap().phase, DatasetPhase::Bound);
}

#[test]
fn changing_replicas_scales_the_workers_with_a_condition_and_an_event() {
    let mut world = World::seed();
    world.settle(5);
    world.workers_run(1);
    world.settle(5);
    std::sync::Arc::make_mut(world.observed.runtime.as_mut().unwrap()).spec.replicas = Some(3);
    let decision = world.reconcile_runtime();
    let scaled = decision.effects.iter().find_map(|e| match e {
        Effect::Apply(Object::StatefulSet(sts)) => sts.spec.as_ref().and_then(|s| s.replicas),
        _ => None,
    });
    assert_eq!(scaled, Some(3));
    assert!(decision.effects.iter().any(|e| matches!(e, Effect::Event { reason, .. } if reason == "WorkersScaledOut")));
    world.apply(&decision);
    let status = world.observed.runtime.as_deref().unwrap().status.clone().unwrap();
    let condition = status.conditions.iter().find(|c| c.type_ == conditions::WORKERS_SCALED_OUT).unwrap();
    assert_eq!(condition.message.as_deref(), Some("workers scaled from 1 to 3 replicas"));
    world.workers_run(3);
    world.settle(5);
    std::sync::Arc::make_mut(world.observed.runtime.as_mut().unwrap()).spec.replicas = Some(1);
    let effects = world.settle(5);
    assert!(effects.iter().any(|e| matches!(e, Effect::Event { reason, .. } if reason == "WorkersScaledIn")));
    let status = world.observed.runtime.as_deref().unwrap().status.clone().unwrap();
    assert!(status.conditions.iter().all(|c| c.type_ != conditions::WORKERS_SCALED_OUT));
}

#[test]
fn cache_nodes_get_labels_where_workers_run_and_lose_them_when_workers_leave() {
    let mut world = World::new(Some(seed_dataset(NAME)), Some(seed_runtime(NAME, 2)));
    world.settle(5);
    world.workers_run(2);
    world.settle(5);
    let keys = world.keys();
    let labels = world.node_labels("node-a");
    assert_eq!(labels.get(&keys.common_label()).map(String::as_str), Some("true"));
    assert_eq!(labels.get(&keys.runtime_label("juicefs")).map(String::as_str), Some("true"));
    assert_eq!(
        labels.get(&keys.capacity_label("juicefs", labels::CapacityKind::Memory)).map(String::as_str),
        Some("40GiB")
    );
    assert_eq!(
        labels.get(&keys.capacity_label("juicefs", labels::CapacityKind::Total)).map(String::as_str),
        Some("40GiB")
    );
    assert_eq!(labels.get(labels::EXCLUSIVE).map(String::as_str), Some("default_jfsdemo"));
    assert_eq!(labels.get(labels::DATASET_NUM).map(String::as_str), Some("1"));
    assert!(world.node_labels("node-b").contains_key(&keys.common_label()));
    assert!(world.node_labels("node-c").is_empty());

    world.workers_run(1);
    world.settle(5);
    assert!(world.node_labels("node-b").is_empty(), "{:?}", world.node_labels("node-b"));
    assert!(world.node_labels("node-a").contains_key(&keys.common_label()));
}

#[test]
fn the_fuse_label_is_left_to_the_csi_plugin_during_sync() {
    let mut world = World::seed();
    world.settle(5);
    let fuse_label = world.keys().fuse_label();
    world.label_node("node-c", &fuse_label);
    world.workers_run(1);
    world.settle(5);
    assert_eq!(world.node_labels("node-c").get(&fuse_label).map(String::as_str), Some("true"));
}

#[test]
fn cache_states_come_from_worker_samples() {
    let mut world = World::seed();
    world.settle(5);
    world.workers_run(1);
    let pod = world.observed.worker_pods[0].name.to_string();
    world.observed.cache_samples = vec![crate::observed::CacheSample {
        pod_name: pod,
        cached_bytes: 10 << 30,
        cache_hits: 3,
        cache_misses: 1,
        used_space_bytes: 40 << 30,
    }];
    world.settle(5);
    let states = world.observed.dataset.as_deref().unwrap().status.as_ref().unwrap().cache_states.clone();
    assert_eq!(states["cached"], "10.00GiB");
    assert_eq!(states["cacheCapacity"], "40.00GiB");
    assert_eq!(states["cachedPercentage"], "25.0%");
    assert_eq!(states["cacheHitRatio"], "75.0%");
    assert_eq!(
        world.observed.dataset.as_deref().unwrap().status.as_ref().unwrap().ufs_total.as_deref(),
        Some("40.00GiB")
    );
}

#[test]
fn long_names_use_uid_keys_in_the_daemonset_the_pv_and_the_node_labels_alike() {
    let name = "a-dataset-name-long-enough-to-need-the-uid-fallback";
    let mut world = World::new(Some(seed_dataset(name)), Some(seed_runtime(name, 1)));
    world.observed.name = name.to_string();
    world.observed.namespace = NS.to_string();
    world.settle(5);
    world.workers_run(1);
    world.settle(5);
    let keys = world.keys();
    assert!(keys.uses_uid());
    let fuse = (*world.observed.fuse.clone().unwrap()).clone();
    let selector = fuse.spec.unwrap().template.spec.unwrap().node_selector.unwrap();
    assert_eq!(selector.get(&keys.fuse_label()).map(String::as_str), Some("true"));
    let attributes = (*world.observed.persistent_volume.clone().unwrap())
        .clone()
        .spec
        .unwrap()
        .csi
        .unwrap()
        .volume_attributes
        .unwrap();
    assert_eq!(attributes[volume::ATTR_FUSE_LABEL_KEY], keys.fuse_label());
    assert!(world.node_labels("node-a").contains_key(&keys.common_label()));
    for key in world.node_labels("node-a").keys() {
        assert!(labels::validate_label_key(key).is_ok(), "{key}");
    }
}

/// Found in review: whether a scale-out lost no worker is read from the runtime's previous
/// status. Were the runtime's new status written first and the dataset's write then refused,
/// the retry would read "0 ready before, 0 now" and keep a dataset Bound whose only worker is
/// gone. The dataset's status goes first, and a retry after its refusal still fails it.
#[test]
fn losing_the_last_worker_fails_the_dataset_even_when_its_status_write_was_refused_once() {
    let mut world = World::seed();
    world.settle(5);
    world.workers_run(1);
    world.settle(5);
    world.workers_run(0);
    let decision = world.reconcile_runtime();
    let statuses: Vec<Kind> = decision
        .effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::PatchStatus { target, .. } => Some(target.kind),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, [Kind::Dataset, Kind::JuiceFSRuntime], "the dataset's status first");
    // The dataset's write is refused: nothing after it lands; the retry decides again.
    world.settle(5);
    let status = world.observed.dataset.as_deref().unwrap().status.clone().unwrap();
    assert_eq!(status.phase, DatasetPhase::Failed);
}
