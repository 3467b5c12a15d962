//! The model's bad-input corpus: every case gives a clear error naming its field, and a reconcile
//! of it surfaces that error as a dataset condition and creates nothing, without panicking.

use model::api::decode::from_value;
use model::api::{Dataset, JuiceFSRuntime};
use model::effect::{Effect, Object, Status};
use model::engine::juicefs::JuiceFsEngine;
use model::observed::Observed;
use model::reconcile::{Config, reconcile_runtime};
use model::time::Millis;
use serde_json::{Value, json};

fn base_dataset() -> Value {
    json!({
        "apiVersion": "data.fluid.io/v1alpha1", "kind": "Dataset",
        "metadata": {"name": "jfsdemo", "namespace": "default", "uid": "0b8f4f1e-1c5a-4f0e-9d55-6c1f0f3b2a10"},
        "spec": {"mounts": [{
            "name": "test", "mountPoint": "juicefs:///demo", "options": {"bucket": "/var/bucket", "storage": "file"},
            "encryptOptions": [{"name": "metaurl", "valueFrom": {"secretKeyRef": {"name": "jfs-secret", "key": "metaurl"}}}]
        }]}
    })
}

fn base_runtime() -> Value {
    json!({
        "apiVersion": "data.fluid.io/v1alpha1", "kind": "JuiceFSRuntime",
        "metadata": {"name": "jfsdemo", "namespace": "default", "uid": "7c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5"},
        "spec": {"replicas": 1, "tieredstore": {"levels": [{"mediumtype": "MEM", "path": "/dev/shm", "quota": "2Gi"}]}}
    })
}

/// Which manifest a case edits.
#[derive(Clone, Copy, Debug)]
enum Target {
    Dataset,
    Runtime,
}

/// One bad input: a JSON pointer in a manifest, the bad value, and the field the error must name.
struct Case {
    what: &'static str,
    target: Target,
    pointer: &'static str,
    value: Value,
    field: &'static str,
}

fn case(what: &'static str, target: Target, pointer: &'static str, value: Value, field: &'static str) -> Case {
    Case { what, target, pointer, value, field }
}

/// Values of the wrong type or outside an enum: the manifest does not decode.
fn decode_cases() -> Vec<Case> {
    use Target::*;
    vec![
        case("replicas as a word", Runtime, "/spec/replicas", json!("three"), "spec.replicas"),
        case("replicas as a fraction", Runtime, "/spec/replicas", json!(1.5), "spec.replicas"),
        case(
            "unknown medium",
            Runtime,
            "/spec/tieredstore/levels/0/mediumtype",
            json!("NVME"),
            "spec.tieredstore.levels[0].mediumtype",
        ),
        case(
            "medium in lower case",
            Runtime,
            "/spec/tieredstore/levels/0/mediumtype",
            json!("mem"),
            "spec.tieredstore.levels[0].mediumtype",
        ),
        case(
            "quota as a boolean",
            Runtime,
            "/spec/tieredstore/levels/0/quota",
            json!(true),
            "spec.tieredstore.levels[0].quota",
        ),
        case(
            "levels as a map",
            Runtime,
            "/spec/tieredstore/levels",
            json!({"mediumtype": "MEM"}),
            "spec.tieredstore.levels",
        ),
        case(
            "unknown clean policy",
            Runtime,
            "/spec/fuse",
            json!({"cleanPolicy": "Sometimes"}),
            "spec.fuse.cleanPolicy",
        ),
        case("fuse options as a list", Runtime, "/spec/fuse", json!({"options": ["a", "b"]}), "spec.fuse.options"),
        case(
            "unknown network mode",
            Runtime,
            "/spec/worker",
            json!({"networkMode": "Mesh"}),
            "spec.worker.networkMode",
        ),
        case("mounts as a string", Dataset, "/spec/mounts", json!("juicefs:///demo"), "spec.mounts"),
        case("mount without mountPoint", Dataset, "/spec/mounts/0", json!({"name": "test"}), "spec.mounts[0]"),
        case("options as a list", Dataset, "/spec/mounts/0/options", json!(["bucket"]), "spec.mounts[0].options"),
        case("unknown placement", Dataset, "/spec/placement", json!("Everywhere"), "spec.placement"),
        case("access mode as a number", Dataset, "/spec/accessModes", json!([5]), "spec.accessModes[0]"),
        case("tolerations as a word", Dataset, "/spec/tolerations", json!("all"), "spec.tolerations"),
        case("readOnly as a word", Dataset, "/spec/mounts/0/readOnly", json!("yes"), "spec.mounts[0].readOnly"),
    ]
}

