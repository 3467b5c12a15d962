//! Scrapes the JuiceFS metrics of running worker pods into cache samples for the model.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use model::engine::juicefs::{METRICS_PORT, parse_cache_sample};
use model::observed::CacheSample;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::observe::Stores;

/// The latest sample of each worker pod, by `(namespace, pod name)`.
pub type CacheSamples = Arc<RwLock<BTreeMap<(String, String), CacheSample>>>;

/// A scrape answer larger than this is cut: a worker's metrics are a few KiB.
const RESPONSE_LIMIT_BYTES: u64 = 4 << 20;

/// `GET /metrics` over HTTP/1.0 from `address`, the body as text.
pub async fn fetch_metrics(address: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\nAccept: text/plain\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(RESPONSE_LIMIT_BYTES).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer from {address}")))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let ok = head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200");
    if !ok {
        let status = head.lines().next().unwrap_or_default();
        return Err(std::io::Error::other(format!("{address}: {status}")));
    }
    Ok(body.to_string())
}

/// The running worker pods to scrape: `(namespace, name, address)`.
fn worker_targets(stores: &Stores, port: u16) -> Vec<(String, String, SocketAddr)> {
    stores
        .pods
        .state()
        .iter()
        .filter(|pod| model::labels::role_of(pod.metadata.labels.as_ref()).is_worker())
        .filter(|pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|pod| {
            let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
            let namespace = pod.metadata.namespace.clone()?;
            Some((namespace, pod.metadata.name.clone()?, SocketAddr::new(ip, port)))
        })
        .collect()
}

/// Scrapes every running worker once; pods that are gone lose their sample, and a failed scrape
/// keeps the previous one (a worker busy for a moment should not look empty).
pub async fn scrape_once(stores: &Stores, port: u16, timeout: Duration) {
    let targets = worker_targets(stores, port);
    let mut fresh = BTreeMap::new();
    for (namespace, name, address) in &targets {
        match fetch_metrics(*address, timeout).await {
            Ok(text) => {
                fresh.insert((namespace.clone(), name.clone()), parse_cache_sample(name, &text));
            }
            Err(error) => tracing::debug!(%error, pod = %name, "cache metrics scrape failed"),
        }
    }
    let scraped: BTreeSet<(&str, &str)> = targets.iter().map(|(ns, name, _)| (ns.as_str(), name.as_str())).collect();
    let mut samples = stores.cache_samples.write().unwrap_or_else(PoisonError::into_inner);
    samples.retain(|(namespace, name), _| scraped.contains(&(namespace.as_str(), name.as_str())));
    samples.extend(fresh);
}

/// Scrapes every `period`, forever.
pub async fn scrape_loop(stores: Stores, period: Duration) {
    let port = u16::try_from(METRICS_PORT).unwrap_or(9567);
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        scrape_once(&stores, port, Duration::from_secs(2)).await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Pod, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::watcher::Event;
    use tokio::net::TcpListener;

    use super::*;
    use crate::index::ApplyEvent;

    async fn serve_once(listener: TcpListener, answer: &'static str) {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request).await;
        let _ = stream.write_all(answer.as_bytes()).await;
    }

    fn worker(ip: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("demo-juicefs-worker-0".into()),
                namespace: Some("default".into()),
                labels: Some(model::labels::workload_labels("demo", "juicefs", "worker")),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus { phase: Some("Running".into()), pod_ip: Some(ip.into()), ..PodStatus::default() }),
        }
    }

    #[tokio::test]
    async fn a_running_worker_is_scraped_into_a_sample() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let answer = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\njuicefs_blockcache_bytes{vol_name=\"demo\"} 2048\njuicefs_used_space 8192\n";
        let server = tokio::spawn(serve_once(listener, answer));
        let (stores, mut writers) = Stores::new();
        writers.pods.apply_watcher_event(&Event::Apply(worker("127.0.0.1")));
        scrape_once(&stores, port, Duration::from_secs(2)).await;
        server.await.expect("server");
        let samples = stores.cache_samples.read().expect("lock").clone();
        let sample = &samples[&("default".to_string(), "demo-juicefs-worker-0".to_string())];
        assert_eq!((sample.cached_bytes, sample.used_space_bytes), (2048, 8192));
        // And the model sees it: this is what fills `cached` and `cacheCapacity` in a real cluster.
        let observed = crate::observe::observe(&stores, "juicefs", "default", "demo");
        assert_eq!(observed.cache_samples.len(), 1);
        assert_eq!(observed.cache_samples[0].cached_bytes, 2048);
    }

    #[tokio::test]
    async fn a_failed_scrape_keeps_the_last_sample_and_a_gone_pod_loses_its_own() {
        // A port nobody listens on: the worker's scrape fails.
        let port = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
        let (stores, mut writers) = Stores::new();
        writers.pods.apply_watcher_event(&Event::Apply(worker("127.0.0.1")));
        let key = |name: &str| ("default".to_string(), name.to_string());
        let sample = |name: &str| parse_cache_sample(name, "juicefs_blockcache_bytes 512\n");
        stores.cache_samples.write().expect("lock").extend([
            (key("demo-juicefs-worker-0"), sample("demo-juicefs-worker-0")),
            (key("demo-juicefs-worker-9"), sample("demo-juicefs-worker-9")),
        ]);
        scrape_once(&stores, port, Duration::from_millis(500)).await;
        let samples = stores.cache_samples.read().expect("lock").clone();
        assert_eq!(samples.keys().cloned().collect::<Vec<_>>(), [key("demo-juicefs-worker-0")]);
        assert_eq!(samples[&key("demo-juicefs-worker-0")].cached_bytes, 512);
    }

    #[tokio::test]
    async fn an_error_status_or_silence_is_an_error_naming_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve_once(listener, "HTTP/1.0 503 Service Unavailable\r\n\r\n"));
        let error = fetch_metrics(address, Duration::from_secs(2)).await.expect_err("503");
        server.await.expect("server");
        assert!(error.to_string().contains("503") && error.to_string().contains(&address.to_string()), "{error}");
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let error =
            fetch_metrics(silent.local_addr().expect("addr"), Duration::from_millis(100)).await.expect_err("timeout");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    }
}
