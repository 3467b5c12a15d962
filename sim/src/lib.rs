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
pub mod workers;

pub use error::{Error, Result};
pub use sim::{Outcome, Sim, SimConfig};
