//! The failover engine: path choice, result classification applied, fail_path,
//! retry policy, queue_if_no_path.

pub mod engine;
pub mod openings;
pub mod policy;
#[cfg(test)]
pub mod testing;

pub use engine::{transport_disrupted, Attempt, Engine, Limits, Step};
pub use openings::{OpenedPath, PathOpener};
