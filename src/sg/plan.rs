//! The unrestricted-ioctl retry rounds for SG_IO, as a pure function of one round.
//!
//! The kernel copies only the caller memory the daemon names, a round at a time (see
//! cuse-protocol.md). The plan is recomputed from each round's bytes alone, so the daemon
//! keeps no state between rounds, and every address it names comes from the caller's own
//! header (or iovec list, itself named by the header):
//!
//! | round | kernel sends (in) | daemon answers |
//! |---|---|---|
//! | 1 | nothing | fetch the header |
//! | 2 | header | (header checks) fetch header + CDB |
//! | 3 | header, CDB | (permission, transfer checks) fetch the iovec list if any, else the full plan |
//! | 3b | header, CDB, iovec list | fetch the full plan |
//! | last | header, CDB, [iovecs], data-out, sense buffer; out-iovecs named | execute |
//!
//! The CDB is fetched before any data so that a forbidden command gets EPERM even when its
//! data pointer is bad, as on sg. The last round is the one with out-iovecs (out_size > 0).

use super::command::{Cdb, Segments, SgCommand};
use super::header::{Abi, Direction, SgIoHeader};
use crate::cuse::abi::{IoctlIovec, FUSE_IOCTL_MAX_BYTES, FUSE_IOCTL_MAX_IOV};
use crate::errno::Errno;
use zerocopy::FromBytes;

/// Largest data transfer one SG_IO can carry through the retry rounds, with the 88-byte
/// header, a 16-byte CDB and a 96-byte sense buffer counted in.
pub const MAX_ROUND_TRANSFER: usize = FUSE_IOCTL_MAX_BYTES - 4096;

/// Errno for a transfer larger than the node can carry: what sg gives for a request it
/// cannot map (blk_rq_map_user* fails the bio with -EINVAL).
pub const TOO_LARGE: Errno = Errno::EINVAL;

#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Fetch {
        input: Vec<IoctlIovec>,
        output: Vec<IoctlIovec>,
    },
    Execute(Call<'a>),
    Fail(Errno),
}

/// An SG_IO ready to run: everything borrowed from the last round's bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Call<'a> {
    pub header: SgIoHeader,
    pub cdb: &'a [u8],
    /// Data to send (ToDevice with a caller buffer); empty otherwise.
    pub data_out: &'a [u8],
    /// The caller's sense buffer as it was (min(mx_sb_len, 96) bytes, none without sbp).
    pub sense_in: &'a [u8],
    /// Bytes moved to or from the device (sg: dxfer_len, or the iovec total when smaller).
    pub transfer_len: usize,
    /// Whether data-in goes back to the caller (the out-iovecs include it).
    pub data_in_to_caller: bool,
}

impl Call<'_> {
    /// The command to run (the caller's regions stay with the kernel's out-iovecs).
    pub fn command(&self) -> SgCommand {
        SgCommand {
            header: self.header,
            cdb: Cdb::new(self.cdb),
            segments: Segments::None,
            transfer_len: self.transfer_len,
            data_out_from_caller: self.header.direction() == Direction::ToDevice
                && self.header.caller_buffer(),
            data_in_to_caller: self.data_in_to_caller,
        }
    }
}

/// One SG_IO ioctl round.
pub struct Round<'a> {
    pub abi: Abi,
    /// The caller's `arg`: its sg_io_hdr.
    pub arg: u64,
    /// The in-iovecs' contents, concatenated.
    pub data: &'a [u8],
    /// Total size of this round's out-iovecs (0 until the daemon named some).
    pub out_size: u32,
    /// The largest transfer the node advertises (<= MAX_ROUND_TRANSFER).
    pub max_transfer: usize,
}

/// The per-opcode permission check sg makes after copying the CDB (see `sg::access`).
pub type CdbCheck<'c> = &'c dyn Fn(&[u8]) -> Result<(), Errno>;

pub fn plan<'a>(round: &Round<'a>, check_cdb: CdbCheck<'_>) -> Step<'a> {
    match plan_inner(round, check_cdb) {
        Ok(step) => step,
        Err(e) => Step::Fail(e),
    }
}

fn iov(base: u64, len: usize) -> IoctlIovec {
    IoctlIovec {
        base,
        len: len as u64,
    }
}

