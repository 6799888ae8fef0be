//! Which commands may be sent again after a path error that may have let them execute
//! (a timeout, a host-byte error, a lost response). A path error that happened before the
//! command was issued (the path's SG_IO or write() refused it with an errno) is retried
//! for every command.
//!
//! The rule: a command is repeated only if running it twice leaves the LU, and what the
//! caller is told, as running it once would, on any path (a repeat may go through another
//! I_T nexus). The table is written out in docs/failover.md.

/// SCSI peripheral device types whose commands move a medium or a position, so that no
/// command is repeated: sequential-access (tape) and medium changer.
const TYPE_TAPE: i32 = 0x01;
const TYPE_MEDIUM_CHANGER: i32 = 0x08;
/// Host-managed zoned block device: a write to a sequential-write-required zone advances
/// the zone's write pointer, so a write that landed fails when repeated (unaligned write)
/// and the caller would be told that a write it made had failed.
const TYPE_ZBC: i32 = 0x14;

pub fn safe_to_repeat(cdb: &[u8], scsi_type: i32) -> bool {
    if scsi_type == TYPE_TAPE || scsi_type == TYPE_MEDIUM_CHANGER {
        return false;
    }
    let Some(&op) = cdb.first() else { return false };
    let reads = matches!(
        op,
        0x00 // TEST UNIT READY
        | 0x08 | 0x28 | 0xa8 | 0x88 // READ 6/10/12/16
        | 0x2f | 0xaf | 0x8f // VERIFY 10/12/16
        | 0x35 | 0x91 // SYNCHRONIZE CACHE 10/16
        | 0x12 // INQUIRY
        | 0x25 // READ CAPACITY(10)
        | 0x9e // SERVICE ACTION IN(16): READ CAPACITY(16), GET LBA STATUS, ...
        | 0x1a | 0x5a // MODE SENSE 6/10
        | 0x4d // LOG SENSE
        | 0xa0 // REPORT LUNS
        | 0xa3 // MAINTENANCE IN: REPORT TARGET PORT GROUPS, ...
        | 0x5e // PERSISTENT RESERVE IN
        | 0x3c // READ BUFFER
        | 0x37 | 0xb7 // READ DEFECT DATA
        | 0x1c // RECEIVE DIAGNOSTIC RESULTS
        | 0x95 // ZBC IN (REPORT ZONES)
    );
    // The same data to the same blocks: what dm-multipath itself requeues for block I/O.
    let writes = matches!(
        op,
        0x0a | 0x2a | 0xaa | 0x8a // WRITE 6/10/12/16
        | 0x2e | 0xae | 0x8e // WRITE AND VERIFY 10/12/16
    );
    reads || (writes && scsi_type != TYPE_ZBC)
    // Everything else is not repeated after a maybe-executed failure, among them:
    // - REQUEST SENSE (0x03): the first one may have consumed the sense data it lost;
    // - UNMAP (0x42), WRITE SAME 10/16/32 (0x41/0x93/0x7f): long-running, so the likeliest
    //   to time out on a healthy path, and a repeat after another initiator has written
    //   the range deallocates or overwrites that write (a WRITE of the caller's own data
    //   carries the data it means; a deallocation does not);
    // - MODE SELECT (0x15/0x55), START STOP UNIT (0x1b), PREVENT ALLOW MEDIUM REMOVAL
    //   (0x1e): state changes that raise unit attentions for other initiators, or (the
    //   prevention) count per I_T nexus, so a repeat on another path adds a second one;
    // - COMPARE AND WRITE (0x89): the first may have written, the repeat then miscompares;
    // - PERSISTENT RESERVE OUT (0x5f), RESERVE/RELEASE (0x16/0x17/0x56/0x57), WRITE
    //   BUFFER (0x3b), FORMAT UNIT (0x04), SANITIZE (0x48), LOG SELECT (0x4c), ZBC OUT
    //   (0x94), EXTENDED COPY (0x83), ORWRITE (0x8b), ATOMIC WRITE (0x9c), variable-length
    //   CDBs (0x7f), vendor-specific opcodes.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_inquiries_repeat() {
        for op in [
            0x00u8, 0x28, 0x2a, 0x88, 0x8a, 0x2e, 0x12, 0x25, 0x9e, 0xa0, 0x5e, 0x35, 0x1a,
        ] {
            assert!(safe_to_repeat(&[op, 0, 0, 0, 0, 0], 0), "{op:#x}");
        }
    }

    #[test]
    fn state_changing_commands_do_not() {
        for op in [
            0x89u8, 0x5f, 0x16, 0x17, 0x56, 0x57, 0x3b, 0x04, 0x48, 0x4c, 0x94, 0x83, 0xc1, 0x03,
            0x42, 0x41, 0x93, 0x7f, 0x15, 0x55, 0x1b, 0x1e, 0x8b, 0x9c,
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

    #[test]
    fn writes_do_not_repeat_on_a_host_managed_zoned_device() {
        assert!(!safe_to_repeat(&[0x8a; 16], TYPE_ZBC));
        assert!(!safe_to_repeat(&[0x2a; 10], TYPE_ZBC));
        assert!(safe_to_repeat(&[0x88; 16], TYPE_ZBC), "reads still do");
    }
}

/// Randomized tests (`cargo test fuzz`).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The answer depends on the opcode and the device type alone: no service action,
        /// length or flag in the rest of the CDB makes a command repeatable.
        #[test]
        fn only_the_opcode_and_device_type_decide(
            cdb in prop::collection::vec(any::<u8>(), 1..32), rest in prop::collection::vec(any::<u8>(), 0..32), t in -1i32..0x20,
        ) {
            let mut other = vec![cdb[0]];
            other.extend_from_slice(&rest);
            prop_assert_eq!(safe_to_repeat(&cdb, t), safe_to_repeat(&other, t));
            prop_assert!(!safe_to_repeat(&[], t));
            if t == TYPE_TAPE || t == TYPE_MEDIUM_CHANGER {
                prop_assert!(!safe_to_repeat(&cdb, t));
            }
        }
    }
}
