//! kube-rs' ApiServerVerifier recipe: each kind of effect becomes exactly the HTTP request expected, checked by method, path, query, content type and body.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use controller::Error;
use controller::context::Reconciler;
use controller::triggers::PairKey;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use model::api::{DatasetPhase, DatasetStatus};
use model::effect::{Effect, EventType, Kind, Object, ObjectRef, Status};
use model::observed::Observed;
use model::time::Millis;
use serde_json::json;
use support::fixtures::{NAME, NS, seed_dataset, seed_runtime, stored};
use support::{ApiServerVerifier, Harness, respond, status_error};

const DATASET_UID: &str = "0b8f4f1e-1c5a-4f0e-9d55-6c1f0f3b2a10";
const RUNTIME_UID: &str = "7c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5";
const T0: Millis = Millis(1_700_000_000_000);

fn dataset_ref() -> ObjectRef {
    ObjectRef::namespaced(Kind::Dataset, NS, NAME)
}

fn runtime_ref() -> ObjectRef {
    ObjectRef::namespaced(Kind::JuiceFSRuntime, NS, NAME)
}

/// The seed pair as stored at resourceVersion "1", with `finalizers` on the dataset.
fn observed_seed(finalizers: &[&str]) -> Observed {
    let mut observed = Observed::empty(NS, NAME);
    let mut dataset = stored(seed_dataset(), DATASET_UID, "1");
    dataset.metadata.finalizers = (!finalizers.is_empty()).then(|| finalizers.iter().map(|f| f.to_string()).collect());
    observed.dataset = Some(std::sync::Arc::new(dataset));
    observed.runtime = Some(std::sync::Arc::new(stored(seed_runtime(), RUNTIME_UID, "1")));
    observed
}

/// A minimal object the API server could answer with.
fn answer(kind: &str, api_version: &str, rv: &str) -> serde_json::Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": NAME, "namespace": NS, "resourceVersion": rv}})
}

async fn execute_one(
    effect: Effect,
    observed: Observed,
    answers: Vec<(u16, serde_json::Value)>,
) -> (Result<usize, Error>, Vec<support::Captured>) {
    let (result, _created, seen) = execute_all(vec![effect], observed, answers).await;
    (result, seen)
}

/// Runs `effects` against a verifier that gives `answers` in turn; returns the result, the
/// objects the executor recorded as created, and the requests it saw.
async fn execute_all(
    effects: Vec<Effect>,
    observed: Observed,
    answers: Vec<(u16, serde_json::Value)>,
) -> (Result<usize, Error>, Vec<ObjectRef>, Vec<support::Captured>) {
    let (harness, handle) = Harness::new();
    let executor = harness.context.executor.clone();
    let run = tokio::spawn(async move {
        let mut written = controller::execute::Written::default();
        let result = executor.execute_recording(&effects, &observed, &mut written).await;
        (result, written.created)
    });
    let mut api = ApiServerVerifier(handle);
    let mut seen = Vec::new();
    for (code, body) in answers {
        seen.push(api.handle(|_| respond(code, &body)).await);
    }
    api.expect_silence(Duration::from_millis(50)).await;
    let (result, created) = run.await.expect("executor task");
    (result, created, seen)
}

/// The seed runtime's worker StatefulSet, as the model names it.
fn worker_statefulset() -> StatefulSet {
    let metadata =
        ObjectMeta { name: Some("jfsdemo-juicefs-worker".into()), namespace: Some(NS.into()), ..Default::default() };
    StatefulSet { metadata, ..Default::default() }
}

#[tokio::test]
async fn apply_is_a_forced_server_side_apply_by_ferrofluid() {
    let sts = worker_statefulset();
    let effect = Effect::Apply(Object::StatefulSet(Box::new(sts)));
    let (result, seen) =
        execute_one(effect, observed_seed(&[]), vec![(200, answer("StatefulSet", "apps/v1", "7"))]).await;
    assert_eq!(result.unwrap(), 1);
    let request = &seen[0];
    assert_eq!(request.method, "PATCH");
    assert_eq!(request.path, "/apis/apps/v1/namespaces/default/statefulsets/jfsdemo-juicefs-worker");
    assert_eq!(request.query.as_deref(), Some("&force=true&fieldManager=ferrofluid"));
    assert_eq!(request.content_type.as_deref(), Some("application/apply-patch+yaml"));
    assert_eq!(
        request.body,
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "jfsdemo-juicefs-worker", "namespace": "default"}})
    );
}

