//! Scheduler decisions on small clusters: spreading, preferred and required anti-affinity, the
//! "0/N nodes" message, and the cache staying right across status writes and completion.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Affinity, Container, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, PodAffinityTerm, PodAntiAffinity,
    PodSpec, PreferredSchedulingTerm, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use model::effect::{Kind, ObjectRef};

use super::HOSTNAME;
use crate::apiserver::{Obj, Pod};
use crate::scenario::parse::Capacity;
use crate::scenario::steps::make_node;
use crate::sim::{Sim, SimConfig};

fn cluster(nodes: usize, max_pods: u32) -> Sim {
    let mut sim = Sim::new(SimConfig { trace: false, ..SimConfig::default() });
    for i in 0..nodes {
        add_node(&mut sim, &format!("node-{i}"), max_pods, Vec::new());
    }
    sim.settle();
    sim
}

fn add_node(sim: &mut Sim, name: &str, max_pods: u32, taints: Vec<k8s_openapi::api::core::v1::Taint>) {
    let capacity = Capacity { pods: Some(max_pods), cpu: None, memory: None };
    sim.add_node_sim(name);
    let now = sim.clock.wall();
    sim.api.create(make_node(name, &BTreeMap::new(), &capacity, taints), now).expect("node");
}

/// A preferred anti-affinity (hostname topology) away from pods labelled `label=yes`.
fn avoiding(label: &str, weight: i32) -> PodAntiAffinity {
    PodAntiAffinity {
        preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
            weight,
            pod_affinity_term: term(label),
        }]),
        ..Default::default()
    }
}

fn pod(name: &str, labels: &[(&str, &str)], affinity: Option<Affinity>) -> Pod {
    Pod::from(k8s_openapi::api::core::v1::Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".to_string()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container { name: "main".to_string(), ..Default::default() }],
            affinity,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Creates and schedules the pod; returns its node, if any.
fn place(sim: &mut Sim, pod: Pod) -> Option<String> {
    let key = ObjectRef::namespaced(Kind::Pod, "default", pod.metadata.name.as_deref().unwrap_or_default());
    let now = sim.clock.wall();
    sim.api.create(Obj::Pod(Arc::new(pod)), now).expect("pod");
    sim.settle();
    sim.schedule(&key);
    sim.settle();
    node_of(sim, &key)
}

fn node_of(sim: &Sim, key: &ObjectRef) -> Option<String> {
    sim.api.store.get(key)?.as_pod()?.node_name().map(str::to_string)
}

fn term(label: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(label.to_string(), "yes".to_string())])),
            ..Default::default()
        }),
        topology_key: HOSTNAME.to_string(),
        ..Default::default()
    }
}

#[test]
fn pods_without_constraints_spread_one_per_node_first() {
    let mut sim = cluster(4, 110);
    let nodes: Vec<String> = (0..4).filter_map(|i| place(&mut sim, pod(&format!("app-{i}"), &[], None))).collect();
    let distinct: std::collections::BTreeSet<&String> = nodes.iter().collect();
    assert_eq!(distinct.len(), 4, "four pods on four empty nodes must not share one: {nodes:?}");
}

#[test]
fn required_anti_affinity_blocks_and_the_message_counts_every_node() {
    let mut sim = cluster(2, 110);
    let repel = |name: &str| {
        let anti = PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term("worker")]),
            ..Default::default()
        };
        pod(name, &[("worker", "yes")], Some(Affinity { pod_anti_affinity: Some(anti), ..Default::default() }))
    };
    let first = place(&mut sim, repel("w-0")).expect("first worker placed");
    let second = place(&mut sim, repel("w-1")).expect("second worker placed");
    assert_ne!(first, second);
    assert_eq!(place(&mut sim, repel("w-2")), None, "no third node");
    let key = ObjectRef::namespaced(Kind::Pod, "default", "w-2");
    assert_eq!(
        sim.kube.pending_reason.get(&key).map(String::as_str),
        Some("0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules")
    );
}

#[test]
fn preferred_anti_affinity_avoids_a_crowded_node_and_preferred_node_affinity_attracts() {
    let mut sim = cluster(3, 110);
    let crowd = place(&mut sim, pod("crowd", &[("worker", "yes")], None)).expect("placed");
    let anti = avoiding("worker", 100);
    let shy = place(&mut sim, pod("shy", &[], Some(Affinity { pod_anti_affinity: Some(anti), ..Default::default() })));
    assert_ne!(shy.as_ref(), Some(&crowd), "a preferred anti-affinity term steers away from the crowded node");

    let attracted = NodeAffinity {
        preferred_during_scheduling_ignored_during_execution: Some(vec![PreferredSchedulingTerm {
            weight: 100,
            preference: NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".to_string(),
                    operator: "In".to_string(),
                    values: Some(vec![crowd.clone()]),
                }]),
            },
        }]),
        ..Default::default()
    };
    let drawn =
        place(&mut sim, pod("drawn", &[], Some(Affinity { node_affinity: Some(attracted), ..Default::default() })));
    assert_eq!(drawn, Some(crowd), "preferred node affinity outweighs a fuller node");
}