fn plan_inner<'a>(r: &Round<'a>, check_cdb: CdbCheck<'_>) -> Result<Step<'a>, Errno> {
    let h_len = r.abi.header_len();
    let data = r.data;
    if data.is_empty() && r.out_size == 0 {
        return Ok(Step::Fetch {
            input: vec![iov(r.arg, h_len)],
            output: vec![],
        });
    }
    let hdr = SgIoHeader::decode(r.abi, data).ok_or(Errno::EINVAL)?;
    hdr.validate()?;
    let cdb_end = h_len + usize::from(hdr.cmd_len);
    let head = vec![iov(r.arg, h_len), iov(hdr.cmdp, hdr.cmd_len.into())];
    if data.len() == h_len && r.out_size == 0 {
        return Ok(Step::Fetch {
            input: head,
            output: vec![],
        });
    }
    if data.len() < cdb_end {
        // The caller changed its header between rounds.
        return Err(Errno::EINVAL);
    }
    let cdb = &data[h_len..cdb_end];
    check_cdb(cdb)?;
    hdr.validate_transfer()?;
    // sg maps no data (and so reads no iovec list) when nothing is transferred.
    let dir = hdr.direction();
    let list_count = if dir == Direction::None {
        0
    } else {
        hdr.iovec_count
    };
    let iov_bytes = usize::from(list_count) * r.abi.iovec_len();
    if list_count > 0 && data.len() == cdb_end && r.out_size == 0 {
        let mut input = head;
        input.push(iov(hdr.dxferp, iov_bytes));
        return Ok(Step::Fetch {
            input,
            output: vec![],
        });
    }
    let list_end = cdb_end + iov_bytes;
    if data.len() < list_end {
        return Err(Errno::EINVAL);
    }
    let segments = if dir == Direction::None {
        vec![]
    } else {
        data_segments(r.abi, &hdr, &data[cdb_end..list_end])?
    };
    let transfer_len: usize = segments.iter().map(|s| s.len as usize).sum();
    if dir != Direction::None && transfer_len > r.max_transfer {
        tracing::info!(
            "SG_IO of {transfer_len} bytes refused: the node carries at most {} bytes per command",
            r.max_transfer
        );
        return Err(TOO_LARGE);
    }
    let to_caller = hdr.caller_buffer();
    let sense = hdr.sense_capacity();
    let mut input = head;
    if list_count > 0 {
        input.push(iov(hdr.dxferp, iov_bytes));
    }
    let data_out_to_device = dir == Direction::ToDevice && to_caller;
    if data_out_to_device {
        input.extend_from_slice(&segments);
    }
    // The sense buffer is read too, so that bytes past what sg writes go back unchanged.
    if sense > 0 {
        input.push(iov(hdr.sbp, sense));
    }
    // Sense before data-in: the reply may then stop after the bytes the device really
    // transferred, leaving the rest of the caller's buffer as it was.
    let mut output = vec![iov(r.arg + r.abi.output_offset(), 20)];
    if sense > 0 {
        output.push(iov(hdr.sbp, sense));
    }
    let data_in_to_caller = dir == Direction::FromDevice && to_caller;
    if data_in_to_caller {
        output.extend_from_slice(&segments);
    }
    let in_total: u64 = input.iter().map(|v| v.len).sum();
    let out_total: u64 = output.iter().map(|v| v.len).sum();
    if input.len() + output.len() > FUSE_IOCTL_MAX_IOV
        || in_total > FUSE_IOCTL_MAX_BYTES as u64
        || out_total > FUSE_IOCTL_MAX_BYTES as u64
    {
        tracing::info!(
            "SG_IO refused: {} regions and {in_total}/{out_total} bytes in/out exceed one CUSE ioctl ({} regions, {} bytes per direction)",
            input.len() + output.len(),
            FUSE_IOCTL_MAX_IOV,
            FUSE_IOCTL_MAX_BYTES
        );
        return Err(TOO_LARGE);
    }
    if r.out_size == 0 {
        return Ok(Step::Fetch { input, output });
    }
    // The last round: it must carry exactly what the plan names, or the caller changed
    // its header or iovec list under us.
    if data.len() as u64 != in_total || u64::from(r.out_size) != out_total {
        return Err(Errno::EINVAL);
    }
    let (data_out, sense_in) =
        data[list_end..].split_at(if data_out_to_device { transfer_len } else { 0 });
    Ok(Step::Execute(Call {
        header: hdr,
        cdb,
        data_out,
        sense_in,
        transfer_len: if dir == Direction::None {
            0
        } else {
            transfer_len
        },
        data_in_to_caller,
    }))
}

