//! SG_IO in a single round, and write()'s command: the caller's header, CDB and iovec
//! list are read straight from its memory, and status, sense and data-in written back,
//! where and when sg itself would copy them (sg_new_write / sg_new_read /
//! blk_rq_unmap_user), instead of three or four CUSE retry rounds (see `plan`). Data-out
//! is read separately (`read_data_out`), after the permission check and only when the
//! command is about to run. Pure logic over [`CallerMemory`]; the process_vm_readv/writev
//! implementation is in `crate::caller`.
//!
//! Every errno is decided by the same checks as the rounds (`SgIoHeader::validate`,
//! `validate_transfer`, the permission check, `plan::TOO_LARGE`), so both answer alike.

use super::command::{Cdb, Segments, SgCommand};
use super::header::{Abi, Direction, SgIoHeader};
use super::plan::{data_segments, CdbCheck, TOO_LARGE};
use crate::cuse::abi::IoctlIovec;
use crate::errno::Errno;

/// Why caller memory could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// The address is not mapped (or not writable): the caller gets EFAULT, as from sg.
    Fault,
    /// The daemon may not or cannot reach the process (EPERM, ESRCH).
    Unreachable,
}

/// Memory of the thread waiting in the call.
pub trait CallerMemory {
    /// Reads each region into the matching buffer; all or nothing.
    fn read(&self, regions: &[IoctlIovec], bufs: &mut [&mut [u8]]) -> Result<(), MemError>;
    /// Writes the concatenation of `parts` sequentially across the regions (a shorter
    /// total fills a prefix); all or nothing.
    fn write(&self, regions: &[IoctlIovec], parts: &[&[u8]]) -> Result<(), MemError>;
}

#[derive(Debug, PartialEq, Eq)]
pub enum DirectError {
    Errno(Errno),
    /// The caller's memory cannot be reached at all (the first touch failed).
    Unreachable,
}

impl From<Errno> for DirectError {
    fn from(e: Errno) -> Self {
        DirectError::Errno(e)
    }
}

fn mem(e: MemError) -> DirectError {
    match e {
        MemError::Fault => DirectError::Errno(Errno::EFAULT),
        MemError::Unreachable => DirectError::Unreachable,
    }
}

fn read_into(m: &dyn CallerMemory, base: u64, buf: &mut [u8]) -> Result<(), MemError> {
    m.read(
        &[IoctlIovec {
            base,
            len: buf.len() as u64,
        }],
        &mut [buf],
    )
}

/// Where a caller's CDB was last time: callers (qemu, fio, sg3_utils' loops) reuse their
/// CDB buffer from one SG_IO to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdbGuess {
    pub cmdp: u64,
    pub cmd_len: u8,
}

/// Reads and checks one SG_IO's header, CDB and iovec list, in sg's order. No data is
/// read. `max_transfer` is the paths' own limit.
///
/// With a `guess` of where the CDB is, the header and those bytes are read in one call;
/// the bytes are used only if the header just read names exactly that CDB, else the CDB is
/// read where the header says (and if the guessed place cannot be read at all, the header
/// is read alone first, so that a bad guess never turns into the caller's EFAULT).
pub fn decode_sg_io(
    m: &dyn CallerMemory,
    abi: Abi,
    arg: u64,
    check_cdb: CdbCheck<'_>,
    max_transfer: usize,
    guess: Option<CdbGuess>,
) -> Result<SgCommand, DirectError> {
    let mut raw = [0u8; Abi::Native.header_len()];
    let raw = &mut raw[..abi.header_len()];
    let mut cdb = Cdb::zeroed(guess.map_or(0, |g| g.cmd_len));
    let guessed = match guess {
        Some(g) if g.cmd_len > 0 => {
            let regions = [
                IoctlIovec {
                    base: arg,
                    len: raw.len() as u64,
                },
                IoctlIovec {
                    base: g.cmdp,
                    len: u64::from(g.cmd_len),
                },
            ];
            m.read(&regions, &mut [&mut *raw, cdb.bytes_mut()]).is_ok()
        }
        _ => false,
    };
    if !guessed {
        read_into(m, arg, raw).map_err(mem)?;
    }
    let hdr = SgIoHeader::decode(abi, raw).ok_or(Errno::EINVAL)?;
    hdr.validate()?;
    let cdb = match guess {
        Some(g) if guessed && g.cmdp == hdr.cmdp && g.cmd_len == hdr.cmd_len => Some(cdb),
        _ => None,
    };
    decode_with(m, abi, hdr, cdb, check_cdb, max_transfer)
}

