//! SG_IO in a single round: the caller's header, CDB, iovec list and data-out are read
//! straight from its memory, and status, sense and data-in written back, exactly where and
//! when sg itself would copy them (sg_new_write / sg_new_read / blk_rq_unmap_user), instead
//! of three or four CUSE retry rounds (see `plan`). Pure logic over [`CallerMemory`]; the
//! process_vm_readv/writev implementation is in `crate::caller`.
//!
//! Every errno is decided by the same checks as the rounds (`SgIoHeader::validate`,
//! `validate_transfer`, the permission check, `plan::TOO_LARGE`), so both paths answer alike.

use super::header::{Abi, Direction, SgIoHeader};
use super::plan::{data_segments, CdbCheck, TOO_LARGE};
use crate::cuse::abi::IoctlIovec;
use crate::errno::Errno;

/// Why caller memory could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemError {
    /// The address is not mapped (or not writable): the caller gets EFAULT, as from sg.
    Fault,
    /// The daemon may not or cannot reach the process (EPERM, ESRCH): use the retry rounds.
    Unreachable,
}

/// Memory of the thread waiting in the ioctl.
pub trait CallerMemory {
    /// Reads each region into the matching buffer; all or nothing.
    fn read(&self, regions: &[IoctlIovec], bufs: &mut [&mut [u8]]) -> Result<(), MemError>;
    /// Writes the bytes sequentially across the regions; all or nothing.
    fn write(&self, regions: &[IoctlIovec], data: &[u8]) -> Result<(), MemError>;
}

