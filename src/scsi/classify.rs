//! What a completed SG_IO on one path means for failover: the single table.
//!
//! Inputs are what the path's sg returned: the ioctl's errno, or the SCSI status, host
//! byte and sense. The table is written out in docs/failover.md; every row has a test.
//! Sources: failover-semantics.md (blk_path_error(), Wilck's series, qemu's
//! scsi_sense_buf_is_guest_recoverable()).

use super::sense::{key, Sense};
use crate::errno::Errno;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The LU answered (success or a target error): the caller gets it untouched.
    Complete,
    /// The path failed. `maybe_executed`: the LU may have run the command (a timeout, a
    /// lost response), so repeating it is only safe for idempotent commands.
    PathError {
        reason: &'static str,
        maybe_executed: bool,
    },
    /// The LU is moving between ALUA states: try again (another path, or shortly) without
    /// failing this path.
    RetryLater { reason: &'static str },
    /// The port works but its ALUA state serves no I/O (standby, unavailable): the LU
    /// did not process the command (SPC-4 5.15.2.4), so it moves to another port, any
    /// opcode; the port is not failed in device-mapper (it is not dead, and a state
    /// change brings it back, as multipathd's ALUA prioritizer would regroup it).
    PortInactive { reason: &'static str },
    /// The request itself is wrong: the caller gets this errno, nothing is retried.
    CallerError(Errno),
}

use Verdict::*;

const fn path(reason: &'static str, maybe_executed: bool) -> Verdict {
    PathError {
        reason,
        maybe_executed,
    }
}

/// The path's SG_IO ioctl failed with `e` before producing a SCSI result.
pub fn classify_errno(e: Errno) -> Verdict {
    match e.get() {
        // sg refused the request as malformed: the same request fails on every path.
        libc::EFAULT
        | libc::EINVAL
        | libc::EPERM
        | libc::ENOTTY
        | libc::EMSGSIZE
        | libc::ENOSYS
        | libc::ENOMEM
        | libc::EDOM
        | libc::EACCES => CallerError(e),
        // SG_IO on the block device, and sg's write(), return an errno only before the
        // command is issued (sg_io in scsi_ioctl.c, sg_new_write): once issued, the
        // outcome is in the status bytes. (An errno from sg's read(), after the command
        // was sent, is not classified here: see `classify_lost`.)
        // Device offline (ENXIO from sg, ENODEV from the block device), gone, or blocked.
        libc::ENXIO => path("device offline (ENXIO)", false),
        libc::ENODEV => path("device offline or gone (ENODEV)", false),
        libc::EIO => path("I/O error (EIO)", false),
        _ => path("unexpected errno from SG_IO", true),
    }
}

/// The command was sent on a path's sg node, and its read() failed (the result could not
/// be copied, or the fd was refused): the LU may have run it, its result is lost.
pub fn classify_lost(_: Errno) -> Verdict {
    path("result lost after the command was sent", true)
}

/// UNIT ATTENTION 2A/06, ASYMMETRIC ACCESS STATE CHANGED: the LU's ALUA states moved
/// (the caller gets it like any unit attention; the daemon also looks at its ports again).
pub fn alua_state_changed(status: u8, sense: &[u8]) -> bool {
    status & 0xfe == status::CHECK_CONDITION
        && Sense::parse(sense)
            .is_some_and(|s| (s.key, s.asc, s.ascq) == (key::UNIT_ATTENTION, 0x2a, 0x06))
}

/// Host byte values (`include/scsi/scsi_status.h`).
pub mod host {
    pub const DID_OK: u16 = 0x00;
    pub const DID_NO_CONNECT: u16 = 0x01;
    pub const DID_BUS_BUSY: u16 = 0x02;
    pub const DID_TIME_OUT: u16 = 0x03;
    pub const DID_BAD_TARGET: u16 = 0x04;
    pub const DID_ABORT: u16 = 0x05;
    pub const DID_PARITY: u16 = 0x06;
    pub const DID_ERROR: u16 = 0x07;
    pub const DID_RESET: u16 = 0x08;
    pub const DID_BAD_INTR: u16 = 0x09;
    pub const DID_PASSTHROUGH: u16 = 0x0a;
    pub const DID_SOFT_ERROR: u16 = 0x0b;
    pub const DID_IMM_RETRY: u16 = 0x0c;
    pub const DID_REQUEUE: u16 = 0x0d;
    pub const DID_TRANSPORT_DISRUPTED: u16 = 0x0e;
    pub const DID_TRANSPORT_FAILFAST: u16 = 0x0f;
    pub const DID_TARGET_FAILURE: u16 = 0x10;
    pub const DID_NEXUS_FAILURE: u16 = 0x11;
    pub const DID_ALLOC_FAILURE: u16 = 0x12;
    pub const DID_MEDIUM_ERROR: u16 = 0x13;
    pub const DID_TRANSPORT_MARGINAL: u16 = 0x14;
}

/// SCSI status byte values.
pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const CONDITION_MET: u8 = 0x04;
    pub const BUSY: u8 = 0x08;
    pub const RESERVATION_CONFLICT: u8 = 0x18;
    pub const TASK_SET_FULL: u8 = 0x28;
    pub const ACA_ACTIVE: u8 = 0x30;
    pub const TASK_ABORTED: u8 = 0x40;
}

