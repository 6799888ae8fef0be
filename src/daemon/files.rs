//! The files open on a node, each with sg's per-file state (`struct sg_fd`): its
//! settings, its request list (SG_IO's and write()'s requests, 16 at most), the
//! completions of write() commands waiting for read(), the read()s waiting for them, and
//! the armed poll wake-up.

use super::budget::{Holder, Reservation};
use super::parked::{ParkId, Parked};
use super::persist::{FileRecord, FileStore, Slot};
use crate::caller::{process_of, thread_start_ticks, ProcessId};
use crate::cuse::{Caller, FileHandle, PollWaker, ReadReply};
use crate::errno::Errno;
use crate::sg::abi::SG_DEFAULT_TIMEOUT_USER;
use crate::sg::command::SgCommand;
use crate::sg::direct::CdbGuess;
use crate::sg::header::{Abi, Completion};
use crate::sg::queue::{Reap, RequestQueue};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Who opened a file: what the daemon can see of the credentials sg keeps in the file
/// (`filp->f_cred`) and compares, by pointer, with the caller's on every read() and
/// write() (`sg_check_file_access()`, drivers/scsi/sg.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opener {
    /// None: a process the daemon cannot see (another pid namespace).
    pub process: Option<ProcessId>,
    /// The FUSE request's uid and gid (the caller's fsuid and fsgid).
    pub uid: u32,
    pub gid: u32,
}

impl Opener {
    pub fn of(caller: &Caller, process: Option<ProcessId>) -> Opener {
        Opener {
            process,
            uid: caller.uid,
            gid: caller.gid,
        }
    }

    /// Whom the data budget charges: the process or, if the daemon cannot see it, the user.
    pub fn holder(&self) -> Holder {
        match self.process {
            Some(p) => Holder::Process(p.tgid),
            None => Holder::User(self.uid),
        }
    }

    /// sg_check_file_access(): a read() or write() by other credentials than the opener's
    /// is refused with EPERM. The kernel compares credential objects, which a fork(), an
    /// exec or any change of ids replaces; the daemon sees processes and ids, so it
    /// refuses any other process (a child that inherited the fd included, as sg does)
    /// and any change of uid or gid, and fails closed for a process it cannot see.
    /// Threads of the opening process pass, as in sg (they share its credentials). What
    /// it cannot see: the same process after an exec that kept its ids (docs/sg-compat.md).
    pub fn check(&self, caller: &Caller, process: Option<ProcessId>) -> Result<(), Errno> {
        match (self.process, process) {
            (Some(a), Some(b)) if a == b && self.same_ids(caller) => Ok(()),
            _ => Err(Errno::EPERM),
        }
    }

    /// The caller's uid and gid are the opener's.
    fn same_ids(&self, caller: &Caller) -> bool {
        self.uid == caller.uid && self.gid == caller.gid
    }
}

pub struct OpenFile {
    pub fh: FileHandle,
    /// The open(2) flags.
    pub flags: u32,
    /// Who opened this file: read() and write() check it; the data budget charges its
    /// `holder()`.
    pub opened_by: Opener,
    pub timeout_user: AtomicI32,
    pub reserved_size: AtomicI32,
    pub cmd_q: AtomicBool,
    pub keep_orphan: AtomicI32,
    pub force_pack_id: AtomicBool,
    pub next_cmd_len: AtomicI32,
    /// Bytes of the data budget this file holds.
    pub held: Arc<AtomicUsize>,
    pub state: Mutex<FileState>,
    /// The layout last seen for a thread: (tid << 1) | compat, 0 for none.
    pub abi_cache: AtomicU64,
    /// The last thread found to be the opener's for read() and write() (tid, start
    /// ticks): its next call costs one /proc read instead of two.
    pub checked_thread: Mutex<Option<(u32, u64)>>,
    /// Where the last SG_IO's CDB was, by calling thread and header address: the next
    /// SG_IO reads its header and (if it is still there) its CDB in one call.
    pub last_cdb: Mutex<Option<(u32, u64, CdbGuess)>>,
    /// Where this file's record is kept for the daemon's successor (none when the node's
    /// files are not kept, the store is full, or the record was dropped). Locked while the
    /// record is written, so that writes keep their order and none lands in a slot that
    /// was given back (and may be another file's by then).
    record: Mutex<Option<FileRecordAt>>,
}

/// A file's place in the store of open-file records, with its node's device number.
pub struct FileRecordAt {
    pub store: Arc<FileStore>,
    pub slot: Slot,
    pub major: u32,
    pub minor: u32,
}

