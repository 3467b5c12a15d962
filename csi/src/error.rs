//! The one error enum of `csi`, mapped to a `tonic::Status` only at the gRPC edge.

use std::path::PathBuf;

use model::node::{Refusal, RefusalKind};
use thiserror::Error;
use tonic::{Code, Status};

/// Everything the plugin can fail with. Each variant names the path, field or object at fault.
#[derive(Debug, Error)]
pub enum CsiError {
    /// `model::node` refused the request; the message names the field.
    #[error("{0}")]
    Refused(Refusal),
    /// Another call holds the same volume id or target path (CSI: `ABORTED`, the CO retries).
    #[error("an operation on {0} is already in flight; retry later")]
    Aborted(String),
    /// The FUSE mount did not become ready in time.
    #[error("timeout after {waited_ms} ms waiting for the FUSE mount point {path} to be ready: found {found}")]
    FuseMountTimeout {
        /// The `fluid_path` waited for.
        path: String,
        /// How long the call waited.
        waited_ms: u64,
        /// What was at `path` at the last look, e.g. a tmpfs mount where fuse.juicefs belongs.
        found: String,
    },
    /// A system call on a path failed.
    #[error("{op} {path}: {source}")]
    Sys {
        /// The operation, e.g. `bind-mount`.
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The errno.
        source: nix::errno::Errno,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. `write stage record`.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The path or volume does not exist (`NodeGetVolumeStats`, `ValidateVolumeCapabilities`).
    #[error("{0}")]
    NotFound(String),
    /// A request to the API server failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was asked, naming the object.
        what: String,
        /// The client error.
        source: Box<kube::Error>,
    },
    /// The call needs the API server and the plugin has no client configuration (CSI:
    /// `UNAVAILABLE`, the CO retries).
    #[error("no Kubernetes API client: {0}")]
    NoApiserver(String),
    /// A stored stage record could not be read.
    #[error("record {path}: {reason}")]
    State {
        /// The record's file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A capacity range the controller cannot serve (CSI: `OUT_OF_RANGE`).
    #[error("{0}")]
    OutOfRange(String),
    /// The plugin's configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// Something that should not happen, e.g. a mount loop that does not converge.
    #[error("{0}")]
    Internal(String),
}

/// `Result` with [`CsiError`].
pub type Result<T, E = CsiError> = std::result::Result<T, E>;

impl From<Refusal> for CsiError {
    fn from(refusal: Refusal) -> Self {
        CsiError::Refused(refusal)
    }
}

impl CsiError {
    /// The gRPC code the CSI specification gives this failure.
    pub fn code(&self) -> Code {
        match self {
            CsiError::Refused(refusal) => match refusal.kind {
                RefusalKind::InvalidArgument => Code::InvalidArgument,
                RefusalKind::FailedPrecondition => Code::FailedPrecondition,
                RefusalKind::AlreadyExists => Code::AlreadyExists,
            },
            CsiError::Aborted(_) => Code::Aborted,
            CsiError::FuseMountTimeout { .. } => Code::DeadlineExceeded,
            CsiError::Sys { source, .. } => match source {
                nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => Code::PermissionDenied,
                nix::errno::Errno::ENOTCONN => Code::Unavailable,
                _ => Code::Internal,
            },
            CsiError::NotFound(_) => Code::NotFound,
            CsiError::OutOfRange(_) => Code::OutOfRange,
            CsiError::Kube { .. } | CsiError::NoApiserver(_) => Code::Unavailable,
            CsiError::Io { .. } | CsiError::State { .. } | CsiError::Config(_) | CsiError::Internal(_) => {
                Code::Internal
            }
        }
    }
}

impl From<CsiError> for Status {
    fn from(err: CsiError) -> Self {
        Status::new(err.code(), err.to_string())
    }
}
