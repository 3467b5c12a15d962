//! Deletion with finalizers: a dataset in use stays; a runtime tears everything down.

use super::*;
use crate::api::DatasetPhase;
use crate::effect::{ObjectRef, Requeue};
use crate::labels;
use crate::reconcile::conditions;

fn bound_world_with_pod(phase: &str) -> World {
    let mut world = World::seed();
    world.settle(5);
    world.workers_run(1);
    world.settle(5);
    let mut pod = app_pod("demo-app", "node-b", NAME, phase);
    pod.status.as_mut().unwrap().conditions = Some(vec![ready_pod_condition()]);
    world.pods.push(pod);
    let fuse_label = world.keys().fuse_label();
    world.label_node("node-b", &fuse_label);
    world
}

#[test]
fn a_dataset_in_use_cannot_go_and_says_which_pod_holds_it() {
    let mut world = bound_world_with_pod("Running");
    std::sync::Arc::make_mut(world.observed.dataset.as_mut().unwrap()).metadata.deletion_timestamp =
        Some(world.now.to_time());
    let effects = world.settle(5);
    assert!(world.observed.dataset.is_some());
    let status = world.observed.dataset.as_deref().unwrap().status.clone().unwrap();
    let blocked = status.conditions.iter().find(|c| c.type_ == conditions::DATASET_DELETION_BLOCKED).unwrap();
    assert_eq!(blocked.reason.as_deref(), Some("DatasetInUse"));
    assert!(blocked.message.as_deref().unwrap().contains("pod default/demo-app (Running on node-b)"), "{blocked:?}");
    let events = effects
        .iter()
        .filter(|e| matches!(e, Effect::Event { reason, .. } if reason == "DatasetDeletionBlocked"))
        .count();
    assert_eq!(events, 1);
}

#[test]
fn a_dataset_goes_once_its_pods_complete() {
    let mut world = bound_world_with_pod("Succeeded");
    std::sync::Arc::make_mut(world.observed.dataset.as_mut().unwrap()).metadata.deletion_timestamp =
        Some(world.now.to_time());
    let decision = world.reconcile_dataset();
    assert_eq!(verbs(&decision.effects), ["remove-finalizer Dataset/default/jfsdemo"]);
}

#[test]
fn deleting_the_runtime_waits_for_pods_then_removes_volume_labels_workloads_and_unbinds() {
    let mut world = bound_world_with_pod("Running");
    std::sync::Arc::make_mut(world.observed.runtime.as_mut().unwrap()).metadata.deletion_timestamp =
        Some(world.now.to_time());
    let decision = world.reconcile_runtime();
    assert_eq!(
        verbs(&decision.effects),
        ["delete PersistentVolumeClaim/default/jfsdemo", "event JuiceFSRuntime/default/jfsdemo"]
    );
    // The PVC is protected while the pod runs.
    std::sync::Arc::make_mut(world.observed.persistent_volume_claim.as_mut().unwrap()).metadata.finalizers =
        Some(vec![labels::PVC_PROTECTION_FINALIZER.to_string()]);
    world.apply(&decision);
    assert!(world.observed.persistent_volume_claim.as_deref().unwrap().metadata.deletion_timestamp.is_some());
    let decision = world.reconcile_runtime();
    assert!(decision.writes().next().is_none(), "nothing more while the pod runs: {:?}", verbs(&decision.effects));

    // The pod completes; the lagging PVC protection is released after its grace period, and
    // the rest of the teardown happens in the same decision.
    world.pods[0].status.as_mut().unwrap().phase = Some("Succeeded".to_string());
    world.refresh();
    world.now = Millis(world.now.0 + world.config.pvc_protection_grace_ms);
    let keys = world.keys();
    let decision = world.reconcile_runtime();
    let verbs = verbs(&decision.effects);
    assert_eq!(verbs[0], "remove-finalizer PersistentVolumeClaim/default/jfsdemo");
    assert_eq!(verbs[1], "delete PersistentVolume/default-jfsdemo");
    assert_eq!(verbs.last().map(String::as_str), Some("remove-finalizer JuiceFSRuntime/default/jfsdemo"));
    world.apply(&decision);
    assert!(world.observed.runtime.is_none() && world.observed.workers.is_none() && world.observed.fuse.is_none());
    assert!(world.observed.persistent_volume.is_none() && world.observed.persistent_volume_claim.is_none());
    for node in ["node-a", "node-b", "node-c"] {
        let labels = world.node_labels(node);
        assert!(
            labels.keys().all(|k| !k.contains("default-jfsdemo")) && !labels.contains_key(labels::DATASET_NUM),
            "{node}: {labels:?}"
        );
    }
    assert!(!world.node_labels("node-b").contains_key(&keys.fuse_label()));
    let status = world.observed.dataset.as_deref().unwrap().status.clone().unwrap();
    assert_eq!(status.phase, DatasetPhase::NotBound);
    assert!(status.runtimes.is_empty());
}

