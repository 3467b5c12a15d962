//! Swarm exploration (TigerBeetle's VOPR): one random world and one fault profile per seed.
//!
//! Each seed draws a cluster (size, taints, capacities), dataset/runtime pairs with random specs
//! (placements, long names that switch label keys to the dataset UID, a few deliberately invalid
//! specs), app pods that come and go, deletions at awkward moments, sometimes a node that joins
//! or an SRE marking a dead node out of service, and a fault profile: every
//! fault kind is on or off for the seed, with its own count and strength. The world renders to an
//! ordinary scenario file and runs through [`crate::scenario::run`]:
//!
//! 1. **Safety phase**: the timeline with faults on; the simulator checks every safety invariant
//!    after every event.
//! 2. **Liveness phase**: persistent faults off, every downed node back, then `run: until
//!    converged` within [`LIVENESS_BUDGET_MS`] of virtual time; the simulator's convergence
//!    invariants (labels exact, no stuck finalizers, no writes at the fixpoint, every running
//!    app's mount live, no staged volume left unused) and this module's [`oracle`] (runtimes
//!    Ready, datasets Bound, invalid specs reported, pods running) must hold.
//!
//! A failing seed is shrunk ([`shrink`]) and written as a scenario file that fails the same way
//! under `ferrofluid-sim run`.

pub mod oracle;
pub mod shrink;
pub mod world;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use crate::scenario::{RunOptions, parse_str};
use crate::sim::Outcome;
pub use world::World;

/// Virtual time the liveness phase may take to converge (`run: until converged`'s budget).
pub const LIVENESS_BUDGET_MS: u64 = crate::scenario::steps::DEFAULT_BUDGET_MS;

/// What to explore.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many seeds.
    pub seeds: u64,
    /// The first seed.
    pub from: u64,
    /// Where shrunk failing scenarios go.
    pub out: PathBuf,
    /// Show a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Lines of trace shown for a failure.
    pub trace_tail: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { seeds: 100, from: 0, out: PathBuf::from("explore-failures"), progress: true, trace_tail: 40 }
    }
}

/// The first failure of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The invariant (or oracle claim kind) that failed first.
    pub invariant: String,
    /// What was seen.
    pub message: String,
}

/// What one seed did.
#[derive(Debug, Clone)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Scenario steps in the timeline.
    pub steps: u64,
    /// Simulator events processed.
    pub events: u64,
    /// Faults in the timeline, by kind.
    pub faults: Vec<(&'static str, u64)>,
    /// Operator actions in the timeline (nodes joining, out-of-service taints), by kind.
    pub operations: Vec<(&'static str, u64)>,
    /// Faults the simulator injected (persistent-fault resets included).
    pub faults_injected: u64,
    /// Virtual time from the liveness phase's start to convergence, when it converged.
    pub convergence_ms: Option<u64>,
    /// The first failure, if any.
    pub failure: Option<Failure>,
    /// The trace (kept only for failures).
    pub trace: String,
}

/// Runs `world` and judges it.
pub fn run_world(world: &World) -> SeedReport {
    let text = world.render(&format!("Explored seed {} holds every invariant", world.seed), &[]);
    let faults = world.faults_by_kind();
    let mut report = SeedReport {
        seed: world.seed,
        steps: world.steps.len() as u64,
        events: 0,
        faults,
        operations: world.operations(),
        faults_injected: 0,
        convergence_ms: None,
        failure: None,
        trace: String::new(),
    };
    let scenario = match parse_str(&text, &format!("explore-seed-{}.yaml", world.seed)) {
        Ok(scenario) => scenario,
        Err(error) => {
            report.failure =
                Some(Failure { invariant: "generated-scenario-parses".to_string(), message: error.to_string() });
            report.trace = text;
            return report;
        }
    };
    let result = crate::scenario::run(&scenario, &RunOptions::default());
    let sim = &result.sim;
    report.events = sim.stats.events;
    report.faults_injected = sim.stats.faults;
    let converged = result.trace.lines().any(|l| l.contains("converged after"));
    if converged {
        report.convergence_ms = Some(sim.now_ms().saturating_sub(world.liveness_at_ms));
    }
    report.failure = match (&result.outcome, sim.violations.first()) {
        (_, Some(violation)) => {
            Some(Failure { invariant: violation.invariant.to_string(), message: violation.to_string() })
        }
        (Outcome::Failed(messages), None) => {
            messages.first().map(|m| Failure { invariant: classify(m), message: m.clone() })
        }
        (Outcome::Passed, None) => {
            let claims = oracle::claims(world, sim);
            oracle::failing(&claims, sim).into_iter().next().map(|(claim, seen)| Failure {
                invariant: claim.invariant.to_string(),
                message: format!("expected `{}`, but {seen}", claim.text),
            })
        }
    };
    if report.failure.is_some() {
        report.trace = result.trace;
    }
    report
}

/// The invariant a failure message names.
fn classify(message: &str) -> String {
    if message.starts_with("did not converge") {
        return "converges-within-budget".to_string();
    }
    if let Some(rest) = message.strip_prefix("invariant ") {
        return rest.split_whitespace().next().unwrap_or("invariant").to_string();
    }
    match message.split_once(':') {
        Some((name, _)) if !name.contains(' ') => name.to_string(),
        _ => "expectation".to_string(),
    }
}

/// Explores one seed: generate, run, judge.
pub fn explore_seed(seed: u64) -> SeedReport {
    run_world(&World::generate(seed))
}

/// The totals of an exploration.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Scenario steps.
    pub steps: u64,
    /// Simulator events.
    pub events: u64,
    /// Faults by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Operator actions by kind.
    pub operations: BTreeMap<&'static str, u64>,
    /// Faults the simulator injected.
    pub faults_injected: u64,
    /// Failures by invariant.
    pub violations: BTreeMap<String, u64>,
    /// Failing seeds.
    pub failed_seeds: Vec<u64>,
    /// The slowest convergence, and its seed.
    pub worst_convergence: Option<(u64, u64)>,
    /// Wall time in seconds.
    pub wall_s: f64,
}

