//! ferrofluid's CSI node plugin `fuse.csi.fluid.io`: a tonic gRPC server on a unix socket.
//!
//! The crate decides nothing: each Node RPC converts its message into a `model::node`
//! request, observes the node (mount table, `stat`), asks `model::node` for the next step and
//! executes it with `nix` ([`mounts`]) and a [`apiserver::NodeLabeler`], until the step is the
//! last one. The simulated kubelet in `sim` drives the same `model::node` functions against a
//! simulated mount table. Errors are one enum, [`error::CsiError`], turned into a
//! `tonic::Status` only when an RPC returns.
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod controller;
pub mod error;
pub mod locks;
pub mod memory_api;
pub mod mounts;
pub mod recovery;
pub mod server;
pub mod service;
pub mod state;

/// Generated CSI v1 messages and services (from `proto/csi.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("csi.v1");
}

pub use apiserver::{API_CALLS, ApiCall, EventSink, KubeApi, NodeLabeler};
pub use error::{CsiError, Result};
pub use memory_api::{MemoryApi, RecordedEvent};
pub use recovery::{RecoveryReport, recover_loop};
pub use service::{Plugin, PluginConfig};
