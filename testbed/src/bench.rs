//! The real-control-plane benchmark: N Dataset+JuiceFSRuntime pairs on M nodes, applied at once.
//! It reports the time to all Bound, how long the controller took after each pair's workers
//! were ready, the controller's peak memory, its API requests per pair (from the API server's
//! audit log: 409s, and writes that found their object gone) and the teardown time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kube::api::ListParams;
use kube::runtime::watcher;
use model::api::{Dataset, DatasetPhase, JuiceFSRuntime};
use serde::Deserialize;

use crate::agent::control::Request;
use crate::cluster::Testbed;
use crate::error::{Error, Result};

/// The namespace the pairs go into.
pub const NAMESPACE: &str = "bench";
/// The controller's identity in the audit log.
pub const CONTROLLER_USER: &str = "system:serviceaccount:fluid-system:ferrofluid-controller";

/// One run's figures.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Pairs and nodes.
    pub pairs: usize,
    /// Nodes.
    pub nodes: usize,
    /// `kubectl apply` of every object, start to end.
    pub apply: Duration,
    /// Start of the apply to the last dataset Bound.
    pub all_bound: Duration,
    /// Start of the apply to the last worker StatefulSet ready.
    pub all_workers_ready: Duration,
    /// Per pair: its dataset Bound minus its workers ready (the controller's part), sorted.
    pub controller_lag_ms: Vec<u64>,
    /// The pair with the longest such lag.
    pub slowest_pair: String,
    /// Peak RSS of each controller replica, KiB, leader first.
    pub controller_peak_kib: Vec<(String, u64)>,
    /// The controller's requests while setting up.
    pub setup: RequestCounts,
    /// The controller's requests while tearing down.
    pub teardown: RequestCounts,
    /// Start of the delete to nothing left.
    pub teardown_time: Duration,
}

/// What the audit log says of the controller's requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestCounts {
    /// Every request.
    pub total: usize,
    /// Requests by verb.
    pub by_verb: BTreeMap<String, usize>,
    /// Answered 409 Conflict.
    pub conflicts: usize,
    /// Writes (create, update, patch, delete) answered 404: the object was gone.
    pub writes_to_gone: usize,
    /// Answered 403.
    pub forbidden: usize,
}

#[derive(Deserialize)]
struct AuditEvent {
    #[serde(default)]
    stage: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    user: AuditUser,
    #[serde(default, rename = "responseStatus")]
    response: Option<AuditStatus>,
    #[serde(default, rename = "stageTimestamp")]
    at: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuditUser {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
struct AuditStatus {
    #[serde(default)]
    code: u16,
}

/// Counts the controller's requests in the audit log between `from` and `to`.
pub fn count_requests(audit_log: &str, from: jiff::Timestamp, to: jiff::Timestamp) -> RequestCounts {
    let mut counts = RequestCounts::default();
    for line in audit_log.lines() {
        let Ok(event) = serde_json::from_str::<AuditEvent>(line) else { continue };
        if event.stage != "ResponseComplete" || event.user.username != CONTROLLER_USER {
            continue;
        }
        let Some(at) = event.at.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()) else { continue };
        if at < from || at > to {
            continue;
        }
        let code = event.response.map(|r| r.code).unwrap_or_default();
        counts.total += 1;
        *counts.by_verb.entry(event.verb.clone()).or_default() += 1;
        match code {
            409 => counts.conflicts += 1,
            403 => counts.forbidden += 1,
            404 if matches!(event.verb.as_str(), "create" | "update" | "patch" | "delete") => {
                counts.writes_to_gone += 1
            }
            _ => {}
        }
    }
    counts
}

/// The manifest of `pairs` pairs: Shared placement (ten nodes hold a thousand workers), one
/// worker each with a small SSD tier.
pub fn manifest(pairs: usize) -> String {
    let mut text = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {NAMESPACE} }}\n");
    for i in 0..pairs {
        text.push_str(&format!(
            r#"---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {{ name: p{i:04}, namespace: {NAMESPACE} }}
spec:
  placement: Shared
  mounts:
    - name: p{i:04}
      mountPoint: "juicefs:///p{i:04}"
      options: {{ storage: file, bucket: /tmp/ferrofluid-bench/bucket, metaurl: "sqlite3:///tmp/ferrofluid-bench/meta.db" }}
---
apiVersion: data.fluid.io/v1alpha1
kind: JuiceFSRuntime
metadata: {{ name: p{i:04}, namespace: {NAMESPACE} }}
spec:
  replicas: 1
  tieredstore:
    levels:
      - {{ mediumtype: SSD, path: /tmp/ferrofluid-bench/cache, quota: 1Gi }}
"#
        ));
    }
    text
}

