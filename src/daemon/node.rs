//! One /dev/mpath-sg/<map> node: the CUSE handler that gives each request to its front
//! end (the ioctl table, the asynchronous interface), all of them over one command
//! pipeline and the map's failover engine.

use super::async_io;
use super::buffer::WorkerLocal;
use super::files::{FileRecordAt, OpenFile, Opener};
use super::handover::{self, HandedResult};
use super::ioctl;
use super::map::MapState;
use super::persist::{FileRecord, FileStore, Slot};
use super::pipeline;
use crate::caller::process_of;
use crate::cuse::abi::{IoctlIn, PollIn, ReadWriteIn};
use crate::cuse::request::encode_read;
use crate::cuse::{
    Caller, CuseHandler, FileHandle, IoctlReply, OpenReply, OrphanReply, PollReply, PollWaker,
    ReadReply, ReleaseReply, Unique, Worker, WriteReply,
};
use crate::errno::Errno;
use crate::sg::abi::SG_DEF_RESERVED_SIZE;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct MapNode {
    pub map: Arc<MapState>,
    /// Where the node's open files are kept for the daemon's successor.
    records: Option<NodeRecords>,
    /// Set when the node was taken over from a predecessor that died, on a kernel that
    /// could not resend what it had read: an INTERRUPT naming a request this daemon never
    /// read is for one of those, and ends it (EINTR).
    orphans_possible: std::sync::atomic::AtomicBool,
}

/// The store of open-file records and this node's device number in it.
pub struct NodeRecords {
    pub store: Arc<FileStore>,
    pub major: u32,
    pub minor: u32,
}

impl NodeRecords {
    /// A file's place: `slot` of this node's store.
    fn at(&self, slot: Slot) -> FileRecordAt {
        FileRecordAt {
            store: self.store.clone(),
            slot,
            major: self.major,
            minor: self.minor,
        }
    }
}

/// What a node leaves its successor besides its open files: the requests it read and
/// did not answer (blocking read()s with nothing to reap), as request bytes, and the
/// results of write() commands nobody had read (`handover::encode`).
#[derive(Default)]
pub struct NodeHandover {
    pub requests: Vec<Vec<u8>>,
    pub results: Vec<Vec<u8>>,
}

impl MapNode {
    pub fn new(map: Arc<MapState>, records: Option<NodeRecords>) -> MapNode {
        MapNode {
            map,
            records,
            orphans_possible: false.into(),
        }
    }

    /// Takes over the files a predecessor left open on this node.
    pub fn restore_files(&self, records: &[(Slot, FileRecord)]) {
        for (slot, rec) in records {
            let f = OpenFile::restored(rec);
            if let Some(r) = &self.records {
                f.keep_record(r.at(*slot));
            }
            self.map.files.restore(f);
        }
    }

    /// Takes over the write() results a predecessor handed over (before any request is
    /// read: a handed-over read() may be waiting for one of them).
    pub fn restore_results(&self, results: &[Vec<u8>]) {
        for bytes in results {
            let Some(r) = handover::decode(bytes) else {
                tracing::error!(map = %self.map.engine.map(), "a handed-over write() result is unreadable: dropped");
                continue;
            };
            let Some(file) = self.map.files.get(r.fh) else {
                continue;
            };
            // Not charged to the data budget: bounded by what the predecessor held.
            let HandedResult {
                pack_id,
                usr_ptr,
                duration_ms,
                problem,
                done,
                ..
            } = r;
            let pushed =
                file.state
                    .lock()
                    .requests
                    .push_done(pack_id, usr_ptr, duration_ms, problem, done);
            if pushed.is_err() {
                tracing::error!(map = %self.map.engine.map(), "a handed-over write() result finds its file's list full: dropped");
            }
        }
    }

    /// Whether the node was taken over from a predecessor that died holding requests the
    /// kernel could not resend (see `interrupt`): set before its threads start, cleared
    /// once the kernel took FUSE_NOTIFY_RESEND.
    pub fn expect_orphans(&self, yes: bool) {
        self.orphans_possible.store(yes, Ordering::Relaxed);
    }

