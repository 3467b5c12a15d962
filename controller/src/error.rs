//! The one error enum of the controller crate; each variant is also a metric label.

use model::effect::ObjectRef;

/// Everything the controller can fail at. A conflict or a vanished object is normal operation:
/// the next reconcile reads fresh state, so those variants are retried quickly and logged quietly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object changed since the decision was computed (HTTP 409): reconcile again.
    #[error("{target}: conflict, it changed since it was read")]
    Conflict {
        /// The object written.
        target: ObjectRef,
    },
    /// The object was deleted before the write (HTTP 404): the watch will tell us.
    #[error("{target}: no longer exists")]
    Gone {
        /// The object written.
        target: ObjectRef,
    },
    /// This replica does not hold the lease, so it sent nothing.
    #[error("not the leader: no request was sent")]
    NotLeader,
    /// The executor needs the object's current metadata (finalizers, ownerReferences) and the
    /// reflector stores do not have it.
    #[error("{target}: not in the local cache, cannot compute the patch")]
    NotCached {
        /// The object.
        target: ObjectRef,
    },
    /// A request got no answer in time (the pair's lock is held meanwhile).
    #[error("{target}: no answer within {after_ms} ms")]
    Timeout {
        /// The object written.
        target: ObjectRef,
        /// How long the request waited.
        after_ms: u64,
    },
    /// Any other answer from the API server, or a transport failure.
    #[error("{target}: {source}")]
    Kube {
        /// The object written.
        target: ObjectRef,
        /// What kube reported (boxed: kube's error is large and this one travels by value).
        #[source]
        source: Box<kube::Error>,
    },
    /// An Event could not be recorded.
    #[error("event about {target}: {source}")]
    Event {
        /// The object the event is about.
        target: ObjectRef,
        /// What kube reported.
        #[source]
        source: Box<kube::Error>,
    },
    /// An object could not be turned into JSON (a bug in a model type).
    #[error("{target}: cannot serialize: {source}")]
    Serialize {
        /// The object.
        target: ObjectRef,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A flag or environment variable holds a value that cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// No usable kubeconfig or in-cluster configuration.
    #[error("kubernetes client configuration: {0}")]
    ClientConfig(String),
    /// Leader election could not start.
    #[error("leader election: {0}")]
    Lease(#[source] Box<kube_lease_manager::LeaseManagerError>),
    /// The metrics and health server could not bind or serve.
    #[error("metrics server on {addr}: {source}")]
    Serve {
        /// The address.
        addr: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

impl From<kube_lease_manager::LeaseManagerError> for Error {
    fn from(error: kube_lease_manager::LeaseManagerError) -> Self {
        Error::Lease(Box::new(error))
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable label for the `error` dimension of the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Conflict { .. } => "conflict",
            Error::Gone { .. } => "gone",
            Error::NotLeader => "not_leader",
            Error::NotCached { .. } => "not_cached",
            Error::Kube { .. } => "kube",
            Error::Timeout { .. } => "timeout",
            Error::Event { .. } => "event",
            Error::Serialize { .. } => "serialize",
            Error::Config(_) => "config",
            Error::ClientConfig(_) => "client_config",
            Error::Lease(_) => "lease",
            Error::Serve { .. } => "serve",
        }
    }

    /// True for outcomes of normal concurrency (409, 404, not leader): retried soon, not alarming.
    pub fn is_expected(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::Gone { .. } | Error::NotLeader)
    }

    /// Classifies a kube error from a write to `target`: 409 and 404 get their own variants.
    pub fn from_write(target: &ObjectRef, source: kube::Error) -> Self {
        match &source {
            kube::Error::Api(status) if status.code == 409 => Error::Conflict { target: target.clone() },
            kube::Error::Api(status) if status.code == 404 => Error::Gone { target: target.clone() },
            _ => Error::Kube { target: target.clone(), source: Box::new(source) },
        }
    }
}
