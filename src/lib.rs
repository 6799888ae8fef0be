//! mpath-sg: the sg driver's ABI on `/dev/mpath-sg/<map>`, served through CUSE, with each
//! command executed on one of the dm-multipath map's paths and failed over on path errors.
//!
//! The layers, lowest first (docs/architecture.md says who may use whom):
//! - [`cuse`]: the CUSE wire protocol and device sessions (knows no SCSI);
//! - [`sg`]: the sg ABI: header codec, retry-round planner, permission filter (pure);
//! - [`scsi`]: sense decoding and the failover classification table (pure);
//! - [`dm`]: the dm-multipath map model and DM control;
//! - [`path`]: SG_IO on a path's sg node;
//! - [`failover`]: the engine that runs a command on a map;
//! - [`daemon`]: nodes, device numbers, lifecycle.

pub mod caller;
pub mod clock;
pub mod cuse;
pub mod daemon;
pub mod dm;
pub mod errno;
pub mod failover;
pub mod path;
pub mod scsi;
pub mod sg;

#[cfg(test)]
mod alloc_probe;
