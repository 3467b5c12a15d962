//! FUSE recovery: re-bind a pod's mounts after its FUSE daemon restarted.
//!
//! When a FUSE daemon dies, every bind mount of its mount point turns into a dead end
//! ("transport endpoint is not connected") and stays one after the daemon's pod restarts and
//! mounts again, because a bind mount holds the old connection. Fluid users meet this as pods
//! that must be restarted by hand. The CSI plugin remembers each publish ([`PublishRecord`]) and
//! periodically asks [`plan_recover_mounts`] what to do with it, from the node's mount table.
//!
//! The rules are Fluid's (`pkg/csi/recover`, PR #3403):
//!
//! * a bind is stale when its device is not the device of the FUSE mount now at `fluid_path`
//!   (each FUSE daemon incarnation mounts a new filesystem, and a dead bind keeps the old one);
//! * the repair binds the source again **on top of** the stale mount and never unmounts it
//!   first: an app container sees the target through mount propagation (HostToContainer), and
//!   unmounting every layer breaks that, so the container would keep its dead mount (Fluid #3399);
//! * kubelet's `volume-subpaths` binds of the target (a container's `subPath`) are stale with
//!   it and are bound again too, from `fluid_path` joined with the bind's root below the target's;
//! * a mount point with more than a threshold of stacked mounts (Fluid's
//!   `RECOVER_WARNING_THRESHOLD`, 50) is first unmounted down to one, with a warning event;
//! * each repair is reported on the Dataset: `FuseRecoverSucceed` or `FuseRecoverFailed`.
//!
//! [`plan_recover`] is the older per-path form that the simulated kubelet still calls: it
//! unmounts the dead bind before binding again, which the real plugin no longer does.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::mountinfo::{MountEntry, PathProbe, topmost_mount};
use super::plan::MountPlan;
use super::request::{FuseType, Refusal, check_path_field, check_required, is_within};

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

/// Fluid's `RECOVER_WARNING_THRESHOLD`: a mount point with more mounts stacked than this is
/// unmounted down to one before recovery binds on top of it again.
pub const DUPLICATE_MOUNT_THRESHOLD: usize = 50;

/// Event reason: a FUSE recovery bound a pod's mount again (Normal).
pub const REASON_RECOVER_SUCCEED: &str = "FuseRecoverSucceed";
/// Event reason: a FUSE recovery could not bind a pod's mount again (Warning).
pub const REASON_RECOVER_FAILED: &str = "FuseRecoverFailed";
/// Event reason: a mount point held more stacked mounts than the threshold (Warning).
pub const REASON_DUPLICATE_MOUNTS: &str = "UnmountDuplicateMountpoint";

/// What FUSE recovery observed on the node for one remembered publish.
#[derive(Debug, Clone, Copy)]
pub struct RecoverView<'a> {
    /// The node's mount table (`/proc/self/mountinfo`), in its order.
    pub mounts: &'a [MountEntry],
    /// The record's `fluid_path` as mountinfo writes it (symlinks resolved, no trailing `/`).
    pub fluid_path: &'a str,
    /// `statfs(fluid_path)`.
    pub fluid_probe: PathProbe,
    /// The record's target as mountinfo writes it.
    pub target: &'a str,
    /// `statfs(target)`: tells a target that vanished from one that is still there.
    pub target_probe: PathProbe,
    /// The filesystem type the FUSE mount must have to count as back.
    pub fuse_type: &'a FuseType,
    /// Mount points with more stacked mounts than this are cut down to one first.
    pub duplicate_threshold: usize,
}

/// Which mount of a pod a repair is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BindKind {
    /// The publish target, `…/volumes/kubernetes.io~csi/<pv>/mount`.
    Target,
    /// A kubelet bind of a sub path of the target for one container,
    /// `…/volume-subpaths/<volume>/<container>/<index>`.
    SubPath,
}

/// One mount point to bind again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// The target or a sub path bind of it.
    pub kind: BindKind,
    /// How many mounts are stacked at the mount point now.
    pub stacked: usize,
    /// Unmount this many topmost mounts first (`stacked - 1` when `stacked` exceeds the
    /// threshold, else 0), leaving the bottom one, which the app container's mount follows.
    pub unmount_duplicates: usize,
    /// The bind to make on top of whatever is left at `bind.target`; `bind.read_only` asks for
    /// a read-only bind (it must be read-only before it propagates into the container).
    pub bind: MountPlan,
}

