//! The dm-multipath map model (table and status parsing) and the DM control interface.
//! Knows nothing about SCSI commands or CUSE.

pub mod control;
pub mod message;
pub mod model;

pub use control::{DmControl, DmDevice, DmKind, KernelDm, MapId, MapInfo};
pub use message::Message;
pub use model::{DevT, GroupState, MultipathStatus, MultipathTable};