    /// Whether commands run or wait for a path on this node, or write() commands are
    /// still running: the daemon waits for them before handing the node over.
    pub fn busy(&self) -> bool {
        !self.map.work.is_empty()
            || self
                .map
                .files
                .all()
                .iter()
                .any(|f| f.state.lock().requests.active() > 0)
    }

    /// The daemon hands the node to its successor (its threads no longer read): waiting
    /// read()s are left unanswered and described for the successor, pollers are woken so
    /// that they ask the successor again, and the files' records stay.
    pub fn hand_over(&self) -> NodeHandover {
        let mut out = NodeHandover::default();
        for f in self.map.files.all() {
            let (readers, poll, done) = {
                let mut st = f.state.lock();
                let done = st.requests.take_done();
                (std::mem::take(&mut st.readers), st.poll.take(), done)
            };
            for (pack_id, usr_ptr, duration_ms, problem, done) in done {
                out.results.push(handover::encode(&HandedResult {
                    fh: f.fh,
                    pack_id,
                    usr_ptr,
                    duration_ms,
                    problem,
                    done,
                }));
            }
            for r in readers {
                r.unpark();
                let count = r.count as u32;
                let caller = r.caller;
                r.reply.hand_over();
                // A parked read is a blocking one, whatever the open flags say now.
                let flags = f.flags & !(libc::O_NONBLOCK as u32);
                out.requests.push(encode_read(&caller, f.fh, count, flags));
            }
            if let Some((kh, waker)) = poll {
                waker.wake(kh);
            }
        }
        out
    }

    /// Files open on the node now.
    pub fn open_files(&self) -> usize {
        self.map.files.len()
    }

    /// The map changed in device-mapper: commands waiting for a path try again now.
    pub fn map_changed(&self) {
        pipeline::resume_all(&self.map);
    }

    /// The map is going away (or the daemon stops): waiting reads end with ENODEV,
    /// pollers see POLLHUP, write() and SG_IO get ENODEV, commands waiting for a path run
    /// once more (the engine, closed first, ends them with DID_TRANSPORT_DISRUPTED), and
    /// commands on a path finish.
    pub fn detach(&self) {
        self.map.set_detaching();
        for f in self.map.files.all() {
            async_io::detach_file(&f);
            f.drop_record();
        }
        pipeline::resume_all(&self.map);
    }
}

impl CuseHandler for MapNode {
    type Local = WorkerLocal;

    fn open(&self, caller: &Caller, flags: u32, reply: OpenReply) {
        let reserved = SG_DEF_RESERVED_SIZE.min(self.map.max_transfer() as i32);
        // read() and write() check it; the data budget is shared per opener process
        // (per user for a process the daemon cannot see).
        let opener = Opener::of(caller, process_of(caller.tid));
        // The record is written before OPEN is answered: the kernel never holds a handle
        // a successor could not find.
        let fh = self.map.files.insert(|fh| {
            let f = OpenFile::new(fh, flags, opener, reserved);
            if let Some(r) = &self.records {
                match r.store.claim() {
                    Some(slot) => f.keep_record(r.at(slot)),
                    None => tracing::warn!(map = %self.map.engine.map(),
                        "no room for an open file's record: this file will not outlive a restart"),
                }
            }
            f
        });
        reply.opened(fh);
    }

    fn release(&self, fh: FileHandle, reply: ReleaseReply) {
        // Unread completions go with the file; commands in flight finish on their path
        // and are dropped then (sg orphans them the same way).
        if let Some(f) = self.map.files.remove(fh) {
            f.drop_record();
        }
        reply.done();
    }

    fn read(
        &self,
        caller: &Caller,
        arg: &ReadWriteIn,
        reply: ReadReply,
        worker: &mut Worker<'_, Self>,
    ) {
        // The kernel splits a read() larger than one request (128 KiB, 32 pages) into
        // several, the later ones at offset > 0. sg answers one read() with one
        // completion: the first piece got it, the rest end the read() here.
        if arg.offset != 0 {
            return reply.data(&[]);
        }
        match self.map.files.get(FileHandle(arg.fh)) {
            Some(file) => async_io::read(&self.map, caller, file, arg, reply, worker),
            None => reply.error(Errno::ENXIO),
        }
    }

