//! sg's asynchronous interface on a node (drivers/scsi/sg.c, Linux 6.1: sg_write,
//! sg_new_write, sg_read, get_sg_io_pack_id, sg_new_read, sg_poll): write() of a v3 header
//! queues a command, read() returns a completed one, poll() says which is possible. The
//! command itself goes through the node's one pipeline (`pipeline`).
//!
//! Through CUSE, write() and read() carry only the header bytes, while the header points
//! at the CDB, the data and the sense buffer. The caller waits in its write() or read()
//! while the daemon holds the request (see crate::caller), so the daemon reads the CDB
//! and data-out from the caller during write(), and writes sense and data-in during
//! read(), as sg copies them in the same calls. /proc/<tid>/syscall tells the rest: the
//! read buffer's address (SG_SET_FORCE_PACK_ID) and whether the caller is 32-bit. A
//! read() with nothing to reap waits without a thread: parked in its file, answered by
//! the thread that completes a command for it, by an INTERRUPT, or when the node goes.

use super::buffer::WorkerLocal;
use super::files::{OpenFile, WaitingRead, WriteSlot};
use super::map::MapState;
use super::pipeline;
use super::work::Work;
use crate::caller::ProcessMemory;
use crate::cuse::abi::{IoctlIovec, PollIn, ReadWriteIn, FUSE_POLL_SCHEDULE_NOTIFY};
use crate::cuse::{Caller, CuseHandler, PollReply, PollWaker, ReadReply, Worker, WriteReply};
use crate::errno::Errno;
use crate::sg::direct::{CallerMemory, MemError};
use crate::sg::header::Abi;
use crate::sg::queue::Reap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// sizeof(struct sg_header), the v1/v2 header: the least a write() must carry.
const SZ_SG_HEADER: usize = 36;

/// write(): sg_write() then sg_new_write(), each errno in sg's order; the command's CDB
/// and data are read from the caller by the pipeline, on this thread if it may block.
pub fn write<H: CuseHandler<Local = WorkerLocal>>(
    map: &Arc<MapState>,
    caller: &Caller,
    file: Arc<OpenFile>,
    data: &[u8],
    reply: WriteReply,
    worker: &mut Worker<'_, H>,
) {
    // sg_write() checks the caller's credentials before anything else.
    if let Err(e) = file.check_access(caller) {
        return reply.error(e);
    }
    if map.detaching() {
        return reply.error(Errno::ENODEV);
    }
    if data.len() < SZ_SG_HEADER {
        return reply.error(Errno::EIO);
    }
    let reply_len = i32::from_ne_bytes(data[4..8].try_into().expect("4 bytes"));
    if reply_len >= 0 {
        // The v1/v2 sg_header interface (obsolete since sg 3.0, 1999): not served.
        tracing::debug!(tid = %caller.tid, "write() of a v2 sg_header refused");
        return reply.error(Errno::EINVAL);
    }
    // sg_new_write() wants SZ_SG_IO_HDR, the 64-bit header's size, from 32-bit callers
    // too (whose header it then reads in their 64-byte layout).
    if data.len() < Abi::Native.header_len() {
        return reply.error(Errno::EINVAL);
    }
    // sg_new_write() turns command queuing on as soon as it sees a v3 header, and takes
    // the request's slot before it copies the header.
    // Its pack_id and usr_ptr read 0 until then (sg_add_request zeroes the request).
    file.queue_commands();
    let id = match file.state.lock().requests.add(0, 0, false, true) {
        Ok(id) => id,
        Err(e) => return reply.error(e),
    };
    let slot = WriteSlot::new(&file, id);
    let mut raw = [0u8; Abi::Native.header_len()];
    raw.copy_from_slice(&data[..Abi::Native.header_len()]);
    let count = data.len() as u32;
    // Which layout the header has comes from /proc/<tid>/syscall, which may take a moment
    // (the caller may not be asleep yet): done where blocking is allowed.
    if worker.may_block() {
        return pipeline::write_header(map, caller, file, raw, slot, count, reply, worker.local());
    }
    let unique = reply.unique();
    let work = Work::Write {
        caller: *caller,
        file,
        raw,
        slot,
        count,
        reply,
    };
    pipeline::defer(map, Some(unique), work);
}

/// read(): sg_read() then sg_new_read(). Learning the pack_id under FORCE_PACK_ID and
/// writing sense and data-in touch the caller's memory: on this thread if it may block,
/// else on the next free one.
pub fn read<H: CuseHandler<Local = WorkerLocal>>(
    map: &Arc<MapState>,
    caller: &Caller,
    file: Arc<OpenFile>,
    arg: &ReadWriteIn,
    reply: ReadReply,
    worker: &mut Worker<'_, H>,
) {
    // sg_read() checks the caller's credentials before anything else.
    if let Err(e) = file.check_access(caller) {
        return reply.error(e);
    }
    let count = arg.size as usize;
    let nonblock = arg.flags & libc::O_NONBLOCK as u32 != 0;
    if worker.may_block() {
        return read_now(map, caller, file, count, nonblock, reply);
    }
    let (map2, caller) = (map.clone(), *caller);
    map.submit(Box::new(move |_: &mut WorkerLocal| {
        read_now(&map2, &caller, file, count, nonblock, reply)
    }));
}

