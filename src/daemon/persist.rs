//! What a node's open files need to outlive the daemon: one fixed-size record per open
//! file in a memfd kept in the service manager's fd store (`fdstore`). The kernel knows
//! each open file only by the handle the daemon gave at OPEN; the successor must find,
//! for that handle, what sg keeps in the file: the open mode, who opened it (read() and
//! write() check it) and the settings ioctls changed.
//!
//! A record is written with one pwrite of 64 bytes at OPEN (before OPEN is answered, so
//! the kernel never holds a handle without its record), after each setting changes, and
//! zeroed at RELEASE. A process killed between two system calls leaves every record
//! whole; a record whose RELEASE was lost to a crash names a file no request will name
//! again, and goes with its node.

use crate::caller::ProcessId;
use crate::cuse::FileHandle;
use parking_lot::Mutex;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Marks a record in use (and the layout's version).
const RECORD_MAGIC: u32 = 0x6d70_7331; // "mps1"
const RECORD_LEN: u64 = 64;
/// Records beyond this many are not kept (a caller opening files without end): such a
/// file works until the daemon restarts, and then its requests get ENXIO (an unknown
/// file).
pub const MAX_RECORDS: u32 = 1 << 20;

/// One open file, as stored.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FileRecord {
    pub magic: u32,
    pub major: u32,
    pub minor: u32,
    /// The open(2) flags.
    pub flags: u32,
    pub fh: u64,
    /// The opener's process (0: one the daemon could not see), uid and gid.
    pub opener_tgid: u32,
    pub opener_uid: u32,
    pub opener_gid: u32,
    pub timeout_user: i32,
    pub opener_start_ticks: u64,
    pub reserved_size: i32,
    pub keep_orphan: i32,
    pub next_cmd_len: i32,
    pub cmd_q: u8,
    pub force_pack_id: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(size_of::<FileRecord>() as u64 == RECORD_LEN);

impl FileRecord {
    pub fn opener_process(&self) -> Option<ProcessId> {
        (self.opener_tgid != 0).then_some(ProcessId {
            tgid: self.opener_tgid,
            start_ticks: self.opener_start_ticks,
        })
    }

    pub fn handle(&self) -> FileHandle {
        FileHandle(self.fh)
    }
}

/// A predecessor's records in use, by slot.
pub type Records = Vec<(Slot, FileRecord)>;

/// The records' memfd and which of its slots are free.
pub struct FileStore {
    fd: OwnedFd,
    slots: Mutex<Slots>,
}

#[derive(Default)]
struct Slots {
    /// Slots the file has room for.
    len: u32,
    /// Slots handed out so far (all below are in use or in `free`).
    used: u32,
    free: Vec<u32>,
}

/// A file's slot: where its record is rewritten. Not freed on drop: a daemon that exits
/// for a restart leaves its records for the successor; `release` frees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(u32);

impl FileStore {
    /// A new, empty store.
    pub fn create() -> io::Result<Arc<FileStore>> {
        let fd = nix::sys::memfd::memfd_create(
            c"mpath-sg-files",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        Ok(Arc::new(FileStore {
            fd,
            slots: Mutex::new(Slots::default()),
        }))
    }

    /// Takes over the store a predecessor left: its records in use, by slot.
    pub fn adopt(fd: OwnedFd) -> io::Result<(Arc<FileStore>, Records)> {
        let len = nix::sys::stat::fstat(fd.as_fd())
            .map_err(io::Error::from)?
            .st_size as u64;
        let count = (len / RECORD_LEN).min(u64::from(MAX_RECORDS)) as u32;
        let mut bytes = vec![0u8; (u64::from(count) * RECORD_LEN) as usize];
        let mut done = 0;
        while done < bytes.len() {
            let n = nix::sys::uio::pread(fd.as_fd(), &mut bytes[done..], done as i64)
                .map_err(io::Error::from)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        let mut records = Vec::new();
        let mut free = Vec::new();
        for i in 0..count {
            let at = (u64::from(i) * RECORD_LEN) as usize;
            let rec = FileRecord::read_from_bytes(&bytes[at..at + RECORD_LEN as usize])
                .expect("64 bytes");
            if rec.magic == RECORD_MAGIC {
                records.push((Slot(i), rec));
            } else {
                free.push(i);
            }
        }
        // Lowest slots first.
        free.reverse();
        let store = FileStore {
            fd,
            slots: Mutex::new(Slots {
                len: count,
                used: count,
                free,
            }),
        };
        Ok((Arc::new(store), records))
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A slot for a new record; None when the store is full or cannot grow.
    pub fn claim(&self) -> Option<Slot> {
        let mut s = self.slots.lock();
        if let Some(i) = s.free.pop() {
            return Some(Slot(i));
        }
        if s.used >= MAX_RECORDS {
            return None;
        }
        if s.used >= s.len {
            // Grow by a page's worth at least, doubling.
            let want = (s.len * 2).clamp(64, MAX_RECORDS);
            if let Err(e) = nix::unistd::ftruncate(&self.fd, i64::from(want) * RECORD_LEN as i64) {
                tracing::warn!("the open-file records cannot grow: {e}");
                return None;
            }
            s.len = want;
        }
        s.used += 1;
        Some(Slot(s.used - 1))
    }

    /// Writes `rec` (marked in use) to `slot`.
    pub fn write(&self, slot: Slot, rec: &FileRecord) {
        let rec = FileRecord {
            magic: RECORD_MAGIC,
            ..*rec
        };
        self.put(slot, rec.as_bytes());
    }

    /// The file was released: its record is cleared and the slot reused.
    pub fn release(&self, slot: Slot) {
        self.put(slot, &[0u8; RECORD_LEN as usize]);
        self.slots.lock().free.push(slot.0);
    }

    fn put(&self, slot: Slot, bytes: &[u8]) {
        let at = i64::from(slot.0) * RECORD_LEN as i64;
        match nix::sys::uio::pwrite(self.fd.as_fd(), bytes, at) {
            Ok(n) if n == bytes.len() => {}
            Ok(n) => tracing::warn!("open-file record {}: short write ({n})", slot.0),
            Err(e) => tracing::warn!("open-file record {}: {e}", slot.0),
        }
    }
}

/// A node, by its device number (major, minor).
pub type NodeNumber = (u32, u32);

const HANDOVER_MAGIC: &[u8; 8] = b"mpsghnd2";

/// What an item of the hand-over holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// A request read and not answered (its bytes, as the kernel sent them).
    Request,
    /// A write() command's result nobody had read (`handover::encode`).
    Result,
}

/// One item of the hand-over: its node, what it is, its bytes.
pub type HandedItem = (NodeNumber, Handed, Vec<u8>);

/// What a daemon that stopped for a restart leaves its successor, per node: `magic`, then
/// (major u32, minor u32, kind u32, length u32, bytes) each, native endian (the successor
/// runs on the same machine).
pub fn encode_handover(items: &[HandedItem]) -> Vec<u8> {
    let mut out = HANDOVER_MAGIC.to_vec();
    for ((major, minor), kind, bytes) in items {
        let kind: u32 = match kind {
            Handed::Request => 1,
            Handed::Result => 2,
        };
        for w in [*major, *minor, kind, bytes.len() as u32] {
            out.extend_from_slice(&w.to_ne_bytes());
        }
        out.extend_from_slice(bytes);
    }
    out
}

/// The items of `encode_handover`, in their order; None if `bytes` is not such an image
/// or is cut short.
pub fn decode_handover(bytes: &[u8]) -> Option<Vec<HandedItem>> {
    let mut rest = bytes.strip_prefix(HANDOVER_MAGIC)?;
    let mut out = Vec::new();
    let word = |rest: &mut &[u8]| -> Option<u32> {
        let (w, r) = rest.split_first_chunk::<4>()?;
        *rest = r;
        Some(u32::from_ne_bytes(*w))
    };
    while !rest.is_empty() {
        let major = word(&mut rest)?;
        let minor = word(&mut rest)?;
        let kind = match word(&mut rest)? {
            1 => Handed::Request,
            2 => Handed::Result,
            _ => return None,
        };
        let len = word(&mut rest)? as usize;
        if rest.len() < len {
            return None;
        }
        let (req, r) = rest.split_at(len);
        rest = r;
        out.push(((major, minor), kind, req.to_vec()));
    }
    Some(out)
}

/// A memfd holding `bytes`, to store.
pub fn memfd_with(name: &std::ffi::CStr, bytes: &[u8]) -> io::Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut done = 0;
    while done < bytes.len() {
        done += nix::sys::uio::pwrite(fd.as_fd(), &bytes[done..], done as i64)
            .map_err(io::Error::from)?;
    }
    Ok(fd)
}

/// All of a (memfd) file's bytes, up to `limit`.
pub fn read_all(fd: &OwnedFd, limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = nix::sys::uio::pread(fd.as_fd(), &mut buf, out.len() as i64)
            .map_err(io::Error::from)?;
        if n == 0 || out.len() >= limit {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handover_image_round_trips_and_a_cut_one_is_refused() {
        let reqs = vec![
            ((240, 0), Handed::Request, vec![1u8, 2, 3]),
            ((240, 5), Handed::Result, vec![]),
            ((240, 0), Handed::Request, vec![9; 80]),
        ];
        let img = encode_handover(&reqs);
        assert_eq!(decode_handover(&img), Some(reqs));
        assert_eq!(decode_handover(&img[..img.len() - 1]), None);
        assert_eq!(decode_handover(b"nonsense"), None);
        assert_eq!(decode_handover(HANDOVER_MAGIC), Some(vec![]));
        let fd = memfd_with(c"t", &img).unwrap();
        assert_eq!(read_all(&fd, 1 << 20).unwrap(), img);
    }

    fn rec(minor: u32, fh: u64) -> FileRecord {
        FileRecord {
            major: 240,
            minor,
            flags: libc::O_RDWR as u32,
            fh,
            opener_tgid: 77,
            opener_start_ticks: 123_456,
            opener_uid: 1000,
            opener_gid: 100,
            timeout_user: 6000,
            reserved_size: 65536,
            keep_orphan: 1,
            next_cmd_len: 0,
            cmd_q: 1,
            force_pack_id: 0,
            ..Default::default()
        }
    }

    fn dup(store: &FileStore) -> OwnedFd {
        store.fd().try_clone_to_owned().unwrap()
    }

    #[test]
    fn records_written_are_what_a_successor_reads() {
        let store = FileStore::create().unwrap();
        let a = store.claim().unwrap();
        let b = store.claim().unwrap();
        let c = store.claim().unwrap();
        store.write(a, &rec(1, 10));
        store.write(b, &rec(1, 11));
        store.write(c, &rec(2, 12));
        store.release(b);
        let mut changed = rec(2, 12);
        changed.timeout_user = 1;
        store.write(c, &changed);
        let (adopted, records) = FileStore::adopt(dup(&store)).unwrap();
        let got: Vec<(u32, u64, i32)> = records
            .iter()
            .map(|(_, r)| (r.minor, r.fh, r.timeout_user))
            .collect();
        assert_eq!(got, [(1, 10, 6000), (2, 12, 1)]);
        assert_eq!(records[0].1.opener_process().unwrap().tgid, 77);
        // The released slot is the first one handed out again.
        assert_eq!(adopted.claim(), Some(b));
        assert!(adopted.claim().unwrap().0 >= 3);
    }

    #[test]
    fn the_store_grows_and_reuses_slots() {
        let store = FileStore::create().unwrap();
        let slots: Vec<Slot> = (0..200).map(|_| store.claim().unwrap()).collect();
        for (i, s) in slots.iter().enumerate() {
            store.write(*s, &rec(0, i as u64));
        }
        for s in &slots[..100] {
            store.release(*s);
        }
        let (_, records) = FileStore::adopt(dup(&store)).unwrap();
        assert_eq!(records.len(), 100);
        assert_eq!(records[0].1.fh, 100);
    }

    #[test]
    fn a_record_without_a_process_keeps_none() {
        let mut r = rec(0, 1);
        r.opener_tgid = 0;
        assert_eq!(r.opener_process(), None);
    }
}
