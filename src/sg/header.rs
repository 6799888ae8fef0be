//! The sg_io_hdr codec: either layout in, one normalized [`SgIoHeader`] out; the output
//! fields computed by sg's rules (`sg_new_read`, `sg_rq_end_io`).

use super::abi::*;
use crate::errno::Errno;
use zerocopy::FromBytes;

/// Which layout the caller uses: native 64-bit, or 32-bit compat (FUSE_IOCTL_COMPAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    Native,
    Compat,
}

impl Abi {
    pub const fn header_len(self) -> usize {
        match self {
            Abi::Native => size_of::<SgIoHdr64>(),
            Abi::Compat => size_of::<SgIoHdr32>(),
        }
    }
    pub const fn iovec_len(self) -> usize {
        match self {
            Abi::Native => size_of::<SgIovec64>(),
            Abi::Compat => size_of::<SgIovec32>(),
        }
    }
    /// Offset of the output fields (status .. info) in the header.
    pub const fn output_offset(self) -> u64 {
        match self {
            Abi::Native => 64,
            Abi::Compat => 44,
        }
    }
}

/// A v3 header with the pointers widened to u64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SgIoHeader {
    pub interface_id: i32,
    pub dxfer_direction: i32,
    pub cmd_len: u8,
    pub mx_sb_len: u8,
    pub iovec_count: u16,
    pub dxfer_len: u32,
    pub dxferp: u64,
    pub cmdp: u64,
    pub sbp: u64,
    pub timeout: u32,
    pub flags: u32,
    pub pack_id: i32,
    pub usr_ptr: u64,
}

impl SgIoHeader {
    /// Decodes the first `abi.header_len()` bytes; None if there are fewer.
    pub fn decode(abi: Abi, bytes: &[u8]) -> Option<SgIoHeader> {
        Some(match abi {
            Abi::Native => {
                let (h, _) = SgIoHdr64::read_from_prefix(bytes).ok()?;
                SgIoHeader {
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
                }
            }
            Abi::Compat => {
                let (h, _) = SgIoHdr32::read_from_prefix(bytes).ok()?;
                SgIoHeader {
                    interface_id: h.interface_id,
                    dxfer_direction: h.dxfer_direction,
                    cmd_len: h.cmd_len,
                    mx_sb_len: h.mx_sb_len,
                    iovec_count: h.iovec_count,
                    dxfer_len: h.dxfer_len,
                    dxferp: h.dxferp.into(),
                    cmdp: h.cmdp.into(),
                    sbp: h.sbp.into(),
                    timeout: h.timeout,
                    flags: h.flags,
                    pack_id: h.pack_id,
                    usr_ptr: h.usr_ptr.into(),
                }
            }
        })
    }

    /// sg_new_write()'s checks on the header alone, in sg's order.
    pub fn validate(&self) -> Result<(), Errno> {
        if self.interface_id != INTERFACE_ID_V3 {
            return Err(Errno::ENOSYS);
        }
        if self.cmdp == 0 || self.cmd_len < 6 || self.cmd_len > MAX_CDB_LEN {
            return Err(Errno::EMSGSIZE);
        }
        Ok(())
    }

    /// Checks sg_start_req() makes on the transfer before mapping it.
    pub fn validate_transfer(&self) -> Result<(), Errno> {
        if self.dxfer_len >= MAX_DXFER_LEN {
            return Err(Errno::EINVAL);
        }
        if self.iovec_count > MAX_IOVEC_COUNT {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// The direction data moves, as sg decides it: anything but TO_DEV and NONE reads
    /// from the device (sg does not validate dxfer_direction).
    pub fn direction(&self) -> Direction {
        if self.dxfer_len == 0 {
            return Direction::None;
        }
        match self.dxfer_direction {
            SG_DXFER_NONE => Direction::None,
            SG_DXFER_TO_DEV => Direction::ToDevice,
            _ => Direction::FromDevice,
        }
    }

    /// The bytes of the caller's sense buffer sg may write: min(mx_sb_len, 96), 0 without sbp.
    pub fn sense_capacity(&self) -> usize {
        if self.sbp == 0 {
            0
        } else {
            usize::from(self.mx_sb_len).min(MAX_SENSE_LEN)
        }
    }

    /// Whether the caller's data buffer takes part (sg: a NULL dxferp or an mmap-ed
    /// transfer moves data to/from the device but not to/from the caller).
    pub fn caller_buffer(&self) -> bool {
        self.dxferp != 0 && self.flags & SG_FLAG_MMAP_IO == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    None,
    ToDevice,
    FromDevice,
}

/// What came back from the device for one command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completion {
    pub status: u8,
    pub host_status: u16,
    pub driver_status: u16,
    pub resid: i32,
    pub duration_ms: u32,
    pub sense: SenseBytes,
}

/// The sense bytes a command returned: at most 96 (SCSI_SENSE_BUFFERSIZE), kept inline
/// so that a completion costs no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SenseBytes {
    len: u8,
    bytes: [u8; MAX_SENSE_LEN],
}

impl SenseBytes {
    /// The first 96 bytes of `s`.
    pub fn from_slice(s: &[u8]) -> SenseBytes {
        let len = s.len().min(MAX_SENSE_LEN);
        let mut bytes = [0u8; MAX_SENSE_LEN];
        bytes[..len].copy_from_slice(&s[..len]);
        SenseBytes {
            len: len as u8,
            bytes,
        }
    }
}

impl Default for SenseBytes {
    fn default() -> SenseBytes {
        SenseBytes {
            len: 0,
            bytes: [0; MAX_SENSE_LEN],
        }
    }
}

impl std::ops::Deref for SenseBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for SenseBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x?}", &**self)
    }
}

