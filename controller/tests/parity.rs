//! Parity: for the seed flow, the effects this controller executes equal those the simulator's run of `scenarios/seed-jfsdemo.yaml` shows (its committed snapshot), because both come from `model`.
//!
//! Both sides are reduced to, per object, the distinct effect descriptions in order of first
//! appearance (`Effect`'s `Display`, shared with the simulator's trace), so what differs by construction drops out:
//! timing, how many times a write was retried or repeated (the simulator injects 409s, and
//! fields a description does not show may change between two writes), and node names (its
//! scheduler picks `node-3`, this flow `node-a`). What the controller cannot see yet is excluded
//! and named: cache figures come from JuiceFS's metrics endpoint, which only the simulator feeds.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use model::effect::Effect;
use support::fixtures::{seed_dataset, seed_runtime};
use support::flow::Flow;

/// Per object, the ordered distinct effect descriptions.
type Effects = BTreeMap<String, Vec<String>>;

const ACTORS: [&str; 2] = ["dataset-ctl", "runtime-ctl"];

fn normalize_object(object: &str) -> String {
    if object.starts_with("Node/") { "Node/*".to_string() } else { object.to_string() }
}

/// Cache figures the controller does not observe yet (no metrics scrape).
fn needs_cache_samples(description: &str) -> bool {
    description.contains("cached=") && !description.contains("cached=0.00B")
}

fn push(effects: &mut Effects, object: String, description: String) {
    if needs_cache_samples(&description) {
        return;
    }
    let list = effects.entry(object).or_default();
    if !list.contains(&description) {
        list.push(description);
    }
}

/// The controllers' effects in the simulator's committed trace of the seed scenario
/// (`FERROFLUID_SIM_TRACE` may name another trace file, e.g. a fresh `ferrofluid-sim run`).
fn simulator_effects() -> Effects {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../snapshots/seed-jfsdemo.snap");
    let path = std::env::var_os("FERROFLUID_SIM_TRACE").map_or(committed, Into::into);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut effects = Effects::new();
    for line in text.lines() {
        // `time  actor  object  event`, fixed columns separated by runs of spaces.
        let mut fields = line.split_whitespace();
        let (Some(_time), Some(actor), Some(object)) = (fields.next(), fields.next(), fields.next()) else { continue };
        if !ACTORS.contains(&actor) {
            continue;
        }
        let rest = line.split_once(object).map(|(_, rest)| rest).unwrap_or_default().trim().to_string();
        if rest.contains(" failed: ") || rest.starts_with("requeue ") {
            continue;
        }
        push(&mut effects, normalize_object(object), rest);
    }
    effects
}

fn controller_effects(executed: &[Effect]) -> Effects {
    let mut effects = Effects::new();
    for effect in executed {
        push(&mut effects, normalize_object(&effect.target().to_string()), effect.to_string());
    }
    effects
}

#[tokio::test]
async fn the_controller_executes_the_effects_the_simulator_shows_for_the_seed() {
    let mut flow = Flow::new();
    let mut executed = Vec::new();
    flow.server.create(&seed_dataset());
    executed.extend(flow.settle().await);
    flow.server.create(&seed_runtime());
    executed.extend(flow.settle().await);
    flow.workers_run(1);
    executed.extend(flow.settle().await);
    flow.bind_claims();
    executed.extend(flow.settle().await);
    flow.app_pod_runs("node-a");
    executed.extend(flow.settle().await);
    flow.fuse_pods(1);
    executed.extend(flow.settle().await);

    let ours = controller_effects(&executed);
    let theirs = simulator_effects();
    assert!(!theirs.is_empty(), "no controller effects found in the simulator's snapshot");
    let render = |effects: &Effects| {
        effects.iter().map(|(object, list)| format!("{object}\n  {}", list.join("\n  "))).collect::<Vec<_>>().join("\n")
    };
    assert!(ours == theirs, "controller:\n{}\n\nsimulator:\n{}", render(&ours), render(&theirs));
}
