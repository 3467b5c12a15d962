//! `ferrofluid-controller`: `run` (default) the controllers, or print the `crds`.

use std::process::ExitCode;

use clap::Parser;
use controller::config::{Cli, Command, LogFormat, RunArgs};
use controller::{Error, crds_yaml};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds) => {
            print!("{}", crds_yaml());
            ExitCode::SUCCESS
        }
        Some(Command::Run(args)) => run(&args),
        None => run(&cli.run),
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let result = args.settings().and_then(|settings| {
        init_logs(settings.log_format);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the async runtime: {e}")))?;
        runtime.block_on(async {
            let (client, lease_client) = clients().await?;
            controller::run::run(client, lease_client, settings).await
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ferrofluid-controller: {}", one_line(&error));
            ExitCode::from(2)
        }
    }
}

/// The controllers' client, and the election's: every lease request of the latter gets an
/// answer within a few seconds or fails, so that a hung request cannot outlive the lease (on the
/// testbed a follower's lease read once took 53 s, and a leader stopped renewing unawares).
async fn clients() -> controller::Result<(kube::Client, kube::Client)> {
    let config = kube::Config::infer().await.map_err(|e| Error::ClientConfig(one_line(&e)))?;
    let mut lease_config = config.clone();
    let bound = Some(std::time::Duration::from_secs(controller::leader::LEASE_REQUEST_TIMEOUT_SECONDS));
    (lease_config.connect_timeout, lease_config.read_timeout, lease_config.write_timeout) = (bound, bound, bound);
    let client = kube::Client::try_from(config).map_err(|e| Error::ClientConfig(one_line(&e)))?;
    let lease_client = kube::Client::try_from(lease_config).map_err(|e| Error::ClientConfig(one_line(&e)))?;
    Ok((client, lease_client))
}

/// The error and its causes on one line, for a log collector and a person alike.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
