//! Effects → HTTP requests: each `model::effect::Effect` becomes exactly one request, sent only while leader.
//!
//! | effect              | request                                                              |
//! |---------------------|----------------------------------------------------------------------|
//! | `Apply`             | server-side apply, field manager `ferrofluid`, `force=true`          |
//! | `PatchStatus`       | merge patch of `/status`                                             |
//! | `PatchLabels`       | merge patch of `metadata.labels`, only the listed keys (null removes) |
//! | `AddOwnerReference` | merge patch of the whole `ownerReferences` list                      |
//! | `Add/RemoveFinalizer` | merge patch of the whole `finalizers` list                         |
//! | `Delete`            | delete; 404 counts as done                                           |
//! | `Event`             | `events.k8s.io/v1` Event through kube's `Recorder`                   |
//!
//! A write whose effect carries a resourceVersion sends it as `metadata.resourceVersion`, chained
//! over this run's own writes by `model::write::WriteChain` (the simulator's executor does the
//! same). Lists are replaced whole under that guard, so a concurrent change is a 409 and never a
//! lost update. Effects run in order; the first failed write stops the rest. An Event is
//! best effort: one that fails (403 in a namespace being deleted, 404 on a series whose Event is
//! gone) is logged and the effects after it still run.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use model::effect::{Effect, EventType, Kind, Object, ObjectRef, Status};
use model::observed::Observed;
use model::write::WriteChain;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// How long one request may take: a reconcile holds its pair's lock, and kube's client would
/// wait for minutes (its timeout is set for watches).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The field manager of every server-side apply and patch.
pub const FIELD_MANAGER: &str = "ferrofluid";

/// Sends effects to the API server.
#[derive(Clone)]
pub struct Executor {
    client: Client,
    recorder: Recorder,
    leader: watch::Receiver<bool>,
}

/// What an executor run changed: objects it created, and the resourceVersion its last write left
/// on each object it wrote.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Written {
    /// Objects created (absent from the observation).
    pub created: Vec<ObjectRef>,
    /// Object → (the resourceVersion the observation had, the one the API server returned for
    /// the last write to it).
    pub versions: BTreeMap<ObjectRef, (Option<String>, String)>,
    /// Objects whose last finalizer a write removed while they were being deleted: they go.
    pub released: Vec<ObjectRef>,
}

/// What one executor run knows about the objects it writes: the observed snapshot, overlaid
/// with the objects the API server returned for this run's own writes.
struct Known<'a> {
    observed: &'a Observed,
    latest: BTreeMap<ObjectRef, DynamicObject>,
    /// The guards of this run's writes.
    chain: WriteChain,
}

