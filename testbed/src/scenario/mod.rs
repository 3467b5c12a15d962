//! Runs a scenario file on the real control plane, as the simulator runs it: the same steps in
//! the same order, faults applied for real where they have a counterpart, expectations judged
//! against the API server and the nodes' mount tables by the simulator's own checker, and the
//! same normalised final state at the end.
//!
//! Time: a step's `at` is virtual. Where the gap before it only lets the cluster settle, the
//! runner waits until the normalised state holds still ([`QUIET_MS`]) instead; an expectation
//! checked at a later `at` may take that gap to hold. `within` budgets, and `run: for` and
//! `run: until` spans, are real time.

pub mod setup;
pub mod snapshot;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use model::effect::{Kind, ObjectRef};
use serde_json::Value;
use sim::faults::Fault;
use sim::scenario::Scenario;
use sim::scenario::cluster::{ClusterRead, pod_running};
use sim::scenario::expect::Expectation;
use sim::scenario::parity::{SYSTEM_NAMESPACES, dataset_volumes, normalized};
use sim::scenario::parse::{Action, RunSpec};

use crate::agent::control::Request;
use crate::cluster::{Programs, Testbed};
use crate::error::{Error, Result};
use setup::Volumes;
use snapshot::Snapshot;

/// How long the normalised state must hold still for the real cluster to count as converged.
pub const QUIET_MS: u64 = 5_000;

/// The longest the runner waits for the real cluster to converge.
pub const CONVERGE_CAP_MS: u64 = 180_000;

const POLL_MS: u64 = 250;

/// What a run on the real control plane produced.
#[derive(Debug)]
pub struct RealRun {
    /// What happened, one line per event, with the real seconds since the start.
    pub trace: String,
    /// The normalised final state ([`sim::scenario::parity::normalized`]).
    pub normalized: String,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<String>,
    /// Settings and faults with no real counterpart, one line each.
    pub not_applicable: Vec<String>,
    /// Expectations that held.
    pub passed: usize,
    /// Wall time of the run, the testbed's start included.
    pub elapsed: Duration,
    /// The testbed's resident memory at the end (control plane, agent, every pod's programs).
    pub memory_rss_bytes: u64,
}

/// Runs `scenario` on a fresh testbed under `dir`.
pub async fn run(scenario: &Scenario, programs: Programs, dir: &Path) -> Result<RealRun> {
    let started = Instant::now();
    let (options, not_applicable) = setup::options_for(scenario);
    let bed = Testbed::start(dir, programs, &options).await?;
    let juicefs = bed.programs.juicefs_dir.join("juicefs");
    let volumes = Volumes::create(&juicefs, &dir.join("jfs"), &setup::juicefs_mounts(scenario))?;
    let mut runner = Runner {
        bed,
        volumes,
        started,
        trace: String::new(),
        failures: Vec::new(),
        not_applicable,
        passed: 0,
        namespaces: BTreeSet::new(),
        virtual_ms: 0,
    };
    for line in runner.not_applicable.clone() {
        runner.log("scenario", &line);
    }
    runner.log("scenario", &format!("testbed ready: {} nodes", options.nodes.len()));
    let result = runner.play(scenario).await;
    let snapshot = Snapshot::take(&runner.bed).await?;
    let memory_rss_bytes = runner.bed.memory_rss_bytes();
    let named = sim::scenario::parity::named_nodes(scenario);
    if let Err(err) = result {
        runner.failures.push(format!("the runner stopped: {err}"));
    } else {
        for problem in app_mount_problems(&snapshot) {
            runner.log("invariant", &format!("VIOLATED: {problem}"));
            runner.failures.push(problem);
        }
    }
    Ok(RealRun {
        trace: runner.trace,
        normalized: normalized(&snapshot, &named),
        failures: runner.failures,
        not_applicable: runner.not_applicable,
        passed: runner.passed,
        elapsed: started.elapsed(),
        memory_rss_bytes,
    })
}

/// **app-mount-is-live** on the real nodes: every running app pod reads its dataset volumes
/// through the live FUSE mount.
fn app_mount_problems(snapshot: &Snapshot) -> Vec<String> {
    let mut problems = Vec::new();
    for pod in snapshot.objects(Kind::Pod) {
        let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default();
        if !pod_running(&pod) || SYSTEM_NAMESPACES.contains(&namespace) {
            continue;
        }
        let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let key = ObjectRef::namespaced(Kind::Pod, namespace, name);
        for volume in dataset_volumes(snapshot, &pod) {
            match snapshot.mount_state(&key, &volume) {
                Ok("live") | Err(_) => {}
                Ok(state) => problems.push(format!("app-mount-is-live: {key} reads volume {volume}: {state}")),
            }
        }
    }
    problems
}