impl Summary {
    /// Adds one seed.
    pub fn add(&mut self, report: &SeedReport) {
        self.seeds += 1;
        self.steps += report.steps;
        self.events += report.events;
        self.faults_injected += report.faults_injected;
        for (kind, count) in &report.faults {
            *self.faults.entry(kind).or_insert(0) += count;
        }
        for (kind, count) in &report.operations {
            *self.operations.entry(kind).or_insert(0) += count;
        }
        if let Some(failure) = &report.failure {
            *self.violations.entry(failure.invariant.clone()).or_insert(0) += 1;
            self.failed_seeds.push(report.seed);
        }
        if let Some(ms) = report.convergence_ms
            && self.worst_convergence.is_none_or(|(worst, _)| ms > worst)
        {
            self.worst_convergence = Some((ms, report.seed));
        }
    }

    /// The summary table.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let row = |out: &mut String, key: &str, value: String| {
            let _ = writeln!(out, "  {key:<32} {value:>14}");
        };
        let _ = writeln!(out, "== explore summary ==");
        row(&mut out, "seeds", self.seeds.to_string());
        row(&mut out, "seeds/s", format!("{:.1}", self.seeds as f64 / self.wall_s.max(1e-9)));
        row(&mut out, "wall time", format!("{:.1}s", self.wall_s));
        row(&mut out, "scenario steps", self.steps.to_string());
        row(&mut out, "simulator events", self.events.to_string());
        row(&mut out, "faults in timelines", self.faults.values().sum::<u64>().to_string());
        for kind in world::FAULT_KINDS {
            row(&mut out, &format!("  {kind}"), self.faults.get(kind).copied().unwrap_or(0).to_string());
        }
        row(&mut out, "faults injected (incl. resets)", self.faults_injected.to_string());
        row(&mut out, "operator actions", self.operations.values().sum::<u64>().to_string());
        for (kind, count) in &self.operations {
            row(&mut out, &format!("  {kind}"), count.to_string());
        }
        row(&mut out, "failing seeds", self.failed_seeds.len().to_string());
        for (invariant, count) in &self.violations {
            row(&mut out, &format!("  {invariant}"), count.to_string());
        }
        let worst = match self.worst_convergence {
            Some((ms, seed)) => format!("{} (seed {seed})", crate::clock::format_duration(ms)),
            None => "-".to_string(),
        };
        row(&mut out, "worst convergence (virtual)", worst);
        row(&mut out, "liveness budget (virtual)", crate::clock::format_duration(LIVENESS_BUDGET_MS));
        out
    }
}

/// Explores `options.seeds` seeds from `options.from`; prints failures (seed, first violated
/// invariant, trace tail, shrunk scenario) and the summary. Returns the summary.
pub fn run(options: &Options) -> Summary {
    let started = Instant::now();
    let bar = if options.progress && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(options.seeds);
        let style =
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} seeds  {per_sec}  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message("failures: 0");
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut summary = Summary::default();
    for seed in options.from..options.from.saturating_add(options.seeds) {
        let report = explore_seed(seed);
        summary.add(&report);
        if let Some(failure) = &report.failure {
            bar.suspend(|| print_failure(options, &report, failure));
            bar.set_message(format!("failures: {}", summary.failed_seeds.len()));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    summary.wall_s = started.elapsed().as_secs_f64();
    println!("{}", summary.table());
    summary
}

fn print_failure(options: &Options, report: &SeedReport, failure: &Failure) {
    println!("FAILED seed {}: invariant {}", report.seed, failure.invariant);
    println!("  {}", failure.message);
    let lines: Vec<&str> = report.trace.lines().collect();
    let tail = &lines[lines.len().saturating_sub(options.trace_tail)..];
    println!("  trace tail ({} of {} lines):", tail.len(), lines.len());
    for line in tail {
        println!("    {line}");
    }
    let world = World::generate(report.seed);
    let shrunk = shrink::shrink(&world, &failure.invariant);
    let expectations = shrink::expectations_for(&shrunk.world, &failure.invariant);
    let title = format!("Explored seed {} breaks {} (shrunk)", report.seed, failure.invariant);
    let text = shrunk.world.render(&title, &expectations);
    let path = options.out.join(format!("seed-{}.yaml", report.seed));
    let written = std::fs::create_dir_all(&options.out).and_then(|()| std::fs::write(&path, &text));
    match written {
        Ok(()) => println!(
            "  shrunk in {} runs to {} nodes, {} pairs, {} steps: {} (replay: ferrofluid-sim run {})",
            shrunk.runs,
            shrunk.world.nodes.len(),
            shrunk.world.pairs.len(),
            shrunk.world.steps.len(),
            path.display(),
            path.display()
        ),
        Err(error) => println!("  cannot write {}: {error}", path.display()),
    }
}
