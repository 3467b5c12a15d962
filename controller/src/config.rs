//! Command line and environment: clap flags, checked once into the model's `Config`.

use std::net::SocketAddr;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::{Error, Result};

/// ferrofluid's controller for Fluid's `Dataset` and `JuiceFSRuntime`.
#[derive(Debug, Parser)]
#[command(name = "ferrofluid-controller", version)]
pub struct Cli {
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `run`, also accepted without the subcommand.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers (the default).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions the Rust types generate, as YAML.
    Crds,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Flags of `run`; each also reads an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Default image of the JuiceFS cache workers, `repository:tag`.
    #[arg(long, env = "FERROFLUID_WORKER_IMAGE", default_value = model::engine::juicefs::DEFAULT_IMAGE)]
    pub worker_image: String,
    /// Default image of the JuiceFS FUSE client, `repository:tag`.
    #[arg(long, env = "FERROFLUID_FUSE_IMAGE", default_value = model::engine::juicefs::DEFAULT_IMAGE)]
    pub fuse_image: String,
    /// Host directory under which FUSE clients mount datasets.
    #[arg(long, env = "FERROFLUID_MOUNT_ROOT", default_value = model::volume::DEFAULT_MOUNT_ROOT)]
    pub mount_root: String,
    /// Periodic resync of healthy runtimes, in seconds.
    #[arg(long, env = "FERROFLUID_RESYNC_SECONDS", default_value_t = 60)]
    pub resync_seconds: u64,
    /// Log format.
    #[arg(long, env = "FERROFLUID_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Address of the `/metrics`, `/healthz` and `/readyz` server.
    #[arg(long, env = "FERROFLUID_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "FERROFLUID_LEASE_NAME", default_value = "ferrofluid-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "fluid-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease and in Events (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "ferrofluid-controller")]
    pub identity: String,
    /// Reconciles of each kind that may run at once.
    #[arg(long, env = "FERROFLUID_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,
}

/// Checked settings of `run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What the model's reconcilers need.
    pub model: model::reconcile::Config,
    /// Where to serve metrics and health.
    pub metrics_addr: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Lease name.
    pub lease_name: String,
    /// Lease namespace.
    pub lease_namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// Reconciles per kind at once.
    pub concurrency: u16,
}

impl RunArgs {
    /// Checks every flag; the error names the flag and says what is allowed.
    pub fn settings(&self) -> Result<Settings> {
        for (flag, image) in [("--worker-image", &self.worker_image), ("--fuse-image", &self.fuse_image)] {
            if image.trim().is_empty() {
                return Err(Error::Config(format!(
                    "{flag} is empty; give an image such as juicedata/juicefs-fuse:ce-v1.2.3"
                )));
            }
            if image.chars().any(char::is_whitespace) {
                return Err(Error::Config(format!("{flag} {image:?} contains whitespace")));
            }
        }
        if !self.mount_root.starts_with('/') {
            return Err(Error::Config(format!("--mount-root {:?} must be an absolute path", self.mount_root)));
        }
        if self.resync_seconds == 0 {
            return Err(Error::Config("--resync-seconds must be at least 1".to_string()));
        }
        if self.concurrency == 0 {
            return Err(Error::Config("--concurrency must be at least 1".to_string()));
        }
        let metrics_addr = self
            .metrics_addr
            .parse()
            .map_err(|e| Error::Config(format!("--metrics-addr {:?} is not host:port: {e}", self.metrics_addr)))?;
        let mut model = model::reconcile::Config::default();
        model.engine.worker_image = self.worker_image.clone();
        model.engine.fuse_image = self.fuse_image.clone();
        model.engine.mount_root = self.mount_root.trim_end_matches('/').to_string();
        if model.engine.mount_root.is_empty() {
            model.engine.mount_root = "/".to_string();
        }
        model.resync_ms = self.resync_seconds.saturating_mul(1000);
        Ok(Settings {
            model,
            metrics_addr,
            log_format: self.log_format,
            lease_name: self.lease_name.clone(),
            lease_namespace: self.lease_namespace.clone(),
            identity: self.identity.clone(),
            concurrency: self.concurrency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ferrofluid-controller").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_give_a_working_config() {
        let settings = parse(&[]).run.settings().unwrap();
        assert_eq!(settings.model.engine.mount_root, "/runtime-mnt");
        assert_eq!(settings.model.resync_ms, 60_000);
    }

    #[test]
    fn flags_reach_the_model_config() {
        let cli = parse(&[
            "run",
            "--worker-image",
            "w:1",
            "--fuse-image",
            "f:2",
            "--mount-root",
            "/mnt/x/",
            "--resync-seconds",
            "5",
        ]);
        let Some(Command::Run(args)) = cli.command else { panic!("expected run") };
        let settings = args.settings().unwrap();
        assert_eq!(settings.model.engine.worker_image, "w:1");
        assert_eq!(settings.model.engine.fuse_image, "f:2");
        assert_eq!(settings.model.engine.mount_root, "/mnt/x");
        assert_eq!(settings.model.resync_ms, 5_000);
    }

    #[test]
    fn bad_values_name_their_flag() {
        let err = parse(&["--worker-image", " "]).run.settings().unwrap_err().to_string();
        assert!(err.contains("--worker-image is empty"), "{err}");
        let err = parse(&["--mount-root", "relative"]).run.settings().unwrap_err().to_string();
        assert!(err.contains("--mount-root"), "{err}");
        let err = parse(&["--metrics-addr", "nope"]).run.settings().unwrap_err().to_string();
        assert!(err.contains("--metrics-addr"), "{err}");
    }
}
