//! The simulated cluster: its state, the event loop, and the watch fan-out to every controller.

use std::collections::BTreeSet;

use model::effect::{Kind, ObjectRef};

use crate::apiserver::{ApiServer, Change, Obj};
use crate::clock::Clock;
use crate::control::{Control, Pair, Reconciler};
use crate::faults::Faults;
use crate::invariants::Violation;
use crate::kube::{KubeState, KubeTask};
use crate::kubelet::NodeSim;
use crate::report::Recorder;
use crate::rng::SimRng;
use crate::trace::Trace;
use crate::workers::WorkerSim;

/// Timings and knobs of a run. Every duration is virtual milliseconds.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed of every random draw.
    pub seed: u64,
    /// How long the built-in Kubernetes controllers take to react to a change.
    pub kube_latency_ms: u64,
    /// How long a watch notification takes to reach ferrofluid's controller.
    pub watch_latency_ms: u64,
    /// How far the controller's informer cache lags the apiserver (stale reads).
    pub stale_reads_ms: u64,
    /// Container start time, once volumes are ready.
    pub pod_start_ms: u64,
    /// Graceful termination time of a pod.
    pub pod_stop_ms: u64,
    /// Time a FUSE container needs to mount after it starts.
    pub fuse_mount_ms: u64,
    /// Kubelet retry of a NodePublish that waits for the FUSE mount.
    pub publish_retry_ms: u64,
    /// Container restart delay after a crash (CrashLoopBackOff's first step).
    pub restart_delay_ms: u64,
    /// How long a restarted controller takes to come back and re-list.
    pub controller_restart_ms: u64,
    /// How long a restarted CSI node plugin is unavailable.
    pub csi_restart_ms: u64,
    /// Node-lifecycle: a silent node turns NotReady after this long.
    pub node_monitor_grace_ms: u64,
    /// Node-lifecycle: pods on a NotReady node are evicted after this long.
    pub pod_eviction_timeout_ms: u64,
    /// Period of the CSI plugin's FUSE recovery loop, from its start; 0 turns recovery off.
    pub recover_period_ms: u64,
    /// Size of each dataset's remote data (the workers' `used_space`).
    pub ufs_bytes: u64,
    /// Read rate of each app pod, bytes per second (it reads the dataset once).
    pub read_rate_bytes_per_s: u64,
    /// How often the controller scrapes the workers' metrics (the real one: once per resync
    /// period); a reconcile sees the figures of the last scrape, not of this very moment.
    pub metrics_scrape_ms: u64,
    /// Probability that a controller write gets a 409.
    pub conflict_rate: f64,
    /// The model's reconcile configuration.
    pub model: model::reconcile::Config,
    /// Record the trace.
    pub trace: bool,
    /// Record state samples for the HTML report.
    pub record: bool,
    /// Check safety invariants after every event (off in the benchmark's timed part).
    pub check_every_event: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            kube_latency_ms: 100,
            watch_latency_ms: 50,
            stale_reads_ms: 0,
            pod_start_ms: 2_000,
            pod_stop_ms: 1_000,
            fuse_mount_ms: 1_000,
            publish_retry_ms: 2_000,
            restart_delay_ms: 10_000,
            controller_restart_ms: 5_000,
            csi_restart_ms: 5_000,
            node_monitor_grace_ms: 40_000,
            pod_eviction_timeout_ms: 300_000,
            recover_period_ms: 5_000,
            ufs_bytes: 1 << 30,
            read_rate_bytes_per_s: 64 << 20,
            metrics_scrape_ms: 60_000,
            conflict_rate: 0.0,
            model: model::reconcile::Config::default(),
            trace: true,
            record: false,
            check_every_event: true,
        }
    }
}

