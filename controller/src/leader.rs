//! Leader election through a `coordination.k8s.io` Lease: a `watch::Receiver<bool>` that the executor checks before every request.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::Result;

/// How long a held lease stays valid without renewal, in seconds.
pub const LEASE_DURATION_SECONDS: u64 = 15;
/// Each request of the election gets this long (connect, read, write): well within the time
/// between two renewals.
pub const LEASE_REQUEST_TIMEOUT_SECONDS: u64 = 4;
/// The holder renews this long before expiry, in seconds: every 5 s, so that a renewal delayed
/// by a loaded API server or machine still lands before the 15 s run out (with a 5 s grace a
/// holder missed its one renewal on the testbed and two replicas led for a second).
pub const LEASE_GRACE_SECONDS: u64 = 10;

/// A running election. Dropping it, or [`Leadership::release`], gives the lease up.
pub struct Leadership {
    /// True while this replica holds the lease.
    pub is_leader: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Leadership {
    /// Leadership that is always held: tests and single-replica runs without a Lease.
    pub fn always() -> watch::Receiver<bool> {
        watch::channel(true).1
    }

    /// Joins the election for Lease `namespace/name` as `identity`.
    pub async fn elect(client: Client, namespace: &str, name: &str, identity: &str) -> Result<Self> {
        let manager = LeaseManagerBuilder::new(client, name)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_DURATION_SECONDS)
            .with_grace(LEASE_GRACE_SECONDS)
            .build()
            .await?;
        let (mut lease, manager_task) = manager.watch().await;
        let (sender, is_leader) = watch::channel(false);
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                let leading = *lease.borrow_and_update();
                if sender.send_replace(leading) != leading {
                    tracing::info!(leading, "leadership changed");
                }
                tokio::select! {
                    changed = lease.changed() => if changed.is_err() { break },
                    _ = &mut stopped => break,
                }
            }
            // Whatever ended the election, this replica no longer leads.
            sender.send_replace(false);
            drop(lease);
            match manager_task.await {
                Ok(Ok(_)) => tracing::info!("lease released"),
                Ok(Err(error)) => tracing::warn!(%error, "lease manager stopped"),
                Err(error) => tracing::warn!(%error, "lease manager task failed"),
            }
        });
        Ok(Self { is_leader, stop: Some(stop), task })
    }

    /// Stops writing at once, then releases the lease so another replica can take over quickly.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
