//! The runtime reconciler: the seed article's setup steps, the periodic sync, and teardown.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus, StatefulSet, StatefulSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use super::Config;
use super::conditions::{self, Wanted};
use super::dataset::{has_finalizer, mark_no_runtime, observed_status, push_status, reset_to_not_bound};
use super::node_labels::{self, CacheLabels};
use super::status::{self, StatusInput};
use crate::api::dataset::RuntimeRef;
use crate::api::{Dataset, DatasetPhase, Placement, RuntimeStatus};
use crate::effect::{Decision, Effect, EventType, Kind, Object, ObjectRef, Requeue, Status};
use crate::engine::{Engine, EngineInput, RuntimeResource};
use crate::error::ModelError;
use crate::labels::{self, DatasetKeys, WorkloadNames};
use crate::observed::{Observed, PodPhase};
use crate::time::Millis;
use crate::volume::{self, VolumeInput};

/// Annotation with a hash of what we last applied, so a reconcile at the fixpoint applies
/// nothing even though the apiserver adds defaults to what it stores.
pub const SPEC_HASH_ANNOTATION: &str = "ferrofluid.io/spec-hash";

/// Reconciles the runtime of the pair `observed.namespace/observed.name`.
///
/// Setup, in the seed article's order: find the dataset and own it by ownerReference; add the
/// finalizer and the `fluid.io/dataset-id` labels; validate; a master where the engine has one;
/// the worker StatefulSet; the FUSE DaemonSet; runtime status (`NotReady` → `PartialReady` →
/// `Ready`) with the worker counters; the dataset `Bound` (or `Failed` when its workers are
/// lost, and `Bound` again once they return); the PV and PVC; cache states and cache-node labels.
/// The same pass is the periodic sync, so replicas, health and labels converge on every resync.
pub fn reconcile_runtime<E: Engine>(
    engine: &E,
    observed: &Observed<E::Runtime>,
    config: &Config,
    now: Millis,
) -> Decision {
    let Some(runtime) = observed.runtime.as_deref() else {
        return Decision::idle(Requeue::AwaitChange);
    };
    let target = ObjectRef::namespaced(runtime_kind(), &observed.namespace, &observed.name);
    if runtime.meta().deletion_timestamp.is_some() {
        return teardown(engine, observed, runtime, target, config, now);
    }
    if observed.namespace_terminating {
        // Setting up would create objects the API server refuses in a namespace being deleted;
        // its deletion reaches the dataset and this runtime next, and their teardown runs then.
        return Decision::idle(Requeue::AwaitChange);
    }
    if let Err(reason) = labels::validate_dns1035(&observed.name) {
        let message = format!(
            "metadata.name: runtime name {reason} (Kubernetes needs DNS-1035 names for its workloads); recreate the dataset and runtime under a valid name"
        );
        return refuse(observed, target, "InvalidRuntimeName", message, Requeue::AwaitChange, now);
    }
    let Some(dataset) = observed.dataset.as_deref().filter(|d| d.metadata.deletion_timestamp.is_none()) else {
        if let Some(dataset) = observed.dataset.as_deref() {
            // The dataset is going; garbage collection removes this runtime through its owner
            // once the dataset's finalizer lets go. Pods may hold it for long, so meanwhile the
            // workers' status and the cache-node labels keep following the workers.
            return sync_while_dataset_goes(engine, observed, dataset, runtime, &target, config, now);
        }
        let message =
            format!("no dataset {}/{} can be bound to the runtime; create it", observed.namespace, observed.name);
        let event = Effect::warning(target, "NoDatasetToBind", message);
        return Decision::new(vec![event], Requeue::AfterMs(config.retry_ms));
    };
    let dataset_uid = dataset.metadata.uid.as_deref().unwrap_or_default();
    if let Some(previous) = runtime
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.kind == "Dataset" && owner.uid != dataset_uid)
    {
        // Owned by an earlier dataset of this name, now gone: garbage collection deletes this
        // runtime (its teardown runs). Adopting it as well would give it two datasets.
        let message = format!(
            "the runtime belongs to an earlier dataset {}/{} (uid {}), which is gone; garbage collection deletes it: create the runtime again afterwards",
            observed.namespace, previous.name, previous.uid
        );
        let event = Effect::warning(target, "RuntimeOfDeletedDataset", message);
        return Decision::new(vec![event], Requeue::AfterMs(config.retry_ms));
    }
    if let Some(other) = bound_elsewhere(dataset, engine.runtime_type()) {
        let message = format!(
            "dataset {}/{} is already bound to {} runtime {}; delete that runtime first",
            observed.namespace, observed.name, other.type_, other.name
        );
        let event = Effect::warning(target, "DatasetAlreadyBound", message);
        return Decision::new(vec![event], Requeue::AfterMs(config.retry_ms));
    }
    let keys = match DatasetKeys::new(&observed.namespace, &observed.name, dataset.metadata.uid.as_deref()) {
        Ok(keys) => keys,
        Err(error) => {
            return refuse(
                observed,
                target,
                "DatasetIdentityUnknown",
                error.to_string(),
                Requeue::AfterMs(config.retry_ms),
                now,
            );
        }
    };
    let names = WorkloadNames::new(&observed.namespace, &observed.name, engine.runtime_type());
    let input = EngineInput { dataset, runtime, keys: &keys, names: &names, config: &config.engine };

    let mut effects = binding_effects(engine, observed, dataset, runtime, &target, &keys);
    let hashes = InputsHash::new(engine, &input);
    let applied = |meta: Option<&ObjectMeta>, workload| observed_hash(meta) == Some(hashes.of(workload).as_str());
    let up_to_date = applied(observed.workers.as_deref().map(|w| &w.metadata), Workload::Workers)
        && applied(observed.fuse.as_deref().map(|f| &f.metadata), Workload::Fuse);
    // Workloads carrying the current inputs' hash were built from inputs that passed validation.
    let validation = if up_to_date { Ok(()) } else { validate_all(engine, &input) };
    if let Err(errors) = validation {
        let message = invalid_spec_message(&errors);
        let mut decision = refuse(observed, target, "InvalidRuntimeSpec", message, Requeue::AwaitChange, now);
        effects.append(&mut decision.effects);
        return Decision::new(effects, decision.requeue);
    }
    match setup(engine, observed, &input, &hashes, &target, now) {
        Ok(mut setup_effects) => effects.append(&mut setup_effects),
        Err(error) => {
            let mut decision = refuse(
                observed,
                target,
                "RuntimeSetupFailed",
                error.to_string(),
                Requeue::AfterMs(config.retry_ms),
                now,
            );
            effects.append(&mut decision.effects);
            return Decision::new(effects, decision.requeue);
        }
    }
    Decision::new(effects, Requeue::AfterMs(config.resync_ms))
}

