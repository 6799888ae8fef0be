//! The CUSE wire protocol: ABI structs, request parsing, replies and their one-shot
//! tokens, the per-device session (handshake) and its threads. Knows nothing about SCSI.

pub mod abi;
pub mod pool;
pub mod reply;
pub mod request;
pub mod session;
#[cfg(test)]
pub mod testing;

pub use pool::{CuseHandler, Executor, Job, PoolConfig, ThreadBudget, Worker};
pub use reply::{
    IoctlAnswer, IoctlReply, OpenReply, OrphanReply, PollReply, ReadReply, ReleaseReply, WriteReply,
};
pub use request::{Caller, FileHandle, Tid, Unique};
pub use session::{CuseDevice, DeviceSpec, PollWaker};