#[test]
fn the_cache_follows_status_writes_and_completion() {
    let mut sim = cluster(2, 2);
    let node = place(&mut sim, pod("a", &[("worker", "yes")], None)).expect("placed");
    let id = sim.kube.scheduler.node_id(&node).expect("node known");
    assert_eq!(sim.kube.scheduler.usage(id).pod_count(), 1);
    let key = ObjectRef::namespaced(Kind::Pod, "default", "a");
    let set_phase = |sim: &mut Sim, phase: &str| {
        sim.api
            .modify(&key, None, |obj| {
                obj.pod_mut().expect("pod").status.get_or_insert_with(Default::default).phase = Some(phase.into());
                true
            })
            .expect("status write");
        sim.settle();
    };
    // A status write keeps the pod counted once, where it is.
    set_phase(&mut sim, "Running");
    assert_eq!(sim.kube.scheduler.usage(id).pod_count(), 1);
    // Completed pods free their place.
    set_phase(&mut sim, "Succeeded");
    assert_eq!(sim.kube.scheduler.usage(id).pod_count(), 0);
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([("worker".to_string(), "yes".to_string())])),
        ..Default::default()
    };
    assert!(sim.kube.scheduler.nodes_of_pods_matching(&selector, &|_| true).is_empty());
}

#[test]
fn label_index_answers_one_requirement_exactly_and_checks_the_rest() {
    let mut sim = cluster(3, 110);
    place(&mut sim, pod("a", &[("worker", "yes"), ("tier", "gold")], None)).expect("placed");
    place(&mut sim, pod("b", &[("worker", "no")], None)).expect("placed");
    place(&mut sim, pod("c", &[("tier", "gold")], None)).expect("placed");
    let count = |selector: LabelSelector| sim.kube.scheduler.nodes_of_pods_matching(&selector, &|_| true).len();
    let expression = |key: &str, operator: &str, values: &[&str]| LabelSelector {
        match_expressions: Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
            key: key.to_string(),
            operator: operator.to_string(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }]),
        ..Default::default()
    };
    assert_eq!(count(expression("worker", "Exists", &[])), 2, "a and b carry the key");
    assert_eq!(count(expression("worker", "In", &["yes"])), 1);
    // NotIn has no posting list: every pod is checked (c lacks the key, so it matches too).
    assert_eq!(count(expression("worker", "NotIn", &["yes"])), 2, "b and c");
    // Two requirements: the narrower posting list, then each pod is checked against both.
    let mut both = expression("worker", "Exists", &[]);
    both.match_labels = Some(BTreeMap::from([("tier".to_string(), "gold".to_string())]));
    assert_eq!(count(both), 1, "only a");
}

#[test]
fn named_nodes_get_the_preferences_a_node_by_node_score_gives_them() {
    let mut sim = cluster(4, 110);
    for (node, zone, disk) in [("node-0", "a", "ssd"), ("node-1", "a", "hdd"), ("node-2", "b", "ssd")] {
        let labels = BTreeMap::from([
            ("zone".to_string(), Some(zone.to_string())),
            ("disk".to_string(), Some(disk.to_string())),
        ]);
        sim.api.patch_labels(&ObjectRef::cluster(Kind::Node, node), &labels).expect("labels");
    }
    sim.settle();
    let crowd = place(&mut sim, pod("crowd", &[("worker", "yes")], None)).expect("placed");
    let requirement = |key: &str, value: &str| NodeSelectorRequirement {
        key: key.to_string(),
        operator: "In".to_string(),
        values: Some(vec![value.to_string()]),
    };
    // A pin that names node-3 twice and node-1 once, and a label term node-1 fails (hdd).
    let pinned = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".to_string(),
            operator: "In".to_string(),
            values: Some(vec!["node-3".to_string(), "node-3".to_string(), "node-1".to_string()]),
        }]),
    };
    let labelled = NodeSelectorTerm {
        match_expressions: Some(vec![requirement("zone", "a"), requirement("disk", "ssd")]),
        match_fields: None,
    };
    let node_affinity = NodeAffinity {
        preferred_during_scheduling_ignored_during_execution: Some(vec![
            PreferredSchedulingTerm { weight: 10, preference: pinned },
            PreferredSchedulingTerm { weight: 20, preference: labelled },
        ]),
        ..Default::default()
    };
    let pod_anti_affinity = avoiding("worker", 5);
    let shy = pod(
        "shy",
        &[],
        Some(Affinity {
            node_affinity: Some(node_affinity),
            pod_anti_affinity: Some(pod_anti_affinity),
            ..Default::default()
        }),
    );
    let key = ObjectRef::namespaced(Kind::Pod, "default", "shy");
    let needs = sim.needs(&key, &shy, Vec::new());
    let (named, _) = sim.special_nodes(&needs);
    let named = named.expect("every term is indexable");
    let cache = &sim.kube.scheduler;
    let id = |name: &str| cache.node_id(name).expect("node known");
    let of = |name: &str| named.iter().find(|(node, _)| *node == id(name)).map(|(_, preferences)| *preferences);
    let affinity = |name: &str| of(name).map(|(affinity, _)| affinity);
    assert_eq!(affinity("node-3"), Some(10), "a pin counts its term once");
    assert_eq!(affinity("node-1"), Some(10), "pinned, but not on ssd");
    assert_eq!(affinity("node-0"), Some(20));
    assert_eq!(of(&crowd).map(|(_, penalty)| penalty), Some(5), "the crowded node is named by the anti-affinity");
    for name in ["node-0", "node-1", "node-2", "node-3"] {
        let expected = sim.preferences(&needs, id(name));
        // Named: every node a term may name (node-2 carries `zone`), so every node that scores.
        assert!(named.contains(id(name)) || expected == (0, 0), "{name} scores {expected:?} but is not named");
        if named.contains(id(name)) {
            assert_eq!(of(name), Some(expected), "{name} scores as a node-by-node score says");
        }
    }
}

