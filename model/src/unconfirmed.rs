//! What each pair's reconciles created that the driver's cache does not show yet.
//!
//! A watch delivers a controller's own writes back with a lag, so an observation can miss an
//! object the controller created a moment ago; teardown deletes only what it sees and would let
//! the runtime go while such an object exists (`Observed::unconfirmed_creates`). These are the
//! expectations a controller keeps of its own writes. Both drivers keep them with this type: the
//! simulator as is, the controller behind a lock.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::effect::{Effect, Kind, ObjectRef};
use crate::engine::RuntimeResource;
use crate::observed::Observed;
use crate::watch::PairKey;

impl<R: RuntimeResource> Observed<R> {
    /// The metadata of `target` as observed, if this observation holds it.
    pub fn meta_of(&self, target: &ObjectRef) -> Option<&ObjectMeta> {
        let meta = match target.kind {
            Kind::Dataset => self.dataset.as_deref().map(|o| &o.metadata),
            Kind::JuiceFSRuntime => self.runtime.as_deref().map(|o| o.meta()),
            Kind::StatefulSet => self.workers.as_deref().map(|o| &o.metadata),
            Kind::DaemonSet => self.fuse.as_deref().map(|o| &o.metadata),
            Kind::PersistentVolume => self.persistent_volume.as_deref().map(|o| &o.metadata),
            Kind::PersistentVolumeClaim => self.persistent_volume_claim.as_deref().map(|o| &o.metadata),
            Kind::Node | Kind::Pod => None,
        }?;
        let named = meta.name.as_deref() == Some(target.name.as_str())
            && meta.namespace.as_deref().unwrap_or_default() == target.namespace;
        named.then_some(meta)
    }

    /// The object `effect` creates, seen from this observation: the target of an apply that the
    /// observation does not hold.
    pub fn created_by(&self, effect: &Effect) -> Option<ObjectRef> {
        let Effect::Apply(object) = effect else { return None };
        let target = object.object_ref();
        self.meta_of(&target).is_none().then_some(target)
    }
}

/// Objects created per pair, until the driver's cache holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnconfirmedCreates {
    by_pair: BTreeMap<PairKey, BTreeSet<ObjectRef>>,
}

impl UnconfirmedCreates {
    /// Remembers objects a reconcile of `pair` created.
    pub fn record(&mut self, pair: &PairKey, created: impl IntoIterator<Item = ObjectRef>) {
        let mut created = created.into_iter().peekable();
        if created.peek().is_some() {
            self.by_pair.entry(pair.clone()).or_default().extend(created);
        }
    }

    /// The objects of `pair` the cache does not hold yet (`holds` answers for the cache); the
    /// others are forgotten.
    pub fn unseen(&mut self, pair: &PairKey, holds: impl Fn(&ObjectRef) -> bool) -> Vec<ObjectRef> {
        let Some(created) = self.by_pair.get_mut(pair) else { return Vec::new() };
        created.retain(|key| !holds(key));
        let unseen = created.iter().cloned().collect();
        if created.is_empty() {
            self.by_pair.remove(pair);
        }
        unseen
    }

    /// Forgets everything (a restart loses its expectations, and its relisted cache is fresh).
    pub fn clear(&mut self) {
        self.by_pair.clear();
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PersistentVolume;

    use super::*;
    use crate::effect::Object;

    #[test]
    fn a_created_object_is_unseen_until_the_cache_holds_it() {
        let mut expectations = UnconfirmedCreates::default();
        let pair = PairKey::new("default", "demo");
        let other = PairKey::new("default", "other");
        let volume = ObjectRef::cluster(Kind::PersistentVolume, "default-demo");
        let claim = ObjectRef::namespaced(Kind::PersistentVolumeClaim, "default", "demo");
        expectations.record(&pair, [volume.clone(), claim.clone()]);
        expectations.record(&other, []);
        assert_eq!(expectations.unseen(&pair, |_| false), [volume.clone(), claim.clone()]);
        assert!(expectations.unseen(&other, |_| false).is_empty(), "each pair its own");
        let awaited = std::slice::from_ref(&volume);
        assert_eq!(expectations.unseen(&pair, |key| *key == claim), awaited, "the claim showed up");
        assert_eq!(expectations.unseen(&pair, |_| false), awaited, "and is not awaited again");
        assert!(expectations.unseen(&pair, |_| true).is_empty());
        assert_eq!(expectations, UnconfirmedCreates::default(), "nothing kept once everything was seen");
    }

    #[test]
    fn an_apply_creates_what_the_observation_does_not_hold() {
        let mut observed: Observed = Observed::empty("default", "demo");
        let volume = |name: &str| PersistentVolume {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            ..PersistentVolume::default()
        };
        observed.persistent_volume = Some(std::sync::Arc::new(volume("default-demo")));
        let apply = |name: &str| Effect::Apply(Object::PersistentVolume(Box::new(volume(name))));
        assert_eq!(observed.created_by(&apply("default-demo")), None, "observed: an update");
        assert_eq!(
            observed.created_by(&apply("default-other")),
            Some(ObjectRef::cluster(Kind::PersistentVolume, "default-other")),
            "another name is not the observed one"
        );
        let delete = Effect::Delete(ObjectRef::cluster(Kind::PersistentVolume, "default-other"));
        assert_eq!(observed.created_by(&delete), None, "only applies create");
    }
}
