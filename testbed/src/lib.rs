//! ferrofluid's testbed: a node agent that plays kubelet for N named nodes against a real
//! Kubernetes control plane (`testbed/controlplane`), running the real CSI plugin, real JuiceFS
//! FUSE mounts and the ferrofluid controller as the pods `deploy/` declares.
//!
//! Each node gets its own mount and PID namespace ([`agent::nodens`]), each pod not on the host
//! network its own network namespace on a bridge ([`agent::podnet`]), and each container a mount
//! namespace of its own under its node's. Images map to local programs ([`agent::images`]).
#![forbid(unsafe_code)]

pub mod agent;
pub mod bench;
pub mod cluster;
pub mod error;
pub mod scenario;

pub use error::{Error, Result};
