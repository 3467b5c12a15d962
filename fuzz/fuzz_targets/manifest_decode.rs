//! Manifest decoding on arbitrary JSON or YAML: whatever decodes as a Dataset or a JuiceFSRuntime
//! is reconciled (paired with a well-formed partner), twice, and neither decoding nor reconciling
//! may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use model::api::decode::from_value;
use model::api::{Dataset, JuiceFSRuntime};
use model::engine::juicefs::JuiceFsEngine;
use model::observed::Observed;
use model::reconcile::{Config, reconcile_dataset, reconcile_runtime};
use model::time::Millis;
use serde_json::{Value, json};

fn partner_dataset(name: &str, namespace: &str) -> Dataset {
    from_value(json!({
        "apiVersion": "data.fluid.io/v1alpha1", "kind": "Dataset",
        "metadata": {"name": name, "namespace": namespace, "uid": "0b8f4f1e-1c5a-4f0e-9d55-6c1f0f3b2a10"},
        "spec": {"mounts": [{"name": "test", "mountPoint": "juicefs:///demo", "options": {"bucket": "/var/bucket"}}]}
    }))
    .expect("the partner dataset decodes")
}

fn partner_runtime(name: &str, namespace: &str) -> JuiceFSRuntime {
    from_value(json!({
        "apiVersion": "data.fluid.io/v1alpha1", "kind": "JuiceFSRuntime",
        "metadata": {"name": name, "namespace": namespace, "uid": "7c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5"},
        "spec": {"replicas": 1, "tieredstore": {"levels": [{"mediumtype": "MEM", "path": "/dev/shm", "quota": "2Gi"}]}}
    }))
    .expect("the partner runtime decodes")
}

fn parse(data: &[u8]) -> Option<Value> {
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        return Some(value);
    }
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_slice(data).ok()?;
    serde_json::to_value(yaml).ok()
}

fn reconcile(dataset: Dataset, runtime: JuiceFSRuntime) {
    let namespace = dataset.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    let name = dataset.metadata.name.clone().unwrap_or_default();
    let mut observed = Observed::empty(&namespace, &name);
    observed.dataset = Some(dataset);
    observed.runtime = Some(runtime);
    let config = Config::default();
    for now in [Millis(1_700_000_000_000), Millis(1_700_000_060_000)] {
        let decision = reconcile_runtime(&JuiceFsEngine, &observed, &config, now);
        let _ = decision.writes().count();
        let decision = reconcile_dataset(&observed, &config, now);
        let _ = decision.writes().count();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(value) = parse(data) else { return };
    if let Ok(dataset) = from_value::<Dataset>(value.clone()) {
        let name = dataset.metadata.name.clone().unwrap_or_default();
        let namespace = dataset.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
        reconcile(dataset, partner_runtime(&name, &namespace));
    }
    if let Ok(runtime) = from_value::<JuiceFSRuntime>(value) {
        let name = runtime.metadata.name.clone().unwrap_or_default();
        let namespace = runtime.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
        reconcile(partner_dataset(&name, &namespace), runtime);
    }
});