#[derive(Default)]
pub struct FileState {
    pub requests: RequestQueue<Completed>,
    /// FUSE_NOTIFY_POLL to send on the next completion: (kh, waker).
    pub poll: Option<(u64, PollWaker)>,
    /// Blocking read()s waiting for a completion, oldest first.
    pub readers: VecDeque<WaitingRead>,
}

/// The node's blocking read()s, by request (for FUSE_INTERRUPT): each names its file,
/// whose state holds the read itself.
pub type ReadWaits = Parked<FileHandle>;

/// A read() parked until a completion it may reap arrives.
pub struct WaitingRead {
    pub reply: ReadReply,
    pub caller: Caller,
    /// -1, or the pack_id asked for under SG_SET_FORCE_PACK_ID.
    pub pack_id: i32,
    pub count: usize,
    /// Its entry in the node's table of waiting reads.
    pub park: ParkId,
    pub table: Arc<ReadWaits>,
}

impl WaitingRead {
    /// Out of the node's table: it is being answered.
    pub fn unpark(&self) {
        self.table.take(self.park);
    }
}

/// A write() command that ran: what read() returns for it.
pub struct Completed {
    pub abi: Abi,
    /// The header as written: read() returns it with the output fields filled in.
    pub raw_header: [u8; Abi::Native.header_len()],
    pub command: SgCommand,
    pub outcome: Result<Completion, Errno>,
    /// The bytes the device transferred, kept until read() (charged to the budget).
    pub data_in: Vec<u8>,
    pub reservation: Option<Reservation>,
}

impl OpenFile {
    pub fn new(fh: FileHandle, flags: u32, opened_by: Opener, reserved: i32) -> OpenFile {
        OpenFile {
            fh,
            flags,
            opened_by,
            timeout_user: AtomicI32::new(SG_DEFAULT_TIMEOUT_USER),
            reserved_size: AtomicI32::new(reserved),
            cmd_q: AtomicBool::new(false),
            keep_orphan: AtomicI32::new(0),
            force_pack_id: AtomicBool::new(false),
            next_cmd_len: AtomicI32::new(0),
            held: Arc::new(AtomicUsize::new(0)),
            state: Mutex::new(FileState::default()),
            abi_cache: AtomicU64::new(0),
            last_cdb: Mutex::new(None),
            checked_thread: Mutex::new(None),
            record: Mutex::new(None),
        }
    }

    /// Gives the file its record's place (at OPEN, or when a predecessor's file is
    /// restored) and writes the record.
    pub fn keep_record(&self, at: FileRecordAt) {
        let mut r = self.record.lock();
        at.store.write(at.slot, &self.to_record(at.major, at.minor));
        *r = Some(at);
    }

    /// The file is gone for good (RELEASE, or its node removed): its record is cleared
    /// and its slot given back, once.
    pub fn drop_record(&self) {
        if let Some(at) = self.record.lock().take() {
            at.store.release(at.slot);
        }
    }

    /// A file a predecessor opened, as its record describes it.
    pub fn restored(rec: &FileRecord) -> OpenFile {
        let opener = Opener {
            process: rec.opener_process(),
            uid: rec.opener_uid,
            gid: rec.opener_gid,
        };
        let f = OpenFile::new(rec.handle(), rec.flags, opener, rec.reserved_size);
        f.timeout_user.store(rec.timeout_user, Ordering::Relaxed);
        f.cmd_q.store(rec.cmd_q != 0, Ordering::Relaxed);
        f.keep_orphan.store(rec.keep_orphan, Ordering::Relaxed);
        f.force_pack_id
            .store(rec.force_pack_id != 0, Ordering::Relaxed);
        f.next_cmd_len.store(rec.next_cmd_len, Ordering::Relaxed);
        f
    }

    /// The file as its record describes it.
    pub fn to_record(&self, major: u32, minor: u32) -> FileRecord {
        let p = self.opened_by.process;
        FileRecord {
            major,
            minor,
            flags: self.flags,
            fh: self.fh.0,
            opener_tgid: p.map_or(0, |p| p.tgid),
            opener_start_ticks: p.map_or(0, |p| p.start_ticks),
            opener_uid: self.opened_by.uid,
            opener_gid: self.opened_by.gid,
            timeout_user: self.timeout_user.load(Ordering::Relaxed),
            reserved_size: self.reserved_size.load(Ordering::Relaxed),
            keep_orphan: self.keep_orphan.load(Ordering::Relaxed),
            next_cmd_len: self.next_cmd_len.load(Ordering::Relaxed),
            cmd_q: self.cmd_q.load(Ordering::Relaxed).into(),
            force_pack_id: self.force_pack_id.load(Ordering::Relaxed).into(),
            ..Default::default()
        }
    }

