//! The dataset reconciler: finalizer, `NotBound` on creation, guarded deletion, orphan reset.

use std::collections::BTreeSet;

use super::Config;
use super::conditions::{self, Wanted};
use super::node_labels::{self, CacheLabels};
use crate::api::{Dataset, DatasetPhase, DatasetStatus};
use crate::effect::{Decision, Effect, Kind, ObjectRef, Requeue, Status};
use crate::labels::{self, DatasetKeys};
use crate::observed::{Observed, PodView};
use crate::time::Millis;

/// Reconciles the dataset of the pair `observed.namespace/observed.name`.
///
/// 1. A new dataset gets the finalizer and the phase `NotBound`.
/// 2. A deleting dataset keeps its finalizer while any pod that has not completed uses its PVC;
///    the reason shows in the `DeletionBlocked` condition and a Warning event naming the pods.
/// 3. A dataset still marked `Bound`/`Failed` whose runtime has gone (say, its finalizer was
///    removed by hand) goes back to `NotBound`, so it can bind again.
pub fn reconcile_dataset<R>(observed: &Observed<R>, config: &Config, now: Millis) -> Decision {
    let Some(dataset) = observed.dataset.as_deref() else {
        return Decision::idle(Requeue::AwaitChange);
    };
    let target = ObjectRef::namespaced(Kind::Dataset, &observed.namespace, &observed.name);
    let has_finalizer = has_finalizer(dataset, labels::DATASET_FINALIZER);
    if dataset.metadata.deletion_timestamp.is_some() {
        return if has_finalizer {
            deletion(observed, dataset, target, config, now)
        } else {
            Decision::idle(Requeue::AwaitChange)
        };
    }

    let mut effects = Vec::new();
    if !has_finalizer {
        effects.push(Effect::AddFinalizer {
            target: target.clone(),
            finalizer: labels::DATASET_FINALIZER.to_string(),
            resource_version: dataset.metadata.resource_version.clone(),
        });
    }
    let observed_status = observed_status(dataset);
    let mut status = observed_status.clone();
    match status.phase {
        DatasetPhase::None => {
            status.phase = DatasetPhase::NotBound;
            let message = format!(
                "no runtime is bound yet: create a runtime named {} in namespace {} (for example a JuiceFSRuntime)",
                observed.name, observed.namespace
            );
            mark_no_runtime(&mut status, message, now);
        }
        DatasetPhase::Bound | DatasetPhase::Failed if observed.runtime.is_none() => {
            reset_to_not_bound(&mut status);
            let message = format!(
                "the runtime {}/{} is gone; create one to bind the dataset again",
                observed.namespace, observed.name
            );
            mark_no_runtime(&mut status, message, now);
        }
        _ => {}
    }
    conditions::remove(&mut status.conditions, conditions::DATASET_DELETION_BLOCKED);
    effects.extend(orphan_label_effects(observed, dataset));
    push_status(&mut effects, target, dataset, observed_status, status);
    Decision::new(effects, Requeue::AwaitChange)
}

fn deletion<R>(observed: &Observed<R>, dataset: &Dataset, target: ObjectRef, config: &Config, now: Millis) -> Decision {
    let users: Vec<&PodView> = observed.claim_users.iter().filter(|pod| pod.may_use_volumes()).collect();
    if users.is_empty() {
        let mut effects = orphan_label_effects(observed, dataset);
        effects.push(Effect::RemoveFinalizer {
            target,
            finalizer: labels::DATASET_FINALIZER.to_string(),
            resource_version: dataset.metadata.resource_version.clone(),
        });
        return Decision::new(effects, Requeue::AwaitChange);
    }
    let names: Vec<String> = users.iter().map(|pod| describe_user(pod)).collect();
    let message = format!(
        "cannot delete dataset {}/{}: {} still using PVC {}; delete them or wait until they complete",
        observed.namespace,
        observed.name,
        plural_pods(&names),
        observed.name
    );
    let observed_status = observed_status(dataset);
    let mut status = observed_status.clone();
    let wanted = Wanted {
        type_: conditions::DATASET_DELETION_BLOCKED,
        status: true,
        reason: "DatasetInUse",
        message: message.clone(),
    };
    conditions::set(&mut status.conditions, wanted, now);
    let mut effects = Vec::new();
    let changed = status != *observed_status;
    push_status(&mut effects, target.clone(), dataset, observed_status, status);
    // One event per change of the blocking set, not one per retry.
    if changed {
        effects.push(Effect::warning(target, "DatasetDeletionBlocked", message));
    }
    Decision::new(effects, Requeue::AfterMs(config.retry_ms))
}