impl Executor {
    /// An executor writing through `client` while `leader` reads true.
    pub fn new(client: Client, reporter: Reporter, leader: watch::Receiver<bool>) -> Self {
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, recorder, leader }
    }

    /// Executes `effects` in order against the cluster observed as `observed`. Returns the number
    /// of requests sent; stops at the first error.
    pub async fn execute(&self, effects: &[Effect], observed: &Observed) -> Result<usize> {
        self.execute_recording(effects, observed, &mut Written::default()).await
    }

    /// [`Self::execute`], recording in `record` each object an apply created (one `observed`
    /// did not hold) and the resourceVersion each write left on its object, also when a later
    /// effect fails.
    pub async fn execute_recording(
        &self,
        effects: &[Effect],
        observed: &Observed,
        record: &mut Written,
    ) -> Result<usize> {
        let mut known = Known { observed, latest: BTreeMap::new(), chain: WriteChain::new() };
        let mut sent = 0;
        for effect in effects {
            self.ensure_leader()?;
            sent += 1;
            let request = self.execute_one(effect, &mut known);
            let answered = tokio::time::timeout(REQUEST_TIMEOUT, request).await.unwrap_or_else(|_| {
                Err(Error::Timeout { target: effect.target(), after_ms: REQUEST_TIMEOUT.as_millis() as u64 })
            });
            match answered {
                Ok(()) => {
                    record.created.extend(observed.created_by(effect));
                    let target = effect.target();
                    if let Some(latest) = known.latest.get(&target) {
                        let meta = &latest.metadata;
                        let going =
                            meta.deletion_timestamp.is_some() && meta.finalizers.as_ref().is_none_or(Vec::is_empty);
                        if going {
                            record.released.push(target);
                        } else if let Some(rv) = meta.resource_version.clone() {
                            let before = observed.meta_of(&target).and_then(|m| m.resource_version.clone());
                            record.versions.insert(target, (before, rv));
                        }
                    }
                }
                // An Event is best effort, whatever went wrong with it.
                Err(error) if !effect.is_write() => tracing::warn!(%error, "event not recorded; the reconcile goes on"),
                Err(error) => return Err(error),
            }
        }
        Ok(sent)
    }

    /// Checked before every request: losing the lease stops writes between two requests.
    fn ensure_leader(&self) -> Result<()> {
        if *self.leader.borrow() { Ok(()) } else { Err(Error::NotLeader) }
    }

    fn api(&self, target: &ObjectRef) -> Api<DynamicObject> {
        let resource = api_resource(target.kind);
        if target.kind.is_cluster_scoped() {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &target.namespace, &resource)
        }
    }

    async fn execute_one(&self, effect: &Effect, known: &mut Known<'_>) -> Result<()> {
        let target = effect.target();
        tracing::debug!(verb = effect.verb(), %target, "request");
        let write = |source| Error::from_write(&target, source);
        let guard = known.chain.guard_of(effect);
        match effect {
            Effect::Apply(object) => {
                let body = object_json(object).map_err(|source| Error::Serialize { target: target.clone(), source })?;
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let applied =
                    self.api(&target).patch(&target.name, &params, &Patch::Apply(&body)).await.map_err(write)?;
                known.record(effect, applied);
            }
            Effect::PatchStatus { status, .. } => {
                let new = status_json(status).map_err(|source| Error::Serialize { target: target.clone(), source })?;
                let patch = match known.status(&target) {
                    Some(old) => replacing_patch(&old, &new),
                    None => new,
                };
                let mut body = json!({ "status": patch });
                if let Some(rv) = &guard {
                    body["metadata"] = json!({ "resourceVersion": rv });
                }
                let params = PatchParams::default();
                let patched =
                    self.api(&target).patch_status(&target.name, &params, &Patch::Merge(&body)).await.map_err(write)?;
                known.record(effect, patched);
            }
            Effect::PatchLabels { labels, .. } => {
                let labels: Map<String, Value> =
                    labels.iter().map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String))).collect();
                let body = guarded(json!({ "metadata": { "labels": labels } }), guard.as_deref());
                let patched = self
                    .api(&target)
                    .patch(&target.name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                    .map_err(write)?;
                known.record(effect, patched);
            }
            Effect::AddOwnerReference { owner, .. } => {
                let meta = known.meta(&target)?;
                let mut owners = meta.owner_references.clone().unwrap_or_default();
                if !owners.iter().any(|o| o.uid == owner.uid) {
                    owners.push(owner.clone());
                }
                let body = guarded(json!({ "metadata": { "ownerReferences": owners } }), guard.as_deref());
                let patched = self
                    .api(&target)
                    .patch(&target.name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                    .map_err(write)?;
                known.record(effect, patched);
            }
            Effect::AddFinalizer { finalizer, .. } | Effect::RemoveFinalizer { finalizer, .. } => {
                let meta = known.meta(&target)?;
                let mut finalizers = meta.finalizers.clone().unwrap_or_default();
                finalizers.retain(|f| f != finalizer);
                if matches!(effect, Effect::AddFinalizer { .. }) {
                    finalizers.push(finalizer.clone());
                }
                let body = guarded(json!({ "metadata": { "finalizers": finalizers } }), guard.as_deref());
                let patched = self
                    .api(&target)
                    .patch(&target.name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                    .map_err(write)?;
                known.record(effect, patched);
            }
            Effect::Delete(_) => match self.api(&target).delete(&target.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => return Err(write(source)),
            },
            Effect::Event { type_, reason, message, .. } => {
                let event = Event {
                    type_: match type_ {
                        EventType::Normal => KubeEventType::Normal,
                        EventType::Warning => KubeEventType::Warning,
                    },
                    reason: reason.clone(),
                    note: Some(message.clone()),
                    // The recorder folds events with the same (reason, action) about one object into
                    // a series, keeping the first note: give each distinct message its own action so
                    // two different warnings with one reason are both recorded.
                    action: format!("Reconcile-{:08x}", model::labels::fnv1a_32(message.as_bytes())),
                    secondary: None,
                };
                let reference = known.reference(&target);
                self.recorder
                    .publish(&event, &reference)
                    .await
                    .map_err(|source| Error::Event { target: target.clone(), source: Box::new(source) })?;
            }
        }
        Ok(())
    }
}

