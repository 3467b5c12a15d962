//! `ferrofluid-testbed`: a real control plane with the node agent and ferrofluid from `deploy/`,
//! to explore (`up`) or to measure (`bench`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use testbed::cluster::{Options, Programs, Testbed};

/// A real Kubernetes control plane on 127.0.0.1, the node agent, and ferrofluid installed from
/// deploy/. Needs root, the Go control plane (scripts/testbed-build.sh) and scripts/setup.sh.
#[derive(Debug, Parser)]
#[command(name = "ferrofluid-testbed", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// State directory (emptied first).
    #[arg(long, global = true, default_value = "/tmp/ferrofluid-testbed")]
    dir: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start it and keep it running until Ctrl-C; prints the KUBECONFIG to use.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// N Dataset+JuiceFSRuntime pairs on M nodes: time to Bound, the controller's memory and
    /// requests, teardown; prints a Markdown table.
    Bench {
        /// Pairs.
        #[arg(long, default_value_t = 1000)]
        pairs: usize,
        /// Nodes.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Give up after this many seconds per phase.
        #[arg(long, default_value_t = 900)]
        timeout_s: u64,
        /// RUST_LOG of the controller pods (e.g. `info,controller=debug`), set before the run.
        #[arg(long)]
        controller_log: Option<String>,
    },
    /// Run scenario files on a fresh testbed each, as `ferrofluid-sim run` runs them; print each
    /// trace and normalised final state. With --compare, run each in the simulator too and
    /// show where their final states differ. Exit 1 when a run fails or the states differ.
    Scenario {
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also run each in the simulator and compare the normalised final states.
        #[arg(long)]
        compare: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ferrofluid-testbed: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferrofluid-testbed: {err}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> testbed::Result<()> {
    let agent = std::env::current_exe()
        .map_err(|e| testbed::Error::Config(e.to_string()))?
        .with_file_name("ferrofluid-node-agent");
    let programs = Programs::find(&agent)?;
    match cli.command {
        Command::Up { nodes } => {
            let bed = Testbed::start(&cli.dir, programs, &Options::nodes(nodes)).await?;
            println!("ready: export KUBECONFIG={}", bed.kubeconfig.display());
            println!("agent control socket: {}", bed.dir.join("cluster/agent/agent.sock").display());
            println!("Ctrl-C stops it.");
            let _ = tokio::signal::ctrl_c().await;
            Ok(())
        }
        Command::Scenario { files, compare } => {
            let mut ok = true;
            for file in files {
                let scenario = sim::scenario::load(&file).map_err(|e| testbed::Error::Config(e.to_string()))?;
                let real = testbed::scenario::run(&scenario, programs.clone(), &cli.dir).await?;
                println!(
                    "== {} on the real control plane ({:.1} s, {} MiB resident at the end) ==",
                    file.display(),
                    real.elapsed.as_secs_f64(),
                    real.memory_rss_bytes >> 20
                );
                print!("{}", real.normalized);
                for line in &real.not_applicable {
                    println!("not applicable: {line}");
                }
                if real.failures.is_empty() {
                    println!("result: PASSED ({} expectations held)", real.passed);
                } else {
                    ok = false;
                    println!("result: FAILED");
                    real.failures.iter().for_each(|f| println!("  - {f}"));
                }
                if compare {
                    let began = std::time::Instant::now();
                    let simulated = sim::scenario::run(&scenario, &sim::scenario::RunOptions::default());
                    println!(
                        "simulator: {:.2} s, {}",
                        began.elapsed().as_secs_f64(),
                        if simulated.outcome == sim::Outcome::Passed { "PASSED" } else { "FAILED" }
                    );
                    let sim_state = sim::scenario::parity::normalized(
                        &simulated.sim,
                        &sim::scenario::parity::named_nodes(&scenario),
                    );
                    match sim::scenario::parity::difference(&sim_state, &real.normalized) {
                        None => println!("parity: the simulator's final state is the same"),
                        Some(diff) => {
                            ok = false;
                            println!("parity: the final states differ (- simulator, + real):\n{diff}");
                        }
                    }
                }
            }
            if ok { Ok(()) } else { Err(testbed::Error::Config("a scenario failed or the states differ".into())) }
        }
        Command::Bench { pairs, nodes, timeout_s, controller_log } => {
            let mut options = Options::nodes(nodes);
            for node in &mut options.nodes {
                node.capacity.insert("pods".into(), ((pairs / nodes.max(1)) * 2 + 20).to_string());
                node.capacity.insert("cpu".into(), "64".into());
                node.capacity.insert("memory".into(), "256Gi".into());
            }
            options.run_workers = false;
            options.network_for_idle_pods = false;
            options.audit = true;
            let bed = Testbed::start(&cli.dir, programs, &options).await?;
            if let Some(level) = controller_log {
                let env = format!("RUST_LOG={level}");
                bed.kubectl_ok(&["-n", "fluid-system", "set", "env", "deployment/ferrofluid-controller", &env], None)?;
                bed.kubectl_ok(
                    &["-n", "fluid-system", "rollout", "status", "deployment/ferrofluid-controller", "--timeout=120s"],
                    None,
                )?;
            }
            let report = testbed::bench::run(&bed, pairs, nodes, Duration::from_secs(timeout_s)).await?;
            println!("{}", report.table());
            Ok(())
        }
    }
}
