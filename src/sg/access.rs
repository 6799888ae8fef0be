//! Which commands a caller may send on an fd that is not open O_RDWR: sg's
//! `sg_allow_access()` -> `scsi_cmd_allowed()` (drivers/scsi/scsi_ioctl.c, Linux 5.16+).
//! A caller with CAP_SYS_RAWIO may send anything; sg does not filter O_RDWR fds at all.

/// What an opcode needs on a non-O_RDWR fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Allowed to anyone who could open the node.
    Nothing,
    /// Allowed when the fd was opened for writing (FMODE_WRITE: O_WRONLY here).
    Write,
    /// Only with CAP_SYS_RAWIO.
    RawIo,
}

pub fn needs(opcode: u8) -> Needs {
    match opcode {
        // Basic read-only commands
        0x00 /* TEST UNIT READY */ | 0x03 /* REQUEST SENSE */ | 0x08 /* READ(6) */
        | 0x28 /* READ(10) */ | 0xa8 /* READ(12) */ | 0x88 /* READ(16) */
        | 0x3c /* READ BUFFER */ | 0x37 /* READ DEFECT DATA */ | 0x25 /* READ CAPACITY */
        | 0x3e /* READ LONG */ | 0x12 /* INQUIRY */ | 0x1a /* MODE SENSE(6) */
        | 0x5a /* MODE SENSE(10) */ | 0x4d /* LOG SENSE */ | 0x1b /* START STOP */
        | 0x2f /* VERIFY(10) */ | 0x8f /* VERIFY(16) */ | 0xa0 /* REPORT LUNS */
        | 0x9e /* SERVICE ACTION IN(16) */ | 0x1c /* RECEIVE DIAGNOSTIC */
        | 0xa3 /* MAINTENANCE IN */ | 0x5c /* READ BUFFER CAPACITY */
        // Audio CD commands
        | 0xbc | 0x45 | 0x47 | 0x48 | 0x4b
        // CD/DVD data reading
        | 0xbe | 0xb9 | 0x51 | 0xad | 0x44 | 0x52 | 0x42 | 0x43 | 0xa4 | 0xba | 0x46
        | 0x23 | 0x4a | 0xac | 0x2b | 0x4e
        | 0x95 /* ZBC IN */ => Needs::Nothing,
        // Basic writing commands
        0x0a /* WRITE(6) */ | 0x2a /* WRITE(10) */ | 0x2e /* WRITE AND VERIFY(10) */
        | 0xaa /* WRITE(12) */ | 0xae /* WRITE AND VERIFY(12) */ | 0x8a /* WRITE(16) */
        | 0x3f /* WRITE LONG */ | 0xea /* WRITE LONG(2) */ | 0x41 /* WRITE SAME */
        | 0x93 /* WRITE SAME(16) */
        // The kernel's WRITE_SAME_32 is 0x0d, WRITE SAME(32)'s service action, not an
        // opcode; scsi_cmd_allowed() compares it with cmd[0] all the same, so opcode 0x0d
        // passes for writers and 0x7f (variable-length CDBs) needs CAP_SYS_RAWIO.
        | 0x0d /* "WRITE_SAME_32" */
        | 0x19 /* ERASE */ | 0x55 /* MODE SELECT(10) */ | 0x15 /* MODE SELECT(6) */
        | 0x4c /* LOG SELECT */ | 0xa1 /* BLANK */ | 0x5b /* CLOSE TRACK */
        | 0x35 /* SYNCHRONIZE CACHE */ | 0x04 /* FORMAT UNIT */ | 0x58 | 0x53 | 0xbf
        | 0xa2 | 0x54 | 0x5d | 0xbb | 0x1e /* PREVENT ALLOW MEDIUM REMOVAL */
        | 0xa6 | 0xb6 | 0xa7
        | 0x94 /* ZBC OUT */ => Needs::Write,
        _ => Needs::RawIo,
    }
}

/// sg's decision for a caller on an fd that is not O_RDWR.
pub fn allowed(opcode: u8, fd_writable: bool, has_cap_sys_rawio: bool) -> bool {
    has_cap_sys_rawio
        || match needs(opcode) {
            Needs::Nothing => true,
            Needs::Write => fd_writable,
            Needs::RawIo => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_safe_commands_pass_on_a_read_only_fd() {
        for op in [0x00, 0x12, 0x25, 0x28, 0x88, 0x9e, 0xa0, 0x1a, 0x5a, 0x4d] {
            assert!(allowed(op, false, false), "opcode {op:#x}");
        }
    }

    #[test]
    fn writes_need_a_writable_fd() {
        for op in [0x2a, 0x8a, 0x35, 0x41, 0x15] {
            assert!(!allowed(op, false, false), "opcode {op:#x}");
            assert!(allowed(op, true, false), "opcode {op:#x}");
        }
    }

    #[test]
    fn variable_length_cdbs_need_cap_sys_rawio_and_0x0d_is_a_write() {
        // As scsi_cmd_allowed() in 6.1 and 6.12: WRITE_SAME_32 is 0x0d there.
        assert!(!allowed(0x7f, true, false));
        assert!(allowed(0x7f, false, true));
        assert!(!allowed(0x0d, false, false));
        assert!(allowed(0x0d, true, false));
    }

    #[test]
    fn the_rest_needs_cap_sys_rawio() {
        // PERSISTENT RESERVE IN/OUT, vendor opcodes, WRITE BUFFER, SERVICE ACTION OUT(16)
        for op in [0x5e, 0x5f, 0xc0, 0xff, 0x3b, 0x9f] {
            assert!(!allowed(op, true, false), "opcode {op:#x}");
            assert!(allowed(op, false, true), "opcode {op:#x}");
        }
    }
}
