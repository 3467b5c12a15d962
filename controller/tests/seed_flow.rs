//! The whole seed flow through the executor against a fake API server: every request of every step is snapshotted, and the flow reaches Bound.

mod support;

use controller::context::Reconciler;
use model::effect::Effect;
use support::fixtures::{NAME, NS, seed_dataset, seed_runtime};
use support::flow::Flow;

fn phase(flow: &Flow, plural: &str, field: &str) -> String {
    let object = flow.server.get((plural, NS, NAME)).expect("object");
    object["status"][field].as_str().unwrap_or_default().to_string()
}

/// Each effect was sent as exactly one request (events included).
fn assert_one_request_per_effect(effects: &[Effect], transcript: &str) {
    let requests = transcript
        .lines()
        .filter(|l| l.starts_with("PATCH ") || l.starts_with("POST ") || l.starts_with("DELETE "))
        .count();
    assert_eq!(requests, effects.len(), "{transcript}");
}

#[tokio::test]
async fn the_seed_flow_sends_exactly_these_requests_and_binds_the_dataset() {
    let mut flow = Flow::new();
    flow.server.take_transcript();

    // 一、The user creates the Dataset: finalizer, then NotBound.
    flow.server.create(&seed_dataset());
    let effects = flow.settle().await;
    let text = flow.transcript();
    assert_one_request_per_effect(&effects, &text);
    insta::assert_snapshot!("1_dataset_created", text);
    assert_eq!(phase(&flow, "datasets", "phase"), "NotBound");

    // 三、The user creates the JuiceFSRuntime: owner, finalizer, labels, workers, FUSE, statuses.
    flow.server.create(&seed_runtime());
    let effects = flow.settle().await;
    let text = flow.transcript();
    assert_one_request_per_effect(&effects, &text);
    insta::assert_snapshot!("2_runtime_created", text);
    assert_eq!(phase(&flow, "juicefsruntimes", "workerPhase"), "NotReady");

    // The worker runs: Ready, Bound, PV and PVC, cache-node labels.
    flow.workers_run(1);
    let effects = flow.settle().await;
    flow.bind_claims();
    let effects_after_bind = flow.settle().await;
    let text = flow.transcript();
    assert_one_request_per_effect(&[effects, effects_after_bind].concat(), &text);
    insta::assert_snapshot!("3_worker_ready", text);
    assert_eq!(phase(&flow, "juicefsruntimes", "workerPhase"), "Ready");
    assert_eq!(phase(&flow, "datasets", "phase"), "Bound");
    let pv = flow.server.get(("persistentvolumes", "", "default-jfsdemo")).expect("PV");
    assert_eq!(pv["spec"]["csi"]["driver"], "fuse.csi.fluid.io");

    // 五、The app pod uses the PVC; NodeStage labels its node and the FUSE pod runs there.
    flow.app_pod_runs("node-a");
    let mut effects = flow.settle().await;
    flow.fuse_pods(1);
    effects.extend(flow.settle().await);
    let text = flow.transcript();
    assert_one_request_per_effect(&effects, &text);
    insta::assert_snapshot!("4_app_pod_running", text);
    assert_eq!(phase(&flow, "datasets", "phase"), "Bound");
    let node = flow.server.get(("nodes", "", "node-a")).expect("node");
    assert_eq!(node["metadata"]["labels"]["fluid.io/s-default-jfsdemo"], "true");
    assert_eq!(node["metadata"]["labels"]["fluid.io/f-default-jfsdemo"], "true");

    // At the fixpoint a reconcile of either kind sends nothing.
    let dataset = flow.step(Reconciler::Dataset).await;
    let runtime = flow.step(Reconciler::Runtime).await;
    assert_eq!(dataset.writes().count() + runtime.writes().count(), 0);
}

