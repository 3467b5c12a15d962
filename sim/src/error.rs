//! The one error enum of the simulator.

use std::path::PathBuf;

use thiserror::Error;

/// Everything the simulator can fail with.
#[derive(Debug, Error)]
pub enum Error {
    /// A scenario file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A scenario file is not valid; the message names the place, the field and what is allowed.
    #[error("{path}:{line}:{column}: {message}")]
    Scenario {
        /// The file.
        path: String,
        /// 1-based line, 0 when unknown.
        line: usize,
        /// 1-based column, 0 when unknown.
        column: usize,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A count setting (an environment variable of a benchmark) is not a whole number of at least 1.
    #[error("{name}={value:?}: not a whole number of at least 1")]
    Setting {
        /// The setting.
        name: String,
        /// What it was set to.
        value: String,
    },
    /// An output file could not be written.
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
