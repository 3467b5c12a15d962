//! FUSE recovery: re-bind a pod's mount after its FUSE daemon restarted.
//!
//! When a FUSE daemon dies, every bind mount of its mount point turns into a dead end
//! ("transport endpoint is not connected") and stays one after the daemon's pod restarts and
//! mounts again, because a bind mount holds the old connection. Fluid users meet this as pods
//! that must be restarted by hand. The CSI plugin remembers each publish ([`PublishRecord`]) and
//! periodically asks [`plan_recover`] what to do with it; the simulated kubelet does the same.

use serde::{Deserialize, Serialize};

use super::mountinfo::PathState;
use super::plan::MountPlan;
use super::request::{Refusal, check_path_field, check_required, is_within};

/// A publish the plugin remembers until `NodeUnpublishVolume`, so that it can repair the bind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRecord {
    /// The volume id it was published under.
    pub volume_id: String,
    /// The FUSE mount point the bind comes from.
    pub fluid_path: String,
    /// What was bound, as planned by `plan_publish`: `fluid_path[/sub path]`, the target and
    /// the read-only flag.
    pub bind: MountPlan,
}

/// What to do with one remembered publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverStep {
    /// The target is a healthy mount: nothing to do.
    Healthy,
    /// The target needs a new bind, but the FUSE mount at `fluid_path` is not healthy yet
    /// (its pod is restarting): look again next round.
    WaitForFuse {
        /// The FUSE mount point.
        fluid_path: String,
    },
    /// Unmount the dead bind at the target (when `unmount_broken` says so), then bind again.
    Rebind {
        /// The target is a broken mount that must go first.
        unmount_broken: bool,
        /// The bind to make.
        bind: MountPlan,
    },
    /// The target no longer exists (the kubelet removed the pod's directory without a
    /// `NodeUnpublishVolume`): forget the record.
    Forget,
}

/// Plans the repair of one remembered publish from the observed FUSE mount and target.
///
/// A target that is a plain directory again is re-bound too: a repair that stopped between its
/// unmount and its bind leaves exactly that. The caller must hold the target's publish lock, so
/// that a `NodeUnpublishVolume` in progress (which unmounts before it forgets) is never undone.
/// A record whose paths are not absolute (a hand-edited or damaged file) is refused, naming the
/// field, and nothing is mounted from it.
pub fn plan_recover(record: &PublishRecord, fluid_path: PathState, target: PathState) -> Result<RecoverStep, Refusal> {
    check_record(record)?;
    let unmount_broken = match target {
        PathState::Mounted { .. } => return Ok(RecoverStep::Healthy),
        PathState::Absent => return Ok(RecoverStep::Forget),
        PathState::Broken => true,
        PathState::Unmounted => false,
    };
    Ok(match fluid_path {
        PathState::Mounted { .. } => RecoverStep::Rebind { unmount_broken, bind: record.bind.clone() },
        PathState::Absent | PathState::Unmounted | PathState::Broken => {
            RecoverStep::WaitForFuse { fluid_path: record.fluid_path.clone() }
        }
    })
}

/// Checks a record before anything is observed or mounted from it.
pub fn check_record(record: &PublishRecord) -> Result<(), Refusal> {
    check_required(&record.volume_id, "volume_id")?;
    check_path_field(&record.fluid_path, "fluid_path")?;
    check_path_field(&record.bind.source, "bind.source")?;
    check_path_field(&record.bind.target, "bind.target")?;
    if !is_within(&record.bind.source, &record.fluid_path) {
        return Err(Refusal::invalid("bind.source", format!("{:?} is not under fluid_path", record.bind.source)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> PublishRecord {
        PublishRecord {
            volume_id: "default-demo".into(),
            fluid_path: "/runtime-mnt/juicefs/default/demo/juicefs-fuse".into(),
            bind: MountPlan {
                source: "/runtime-mnt/juicefs/default/demo/juicefs-fuse".into(),
                target: "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/default-demo/mount".into(),
                read_only: true,
            },
        }
    }

    const MOUNTED: PathState = PathState::Mounted { read_only: false };

    #[test]
    fn a_healthy_target_is_left_alone_whatever_the_fuse_mount_does() {
        for fuse in [MOUNTED, PathState::Broken, PathState::Absent, PathState::Unmounted] {
            assert_eq!(plan_recover(&record(), fuse, PathState::Mounted { read_only: true }), Ok(RecoverStep::Healthy));
        }
    }

    #[test]
    fn a_broken_target_waits_for_the_fuse_mount_then_is_rebound_read_only() {
        let fluid_path = record().fluid_path;
        for fuse in [PathState::Broken, PathState::Absent, PathState::Unmounted] {
            assert_eq!(
                plan_recover(&record(), fuse, PathState::Broken),
                Ok(RecoverStep::WaitForFuse { fluid_path: fluid_path.clone() })
            );
        }
        assert_eq!(
            plan_recover(&record(), MOUNTED, PathState::Broken),
            Ok(RecoverStep::Rebind { unmount_broken: true, bind: record().bind })
        );
    }

    #[test]
    fn a_repair_cut_short_after_its_unmount_binds_without_unmounting() {
        assert_eq!(
            plan_recover(&record(), MOUNTED, PathState::Unmounted),
            Ok(RecoverStep::Rebind { unmount_broken: false, bind: record().bind })
        );
    }

    #[test]
    fn a_vanished_target_is_forgotten() {
        assert_eq!(plan_recover(&record(), MOUNTED, PathState::Absent), Ok(RecoverStep::Forget));
        assert_eq!(plan_recover(&record(), PathState::Broken, PathState::Absent), Ok(RecoverStep::Forget));
    }

    #[test]
    fn a_damaged_record_is_refused_naming_its_field() {
        let field_of = |record: PublishRecord| {
            let refusal = plan_recover(&record, MOUNTED, PathState::Broken).expect_err("refused");
            refusal.error.field().map(str::to_string).unwrap_or_default()
        };
        let mut relative = record();
        relative.bind.target = "pods/p/mount".into();
        assert_eq!(field_of(relative), "bind.target");
        let mut escaping = record();
        escaping.fluid_path = "/runtime-mnt/../etc".into();
        assert_eq!(field_of(escaping), "fluid_path");
        let mut elsewhere = record();
        elsewhere.bind.source = "/etc".into();
        assert_eq!(field_of(elsewhere), "bind.source");
        let mut sibling = record();
        sibling.bind.source = format!("{}-other/sub", record().fluid_path);
        assert_eq!(field_of(sibling), "bind.source", "a sibling sharing the name's prefix is not under it");
        let mut sub_path = record();
        sub_path.bind.source = format!("{}/sub", record().fluid_path);
        assert!(plan_recover(&sub_path, MOUNTED, PathState::Broken).is_ok(), "a sub path is");
        let mut anonymous = record();
        anonymous.volume_id = " ".into();
        assert_eq!(field_of(anonymous), "volume_id");
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let json = serde_json::to_string(&record()).expect("serialize");
        assert_eq!(serde_json::from_str::<PublishRecord>(&json).expect("parse"), record());
    }
}
