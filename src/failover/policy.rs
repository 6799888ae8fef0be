//! Which commands may be sent again after a path error that may have let them execute
//! (a timeout, a lost response). A path error that happened before the command reached the
//! LU (device offline, no connection, ALUA standby) is always retried.
//! The policy is written out in docs/failover.md.

/// SCSI peripheral device type of sequential-access (tape) and medium changer devices:
/// their commands move the medium or a position, so none is repeated.
const TYPE_TAPE: i32 = 0x01;
const TYPE_MEDIUM_CHANGER: i32 = 0x08;

pub fn safe_to_repeat(cdb: &[u8], scsi_type: i32) -> bool {
    if scsi_type == TYPE_TAPE || scsi_type == TYPE_MEDIUM_CHANGER {
        return false;
    }
    let Some(&op) = cdb.first() else { return false };
    matches!(
        op,
        0x00 // TEST UNIT READY
        | 0x03 // REQUEST SENSE
        | 0x08 | 0x28 | 0xa8 | 0x88 // READ 6/10/12/16
        | 0x0a | 0x2a | 0xaa | 0x8a // WRITE 6/10/12/16: same data to the same blocks
        | 0x2e | 0xae | 0x8e // WRITE AND VERIFY 10/12/16
        | 0x41 | 0x93 // WRITE SAME 10/16
        | 0x2f | 0xaf | 0x8f // VERIFY 10/12/16
        | 0x35 | 0x91 // SYNCHRONIZE CACHE 10/16
        | 0x42 // UNMAP
        | 0x12 // INQUIRY
        | 0x25 // READ CAPACITY(10)
        | 0x9e // SERVICE ACTION IN(16): READ CAPACITY(16), GET LBA STATUS, ...
        | 0x1a | 0x5a // MODE SENSE 6/10
        | 0x15 | 0x55 // MODE SELECT 6/10: sets the same parameters again
        | 0x4d // LOG SENSE
        | 0xa0 // REPORT LUNS
        | 0xa3 // MAINTENANCE IN: REPORT TARGET PORT GROUPS, ...
        | 0x5e // PERSISTENT RESERVE IN
        | 0x3c // READ BUFFER
        | 0x37 | 0xb7 // READ DEFECT DATA
        | 0x1c // RECEIVE DIAGNOSTIC RESULTS
        | 0x1b // START STOP UNIT
        | 0x1e // PREVENT ALLOW MEDIUM REMOVAL
        | 0x95 // ZBC IN (REPORT ZONES)
    )
    // Everything else is not repeated after a maybe-executed failure, among them:
    // COMPARE AND WRITE (0x89), PERSISTENT RESERVE OUT (0x5f), RESERVE/RELEASE
    // (0x16/0x17/0x56/0x57), WRITE BUFFER (0x3b), FORMAT UNIT (0x04), SANITIZE (0x48),
    // LOG SELECT (0x4c), ZBC OUT (0x94), EXTENDED COPY (0x83), vendor-specific opcodes.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_inquiries_repeat() {
        for op in [
            0x00u8, 0x28, 0x2a, 0x88, 0x8a, 0x12, 0x25, 0x9e, 0xa0, 0x5e, 0x35,
        ] {
            assert!(safe_to_repeat(&[op, 0, 0, 0, 0, 0], 0), "{op:#x}");
        }
    }

    #[test]
    fn state_changing_commands_do_not() {
        for op in [
            0x89u8, 0x5f, 0x16, 0x17, 0x56, 0x57, 0x3b, 0x04, 0x48, 0x4c, 0x94, 0x83, 0xc1,
        ] {
            assert!(!safe_to_repeat(&[op, 0, 0, 0, 0, 0], 0), "{op:#x}");
        }
    }

    #[test]
    fn nothing_repeats_on_tape() {
        assert!(!safe_to_repeat(&[0x08, 0, 0, 0, 1, 0], TYPE_TAPE));
        assert!(!safe_to_repeat(&[0x00, 0, 0, 0, 0, 0], TYPE_MEDIUM_CHANGER));
        assert!(!safe_to_repeat(&[], 0));
    }
}
