//! Seed fixtures: the Dataset and JuiceFSRuntime of `scenarios/seed-jfsdemo.yaml`, nodes and pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, PersistentVolumeClaimVolumeSource, Pod, PodCondition, PodSpec, PodStatus, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::api::{Dataset, JuiceFSRuntime};
use serde::de::DeserializeOwned;

/// Namespace of the seed pair.
pub const NS: &str = "default";
/// Name of the seed pair.
pub const NAME: &str = "jfsdemo";

/// The path of the seed scenario, which the simulator also runs.
pub fn seed_scenario_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/seed-jfsdemo.yaml")
}

/// The first object of `kind` that the seed scenario applies.
pub fn seed_object<K: DeserializeOwned>(kind: &str) -> K {
    let text = std::fs::read_to_string(seed_scenario_path()).expect("scenarios/seed-jfsdemo.yaml");
    let scenario: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("scenario YAML");
    let steps = scenario["steps"].as_sequence().expect("steps");
    for step in steps {
        let Some(apply) = step.get("apply").and_then(|a| a.as_str()) else { continue };
        let object: serde_yaml_ng::Value = serde_yaml_ng::from_str(apply).expect("applied YAML");
        if object["kind"].as_str() == Some(kind) {
            return serde_yaml_ng::from_value(object).expect("seed object");
        }
    }
    panic!("the seed scenario applies no {kind}");
}

/// The seed's Dataset, as the user wrote it.
pub fn seed_dataset() -> Dataset {
    seed_object("Dataset")
}

/// The seed's JuiceFSRuntime, as the user wrote it.
pub fn seed_runtime() -> JuiceFSRuntime {
    seed_object("JuiceFSRuntime")
}

/// The seed's app pod.
pub fn seed_app_pod() -> Pod {
    seed_object("Pod")
}

/// A node with `labels`.
pub fn mk_node(name: &str, labels: &[(&str, &str)]) -> Node {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Node {
        metadata: ObjectMeta { name: Some(name.to_string()), labels: Some(labels), ..ObjectMeta::default() },
        ..Node::default()
    }
}

/// A pod on `node_name` in `phase`, using PVC `claim` when given; ready when running.
pub fn mk_pod(name: &str, node_name: &str, claim: Option<&str>, phase: &str) -> Pod {
    let volumes = claim.map(|claim| {
        vec![Volume {
            name: "data".to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_string(),
                read_only: None,
            }),
            ..Volume::default()
        }]
    });
    let ready = PodCondition {
        type_: "Ready".to_string(),
        status: if phase == "Running" { "True" } else { "False" }.to_string(),
        ..PodCondition::default()
    };
    Pod {
        metadata: ObjectMeta { name: Some(name.to_string()), namespace: Some(NS.to_string()), ..ObjectMeta::default() },
        spec: Some(PodSpec { node_name: Some(node_name.to_string()), volumes, ..PodSpec::default() }),
        status: Some(PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(vec![ready]),
            ..PodStatus::default()
        }),
    }
}

/// Sets namespace (default), uid and resourceVersion, as the API server would have.
pub fn stored<K: kube::Resource>(mut object: K, uid: &str, resource_version: &str) -> K {
    let meta = object.meta_mut();
    meta.namespace.get_or_insert_with(|| NS.to_string());
    meta.uid = Some(uid.to_string());
    meta.resource_version = Some(resource_version.to_string());
    object
}