struct Runner {
    bed: Testbed,
    volumes: Volumes,
    started: Instant,
    trace: String,
    failures: Vec<String>,
    not_applicable: Vec<String>,
    passed: usize,
    namespaces: BTreeSet<String>,
    virtual_ms: u64,
}

impl Runner {
    fn log(&mut self, who: &str, what: &str) {
        let line = format!("[{:>7.1}s] {who:<10} {what}", self.started.elapsed().as_secs_f64());
        eprintln!("{line}");
        let _ = writeln!(self.trace, "{line}");
    }

    async fn play(&mut self, scenario: &Scenario) -> Result<()> {
        let mut last_was_converge = false;
        for (index, step) in scenario.steps.iter().enumerate() {
            let label = format!("step {}", index + 1);
            let mut within_ms = step.within_ms;
            if let Some(at_ms) = step.at_ms.filter(|at| *at > self.virtual_ms) {
                let gap_ms = at_ms - self.virtual_ms;
                self.virtual_ms = at_ms;
                if matches!(step.action, Action::Expect(_)) && within_ms.is_none() {
                    within_ms = Some(gap_ms);
                } else {
                    self.wait_quiet(gap_ms).await?;
                }
            }
            if let Some(note) = &step.note {
                self.log(&label, note);
            }
            last_was_converge = false;
            match &step.action {
                Action::Apply(objects) => {
                    for object in objects {
                        self.apply(object.object_ref(), object.to_json()).await?;
                    }
                }
                Action::Pod(pod) => {
                    let object = pod.to_pod();
                    self.apply(object.object_ref(), object.to_json()).await?;
                }
                Action::Delete(key) => {
                    let (kind, ns) = (key.kind.as_str().to_lowercase(), key.namespace.to_string());
                    let mut args = vec!["delete", kind.as_str(), key.name.as_str(), "--wait=false"];
                    if !ns.is_empty() {
                        args.extend(["-n", ns.as_str()]);
                    }
                    self.kubectl(&key.to_string(), "delete", &args);
                }
                Action::Scale(scale) => {
                    let patch = format!(r#"{{"spec":{{"replicas":{}}}}}"#, scale.replicas);
                    let (ns, name) = (&scale.runtime.0, &scale.runtime.1);
                    let args = ["-n", ns, "patch", "juicefsruntime", name, "--type=merge", "-p", &patch];
                    self.kubectl(
                        &format!("JuiceFSRuntime/{ns}/{name}"),
                        &format!("scale to {}", scale.replicas),
                        &args,
                    );
                }
                Action::Taint(taint) => {
                    let value = taint.value.as_deref().map(|v| format!("={v}")).unwrap_or_default();
                    let spec = format!("{}{value}:{:?}", taint.key, taint.effect);
                    let args = ["taint", "node", taint.node.as_str(), spec.as_str(), "--overwrite"];
                    self.kubectl(&format!("Node/{}", taint.node), &format!("taint {spec}"), &args);
                }
                Action::Untaint(untaint) => {
                    let spec = format!("{}-", untaint.key);
                    let args = ["taint", "node", untaint.node.as_str(), spec.as_str()];
                    self.kubectl(&format!("Node/{}", untaint.node), &format!("untaint {}", untaint.key), &args);
                }
                Action::Expect(expectations) => self.expect(&label, expectations, within_ms).await?,
                Action::Run(RunSpec::Converged) => {
                    last_was_converge = true;
                    self.converge(scenario).await?;
                }
                Action::Run(RunSpec::Until(at_ms)) => {
                    let span_ms = at_ms.saturating_sub(self.virtual_ms);
                    self.virtual_ms = self.virtual_ms.max(*at_ms);
                    tokio::time::sleep(Duration::from_millis(span_ms)).await;
                }
                Action::Run(RunSpec::For(span_ms)) => {
                    self.virtual_ms += span_ms;
                    tokio::time::sleep(Duration::from_millis(*span_ms)).await;
                }
                Action::Fault(fault) => self.fault(fault).await?,
            }
        }
        if !last_was_converge {
            self.converge(scenario).await?;
        }
        Ok(())
    }

    /// Server-side apply of one object; a Dataset is pointed at the testbed's JuiceFS volume
    /// first. A refusal is traced, as the simulator traces it, and the run goes on.
    async fn apply(&mut self, key: ObjectRef, mut object: Value) -> Result<()> {
        if key.kind == Kind::Node && Snapshot::take(&self.bed).await?.object(&key).is_none() {
            // A new Node joins with its kubelet, as in the simulator: the agent registers it.
            let spec = setup::joining_node(&key.name, &object);
            self.bed.ask(Request::AddNode { spec }).await?;
            self.log("user", &format!("{key} joins: the agent starts its kubelet, which registers it"));
            return Ok(());
        }
        if !key.namespace.is_empty() && self.namespaces.insert(key.namespace.to_string()) {
            let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": key.namespace.as_str()}});
            self.bed.apply(&namespace.to_string())?;
        }
        if key.kind == Kind::Dataset {
            for secret in self.volumes.secrets_for(&key.namespace, &object) {
                self.bed.apply(&secret.to_string())?;
            }
            self.volumes.point_dataset(&mut object);
        }
        match self.bed.apply(&object.to_string()) {
            Ok(_) => self.log("user", &format!("{key} apply")),
            Err(err) => self.log("user", &format!("{key} apply failed: {err}")),
        }
        Ok(())
    }

    fn kubectl(&mut self, key: &str, what: &str, args: &[&str]) {
        match self.bed.kubectl_ok(args, None) {
            Ok(_) => self.log("user", &format!("{key} {what}")),
            Err(err) => self.log("user", &format!("{key} {what} failed: {err}")),
        }
    }

    /// Checks `expectations` now, or polls until they all hold at once within `within_ms`.
    async fn expect(&mut self, label: &str, expectations: &[Expectation], within_ms: Option<u64>) -> Result<()> {
        let deadline = Instant::now() + Duration::from_millis(within_ms.unwrap_or(0));
        loop {
            let snapshot = Snapshot::take(&self.bed).await?;
            let first_failure = expectations.iter().find_map(|e| e.eval(&snapshot).err().map(|seen| (e, seen)));
            match first_failure {
                None => {
                    self.passed += expectations.len();
                    for expectation in expectations {
                        self.log("expect", &format!("{label} holds: {}", expectation.text));
                    }
                    return Ok(());
                }
                Some((expectation, seen)) if Instant::now() >= deadline => {
                    let by =
                        within_ms.map(|w| format!(" within {}", sim::clock::format_duration(w))).unwrap_or_default();
                    self.log("expect", &format!("{label} FAILED{by}: {}: {seen}", expectation.text));
                    self.failures.push(format!("{label}: expected `{}`{by}, but {seen}", expectation.text));
                    return Ok(());
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(POLL_MS)).await,
            }
        }
    }

    /// Waits until the normalised state holds still for [`QUIET_MS`], or `limit_ms` passes.
    /// True when it held still.
    async fn wait_quiet(&mut self, limit_ms: u64) -> Result<bool> {
        let deadline = Instant::now() + Duration::from_millis(limit_ms);
        let mut last = String::new();
        let mut since = Instant::now();
        loop {
            let snapshot = Snapshot::take(&self.bed).await?;
            // Every node by name: a pod moving between nodes is a change here.
            let every_node: BTreeSet<String> = snapshot
                .objects(Kind::Node)
                .iter()
                .filter_map(|n| n.pointer("/metadata/name")?.as_str().map(str::to_string))
                .collect();
            let now = normalized(&snapshot, &every_node);
            // A pod in its grace period on a running node is a change on its way, whatever the
            // state shows meanwhile (a FUSE daemon serving binds until it is killed).
            let terminating = snapshot.objects(Kind::Pod).iter().any(|pod| {
                let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
                pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
                    && snapshot.node_up(node) == Some(true)
            });
            if now != last || terminating {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= Duration::from_millis(QUIET_MS) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    async fn converge(&mut self, scenario: &Scenario) -> Result<()> {
        let budget_ms = scenario.budget.map(|b| b.0).unwrap_or(CONVERGE_CAP_MS).min(CONVERGE_CAP_MS);
        let began = Instant::now();
        if self.wait_quiet(budget_ms).await? {
            let waited = began.elapsed().as_secs_f64();
            self.log(
                "scenario",
                &format!("converged: the state held still for {} s after {waited:.1} s", QUIET_MS / 1000),
            );
        } else {
            let message = format!("did not converge within {} s of real time", budget_ms / 1000);
            self.log("scenario", &message);
            self.failures.push(message);
        }
        Ok(())
    }

    /// Applies `fault` for real, or says in one line why it has no counterpart.
    async fn fault(&mut self, fault: &Fault) -> Result<()> {
        let not_applicable = |what: &str, why: &str| format!("{what}: not applicable on a real cluster: {why}");
        match fault {
            Fault::NodeDown(node) => {
                self.bed.ask(Request::NodeDown { node: node.clone() }).await?;
                self.log("fault", &format!("Node/{node} powered off (its heartbeat, processes and mounts stop)"));
            }
            Fault::NodeUp(node) => {
                self.bed.ask(Request::NodeUp { node: node.clone() }).await?;
                self.log("fault", &format!("Node/{node} powered on (an empty mount table)"));
            }
            Fault::PodCrash(pod) => {
                let request =
                    Request::Kill { namespace: pod.namespace.to_string(), pod: pod.name.to_string(), container: None };
                self.kill(&pod.to_string(), request).await;
            }
            Fault::ControllerRestart => {
                let selector = "app.kubernetes.io/name=ferrofluid-controller";
                for (namespace, pod) in self.pods(Some("fluid-system"), selector, None).await? {
                    let what = format!("controller Pod/{namespace}/{pod}");
                    self.kill(&what, Request::Kill { namespace, pod, container: None }).await;
                }
            }
            Fault::CsiRestart(node) => {
                let selector = "app.kubernetes.io/name=ferrofluid-csi-nodeplugin";
                for (namespace, pod) in self.pods(Some("fluid-system"), selector, Some(node)).await? {
                    let what = format!("CSI plugin Pod/{namespace}/{pod} on {node}");
                    self.kill(&what, Request::Kill { namespace, pod, container: Some("plugin".into()) }).await;
                }
            }
            Fault::FuseCrash(node) => {
                let selector = format!("{}=juicefs-fuse", model::labels::ROLE);
                for (namespace, pod) in self.pods(None, &selector, Some(node)).await? {
                    let what = format!("FUSE Pod/{namespace}/{pod} on {node}");
                    self.kill(&what, Request::Kill { namespace, pod, container: None }).await;
                }
            }
            Fault::ConflictRate(rate) => {
                let line =
                    not_applicable(&format!("conflict_rate {rate}"), "the API server answers 409 only to real races");
                self.log("fault", &line);
                self.not_applicable.push(line);
            }
            Fault::StaleReads(lag_ms) => {
                let line = not_applicable(
                    &format!("stale_reads {lag_ms} ms"),
                    "the controller's informers lag as much as they do",
                );
                self.log("fault", &line);
                self.not_applicable.push(line);
            }
            Fault::SlowWatches(latency_ms) => {
                let line =
                    not_applicable(&format!("slow_watches {latency_ms} ms"), "watch events arrive as fast as they do");
                self.log("fault", &line);
                self.not_applicable.push(line);
            }
        }
        Ok(())
    }

    async fn kill(&mut self, what: &str, request: Request) {
        match self.bed.ask(request).await {
            Ok(_) => self.log("fault", &format!("{what} killed (SIGKILL); the agent restarts it after its backoff")),
            Err(err) => self.log("fault", &format!("{what} could not be killed: {err}")),
        }
    }

    /// `(namespace, name)` of the pods matching `selector`, in `namespace` when given, on `node`
    /// when given.
    async fn pods(&self, namespace: Option<&str>, selector: &str, node: Option<&str>) -> Result<Vec<(String, String)>> {
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> = match namespace {
            Some(namespace) => kube::Api::namespaced(self.bed.client.clone(), namespace),
            None => kube::Api::all(self.bed.client.clone()),
        };
        let list = api
            .list(&kube::api::ListParams::default().labels(selector))
            .await
            .map_err(|e| Error::kube(format!("list pods {selector}"), e))?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| node.is_none_or(|n| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(n)))
            .filter_map(|p| Some((p.metadata.namespace?, p.metadata.name?)))
            .collect())
    }
}