    fn write(
        &self,
        caller: &Caller,
        arg: &ReadWriteIn,
        data: &[u8],
        reply: WriteReply,
        worker: &mut Worker<'_, Self>,
    ) {
        // The rest of a write() larger than one request (see `read`): sg reads the header
        // only and takes the whole count.
        if arg.offset != 0 {
            return reply.written(arg.size);
        }
        match self.map.files.get(FileHandle(arg.fh)) {
            Some(file) => async_io::write(&self.map, caller, file, data, reply, worker),
            None => reply.error(Errno::ENXIO),
        }
    }

    fn ioctl(
        &self,
        caller: &Caller,
        arg: &IoctlIn,
        data: &[u8],
        reply: IoctlReply,
        worker: &mut Worker<'_, Self>,
    ) {
        match self.map.files.get(FileHandle(arg.fh)) {
            Some(file) => ioctl::ioctl(&self.map, caller, file, arg, data, reply, worker),
            None => reply.error(Errno::ENXIO),
        }
    }

    fn poll(&self, _: &Caller, arg: &PollIn, waker: &PollWaker, reply: PollReply) {
        match self.map.files.get(FileHandle(arg.fh)) {
            Some(file) => async_io::poll(&self.map, &file, arg, waker, reply),
            // sg_poll() answers POLLERR for a file it does not know.
            None => reply.revents(libc::POLLERR as u32),
        }
    }