impl Known<'_> {
    /// Keeps what the API server returned for `effect`'s write, and where it left the chain.
    fn record(&mut self, effect: &Effect, object: DynamicObject) {
        self.chain.record_effect(effect, object.metadata.resource_version.as_deref());
        self.latest.insert(effect.target(), object);
    }

    fn meta(&self, target: &ObjectRef) -> Result<ObjectMeta> {
        if let Some(latest) = self.latest.get(target) {
            return Ok(latest.metadata.clone());
        }
        self.observed.meta_of(target).cloned().ok_or_else(|| Error::NotCached { target: target.clone() })
    }

    fn status(&self, target: &ObjectRef) -> Option<Value> {
        if let Some(latest) = self.latest.get(target) {
            return latest.data.get("status").cloned();
        }
        let observed = self.observed;
        // Only the object the observation holds under this very name.
        observed.meta_of(target)?;
        let status = match target.kind {
            Kind::Dataset => observed.dataset.as_deref()?.status.as_ref().map(serde_json::to_value),
            Kind::JuiceFSRuntime => observed.runtime.as_deref()?.status.as_ref().map(serde_json::to_value),
            _ => None,
        };
        status.and_then(|s| s.ok())
    }

    fn reference(&self, target: &ObjectRef) -> ObjectReference {
        let resource = api_resource(target.kind);
        let uid = self.meta(target).ok().and_then(|m| m.uid);
        ObjectReference {
            api_version: Some(resource.api_version),
            kind: Some(resource.kind),
            name: Some(target.name.to_string()),
            namespace: (!target.namespace.is_empty()).then(|| target.namespace.to_string()),
            uid,
            ..Default::default()
        }
    }
}

/// A metadata patch `body` with `metadata.resourceVersion` set to `guard`, if any: the API
/// server then refuses it with 409 when the object moved on.
fn guarded(mut body: Value, guard: Option<&str>) -> Value {
    if let Some(rv) = guard {
        body["metadata"]["resourceVersion"] = json!(rv);
    }
    body
}

/// Group, version, kind and plural of each kind the model writes.
pub fn api_resource(kind: Kind) -> ApiResource {
    use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
    use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
    match kind {
        Kind::Dataset => ApiResource::erase::<model::api::Dataset>(&()),
        Kind::JuiceFSRuntime => ApiResource::erase::<model::api::JuiceFSRuntime>(&()),
        Kind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        Kind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
        Kind::PersistentVolume => ApiResource::erase::<PersistentVolume>(&()),
        Kind::PersistentVolumeClaim => ApiResource::erase::<PersistentVolumeClaim>(&()),
        Kind::Node => ApiResource::erase::<Node>(&()),
        Kind::Pod => ApiResource::erase::<Pod>(&()),
    }
}

fn object_json(object: &Object) -> serde_json::Result<Value> {
    match object {
        Object::StatefulSet(o) => serde_json::to_value(o),
        Object::DaemonSet(o) => serde_json::to_value(o),
        Object::PersistentVolume(o) => serde_json::to_value(o),
        Object::PersistentVolumeClaim(o) => serde_json::to_value(o),
    }
}

fn status_json(status: &Status) -> serde_json::Result<Value> {
    match status {
        Status::Dataset(s) => serde_json::to_value(s),
        Status::Runtime(s) => serde_json::to_value(s),
    }
}

/// A JSON merge patch that turns `old` into `new`: `new` itself, plus `null` for every key of
/// `old` that `new` lacks (recursively), because the effect replaces the whole status and a
/// plain merge would keep fields the model dropped.
pub fn replacing_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut out = Map::new();
            for (key, value) in new {
                let merged = match old.get(key) {
                    Some(before) => replacing_patch(before, value),
                    None => value.clone(),
                };
                out.insert(key.clone(), merged);
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                out.insert(key.clone(), Value::Null);
            }
            Value::Object(out)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_patch_nulls_dropped_keys_at_every_depth() {
        let old = json!({"phase": "Bound", "cacheStates": {"cached": "1GiB", "old": "x"}, "ufsTotal": "2GiB"});
        let new = json!({"phase": "NotBound", "cacheStates": {"cached": "0B"}});
        assert_eq!(
            replacing_patch(&old, &new),
            json!({"phase": "NotBound", "cacheStates": {"cached": "0B", "old": null}, "ufsTotal": null})
        );
    }

    #[test]
    fn replacing_patch_replaces_lists_whole() {
        let old = json!({"conditions": [{"type": "Ready"}, {"type": "Other"}]});
        let new = json!({"conditions": [{"type": "Ready"}]});
        assert_eq!(replacing_patch(&old, &new), new);
    }
}
