//! Dataset-level transitions and refusals that surface as conditions.

use super::*;
use crate::api::DatasetPhase;

#[test]
fn a_runtime_with_a_bad_spec_reports_a_condition_and_creates_nothing() {
    let mut runtime = seed_runtime(NAME, 1);
    runtime.spec.replicas = Some(-1);
    let mut world = World::new(Some(seed_dataset(NAME)), Some(runtime));
    let effects = world.settle(5);
    assert!(world.observed.workers.is_none() && world.observed.fuse.is_none());
    let status = world.observed.dataset.as_deref().unwrap().status.clone().unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason.as_deref(), Some("InvalidRuntimeSpec"));
    assert!(ready.message.as_deref().unwrap().contains("spec.replicas"), "{ready:?}");
    let warnings =
        effects.iter().filter(|e| matches!(e, Effect::Event { reason, .. } if reason == "InvalidRuntimeSpec")).count();
    assert_eq!(warnings, 1, "reported once, not on every retry");
}

#[test]
fn a_runtime_name_starting_with_a_digit_is_refused_with_a_reason() {
    let name = "1demo";
    let mut world = World::new(Some(seed_dataset(name)), Some(seed_runtime(name, 1)));
    world.observed.name = name.to_string();
    world.settle(5);
    let status = world.observed.dataset.as_deref().unwrap().status.clone().unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason.as_deref(), Some("InvalidRuntimeName"));
    assert!(ready.message.as_deref().unwrap().contains("metadata.name"));
    assert!(world.observed.workers.is_none());
}

#[test]
fn a_bound_dataset_whose_runtime_vanished_goes_back_to_not_bound() {
    let mut world = World::seed();
    world.settle(5);
    world.workers_run(1);
    world.settle(5);
    world.observed.runtime = None;
    world.settle(5);
    let status = world.observed.dataset.as_deref().unwrap().status.clone().unwrap();
    assert_eq!(status.phase, DatasetPhase::NotBound);
    assert!(status.runtimes.is_empty() && status.cache_states.is_empty());
}

#[test]
fn a_dataset_bound_to_another_runtime_type_is_not_taken_over() {
    let mut dataset = seed_dataset(NAME);
    dataset.status = Some(crate::api::DatasetStatus {
        phase: DatasetPhase::Bound,
        runtimes: vec![crate::api::dataset::RuntimeRef {
            name: NAME.into(),
            type_: "alluxio".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let world = World::new(Some(dataset), Some(seed_runtime(NAME, 1)));
    let decision = world.reconcile_runtime();
    assert_eq!(verbs(&decision.effects), ["event JuiceFSRuntime/default/jfsdemo"]);
}

#[test]
fn a_dataset_without_a_runtime_strips_the_labels_of_any_runtime_type() {
    let mut world = World::new(Some(seed_dataset(NAME)), None);
    world.settle(5);
    let keys = DatasetKeys::new(NS, NAME, Some("uid-1")).expect("keys");
    let alluxio_capacity = keys.capacity_label("alluxio", crate::labels::CapacityKind::Total);
    for key in [keys.common_label(), keys.runtime_label("alluxio"), alluxio_capacity] {
        world.label_node("node-a", &key);
    }
    world.label_node("node-a", "team.example.com/keep");
    world.settle(5);
    let left: Vec<String> = world.node_labels("node-a").into_keys().collect();
    assert_eq!(left, ["team.example.com/keep"], "a former Alluxio runtime's labels go too; others' stay");
}
