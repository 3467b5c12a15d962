//! Watch routing to the built-in controllers: which changes queue which task, and which do not.

use std::collections::BTreeMap;
use std::sync::Arc;

use model::effect::{Kind, ObjectRef};

use super::KubeTask;
use crate::apiserver::Obj;
use crate::scenario::parse::{Capacity, PodStep};
use crate::scenario::steps::make_node;
use crate::sim::{Sim, SimConfig};

fn cluster(nodes: &[&str]) -> Sim {
    let mut sim = Sim::new(SimConfig { trace: false, ..SimConfig::default() });
    for name in nodes {
        sim.add_node_sim(name);
        let now = sim.clock.wall();
        sim.api.create(make_node(name, &BTreeMap::new(), &Capacity::default(), Vec::new()), now).expect("node");
    }
    sim.settle();
    sim
}

/// A DaemonSet with this nodeSelector.
fn daemonset(selector: serde_json::Value, image: &str) -> Obj {
    let manifest = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "fuse", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "fuse"}},
            "template": {
                "metadata": {"labels": {"app": "fuse"}},
                "spec": {"nodeSelector": selector, "containers": [{"name": "fuse", "image": image}]}
            }
        }
    });
    Obj::from_manifest(manifest).expect("daemonset")
}

fn ds_key() -> ObjectRef {
    ObjectRef::namespaced(Kind::DaemonSet, "default", "fuse")
}

/// Runs every queued task (and what they queue) until none is left; fails rather than spins.
fn drain(sim: &mut Sim) {
    for _ in 0..10_000 {
        let Some(at_ms) = sim.clock.next_at_ms().filter(|_| !sim.kube_queue.is_empty()) else { return };
        sim.run_until(at_ms);
    }
    panic!("built-in controllers still busy after 10,000 steps: {} tasks queued", sim.kube_queue.len());
}

/// The pods that are not terminating, as (node, name), sorted.
fn live_pods(sim: &Sim) -> Vec<(String, String)> {
    let mut pods: Vec<(String, String)> = sim
        .api
        .store
        .list(Kind::Pod)
        .filter_map(|o| o.as_pod())
        .filter(|p| !p.is_deleting())
        .map(|p| (p.node_name().unwrap_or_default().to_string(), p.metadata.name.clone().unwrap_or_default()))
        .collect();
    pods.sort();
    pods
}

fn label_node(sim: &mut Sim, node: &str, key: &str) {
    let labels = BTreeMap::from([(key.to_string(), Some("true".to_string()))]);
    sim.api.patch_labels(&ObjectRef::cluster(Kind::Node, node), &labels).expect("label");
    sim.settle();
}

/// Two nodes labelled `fuse-a`, the DaemonSet selecting them applied, and every task run.
fn fuse_daemonset_on_two_labelled_nodes() -> Sim {
    let mut sim = cluster(&["node-a", "node-b"]);
    label_node(&mut sim, "node-a", "fuse-a");
    label_node(&mut sim, "node-b", "fuse-a");
    let now = sim.clock.wall();
    sim.api.apply(daemonset(serde_json::json!({"fuse-a": "true"}), "juicefs:1"), now).expect("create");
    sim.settle();
    drain(&mut sim);
    sim
}

#[test]
fn a_workloads_status_write_does_not_requeue_it_but_a_spec_change_does() {
    let mut sim = cluster(&["node-a"]);
    let now = sim.clock.wall();
    sim.api.apply(daemonset(serde_json::json!({"fuse-a": "true"}), "juicefs:1"), now).expect("create");
    sim.settle();
    assert!(sim.kube_queue.is_queued(&KubeTask::DaemonSet(ds_key())), "a new DaemonSet is synced");
    drain(&mut sim);

    let _ = sim.api.modify(&ds_key(), None, |obj| {
        let ds = obj.daemonset_mut().expect("a DaemonSet");
        ds.status.get_or_insert_with(Default::default).number_ready = 7;
        true
    });
    sim.settle();
    assert!(!sim.kube_queue.is_queued(&KubeTask::DaemonSet(ds_key())), "its own status write is no reason to sync");

    let now = sim.clock.wall();
    let (_, changed) =
        sim.api.apply(daemonset(serde_json::json!({"fuse-a": "true"}), "juicefs:2"), now).expect("update");
    sim.settle();
    assert!(changed);
    assert!(sim.kube_queue.is_queued(&KubeTask::DaemonSet(ds_key())), "a template change is");
}