#[tokio::test]
async fn status_is_a_merge_patch_of_the_subresource_guarded_by_resource_version() {
    let mut observed = observed_seed(&[]);
    let old = DatasetStatus { phase: DatasetPhase::Bound, ufs_total: Some("1.00GiB".into()), ..Default::default() };
    std::sync::Arc::make_mut(observed.dataset.as_mut().unwrap()).status = Some(old);
    let status = DatasetStatus { phase: DatasetPhase::NotBound, ..Default::default() };
    let effect = Effect::PatchStatus {
        target: dataset_ref(),
        status: Status::Dataset(Box::new(status)),
        resource_version: Some("1".into()),
    };
    let (result, seen) =
        execute_one(effect, observed, vec![(200, answer("Dataset", "data.fluid.io/v1alpha1", "2"))]).await;
    assert_eq!(result.unwrap(), 1);
    let request = &seen[0];
    assert_eq!(request.line(), "PATCH /apis/data.fluid.io/v1alpha1/namespaces/default/datasets/jfsdemo/status?");
    assert_eq!(request.content_type.as_deref(), Some("application/merge-patch+json"));
    // The whole status is replaced: fields the model dropped are nulled.
    assert_eq!(
        request.body,
        json!({"metadata": {"resourceVersion": "1"}, "status": {"phase": "NotBound", "ufsTotal": null}})
    );
}

#[tokio::test]
async fn node_labels_are_a_merge_patch_of_only_the_listed_keys() {
    let labels = BTreeMap::from([
        ("fluid.io/s-default-jfsdemo".to_string(), Some("true".to_string())),
        ("fluid.io/dataset-num".to_string(), None),
    ]);
    let effect =
        Effect::PatchLabels { target: ObjectRef::cluster(Kind::Node, "node-a"), labels, resource_version: None };
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "resourceVersion": "9"}});
    let (result, seen) = execute_one(effect, observed_seed(&[]), vec![(200, node)]).await;
    assert_eq!(result.unwrap(), 1);
    assert_eq!(seen[0].line(), "PATCH /api/v1/nodes/node-a?");
    assert_eq!(seen[0].content_type.as_deref(), Some("application/merge-patch+json"));
    // No resourceVersion: kubelets write nodes constantly, and these keys are ours alone.
    assert_eq!(
        seen[0].body,
        json!({"metadata": {"labels": {"fluid.io/dataset-num": null, "fluid.io/s-default-jfsdemo": "true"}}})
    );
}

#[tokio::test]
async fn dataset_labels_are_guarded_by_resource_version() {
    let labels = BTreeMap::from([("fluid.io/dataset-id".to_string(), Some("default-jfsdemo".to_string()))]);
    let effect = Effect::PatchLabels { target: dataset_ref(), labels, resource_version: Some("1".into()) };
    let (result, seen) =
        execute_one(effect, observed_seed(&[]), vec![(200, answer("Dataset", "data.fluid.io/v1alpha1", "2"))]).await;
    assert_eq!(result.unwrap(), 1);
    assert_eq!(seen[0].line(), "PATCH /apis/data.fluid.io/v1alpha1/namespaces/default/datasets/jfsdemo?");
    assert_eq!(
        seen[0].body,
        json!({"metadata": {"resourceVersion": "1", "labels": {"fluid.io/dataset-id": "default-jfsdemo"}}})
    );
}

