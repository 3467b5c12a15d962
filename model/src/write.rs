//! The write contract both executors honour: a guarded write carries the resourceVersion it was
//! decided on, and one reconcile's own guarded writes pass the guard on to its later writes.
//!
//! An effect's `resource_version` is what the model read when it decided (`None`: unguarded,
//! as for node labels, which kubelets write all the time). A reconcile that patches a dataset's
//! status and then its finalizers decided both on one version; the first write makes it stale,
//! so the second would conflict with ourselves. [`WriteChain`] therefore sends the version the
//! first write left, but only while every write of the run to that object was guarded: then
//! nobody else wrote in between. An unguarded write may have raced someone, and ends the chain.

use std::collections::BTreeMap;

use crate::effect::{Effect, ObjectRef};

/// One object's chain: the version its writes were decided on, and the version the last left.
type Link = (String, String);

/// The guards of one reconcile's writes, object by object.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteChain {
    /// Per written object: `Some` while every write to it was guarded, `None` once one was not.
    links: BTreeMap<ObjectRef, Option<Link>>,
}

impl WriteChain {
    /// A chain for a new reconcile: nothing written yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The resourceVersion to send with `effect` (the precondition of the request), or `None`
    /// for an unguarded write.
    pub fn guard_of(&self, effect: &Effect) -> Option<String> {
        self.guard(&effect.target(), effect.precondition())
    }

    /// The resourceVersion to send with a write to `target` decided on `decided_on`: the one
    /// our own guarded writes since left, else `decided_on` itself (stale if anyone else wrote).
    pub fn guard(&self, target: &ObjectRef, decided_on: Option<&str>) -> Option<String> {
        let decided_on = decided_on?;
        match self.links.get(target) {
            Some(Some((from, now))) if from == decided_on => Some(now.clone()),
            _ => Some(decided_on.to_string()),
        }
    }

    /// Records that a write to `target` decided on `decided_on` succeeded and left the object
    /// at `now` (`None`: unknown, or the object went).
    pub fn record(&mut self, target: &ObjectRef, decided_on: Option<&str>, now: Option<&str>) {
        let link = match (decided_on, self.links.get(target)) {
            (None, _) | (Some(_), Some(None)) => None,
            (Some(_), Some(Some((from, _)))) => now.map(|now| (from.clone(), now.to_string())),
            (Some(from), None) => now.map(|now| (from.to_string(), now.to_string())),
        };
        self.links.insert(target.clone(), link);
    }

    /// Records a successful `effect` that left its object at `now`.
    pub fn record_effect(&mut self, effect: &Effect, now: Option<&str>) {
        if effect.is_write() && !matches!(effect, Effect::Delete(_)) {
            self.record(&effect.target(), effect.precondition(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::effect::Kind;

    fn dataset() -> ObjectRef {
        ObjectRef::namespaced(Kind::Dataset, "team", "data")
    }

    #[test]
    fn our_own_guarded_writes_carry_the_guard_forward() {
        let mut chain = WriteChain::new();
        assert_eq!(chain.guard(&dataset(), Some("5")), Some("5".into()));
        chain.record(&dataset(), Some("5"), Some("6"));
        assert_eq!(chain.guard(&dataset(), Some("5")), Some("6".into()), "decided on 5, which we moved to 6");
        chain.record(&dataset(), Some("5"), Some("7"));
        assert_eq!(chain.guard(&dataset(), Some("5")), Some("7".into()));
        assert_eq!(chain.guard(&dataset(), Some("4")), Some("4".into()), "decided on another version: stays stale");
        assert_eq!(chain.guard(&dataset(), None), None, "an unguarded write stays unguarded");
        let other = ObjectRef::namespaced(Kind::JuiceFSRuntime, "team", "data");
        assert_eq!(chain.guard(&other, Some("5")), Some("5".into()), "chains are per object");
    }

    #[test]
    fn an_unguarded_write_ends_the_chain_for_good() {
        let mut chain = WriteChain::new();
        chain.record(&dataset(), Some("5"), Some("6"));
        chain.record(&dataset(), None, Some("7"));
        assert_eq!(chain.guard(&dataset(), Some("5")), Some("5".into()), "someone may have written before 7");
        chain.record(&dataset(), Some("7"), Some("8"));
        assert_eq!(chain.guard(&dataset(), Some("7")), Some("7".into()), "the chain does not restart");
    }

    #[test]
    fn a_write_that_left_no_version_ends_the_chain() {
        let mut chain = WriteChain::new();
        chain.record(&dataset(), Some("5"), None);
        assert_eq!(chain.guard(&dataset(), Some("5")), Some("5".into()));
    }
}
