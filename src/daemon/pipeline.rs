//! The one command pipeline of a node. sg has one (sg_new_write / sg_common_write /
//! sg_new_read) behind SG_IO and write()/read(); so does the node, behind its three front
//! ends: SG_IO in one round through the caller's memory, SG_IO in CUSE's retry rounds,
//! and write()/read(). Every command goes through the same stages:
//!
//! 1. decode: the header (native or 32-bit), the CDB, the iovec list (`sg::direct` over
//!    the caller's memory, or `sg::plan` over the rounds' bytes);
//! 2. access check: sg's filter for files not open O_RDWR, before any data-out is read;
//! 3. run: data-out into this thread's buffer, then the failover engine; a command that
//!    has to wait for a path is parked without a thread and run again later;
//! 4. complete: the output fields as sg computes them, sense and data-in, delivered by
//!    the front end (the caller's memory and the ioctl's answer, the ioctl's reply, or
//!    the file's request list for read()).
//!
//! Here alone is decided what a failure to reach the caller's memory returns.

use super::buffer::WorkerLocal;
use super::files::{Completed, OpenFile, WaitingRead, WriteSlot};
use super::map::MapState;
use super::work::{AsyncCompletion, Front, Held, Pending, Work};
use crate::caller::{BlockedSyscall, ProcessMemory};
use crate::clock::Coarse;
use crate::cuse::abi::{ioctl_flags, IoctlIn, IoctlIovec};
use crate::cuse::{Caller, CuseHandler, IoctlReply, Tid, Worker, WriteReply};
use crate::errno::Errno;
use crate::failover::{Attempt, Step};
use crate::path::PathCommand;
use crate::sg::abi::SgIoOutput;
use crate::sg::access;
use crate::sg::command::SgCommand;
use crate::sg::direct::{self, CdbGuess, DirectError, MemError};
use crate::sg::header::{
    output_for, sense_bytes, transferred, Abi, Completion, SenseBytes, SgIoHeader,
};
use crate::sg::plan::{plan, Round, Step as PlanStep, MAX_ROUND_TRANSFER};
use std::sync::{Arc, Weak};
use zerocopy::IntoBytes;

/// What a failure to reach the caller's memory returns, for every front end: an address
/// that is not mapped (or not writable) is the caller's EFAULT, as sg answers; a caller
/// the daemon may not reach at all (another pid namespace, no ptrace rights) gets EPERM
/// and a log line (SG_IO falls back to the retry rounds before it comes to that).
pub fn memory_errno(caller: Tid, e: MemError) -> Errno {
    match e {
        MemError::Fault => Errno::EFAULT,
        MemError::Unreachable => {
            tracing::warn!(
                tid = %caller,
                "the caller's memory cannot be reached (another pid namespace, or no ptrace \
                 rights); answering EPERM"
            );
            Errno::EPERM
        }
    }
}

/// The errno an SG_IO caller gets for what sg would answer. CUSE cannot deliver ENOSYS
/// from an ioctl: fuse_send_ioctl() turns it into ENOTTY, on which udev's scsi_id gives up
/// instead of falling back from a v4 to a v3 header. EINVAL is what SG_IO on a block
/// device answers, and what scsi_id and sg3_utils treat the same as ENOSYS
/// (docs/sg-compat.md).
pub fn sg_io_errno(e: Errno) -> Errno {
    if e == Errno::ENOSYS {
        Errno::EINVAL
    } else {
        e
    }
}

const CAP_SYS_RAWIO: u32 = 17;

/// sg_allow_access() for a file that is not O_RDWR (sg filters nothing on O_RDWR files).
pub fn check_access(file: &OpenFile, caller: &Caller, cdb: &[u8]) -> Result<(), Errno> {
    if file.read_write() {
        return Ok(());
    }
    let op = cdb.first().copied().unwrap_or(0);
    if access::allowed(op, file.writable(), false) {
        return Ok(());
    }
    // The caller waits in its call, so its thread's status is readable now.
    if crate::caller::has_capability(caller.tid, CAP_SYS_RAWIO) {
        return Ok(());
    }
    Err(Errno::EPERM)
}

