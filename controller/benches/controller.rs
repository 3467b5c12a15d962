//! Resident memory with 1,000 dataset/runtime pairs in reflector stores reconciled once, and reconciles per second through the executor against a mocked API server.
//!
//! Run: `cargo bench -p controller --bench controller` (prints a table; reads VmRSS/VmHWM from /proc).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::context::{Context, Reconciler};
use controller::execute::Executor;
use controller::index::ApplyEvent;
use controller::metrics::Metrics;
use controller::observe::Stores;
use controller::triggers::PairKey;
use futures::StreamExt;
use http::{Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::runtime::watcher::Event;
use model::api::{Dataset, DatasetSpec, JuiceFSRuntime, JuiceFSRuntimeSpec, Level, MediumType, Mount, TieredStore};
use model::quantity::Quantity;
use model::time::Millis;

/// Pairs measured under `cargo bench`; `cargo test --all-targets` runs this file as a quick smoke test.
const PAIRS_BENCH: usize = 1_000;
const PAIRS_SMOKE: usize = 50;
const NAMESPACES: usize = 10;
const T0: Millis = Millis(1_700_000_000_000);

/// `(VmRSS, VmHWM)` in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn meta(i: usize, uid_prefix: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(format!("data-{i}")),
        namespace: Some(format!("team-{}", i % NAMESPACES)),
        uid: Some(format!("{uid_prefix}-0000-4000-8000-{i:012}")),
        resource_version: Some("1".to_string()),
        ..ObjectMeta::default()
    }
}

fn dataset(i: usize) -> Dataset {
    let spec = DatasetSpec {
        mounts: vec![Mount {
            name: "test".to_string(),
            mount_point: format!("juicefs:///demo-{i}"),
            options: BTreeMap::from([("bucket".to_string(), format!("https://bucket-{i}.s3.amazonaws.com"))]),
            ..Mount::default()
        }],
        ..DatasetSpec::default()
    };
    Dataset { metadata: meta(i, "0b8f4f1e"), spec, status: None }
}

fn runtime(i: usize) -> JuiceFSRuntime {
    let level = Level {
        medium_type: MediumType::Memory,
        volume_type: None,
        volume_source: None,
        path: Some("/dev/shm".to_string()),
        quota: Some(Quantity("40Gi".to_string())),
        quota_list: None,
        high: None,
        low: None,
    };
    let spec = JuiceFSRuntimeSpec {
        replicas: Some(1),
        tieredstore: Some(TieredStore { levels: vec![level] }),
        ..JuiceFSRuntimeSpec::default()
    };
    JuiceFSRuntime { metadata: meta(i, "7c1d2e3f"), spec, status: None }
}

/// A mocked API server that answers every request at once with a minimal object.
fn mock_client() -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let event = request.uri().path().contains("/events");
            let _ = request.into_body().collect_bytes().await;
            let body: &[u8] = if event {
                br#"{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"x","namespace":"x"}}"#
            } else {
                // No resourceVersion: no watch confirms writes here, so none may be awaited
                // (a pair's second reconcile would wait for it and measure nothing).
                br#"{"apiVersion":"v1","kind":"Object","metadata":{"name":"x","namespace":"x"}}"#
            };
            let response = Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(body.to_vec()));
            send.send_response(response.expect("response"));
        }
    });
    Client::new(service, "default")
}

fn pairs() -> usize {
    if std::env::args().any(|a| a == "--bench") { PAIRS_BENCH } else { PAIRS_SMOKE }
}

fn keys() -> Vec<PairKey> {
    (0..pairs()).map(|i| PairKey::new(&format!("team-{}", i % NAMESPACES), &format!("data-{i}"))).collect()
}

async fn reconcile_all(context: &Arc<Context>, concurrency: usize) -> (usize, Duration) {
    let started = Instant::now();
    let work = keys().into_iter().flat_map(|key| [(Reconciler::Dataset, key.clone()), (Reconciler::Runtime, key)]);
    let count = futures::stream::iter(work)
        .map(|(reconciler, key)| {
            let context = context.clone();
            async move { context.reconcile_at(reconciler, &key, T0).await.expect("reconcile") }
        })
        .buffer_unordered(concurrency)
        .count()
        .await;
    (count, started.elapsed())
}

