//! Scenario files: parsing (with file, line and column in every error), steps, expectations.

pub mod cluster;
pub mod expect;
pub mod generate;
pub mod parity;
pub mod parse;
pub mod steps;

pub use parse::{Scenario, load, parse_str};
pub use steps::{RunOptions, RunResult, run};