// ---------------------------------------------------------------- SG_IO front ends

/// SG_IO, either front end: one round through the caller's memory where it can be
/// reached, CUSE's retry rounds otherwise (or with --ioctl-rounds).
pub fn sg_io<H: CuseHandler<Local = WorkerLocal>>(
    map: &Arc<MapState>,
    caller: &Caller,
    file: Arc<OpenFile>,
    arg: &IoctlIn,
    data: &[u8],
    reply: IoctlReply,
    worker: &mut Worker<'_, H>,
) {
    let abi = if arg.flags & ioctl_flags::COMPAT != 0 {
        Abi::Compat
    } else {
        Abi::Native
    };
    if map.detaching() {
        return reply.error(Errno::ENODEV);
    }
    if map.single_round && data.is_empty() && arg.out_size == 0 {
        if let Some(memory) = ProcessMemory::new(caller.tid) {
            if worker.may_block() {
                return direct(map, caller, file, memory, abi, arg, reply, worker.local());
            }
            // Every thread is busy: the call waits, interruptible, for the next one.
            let work = Work::SgIo {
                caller: *caller,
                memory,
                file,
                arg: *arg,
                reply,
            };
            return defer(map, Some(caller.unique), work);
        }
    }
    rounds(map, caller, file, abi, arg, data, reply, worker);
}

/// SG_IO in one round: sg_new_write()'s order (command queuing on, a slot or EDOM, the
/// header, its checks, the CDB, the permission, the transfer), all from the caller's
/// memory while it waits in the ioctl; then the pipeline.
#[allow(clippy::too_many_arguments)]
fn direct(
    map: &Arc<MapState>,
    caller: &Caller,
    file: Arc<OpenFile>,
    memory: ProcessMemory,
    abi: Abi,
    arg: &IoctlIn,
    reply: IoctlReply,
    local: &mut WorkerLocal,
) {
    file.queue_commands();
    let slot = match file.sg_io_slot() {
        Ok(s) => s,
        Err(e) => return reply.error(e),
    };
    let check = |cdb: &[u8]| check_access(&file, caller, cdb);
    // As sg: BLKSECTGET says max_sectors, but SG_IO accepts up to max_hw_sectors.
    let limit = map.engine.max_hw_transfer();
    let guess = match *file.last_cdb.lock() {
        Some((tid, at, guess)) if tid == caller.tid.0 && at == arg.arg => Some(guess),
        _ => None,
    };
    let cmd = match direct::decode_sg_io(&memory, abi, arg.arg, &check, limit, guess) {
        Ok(cmd) => {
            let seen = CdbGuess {
                cmdp: cmd.header.cmdp,
                cmd_len: cmd.header.cmd_len,
            };
            if guess != Some(seen) {
                *file.last_cdb.lock() = Some((caller.tid.0, arg.arg, seen));
            }
            cmd
        }
        Err(DirectError::Errno(e)) => return reply.error(sg_io_errno(e)),
        Err(DirectError::Unreachable) => {
            // The first touch failed (no ptrace rights, another pid namespace): CUSE's
            // retry rounds carry the call instead, starting with its header.
            tracing::debug!(tid = %caller.tid, "caller not reachable; using the retry rounds");
            drop(slot);
            return reply.retry(
                &[IoctlIovec {
                    base: arg.arg,
                    len: abi.header_len() as u64,
                }],
                &[],
            );
        }
    };
    slot.set_ids(cmd.header.pack_id, cmd.header.usr_ptr);
    let p = Pending {
        attempt: attempt_for(caller, cmd.header.timeout),
        cmd,
        file,
        front: Front::Direct {
            reply,
            memory,
            tid: caller.tid,
            abi,
            arg: arg.arg,
            _slot: slot,
        },
        held_out: None,
    };
    run(map, p, local, DataOut::FromCaller);
}

