//! One /dev/mpath-sg/<map> node: the sg driver's ioctl ABI (drivers/scsi/sg.c,
//! sg_ioctl_common) on top of the map's failover engine. Each errno is decided here, in
//! one place per ioctl, as sg decides it; differences are listed in docs/sg-compat.md.

use crate::caller::ProcessMemory;
use crate::cuse::abi::{ioctl_flags, IoctlIn, IoctlIovec, PollIn, ReadWriteIn};
use crate::cuse::{Caller, CuseHandler, IoctlReply, PollWaker, Written};
use crate::errno::Errno;
use crate::failover::Engine;
use crate::path::PathCommand;
use crate::sg::abi::{self, ioctl::*, ScsiIdlun, SgScsiId};
use crate::sg::access;
use crate::sg::direct::{self, DirectError};
use crate::sg::header::{
    output_for, sense_bytes, transferred, Abi, Completion, Direction, SgIoHeader,
};
use crate::sg::plan::{plan, Round, Step, MAX_ROUND_TRANSFER};
use crate::sg::queue::RequestQueue;
use parking_lot::{Condvar, Mutex};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use zerocopy::IntoBytes;

/// Per open file, as sg keeps it in `struct sg_fd`.
pub(super) struct OpenFile {
    flags: u32,
    timeout_user: AtomicI32,
    reserved_size: AtomicI32,
    pub(super) cmd_q: AtomicBool,
    keep_orphan: AtomicI32,
    pub(super) force_pack_id: AtomicBool,
    next_cmd_len: AtomicI32,
    /// Requests in flight (SG_IO's and write()'s) and the armed poll wake-up.
    pub(super) state: Mutex<FileState>,
    /// Signalled when a write() request completes (or the node goes away).
    pub(super) completed: Condvar,
    /// The layout last seen for a thread: (tid << 1) | compat, 0 for none.
    pub(super) abi_cache: AtomicU64,
}

#[derive(Default)]
pub(super) struct FileState {
    pub(super) requests: RequestQueue<super::async_io::AsyncResult>,
    /// FUSE_NOTIFY_POLL to send on the next completion: (kh, waker).
    pub(super) poll: Option<(u64, PollWaker)>,
}

impl OpenFile {
    fn read_write(&self) -> bool {
        self.flags & libc::O_ACCMODE as u32 == libc::O_RDWR as u32
    }
    fn writable(&self) -> bool {
        self.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
    }
}

pub struct MapNode {
    pub(super) engine: Arc<Engine>,
    /// Serve SG_IO in one round through the caller's memory when it can be reached.
    single_round: bool,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    /// The node is going away: waiting reads end with ENODEV, poll says POLLHUP.
    pub(super) detaching: AtomicBool,
    /// Reads waiting for a completion, by request unique (for FUSE_INTERRUPT).
    pub(super) readers: Mutex<HashMap<u64, Arc<OpenFile>>>,
    /// Uniques the kernel sent FUSE_INTERRUPT for (bounded; see `interrupt`).
    pub(super) interrupted: Mutex<BTreeSet<u64>>,
}

/// sg's SG_SET_TIMEOUT ceiling: mult_frac(INT_MAX, USER_HZ, HZ) with Debian's HZ=250.
const MAX_TIMEOUT_USER: i32 = (i32::MAX as i64 * 100 / 250) as i32;

fn iov(base: u64, len: usize) -> IoctlIovec {
    IoctlIovec {
        base,
        len: len as u64,
    }
}

/// An ioctl whose argument is written to the caller: two rounds (name the region, fill it).
fn put(arg: &IoctlIn, bytes: &[u8]) -> IoctlReply {
    if (arg.out_size as usize) < bytes.len() {
        return IoctlReply::Retry {
            input: vec![],
            output: vec![iov(arg.arg, bytes.len())],
        };
    }
    IoctlReply::Done {
        result: 0,
        out: bytes.to_vec(),
    }
}

fn put_int(arg: &IoctlIn, v: i32) -> IoctlReply {
    put(arg, &v.to_ne_bytes())
}

