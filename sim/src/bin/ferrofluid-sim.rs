//! `ferrofluid-sim`: run or check scenario files on the deterministic simulated cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sim::Outcome;
use sim::scenario::{RunOptions, load, run};

/// jemalloc, not the system allocator: a simulation makes and drops millions of small strings
/// and maps, and glibc's malloc leaves them scattered (the scale run is about 20% slower with it).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "ferrofluid-sim",
    about = "Runs ferrofluid's control plane on a deterministic simulated Kubernetes cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario: print the trace and a summary of the final state; exit 1 if an
    /// expectation or invariant fails.
    Run {
        /// The scenario file.
        file: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Write a self-contained HTML timeline here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Swarm-explore random worlds under seed-derived fault profiles; exit 1 on any failure.
    Explore {
        /// How many seeds.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Where shrunk failing scenarios are written.
        #[arg(long, default_value = "explore-failures")]
        out: PathBuf,
    },
    /// Print a generated cluster as a scenario file (N nodes, P pairs, A app pods), the
    /// side-by-side benchmark's workload for the simulator and the real control plane.
    Generate {
        /// Nodes.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Dataset+JuiceFSRuntime pairs.
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// App pods.
        #[arg(long, default_value_t = 500)]
        apps: usize,
    },
    /// Only validate scenario files.
    Check {
        /// The scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { file, seed, report } => {
            let scenario = match load(&file) {
                Ok(scenario) => scenario,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::from(2);
                }
            };
            let result = run(&scenario, &RunOptions { seed, record: report.is_some() });
            println!("# {}", scenario.name);
            println!("# seed {}", result.seed);
            print!("{}", result.trace);
            println!();
            print!("{}", result.summary);
            if let Some(path) = report {
                let outcome = match &result.outcome {
                    Outcome::Passed => "PASSED".to_string(),
                    Outcome::Failed(reasons) => format!("FAILED: {}", reasons.join("; ")),
                };
                let html = sim::report::render(
                    &scenario.name,
                    &scenario.description,
                    &result.sim.recorder,
                    &result.sim.trace,
                    result.sim.now_ms(),
                    &result.summary,
                    &outcome,
                );
                if let Err(error) = std::fs::write(&path, html) {
                    eprintln!("error: {}: cannot write: {error}", path.display());
                    return ExitCode::from(2);
                }
                eprintln!("report written to {}", path.display());
            }
            match result.outcome {
                Outcome::Passed => ExitCode::SUCCESS,
                Outcome::Failed(_) => ExitCode::from(1),
            }
        }
        Command::Explore { seeds, from, out } => {
            let summary = sim::explore::run(&sim::explore::Options { seeds, from, out, ..Default::default() });
            if summary.failed_seeds.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Command::Generate { nodes, pairs, apps } => {
            match sim::scenario::generate::scenario_text(sim::scenario::generate::Sizes { nodes, pairs, apps }) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Check { files } => {
            let mut failed = false;
            for file in files {
                match load(&file) {
                    Ok(scenario) => {
                        println!("{}: ok ({} steps): {}", file.display(), scenario.steps.len(), scenario.name)
                    }
                    Err(error) => {
                        eprintln!("error: {error}");
                        failed = true;
                    }
                }
            }
            if failed { ExitCode::from(2) } else { ExitCode::SUCCESS }
        }
    }
}