/// Something scheduled on the clock.
#[derive(Debug, Clone)]
pub enum Event {
    /// A built-in Kubernetes controller or kubelet task (see [`KubeTask`]).
    Kube {
        /// The task.
        task: KubeTask,
        /// Its queue token; superseded events are ignored.
        token: u64,
    },
    /// A reconcile of ferrofluid's controller.
    Reconcile {
        /// Which reconciler.
        reconciler: Reconciler,
        /// The dataset/runtime pair.
        key: Pair,
        /// Its queue token.
        token: u64,
    },
    /// The restarted controller comes back and re-lists.
    ControllerUp,
    /// A restarted CSI plugin comes back.
    CsiUp {
        /// The node.
        node: String,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything held.
    Passed,
    /// An expectation or invariant failed; the messages say which.
    Failed(Vec<String>),
}

/// Counters for the summary and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Events processed.
    pub events: u64,
    /// Reconciles run.
    pub reconciles: u64,
    /// Effects applied.
    pub effects: u64,
    /// Writes refused with 409.
    pub conflicts: u64,
    /// Faults injected.
    pub faults: u64,
}

/// The simulated cluster.
pub struct Sim {
    /// Timings and knobs.
    pub config: SimConfig,
    /// Virtual time and the event queue.
    pub clock: Clock<Event>,
    /// The seeded random source.
    pub rng: SimRng,
    /// The apiserver.
    pub api: ApiServer,
    /// Queue of built-in controller and kubelet tasks.
    pub kube_queue: crate::control::DelayQueue<KubeTask>,
    /// State of the built-in controllers.
    pub kube: KubeState,
    /// Kubelet, CSI plugin and mount table of each node.
    pub nodes: rustc_hash::FxHashMap<model::effect::CompactString, NodeSim>,
    /// ferrofluid's controller: informer cache and work queues.
    pub control: Control,
    /// Simulated JuiceFS cache workers and app reads.
    pub workers: WorkerSim,
    /// Injected fault settings.
    pub faults: Faults,
    /// The trace.
    pub trace: Trace,
    /// State samples for the report.
    pub recorder: Recorder,
    /// Safety violations seen so far.
    pub violations: Vec<Violation>,
    /// Counters.
    pub stats: Stats,
}

