//! Least privilege, checked three ways: `deploy/csi/rbac.yaml` grants exactly `csi::API_CALLS`; every kube call in the source is in that table; and the requests the kube implementation really sends are the table's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use csi::{API_CALLS, EventSink, KubeApi, NodeLabeler};
use model::node::{DatasetRef, EventType, RecoverEvent};

type Grant = (String, String, String);

fn table() -> BTreeSet<Grant> {
    API_CALLS.iter().map(|c| (c.group.to_string(), c.resource.to_string(), c.verb.to_string())).collect()
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The (group, resource, verb) triples the ClusterRole in `rbac.yaml` grants.
fn grants(yaml: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let value: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).expect("rbac.yaml parses");
        if value["kind"].as_str() != Some("ClusterRole") && value["kind"].as_str() != Some("Role") {
            continue;
        }
        for rule in value["rules"].as_sequence().expect("rules") {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_sequence()
                    .map(|s| s.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        out.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn rbac_yaml_grants_exactly_the_calls_the_code_makes() {
    let path = crate_dir().join("../deploy/csi/rbac.yaml");
    let granted = grants(&std::fs::read_to_string(&path).expect("read deploy/csi/rbac.yaml"));
    let used = table();
    let extra: Vec<_> = granted.difference(&used).collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(extra.is_empty(), "{} grants what the code never calls (remove it): {extra:?}", path.display());
    assert!(missing.is_empty(), "{} lacks grants the code needs: {missing:?}", path.display());
    // The checker itself sees a drift.
    let looser =
        grants("kind: ClusterRole\nrules:\n  - apiGroups: ['']\n    resources: [nodes]\n    verbs: [get, patch]\n");
    assert!(looser.difference(&used).next().is_some());
}

/// RBAC verb of a `kube::Api` method.
fn verb_of(method: &str) -> &'static str {
    match method {
        "get" | "get_opt" | "get_metadata" | "get_status" | "entry" => "get",
        "list" | "list_metadata" => "list",
        "watch" | "watch_metadata" => "watch",
        "create" => "create",
        "patch" | "patch_status" | "patch_metadata" | "patch_subresource" => "patch",
        "replace" | "replace_status" | "replace_subresource" => "update",
        "delete" => "delete",
        "delete_collection" => "deletecollection",
        "evict" => "create",
        _ => "unknown",
    }
}

const METHODS: &[&str] = &[
    "get",
    "get_opt",
    "get_metadata",
    "get_status",
    "entry",
    "list",
    "list_metadata",
    "watch",
    "watch_metadata",
    "create",
    "patch",
    "patch_status",
    "patch_metadata",
    "patch_subresource",
    "replace",
    "replace_status",
    "replace_subresource",
    "delete",
    "delete_collection",
    "evict",
];

/// The (group, resource) of a k8s-openapi type the plugin may name in `Api<…>`.
fn resource_of(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind {
        "Node" => Some(("", "nodes")),
        "Event" => Some(("events.k8s.io", "events")),
        _ => None,
    }
}

/// Finds `name` followed (whitespace allowed) by `.method(` in `text`; returns the methods.
fn calls_on(text: &str, name: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(name) {
        let after = &rest[at + name.len()..];
        let boundary = rest[..at].chars().last().is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let trimmed = after.trim_start();
        if boundary && let Some(call) = trimmed.strip_prefix('.') {
            let method: String = call.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if call[method.len()..].starts_with('(') && METHODS.contains(&method.as_str()) {
                found.push(method);
            }
        }
        rest = &rest[at + name.len()..];
    }
    found
}

/// Whether `word` occurs in `text` not as the tail of a longer name (`KubeApi::` is not `Api::`).
fn mentions(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| text[..at].chars().last().is_none_or(|c| !c.is_alphanumeric() && c != '_'))
}

/// Every `Api` call the source makes, as (group, resource, verb), and every problem found.
fn scan_source(files: &[(PathBuf, String)]) -> (BTreeSet<Grant>, Vec<String>) {
    let (mut used, mut problems) = (BTreeSet::new(), Vec::new());
    for (path, text) in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let mentions_api = ["Api<", "Api::", "kube::api"].iter().any(|word| mentions(text, word));
        if name != "apiserver.rs" {
            if mentions_api {
                problems.push(format!("{}: kube::Api is used outside src/apiserver.rs", path.display()));
            }
            continue;
        }
        // `let NAME: Api<KIND>` bindings, then the calls on each binding.
        let mut attributed = 0;
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("let ") else { continue };
            let Some((binding, ty)) = rest.split_once(": Api<") else { continue };
            let kind: String = ty.chars().take_while(|c| c.is_alphanumeric()).collect();
            let Some((group, resource)) = resource_of(&kind) else {
                problems.push(format!(
                    "{}: Api<{kind}> is not in csi::API_CALLS (add it there and to rbac.yaml)",
                    path.display()
                ));
                continue;
            };
            for method in calls_on(text, binding.trim()) {
                attributed += 1;
                used.insert((group.to_string(), resource.to_string(), verb_of(&method).to_string()));
            }
        }
        let all: usize = METHODS.iter().map(|m| text.matches(&format!(".{m}(")).count()).sum();
        if all != attributed {
            problems.push(format!(
                "{}: {all} Api-like calls, {attributed} on `let x: Api<…>` bindings; call the API through such a binding",
                path.display()
            ));
        }
    }
    (used, problems)
}

fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.clone(), std::fs::read_to_string(&path).expect("read source")));
        }
    }
    out
}

#[test]
fn every_api_call_in_the_source_is_in_the_table() {
    let (used, problems) = scan_source(&sources(&crate_dir().join("src")));
    assert!(problems.is_empty(), "{problems:#?}");
    let table = table();
    let unlisted: Vec<_> = used.difference(&table).collect();
    assert!(unlisted.is_empty(), "the code calls APIs csi::API_CALLS does not list: {unlisted:?}");
    let unused: Vec<_> = table.difference(&used).collect();
    assert!(unused.is_empty(), "csi::API_CALLS lists calls the code does not make: {unused:?}");
    // The scanner sees a new call, and one outside the module.
    let sneaky = "let nodes: Api<Node> = Api::all(c);\nnodes.get(\"n\").await;\nnodes\n    .patch(x);\n";
    let (used, problems) = scan_source(&[(PathBuf::from("src/apiserver.rs"), sneaky.to_string())]);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(used.contains(&(String::new(), "nodes".into(), "get".into())), "{used:?}");
    let (_, problems) = scan_source(&[(PathBuf::from("src/service.rs"), "let pvs: Api<PersistentVolume>".into())]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (_, problems) =
        scan_source(&[(PathBuf::from("src/apiserver.rs"), "let pvs: Api<PersistentVolume> = x;".into())]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (_, problems) = scan_source(&[(PathBuf::from("src/apiserver.rs"), "Api::<Node>::all(c).get(\"n\");".into())]);
    assert_eq!(problems.len(), 1, "an unattributed call: {problems:?}");
}

/// The requests `KubeApi` sends, through a mock API server, mapped to RBAC triples.
#[tokio::test]
async fn the_requests_sent_are_the_tables() {
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
    let client = kube::Client::new(service, "default");
    let api = KubeApi::with_client(client);
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let reply = if parts.uri.path().contains("/events") {
                serde_json::json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "default"}, "eventTime": "2026-01-01T00:00:00.000000Z"})
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})
            };
            respond.send_response(
                http::Response::builder()
                    .status(200)
                    .body(kube::client::Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
            seen.push((parts.method.to_string(), parts.uri.path().to_string(), body));
        }
        seen
    });
    api.set_label("node-a", "fluid.io/f-default-demo", "true").await.expect("set");
    api.remove_label("node-a", "fluid.io/f-default-demo").await.expect("remove");
    let dataset = DatasetRef { namespace: "default".into(), name: "demo".into() };
    let event = RecoverEvent {
        reason: "FuseRecoverSucceed",
        event_type: EventType::Normal,
        action: "FuseRecover",
        note: "bound again".into(),
    };
    api.record("node-a", &dataset, &event).await.expect("event");
    drop(api);
    let seen = server.await.unwrap();
    let mut sent = BTreeSet::new();
    for (method, path, body) in &seen {
        let triple = match (method.as_str(), path.as_str()) {
            ("PATCH", p) if p.starts_with("/api/v1/nodes/") => ("", "nodes", "patch"),
            ("POST", "/apis/events.k8s.io/v1/namespaces/default/events") => {
                assert_eq!(body["regarding"]["kind"], "Dataset", "{body}");
                assert_eq!(body["regarding"]["name"], "demo", "{body}");
                assert_eq!(body["reason"], "FuseRecoverSucceed", "{body}");
                assert_eq!(body["type"], "Normal", "{body}");
                ("events.k8s.io", "events", "create")
            }
            other => panic!("an API request no grant covers: {other:?}"),
        };
        sent.insert((triple.0.to_string(), triple.1.to_string(), triple.2.to_string()));
    }
    assert_eq!(seen[0].2["metadata"]["labels"]["fluid.io/f-default-demo"], "true");
    assert!(seen[1].2["metadata"]["labels"]["fluid.io/f-default-demo"].is_null(), "null removes the key");
    assert_eq!(sent, table());
}
