//! The final state both clusters are compared on: names, phases, conditions' reasons, labels,
//! taints, counts, owner links, finalizers and mount health; never times, UIDs or
//! resourceVersions. The simulator and a real control plane render it through [`ClusterRead`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use model::effect::{Kind, ObjectRef};
use serde_json::Value;

use super::cluster::ClusterRead;
use super::parse::{Action, Nodes, Scenario};
use crate::faults::Fault;

/// Namespaces of the cluster's own machinery (the testbed runs ferrofluid there), left out.
pub const SYSTEM_NAMESPACES: &[&str] = &["fluid-system", "kube-system", "kube-public", "kube-node-lease"];

/// The label of a node that only runs the cluster's own machinery, left out.
pub const SYSTEM_NODE_LABEL: &str = "ferrofluid.io/system-node";

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}

fn name_of(value: &Value) -> String {
    let (namespace, name) = (text(value, "/metadata/namespace"), text(value, "/metadata/name"));
    if namespace.is_empty() { name.to_string() } else { format!("{namespace}/{name}") }
}

fn in_scope(value: &Value) -> bool {
    !SYSTEM_NAMESPACES.contains(&text(value, "/metadata/namespace"))
}

fn deleting(value: &Value) -> &'static str {
    if value.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null()) { " Terminating" } else { "" }
}

/// ` owners=[Kind/name]` and ` finalizers=[…]`, when there are any.
fn links(value: &Value) -> String {
    let mut out = String::new();
    let owners: Vec<String> = value
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|o| format!("{}/{}", text(o, "/kind"), text(o, "/name")))
        .collect();
    if !owners.is_empty() {
        let _ = write!(out, " owners=[{}]", owners.join(","));
    }
    let mut finalizers: Vec<&str> = value
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    finalizers.sort_unstable();
    if !finalizers.is_empty() {
        let _ = write!(out, " finalizers=[{}]", finalizers.join(","));
    }
    out
}

/// A pod's name with a DaemonSet pod's random suffix replaced by `*`.
fn pod_name(pod: &Value) -> String {
    let owners = pod.pointer("/metadata/ownerReferences").and_then(Value::as_array);
    let daemon = owners.into_iter().flatten().find(|o| text(o, "/kind") == "DaemonSet");
    match daemon {
        Some(owner) => format!("{}/{}-*", text(pod, "/metadata/namespace"), text(owner, "/name")),
        None => name_of(pod),
    }
}

fn pod_state(pod: &Value) -> String {
    let phase = text(pod, "/status/phase");
    let mut state = if phase.is_empty() { "Pending".to_string() } else { phase.to_string() };
    if !deleting(pod).is_empty() {
        state.push_str(",Terminating");
    }
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| text(c, "/type") == "Ready" && text(c, "/status") == "True");
    if state == "Running" && !ready {
        state.push_str(",NotReady");
    }
    state
}

fn conditions(value: &Value) -> String {
    let mut out: Vec<String> = value
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let reason = text(c, "/reason");
            let reason = if reason.is_empty() { String::new() } else { format!("({reason})") };
            format!("{}={}{reason}", text(c, "/type"), text(c, "/status"))
        })
        .collect();
    out.sort();
    out.join(" ")
}

fn labels(value: &Value, keep: impl Fn(&str) -> bool) -> Vec<String> {
    value
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect()
}

/// The names of `pod`'s volumes that are bound to a ferrofluid (fuse.csi.fluid.io) PV.
pub fn dataset_volumes(cluster: &dyn ClusterRead, pod: &Value) -> Vec<String> {
    let namespace = text(pod, "/metadata/namespace");
    let mut out = Vec::new();
    for volume in pod.pointer("/spec/volumes").and_then(Value::as_array).into_iter().flatten() {
        let claim = text(volume, "/persistentVolumeClaim/claimName");
        if claim.is_empty() {
            continue;
        }
        let pvc = cluster.object(&ObjectRef::namespaced(Kind::PersistentVolumeClaim, namespace, claim));
        let Some(pv_name) = pvc.as_ref().map(|p| text(p, "/spec/volumeName")).filter(|n| !n.is_empty()) else {
            continue;
        };
        let pv = cluster.object(&ObjectRef::cluster(Kind::PersistentVolume, pv_name));
        if pv.as_ref().is_some_and(|pv| text(pv, "/spec/csi/driver") == model::volume::CSI_DRIVER) {
            out.push(text(volume, "/name").to_string());
        }
    }
    out
}

