//! A command between its decoding and its answer, and the work that waits without a
//! thread: what `pipeline` runs, parks and resumes.

use super::budget::Reservation;
use super::files::{OpenFile, RequestSlot, WriteSlot};
use crate::caller::ProcessMemory;
use crate::cuse::abi::IoctlIn;
use crate::cuse::{Caller, IoctlReply, Tid, WriteReply};
use crate::errno::Errno;
use crate::failover::Attempt;
use crate::sg::command::SgCommand;
use crate::sg::header::{Abi, SenseBytes};
use std::sync::Arc;

/// How a command's results reach its caller: the three front ends of the one pipeline.
pub enum Front {
    /// SG_IO in one round: results written to the caller's memory, then the ioctl answered.
    Direct {
        /// Declared before `reply`, so dropped first (fields drop in order): a reply
        /// dropped unanswered (EIO) finds the slot given back already.
        _slot: RequestSlot,
        reply: IoctlReply,
        memory: ProcessMemory,
        tid: Tid,
        abi: Abi,
        arg: u64,
    },
    /// SG_IO in CUSE's retry rounds: the results travel in the reply; the caller's sense
    /// bytes past what sg writes go back unchanged.
    Rounds {
        /// Before `reply`, as above.
        _slot: RequestSlot,
        reply: IoctlReply,
        sense_in: SenseBytes,
    },
    /// write(): the completion waits in the file's request list for read().
    Async(AsyncCompletion),
}

/// Where a write() command's completion goes. Dropped without being filled (a panic),
/// it completes the request with EIO, so that a read() for it does not wait forever.
pub struct AsyncCompletion {
    pub file: Arc<OpenFile>,
    pub id: u64,
    pub abi: Abi,
    pub raw_header: [u8; Abi::Native.header_len()],
    /// Budget for the data this command may hold, taken in write(): data-in until
    /// read(), or data-out while it waits for a path (given back once it has run).
    pub reservation: Option<Reservation>,
    pub filled: bool,
}

impl Drop for AsyncCompletion {
    fn drop(&mut self) {
        if self.filled {
            return;
        }
        let (ready, poll) = self.file.complete(
            self.id,
            0,
            0,
            super::files::Completed {
                abi: self.abi,
                raw_header: self.raw_header,
                command: SgCommand::default(),
                outcome: Err(Errno::EIO),
                data_in: Vec::new(),
                reservation: None,
            },
        );
        for (reader, done) in ready {
            reader.unpark();
            reader.reply.error(done.outcome.err().unwrap_or(Errno::EIO));
        }
        if let Some((kh, waker)) = poll {
            waker.wake(kh);
        }
    }
}

/// Data-out kept while its command waits for a path (the caller's buffer may have
/// changed, or, for the retry rounds, the request carrying it is answered meanwhile).
pub struct Held {
    pub data: Vec<u8>,
    pub _reservation: Option<Reservation>,
}

/// One command on its way through the pipeline.
pub struct Pending {
    pub cmd: SgCommand,
    pub file: Arc<OpenFile>,
    pub front: Front,
    pub attempt: Attempt,
    pub held_out: Option<Held>,
}

impl Pending {
    /// The request an INTERRUPT would name (None for write() commands: their write()
    /// was answered).
    pub fn unique(&self) -> Option<crate::cuse::Unique> {
        match &self.front {
            Front::Direct { reply, .. } | Front::Rounds { reply, .. } => Some(reply.unique()),
            Front::Async(_) => None,
        }
    }
}

/// Work parked in a node without a thread.
pub enum Work {
    /// SG_IO in one round, not started: every thread was busy.
    SgIo {
        caller: Caller,
        memory: ProcessMemory,
        file: Arc<OpenFile>,
        arg: IoctlIn,
        reply: IoctlReply,
    },
    /// write() whose header is not decoded yet: every thread was busy.
    Write {
        caller: Caller,
        file: Arc<OpenFile>,
        /// The first 88 bytes written.
        raw: [u8; Abi::Native.header_len()],
        slot: WriteSlot,
        count: u32,
        reply: WriteReply,
    },
    /// A command waiting for a thread or for a path.
    Command(Box<Pending>),
}

impl Work {
    /// The caller was signalled before the work started on a path: EINTR, as a killed
    /// caller expects.
    pub fn interrupted(self) {
        match self {
            Work::SgIo { reply, .. } => reply.error(Errno::EINTR),
            Work::Write { reply, slot, .. } => {
                drop(slot);
                reply.error(Errno::EINTR);
            }
            Work::Command(p) => {
                let Pending { front, .. } = *p;
                match front {
                    Front::Direct { reply, _slot, .. } | Front::Rounds { reply, _slot, .. } => {
                        // The slot first: once answered, the caller may use it again.
                        drop(_slot);
                        reply.error(Errno::EINTR)
                    }
                    // A write()'s command is parked without a request to name it, so no
                    // interrupt finds it; dropped anyway, its completion would read EIO.
                    Front::Async(_) => {}
                }
            }
        }
    }
}