/// SG_IO in retry rounds: each round planned from its own bytes (`sg::plan`), the last
/// one run.
#[allow(clippy::too_many_arguments)]
fn rounds<H: CuseHandler<Local = WorkerLocal>>(
    map: &Arc<MapState>,
    caller: &Caller,
    file: Arc<OpenFile>,
    abi: Abi,
    arg: &IoctlIn,
    data: &[u8],
    reply: IoctlReply,
    worker: &mut Worker<'_, H>,
) {
    if data.is_empty() && arg.out_size == 0 {
        // The first round. sg_new_write() turns command queuing on and takes the
        // request's slot before it reads the header: a full list is EDOM whatever the
        // header says.
        file.queue_commands();
        if !file.state.lock().requests.has_room(true) {
            return reply.error(Errno::EDOM);
        }
    }
    let round = Round {
        abi,
        arg: arg.arg,
        data,
        out_size: arg.out_size,
        max_transfer: map.max_transfer().min(MAX_ROUND_TRANSFER),
    };
    // sg_new_write() turns command queuing on for the file once it sees a v3 header.
    if data.len() >= abi.header_len() {
        file.queue_commands();
    }
    let check = |cdb: &[u8]| check_access(&file, caller, cdb);
    let call = match plan(&round, &check) {
        PlanStep::Fetch { input, output } => return reply.retry(&input, &output),
        PlanStep::Fail(e) => return reply.error(sg_io_errno(e)),
        PlanStep::Execute(call) => call,
    };
    let slot = match file.sg_io_slot() {
        Ok(s) => s,
        Err(e) => return reply.error(e),
    };
    slot.set_ids(call.header.pack_id, call.header.usr_ptr);
    let cmd = call.command();
    let mut p = Pending {
        attempt: attempt_for(caller, cmd.header.timeout),
        cmd,
        file,
        front: Front::Rounds {
            reply,
            sense_in: SenseBytes::from_slice(call.sense_in),
            _slot: slot,
        },
        held_out: None,
    };
    if worker.may_block() {
        return run(map, p, worker.local(), DataOut::Bytes(call.data_out));
    }
    // Every thread is busy: keep the data-out (the request's buffer is this thread's),
    // and wait, interruptible, for the next thread.
    if !call.data_out.is_empty() {
        match hold(map, &p, call.data_out) {
            Ok(h) => p.held_out = Some(h),
            Err(e) => return finish(map, p, Err(e), &[]),
        }
    }
    let unique = p.unique();
    defer(map, unique, Work::Command(Box::new(p)));
}

/// Parks `work` until a thread takes it (or its caller is interrupted).
pub fn defer(map: &Arc<MapState>, unique: Option<crate::cuse::Unique>, work: Work) {
    let id = match map.work.park(unique, work) {
        Ok(id) => id,
        Err(work) => return work.interrupted(),
    };
    let weak = Arc::downgrade(map);
    map.submit(Box::new(move |local: &mut WorkerLocal| {
        if let Some(map) = weak.upgrade() {
            if let Some(work) = map.work.take(id) {
                run_work(&map, work, local);
            }
        }
    }));
}

/// Runs parked work on this thread.
pub fn run_work(map: &Arc<MapState>, work: Work, local: &mut WorkerLocal) {
    match work {
        Work::SgIo {
            caller,
            memory,
            file,
            arg,
            reply,
        } => {
            let abi = if arg.flags & ioctl_flags::COMPAT != 0 {
                Abi::Compat
            } else {
                Abi::Native
            };
            direct(map, &caller, file, memory, abi, &arg, reply, local)
        }
        Work::Write {
            caller,
            file,
            raw,
            slot,
            count,
            reply,
        } => write_header(map, &caller, file, raw, slot, count, reply, local),
        Work::Command(p) => {
            let source = if p.held_out.is_some() {
                DataOut::Held
            } else {
                DataOut::FromCaller
            };
            run(map, *p, local, source)
        }
    }
}

// ---------------------------------------------------------------- write() front end

/// write()'s header, decoded in the caller's layout: the request's pack_id and usr_ptr,
/// then sg_new_write()'s header checks, then the command.
#[allow(clippy::too_many_arguments)]
pub fn write_header(
    map: &Arc<MapState>,
    caller: &Caller,
    file: Arc<OpenFile>,
    raw: [u8; Abi::Native.header_len()],
    slot: WriteSlot,
    count: u32,
    reply: WriteReply,
    local: &mut WorkerLocal,
) {
    let abi = caller_abi(caller, &file);
    let header = SgIoHeader::decode(abi, &raw).expect("88 bytes hold either layout");
    slot.set_ids(header.pack_id, header.usr_ptr);
    if let Err(e) = header.validate() {
        return reply.error(e);
    }
    write_command(
        map, caller, file, abi, header, raw, slot, count, reply, local,
    );
}

