//! The four node decisions: what stage, publish, unpublish and unstage do next.

use serde::{Deserialize, Serialize};

use super::mountinfo::PathState;
use super::request::{
    NodeLabel, PublishRequest, Refusal, StageRequest, UnpublishRequest, UnstageRequest, VolumeContext,
    check_capability, check_path_field, check_required, parse_clean_policy, resolve_label, trim_trailing_slashes,
};
use crate::api::FuseCleanPolicy;
use crate::volume::ATTR_CLEAN_POLICY;

/// What `NodeStageVolume` learned, kept by the caller until `NodeUnstageVolume` (whose request
/// carries no volume context). `csi` stores it as JSON in its state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    /// The volume id it was staged under.
    pub volume_id: String,
    /// The FUSE mount point of the volume.
    pub fluid_path: String,
    /// The node label stage set.
    pub label: NodeLabel,
    /// What unstage does with the label.
    pub clean_policy: FuseCleanPolicy,
}

/// What `NodeStageVolume` does, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    /// Unmount this broken FUSE mount point (ENOTCONN) first, so a restarted FUSE pod can
    /// mount there again (Fluid #1345). Failures to do so are not fatal.
    pub unmount_broken_fluid_path: Option<String>,
    /// Persist this before labelling, so that unstage can undo the label after a restart.
    pub record: StageRecord,
    /// Set this label on the node: the FUSE DaemonSet's nodeSelector matches it.
    pub label: NodeLabel,
}

/// Plans `NodeStageVolume` given the observed state of the FUSE mount at `fluid_path`.
///
/// Refuses a missing `volume_id`, a missing or relative `staging_target_path`, a missing or
/// block `volume_capability`, a missing `fluid_path`, a label key that cannot be resolved and
/// an unknown clean policy. Stage never waits for the FUSE mount: the pod it starts mounts it.
pub fn plan_stage(req: &StageRequest, fluid_path: PathState) -> Result<StagePlan, Refusal> {
    check_required(&req.volume_id, "volume_id")?;
    check_path_field(&req.staging_target_path, "staging_target_path")?;
    check_capability(req.capability.as_ref())?;
    let ctx = VolumeContext::parse(&req.volume_context)?;
    let label = resolve_label(&req.volume_context)?;
    let clean_policy = parse_clean_policy(req.volume_context.get(ATTR_CLEAN_POLICY).map(String::as_str))?;
    let unmount_broken_fluid_path = (fluid_path == PathState::Broken).then(|| ctx.fluid_path.clone());
    Ok(StagePlan {
        unmount_broken_fluid_path,
        record: StageRecord {
            volume_id: req.volume_id.clone(),
            fluid_path: ctx.fluid_path,
            label: label.clone(),
            clean_policy,
        },
        label,
    })
}

/// A bind mount to perform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// `fluid_path[/sub_path]`.
    pub source: String,
    /// The publish target; create it (`mkdir -p`, mode 0750) when missing.
    pub target: String,
    /// Remount the bind read-only (`MS_BIND|MS_REMOUNT|MS_RDONLY`) after binding.
    pub read_only: bool,
}

/// The next step of `NodePublishVolume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishStep {
    /// The target is already a mount point with the requested access: answer OK.
    AlreadyPublished,
    /// The target is a broken mount (its FUSE daemon died): unmount it, observe and plan again.
    UnmountBrokenTarget {
        /// The target path.
        target: String,
    },
    /// The target is published read-write but read-only was asked (a publish that stopped
    /// between bind and remount): remount it read-only, then answer OK.
    RemountReadOnly {
        /// The target path.
        target: String,
    },
    /// The FUSE mount at `fluid_path` is absent, not a mount point or broken: observe again
    /// soon. The caller bounds the wait and then answers `DEADLINE_EXCEEDED` naming the path.
    WaitForFuse {
        /// The FUSE mount point being waited for.
        fluid_path: String,
    },
    /// Bind-mount, then answer OK.
    BindMount(MountPlan),
}

