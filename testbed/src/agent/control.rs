//! The agent's control socket: one JSON request per line, one JSON answer per line. Tests and
//! the scenario runner use it to power nodes down and up, add nodes, crash containers and look
//! at a node's mounts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use super::node::{NodeCommand, NodeHandle, NodeSpec, NodeView};
use crate::error::{Error, Result};

/// A request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The nodes and whether each is up.
    Nodes,
    /// Power a node off: its heartbeat stops, its processes and mounts end.
    NodeDown {
        /// The node.
        node: String,
    },
    /// Power a node on again (an empty mount table, as after a reboot).
    NodeUp {
        /// The node.
        node: String,
    },
    /// Register another node.
    AddNode {
        /// The node.
        spec: NodeSpec,
    },
    /// Crash a container (SIGKILL its process); every container of the pod when unnamed.
    Kill {
        /// The pod's namespace.
        namespace: String,
        /// The pod.
        pod: String,
        /// The container.
        #[serde(default)]
        container: Option<String>,
    },
    /// A node's root, mount table and containers' roots.
    Inspect {
        /// The node.
        node: String,
    },
}

/// An answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Answer {
    /// Why the request failed; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `nodes`: name → up.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, bool>,
    /// `inspect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeView>,
}

/// Adds a node to the agent (the agent's `add_node`).
pub type AddNode = Arc<dyn Fn(NodeSpec) -> futures::future::BoxFuture<'static, Result<NodeHandle>> + Send + Sync>;

/// Serves the control socket at `path` over `nodes`.
pub async fn serve(path: &Path, nodes: Arc<Mutex<BTreeMap<String, NodeHandle>>>, add_node: AddNode) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| Error::io("bind control socket", path, e))?;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let nodes = Arc::clone(&nodes);
        let add_node = Arc::clone(&add_node);
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match serde_json::from_str::<Request>(&line) {
                    Ok(request) => answer(request, &nodes, &add_node).await,
                    Err(err) => Answer { error: Some(format!("bad request {line:?}: {err}")), ..Default::default() },
                };
                let mut text = serde_json::to_string(&answer).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
                text.push('\n');
                if write.write_all(text.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

async fn answer(request: Request, nodes: &Mutex<BTreeMap<String, NodeHandle>>, add_node: &AddNode) -> Answer {
    let result = handle(request, nodes, add_node).await;
    result.unwrap_or_else(|err| Answer { error: Some(err.to_string()), ..Default::default() })
}

async fn handle(request: Request, nodes: &Mutex<BTreeMap<String, NodeHandle>>, add_node: &AddNode) -> Result<Answer> {
    let node = |name: &str, nodes: &BTreeMap<String, NodeHandle>| {
        nodes.get(name).cloned().ok_or_else(|| Error::Config(format!("no node {name:?} in this agent")))
    };
    let handles: BTreeMap<String, NodeHandle> = nodes.lock().await.clone();
    match request {
        Request::Nodes => {
            let mut answer = Answer::default();
            for (name, handle) in handles {
                let view = handle.ask(NodeCommand::Inspect).await?;
                answer.nodes.insert(name, view.up);
            }
            Ok(answer)
        }
        Request::NodeDown { node: name } => {
            node(&name, &handles)?.ask(NodeCommand::Down).await?;
            Ok(Answer::default())
        }
        Request::NodeUp { node: name } => {
            node(&name, &handles)?.ask(NodeCommand::Up).await?;
            Ok(Answer::default())
        }
        Request::AddNode { spec } => {
            if handles.contains_key(&spec.name) {
                return Err(Error::Config(format!("node {:?} exists already", spec.name)));
            }
            let handle = add_node(spec).await?;
            nodes.lock().await.insert(handle.name.clone(), handle);
            Ok(Answer::default())
        }
        Request::Kill { namespace, pod, container } => {
            let mut last = Error::Config(format!("pod {namespace}/{pod} runs on no node of this agent"));
            for handle in handles.values() {
                let (namespace, pod, container) = (namespace.clone(), pod.clone(), container.clone());
                match handle.ask(|reply| NodeCommand::Kill { namespace, pod, container, reply }).await {
                    Ok(()) => return Ok(Answer::default()),
                    Err(err) => last = err,
                }
            }
            Err(last)
        }
        Request::Inspect { node: name } => {
            let view = node(&name, &handles)?.ask(NodeCommand::Inspect).await?;
            Ok(Answer { node: Some(view), ..Default::default() })
        }
    }
}

/// A client of the control socket.
pub struct AgentClient {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl AgentClient {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path).await.map_err(|e| Error::io("connect control socket", path, e))?;
        let (read, write) = stream.into_split();
        Ok(Self { lines: BufReader::new(read).lines(), write })
    }

    /// Sends `request`; its answer, or its error.
    pub async fn ask(&mut self, request: &Request) -> Result<Answer> {
        let mut line = serde_json::to_string(request).map_err(|e| Error::Config(e.to_string()))?;
        line.push('\n');
        self.write.write_all(line.as_bytes()).await.map_err(|e| Error::io("write control socket", "", e))?;
        let reply = self.lines.next_line().await.map_err(|e| Error::io("read control socket", "", e))?;
        let reply = reply.ok_or_else(|| Error::Config("the agent closed the control socket".into()))?;
        let answer: Answer =
            serde_json::from_str(&reply).map_err(|e| Error::Config(format!("bad answer {reply:?}: {e}")))?;
        match answer.error {
            Some(error) => Err(Error::Config(error)),
            None => Ok(answer),
        }
    }
}
