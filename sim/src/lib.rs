//! A deterministic, synchronous simulated Kubernetes cluster that runs ferrofluid's `model`.
//!
//! The simulator implements *Kubernetes* (an in-memory apiserver, a scheduler, the StatefulSet,
//! DaemonSet, PV/PVC, pvc-protection, garbage-collector and node-lifecycle controllers, a
//! kubelet per node with a simulated mount table, JuiceFS FUSE daemons and cache workers) and
//! nothing of Fluid: every control-plane decision comes from `model::reconcile`, and every CSI
//! node decision from `model::node`. Time is virtual (milliseconds), randomness comes from one
//! seeded ChaCha8 generator, and events are ordered by `(time, sequence)`, so one seed gives one
//! byte-identical trace on every machine.
//!
//! ```text
//!  scenario steps ──► apiserver ──watch──► k8s controllers / kubelets ──► apiserver
//!                        │  ▲                                               ▲
//!                        │  └──── effects ◄── model::reconcile ◄── Observed ┘ (informer cache)
//!                        └──watch (latency, lag)──► controller work queues
//! ```
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod clock;
pub mod control;
pub mod error;
pub mod explore;
pub mod faults;
pub mod fuse;
pub mod invariants;
pub mod kube;
pub mod kubelet;
pub mod mounts;
pub mod queue;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod sim;
pub mod trace;
pub mod view;
pub mod workers;

pub use error::{Error, Result};
pub use sim::{Outcome, Sim, SimConfig};

/// The count `name` is set to (`value`, say from the environment), else `default`.
pub fn count_setting(name: &str, value: Option<&str>, default: usize) -> Result<usize> {
    match value {
        None => Ok(default),
        Some(text) => match text.trim().parse::<usize>() {
            Ok(count) if count >= 1 => Ok(count),
            _ => Err(Error::Setting { name: name.to_string(), value: text.to_string() }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::count_setting;

    #[test]
    fn a_count_setting_is_a_whole_number_of_at_least_one_or_an_error_naming_it() {
        assert_eq!(count_setting("SCALE_RUNS", None, 3).unwrap(), 3);
        assert_eq!(count_setting("SCALE_RUNS", Some("5"), 3).unwrap(), 5);
        for bad in ["0", "-1", "two", "", "1.5"] {
            let error = count_setting("SCALE_RUNS", Some(bad), 3).unwrap_err().to_string();
            assert_eq!(error, format!("SCALE_RUNS={bad:?}: not a whole number of at least 1"));
        }
    }
}
