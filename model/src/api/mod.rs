//! Fluid's API, `data.fluid.io/v1alpha1`: the custom resources ferrofluid serves.

pub mod common;
pub mod dataset;
pub mod decode;
pub mod juicefs;

pub use common::{FuseCleanPolicy, Level, MediumType, RuntimeCondition, RuntimePhase, RuntimeStatus, TieredStore};
pub use dataset::{Dataset, DatasetCondition, DatasetPhase, DatasetSpec, DatasetStatus, Mount, Placement};
pub use juicefs::{InitUsersSpec, JuiceFSFuseSpec, JuiceFSRuntime, JuiceFSRuntimeSpec};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CRDs ferrofluid serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Dataset::crd(), JuiceFSRuntime::crd()]
}