    fn interrupt(&self, unique: Unique, orphan: Option<OrphanReply>) {
        // A request a dead predecessor read: nobody else will ever answer it, and its
        // caller cannot leave before it is answered (not even for SIGKILL).
        if let (Some(orphan), true) = (orphan, self.orphans_possible.load(Ordering::Relaxed)) {
            tracing::info!(map = %self.map.engine.map(), %unique,
                "a request the daemon's predecessor had read was interrupted: EINTR");
            return orphan.error(Errno::EINTR);
        }
        if let Some(work) = self.map.work.interrupt(unique) {
            return work.interrupted();
        }
        if let Some(fh) = self.map.reads.interrupt(unique) {
            if let Some(file) = self.map.files.get(fh) {
                async_io::interrupt_read(&file, unique);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::cuse::testing::my_tid;
    use crate::errno::Errno;
    use crate::sg::abi::*;
    use crate::sg::header::{Completion, SenseBytes};
    use std::time::{Duration, Instant};
    use zerocopy::{FromBytes, IntoBytes};

    const SG_IO: u32 = 0x2285;
    const RDWR: i32 = libc::O_RDWR;

    fn sg_io(l: &mut Lab, fh: u64, c: &Cmd) -> u64 {
        l.k.ioctl(my_tid(), fh, SG_IO, c.arg(), &[], 0, 0)
    }

    /// The header as the daemon left it (it wrote through process_vm_writev).
    fn out(c: &mut Cmd) -> SgIoOutput {
        std::hint::black_box(&mut *c);
        c.hdr.out
    }

    fn check_condition(sense_key: u8) -> Result<Completion, Errno> {
        Ok(Completion {
            status: 2,
            sense: SenseBytes::from_slice(&[
                0x70, 0, sense_key, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0,
            ]),
            ..Default::default()
        })
    }

    #[test]
    fn a_successor_finds_each_open_file_with_its_settings_and_opener() {
        use crate::daemon::files::OpenFile;
        use crate::daemon::persist::FileStore;
        let store = FileStore::create().unwrap();
        let mut l = lab(LabOptions {
            records: Some(store.clone()),
            ..Default::default()
        });
        let fh = l.k.open(my_tid(), RDWR);
        let u = l.k.ioctl(
            my_tid(),
            fh,
            crate::sg::abi::ioctl::SG_SET_TIMEOUT,
            0,
            &1234i32.to_ne_bytes(),
            4,
            0,
        );
        assert_eq!(l.k.reply(u).ioctl_result(), 0);
        let gone = l.k.open(my_tid(), libc::O_RDONLY);
        let u = l.k.release(gone);
        assert_eq!(l.k.reply(u).error, 0);
        let fd = store.fd().try_clone_to_owned().unwrap();
        let (_, records) = FileStore::adopt(fd).unwrap();
        assert_eq!(records.len(), 1, "the released file's record is gone");
        let (rec, f) = (records[0].1, OpenFile::restored(&records[0].1));
        assert_eq!((rec.major, rec.minor), (240, 0));
        assert_eq!(f.fh.0, fh);
        assert!(f.read_write());
        assert_eq!(
            f.timeout_user.load(std::sync::atomic::Ordering::Relaxed),
            1234
        );
        let me = crate::caller::process_of(crate::cuse::Tid(my_tid()));
        assert!(me.is_some());
        assert_eq!(f.opened_by.process, me, "the opener is the test process");
    }

    #[test]
    fn a_waiting_read_is_handed_over_unanswered_as_its_request() {
        use crate::cuse::request::{Operation, Request};
        let mut l = lab(LabOptions::default());
        let fh = l.k.open(my_tid(), RDWR);
        let u = l.k.read(my_tid(), fh, 88, 0);
        let t = Instant::now();
        while l.map.reads.is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the read never parked"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let h = l.node.hand_over();
        assert_eq!(h.requests.len(), 1);
        let req = Request::parse(&h.requests[0]).unwrap();
        assert_eq!(req.header.unique, u);
        assert_eq!(req.header.pid, my_tid());
        match req.op {
            Operation::Read(a) => assert_eq!((a.fh, a.size, a.offset), (fh, 88, 0)),
            _ => panic!("not a READ"),
        }
        assert!(
            !l.k.answered_within(u, Duration::from_millis(300)),
            "a handed-over read is left to the successor"
        );
        assert!(l.map.reads.is_empty());
    }

    #[test]
    fn after_a_crash_an_interrupt_for_a_request_the_dead_daemon_read_ends_it() {
        let mut l = lab(LabOptions::default());
        // A request "the predecessor read": its id is below any this daemon reads.
        let theirs = l.k.skip_unique();
        l.node.expect_orphans(true);
        let fh = l.k.open(my_tid(), RDWR);
        l.k.interrupt(theirs);
        let r =
            l.k.reply_within(theirs, Duration::from_secs(5))
                .expect("answered");
        assert_eq!(r.error, -libc::EINTR);
        // One for a request of this daemon's that it does not hold: not answered.
        let u = l.k.read(my_tid(), fh, 88, libc::O_NONBLOCK);
        assert_eq!(l.k.reply(u).error, -libc::EAGAIN);
        l.k.interrupt(u);
        assert!(!l.k.answered_within(u, Duration::from_millis(300)));
        // Without a dead predecessor (a clean hand-over, or a resend), nothing is an orphan.
        let mut l = lab(LabOptions::default());
        let theirs = l.k.skip_unique();
        l.k.open(my_tid(), RDWR);
        l.k.interrupt(theirs);
        assert!(!l.k.answered_within(theirs, Duration::from_millis(300)));
    }

    #[test]
    fn sg_io_in_one_round_runs_and_writes_results_back() {
        let mut l = lab(LabOptions::default());
        l.rig.behave_io(16, |c| {
            c.data.as_deref_mut().unwrap()[..4].copy_from_slice(b"data");
            Ok(Completion {
                resid: 512,
                ..Default::default()
            })
        });
        let fh = l.k.open(my_tid(), RDWR);
        let mut c = Cmd::read(1024);
        let u = sg_io(&mut l, fh, &c);
        assert_eq!(l.k.reply(u).ioctl_result(), 0);
        let o = out(&mut c);
        assert_eq!((o.status, o.resid, o.info), (0, 512, 0));
        assert_eq!(&c.data[..4], b"data");
        assert!(
            c.data[512..].iter().all(|&b| b == 0xEE),
            "past the transferred bytes untouched"
        );

        l.rig.behave(16, |_| check_condition(5));
        let mut c = Cmd::tur();
        let u = sg_io(&mut l, fh, &c);
        assert_eq!(l.k.reply(u).ioctl_result(), 0);
        let o = out(&mut c);
        assert_eq!(
            (o.status, o.masked_status, o.sb_len_wr, o.driver_status),
            (2, 1, 18, 8)
        );
        assert_eq!(&c.sense[..3], &[0x70, 0, 5]);
        assert_eq!(c.sense[18], 0xAA, "nothing past sb_len_wr");
    }

    #[test]
    fn sg_io_in_retry_rounds() {
        let mut l = lab(LabOptions {
            single_round: false,
            ..Default::default()
        });
        let fh = l.k.open(my_tid(), RDWR);
        let c = Cmd::tur();
        // Round 1: the header; round 2: header and CDB; round 3: the whole plan.
        let u = l.k.ioctl(my_tid(), fh, SG_IO, c.arg(), &[], 0, 0);
        let r = l.k.reply(u);
        assert_eq!(r.ioctl_flags(), crate::cuse::abi::ioctl_flags::RETRY);
        let u =
            l.k.ioctl(my_tid(), fh, SG_IO, c.arg(), c.hdr.as_bytes(), 0, 0);
        assert_eq!(
            l.k.reply(u).ioctl_flags(),
            crate::cuse::abi::ioctl_flags::RETRY
        );
        let mut data = c.hdr.as_bytes().to_vec();
        data.extend_from_slice(&c.cdb[..6]);
        let u = l.k.ioctl(my_tid(), fh, SG_IO, c.arg(), &data, 0, 0);
        assert_eq!(
            l.k.reply(u).ioctl_flags(),
            crate::cuse::abi::ioctl_flags::RETRY
        );
        data.extend_from_slice(&c.sense[..]);
        let u = l.k.ioctl(my_tid(), fh, SG_IO, c.arg(), &data, 20 + 64, 0);
        let r = l.k.reply(u);
        assert_eq!(r.ioctl_result(), 0);
        let o = SgIoOutput::read_from_bytes(&r.ioctl_data()[..20]).unwrap();
        assert_eq!((o.status, o.host_status), (0, 0));
        assert_eq!(
            &r.ioctl_data()[20..],
            &c.sense[..],
            "the caller's sense bytes, unchanged"
        );
    }

    fn write(l: &mut Lab, fh: u64, c: &Cmd) -> crate::cuse::testing::Reply {
        let u = l.k.write(my_tid(), fh, c.hdr.as_bytes());
        l.k.reply(u)
    }

    fn read_header(l: &mut Lab, fh: u64, flags: i32) -> Result<SgIoHdr64, i32> {
        let u = l.k.read(my_tid(), fh, 88, flags);
        let r = l.k.reply(u);
        if r.error != 0 {
            return Err(r.error);
        }
        assert_eq!(r.body.len(), 88);
        Ok(SgIoHdr64::read_from_bytes(&r.body).unwrap())
    }

    #[test]
    fn write_then_read_returns_the_header_with_results_and_sense() {
        let mut l = lab(LabOptions::default());
        l.rig.behave(16, |_| check_condition(6));
        let fh = l.k.open(my_tid(), RDWR);
        let mut c = Cmd::tur();
        c.hdr.pack_id = 42;
        assert_eq!(write(&mut l, fh, &c).error, 0);
        let got = read_header(&mut l, fh, 0).unwrap();
        assert_eq!(
            (got.pack_id, got.usr_ptr),
            (42, 0xfeed),
            "the header as written"
        );
        assert_eq!((got.out.status, got.out.masked_status), (2, 1));
        assert_eq!(got.out.sb_len_wr, 18);
        assert_eq!(got.out.info & SG_INFO_CHECK, SG_INFO_CHECK);
        std::hint::black_box(&mut c);
        assert_eq!(&c.sense[..3], &[0x70, 0, 6], "sense written to sbp");
        assert_eq!(
            read_header(&mut l, fh, libc::O_NONBLOCK).err(),
            Some(-libc::EAGAIN),
            "reaped once"
        );
    }

    #[test]
    fn sixteen_outstanding_then_edom_and_malformed_writes() {
        let mut l = lab(LabOptions::default());
        let fh = l.k.open(my_tid(), RDWR);
        let c = Cmd::tur();
        for _ in 0..16 {
            assert_eq!(write(&mut l, fh, &c).error, 0);
        }
        assert_eq!(write(&mut l, fh, &c).error, -libc::EDOM);
        // An SG_IO needs a slot too.
        let u = sg_io(&mut l, fh, &c);
        assert_eq!(l.k.reply(u).ioctl_result(), -libc::EDOM);
        for _ in 0..16 {
            read_header(&mut l, fh, 0).unwrap();
        }
        let short = l.k.write(my_tid(), fh, &c.hdr.as_bytes()[..20]);
        assert_eq!(l.k.reply(short).error, -libc::EIO);
        let v3_short = l.k.write(my_tid(), fh, &c.hdr.as_bytes()[..64]);
        assert_eq!(l.k.reply(v3_short).error, -libc::EINVAL);
        let mut bad = Cmd::tur();
        bad.hdr.cmd_len = 5;
        assert_eq!(write(&mut l, fh, &bad).error, -libc::EMSGSIZE);
        let mut bad = Cmd::tur();
        bad.hdr.cmdp = 8; // unmapped
        assert_eq!(write(&mut l, fh, &bad).error, -libc::EFAULT);
        // None of them left a request behind.
        assert_eq!(
            read_header(&mut l, fh, libc::O_NONBLOCK).err(),
            Some(-libc::EAGAIN)
        );
    }

    #[test]
    fn blocked_reads_hold_no_thread_and_end_on_interrupt_or_detach() {
        let mut l = lab(LabOptions {
            min: 1,
            max: 2,
            ..Default::default()
        });
        let ro = l.k.open(my_tid(), libc::O_RDONLY);
        let reads: Vec<u64> = (0..64).map(|_| l.k.read(my_tid(), ro, 88, 0)).collect();
        assert!(!l.k.answered_within(reads[0], Duration::from_millis(100)));
        // Another file's SG_IO is served at once.
        let other = l.k.open(my_tid(), RDWR);
        let c = Cmd::tur();
        let start = Instant::now();
        let u = sg_io(&mut l, other, &c);
        assert_eq!(l.k.reply(u).ioctl_result(), 0);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        let (total, _, _) = l.k.device.as_ref().unwrap().threads();
        assert!(total <= 2, "{total} threads for 64 waiting reads");
        // An interrupt ends one read; one sent before its read waits is not lost.
        l.k.interrupt(reads[0]);
        assert_eq!(l.k.reply(reads[0]).error, -libc::EINTR);
        // The node goes away: every other read ends with ENODEV.
        l.node.detach();
        for r in &reads[1..] {
            assert_eq!(l.k.reply(*r).error, -libc::ENODEV);
        }
        assert!(l.map.reads.is_empty(), "nothing left parked");
    }

    #[test]
    fn an_interrupt_that_comes_before_the_read_waits() {
        let mut l = lab(LabOptions::default());
        let fh = l.k.open(my_tid(), RDWR);
        // The kernel interrupts request 1000 before the daemon has parked it.
        l.k.interrupt(1000);
        std::thread::sleep(Duration::from_millis(50));
        let arg = crate::cuse::abi::ReadWriteIn {
            fh,
            offset: 0,
            size: 88,
            op_flags: 0,
            lock_owner: 0,
            flags: 0,
            padding: 0,
        };
        l.k.send_as(
            1000,
            crate::cuse::abi::opcode::READ,
            my_tid(),
            arg.as_bytes(),
        );
        assert_eq!(l.k.reply(1000).error, -libc::EINTR);
    }

    #[test]
    fn a_command_waiting_for_a_path_holds_no_thread_and_ends_on_interrupt() {
        let mut l = lab(LabOptions {
            queue: true,
            min: 1,
            max: 2,
            ..Default::default()
        });
        l.rig.behave(16, |_| Err(Errno::ENXIO));
        let fh = l.k.open(my_tid(), RDWR);
        let mut waiting = Vec::new();
        let cmds: Vec<Box<Cmd>> = (0..16)
            .map(|_| {
                let mut c = Cmd::tur();
                c.hdr.timeout = 60_000;
                c.hdr.out.host_status = 0xffff; // overwritten by the answer
                c
            })
            .collect();
        let fhs: Vec<u64> = (0..16).map(|_| l.k.open(my_tid(), RDWR)).collect();
        for (c, f) in cmds.iter().zip(&fhs) {
            waiting.push(sg_io(&mut l, *f, c));
        }
        assert!(!l.k.answered_within(waiting[0], Duration::from_millis(200)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while l.map.work.len() < 16 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(l.map.work.len(), 16, "all parked");
        // Other requests are answered meanwhile.
        let u =
            l.k.ioctl(my_tid(), fh, SG_GET_VERSION_NUM_CMD, 0, &[], 4, 0);
        assert_eq!(l.k.reply(u).ioctl_result(), 0);
        // A signal ends a waiting caller at once.
        let start = Instant::now();
        l.k.interrupt(waiting[0]);
        assert_eq!(l.k.reply(waiting[0]).ioctl_result(), -libc::EINTR);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not at its 60 s timeout"
        );
        // The path comes back: the others complete, well before their timeout.
        l.rig.behave(16, crate::failover::testing::good);
        l.rig.dm.set(16, true);
        l.node.map_changed();
        for u in &waiting[1..] {
            assert_eq!(l.k.reply(*u).ioctl_result(), 0);
        }
        for c in cmds[1..].iter() {
            std::hint::black_box(c);
            assert_eq!(c.hdr.out.host_status, 0, "the answer's output fields");
        }
        std::hint::black_box(&cmds[0]);
        assert_eq!(
            cmds[0].hdr.out.host_status, 0xffff,
            "the interrupted one got none"
        );
        assert!(l.map.work.is_empty());
    }

    const SG_GET_VERSION_NUM_CMD: u32 = 0x2282;

    #[test]
    fn a_panic_on_a_path_answers_eio_and_the_node_goes_on() {
        let mut l = lab(LabOptions::default());
        let fh = l.k.open(my_tid(), RDWR);
        l.rig.behave(16, |_| panic!("a bug on the path"));
        let c = Cmd::tur();
        let u = sg_io(&mut l, fh, &c);
        assert_eq!(l.k.reply(u).error, -libc::EIO);
        l.rig.behave(16, crate::failover::testing::good);
        let u = sg_io(&mut l, fh, &c);
        assert_eq!(l.k.reply(u).ioctl_result(), 0);
        // The request slot of the panicked command was given back.
        for _ in 0..16 {
            assert_eq!(write(&mut l, fh, &c).error, 0);
        }
    }

    #[test]
    fn the_data_budget_bounds_unread_results() {
        let mut l = lab(LabOptions {
            budget: 4 << 20,
            ..Default::default()
        });
        let a = l.k.open(my_tid(), RDWR);
        let b = l.k.open(my_tid(), RDWR);
        let c = Cmd::read(512 << 10);
        // A file may hold a quarter (1 MiB): two 512 KiB results, then ENOMEM.
        assert_eq!(write(&mut l, a, &c).error, 0);
        assert_eq!(write(&mut l, a, &c).error, 0);
        assert_eq!(write(&mut l, a, &c).error, -libc::ENOMEM);
        // A process half (2 MiB).
        assert_eq!(write(&mut l, b, &c).error, 0);
        assert_eq!(write(&mut l, b, &c).error, 0);
        let third = l.k.open(my_tid(), RDWR);
        assert_eq!(write(&mut l, third, &c).error, -libc::ENOMEM);
        assert_eq!(l.map.budget.used(), 2 << 20);
        // SG_IO needs none of it.
        let big = Cmd::read(512 << 10);
        let u = sg_io(&mut l, third, &big);
        assert_eq!(l.k.reply(u).ioctl_result(), 0);
        // Reading a result gives its bytes back; closing a file gives back the rest.
        read_header(&mut l, a, 0).unwrap();
        assert_eq!(l.map.budget.used(), (3 << 20) / 2);
        let r = l.k.release(b);
        assert_eq!(l.k.reply(r).error, 0);
        // (A command still finishing on its path holds the file until it completes.)
        let deadline = Instant::now() + Duration::from_secs(5);
        while l.map.budget.used() != 512 << 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(l.map.budget.used(), 512 << 10);
    }

    #[test]
    fn data_out_of_written_commands_is_charged_while_they_can_hold_it() {
        let mut l = lab(LabOptions {
            queue: true,
            budget: 4 << 20,
            ..Default::default()
        });
        l.rig.behave(16, |_| Err(Errno::ENXIO));
        let fh = l.k.open(my_tid(), RDWR);
        let mut c = Cmd::new(
            &[0x2a, 0, 0, 0, 0, 0, 0, 0x08, 0, 0],
            SG_DXFER_TO_DEV,
            1 << 20,
        );
        c.hdr.timeout = 60_000;
        // A file holds a quarter (1 MiB): one 1 MiB WRITE waits for a path, the next
        // is refused as sg refuses what it cannot allocate.
        assert_eq!(write(&mut l, fh, &c).error, 0);
        assert_eq!(write(&mut l, fh, &c).error, -libc::ENOMEM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while l.map.work.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(l.map.work.len(), 1, "the WRITE waits for a path");
        assert_eq!(l.map.budget.used(), 1 << 20, "with its data-out charged");
        // The path comes back: the command runs, its data-out is given back at once
        // (before its completion is read).
        l.rig.behave(16, crate::failover::testing::good);
        l.rig.dm.set(16, true);
        l.node.map_changed();
        while l.map.budget.used() != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(l.map.budget.used(), 0);
        let got = read_header(&mut l, fh, 0).unwrap();
        assert_eq!((got.out.status, got.out.host_status), (0, 0));
    }

    #[test]
    fn poll_reports_and_wakes_on_completion() {
        let mut l = lab(LabOptions::default());
        let fh = l.k.open(my_tid(), RDWR);
        let u = l.k.poll(my_tid(), fh, 0x55);
        let outm = crate::sg::queue::POLLOUT | crate::sg::queue::POLLWRNORM;
        assert_eq!(l.k.reply(u).body[..4], outm.to_ne_bytes());
        assert_eq!(write(&mut l, fh, &Cmd::tur()).error, 0);
        // write() is answered before its command runs: the completion wakes the poller.
        let deadline = Instant::now() + Duration::from_secs(5);
        while l.k.wakeups.is_empty() && Instant::now() < deadline {
            let _ = l.k.answered_within(0, Duration::from_millis(20));
        }
        let u = l.k.poll(my_tid(), fh, 0x55);
        let inm = crate::sg::queue::POLLIN | crate::sg::queue::POLLRDNORM;
        assert_eq!(l.k.reply(u).body[..4], (inm | outm).to_ne_bytes());
        assert_eq!(
            l.k.wakeups,
            vec![0x55],
            "a FUSE_NOTIFY_POLL for the kh polled"
        );
        // That poll found POLLIN ready, yet it re-armed: an edge-triggered epoll sleeps
        // until the next completion and must hear of it.
        assert_eq!(write(&mut l, fh, &Cmd::tur()).error, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while l.k.wakeups.len() < 2 && Instant::now() < deadline {
            let _ = l.k.answered_within(0, Duration::from_millis(20));
        }
        assert_eq!(
            l.k.wakeups,
            vec![0x55, 0x55],
            "woken again by the next completion"
        );
    }
}