#[tokio::test]
async fn owner_reference_replaces_the_list_under_resource_version() {
    let owner = OwnerReference {
        api_version: "data.fluid.io/v1alpha1".into(),
        kind: "Dataset".into(),
        name: NAME.into(),
        uid: DATASET_UID.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let effect = Effect::AddOwnerReference { target: runtime_ref(), owner, resource_version: Some("1".into()) };
    let (result, seen) =
        execute_one(effect, observed_seed(&[]), vec![(200, answer("JuiceFSRuntime", "data.fluid.io/v1alpha1", "2"))])
            .await;
    assert_eq!(result.unwrap(), 1);
    assert_eq!(seen[0].line(), "PATCH /apis/data.fluid.io/v1alpha1/namespaces/default/juicefsruntimes/jfsdemo?");
    assert_eq!(seen[0].content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(
        seen[0].body,
        json!({"metadata": {"resourceVersion": "1", "ownerReferences": [{
            "apiVersion": "data.fluid.io/v1alpha1", "kind": "Dataset", "name": "jfsdemo",
            "uid": DATASET_UID, "controller": true, "blockOwnerDeletion": true,
        }]}})
    );
}

#[tokio::test]
async fn finalizers_are_added_and_removed_as_whole_lists_under_resource_version() {
    let add = Effect::AddFinalizer {
        target: dataset_ref(),
        finalizer: "fluid-dataset-controller-finalizer".into(),
        resource_version: Some("1".into()),
    };
    let (result, seen) = execute_one(
        add,
        observed_seed(&["other.io/keep"]),
        vec![(200, answer("Dataset", "data.fluid.io/v1alpha1", "2"))],
    )
    .await;
    assert_eq!(result.unwrap(), 1);
    assert_eq!(seen[0].line(), "PATCH /apis/data.fluid.io/v1alpha1/namespaces/default/datasets/jfsdemo?");
    assert_eq!(
        seen[0].body,
        json!({"metadata": {"resourceVersion": "1", "finalizers": ["other.io/keep", "fluid-dataset-controller-finalizer"]}})
    );

    let remove = Effect::RemoveFinalizer {
        target: dataset_ref(),
        finalizer: "fluid-dataset-controller-finalizer".into(),
        resource_version: Some("1".into()),
    };
    let observed = observed_seed(&["fluid-dataset-controller-finalizer", "other.io/keep"]);
    let (result, seen) =
        execute_one(remove, observed, vec![(200, answer("Dataset", "data.fluid.io/v1alpha1", "3"))]).await;
    assert_eq!(result.unwrap(), 1);
    assert_eq!(seen[0].body, json!({"metadata": {"resourceVersion": "1", "finalizers": ["other.io/keep"]}}));
}

/// The write contract (`model::write`): each write sends the resourceVersion its effect was
/// decided on, moved along by this run's own guarded writes; an unguarded write ends the chain.
/// `sim/src/control.rs` checks its executor against the same sequence.
#[tokio::test]
async fn one_runs_guarded_writes_chain_their_resource_versions() {
    let decided_on = |rv: &str| Some(rv.to_string());
    let status = DatasetStatus { phase: DatasetPhase::NotBound, ..Default::default() };
    let dataset_id = BTreeMap::from([("fluid.io/dataset-id".to_string(), Some("default-jfsdemo".to_string()))]);
    let effects = vec![
        Effect::PatchStatus {
            target: dataset_ref(),
            status: Status::Dataset(Box::new(status)),
            resource_version: decided_on("1"),
        },
        Effect::AddFinalizer {
            target: dataset_ref(),
            finalizer: "fluid-dataset-controller-finalizer".into(),
            resource_version: decided_on("1"),
        },
        Effect::PatchLabels { target: dataset_ref(), labels: dataset_id.clone(), resource_version: None },
        Effect::PatchLabels { target: dataset_ref(), labels: dataset_id, resource_version: decided_on("1") },
    ];
    let answers = ["2", "3", "4", "5"].map(|rv| (200, answer("Dataset", "data.fluid.io/v1alpha1", rv))).to_vec();
    let (result, _, seen) = execute_all(effects, observed_seed(&[]), answers).await;
    assert_eq!(result.unwrap(), 4);
    let sent: Vec<Option<&str>> =
        seen.iter().map(|request| request.body["metadata"]["resourceVersion"].as_str()).collect();
    assert_eq!(sent, [Some("1"), Some("2"), None, Some("1")], "the unguarded write ended the chain");
}

#[tokio::test]
async fn delete_is_a_delete_and_404_counts_as_done() {
    let effect = Effect::Delete(ObjectRef::cluster(Kind::PersistentVolume, "default-jfsdemo"));
    let (result, seen) =
        execute_one(effect, observed_seed(&[]), vec![(404, status_error(404, "NotFound", "gone"))]).await;
    assert_eq!(result.unwrap(), 1);
    assert_eq!(seen[0].line(), "DELETE /api/v1/persistentvolumes/default-jfsdemo?");
}

#[tokio::test]
async fn an_event_is_created_through_the_recorder_about_its_object() {
    let effect = Effect::Event {
        regarding: runtime_ref(),
        type_: EventType::Warning,
        reason: "NoDatasetToBind".into(),
        message: "create Dataset default/jfsdemo".into(),
    };
    let (result, seen) = execute_one(
        effect,
        observed_seed(&[]),
        vec![(201, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}}))],
    )
    .await;
    assert_eq!(result.unwrap(), 1);
    let request = &seen[0];
    assert_eq!(request.line(), "POST /apis/events.k8s.io/v1/namespaces/default/events?");
    let body = &request.body;
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["reason"], "NoDatasetToBind");
    assert_eq!(body["note"], "create Dataset default/jfsdemo");
    assert_eq!(body["reportingController"], "ferrofluid");
    assert!(body["action"].as_str().unwrap().starts_with("Reconcile-"), "{body}");
    assert_eq!(
        body["regarding"],
        json!({"apiVersion": "data.fluid.io/v1alpha1", "kind": "JuiceFSRuntime", "name": "jfsdemo", "namespace": "default", "uid": RUNTIME_UID})
    );
}