/// The node names a scenario's steps mention (in manifests, pod placements, taints, faults and
/// expectations). The others are interchangeable: which of them a scheduler picks among equals
/// is its own business, so the final state shows them unnamed, sorted by what they hold.
pub fn named_nodes(scenario: &Scenario) -> BTreeSet<String> {
    let mut texts: Vec<String> = Vec::new();
    for step in &scenario.steps {
        match &step.action {
            Action::Apply(objects) => texts.extend(objects.iter().map(|o| o.to_json().to_string())),
            Action::Pod(pod) => texts.push(pod.to_pod().to_json().to_string()),
            Action::Delete(key) => texts.push(key.to_string()),
            Action::Taint(taint) => texts.push(taint.node.clone()),
            Action::Untaint(untaint) => texts.push(untaint.node.clone()),
            Action::Expect(expectations) => texts.extend(expectations.iter().map(|e| e.text.clone())),
            Action::Fault(
                Fault::NodeDown(node) | Fault::NodeUp(node) | Fault::FuseCrash(node) | Fault::CsiRestart(node),
            ) => texts.push(node.clone()),
            Action::Fault(Fault::PodCrash(pod)) => texts.push(pod.to_string()),
            Action::Fault(_) | Action::Scale(_) | Action::Run(_) => {}
        }
    }
    let mut names: Vec<String> = match &scenario.cluster.nodes {
        Nodes::Count(n) => (1..=*n).map(|i| format!("node-{i}")).collect(),
        Nodes::List(list) => list.iter().map(|n| n.name.clone()).collect(),
    };
    names.retain(|name| {
        texts.iter().any(|text| {
            text.match_indices(name.as_str()).any(|(at, _)| {
                let next = text[at + name.len()..].chars().next();
                !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        })
    });
    names.into_iter().collect()
}

/// The normalised final state; nodes not in `named` are shown unnamed.
pub fn normalized(cluster: &dyn ClusterRead, named: &BTreeSet<String>) -> String {
    let mut out = String::new();
    let pods: Vec<Value> = cluster.objects(Kind::Pod).into_iter().filter(in_scope).collect();
    let mut pods_by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pod in &pods {
        let node = text(pod, "/spec/nodeName").to_string();
        pods_by_node.entry(node).or_default().push(format!("{} ({})", pod_name(pod), pod_state(pod)));
    }
    let _ = writeln!(out, "nodes:");
    let mut anonymous: Vec<String> = Vec::new();
    for node in cluster.objects(Kind::Node) {
        if node.pointer("/metadata/labels").and_then(|l| l.get(SYSTEM_NODE_LABEL)).is_some() {
            continue;
        }
        let name = text(&node, "/metadata/name");
        let mut block = String::new();
        let shown = if named.contains(name) { name } else { "(a node the scenario does not name)" };
        let power = match cluster.node_up(name) {
            Some(true) => "up",
            Some(false) => "down",
            None => "?",
        };
        let ready = node
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| text(c, "/type") == "Ready")
            .map(|c| text(c, "/status"))
            .unwrap_or("-");
        let _ = writeln!(block, "  {shown} ({power}) Ready={ready}");
        let taints: Vec<String> = node
            .pointer("/spec/taints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| {
                let value = text(t, "/value");
                let value = if value.is_empty() { String::new() } else { format!("={value}") };
                format!("{}{value}:{}", text(t, "/key"), text(t, "/effect"))
            })
            .collect();
        if !taints.is_empty() {
            let _ = writeln!(block, "    taints: {}", taints.join(", "));
        }
        let fluid = labels(&node, |k| k.starts_with("fluid"));
        if !fluid.is_empty() {
            let _ = writeln!(block, "    labels: {}", fluid.join(", "));
        }
        if let Some(mut on_node) = pods_by_node.remove(name) {
            on_node.sort();
            let _ = writeln!(block, "    pods: {}", on_node.join(", "));
        }
        if named.contains(name) {
            out.push_str(&block);
        } else {
            anonymous.push(block);
        }
    }
    anonymous.sort();
    anonymous.iter().for_each(|block| out.push_str(block));
    if let Some(mut unscheduled) = pods_by_node.remove("") {
        unscheduled.sort();
        let _ = writeln!(out, "  (unscheduled) pods: {}", unscheduled.join(", "));
    }
    let _ = writeln!(out, "mounts:");
    for pod in pods.iter().filter(|p| super::cluster::pod_running(p)) {
        let key = ObjectRef::namespaced(Kind::Pod, text(pod, "/metadata/namespace"), text(pod, "/metadata/name"));
        for volume in dataset_volumes(cluster, pod) {
            let state = cluster.mount_state(&key, &volume).unwrap_or("n/a");
            let _ = writeln!(out, "  {} {volume}: {state}", name_of(pod));
        }
    }
    let _ = writeln!(out, "datasets:");
    for dataset in cluster.objects(Kind::Dataset) {
        let _ = writeln!(
            out,
            "  {}: phase={}{} {}{}",
            name_of(&dataset),
            or_dash(text(&dataset, "/status/phase")),
            deleting(&dataset),
            conditions(&dataset),
            links(&dataset)
        );
    }
    let _ = writeln!(out, "runtimes:");
    for runtime in cluster.objects(Kind::JuiceFSRuntime) {
        let number = |pointer: &str| runtime.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
        let _ = writeln!(
            out,
            "  {}: workers={} {}/{} fuse={} {}/{}{}{}",
            name_of(&runtime),
            or_dash(text(&runtime, "/status/workerPhase")),
            number("/status/workerNumberReady"),
            number("/status/desiredWorkerNumberScheduled"),
            or_dash(text(&runtime, "/status/fusePhase")),
            number("/status/fuseNumberReady"),
            number("/status/desiredFuseNumberScheduled"),
            deleting(&runtime),
            links(&runtime)
        );
    }
    let _ = writeln!(out, "workloads:");
    for (kind, object) in cluster
        .objects(Kind::StatefulSet)
        .into_iter()
        .map(|o| ("StatefulSet", o))
        .chain(cluster.objects(Kind::DaemonSet).into_iter().map(|o| ("DaemonSet", o)))
        .filter(|(_, o)| in_scope(o))
    {
        let size = match kind {
            "StatefulSet" => {
                format!("replicas={}", object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1))
            }
            _ => {
                let selector: Vec<String> = object
                    .pointer("/spec/template/spec/nodeSelector")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect();
                format!("nodeSelector={}", selector.join(","))
            }
        };
        let _ = writeln!(out, "  {kind} {}: {size}{}{}", name_of(&object), deleting(&object), links(&object));
    }
    let _ = writeln!(out, "volumes:");
    for (kind, object) in cluster
        .objects(Kind::PersistentVolume)
        .into_iter()
        .map(|o| ("PersistentVolume", o))
        .chain(cluster.objects(Kind::PersistentVolumeClaim).into_iter().map(|o| ("PersistentVolumeClaim", o)))
    {
        let _ = writeln!(
            out,
            "  {kind} {}: {}{}{}",
            name_of(&object),
            or_dash(text(&object, "/status/phase")),
            deleting(&object),
            links(&object)
        );
    }
    // A UID in a label (a long name's `fluid.io/f-<uid>`) is shown by whose it is, or as
    // `<uid>` once its object is gone.
    for kind in [Kind::Dataset, Kind::JuiceFSRuntime] {
        for object in cluster.objects(kind) {
            let uid = text(&object, "/metadata/uid");
            if !uid.is_empty() {
                out = out.replace(uid, &format!("$uid({}/{})", kind.as_str(), name_of(&object)));
            }
        }
    }
    without_uids(&out)
}