impl Sim {
    /// An empty cluster.
    pub fn new(config: SimConfig) -> Self {
        let seed = config.seed;
        let control = Control::new(config.model.clone());
        Self {
            rng: SimRng::new(config.seed),
            trace: Trace::new(config.trace),
            recorder: Recorder::new(config.record),
            faults: Faults { conflict_rate: config.conflict_rate, ..Faults::default() },
            config,
            clock: Clock::default(),
            api: ApiServer::default(),
            kube_queue: Default::default(),
            kube: KubeState {
                scheduler: crate::kube::scheduler::cache::SchedulerCache::new(seed),
                ..KubeState::default()
            },
            nodes: Default::default(),
            control,
            workers: WorkerSim::default(),
            violations: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Milliseconds since the start of the run.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Queues a built-in controller task after the configured latency.
    pub fn kick(&mut self, task: KubeTask) {
        let at = self.clock.now_ms() + self.config.kube_latency_ms;
        self.kick_at(task, at);
    }

    /// Queues a built-in controller task at `at_ms` (an earlier request wins).
    pub fn kick_at(&mut self, task: KubeTask, at_ms: u64) {
        if let Some(token) = self.kube_queue.add(&task, at_ms) {
            self.clock.schedule_at(at_ms, Event::Kube { task, token });
        }
    }

    /// Processes every event due at or before `limit_ms`, then moves the clock there.
    /// Returns false if a safety invariant failed.
    pub fn run_until(&mut self, limit_ms: u64) -> bool {
        while let Some(event) = self.clock.pop_until(limit_ms) {
            self.handle(event);
            if !self.violations.is_empty() {
                return false;
            }
        }
        self.clock.advance_to(limit_ms);
        true
    }

    /// Processes the next event, if any is due by `limit_ms`. Returns false when none was.
    pub fn step_until(&mut self, limit_ms: u64) -> bool {
        match self.clock.pop_until(limit_ms) {
            Some(event) => {
                self.handle(event);
                true
            }
            None => false,
        }
    }

    /// Handles one event, then fans its writes out and checks the safety invariants.
    pub fn handle(&mut self, event: Event) {
        self.stats.events += 1;
        match event {
            Event::Kube { task, token } => {
                if self.kube_queue.take(&task, token) {
                    let node = task.node().map(model::effect::CompactString::from);
                    self.run_kube_task(task);
                    // Whatever a kubelet or CSI task did to the node's mounts, recovery sees it.
                    if let Some(node) = node {
                        self.schedule_recovery(&node);
                    }
                }
            }
            Event::Reconcile { reconciler, key, token } => {
                if self.control.queue(reconciler).take(&key, token) {
                    self.reconcile(reconciler, &key);
                    self.reconcile_followup(reconciler, &key);
                }
            }
            Event::ControllerUp => self.controller_up(),
            Event::CsiUp { node } => {
                self.csi_up(&node);
                self.schedule_recovery(&node);
            }
        }
        self.settle();
    }

    /// Fans pending apiserver changes out to watchers, and checks invariants.
    pub fn settle(&mut self) {
        loop {
            let changes = self.api.take_changes();
            if changes.is_empty() {
                break;
            }
            self.prepare_control_cache(&changes);
            for change in &changes {
                self.route(change);
            }
        }
        if self.config.check_every_event {
            self.check_safety();
        }
    }

    /// Routes one change to the built-in controllers, the kubelets, ferrofluid's controller and
    /// the report.
    fn route(&mut self, change: &Change) {
        self.recorder.observe(self.clock.now_ms(), change);
        self.route_cache(change);
        self.route_kube(change);
        self.route_control(change);
        self.check_on_change(change);
    }

    /// True while anything but periodic requeues is pending: a watch not yet delivered, a
    /// built-in controller task, a failed reconcile waiting for its backoff, a restart.
    pub fn is_busy(&self) -> bool {
        // Queued watch events only matter while an event can still read them: the next
        // reconcile applies every one that is due (with nothing scheduled, none ever runs).
        let feed_pending = self.control.has_pending_feed() && !self.clock.is_empty();
        if !self.kube_queue.is_empty() || feed_pending || !self.control.up {
            return true;
        }
        if self.control.has_urgent() {
            return true;
        }
        self.faults.csi_restarts_pending > 0
    }

    /// The dataset/runtime pairs that exist (either half), in order.
    pub fn pairs(&self) -> BTreeSet<Pair> {
        let mut pairs = BTreeSet::new();
        for kind in [Kind::Dataset, Kind::JuiceFSRuntime] {
            for obj in self.api.store.list(kind) {
                let key = obj.object_ref();
                pairs.insert(Pair::new(&key.namespace, &key.name));
            }
        }
        pairs
    }

    /// Looks an object up in the apiserver.
    pub fn get(&self, key: &ObjectRef) -> Option<&Obj> {
        self.api.store.get(key)
    }

    /// Runs until nothing but periodic requeues is pending and a reconcile of every pair writes
    /// nothing, or until `budget_ms` of virtual time passed. Returns the convergence time.
    pub fn run_until_converged(&mut self, budget_ms: u64) -> Option<u64> {
        let limit_ms = self.clock.now_ms() + budget_ms;
        let mut checked_at_writes = u64::MAX;
        loop {
            if self.converged_since(&mut checked_at_writes) {
                return Some(self.clock.now_ms());
            }
            if !self.step_until(limit_ms) || !self.violations.is_empty() {
                return None;
            }
        }
    }

    /// True when nothing but periodic requeues is pending and no reconciler would write.
    /// `checked_at_writes` holds the apiserver's write count at the last fixpoint check, so the
    /// (costly) check runs again only after a write.
    pub fn converged_since(&self, checked_at_writes: &mut u64) -> bool {
        if self.is_busy() || *checked_at_writes == self.api.writes {
            return false;
        }
        *checked_at_writes = self.api.writes;
        self.fixpoint_writes().is_empty()
    }
}
