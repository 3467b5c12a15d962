//! Node-side decisions for CSI calls: stage, publish, unpublish and unstage, as pure functions.
//!
//! The CSI node plugin (`csi`) and the simulated kubelet (`sim`) both drive these functions;
//! neither decides anything of its own. Each call takes a plain request (the CSI request's
//! fields, without gRPC types) and what the caller *observed* on the node, and returns a plan
//! value or a [`Refusal`]. The caller executes the plan (real `mount(2)` in `csi`, a mount
//! table in `sim`), observes again and asks again until the plan says it is done.
//!
//! ```text
//!   observe ──► plan_* ──► step ──► execute ──┐
//!      ▲                                       │
//!      └───────────────────────────────────────┘   until the step is the final one
//! ```
//!
//! * [`plan_stage`]: unmount a broken FUSE mount at `fluid_path`, remember what stage learned
//!   ([`StageRecord`], because `NodeUnstageVolume` carries no volume context), and label the
//!   node so the FUSE DaemonSet starts a pod there. Stage never waits for the FUSE mount.
//! * [`plan_publish`]: wait until the FUSE mount at `fluid_path` is healthy and of the PV's
//!   `mount_type` ([`classify_fuse_path`]: a tmpfs there is no FUSE mount), then bind-mount
//!   `fluid_path[/sub path]` onto the target, read-only when asked. Idempotent.
//! * [`plan_unpublish`]: unmount until the target is no longer a mount point (broken ones
//!   included), then remove it. Idempotent.
//! * [`plan_recover_mounts`]: after a FUSE daemon restart, bind each remembered publish
//!   ([`PublishRecord`]) and its `volume-subpaths` binds again, on top of the dead mounts, once
//!   the FUSE mount is healthy again. The CSI plugin and the simulated kubelet both call it.
//! * [`plan_unstage`]: apply the clean policy: `OnRuntimeDeleted` keeps the node label,
//!   `OnDemand` removes it once no bind mount of the volume remains on the node.
//!
//! Observations come from [`parse_mountinfo`] plus a `stat` outcome ([`PathProbe`]), combined
//! by [`classify_path`] into a [`PathState`].

pub mod kubelet;
mod mountinfo;
mod plan;
mod recover;
mod request;

pub use crate::api::FuseCleanPolicy;

pub use mountinfo::{
    MountEntry, PathProbe, PathState, classify_fuse_path, classify_path, count_volume_bind_mounts, describe_fuse_path,
    parse_mountinfo, topmost_mount,
};
pub use plan::{
    MountPlan, PublishStep, StagePlan, StageRecord, UnpublishStep, UnstagePlan, plan_publish, plan_stage,
    plan_unpublish, plan_unstage,
};
pub use recover::{
    BindKind, DUPLICATE_MOUNT_THRESHOLD, EventType, PublishRecord, REASON_DUPLICATE_MOUNTS, REASON_RECOVER_FAILED,
    REASON_RECOVER_SUCCEED, RecoverEvent, RecoverPlan, RecoverView, Repair, check_record, plan_recover_mounts,
};
pub use request::{
    AccessMode, AccessType, Capability, DatasetRef, FuseType, NodeLabel, PublishRequest, Refusal, RefusalKind,
    StageRequest, UnpublishRequest, UnstageRequest, VolumeContext, normalize_sub_path, parse_clean_policy,
};

#[cfg(test)]
mod tests;
