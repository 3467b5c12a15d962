//! The node agent: its nodes, the pod network, and the control socket.

pub mod cmd;
pub mod container;
pub mod control;
pub mod csiclient;
pub mod env;
pub mod images;
pub mod node;
pub mod nodens;
pub mod pod;
pub mod podnet;
pub mod probes;
pub mod status;
pub mod volumes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::error::{Error, Result};
use node::{NodeHandle, NodeSpec, Settings};

/// What the agent needs to start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The control plane's state directory (`ferrofluid-controlplane up --dir`).
    pub cluster_dir: PathBuf,
    /// The control plane binary, which issues each node's client certificate.
    pub controlplane_bin: PathBuf,
    /// The nodes to start with.
    pub nodes: Vec<NodeSpec>,
    /// Where the control socket listens.
    pub control_socket: PathBuf,
    /// How pods run.
    pub settings: Settings,
}

/// The API server's address, from the control plane's `server` file (`https://127.0.0.1:6443`).
pub fn apiserver_address(cluster_dir: &Path) -> Result<SocketAddr> {
    let path = cluster_dir.join("server");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    let host_port = text.trim().trim_start_matches("https://").trim_end_matches('/');
    host_port.parse().map_err(|e| Error::Config(format!("{}: {host_port:?} is no address: {e}", path.display())))
}

/// A client authenticated as `system:node:<node>`, with a certificate the control plane issues.
pub async fn node_client(config: &AgentConfig, node: &str) -> Result<kube::Client> {
    let dir = config.settings.state_dir.join(node);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let kubeconfig = dir.join("kubeconfig");
    let user = format!("system:node:{node}");
    let cluster_dir = config.cluster_dir.display().to_string();
    let out = kubeconfig.display().to_string();
    let bin = config.controlplane_bin.display().to_string();
    cmd::run(&bin, &["kubeconfig", "--dir", &cluster_dir, "--user", &user, "--groups", "system:nodes", "--out", &out])
        .await?;
    crate::cluster::client_for(&kubeconfig).await
}

/// Runs the agent until the process is told to stop.
pub async fn run(config: AgentConfig) -> Result<()> {
    let apiserver = apiserver_address(&config.cluster_dir)?;
    podnet::setup_bridge().await?;
    let vip = podnet::bind_service_vip().await?;
    tokio::spawn(podnet::serve_service_vip(vip, apiserver));
    let settings = Arc::new(config.settings.clone());
    let nodes: Arc<Mutex<BTreeMap<String, NodeHandle>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let next_index = Arc::new(std::sync::atomic::AtomicU8::new(1));
    let config = Arc::new(config);
    let add_node: control::AddNode = {
        let (config, settings, next_index) = (Arc::clone(&config), Arc::clone(&settings), Arc::clone(&next_index));
        Arc::new(move |spec: NodeSpec| {
            let (config, settings, next_index) = (Arc::clone(&config), Arc::clone(&settings), Arc::clone(&next_index));
            Box::pin(async move {
                let index = next_index.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if index > 250 {
                    return Err(Error::Config("at most 250 nodes per agent".into()));
                }
                let client = node_client(&config, &spec.name).await?;
                node::start(spec, index, client, settings).await
            })
        })
    };
    for spec in config.nodes.clone() {
        let handle = add_node(spec).await?;
        nodes.lock().await.insert(handle.name.clone(), handle);
    }
    tracing::info!(nodes = config.nodes.len(), socket = %config.control_socket.display(), "node agent ready");
    std::fs::write(config.settings.state_dir.join("ready"), std::process::id().to_string())
        .map_err(|e| Error::io("write", config.settings.state_dir.join("ready"), e))?;
    let socket = config.control_socket.clone();
    tokio::select! {
        served = control::serve(&socket, Arc::clone(&nodes), add_node) => served?,
        _ = shutdown() => {}
    }
    let _ = std::fs::remove_file(config.settings.state_dir.join("ready"));
    // Power every node off: their processes and mounts end with their namespaces.
    let handles: Vec<NodeHandle> = nodes.lock().await.values().cloned().collect();
    for handle in handles {
        let _ = handle.ask(node::NodeCommand::Down).await;
    }
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    if let Ok(mut term) = signal(SignalKind::terminate()) {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    } else {
        let _ = tokio::signal::ctrl_c().await;
    }
}