/// `text` with each UUID (8-4-4-4-12 hex digits) replaced by `<uid>`.
fn without_uids(text: &str) -> String {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let is_uuid = |candidate: &str| {
        let parts: Vec<&str> = candidate.split('-').collect();
        parts.len() == 5
            && parts.iter().zip(GROUPS).all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if rest.len() >= 36 && rest.is_char_boundary(36) && is_uuid(&rest[..36]) {
            out.push_str("<uid>");
            rest = &rest[36..];
        } else {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The lines of `left` and `right` side by side where they differ (`-` left only, `+` right
/// only), or None when they are equal.
pub fn difference(left: &str, right: &str) -> Option<String> {
    if left == right {
        return None;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (left.lines().collect(), right.lines().collect());
    // A longest-common-subsequence table: the summaries are a few dozen lines.
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] { common[i + 1][j + 1] + 1 } else { common[i + 1][j].max(common[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || common[i][j + 1] >= common[i + 1][j]) {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        } else {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::difference;

    #[test]
    fn uuids_are_masked_and_nothing_else_is() {
        let text = "fluid.io/f-41520f4f-6037-4d25-aef2-cc71ed93996e=true node-1 ds-a-b-c-d";
        assert_eq!(super::without_uids(text), "fluid.io/f-<uid>=true node-1 ds-a-b-c-d");
    }

    #[test]
    fn a_difference_marks_each_side_and_equal_texts_have_none() {
        assert_eq!(difference("a\nb\n", "a\nb\n"), None);
        let shown = difference("a\nb\nc\n", "a\nx\nc\n").unwrap();
        assert_eq!(shown, "  a\n+ x\n- b\n  c\n");
    }
}