fn read_now(
    map: &Arc<MapState>,
    caller: &Caller,
    file: Arc<OpenFile>,
    count: usize,
    nonblock: bool,
    reply: ReadReply,
) {
    let pack_id = if file.force_pack_id.load(Ordering::Relaxed) {
        match requested_pack_id(caller, count) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        }
    } else {
        -1
    };
    let mut st = file.state.lock();
    if let Reap::Ready(done) = st.requests.reap(pack_id) {
        drop(st);
        return match pipeline::finish_read(caller, count, done) {
            Ok(answer) => reply.data(&answer.parts()),
            Err(e) => reply.error(e),
        };
    }
    if nonblock {
        return reply.error(Errno::EAGAIN);
    }
    // sg 6.1 keeps waiting on a detaching device while a matching request runs; here the
    // node is going away with the daemon, so end now.
    if map.detaching() {
        return reply.error(Errno::ENODEV);
    }
    // Since 5.19 sg's blocking read waits even with nothing outstanding, until a signal.
    match map.reads.park(Some(reply.unique()), file.fh) {
        // sg answers -ERESTARTSYS; FUSE cannot pass that on, so EINTR.
        Err(_) => reply.error(Errno::EINTR),
        Ok(park) => st.readers.push_back(WaitingRead {
            reply,
            caller: *caller,
            pack_id,
            count,
            park,
            table: map.reads.clone(),
        }),
    }
}

/// get_sg_io_pack_id(): under SG_SET_FORCE_PACK_ID, read() takes the pack_id from the
/// header in the caller's buffer. A caller whose buffer cannot be learned (readv,
/// io_uring, another pid namespace) gets any completion, as with pack_id -1.
fn requested_pack_id(caller: &Caller, count: usize) -> Result<i32, Errno> {
    if count < SZ_SG_HEADER {
        return Ok(-1);
    }
    let (Some((abi, buf)), Some(memory)) = (
        pipeline::read_buffer(caller),
        ProcessMemory::new(caller.tid),
    ) else {
        tracing::debug!(tid = %caller.tid, "read buffer unknown; pack_id -1");
        return Ok(-1);
    };
    let mut head = [0u8; Abi::Native.header_len()];
    let head = &mut head[..count.min(abi.header_len())];
    let region = IoctlIovec {
        base: buf,
        len: head.len() as u64,
    };
    match memory.read(&[region], &mut [head]) {
        Ok(()) => {}
        Err(MemError::Fault) => return Err(Errno::EFAULT),
        Err(MemError::Unreachable) => return Ok(-1),
    }
    let int_at = |off: usize| i32::from_ne_bytes(head[off..off + 4].try_into().expect("4 bytes"));
    if int_at(4) >= 0 {
        // A v2 sg_header: pack_id at offset 8.
        return Ok(int_at(8));
    }
    if count >= abi.header_len() {
        let off = match abi {
            Abi::Native => 48,
            Abi::Compat => 36,
        };
        return Ok(int_at(off));
    }
    Ok(-1)
}

/// poll(): sg_poll()'s mask; arms a FUSE_NOTIFY_POLL for the next completion.
pub fn poll(map: &MapState, file: &OpenFile, arg: &PollIn, waker: &PollWaker, reply: PollReply) {
    let detaching = map.detaching();
    let mut st = file.state.lock();
    let mask = st
        .requests
        .poll_mask(file.cmd_q.load(Ordering::Relaxed), detaching);
    // Armed whenever the kernel asks, ready or not: an edge-triggered epoll or io_uring's
    // multishot poll stays registered and would miss the next completion otherwise (sg
    // wakes its read_wait on every completion).
    if arg.flags & FUSE_POLL_SCHEDULE_NOTIFY != 0 && !detaching {
        st.poll = Some((arg.kh, waker.clone()));
    }
    drop(st);
    reply.revents(mask);
}

/// The node goes away: every read waiting on `file` ends with ENODEV, its poller is
/// woken (POLLHUP).
pub fn detach_file(file: &OpenFile) {
    let (readers, poll) = {
        let mut st = file.state.lock();
        (std::mem::take(&mut st.readers), st.poll.take())
    };
    for r in readers {
        r.unpark();
        r.reply.error(Errno::ENODEV);
    }
    if let Some((kh, waker)) = poll {
        waker.wake(kh);
    }
}

/// FUSE_INTERRUPT for a waiting read of `file`: it ends with EINTR (unless a completion
/// answered it first).
pub fn interrupt_read(file: &OpenFile, unique: crate::cuse::Unique) {
    let reader = {
        let mut st = file.state.lock();
        let i = st.readers.iter().position(|r| r.reply.unique() == unique);
        i.and_then(|i| st.readers.remove(i))
    };
    if let Some(r) = reader {
        r.unpark();
        r.reply.error(Errno::EINTR);
    }
}
