//! The sg driver's ABI: header codec, the retry-round planner, the permission filter.
//! Pure code: no syscalls.

pub mod abi;
pub mod access;
pub mod header;
pub mod plan;
