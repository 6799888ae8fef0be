//! sg's asynchronous interface on a node (drivers/scsi/sg.c, Linux 6.1: sg_write,
//! sg_new_write, sg_read, get_sg_io_pack_id, sg_new_read, sg_poll): write() of a v3 header
//! queues a command, read() returns a completed one, poll() says which is possible.
//!
//! Through CUSE, write() and read() carry only the header bytes, while the header points
//! at the CDB, the data and the sense buffer. The caller waits in its write() or read()
//! while the daemon holds the request (see crate::caller), so the daemon reads the CDB
//! and data-out from the caller during write(), and writes sense and data-in during
//! read(), as sg copies them in the same calls. What /proc/<tid>/syscall tells is used
//! for the rest: the read buffer's address (SG_SET_FORCE_PACK_ID) and 32-bit callers.

use super::node::{run_on, MapNode, OpenFile};
use crate::caller::{BlockedSyscall, ProcessMemory};
use crate::cuse::abi::{PollIn, ReadWriteIn, FUSE_POLL_SCHEDULE_NOTIFY};
use crate::cuse::{Caller, PollWaker, Written};
use crate::errno::Errno;
use crate::sg::direct::{self, CallerMemory, DirectCall, DirectError, MemError};
use crate::sg::header::{output_for, sense_bytes, transferred, Abi, Completion, SgIoHeader};
use crate::sg::queue::Reap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zerocopy::IntoBytes;

/// sizeof(struct sg_header), the v1/v2 header: the least a write() must carry.
const SZ_SG_HEADER: usize = 36;
/// A READ reply carries at most max_read bytes (session.rs MAX_RW).
const MAX_READ: usize = 128 * 1024;
/// FUSE_INTERRUPTs remembered for requests not (yet) waiting: see `interrupt_read`.
const MAX_REMEMBERED_INTERRUPTS: usize = 256;

/// A completed write() request, waiting for read().
#[derive(Debug)]
pub struct AsyncResult {
    abi: Abi,
    /// The header as written: read() returns it with the output fields filled in.
    raw_header: Vec<u8>,
    call: DirectCall,
    outcome: Result<Completion, Errno>,
}

impl MapNode {
    /// write(): sg_write() then sg_new_write(), each errno in sg's order.
    pub(super) fn async_write(
        &self,
        caller: &Caller,
        file: &Arc<OpenFile>,
        data: &[u8],
    ) -> Result<Written, Errno> {
        if self.detaching.load(Ordering::SeqCst) {
            return Err(Errno::ENODEV);
        }
        if data.len() < SZ_SG_HEADER {
            return Err(Errno::EIO);
        }
        let reply_len = i32::from_ne_bytes(data[4..8].try_into().expect("4 bytes"));
        if reply_len >= 0 {
            // The v1/v2 sg_header interface (obsolete since sg 3.0, 1999): not served.
            tracing::debug!(tid = caller.pid, "write() of a v2 sg_header refused");
            return Err(Errno::EINVAL);
        }
        // sg_new_write() wants SZ_SG_IO_HDR, the 64-bit header's size, from 32-bit
        // callers too (whose header it then reads in their 64-byte layout).
        if data.len() < Abi::Native.header_len() {
            return Err(Errno::EINVAL);
        }
        let abi = self.caller_abi(caller, file);
        // sg_new_write() turns command queuing on as soon as it sees a v3 header.
        file.cmd_q.store(true, Ordering::Relaxed);
        let hdr = SgIoHeader::decode(abi, data).expect("length checked");
        let id = file
            .state
            .lock()
            .requests
            .add(hdr.pack_id, hdr.usr_ptr, false, true)?;
        let call = match self.read_async_command(caller, abi, hdr) {
            Ok(c) => c,
            Err(e) => {
                file.state.lock().requests.remove(id);
                return Err(e);
            }
        };
        let raw_header = data[..abi.header_len()].to_vec();
        let engine = self.engine.clone();
        let file = file.clone();
        // The command runs on this CUSE worker right after write()'s answer: no hand-off
        // to another thread (one wake-up less per command).
        let job = move || {
            let mut call = call;
            let mut buf = std::mem::take(&mut call.data);
            let outcome = run_on(
                &engine,
                &call.header,
                &call.cdb,
                call.transfer_len,
                &mut buf,
            );
            call.data = buf;
            call.cdb = Vec::new();
            let (duration, problem) = match &outcome {
                Ok(c) => {
                    // sg_req_info.problem: masked_status || host_status || driver_status
                    // (sg.c since "scsi: sg: fix ... problem", in 6.1; it was `&` before).
                    let (out, _) = output_for(&call.header, c);
                    let problem =
                        out.masked_status != 0 || out.host_status != 0 || out.driver_status != 0;
                    (c.duration_ms, u8::from(problem))
                }
                Err(_) => (0, 0),
            };
            let result = AsyncResult {
                abi,
                raw_header,
                call,
                outcome,
            };
            let poll = {
                let mut st = file.state.lock();
                st.requests.complete(id, duration, problem, result);
                st.poll.take()
            };
            file.completed.notify_all();
            if let Some((kh, waker)) = poll {
                waker.wake(kh);
            }
        };
        Ok(Written {
            size: data.len() as u32,
            then: Some(Box::new(job)),
        })
    }

