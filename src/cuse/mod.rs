//! The CUSE wire protocol: ABI structs, request parsing, replies, and the per-device
//! session (handshake and worker threads). Knows nothing about SCSI.

pub mod abi;
pub mod reply;
pub mod request;
pub mod session;

pub use reply::IoctlReply;
pub use session::{Caller, CuseDevice, CuseHandler, DeviceSpec, PollWaker, Written};
