//! One running container: its process, started inside its node with `nsenter`, stopped as
//! kubelet stops one (preStop hook, SIGTERM, the grace period, SIGKILL).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

use super::cmd;
use super::nodens::{Bind, NodeNamespace, Propagation};
use crate::error::{Error, Result};

/// How to start a container.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The command line.
    pub argv: Vec<String>,
    /// The environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// The pod's network namespace; `None` for the host network.
    pub netns: Option<PathBuf>,
    /// How its mounts propagate.
    pub propagation: Propagation,
    /// Volume mounts whose container path differs from the node path.
    pub binds: Vec<Bind>,
    /// Where its standard output and error go.
    pub log: PathBuf,
}

/// A started container.
pub struct Running {
    /// The container's own process (in the agent's PID view): what signals go to.
    pub pid: u32,
    /// When it started.
    pub started_at: jiff::Timestamp,
    /// Its exit code once it has ended (128 + the signal for a killed one).
    exit: watch::Receiver<Option<i32>>,
}

/// `PATH` inside containers: the workspace's binaries and `juicefs` first.
pub fn container_path(program_dirs: &[PathBuf]) -> String {
    let mut parts: Vec<String> = program_dirs.iter().map(|d| d.display().to_string()).collect();
    parts.push("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string());
    parts.join(":")
}

/// Starts `launch` on the node of `ns`; `exited` gets `slot` when the process ends.
pub async fn start(
    ns: &NodeNamespace,
    launch: &Launch,
    slot: usize,
    exited: mpsc::UnboundedSender<usize>,
) -> Result<Running> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .map_err(|e| Error::io("open container log", &launch.log, e))?;
    let err_log = log.try_clone().map_err(|e| Error::io("open container log", &launch.log, e))?;
    let mut command = ns.command(&launch.argv, launch.netns.as_deref(), launch.propagation, &launch.binds);
    command.env_clear().envs(launch.env.iter().map(|(k, v)| (k, v))).current_dir("/");
    command.stdin(Stdio::null()).stdout(log).stderr(err_log).kill_on_drop(true);
    let child = command.spawn().map_err(|e| Error::Command {
        command: format!("nsenter … {}", launch.argv.join(" ")),
        detail: e.to_string(),
    })?;
    let nsenter = child.id().unwrap_or_default();
    // nsenter forks into the node's PID namespace; its only child is the container's process.
    // Without it, signals, hooks and probes would reach nsenter, in the host's namespaces.
    let Some(pid) = cmd::only_child(nsenter, 5_000).await else {
        let mut child = child;
        let _ = child.kill().await;
        return Err(Error::Command {
            command: format!("nsenter … {}", launch.argv.join(" ")),
            detail: "the container's process did not appear within 5 s".into(),
        });
    };
    let (set_exit, exit) = watch::channel(None);
    tokio::spawn(wait_for_exit(child, set_exit, slot, exited));
    Ok(Running { pid, started_at: jiff::Timestamp::now(), exit })
}

async fn wait_for_exit(
    mut child: Child,
    set_exit: watch::Sender<Option<i32>>,
    slot: usize,
    exited: mpsc::UnboundedSender<usize>,
) {
    let code = match child.wait().await {
        Ok(status) => status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1),
        Err(_) => -1,
    };
    let _ = set_exit.send(Some(code));
    let _ = exited.send(slot);
}

impl Running {
    /// The exit code, once the process has ended.
    pub fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    /// Waits until the process ends; its exit code.
    pub async fn wait(&mut self) -> i32 {
        loop {
            if let Some(code) = *self.exit.borrow_and_update() {
                return code;
            }
            if self.exit.changed().await.is_err() {
                return -1;
            }
        }
    }

    /// Sends `signal` to the container's process.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid as i32), signal);
    }

    /// A crash: SIGKILL to the container's process and every process under it, as a container
    /// runtime ends a container whose main process dies (a `sh` wrapper's `juicefs` child must
    /// not live on and keep serving the mount).
    pub fn kill_all(&self) {
        let mut tree = vec![self.pid];
        let mut at = 0;
        while at < tree.len() {
            tree.extend(cmd::children_of(tree[at]));
            at += 1;
        }
        for pid in tree {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit code once the process is gone.
    pub async fn stop(&mut self, grace: Duration) -> i32 {
        if let Some(code) = self.exit_code() {
            return code;
        }
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(code) => code,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.wait().await
            }
        }
    }

    /// Runs `argv` inside this container's namespaces (a preStop or exec probe), up to `timeout`.
    pub async fn exec(&self, argv: &[String], timeout: Duration) -> Result<String> {
        let target = format!("--target={}", self.pid);
        let mut args: Vec<&str> = vec![&target, "--mount", "--net", "--pid", "--"];
        args.extend(argv.iter().map(String::as_str));
        match tokio::time::timeout(timeout, cmd::run("nsenter", &args)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Command { command: argv.join(" "), detail: format!("timed out after {timeout:?}") }),
        }
    }

    /// The container's root as the agent reaches it (its mounts included).
    pub fn root(&self) -> PathBuf {
        Path::new("/proc").join(self.pid.to_string()).join("root")
    }
}
