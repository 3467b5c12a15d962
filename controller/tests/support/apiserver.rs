//! A fake API server behind the mocked client: keeps objects as JSON, applies server-side apply,
//! merge patches (with resourceVersion guards), deletes with finalizers, and records every request.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use controller::index::ApplyEvent;
use controller::observe::Writers;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Resource;
use kube::runtime::watcher;
use model::api::{Dataset, JuiceFSRuntime};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ApiServerHandle, Captured, capture, respond, status_error};

/// Where an object lives: `(plural, namespace, name)`; the namespace is empty when cluster-scoped.
pub type Key = (String, String, String);

/// An injected failure: the next request whose line contains `needle` gets `code`.
#[derive(Debug, Clone)]
pub struct Fault {
    /// A substring of `METHOD path?query`.
    pub needle: String,
    /// The status code to answer.
    pub code: u16,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    version: u64,
    uids: u64,
    transcript: Vec<Captured>,
    faults: VecDeque<Fault>,
}

/// The fake server; clones share state.
#[derive(Clone, Default)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

/// The creation time every object gets, so transcripts are stable.
pub const CREATED_AT: &str = "2023-11-14T22:13:20Z";

fn plural_of(kind: &str) -> &'static str {
    match kind {
        "Dataset" => "datasets",
        "JuiceFSRuntime" => "juicefsruntimes",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        "PersistentVolume" => "persistentvolumes",
        "PersistentVolumeClaim" => "persistentvolumeclaims",
        "Node" => "nodes",
        "Pod" => "pods",
        "Event" => "events",
        other => panic!("fake apiserver: unknown kind {other}"),
    }
}

/// `(key, is_status)` of a request path.
fn parse_path(path: &str) -> (String, String, Option<String>, bool) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Skip `api/v1` or `apis/<group>/<version>`.
    let rest = if segments[0] == "api" { &segments[2..] } else { &segments[3..] };
    let (namespace, rest) = if rest.first() == Some(&"namespaces") && rest.len() > 2 {
        (rest[1].to_string(), &rest[2..])
    } else {
        (String::new(), rest)
    };
    let plural = rest[0].to_string();
    let name = rest.get(1).map(|s| s.to_string());
    let status = rest.get(2) == Some(&"status");
    (plural, namespace, name, status)
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = json!({});
            }
            let target = target.as_object_mut().expect("object");
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl FakeApiServer {
    /// Serves every request arriving at `handle` until the client is dropped.
    pub fn spawn(handle: ApiServerHandle) -> FakeApiServer {
        let server = FakeApiServer::default();
        let serving = server.clone();
        tokio::spawn(async move {
            let mut handle = handle;
            while let Some((request, send)) = handle.next_request().await {
                let captured = capture(request).await;
                let (code, body) = serving.answer(&captured);
                send.send_response(respond(code, &body));
            }
        });
        server
    }

    /// Creates `object` as a user would (uid, resourceVersion and creation time assigned).
    pub fn create<K: Serialize + Resource<DynamicType = ()>>(&self, object: &K) -> Value {
        let mut value = serde_json::to_value(object).expect("object JSON");
        let mut state = self.state.lock().expect("state");
        let key = key_of(&value);
        state.stamp_new(&mut value);
        state.objects.insert(key, value.clone());
        value
    }

    /// Lets the test play another controller: mutate the stored object at `key` (bumps its rv).
    pub fn update(&self, key: (&str, &str, &str), change: impl FnOnce(&mut Value)) {
        let mut state = self.state.lock().expect("state");
        let key = (key.0.to_string(), key.1.to_string(), key.2.to_string());
        let version = state.next_version();
        let object = state.objects.get_mut(&key).unwrap_or_else(|| panic!("no object {key:?}"));
        change(object);
        object["metadata"]["resourceVersion"] = json!(version);
    }

    /// Removes the object at `key` (a deletion by someone else).
    pub fn remove(&self, key: (&str, &str, &str)) {
        let key = (key.0.to_string(), key.1.to_string(), key.2.to_string());
        self.state.lock().expect("state").objects.remove(&key);
    }

    /// The stored object at `key`.
    pub fn get(&self, key: (&str, &str, &str)) -> Option<Value> {
        let key = (key.0.to_string(), key.1.to_string(), key.2.to_string());
        self.state.lock().expect("state").objects.get(&key).cloned()
    }

    /// Every stored object of `plural`.
    pub fn list(&self, plural: &str) -> Vec<Value> {
        let state = self.state.lock().expect("state");
        state.objects.iter().filter(|(k, _)| k.0 == plural).map(|(_, v)| v.clone()).collect()
    }

    /// Answers the next request matching `needle` with `code`.
    pub fn fail_next(&self, needle: &str, code: u16) {
        self.state.lock().expect("state").faults.push_back(Fault { needle: needle.to_string(), code });
    }

    /// Every request so far, and clears the record.
    pub fn take_transcript(&self) -> Vec<Captured> {
        std::mem::take(&mut self.state.lock().expect("state").transcript)
    }

    /// Replaces the content of every store with the server's objects, as a relist would.
    pub fn sync(&self, writers: &mut Writers) {
        relist::<Dataset>(&mut writers.datasets, &self.list("datasets"));
        relist::<JuiceFSRuntime>(&mut writers.runtimes, &self.list("juicefsruntimes"));
        relist::<StatefulSet>(&mut writers.stateful_sets, &self.list("statefulsets"));
        relist::<DaemonSet>(&mut writers.daemon_sets, &self.list("daemonsets"));
        relist::<PersistentVolume>(&mut writers.persistent_volumes, &self.list("persistentvolumes"));
        relist::<PersistentVolumeClaim>(&mut writers.persistent_volume_claims, &self.list("persistentvolumeclaims"));
        relist::<Node>(&mut writers.nodes, &self.list("nodes"));
        relist::<Pod>(&mut writers.pods, &self.list("pods"));
    }

    fn answer(&self, request: &Captured) -> (u16, Value) {
        let mut state = self.state.lock().expect("state");
        state.transcript.push(request.clone());
        let line = request.line();
        if let Some(index) = state.faults.iter().position(|f| line.contains(&f.needle)) {
            let fault = state.faults.remove(index).expect("fault");
            let reason = if fault.code == 409 { "Conflict" } else { "Injected" };
            return (fault.code, status_error(fault.code, reason, &format!("injected {} for {line}", fault.code)));
        }
        let (plural, namespace, name, status) = parse_path(&request.path);
        match (request.method.as_str(), name) {
            ("POST", _) => {
                let mut value = request.body.clone();
                let name = value["metadata"]["name"].as_str().unwrap_or("generated").to_string();
                state.stamp_new(&mut value);
                state.objects.insert((plural, namespace, name), value.clone());
                (201, value)
            }
            ("GET", Some(name)) => match state.objects.get(&(plural, namespace, name)) {
                Some(value) => (200, value.clone()),
                None => (404, status_error(404, "NotFound", "not found")),
            },
            ("PATCH", Some(name)) => state.patch((plural, namespace, name), request, status),
            ("DELETE", Some(name)) => state.delete((plural, namespace, name)),
            (method, _) => {
                (405, status_error(405, "MethodNotAllowed", &format!("fake apiserver: {method} {}", request.path)))
            }
        }
    }
}