type Times = Arc<Mutex<BTreeMap<String, Instant>>>;

/// Records when each dataset was first seen Bound and each worker StatefulSet first ready.
fn watch_times(bed: &Testbed) -> (Times, Times, Vec<tokio::task::JoinHandle<()>>) {
    let bound: Times = Arc::default();
    let ready: Times = Arc::default();
    let datasets: Api<Dataset> = Api::namespaced(bed.client.clone(), NAMESPACE);
    let sets: Api<StatefulSet> = Api::namespaced(bed.client.clone(), NAMESPACE);
    let b = Arc::clone(&bound);
    let r = Arc::clone(&ready);
    let tasks = vec![
        tokio::spawn(async move {
            let mut stream = watcher(datasets, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                let (Ok(watcher::Event::Apply(d)) | Ok(watcher::Event::InitApply(d))) = event else { continue };
                if d.status.as_ref().map(|s| s.phase) == Some(DatasetPhase::Bound) {
                    let name = d.metadata.name.clone().unwrap_or_default();
                    b.lock().unwrap_or_else(PoisonError::into_inner).entry(name).or_insert_with(Instant::now);
                }
            }
        }),
        tokio::spawn(async move {
            let mut stream = watcher(sets, watcher::Config::default()).boxed();
            while let Some(event) = stream.next().await {
                let (Ok(watcher::Event::Apply(s)) | Ok(watcher::Event::InitApply(s))) = event else { continue };
                if s.status.as_ref().and_then(|st| st.ready_replicas).unwrap_or(0) >= 1 {
                    let name = s.metadata.name.clone().unwrap_or_default();
                    let pair = name.trim_end_matches("-juicefs-worker").to_string();
                    r.lock().unwrap_or_else(PoisonError::into_inner).entry(pair).or_insert_with(Instant::now);
                }
            }
        }),
    ];
    (bound, ready, tasks)
}

