//! ferrofluid's kube-rs controller: observes the cluster through reflector stores, asks `model`, and executes the effects it returns.
//!
//! The crate decides nothing. [`observe`] turns stores into `model::observed::Observed`,
//! `model::reconcile` returns a `Decision`, and [`execute`] sends each effect as exactly one
//! request, only while [`leader`] says this replica holds the Lease. [`run`] wires the watchers,
//! the trigger mapping ([`triggers`]) and two kube-runtime `Controller`s.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache_metrics;
pub mod config;
pub mod context;
pub mod error;
pub mod execute;
pub mod health;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod process_metrics;
pub mod run;
pub mod triggers;

pub use error::{Error, Result};

/// The CRDs as a multi-document YAML stream, exactly as `ferrofluid-controller crds` prints them.
pub fn crds_yaml() -> String {
    model::api::crds()
        .iter()
        .map(|crd| serde_yaml_ng::to_string(crd).unwrap_or_else(|e| panic!("a CRD always serializes: {e}")))
        .collect::<Vec<_>>()
        .join("---\n")
}