/// The path's SG_IO completed with a SCSI result.
pub fn classify_completion(status: u8, host_status: u16, sense: &[u8]) -> Verdict {
    use host::*;
    match host_status {
        DID_OK => {}
        // Every host byte is reported after the command was handed to the path's
        // queue, and some after it reached the LU: DID_NO_CONNECT also for a remote port
        // lost mid-command, DID_REQUEUE and DID_IMM_RETRY for commands the LLD took back
        // after sending, DID_BUS_BUSY after a bus reset. Only an errno from the path's
        // SG_IO or write() (above) says the command was never issued.
        DID_NO_CONNECT => return path("no connection to the target (DID_NO_CONNECT)", true),
        DID_BUS_BUSY => return path("bus busy (DID_BUS_BUSY)", true),
        DID_TIME_OUT => return path("command timed out (DID_TIME_OUT)", true),
        DID_BAD_TARGET => return path("bad target (DID_BAD_TARGET)", true),
        DID_ABORT => return path("command aborted (DID_ABORT)", true),
        DID_PARITY => return path("parity error (DID_PARITY)", true),
        DID_ERROR => return path("host adapter error (DID_ERROR)", true),
        DID_RESET => return path("bus reset (DID_RESET)", true),
        DID_IMM_RETRY => return path("host asked for a retry (DID_IMM_RETRY)", true),
        DID_REQUEUE => return path("host asked for a requeue (DID_REQUEUE)", true),
        DID_TRANSPORT_DISRUPTED => {
            return path("transport disrupted (DID_TRANSPORT_DISRUPTED)", true)
        }
        DID_TRANSPORT_FAILFAST => return path("transport failfast (DID_TRANSPORT_FAILFAST)", true),
        DID_TRANSPORT_MARGINAL => return path("transport marginal (DID_TRANSPORT_MARGINAL)", true),
        // The LU's own failures, whichever path carried them.
        DID_TARGET_FAILURE | DID_NEXUS_FAILURE | DID_ALLOC_FAILURE | DID_MEDIUM_ERROR => {
            return Complete
        }
        // DID_BAD_INTR, DID_PASSTHROUGH, DID_SOFT_ERROR and unknown values.
        _ => return path("host error", true),
    }
    match status & 0xfe {
        status::CHECK_CONDITION => classify_sense(sense),
        // GOOD, CONDITION MET, INTERMEDIATE, RESERVATION CONFLICT, TASK SET FULL, BUSY,
        // ACA ACTIVE, TASK ABORTED: the LU's answer.
        _ => Complete,
    }
}