    /// The CDB and data-out a written header names, read from the caller now, as
    /// sg_new_write() and sg_start_req() copy them. write() has no permission check on
    /// the CDB (sg_write passes read_only 0: a writable fd may send anything).
    fn read_async_command(
        &self,
        caller: &Caller,
        abi: Abi,
        hdr: SgIoHeader,
    ) -> Result<DirectCall, Errno> {
        hdr.validate()?;
        let unreachable = || {
            tracing::warn!(
                tid = caller.pid,
                "write() on the node: the caller's memory cannot be reached (another pid \
                 namespace, or no ptrace rights); answering EPERM"
            );
            Errno::EPERM
        };
        let memory = ProcessMemory::new(caller.pid).ok_or_else(unreachable)?;
        let allow_all = |_: &[u8]| Ok(());
        direct::read_command(&memory, abi, hdr, &allow_all, self.engine.max_hw_transfer()).map_err(
            |e| match e {
                DirectError::Errno(e) => e,
                DirectError::Unreachable => unreachable(),
            },
        )
    }

    /// 32-bit or 64-bit layout for this caller, from the syscall it is blocked in; one
    /// thread's answer is kept per file.
    fn caller_abi(&self, caller: &Caller, file: &OpenFile) -> Abi {
        let tid = u64::from(caller.pid);
        let cached = file.abi_cache.load(Ordering::Relaxed);
        if cached != 0 && cached >> 1 == tid {
            return if cached & 1 == 1 {
                Abi::Compat
            } else {
                Abi::Native
            };
        }
        let abi = BlockedSyscall::of(caller.pid)
            .and_then(|s| s.rw_abi())
            .unwrap_or(Abi::Native);
        if tid != 0 {
            file.abi_cache
                .store(tid << 1 | u64::from(abi == Abi::Compat), Ordering::Relaxed);
        }
        abi
    }

    /// read(): sg_read() then sg_new_read().
    pub(super) fn async_read(
        &self,
        caller: &Caller,
        file: &Arc<OpenFile>,
        arg: &ReadWriteIn,
    ) -> Result<Vec<u8>, Errno> {
        let count = arg.size as usize;
        let buffer = ReadBuffer::new(caller);
        let pack_id = if file.force_pack_id.load(Ordering::Relaxed) {
            requested_pack_id(&buffer, count)?
        } else {
            -1
        };
        let nonblock = arg.flags & libc::O_NONBLOCK as u32 != 0;
        let result = self.reap(caller, file, pack_id, nonblock)?;
        finish_read(caller, &buffer, count, result)
    }

    /// The completion read() returns, waiting for one unless O_NONBLOCK. A wait ends with
    /// ENODEV when the node goes away and with EINTR when the caller is signalled.
    fn reap(
        &self,
        caller: &Caller,
        file: &Arc<OpenFile>,
        pack_id: i32,
        nonblock: bool,
    ) -> Result<AsyncResult, Errno> {
        {
            let mut st = file.state.lock();
            if let Reap::Ready(r) = st.requests.reap(pack_id) {
                return Ok(r);
            }
        }
        if self.detaching.load(Ordering::SeqCst) {
            return Err(Errno::ENODEV);
        }
        if nonblock {
            return Err(Errno::EAGAIN);
        }
        // Registered before the first look at `interrupted`, so that an interrupt either
        // is seen there or finds this reader and wakes it.
        self.readers.lock().insert(caller.unique, file.clone());
        let result = {
            let mut st = file.state.lock();
            loop {
                if let Reap::Ready(r) = st.requests.reap(pack_id) {
                    break Ok(r);
                }
                // sg 6.1 keeps waiting on a detaching device while a matching request
                // runs; here the node is going away with the daemon, so end now.
                if self.detaching.load(Ordering::SeqCst) {
                    break Err(Errno::ENODEV);
                }
                if self.interrupted.lock().remove(&caller.unique) {
                    // sg answers -ERESTARTSYS; FUSE cannot pass that on, so EINTR.
                    break Err(Errno::EINTR);
                }
                file.completed.wait(&mut st);
            }
        };
        self.readers.lock().remove(&caller.unique);
        self.interrupted.lock().remove(&caller.unique);
        result
    }