    /// Rewrites the file's record after a setting changed.
    pub fn save(&self) {
        if let Some(r) = &*self.record.lock() {
            r.store.write(r.slot, &self.to_record(r.major, r.minor));
        }
    }

    /// sg_new_write() turns command queuing on at the first v3 header: saved only when
    /// that changes it.
    pub fn queue_commands(&self) {
        if !self.cmd_q.load(Ordering::Relaxed) {
            self.cmd_q.store(true, Ordering::Relaxed);
            self.save();
        }
    }

    /// sg_check_file_access() for a read() or write() on this file (see `Opener::check`).
    pub fn check_access(&self, caller: &Caller) -> Result<(), Errno> {
        if !self.opened_by.same_ids(caller) {
            return Err(Errno::EPERM);
        }
        let thread = thread_start_ticks(caller.tid).map(|t| (caller.tid.0, t));
        if thread.is_some() && *self.checked_thread.lock() == thread {
            return Ok(());
        }
        self.opened_by.check(caller, process_of(caller.tid))?;
        *self.checked_thread.lock() = thread;
        Ok(())
    }

    pub fn read_write(&self) -> bool {
        self.flags & libc::O_ACCMODE as u32 == libc::O_RDWR as u32
    }

    pub fn writable(&self) -> bool {
        self.flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32
    }

    /// sg_add_request() for an SG_IO: one of the file's SG_MAX_QUEUE slots (EDOM when
    /// none is left), given back when the slot is dropped.
    /// pack_id and usr_ptr read 0 until the header is read (sg_add_request zeroes the
    /// request).
    pub fn sg_io_slot(self: &Arc<Self>) -> Result<RequestSlot, Errno> {
        let id = self.state.lock().requests.add(0, 0, true, true)?;
        Ok(RequestSlot {
            file: self.clone(),
            id,
        })
    }
}

impl OpenFile {
    /// Completes write() request `id`: the waiting reads that can now reap a completion,
    /// each with the completion it reaps (oldest read first), and the poll wake-up to
    /// send. Answering them is the caller's job, outside the lock.
    #[allow(clippy::type_complexity)]
    pub fn complete(
        &self,
        id: u64,
        duration_ms: u32,
        problem: u8,
        done: Completed,
    ) -> (Vec<(WaitingRead, Completed)>, Option<(u64, PollWaker)>) {
        let mut st = self.state.lock();
        if !st.requests.complete(id, duration_ms, problem, done) {
            return (Vec::new(), None);
        }
        let mut ready = Vec::new();
        let mut i = 0;
        while i < st.readers.len() {
            let pack_id = st.readers[i].pack_id;
            match st.requests.reap(pack_id) {
                Reap::Ready(c) => {
                    let r = st.readers.remove(i).expect("index in range");
                    ready.push((r, c));
                }
                _ => i += 1,
            }
        }
        (ready, st.poll.take())
    }
}

/// A write() request's place in its file's list until its command has been read from the
/// caller; dropped before that (an error, an interrupt), it leaves the list.
pub struct WriteSlot {
    file: Arc<OpenFile>,
    id: Option<u64>,
}

impl WriteSlot {
    pub fn new(file: &Arc<OpenFile>, id: u64) -> WriteSlot {
        WriteSlot {
            file: file.clone(),
            id: Some(id),
        }
    }

    /// The header's pack_id and usr_ptr, once decoded.
    pub fn set_ids(&self, pack_id: i32, usr_ptr: u64) {
        if let Some(id) = self.id {
            self.file
                .state
                .lock()
                .requests
                .set_ids(id, pack_id, usr_ptr);
        }
    }

    /// The request stays: its completion will fill it.
    pub fn keep(mut self) -> u64 {
        self.id.take().expect("kept once")
    }
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.file.state.lock().requests.remove(id);
        }
    }
}

/// An SG_IO's place in its file's request list, for as long as it runs or waits.
pub struct RequestSlot {
    file: Arc<OpenFile>,
    id: u64,
}