impl State {
    fn next_version(&mut self) -> String {
        self.version += 1;
        (100 + self.version).to_string()
    }

    fn stamp_new(&mut self, value: &mut Value) {
        self.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012}", self.uids);
        let version = self.next_version();
        let cluster_scoped = matches!(value["kind"].as_str(), Some("Node" | "PersistentVolume"));
        if value["metadata"].get("namespace").is_none() && !cluster_scoped {
            value["metadata"]["namespace"] = json!("default");
        }
        let meta = &mut value["metadata"];
        meta["uid"] = json!(uid);
        meta["resourceVersion"] = json!(version);
        meta["creationTimestamp"] = json!(CREATED_AT);
    }

    fn patch(&mut self, key: Key, request: &Captured, status: bool) -> (u16, Value) {
        let apply = request.content_type.as_deref() == Some("application/apply-patch+yaml");
        let version = self.next_version();
        let Some(current) = self.objects.get(&key).cloned() else {
            if !apply {
                return (404, status_error(404, "NotFound", "not found"));
            }
            let mut value = request.body.clone();
            self.stamp_new(&mut value);
            self.objects.insert(key, value.clone());
            return (200, value);
        };
        let mut next = current.clone();
        if apply {
            // One field manager owns everything it applies: replace all but status and server fields.
            let keep = current["metadata"].clone();
            let mut body = request.body.clone();
            if let Some(object) = body.as_object_mut() {
                object.remove("status");
            }
            let status = current.get("status").cloned();
            next = body;
            for field in ["uid", "creationTimestamp", "finalizers", "deletionTimestamp"] {
                if let Some(value) = keep.get(field) {
                    next["metadata"][field] = value.clone();
                }
            }
            if let Some(status) = status {
                next["status"] = status;
            }
        } else {
            let guard = request.body["metadata"]["resourceVersion"].as_str();
            if guard.is_some_and(|guard| Some(guard) != current["metadata"]["resourceVersion"].as_str()) {
                return (
                    409,
                    status_error(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ),
                );
            }
            let mut patch = request.body.clone();
            if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
            if status {
                merge(&mut next["status"], &patch["status"]);
            } else {
                if let Some(object) = patch.as_object_mut() {
                    object.remove("status");
                }
                merge(&mut next, &patch);
            }
        }
        next["metadata"]["resourceVersion"] = json!(version);
        if finalized(&next) {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, next.clone());
        }
        (200, next)
    }

    fn delete(&mut self, key: Key) -> (u16, Value) {
        let version = self.next_version();
        let Some(mut value) = self.objects.get(&key).cloned() else {
            return (404, status_error(404, "NotFound", "not found"));
        };
        let has_finalizers = value["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if has_finalizers {
            value["metadata"]["deletionTimestamp"] = json!(CREATED_AT);
            value["metadata"]["resourceVersion"] = json!(version);
            self.objects.insert(key, value.clone());
        } else {
            self.objects.remove(&key);
        }
        (200, value)
    }
}

fn finalized(value: &Value) -> bool {
    value["metadata"].get("deletionTimestamp").is_some_and(|t| !t.is_null())
        && value["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty())
}

fn key_of(value: &Value) -> Key {
    let kind = value["kind"].as_str().expect("kind");
    let namespace = match kind {
        "Node" | "PersistentVolume" => String::new(),
        _ => value["metadata"]["namespace"].as_str().unwrap_or("default").to_string(),
    };
    (plural_of(kind).to_string(), namespace, value["metadata"]["name"].as_str().expect("name").to_string())
}

fn relist<K>(writer: &mut impl ApplyEvent<K>, values: &[Value])
where
    K: DeserializeOwned,
{
    writer.apply_watcher_event(&watcher::Event::Init);
    for value in values {
        let object: K = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value:#}"));
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
}
