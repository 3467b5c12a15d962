//! The garbage collector: background cascading deletion through ownerReferences.
//!
//! A dependent is deleted once none of its owners exists (by UID); a dependent that keeps a
//! live owner loses only the dangling reference. Deleting sets `deletionTimestamp` when the
//! dependent has finalizers, so a runtime owned by a deleted dataset runs its own teardown.

use model::effect::ObjectRef;

use crate::sim::Sim;
use crate::trace;

impl Sim {
    /// Collects the dependents of the vanished owner `uid`.
    pub(crate) fn collect(&mut self, uid: &str) {
        if self.api.store.by_uid(uid).is_some() {
            return;
        }
        let dependents: Vec<ObjectRef> = self.api.store.dependents(uid).cloned().collect();
        for dependent in dependents {
            self.collect_orphan(&dependent);
        }
    }

    /// Deletes `key` if none of its owners exists; drops dangling references otherwise.
    pub(crate) fn collect_orphan(&mut self, key: &ObjectRef) {
        let Some(obj) = self.api.store.get(key) else { return };
        let owners = obj.meta().owner_references.clone().unwrap_or_default();
        if owners.is_empty() {
            return;
        }
        let live: Vec<_> = owners.iter().filter(|o| self.api.store.by_uid(&o.uid).is_some()).cloned().collect();
        if live.is_empty() {
            if obj.is_deleting() {
                return;
            }
            let owner = &owners[0];
            trace!(self, "gc", key.to_string(), "delete: owner {}/{} is gone", owner.kind, owner.name);
            let _ = self.api.delete(key, self.clock.wall());
        } else if live.len() < owners.len() {
            let _ = self.api.modify(key, None, |obj| {
                obj.meta_mut().owner_references = Some(live);
                true
            });
        }
    }
}