/// An ioctl that reads an int from the caller: two rounds (fetch it, act).
fn get_int(arg: &IoctlIn, data: &[u8], act: impl FnOnce(i32) -> Result<(), Errno>) -> IoctlReply {
    let Some(bytes) = data.get(..4) else {
        return IoctlReply::Retry {
            input: vec![iov(arg.arg, 4)],
            output: vec![],
        };
    };
    match act(i32::from_ne_bytes(bytes.try_into().expect("4 bytes"))) {
        Ok(()) => IoctlReply::Done {
            result: 0,
            out: vec![],
        },
        Err(e) => IoctlReply::Error(e),
    }
}

impl MapNode {
    pub fn new(engine: Arc<Engine>, single_round: bool) -> MapNode {
        MapNode {
            engine,
            single_round,
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            detaching: AtomicBool::new(false),
            readers: Mutex::new(HashMap::new()),
            interrupted: Mutex::new(BTreeSet::new()),
        }
    }

    /// Files open on the node now.
    pub fn open_files(&self) -> usize {
        self.files.lock().len()
    }

    /// The map is going away (or the daemon stops): waiting reads end with ENODEV,
    /// pollers see POLLHUP, write() and SG_IO get ENODEV, commands in flight still finish.
    pub fn detach(&self) {
        self.detaching.store(true, Ordering::SeqCst);
        let files: Vec<_> = self.files.lock().values().cloned().collect();
        for f in files {
            let poll = f.state.lock().poll.take();
            f.completed.notify_all();
            if let Some((kh, waker)) = poll {
                waker.wake(kh);
            }
        }
    }

    /// The largest transfer the node advertises: what every path allows and, without the
    /// single round, what one ioctl can carry through CUSE's retry rounds. (A caller the
    /// daemon cannot reach is served in rounds and limited to MAX_ROUND_TRANSFER whatever
    /// is advertised: docs/sg-compat.md.)
    fn max_transfer(&self) -> usize {
        let paths = self.engine.max_transfer();
        if self.single_round {
            paths
        } else {
            paths.min(MAX_ROUND_TRANSFER)
        }
    }

    /// Runs one command on the map; data is the data-out, or the buffer for data-in.
    fn run(
        &self,
        hdr: &SgIoHeader,
        cdb: &[u8],
        transfer_len: usize,
        data: &mut [u8],
    ) -> Result<Completion, Errno> {
        run_on(&self.engine, hdr, cdb, transfer_len, data)
    }

