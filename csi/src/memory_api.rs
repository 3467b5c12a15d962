//! In-memory stand-ins for the API server, for tests: node labels and recorded events.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use model::node::{DatasetRef, RecoverEvent};

use crate::apiserver::{EventSink, NodeLabeler};
use crate::error::{CsiError, Result};

/// An event [`MemoryApi`] recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The reporting node.
    pub node: String,
    /// The Dataset it is about.
    pub dataset: DatasetRef,
    /// The event.
    pub event: RecoverEvent,
}

/// Labels and events kept in memory, for tests. `fail_events` makes every event fail, to show
/// that a failing sink never stops a recovery.
#[derive(Debug, Default, Clone)]
pub struct MemoryApi {
    nodes: Arc<Mutex<BTreeMap<String, BTreeMap<String, String>>>>,
    events: Arc<Mutex<Vec<RecordedEvent>>>,
    fail_events: Arc<std::sync::atomic::AtomicBool>,
}

impl MemoryApi {
    /// The labels of `node` now.
    pub fn labels(&self, node: &str) -> BTreeMap<String, String> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner).get(node).cloned().unwrap_or_default()
    }

    /// The events recorded so far, oldest first.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Makes every later event fail (`true`) or succeed again (`false`).
    pub fn fail_events(&self, fail: bool) {
        self.fail_events.store(fail, std::sync::atomic::Ordering::SeqCst);
    }
}

impl NodeLabeler for MemoryApi {
    async fn set_label(&self, node: &str, key: &str, value: &str) -> Result<()> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.entry(node.to_string()).or_default().insert(key.to_string(), value.to_string());
        Ok(())
    }

    async fn remove_label(&self, node: &str, key: &str) -> Result<()> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(labels) = nodes.get_mut(node) {
            labels.remove(key);
        }
        Ok(())
    }
}

impl EventSink for MemoryApi {
    async fn record(&self, node: &str, dataset: &DatasetRef, event: &RecoverEvent) -> Result<()> {
        if self.fail_events.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(CsiError::Internal(format!("event {} refused (test)", event.reason)));
        }
        self.events.lock().unwrap_or_else(PoisonError::into_inner).push(RecordedEvent {
            node: node.to_string(),
            dataset: dataset.clone(),
            event: event.clone(),
        });
        Ok(())
    }
}
