//! The failover engine: path choice, result classification applied, fail_path,
//! retry policy, queue_if_no_path.

pub mod engine;
pub mod policy;
#[cfg(test)]
pub mod testing;

pub use engine::{transport_disrupted, Attempt, Engine, Limits, PathOpener, Step};