/// The caller's data regions: dxferp/dxfer_len, or the iovec list truncated to dxfer_len
/// (sg: import_iovec + iov_iter_truncate; an empty result is EINVAL).
pub(crate) fn data_segments(
    abi: Abi,
    hdr: &SgIoHeader,
    list: &[u8],
) -> Result<Vec<IoctlIovec>, Errno> {
    let want = hdr.dxfer_len as u64;
    if hdr.iovec_count == 0 {
        return Ok(if want > 0 && hdr.caller_buffer() {
            vec![iov(hdr.dxferp, want as usize)]
        } else if want > 0 {
            // No caller buffer: data moves to/from the device only; the length still counts.
            vec![IoctlIovec { base: 0, len: want }]
        } else {
            vec![]
        });
    }
    let mut segs = Vec::with_capacity(hdr.iovec_count.into());
    let mut left = want;
    for i in 0..usize::from(hdr.iovec_count) {
        let (base, len) = match abi {
            Abi::Native => {
                let v = super::abi::SgIovec64::read_from_prefix(&list[i * 16..])
                    .map_err(|_| Errno::EINVAL)?
                    .0;
                (v.base, v.len)
            }
            Abi::Compat => {
                let v = super::abi::SgIovec32::read_from_prefix(&list[i * 8..])
                    .map_err(|_| Errno::EINVAL)?
                    .0;
                (u64::from(v.base), u64::from(v.len))
            }
        };
        // import_iovec: a length that is negative as ssize_t is EINVAL.
        if len > isize::MAX as u64 {
            return Err(Errno::EINVAL);
        }
        let take = len.min(left);
        if take > 0 {
            segs.push(IoctlIovec { base, len: take });
            left -= take;
        }
    }
    if segs.is_empty() && want > 0 {
        return Err(Errno::EINVAL);
    }
    Ok(segs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sg::abi::*;
    use zerocopy::IntoBytes;

    const ARG: u64 = 0x7000_0000;
    const CDB: u64 = 0x7100_0000;
    const BUF: u64 = 0x7200_0000;
    const SENSE: u64 = 0x7300_0000;

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
            timeout: 1000,
            ..Default::default()
        }
    }

    fn round<'a>(data: &'a [u8], out_size: u32) -> Round<'a> {
        Round {
            abi: Abi::Native,
            arg: ARG,
            data,
            out_size,
            max_transfer: MAX_ROUND_TRANSFER,
        }
    }

    fn allow(_: &[u8]) -> Result<(), Errno> {
        Ok(())
    }

    fn fetch(step: Step<'_>) -> (Vec<IoctlIovec>, Vec<IoctlIovec>) {
        match step {
            Step::Fetch { input, output } => (input, output),
            other => panic!("expected a fetch, got {other:?}"),
        }
    }

    #[test]
    fn read_in_four_rounds() {
        let h = hdr(SG_DXFER_FROM_DEV, 4096);
        // 1: nothing yet
        let (i, o) = fetch(plan(&round(&[], 0), &allow));
        assert_eq!((i, o), (vec![iov(ARG, 88)], vec![]));
        // 2: the header
        let (i, o) = fetch(plan(&round(h.as_bytes(), 0), &allow));
        assert_eq!((i, o), (vec![iov(ARG, 88), iov(CDB, 10)], vec![]));
        // 3: header + CDB -> the full plan
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]);
        let (i, o) = fetch(plan(&round(&data, 0), &allow));
        assert_eq!(i, vec![iov(ARG, 88), iov(CDB, 10), iov(SENSE, 32)]);
        assert_eq!(o, vec![iov(ARG + 64, 20), iov(SENSE, 32), iov(BUF, 4096)]);
        // 4: execute
        let out_size = 20 + 4096 + 32;
        data.extend_from_slice(&[0xee; 32]);
        match plan(&round(&data, out_size), &allow) {
            Step::Execute(c) => {
                assert_eq!(c.cdb[0], 0x28);
                assert_eq!(c.transfer_len, 4096);
                assert!(c.data_in_to_caller);
                assert!(c.data_out.is_empty());
                assert_eq!(c.sense_in, &[0xee; 32][..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn write_fetches_data_out_with_the_plan() {
        let h = hdr(SG_DXFER_TO_DEV, 512);
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[0x2a; 10]);
        let (i, o) = fetch(plan(&round(&data, 0), &allow));
        assert_eq!(
            i,
            vec![iov(ARG, 88), iov(CDB, 10), iov(BUF, 512), iov(SENSE, 32)]
        );
        assert_eq!(o, vec![iov(ARG + 64, 20), iov(SENSE, 32)]);
        data.extend_from_slice(&[0xab; 512]);
        data.extend_from_slice(&[0xcd; 32]);
        match plan(&round(&data, 52), &allow) {
            Step::Execute(c) => {
                assert_eq!(c.data_out, &[0xab; 512][..]);
                assert_eq!(c.sense_in, &[0xcd; 32][..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn iovec_list_takes_an_extra_round_and_is_truncated_to_dxfer_len() {
        let mut h = hdr(SG_DXFER_FROM_DEV, 6000);
        h.iovec_count = 3;
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[0x28; 10]);
        let (i, _) = fetch(plan(&round(&data, 0), &allow));
        assert_eq!(i, vec![iov(ARG, 88), iov(CDB, 10), iov(BUF, 48)]);
        for (b, l) in [(0x1000u64, 4096u64), (0x9000, 4096), (0x20000, 4096)] {
            data.extend_from_slice(SgIovec64 { base: b, len: l }.as_bytes());
        }
        let (i, o) = fetch(plan(&round(&data, 0), &allow));
        assert_eq!(i.len(), 4);
        assert_eq!(&o[2..4], &[iov(0x1000, 4096), iov(0x9000, 1904)]);
    }

    #[test]
    fn compat_layout_uses_32bit_offsets() {
        let h = SgIoHdr32 {
            interface_id: INTERFACE_ID_V3,
            dxfer_direction: SG_DXFER_NONE,
            cmd_len: 6,
            cmdp: 0x100,
            ..Default::default()
        };
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[0; 6]);
        let r = Round {
            abi: Abi::Compat,
            arg: 0x8000,
            data: &data,
            out_size: 0,
            max_transfer: MAX_ROUND_TRANSFER,
        };
        let (i, o) = fetch(plan(&r, &allow));
        assert_eq!(i, vec![iov(0x8000, 64), iov(0x100, 6)]);
        assert_eq!(o, vec![iov(0x8000 + 44, 20)]);
    }

    #[test]
    fn errors_in_sg_order() {
        let mut v4 = hdr(SG_DXFER_NONE, 0);
        v4.interface_id = b'Q' as i32;
        assert_eq!(
            plan(&round(v4.as_bytes(), 0), &allow),
            Step::Fail(Errno::ENOSYS)
        );
        let mut short = hdr(SG_DXFER_NONE, 0);
        short.cmd_len = 5;
        assert_eq!(
            plan(&round(short.as_bytes(), 0), &allow),
            Step::Fail(Errno::EMSGSIZE)
        );
        // EPERM comes before the transfer checks
        let mut big = hdr(SG_DXFER_FROM_DEV, 256 << 20);
        let mut data = big.as_bytes().to_vec();
        data.extend_from_slice(&[0x2a; 10]);
        let deny = |_: &[u8]| Err(Errno::EPERM);
        assert_eq!(plan(&round(&data, 0), &deny), Step::Fail(Errno::EPERM));
        assert_eq!(plan(&round(&data, 0), &allow), Step::Fail(Errno::EINVAL));
        big.dxfer_len = 1 << 20;
        let mut data = big.as_bytes().to_vec();
        data.extend_from_slice(&[0x28; 10]);
        assert_eq!(plan(&round(&data, 0), &allow), Step::Fail(TOO_LARGE));
    }

    #[test]
    fn null_dxferp_moves_data_but_not_to_the_caller() {
        let mut h = hdr(SG_DXFER_FROM_DEV, 512);
        h.dxferp = 0;
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[0x28; 10]);
        let (_, o) = fetch(plan(&round(&data, 0), &allow));
        assert_eq!(o, vec![iov(ARG + 64, 20), iov(SENSE, 32)]);
        data.extend_from_slice(&[0; 32]);
        match plan(&round(&data, 52), &allow) {
            Step::Execute(c) => assert_eq!((c.transfer_len, c.data_in_to_caller), (512, false)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_header_changed_between_rounds_is_einval() {
        let h = hdr(SG_DXFER_FROM_DEV, 4096);
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[0x28; 10]);
        // last round, but the out size does not match the plan any more
        assert_eq!(plan(&round(&data, 20), &allow), Step::Fail(Errno::EINVAL));
        assert_eq!(
            plan(&round(&data[..90], 0), &allow),
            Step::Fail(Errno::EINVAL)
        );
    }

    #[test]
    fn zero_length_iovec_list_is_einval() {
        let mut h = hdr(SG_DXFER_FROM_DEV, 512);
        h.iovec_count = 1;
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[0x28; 10]);
        data.extend_from_slice(
            SgIovec64 {
                base: 0x1000,
                len: 0,
            }
            .as_bytes(),
        );
        assert_eq!(plan(&round(&data, 0), &allow), Step::Fail(Errno::EINVAL));
    }
}

/// Randomized tests of the two SG_IO front ends against one simulated caller: the retry
/// rounds as the kernel drives them (this planner) and the single round (`direct`) must
/// decide every header alike, name only memory the caller declared, and write back only
/// there (`cargo test fuzz`; PROPTEST_CASES sets the count).
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::sg::abi::*;
    use crate::sg::direct::{self, testing::FakeMemory, CallerMemory, DirectError, MemError};
    use proptest::prelude::*;
    use std::cell::RefCell;
    use zerocopy::IntoBytes;

    const ARG: u64 = 0x1_0000;
    const CDB: u64 = 0x2_0000;
    const LIST: u64 = 0x3_0000;
    const SENSE: u64 = 0x4_0000;
    const BUFS: u64 = 0x10_0000;
    const BUF_SIZE: u64 = 0x1_0000;
    const UNMAPPED: u64 = 0xdead_0000;

    /// A caller: its header fields, the addresses in them, and its iovec list.
    #[derive(Debug, Clone)]
    struct Caller {
        abi: Abi,
        hdr: SgIoHeader,
        header_mapped: bool,
        list: Vec<(u64, u64)>,
        memory_seed: u8,
    }

    fn pointer(mapped: u64) -> impl Strategy<Value = u64> {
        prop_oneof![6 => Just(mapped), 1 => Just(0), 1 => Just(UNMAPPED)]
    }

    fn caller() -> impl Strategy<Value = Caller> {
        let fields = (
            prop_oneof![8 => Just(INTERFACE_ID_V3), 1 => any::<i32>()],
            prop_oneof![
                Just(SG_DXFER_NONE),
                Just(SG_DXFER_TO_DEV),
                Just(SG_DXFER_FROM_DEV),
                Just(SG_DXFER_TO_FROM_DEV),
                any::<i32>()
            ],
            prop_oneof![8 => 6u8..=16, 1 => any::<u8>()],
            any::<u8>(),
            prop_oneof![4 => Just(0u16), 4 => 1u16..6, 1 => any::<u16>()],
            prop_oneof![2 => Just(0u32), 6 => 1u32..40_000, 1 => 100_000u32..200_000, 1 => any::<u32>()],
            prop_oneof![4 => Just(0u32), 1 => Just(SG_FLAG_MMAP_IO), 1 => any::<u32>()],
        );
        let places = (
            pointer(CDB),
            pointer(BUFS),
            pointer(SENSE),
            prop::sample::select(vec![Abi::Native, Abi::Compat]),
            prop_oneof![8 => Just(true), 1 => Just(false)],
            prop::collection::vec(
                (
                    prop_oneof![6 => (0u64..4).prop_map(|i| BUFS + i * BUF_SIZE), 1 => Just(UNMAPPED)],
                    prop_oneof![6 => 0u64..BUF_SIZE, 1 => any::<u64>()],
                ),
                0..6,
            ),
            any::<u8>(),
        );
        (fields, places).prop_map(
            |(
                (id, dir, cmd_len, mx_sb_len, iovec_count, dxfer_len, flags),
                (cmdp, dxferp, sbp, abi, header_mapped, list, memory_seed),
            )| {
                let dxferp = if iovec_count > 0 && dxferp == BUFS {
                    LIST
                } else {
                    dxferp
                };
                Caller {
                    abi,
                    hdr: SgIoHeader {
                        interface_id: id,
                        dxfer_direction: dir,
                        cmd_len,
                        mx_sb_len,
                        iovec_count,
                        dxfer_len,
                        dxferp,
                        cmdp,
                        sbp,
                        timeout: 1000,
                        flags,
                        pack_id: 7,
                        usr_ptr: 0,
                    },
                    header_mapped,
                    list,
                    memory_seed,
                }
            },
        )
    }

    fn encode(abi: Abi, h: &SgIoHeader) -> Vec<u8> {
        match abi {
            Abi::Native => SgIoHdr64 {
                interface_id: h.interface_id,
                dxfer_direction: h.dxfer_direction,
                cmd_len: h.cmd_len,
                mx_sb_len: h.mx_sb_len,
                iovec_count: h.iovec_count,
                dxfer_len: h.dxfer_len,
                dxferp: h.dxferp,
                cmdp: h.cmdp,
                sbp: h.sbp,
                timeout: h.timeout,
                flags: h.flags,
                pack_id: h.pack_id,
                usr_ptr: h.usr_ptr,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
            Abi::Compat => SgIoHdr32 {
                interface_id: h.interface_id,
                dxfer_direction: h.dxfer_direction,
                cmd_len: h.cmd_len,
                mx_sb_len: h.mx_sb_len,
                iovec_count: h.iovec_count,
                dxfer_len: h.dxfer_len,
                dxferp: h.dxferp as u32,
                cmdp: h.cmdp as u32,
                sbp: h.sbp as u32,
                timeout: h.timeout,
                flags: h.flags,
                pack_id: h.pack_id,
                usr_ptr: h.usr_ptr as u32,
                ..Default::default()
            }
            .as_bytes()
            .to_vec(),
        }
    }

    /// The caller's address space: its header, CDB, iovec list, sense buffer, and four
    /// data buffers, filled with bytes that differ per case.
    fn memory(c: &Caller) -> FakeMemory {
        let m = FakeMemory::default();
        let fill = |len: u64, salt: u8| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ salt ^ c.memory_seed)
                .collect()
        };
        if c.header_mapped {
            m.map(ARG, &encode(c.abi, &c.hdr));
        }
        m.map(CDB, &fill(256, 1));
        let mut list = Vec::new();
        for &(base, len) in &c.list {
            match c.abi {
                Abi::Native => list.extend_from_slice(SgIovec64 { base, len }.as_bytes()),
                Abi::Compat => list.extend_from_slice(
                    SgIovec32 {
                        base: base as u32,
                        len: len as u32,
                    }
                    .as_bytes(),
                ),
            }
        }
        m.map(LIST, &list);
        m.map(SENSE, &fill(MAX_SENSE_LEN as u64, 2));
        for i in 0..4 {
            m.map(BUFS + i * BUF_SIZE, &fill(BUF_SIZE, 3 + i as u8));
        }
        m
    }

    /// The permission check: WRITE(10) refused, as for an O_RDONLY opener.
    fn check(cdb: &[u8]) -> Result<(), Errno> {
        if cdb.first() == Some(&0x2a) {
            Err(Errno::EPERM)
        } else {
            Ok(())
        }
    }

    /// What the rounds decided, with the regions the kernel was asked to copy.
    #[derive(Debug)]
    enum Rounds {
        Run {
            cmd: Box<super::super::command::SgCommand>,
            data_out: Vec<u8>,
            data_in_regions: Vec<IoctlIovec>,
        },
        Fail(Errno),
    }

    /// Drives the planner as fuse_do_ioctl() does: each RETRY names in- and out-iovecs, the
    /// kernel copies the in-iovecs (EFAULT if one is not mapped) and asks again.
    fn run_rounds(c: &Caller, m: &FakeMemory, named: &mut Vec<IoctlIovec>) -> Rounds {
        let mut data = Vec::new();
        let mut out_size = 0u32;
        let mut data_in_regions = Vec::new();
        for _ in 0..5 {
            let r = Round {
                abi: c.abi,
                arg: ARG,
                data: &data,
                out_size,
                max_transfer: MAX_ROUND_TRANSFER,
            };
            match plan(&r, &check) {
                Step::Fetch { input, output } => {
                    assert_eq!(out_size, 0, "the last round must end it");
                    assert!(input.len() + output.len() <= FUSE_IOCTL_MAX_IOV);
                    named.extend(input.iter().chain(output.iter()).copied());
                    let mut next = Vec::new();
                    for v in &input {
                        match m.get(v.base, v.len as usize) {
                            Some(b) => next.extend_from_slice(&b),
                            None => return Rounds::Fail(Errno::EFAULT),
                        }
                    }
                    out_size = output.iter().map(|v| v.len as u32).sum();
                    // The out-iovecs: the output fields, the sense buffer if any, data-in.
                    let skip = if c.hdr.sense_capacity() > 0 { 2 } else { 1 };
                    data_in_regions = output.iter().skip(skip).copied().collect();
                    data = next;
                }
                Step::Execute(call) => {
                    assert!(out_size > 0, "execute without out-iovecs");
                    return Rounds::Run {
                        cmd: Box::new(call.command()),
                        data_out: call.data_out.to_vec(),
                        data_in_regions,
                    };
                }
                Step::Fail(e) => return Rounds::Fail(e),
            }
        }
        panic!("no decision in five rounds");
    }

    /// Records every region the direct path reads or writes.
    struct Recording<'m> {
        mem: &'m FakeMemory,
        touched: RefCell<Vec<IoctlIovec>>,
    }

    impl CallerMemory for Recording<'_> {
        fn read(&self, regions: &[IoctlIovec], bufs: &mut [&mut [u8]]) -> Result<(), MemError> {
            self.touched.borrow_mut().extend_from_slice(regions);
            self.mem.read(regions, bufs)
        }
        fn write(&self, regions: &[IoctlIovec], parts: &[&[u8]]) -> Result<(), MemError> {
            self.touched.borrow_mut().extend_from_slice(regions);
            self.mem.write(regions, parts)
        }
    }

    /// Every region lies in what the caller declared: its header, the CDB, the iovec list,
    /// the sense buffer (at most 96 bytes), and the data regions (the linear buffer or the
    /// list's entries, each at most its own length).
    fn declared(c: &Caller, v: &IoctlIovec) -> bool {
        let h = &c.hdr;
        let within = |base: u64, len: u64| {
            v.base >= base && v.base.saturating_add(v.len) <= base.saturating_add(len)
        };
        within(ARG, c.abi.header_len() as u64)
            || within(h.cmdp, h.cmd_len.into())
            || (h.iovec_count > 0
                && within(
                    h.dxferp,
                    u64::from(h.iovec_count) * c.abi.iovec_len() as u64,
                ))
            || within(h.sbp, h.sense_capacity() as u64)
            || (h.iovec_count == 0 && within(h.dxferp, h.dxfer_len.into()))
            || (h.iovec_count > 0
                && c.list
                    .iter()
                    .take(h.iovec_count.into())
                    .any(|&(b, l)| within(b, l)))
            || v.len == 0
    }

    fn snapshot(m: &FakeMemory) -> Vec<(u64, Vec<u8>)> {
        m.ranges
            .lock()
            .iter()
            .map(|(b, v)| (*b, v.clone()))
            .collect()
    }

    proptest! {
        #[test]
        fn the_header_codec_round_trips_both_layouts(c in caller(), h in any::<[u64; 4]>()) {
            let mut hdr = c.hdr;
            hdr.dxferp = h[0];
            hdr.cmdp = h[1];
            hdr.sbp = h[2];
            hdr.usr_ptr = h[3];
            if c.abi == Abi::Compat {
                for p in [&mut hdr.dxferp, &mut hdr.cmdp, &mut hdr.sbp, &mut hdr.usr_ptr] {
                    *p &= 0xffff_ffff;
                }
            }
            let bytes = encode(c.abi, &hdr);
            prop_assert_eq!(bytes.len(), c.abi.header_len());
            prop_assert_eq!(SgIoHeader::decode(c.abi, &bytes), Some(hdr));
            prop_assert_eq!(SgIoHeader::decode(c.abi, &bytes[..bytes.len() - 1]), None);
        }

        #[test]
        fn rounds_and_single_round_decide_alike_within_declared_memory(c in caller()) {
            // Rounds, on their own copy of the caller's memory.
            let m = memory(&c);
            let mut named = Vec::new();
            let rounds = run_rounds(&c, &m, &mut named);
            for v in &named {
                prop_assert!(declared(&c, v), "rounds named {:?} for {:?}", v, c);
            }
            // Single round, then its data-out read, on a fresh copy.
            let fresh = memory(&c);
            let rec = Recording { mem: &fresh, touched: RefCell::new(Vec::new()) };
            let single = direct::decode_sg_io(&rec, c.abi, ARG, &check, MAX_ROUND_TRANSFER, None)
                .and_then(|cmd| {
                    // As the pipeline does: data-out is read only for a write to the device.
                    let mut buf = vec![0u8; cmd.transfer_len];
                    if cmd.data_out_from_caller {
                        direct::read_data_out(&rec, &cmd, &mut buf)
                            .map_err(|_| DirectError::Errno(Errno::EFAULT))?;
                    }
                    Ok((cmd, buf))
                });
            match (&rounds, &single) {
                (Rounds::Fail(a), Err(DirectError::Errno(b))) => prop_assert_eq!(a, b),
                (Rounds::Run { cmd, data_out, data_in_regions }, Ok((dcmd, dbuf))) => {
                    prop_assert_eq!(cmd.header, dcmd.header);
                    prop_assert_eq!(&*cmd.cdb, &*dcmd.cdb);
                    prop_assert_eq!(cmd.transfer_len, dcmd.transfer_len);
                    prop_assert_eq!(cmd.data_out_from_caller, dcmd.data_out_from_caller);
                    prop_assert_eq!(cmd.data_in_to_caller, dcmd.data_in_to_caller);
                    if dcmd.data_out_from_caller {
                        prop_assert_eq!(data_out, dbuf);
                    }
                    if dcmd.data_in_to_caller {
                        prop_assert_eq!(&data_in_regions[..], dcmd.segments.as_slice());
                    }
                    // The results go only where the caller declared them.
                    let before = snapshot(&fresh);
                    let sense = vec![0x70u8; c.hdr.sense_capacity().min(18)];
                    let data_in = vec![0xa5u8; dcmd.transfer_len / 2 + 1];
                    direct::write_results(&rec, c.abi, ARG, dcmd, &[0x5a; 20], &sense, &data_in).ok();
                    let after = snapshot(&fresh);
                    for ((base, old), (_, new)) in before.iter().zip(after.iter()) {
                        for (i, (o, n)) in old.iter().zip(new.iter()).enumerate() {
                            if o != n {
                                let at = IoctlIovec { base: base + i as u64, len: 1 };
                                prop_assert!(
                                    at.base >= ARG + c.abi.output_offset() && at.base < ARG + c.abi.output_offset() + 20
                                        || declared(&c, &at),
                                    "wrote {:#x} for {:?}", at.base, c
                                );
                            }
                        }
                    }
                }
                // The one documented difference (docs/sg-compat.md): the rounds must fetch
                // the sense buffer before the command runs, so an unmapped one is EFAULT
                // before it runs, where sg (and the single round) run it, then fault.
                (Rounds::Fail(Errno::EFAULT), Ok(_))
                    if c.hdr.sense_capacity() > 0 && m.get(c.hdr.sbp, c.hdr.sense_capacity()).is_none() => {}
                (a, b) => prop_assert!(false, "rounds {:?} but single round {:?} for {:?}", a, b, c),
            }
            for v in rec.touched.borrow().iter() {
                prop_assert!(
                    declared(&c, v) || v.base == ARG + c.abi.output_offset(),
                    "single round touched {:?} for {:?}", v, c
                );
            }
        }
    }
}