    /// Takes one of the file's SG_MAX_QUEUE slots for an SG_IO (EDOM when none is left,
    /// as sg_add_request()); the guard gives it back.
    fn sg_io_slot<'a>(&self, file: &'a OpenFile, hdr: &SgIoHeader) -> Result<SgIoSlot<'a>, Errno> {
        if self.detaching.load(Ordering::Relaxed) {
            return Err(Errno::ENODEV);
        }
        let id = file
            .state
            .lock()
            .requests
            .add(hdr.pack_id, hdr.usr_ptr, true, true)?;
        Ok(SgIoSlot { file, id })
    }

    /// SG_IO in one round through the caller's memory; None when the caller cannot be
    /// reached (the retry rounds take over).
    fn sg_io_direct(
        &self,
        caller: &Caller,
        file: &OpenFile,
        abi: Abi,
        arg: &IoctlIn,
    ) -> Option<IoctlReply> {
        let memory = ProcessMemory::new(caller.pid)?;
        let check = |cdb: &[u8]| self.check_access(file, caller, cdb);
        // As sg: BLKSECTGET says max_sectors, but SG_IO accepts up to max_hw_sectors.
        let limit = self.engine.max_hw_transfer();
        let mut call = match direct::read_call(&memory, abi, arg.arg, &check, limit) {
            Ok(c) => c,
            Err(DirectError::Unreachable) => {
                tracing::debug!(
                    tid = caller.pid,
                    "caller not reachable; using the retry rounds"
                );
                return None;
            }
            Err(DirectError::Errno(e)) => {
                file.cmd_q.store(true, Ordering::Relaxed);
                return Some(IoctlReply::Error(sg_errno(e)));
            }
        };
        file.cmd_q.store(true, Ordering::Relaxed);
        let hdr = call.header;
        let _slot = match self.sg_io_slot(file, &hdr) {
            Ok(s) => s,
            Err(e) => return Some(IoctlReply::Error(e)),
        };
        let cdb = std::mem::take(&mut call.cdb);
        let mut data = std::mem::take(&mut call.data);
        let completion = match self.run(&hdr, &cdb, call.transfer_len, &mut data) {
            Ok(c) => c,
            Err(e) => return Some(IoctlReply::Error(e)),
        };
        call.data = data;
        let (out, sense_len) = output_for(&hdr, &completion);
        let sense = sense_bytes(&completion, sense_len);
        let data_in = transferred(call.transfer_len, completion.resid);
        Some(
            match direct::write_results(
                &memory,
                abi,
                arg.arg,
                &call,
                out.as_bytes(),
                &sense,
                data_in,
            ) {
                Ok(()) => IoctlReply::Done {
                    result: 0,
                    out: vec![],
                },
                Err(e) => IoctlReply::Error(e),
            },
        )
    }

    fn file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files.lock().get(&fh).cloned()
    }

    /// sg_allow_access() for a file that is not O_RDWR.
    fn check_access(&self, file: &OpenFile, caller: &Caller, cdb: &[u8]) -> Result<(), Errno> {
        if file.read_write() {
            return Ok(());
        }
        let op = cdb[0];
        if access::allowed(op, file.writable(), false) {
            return Ok(());
        }
        // The caller waits in its ioctl, so its thread's status is readable now.
        if caller_has_cap_sys_rawio(caller.pid) {
            return Ok(());
        }
        Err(Errno::EPERM)
    }

    fn sg_io(&self, caller: &Caller, file: &OpenFile, arg: &IoctlIn, data: &[u8]) -> IoctlReply {
        let abi = if arg.flags & ioctl_flags::COMPAT != 0 {
            Abi::Compat
        } else {
            Abi::Native
        };
        if self.single_round && data.is_empty() && arg.out_size == 0 {
            if let Some(reply) = self.sg_io_direct(caller, file, abi, arg) {
                return reply;
            }
        }
        let round = Round {
            abi,
            arg: arg.arg,
            data,
            out_size: arg.out_size,
            max_transfer: self.max_transfer().min(MAX_ROUND_TRANSFER),
        };
        // sg_new_write() turns command queuing on for the file once it sees a v3 header.
        if data.len() >= abi.header_len() {
            file.cmd_q.store(true, Ordering::Relaxed);
        }
        let check = |cdb: &[u8]| self.check_access(file, caller, cdb);
        let call = match plan(&round, &check) {
            Step::Fetch { input, output } => return IoctlReply::Retry { input, output },
            Step::Fail(e) => return IoctlReply::Error(sg_errno(e)),
            Step::Execute(call) => call,
        };
        let hdr = &call.header;
        let _slot = match self.sg_io_slot(file, hdr) {
            Ok(s) => s,
            Err(e) => return IoctlReply::Error(e),
        };
        let mut buf = match hdr.direction() {
            Direction::ToDevice if !call.data_out.is_empty() => call.data_out.to_vec(),
            Direction::FromDevice if call.data_in_to_caller => vec![0u8; call.transfer_len],
            _ => Vec::new(),
        };
        let completion = match self.run(hdr, call.cdb, call.transfer_len, &mut buf) {
            Ok(c) => c,
            Err(e) => return IoctlReply::Error(e),
        };
        let (out, sense_len) = output_for(hdr, &completion);
        let mut reply = Vec::with_capacity(20 + call.sense_in.len() + buf.len());
        reply.extend_from_slice(out.as_bytes());
        // The sense the LU returned, then the caller's own bytes: sg writes sb_len_wr bytes
        // and leaves the rest of the buffer alone.
        reply.extend_from_slice(&sense_bytes(&completion, sense_len));
        reply.extend_from_slice(&call.sense_in[sense_len.min(call.sense_in.len())..]);
        if call.data_in_to_caller {
            // Only what the device transferred (docs/sg-compat.md): sg copies its whole
            // bounce buffer back, stale bytes included; the node leaves the caller's tail.
            reply.extend_from_slice(&buf[..transferred(buf.len(), completion.resid)]);
        }
        IoctlReply::Done {
            result: 0,
            out: reply,
        }
    }
}