/// Plans the next step of `NodePublishVolume` from the observed FUSE mount and target.
///
/// Read-only is decided by a reader-only access mode, the `readonly` flag or an `ro` mount
/// flag. Refuses a missing `volume_id`, `target_path` or capability, a relative target, a block
/// capability, a missing `staging_target_path` (`FAILED_PRECONDITION`: this plugin stages), a
/// missing `fluid_path` and a sub path that would escape the mount. A target that is already
/// read-only when read-write was asked is `ALREADY_EXISTS`.
pub fn plan_publish(req: &PublishRequest, fluid_path: PathState, target: PathState) -> Result<PublishStep, Refusal> {
    check_required(&req.volume_id, "volume_id")?;
    check_path_field(&req.target_path, "target_path")?;
    let read_only = check_capability(req.capability.as_ref())? || req.readonly;
    if req.staging_target_path.trim().is_empty() {
        return Err(Refusal::precondition(
            "staging_target_path",
            "is required: this plugin has STAGE_UNSTAGE_VOLUME, stage the volume first",
        ));
    }
    check_path_field(&req.staging_target_path, "staging_target_path")?;
    let ctx = VolumeContext::parse(&req.volume_context)?;
    let target_path = trim_trailing_slashes(&req.target_path);
    if target_path == ctx.fluid_path {
        return Err(Refusal::invalid("target_path", "must differ from the FUSE mount point fluid_path"));
    }
    match target {
        PathState::Mounted { read_only: mounted_ro } if mounted_ro == read_only => Ok(PublishStep::AlreadyPublished),
        PathState::Mounted { .. } if read_only => Ok(PublishStep::RemountReadOnly { target: target_path }),
        PathState::Mounted { .. } => Err(Refusal::already_exists(
            "target_path",
            format!("{target_path} is already published read-only, and read-write was asked"),
        )),
        PathState::Broken => Ok(PublishStep::UnmountBrokenTarget { target: target_path }),
        PathState::Absent | PathState::Unmounted => match fluid_path {
            PathState::Mounted { .. } => {
                Ok(PublishStep::BindMount(MountPlan { source: ctx.source(), target: target_path, read_only }))
            }
            PathState::Absent | PathState::Unmounted | PathState::Broken => {
                Ok(PublishStep::WaitForFuse { fluid_path: ctx.fluid_path })
            }
        },
    }
}

/// The next step of `NodeUnpublishVolume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnpublishStep {
    /// Nothing is left at the target: answer OK.
    Done,
    /// Unmount the topmost mount at the target, then observe and plan again.
    Unmount {
        /// The target path.
        target: String,
        /// The mount is broken: when a plain unmount fails, detach it (`MNT_DETACH`).
        broken: bool,
    },
    /// The target is no longer a mount point: remove it, then observe and plan again.
    RemoveTarget {
        /// The target path.
        target: String,
    },
}

/// Plans the next step of `NodeUnpublishVolume` from the observed target. Stacked mounts are
/// unmounted one per step until none is left. Refuses a missing `volume_id` and a missing or
/// relative `target_path`.
pub fn plan_unpublish(req: &UnpublishRequest, target: PathState) -> Result<UnpublishStep, Refusal> {
    check_required(&req.volume_id, "volume_id")?;
    check_path_field(&req.target_path, "target_path")?;
    let target_path = trim_trailing_slashes(&req.target_path);
    Ok(match target {
        PathState::Absent => UnpublishStep::Done,
        PathState::Mounted { .. } => UnpublishStep::Unmount { target: target_path, broken: false },
        PathState::Broken => UnpublishStep::Unmount { target: target_path, broken: true },
        PathState::Unmounted => UnpublishStep::RemoveTarget { target: target_path },
    })
}

/// What `NodeUnstageVolume` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnstagePlan {
    /// Remove this label key from the node (only under [`FuseCleanPolicy::OnDemand`]).
    pub remove_label: Option<String>,
    /// Delete the stage record of the volume, if there is one.
    pub forget_record: bool,
}

/// Plans `NodeUnstageVolume` from what stage recorded and how many mounts of the volume are
/// still on the node ([`super::count_volume_bind_mounts`]).
///
/// Without a record (never staged here, or already unstaged) there is nothing to do: unstage is
/// idempotent. `OnRuntimeDeleted` keeps the label, and so does `OnFuseChanged` (ferrofluid
/// replaces FUSE pods by deleting them, not by unlabelling). `OnDemand` removes it, but refuses with
/// `FAILED_PRECONDITION` while bind mounts remain, so that kubelet retries rather than the
/// FUSE pod going away under a running application.
pub fn plan_unstage(
    req: &UnstageRequest,
    record: Option<&StageRecord>,
    bind_mounts_remaining: usize,
) -> Result<UnstagePlan, Refusal> {
    check_required(&req.volume_id, "volume_id")?;
    check_path_field(&req.staging_target_path, "staging_target_path")?;
    let Some(record) = record else {
        return Ok(UnstagePlan { remove_label: None, forget_record: false });
    };
    match record.clean_policy {
        FuseCleanPolicy::OnRuntimeDeleted | FuseCleanPolicy::OnFuseChanged => {
            Ok(UnstagePlan { remove_label: None, forget_record: true })
        }
        FuseCleanPolicy::OnDemand if bind_mounts_remaining > 0 => Err(Refusal::precondition(
            "volume_id",
            format!(
                "{}: {bind_mounts_remaining} mount(s) of {} remain on this node; unpublish them first",
                req.volume_id, record.fluid_path
            ),
        )),
        FuseCleanPolicy::OnDemand => {
            Ok(UnstagePlan { remove_label: Some(record.label.key.clone()), forget_record: true })
        }
    }
}