#[test]
fn teardown_leaves_other_datasets_labels_and_recounts_dataset_num() {
    let mut world = World::seed();
    world.settle(5);
    world.workers_run(1);
    world.settle(5);
    let other = DatasetKeys::new(NS, "other", None).unwrap();
    let node = world.all_nodes.iter_mut().find(|n| n.metadata.name.as_deref() == Some("node-a")).unwrap();
    let node_labels = std::sync::Arc::make_mut(node).metadata.labels.get_or_insert_with(BTreeMap::new);
    node_labels.insert(other.common_label(), "true".into());
    node_labels.insert(labels::DATASET_NUM.into(), "2".into());
    world.other_datasets.insert(other.common_label());
    world.refresh();
    std::sync::Arc::make_mut(world.observed.runtime.as_mut().unwrap()).metadata.deletion_timestamp =
        Some(world.now.to_time());
    world.observed.persistent_volume_claim = None;
    let decision = world.reconcile_runtime();
    world.apply(&decision);
    let labels = world.node_labels("node-a");
    assert_eq!(labels.get(&other.common_label()).map(String::as_str), Some("true"));
    assert_eq!(labels.get(labels::DATASET_NUM).map(String::as_str), Some("1"));
}

#[test]
fn teardown_keeps_the_runtime_while_the_cache_lags_an_object_this_controller_created() {
    let mut world = World::seed();
    world.settle(5);
    world.workers_run(1);
    world.settle(5);
    std::sync::Arc::make_mut(world.observed.runtime.as_mut().unwrap()).metadata.deletion_timestamp =
        Some(world.now.to_time());
    // A run that read a view without the deletion applied the PV; the cache has not shown it.
    let volume = world.observed.persistent_volume.take().expect("bound: a PV exists");
    world.observed.unconfirmed_creates =
        vec![ObjectRef::cluster(Kind::PersistentVolume, volume.metadata.name.as_deref().unwrap())];
    let decision = world.reconcile_runtime();
    let lagging = verbs(&decision.effects);
    assert!(!lagging.iter().any(|v| v.starts_with("remove-finalizer JuiceFSRuntime")), "{lagging:?}");
    assert!(
        !lagging.iter().any(|v| v.starts_with("delete PersistentVolume/")),
        "it cannot see the PV yet: {lagging:?}"
    );
    assert!(matches!(decision.requeue, Requeue::AfterMs(_)), "it looks again: {:?}", decision.requeue);
    // The cache catches up: the PV goes, and the runtime with it.
    world.observed.persistent_volume = Some(volume);
    world.observed.unconfirmed_creates.clear();
    let caught_up = verbs(&world.reconcile_runtime().effects);
    assert!(caught_up.contains(&"delete PersistentVolume/default-jfsdemo".to_string()), "{caught_up:?}");
    assert_eq!(caught_up.last().map(String::as_str), Some("remove-finalizer JuiceFSRuntime/default/jfsdemo"));
}

#[test]
fn nothing_is_created_in_a_namespace_being_deleted_but_teardown_still_runs() {
    // The namespace controller deleted the workloads first; the pair itself is not deleted yet.
    let mut world = World::new(Some(seed_dataset(NAME)), Some(seed_runtime(NAME, 1)));
    let created = world.reconcile_runtime();
    assert!(created.effects.iter().any(|e| matches!(e, Effect::Apply(_))), "a live namespace gets its workloads");
    world.observed.namespace_terminating = true;
    let decision = world.reconcile_runtime();
    assert!(decision.effects.is_empty(), "{:?}", verbs(&decision.effects));
    assert_eq!(decision.requeue, Requeue::AwaitChange);
    // Then the namespace's deletion reaches the runtime: its teardown writes to existing objects.
    let mut runtime = seed_runtime(NAME, 1);
    runtime.metadata.deletion_timestamp = Some(T0.to_time());
    runtime.metadata.finalizers = Some(vec![labels::JUICEFS_RUNTIME_FINALIZER.to_string()]);
    world.observed.runtime = Some(std::sync::Arc::new(runtime));
    let teardown = world.reconcile_runtime();
    assert!(!teardown.effects.is_empty(), "teardown runs in a terminating namespace");
    assert!(!teardown.effects.iter().any(|e| matches!(e, Effect::Apply(_))), "{:?}", verbs(&teardown.effects));
}