/// One command on the map, outside any borrow of the node (write()'s jobs run it too).
pub(super) fn run_on(
    engine: &Engine,
    hdr: &SgIoHeader,
    cdb: &[u8],
    transfer_len: usize,
    data: &mut [u8],
) -> Result<Completion, Errno> {
    let mut cmd = PathCommand {
        cdb,
        direction: hdr.direction(),
        transfer_len,
        data: if data.is_empty() { None } else { Some(data) },
        timeout_ms: hdr.timeout,
        flags: hdr.flags,
    };
    engine.execute_blocking(&mut cmd)
}

/// An SG_IO's place in its file's request list, for as long as it runs.
struct SgIoSlot<'a> {
    file: &'a OpenFile,
    id: u64,
}

impl Drop for SgIoSlot<'_> {
    fn drop(&mut self) {
        self.file.state.lock().requests.remove(self.id);
    }
}

/// The errno the caller gets for what sg would answer. CUSE cannot deliver ENOSYS from an
/// ioctl: fuse_send_ioctl() turns it into ENOTTY, on which udev's scsi_id gives up instead
/// of falling back from a v4 to a v3 header. EINVAL is what SG_IO on a block device
/// answers, and what scsi_id and sg3_utils treat the same as ENOSYS (docs/sg-compat.md).
fn sg_errno(e: Errno) -> Errno {
    if e == Errno::ENOSYS {
        Errno::EINVAL
    } else {
        e
    }
}

/// CAP_SYS_RAWIO in the effective set of thread `tid` (/proc/<tid>/status, CapEff).
fn caller_has_cap_sys_rawio(tid: u32) -> bool {
    const CAP_SYS_RAWIO: u32 = 17;
    if tid == 0 {
        // Not visible from the daemon's pid namespace: cannot tell, so refuse as sg
        // would refuse an unprivileged caller.
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RAWIO) != 0)
}

impl CuseHandler for MapNode {
    fn open(&self, _caller: &Caller, flags: u32) -> Result<u64, Errno> {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let file = OpenFile {
            flags,
            timeout_user: AtomicI32::new(abi::SG_DEFAULT_TIMEOUT_USER),
            reserved_size: AtomicI32::new(
                abi::SG_DEF_RESERVED_SIZE.min(self.max_transfer() as i32),
            ),
            cmd_q: AtomicBool::new(false),
            keep_orphan: AtomicI32::new(0),
            force_pack_id: AtomicBool::new(false),
            next_cmd_len: AtomicI32::new(0),
            state: Mutex::new(FileState::default()),
            completed: Condvar::new(),
            abi_cache: AtomicU64::new(0),
        };
        self.files.lock().insert(fh, Arc::new(file));
        Ok(fh)
    }

    fn release(&self, fh: u64) {
        self.files.lock().remove(&fh);
    }

    fn read(&self, caller: &Caller, arg: &ReadWriteIn) -> Result<Vec<u8>, Errno> {
        let file = self.file(arg.fh).ok_or(Errno::ENXIO)?;
        self.async_read(caller, &file, arg)
    }

    fn write(&self, caller: &Caller, arg: &ReadWriteIn, data: &[u8]) -> Result<Written, Errno> {
        let file = self.file(arg.fh).ok_or(Errno::ENXIO)?;
        self.async_write(caller, &file, data)
    }

    fn poll(&self, _: &Caller, arg: &PollIn, waker: &PollWaker) -> Result<u32, Errno> {
        // sg_poll() answers POLLERR for a file it does not know.
        let Some(file) = self.file(arg.fh) else {
            return Ok(libc::POLLERR as u32);
        };
        Ok(self.async_poll(&file, arg, waker))
    }

    fn interrupt(&self, unique: u64) {
        self.interrupt_read(unique);
    }

