//! Simulated JuiceFS FUSE daemons: which pods are FUSE clients, where they mount, and what
//! their mount looks like. The kubelet starts them like any pod; once running they mount the
//! dataset at its `fluid_path` after `fuse_mount_ms`, and a crash leaves that mount broken.

use model::effect::Kind;
use model::engine::juicefs::{JuiceFsEngine, RUNTIME_TYPE};
use model::engine::{Engine, EngineInput};
use model::labels::{DatasetKeys, PodRole, WorkloadNames, role_of};

use crate::apiserver::Pod;
use crate::sim::Sim;

/// True for pods of a JuiceFS runtime's FUSE DaemonSet (the model's `labels::role_of`).
pub fn is_fuse_pod(pod: &Pod) -> bool {
    matches!(role_of(pod.metadata.labels.as_ref()), PodRole::Fuse { runtime_type: RUNTIME_TYPE, .. })
}

/// True for pods of a JuiceFS runtime's worker StatefulSet (the model's `labels::role_of`).
pub fn is_worker_pod(pod: &Pod) -> bool {
    matches!(role_of(pod.metadata.labels.as_ref()), PodRole::Worker { runtime_type: RUNTIME_TYPE, .. })
}

/// The runtime a FUSE or worker pod belongs to, from its container environment
/// (`FLUID_RUNTIME_NS`, `FLUID_RUNTIME_NAME`).
pub fn runtime_of(pod: &Pod) -> Option<(String, String)> {
    let env = pod.spec.as_ref()?.containers.first()?.env.as_ref()?;
    let get = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    Some((get("FLUID_RUNTIME_NS")?, get("FLUID_RUNTIME_NAME")?))
}

impl Sim {
    /// The runtime `(namespace, name)` a worker or FUSE pod belongs to: through its workload's
    /// ownerReference to the runtime, else from its container environment.
    pub fn runtime_of_pod(&self, pod: &Pod) -> Option<(String, String)> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        for owner in pod.metadata.owner_references.iter().flatten() {
            let workload = self.api.store.by_uid(&owner.uid).and_then(|k| self.api.store.get(k));
            let runtime = workload
                .and_then(|w| w.meta().owner_references.as_ref())
                .and_then(|refs| refs.iter().find(|r| r.kind == "JuiceFSRuntime").map(|r| r.name.clone()));
            if let Some(name) = runtime {
                return Some((namespace, name));
            }
        }
        runtime_of(pod)
    }

    /// Where a FUSE pod mounts: the engine's `fluid_path` for its dataset/runtime (what its
    /// mount command says), or the PV's `fluid_path` once the runtime is gone.
    pub fn fuse_mount_path(&self, pod: &Pod) -> Option<(String, String)> {
        let (namespace, name) = self.runtime_of_pod(pod)?;
        let source = format!("JuiceFS:{name}");
        let store = &self.api.store;
        let dataset = store.get_named(Kind::Dataset, &namespace, &name).and_then(|o| o.as_dataset());
        let runtime = store.get_named(Kind::JuiceFSRuntime, &namespace, &name).and_then(|o| o.as_runtime());
        if let (Some(dataset), Some(runtime)) = (dataset, runtime)
            && let Ok(keys) = DatasetKeys::new(&namespace, &name, dataset.metadata.uid.as_deref())
        {
            let names = WorkloadNames::new(&namespace, &name, RUNTIME_TYPE);
            let input = EngineInput {
                dataset: dataset.as_ref(),
                runtime: runtime.as_ref(),
                keys: &keys,
                names: &names,
                config: &self.control.config.engine,
            };
            return Some((JuiceFsEngine.fluid_path(&input), source));
        }
        let pv = store.get_named(Kind::PersistentVolume, "", &format!("{namespace}-{name}")).and_then(|o| o.as_pv())?;
        let path =
            pv.spec.as_ref()?.csi.as_ref()?.volume_attributes.as_ref()?.get(model::volume::ATTR_FLUID_PATH)?.clone();
        Some((path, source))
    }
}
