//! Scale benchmark: 5,000 nodes, 1,000 datasets with runtimes, 20,000 app pods, run to
//! convergence on one core. Prints a table (each run's wall time and their median, virtual time,
//! their ratio, events, reconciles, peak memory from VmHWM).
//!
//! `SCALE_WEBHOOK=1` gives each app pod the preferred node affinity that Fluid's webhook
//! (`PreferNodesWithCache`) adds towards its dataset's cache nodes; without it (the default, and
//! the harder case) pods spread over every node and each needs a FUSE pod of its own.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm,
};
use sim::apiserver::Obj;
use sim::scenario::parse::{Capacity, PodStep};
use sim::scenario::steps::make_node;
use sim::{Sim, SimConfig};

/// The allocator of `ferrofluid-sim`, so the figures are those of the CLI's runs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Divides every size (`SCALE_DIVISOR=10` for a quick run). `cargo bench` passes `--bench`; without
/// it (`cargo test --all-targets`) this is a smoke run at 1/100 of the size, so tests stay fast.
fn divisor() -> usize {
    setting("SCALE_DIVISOR", if is_bench() { 1 } else { 100 })
}

/// `cargo bench` passes `--bench`.
fn is_bench() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// The count in environment variable `name`, else `default`; a bad value ends the run, named.
fn setting(name: &str, default: usize) -> usize {
    let value = std::env::var(name).ok();
    sim::count_setting(name, value.as_deref(), default).unwrap_or_else(|error| {
        eprintln!("scale: {error}");
        std::process::exit(2)
    })
}

fn manifest(text: &str) -> Obj {
    let value: serde_json::Value = serde_yaml_ng::from_str(text).expect("manifest");
    Obj::from_manifest(value).expect("object")
}

/// The affinity Fluid's `PreferNodesWithCache` webhook plugin adds: prefer nodes that carry the
/// dataset's common label (where its cache workers run).
fn prefer_cache_nodes(pod: &mut Obj, namespace: &str, dataset: &str) {
    let Obj::Pod(pod) = pod else { return };
    let preference = NodeSelectorTerm {
        match_expressions: Some(vec![NodeSelectorRequirement {
            key: format!("fluid.io/s-{namespace}-{dataset}"),
            operator: "In".to_string(),
            values: Some(vec!["true".to_string()]),
        }]),
        match_fields: None,
    };
    let affinity = NodeAffinity {
        preferred_during_scheduling_ignored_during_execution: Some(vec![PreferredSchedulingTerm {
            weight: 100,
            preference,
        }]),
        ..Default::default()
    };
    *Arc::make_mut(pod).affinity_mut() = Affinity { node_affinity: Some(affinity), ..Default::default() };
}

fn peak_memory_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// The sizes of one run.
#[derive(Clone, Copy)]
struct Size {
    nodes: usize,
    datasets: usize,
    pods: usize,
}

/// Builds the cluster: nodes, then each dataset with its runtime, then the app pods, settling
/// after each (nothing runs yet: every task waits on the clock).
fn build(size: Size, webhook: bool) -> Sim {
    let config = SimConfig { trace: false, record: false, check_every_event: false, ..SimConfig::default() };
    let mut sim = Sim::new(config);
    let capacity = Capacity { pods: Some(110), cpu: Some("32".into()), memory: Some("128Gi".into()) };
    let now = sim.clock.wall();
    for i in 0..size.nodes {
        let name = format!("node-{i:05}");
        sim.add_node_sim(&name);
        let _ = sim.api.create(make_node(&name, &Default::default(), &capacity, Vec::new()), now);
    }
    sim.settle();
    sim.controller_up();
    for d in 0..size.datasets {
        // One namespace: the model's exclusive anti-affinity only covers its own namespace (reported).
        let (ns, name) = ("team".to_string(), format!("data-{d:04}"));
        let placement = if d % 2 == 0 { "Exclusive" } else { "Shared" };
        let dataset = format!(
            "apiVersion: data.fluid.io/v1alpha1\nkind: Dataset\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  placement: {placement}\n  mounts: [{{name: {name}, mountPoint: 'juicefs:///{name}', options: {{bucket: 'http://minio:9000/{name}'}}}}]\n"
        );
        let runtime = format!(
            "apiVersion: data.fluid.io/v1alpha1\nkind: JuiceFSRuntime\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: 2\n  tieredstore: {{levels: [{{mediumtype: MEM, path: /dev/shm, quota: 1Gi}}]}}\n"
        );
        let _ = sim.api.apply(manifest(&dataset), now);
        let _ = sim.api.apply(manifest(&runtime), now);
        sim.settle();
    }
    for p in 0..size.pods {
        let d = p % size.datasets;
        let step = PodStep {
            name: format!("app-{p:05}"),
            namespace: "team".to_string(),
            claim: format!("data-{d:04}"),
            node_selector: Default::default(),
            node: None,
            read_only: false,
        };
        let mut pod = step.to_pod();
        if webhook {
            prefer_cache_nodes(&mut pod, "team", &format!("data-{d:04}"));
        }
        let _ = sim.api.create(pod, now);
        sim.settle();
    }
    sim
}

