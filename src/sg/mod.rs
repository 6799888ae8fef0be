//! The sg driver's ABI: header codec, the retry-round planner, single-round SG_IO over
//! caller memory, the permission filter, the per-file request list. Pure code: no syscalls.

pub mod abi;
pub mod access;
pub mod command;
pub mod direct;
pub mod header;
pub mod plan;
pub mod queue;
