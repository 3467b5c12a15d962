//! Serving the three CSI services on a unix socket.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::apiserver::{EventSink, NodeLabeler};
use crate::controller::ControllerService;
use crate::error::{CsiError, Result};
use crate::proto::controller_server::ControllerServer;
use crate::proto::identity_server::IdentityServer;
use crate::proto::node_server::NodeServer;
use crate::service::{IdentityService, NodeService, Plugin};

/// The socket path of a CSI endpoint: `unix:///csi/csi.sock`, `unix:/csi/csi.sock` or
/// `/csi/csi.sock`. Anything else is a configuration error.
pub fn socket_path(endpoint: &str) -> Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").or_else(|| endpoint.strip_prefix("unix:")).unwrap_or(endpoint);
    if path.starts_with('/') && path.len() > 1 {
        Ok(PathBuf::from(path))
    } else {
        Err(CsiError::Config(format!("--endpoint {endpoint:?} must be a unix socket such as unix:///csi/csi.sock")))
    }
}

/// Binds `socket` (replacing a stale socket file left by a previous run).
pub fn bind(socket: &Path) -> Result<UnixListener> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(|source| CsiError::Io {
            op: "create socket directory",
            path: parent.into(),
            source,
        })?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(CsiError::Io { op: "remove stale socket", path: socket.into(), source }),
    }
    UnixListener::bind(socket).map_err(|source| CsiError::Io { op: "bind", path: socket.into(), source })
}

/// Serves Identity, Node and Controller on `listener` until `shutdown` completes.
pub async fn serve<L: NodeLabeler + EventSink>(
    plugin: Arc<Plugin<L>>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let controller = ControllerService::new(plugin.state().clone());
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(IdentityService::new(Arc::clone(&plugin))))
        .add_service(NodeServer::new(NodeService::new(plugin)))
        .add_service(ControllerServer::new(controller))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|err| CsiError::Internal(format!("gRPC server: {err}")))
}
