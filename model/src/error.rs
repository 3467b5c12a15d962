//! The one error enum of `model`; callers map it to a condition or a gRPC status at their edge.

use thiserror::Error;

/// Everything `model` can refuse. Each variant names the field or object at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ModelError {
    /// A field holds a value that is not allowed.
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field's path, e.g. `spec.tieredstore.levels[0].quota`.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A required field is missing or empty.
    #[error("{field}: is required")]
    MissingField {
        /// The field's path.
        field: String,
    },
    /// The dataset's names are long enough to need the UID-based keys, but it has no UID yet.
    #[error("dataset {namespace}/{name}: its names need UID-based label keys, but it has no metadata.uid yet")]
    MissingUid {
        /// Dataset namespace.
        namespace: String,
        /// Dataset name.
        name: String,
    },
    /// A Kubernetes quantity could not be parsed.
    #[error("{field}: {value:?} is not a Kubernetes quantity ({reason})")]
    BadQuantity {
        /// The field's path.
        field: String,
        /// The text that failed.
        value: String,
        /// Why.
        reason: String,
    },
}

impl ModelError {
    /// Shorthand for [`ModelError::InvalidField`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::InvalidField { field: field.into(), reason: reason.into() }
    }

    /// The field path this error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ModelError::InvalidField { field, .. }
            | ModelError::MissingField { field }
            | ModelError::BadQuantity { field, .. } => Some(field),
            ModelError::MissingUid { .. } => None,
        }
    }
}
