//! Wires the process: one watcher per kind into shared stores, object → pair triggers, two kube-runtime Controllers, the election and the HTTP server.
//!
//! ```text
//! watchers ──reflect──▶ Stores ◀──observe── reconcile ──▶ model ──▶ Executor ──▶ API server
//!    │                                          ▲
//!    └─ triggers::from_* ─▶ PairKey ─▶ router ──┴─▶ Controller<Dataset>, Controller<JuiceFSRuntime>
//! ```
//! One watch per kind feeds both controllers, so each object is held once in memory.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef as StoreRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use model::api::{Dataset, JuiceFSRuntime};
use model::engine::Engine;
use serde::de::DeserializeOwned;

use crate::config::Settings;
use crate::context::{Context, Reconciler};
use crate::error::{Error, Result};
use crate::execute::Executor;
use crate::health::{self, Health};
use crate::index::{ApplyEvent, ConfirmingWriter, DatasetLabelIndex, IndexedWriter, Shared};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::observe::{Stores, trim_daemon_set, trim_managed_fields, trim_node, trim_pod, trim_stateful_set};
use crate::triggers::{self, PairKey};
use model::effect::Kind;

/// Runs until SIGTERM or Ctrl-C; `lease_client` (short timeouts) serves the election only.
pub async fn run(client: Client, lease_client: Client, settings: Settings) -> Result<()> {
    let (stores, writers) = Stores::new();
    let metrics = Arc::new(Metrics::new(stores.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .map_err(|source| Error::Serve { addr: settings.metrics_addr.to_string(), source })?;
    let server = tokio::spawn(health::serve(listener, Health { metrics: metrics.clone(), ready: ready.clone() }));

    let leadership =
        Leadership::elect(lease_client, &settings.lease_namespace, &settings.lease_name, &settings.identity).await?;
    let leader_gauge = tokio::spawn(track_leadership(leadership.is_leader.clone(), metrics.clone()));
    let reporter = Reporter { controller: "ferrofluid".to_string(), instance: Some(settings.identity.clone()) };
    let executor = Executor::new(client.clone(), reporter, leadership.is_leader.clone());
    let context =
        Arc::new(Context::new(stores.clone(), executor, settings.model.clone(), metrics, leadership.is_leader.clone()));

    let (trigger_tx, trigger_rx) = mpsc::unbounded::<PairKey>();
    let runtime_type = context.engine.runtime_type();
    let watchers = spawn_watchers(&client, writers, &stores, trigger_tx, runtime_type);

    let (dataset_tx, dataset_rx) = mpsc::unbounded();
    let (runtime_tx, runtime_rx) = mpsc::unbounded();
    let router = tokio::spawn(route(stores.clone(), trigger_rx, dataset_tx, runtime_tx, ready));
    // Cache figures come from the workers' JuiceFS metrics, scraped at the resync period.
    let scraper = tokio::spawn(crate::cache_metrics::scrape_loop(
        stores.clone(),
        std::time::Duration::from_millis(settings.model.resync_ms.max(1_000)),
    ));

    let shutdown = shutdown_signal();
    let config = controller::Config::default().concurrency(settings.concurrency);
    let leader_gained = leader_gained(leadership.is_leader.clone());
    let datasets = Controller::for_stream(futures::stream::pending(), stores.datasets.clone())
        .with_config(config.clone())
        .reconcile_on(dataset_rx)
        .reconcile_all_on(leader_gained.0)
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |dataset: Arc<Dataset>, ctx: Arc<Context>| async move {
                reconcile(Reconciler::Dataset, dataset.as_ref(), &ctx).await
            },
            |dataset: Arc<Dataset>, error: &Error, ctx: Arc<Context>| {
                on_error(Reconciler::Dataset, dataset.as_ref(), error, &ctx)
            },
            context.clone(),
        )
        .for_each(log_outcome);
    let runtimes = Controller::for_stream(futures::stream::pending(), stores.runtimes.clone())
        .with_config(config)
        .reconcile_on(runtime_rx)
        .reconcile_all_on(leader_gained.1)
        .graceful_shutdown_on(shutdown)
        .run(
            |runtime: Arc<JuiceFSRuntime>, ctx: Arc<Context>| async move {
                reconcile(Reconciler::Runtime, runtime.as_ref(), &ctx).await
            },
            |runtime: Arc<JuiceFSRuntime>, error: &Error, ctx: Arc<Context>| {
                on_error(Reconciler::Runtime, runtime.as_ref(), error, &ctx)
            },
            context.clone(),
        )
        .for_each(log_outcome);

    tracing::info!(identity = %settings.identity, metrics = %settings.metrics_addr, "ferrofluid controller started");
    futures::join!(datasets, runtimes);
    tracing::info!("controllers stopped; releasing the lease");
    leadership.release().await;
    router.abort();
    scraper.abort();
    leader_gauge.abort();
    server.abort();
    for watcher in watchers {
        watcher.abort();
    }
    Ok(())
}

async fn reconcile<K: Resource>(reconciler: Reconciler, object: &K, ctx: &Context) -> Result<Action> {
    let Some(key) = triggers::pair_of(object) else { return Ok(Action::await_change()) };
    ctx.reconcile(reconciler, &key).await
}

fn on_error<K: Resource>(reconciler: Reconciler, object: &K, error: &Error, ctx: &Context) -> Action {
    let key = triggers::pair_of(object).unwrap_or_else(|| PairKey::new("", ""));
    ctx.on_error(reconciler, &key, error)
}

async fn log_outcome<K: Resource, E: std::error::Error, Q: std::error::Error>(
    outcome: Result<(StoreRef<K>, Action), controller::Error<E, Q>>,
) {
    match outcome {
        Ok(_) => {}
        // Expected: a trigger for a pair whose dataset or runtime does not exist.
        Err(controller::Error::ObjectNotFound(_)) => {}
        // Already counted and logged by `Context::on_error`.
        Err(controller::Error::ReconcilerFailed(..)) => {}
        Err(error) => tracing::warn!(%error, "controller"),
    }
}

/// Keeps the leader gauge equal to this replica's leadership.
async fn track_leadership(mut is_leader: tokio::sync::watch::Receiver<bool>, metrics: Arc<Metrics>) {
    loop {
        metrics.set_leader(*is_leader.borrow_and_update());
        if is_leader.changed().await.is_err() {
            metrics.set_leader(false);
            return;
        }
    }
}

/// Two streams that tick whenever this replica becomes leader (one per controller).
fn leader_gained(
    mut is_leader: tokio::sync::watch::Receiver<bool>,
) -> (mpsc::UnboundedReceiver<()>, mpsc::UnboundedReceiver<()>) {
    let (a_tx, a_rx) = mpsc::unbounded();
    let (b_tx, b_rx) = mpsc::unbounded();
    tokio::spawn(async move {
        let mut was_leader = false;
        loop {
            let leading = *is_leader.borrow_and_update();
            if leading && !was_leader && (a_tx.unbounded_send(()).is_err() || b_tx.unbounded_send(()).is_err()) {
                break;
            }
            was_leader = leading;
            if is_leader.changed().await.is_err() {
                break;
            }
        }
    });
    (a_rx, b_rx)
}

/// Forwards pair keys to both controllers once every store has listed; earlier triggers are
/// dropped because the first forward is a reconcile of every dataset and runtime.
async fn route(
    stores: Stores,
    mut triggers: mpsc::UnboundedReceiver<PairKey>,
    datasets: mpsc::UnboundedSender<StoreRef<Dataset>>,
    runtimes: mpsc::UnboundedSender<StoreRef<JuiceFSRuntime>>,
    ready: Arc<AtomicBool>,
) {
    let synced = stores.wait_until_ready();
    tokio::pin!(synced);
    loop {
        tokio::select! {
            () = &mut synced => break,
            key = triggers.next() => if key.is_none() { return },
        }
    }
    ready.store(true, Ordering::Relaxed);
    tracing::info!(datasets = stores.datasets.state().len(), runtimes = stores.runtimes.state().len(), "caches synced");
    let everything = stores
        .datasets
        .state()
        .iter()
        .filter_map(|d| triggers::pair_of(d.as_ref()))
        .chain(stores.runtimes.state().iter().filter_map(|r| triggers::pair_of(r.as_ref())))
        .collect::<std::collections::BTreeSet<_>>();
    for key in &everything {
        forward(key, &datasets, &runtimes);
    }
    while let Some(key) = triggers.next().await {
        forward(&key, &datasets, &runtimes);
    }
}

fn forward(
    key: &PairKey,
    datasets: &mpsc::UnboundedSender<StoreRef<Dataset>>,
    runtimes: &mpsc::UnboundedSender<StoreRef<JuiceFSRuntime>>,
) {
    // Send errors mean the controller stopped, which only happens at shutdown.
    let _ = datasets.unbounded_send(StoreRef::new(&key.name).within(&key.namespace));
    let _ = runtimes.unbounded_send(StoreRef::new(&key.name).within(&key.namespace));
}

/// One watcher per kind: reflect into its store, map every touched object to pair keys.
fn spawn_watchers(
    client: &Client,
    writers: crate::observe::Writers,
    stores: &Stores,
    triggers: mpsc::UnboundedSender<PairKey>,
    runtime_type: &'static str,
) -> Vec<tokio::task::JoinHandle<()>> {
    let all = watcher::Config::default();
    let sts_store = stores.stateful_sets.clone();
    let live_nodes = stores.nodes.clone();
    let dataset_labels: Shared<DatasetLabelIndex> = Arc::new(RwLock::new(DatasetLabelIndex::new(runtime_type)));
    let node_dataset_labels = dataset_labels.clone();
    vec![
        spawn_watcher(
            Api::<Dataset>::all(client.clone()),
            all.clone(),
            ConfirmingWriter::new(
                IndexedWriter::new(writers.datasets, dataset_labels),
                Kind::Dataset,
                stores.pending_writes.clone(),
            ),
            triggers.clone(),
            trim_managed_fields,
            triggers::from_pair_object,
        ),
        spawn_watcher(
            Api::<JuiceFSRuntime>::all(client.clone()),
            all.clone(),
            ConfirmingWriter::new(writers.runtimes, Kind::JuiceFSRuntime, stores.pending_writes.clone()),
            triggers.clone(),
            trim_managed_fields,
            triggers::from_pair_object,
        ),
        // Only objects that name a runtime owner concern us; the label narrows the watch.
        spawn_watcher(
            Api::<StatefulSet>::all(client.clone()),
            owned(),
            writers.stateful_sets,
            triggers.clone(),
            trim_stateful_set,
            triggers::from_owned,
        ),
        spawn_watcher(
            Api::<DaemonSet>::all(client.clone()),
            owned(),
            writers.daemon_sets,
            triggers.clone(),
            trim_daemon_set,
            triggers::from_owned,
        ),
        spawn_watcher(
            Api::<PersistentVolume>::all(client.clone()),
            all.clone(),
            writers.persistent_volumes,
            triggers.clone(),
            trim_managed_fields,
            triggers::from_volume,
        ),
        spawn_watcher(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            all.clone(),
            writers.persistent_volume_claims,
            triggers.clone(),
            trim_managed_fields,
            triggers::from_claim,
        ),
        spawn_watcher(Api::<Node>::all(client.clone()), all.clone(), writers.nodes, triggers.clone(), trim_node, {
            let history = triggers::NodeLabelHistory::default();
            move |n| history.pairs(n, &node_dataset_labels, &live_nodes)
        }),
        spawn_watcher(
            Api::<Pod>::all(client.clone()),
            all.clone(),
            writers.pods,
            triggers.clone(),
            trim_pod,
            move |p| triggers::from_pod(p, &sts_store),
        ),
        // Read when deciding; the namespace's deletion reaches the pairs through their objects.
        spawn_watcher(
            Api::<Namespace>::all(client.clone()),
            all,
            writers.namespaces,
            triggers,
            trim_managed_fields,
            |_| Vec::new(),
        ),
    ]
}

/// Watch config for the workloads a runtime owns: the engines label them with the dataset id.
fn owned() -> watcher::Config {
    watcher::Config::default().labels(model::labels::DATASET_ID)
}

fn spawn_watcher<K>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: impl ApplyEvent<K> + Send + 'static,
    triggers: mpsc::UnboundedSender<PairKey>,
    trim: fn(&mut K),
    map: impl Fn(&K) -> Vec<PairKey> + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    // What `reflect` does, through any writer (pods and nodes also feed an index).
    let stream = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .map(move |event| {
            if let Ok(event) = &event {
                writer.apply_watcher_event(event);
            }
            event
        })
        .touched_objects();
    tokio::spawn(forward_touched(stream, triggers, map))
}

async fn forward_touched<K>(
    stream: impl Stream<Item = std::result::Result<K, watcher::Error>>,
    triggers: mpsc::UnboundedSender<PairKey>,
    map: impl Fn(&K) -> Vec<PairKey>,
) where
    K: Resource<DynamicType = ()>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(object) => {
                for key in map(&object) {
                    if triggers.unbounded_send(key).is_err() {
                        return;
                    }
                }
            }
            // The watcher retries with backoff by itself; say why it had to.
            Err(error) => tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying"),
        }
    }
}

/// Resolves on SIGTERM (what the kubelet sends) or Ctrl-C.
fn shutdown_signal() -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    async {
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    }
    .boxed()
    .shared()
}