#[tokio::test]
async fn deleting_the_runtime_tears_down_and_resets_the_dataset_then_the_dataset_goes() {
    let mut flow = Flow::seed_with_a_ready_worker().await;
    flow.bind_claims();
    flow.settle().await;
    flow.server.take_transcript();

    // The user deletes the runtime; its finalizer holds it until teardown is done.
    flow.server.update(("juicefsruntimes", NS, NAME), |r| {
        r["metadata"]["deletionTimestamp"] = serde_json::json!("2023-11-14T22:20:00Z")
    });
    let effects = flow.settle().await;
    let text = flow.transcript();
    assert_one_request_per_effect(&effects, &text);
    insta::assert_snapshot!("5_runtime_deleted", text);
    assert!(
        flow.server.get(("juicefsruntimes", NS, NAME)).is_none(),
        "the runtime is gone once its finalizer is removed"
    );
    assert!(flow.server.list("statefulsets").is_empty() && flow.server.list("daemonsets").is_empty());
    assert!(flow.server.list("persistentvolumes").is_empty());
    assert_eq!(phase(&flow, "datasets", "phase"), "NotBound");
    let node = flow.server.get(("nodes", "", "node-a")).expect("node");
    let labels = node["metadata"]["labels"].as_object().expect("labels");
    assert!(labels.keys().all(|k| !k.starts_with("fluid.io/")), "{labels:?}");

    // Then the user deletes the dataset.
    flow.server.update(("datasets", NS, NAME), |d| {
        d["metadata"]["deletionTimestamp"] = serde_json::json!("2023-11-14T22:30:00Z")
    });
    let effects = flow.settle().await;
    let text = flow.transcript();
    assert_one_request_per_effect(&effects, &text);
    insta::assert_snapshot!("6_dataset_deleted", text);
    assert!(flow.server.get(("datasets", NS, NAME)).is_none());
}

#[tokio::test]
async fn a_conflict_is_retried_quickly_and_the_retry_uses_fresh_state() {
    let mut flow = Flow::new();
    flow.server.create(&seed_dataset());
    flow.sync();
    flow.server.take_transcript();
    // Someone else writes the dataset between our observation and our status write.
    flow.server.fail_next("datasets/jfsdemo/status", 409);
    let context = flow.harness.context.clone();
    let key = Flow::key();
    let error = context.reconcile_at(Reconciler::Dataset, &key, flow.now).await.expect_err("409");
    assert!(matches!(error, controller::Error::Conflict { .. }), "{error}");
    assert!(error.is_expected());
    let action = context.on_error(Reconciler::Dataset, &key, &error);
    assert_eq!(action, kube::runtime::controller::Action::requeue(std::time::Duration::from_millis(200)));

    // The first attempt stopped at the failed write; the retry writes the status and the finalizer.
    flow.sync();
    context.reconcile_at(Reconciler::Dataset, &key, flow.now).await.expect("retry succeeds");
    let text = flow.transcript();
    insta::assert_snapshot!("conflict_then_retry", text);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("PATCH")).collect();
    assert_eq!(
        lines,
        [
            "PATCH /apis/data.fluid.io/v1alpha1/namespaces/default/datasets/jfsdemo/status?  [application/merge-patch+json]",
            "PATCH /apis/data.fluid.io/v1alpha1/namespaces/default/datasets/jfsdemo/status?  [application/merge-patch+json]",
            "PATCH /apis/data.fluid.io/v1alpha1/namespaces/default/datasets/jfsdemo?  [application/merge-patch+json]",
        ]
    );
    let dataset = flow.server.get(("datasets", NS, NAME)).expect("dataset");
    assert_eq!(dataset["metadata"]["finalizers"][0], "fluid-dataset-controller-finalizer");
    assert_eq!(phase(&flow, "datasets", "phase"), "NotBound");
}