/// The output fields and the sense bytes to write back, computed as sg_new_read() does:
/// sense is copied when there is room and either CHECK CONDITION or DRIVER_SENSE, for
/// min(8 + additional length, mx_sb_len, 96) bytes; SG_INFO_CHECK when any status is set.
pub fn output_for(hdr: &SgIoHeader, c: &Completion) -> (SgIoOutput, usize) {
    let masked_status = (c.status >> 1) & 0x7f;
    // sg sets DRIVER_SENSE when, and only when, it copies sense to the caller; the path's
    // own sg set it for the daemon's sense buffer, which says nothing about the caller's.
    let mut driver_status = c.driver_status & !DRIVER_SENSE;
    let sense_valid = c.sense.first().is_some_and(|b| b & 0x70 == 0x70);
    let mut sb_len_wr = 0usize;
    let cap = hdr.sense_capacity();
    if cap > 0 && (masked_status & 0x01 != 0 || sense_valid) {
        driver_status |= DRIVER_SENSE;
        // CHECK_CONDITION (0x01 in masked status terms) or DRIVER_SENSE
        let additional = c.sense.get(7).copied().unwrap_or(0) as usize;
        // sg copies from its zero-filled 96-byte sense buffer, whatever the LU returned:
        // the caller may get zeros past the real sense (see `sense_bytes`).
        sb_len_wr = (8 + additional).min(cap);
    }
    let mut out = SgIoOutput {
        status: c.status,
        masked_status,
        msg_status: 0,
        sb_len_wr: sb_len_wr as u8,
        host_status: c.host_status,
        driver_status,
        resid: c.resid,
        duration: c.duration_ms,
        info: 0,
    };
    if masked_status != 0 || c.host_status != 0 || driver_status != 0 {
        out.info |= SG_INFO_CHECK;
    }
    (out, sb_len_wr)
}

/// The `len` (<= 96) sense bytes sg writes to the caller: the LU's sense, zero-padded
/// (sg copies from its zero-filled 96-byte buffer).
pub fn sense_bytes(c: &Completion, len: usize) -> SenseBytes {
    let mut out = SenseBytes::from_slice(&c.sense);
    out.len = len.min(MAX_SENSE_LEN) as u8;
    out
}