fn main() {
    let runtime_threads =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    runtime_threads.block_on(async {
        let (rss_start, _) = memory_kib();
        let (stores, mut writers) = Stores::new();
        for i in 0..pairs() {
            writers.datasets.apply_watcher_event(&Event::Apply(dataset(i)));
            writers.runtimes.apply_watcher_event(&Event::Apply(runtime(i)));
        }
        let (rss_loaded, _) = memory_kib();

        let is_leader = tokio::sync::watch::channel(true).1;
        let reporter = Reporter { controller: "ferrofluid".to_string(), instance: Some("bench".to_string()) };
        let executor = Executor::new(mock_client(), reporter, is_leader.clone());
        let metrics = Arc::new(Metrics::new(stores.clone()));
        let context = Arc::new(Context::new(stores.clone(), executor, model::reconcile::Config::default(), metrics, is_leader));

        let requests_before = effects_sent(&context);
        let (first_count, first_time) = reconcile_all(&context, 1).await;
        let first_requests = effects_sent(&context) - requests_before;
        let (rss_reconciled, hwm_reconciled) = memory_kib();
        let (again_count, again_time) = reconcile_all(&context, 8).await;

        // Decide only (observe + model, no IO): the cost the stores and the model add per reconcile.
        let (decided, decide_time) = decide_all(&context);
        let (rss_end, hwm_end) = memory_kib();

        let mib = |kib: u64| kib as f64 / 1024.0;
        let per_second = |count: usize, time: Duration| count as f64 / time.as_secs_f64();
        println!("ferrofluid controller bench: {0} datasets + {0} JuiceFSRuntimes in reflector stores", pairs());
        println!("| measure                                        | value        |");
        println!("|------------------------------------------------|--------------|");
        println!("| VmRSS at start                                 | {:>8.1} MiB |", mib(rss_start));
        println!("| VmRSS with stores loaded                       | {:>8.1} MiB |", mib(rss_loaded));
        println!("| VmRSS after reconciling every pair once        | {:>8.1} MiB |", mib(rss_reconciled));
        println!("| VmHWM (peak) after reconciling once            | {:>8.1} MiB |", mib(hwm_reconciled));
        println!("| VmRSS / VmHWM at the end                       | {:>4.1} / {:>4.1} MiB |", mib(rss_end), mib(hwm_end));
        println!("| first reconciles (writes), 1 at a time         | {:>8.0} /s   | ({first_count} reconciles, {first_requests} requests, {:.2} s)", per_second(first_count, first_time), first_time.as_secs_f64());
        println!("| requests per second, 1 at a time               | {:>8.0} /s   |", per_second(first_requests as usize, first_time));
        println!("| reconciles through the executor, 8 at a time   | {:>8.0} /s   | ({again_count} reconciles, {:.2} s)", per_second(again_count, again_time), again_time.as_secs_f64());
        println!("| decisions only (observe + model, no IO)        | {:>8.0} /s   | ({decided} decisions, {:.2} s)", per_second(decided, decide_time), decide_time.as_secs_f64());

        // The same decisions with a cluster around the pairs: 20 app pods and 2 workers per pair
        // over 5 nodes per pair (20,000 + 2,000 pods and 5,000 nodes at full size).
        for n in 0..pairs() * 5 {
            writers.nodes.apply_watcher_event(&Event::Apply(node(n)));
        }
        for (i, key) in keys().iter().enumerate() {
            for p in 0..20 {
                writers.pods.apply_watcher_event(&Event::Apply(pod(key, &format!("app-{p}"), None, i * 5 + p % 5)));
            }
            for w in 0..2 {
                let name = format!("{}-juicefs-worker-{w}", key.name);
                writers.pods.apply_watcher_event(&Event::Apply(pod(key, &name, Some(&key.name), i * 5 + w)));
            }
        }
        let (rss_cluster, _) = memory_kib();
        let (decided, decide_time) = decide_all(&context);
        println!("| with {:>6} pods and {:>5} nodes in the stores: |              |", pairs() * 22, pairs() * 5);
        println!("| VmRSS                                          | {:>8.1} MiB |", mib(rss_cluster));
        println!("| decisions only (observe + model, no IO)        | {:>8.0} /s   | ({decided} decisions, {:.2} s)", per_second(decided, decide_time), decide_time.as_secs_f64());
    });
}

/// A node; every pair's pods spread over 5 of them.
fn node(n: usize) -> k8s_openapi::api::core::v1::Node {
    k8s_openapi::api::core::v1::Node {
        metadata: ObjectMeta {
            name: Some(format!("node-{n:05}")),
            labels: Some(BTreeMap::from([("kubernetes.io/hostname".to_string(), format!("node-{n:05}"))])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A running pod of pair `key`: a worker (labelled as the engine labels them) when `release` is
/// set, else an app pod that names the pair's claim. Trimmed, as the watcher stores pods.
fn pod(key: &PairKey, name: &str, release: Option<&str>, node: usize) -> k8s_openapi::api::core::v1::Pod {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodStatus, Volume};
    let labels = release.map(|r| model::labels::workload_labels(r, "juicefs", "worker"));
    let volumes = release.is_none().then(|| {
        vec![Volume {
            name: "data".to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: key.name.to_string(),
                read_only: None,
            }),
            ..Default::default()
        }]
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(
                format!("{}-{name}", if release.is_some() { "" } else { key.name.as_str() })
                    .trim_start_matches('-')
                    .to_string(),
            ),
            namespace: Some(key.namespace.to_string()),
            labels,
            ..Default::default()
        },
        spec: Some(PodSpec { node_name: Some(format!("node-{node:05}")), volumes, ..Default::default() }),
        status: Some(PodStatus { phase: Some("Running".to_string()), ..Default::default() }),
    }
}

/// Decides (observe + model, no IO) both reconcilers of every pair once.
fn decide_all(context: &Context) -> (usize, Duration) {
    let started = Instant::now();
    let mut decided = 0;
    for key in keys() {
        let _ = context.decide(Reconciler::Dataset, &key, T0);
        let _ = context.decide(Reconciler::Runtime, &key, T0);
        decided += 2;
    }
    (decided, started.elapsed())
}

/// Requests the executor sent so far, read back from the metrics text.
fn effects_sent(context: &Context) -> u64 {
    context
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("ferrofluid_effects_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