    fn ioctl(&self, caller: &Caller, arg: &IoctlIn, data: &[u8]) -> IoctlReply {
        let Some(file) = self.file(arg.fh) else {
            return IoctlReply::Error(Errno::ENXIO);
        };
        let compat = arg.flags & ioctl_flags::COMPAT != 0;
        match arg.cmd {
            SG_IO => self.sg_io(caller, &file, arg, data),
            SG_GET_VERSION_NUM => put_int(arg, abi::SG_VERSION_NUM),
            SG_GET_TIMEOUT => IoctlReply::Done {
                result: file.timeout_user.load(Ordering::Relaxed),
                out: vec![],
            },
            SG_SET_TIMEOUT => get_int(arg, data, |v| {
                if v < 0 {
                    return Err(Errno::EIO);
                }
                file.timeout_user
                    .store(v.min(MAX_TIMEOUT_USER), Ordering::Relaxed);
                Ok(())
            }),
            SG_GET_RESERVED_SIZE => put_int(
                arg,
                file.reserved_size
                    .load(Ordering::Relaxed)
                    .min(self.max_transfer() as i32),
            ),
            SG_SET_RESERVED_SIZE => get_int(arg, data, |v| {
                if v < 0 {
                    return Err(Errno::EINVAL);
                }
                file.reserved_size
                    .store(v.min(self.max_transfer() as i32), Ordering::Relaxed);
                Ok(())
            }),
            SG_GET_SG_TABLESIZE => put_int(arg, self.engine.limits().max_segments),
            BLKSECTGET => put_int(arg, self.max_transfer() as i32),
            SG_EMULATED_HOST => put_int(arg, 0),
            SG_GET_SCSI_ID => {
                let p = self.engine.limits().representative.unwrap_or_default();
                let id = SgScsiId {
                    host_no: p.host,
                    channel: p.channel,
                    scsi_id: p.target,
                    lun: p.lun,
                    scsi_type: p.scsi_type,
                    h_cmd_per_lun: p.cmd_per_lun as i16,
                    d_queue_depth: p.queue_depth as i16,
                    unused: [0; 2],
                };
                put(arg, id.as_bytes())
            }
            SCSI_IOCTL_GET_IDLUN => {
                let p = self.engine.limits().representative.unwrap_or_default();
                let idlun = ScsiIdlun {
                    dev_id: (p.target & 0xff)
                        | (p.lun & 0xff) << 8
                        | (p.channel & 0xff) << 16
                        | (p.host & 0xff) << 24,
                    host_unique_id: p.host_unique_id,
                };
                put(arg, idlun.as_bytes())
            }
            SCSI_IOCTL_GET_BUS_NUMBER => put_int(
                arg,
                self.engine.limits().representative.unwrap_or_default().host,
            ),
            SG_GET_COMMAND_Q => put_int(arg, file.cmd_q.load(Ordering::Relaxed).into()),
            SG_SET_COMMAND_Q => get_int(arg, data, |v| {
                file.cmd_q.store(v != 0, Ordering::Relaxed);
                Ok(())
            }),
            SG_GET_KEEP_ORPHAN => put_int(arg, file.keep_orphan.load(Ordering::Relaxed)),
            SG_SET_KEEP_ORPHAN => get_int(arg, data, |v| {
                file.keep_orphan.store(v, Ordering::Relaxed);
                Ok(())
            }),
            SG_SET_FORCE_PACK_ID => get_int(arg, data, |v| {
                file.force_pack_id.store(v != 0, Ordering::Relaxed);
                Ok(())
            }),
            SG_NEXT_CMD_LEN => get_int(arg, data, |v| {
                if v > i32::from(abi::MAX_CDB_LEN) {
                    return Err(Errno::ENOMEM);
                }
                file.next_cmd_len.store(v.max(0), Ordering::Relaxed);
                Ok(())
            }),
            SG_GET_PACK_ID => put_int(arg, file.state.lock().requests.first_waiting_pack_id()),
            SG_GET_NUM_WAITING => put_int(arg, file.state.lock().requests.num_waiting()),
            SG_GET_REQUEST_TABLE => {
                let abi = if compat { Abi::Compat } else { Abi::Native };
                let table = file
                    .state
                    .lock()
                    .requests
                    .request_table(abi, std::time::Instant::now());
                put(arg, &table)
            }
            SG_GET_ACCESS_COUNT => put_int(arg, 1),
            SG_GET_LOW_DMA => put_int(arg, 0),
            SG_SET_FORCE_LOW_DMA => get_int(arg, data, |_| Ok(())),
            // sg's default: EPERM on a file that is not O_RDWR ("don't know so take safe
            // approach"), else the SCSI midlayer's answer for an unknown ioctl, EINVAL.
            _ if !file.read_write() => IoctlReply::Error(Errno::EPERM),
            _ => IoctlReply::Error(Errno::EINVAL),
        }
    }
}
