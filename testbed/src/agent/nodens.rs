//! A node's own namespaces: one holder process per node keeps a mount namespace (with fresh
//! tmpfs at kubelet's root and at the FUSE mount root, both shared so that mounts propagate as
//! on a real node) and a PID namespace, so that stopping the node stops every process on it and
//! drops every mount it made. A closed stdin ends the holder: when the agent dies, so do its
//! nodes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::cmd;
use crate::error::{Error, Result};

/// Directories each node gets a private tmpfs at: kubelet's root and the FUSE mount root.
pub const NODE_TMPFS: &[&str] = &[model::node::kubelet::KUBELET_ROOT, model::volume::DEFAULT_MOUNT_ROOT];

/// How a container's mounts relate to its node's, as `mountPropagation` says (the agent
/// applies the most open one any of the container's volume mounts asks for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Propagation {
    /// `None`: the container sees the node's mounts as they were when it started.
    Private,
    /// `HostToContainer`: the container sees the node's new mounts; its own stay inside.
    HostToContainer,
    /// `Bidirectional`: the container's mounts under the node's shared mounts reach the node.
    Bidirectional,
}

/// A running node namespace.
pub struct NodeNamespace {
    node: String,
    holder: Child,
    /// Kept open: the holder exits when it reads end-of-file.
    stdin: Option<ChildStdin>,
    /// PID (in the agent's view) of the holder's shell, PID 1 of the node's PID namespace.
    init_pid: u32,
}

impl NodeNamespace {
    /// Starts the namespaces of `node`: the mounts are empty, as after a boot.
    pub async fn start(node: &str) -> Result<Self> {
        for dir in NODE_TMPFS {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create mount point", *dir, e))?;
        }
        let mounts: Vec<String> = NODE_TMPFS
            .iter()
            .map(|dir| format!("mount -t tmpfs -o mode=755 ff-{node} {dir} && mount --make-rshared {dir}"))
            .collect();
        // kubelet makes its directories at start; the CSI DaemonSet's hostPath volumes expect them.
        let dirs =
            ["pods", "plugins", "plugins_registry"].map(|d| format!("{}/{d}", model::node::kubelet::KUBELET_ROOT));
        let script = format!("set -e; {}; mkdir -p {}; echo ready; read _ || true", mounts.join("; "), dirs.join(" "));
        let mut holder = Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "--propagation", "private", "--", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Command { command: "unshare --mount --pid --fork".into(), detail: e.to_string() })?;
        let stdout = holder.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
        if !matches!(ready, Ok(Ok(Some(ref line))) if line == "ready") {
            let _ = holder.start_kill();
            let output = holder.wait_with_output().await.ok();
            let stderr = output.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
            return Err(Error::Command {
                command: format!("unshare … (node {node} namespaces)"),
                detail: format!("no ready line: {}", stderr.trim()),
            });
        }
        let unshare_pid = holder.id().unwrap_or_default();
        let init_pid = cmd::only_child(unshare_pid, 5_000).await.ok_or_else(|| Error::Command {
            command: format!("unshare … (node {node} namespaces)"),
            detail: "its shell did not appear".into(),
        })?;
        let stdin = holder.stdin.take();
        Ok(Self { node: node.to_string(), holder, stdin, init_pid })
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `path` on this node, as the agent (outside the node's mount namespace) reaches it.
    pub fn host_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let relative = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
        PathBuf::from(format!("/proc/{}/root", self.init_pid)).join(relative)
    }

    /// The node's mount table (`/proc/<init>/mountinfo`).
    pub fn mountinfo(&self) -> Result<String> {
        let path = format!("/proc/{}/mountinfo", self.init_pid);
        std::fs::read_to_string(&path).map_err(|e| Error::io("read", path, e))
    }

    /// A command that runs `argv` inside this node: in its mount and PID namespaces, in a mount
    /// namespace of its own with `propagation`, in network namespace `netns` (a path such as
    /// `/run/netns/x`) or the host's, after `binds` (`source → target`, read-only when asked)
    /// were mounted in that namespace.
    pub fn command(&self, argv: &[String], netns: Option<&Path>, propagation: Propagation, binds: &[Bind]) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--target={}", self.init_pid)).args(["--mount", "--pid"]);
        if let Some(netns) = netns {
            command.arg(format!("--net={}", netns.display()));
        }
        let propagation = match propagation {
            Propagation::Private => "private",
            Propagation::HostToContainer => "slave",
            Propagation::Bidirectional => "unchanged",
        };
        command.args(["--", "unshare", "--mount", "--propagation", propagation, "--"]);
        if binds.is_empty() {
            command.args(argv);
        } else {
            let script: Vec<String> = binds.iter().map(Bind::shell).collect();
            command.args(["sh", "-c", &format!("set -e; {}; exec \"$@\"", script.join("; ")), "container"]);
            command.args(argv);
        }
        command
    }

    /// Stops the node: its PID namespace ends, killing every process in it, and its mounts go.
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.holder.wait()).await.is_err() {
            let _ = self.holder.kill().await;
        }
    }
}

/// A bind mount made in a container's own mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The node path.
    pub source: String,
    /// The container path.
    pub target: String,
    /// Mount it read-only.
    pub read_only: bool,
}

impl Bind {
    fn shell(&self) -> String {
        let quote = model::engine::juicefs::shell_quote;
        let (source, target) = (quote(&self.source), quote(&self.target));
        // A directory is bound onto a directory, a file (a token, a socket) onto a file.
        let mut line = format!(
            "if [ -d {source} ]; then mkdir -p {target}; else mkdir -p \"$(dirname {target})\"; [ -e {target} ] || touch {target}; fi; mount --bind {source} {target}"
        );
        if self.read_only {
            line.push_str(&format!("; mount -o remount,bind,ro {target}"));
        }
        line
    }
}