/// Runs the benchmark on a started testbed with `nodes` nodes.
pub async fn run(bed: &Testbed, pairs: usize, nodes: usize, timeout: Duration) -> Result<Report> {
    let mut report = Report { pairs, nodes, ..Report::default() };
    let path = bed.dir.join("bench.yaml");
    std::fs::write(&path, manifest(pairs)).map_err(|e| Error::io("write", &path, e))?;
    let (bound, ready, watchers) = watch_times(bed);
    let setup_from = jiff::Timestamp::now();
    let started = Instant::now();
    bed.kubectl_ok(&["apply", "--server-side", "-f"], Some(&path))?;
    report.apply = started.elapsed();
    let done = bed
        .wait_until(timeout, &format!("{pairs} datasets are Bound"), || async {
            (bound.lock().unwrap_or_else(PoisonError::into_inner).len() >= pairs).then_some(())
        })
        .await;
    let bound_times = bound.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let ready_times = ready.lock().unwrap_or_else(PoisonError::into_inner).clone();
    done.map_err(|e| {
        Error::Config(format!("{e}: {} Bound, {} with workers ready", bound_times.len(), ready_times.len()))
    })?;
    report.all_bound = bound_times.values().max().map(|t| t.duration_since(started)).unwrap_or_default();
    report.all_workers_ready = ready_times.values().max().map(|t| t.duration_since(started)).unwrap_or_default();
    let mut lags: Vec<(u64, String)> = bound_times
        .iter()
        .filter_map(|(pair, at)| {
            ready_times.get(pair).map(|r| (at.saturating_duration_since(*r).as_millis() as u64, pair.clone()))
        })
        .collect();
    lags.sort_unstable();
    report.slowest_pair = lags.last().map(|(_, pair)| pair.clone()).unwrap_or_default();
    let lags: Vec<u64> = lags.into_iter().map(|(lag, _)| lag).collect();
    report.controller_lag_ms = lags;
    let setup_to = jiff::Timestamp::now();
    report.controller_peak_kib = controller_peaks(bed).await?;

    // The garbage collector only handles dependents of kinds its discovery has seen (every
    // 30 s); a teardown right after the CRDs came would measure that wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let teardown_from = jiff::Timestamp::now();
    let deleting = Instant::now();
    bed.kubectl_ok(&["delete", "datasets,juicefsruntimes", "--all", "-n", NAMESPACE, "--wait=false"], None)?;
    bed.wait_until(timeout, "the pairs and everything they made are gone", || async {
        let client = bed.client.clone();
        let list = ListParams::default();
        let empty = Api::<Dataset>::namespaced(client.clone(), NAMESPACE).list(&list).await.ok()?.items.is_empty()
            && Api::<JuiceFSRuntime>::namespaced(client.clone(), NAMESPACE).list(&list).await.ok()?.items.is_empty()
            && Api::<StatefulSet>::namespaced(client.clone(), NAMESPACE).list(&list).await.ok()?.items.is_empty()
            && Api::<DaemonSet>::namespaced(client.clone(), NAMESPACE).list(&list).await.ok()?.items.is_empty()
            && Api::<PersistentVolumeClaim>::namespaced(client.clone(), NAMESPACE)
                .list(&list)
                .await
                .ok()?
                .items
                .is_empty()
            && Api::<PersistentVolume>::all(client)
                .list(&list)
                .await
                .ok()?
                .items
                .iter()
                .all(|pv| !pv.metadata.name.as_deref().unwrap_or_default().starts_with(&format!("{NAMESPACE}-")));
        empty.then_some(())
    })
    .await?;
    report.teardown_time = deleting.elapsed();
    for task in watchers {
        task.abort();
    }
    // The audit log is written in batches.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let teardown_to = jiff::Timestamp::now();
    let audit = bed.dir.join("cluster/logs/audit.log");
    let text = std::fs::read_to_string(&audit).map_err(|e| Error::io("read", &audit, e))?;
    report.setup = count_requests(&text, setup_from, setup_to);
    report.teardown = count_requests(&text, teardown_from, teardown_to);
    Ok(report)
}

