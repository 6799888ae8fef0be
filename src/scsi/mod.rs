//! SCSI results: the sense decoder and the failover classification table. Knows nothing
//! about sg, CUSE or device-mapper.

pub mod classify;
pub mod sense;