/// What FUSE recovery does with one remembered publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverPlan {
    /// Every mount of the publish uses the live FUSE mount: nothing to do.
    Healthy,
    /// Something needs a new bind but the FUSE mount at `fluid_path` is not back (or not of the
    /// right type): look again next round.
    WaitForFuse {
        /// The FUSE mount point.
        fluid_path: String,
        /// What is there now, for the log.
        found: String,
    },
    /// The target no longer exists (the kubelet removed the pod's directory without a
    /// `NodeUnpublishVolume`): forget the record.
    Forget,
    /// Bind these again, in order (the target first, then its sub path binds).
    Repair(Vec<Repair>),
}

/// Plans the recovery of one remembered publish from the node's mount table.
///
/// The caller holds the target's publish lock, so that a `NodeUnpublishVolume` in progress
/// (which unmounts before it forgets) is never undone. A target that is a plain directory again
/// (a repair cut short, or a bind lost) is bound again too. A damaged record (relative paths, a
/// source outside `fluid_path`) is refused naming the field, and nothing is mounted from it.
pub fn plan_recover_mounts(record: &PublishRecord, view: &RecoverView<'_>) -> Result<RecoverPlan, Refusal> {
    check_record(record)?;
    let target_layers = layers(view.mounts, view.target);
    if target_layers.is_empty() && view.target_probe == PathProbe::Missing {
        return Ok(RecoverPlan::Forget);
    }
    let fuse = topmost_mount(view.mounts, view.fluid_path)
        .filter(|fuse| view.fuse_type.accepts(&fuse.fs_type) && view.fluid_probe == PathProbe::Present);
    let Some(fuse) = fuse else {
        if !target_layers.is_empty() && view.target_probe == PathProbe::Present {
            // A live bind outlives a FUSE mount point that went away cleanly.
            return Ok(RecoverPlan::Healthy);
        }
        return Ok(RecoverPlan::WaitForFuse {
            fluid_path: record.fluid_path.clone(),
            found: super::mountinfo::describe_fuse_path(view.mounts, view.fluid_path, view.fuse_type),
        });
    };
    let mut repairs = Vec::new();
    let duplicates = |stacked: usize| if stacked > view.duplicate_threshold { stacked - 1 } else { 0 };
    if target_layers.last().is_none_or(|top| top.major_minor != fuse.major_minor) {
        repairs.push(Repair {
            kind: BindKind::Target,
            stacked: target_layers.len(),
            unmount_duplicates: duplicates(target_layers.len()),
            bind: record.bind.clone(),
        });
    }
    for (mount_point, sub_layers) in sub_path_binds(view, &target_layers) {
        let Some(top) = sub_layers.last() else { continue };
        if top.major_minor == fuse.major_minor {
            continue;
        }
        // The sub path's root below the root of the target layer it was bound from.
        let anchor = target_layers
            .iter()
            .find(|layer| layer.major_minor == top.major_minor)
            .or_else(|| target_layers.first())
            .copied();
        let below = anchor.and_then(|anchor| strip_root(&top.root, &anchor.root)).ok_or_else(|| {
            Refusal::invalid(
                "bind.target",
                format!("the sub path bind {mount_point} (root {}) is not below the target {}", top.root, view.target),
            )
        })?;
        let source = format!("{}{below}", record.bind.source.trim_end_matches('/'));
        repairs.push(Repair {
            kind: BindKind::SubPath,
            stacked: sub_layers.len(),
            unmount_duplicates: duplicates(sub_layers.len()),
            bind: MountPlan { source, target: mount_point, read_only: top.read_only || record.bind.read_only },
        });
    }
    Ok(if repairs.is_empty() { RecoverPlan::Healthy } else { RecoverPlan::Repair(repairs) })
}

/// Every mount stacked at `path`, bottom first.
fn layers<'a>(mounts: &'a [MountEntry], path: &str) -> Vec<&'a MountEntry> {
    let path = path.trim_end_matches('/');
    mounts.iter().filter(|entry| entry.mount_point.trim_end_matches('/') == path).collect()
}

/// Kubelet's sub path binds of the target: mount points under the pod's `volume-subpaths`
/// directory that share a filesystem (device) with some mount stacked at the target. Keyed by
/// mount point, each with its stacked mounts, bottom first.
fn sub_path_binds<'a>(view: &RecoverView<'a>, target_layers: &[&MountEntry]) -> BTreeMap<String, Vec<&'a MountEntry>> {
    let mut binds: BTreeMap<String, Vec<&'a MountEntry>> = BTreeMap::new();
    let Some(at) = view.target.find("/volumes/kubernetes.io~csi/") else { return binds };
    let sub_paths = format!("{}/volume-subpaths", &view.target[..at]);
    let devices: BTreeSet<&str> = target_layers.iter().map(|layer| layer.major_minor.as_str()).collect();
    for entry in view.mounts.iter().filter(|entry| is_within(&entry.mount_point, &sub_paths)) {
        binds.entry(entry.mount_point.trim_end_matches('/').to_string()).or_default().push(entry);
    }
    binds.retain(|_, stacked| stacked.iter().any(|layer| devices.contains(layer.major_minor.as_str())));
    binds
}

