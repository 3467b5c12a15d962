//! Manifests written for Fluid (the seed article's, Fluid's docs and e2e test) load unchanged, round-trip, and build.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use model::api::{Dataset, JuiceFSRuntime, crds};
use model::engine::juicefs::{JuiceFsEngine, warnings};
use model::engine::{Engine, EngineConfig, EngineInput};
use model::labels::{DatasetKeys, WorkloadNames};
use serde::Deserialize;
use serde_json::Value;

/// Every fixture, by file name. Each is one or more YAML documents.
const FIXTURES: &[(&str, &str)] = &[
    ("seed-dataset.yaml", include_str!("fixtures/seed-dataset.yaml")),
    ("seed-runtime.yaml", include_str!("fixtures/seed-runtime.yaml")),
    ("fluid-gha-e2e-juicefs.yaml", include_str!("fixtures/fluid-gha-e2e-juicefs.yaml")),
    ("fluid-docs-juicefs-community.yaml", include_str!("fixtures/fluid-docs-juicefs-community.yaml")),
    ("fluid-docs-juicefs-cloud.yaml", include_str!("fixtures/fluid-docs-juicefs-cloud.yaml")),
    ("fluid-docs-juicefs-cache-dir.yaml", include_str!("fixtures/fluid-docs-juicefs-cache-dir.yaml")),
    ("fluid-docs-juicefs-worker.yaml", include_str!("fixtures/fluid-docs-juicefs-worker.yaml")),
];

/// One document of a fixture.
enum Doc {
    Dataset(Box<Dataset>, Value),
    Runtime(Box<JuiceFSRuntime>, Value),
    Other,
}

fn documents(file: &str, text: &str) -> Vec<Doc> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| {
            let raw = Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
            match raw["kind"].as_str() {
                Some("Dataset") => {
                    let dataset: Dataset =
                        serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{file}: Dataset: {e}"));
                    Doc::Dataset(Box::new(dataset), raw)
                }
                Some("JuiceFSRuntime") => {
                    let runtime: JuiceFSRuntime =
                        serde_json::from_value(raw.clone()).unwrap_or_else(|e| panic!("{file}: JuiceFSRuntime: {e}"));
                    Doc::Runtime(Box::new(runtime), raw)
                }
                _ => Doc::Other,
            }
        })
        .collect()
}

/// Fails if the typed value lost anything the manifest said: every key of `original` must be in
/// `typed` with the same value, except that a YAML number may come back as the same quantity string.
fn assert_nothing_dropped(file: &str, path: &str, original: &Value, typed: &Value) {
    match (original, typed) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, value) in want {
                let inner = format!("{path}.{key}");
                let got_value =
                    got.get(key).unwrap_or_else(|| panic!("{file}: {inner} was dropped by deserialisation"));
                assert_nothing_dropped(file, &inner, value, got_value);
            }
        }
        (Value::Array(want), Value::Array(got)) => {
            assert_eq!(want.len(), got.len(), "{file}: {path} changed length");
            for (index, (w, g)) in want.iter().zip(got).enumerate() {
                assert_nothing_dropped(file, &format!("{path}[{index}]"), w, g);
            }
        }
        (Value::Number(number), Value::String(text)) => assert_eq!(&number.to_string(), text, "{file}: {path}"),
        _ => assert_eq!(original, typed, "{file}: {path} changed"),
    }
}

#[test]
fn every_fixture_deserialises_unchanged_and_round_trips() {
    let mut counts = (0, 0);
    for (file, text) in FIXTURES {
        for doc in documents(file, text) {
            match doc {
                Doc::Dataset(dataset, raw) => {
                    counts.0 += 1;
                    let json = serde_json::to_value(&*dataset).unwrap();
                    assert_nothing_dropped(file, "", &raw, &json);
                    let again: Dataset = serde_json::from_value(json.clone()).unwrap();
                    assert_eq!(again.spec, dataset.spec, "{file}: Dataset does not round-trip");
                    assert_eq!(serde_json::to_value(&again).unwrap(), json, "{file}: Dataset does not round-trip");
                    let yaml = serde_yaml_ng::to_string(&*dataset).unwrap();
                    assert_eq!(
                        serde_yaml_ng::from_str::<Dataset>(&yaml).unwrap().spec,
                        dataset.spec,
                        "{file}: YAML round trip"
                    );
                }
                Doc::Runtime(runtime, raw) => {
                    counts.1 += 1;
                    let json = serde_json::to_value(&*runtime).unwrap();
                    assert_nothing_dropped(file, "", &raw, &json);
                    let again: JuiceFSRuntime = serde_json::from_value(json.clone()).unwrap();
                    assert_eq!(again.spec, runtime.spec, "{file}: JuiceFSRuntime does not round-trip");
                    assert_eq!(
                        serde_json::to_value(&again).unwrap(),
                        json,
                        "{file}: JuiceFSRuntime does not round-trip"
                    );
                    let yaml = serde_yaml_ng::to_string(&*runtime).unwrap();
                    let from_yaml: JuiceFSRuntime = serde_yaml_ng::from_str(&yaml).unwrap();
                    assert_eq!(from_yaml.spec, runtime.spec, "{file}: YAML round trip");
                }
                Doc::Other => {}
            }
        }
    }
    assert_eq!(counts, (5, 9), "fixture documents (datasets, runtimes)");
}