/// Reads what a validated header names (CDB, iovec list) and checks it, in sg's order:
/// for SG_IO after its header, for write() with the header the caller wrote.
pub fn decode_command(
    m: &dyn CallerMemory,
    abi: Abi,
    hdr: SgIoHeader,
    check_cdb: CdbCheck<'_>,
    max_transfer: usize,
) -> Result<SgCommand, DirectError> {
    decode_with(m, abi, hdr, None, check_cdb, max_transfer)
}

/// `decode_command` with the CDB already read, if it was.
fn decode_with(
    m: &dyn CallerMemory,
    abi: Abi,
    hdr: SgIoHeader,
    cdb: Option<Cdb>,
    check_cdb: CdbCheck<'_>,
    max_transfer: usize,
) -> Result<SgCommand, DirectError> {
    let dir = hdr.direction();
    let cdb = match cdb {
        Some(c) => c,
        None => {
            let mut c = Cdb::zeroed(hdr.cmd_len);
            // The first touch of the caller's memory for write(): Unreachable stays distinct.
            read_into(m, hdr.cmdp, c.bytes_mut()).map_err(mem)?;
            c
        }
    };
    check_cdb(&cdb)?;
    hdr.validate_transfer()?;
    let segments = if dir == Direction::None {
        vec![]
    } else if hdr.iovec_count > 0 {
        let mut list = vec![0u8; usize::from(hdr.iovec_count) * abi.iovec_len()];
        read_into(m, hdr.dxferp, &mut list).map_err(|_| Errno::EFAULT)?;
        data_segments(abi, &hdr, &list)?
    } else {
        data_segments(abi, &hdr, &[])?
    };
    let transfer_len: usize = segments.iter().map(|s| s.len as usize).sum();
    if transfer_len > max_transfer {
        tracing::info!("SG_IO of {transfer_len} bytes refused: the paths carry at most {max_transfer} bytes per command");
        return Err(TOO_LARGE.into());
    }
    let to_caller = hdr.caller_buffer();
    Ok(SgCommand {
        header: hdr,
        cdb,
        segments: if to_caller {
            Segments::from_vec(segments)
        } else {
            Segments::None
        },
        transfer_len: if dir == Direction::None {
            0
        } else {
            transfer_len
        },
        data_out_from_caller: dir == Direction::ToDevice && to_caller,
        data_in_to_caller: dir == Direction::FromDevice && to_caller,
    })
}

/// Reads the command's data-out from the caller into `buf` (its first transfer_len
/// bytes): one call for a linear buffer.
pub fn read_data_out(
    m: &dyn CallerMemory,
    cmd: &SgCommand,
    buf: &mut [u8],
) -> Result<(), MemError> {
    let buf = &mut buf[..cmd.transfer_len];
    match &cmd.segments {
        Segments::None => Ok(()),
        Segments::Linear(s) => m.read(std::slice::from_ref(s), &mut [buf]),
        Segments::List(list) => {
            let mut bufs: Vec<&mut [u8]> = Vec::with_capacity(list.len());
            let mut rest = buf;
            for s in list {
                let (a, b) = rest.split_at_mut(s.len as usize);
                bufs.push(a);
                rest = b;
            }
            m.read(list, &mut bufs)
        }
    }
}

