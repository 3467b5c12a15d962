//! A random world drawn from a seed, and its rendering as a scenario file.
//!
//! The world is data (nodes, dataset/runtime pairs, a timeline), so the shrinker can drop parts
//! of it, and it renders to the ordinary scenario format, so every explored run, and every shrunk
//! failure, is a file `ferrofluid-sim run` replays.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Virtual time of the safety phase's end (and the liveness phase's start), at most.
pub const SAFETY_MS_MAX: u64 = 15 * 60_000;

/// A node of the world.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeGen {
    /// `node-N`.
    pub name: String,
    /// Pod capacity.
    pub pods: u32,
    /// A taint `dedicated=explore:<effect>`, if any.
    pub taint: Option<&'static str>,
}

impl NodeGen {
    /// True when workers and app pods (which tolerate nothing) may be scheduled here.
    pub fn schedulable(&self) -> bool {
        !matches!(self.taint, Some("NoSchedule" | "NoExecute"))
    }
}

/// How a runtime spec is broken on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Two mounts with the same name.
    DuplicateMountNames,
    /// A FUSE option that would background the mount.
    ForbiddenFuseOption,
}

/// A dataset and its runtime (same namespace and name).
#[derive(Debug, Clone, PartialEq)]
pub struct PairGen {
    /// Namespace.
    pub namespace: String,
    /// Name (long ones make the label keys fall back to the dataset UID).
    pub name: String,
    /// `Exclusive`, `Shared`, or unset.
    pub placement: Option<&'static str>,
    /// Initial worker replicas.
    pub replicas: i32,
    /// Cache medium, path and quota.
    pub medium: (&'static str, &'static str, &'static str),
    /// A deliberate spec error.
    pub invalid: Option<Invalid>,
}

impl PairGen {
    /// True unless the placement is `Shared`.
    pub fn exclusive(&self) -> bool {
        self.placement != Some("Shared")
    }

    fn dataset_yaml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "apiVersion: data.fluid.io/v1alpha1\nkind: Dataset\nmetadata:");
        let _ = writeln!(out, "  name: {}\n  namespace: {}\nspec:", self.name, self.namespace);
        if let Some(placement) = self.placement {
            let _ = writeln!(out, "  placement: {placement}");
        }
        let _ = writeln!(out, "  mounts:");
        let mounts = if self.invalid == Some(Invalid::DuplicateMountNames) { 2 } else { 1 };
        for _ in 0..mounts {
            let _ = writeln!(out, "    - name: vol-data\n      mountPoint: \"juicefs:///{}\"", self.name);
            let _ = writeln!(out, "      options:\n        bucket: \"http://minio:9000/{}\"", self.name);
        }
        out
    }

    fn runtime_yaml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "apiVersion: data.fluid.io/v1alpha1\nkind: JuiceFSRuntime\nmetadata:");
        let _ = writeln!(out, "  name: {}\n  namespace: {}\nspec:", self.name, self.namespace);
        let _ = writeln!(out, "  replicas: {}", self.replicas);
        let (medium, path, quota) = self.medium;
        let _ = writeln!(out, "  tieredstore:\n    levels:");
        let _ = writeln!(out, "      - mediumtype: {medium}\n        path: {path}\n        quota: {quota}");
        if self.invalid == Some(Invalid::ForbiddenFuseOption) {
            let _ = writeln!(out, "  fuse:\n    options:\n      background: \"\"");
        }
        out
    }
}