#[test]
fn seed_manifests_read_as_the_article_says() {
    let dataset: Dataset = serde_yaml_ng::from_str(FIXTURES[0].1).unwrap();
    assert_eq!(dataset.metadata.name.as_deref(), Some("jfsdemo"));
    let mount = &dataset.spec.mounts[0];
    assert_eq!((mount.name.as_str(), mount.mount_point.as_str()), ("test", "juicefs:///demo"));
    assert_eq!(mount.options["bucket"], "<bucket>");
    let runtime: JuiceFSRuntime = serde_yaml_ng::from_str(FIXTURES[1].1).unwrap();
    assert_eq!(runtime.spec.replicas, Some(1));
    let level = &runtime.spec.tieredstore.as_ref().unwrap().levels[0];
    assert_eq!(level.medium_type.as_str(), "MEM");
    assert_eq!(level.path.as_deref(), Some("/dev/shm"));
    // A bare YAML number: 40960 bytes, whatever the article says about MiB.
    assert_eq!(level.quota.as_ref().unwrap().to_bytes("quota").unwrap(), 40960);
}

/// Every fixture that pairs a Dataset with a runtime builds workers and FUSE once it has a
/// namespace and UIDs (which the apiserver adds), and the seed's odd quota is only a warning.
#[test]
fn fixture_pairs_validate_and_build() {
    let pairs = [
        (FIXTURES[0].1.to_string() + "---\n" + FIXTURES[1].1, true),
        (FIXTURES[2].1.to_string(), false),
        (FIXTURES[3].1.to_string(), true),
        (FIXTURES[4].1.to_string(), false),
    ];
    for (text, small_quota) in pairs {
        let docs = documents("pair", &text);
        let mut dataset =
            docs.iter().find_map(|d| if let Doc::Dataset(d, _) = d { Some((**d).clone()) } else { None }).unwrap();
        let mut runtime =
            docs.iter().find_map(|d| if let Doc::Runtime(r, _) = d { Some((**r).clone()) } else { None }).unwrap();
        for meta in [&mut dataset.metadata, &mut runtime.metadata] {
            meta.namespace = Some("default".to_string());
            meta.uid = Some("5d0b7a3c-1f2e-4c5d-9e8f-0a1b2c3d4e5f".to_string());
        }
        let keys = DatasetKeys::new("default", "jfsdemo", dataset.metadata.uid.as_deref()).unwrap();
        let names = WorkloadNames::new("default", "jfsdemo", "juicefs");
        let config = EngineConfig::default();
        let input = EngineInput { dataset: &dataset, runtime: &runtime, keys: &keys, names: &names, config: &config };
        assert_eq!(JuiceFsEngine.validate(&input), Ok(()), "{text}");
        JuiceFsEngine.workers(&input).unwrap();
        JuiceFsEngine.fuse(&input).unwrap();
        let warned = warnings(&input).iter().any(|w| w.contains("40960 is 40 KiB"));
        assert_eq!(warned, small_quota, "{text}");
    }
}

fn schema_of(kind: &str) -> JSONSchemaProps {
    let crd = crds().into_iter().find(|crd| crd.spec.names.kind == kind).unwrap();
    crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.clone().unwrap()
}

fn property<'a>(schema: &'a JSONSchemaProps, path: &[&str]) -> &'a JSONSchemaProps {
    let mut current = schema;
    for step in path {
        current = if *step == "[]" {
            match current.items.as_ref().unwrap() {
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(
                    s,
                ) => s,
                other => panic!("{step}: {other:?}"),
            }
        } else {
            current
                .properties
                .as_ref()
                .and_then(|p| p.get(*step))
                .unwrap_or_else(|| panic!("no property {step} in {path:?}"))
        };
    }
    current
}

#[test]
fn crd_schema_rejects_fluids_bad_values() {
    let runtime = schema_of("JuiceFSRuntime");
    let medium = property(&runtime, &["spec", "tieredstore", "levels", "[]", "mediumtype"]);
    let allowed: Vec<String> = medium
        .enum_
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| serde_json::to_value(v).unwrap().as_str().unwrap().to_string())
        .collect();
    assert_eq!(allowed, ["MEM", "SSD", "HDD"]);
    assert_eq!(property(&runtime, &["spec", "replicas"]).minimum, Some(0.0));

    let dataset = schema_of("Dataset");
    let mount_point = property(&dataset, &["spec", "mounts", "[]", "mountPoint"]);
    assert_eq!(mount_point.min_length, Some(5));
    let required = property(&dataset, &["spec", "mounts", "[]"]).required.clone().unwrap_or_default();
    assert!(required.contains(&"mountPoint".to_string()), "{required:?}");
}
