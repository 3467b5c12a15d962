//! In-flight guards: one call per volume id (stage/unstage) or target path (publish/unpublish).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{CsiError, Result};

/// The set of keys with a call in flight. The CSI spec lets a plugin answer `ABORTED` to a
/// second call on the same volume while one is running; the CO retries it.
#[derive(Debug, Default, Clone)]
pub struct InFlight {
    keys: Arc<Mutex<BTreeSet<String>>>,
}

/// Holds a key until dropped.
#[derive(Debug)]
pub struct Guard {
    keys: Arc<Mutex<BTreeSet<String>>>,
    key: String,
}

impl InFlight {
    /// Takes the publish target `target_path` (with or without a trailing `/`: one directory),
    /// or fails with [`CsiError::Aborted`] naming it. Publish, unpublish and FUSE recovery of a
    /// target all go through here, so they exclude each other.
    pub fn try_acquire_target(&self, target_path: &str) -> Result<Guard> {
        self.try_acquire(format!("target {}", target_path.trim_end_matches('/')), &format!("target {target_path}"))
    }

    /// Takes `key`, or fails with [`CsiError::Aborted`] naming `what` if it is taken.
    pub fn try_acquire(&self, key: String, what: &str) -> Result<Guard> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if !keys.insert(key.clone()) {
            return Err(CsiError::Aborted(what.to_string()));
        }
        Ok(Guard { keys: Arc::clone(&self.keys), key })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_one_key_with_or_without_its_trailing_slash() {
        let targets = InFlight::default();
        let held = targets.try_acquire_target("/pods/p/mount").expect("free");
        let refused = targets.try_acquire_target("/pods/p/mount/").expect_err("taken");
        assert!(refused.to_string().contains("/pods/p/mount/"), "{refused}");
        assert!(targets.try_acquire_target("/pods/q/mount").is_ok(), "another target is free");
        drop(held);
        assert!(targets.try_acquire_target("/pods/p/mount/").is_ok(), "released with its guard");
    }
}
