//! The HTML report: a self-contained timeline (inline CSS and SVG) with one lane per node
//! showing its pods and workers over time, the dataset and runtime phases, and the node labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use model::effect::Kind;

use crate::apiserver::Change;
use crate::clock::format_ms;
use crate::trace::Trace;

/// A pod's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSample {
    /// When.
    pub at_ms: u64,
    /// `ns/name`.
    pub pod: String,
    /// Its node ("" when unscheduled).
    pub node: String,
    /// `Pending`, `Running`, `Terminating`, `Gone`, ….
    pub state: String,
    /// Role: `worker`, `fuse`, or `app`.
    pub role: &'static str,
}

/// State changes worth drawing, recorded while the run goes.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    enabled: bool,
    /// Pod state changes.
    pub pods: Vec<PodSample>,
    /// Fluid labels of each node when they changed.
    pub node_labels: Vec<(u64, String, BTreeMap<String, String>)>,
    /// Dataset and runtime phases when they changed: (time, object, phase).
    pub phases: Vec<(u64, String, String)>,
}

impl Recorder {
    /// A recorder that records when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self { enabled, ..Self::default() }
    }

    /// Looks at one apiserver change.
    pub fn observe(&mut self, at_ms: u64, change: &Change) {
        if !self.enabled {
            return;
        }
        let key = &change.key;
        match key.kind {
            Kind::Pod => {
                let pod = change.new.as_ref().or(change.old.as_ref()).and_then(|o| o.as_pod());
                let Some(pod) = pod else { return };
                let node = pod.node_name().map(str::to_string).unwrap_or_default();
                let state = match change.new.as_ref().and_then(|o| o.as_pod()) {
                    None => "Gone".to_string(),
                    Some(p) if p.metadata.deletion_timestamp.is_some() => "Terminating".to_string(),
                    Some(p) => {
                        let phase =
                            p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".to_string());
                        let ready = p
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                        if phase == "Running" && !ready { "NotReady".to_string() } else { phase }
                    }
                };
                let role = if crate::fuse::is_fuse_pod(pod) {
                    "fuse"
                } else if crate::fuse::is_worker_pod(pod) {
                    "worker"
                } else {
                    "app"
                };
                let name = format!("{}/{}", key.namespace, key.name);
                let last = self.pods.iter().rev().find(|s| s.pod == name);
                if last.is_some_and(|s| s.state == state && s.node == node) {
                    return;
                }
                self.pods.push(PodSample { at_ms, pod: name, node, state, role });
            }
            Kind::Node => {
                let labels: BTreeMap<String, String> = change
                    .new
                    .as_ref()
                    .and_then(|o| o.meta().labels.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(k, _)| k.starts_with("fluid"))
                    .collect();
                let last = self.node_labels.iter().rev().find(|(_, n, _)| *n == key.name);
                if last.is_some_and(|(_, _, l)| *l == labels) {
                    return;
                }
                self.node_labels.push((at_ms, key.name.to_string(), labels));
            }
            Kind::Dataset | Kind::JuiceFSRuntime => {
                let phase = match change.new.as_ref() {
                    None => "Gone".to_string(),
                    Some(obj) if obj.is_deleting() => "Deleting".to_string(),
                    Some(obj) => match (obj.as_dataset(), obj.as_runtime()) {
                        (Some(d), _) => d.status.as_ref().map(|s| s.phase.as_str().to_string()).unwrap_or_default(),
                        (_, Some(r)) => {
                            r.status.as_ref().map(|s| s.worker_phase.as_str().to_string()).unwrap_or_default()
                        }
                        _ => String::new(),
                    },
                };
                let phase = if phase.is_empty() { "(new)".to_string() } else { phase };
                let name = key.to_string();
                let last = self.phases.iter().rev().find(|(_, n, _)| *n == name);
                if last.is_some_and(|(_, _, p)| *p == phase) {
                    return;
                }
                self.phases.push((at_ms, name, phase));
            }
            _ => {}
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn color(state: &str, role: &str) -> &'static str {
    match (state, role) {
        ("Running", "worker") => "#2e7d32",
        ("Running", "fuse") => "#1565c0",
        ("Running", _) => "#6a1b9a",
        ("Pending", _) => "#f9a825",
        ("NotReady", _) => "#ef6c00",
        ("Terminating", _) => "#9e9e9e",
        ("Bound" | "Ready", _) => "#2e7d32",
        ("PartialReady" | "NotBound" | "NotReady_", _) => "#f9a825",
        ("Failed", _) => "#c62828",
        ("Deleting", _) => "#9e9e9e",
        _ => "#78909c",
    }
}

/// Renders the report.
pub fn render(
    title: &str,
    description: &str,
    recorder: &Recorder,
    trace: &Trace,
    end_ms: u64,
    summary: &str,
    outcome: &str,
) -> String {
    let end_ms = end_ms.max(1);
    let width = 1100.0f64;
    let left = 230.0f64;
    let x = |ms: u64| left + (ms as f64 / end_ms as f64) * (width - left - 10.0);
    let mut svg = String::new();
    let mut y = 30.0f64;
    // Time axis.
    let _ = write!(svg, "<line x1='{left}' y1='20' x2='{}' y2='20' stroke='#444'/>", width - 10.0);
    // Ticks at a round step (1s, 5s, 30s, 1m, 5m, …) so labels read "1m", "2m", not "48s10ms".
    let step_ms = tick_step_ms(end_ms);
    let mut at = 0;
    while at <= end_ms {
        let anchor = if at == 0 { "start" } else { "middle" };
        let label = escape(&crate::clock::format_duration(at));
        let _ = write!(svg, "<text x='{:.1}' y='14' class='tick' text-anchor='{anchor}'>{label}</text>", x(at));
        at += step_ms;
    }
    // Phases.
    let mut objects: Vec<String> = recorder.phases.iter().map(|(_, o, _)| o.clone()).collect();
    objects.sort();
    objects.dedup();
    for object in &objects {
        let _ = write!(svg, "<text x='4' y='{:.1}' class='lane'>{}</text>", y + 12.0, escape(object));
        let samples: Vec<&(u64, String, String)> = recorder.phases.iter().filter(|(_, o, _)| o == object).collect();
        for (i, (at, _, phase)) in samples.iter().enumerate() {
            let until = samples.get(i + 1).map(|s| s.0).unwrap_or(end_ms);
            if phase == "Gone" {
                continue;
            }
            let _ = write!(
                svg,
                "<rect x='{:.1}' y='{y:.1}' width='{:.1}' height='16' fill='{}'><title>{} {} from {}</title></rect>",
                x(*at),
                (x(until) - x(*at)).max(1.0),
                color(phase, ""),
                escape(object),
                escape(phase),
                format_ms(*at)
            );
            let _ =
                write!(svg, "<text x='{:.1}' y='{:.1}' class='in'>{}</text>", x(*at) + 2.0, y + 12.0, escape(phase));
        }
        y += 22.0;
    }
    y += 8.0;
    // Node lanes.
    let mut nodes: Vec<String> = recorder.pods.iter().map(|s| s.node.clone()).filter(|n| !n.is_empty()).collect();
    nodes.extend(recorder.node_labels.iter().map(|(_, n, _)| n.clone()));
    nodes.sort();
    nodes.dedup();
    for node in &nodes {
        let mut pods: Vec<String> = recorder.pods.iter().filter(|s| s.node == *node).map(|s| s.pod.clone()).collect();
        pods.sort();
        pods.dedup();
        let lane_top = y;
        let _ = write!(svg, "<text x='4' y='{:.1}' class='node'>{}</text>", y + 12.0, escape(node));
        y += 18.0;
        for pod in &pods {
            let samples: Vec<&PodSample> = recorder.pods.iter().filter(|s| s.pod == *pod).collect();
            let _ = write!(svg, "<text x='14' y='{:.1}' class='lane'>{}</text>", y + 11.0, escape(pod));
            for (i, sample) in samples.iter().enumerate() {
                let until = samples.get(i + 1).map(|s| s.at_ms).unwrap_or(end_ms);
                if sample.node != *node || sample.state == "Gone" {
                    continue;
                }
                let _ = write!(
                    svg,
                    "<rect x='{:.1}' y='{y:.1}' width='{:.1}' height='14' fill='{}'><title>{} ({}) {} from {}</title></rect>",
                    x(sample.at_ms),
                    (x(until) - x(sample.at_ms)).max(1.0),
                    color(&sample.state, sample.role),
                    escape(pod),
                    sample.role,
                    escape(&sample.state),
                    format_ms(sample.at_ms)
                );
            }
            y += 17.0;
        }
        let labels: Vec<&(u64, String, BTreeMap<String, String>)> =
            recorder.node_labels.iter().filter(|(_, n, _)| n == node).collect();
        let mut keys: Vec<String> = labels.iter().flat_map(|(_, _, l)| l.keys().cloned()).collect();
        keys.sort();
        keys.dedup();
        for key in &keys {
            let _ = write!(svg, "<text x='14' y='{:.1}' class='label'>{}</text>", y + 10.0, escape(key));
            for (i, (at, _, l)) in labels.iter().enumerate() {
                let until = labels.get(i + 1).map(|s| s.0).unwrap_or(end_ms);
                if let Some(value) = l.get(key) {
                    let _ = write!(
                        svg,
                        "<rect x='{:.1}' y='{:.1}' width='{:.1}' height='8' fill='#8d6e63'><title>{}={} from {}</title></rect>",
                        x(*at),
                        y + 3.0,
                        (x(until) - x(*at)).max(1.0),
                        escape(key),
                        escape(value),
                        format_ms(*at)
                    );
                }
            }
            y += 14.0;
        }
        let _ = write!(
            svg,
            "<rect x='2' y='{lane_top:.1}' width='{:.1}' height='{:.1}' fill='none' stroke='#ccc'/>",
            width - 4.0,
            y - lane_top + 2.0
        );
        y += 10.0;
    }
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset='utf-8'><title>{}</title><style>\
body{{font-family:system-ui,sans-serif;margin:20px;color:#222}} h1{{font-size:20px}} .tick{{font-size:10px;fill:#555}}\
.lane{{font-size:11px}} .node{{font-size:12px;font-weight:bold}} .label{{font-size:10px;fill:#5d4037}} .in{{font-size:10px;fill:#fff}}\
pre{{font-size:11px;background:#f6f6f6;padding:8px;overflow-x:auto}} .legend span{{display:inline-block;padding:2px 6px;margin-right:6px;color:#fff;font-size:11px}}\
</style></head><body><h1>{}</h1><p>{}</p><p><b>{}</b></p>\
<div class='legend'><span style='background:#2e7d32'>worker Running / Bound</span><span style='background:#1565c0'>FUSE Running</span>\
<span style='background:#6a1b9a'>app Running</span><span style='background:#f9a825'>Pending / NotBound</span><span style='background:#ef6c00'>NotReady</span>\
<span style='background:#9e9e9e'>Terminating</span><span style='background:#c62828'>Failed</span><span style='background:#8d6e63'>node label</span></div>\
<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{:.0}'>{svg}</svg><h2>Final state</h2><pre>{}</pre><h2>Trace</h2><pre>{}</pre></body></html>",
        escape(title),
        escape(title),
        escape(description),
        escape(outcome),
        y + 10.0,
        escape(summary),
        escape(&trace.render()),
    );
    html
}

/// The smallest round tick step that gives at most 10 ticks over `end_ms`.
fn tick_step_ms(end_ms: u64) -> u64 {
    const STEPS_MS: &[u64] = &[100, 500, 1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000, 3_600_000];
    STEPS_MS.iter().copied().find(|step| end_ms / step <= 10).unwrap_or(end_ms.div_ceil(10).max(1))
}

#[cfg(test)]
mod tick_tests {
    use super::tick_step_ms;

    #[test]
    fn ticks_are_round_and_at_most_ten() {
        assert_eq!(tick_step_ms(480_100), 60_000);
        assert_eq!(tick_step_ms(185_700), 30_000);
        assert_eq!(tick_step_ms(900), 100);
        assert_eq!(tick_step_ms(100 * 3_600_000), 36_000_000);
    }
}