/// Values that decode but make no sense: the reconcile refuses them with a condition.
fn validation_cases() -> Vec<Case> {
    use Target::*;
    vec![
        case("negative replicas", Runtime, "/spec/replicas", json!(-1), "spec.replicas"),
        case(
            "quota in no unit at all",
            Runtime,
            "/spec/tieredstore/levels/0/quota",
            json!("lots"),
            "spec.tieredstore.levels[0].quota",
        ),
        case("zero quota", Runtime, "/spec/tieredstore/levels/0/quota", json!("0"), "spec.tieredstore.levels[0].quota"),
        case(
            "negative quota",
            Runtime,
            "/spec/tieredstore/levels/0/quota",
            json!("-1Gi"),
            "spec.tieredstore.levels[0].quota",
        ),
        case(
            "absurd quota",
            Runtime,
            "/spec/tieredstore/levels/0/quota",
            json!("99999999999Ei"),
            "spec.tieredstore.levels[0].quota",
        ),
        case(
            "milli-bytes quota",
            Runtime,
            "/spec/tieredstore/levels/0/quota",
            json!("500m"),
            "spec.tieredstore.levels[0].quota",
        ),
        case(
            "quotaList longer than the paths",
            Runtime,
            "/spec/tieredstore/levels/0",
            json!({"mediumtype": "SSD", "path": "/a,/b", "quotaList": "1Gi,2Gi,3Gi"}),
            "spec.tieredstore.levels[0].quotaList",
        ),
        case(
            "high watermark below low",
            Runtime,
            "/spec/tieredstore/levels/0",
            json!({"mediumtype": "SSD", "path": "/a", "quota": "1Gi", "high": "0.5", "low": "0.9"}),
            "spec.tieredstore.levels[0]",
        ),
        case(
            "relative cache path",
            Runtime,
            "/spec/tieredstore/levels/0/path",
            json!("cache"),
            "spec.tieredstore.levels[0].path",
        ),
        case(
            "forbidden fuse option",
            Runtime,
            "/spec/fuse",
            json!({"options": {"background": ""}}),
            "spec.fuse.options",
        ),
        case("empty fuse option name", Runtime, "/spec/fuse", json!({"options": {"": "x"}}), "spec.fuse.options"),
        case(
            "bad metrics address",
            Runtime,
            "/spec/fuse",
            json!({"options": {"metrics": "nowhere"}}),
            "spec.fuse.options",
        ),
        case("no mounts", Dataset, "/spec/mounts", json!([]), "dataset.spec.mounts"),
        case("empty mount point", Dataset, "/spec/mounts/0/mountPoint", json!(""), "dataset.spec.mounts[0].mountPoint"),
        case(
            "mount point of another engine",
            Dataset,
            "/spec/mounts/0/mountPoint",
            json!("s3://bucket/path"),
            "dataset.spec.mounts[0].mountPoint",
        ),
        case(
            "duplicate mount names",
            Dataset,
            "/spec/mounts/1",
            json!({"name": "test", "mountPoint": "juicefs:///other"}),
            "dataset.spec.mounts",
        ),
        case(
            "empty option name",
            Dataset,
            "/spec/mounts/0/options",
            json!({"": "x"}),
            "dataset.spec.mounts[0].options",
        ),
        case(
            "secret without a name",
            Dataset,
            "/spec/mounts/0/encryptOptions/0/valueFrom/secretKeyRef",
            json!({"key": "metaurl"}),
            "secretKeyRef.name",
        ),
        case("runtime name with a leading digit", Runtime, "/metadata/name", json!("1demo"), "metadata.name"),
        case(
            "bad PVC capacity annotation",
            Dataset,
            "/metadata/annotations",
            json!({"pvc.fluid.io/resources.requests.storage": "lots"}),
            "pvc.fluid.io/resources.requests.storage",
        ),
    ]
}

