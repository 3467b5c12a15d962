//! Swarm exploration: generated worlds are valid scenarios, a seed means one run, a bounded
//! exploration passes, and the shrinker keeps a failure while dropping everything else.
//!
//! CI runs the larger bounded exploration in release:
//! `cargo run --release -p sim --bin ferrofluid-sim -- explore --seeds 500`.

use sim::explore::world::{Action, StepGen, World};
use sim::explore::{explore_seed, run_world, shrink};
use sim::scenario::parse_str;

#[test]
fn every_generated_world_is_a_valid_scenario_file() {
    for seed in 0..300 {
        let world = World::generate(seed);
        let text = world.render("Generated world parses", &[]);
        if let Err(error) = parse_str(&text, &format!("seed-{seed}.yaml")) {
            panic!("seed {seed}: {error}\n{text}");
        }
    }
}

#[test]
fn one_seed_gives_one_world_and_one_run() {
    assert_eq!(World::generate(11), World::generate(11));
    assert_ne!(World::generate(11), World::generate(12));
    let (first, second) = (explore_seed(11), explore_seed(11));
    assert_eq!(first.events, second.events);
    assert_eq!(first.convergence_ms, second.convergence_ms);
    assert_eq!(first.failure, second.failure);
}

#[test]
fn seeds_draw_different_fault_profiles() {
    let profiles: std::collections::BTreeSet<Vec<u64>> =
        (0..50).map(|seed| World::generate(seed).faults_by_kind().iter().map(|(_, n)| *n).collect()).collect();
    assert!(profiles.len() > 40, "only {} distinct fault profiles in 50 seeds", profiles.len());
}

#[test]
fn a_bounded_exploration_holds_every_invariant() {
    let mut failures = Vec::new();
    for seed in 0..40 {
        let report = explore_seed(seed);
        assert!(report.events > 0, "seed {seed} ran nothing");
        if let Some(failure) = report.failure {
            failures.push(format!("seed {seed}: {}: {}", failure.invariant, failure.message));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_shrinker_keeps_the_failure_and_drops_everything_else() {
    // A step the scenario parser refuses (a pod reference with two slashes) stands in for a bug.
    let mut world = World::generate(5);
    let pair = world.pairs[0].clone();
    let key = format!("{}/{}", pair.namespace, pair.name);
    world.steps.push(StepGen {
        at_ms: world.liveness_at_ms - 1000,
        action: Action::CrashPod { pod: "bad/name".to_string(), pair: key },
    });
    let failure = run_world(&world).failure.expect("the planted step fails");
    assert_eq!(failure.invariant, "generated-scenario-parses");
    let shrunk = shrink::shrink(&world, &failure.invariant);
    assert_eq!(run_world(&shrunk.world).failure.map(|f| f.invariant), Some(failure.invariant));
    assert_eq!(shrunk.world.steps.len(), 1, "{:?}", shrunk.world.steps);
    assert!(matches!(shrunk.world.steps[0].action, Action::CrashPod { .. }));
    assert_eq!((shrunk.world.nodes.len(), shrunk.world.pairs.len()), (1, 1));
}
