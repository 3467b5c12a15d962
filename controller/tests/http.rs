//! `/metrics`, `/healthz` and `/readyz` over real TCP, with the metric names the issue asks for.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use controller::health::{self, Health};
use controller::metrics::Metrics;
use controller::observe::Stores;
use kube::runtime::watcher::Event;
use model::api::{Dataset, DatasetPhase, DatasetSpec, DatasetStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut response))
        .await
        .expect("in time")
        .expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let (stores, mut writers) = Stores::new();
    let mut dataset = Dataset::new("jfsdemo", DatasetSpec::default());
    dataset.metadata.namespace = Some("default".into());
    let mut cache_states = std::collections::BTreeMap::new();
    cache_states.insert("cached".to_string(), "2.00GiB".to_string());
    dataset.status = Some(DatasetStatus {
        phase: DatasetPhase::Bound,
        cache_states,
        ufs_total: Some("10.00GiB".into()),
        file_num: Some("1200".into()),
        ..Default::default()
    });
    writers.datasets.apply_watcher_event(&Event::Apply(dataset));
    let mut runtime = model::api::JuiceFSRuntime::new("jfsdemo", Default::default());
    runtime.metadata.namespace = Some("default".into());
    writers.runtimes.apply_watcher_event(&Event::Apply(runtime));
    let metrics = Arc::new(Metrics::new(stores));
    metrics.reconciled("Dataset", Duration::from_millis(3));
    metrics.failed("JuiceFSRuntime", &controller::Error::NotLeader);
    metrics.effect("apply");
    metrics.set_leader(true);
    let runtime = controller::metrics::RuntimeLabels::new("juicefs", "default", "jfsdemo");
    metrics.runtime_setup_failed(&runtime);
    metrics.runtime_unhealthy(&runtime);
    metrics.runtime_unhealthy(&runtime);
    let gone = controller::metrics::RuntimeLabels::new("juicefs", "default", "gone");
    // A runtime the store does not hold (deleted, its reconcile never run): gone at the scrape.
    metrics.runtime_setup_failed(&gone);
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(health::serve(listener, Health { metrics, ready: ready.clone() }));

    assert_eq!(get(addr, "/healthz").await.0, "HTTP/1.1 200 OK");
    assert_eq!(get(addr, "/readyz").await.0, "HTTP/1.1 503 Service Unavailable");
    ready.store(true, Ordering::Relaxed);
    assert_eq!(get(addr, "/readyz").await.0, "HTTP/1.1 200 OK");
    assert_eq!(get(addr, "/nope").await.0, "HTTP/1.1 404 Not Found");

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    for line in [
        "ferrofluid_reconciles_total{kind=\"Dataset\"} 1",
        "ferrofluid_reconcile_errors_total{kind=\"JuiceFSRuntime\",error=\"not_leader\"} 1",
        "ferrofluid_reconcile_duration_seconds_count{kind=\"Dataset\"} 1",
        "ferrofluid_effects_total{verb=\"apply\"} 1",
        "ferrofluid_datasets{phase=\"Bound\"} 1",
        "ferrofluid_dataset_cached_bytes{namespace=\"default\",dataset=\"jfsdemo\"} 2147483648",
        "ferrofluid_leader 1",
        "dataset_ufs_total_size{dataset=\"default/jfsdemo\"} 10737418240",
        "dataset_ufs_file_num{dataset=\"default/jfsdemo\"} 1200",
        "runtime_setup_error_total{runtime_type=\"juicefs\",runtime=\"default/jfsdemo\"} 1",
        "runtime_sync_healthcheck_error_total{runtime_type=\"juicefs\",runtime=\"default/jfsdemo\"} 2",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_cpu_seconds_total ",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
    assert!(!body.contains("default/gone"), "a deleted runtime's counters are forgotten:\n{body}");
}
