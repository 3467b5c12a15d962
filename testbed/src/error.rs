//! The testbed's one error type.

use std::path::PathBuf;

/// What went wrong, naming the object, path or command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("{what}: {source}")]
    Kube {
        /// The request, e.g. `create Node/node-1`.
        what: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A file or socket operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An external command (`ip`, `unshare`, `nsenter`) failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and standard error.
        detail: String,
    },
    /// A CSI call failed.
    #[error("CSI {rpc} of volume {volume}: {status}")]
    Csi {
        /// The RPC, e.g. `NodeStageVolume`.
        rpc: &'static str,
        /// The volume handle.
        volume: String,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// The agent's configuration or a control request is wrong.
    #[error("{0}")]
    Config(String),
    /// A pod cannot run yet; the message says why (kubelet would record it as an event).
    #[error("{reason}: {message}")]
    NotReady {
        /// A kubelet event reason, e.g. `FailedMount`.
        reason: &'static str,
        /// What is missing.
        message: String,
    },
}

/// The testbed's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failed API request about `what`.
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube { what: what.into(), source: Box::new(source) }
    }

    /// A failed file operation.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { op, path: path.into(), source }
    }

    /// True when the API server answered 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kube { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 404))
    }

    /// True when the API server answered 409.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.code == 409))
    }
}