/// 32-bit or 64-bit layout for this caller, from the system call it waits in. A thread's
/// answer is kept per file; an unknown one (the daemon cannot see the caller, or it never
/// showed as asleep) is taken as native and not kept.
fn caller_abi(caller: &Caller, file: &OpenFile) -> Abi {
    use std::sync::atomic::Ordering;
    let tid = u64::from(caller.tid.0);
    let cached = file.abi_cache.load(Ordering::Relaxed);
    if cached != 0 && cached >> 1 == tid {
        return if cached & 1 == 1 {
            Abi::Compat
        } else {
            Abi::Native
        };
    }
    match BlockedSyscall::of(caller.tid).and_then(|s| s.rw_abi()) {
        Some(abi) => {
            file.abi_cache
                .store(tid << 1 | u64::from(abi == Abi::Compat), Ordering::Relaxed);
            abi
        }
        None => {
            tracing::debug!(tid = %caller.tid, "caller's layout unknown; taken as native");
            Abi::Native
        }
    }
}

/// write()'s command, read from the caller while it waits in write() (as sg_new_write()
/// copies the CDB and sg_start_req() the data): the CDB, the iovec list, a budget
/// reservation for the data it will hold, the data-out; then write() is answered and
/// the command runs on this thread.
#[allow(clippy::too_many_arguments)]
pub fn write_command(
    map: &Arc<MapState>,
    caller: &Caller,
    file: Arc<OpenFile>,
    abi: Abi,
    header: SgIoHeader,
    raw_header: [u8; Abi::Native.header_len()],
    slot: WriteSlot,
    count: u32,
    reply: WriteReply,
    local: &mut WorkerLocal,
) {
    let Some(memory) = ProcessMemory::new(caller.tid) else {
        return reply.error(memory_errno(caller.tid, MemError::Unreachable));
    };
    // sg_write passes read_only 0: a file open for writing may send anything.
    let allow_all = |_: &[u8]| Ok(());
    let cmd = match direct::decode_command(
        &memory,
        abi,
        header,
        &allow_all,
        map.engine.max_hw_transfer(),
    ) {
        Ok(c) => c,
        Err(DirectError::Errno(e)) => return reply.error(e),
        Err(DirectError::Unreachable) => {
            return reply.error(memory_errno(caller.tid, MemError::Unreachable))
        }
    };
    // Reserved before the command runs, as sg allocates the request's buffer in write():
    // the completion keeps up to transfer_len bytes of data-in until read(), or the
    // data-out is kept while the command waits for a path. A data-out reservation is
    // given back as soon as the command has run (`complete_async`).
    let held = if cmd.data_in_to_caller || cmd.data_out_from_caller {
        cmd.transfer_len
    } else {
        0
    };
    let reservation = match map
        .budget
        .reserve(held, file.opened_by.holder(), &file.held)
    {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(map = %map.engine.map(), bytes = held, "write(): data budget exhausted; ENOMEM");
            return reply.error(e);
        }
    };
    if cmd.data_out_from_caller {
        let buf = local.data.lend(cmd.transfer_len, file.fh);
        if let Err(e) = direct::read_data_out(&memory, &cmd, buf) {
            local.data.trim();
            return reply.error(memory_errno(caller.tid, e));
        }
    }
    let id = slot.keep();
    // sg's write() returns once the command is queued: answer now, run it here.
    reply.written(count);
    let front = Front::Async(AsyncCompletion {
        file: file.clone(),
        id,
        abi,
        raw_header,
        reservation: Some(reservation),
        filled: false,
    });
    let p = Pending {
        attempt: attempt_for(caller, cmd.header.timeout),
        cmd,
        file,
        front,
        held_out: None,
    };
    run(map, p, local, DataOut::Filled);
}

// ---------------------------------------------------------------- run

