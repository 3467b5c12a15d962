//! `ferrofluid-node-agent`: plays kubelet for N nodes against a real control plane.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use testbed::agent::node::{NodeSpec, Settings, default_capacity};
use testbed::agent::{AgentConfig, run};

/// Plays kubelet for the named nodes: registers them, heartbeats, runs the pods bound to them
/// with the real CSI plugin and real JuiceFS, each node in its own mount and PID namespace.
#[derive(Debug, Parser)]
#[command(name = "ferrofluid-node-agent", version)]
struct Args {
    /// The control plane's state directory (`ferrofluid-controlplane up --dir`).
    #[arg(long)]
    cluster_dir: PathBuf,
    /// The control plane binary (issues each node's client certificate).
    #[arg(long)]
    controlplane_bin: PathBuf,
    /// Node names, comma-separated, each with the default capacity (8 CPUs, 32Gi, 110 pods).
    #[arg(long, value_delimiter = ',')]
    nodes: Vec<String>,
    /// A YAML list of nodes (name, capacity, labels, taints), added after `--nodes`.
    #[arg(long)]
    nodes_file: Option<PathBuf>,
    /// Directories put first on containers' PATH (the workspace's binaries, juicefs); repeatable.
    #[arg(long = "program-dir")]
    program_dirs: Vec<PathBuf>,
    /// Where logs and node kubeconfigs go (default: CLUSTER_DIR/agent).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The control socket (default: STATE_DIR/agent.sock).
    #[arg(long)]
    control_socket: Option<PathBuf>,
    /// Run the JuiceFS cache workers' real command (false: they idle, for large benchmarks).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    run_workers: bool,
    /// CrashLoopBackOff's first delay (kubelet: 10 s).
    #[arg(long, default_value_t = 10_000)]
    restart_backoff_ms: u64,
    /// CrashLoopBackOff's longest delay (kubelet: 5 min).
    #[arg(long, default_value_t = 300_000)]
    restart_backoff_max_ms: u64,
    /// Node lease renewal period (kubelet: 10 s).
    #[arg(long, default_value_t = 10_000)]
    lease_renew_ms: u64,
    /// Give pods whose every container idles their own network namespace (false: they share
    /// the node's address; the benchmarks run a thousand of them).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    network_for_idle_pods: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = match config(args) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("ferrofluid-node-agent: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ferrofluid-node-agent: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferrofluid-node-agent: {err}");
            ExitCode::from(2)
        }
    }
}

fn config(args: Args) -> Result<AgentConfig, String> {
    let mut nodes: Vec<NodeSpec> = args
        .nodes
        .iter()
        .filter(|n| !n.is_empty())
        .map(|name| NodeSpec {
            name: name.clone(),
            capacity: default_capacity(),
            labels: Default::default(),
            taints: Vec::new(),
        })
        .collect();
    if let Some(file) = &args.nodes_file {
        let text = std::fs::read_to_string(file).map_err(|e| format!("--nodes-file {}: {e}", file.display()))?;
        let more: Vec<NodeSpec> =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("--nodes-file {}: {e}", file.display()))?;
        nodes.extend(more);
    }
    if nodes.is_empty() {
        return Err("no nodes: give --nodes or --nodes-file".into());
    }
    let mut names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("node {:?} is named twice", pair[0]));
    }
    if !args.cluster_dir.join("server").exists() {
        return Err(format!(
            "--cluster-dir {}: no `server` file; is the control plane up?",
            args.cluster_dir.display()
        ));
    }
    let state_dir = args.state_dir.unwrap_or_else(|| args.cluster_dir.join("agent"));
    std::fs::create_dir_all(&state_dir).map_err(|e| format!("--state-dir {}: {e}", state_dir.display()))?;
    let control_socket = args.control_socket.unwrap_or_else(|| state_dir.join("agent.sock"));
    Ok(AgentConfig {
        cluster_dir: args.cluster_dir,
        controlplane_bin: args.controlplane_bin,
        nodes,
        control_socket,
        settings: Settings {
            program_dirs: args.program_dirs,
            run_workers: args.run_workers,
            restart_backoff_ms: args.restart_backoff_ms.max(1),
            restart_backoff_max_ms: args.restart_backoff_max_ms.max(args.restart_backoff_ms),
            state_dir,
            lease_renew_ms: args.lease_renew_ms.max(100),
            network_for_idle_pods: args.network_for_idle_pods,
        },
    })
}
