//! Proptest: once a decision's effects are applied, reconciling again writes nothing.

use proptest::prelude::*;

use super::*;
use crate::api::Placement;

#[derive(Debug, Clone)]
struct Shape {
    replicas: i32,
    ready: i32,
    shared: bool,
    pod_phase: Option<&'static str>,
    fuse_labelled: bool,
    delete_dataset: bool,
    delete_runtime: bool,
    settle_rounds_first: usize,
    long_name: bool,
}

fn shapes() -> impl Strategy<Value = Shape> {
    (
        0i32..4,
        0i32..4,
        any::<bool>(),
        prop_oneof![Just(None), Just(Some("Running")), Just(Some("Pending")), Just(Some("Succeeded"))],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0usize..3,
        any::<bool>(),
    )
        .prop_map(
            |(
                replicas,
                ready,
                shared,
                pod_phase,
                fuse_labelled,
                delete_dataset,
                delete_runtime,
                settle_rounds_first,
                long_name,
            )| Shape {
                replicas,
                ready: ready.min(replicas),
                shared,
                pod_phase,
                fuse_labelled,
                delete_dataset,
                delete_runtime,
                settle_rounds_first,
                long_name,
            },
        )
}

fn world_of(shape: &Shape) -> World {
    let name = if shape.long_name { "a-dataset-name-long-enough-to-need-the-uid-fallback" } else { NAME };
    let mut dataset = seed_dataset(name);
    if shape.shared {
        dataset.spec.placement = Some(Placement::Shared);
    }
    let mut world = World::new(Some(dataset), Some(seed_runtime(name, shape.replicas)));
    world.observed.name = name.to_string();
    world.refresh();
    for _ in 0..shape.settle_rounds_first {
        let decision = world.reconcile_dataset();
        world.apply(&decision);
        let decision = world.reconcile_runtime();
        world.apply(&decision);
    }
    if world.observed.workers.is_some() {
        world.workers_run(shape.ready);
    }
    if let Some(phase) = shape.pod_phase {
        world.pods.push(app_pod("app", "node-b", name, phase));
    }
    if shape.fuse_labelled {
        let key = world.keys().fuse_label();
        world.label_node("node-b", &key);
    }
    if shape.delete_dataset {
        std::sync::Arc::make_mut(world.observed.dataset.as_mut().unwrap()).metadata.deletion_timestamp =
            Some(world.now.to_time());
    }
    if shape.delete_runtime {
        std::sync::Arc::make_mut(world.observed.runtime.as_mut().unwrap()).metadata.deletion_timestamp =
            Some(world.now.to_time());
    }
    world.refresh();
    world
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn runtime_reconcile_is_idempotent(shape in shapes()) {
        let mut world = world_of(&shape);
        let decision = world.reconcile_runtime();
        world.apply(&decision);
        let again = world.reconcile_runtime();
        let writes: Vec<String> = again.writes().map(|e| format!("{} {}", e.verb(), e.target())).collect();
        prop_assert!(writes.is_empty(), "shape {:?}\nfirst: {:?}\nagain: {:?}", shape, verbs(&decision.effects), writes);
    }

    #[test]
    fn dataset_reconcile_is_idempotent(shape in shapes()) {
        let mut world = world_of(&shape);
        let decision = world.reconcile_dataset();
        world.apply(&decision);
        let again = world.reconcile_dataset();
        let writes: Vec<String> = again.writes().map(|e| format!("{} {}", e.verb(), e.target())).collect();
        prop_assert!(writes.is_empty(), "shape {:?}\nfirst: {:?}\nagain: {:?}", shape, verbs(&decision.effects), writes);
    }

    #[test]
    fn reconcilers_never_panic_and_never_emit_invalid_label_keys(shape in shapes()) {
        let world = world_of(&shape);
        for decision in [world.reconcile_dataset(), world.reconcile_runtime()] {
            for effect in &decision.effects {
                if let Effect::PatchLabels { labels, .. } = effect {
                    for (key, value) in labels {
                        prop_assert!(crate::labels::validate_label_key(key).is_ok(), "{}", key);
                        if let Some(value) = value {
                            prop_assert!(crate::labels::validate_label_value(value).is_ok(), "{}={}", key, value);
                        }
                    }
                }
            }
        }
    }
}
