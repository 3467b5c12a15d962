//! Running a scenario: build the cluster, play the timeline, watch expectations, converge, and
//! check the convergence invariants; then summarize the final state.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use model::effect::{Kind, ObjectRef};

use super::expect::Expectation;
use super::parse::{Action, Capacity, RunSpec, Scenario};
use crate::apiserver::Obj;
use crate::clock::{format_duration, format_ms};
use crate::sim::{Outcome, Sim, SimConfig};
use crate::trace;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Override the scenario's seed.
    pub seed: Option<u64>,
    /// Record state samples for the HTML report.
    pub record: bool,
}

/// What a run produced.
pub struct RunResult {
    /// The seed used.
    pub seed: u64,
    /// The trace text.
    pub trace: String,
    /// The final-state summary.
    pub summary: String,
    /// Passed, or why not.
    pub outcome: Outcome,
    /// The simulator at the end (for the report).
    pub sim: Sim,
}

/// The default budget to converge after the last step.
pub const DEFAULT_BUDGET_MS: u64 = 30 * 60_000;

/// Builds the simulator configuration of a scenario.
pub fn config_for(scenario: &Scenario, options: &RunOptions) -> SimConfig {
    let mut config =
        SimConfig { seed: options.seed.unwrap_or(scenario.seed), record: options.record, ..SimConfig::default() };
    let t = &scenario.timing;
    let set = |slot: &mut u64, value: Option<super::parse::Duration>| {
        if let Some(value) = value {
            *slot = value.0;
        }
    };
    set(&mut config.kube_latency_ms, t.kube_latency);
    set(&mut config.watch_latency_ms, t.watch_latency);
    set(&mut config.pod_start_ms, t.pod_start);
    set(&mut config.pod_stop_ms, t.pod_stop);
    set(&mut config.fuse_mount_ms, t.fuse_mount);
    set(&mut config.publish_retry_ms, t.publish_retry);
    set(&mut config.restart_delay_ms, t.restart_delay);
    set(&mut config.controller_restart_ms, t.controller_restart);
    set(&mut config.csi_restart_ms, t.csi_restart);
    set(&mut config.node_monitor_grace_ms, t.node_monitor_grace);
    set(&mut config.pod_eviction_timeout_ms, t.pod_eviction_timeout);
    set(&mut config.recover_period_ms, t.recover_period);
    set(&mut config.model.resync_ms, t.resync);
    set(&mut config.model.retry_ms, t.retry);
    if let Some(size) = scenario.cluster.ufs_size.as_deref()
        && let Some(bytes) = crate::kube::scheduler::memory_bytes(size)
    {
        config.ufs_bytes = bytes;
    }
    config
}

