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