/// Peak RSS (VmHWM) of each running controller replica, the lease holder first.
async fn controller_peaks(bed: &Testbed) -> Result<Vec<(String, u64)>> {
    let holder = Api::<Lease>::namespaced(bed.client.clone(), "fluid-system")
        .get_opt("ferrofluid-controller")
        .await
        .map_err(|e| Error::kube("get Lease fluid-system/ferrofluid-controller", e))?
        .and_then(|l| l.spec?.holder_identity)
        .unwrap_or_default();
    let nodes = bed.ask(Request::Nodes).await?.nodes;
    let mut peaks = Vec::new();
    for node in nodes.keys() {
        let Some(view) = bed.ask(Request::Inspect { node: node.clone() }).await?.node else { continue };
        for (pod, containers) in view.containers {
            let Some(root) = containers.get("controller") else { continue };
            let Some(pid) = root.strip_prefix("/proc/").and_then(|r| r.strip_suffix("/root")) else { continue };
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let peak = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            let name = pod.rsplit('/').next().unwrap_or_default().to_string();
            let role = if name == holder { "leader" } else { "follower" };
            peaks.push((format!("{name} ({role})"), peak));
        }
    }
    peaks.sort_by_key(|(name, _)| !name.ends_with("(leader)"));
    Ok(peaks)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

impl Report {
    /// The report as a Markdown table.
    pub fn table(&self) -> String {
        let per_pair = |n: usize| format!("{:.1}", n as f64 / self.pairs.max(1) as f64);
        let lag = &self.controller_lag_ms;
        let mut rows = vec![
            ("pairs / nodes".to_string(), format!("{} / {}", self.pairs, self.nodes)),
            ("kubectl apply of every object".into(), format!("{:.1} s", self.apply.as_secs_f64())),
            ("apply start -> all workers ready".into(), format!("{:.1} s", self.all_workers_ready.as_secs_f64())),
            ("apply start -> all Bound".into(), format!("{:.1} s", self.all_bound.as_secs_f64())),
            (
                "workers ready -> Bound, per pair (p50 / p99 / max)".into(),
                format!(
                    "{} / {} / {} ms ({})",
                    percentile(lag, 0.5),
                    percentile(lag, 0.99),
                    lag.last().copied().unwrap_or(0),
                    self.slowest_pair
                ),
            ),
        ];
        for (name, kib) in &self.controller_peak_kib {
            rows.push((format!("controller peak RSS, {name}"), format!("{:.1} MiB", *kib as f64 / 1024.0)));
        }
        for (phase, counts) in [("setup", &self.setup), ("teardown", &self.teardown)] {
            let verbs: Vec<String> = counts.by_verb.iter().map(|(v, n)| format!("{v} {n}")).collect();
            rows.push((
                format!("{phase}: controller requests (per pair)"),
                format!("{} ({}): {}", counts.total, per_pair(counts.total), verbs.join(", ")),
            ));
            rows.push((format!("{phase}: 409 conflicts"), counts.conflicts.to_string()));
            rows.push((format!("{phase}: writes to objects already gone (404)"), counts.writes_to_gone.to_string()));
            rows.push((format!("{phase}: 403 forbidden"), counts.forbidden.to_string()));
        }
        rows.push(("delete -> nothing left".into(), format!("{:.1} s", self.teardown_time.as_secs_f64())));
        let mut text = String::from("| figure | value |\n|---|---|\n");
        for (name, value) in rows {
            text.push_str(&format!("| {name} | {value} |\n"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controllers_requests_are_counted_by_outcome() {
        let line = |user: &str, verb: &str, code: u16, at: &str| {
            format!(
                r#"{{"kind":"Event","stage":"ResponseComplete","verb":"{verb}","user":{{"username":"{user}"}},"responseStatus":{{"code":{code}}},"stageTimestamp":"{at}"}}"#
            )
        };
        let log = [
            line(CONTROLLER_USER, "patch", 200, "2026-01-01T00:00:01Z"),
            line(CONTROLLER_USER, "patch", 409, "2026-01-01T00:00:02Z"),
            line(CONTROLLER_USER, "delete", 404, "2026-01-01T00:00:03Z"),
            line(CONTROLLER_USER, "get", 404, "2026-01-01T00:00:04Z"),
            line(CONTROLLER_USER, "create", 403, "2026-01-01T00:00:05Z"),
            line("system:node:node-1", "patch", 409, "2026-01-01T00:00:05Z"),
            line(CONTROLLER_USER, "patch", 409, "2026-01-01T00:01:00Z"),
            "not json".to_string(),
        ]
        .join("\n");
        let counts =
            count_requests(&log, "2026-01-01T00:00:00Z".parse().unwrap(), "2026-01-01T00:00:30Z".parse().unwrap());
        assert_eq!(counts.total, 5);
        assert_eq!((counts.conflicts, counts.writes_to_gone, counts.forbidden), (1, 1, 1));
        assert_eq!(counts.by_verb.get("patch"), Some(&2));
    }

    #[test]
    fn percentiles_of_a_sorted_list() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&values, 0.5), percentile(&values, 0.99)), (51, 99));
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
