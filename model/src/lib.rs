//! Pure state-transition functions and Fluid's API types for ferrofluid.
//!
//! This crate is the whole control plane's logic. It does no IO, has no async, reads no clock
//! and draws no random numbers: the caller passes `now` in, and a reconcile returns a
//! [`effect::Decision`] (effects as plain values, plus a requeue). The simulator (`sim`), the
//! kube-rs adapter (`controller`) and the CSI node plugin (`csi`) all drive these functions;
//! none of them decides anything of its own. `model/clippy.toml` machine-checks the purity.
#![forbid(unsafe_code)]

pub mod api;
pub mod effect;
pub mod engine;
pub mod error;
pub mod labels;
pub mod node;
pub mod observe;
pub mod observed;
pub mod quantity;
pub mod reconcile;
mod render;
pub mod retry;
pub mod time;
pub mod unconfirmed;
pub mod volume;
pub mod watch;
pub mod write;

pub use error::ModelError;
