//! Condition types, reasons, and upserts that keep timestamps still unless something changed.

use crate::api::{DatasetCondition, RuntimeCondition};
use crate::time::Millis;

/// Dataset condition: bound to a ready runtime (`True`) or why not (`False`).
pub const DATASET_READY: &str = "Ready";
/// Dataset condition: deletion waits for pods that use the PVC.
pub const DATASET_DELETION_BLOCKED: &str = "DeletionBlocked";

/// Runtime condition: the worker StatefulSet exists.
pub const WORKERS_INITIALIZED: &str = "WorkersInitialized";
/// Runtime condition: at least one worker (or all, if zero wanted) is ready.
pub const WORKERS_READY: &str = "WorkersReady";
/// Runtime condition: the last replica change added workers.
pub const WORKERS_SCALED_OUT: &str = "WorkersScaledOut";
/// Runtime condition: the last replica change removed workers.
pub const WORKERS_SCALED_IN: &str = "WorkersScaledIn";
/// Runtime condition: the FUSE DaemonSet exists.
pub const FUSES_INITIALIZED: &str = "FusesInitialized";
/// Runtime condition: every requested FUSE pod is ready.
pub const FUSES_READY: &str = "FusesReady";

/// The state of one condition as a reconcile wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted<'a> {
    /// Condition type.
    pub type_: &'a str,
    /// True or False.
    pub status: bool,
    /// One-word reason.
    pub reason: &'a str,
    /// A sentence a person can act on.
    pub message: String,
}

fn status_text(status: bool) -> String {
    if status { "True" } else { "False" }.to_string()
}

/// The parts of a condition record that [`set`] reads and writes; dataset and runtime
/// conditions differ only in the name of their "last written" time.
pub trait ConditionRecord {
    /// A new record, written at `now`.
    fn create(wanted: Wanted<'_>, now: Millis) -> Self;
    /// Its type.
    fn type_name(&self) -> &str;
    /// Status, reason, message, last transition time and last written time, to update.
    fn parts_mut(&mut self) -> ConditionParts<'_>;
}

/// Mutable views of a condition's fields.
pub struct ConditionParts<'a> {
    /// `True`/`False`.
    pub status: &'a mut String,
    /// Reason.
    pub reason: &'a mut Option<String>,
    /// Message.
    pub message: &'a mut Option<String>,
    /// When the status last changed.
    pub last_transition_time: &'a mut Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the condition was last written.
    pub last_written_time: &'a mut Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// Sets a condition. Times move only when status, reason or message change, so a reconcile at
/// the fixpoint writes nothing.
pub fn set<C: ConditionRecord>(conditions: &mut Vec<C>, wanted: Wanted<'_>, now: Millis) {
    let status = status_text(wanted.status);
    let Some(existing) = conditions.iter_mut().find(|c| c.type_name() == wanted.type_) else {
        conditions.push(C::create(wanted, now));
        return;
    };
    let parts = existing.parts_mut();
    let same = *parts.status == status
        && parts.reason.as_deref() == Some(wanted.reason)
        && parts.message.as_deref() == Some(wanted.message.as_str());
    if same {
        return;
    }
    if *parts.status != status {
        *parts.last_transition_time = Some(now.to_time());
    }
    *parts.status = status;
    *parts.reason = Some(wanted.reason.to_string());
    *parts.message = Some(wanted.message);
    *parts.last_written_time = Some(now.to_time());
}

/// Removes the condition of `type_`, if present.
pub fn remove<C: ConditionRecord>(conditions: &mut Vec<C>, type_: &str) {
    conditions.retain(|c| c.type_name() != type_);
}

impl ConditionRecord for DatasetCondition {
    fn create(wanted: Wanted<'_>, now: Millis) -> Self {
        DatasetCondition {
            type_: wanted.type_.to_string(),
            status: status_text(wanted.status),
            reason: Some(wanted.reason.to_string()),
            message: Some(wanted.message),
            last_update_time: Some(now.to_time()),
            last_transition_time: Some(now.to_time()),
        }
    }
    fn type_name(&self) -> &str {
        &self.type_
    }
    fn parts_mut(&mut self) -> ConditionParts<'_> {
        ConditionParts {
            status: &mut self.status,
            reason: &mut self.reason,
            message: &mut self.message,
            last_transition_time: &mut self.last_transition_time,
            last_written_time: &mut self.last_update_time,
        }
    }
}

impl ConditionRecord for RuntimeCondition {
    fn create(wanted: Wanted<'_>, now: Millis) -> Self {
        RuntimeCondition {
            type_: wanted.type_.to_string(),
            status: status_text(wanted.status),
            reason: Some(wanted.reason.to_string()),
            message: Some(wanted.message),
            last_probe_time: Some(now.to_time()),
            last_transition_time: Some(now.to_time()),
        }
    }
    fn type_name(&self) -> &str {
        &self.type_
    }
    fn parts_mut(&mut self) -> ConditionParts<'_> {
        ConditionParts {
            status: &mut self.status,
            reason: &mut self.reason,
            message: &mut self.message,
            last_transition_time: &mut self.last_transition_time,
            last_written_time: &mut self.last_probe_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(status: bool, message: &str) -> Wanted<'static> {
        Wanted { type_: DATASET_READY, status, reason: "R", message: message.to_string() }
    }

    #[test]
    fn unchanged_condition_keeps_its_times() {
        let mut conditions: Vec<DatasetCondition> = Vec::new();
        set(&mut conditions, wanted(true, "ok"), Millis(1_000));
        let before = conditions.clone();
        set(&mut conditions, wanted(true, "ok"), Millis(9_000));
        assert_eq!(conditions, before);
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut conditions: Vec<DatasetCondition> = Vec::new();
        set(&mut conditions, wanted(false, "waiting 0/1"), Millis(1_000));
        set(&mut conditions, wanted(false, "waiting 1/2"), Millis(2_000));
        assert_eq!(conditions[0].last_transition_time, Some(Millis(1_000).to_time()));
        assert_eq!(conditions[0].last_update_time, Some(Millis(2_000).to_time()));
        set(&mut conditions, wanted(true, "ok"), Millis(3_000));
        assert_eq!(conditions[0].last_transition_time, Some(Millis(3_000).to_time()));
        remove(&mut conditions, DATASET_READY);
        assert!(conditions.is_empty());
    }

    #[test]
    fn runtime_conditions_follow_the_same_rule() {
        let mut conditions: Vec<RuntimeCondition> = Vec::new();
        let ready = |status| Wanted { type_: WORKERS_READY, status, reason: "R", message: "m".into() };
        set(&mut conditions, ready(false), Millis(1_000));
        set(&mut conditions, ready(false), Millis(2_000));
        assert_eq!(conditions[0].last_probe_time, Some(Millis(1_000).to_time()));
        set(&mut conditions, ready(true), Millis(3_000));
        assert_eq!(conditions[0].last_transition_time, Some(Millis(3_000).to_time()));
        remove(&mut conditions, WORKERS_READY);
        assert!(conditions.is_empty());
    }
}
