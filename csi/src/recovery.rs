//! FUSE recovery: a periodic pass that binds pods' mounts again after their FUSE daemon restarted.
//!
//! Each `NodePublishVolume` leaves a publish record (see [`crate::state`]); `NodeUnpublishVolume`
//! removes it. A pass reads the records, observes each target and its FUSE mount, and does what
//! `model::node::plan_recover` decides, under the target's publish lock.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use model::node::{PublishRecord, RecoverStep, check_record, plan_recover};

use crate::error::Result;
use crate::labeler::NodeLabeler;
use crate::mounts;
use crate::service::Plugin;

/// What one FUSE recovery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Targets bound again.
    pub rebound: Vec<String>,
    /// Targets whose FUSE mount is not back yet.
    pub waiting: Vec<String>,
    /// Records dropped because their target is gone.
    pub forgotten: Vec<String>,
    /// Targets skipped because a publish or unpublish of them was in progress.
    pub busy: Vec<String>,
    /// What failed, each naming its target or record file.
    pub errors: Vec<String>,
}

impl<L: NodeLabeler> Plugin<L> {
    /// One FUSE recovery pass over the remembered publishes: a target whose bind went dead
    /// (its FUSE daemon died) is bound again once the FUSE mount is healthy, as
    /// `model::node::plan_recover` decides. Each target is handled under its publish lock.
    pub async fn recover_once(&self) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let (records, problems) = self.state.list_publish().await?;
        report.errors.extend(problems.iter().map(ToString::to_string));
        for record in records {
            let target = record.bind.target.clone();
            let Ok(_guard) = self.targets.try_acquire_target(&target) else {
                report.busy.push(target);
                continue;
            };
            if let Err(err) = self.recover_target(&record, &mut report).await {
                let file = self.state.publish_path(&target);
                report.errors.push(format!("{} (target {target}): {err}", file.display()));
            }
        }
        Ok(report)
    }

    async fn recover_target(&self, record: &PublishRecord, report: &mut RecoveryReport) -> Result<()> {
        let target = record.bind.target.clone();
        // Nothing is observed, let alone mounted, from a damaged record.
        check_record(record)?;
        let [fuse, target_state] = mounts::observe_all([Path::new(&record.fluid_path), Path::new(&target)]).await?;
        match plan_recover(record, fuse, target_state)? {
            RecoverStep::Healthy => {}
            RecoverStep::WaitForFuse { fluid_path } => {
                tracing::info!(volume_id = %record.volume_id, %target, %fluid_path, "FUSE recovery waits for the FUSE mount");
                report.waiting.push(target);
            }
            RecoverStep::Forget => {
                self.state.remove_publish(&target).await?;
                report.forgotten.push(target);
            }
            RecoverStep::Rebind { unmount_broken, bind } => {
                if unmount_broken {
                    mounts::unmount(Path::new(&bind.target), true).await?;
                }
                mounts::bind_mount(&bind, Path::new(&record.fluid_path)).await?;
                tracing::info!(volume_id = %record.volume_id, %target, source = %bind.source, "FUSE recovery bound the target again");
                report.rebound.push(target);
            }
        }
        Ok(())
    }
}

/// Runs [`Plugin::recover_once`] every `period` until `shutdown` resolves.
pub async fn recover_loop<L: NodeLabeler>(
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