/// Writes the results back as sg_new_read() does, in one call: the sense bytes, then the
/// output fields, then data-in (blk_rq_unmap_user() at request teardown), so that a fault
/// stops where sg would have stopped.
pub fn write_results(
    m: &dyn CallerMemory,
    abi: Abi,
    arg: u64,
    cmd: &SgCommand,
    output: &[u8],
    sense: &[u8],
    data_in: &[u8],
) -> Result<(), MemError> {
    let at = IoctlIovec {
        base: arg + abi.output_offset(),
        len: output.len() as u64,
    };
    write_regions(m, cmd, sense, Some(at), output, data_in)
}

/// For read() of the asynchronous interface: the sense bytes and data-in go to the
/// addresses the write()'s header named; the header itself is read()'s data.
pub fn write_sense_and_data_in(
    m: &dyn CallerMemory,
    cmd: &SgCommand,
    sense: &[u8],
    data_in: &[u8],
) -> Result<(), MemError> {
    write_regions(m, cmd, sense, None, &[], data_in)
}

fn write_regions(
    m: &dyn CallerMemory,
    cmd: &SgCommand,
    sense: &[u8],
    output_at: Option<IoctlIovec>,
    output: &[u8],
    data_in: &[u8],
) -> Result<(), MemError> {
    let data_in = if cmd.data_in_to_caller { data_in } else { &[] };
    let mut regions = Vec::with_capacity(cmd.segments.as_slice().len() + 2);
    if !sense.is_empty() {
        regions.push(IoctlIovec {
            base: cmd.header.sbp,
            len: sense.len() as u64,
        });
    }
    if let Some(at) = output_at {
        regions.push(at);
    }
    // Only what the device transferred (see docs/sg-compat.md), across the segments.
    regions.extend(cmd.segments.prefix(data_in.len()));
    if regions.is_empty() {
        return Ok(());
    }
    m.write(&regions, &[sense, output, data_in])
}

#[cfg(test)]
pub mod testing {
    use super::*;
    use parking_lot::Mutex;
    use std::collections::BTreeMap;

    /// A sparse fake address space: mapped ranges and their bytes.
    #[derive(Default)]
    pub struct FakeMemory {
        pub ranges: Mutex<BTreeMap<u64, Vec<u8>>>,
        pub unreachable: bool,
    }

    impl FakeMemory {
        pub fn map(&self, base: u64, bytes: &[u8]) {
            self.ranges.lock().insert(base, bytes.to_vec());
        }
        pub fn get(&self, base: u64, len: usize) -> Option<Vec<u8>> {
            let r = self.ranges.lock();
            let (b, v) = r.range(..=base).next_back()?;
            let off = (base - b) as usize;
            v.get(off..off + len).map(|s| s.to_vec())
        }
        fn put(&self, base: u64, data: &[u8]) -> bool {
            let mut r = self.ranges.lock();
            let Some((b, v)) = r.range_mut(..=base).next_back() else {
                return false;
            };
            let off = (base - *b) as usize;
            match v.get_mut(off..off + data.len()) {
                Some(dst) => {
                    dst.copy_from_slice(data);
                    true
                }
                None => false,
            }
        }
    }