    /// FUSE_INTERRUPT for request `unique`. Only a waiting read() can be ended; the
    /// interrupt may arrive before that read starts to wait (another worker reads it), so
    /// it is remembered, a bounded number of them: uniques grow, the oldest go first.
    pub(super) fn interrupt_read(&self, unique: u64) {
        {
            let mut set = self.interrupted.lock();
            set.insert(unique);
            while set.len() > MAX_REMEMBERED_INTERRUPTS {
                set.pop_first();
            }
        }
        let reader = self.readers.lock().get(&unique).cloned();
        if let Some(file) = reader {
            // Taking the lock orders this with the reader's check-then-wait.
            drop(file.state.lock());
            file.completed.notify_all();
        }
    }

    /// poll(): sg_poll()'s mask; arms a FUSE_NOTIFY_POLL for the next completion.
    pub(super) fn async_poll(&self, file: &OpenFile, arg: &PollIn, waker: &PollWaker) -> u32 {
        let detaching = self.detaching.load(Ordering::SeqCst);
        let mut st = file.state.lock();
        let mask = st
            .requests
            .poll_mask(file.cmd_q.load(Ordering::Relaxed), detaching);
        if arg.flags & FUSE_POLL_SCHEDULE_NOTIFY != 0 && !detaching {
            st.poll = Some((arg.kh, waker.clone()));
        }
        mask
    }
}

/// The buffer of the caller's read(2): its address comes from /proc/<tid>/syscall, read
/// at most once per read() and only when needed (FORCE_PACK_ID, a count above the header).
struct ReadBuffer<'a> {
    caller: &'a Caller,
    found: std::cell::OnceCell<Option<(Abi, u64, ProcessMemory)>>,
}

