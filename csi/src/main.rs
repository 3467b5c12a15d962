//! `ferrofluid-csi`: the CSI node plugin binary (`fuse.csi.fluid.io`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use csi::{KubeApi, Plugin, PluginConfig, server};

/// ferrofluid's CSI node plugin for Fluid datasets (driver fuse.csi.fluid.io).
#[derive(Debug, Parser)]
#[command(name = "ferrofluid-csi", version)]
struct Args {
    /// CSI endpoint: a unix socket, e.g. unix:///csi/csi.sock.
    #[arg(long, env = "CSI_ENDPOINT")]
    endpoint: String,
    /// This node's name (usually from the downward API, spec.nodeName).
    #[arg(long, env = "NODE_ID")]
    node_id: String,
    /// Directory for per-volume stage records, which survive a plugin restart.
    #[arg(long, default_value = "/var/lib/kubelet/plugins/fuse.csi.fluid.io/state")]
    state_dir: PathBuf,
    /// How long NodePublishVolume waits for the FUSE mount before DEADLINE_EXCEEDED.
    #[arg(long, default_value_t = 30_000)]
    fuse_mount_timeout_ms: u64,
    /// Longest interval between two looks at the FUSE mount (a mount watch usually wakes sooner); at most 50.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=50))]
    poll_interval_ms: u64,
    /// FUSE recovery: pods' mounts that went dead with their FUSE daemon are bound again, on top
    /// of the dead ones, once it mounts again (Fluid's FuseRecovery). On by default.
    #[arg(long, env = "FUSE_RECOVERY", default_value_t = true, action = clap::ArgAction::Set)]
    fuse_recovery: bool,
    /// Period of FUSE recovery. 0 turns recovery off too.
    #[arg(long, env = "RECOVER_FUSE_PERIOD_MS", default_value_t = 5_000)]
    recover_period_ms: u64,
    /// FUSE recovery cuts a mount point with more stacked mounts than this down to one (with an
    /// UnmountDuplicateMountpoint warning) before binding again (Fluid's RECOVER_WARNING_THRESHOLD).
    #[arg(long, env = "RECOVER_WARNING_THRESHOLD", default_value_t = model::node::DUPLICATE_MOUNT_THRESHOLD as u64,
        value_parser = clap::value_parser!(u64).range(1..))]
    recover_duplicate_threshold: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("ferrofluid-csi: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferrofluid-csi: {err}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> csi::Result<()> {
    if args.node_id.trim().is_empty() {
        return Err(csi::CsiError::Config("--node-id must not be empty".into()));
    }
    if args.fuse_mount_timeout_ms == 0 {
        return Err(csi::CsiError::Config("--fuse-mount-timeout-ms must be positive".into()));
    }
    let socket = server::socket_path(&args.endpoint)?;
    // No client configuration is no reason to stop: Identity and most Node RPCs need none, and
    // the calls that do answer UNAVAILABLE naming what is missing.
    let api = KubeApi::new();
    match api.client().await {
        Ok(_) => tracing::info!("Kubernetes API client configured"),
        Err(err) => tracing::warn!(%err, "serving without the Kubernetes API: NodeStageVolume will be UNAVAILABLE"),
    }
    let mut config = PluginConfig::new(args.node_id, args.state_dir);
    config.fuse_mount_timeout = Duration::from_millis(args.fuse_mount_timeout_ms);
    config.poll_interval = Duration::from_millis(args.poll_interval_ms);
    config.duplicate_threshold = usize::try_from(args.recover_duplicate_threshold).unwrap_or(usize::MAX);
    let plugin = Plugin::new(config, api);
    let listener = server::bind(&socket)?;
    if args.fuse_recovery && args.recover_period_ms > 0 {
        let period = Duration::from_millis(args.recover_period_ms);
        tokio::spawn(csi::recover_loop(plugin.clone(), period, std::future::pending()));
        tracing::info!(
            period_ms = args.recover_period_ms,
            threshold = args.recover_duplicate_threshold,
            "FUSE recovery on"
        );
    } else {
        tracing::info!("FUSE recovery off");
    }
    tracing::info!(socket = %socket.display(), "serving CSI Identity, Node and Controller");
    server::serve(plugin, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}