/// The bytes of data-in the device really transferred: dxfer_len less the residual.
pub fn transferred(transfer_len: usize, resid: i32) -> usize {
    transfer_len.saturating_sub(resid.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn native(h: SgIoHdr64) -> SgIoHeader {
        SgIoHeader::decode(Abi::Native, h.as_bytes()).unwrap()
    }

    #[test]
    fn decodes_both_layouts_to_the_same_header() {
        let h64 = SgIoHdr64 {
            interface_id: INTERFACE_ID_V3,
            dxfer_direction: SG_DXFER_FROM_DEV,
            cmd_len: 10,
            mx_sb_len: 32,
            dxfer_len: 4096,
            dxferp: 0x1000,
            cmdp: 0x2000,
            sbp: 0x3000,
            timeout: 20000,
            pack_id: -7,
            usr_ptr: 0x55,
            ..Default::default()
        };
        let h32 = SgIoHdr32 {
            interface_id: INTERFACE_ID_V3,
            dxfer_direction: SG_DXFER_FROM_DEV,
            cmd_len: 10,
            mx_sb_len: 32,
            dxfer_len: 4096,
            dxferp: 0x1000,
            cmdp: 0x2000,
            sbp: 0x3000,
            timeout: 20000,
            pack_id: -7,
            usr_ptr: 0x55,
            ..Default::default()
        };
        let a = native(h64);
        let b = SgIoHeader::decode(Abi::Compat, h32.as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.direction(), Direction::FromDevice);
        assert_eq!(a.sense_capacity(), 32);
    }

    #[test]
    fn golden_native_offsets() {
        let mut bytes = [0u8; 88];
        bytes[0] = b'S';
        bytes[8] = 6; // cmd_len
        bytes[9] = 255; // mx_sb_len
        bytes[10] = 2; // iovec_count
        bytes[24] = 0x10; // cmdp
        bytes[32] = 0x20; // sbp
        bytes[56] = 0x30; // usr_ptr
        let h = SgIoHeader::decode(Abi::Native, &bytes).unwrap();
        assert_eq!((h.cmd_len, h.mx_sb_len, h.iovec_count), (6, 255, 2));
        assert_eq!((h.cmdp, h.sbp, h.usr_ptr), (0x10, 0x20, 0x30));
        assert_eq!(h.sense_capacity(), 96, "sense is capped at 96 bytes");
        assert!(SgIoHeader::decode(Abi::Native, &bytes[..87]).is_none());
    }

    #[test]
    fn validation_errnos_follow_sg() {
        let ok = SgIoHdr64 {
            interface_id: INTERFACE_ID_V3,
            cmd_len: 6,
            cmdp: 1,
            ..Default::default()
        };
        assert_eq!(native(ok).validate(), Ok(()));
        let v4 = SgIoHdr64 {
            interface_id: b'Q' as i32,
            ..ok
        };
        assert_eq!(native(v4).validate(), Err(Errno::ENOSYS));
        for cmd_len in [0u8, 5, 253] {
            let h = SgIoHdr64 { cmd_len, ..ok };
            assert_eq!(
                native(h).validate(),
                Err(Errno::EMSGSIZE),
                "cmd_len {cmd_len}"
            );
        }
        let h = SgIoHdr64 { cmdp: 0, ..ok };
        assert_eq!(native(h).validate(), Err(Errno::EMSGSIZE));
        let h = SgIoHdr64 { cmd_len: 252, ..ok };
        assert_eq!(native(h).validate(), Ok(()));
        let big = SgIoHdr64 {
            dxfer_len: 256 << 20,
            ..ok
        };
        assert_eq!(native(big).validate_transfer(), Err(Errno::EINVAL));
        let many = SgIoHdr64 {
            iovec_count: 1025,
            ..ok
        };
        assert_eq!(native(many).validate_transfer(), Err(Errno::EINVAL));
    }

    #[test]
    fn direction_follows_sg() {
        let base = SgIoHdr64 {
            dxfer_len: 512,
            ..Default::default()
        };
        for (dir, want) in [
            (SG_DXFER_NONE, Direction::None),
            (SG_DXFER_TO_DEV, Direction::ToDevice),
            (SG_DXFER_FROM_DEV, Direction::FromDevice),
            (SG_DXFER_TO_FROM_DEV, Direction::FromDevice),
            (SG_DXFER_UNKNOWN, Direction::FromDevice),
            (42, Direction::FromDevice),
        ] {
            let h = SgIoHdr64 {
                dxfer_direction: dir,
                ..base
            };
            assert_eq!(native(h).direction(), want, "dxfer_direction {dir}");
        }
        let h = SgIoHdr64 {
            dxfer_direction: SG_DXFER_TO_DEV,
            dxfer_len: 0,
            ..base
        };
        assert_eq!(native(h).direction(), Direction::None);
    }

    #[test]
    fn output_with_check_condition_copies_sense() {
        let hdr = SgIoHeader {
            sbp: 0x1000,
            mx_sb_len: 252,
            ..Default::default()
        };
        let mut sense = vec![
            0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0,
        ];
        sense.resize(18, 0);
        let c = Completion {
            status: 0x02,
            driver_status: DRIVER_SENSE,
            sense: SenseBytes::from_slice(&sense),
            ..Default::default()
        };
        let (out, n) = output_for(&hdr, &c);
        assert_eq!(n, 18);
        assert_eq!(out.sb_len_wr, 18);
        assert_eq!(out.masked_status, 0x01);
        assert_eq!(out.driver_status, DRIVER_SENSE);
        assert_eq!(out.info, SG_INFO_CHECK);
    }

    #[test]
    fn output_sense_bounded_by_mx_sb_len_and_absent_without_sbp() {
        let sense = vec![0x70, 0, 0x05, 0, 0, 0, 0, 200];
        let c = Completion {
            status: 0x02,
            driver_status: DRIVER_SENSE,
            sense: SenseBytes::from_slice(&sense),
            ..Default::default()
        };
        let hdr = SgIoHeader {
            sbp: 0x1000,
            mx_sb_len: 8,
            ..Default::default()
        };
        assert_eq!(output_for(&hdr, &c).1, 8);
        let hdr = SgIoHeader {
            sbp: 0x1000,
            mx_sb_len: 255,
            ..Default::default()
        };
        let (out, n) = output_for(&hdr, &c);
        assert_eq!(
            (n, out.sb_len_wr),
            (96, 96),
            "8 + 200 capped at 96, past the 8 real bytes"
        );
        assert_eq!(sense_bytes(&c, n)[8..], [0u8; 88]);
        let hdr = SgIoHeader {
            sbp: 0,
            mx_sb_len: 64,
            ..Default::default()
        };
        let (out, n) = output_for(&hdr, &c);
        assert_eq!((n, out.sb_len_wr), (0, 0));
        assert_eq!(
            out.driver_status, 0,
            "no DRIVER_SENSE when no sense was copied, as sg"
        );
        assert_eq!(out.info, SG_INFO_CHECK);
    }

    #[test]
    fn good_status_sets_no_info() {
        let (out, n) = output_for(&SgIoHeader::default(), &Completion::default());
        assert_eq!((out.info, n), (0, 0));
        let c = Completion {
            host_status: 0x0e,
            ..Default::default()
        };
        assert_eq!(output_for(&SgIoHeader::default(), &c).0.info, SG_INFO_CHECK);
    }
}
