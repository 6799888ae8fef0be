//! mpath-sg: the sg driver's ABI on `/dev/mpath-sg/<map>`, served through CUSE, with each
//! command executed on one of the dm-multipath map's paths and failed over on path errors.
//!
//! The layers, lowest first (docs/architecture.md says who may use whom):
//! CUSE wire protocol, sg ABI, SCSI result classification, dm map model, path I/O, failover
//! engine, daemon.
