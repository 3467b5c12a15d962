//! How an effect reads in a trace, a log line or a test: one line with the fields a person checks.

use std::fmt;

use crate::effect::{Effect, Object, Status};

/// A one-line description of the effect (the simulator's trace and the controller's tests print it).
impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe(self))
    }
}

fn describe(effect: &Effect) -> String {
    match effect {
        Effect::Apply(object) => {
            let what = match object {
                Object::StatefulSet(sts) => {
                    format!("replicas={}", sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1))
                }
                Object::DaemonSet(ds) => {
                    let selector = ds
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.spec.as_ref())
                        .and_then(|s| s.node_selector.as_ref())
                        .map(|sel| sel.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
                        .unwrap_or_default();
                    format!("nodeSelector {selector}")
                }
                Object::PersistentVolume(pv) => {
                    let path = pv
                        .spec
                        .as_ref()
                        .and_then(|s| s.csi.as_ref())
                        .and_then(|c| c.volume_attributes.as_ref())
                        .and_then(|a| a.get(crate::volume::ATTR_FLUID_PATH).cloned())
                        .unwrap_or_default();
                    format!("fluid_path={path}")
                }
                Object::PersistentVolumeClaim(pvc) => {
                    format!("volumeName={}", pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default())
                }
            };
            format!("apply {} ({what})", object.object_ref())
        }
        Effect::PatchStatus { status, .. } => match status {
            Status::Dataset(s) => {
                let conditions: Vec<String> = s
                    .conditions
                    .iter()
                    .map(|c| {
                        format!(
                            "{}={}{}",
                            c.type_,
                            c.status,
                            c.reason.as_deref().map(|r| format!("({r})")).unwrap_or_default()
                        )
                    })
                    .collect();
                let cached = s.cache_states.get("cached").map(|c| format!(" cached={c}")).unwrap_or_default();
                format!("status phase={} {}{cached}", phase_or_dash(s.phase.as_str()), conditions.join(" "))
            }
            Status::Runtime(s) => {
                let cached = s.cache_states.get("cached").map(|c| format!(" cached={c}")).unwrap_or_default();
                format!(
                    "status workers={} {}/{} fuse={} {}/{}{cached}",
                    phase_or_dash(s.worker_phase.as_str()),
                    s.worker_number_ready,
                    s.desired_worker_number_scheduled,
                    phase_or_dash(s.fuse_phase.as_str()),
                    s.fuse_number_ready,
                    s.desired_fuse_number_scheduled
                )
            }
        },
        Effect::PatchLabels { labels, .. } => {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("+{k}={v}"),
                    None => format!("-{k}"),
                })
                .collect();
            format!("labels {}", parts.join(" "))
        }
        Effect::AddOwnerReference { owner, .. } => format!("add ownerReference {}/{}", owner.kind, owner.name),
        Effect::AddFinalizer { finalizer, .. } => format!("add finalizer {finalizer}"),
        Effect::RemoveFinalizer { finalizer, .. } => format!("remove finalizer {finalizer}"),
        Effect::Delete(target) => format!("delete {target}"),
        Effect::Event { type_, reason, message, .. } => format!("event {} {reason}: {message}", type_.as_str()),
    }
}

fn phase_or_dash(phase: &str) -> &str {
    if phase.is_empty() { "-" } else { phase }
}