fn apply_case(case: &Case) -> (Value, Value) {
    let (mut dataset, mut runtime) = (base_dataset(), base_runtime());
    let document = match case.target {
        Target::Dataset => &mut dataset,
        Target::Runtime => &mut runtime,
    };
    set_pointer(document, case.pointer, case.value.clone());
    if case.pointer == "/metadata/name" {
        let name = case.value.clone();
        dataset["metadata"]["name"] = name.clone();
        runtime["metadata"]["name"] = name;
    }
    (dataset, runtime)
}

/// Sets `pointer` in `document`, creating the last segment (an object key or an array end).
fn set_pointer(document: &mut Value, pointer: &str, value: Value) {
    let (parent, last) = pointer.rsplit_once('/').expect("pointer");
    let parent = document.pointer_mut(parent).unwrap_or_else(|| panic!("no parent for {pointer}"));
    match parent {
        Value::Object(map) => {
            map.insert(last.to_string(), value);
        }
        Value::Array(items) => {
            let index: usize = last.parse().expect("array index");
            if index < items.len() {
                items[index] = value;
            } else {
                items.push(value);
            }
        }
        _ => panic!("{pointer}: parent is not a container"),
    }
}

#[test]
fn every_decode_case_names_its_field() {
    let cases = decode_cases();
    for case in &cases {
        let (dataset, runtime) = apply_case(case);
        let error = match case.target {
            Target::Dataset => from_value::<Dataset>(dataset).err(),
            Target::Runtime => from_value::<JuiceFSRuntime>(runtime).err(),
        };
        let error = error.unwrap_or_else(|| panic!("{}: decoded, but must not", case.what));
        let field = error.field().unwrap_or_default();
        assert!(field.starts_with(case.field), "{}: names {field:?}, want {:?} ({error})", case.what, case.field);
    }
    eprintln!("bad-input corpus (model, decode): {} cases", cases.len());
}

#[test]
fn every_validation_case_becomes_a_condition_naming_its_field_and_creates_nothing() {
    let cases = validation_cases();
    for case in &cases {
        let (dataset, runtime) = apply_case(case);
        let dataset: Dataset = from_value(dataset).unwrap_or_else(|e| panic!("{}: base must decode: {e}", case.what));
        let runtime: JuiceFSRuntime =
            from_value(runtime).unwrap_or_else(|e| panic!("{}: base must decode: {e}", case.what));
        let name = dataset.metadata.name.clone().unwrap_or_default();
        let mut observed = Observed::empty("default", &name);
        observed.dataset = Some(std::sync::Arc::new(dataset));
        observed.runtime = Some(std::sync::Arc::new(runtime));
        let decision = reconcile_runtime(&JuiceFsEngine, &observed, &Config::default(), Millis(1_700_000_000_000));
        let created: Vec<_> = decision
            .effects
            .iter()
            .filter(|e| {
                matches!(e, Effect::Apply(Object::StatefulSet(_) | Object::DaemonSet(_) | Object::PersistentVolume(_)))
            })
            .collect();
        assert!(created.is_empty(), "{}: a bad spec must create no workloads", case.what);
        let message = decision
            .effects
            .iter()
            .find_map(|effect| match effect {
                Effect::PatchStatus { status: Status::Dataset(status), .. } => status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready" && c.status == "False")
                    .and_then(|c| c.message.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{}: no Ready=False condition in {:?}", case.what, decision.effects));
        assert!(message.contains(case.field), "{}: condition {message:?} does not name {:?}", case.what, case.field);
    }
    eprintln!("bad-input corpus (model, validation): {} cases", cases.len());
}

#[test]
fn the_corpus_is_large_enough_to_mean_something() {
    assert!(decode_cases().len() >= 15 && validation_cases().len() >= 20);
}