/// What a step of the timeline does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Apply the pair's Dataset.
    ApplyDataset(String),
    /// Apply the pair's JuiceFSRuntime.
    ApplyRuntime(String),
    /// Delete the pair's Dataset.
    DeleteDataset(String),
    /// Delete the pair's JuiceFSRuntime.
    DeleteRuntime(String),
    /// Set the pair's runtime replicas.
    Scale(String, i32),
    /// Create an app pod using the pair's PVC, pinned to a node or scheduled.
    Pod { pod: String, pair: String, node: Option<String> },
    /// Delete an app pod.
    DeletePod { pod: String, pair: String },
    /// Delete a worker pod (its StatefulSet recreates it).
    DeleteWorker { pair: String, ordinal: u32 },
    /// Crash an app pod's containers.
    CrashPod { pod: String, pair: String },
    /// Crash a worker pod's containers.
    CrashWorker { pair: String, ordinal: u32 },
    /// A node goes down.
    NodeDown(String),
    /// A node comes back (and loses its out-of-service taint, if it has one).
    NodeUp(String),
    /// An operator applies a new Node, `pods` its pod capacity: its kubelet registers it.
    NodeJoins {
        /// `node-N`, after the cluster's nodes.
        node: String,
        /// Pod capacity.
        pods: u32,
    },
    /// An SRE taints a down node `node.kubernetes.io/out-of-service`, so that its pods move
    /// (not a fault: the remedy Kubernetes documents for a node that is gone).
    OutOfService(String),
    /// The controller restarts, losing its state.
    ControllerRestart,
    /// Apiserver 409 rate for controller writes.
    ConflictRate(f64),
    /// Informer cache lag.
    StaleReads(u64),
    /// Extra watch latency.
    SlowWatches(u64),
    /// Every FUSE daemon on the node crashes.
    FuseCrash(String),
    /// The node's CSI plugin restarts.
    CsiRestart(String),
}

/// The fault kinds, in summary order: the scenario format's fault steps.
pub const FAULT_KINDS: &[&str] = crate::scenario::parse::FAULT_STEP_ACTIONS;

impl Action {
    /// The fault kind, for faults.
    pub fn fault_kind(&self) -> Option<&'static str> {
        Some(match self {
            Action::NodeDown(_) => "node_down",
            Action::NodeUp(_) => "node_up",
            Action::CrashPod { .. } | Action::CrashWorker { .. } => "pod_crash",
            Action::ControllerRestart => "controller_restart",
            Action::ConflictRate(_) => "conflict_rate",
            Action::StaleReads(_) => "stale_reads",
            Action::SlowWatches(_) => "slow_watches",
            Action::FuseCrash(_) => "fuse_crash",
            Action::CsiRestart(_) => "csi_restart",
            _ => return None,
        })
    }

    fn pair(&self) -> Option<&str> {
        match self {
            Action::ApplyDataset(p)
            | Action::ApplyRuntime(p)
            | Action::DeleteDataset(p)
            | Action::DeleteRuntime(p)
            | Action::Scale(p, _) => Some(p),
            Action::Pod { pair, .. }
            | Action::DeletePod { pair, .. }
            | Action::DeleteWorker { pair, .. }
            | Action::CrashPod { pair, .. }
            | Action::CrashWorker { pair, .. } => Some(pair),
            _ => None,
        }
    }

    fn node(&self) -> Option<&str> {
        match self {
            Action::Pod { node, .. } => node.as_deref(),
            Action::NodeJoins { node: n, .. }
            | Action::NodeDown(n)
            | Action::NodeUp(n)
            | Action::OutOfService(n)
            | Action::FuseCrash(n)
            | Action::CsiRestart(n) => Some(n),
            _ => None,
        }
    }
}

/// One step of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct StepGen {
    /// Virtual time.
    pub at_ms: u64,
    /// What it does.
    pub action: Action,
}

/// A generated world: cluster, timing, pairs, and a safety-phase timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    /// The seed (also the run's RNG seed).
    pub seed: u64,
    /// Nodes.
    pub nodes: Vec<NodeGen>,
    /// Pod eviction timeout.
    pub pod_eviction_timeout_ms: u64,
    /// Node-monitor grace.
    pub node_monitor_grace_ms: u64,
    /// Container restart delay.
    pub restart_delay_ms: u64,
    /// The model's resync period.
    pub resync_ms: u64,
    /// Dataset/runtime pairs.
    pub pairs: Vec<PairGen>,
    /// The safety-phase timeline, in time order.
    pub steps: Vec<StepGen>,
    /// When faults stop and the liveness phase begins.
    pub liveness_at_ms: u64,
}