/// Where a command's data-out is when it starts running.
pub enum DataOut<'a> {
    /// In the caller's memory (SG_IO in one round): read now, after the access check.
    FromCaller,
    /// In the final round's bytes.
    Bytes(&'a [u8]),
    /// Already in this thread's buffer (write() read it).
    Filled,
    /// Kept in the command while it waited.
    Held,
}

/// A command's progress starts: marked as maybe run already if the kernel resent its
/// request after the daemon's predecessor died holding it.
fn attempt_for(caller: &Caller, timeout_ms: u32) -> Attempt {
    let mut a = Attempt::new(timeout_ms);
    a.may_have_run = caller.unique.resent();
    a
}

/// Runs a command on the map, on this thread: data-out into the thread's buffer, then one
/// step of the failover engine; the result goes to `finish`, a wait for a path to `park`.
pub fn run(map: &Arc<MapState>, mut p: Pending, local: &mut WorkerLocal, source: DataOut<'_>) {
    let len = p.cmd.transfer_len;
    let with_buffer = len > 0 && p.cmd.header.caller_buffer();
    let cdb = p.cmd.cdb;
    let mut buf = if with_buffer {
        Some(local.data.lend(len, p.file.fh))
    } else {
        None
    };
    if p.cmd.data_out_from_caller {
        let b = buf.as_deref_mut().expect("data-out has a buffer");
        let filled = match (&source, &p.held_out, &p.front) {
            (DataOut::Held, Some(h), _) => {
                b.copy_from_slice(&h.data);
                Ok(())
            }
            (DataOut::Bytes(bytes), _, _) => {
                b.copy_from_slice(&bytes[..len]);
                Ok(())
            }
            (DataOut::Filled, _, _) => Ok(()),
            (_, _, Front::Direct { memory, tid, .. }) => {
                direct::read_data_out(memory, &p.cmd, b).map_err(|e| memory_errno(*tid, e))
            }
            _ => Err(Errno::EIO),
        };
        if let Err(e) = filled {
            finish(map, p, Err(e), &[]);
            local.data.trim();
            return;
        }
    }
    let mut pc = PathCommand {
        cdb: &cdb,
        direction: p.cmd.direction(),
        transfer_len: len,
        data: buf.as_deref_mut(),
        timeout_ms: p.cmd.header.timeout,
        flags: p.cmd.header.flags,
        owner: p.file.fh.0,
    };
    match map.engine.execute(&mut pc, &mut p.attempt) {
        Step::Done(result) => {
            let data: &[u8] = buf.as_deref().unwrap_or(&[]);
            finish(map, p, result, data);
        }
        Step::Wait { retry_at } => {
            let data: &[u8] = buf.as_deref().unwrap_or(&[]);
            park(map, p, retry_at, data);
        }
    }
    local.data.trim();
}

/// Keeps `data` (data-out) for a command that waits, charged to the data budget.
fn hold(map: &Arc<MapState>, p: &Pending, data: &[u8]) -> Result<Held, Errno> {
    let reservation = match &p.front {
        // A write()'s reservation, taken when it was written, covers it; SG_IO in the
        // retry rounds reserves now.
        Front::Async(_) => None,
        _ => Some(
            map.budget
                .reserve(data.len(), p.file.opened_by.holder(), &p.file.held)?,
        ),
    };
    Ok(Held {
        data: data.to_vec(),
        _reservation: reservation,
    })
}

/// Parks a command that waits for a path: no thread waits with it. It runs again when
/// the map changes (`resume_all`), or at `retry_at` at the latest; an INTERRUPT of its
/// caller ends it with EINTR (it is on no path).
fn park(map: &Arc<MapState>, mut p: Pending, retry_at: Coarse, buffer: &[u8]) {
    // One-round SG_IO reads its data-out from the caller again (the caller waits in the
    // ioctl, its memory is there); the others keep theirs.
    let keep = p.cmd.data_out_from_caller
        && p.held_out.is_none()
        && !matches!(p.front, Front::Direct { .. });
    if keep {
        match hold(map, &p, &buffer[..p.cmd.transfer_len]) {
            Ok(h) => p.held_out = Some(h),
            Err(e) => return finish(map, p, Err(e), &[]),
        }
    }
    let unique = p.unique();
    let id = match map.work.park(unique, Work::Command(Box::new(p))) {
        Ok(id) => id,
        Err(work) => return work.interrupted(),
    };
    let weak = Arc::downgrade(map);
    map.timer
        .schedule(retry_at, Box::new(move || resume(&weak, id)));
}