    impl CallerMemory for FakeMemory {
        fn read(&self, regions: &[IoctlIovec], bufs: &mut [&mut [u8]]) -> Result<(), MemError> {
            if self.unreachable {
                return Err(MemError::Unreachable);
            }
            for (r, b) in regions.iter().zip(bufs.iter_mut()) {
                let v = self.get(r.base, r.len as usize).ok_or(MemError::Fault)?;
                b.copy_from_slice(&v);
            }
            Ok(())
        }
        fn write(&self, regions: &[IoctlIovec], parts: &[&[u8]]) -> Result<(), MemError> {
            let all = parts.concat();
            let mut data = &all[..];
            for r in regions {
                let n = (r.len as usize).min(data.len());
                if !self.put(r.base, &data[..n]) {
                    return Err(MemError::Fault);
                }
                data = &data[n..];
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeMemory;
    use super::*;
    use crate::sg::abi::*;
    use zerocopy::IntoBytes;

    const ARG: u64 = 0x1000;
    const CDB: u64 = 0x2000;
    const BUF: u64 = 0x10000;
    const SENSE: u64 = 0x3000;

    fn allow(_: &[u8]) -> Result<(), Errno> {
        Ok(())
    }

    fn setup(h: SgIoHdr64, cdb: &[u8], buf_len: usize) -> FakeMemory {
        let m = FakeMemory::default();
        m.map(ARG, h.as_bytes());
        m.map(CDB, cdb);
        m.map(BUF, &vec![0x77; buf_len]);
        m.map(SENSE, &[0xaa; 64]);
        m
    }

    fn hdr(dir: i32, len: u32) -> SgIoHdr64 {
        SgIoHdr64 {
            interface_id: INTERFACE_ID_V3,
            dxfer_direction: dir,
            cmd_len: 10,
            mx_sb_len: 32,
            dxfer_len: len,
            dxferp: BUF,
            cmdp: CDB,
            sbp: SENSE,
            ..Default::default()
        }
    }

    #[test]
    fn decode_then_data_out_beyond_one_cuse_round() {
        let m = setup(hdr(SG_DXFER_TO_DEV, 1 << 20), &[0x2a; 10], 1 << 20);
        let c = decode_sg_io(&m, Abi::Native, ARG, &allow, 4 << 20, None).unwrap();
        assert_eq!(c.transfer_len, 1 << 20);
        assert!(c.data_out_from_caller && !c.data_in_to_caller);
        assert_eq!(&*c.cdb, &[0x2a; 10]);
        let mut buf = vec![0u8; 1 << 20];
        read_data_out(&m, &c, &mut buf).unwrap();
        assert_eq!(buf, vec![0x77; 1 << 20]);
    }

    #[test]
    fn errors_in_sg_order() {
        let m = setup(hdr(SG_DXFER_FROM_DEV, 512), &[0x28; 10], 512);
        let deny = |_: &[u8]| Err(Errno::EPERM);
        assert_eq!(
            decode_sg_io(&m, Abi::Native, ARG, &deny, 1 << 20, None),
            Err(DirectError::Errno(Errno::EPERM))
        );
        assert_eq!(
            decode_sg_io(&m, Abi::Native, 0xdead0000, &allow, 1 << 20, None),
            Err(DirectError::Errno(Errno::EFAULT))
        );
        let mut v4 = hdr(SG_DXFER_NONE, 0);
        v4.interface_id = b'Q' as i32;
        let m = setup(v4, &[0; 10], 0);
        assert_eq!(
            decode_sg_io(&m, Abi::Native, ARG, &allow, 1 << 20, None),
            Err(DirectError::Errno(Errno::ENOSYS))
        );
        let m = setup(hdr(SG_DXFER_FROM_DEV, 2 << 20), &[0x28; 10], 2 << 20);
        assert_eq!(
            decode_sg_io(&m, Abi::Native, ARG, &allow, 1 << 20, None),
            Err(DirectError::Errno(TOO_LARGE))
        );
        let mut bad_cdb = hdr(SG_DXFER_NONE, 0);
        bad_cdb.cmdp = 0xbad00000;
        let m = setup(bad_cdb, &[0; 10], 0);
        assert_eq!(
            decode_sg_io(&m, Abi::Native, ARG, &allow, 1 << 20, None),
            Err(DirectError::Errno(Errno::EFAULT))
        );
    }

    #[test]
    fn a_forbidden_command_is_refused_before_its_data_is_read() {
        // The data pointer is unmapped: sg says EPERM for the CDB, not EFAULT.
        let mut h = hdr(SG_DXFER_TO_DEV, 512);
        h.dxferp = 0xbad0_0000;
        let m = setup(h, &[0x2a; 10], 0);
        let deny = |_: &[u8]| Err(Errno::EPERM);
        assert_eq!(
            decode_sg_io(&m, Abi::Native, ARG, &deny, 1 << 20, None),
            Err(DirectError::Errno(Errno::EPERM))
        );
        let c = decode_sg_io(&m, Abi::Native, ARG, &allow, 1 << 20, None).unwrap();
        let mut buf = vec![0u8; 512];
        assert_eq!(read_data_out(&m, &c, &mut buf), Err(MemError::Fault));
    }

    /// Counts the calls made to the memory beneath.
    struct Counting<'a>(&'a FakeMemory, std::cell::Cell<usize>);

    impl CallerMemory for Counting<'_> {
        fn read(&self, r: &[IoctlIovec], b: &mut [&mut [u8]]) -> Result<(), MemError> {
            self.1.set(self.1.get() + 1);
            self.0.read(r, b)
        }
        fn write(&self, r: &[IoctlIovec], p: &[&[u8]]) -> Result<(), MemError> {
            self.0.write(r, p)
        }
    }