/// `root` below `anchor` (`""` or `/…`), `None` when it is not below it.
fn strip_root<'a>(root: &'a str, anchor: &str) -> Option<&'a str> {
    let anchor = anchor.trim_end_matches('/');
    let rest = root.strip_prefix(anchor)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest.trim_end_matches('/'))
}

/// The type of a Kubernetes event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventType {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

impl EventType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// An event FUSE recovery records on the volume's Dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverEvent {
    /// `FuseRecoverSucceed`, `FuseRecoverFailed` or `UnmountDuplicateMountpoint`.
    pub reason: &'static str,
    /// Normal or Warning.
    pub event_type: EventType,
    /// What was done (events.k8s.io `action`).
    pub action: &'static str,
    /// The human-readable note, naming the volume and the mount point.
    pub note: String,
}

impl Repair {
    /// The warning for a mount point over the duplicate threshold, if this repair unmounts some.
    pub fn duplicate_event(&self, volume_id: &str, threshold: usize) -> Option<RecoverEvent> {
        (self.unmount_duplicates > 0).then(|| RecoverEvent {
            reason: REASON_DUPLICATE_MOUNTS,
            event_type: EventType::Warning,
            action: "UnmountDuplicates",
            note: format!(
                "volume {volume_id}: {} has {} mounts stacked, more than the threshold {threshold}; unmounting {} of them",
                self.bind.target, self.stacked, self.unmount_duplicates
            ),
        })
    }

    /// The event for the outcome of this repair: `error` is `None` when the bind was made.
    pub fn outcome_event(&self, volume_id: &str, error: Option<&str>) -> RecoverEvent {
        let what = match self.kind {
            BindKind::Target => "mount",
            BindKind::SubPath => "subPath mount",
        };
        match error {
            None => RecoverEvent {
                reason: REASON_RECOVER_SUCCEED,
                event_type: EventType::Normal,
                action: "FuseRecover",
                note: format!(
                    "volume {volume_id}: bound the pod's {what} {} again from {}{}",
                    self.bind.target,
                    self.bind.source,
                    if self.bind.read_only { " (read-only)" } else { "" }
                ),
            },
            Some(error) => RecoverEvent {
                reason: REASON_RECOVER_FAILED,
                event_type: EventType::Warning,
                action: "FuseRecover",
                note: format!(
                    "volume {volume_id}: binding the pod's {what} {} again failed: {error}",
                    self.bind.target
                ),
            },
        }
    }
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