fn classify_sense(sense: &[u8]) -> Verdict {
    let Some(s) = Sense::parse(sense) else {
        // CHECK CONDITION without usable sense: nothing says the path is at fault.
        return Complete;
    };
    match (s.key, s.asc, s.ascq) {
        (key::NOT_READY, 0x04, 0x0a) => RetryLater {
            reason: "ALUA state transition (NOT READY 04/0A)",
        },
        // The LU's own refusal through this port (SPC-4 5.15.2.4: the device server
        // terminates the command without processing it): the one answer from beyond the
        // host that says the command did not run.
        (key::NOT_READY, 0x04, 0x0b) => PortInactive {
            reason: "ALUA target port in standby (NOT READY 04/0B)",
        },
        (key::NOT_READY, 0x04, 0x0c) => PortInactive {
            reason: "ALUA target port unavailable (NOT READY 04/0C)",
        },
        (key::HARDWARE_ERROR, 0x08, _) => {
            path("LU communication failure (HARDWARE ERROR 08/xx)", true)
        }
        (key::ABORTED_COMMAND, 0x4b, _) => path("data phase error (ABORTED COMMAND 4B/xx)", true),
        (key::ABORTED_COMMAND, 0x47, _) => path("SCSI parity error (ABORTED COMMAND 47/xx)", true),
        (key::ABORTED_COMMAND, 0x08, _) => {
            path("LU communication failure (ABORTED COMMAND 08/xx)", true)
        }
        // Everything else is about the LU or the command: NO SENSE, RECOVERED ERROR,
        // other NOT READY (becoming ready, medium absent), MEDIUM ERROR, other HARDWARE
        // ERROR, ILLEGAL REQUEST, UNIT ATTENTION (resets, parameter and LUN inventory
        // changes: the application must see them), DATA PROTECT, BLANK CHECK, other
        // ABORTED COMMAND (the initiator retries), VOLUME OVERFLOW, MISCOMPARE.
        _ => Complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed-format sense data (also used by the randomized tests below).
    pub(super) fn sense(k: u8, asc: u8, ascq: u8) -> Vec<u8> {
        let mut v = vec![0u8; 18];
        v[0] = 0x70;
        v[2] = k;
        v[7] = 10;
        v[12] = asc;
        v[13] = ascq;
        v
    }

    fn cc(k: u8, asc: u8, ascq: u8) -> Verdict {
        classify_completion(status::CHECK_CONDITION, 0, &sense(k, asc, ascq))
    }

    fn is_path(v: Verdict, executed: bool) -> bool {
        matches!(v, PathError { maybe_executed, .. } if maybe_executed == executed)
    }

    // ---- errno rows
    #[test]
    fn errno_caller_errors() {
        for e in [
            Errno::EFAULT,
            Errno::EINVAL,
            Errno::EPERM,
            Errno::ENOTTY,
            Errno::EMSGSIZE,
            Errno::ENOSYS,
            Errno::ENOMEM,
            Errno::EDOM,
            Errno::EACCES,
        ] {
            assert_eq!(classify_errno(e), CallerError(e), "{e:?}");
        }
    }
    #[test]
    fn errno_enxio_offline_not_executed() {
        assert!(is_path(classify_errno(Errno::ENXIO), false));
    }
    #[test]
    fn errno_enodev_offline_or_gone_not_executed() {
        assert!(is_path(classify_errno(Errno::ENODEV), false));
    }
    #[test]
    fn errno_eio_not_executed() {
        assert!(is_path(classify_errno(Errno::EIO), false));
    }
    #[test]
    fn errno_unknown_is_a_path_error() {
        assert!(is_path(classify_errno(Errno::EBUSY), true));
    }

    // ---- host byte rows
    #[test]
    fn every_host_error_may_have_executed() {
        for h in [
            host::DID_NO_CONNECT,
            host::DID_BUS_BUSY,
            host::DID_BAD_TARGET,
            host::DID_IMM_RETRY,
            host::DID_REQUEUE,
            host::DID_TRANSPORT_FAILFAST,
            host::DID_TIME_OUT,
            host::DID_ABORT,
            host::DID_PARITY,
            host::DID_ERROR,
            host::DID_RESET,
            host::DID_TRANSPORT_DISRUPTED,
            host::DID_TRANSPORT_MARGINAL,
            host::DID_BAD_INTR,
            host::DID_SOFT_ERROR,
            0x7f,
        ] {
            assert!(is_path(classify_completion(0, h, &[]), true), "host {h:#x}");
        }
    }
    #[test]
    fn host_target_errors_complete() {
        for h in [
            host::DID_TARGET_FAILURE,
            host::DID_NEXUS_FAILURE,
            host::DID_ALLOC_FAILURE,
            host::DID_MEDIUM_ERROR,
        ] {
            assert_eq!(
                classify_completion(status::CHECK_CONDITION, h, &sense(4, 8, 0)),
                Complete,
                "host {h:#x}"
            );
        }
    }

    // ---- status rows
    #[test]
    fn status_answers_of_the_lu_complete() {
        for s in [
            status::GOOD,
            status::CONDITION_MET,
            0x10,
            0x14,
            status::RESERVATION_CONFLICT,
            status::TASK_SET_FULL,
            status::BUSY,
            status::ACA_ACTIVE,
            status::TASK_ABORTED,
        ] {
            assert_eq!(classify_completion(s, 0, &[]), Complete, "status {s:#x}");
        }
    }
    #[test]
    fn check_condition_without_sense_completes() {
        assert_eq!(
            classify_completion(status::CHECK_CONDITION, 0, &[]),
            Complete
        );
    }

    // ---- sense rows
    #[test]
    fn alua_transitioning_retries_later() {
        assert!(matches!(cc(key::NOT_READY, 0x04, 0x0a), RetryLater { .. }));
    }
    #[test]
    fn alua_standby_is_an_inactive_port() {
        assert!(matches!(
            cc(key::NOT_READY, 0x04, 0x0b),
            PortInactive { .. }
        ));
    }
    #[test]
    fn alua_unavailable_is_an_inactive_port() {
        assert!(matches!(
            cc(key::NOT_READY, 0x04, 0x0c),
            PortInactive { .. }
        ));
    }
    #[test]
    fn asymmetric_access_state_changed_is_seen_and_passed_on() {
        let ua = sense(key::UNIT_ATTENTION, 0x2a, 0x06);
        assert!(alua_state_changed(status::CHECK_CONDITION, &ua));
        assert_eq!(
            classify_completion(status::CHECK_CONDITION, 0, &ua),
            Complete
        );
        assert!(!alua_state_changed(status::GOOD, &ua));
        assert!(!alua_state_changed(
            status::CHECK_CONDITION,
            &sense(key::UNIT_ATTENTION, 0x2a, 0x03)
        ));
    }
    #[test]
    fn not_ready_of_the_lu_completes() {
        for (asc, ascq) in [(0x04, 0x01), (0x04, 0x02), (0x3a, 0x00)] {
            assert_eq!(cc(key::NOT_READY, asc, ascq), Complete);
        }
    }
    #[test]
    fn hardware_error_lu_communication_is_a_path_error() {
        for ascq in [0, 1, 2, 3] {
            assert!(is_path(cc(key::HARDWARE_ERROR, 0x08, ascq), true));
        }
    }
    #[test]
    fn other_hardware_errors_complete() {
        assert_eq!(cc(key::HARDWARE_ERROR, 0x44, 0), Complete);
    }
    #[test]
    fn aborted_command_transport_rows_are_path_errors() {
        assert!(is_path(cc(key::ABORTED_COMMAND, 0x4b, 0x00), true));
        assert!(is_path(cc(key::ABORTED_COMMAND, 0x47, 0x01), true));
        assert!(is_path(cc(key::ABORTED_COMMAND, 0x08, 0x00), true));
    }
    #[test]
    fn other_aborted_commands_complete() {
        assert_eq!(cc(key::ABORTED_COMMAND, 0x00, 0x00), Complete);
    }
    #[test]
    fn unit_attentions_go_to_the_caller() {
        for (asc, ascq) in [
            (0x29, 0x00),
            (0x29, 0x02),
            (0x2a, 0x01),
            (0x2a, 0x06),
            (0x3f, 0x0e),
        ] {
            assert_eq!(
                cc(key::UNIT_ATTENTION, asc, ascq),
                Complete,
                "{asc:#x}/{ascq:#x}"
            );
        }
    }
    #[test]
    fn lu_and_command_errors_complete() {
        for k in [
            key::NO_SENSE,
            key::RECOVERED_ERROR,
            key::MEDIUM_ERROR,
            key::ILLEGAL_REQUEST,
            key::DATA_PROTECT,
            key::BLANK_CHECK,
            key::COPY_ABORTED,
            key::VOLUME_OVERFLOW,
            key::MISCOMPARE,
        ] {
            assert_eq!(cc(k, 0x20, 0x00), Complete, "key {k:#x}");
        }
    }
    #[test]
    fn descriptor_sense_is_classified_too() {
        let d = [0x72, key::HARDWARE_ERROR, 0x08, 0x00, 0, 0, 0, 0];
        assert!(is_path(
            classify_completion(status::CHECK_CONDITION, 0, &d),
            true
        ));
        let d = [0x72, key::NOT_READY, 0x04, 0x0b, 0, 0, 0, 0];
        assert!(matches!(
            classify_completion(status::CHECK_CONDITION, 0, &d),
            PortInactive { .. }
        ));
    }
}

/// Randomized tests of the classification (`cargo test fuzz`).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// Sense data in either format, with a given key/ASC/ASCQ.
    fn sense_for(descriptor: bool, k: u8, asc: u8, ascq: u8, tail: &[u8]) -> Vec<u8> {
        let mut s = if descriptor {
            vec![0x72, k, asc, ascq, 0, 0, 0, tail.len() as u8]
        } else {
            super::tests::sense(k, asc, ascq)
        };
        s.extend_from_slice(tail);
        s
    }

    proptest! {
        /// Any bytes at all: a verdict, no panic; sense parsing never reads past the bytes.
        #[test]
        fn any_result_classifies(status in any::<u8>(), host in any::<u16>(), sense in prop::collection::vec(any::<u8>(), 0..100)) {
            let _ = classify_completion(status, host, &sense);
            let _ = Sense::parse(&sense);
        }

        /// Both sense formats carry the same key/ASC/ASCQ to the same verdict.
        #[test]
        fn fixed_and_descriptor_sense_agree(k in 0u8..16, asc in any::<u8>(), ascq in any::<u8>(), tail in prop::collection::vec(any::<u8>(), 0..20)) {
            let fixed = sense_for(false, k, asc, ascq, &tail);
            let desc = sense_for(true, k, asc, ascq, &tail);
            let f = Sense::parse(&fixed).unwrap();
            let d = Sense::parse(&desc).unwrap();
            prop_assert_eq!((f.key, f.asc, f.ascq), (k, asc, ascq));
            prop_assert_eq!((d.key, d.asc, d.ascq), (k, asc, ascq));
            prop_assert_eq!(
                classify_completion(status::CHECK_CONDITION, host::DID_OK, &fixed),
                classify_completion(status::CHECK_CONDITION, host::DID_OK, &desc)
            );
        }

        /// What the LU says about itself reaches the caller untouched, whatever the
        /// details: any status but CHECK CONDITION, and CHECK CONDITION with a unit
        /// attention, an illegal request, data protection or a miscompare.
        #[test]
        fn target_errors_are_never_path_errors(
            st in any::<u8>(),
            k in prop::sample::select(vec![key::UNIT_ATTENTION, key::ILLEGAL_REQUEST, key::DATA_PROTECT, key::MISCOMPARE, key::MEDIUM_ERROR]),
            asc in any::<u8>(), ascq in any::<u8>(), descriptor in any::<bool>(),
        ) {
            let sense = sense_for(descriptor, k, asc, ascq, &[]);
            if st & 0xfe != status::CHECK_CONDITION {
                prop_assert_eq!(classify_completion(st, host::DID_OK, &sense), Complete);
            }
            prop_assert_eq!(classify_completion(status::CHECK_CONDITION, host::DID_OK, &sense), Complete);
            prop_assert_eq!(classify_completion(status::RESERVATION_CONFLICT, host::DID_OK, &sense), Complete);
        }

        /// Every host-byte failure may have run the command: none is repeated as if it
        /// had not (issue: retry safety).
        #[test]
        fn host_byte_errors_may_have_executed(h in 1u16..=0xff, st in any::<u8>()) {
            match classify_completion(st, h, &[]) {
                PathError { maybe_executed, .. } => prop_assert!(maybe_executed),
                Complete => prop_assert!(matches!(h, host::DID_TARGET_FAILURE | host::DID_NEXUS_FAILURE | host::DID_ALLOC_FAILURE | host::DID_MEDIUM_ERROR)),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
