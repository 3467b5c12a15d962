//! Delta debugging of a failing world: drop pairs, nodes and timeline steps (faults are steps)
//! while the run still fails on the same invariant.

use super::world::World;
use super::{oracle, run_world};
use crate::scenario::{RunOptions, parse_str};

/// At most this many candidate runs per failure.
pub const SHRINK_RUNS_MAX: usize = 400;

/// A shrunk world and how many runs it took.
pub struct Shrunk {
    /// The smallest failing world found.
    pub world: World,
    /// Candidate runs.
    pub runs: usize,
}

/// Shrinks `world`, which fails on `invariant`.
pub fn shrink(world: &World, invariant: &str) -> Shrunk {
    let runs = std::cell::Cell::new(0);
    let mut fails = |candidate: &World| -> bool {
        if runs.get() >= SHRINK_RUNS_MAX {
            return false;
        }
        runs.set(runs.get() + 1);
        run_world(candidate).failure.is_some_and(|f| f.invariant == invariant)
    };
    let mut best = world.clone();
    loop {
        let before = (best.pairs.len(), best.nodes.len(), best.steps.len());
        let keys: Vec<String> = best.pairs.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
        for key in keys {
            let candidate = best.without_pair(&key);
            if !candidate.pairs.is_empty() && fails(&candidate) {
                best = candidate;
            }
        }
        let names: Vec<String> = best.nodes.iter().map(|n| n.name.clone()).collect();
        for name in names {
            let candidate = best.without_node(&name);
            if !candidate.nodes.is_empty() && fails(&candidate) {
                best = candidate;
            }
        }
        best = ddmin_steps(best, &mut fails);
        if (best.pairs.len(), best.nodes.len(), best.steps.len()) == before || runs.get() >= SHRINK_RUNS_MAX {
            break;
        }
    }
    Shrunk { world: best, runs: runs.get() }
}

/// ddmin over the timeline: remove chunks of halving size while the failure stays.
fn ddmin_steps(mut world: World, fails: &mut impl FnMut(&World) -> bool) -> World {
    let mut chunk = world.steps.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < world.steps.len() {
            let mut candidate = world.clone();
            let end = (start + chunk).min(candidate.steps.len());
            candidate.steps.drain(start..end);
            if fails(&candidate) {
                world = candidate;
            } else {
                start += chunk;
            }
        }
        if chunk == 1 {
            return world;
        }
        chunk = chunk.div_ceil(2);
    }
}

/// The oracle expectations that fail for `world` (to append to its scenario file when the
/// failure is the oracle's, so `ferrofluid-sim run` fails on it too).
pub fn expectations_for(world: &World, invariant: &str) -> Vec<String> {
    let text = world.render("oracle", &[]);
    let Ok(scenario) = parse_str(&text, "oracle.yaml") else { return Vec::new() };
    let result = crate::scenario::run(&scenario, &RunOptions::default());
    let claims = oracle::claims(world, &result.sim);
    oracle::failing(&claims, &result.sim)
        .into_iter()
        .filter(|(claim, _)| claim.invariant == invariant)
        .map(|(claim, _)| claim.text)
        .collect()
}
