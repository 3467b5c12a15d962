//! The state every reconcile shares, and the reconcile itself: observe → ask model → execute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::runtime::controller::Action;
use model::effect::{Decision, Effect, Requeue, Status};
use model::engine::Engine;
use model::engine::juicefs::JuiceFsEngine;
use model::observe::ClusterView;
use model::observed::Observed;
use model::retry::{Failure, Retries};
use model::time::Millis;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::execute::Executor;
use crate::metrics::{Metrics, RuntimeLabels};
use crate::observe::{Stores, observe};
use crate::triggers::PairKey;

/// Which of the pair's two reconcilers runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reconciler {
    /// `model::reconcile::reconcile_dataset`.
    Dataset,
    /// `model::reconcile::reconcile_runtime` with the JuiceFS engine.
    Runtime,
}

impl Reconciler {
    /// The kind it reconciles, as a metric label.
    pub fn kind(self) -> &'static str {
        match self {
            Reconciler::Dataset => "Dataset",
            Reconciler::Runtime => "JuiceFSRuntime",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// The reflector stores.
    pub stores: Stores,
    /// Sends effects.
    pub executor: Executor,
    /// The reconcilers' configuration.
    pub config: model::reconcile::Config,
    /// The runtime engine.
    pub engine: JuiceFsEngine,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// True while this replica leads; followers compute nothing.
    pub is_leader: watch::Receiver<bool>,
    /// Consecutive failures per reconcile target: the model's retry policy, as the simulator's.
    retries: Mutex<Retries<(Reconciler, PairKey)>>,
    /// Objects reconciles created that the stores do not show yet.
    unconfirmed: Mutex<model::unconfirmed::UnconfirmedCreates>,
    /// One lock per pair: its two reconcilers read and write the same dataset, so they take
    /// turns, and the second sees the first's writes (or waits for them).
    pair_locks: Mutex<HashMap<PairKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Context {
    /// A context over `stores` writing through `executor`.
    pub fn new(
        stores: Stores,
        executor: Executor,
        config: model::reconcile::Config,
        metrics: Arc<Metrics>,
        is_leader: watch::Receiver<bool>,
    ) -> Self {
        Self {
            stores,
            executor,
            config,
            engine: JuiceFsEngine,
            metrics,
            is_leader,
            retries: Mutex::default(),
            unconfirmed: Mutex::default(),
            pair_locks: Mutex::default(),
        }
    }

    /// The model's decision for `key` at `now`, from the stores as they are (and Fluid's runtime
    /// metrics from what it saw).
    pub fn decide(&self, reconciler: Reconciler, key: &PairKey, now: Millis) -> (model::observed::Observed, Decision) {
        let mut observed = observe(&self.stores, self.engine.runtime_type(), &key.namespace, &key.name);
        observed.unconfirmed_creates = self.lock_unconfirmed().unseen(key, |object| self.stores.holds(object));
        let decision = match reconciler {
            Reconciler::Dataset => model::reconcile::reconcile_dataset(&observed, &self.config, now),
            Reconciler::Runtime => model::reconcile::reconcile_runtime(&self.engine, &observed, &self.config, now),
        };
        if reconciler == Reconciler::Runtime {
            self.record_runtime_health(key, &observed, &decision);
        }
        (observed, decision)
    }

    /// One reconcile at wall-clock time.
    pub async fn reconcile(&self, reconciler: Reconciler, key: &PairKey) -> Result<Action> {
        self.reconcile_at(reconciler, key, wall_clock()).await
    }

    /// One reconcile at `now`: observe, decide, execute, and map the requeue.
    pub async fn reconcile_at(&self, reconciler: Reconciler, key: &PairKey, now: Millis) -> Result<Action> {
        if !*self.is_leader.borrow() {
            // Leadership gained later triggers a reconcile of everything.
            return Ok(Action::await_change());
        }
        let pair_lock = self.pair_lock(key);
        let _turn = pair_lock.lock().await;
        if self.lock_pending().awaits(key, now) {
            // Deciding now would read a cache without this controller's last writes: guarded
            // writes would conflict, and writes after a finalizer removal find nothing.
            tracing::debug!(kind = reconciler.kind(), %key, "waiting for own writes to come back");
            let wait_ms = self.lock_retries().policy().own_write_wait_ms;
            return Ok(Action::requeue(Duration::from_millis(wait_ms)));
        }
        let started = Instant::now();
        let (observed, decision) = self.decide(reconciler, key, now);
        let mut written = crate::execute::Written::default();
        let result = self.executor.execute_recording(&decision.effects, &observed, &mut written).await;
        self.lock_unconfirmed().record(key, written.created);
        {
            // Under the lock the watchers confirm with, after they filled the store: a write
            // whose event came back already is in the store, and is not awaited.
            let mut pending = self.lock_pending();
            for (object, (observed_rv, rv)) in written.versions {
                if self.stores.resource_version_of(&object).as_deref() != Some(rv.as_str()) {
                    pending.record(object, rv, observed_rv.as_deref(), now);
                }
            }
            for object in written.released {
                if self.stores.resource_version_of(&object).is_some() {
                    pending.record_deletion(object, now);
                }
            }
        }
        let sent = match &result {
            Ok(sent) => *sent,
            Err(_) => 0,
        };
        for effect in decision.effects.iter().take(sent) {
            self.metrics.effect(effect.verb());
        }
        self.metrics.reconciled(reconciler.kind(), started.elapsed());
        match result {
            Ok(_) => {
                tracing::debug!(kind = reconciler.kind(), %key, effects = decision.effects.len(), "reconciled");
                self.lock_retries().succeeded(&(reconciler, key.clone()));
                Ok(action(decision.requeue))
            }
            Err(error) => Err(error),
        }
    }

    /// Fluid's health check metric for one runtime reconcile: a live runtime whose (new) status
    /// the model calls unhealthy counts one. (A deleted runtime's counters go at the next scrape.)
    fn record_runtime_health(&self, key: &PairKey, observed: &Observed, decision: &Decision) {
        let Some(runtime) = observed.runtime.as_deref().filter(|r| r.metadata.deletion_timestamp.is_none()) else {
            return;
        };
        let written = decision.effects.iter().find_map(|effect| match effect {
            Effect::PatchStatus { status: Status::Runtime(status), .. } => Some(status.as_ref()),
            _ => None,
        });
        if written.or(runtime.status.as_ref()).is_some_and(model::reconcile::status::is_unhealthy) {
            let labels = RuntimeLabels::new(self.engine.runtime_type(), &key.namespace, &key.name);
            self.metrics.runtime_unhealthy(&labels);
        }
    }

    /// What to do after a failed reconcile: quick retry for normal races, backoff otherwise.
    pub fn on_error(&self, reconciler: Reconciler, key: &PairKey, error: &Error) -> Action {
        self.metrics.failed(reconciler.kind(), error);
        let failure = match error {
            Error::NotLeader => return Action::await_change(),
            Error::Conflict { .. } | Error::Gone { .. } => Failure::Race,
            _ => Failure::Other,
        };
        // Races are routine retries, not setup errors.
        if reconciler == Reconciler::Runtime
            && failure == Failure::Other
            && let Some(runtime) = self.stores.runtime(&key.namespace, &key.name)
            && !runtime.status.as_ref().is_some_and(model::reconcile::status::is_set_up)
        {
            let labels = RuntimeLabels::new(self.engine.runtime_type(), &key.namespace, &key.name);
            self.metrics.runtime_setup_failed(&labels);
        }
        let retry_in_ms = self.lock_retries().failed((reconciler, key.clone()), failure);
        match failure {
            Failure::Race => {
                tracing::debug!(kind = reconciler.kind(), %key, %error, retry_in_ms, "retrying after a race")
            }
            Failure::Other => tracing::warn!(kind = reconciler.kind(), %key, %error, retry_in_ms, "reconcile failed"),
        }
        Action::requeue(Duration::from_millis(retry_in_ms))
    }

    fn lock_unconfirmed(&self) -> std::sync::MutexGuard<'_, model::unconfirmed::UnconfirmedCreates> {
        // A poisoned lock only loses expectations: teardown then trusts the stores, as before.
        self.unconfirmed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, model::unconfirmed::PendingWrites> {
        // A poisoned set only loses expectations: a reconcile may then meet a 409 and retry.
        self.stores.pending_writes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pair_lock(&self, key: &PairKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.pair_locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Locks nobody holds or waits for are dropped, so the map does not grow with every pair ever seen.
        if locks.len() > 1024 {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        Arc::clone(locks.entry(key.clone()).or_default())
    }

    fn lock_retries(&self) -> std::sync::MutexGuard<'_, Retries<(Reconciler, PairKey)>> {
        // A poisoned map only loses backoff counts.
        self.retries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The controller's requeue for the model's.
pub fn action(requeue: Requeue) -> Action {
    match requeue {
        Requeue::AwaitChange => Action::await_change(),
        Requeue::AfterMs(ms) => Action::requeue(Duration::from_millis(ms)),
    }
}

/// Milliseconds since the epoch; the only clock read in the controller's decision path.
pub fn wall_clock() -> Millis {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Millis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeues_map_to_actions() {
        assert_eq!(action(Requeue::AwaitChange), Action::await_change());
        assert_eq!(action(Requeue::AfterMs(1500)), Action::requeue(Duration::from_millis(1500)));
    }
}