/// A waiting command's retry time came: one of the node's threads takes it (unless an
/// event or an interrupt took it first).
fn resume(map: &Weak<MapState>, id: super::parked::ParkId) {
    let Some(m) = map.upgrade() else {
        return;
    };
    let weak = map.clone();
    m.submit(Box::new(move |local: &mut WorkerLocal| {
        if let Some(map) = weak.upgrade() {
            if let Some(work) = map.work.take(id) {
                run_work(&map, work, local);
            }
        }
    }));
}

/// The map changed (a path reinstated, a table reloaded), or the node goes away: every
/// command waiting for a path tries again now, on the node's threads.
pub fn resume_all(map: &Arc<MapState>) {
    let waiting = map
        .work
        .take_all(|w| matches!(w, Work::Command(p) if p.attempt.waits > 0));
    for (_, work) in waiting {
        let weak = Arc::downgrade(map);
        map.submit(Box::new(move |local: &mut WorkerLocal| {
            if let Some(map) = weak.upgrade() {
                run_work(&map, work, local);
            }
        }));
    }
}

// ---------------------------------------------------------------- complete

/// The command is over: its results go to its caller by its front end. `data` is the
/// thread's buffer (data-in for a read).
fn finish(_map: &Arc<MapState>, p: Pending, result: Result<Completion, Errno>, data: &[u8]) {
    let Pending { cmd, front, .. } = p;
    match front {
        Front::Direct {
            reply,
            memory,
            tid,
            abi,
            arg,
            _slot,
        } => {
            // The request leaves the file's list before the caller hears of it (sg
            // removes it before SG_IO returns): the caller may use the slot at once.
            drop(_slot);
            let c = match result {
                Ok(c) => c,
                Err(e) => return reply.error(e),
            };
            let (out, sense) = results(&cmd, &c);
            let data_in = data_in(&cmd, &c, data);
            match direct::write_results(&memory, abi, arg, &cmd, out.as_bytes(), &sense, data_in) {
                Ok(()) => reply.done(0, &[]),
                Err(e) => reply.error(memory_errno(tid, e)),
            }
        }
        Front::Rounds {
            reply,
            sense_in,
            _slot,
        } => {
            drop(_slot);
            let c = match result {
                Ok(c) => c,
                Err(e) => return reply.error(e),
            };
            let (out, sense) = results(&cmd, &c);
            // The sense the LU returned, then the caller's own bytes: sg writes sb_len_wr
            // bytes and leaves the rest of the buffer alone.
            let tail = &sense_in[sense.len().min(sense_in.len())..];
            reply.done(0, &[out.as_bytes(), &sense, tail, data_in(&cmd, &c, data)]);
        }
        Front::Async(ac) => complete_async(ac, cmd, result, data),
    }
}

/// The output fields and the sense bytes for the caller, as sg computes them.
fn results(cmd: &SgCommand, c: &Completion) -> (SgIoOutput, SenseBytes) {
    let (out, sense_len) = output_for(&cmd.header, c);
    (out, sense_bytes(c, sense_len))
}

/// The data-in bytes for the caller: only what the device transferred
/// (docs/sg-compat.md: sg copies its whole bounce buffer back, stale bytes included).
fn data_in<'a>(cmd: &SgCommand, c: &Completion, data: &'a [u8]) -> &'a [u8] {
    if cmd.data_in_to_caller {
        &data[..transferred(cmd.transfer_len, c.resid).min(data.len())]
    } else {
        &[]
    }
}