    #[test]
    fn a_right_cdb_guess_saves_a_call_and_a_wrong_one_costs_nothing_else() {
        let m = setup(hdr(SG_DXFER_NONE, 0), &[0x12; 10], 0);
        let c = Counting(&m, Default::default());
        let right = CdbGuess {
            cmdp: CDB,
            cmd_len: 10,
        };
        let got = decode_sg_io(&c, Abi::Native, ARG, &allow, 1 << 20, Some(right)).unwrap();
        assert_eq!(
            (&*got.cdb, c.1.get()),
            (&[0x12u8; 10][..], 1),
            "header and CDB in one call"
        );
        // A guess elsewhere (mapped): the bytes there are not used.
        m.map(0x9000, &[0x77; 10]);
        let c = Counting(&m, Default::default());
        let elsewhere = CdbGuess {
            cmdp: 0x9000,
            cmd_len: 10,
        };
        let got = decode_sg_io(&c, Abi::Native, ARG, &allow, 1 << 20, Some(elsewhere)).unwrap();
        assert_eq!((&*got.cdb, c.1.get()), (&[0x12u8; 10][..], 2));
        // A guess that cannot be read: no EFAULT for the caller.
        let unmapped = CdbGuess {
            cmdp: 0xbad0_0000,
            cmd_len: 10,
        };
        let got = decode_sg_io(&m, Abi::Native, ARG, &allow, 1 << 20, Some(unmapped)).unwrap();
        assert_eq!(&*got.cdb, &[0x12u8; 10][..]);
        // A guess of the right place but the wrong length is not used either.
        let shorter = CdbGuess {
            cmdp: CDB,
            cmd_len: 6,
        };
        let got = decode_sg_io(&m, Abi::Native, ARG, &allow, 1 << 20, Some(shorter)).unwrap();
        assert_eq!(got.cdb.len(), 10);
    }

    #[test]
    fn unreachable_caller_is_told_apart() {
        let mut m = setup(hdr(SG_DXFER_NONE, 0), &[0; 10], 0);
        m.unreachable = true;
        assert_eq!(
            decode_sg_io(&m, Abi::Native, ARG, &allow, 1 << 20, None),
            Err(DirectError::Unreachable)
        );
    }

    #[test]
    fn results_written_where_sg_writes_them() {
        let m = setup(hdr(SG_DXFER_FROM_DEV, 4096), &[0x28; 10], 4096);
        let c = decode_sg_io(&m, Abi::Native, ARG, &allow, 1 << 20, None).unwrap();
        let data = vec![0x11u8; 1000];
        let out = [9u8; 20];
        write_results(&m, Abi::Native, ARG, &c, &out, &[0x70, 0, 5], &data).unwrap();
        assert_eq!(m.get(ARG + 64, 20).unwrap(), out.to_vec());
        assert_eq!(
            m.get(SENSE, 4).unwrap(),
            vec![0x70, 0, 5, 0xaa],
            "past the sense bytes untouched"
        );
        assert_eq!(m.get(BUF, 1000).unwrap(), vec![0x11; 1000]);
        assert_eq!(
            m.get(BUF + 1000, 8).unwrap(),
            vec![0x77; 8],
            "past the transferred bytes untouched"
        );
    }
}