impl<'a> ReadBuffer<'a> {
    fn new(caller: &'a Caller) -> ReadBuffer<'a> {
        ReadBuffer {
            caller,
            found: std::cell::OnceCell::new(),
        }
    }

    /// The caller's layout, buffer address and memory; None when they cannot be learned
    /// (readv, io_uring, another pid namespace).
    fn get(&self) -> Option<&(Abi, u64, ProcessMemory)> {
        self.found
            .get_or_init(|| {
                let (abi, buf) = BlockedSyscall::of(self.caller.pid)?.read_buffer()?;
                Some((abi, buf, ProcessMemory::new(self.caller.pid)?))
            })
            .as_ref()
    }

    /// `len` bytes of the buffer from `offset`.
    fn read(&self, offset: usize, len: usize) -> Option<Result<Vec<u8>, MemError>> {
        let (_, buf, memory) = self.get()?;
        let mut bytes = vec![0u8; len];
        let region = crate::cuse::abi::IoctlIovec {
            base: buf + offset as u64,
            len: len as u64,
        };
        Some(memory.read(&[region], &mut [&mut bytes]).map(|()| bytes))
    }
}

/// get_sg_io_pack_id(): under SG_SET_FORCE_PACK_ID, read() takes the pack_id from the
/// header in the caller's buffer. A caller whose buffer cannot be learned gets any
/// completion, as with pack_id -1.
fn requested_pack_id(buffer: &ReadBuffer<'_>, count: usize) -> Result<i32, Errno> {
    if count < SZ_SG_HEADER {
        return Ok(-1);
    }
    let Some(&(abi, _, _)) = buffer.get() else {
        tracing::debug!(tid = buffer.caller.pid, "read buffer unknown; pack_id -1");
        return Ok(-1);
    };
    let head = match buffer.read(0, count.min(abi.header_len())) {
        Some(Ok(head)) => head,
        Some(Err(MemError::Fault)) => return Err(Errno::EFAULT),
        Some(Err(MemError::Unreachable)) | None => return Ok(-1),
    };
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

/// sg_new_read(): sense to sbp, data-in to the data buffer, the header as read()'s data.
/// The request is used up even when this fails, as in sg.
fn finish_read(
    caller: &Caller,
    buffer: &ReadBuffer<'_>,
    count: usize,
    r: AsyncResult,
) -> Result<Vec<u8>, Errno> {
    let hdr_len = r.abi.header_len();
    if count < hdr_len {
        return Err(Errno::EINVAL);
    }
    let completion = r.outcome?;
    let (out, sense_len) = output_for(&r.call.header, &completion);
    let sense = sense_bytes(&completion, sense_len);
    let data_in = transferred(r.call.transfer_len, completion.resid);
    if !sense.is_empty() || (r.call.data_in_to_caller && data_in > 0) {
        let memory = ProcessMemory::new(caller.pid).ok_or(Errno::EPERM)?;
        match direct::write_sense_and_data_in(&memory, &r.call, &sense, data_in) {
            Ok(()) => {}
            Err(MemError::Fault) => return Err(Errno::EFAULT),
            Err(MemError::Unreachable) => return Err(Errno::EPERM),
        }
    }
    let mut reply = r.raw_header;
    let off = r.abi.output_offset() as usize;
    reply[off..off + out.as_bytes().len()].copy_from_slice(out.as_bytes());
    // sg writes the header and returns count, leaving the rest of the buffer alone; a
    // READ reply's length is read()'s result, so the rest is handed back unchanged. If
    // it cannot be read, read() returns the header length.
    if count > hdr_len {
        if let Some(Ok(tail)) = buffer.read(hdr_len, count.min(MAX_READ) - hdr_len) {
            reply.extend_from_slice(&tail);
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuse::reply::testing::VecSink;
    use crate::cuse::CuseHandler;
    use crate::failover::testing::{rig, Rig};
    use crate::sg::abi::*;
    use std::time::Duration;
    use zerocopy::FromBytes;

    // The test's own thread stands in for the caller: its memory is reached with
    // process_vm_readv/writev on its own thread id, as a caller's would be.
    fn me(unique: u64) -> Caller {
        Caller {
            pid: nix::unistd::gettid().as_raw() as u32,
            uid: 0,
            gid: 0,
            unique,
        }
    }

    fn node() -> (Arc<MapNode>, Rig) {
        let mut r = rig(&[&[16]], false);
        let engine = std::mem::replace(&mut r.engine, rig(&[&[16]], false).engine);
        (Arc::new(MapNode::new(Arc::new(engine), true)), r)
    }

    fn rw(fh: u64, size: u32, flags: i32) -> ReadWriteIn {
        ReadWriteIn {
            fh,
            offset: 0,
            size,
            op_flags: 0,
            lock_owner: 0,
            flags: flags as u32,
            padding: 0,
        }
    }

    /// A TEST UNIT READY header pointing at `cdb` and `sense` in this process.
    fn tur(cdb: &[u8; 6], sense: &mut [u8; 32], pack_id: i32) -> SgIoHdr64 {
        SgIoHdr64 {
            interface_id: INTERFACE_ID_V3,
            dxfer_direction: SG_DXFER_NONE,
            cmd_len: 6,
            mx_sb_len: 32,
            cmdp: cdb.as_ptr() as u64,
            sbp: sense.as_mut_ptr() as u64,
            timeout: 1000,
            pack_id,
            usr_ptr: 0xfeed,
            ..Default::default()
        }
    }

    /// write() as the session runs it: the answer, then the command on the same thread.
    fn wr(n: &MapNode, fh: u64, bytes: &[u8]) -> Result<u32, Errno> {
        let w = n.write(&me(2), &rw(fh, bytes.len() as u32, 0), bytes)?;
        if let Some(job) = w.then {
            job();
        }
        Ok(w.size)
    }

    fn read_header(n: &MapNode, fh: u64, flags: i32) -> Result<SgIoHdr64, Errno> {
        let bytes = n.read(&me(1), &rw(fh, 88, flags))?;
        assert_eq!(bytes.len(), 88);
        Ok(SgIoHdr64::read_from_bytes(&bytes).unwrap())
    }

    #[test]
    fn write_then_read_returns_the_header_with_results_and_sense() {
        let (n, r) = node();
        r.behave(16, |_| {
            let mut sense = vec![0x70, 0, 6, 0, 0, 0, 0, 10];
            sense.extend_from_slice(&[0; 10]);
            Ok(Completion {
                status: 2,
                sense: crate::sg::header::SenseBytes::from_slice(&sense),
                ..Default::default()
            })
        });
        let fh = n.open(&me(0), libc::O_RDWR as u32).unwrap();
        let cdb = [0u8; 6];
        let mut sense = [0xAAu8; 32];
        let hdr = tur(&cdb, &mut sense, 42);
        assert_eq!(wr(&n, fh, hdr.as_bytes()), Ok(88));
        let got = read_header(&n, fh, 0).unwrap();
        assert_eq!(
            (got.pack_id, got.usr_ptr),
            (42, 0xfeed),
            "the header as written"
        );
        assert_eq!((got.out.status, got.out.masked_status), (2, 1));
        assert_eq!(got.out.sb_len_wr, 18);
        assert_eq!(got.out.info & SG_INFO_CHECK, SG_INFO_CHECK);
        assert_eq!(&sense[..3], &[0x70, 0, 6], "sense written to sbp");
        assert_eq!(sense[18], 0xAA, "nothing past sb_len_wr");
        assert_eq!(
            read_header(&n, fh, libc::O_NONBLOCK).err(),
            Some(Errno::EAGAIN),
            "reaped once"
        );
    }

    #[test]
    fn sixteen_outstanding_then_edom_and_malformed_writes() {
        let (n, _r) = node();
        let fh = n.open(&me(0), libc::O_RDWR as u32).unwrap();
        let cdb = [0u8; 6];
        let mut sense = [0u8; 32];
        let hdr = tur(&cdb, &mut sense, 1);
        for _ in 0..16 {
            assert_eq!(wr(&n, fh, hdr.as_bytes()), Ok(88));
        }
        assert_eq!(wr(&n, fh, hdr.as_bytes()), Err(Errno::EDOM));
        for _ in 0..16 {
            read_header(&n, fh, 0).unwrap();
        }
        assert_eq!(wr(&n, fh, &hdr.as_bytes()[..20]), Err(Errno::EIO));
        assert_eq!(wr(&n, fh, &hdr.as_bytes()[..64]), Err(Errno::EINVAL));
        let mut bad = hdr;
        bad.cmd_len = 5;
        assert_eq!(wr(&n, fh, bad.as_bytes()), Err(Errno::EMSGSIZE));
        bad = hdr;
        bad.cmdp = 8; // unmapped
        assert_eq!(wr(&n, fh, bad.as_bytes()), Err(Errno::EFAULT));
    }

    #[test]
    fn a_blocked_read_ends_with_eintr_on_interrupt_and_enodev_on_detach() {
        let (n, _r) = node();
        let fh = n.open(&me(0), libc::O_RDWR as u32).unwrap();
        let reader = {
            let n = n.clone();
            std::thread::spawn(move || n.read(&me(77), &rw(fh, 88, 0)))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "nothing outstanding: the read waits");
        n.interrupt(77);
        assert_eq!(reader.join().unwrap(), Err(Errno::EINTR));

        // An interrupt that arrives before its read starts waiting is not lost.
        n.interrupt(78);
        assert_eq!(n.read(&me(78), &rw(fh, 88, 0)), Err(Errno::EINTR));

        let reader = {
            let n = n.clone();
            std::thread::spawn(move || n.read(&me(79), &rw(fh, 88, 0)))
        };
        std::thread::sleep(Duration::from_millis(50));
        n.detach();
        assert_eq!(reader.join().unwrap(), Err(Errno::ENODEV));
        let cdb = [0u8; 6];
        let mut sense = [0u8; 32];
        let hdr = tur(&cdb, &mut sense, 1);
        assert_eq!(wr(&n, fh, hdr.as_bytes()), Err(Errno::ENODEV));
    }

    #[test]
    fn poll_reports_and_wakes_on_completion() {
        let (n, _r) = node();
        let fh = n.open(&me(0), libc::O_RDWR as u32).unwrap();
        let sink = Arc::new(VecSink::default());
        let waker = PollWaker::new(sink.clone());
        let arg = PollIn {
            fh,
            kh: 0x55,
            flags: FUSE_POLL_SCHEDULE_NOTIFY,
            events: 0,
        };
        let out = crate::sg::queue::POLLOUT | crate::sg::queue::POLLWRNORM;
        assert_eq!(n.poll(&me(3), &arg, &waker), Ok(out));
        let cdb = [0u8; 6];
        let mut sense = [0u8; 32];
        let hdr = tur(&cdb, &mut sense, 1);
        wr(&n, fh, hdr.as_bytes()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let wake = sink
            .0
            .lock()
            .pop()
            .expect("a FUSE_NOTIFY_POLL after the completion");
        assert_eq!(&wake[16..24], &0x55u64.to_ne_bytes(), "for the kh polled");
        let inn = crate::sg::queue::POLLIN | crate::sg::queue::POLLRDNORM;
        assert_eq!(n.poll(&me(3), &arg, &waker), Ok(inn | out));
    }
}