#[tokio::test]
async fn a_follower_sends_nothing() {
    let (harness, handle) = Harness::new();
    harness.leader.send_replace(false);
    let effect = Effect::Delete(ObjectRef::cluster(Kind::PersistentVolume, "default-jfsdemo"));
    let result = harness.context.executor.execute(&[effect], &observed_seed(&[])).await;
    assert!(matches!(result, Err(Error::NotLeader)), "{result:?}");
    ApiServerVerifier(handle).expect_silence(Duration::from_millis(100)).await;
    // Nor does a whole reconcile: a follower does not even decide.
    let mut harness = harness;
    harness.writers.datasets.apply_watcher_event(&watcher::Event::Apply(stored(seed_dataset(), DATASET_UID, "1")));
    let action = harness.context.reconcile_at(Reconciler::Dataset, &PairKey::new(NS, NAME), T0).await.unwrap();
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn losing_the_lease_stops_before_the_next_request() {
    let (harness, handle) = Harness::new();
    let leader = harness.leader;
    let effects = vec![
        Effect::Delete(ObjectRef::namespaced(Kind::StatefulSet, NS, "jfsdemo-juicefs-worker")),
        Effect::Delete(ObjectRef::namespaced(Kind::DaemonSet, NS, "jfsdemo-juicefs-fuse")),
    ];
    let executor = harness.context.executor.clone();
    let run = tokio::spawn(async move { executor.execute(&effects, &observed_seed(&[])).await });
    let mut api = ApiServerVerifier(handle);
    let first = api
        .handle(|_| {
            // The lease is lost while the first request is in flight.
            leader.send_replace(false);
            respond(200, &answer("StatefulSet", "apps/v1", "5"))
        })
        .await;
    assert_eq!(first.method, "DELETE");
    api.expect_silence(Duration::from_millis(100)).await;
    assert!(matches!(run.await.unwrap(), Err(Error::NotLeader)));
}

#[tokio::test]
async fn applies_record_the_objects_they_created_and_not_those_already_observed() {
    let mut workers = worker_statefulset();
    workers.metadata.resource_version = Some("3".into());
    let volume = k8s_openapi::api::core::v1::PersistentVolume {
        metadata: ObjectMeta { name: Some(format!("{NS}-{NAME}")), ..Default::default() },
        ..Default::default()
    };
    let mut observed = observed_seed(&[]);
    observed.workers = Some(std::sync::Arc::new(workers.clone()));
    let effects = vec![
        Effect::Apply(Object::StatefulSet(Box::new(workers))),
        Effect::Apply(Object::PersistentVolume(Box::new(volume))),
    ];
    let answers = vec![(200, answer("StatefulSet", "apps/v1", "4")), (201, answer("PersistentVolume", "v1", "5"))];
    let (result, created, _) = execute_all(effects, observed, answers).await;
    assert_eq!(result.unwrap(), 2);
    assert_eq!(created, [ObjectRef::cluster(Kind::PersistentVolume, &format!("{NS}-{NAME}"))]);
}