/// An Event is best effort: one the API server refuses (403 in a namespace being deleted, as the
/// real apiserver answered) does not stop the writes after it in the same reconcile.
#[tokio::test]
async fn a_refused_event_does_not_stop_the_effects_after_it() {
    use model::effect::{EventType, Kind, ObjectRef};
    let mut flow = Flow::new();
    flow.server.create(&seed_dataset());
    flow.sync();
    let (observed, _) = flow.harness.context.decide(Reconciler::Dataset, &Flow::key(), flow.now);
    let dataset = ObjectRef::namespaced(Kind::Dataset, NS, NAME);
    let effects = vec![
        Effect::Event {
            regarding: dataset.clone(),
            type_: EventType::Warning,
            reason: "R".into(),
            message: "m".into(),
        },
        Effect::AddFinalizer {
            target: dataset,
            finalizer: "example.com/after-the-event".into(),
            resource_version: observed.dataset.as_ref().and_then(|d| d.metadata.resource_version.clone()),
        },
    ];
    flow.server.take_transcript();
    flow.server.fail_next("events", 403);
    let sent = flow
        .harness
        .context
        .executor
        .execute(&effects, &observed)
        .await
        .expect("the event's failure is not the reconcile's");
    assert_eq!(sent, 2);
    let stored = flow.server.get(("datasets", NS, NAME)).expect("dataset");
    let finalizers: Vec<&str> =
        stored["metadata"]["finalizers"].as_array().into_iter().flatten().filter_map(|f| f.as_str()).collect();
    assert!(finalizers.contains(&"example.com/after-the-event"), "{finalizers:?}");
    let lines: Vec<String> = flow.server.take_transcript().iter().map(|c| c.line()).collect();
    assert!(lines[0].contains("events") && lines[1].starts_with("PATCH"), "{lines:?}");
}

/// Read your own writes: a pair whose last writes have not come back through the watch is not
/// decided from the older cache (its guarded writes would all conflict); the watch event that
/// shows the write lets the next reconcile go ahead.
#[tokio::test]
async fn a_pair_waits_for_its_own_writes_to_come_back_through_the_watch() {
    use controller::index::{ApplyEvent, ConfirmingWriter};
    use kube::runtime::watcher::Event;
    let mut flow = Flow::new();
    flow.server.create(&seed_dataset());
    flow.sync();
    let context = flow.harness.context.clone();
    let key = Flow::key();
    context.reconcile_at(Reconciler::Dataset, &key, flow.now).await.expect("first reconcile");
    assert!(!flow.server.take_transcript().is_empty(), "the first reconcile writes");
    // The cache still holds the dataset as it was before those writes.
    let action = context.reconcile_at(Reconciler::Runtime, &key, flow.now).await.expect("no error");
    assert_eq!(action, kube::runtime::controller::Action::requeue(std::time::Duration::from_millis(250)));
    assert!(flow.server.take_transcript().is_empty(), "nothing is sent from a cache without our writes");
    // The watch delivers the dataset as the server has it now.
    let stored: model::api::Dataset =
        serde_json::from_value(flow.server.get(("datasets", NS, NAME)).expect("dataset")).expect("a dataset");
    let (_, writer) = kube::runtime::reflector::store::<model::api::Dataset>();
    let mut confirming =
        ConfirmingWriter::new(writer, model::effect::Kind::Dataset, flow.harness.stores.pending_writes.clone());
    confirming.apply_watcher_event(&Event::Apply(stored));
    assert!(flow.harness.stores.pending_writes.lock().unwrap().is_empty(), "the write came back");
    flow.sync();
    let action = context.reconcile_at(Reconciler::Runtime, &key, flow.now).await.expect("goes ahead");
    assert_ne!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_millis(250)),
        "decided this time"
    );
}

/// Fluid's runtime metrics follow the runtime: a set-up runtime that loses its worker counts
/// health check errors, and the runtime's deletion forgets its counters.
#[tokio::test]
async fn fluids_runtime_metrics_count_lost_health_and_go_with_the_runtime() {
    let mut flow = Flow::seed_with_a_ready_worker().await;
    let metrics = flow.harness.context.metrics.clone();
    let line = "runtime_sync_healthcheck_error_total{runtime_type=\"juicefs\",runtime=\"default/jfsdemo\"}";
    assert!(!metrics.encode().contains(line), "healthy so far:\n{}", metrics.encode());
    flow.workers_run(0);
    flow.settle().await;
    let text = metrics.encode();
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in\n{text}"));
    assert!(count >= 1);
    flow.server.update(("juicefsruntimes", NS, NAME), |r| {
        r["metadata"]["deletionTimestamp"] = serde_json::json!("2023-11-14T22:20:00Z")
    });
    flow.settle().await;
    assert!(flow.server.get(("juicefsruntimes", NS, NAME)).is_none());
    flow.step(Reconciler::Runtime).await;
    assert!(!metrics.encode().contains("default/jfsdemo\"}"), "forgotten:\n{}", metrics.encode());
}