#[test]
fn a_daemonset_is_refiled_when_its_selector_key_changes() {
    let mut sim = cluster(&["node-a", "node-b"]);
    let now = sim.clock.wall();
    sim.api.apply(daemonset(serde_json::json!({"fuse-a": "true"}), "juicefs:1"), now).expect("create");
    sim.settle();
    drain(&mut sim);
    label_node(&mut sim, "node-a", "fuse-a");
    assert!(sim.kube_queue.is_queued(&KubeTask::DaemonSet(ds_key())), "a node gained the selector's label");
    drain(&mut sim);

    // A spec write outside apply replaces the selector; the apiserver bumps the generation, so
    // the controller sees a spec change.
    let _ = sim.api.modify(&ds_key(), None, |obj| {
        let ds = obj.daemonset_mut().expect("a DaemonSet");
        let template = ds.spec.as_mut().and_then(|s| s.template.spec.as_mut()).expect("a template");
        template.node_selector = Some(BTreeMap::from([("fuse-b".to_string(), "true".to_string())]));
        true
    });
    sim.settle();
    assert_eq!(sim.get(&ds_key()).and_then(|o| o.meta().generation), Some(2));
    drain(&mut sim);
    label_node(&mut sim, "node-b", "fuse-a");
    assert!(!sim.kube_queue.is_queued(&KubeTask::DaemonSet(ds_key())), "the old key no longer concerns it");
    label_node(&mut sim, "node-b", "fuse-b");
    assert!(sim.kube_queue.is_queued(&KubeTask::DaemonSet(ds_key())), "the new key does");
}

#[test]
fn pvc_protection_follows_pods_coming_completing_and_going_but_not_status_writes() {
    let mut sim = cluster(&["node-a"]);
    let claim = ObjectRef::namespaced(Kind::PersistentVolumeClaim, "default", "data");
    let protection = KubeTask::PvcProtection(claim);
    let step = PodStep {
        name: "app".to_string(),
        namespace: "default".to_string(),
        claim: "data".to_string(),
        node_selector: BTreeMap::new(),
        node: Some("node-a".to_string()),
        read_only: false,
    };
    let pod_key = ObjectRef::namespaced(Kind::Pod, "default", "app");
    let now = sim.clock.wall();
    sim.api.create(step.to_pod(), now).expect("pod");
    sim.settle();
    assert!(sim.kube_queue.is_queued(&protection), "a new user of the claim");
    sim.kube_queue.clear();

    let set_phase = |sim: &mut Sim, phase: &str| {
        let _ = sim.api.modify(&pod_key, None, |obj| {
            let pod = Arc::make_mut(match obj {
                Obj::Pod(pod) => pod,
                _ => unreachable!("a pod"),
            });
            pod.status.get_or_insert_with(Default::default).phase = Some(phase.to_string());
            true
        });
        sim.settle();
    };
    set_phase(&mut sim, "Running");
    assert!(!sim.kube_queue.is_queued(&protection), "a status write of a running user");
    set_phase(&mut sim, "Succeeded");
    assert!(sim.kube_queue.is_queued(&protection), "the user completed");
    sim.kube_queue.clear();

    sim.api.remove(&pod_key);
    sim.settle();
    assert!(sim.kube_queue.is_queued(&protection), "the user is gone");
}

#[test]
fn daemon_pods_share_one_spec_and_each_is_pinned_to_its_node() {
    let sim = fuse_daemonset_on_two_labelled_nodes();
    let pods: Vec<Arc<crate::apiserver::Pod>> =
        sim.api.store.list(Kind::Pod).filter_map(|o| o.as_pod()).cloned().collect();
    assert_eq!(pods.len(), 2);
    let (a, b) = (&pods[0], &pods[1]);
    assert!(Arc::ptr_eq(a.spec.as_ref().expect("spec"), b.spec.as_ref().expect("spec")), "one spec for both");
    let pinned = |pod: &crate::apiserver::Pod| {
        let spec = pod.to_kube().spec.expect("spec");
        let terms = spec.affinity.and_then(|a| a.node_affinity?.required_during_scheduling_ignored_during_execution);
        let field = terms.expect("a required term").node_selector_terms[0].match_fields.clone().expect("fields");
        let tolerated = spec
            .tolerations
            .unwrap_or_default()
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unschedulable"));
        (field[0].key.clone(), field[0].values.clone().unwrap_or_default(), tolerated, spec.node_name)
    };
    let mut seen = [pinned(a), pinned(b)];
    seen.sort();
    assert_eq!(seen[0].0, "metadata.name");
    assert_eq!((seen[0].1.clone(), seen[1].1.clone()), (vec!["node-a".to_string()], vec!["node-b".to_string()]));
    assert!(seen[0].2 && seen[1].2, "the daemon tolerations are in the manifest");
    assert_eq!(
        (seen[0].3.as_deref(), seen[1].3.as_deref()),
        (Some("node-a"), Some("node-b")),
        "the scheduler bound each where it is pinned"
    );
}