/// An SG_IO read from the caller, ready to run.
#[derive(Debug, PartialEq, Eq)]
pub struct DirectCall {
    pub header: SgIoHeader,
    pub cdb: Vec<u8>,
    /// The caller's data regions (empty without a caller buffer).
    pub segments: Vec<IoctlIovec>,
    /// ToDevice: the data read from the caller; FromDevice: a buffer for data-in.
    pub data: Vec<u8>,
    pub transfer_len: usize,
    pub data_in_to_caller: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DirectError {
    Errno(Errno),
    /// Fall back to the retry rounds.
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

fn read_one(m: &dyn CallerMemory, base: u64, len: usize) -> Result<Vec<u8>, DirectError> {
    let mut buf = vec![0u8; len];
    m.read(
        &[IoctlIovec {
            base,
            len: len as u64,
        }],
        &mut [&mut buf],
    )
    .map_err(mem)?;
    Ok(buf)
}

/// Reads and checks one SG_IO, in sg's order. `max_transfer` is the paths' own limit.
pub fn read_call(
    m: &dyn CallerMemory,
    abi: Abi,
    arg: u64,
    check_cdb: CdbCheck<'_>,
    max_transfer: usize,
) -> Result<DirectCall, DirectError> {
    let raw = read_one(m, arg, abi.header_len())?;
    let hdr = SgIoHeader::decode(abi, &raw).ok_or(Errno::EINVAL)?;
    hdr.validate()?;
    read_command(m, abi, hdr, check_cdb, max_transfer)
}

/// Reads what a validated header names (CDB, iovec list, data-out) and checks it, in sg's
/// order: for SG_IO after its header, for write() with the header the caller wrote.
pub fn read_command(
    m: &dyn CallerMemory,
    abi: Abi,
    hdr: SgIoHeader,
    check_cdb: CdbCheck<'_>,
    max_transfer: usize,
) -> Result<DirectCall, DirectError> {
    let dir = hdr.direction();
    let cdb_len = usize::from(hdr.cmd_len);
    // The common case (a linear buffer) reads the CDB and data-out with one syscall; sg's
    // order (EPERM for a forbidden CDB before EFAULT for its data) is kept by re-reading
    // the CDB alone when that read faults.
    let linear_out = dir == Direction::ToDevice && hdr.caller_buffer() && hdr.iovec_count == 0;
    if linear_out && hdr.validate_transfer().is_ok() && (hdr.dxfer_len as usize) <= max_transfer {
        let len = hdr.dxfer_len as usize;
        let mut cdb = vec![0u8; cdb_len];
        let mut data = vec![0u8; len];
        let regions = [
            IoctlIovec {
                base: hdr.cmdp,
                len: cdb_len as u64,
            },
            IoctlIovec {
                base: hdr.dxferp,
                len: len as u64,
            },
        ];
        if m.read(&regions, &mut [&mut cdb, &mut data]).is_ok() {
            check_cdb(&cdb)?;
            return Ok(DirectCall {
                header: hdr,
                cdb,
                segments: vec![regions[1]],
                data,
                transfer_len: len,
                data_in_to_caller: false,
            });
        }
    }
    // The first touch of the caller's memory for write(): Unreachable stays a fallback.
    let cdb = read_one(m, hdr.cmdp, cdb_len)?;
    check_cdb(&cdb)?;
    hdr.validate_transfer()?;
    let segments = if dir == Direction::None {
        vec![]
    } else if hdr.iovec_count > 0 {
        let list = read_one(
            m,
            hdr.dxferp,
            usize::from(hdr.iovec_count) * abi.iovec_len(),
        )
        .map_err(|_| Errno::EFAULT)?;
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
    let segments = if to_caller { segments } else { vec![] };
    let mut data = vec![
        0u8;
        if dir == Direction::None {
            0
        } else {
            transfer_len
        }
    ];
    if dir == Direction::ToDevice && to_caller {
        let mut bufs: Vec<&mut [u8]> = Vec::with_capacity(segments.len());
        let mut rest = &mut data[..];
        for s in &segments {
            let (a, b) = rest.split_at_mut(s.len as usize);
            bufs.push(a);
            rest = b;
        }
        m.read(&segments, &mut bufs).map_err(|_| Errno::EFAULT)?;
    }
    Ok(DirectCall {
        header: hdr,
        cdb,
        data_in_to_caller: dir == Direction::FromDevice && to_caller,
        segments,
        data,
        transfer_len: if dir == Direction::None {
            0
        } else {
            transfer_len
        },
    })
}

/// Writes the results back as sg_new_read() does: the sense bytes, then the output fields,
/// then data-in (blk_rq_unmap_user() at request teardown); a fault in any is EFAULT.
pub fn write_results(
    m: &dyn CallerMemory,
    abi: Abi,
    arg: u64,
    call: &DirectCall,
    output: &[u8],
    sense: &[u8],
    data_in_len: usize,
) -> Result<(), Errno> {
    let at = IoctlIovec {
        base: arg + abi.output_offset(),
        len: output.len() as u64,
    };
    let (regions, bytes) = result_regions(call, sense, Some((at, output)), data_in_len);
    m.write(&regions, &bytes).map_err(|_| Errno::EFAULT)
}

/// For read() of the asynchronous interface: the sense bytes and data-in go to the
/// addresses the write()'s header named; the header itself is read()'s data.
pub fn write_sense_and_data_in(
    m: &dyn CallerMemory,
    call: &DirectCall,
    sense: &[u8],
    data_in_len: usize,
) -> Result<(), MemError> {
    let (regions, bytes) = result_regions(call, sense, None, data_in_len);
    if regions.is_empty() {
        return Ok(());
    }
    m.write(&regions, &bytes)
}

/// The regions and bytes of one process_vm_writev, in sg's order, so that a fault stops
/// it where sg would have stopped.
fn result_regions(
    call: &DirectCall,
    sense: &[u8],
    output: Option<(IoctlIovec, &[u8])>,
    data_in_len: usize,
) -> (Vec<IoctlIovec>, Vec<u8>) {
    let mut regions = Vec::with_capacity(call.segments.len() + 2);
    let mut bytes = Vec::with_capacity(sense.len() + 20 + data_in_len);
    if !sense.is_empty() {
        regions.push(IoctlIovec {
            base: call.header.sbp,
            len: sense.len() as u64,
        });
        bytes.extend_from_slice(sense);
    }
    if let Some((at, out)) = output {
        regions.push(at);
        bytes.extend_from_slice(out);
    }
    if call.data_in_to_caller && data_in_len > 0 {
        // Only what the device transferred (see docs/sg-compat.md), across the segments.
        let mut left = data_in_len as u64;
        for s in &call.segments {
            if left == 0 {
                break;
            }
            let len = s.len.min(left);
            regions.push(IoctlIovec { base: s.base, len });
            left -= len;
        }
        bytes.extend_from_slice(&call.data[..data_in_len]);
    }
    (regions, bytes)
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
        fn write(&self, regions: &[IoctlIovec], mut data: &[u8]) -> Result<(), MemError> {
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
    fn read_call_beyond_one_cuse_round() {
        let m = setup(hdr(SG_DXFER_TO_DEV, 1 << 20), &[0x2a; 10], 1 << 20);
        let c = read_call(&m, Abi::Native, ARG, &allow, 4 << 20).unwrap();
        assert_eq!(c.transfer_len, 1 << 20);
        assert_eq!(c.data, vec![0x77; 1 << 20]);
        assert_eq!(c.cdb, vec![0x2a; 10]);
    }

    #[test]
    fn errors_in_sg_order() {
        let m = setup(hdr(SG_DXFER_FROM_DEV, 512), &[0x28; 10], 512);
        let deny = |_: &[u8]| Err(Errno::EPERM);
        assert_eq!(
            read_call(&m, Abi::Native, ARG, &deny, 1 << 20),
            Err(DirectError::Errno(Errno::EPERM))
        );
        assert_eq!(
            read_call(&m, Abi::Native, 0xdead0000, &allow, 1 << 20),
            Err(DirectError::Errno(Errno::EFAULT))
        );
        let mut v4 = hdr(SG_DXFER_NONE, 0);
        v4.interface_id = b'Q' as i32;
        let m = setup(v4, &[0; 10], 0);
        assert_eq!(
            read_call(&m, Abi::Native, ARG, &allow, 1 << 20),
            Err(DirectError::Errno(Errno::ENOSYS))
        );
        let m = setup(hdr(SG_DXFER_FROM_DEV, 2 << 20), &[0x28; 10], 2 << 20);
        assert_eq!(
            read_call(&m, Abi::Native, ARG, &allow, 1 << 20),
            Err(DirectError::Errno(TOO_LARGE))
        );
        let mut bad_cdb = hdr(SG_DXFER_NONE, 0);
        bad_cdb.cmdp = 0xbad00000;
        let m = setup(bad_cdb, &[0; 10], 0);
        assert_eq!(
            read_call(&m, Abi::Native, ARG, &allow, 1 << 20),
            Err(DirectError::Errno(Errno::EFAULT))
        );
    }

    #[test]
    fn unreachable_caller_falls_back() {
        let mut m = setup(hdr(SG_DXFER_NONE, 0), &[0; 10], 0);
        m.unreachable = true;
        assert_eq!(
            read_call(&m, Abi::Native, ARG, &allow, 1 << 20),
            Err(DirectError::Unreachable)
        );
    }

    #[test]
    fn results_written_where_sg_writes_them() {
        let m = setup(hdr(SG_DXFER_FROM_DEV, 4096), &[0x28; 10], 4096);
        let mut c = read_call(&m, Abi::Native, ARG, &allow, 1 << 20).unwrap();
        c.data.fill(0x11);
        let out = [9u8; 20];
        write_results(&m, Abi::Native, ARG, &c, &out, &[0x70, 0, 5], 1000).unwrap();
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