/// How many runs: `SCALE_RUNS`, else 3 under `cargo bench` and 1 for the smoke run.
fn runs() -> usize {
    setting("SCALE_RUNS", if is_bench() { 3 } else { 1 })
}

/// Seconds, as the table shows them.
fn seconds(duration: std::time::Duration) -> String {
    format!("{:.3} s", duration.as_secs_f64())
}

fn main() {
    let size = Size { nodes: 5_000 / divisor(), datasets: 1_000 / divisor(), pods: 20_000 / divisor() };
    let webhook = std::env::var_os("SCALE_WEBHOOK").is_some();
    // Each run builds a fresh cluster (the previous one is dropped first, so the peak memory is
    // about that of one run: the allocator keeps some freed pages). The wall time of a run on a
    // shared machine varies: report every run.
    let mut run_walls = Vec::new();
    let mut build_walls = Vec::new();
    let mut last = None;
    for _ in 0..runs() {
        drop(last.take());
        let build_start = Instant::now();
        let mut sim = build(size, webhook);
        build_walls.push(build_start.elapsed());
        let run_start = Instant::now();
        let converged = sim.run_until_converged(6 * 3_600_000);
        run_walls.push(run_start.elapsed());
        last = Some((sim, converged));
    }
    let Some((sim, converged)) = last else { return };
    let virtual_ms = sim.now_ms();
    let pods = sim.api.store.count(model::effect::Kind::Pod);
    let running = sim
        .api
        .store
        .list(model::effect::Kind::Pod)
        .filter(|o| o.as_pod().and_then(|p| p.status.as_ref()?.phase.clone()).as_deref() == Some("Running"))
        .count();
    let check_start = Instant::now();
    let problems = sim.check_converged();
    let check_wall = check_start.elapsed();
    let mut sorted = run_walls.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    println!("| measure | value |");
    println!("|---|---|");
    println!("| nodes / datasets+runtimes / app pods | {} / {} / {} |", size.nodes, size.datasets, size.pods);
    println!("| app pods prefer cache nodes (Fluid webhook) | {} |", if webhook { "yes" } else { "no" });
    println!("| pods at the end (apps, workers, FUSE) / Running | {pods} / {running} |");
    println!("| converged | {} |", converged.map(|_| "yes").unwrap_or("NO"));
    println!(
        "| convergence invariants | {} |",
        if problems.is_empty() {
            "all hold".to_string()
        } else {
            format!("{} problems, first: {}", problems.len(), problems[0])
        }
    );
    println!(
        "| build (apply everything) wall, per run | {} |",
        build_walls.iter().map(|d| seconds(*d)).collect::<Vec<_>>().join(", ")
    );
    println!(
        "| run to convergence wall, per run | {} |",
        run_walls.iter().map(|d| seconds(*d)).collect::<Vec<_>>().join(", ")
    );
    println!("| run to convergence wall, median of {} | {} |", run_walls.len(), seconds(median));
    println!("| convergence check (fixpoint + labels) wall | {} |", seconds(check_wall));
    println!("| virtual time to convergence | {:.1} s |", virtual_ms as f64 / 1000.0);
    println!(
        "| virtual-to-wall ratio (median run) | {:.0}x |",
        virtual_ms as f64 / 1000.0 / median.as_secs_f64().max(1e-9)
    );
    println!(
        "| events / reconciles / effects | {} / {} / {} |",
        sim.stats.events, sim.stats.reconciles, sim.stats.effects
    );
    println!("| peak memory (VmHWM) | {} MiB |", peak_memory_kib().map(|k| k / 1024).unwrap_or(0));
    // A figure of a run that did not converge is no figure: fail (also the smoke run under `cargo test`).
    assert!(converged.is_some(), "the cluster did not converge");
    assert!(problems.is_empty(), "convergence invariants failed: {problems:?}");
}