#[test]
fn a_daemonset_follows_its_nodes_replaces_failed_and_stale_pods_and_counts_them() {
    let mut sim = fuse_daemonset_on_two_labelled_nodes();
    let status = |sim: &Sim| {
        let ds = sim.api.store.get(&ds_key()).and_then(|o| o.as_daemonset()).cloned().expect("the DaemonSet");
        let s = ds.status.clone().expect("a status");
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
            s.updated_number_scheduled.unwrap_or(0),
        )
    };
    assert_eq!(status(&sim), (2, 2, 2, 2), "one running, ready pod per labelled node");
    let first = live_pods(&sim);

    // A node that no longer matches loses its pod.
    let unlabel = BTreeMap::from([("fuse-a".to_string(), None)]);
    sim.api.patch_labels(&ObjectRef::cluster(Kind::Node, "node-b"), &unlabel).expect("unlabel");
    sim.settle();
    drain(&mut sim);
    assert_eq!(status(&sim), (1, 1, 1, 1));
    assert_eq!(live_pods(&sim), first[..1], "node-a keeps its pod");

    // A failed pod is replaced.
    let failed = ObjectRef::namespaced(Kind::Pod, "default", &first[0].1);
    let _ = sim.api.modify(&failed, None, |obj| {
        obj.pod_mut().expect("a pod").status.get_or_insert_with(Default::default).phase = Some("Failed".into());
        true
    });
    sim.settle();
    drain(&mut sim);
    let replaced = live_pods(&sim);
    assert_eq!(replaced.len(), 1);
    assert!(replaced[0].0 == "node-a" && replaced[0].1 != first[0].1, "a new pod on node-a: {replaced:?}");
    assert_eq!(status(&sim), (1, 1, 1, 1));

    // A template change rolls the pod (RollingUpdate, the default).
    let now = sim.clock.wall();
    sim.api.apply(daemonset(serde_json::json!({"fuse-a": "true"}), "juicefs:2"), now).expect("update");
    sim.settle();
    drain(&mut sim);
    let rolled = live_pods(&sim);
    assert!(rolled.len() == 1 && rolled[0].1 != replaced[0].1, "rolled: {rolled:?}");
    assert_eq!(status(&sim), (1, 1, 1, 1), "the new pod is of the current revision");
}

#[test]
fn a_daemonset_that_selects_by_node_affinity_follows_label_and_taint_changes() {
    let mut sim = cluster(&["node-a", "node-b", "node-c"]);
    let manifest = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "fuse", "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": "fuse"}},
            "template": {
                "metadata": {"labels": {"app": "fuse"}},
                "spec": {
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]}]
                    }}},
                    "containers": [{"name": "fuse", "image": "juicefs:1"}]
                }
            }
        }
    });
    let now = sim.clock.wall();
    sim.api.apply(Obj::from_manifest(manifest).expect("daemonset"), now).expect("create");
    sim.settle();
    drain(&mut sim);
    let nodes_with_pods = |sim: &Sim| live_pods(sim).into_iter().map(|(node, _)| node).collect::<Vec<_>>();
    let set_zone = |sim: &mut Sim, node: &str, zone: Option<&str>| {
        let labels = BTreeMap::from([("zone".to_string(), zone.map(str::to_string))]);
        sim.api.patch_labels(&ObjectRef::cluster(Kind::Node, node), &labels).expect("label");
        sim.settle();
        drain(sim);
    };
    assert!(nodes_with_pods(&sim).is_empty(), "no node is in zone x yet");
    set_zone(&mut sim, "node-a", Some("x"));
    set_zone(&mut sim, "node-b", Some("x"));
    set_zone(&mut sim, "node-c", Some("y"));
    assert_eq!(nodes_with_pods(&sim), ["node-a", "node-b"], "a label the affinity reads brings a pod");
    set_zone(&mut sim, "node-a", None);
    assert_eq!(nodes_with_pods(&sim), ["node-b"], "and losing it takes the pod away");

    // A taint its pods do not tolerate (a spec change of the node) takes the pod away too.
    let _ = sim.api.modify(&ObjectRef::cluster(Kind::Node, "node-b"), None, |obj| {
        let node = obj.node_mut().expect("a node");
        let taint = k8s_openapi::api::core::v1::Taint {
            key: "dedicated".into(),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        node.spec.get_or_insert_with(Default::default).taints = Some(vec![taint]);
        true
    });
    sim.settle();
    drain(&mut sim);
    assert!(nodes_with_pods(&sim).is_empty(), "{:?}", nodes_with_pods(&sim));
    set_zone(&mut sim, "node-c", Some("x"));
    assert_eq!(nodes_with_pods(&sim), ["node-c"]);
}