/// The seed's fault profile: each kind is on or off, with its own rate (TigerBeetle's swarm).
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Occurrences per kind during the safety phase (0: the kind is off for this seed).
    pub counts: Vec<(&'static str, u32)>,
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

const LONG_NAMES: &[&str] = &["analytics-training-images-imagenet-2012", "recommendation-feature-store-snapshots"];
const NAMESPACES: &[&str] = &["default", "team-a", "ml-platform-research"];
const MEDIA: &[(&str, &str, &str)] = &[
    ("MEM", "/dev/shm", "512Mi"),
    ("MEM", "/dev/shm", "1Gi"),
    ("SSD", "/var/cache/jfs", "10Gi"),
    ("HDD", "/mnt/cache", "20Gi"),
];

impl World {
    /// Draws the world of `seed`.
    pub fn generate(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(0x0065_7870_6c6f_7265); // "explore": independent of the simulator's streams
        let node_count = rng.random_range(2..=6u32);
        let mut nodes: Vec<NodeGen> = (1..=node_count)
            .map(|i| NodeGen {
                name: format!("node-{i}"),
                pods: rng.random_range(16..=110),
                taint: if rng.random_bool(0.2) {
                    Some(*pick(&mut rng, &["NoSchedule", "PreferNoSchedule", "NoExecute"]))
                } else {
                    None
                },
            })
            .collect();
        if nodes.iter().all(|n| !n.schedulable()) {
            nodes[0].taint = None;
        }
        let schedulable: Vec<String> = nodes.iter().filter(|n| n.schedulable()).map(|n| n.name.clone()).collect();
        let mut worker_budget = schedulable.len() as i32;

        let pair_count = rng.random_range(1..=4usize);
        let mut pairs = Vec::new();
        let mut names = BTreeSet::new();
        for i in 0..pair_count {
            let long = rng.random_bool(0.25);
            let namespace = if long { "ml-platform-research" } else { pick(&mut rng, NAMESPACES) }.to_string();
            let name = if long {
                format!("{}-{i}", pick(&mut rng, LONG_NAMES))
            } else {
                format!("ds-{}", ["a", "b", "c", "d"][i])
            };
            if !names.insert((namespace.clone(), name.clone())) {
                continue;
            }
            let placement = *pick(&mut rng, &[None, Some("Exclusive"), Some("Shared")]);
            let replicas = if worker_budget > 0 { rng.random_range(1..=worker_budget.min(3)) } else { 1 };
            worker_budget -= replicas;
            let invalid = if rng.random_bool(0.1) {
                Some(*pick(&mut rng, &[Invalid::DuplicateMountNames, Invalid::ForbiddenFuseOption]))
            } else {
                None
            };
            pairs.push(PairGen { namespace, name, placement, replicas, medium: *pick(&mut rng, MEDIA), invalid });
        }

        let liveness_at_ms = rng.random_range(3..=15u64) * 60_000;
        let mut steps = Vec::new();
        let at = |rng: &mut ChaCha8Rng, from: u64| rng.random_range(from..liveness_at_ms) / 1000 * 1000;
        let mut pod_index = 0;
        for pair in &pairs {
            let key = format!("{}/{}", pair.namespace, pair.name);
            let dataset_at = at(&mut rng, 0) / 4;
            // The runtime may come before its dataset: it must wait, not fail.
            let runtime_at = if rng.random_bool(0.2) { dataset_at / 2 } else { dataset_at + at(&mut rng, 0) / 6 };
            steps.push(StepGen { at_ms: dataset_at, action: Action::ApplyDataset(key.clone()) });
            steps.push(StepGen { at_ms: runtime_at, action: Action::ApplyRuntime(key.clone()) });
            for _ in 0..rng.random_range(0..=2) {
                pod_index += 1;
                let pod = format!("app-{pod_index}");
                let node = rng.random_bool(0.3).then(|| pick(&mut rng, &schedulable).clone());
                let pod_at = at(&mut rng, 0);
                steps
                    .push(StepGen { at_ms: pod_at, action: Action::Pod { pod: pod.clone(), pair: key.clone(), node } });
                if rng.random_bool(0.4) {
                    let gone_at = at(&mut rng, pod_at);
                    steps.push(StepGen { at_ms: gone_at, action: Action::DeletePod { pod, pair: key.clone() } });
                }
            }
            if rng.random_bool(0.25) {
                let extra = if worker_budget > 0 { rng.random_range(0..=worker_budget.min(2)) } else { 0 };
                let replicas = (pair.replicas + extra - rng.random_range(0..=1)).max(1);
                worker_budget -= (replicas - pair.replicas).max(0);
                steps.push(StepGen { at_ms: at(&mut rng, runtime_at), action: Action::Scale(key.clone(), replicas) });
            }
            // Deletions at awkward moments, sometimes followed by a re-creation.
            for (probability, delete, apply) in [
                (0.2, Action::DeleteDataset(key.clone()), Action::ApplyDataset(key.clone())),
                (0.2, Action::DeleteRuntime(key.clone()), Action::ApplyRuntime(key.clone())),
            ] {
                if rng.random_bool(probability) {
                    let deleted_at = at(&mut rng, dataset_at.min(runtime_at));
                    steps.push(StepGen { at_ms: deleted_at, action: delete });
                    if rng.random_bool(0.5) {
                        steps.push(StepGen { at_ms: at(&mut rng, deleted_at), action: apply });
                    }
                }
            }
            if rng.random_bool(0.15) {
                let ordinal = rng.random_range(0..pair.replicas.max(1) as u32);
                steps.push(StepGen {
                    at_ms: at(&mut rng, runtime_at),
                    action: Action::DeleteWorker { pair: key.clone(), ordinal },
                });
            }
        }

        let profile = Profile::generate(&mut rng);
        let apps: Vec<(String, String)> = steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Pod { pod, pair, .. } => Some((pod.clone(), pair.clone())),
                _ => None,
            })
            .collect();
        let node_names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        for (kind, count) in &profile.counts {
            for _ in 0..*count {
                let when = at(&mut rng, 0);
                let node = pick(&mut rng, &node_names).clone();
                let action = match *kind {
                    "node_down" => {
                        let back = rng.random_bool(0.7).then(|| at(&mut rng, when));
                        if let Some(back) = back {
                            steps.push(StepGen { at_ms: back, action: Action::NodeUp(node.clone()) });
                        }
                        // Half the time an SRE marks the dead node out of service while it is down.
                        let until = back.unwrap_or(liveness_at_ms);
                        let taint_at = (when + until) / 2 / 1000 * 1000;
                        if rng.random_bool(0.5) && when < taint_at && taint_at < until {
                            steps.push(StepGen { at_ms: taint_at, action: Action::OutOfService(node.clone()) });
                        }
                        Action::NodeDown(node)
                    }
                    "pod_crash" => {
                        let pair = pick(&mut rng, &pairs);
                        let key = format!("{}/{}", pair.namespace, pair.name);
                        if !apps.is_empty() && rng.random_bool(0.5) {
                            let (pod, pair) = pick(&mut rng, &apps).clone();
                            Action::CrashPod { pod, pair }
                        } else {
                            Action::CrashWorker { pair: key, ordinal: rng.random_range(0..pair.replicas.max(1) as u32) }
                        }
                    }
                    "controller_restart" => Action::ControllerRestart,
                    "conflict_rate" => Action::ConflictRate(*pick(&mut rng, &[0.05, 0.1, 0.25, 0.5])),
                    "stale_reads" => Action::StaleReads(*pick(&mut rng, &[200, 1_000, 3_000, 10_000])),
                    "slow_watches" => Action::SlowWatches(*pick(&mut rng, &[500, 2_000, 5_000, 15_000])),
                    "fuse_crash" => Action::FuseCrash(node),
                    _ => Action::CsiRestart(node),
                };
                steps.push(StepGen { at_ms: when, action });
            }
        }
        // One world in five grows: a node joins during the safety phase (no fault targets it).
        if rng.random_bool(0.2) {
            let node = format!("node-{}", nodes.len() + 1);
            let pods = rng.random_range(16..=110);
            steps.push(StepGen { at_ms: at(&mut rng, 0), action: Action::NodeJoins { node, pods } });
        }
        steps.sort_by_key(|s| s.at_ms);
        World {
            seed,
            nodes,
            pod_eviction_timeout_ms: *pick(&mut rng, &[30_000, 60_000, 120_000, 300_000]),
            node_monitor_grace_ms: *pick(&mut rng, &[20_000, 40_000]),
            restart_delay_ms: *pick(&mut rng, &[2_000, 5_000, 10_000]),
            resync_ms: *pick(&mut rng, &[30_000, 60_000]),
            pairs,
            steps,
            liveness_at_ms,
        }
    }

    /// The pair named `namespace/name`.
    pub fn pair(&self, key: &str) -> Option<&PairGen> {
        self.pairs.iter().find(|p| format!("{}/{}", p.namespace, p.name) == key)
    }

    /// Removes the pair `key` and every step about it.
    pub fn without_pair(&self, key: &str) -> Self {
        let mut world = self.clone();
        world.pairs.retain(|p| format!("{}/{}", p.namespace, p.name) != key);
        world.steps.retain(|s| s.action.pair() != Some(key));
        world
    }

    /// Removes the node `name` and every step about it (keeps at least one node).
    pub fn without_node(&self, name: &str) -> Self {
        let mut world = self.clone();
        world.nodes.retain(|n| n.name != name);
        world.steps.retain(|s| s.action.node() != Some(name));
        world
    }

    /// True when every pair's workers fit at once: exclusive workers need a node each, shared
    /// workers of one dataset a node each, and shared workers stay off exclusive nodes. Counted
    /// with the largest replicas each pair ever asks for, and assuming the worst spread.
    pub fn workers_fit(&self) -> bool {
        let usable = self.nodes.iter().filter(|n| n.schedulable()).count() as i32;
        let demand: i32 = self
            .pairs
            .iter()
            .filter(|p| p.invalid.is_none())
            .map(|p| {
                let key = format!("{}/{}", p.namespace, p.name);
                let scaled = self.steps.iter().filter_map(|s| match &s.action {
                    Action::Scale(pair, replicas) if *pair == key => Some(*replicas),
                    _ => None,
                });
                scaled.chain([p.replicas]).max().unwrap_or(p.replicas)
            })
            .sum();
        demand <= usable
    }

    /// Operator actions in the timeline that are not faults: nodes that join, out-of-service
    /// taints.
    pub fn operations(&self) -> Vec<(&'static str, u64)> {
        let count = |wanted: fn(&Action) -> bool| self.steps.iter().filter(|s| wanted(&s.action)).count() as u64;
        vec![
            ("node_joins", count(|a| matches!(a, Action::NodeJoins { .. }))),
            ("out_of_service", count(|a| matches!(a, Action::OutOfService(_)))),
        ]
    }

    /// Faults in the timeline, by kind (only those that run before the liveness phase).
    pub fn faults_by_kind(&self) -> Vec<(&'static str, u64)> {
        FAULT_KINDS
            .iter()
            .map(|kind| (*kind, self.steps.iter().filter(|s| s.action.fault_kind() == Some(kind)).count() as u64))
            .collect()
    }

    /// The scenario file: the timeline, then the liveness phase (persistent faults off, downed
    /// nodes back) and `run: until converged`, then `expectations` if any.
    pub fn render(&self, title: &str, expectations: &[String]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "name: {title}");
        let _ = writeln!(out, "description: >");
        let _ = writeln!(
            out,
            "  Generated by `ferrofluid-sim explore` from seed {}: a safety phase with faults on until {},\n  then a liveness phase with faults off that must converge.",
            self.seed,
            crate::clock::format_duration(self.liveness_at_ms)
        );
        let _ = writeln!(out, "seed: {}", self.seed);
        let _ = writeln!(out, "cluster:\n  nodes:");
        for node in &self.nodes {
            let _ = writeln!(
                out,
                "    - name: {}\n      capacity: {{pods: {}, cpu: \"16\", memory: 64Gi}}",
                node.name, node.pods
            );
            if let Some(effect) = node.taint {
                let _ = writeln!(out, "      taints: [{{key: dedicated, value: explore, effect: {effect}}}]");
            }
        }
        let _ = writeln!(out, "timing:");
        let _ = writeln!(out, "  pod_eviction_timeout: {}", duration(self.pod_eviction_timeout_ms));
        let _ = writeln!(out, "  node_monitor_grace: {}", duration(self.node_monitor_grace_ms));
        let _ = writeln!(out, "  restart_delay: {}", duration(self.restart_delay_ms));
        let _ = writeln!(out, "  resync: {}", duration(self.resync_ms));
        let _ = writeln!(out, "steps:");
        let mut down: BTreeSet<String> = BTreeSet::new();
        let mut tainted: BTreeSet<String> = BTreeSet::new();
        let mut persistent: BTreeSet<&'static str> = BTreeSet::new();
        for step in &self.steps {
            let body = match &step.action {
                Action::ApplyDataset(key) => match self.pair(key) {
                    Some(pair) => format!("apply: |\n{}", indent(&pair.dataset_yaml(), 6)),
                    None => continue,
                },
                Action::ApplyRuntime(key) => match self.pair(key) {
                    Some(pair) => format!("apply: |\n{}", indent(&pair.runtime_yaml(), 6)),
                    None => continue,
                },
                Action::DeleteDataset(key) => format!("delete: Dataset/{key}"),
                Action::DeleteRuntime(key) => format!("delete: JuiceFSRuntime/{key}"),
                Action::Scale(key, replicas) => format!("scale: {{runtime: {key}, replicas: {replicas}}}"),
                Action::Pod { pod, pair, node } => {
                    let (namespace, claim) = pair.split_once('/').unwrap_or(("default", pair));
                    let node = node.as_ref().map(|n| format!(", node: {n}")).unwrap_or_default();
                    format!("pod: {{name: {pod}, namespace: {namespace}, claim: {claim}{node}}}")
                }
                Action::DeletePod { pod, pair } => {
                    let namespace = pair.split_once('/').map_or("default", |(ns, _)| ns);
                    format!("delete: Pod/{namespace}/{pod}")
                }
                Action::DeleteWorker { pair, ordinal } => format!("delete: Pod/{}", worker_pod(pair, *ordinal)),
                Action::CrashPod { pod, pair } => {
                    let namespace = pair.split_once('/').map_or("default", |(ns, _)| ns);
                    format!("pod_crash: {namespace}/{pod}")
                }
                Action::CrashWorker { pair, ordinal } => format!("pod_crash: {}", worker_pod(pair, *ordinal)),
                Action::NodeDown(node) => {
                    if !down.insert(node.clone()) {
                        continue;
                    }
                    format!("node_down: {node}")
                }
                Action::NodeUp(node) => {
                    if !down.remove(node) {
                        continue;
                    }
                    if tainted.remove(node) {
                        format!("node_up: {node}\n  - {}", untaint(node))
                    } else {
                        format!("node_up: {node}")
                    }
                }
                Action::NodeJoins { node, pods } => {
                    let resources = format!("{{pods: \"{pods}\", cpu: \"16\", memory: 64Gi}}");
                    format!(
                        "apply: |\n      apiVersion: v1\n      kind: Node\n      metadata:\n        name: {node}\n      status:\n        capacity: {resources}\n        allocatable: {resources}"
                    )
                }
                Action::OutOfService(node) => {
                    if !down.contains(node) || !tainted.insert(node.clone()) {
                        continue;
                    }
                    format!("taint: {{node: {node}, key: {OUT_OF_SERVICE}, value: nodeshutdown, effect: NoExecute}}")
                }
                Action::ControllerRestart => "controller_restart: true".to_string(),
                Action::ConflictRate(rate) => {
                    persistent.insert("conflict_rate");
                    format!("conflict_rate: {rate}")
                }
                Action::StaleReads(ms) => {
                    persistent.insert("stale_reads");
                    format!("stale_reads: {}", duration(*ms))
                }
                Action::SlowWatches(ms) => {
                    persistent.insert("slow_watches");
                    format!("slow_watches: {}", duration(*ms))
                }
                Action::FuseCrash(node) => format!("fuse_crash: {node}"),
                Action::CsiRestart(node) => format!("csi_restart: {node}"),
            };
            let _ = writeln!(out, "  - at: {}\n    {body}", duration(step.at_ms));
        }
        let mut liveness: Vec<String> = persistent
            .into_iter()
            .map(|kind| format!("{kind}: {}", if kind == "conflict_rate" { "0" } else { "0s" }))
            .collect();
        for node in down {
            liveness.push(format!("node_up: {node}"));
            if tainted.contains(&node) {
                liveness.push(untaint(&node));
            }
        }
        liveness.push("run: until converged".to_string());
        for (index, body) in liveness.iter().enumerate() {
            if index == 0 {
                let at = duration(self.liveness_at_ms);
                let _ =
                    writeln!(out, "  - at: {at}\n    note: liveness phase - faults off, every node back\n    {body}");
            } else {
                let _ = writeln!(out, "  - {body}");
            }
        }
        if !expectations.is_empty() {
            let _ = writeln!(out, "  - expect:");
            for expectation in expectations {
                let _ = writeln!(out, "      - {expectation}");
            }
        }
        out
    }
}

