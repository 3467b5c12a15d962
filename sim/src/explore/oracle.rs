//! The liveness oracle: what a converged world must look like, written as scenario expectations
//! so that a failing shrunk scenario shows (and `ferrofluid-sim run` checks) the same thing.
//!
//! * **runtime-ready**: a runtime whose dataset exists, neither terminating, with a valid spec
//!   and room for its workers (see [`World::workers_fit`]) has `workerPhase: Ready` and all its
//!   replicas ready, and its dataset is `Bound`.
//! * **invalid-spec-reported**: a runtime with a deliberately invalid spec leaves its dataset
//!   `NotBound` with the `Ready` condition's reason `InvalidRuntimeSpec`.
//! * **unbound-without-runtime**: a live dataset without a runtime is `NotBound`.
//! * **workloads-run**: an app pod whose dataset is bound and live runs.

use model::api::DatasetPhase;
use model::effect::Kind;

use super::world::{Action, World};
use crate::scenario::expect::Expectation;
use crate::sim::Sim;

/// One oracle expectation and the invariant it stands for.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The invariant's name.
    pub invariant: &'static str,
    /// The expectation text.
    pub text: String,
}

/// The expectations the final state of `world` must meet.
pub fn claims(world: &World, sim: &Sim) -> Vec<Claim> {
    let store = &sim.api.store;
    let fit = world.workers_fit();
    let mut out = Vec::new();
    let mut claim = |invariant, text: String| out.push(Claim { invariant, text });
    for pair in &world.pairs {
        let (namespace, name) = (pair.namespace.as_str(), pair.name.as_str());
        let dataset = store.get_named(Kind::Dataset, namespace, name).filter(|o| !o.is_deleting());
        let runtime = store.get_named(Kind::JuiceFSRuntime, namespace, name).filter(|o| !o.is_deleting());
        let dataset_ref = format!("Dataset/{namespace}/{name}");
        match (dataset, runtime) {
            (Some(_), Some(runtime)) => {
                if pair.invalid.is_some() {
                    claim("invalid-spec-reported", format!("{dataset_ref} status.phase == NotBound"));
                    claim(
                        "invalid-spec-reported",
                        format!("{dataset_ref} status.conditions[type=Ready].reason == InvalidRuntimeSpec"),
                    );
                } else if fit {
                    let replicas = runtime.as_runtime().and_then(|r| r.spec.replicas).unwrap_or(1);
                    let runtime_ref = format!("JuiceFSRuntime/{namespace}/{name}");
                    claim("runtime-ready", format!("{runtime_ref} status.workerPhase == Ready"));
                    claim("runtime-ready", format!("{runtime_ref} status.workerNumberReady == {replicas}"));
                    claim("runtime-ready", format!("{dataset_ref} status.phase == Bound"));
                }
            }
            (Some(_), None) if store.get_named(Kind::JuiceFSRuntime, namespace, name).is_none() => {
                claim("unbound-without-runtime", format!("{dataset_ref} status.phase == NotBound"));
            }
            _ => {}
        }
    }
    for step in &world.steps {
        let Action::Pod { pod, pair, .. } = &step.action else { continue };
        let Some((namespace, name)) = pair.split_once('/') else { continue };
        let live = |kind| store.get_named(kind, namespace, name).is_some_and(|o| !o.is_deleting());
        let bound = store
            .get_named(Kind::Dataset, namespace, name)
            .and_then(|o| o.as_dataset())
            .is_some_and(|d| d.status.as_ref().is_some_and(|s| s.phase == DatasetPhase::Bound));
        let pod_live = store.get_named(Kind::Pod, namespace, pod).is_some_and(|o| !o.is_deleting());
        let text = format!("Pod/{namespace}/{pod} status.phase == Running");
        if pod_live && bound && live(Kind::Dataset) && live(Kind::JuiceFSRuntime) && !out.iter().any(|c| c.text == text)
        {
            out.push(Claim { invariant: "workloads-run", text });
        }
    }
    out
}

/// The claims that do not hold, with what was seen.
pub fn failing(claims: &[Claim], sim: &Sim) -> Vec<(Claim, String)> {
    claims
        .iter()
        .filter_map(|claim| match Expectation::parse(&claim.text) {
            Ok(expectation) => expectation.eval(sim).err().map(|seen| (claim.clone(), seen)),
            Err(error) => Some((claim.clone(), format!("the oracle wrote an unparsable expectation: {error}"))),
        })
        .collect()
}
