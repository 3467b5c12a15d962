//! Criterion bench: one reconcile of a dataset+runtime pair at steady state (target: median ≤ 20 µs).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::apps::v1::{DaemonSetStatus, StatefulSetStatus};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::api::{Dataset, JuiceFSRuntime};
use model::effect::{Decision, Effect, Kind, Object, Status};
use model::engine::juicefs::JuiceFsEngine;
use model::labels::DatasetKeys;
use model::observed::{Observed, PodPhase, PodView, relevant_nodes};
use model::reconcile::{Config, reconcile_dataset, reconcile_runtime};
use model::time::Millis;

const NOW: Millis = Millis(1_700_000_000_000);

const DATASET: &str = r#"{"apiVersion":"data.fluid.io/v1alpha1","kind":"Dataset",
  "metadata":{"name":"jfsdemo","namespace":"default","uid":"0b8f4f1e-1c5a-4f0e-9d55-6c1f0f3b2a10","resourceVersion":"1"},
  "spec":{"mounts":[{"name":"test","mountPoint":"juicefs:///demo","options":{"bucket":"<bucket>"}}]}}"#;
const RUNTIME: &str = r#"{"apiVersion":"data.fluid.io/v1alpha1","kind":"JuiceFSRuntime",
  "metadata":{"name":"jfsdemo","namespace":"default","uid":"7c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5","resourceVersion":"1"},
  "spec":{"replicas":2,"tieredstore":{"levels":[{"mediumtype":"MEM","path":"/dev/shm","quota":"40960Mi"}]}}}"#;

/// Drives the pair to its fixpoint with a minimal stand-in for the apiserver and workload
/// controllers: every worker runs and is ready.
fn steady_state() -> Observed {
    let mut observed = Observed::empty("default", "jfsdemo");
    observed.dataset = Some(Arc::new(serde_json::from_str::<Dataset>(DATASET).expect("dataset fixture")));
    observed.runtime = Some(Arc::new(serde_json::from_str::<JuiceFSRuntime>(RUNTIME).expect("runtime fixture")));
    let mut nodes: Vec<Arc<Node>> = (0..3)
        .map(|i| {
            Arc::new(Node {
                metadata: ObjectMeta { name: Some(format!("node-{i}")), ..Default::default() },
                ..Default::default()
            })
        })
        .collect();
    let keys = DatasetKeys::new("default", "jfsdemo", None).expect("short names");
    Arc::make_mut(&mut observed.cluster_common_labels).insert(keys.common_label());
    let config = Config::default();
    for _ in 0..10 {
        let decisions =
            [reconcile_dataset(&observed, &config, NOW), reconcile_runtime(&JuiceFsEngine, &observed, &config, NOW)];
        if decisions.iter().all(|d| d.writes().next().is_none()) {
            return observed;
        }
        for decision in &decisions {
            apply(&mut observed, &mut nodes, decision);
        }
        observed.nodes = relevant_nodes(&observed.node_label_keys(&keys, "juicefs"), &observed.worker_pods, &nodes);
    }
    panic!("the seed pair did not reach a fixpoint");
}

fn apply(observed: &mut Observed, nodes: &mut [Arc<Node>], decision: &Decision) {
    for effect in &decision.effects {
        match effect {
            Effect::Apply(Object::StatefulSet(sts)) => {
                let mut sts = (**sts).clone();
                let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                let name = sts.metadata.name.clone().unwrap_or_default();
                sts.status = Some(StatefulSetStatus {
                    replicas,
                    ready_replicas: Some(replicas),
                    current_replicas: Some(replicas),
                    available_replicas: Some(replicas),
                    ..Default::default()
                });
                observed.worker_pods = (0..replicas)
                    .map(|i| PodView {
                        namespace: "default".into(),
                        name: format!("{name}-{i}").into(),
                        node_name: Some(format!("node-{i}").into()),
                        phase: PodPhase::Running,
                        ready: true,
                        deleting: false,
                        unschedulable: None,
                    })
                    .collect();
                observed.workers = Some(Arc::new(sts));
            }
            Effect::Apply(Object::DaemonSet(ds)) => {
                let mut ds = (**ds).clone();
                ds.status = Some(DaemonSetStatus::default());
                observed.fuse = Some(Arc::new(ds));
            }
            Effect::Apply(Object::PersistentVolume(pv)) => observed.persistent_volume = Some(Arc::new((**pv).clone())),
            Effect::Apply(Object::PersistentVolumeClaim(pvc)) => {
                observed.persistent_volume_claim = Some(Arc::new((**pvc).clone()))
            }
            Effect::PatchStatus { status: Status::Dataset(status), .. } => {
                Arc::make_mut(observed.dataset.as_mut().expect("dataset")).status = Some((**status).clone());
            }
            Effect::PatchStatus { status: Status::Runtime(status), .. } => {
                Arc::make_mut(observed.runtime.as_mut().expect("runtime")).status = Some((**status).clone());
            }
            Effect::PatchLabels { target, labels, .. } => {
                let meta = match target.kind {
                    Kind::Node => {
                        &mut Arc::make_mut(
                            nodes.iter_mut().find(|n| n.metadata.name.as_deref() == Some(&target.name)).expect("node"),
                        )
                        .metadata
                    }
                    Kind::Dataset => &mut Arc::make_mut(observed.dataset.as_mut().expect("dataset")).metadata,
                    _ => &mut Arc::make_mut(observed.runtime.as_mut().expect("runtime")).metadata,
                };
                let current = meta.labels.get_or_insert_with(BTreeMap::new);
                for (key, value) in labels {
                    match value {
                        Some(value) => current.insert(key.clone(), value.clone()),
                        None => current.remove(key),
                    };
                }
            }
            Effect::AddOwnerReference { owner, .. } => {
                Arc::make_mut(observed.runtime.as_mut().expect("runtime"))
                    .metadata
                    .owner_references
                    .get_or_insert_with(Vec::new)
                    .push(owner.clone());
            }
            Effect::AddFinalizer { target, finalizer, .. } => {
                let meta = match target.kind {
                    Kind::Dataset => &mut Arc::make_mut(observed.dataset.as_mut().expect("dataset")).metadata,
                    _ => &mut Arc::make_mut(observed.runtime.as_mut().expect("runtime")).metadata,
                };
                meta.finalizers.get_or_insert_with(Vec::new).push(finalizer.clone());
            }
            _ => {}
        }
    }
}

fn bench_reconcile(c: &mut Criterion) {
    let observed = steady_state();
    let config = Config::default();
    c.bench_function("reconcile_runtime at steady state (seed pair, 2 workers)", |b| {
        b.iter(|| reconcile_runtime(&JuiceFsEngine, black_box(&observed), &config, NOW))
    });
    c.bench_function("reconcile_dataset at steady state (seed pair)", |b| {
        b.iter(|| reconcile_dataset(black_box(&observed), &config, NOW))
    });
}

criterion_group!(benches, bench_reconcile);
criterion_main!(benches);