impl RequestSlot {
    /// The header's pack_id and usr_ptr, once read (sg reads the header after taking the
    /// slot).
    pub fn set_ids(&self, pack_id: i32, usr_ptr: u64) {
        self.file
            .state
            .lock()
            .requests
            .set_ids(self.id, pack_id, usr_ptr);
    }
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        // A slot is free again: sg's completion wakes the file's pollers (read_wait),
        // whose mask may now say POLLOUT.
        let poll = {
            let mut st = self.file.state.lock();
            st.requests.remove(self.id);
            st.poll.take()
        };
        if let Some((kh, waker)) = poll {
            waker.wake(kh);
        }
    }
}

/// The open files of a node.
#[derive(Default)]
pub struct Files {
    map: Mutex<HashMap<FileHandle, Arc<OpenFile>>>,
}

/// File handles are unique in the daemon, not only in a node: they name whose data a
/// buffer holds, also on path devices that several maps share.
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

impl Files {
    pub fn insert(&self, make: impl FnOnce(FileHandle) -> OpenFile) -> FileHandle {
        let fh = FileHandle(NEXT_HANDLE.fetch_add(1, Ordering::Relaxed));
        self.map.lock().insert(fh, Arc::new(make(fh)));
        fh
    }

    /// A file a predecessor opened, under the handle the kernel knows it by; handles
    /// given from now on are above it.
    pub fn restore(&self, file: OpenFile) {
        NEXT_HANDLE.fetch_max(file.fh.0 + 1, Ordering::Relaxed);
        self.map.lock().insert(file.fh, Arc::new(file));
    }

    pub fn get(&self, fh: FileHandle) -> Option<Arc<OpenFile>> {
        self.map.lock().get(&fh).cloned()
    }

    pub fn remove(&self, fh: FileHandle) -> Option<Arc<OpenFile>> {
        self.map.lock().remove(&fh)
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<OpenFile>> {
        self.map.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuse::{Tid, Unique};

    fn caller(tid: u32, uid: u32, gid: u32) -> Caller {
        Caller {
            tid: Tid(tid),
            uid,
            gid,
            unique: Unique(2),
        }
    }

    fn me() -> u32 {
        nix::unistd::gettid().as_raw() as u32
    }

    #[test]
    fn the_opener_and_its_threads_pass() {
        let c = caller(me(), 1000, 1000);
        let opener = Opener::of(&c, process_of(c.tid));
        let f = OpenFile::new(FileHandle(1), libc::O_RDWR as u32, opener, 4096);
        assert_eq!(f.check_access(&c), Ok(()));
        assert_eq!(f.check_access(&c), Ok(()), "again, from the cache");
        let other_thread = std::thread::spawn(move || {
            let t = caller(me(), 1000, 1000);
            f.check_access(&t)
        })
        .join()
        .unwrap();
        assert_eq!(other_thread, Ok(()));
    }

    #[test]
    fn other_ids_another_process_or_an_unseen_one_are_refused() {
        let c = caller(me(), 1000, 1000);
        let p = process_of(c.tid).unwrap();
        let opener = Opener::of(&c, Some(p));
        let f = OpenFile::new(FileHandle(1), libc::O_RDWR as u32, opener, 4096);
        assert_eq!(f.check_access(&c), Ok(()));
        // Ids changed after the open (setuid, setgid): even from a checked thread.
        assert_eq!(f.check_access(&caller(me(), 0, 1000)), Err(Errno::EPERM));
        assert_eq!(f.check_access(&caller(me(), 1000, 0)), Err(Errno::EPERM));
        // Another process (a forked child), or the same pid started again.
        let child = ProcessId {
            tgid: p.tgid + 1,
            ..p
        };
        assert_eq!(opener.check(&c, Some(child)), Err(Errno::EPERM));
        let reused = ProcessId {
            start_ticks: p.start_ticks + 1,
            ..p
        };
        assert_eq!(opener.check(&c, Some(reused)), Err(Errno::EPERM));
        // A caller the daemon cannot see, or a file opened by one: fail closed.
        assert_eq!(opener.check(&c, None), Err(Errno::EPERM));
        assert_eq!(f.check_access(&caller(0, 1000, 1000)), Err(Errno::EPERM));
        let unseen = Opener::of(&c, None);
        assert_eq!(unseen.check(&c, Some(p)), Err(Errno::EPERM));
        assert_eq!(unseen.holder(), Holder::User(1000));
        assert_eq!(opener.holder(), Holder::Process(p.tgid));
    }
}