/// A node object.
pub fn make_node(name: &str, labels: &BTreeMap<String, String>, capacity: &Capacity, taints: Vec<Taint>) -> Obj {
    let mut all_labels = labels.clone();
    all_labels.insert("kubernetes.io/hostname".to_string(), name.to_string());
    all_labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    let mut allocatable = BTreeMap::new();
    allocatable.insert("pods".to_string(), Quantity(capacity.pods.unwrap_or(110).to_string()));
    if let Some(cpu) = &capacity.cpu {
        allocatable.insert("cpu".to_string(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &capacity.memory {
        allocatable.insert("memory".to_string(), Quantity(memory.clone()));
    }
    Obj::Node(Arc::new(Node {
        metadata: ObjectMeta { name: Some(name.to_string()), labels: Some(all_labels), ..Default::default() },
        spec: Some(NodeSpec { taints: (!taints.is_empty()).then_some(taints), ..Default::default() }),
        status: Some(NodeStatus {
            allocatable: Some(allocatable.clone()),
            capacity: Some(allocatable),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".to_string(),
                status: "True".to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }))
}

/// Adds the scenario's nodes and starts the controller.
pub fn build_cluster(sim: &mut Sim, scenario: &Scenario) {
    let now = sim.clock.wall();
    let nodes: Vec<Obj> = scenario
        .cluster
        .resolved_nodes()
        .into_iter()
        .map(|node| make_node(&node.name, &node.labels, &node.capacity, node.taints))
        .collect();
    let count = nodes.len();
    for node in nodes {
        let name = node.object_ref().name;
        sim.add_node_sim(&name);
        let _ = sim.api.create(node, now);
    }
    sim.controller_up();
    sim.settle();
    trace!(sim, "scenario", "cluster", "{count} nodes ready; controller started");
}

/// A `within` step: its expectations must all hold at one moment before the deadline.
struct Pending {
    group: Vec<Expectation>,
    deadline_ms: u64,
    step: usize,
}

/// Runs a scenario.
pub fn run(scenario: &Scenario, options: &RunOptions) -> RunResult {
    let config = config_for(scenario, options);
    let seed = config.seed;
    let mut sim = Sim::new(config);
    build_cluster(&mut sim, scenario);
    let mut watch = Watch::default();
    let mut last_was_converge = false;

    'steps: for (index, step) in scenario.steps.iter().enumerate() {
        if let Some(at_ms) = step.at_ms
            && !advance(&mut sim, at_ms, &mut watch)
        {
            break 'steps;
        }
        if let Some(note) = &step.note {
            trace!(sim, "scenario", format!("step {}", index + 1), "{note}");
        }
        last_was_converge = false;
        match &step.action {
            Action::Apply(objects) => {
                for obj in objects {
                    let key = obj.object_ref();
                    match sim.api.apply(obj.clone(), sim.clock.wall()) {
                        Ok((_, true)) => trace!(sim, "user", key.to_string(), "apply"),
                        Ok((_, false)) => trace!(sim, "user", key.to_string(), "apply (unchanged)"),
                        Err(error) => trace!(sim, "user", key.to_string(), "apply failed: {error}"),
                    }
                    sim.settle();
                }
            }
            Action::Delete(key) => {
                match sim.api.delete(key, sim.clock.wall()) {
                    Ok(outcome) => trace!(sim, "user", key.to_string(), "delete ({outcome:?})"),
                    Err(error) => trace!(sim, "user", key.to_string(), "delete failed: {error}"),
                }
                sim.settle();
            }
            Action::Pod(pod) => {
                let obj = pod.to_pod();
                let key = obj.object_ref();
                match sim.api.create(obj, sim.clock.wall()) {
                    Ok(_) => trace!(sim, "user", key.to_string(), "create pod using PVC {}", pod.claim),
                    Err(error) => trace!(sim, "user", key.to_string(), "create failed: {error}"),
                }
                sim.settle();
            }
            Action::Scale(scale) => {
                let key = ObjectRef::namespaced(Kind::JuiceFSRuntime, &scale.runtime.0, &scale.runtime.1);
                let replicas = scale.replicas;
                let result = sim.api.modify(&key, None, |obj| {
                    let Some(runtime) = obj.runtime_mut() else { return false };
                    if runtime.spec.replicas == Some(replicas) {
                        return false;
                    }
                    runtime.spec.replicas = Some(replicas);
                    let generation = runtime.metadata.generation.unwrap_or(1) + 1;
                    runtime.metadata.generation = Some(generation);
                    true
                });
                match result {
                    Ok(_) => trace!(sim, "user", key.to_string(), "scale spec.replicas to {replicas}"),
                    Err(error) => trace!(sim, "user", key.to_string(), "scale failed: {error}"),
                }
                sim.settle();
            }
            Action::Taint(taint) => {
                let key = ObjectRef::cluster(Kind::Node, &taint.node);
                let effect = format!("{:?}", taint.effect);
                let result = sim.api.modify(&key, None, |obj| {
                    let Some(node) = obj.node_mut() else { return false };
                    let taints = node.spec.get_or_insert_with(Default::default).taints.get_or_insert_with(Vec::new);
                    let wanted = Taint {
                        key: taint.key.clone(),
                        value: taint.value.clone(),
                        effect: effect.clone(),
                        time_added: None,
                    };
                    if taints.contains(&wanted) {
                        return false;
                    }
                    taints.retain(|t| !(t.key == wanted.key && t.effect == wanted.effect));
                    taints.push(wanted);
                    true
                });
                let value = taint.value.as_deref().map(|v| format!("={v}")).unwrap_or_default();
                match result {
                    Ok(_) => trace!(sim, "user", key.to_string(), "taint {}{value}:{effect}", taint.key),
                    Err(error) => trace!(sim, "user", key.to_string(), "taint failed: {error}"),
                }
                sim.settle();
            }
            Action::Untaint(untaint) => {
                let key = ObjectRef::cluster(Kind::Node, &untaint.node);
                let result = sim.api.modify(&key, None, |obj| {
                    let Some(taints) = obj.node_mut().and_then(|n| n.spec.as_mut()).and_then(|s| s.taints.as_mut())
                    else {
                        return false;
                    };
                    let before = taints.len();
                    taints.retain(|t| t.key != untaint.key);
                    taints.len() != before
                });
                match result {
                    Ok(_) => trace!(sim, "user", key.to_string(), "untaint {}", untaint.key),
                    Err(error) => trace!(sim, "user", key.to_string(), "untaint failed: {error}"),
                }
                sim.settle();
            }
            Action::Expect(expectations) => {
                match step.within_ms {
                    None => {
                        for expectation in expectations {
                            match expectation.eval(&sim) {
                                Ok(()) => {
                                    watch.passed += 1;
                                    trace!(sim, "expect", format!("step {}", index + 1), "holds: {}", expectation.text);
                                }
                                Err(seen) => {
                                    let message = format!(
                                        "step {} at {}: expected `{}`, but {seen}",
                                        index + 1,
                                        format_ms(sim.clock.now_ms()),
                                        expectation.text
                                    );
                                    trace!(
                                        sim,
                                        "expect",
                                        format!("step {}", index + 1),
                                        "FAILED: {}: {seen}",
                                        expectation.text
                                    );
                                    watch.failures.push(message);
                                }
                            }
                        }
                    }
                    Some(within) => {
                        // `within` blocks the timeline until the group holds (or its deadline).
                        let deadline_ms = sim.clock.now_ms() + within;
                        watch.pending.push(Pending { group: expectations.clone(), deadline_ms, step: index + 1 });
                        if !settle_pending(&mut sim, &mut watch) {
                            break 'steps;
                        }
                    }
                }
            }
            Action::Run(spec) => match spec {
                RunSpec::Converged => {
                    last_was_converge = true;
                    if !converge(&mut sim, DEFAULT_BUDGET_MS, &mut watch) {
                        break 'steps;
                    }
                }
                RunSpec::Until(at_ms) => {
                    if !advance(&mut sim, *at_ms, &mut watch) {
                        break 'steps;
                    }
                }
                RunSpec::For(duration_ms) => {
                    let at_ms = sim.clock.now_ms() + duration_ms;
                    if !advance(&mut sim, at_ms, &mut watch) {
                        break 'steps;
                    }
                }
            },
            Action::Fault(fault) => sim.inject(fault),
        }
        if !sim.violations.is_empty() {
            break 'steps;
        }
    }

    if sim.violations.is_empty() && !last_was_converge {
        let budget = scenario.budget.map(|b| b.0).unwrap_or(DEFAULT_BUDGET_MS);
        converge(&mut sim, budget, &mut watch);
    }
    let Watch { mut pending, mut failures, passed } = watch;
    for p in pending.drain(..) {
        let texts: Vec<&str> = p.group.iter().map(|e| e.text.as_str()).collect();
        failures.push(format!(
            "step {}: `{}` did not hold by {}",
            p.step,
            texts.join("` and `"),
            format_ms(p.deadline_ms)
        ));
    }
    if sim.violations.is_empty() {
        for problem in sim.check_converged() {
            trace!(sim, "invariant", "convergence", "VIOLATED: {problem}");
            failures.push(problem);
        }
    }
    for violation in &sim.violations {
        failures.push(violation.to_string());
    }
    let outcome = if failures.is_empty() { Outcome::Passed } else { Outcome::Failed(failures) };
    let summary = summarize(&sim, passed, &outcome);
    let trace = sim.trace.render();
    RunResult { seed, trace, summary, outcome, sim }
}

/// The expectations of a run: `within` groups still open, failures, and how many held.
#[derive(Default)]
struct Watch {
    pending: Vec<Pending>,
    failures: Vec<String>,
    passed: usize,
}

impl Watch {
    /// The earliest deadline of an open group.
    fn next_deadline_ms(&self) -> Option<u64> {
        self.pending.iter().map(|p| p.deadline_ms).min()
    }

    /// Checks the open groups: a group passes when all its expectations hold at once, and
    /// fails once its deadline has come.
    fn check(&mut self, sim: &mut Sim) {
        let now_ms = sim.clock.now_ms();
        let mut keep = Vec::new();
        for p in self.pending.drain(..) {
            let first_failure = p.group.iter().find_map(|e| e.eval(sim).err().map(|seen| (e.text.clone(), seen)));
            match first_failure {
                None => {
                    self.passed += p.group.len();
                    for expectation in &p.group {
                        trace!(sim, "expect", format!("step {}", p.step), "holds: {}", expectation.text);
                    }
                }
                Some((text, seen)) if now_ms >= p.deadline_ms => {
                    trace!(
                        sim,
                        "expect",
                        format!("step {}", p.step),
                        "FAILED by {}: {text}: {seen}",
                        format_ms(p.deadline_ms)
                    );
                    self.failures.push(format!(
                        "step {}: expected `{text}` by {}, but {seen}",
                        p.step,
                        format_ms(p.deadline_ms)
                    ));
                }
                Some(_) => keep.push(p),
            }
        }
        self.pending = keep;
    }
}

/// What one [`step`] did.
enum Moved {
    /// Handled the next event.
    Event,
    /// Moved the clock to the earliest `within` deadline (before the next event).
    Deadline,
    /// Nothing is due by the limit.
    Idle,
    /// A safety invariant failed.
    Violation,
}

/// One move towards `limit_ms`: the next event, or the earliest `within` deadline when it comes
/// first, then a check of the open groups.
fn step(sim: &mut Sim, limit_ms: u64, watch: &mut Watch) -> Moved {
    let next = sim.clock.next_at_ms().filter(|at| *at <= limit_ms);
    let deadline = watch.next_deadline_ms().filter(|d| *d <= limit_ms);
    match (next, deadline) {
        (Some(at), Some(d)) if d < at => {}
        (Some(_), _) => {
            sim.step_until(limit_ms);
            if !sim.violations.is_empty() {
                return Moved::Violation;
            }
            if !watch.pending.is_empty() {
                watch.check(sim);
            }
            return Moved::Event;
        }
        (None, Some(_)) => {}
        (None, None) => return Moved::Idle,
    }
    sim.clock.advance_to(deadline.unwrap_or(limit_ms));
    watch.check(sim);
    Moved::Deadline
}

/// Runs events until no `within` group is open (each passes or reaches its deadline).
/// False on an invariant violation.
fn settle_pending(sim: &mut Sim, watch: &mut Watch) -> bool {
    watch.check(sim);
    while let Some(deadline) = watch.next_deadline_ms() {
        if let Moved::Violation = step(sim, deadline, watch) {
            return false;
        }
    }
    true
}

/// Runs events up to `limit_ms`, watching expectations. False on an invariant violation.
fn advance(sim: &mut Sim, limit_ms: u64, watch: &mut Watch) -> bool {
    loop {
        match step(sim, limit_ms, watch) {
            Moved::Violation => return false,
            Moved::Event | Moved::Deadline => {}
            Moved::Idle => break,
        }
    }
    sim.clock.advance_to(limit_ms);
    watch.check(sim);
    true
}

/// Runs until converged or out of budget. False on an invariant violation.
fn converge(sim: &mut Sim, budget_ms: u64, watch: &mut Watch) -> bool {
    let start_ms = sim.clock.now_ms();
    let limit_ms = start_ms + budget_ms;
    let mut checked_at_writes = u64::MAX;
    loop {
        if watch.pending.is_empty() && sim.converged_since(&mut checked_at_writes) {
            trace!(sim, "scenario", "cluster", "converged after {}", format_duration(sim.clock.now_ms() - start_ms));
            return true;
        }
        match step(sim, limit_ms, watch) {
            Moved::Violation => return false,
            Moved::Event | Moved::Deadline => {}
            Moved::Idle => {
                let message = format!(
                    "did not converge within {} (still pending: {})",
                    format_duration(budget_ms),
                    describe_pending(sim)
                );
                trace!(sim, "scenario", "cluster", "{message}");
                watch.failures.push(message);
                return true;
            }
        }
    }
}

fn describe_pending(sim: &Sim) -> String {
    let writes = sim.fixpoint_writes();
    if !writes.is_empty() {
        return writes
            .iter()
            .take(3)
            .map(|(r, pair, e)| format!("{} {pair} would {}", r.actor(), e))
            .collect::<Vec<_>>()
            .join("; ");
    }
    format!("{} queued events", sim.clock.len())
}

/// The final state, for people.
pub fn summarize(sim: &Sim, passed: usize, outcome: &Outcome) -> String {
    let store = &sim.api.store;
    let mut out = String::new();
    let _ = writeln!(out, "== final state at {} ==", format_ms(sim.clock.now_ms()));
    let _ = writeln!(out, "nodes:");
    for obj in store.list(Kind::Node) {
        let name = obj.object_ref().name;
        let labels: Vec<String> = obj
            .meta()
            .labels
            .iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("fluid"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let state = sim.nodes.get(name.as_str()).map(|n| if n.up { "up" } else { "down" }).unwrap_or("?");
        let _ = writeln!(out, "  {name} ({state})");
        if !labels.is_empty() {
            let _ = writeln!(out, "    labels: {}", labels.join(", "));
        }
        let mut pods: Vec<String> = Vec::new();
        for key in store.pods_on_node(&name) {
            if let Some(pod) = store.get(key).and_then(|o| o.as_pod()) {
                let mut state = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
                if pod.is_deleting() {
                    state.push_str(",Terminating");
                } else if state == "Running" && !pod.is_ready() {
                    state.push_str(",NotReady");
                }
                pods.push(format!("{}/{} ({state})", key.namespace, key.name));
            }
        }
        if !pods.is_empty() {
            let _ = writeln!(out, "    pods: {}", pods.join(", "));
        }
        if let Some(node) = sim.nodes.get(name.as_str()) {
            let mounts: Vec<String> = node
                .mounts
                .entries()
                .iter()
                .map(|e| {
                    // Each layer by its own device: a dead one below a live bind is still dead.
                    let state = if node.mounts.is_live(&e.major_minor) { "" } else { " BROKEN" };
                    let point = match e.mount_point.find("/volumes/") {
                        Some(at) => format!("<pod>{}", &e.mount_point[at..]),
                        None => e.mount_point.clone(),
                    };
                    format!("{point} [{}{}]{state}", e.major_minor, if e.read_only { ",ro" } else { "" })
                })
                .collect();
            if !mounts.is_empty() {
                let _ = writeln!(out, "    mounts: {}", mounts.join(", "));
            }
        }
    }
    let unscheduled: Vec<String> = store
        .list(Kind::Pod)
        .filter_map(|o| o.as_pod().map(|p| (o.object_ref(), p)))
        .filter(|(_, p)| p.node_name().is_none())
        .map(|(k, _)| format!("{}/{}", k.namespace, k.name))
        .collect();
    if !unscheduled.is_empty() {
        let _ = writeln!(out, "  (unscheduled) pods: {}", unscheduled.join(", "));
    }
    let _ = writeln!(out, "datasets:");
    for obj in store.list(Kind::Dataset) {
        let Some(dataset) = obj.as_dataset() else { continue };
        let status = dataset.status.clone().unwrap_or_default();
        let conditions: Vec<String> = status
            .conditions
            .iter()
            .map(|c| {
                format!("{}={}{}", c.type_, c.status, c.reason.as_deref().map(|r| format!("({r})")).unwrap_or_default())
            })
            .collect();
        let cached = status.cache_states.get("cached").map(|c| format!(" cached={c}")).unwrap_or_default();
        let deleting = if obj.is_deleting() { " Terminating" } else { "" };
        let _ = writeln!(
            out,
            "  {}/{}: phase={}{deleting} {}{cached}",
            obj.object_ref().namespace,
            obj.object_ref().name,
            if status.phase.as_str().is_empty() { "-" } else { status.phase.as_str() },
            conditions.join(" ")
        );
    }
    let _ = writeln!(out, "runtimes:");
    for obj in store.list(Kind::JuiceFSRuntime) {
        let Some(runtime) = obj.as_runtime() else { continue };
        let s = runtime.status.clone().unwrap_or_default();
        let deleting = if obj.is_deleting() { " Terminating" } else { "" };
        let _ = writeln!(
            out,
            "  {}/{}: workers={} {}/{} fuse={} {}/{}{deleting}",
            obj.object_ref().namespace,
            obj.object_ref().name,
            or_dash(s.worker_phase.as_str()),
            s.worker_number_ready,
            s.desired_worker_number_scheduled,
            or_dash(s.fuse_phase.as_str()),
            s.fuse_number_ready,
            s.desired_fuse_number_scheduled
        );
    }
    let _ = writeln!(out, "volumes:");
    for obj in store.list(Kind::PersistentVolume).chain(store.list(Kind::PersistentVolumeClaim)) {
        let phase = match (obj.as_pv(), obj.as_pvc()) {
            (Some(pv), _) => pv.status.as_ref().and_then(|s| s.phase.clone()),
            (_, Some(pvc)) => pvc.status.as_ref().and_then(|s| s.phase.clone()),
            _ => None,
        };
        let deleting = if obj.is_deleting() { " Terminating" } else { "" };
        let _ = writeln!(out, "  {}: {}{deleting}", obj.object_ref(), phase.unwrap_or_else(|| "-".to_string()));
    }
    let _ = writeln!(
        out,
        "counts: {} objects, {} events, {} reconciles, {} effects, {} conflicts, {} faults",
        store.iter().count(),
        sim.stats.events,
        sim.stats.reconciles,
        sim.stats.effects,
        sim.stats.conflicts,
        sim.stats.faults
    );
    match outcome {
        Outcome::Passed => {
            let _ = writeln!(out, "result: PASSED ({passed} expectations held, every invariant held)");
        }
        Outcome::Failed(reasons) => {
            let _ = writeln!(out, "result: FAILED");
            for reason in reasons {
                let _ = writeln!(out, "  - {reason}");
            }
        }
    }
    out
}

fn or_dash(text: &str) -> &str {
    if text.is_empty() { "-" } else { text }
}