    #[test]
    fn a_damaged_record_is_refused_naming_its_field() {
        let field_of = |record: PublishRecord| {
            let refusal = check_record(&record).expect_err("refused");
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
        assert!(check_record(&sub_path).is_ok(), "a sub path is");
        let mut anonymous = record();
        anonymous.volume_id = " ".into();
        assert_eq!(field_of(anonymous), "volume_id");
    }

    const FLUID: &str = "/runtime-mnt/juicefs/default/demo/juicefs-fuse";
    const POD: &str = "/var/lib/kubelet/pods/p";
    const TARGET: &str = "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/default-demo/mount";

    /// A mount table: the FUSE mount at `fluid_path` on `fuse_dev` (if any), then `lines`
    /// (`device root mount_point [ro]`).
    fn table(fuse_dev: Option<&str>, lines: &[&str]) -> Vec<MountEntry> {
        let mut text = String::from("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n");
        if let Some(dev) = fuse_dev {
            text.push_str(&format!("40 22 {dev} / {FLUID} rw - fuse.juicefs JuiceFS:demo rw\n"));
        }
        for (i, line) in lines.iter().enumerate() {
            let parts: Vec<&str> = line.split(' ').collect();
            let opts = if parts.get(3) == Some(&"ro") { "ro" } else { "rw" };
            text.push_str(&format!(
                "{} 22 {} {} {} {opts} shared:{i} - fuse.juicefs JuiceFS:demo rw\n",
                100 + i,
                parts[0],
                parts[1],
                parts[2]
            ));
        }
        crate::node::parse_mountinfo(&text)
    }

    fn rw_record() -> PublishRecord {
        PublishRecord { bind: MountPlan { read_only: false, ..record().bind }, ..record() }
    }

    fn plan(record: &PublishRecord, mounts: &[MountEntry], fluid: PathProbe, target: PathProbe) -> RecoverPlan {
        plan_with(record, mounts, fluid, target, DUPLICATE_MOUNT_THRESHOLD)
    }

    fn plan_with(
        record: &PublishRecord,
        mounts: &[MountEntry],
        fluid: PathProbe,
        target: PathProbe,
        threshold: usize,
    ) -> RecoverPlan {
        let fuse_type = FuseType::of(Some("JuiceFS"));
        let view = RecoverView {
            mounts,
            fluid_path: FLUID,
            fluid_probe: fluid,
            target: TARGET,
            target_probe: target,
            fuse_type: &fuse_type,
            duplicate_threshold: threshold,
        };
        plan_recover_mounts(record, &view).expect("a sound record")
    }

    #[test]
    fn binds_of_the_live_fuse_mount_are_healthy() {
        let mounts = table(Some("0:50"), &[&format!("0:50 / {TARGET}")]);
        assert_eq!(plan(&rw_record(), &mounts, PathProbe::Present, PathProbe::Present), RecoverPlan::Healthy);
    }

    #[test]
    fn a_stale_target_is_bound_on_top_once_the_fuse_mount_is_back() {
        // The old daemon's device 0:49 is dead; nothing is at fluid_path yet.
        let dead = table(None, &[&format!("0:49 / {TARGET}")]);
        let RecoverPlan::WaitForFuse { fluid_path, found } =
            plan(&rw_record(), &dead, PathProbe::Missing, PathProbe::NotConnected)
        else {
            panic!("waits")
        };
        assert_eq!(fluid_path, FLUID);
        assert!(found.contains("no mount"), "{found}");
        // The new daemon mounted 0:51: one bind on top, nothing unmounted.
        let back = table(Some("0:51"), &[&format!("0:49 / {TARGET}")]);
        assert_eq!(
            plan(&rw_record(), &back, PathProbe::Present, PathProbe::NotConnected),
            RecoverPlan::Repair(vec![Repair {
                kind: BindKind::Target,
                stacked: 1,
                unmount_duplicates: 0,
                bind: rw_record().bind
            }])
        );
        // After the bind the topmost mount is the live one: healthy, the dead one stays below.
        let repaired = table(Some("0:51"), &[&format!("0:49 / {TARGET}"), &format!("0:51 / {TARGET}")]);
        assert_eq!(plan(&rw_record(), &repaired, PathProbe::Present, PathProbe::Present), RecoverPlan::Healthy);
    }

    #[test]
    fn a_tmpfs_at_fluid_path_is_not_the_fuse_mount_coming_back() {
        let mut mounts = table(Some("0:51"), &[&format!("0:49 / {TARGET}")]);
        mounts[1].fs_type = "tmpfs".into();
        let RecoverPlan::WaitForFuse { found, .. } =
            plan(&rw_record(), &mounts, PathProbe::Present, PathProbe::NotConnected)
        else {
            panic!("a tmpfs is no FUSE mount")
        };
        assert!(found.contains("tmpfs") && found.contains("fuse.juicefs"), "{found}");
    }

    #[test]
    fn sub_path_binds_of_the_target_are_bound_again_from_their_root() {
        let sub = format!("{POD}/volume-subpaths/data/app/0");
        let other_pod = "/var/lib/kubelet/pods/q/volume-subpaths/data/app/0";
        let mounts = table(
            Some("0:51"),
            &[
                &format!("0:49 / {TARGET}"),
                &format!("0:49 /team/a {sub} ro"),
                // Another pod's sub path, and one of another filesystem in this pod: not ours.
                &format!("0:49 /team/b {other_pod}"),
                &format!("0:77 /x {POD}/volume-subpaths/other/app/0"),
            ],
        );
        let RecoverPlan::Repair(repairs) = plan(&rw_record(), &mounts, PathProbe::Present, PathProbe::NotConnected)
        else {
            panic!("repairs")
        };
        assert_eq!(repairs.len(), 2, "{repairs:?}");
        assert_eq!(repairs[0].kind, BindKind::Target);
        assert_eq!(
            repairs[1],
            Repair {
                kind: BindKind::SubPath,
                stacked: 1,
                unmount_duplicates: 0,
                bind: MountPlan { source: format!("{FLUID}/team/a"), target: sub.clone(), read_only: true },
            }
        );
        // With a fluid_sub_path the target's own root is below the FUSE root: the sub path's
        // root is taken below the target's.
        let mut sub_record = rw_record();
        sub_record.bind.source = format!("{FLUID}/team");
        let mounts = table(Some("0:51"), &[&format!("0:51 /team {TARGET}"), &format!("0:49 /team/a {sub}")]);
        let mut with_old_layer = mounts.clone();
        with_old_layer.insert(2, table(None, &[&format!("0:49 /team {TARGET}")])[1].clone());
        let RecoverPlan::Repair(repairs) = plan(&sub_record, &with_old_layer, PathProbe::Present, PathProbe::Present)
        else {
            panic!("the sub path alone is stale")
        };
        assert_eq!(repairs.len(), 1, "{repairs:?}");
        assert_eq!(repairs[0].bind.source, format!("{FLUID}/team/a"));
        assert!(!repairs[0].bind.read_only);
    }

    #[test]
    fn more_stacked_mounts_than_the_threshold_are_cut_down_to_one_with_a_warning() {
        let lines: Vec<String> = (0..4).map(|_| format!("0:49 / {TARGET}")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mounts = table(Some("0:51"), &lines);
        let RecoverPlan::Repair(repairs) =
            plan_with(&rw_record(), &mounts, PathProbe::Present, PathProbe::NotConnected, 3)
        else {
            panic!("repairs")
        };
        assert_eq!((repairs[0].stacked, repairs[0].unmount_duplicates), (4, 3));
        let warning = repairs[0].duplicate_event("default-demo", 3).expect("a warning");
        assert_eq!((warning.reason, warning.event_type), (REASON_DUPLICATE_MOUNTS, EventType::Warning));
        assert!(warning.note.contains(TARGET) && warning.note.contains('4'), "{}", warning.note);
        // At the threshold, nothing is unmounted and nothing is said.
        let RecoverPlan::Repair(repairs) =
            plan_with(&rw_record(), &mounts, PathProbe::Present, PathProbe::NotConnected, 4)
        else {
            panic!("repairs")
        };
        assert_eq!(repairs[0].unmount_duplicates, 0);
        assert_eq!(repairs[0].duplicate_event("default-demo", 4), None);
    }

    #[test]
    fn outcome_events_name_the_volume_and_the_mount_point() {
        let repair = Repair { kind: BindKind::Target, stacked: 1, unmount_duplicates: 0, bind: record().bind };
        let ok = repair.outcome_event("default-demo", None);
        assert_eq!((ok.reason, ok.event_type), (REASON_RECOVER_SUCCEED, EventType::Normal));
        assert!(ok.note.contains("default-demo") && ok.note.contains(TARGET) && ok.note.contains("read-only"));
        let failed = repair.outcome_event("default-demo", Some("EPERM"));
        assert_eq!((failed.reason, failed.event_type), (REASON_RECOVER_FAILED, EventType::Warning));
        assert!(failed.note.contains("EPERM"), "{}", failed.note);
    }

    #[test]
    fn a_vanished_target_is_forgotten_and_a_plain_directory_is_bound() {
        let mounts = table(Some("0:51"), &[]);
        assert_eq!(plan(&rw_record(), &mounts, PathProbe::Present, PathProbe::Missing), RecoverPlan::Forget);
        let RecoverPlan::Repair(repairs) = plan(&rw_record(), &mounts, PathProbe::Present, PathProbe::Present) else {
            panic!("binds")
        };
        assert_eq!(repairs[0].stacked, 0);
        // While the FUSE mount is down, a live bind is left alone and a dead one waits.
        let live = table(None, &[&format!("0:49 / {TARGET}")]);
        assert_eq!(plan(&rw_record(), &live, PathProbe::Missing, PathProbe::Present), RecoverPlan::Healthy);
    }

    #[test]
    fn the_new_plan_refuses_a_damaged_record_too() {
        let mut relative = rw_record();
        relative.bind.target = "pods/p/mount".into();
        let fuse_type = FuseType::AnyFuse;
        let view = RecoverView {
            mounts: &[],
            fluid_path: FLUID,
            fluid_probe: PathProbe::Present,
            target: TARGET,
            target_probe: PathProbe::Present,
            fuse_type: &fuse_type,
            duplicate_threshold: 50,
        };
        let refusal = plan_recover_mounts(&relative, &view).unwrap_err();
        assert_eq!(refusal.error.field(), Some("bind.target"));
    }

    #[test]
    fn a_record_round_trips_through_json() {
        let json = serde_json::to_string(&record()).expect("serialize");
        assert_eq!(serde_json::from_str::<PublishRecord>(&json).expect("parse"), record());
    }
}