/// With no runtime, nothing else removes this dataset's node labels: strip any that a CSI
/// NodeStage racing the runtime's teardown left behind (the FUSE label stays where a pod that
/// uses the claim still runs).
fn orphan_label_effects<R>(observed: &Observed<R>, dataset: &Dataset) -> Vec<Effect> {
    if observed.runtime.is_some() {
        return Vec::new();
    }
    let Ok(keys) = DatasetKeys::new(&observed.namespace, &observed.name, dataset.metadata.uid.as_deref()) else {
        return Vec::new();
    };
    let labels_of = CacheLabels {
        keys: &keys,
        // No runtime is left to say which type it was: the labels of every type go.
        runtime_type: None,
        exclusive: false,
        exclusive_value: keys.exclusive_value(&observed.namespace, &observed.name),
        capacity: Default::default(),
        cluster_common_labels: &observed.cluster_common_labels,
    };
    let keep_fuse_on: BTreeSet<String> = observed
        .claim_users
        .iter()
        .filter(|pod| pod.may_use_volumes())
        .filter_map(|pod| pod.node_name.as_deref().map(str::to_string))
        .collect();
    node_labels::orphan_effects(&labels_of, &observed.nodes, &keep_fuse_on)
}

fn describe_user(pod: &PodView) -> String {
    match &pod.node_name {
        Some(node) => format!("{} ({:?} on {node})", pod.key(), pod.phase),
        None => format!("{} ({:?})", pod.key(), pod.phase),
    }
}

fn plural_pods(names: &[String]) -> String {
    match names {
        [one] => format!("pod {one} is"),
        many => format!("pods {} are", many.join(", ")),
    }
}

/// Sets `Ready=False` with reason `NoRuntime` and a message that says what to create.
pub fn mark_no_runtime(status: &mut DatasetStatus, message: String, now: Millis) {
    let wanted = Wanted { type_: conditions::DATASET_READY, status: false, reason: "NoRuntime", message };
    conditions::set(&mut status.conditions, wanted, now);
}

/// Clears what a binding wrote, as Fluid does when its runtime goes.
pub fn reset_to_not_bound(status: &mut DatasetStatus) {
    status.phase = DatasetPhase::NotBound;
    status.cache_states.clear();
    status.runtimes.clear();
    status.ufs_total = None;
    status.hcfs = None;
    status.file_num = None;
    status.mounts.clear();
}

/// The dataset's status as observed (none yet: the empty status), borrowed.
pub fn observed_status(dataset: &Dataset) -> &DatasetStatus {
    static NONE: std::sync::LazyLock<DatasetStatus> = std::sync::LazyLock::new(DatasetStatus::default);
    dataset.status.as_ref().unwrap_or(&NONE)
}

/// Pushes a status patch when `status` differs from what was observed.
pub fn push_status(
    effects: &mut Vec<Effect>,
    target: ObjectRef,
    dataset: &Dataset,
    observed: &DatasetStatus,
    status: DatasetStatus,
) {
    if status != *observed || dataset.status.is_none() {
        effects.push(Effect::PatchStatus {
            target,
            status: Status::Dataset(Box::new(status)),
            resource_version: dataset.metadata.resource_version.clone(),
        });
    }
}

/// True when `finalizer` is on the object.
pub fn has_finalizer(object: &impl kube::Resource, finalizer: &str) -> bool {
    object.meta().finalizers.as_ref().is_some_and(|all| all.iter().any(|f| f == finalizer))
}