/// The periodic sync of a runtime whose dataset is terminating (held by pods that use it):
/// runtime status and cache-node labels only; nothing is created, bound or owned.
fn sync_while_dataset_goes<E: Engine>(
    engine: &E,
    observed: &Observed<E::Runtime>,
    dataset: &Dataset,
    runtime: &E::Runtime,
    target: &ObjectRef,
    config: &Config,
    now: Millis,
) -> Decision {
    let Some(workers) = observed.workers.as_deref() else {
        return Decision::idle(Requeue::AwaitChange);
    };
    let Ok(keys) = DatasetKeys::new(&observed.namespace, &observed.name, dataset.metadata.uid.as_deref()) else {
        return Decision::idle(Requeue::AwaitChange);
    };
    let names = WorkloadNames::new(&observed.namespace, &observed.name, engine.runtime_type());
    let input = EngineInput { dataset, runtime, keys: &keys, names: &names, config: &config.engine };
    let Ok(capacity) = engine.node_capacity(&input) else {
        return Decision::idle(Requeue::AwaitChange);
    };
    let mut effects = Vec::new();
    let default_workers = StatefulSetStatus::default();
    let default_fuse = DaemonSetStatus::default();
    let after = AfterApply {
        workers: workers.status.as_ref().unwrap_or(&default_workers),
        fuse: observed.fuse.as_deref().and_then(|f| f.status.as_ref()).unwrap_or(&default_fuse),
        scaled_from: None,
    };
    let runtime_status = compute_runtime_status(engine, observed, &input, &after, capacity.total_bytes(), now);
    if runtime.runtime_status() != Some(&runtime_status) {
        effects.push(Effect::PatchStatus {
            target: target.clone(),
            status: Status::Runtime(Box::new(runtime_status)),
            resource_version: runtime.meta().resource_version.clone(),
        });
    }
    let labels_of = CacheLabels {
        keys: &keys,
        runtime_type: Some(engine.runtime_type()),
        exclusive: Placement::is_exclusive(dataset.spec.placement),
        exclusive_value: keys.exclusive_value(&observed.namespace, &observed.name),
        capacity,
        cluster_common_labels: &observed.cluster_common_labels,
    };
    effects.extend(node_labels::sync_effects(&labels_of, &observed.nodes, &running_worker_nodes(observed)));
    Decision::new(effects, Requeue::AfterMs(config.resync_ms))
}

