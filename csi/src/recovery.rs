//! FUSE recovery: a periodic pass that binds pods' mounts again after their FUSE daemon restarted.
//!
//! Each `NodePublishVolume` leaves a publish record (see [`crate::state`]); `NodeUnpublishVolume`
//! removes it. A pass reads the records and, for each one under the target's publish lock,
//! reads the mount table, probes the FUSE mount and the target, and executes what
//! `model::node::plan_recover_mounts` decides: binds on top of the stale mounts (the target and
//! kubelet's `volume-subpaths` binds of it), after cutting a mount point with too many stacked
//! mounts down to one. Each repair is reported on the volume's Dataset as an event; events are
//! best effort, and a failed one never stops a repair. `--fuse-recovery=false` turns it off.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use model::node::{FuseType, RecoverPlan, RecoverView, Repair, check_record, plan_recover_mounts};

use crate::apiserver::{EventSink, NodeLabeler};
use crate::error::Result;
use crate::mounts;
use crate::service::Plugin;
use crate::state::StoredPublish;

/// What one FUSE recovery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Mount points bound again (targets and sub path binds).
    pub rebound: Vec<String>,
    /// Targets whose FUSE mount is not back yet.
    pub waiting: Vec<String>,
    /// Records dropped because their target is gone.
    pub forgotten: Vec<String>,
    /// Targets skipped because a publish or unpublish of them was in progress.
    pub busy: Vec<String>,
    /// Mount points cut down to one mount first: (mount point, mounts unmounted).
    pub deduplicated: Vec<(String, usize)>,
    /// What failed, each naming its target or record file.
    pub errors: Vec<String>,
}

impl<L: NodeLabeler + EventSink> Plugin<L> {
    /// One FUSE recovery pass over the remembered publishes (see the module documentation).
    pub async fn recover_once(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let (records, problems) = self.state.list_publish().await?;
        report.errors.extend(problems.iter().map(ToString::to_string));
        for stored in records {
            let target = stored.record.bind.target.clone();
            let Ok(_guard) = self.targets.try_acquire_target(&target) else {
                report.busy.push(target);
                continue;
            };
            if let Err(err) = self.recover_target(&stored, &mut report).await {
                let file = self.state.publish_path(&target);
                report.errors.push(format!("{} (target {target}): {err}", file.display()));
            }
        }
        Ok(report)
    }

    async fn recover_target(&self, stored: &StoredPublish, report: &mut RecoveryReport) -> Result<()> {
        let record = &stored.record;
        let target = record.bind.target.clone();
        // Nothing is observed, let alone mounted, from a damaged record.
        check_record(record)?;
        let table = mounts::read_mountinfo().await?;
        let (fluid, target_path) = (Path::new(&record.fluid_path), Path::new(&target));
        let fluid_listed = mounts::mount_path(fluid).to_string_lossy().into_owned();
        let target_listed = mounts::mount_path(target_path).to_string_lossy().into_owned();
        let fuse_type = FuseType::of(stored.mount_type.as_deref());
        let view = RecoverView {
            mounts: &table,
            fluid_path: &fluid_listed,
            fluid_probe: mounts::probe(fluid).await,
            target: &target_listed,
            target_probe: mounts::probe(target_path).await,
            fuse_type: &fuse_type,
            duplicate_threshold: self.config.duplicate_threshold,
        };
        match plan_recover_mounts(record, &view)? {
            RecoverPlan::Healthy => {}
            RecoverPlan::WaitForFuse { fluid_path, found } => {
                tracing::info!(volume_id = %record.volume_id, %target, %fluid_path, %found, "FUSE recovery waits for the FUSE mount");
                report.waiting.push(target);
            }
            RecoverPlan::Forget => {
                self.state.remove_publish(&target).await?;
                report.forgotten.push(target);
            }
            RecoverPlan::Repair(repairs) => {
                // One failed mount point does not keep the others dead.
                for repair in repairs {
                    if let Err(err) = self.repair(stored, &repair, report).await {
                        let file = self.state.publish_path(&target);
                        report.errors.push(format!(
                            "{} (target {target}, mount point {}): {err}",
                            file.display(),
                            repair.bind.target
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Executes one repair: the duplicates first, then the bind on top; then its event.
    async fn repair(&self, stored: &StoredPublish, repair: &Repair, report: &mut RecoveryReport) -> Result<()> {
        let record = &stored.record;
        let mount_point = Path::new(&repair.bind.target);
        if let Some(warning) = repair.duplicate_event(&record.volume_id, self.config.duplicate_threshold) {
            tracing::warn!(volume_id = %record.volume_id, target = %repair.bind.target, stacked = repair.stacked, "{}", warning.note);
            self.record_event(stored, &warning).await;
            for _ in 0..repair.unmount_duplicates {
                mounts::unmount(mount_point, true).await?;
            }
            report.deduplicated.push((repair.bind.target.clone(), repair.unmount_duplicates));
        }
        let result = mounts::bind_on_top(&repair.bind, Path::new(&record.fluid_path)).await;
        let error = result.as_ref().err().map(ToString::to_string);
        self.record_event(stored, &repair.outcome_event(&record.volume_id, error.as_deref())).await;
        result?;
        tracing::info!(volume_id = %record.volume_id, target = %repair.bind.target, source = %repair.bind.source,
            kind = ?repair.kind, read_only = repair.bind.read_only, "FUSE recovery bound the mount again");
        report.rebound.push(repair.bind.target.clone());
        Ok(())
    }

    /// Records `event` on the record's Dataset; a failure is logged, never returned.
    async fn record_event(&self, stored: &StoredPublish, event: &model::node::RecoverEvent) {
        let Some(dataset) = &stored.dataset else {
            tracing::debug!(volume_id = %stored.record.volume_id, reason = event.reason, "no dataset to record the event on");
            return;
        };
        if let Err(err) = self.labeler.record(&self.config.node_id, dataset, event).await {
            tracing::warn!(volume_id = %stored.record.volume_id, %dataset, reason = event.reason, %err, "event not recorded");
        }
    }
}

/// Runs [`Plugin::recover_once`] every `period` until `shutdown` resolves.
pub async fn recover_loop<L: NodeLabeler + EventSink>(
    plugin: Arc<Plugin<L>>,
    period: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(period) => {}
        }
        match plugin.recover_once().await {
            Ok(report) => {
                for error in &report.errors {
                    tracing::warn!(%error, "FUSE recovery");
                }
            }
            Err(err) => tracing::warn!(%err, "FUSE recovery pass failed"),
        }
    }
}
