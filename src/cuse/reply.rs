//! Replies to the kernel: one `fuse_out_header` plus payload, written with one writev so
//! that concurrent workers never interleave.

use super::abi::*;
use crate::errno::Errno;
use std::io;
use zerocopy::IntoBytes;

/// Where replies go: /dev/cuse in the daemon, a buffer in tests.
pub trait ReplySink: Send + Sync {
    /// Write all parts as one message (one writev).
    fn send(&self, parts: &[&[u8]]) -> io::Result<()>;
}

/// The reply to request `unique`, with `payload` after the header.
pub fn ok(sink: &dyn ReplySink, unique: u64, payload: &[&[u8]]) -> io::Result<()> {
    let len = size_of::<OutHeader>() + payload.iter().map(|p| p.len()).sum::<usize>();
    let header = OutHeader {
        len: len as u32,
        error: 0,
        unique,
    };
    let mut parts: Vec<&[u8]> = Vec::with_capacity(payload.len() + 1);
    parts.push(header.as_bytes());
    parts.extend_from_slice(payload);
    sink.send(&parts)
}

pub fn error(sink: &dyn ReplySink, unique: u64, errno: Errno) -> io::Result<()> {
    let header = OutHeader {
        len: size_of::<OutHeader>() as u32,
        error: -errno.get(),
        unique,
    };
    sink.send(&[header.as_bytes()])
}

/// What an ioctl handler answers.
#[derive(Debug, PartialEq, Eq)]
pub enum IoctlReply {
    /// The ioctl's return value, and the bytes to copy to the last round's out-iovecs.
    Done {
        result: i32,
        out: Vec<u8>,
    },
    /// Fetch these regions of the caller's memory and ask again.
    Retry {
        input: Vec<IoctlIovec>,
        output: Vec<IoctlIovec>,
    },
    Error(Errno),
}

pub fn ioctl(sink: &dyn ReplySink, unique: u64, reply: &IoctlReply) -> io::Result<()> {
    match reply {
        IoctlReply::Done { result, out } => {
            let arg = IoctlOut {
                result: *result,
                ..Default::default()
            };
            ok(sink, unique, &[arg.as_bytes(), out])
        }
        IoctlReply::Retry { input, output } => {
            let arg = IoctlOut {
                result: 0,
                flags: ioctl_flags::RETRY,
                in_iovs: input.len() as u32,
                out_iovs: output.len() as u32,
            };
            ok(
                sink,
                unique,
                &[arg.as_bytes(), input.as_bytes(), output.as_bytes()],
            )
        }
        // As the ioctl's (negative) result, which reaches the caller unchanged, except
        // ENOSYS: fuse_send_ioctl() turns that into ENOTTY in either place.
        IoctlReply::Error(e) => {
            let arg = IoctlOut {
                result: -e.get(),
                ..Default::default()
            };
            ok(sink, unique, &[arg.as_bytes()])
        }
    }
}

#[cfg(test)]
pub mod testing {
    use super::*;
    use parking_lot::Mutex;

    /// Collects every reply as one byte vector.
    #[derive(Default)]
    pub struct VecSink(pub Mutex<Vec<Vec<u8>>>);

    impl ReplySink for VecSink {
        fn send(&self, parts: &[&[u8]]) -> io::Result<()> {
            self.0.lock().push(parts.concat());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::VecSink;
    use super::*;

    #[test]
    fn retry_reply_golden_bytes() {
        let sink = VecSink::default();
        let reply = IoctlReply::Retry {
            input: vec![IoctlIovec {
                base: 0x1000,
                len: 88,
            }],
            output: vec![],
        };
        ioctl(&sink, 0x42, &reply).unwrap();
        let got = sink.0.lock().pop().unwrap();
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[48u8, 0, 0, 0][..], &[0, 0, 0, 0], &[0x42, 0, 0, 0, 0, 0, 0, 0], // out header
            &[0, 0, 0, 0], &[4, 0, 0, 0], &[1, 0, 0, 0], &[0, 0, 0, 0],          // ioctl_out: RETRY, 1 in, 0 out
            &[0, 0x10, 0, 0, 0, 0, 0, 0], &[88, 0, 0, 0, 0, 0, 0, 0],            // iovec
        ].concat();
        assert_eq!(got, want);
    }

    #[test]
    fn error_reply_is_header_only_with_negative_errno() {
        let sink = VecSink::default();
        error(&sink, 9, Errno::EINVAL).unwrap();
        let got = sink.0.lock().pop().unwrap();
        assert_eq!(got.len(), 16);
        assert_eq!(
            i32::from_ne_bytes(got[4..8].try_into().unwrap()),
            -libc::EINVAL
        );
    }

    #[test]
    fn ioctl_errors_travel_as_negative_results() {
        let sink = VecSink::default();
        ioctl(&sink, 3, &IoctlReply::Error(Errno::ENOSYS)).unwrap();
        let got = sink.0.lock().pop().unwrap();
        assert_eq!(got.len(), 32);
        assert_eq!(
            i32::from_ne_bytes(got[4..8].try_into().unwrap()),
            0,
            "header error 0"
        );
        assert_eq!(
            i32::from_ne_bytes(got[16..20].try_into().unwrap()),
            -libc::ENOSYS
        );
    }

    #[test]
    fn done_reply_carries_result_and_data() {
        let sink = VecSink::default();
        let reply = IoctlReply::Done {
            result: 30536,
            out: vec![1, 2, 3, 4],
        };
        ioctl(&sink, 1, &reply).unwrap();
        let got = sink.0.lock().pop().unwrap();
        assert_eq!(
            u32::from_ne_bytes(got[0..4].try_into().unwrap()),
            16 + 16 + 4
        );
        assert_eq!(i32::from_ne_bytes(got[16..20].try_into().unwrap()), 30536);
        assert_eq!(&got[32..], &[1, 2, 3, 4]);
    }
}
