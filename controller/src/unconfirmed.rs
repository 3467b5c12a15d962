//! What each pair's reconciles created that the reflector stores do not show yet.
//!
//! A watch delivers a controller's own writes back with a lag, so an observation can miss an
//! object the controller created a moment ago. The model's teardown deletes only what it sees,
//! and would let the runtime go while such an object still exists (`Observed::unconfirmed_creates`).
//! These are the expectations a controller keeps of its own writes, as the simulator's do.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use model::effect::ObjectRef;

use crate::triggers::PairKey;

/// Objects created per pair, until the stores hold them.
#[derive(Debug, Default)]
pub struct UnconfirmedCreates {
    by_pair: Mutex<HashMap<PairKey, BTreeSet<ObjectRef>>>,
}

impl UnconfirmedCreates {
    /// Remembers objects a reconcile of `pair` created.
    pub fn record(&self, pair: &PairKey, created: impl IntoIterator<Item = ObjectRef>) {
        let mut created = created.into_iter().peekable();
        if created.peek().is_none() {
            return;
        }
        self.lock().entry(pair.clone()).or_default().extend(created);
    }

    /// The objects of `pair` the stores do not hold yet (`holds` answers for the stores); the
    /// others are forgotten.
    pub fn unseen(&self, pair: &PairKey, holds: impl Fn(&ObjectRef) -> bool) -> Vec<ObjectRef> {
        let mut by_pair = self.lock();
        let Some(created) = by_pair.get_mut(pair) else { return Vec::new() };
        created.retain(|key| !holds(key));
        let unseen = created.iter().cloned().collect();
        if created.is_empty() {
            by_pair.remove(pair);
        }
        unseen
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PairKey, BTreeSet<ObjectRef>>> {
        // A poisoned map only loses expectations: teardown then trusts the stores, as before.
        self.by_pair.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use model::effect::Kind;

    use super::*;

    #[test]
    fn a_created_object_is_unseen_until_the_stores_hold_it() {
        let expectations = UnconfirmedCreates::default();
        let pair = PairKey::new("default", "demo");
        let other = PairKey::new("default", "other");
        let volume = ObjectRef::cluster(Kind::PersistentVolume, "default-demo");
        let claim = ObjectRef::namespaced(Kind::PersistentVolumeClaim, "default", "demo");
        expectations.record(&pair, [volume.clone(), claim.clone()]);
        expectations.record(&other, []);
        assert_eq!(expectations.unseen(&pair, |_| false), [volume.clone(), claim.clone()]);
        assert!(expectations.unseen(&other, |_| false).is_empty(), "each pair its own");
        // The claim shows up: it is forgotten, the volume is still awaited.
        let awaited = std::slice::from_ref(&volume);
        assert_eq!(expectations.unseen(&pair, |key| *key == claim), awaited);
        assert_eq!(expectations.unseen(&pair, |_| false), awaited, "the claim is not awaited again");
        assert!(expectations.unseen(&pair, |_| true).is_empty());
        assert!(expectations.lock().is_empty(), "nothing kept once everything was seen");
    }
}