#[test]
fn a_crowded_named_node_is_still_chosen_when_every_other_node_fails() {
    let mut sim = Sim::new(SimConfig { trace: false, ..SimConfig::default() });
    let taint = k8s_openapi::api::core::v1::Taint {
        key: "dedicated".to_string(),
        effect: "NoSchedule".to_string(),
        ..Default::default()
    };
    add_node(&mut sim, "node-0", 110, Vec::new());
    add_node(&mut sim, "node-1", 110, vec![taint]);
    sim.settle();
    assert_eq!(place(&mut sim, pod("crowd", &[("worker", "yes")], None)).as_deref(), Some("node-0"));
    let anti = avoiding("worker", 100);
    // node-0 scores below any free node (it holds the only worker); node-1 is tainted.
    let shy = place(&mut sim, pod("shy", &[], Some(Affinity { pod_anti_affinity: Some(anti), ..Default::default() })));
    assert_eq!(shy.as_deref(), Some("node-0"), "a preference is no requirement");
}

#[test]
fn kept_term_counts_follow_pods_as_a_fresh_count_does() {
    use super::cache::{NamespaceScope, SchedulerCache};
    let mut cache = SchedulerCache::new(7);
    for i in 0..3 {
        let name = format!("node-{i}");
        let capacity = Capacity { pods: Some(110), cpu: None, memory: None };
        let node = make_node(&name, &BTreeMap::new(), &capacity, Vec::new());
        cache.observe_node(&name, node.as_node());
    }
    let selector = LabelSelector {
        match_labels: Some(BTreeMap::from([("worker".to_string(), "yes".to_string())])),
        ..Default::default()
    };
    let scope = NamespaceScope::Only(vec!["default".to_string()]);
    let fresh = |cache: &SchedulerCache| {
        let mut counts = vec![0i64; cache.node_slots()];
        for node in cache.nodes_of_pods_matching(&selector, &|ns| scope.covers(ns)) {
            counts[node as usize] += 1;
        }
        counts
    };
    let check = |cache: &SchedulerCache, what: &str| {
        let kept = cache.term_counts(&selector, &scope);
        let mut counts = (*kept.counts).clone();
        counts.resize(cache.node_slots(), 0);
        assert_eq!(counts, fresh(cache), "counts after {what}");
        let mut touched = (*kept.touched).clone();
        touched.sort_unstable();
        let expected: Vec<u32> = (0..counts.len() as u32).filter(|id| counts[*id as usize] > 0).collect();
        assert_eq!(touched, expected, "touched nodes after {what}");
    };
    let bound = |name: &str, labels: &[(&str, &str)], node: &str| {
        let mut pod = pod(name, labels, None);
        pod.bind(node);
        Arc::new(pod)
    };
    let key = |name: &str| ObjectRef::namespaced(Kind::Pod, "default", name);
    check(&cache, "nothing");
    cache.observe_pod(&key("a"), Some(&bound("a", &[("worker", "yes")], "node-0")));
    check(&cache, "a first pod");
    cache.observe_pod(&key("b"), Some(&bound("b", &[("worker", "yes")], "node-0")));
    cache.observe_pod(&key("c"), Some(&bound("c", &[("worker", "no")], "node-1")));
    check(&cache, "a second matching pod and one that does not match");
    // Relabelled into the term, then moved (a namesake on another node), then gone.
    cache.observe_pod(&key("c"), Some(&bound("c", &[("worker", "yes")], "node-1")));
    check(&cache, "a relabel");
    cache.observe_pod(&key("a"), Some(&bound("a", &[("worker", "yes")], "node-2")));
    check(&cache, "a move");
    cache.observe_pod(&key("b"), None);
    cache.observe_pod(&key("a"), None);
    check(&cache, "deletions");
    // Another namespace is out of scope.
    let mut elsewhere = pod("d", &[("worker", "yes")], None);
    elsewhere.metadata_mut().namespace = Some("other".to_string());
    elsewhere.bind("node-0");
    cache.observe_pod(&ObjectRef::namespaced(Kind::Pod, "other", "d"), Some(&Arc::new(elsewhere)));
    check(&cache, "a pod in another namespace");
}