/// A write() command is over: its completion waits for read() in the file's list, with
/// its data-in copied out of the thread's buffer; waiting reads that can reap it are
/// answered, pollers woken.
fn complete_async(
    mut ac: AsyncCompletion,
    cmd: SgCommand,
    outcome: Result<Completion, Errno>,
    data: &[u8],
) {
    let (duration, problem, kept) = match &outcome {
        Ok(c) => {
            // sg_req_info.problem: masked_status || host_status || driver_status (sg.c
            // in 6.1; it was `&` before).
            let (out, _) = output_for(&cmd.header, c);
            let problem = out.masked_status != 0 || out.host_status != 0 || out.driver_status != 0;
            (
                c.duration_ms,
                u8::from(problem),
                data_in(&cmd, c, data).to_vec(),
            )
        }
        Err(_) => (0, 0, Vec::new()),
    };
    ac.filled = true;
    // Data-in stays charged until read(); a data-out reservation goes now.
    let reservation = ac.reservation.take().filter(|_| cmd.data_in_to_caller);
    let done = Completed {
        abi: ac.abi,
        raw_header: ac.raw_header,
        command: cmd,
        outcome,
        data_in: kept,
        reservation,
    };
    let (ready, poll) = ac.file.complete(ac.id, duration, problem, done);
    for (reader, done) in ready {
        deliver(reader, done);
    }
    if let Some((kh, waker)) = poll {
        waker.wake(kh);
    }
}

/// A parked read() reaps `done`: its answer, from whichever thread completed it.
pub fn deliver(reader: WaitingRead, done: Completed) {
    reader.unpark();
    let WaitingRead {
        reply,
        caller,
        count,
        ..
    } = reader;
    match finish_read(&caller, count, done) {
        Ok(header) => reply.data(&header.parts()),
        Err(e) => reply.error(e),
    }
}

/// What read() returns: the header with its output fields, and the rest of the caller's
/// buffer as it was (sg writes the header and returns count).
pub struct ReadAnswer {
    header: [u8; Abi::Native.header_len()],
    header_len: usize,
    tail: Vec<u8>,
}

impl ReadAnswer {
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.header[..self.header_len], &self.tail]
    }
}

/// A READ reply carries at most max_read bytes (session.rs MAX_RW).
const MAX_READ: usize = 128 * 1024;

/// sg_new_read(): sense to sbp, data-in to the data buffer, the header as read()'s data.
/// The request is used up even when this fails, as in sg.
pub fn finish_read(caller: &Caller, count: usize, r: Completed) -> Result<ReadAnswer, Errno> {
    let hdr_len = r.abi.header_len();
    if count < hdr_len {
        return Err(Errno::EINVAL);
    }
    let completion = r.outcome?;
    let (out, sense) = results(&r.command, &completion);
    let memory = ProcessMemory::new(caller.tid);
    if !sense.is_empty() || !r.data_in.is_empty() {
        let Some(m) = &memory else {
            return Err(memory_errno(caller.tid, MemError::Unreachable));
        };
        direct::write_sense_and_data_in(m, &r.command, &sense, &r.data_in)
            .map_err(|e| memory_errno(caller.tid, e))?;
    }
    let mut header = r.raw_header;
    let off = r.abi.output_offset() as usize;
    header[off..off + out.as_bytes().len()].copy_from_slice(out.as_bytes());
    // sg writes the header and returns count, leaving the rest of the buffer alone; a
    // READ reply's length is read()'s result, so the rest is handed back unchanged. If
    // it cannot be read, read() returns the header length.
    let mut tail = Vec::new();
    if count > hdr_len {
        if let (Some(m), Some(buf)) = (&memory, read_buffer(caller)) {
            let len = count.min(MAX_READ) - hdr_len;
            let mut bytes = vec![0u8; len];
            let region = IoctlIovec {
                base: buf.1 + hdr_len as u64,
                len: len as u64,
            };
            if direct::CallerMemory::read(m, &[region], &mut [&mut bytes]).is_ok() {
                tail = bytes;
            }
        }
    }
    Ok(ReadAnswer {
        header,
        header_len: hdr_len,
        tail,
    })
}

/// The layout and buffer address of the caller's read(2), from /proc/<tid>/syscall; None
/// for readv, io_uring, or a caller the daemon cannot see.
pub fn read_buffer(caller: &Caller) -> Option<(Abi, u64)> {
    BlockedSyscall::of(caller.tid)?.read_buffer()
}