impl Profile {
    /// Each kind is on with probability one half; an enabled kind happens 1 to 4 times.
    pub fn generate(rng: &mut ChaCha8Rng) -> Self {
        let counts = FAULT_KINDS
            .iter()
            .filter(|kind| **kind != "node_up")
            .map(|kind| (*kind, if rng.random_bool(0.5) { rng.random_range(1..=4) } else { 0 }))
            .collect();
        Self { counts }
    }
}

const OUT_OF_SERVICE: &str = crate::kube::nodelifecycle::OUT_OF_SERVICE;

/// The step that lifts a node's out-of-service taint.
fn untaint(node: &str) -> String {
    format!("untaint: {{node: {node}, key: {OUT_OF_SERVICE}}}")
}

/// `namespace/<name>-juicefs-worker-<ordinal>` (the StatefulSet's pod name, bounded as the model bounds it).
fn worker_pod(pair: &str, ordinal: u32) -> String {
    let (namespace, name) = pair.split_once('/').unwrap_or(("default", pair));
    let names = model::labels::WorkloadNames::new(namespace, name, model::engine::juicefs::RUNTIME_TYPE);
    format!("{namespace}/{}-{ordinal}", names.workers)
}

fn indent(text: &str, width: usize) -> String {
    let pad = " ".repeat(width);
    text.lines().map(|line| format!("{pad}{line}\n")).collect()
}

/// `90s`, `1500ms`, `0s`.
fn duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}