/// The nodes where this runtime's workers run.
fn running_worker_nodes<R>(observed: &Observed<R>) -> BTreeSet<String> {
    observed
        .worker_pods
        .iter()
        .filter(|pod| pod.phase == PodPhase::Running && !pod.deleting)
        .filter_map(|pod| pod.node_name.as_deref().map(str::to_string))
        .collect()
}

fn runtime_kind() -> Kind {
    Kind::JuiceFSRuntime
}

fn bound_elsewhere<'a>(dataset: &'a Dataset, runtime_type: &str) -> Option<&'a RuntimeRef> {
    dataset.status.as_ref()?.runtimes.iter().find(|bound| !bound.type_.is_empty() && bound.type_ != runtime_type)
}

/// Owner reference, finalizer and identity labels: the runtime finds its dataset.
fn binding_effects<E: Engine>(
    engine: &E,
    observed: &Observed<E::Runtime>,
    dataset: &Dataset,
    runtime: &E::Runtime,
    target: &ObjectRef,
    keys: &DatasetKeys,
) -> Vec<Effect> {
    let mut effects = Vec::new();
    let dataset_uid = dataset.metadata.uid.clone().unwrap_or_default();
    let owned = runtime.meta().owner_references.as_ref().is_some_and(|refs| refs.iter().any(|r| r.uid == dataset_uid));
    if !owned {
        let owner = OwnerReference {
            api_version: "data.fluid.io/v1alpha1".to_string(),
            kind: "Dataset".to_string(),
            name: observed.name.clone(),
            uid: dataset_uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        effects.push(Effect::AddOwnerReference {
            target: target.clone(),
            owner,
            resource_version: runtime.meta().resource_version.clone(),
        });
    }
    if !has_finalizer(runtime, engine.finalizer()) {
        effects.push(Effect::AddFinalizer {
            target: target.clone(),
            finalizer: engine.finalizer().to_string(),
            resource_version: runtime.meta().resource_version.clone(),
        });
    }
    let dataset_ref = ObjectRef::namespaced(Kind::Dataset, &observed.namespace, &observed.name);
    for (object_ref, meta) in [(dataset_ref, &dataset.metadata), (target.clone(), runtime.meta())] {
        let id = keys.dataset_id();
        if meta.labels.as_ref().and_then(|l| l.get(labels::DATASET_ID)) != Some(&id) {
            let labels = BTreeMap::from([(labels::DATASET_ID.to_string(), Some(id))]);
            let resource_version = meta.resource_version.clone();
            effects.push(Effect::PatchLabels { target: object_ref, labels, resource_version });
        }
    }
    effects
}

/// The engine's checks plus the volume's, so a bad PVC capacity is refused before any worker
/// starts rather than when the PV is built.
fn validate_all<E: Engine>(engine: &E, input: &EngineInput<'_, E::Runtime>) -> Result<(), Vec<ModelError>> {
    let mut errors = engine.validate(input).err().unwrap_or_default();
    if let Err(error) = VolumeInput::from_engine(engine, input).capacity() {
        errors.push(error);
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

fn invalid_spec_message(errors: &[ModelError]) -> String {
    let details: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("the runtime spec is invalid, so no cache is set up: {}", details.join("; "))
}

/// Reports why setup cannot go on: the dataset's `Ready` condition and a Warning event.
fn refuse<R>(
    observed: &Observed<R>,
    target: ObjectRef,
    reason: &str,
    message: String,
    requeue: Requeue,
    now: Millis,
) -> Decision {
    let mut effects = Vec::new();
    if let Some(dataset) = observed.dataset.as_deref().filter(|d| d.metadata.deletion_timestamp.is_none()) {
        let observed_status = observed_status(dataset);
        let mut status = observed_status.clone();
        let wanted = Wanted { type_: conditions::DATASET_READY, status: false, reason, message: message.clone() };
        conditions::set(&mut status.conditions, wanted, now);
        let changed = status != *observed_status;
        let dataset_ref = ObjectRef::namespaced(Kind::Dataset, &observed.namespace, &observed.name);
        push_status(&mut effects, dataset_ref, dataset, observed_status, status);
        if !changed {
            // Already reported: no event storm on every retry.
            return Decision::new(effects, requeue);
        }
    }
    effects.push(Effect::warning(target, reason, message));
    Decision::new(effects, requeue)
}

/// Which workload an input hash is for: the FUSE DaemonSet does not depend on `replicas`, so a
/// scale does not re-apply it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Master,
    Workers,
    Fuse,
}

/// An FNV-1a hasher that serde writes into without allocating.
struct HashWriter(u64);

impl std::io::Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Hash of everything an engine builds a workload from. Builders are pure functions of these
/// inputs, so an equal hash on the observed object means it is what we would apply, and a
/// steady-state reconcile need not build (or even validate) it.
struct InputsHash {
    /// FNV state after the inputs every workload shares.
    shared: u64,
    replicas: i32,
}

impl InputsHash {
    fn new<E: Engine>(engine: &E, input: &EngineInput<'_, E::Runtime>) -> Self {
        let mut writer = HashWriter(0xcbf2_9ce4_8422_2325);
        let dataset = input.dataset;
        let runtime_meta = input.runtime.meta();
        let identity = (
            engine.runtime_type(),
            env!("CARGO_PKG_VERSION"),
            &runtime_meta.namespace,
            &runtime_meta.name,
            &runtime_meta.uid,
            &dataset.metadata.uid,
            &dataset.metadata.annotations,
            &input.config.mount_root,
            &input.config.worker_image,
            &input.config.fuse_image,
        );
        let result = serde_json::to_writer(&mut writer, &identity)
            .and_then(|()| serde_json::to_writer(&mut writer, &dataset.spec))
            .and_then(|()| serde_json::to_writer(&mut writer, input.runtime.spec()));
        // Serialising plain data cannot fail; if it ever did, hash 0 forces a re-apply.
        let shared = if result.is_ok() { writer.0 } else { 0 };
        Self { shared, replicas: input.runtime.replicas() }
    }

    /// The hash for one workload, as the annotation value.
    fn of(&self, workload: Workload) -> String {
        let mut writer = HashWriter(self.shared);
        let replicas = if workload == Workload::Fuse { -1 } else { self.replicas };
        let _ = std::io::Write::write(&mut writer, &[workload as u8]);
        let _ = std::io::Write::write(&mut writer, &replicas.to_le_bytes());
        format!("{:016x}", writer.0)
    }
}

fn stamp_hash(meta: &mut ObjectMeta, hash: &str) {
    meta.annotations.get_or_insert_with(BTreeMap::new).insert(SPEC_HASH_ANNOTATION.to_string(), hash.to_string());
}

fn observed_hash(meta: Option<&ObjectMeta>) -> Option<&str> {
    meta?.annotations.as_ref()?.get(SPEC_HASH_ANNOTATION).map(String::as_str)
}

fn setup<E: Engine>(
    engine: &E,
    observed: &Observed<E::Runtime>,
    input: &EngineInput<'_, E::Runtime>,
    hashes: &InputsHash,
    target: &ObjectRef,
    now: Millis,
) -> Result<Vec<Effect>, ModelError> {
    let mut effects = Vec::new();
    let master_hash = hashes.of(Workload::Master);
    if observed_hash(observed.master.as_deref().map(|m| &m.metadata)) != Some(master_hash.as_str())
        && let Some(mut master) = engine.master(input)?
    {
        stamp_hash(&mut master.metadata, &master_hash);
        effects.push(Effect::Apply(Object::StatefulSet(Box::new(master))));
    }

    let desired_workers = input.runtime.replicas();
    let observed_workers = observed.workers.as_deref();
    let scaled_from =
        observed_workers.and_then(|w| w.spec.as_ref()?.replicas).filter(|replicas| *replicas != desired_workers);
    let workers_hash = hashes.of(Workload::Workers);
    if observed_hash(observed_workers.map(|w| &w.metadata)) != Some(workers_hash.as_str()) {
        let mut workers: StatefulSet = engine.workers(input)?;
        stamp_hash(&mut workers.metadata, &workers_hash);
        if observed_workers.is_none() {
            for warning in engine.spec_warnings(input) {
                effects.push(Effect::warning(target.clone(), "RuntimeSpecWarning", warning));
            }
        }
        if let Some(from) = scaled_from {
            let (reason, verb) =
                if desired_workers > from { ("WorkersScaledOut", "out") } else { ("WorkersScaledIn", "in") };
            let message = format!("scaling workers {verb} from {from} to {desired_workers} replicas");
            effects.push(Effect::Event {
                regarding: target.clone(),
                type_: EventType::Normal,
                reason: reason.to_string(),
                message,
            });
        }
        effects.push(Effect::Apply(Object::StatefulSet(Box::new(workers))));
    }

    let fuse_hash = hashes.of(Workload::Fuse);
    if observed_hash(observed.fuse.as_deref().map(|f| &f.metadata)) != Some(fuse_hash.as_str()) {
        let mut fuse: DaemonSet = engine.fuse(input)?;
        stamp_hash(&mut fuse.metadata, &fuse_hash);
        effects.push(Effect::Apply(Object::DaemonSet(Box::new(fuse))));
    }

    // Status is computed from the workloads as they are once our applies land (they exist, with
    // the status their controllers reported), so re-reconciling writes nothing.
    let default_workers = StatefulSetStatus::default();
    let default_fuse = DaemonSetStatus::default();
    let after = AfterApply {
        workers: observed_workers.and_then(|w| w.status.as_ref()).unwrap_or(&default_workers),
        fuse: observed.fuse.as_deref().and_then(|f| f.status.as_ref()).unwrap_or(&default_fuse),
        scaled_from,
    };
    let capacity = engine.node_capacity(input)?;
    let runtime_status = compute_runtime_status(engine, observed, input, &after, capacity.total_bytes(), now);
    let workers_usable = status::is_usable(runtime_status.worker_phase);
    // The dataset's status goes first: whether a scale-out lost no worker is read from the
    // runtime's previous status, which must not move on while the dataset's write fails.
    let bound = bind_dataset(engine, observed, input, &runtime_status, workers_usable, now, &mut effects);
    if input.runtime.runtime_status() != Some(&runtime_status) {
        effects.push(Effect::PatchStatus {
            target: target.clone(),
            status: Status::Runtime(Box::new(runtime_status.clone())),
            resource_version: input.runtime.meta().resource_version.clone(),
        });
    }
    if bound {
        effects.extend(volume_effects(engine, observed, input)?);
    }

    let exclusive = Placement::is_exclusive(input.dataset.spec.placement);
    let labels_of = CacheLabels {
        keys: input.keys,
        runtime_type: Some(engine.runtime_type()),
        exclusive,
        exclusive_value: input.keys.exclusive_value(&observed.namespace, &observed.name),
        capacity,
        cluster_common_labels: &observed.cluster_common_labels,
    };
    effects.extend(node_labels::sync_effects(&labels_of, &observed.nodes, &running_worker_nodes(observed)));
    Ok(effects)
}

/// The workloads as they will be once this reconcile's applies land.
struct AfterApply<'a> {
    workers: &'a StatefulSetStatus,
    fuse: &'a DaemonSetStatus,
    scaled_from: Option<i32>,
}

fn compute_runtime_status<E: Engine>(
    engine: &E,
    observed: &Observed<E::Runtime>,
    input: &EngineInput<'_, E::Runtime>,
    after: &AfterApply<'_>,
    capacity_per_worker_bytes: u64,
    now: Millis,
) -> RuntimeStatus {
    let selector = labels::workload_labels(&observed.name, engine.runtime_type(), "worker")
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let status_input = StatusInput {
        previous: input.runtime.runtime_status(),
        desired_workers: input.runtime.replicas(),
        scaled_from: after.scaled_from,
        workers: Some(after.workers),
        fuse: Some(after.fuse),
        worker_pods: &observed.worker_pods,
        cache_samples: &observed.cache_samples,
        capacity_per_worker_bytes,
        selector,
        created: input.runtime.meta().creation_timestamp.as_ref().map(Millis::from_time),
    };
    status::runtime_status(&status_input, now)
}

/// Moves the dataset to `Bound` when the workers can serve, to `Failed` when a bound dataset
/// loses them, and back. Returns whether the dataset is (now) bound.
fn bind_dataset<E: Engine>(
    engine: &E,
    observed: &Observed<E::Runtime>,
    input: &EngineInput<'_, E::Runtime>,
    runtime_status: &RuntimeStatus,
    workers_usable: bool,
    now: Millis,
    effects: &mut Vec<Effect>,
) -> bool {
    let dataset = input.dataset;
    let observed_status = observed_status(dataset);
    let mut status = observed_status.clone();
    let was_bound = matches!(status.phase, DatasetPhase::Bound | DatasetPhase::Failed | DatasetPhase::DataMigrating);
    if workers_usable {
        if status.phase != DatasetPhase::DataMigrating {
            status.phase = DatasetPhase::Bound;
        }
        if status.mounts.is_empty() {
            status.mounts = dataset.spec.mounts.clone();
        }
        status.runtimes = vec![RuntimeRef {
            name: observed.name.clone(),
            namespace: observed.namespace.clone(),
            category: "Accelerate".to_string(),
            type_: engine.runtime_type().to_string(),
            master_replicas: None,
        }];
        status.cache_states = runtime_status.cache_states.clone();
        if let Some(total) = status::ufs_total(&observed.worker_pods, &observed.cache_samples) {
            status.ufs_total = Some(total);
        }
        let message = format!(
            "bound to {} runtime {}: {}",
            engine.runtime_type(),
            observed.name,
            runtime_status.worker_reason.clone().unwrap_or_default()
        );
        conditions::set(
            &mut status.conditions,
            Wanted { type_: conditions::DATASET_READY, status: true, reason: "DatasetReady", message },
            now,
        );
    } else {
        let message = runtime_status.worker_reason.clone().unwrap_or_default();
        if is_scaling_out(input.runtime.runtime_status(), runtime_status) && status.phase == DatasetPhase::Bound {
            // A deliberate scale-out (from zero workers, say) lost no ready worker: the dataset
            // stays Bound (its data is reachable through FUSE) while the new workers start,
            // instead of flipping to Failed; the message says how the workers are doing.
            let message =
                format!("bound to {} runtime {}; scaling out: {message}", engine.runtime_type(), observed.name);
            conditions::set(
                &mut status.conditions,
                Wanted { type_: conditions::DATASET_READY, status: true, reason: "DatasetReady", message },
                now,
            );
        } else if was_bound {
            status.phase = DatasetPhase::Failed;
            conditions::set(
                &mut status.conditions,
                Wanted { type_: conditions::DATASET_READY, status: false, reason: "WorkersNotReady", message },
                now,
            );
        } else {
            if status.phase == DatasetPhase::None {
                status.phase = DatasetPhase::NotBound;
            }
            let message = format!("waiting for the runtime's cache workers: {message}");
            conditions::set(
                &mut status.conditions,
                Wanted { type_: conditions::DATASET_READY, status: false, reason: "RuntimeNotReady", message },
                now,
            );
        }
    }
    let dataset_ref = ObjectRef::namespaced(Kind::Dataset, &observed.namespace, &observed.name);
    let bound = matches!(status.phase, DatasetPhase::Bound | DatasetPhase::Failed | DatasetPhase::DataMigrating);
    push_status(effects, dataset_ref, dataset, observed_status, status);
    bound
}

/// True when fewer workers are ready than wanted only because more are wanted: none of those
/// ready at the last look (`previous`) was lost.
fn is_scaling_out(previous: Option<&RuntimeStatus>, now: &RuntimeStatus) -> bool {
    let previously_ready = previous.map_or(0, |status| status.worker_number_ready);
    now.worker_number_ready >= previously_ready && now.desired_worker_number_scheduled > now.worker_number_ready
}

/// Creates the PV and PVC when missing. They are never updated in place: their specs are
/// immutable once bound.
fn volume_effects<E: Engine>(
    engine: &E,
    observed: &Observed<E::Runtime>,
    input: &EngineInput<'_, E::Runtime>,
) -> Result<Vec<Effect>, ModelError> {
    let mut effects = Vec::new();
    if observed.persistent_volume.is_some() && observed.persistent_volume_claim.is_some() {
        return Ok(effects);
    }
    let volume_input = VolumeInput::from_engine(engine, input);
    if observed.persistent_volume.is_none() {
        effects.push(Effect::Apply(Object::PersistentVolume(Box::new(volume::persistent_volume(&volume_input)?))));
    }
    if observed.persistent_volume_claim.is_none() {
        effects.push(Effect::Apply(Object::PersistentVolumeClaim(Box::new(volume::persistent_volume_claim(
            &volume_input,
        )?))));
    }
    Ok(effects)
}

/// Runtime deletion: the PVC and PV first (waiting while pods use the PVC), then every label
/// this dataset set, then the workloads, the dataset back to `NotBound`, and the finalizer last,
/// so a failure anywhere before it retries the whole teardown.
fn teardown<E: Engine>(
    engine: &E,
    observed: &Observed<E::Runtime>,
    runtime: &E::Runtime,
    target: ObjectRef,
    config: &Config,
    now: Millis,
) -> Decision {
    if !has_finalizer(runtime, engine.finalizer()) {
        return Decision::idle(Requeue::AwaitChange);
    }
    let mut effects = Vec::new();
    let users: Vec<String> =
        observed.claim_users.iter().filter(|pod| pod.may_use_volumes()).map(|pod| pod.key()).collect();
    let claim = observed.persistent_volume_claim.as_deref().filter(|c| created_by_fluid(&c.metadata));
    let claim_ref = ObjectRef::namespaced(Kind::PersistentVolumeClaim, &observed.namespace, &observed.name);
    if let Some(claim) = claim {
        match claim.metadata.deletion_timestamp.as_ref() {
            None => effects.push(Effect::Delete(claim_ref.clone())),
            Some(since) => {
                let stuck_ms = now.since(Millis::from_time(since));
                if users.is_empty()
                    && stuck_ms >= config.pvc_protection_grace_ms
                    && has_finalizer(claim, labels::PVC_PROTECTION_FINALIZER)
                {
                    // Kubernetes' pvc-protection controller lags; no pod uses the claim, so release it (as Fluid does).
                    effects.push(Effect::RemoveFinalizer {
                        target: claim_ref.clone(),
                        finalizer: labels::PVC_PROTECTION_FINALIZER.to_string(),
                        resource_version: claim.metadata.resource_version.clone(),
                    });
                }
            }
        }
    }
    if !users.is_empty() {
        // Tearing down the cache under running pods would break their mounts: wait, and say so
        // once, when the PVC deletion is first requested.
        if claim.is_some_and(|c| c.metadata.deletion_timestamp.is_none()) {
            let message = format!(
                "runtime deletion waits: {} still use PVC {}/{}; the cache stays until they stop",
                users.join(", "),
                observed.namespace,
                observed.name
            );
            effects.push(Effect::warning(target, "RuntimeDeletionWaiting", message));
        }
        return Decision::new(effects, Requeue::AfterMs(config.retry_ms));
    }
    let released = effects.iter().any(|effect| matches!(effect, Effect::RemoveFinalizer { .. }));
    if claim.is_some_and(|c| has_finalizer(c, labels::PVC_PROTECTION_FINALIZER)) && !released {
        // A protected claim goes first and the cache only once it is gone: Kubernetes'
        // pvc-protection keeps the claim while any pod uses it, checked live, whereas our view
        // of its users can lag a pod that just started with it, and tearing down now would
        // strand that pod. The claim's removal requeues us.
        return Decision::new(effects, Requeue::AfterMs(config.retry_ms));
    }
    if let Some(volume) = observed
        .persistent_volume
        .as_ref()
        .filter(|v| created_by_fluid(&v.metadata) && v.metadata.deletion_timestamp.is_none())
    {
        let name = volume.metadata.name.clone().unwrap_or_default();
        effects.push(Effect::Delete(ObjectRef::cluster(Kind::PersistentVolume, &name)));
    }

    let uid =
        observed.dataset.as_deref().and_then(|d| d.metadata.uid.clone()).or_else(|| dataset_uid_from_owner(runtime));
    if let Ok(keys) = DatasetKeys::new(&observed.namespace, &observed.name, uid.as_deref()) {
        let labels_of = CacheLabels {
            keys: &keys,
            runtime_type: Some(engine.runtime_type()),
            exclusive: false,
            exclusive_value: keys.exclusive_value(&observed.namespace, &observed.name),
            capacity: Default::default(),
            cluster_common_labels: &observed.cluster_common_labels,
        };
        effects.extend(node_labels::teardown_effects(&labels_of, &observed.nodes));
    }
    if let Some(workers) = observed.workers.as_deref().filter(|w| w.metadata.deletion_timestamp.is_none()) {
        effects.push(Effect::Delete(ObjectRef::namespaced(
            Kind::StatefulSet,
            &observed.namespace,
            &workers.metadata.name.clone().unwrap_or_default(),
        )));
    }
    if let Some(fuse) = observed.fuse.as_deref().filter(|f| f.metadata.deletion_timestamp.is_none()) {
        effects.push(Effect::Delete(ObjectRef::namespaced(
            Kind::DaemonSet,
            &observed.namespace,
            &fuse.metadata.name.clone().unwrap_or_default(),
        )));
    }
    if let Some(dataset) = observed.dataset.as_deref().filter(|d| d.metadata.deletion_timestamp.is_none()) {
        let observed_status = observed_status(dataset);
        let mut status = observed_status.clone();
        reset_to_not_bound(&mut status);
        status.conditions.clear();
        let message = format!(
            "runtime {}/{} was deleted; create a runtime to bind the dataset again",
            observed.namespace, observed.name
        );
        mark_no_runtime(&mut status, message, now);
        push_status(
            &mut effects,
            ObjectRef::namespaced(Kind::Dataset, &observed.namespace, &observed.name),
            dataset,
            observed_status,
            status,
        );
    }
    if !observed.unconfirmed_creates.is_empty() {
        // This controller created something its cache does not show yet (say a PV applied from a
        // view that did not yet show the deletion): deleting only what the cache shows would
        // leak it, so the runtime stays until the cache catches up and the next pass deletes it.
        return Decision::new(effects, Requeue::AfterMs(config.retry_ms));
    }
    let resource_version = runtime.meta().resource_version.clone();
    effects.push(Effect::RemoveFinalizer { target, finalizer: engine.finalizer().to_string(), resource_version });
    Decision::new(effects, Requeue::AwaitChange)
}

fn created_by_fluid(meta: &ObjectMeta) -> bool {
    meta.annotations.as_ref().and_then(|a| a.get(labels::CREATED_BY)).map(String::as_str)
        == Some(labels::CREATED_BY_FLUID)
}

pub(crate) fn dataset_uid_from_owner(runtime: &impl Resource) -> Option<String> {
    runtime.meta().owner_references.as_ref()?.iter().find(|r| r.kind == "Dataset").map(|r| r.uid.clone())
}
