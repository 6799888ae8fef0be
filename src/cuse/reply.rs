//! Replies to the kernel: one `fuse_out_header` plus payload, written with one writev so
//! that concurrent workers never interleave, and the tokens that guarantee every request
//! exactly one reply: each typed reply is consumed by answering, from whichever thread
//! the request completes on; one dropped unanswered (a handler that forgot, or panicked)
//! answers EIO, so that no caller waits for an answer that will never come.

use super::abi::*;
use super::request::{FileHandle, Unique};
use crate::errno::Errno;
use std::io;
use std::sync::Arc;
use zerocopy::IntoBytes;

/// Where replies go: /dev/cuse in the daemon, a buffer in tests.
pub trait ReplySink: Send + Sync {
    /// Write all parts as one message (one writev).
    fn send(&self, parts: &[&[u8]]) -> io::Result<()>;
}

/// The reply to request `unique`, with `payload` after the header.
pub fn ok(sink: &dyn ReplySink, unique: Unique, payload: &[&[u8]]) -> io::Result<()> {
    let len = size_of::<OutHeader>() + payload.iter().map(|p| p.len()).sum::<usize>();
    let header = OutHeader {
        len: len as u32,
        error: 0,
        unique: unique.0,
    };
    // Header plus at most a few parts: no allocation for the usual replies.
    let mut parts: [&[u8]; 8] = [&[]; 8];
    if payload.len() < parts.len() {
        parts[0] = header.as_bytes();
        parts[1..=payload.len()].copy_from_slice(payload);
        return sink.send(&parts[..=payload.len()]);
    }
    let mut all: Vec<&[u8]> = Vec::with_capacity(payload.len() + 1);
    all.push(header.as_bytes());
    all.extend_from_slice(payload);
    sink.send(&all)
}

pub fn error(sink: &dyn ReplySink, unique: Unique, errno: Errno) -> io::Result<()> {
    let header = OutHeader {
        len: size_of::<OutHeader>() as u32,
        error: -errno.get(),
        unique: unique.0,
    };
    sink.send(&[header.as_bytes()])
}

/// What an ioctl answers, as a value (for code that decides without sending).
#[derive(Debug, PartialEq, Eq)]
pub enum IoctlAnswer {
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

fn ioctl_done(sink: &dyn ReplySink, unique: Unique, result: i32, out: &[&[u8]]) -> io::Result<()> {
    let arg = IoctlOut {
        result,
        ..Default::default()
    };
    let mut parts: Vec<&[u8]> = Vec::with_capacity(out.len() + 1);
    parts.push(arg.as_bytes());
    parts.extend_from_slice(out);
    ok(sink, unique, &parts)
}

fn ioctl_retry(
    sink: &dyn ReplySink,
    unique: Unique,
    input: &[IoctlIovec],
    output: &[IoctlIovec],
) -> io::Result<()> {
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

/// As the ioctl's (negative) result, which reaches the caller unchanged, except ENOSYS:
/// fuse_send_ioctl() turns that into ENOTTY in either place.
fn ioctl_error(sink: &dyn ReplySink, unique: Unique, e: Errno) -> io::Result<()> {
    let arg = IoctlOut {
        result: -e.get(),
        ..Default::default()
    };
    ok(sink, unique, &[arg.as_bytes()])
}

/// The one reply owed to a request. Consumed by answering; dropped unanswered, it answers
/// EIO.
pub struct Responder {
    sink: Arc<dyn ReplySink>,
    unique: Unique,
    answered: bool,
}

impl Responder {
    pub fn new(sink: Arc<dyn ReplySink>, unique: Unique) -> Responder {
        Responder {
            sink,
            unique,
            answered: false,
        }
    }

    pub fn unique(&self) -> Unique {
        self.unique
    }

    fn finish(mut self, send: impl FnOnce(&dyn ReplySink, Unique) -> io::Result<()>) {
        self.answered = true;
        report(self.unique, send(&*self.sink, self.unique));
    }

    fn ok(self, payload: &[&[u8]]) {
        self.finish(|s, u| ok(s, u, payload));
    }

    /// Not answered here: the request goes, unanswered, to the daemon's successor.
    fn hand_over(mut self) -> Unique {
        self.answered = true;
        self.unique
    }

    fn error(self, e: Errno) {
        self.finish(|s, u| error(s, u, e));
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            tracing::error!(
                unique = %self.unique,
                "a request was left unanswered (a panic?); answering EIO"
            );
            report(self.unique, error(&*self.sink, self.unique, Errno::EIO));
        }
    }
}

/// A failed reply is logged unless the kernel says the request is gone: ENOENT when the
/// caller was aborted (node removed) or its request already ended.
fn report(unique: Unique, sent: io::Result<()>) {
    if let Err(e) = sent {
        if e.raw_os_error() != Some(libc::ENOENT) {
            tracing::warn!("reply to CUSE request {unique}: {e}");
        }
    }
}

/// The answer to OPEN.
pub struct OpenReply(pub(crate) Responder);

impl OpenReply {
    pub fn opened(self, fh: FileHandle) {
        let out = OpenOut {
            fh: fh.0,
            open_flags: FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE,
            padding: 0,
        };
        self.0.ok(&[out.as_bytes()]);
    }
    pub fn error(self, e: Errno) {
        self.0.error(e);
    }
}

/// The answer to READ: the bytes read (at most the size asked for).
pub struct ReadReply(pub(crate) Responder);

impl ReadReply {
    pub fn unique(&self) -> Unique {
        self.0.unique()
    }
    pub fn data(self, parts: &[&[u8]]) {
        self.0.ok(parts);
    }
    pub fn error(self, e: Errno) {
        self.0.error(e);
    }
    /// Leaves the read unanswered, for the daemon's successor to answer (its request is
    /// handed over).
    pub fn hand_over(self) -> Unique {
        self.0.hand_over()
    }
}

/// An answer to a request this daemon never read, named by an INTERRUPT: one a
/// predecessor read and died holding, on a kernel that cannot resend it. Dropped, it
/// answers nothing.
pub struct OrphanReply {
    sink: Arc<dyn ReplySink>,
    unique: Unique,
}

impl OrphanReply {
    pub fn new(sink: Arc<dyn ReplySink>, unique: Unique) -> OrphanReply {
        OrphanReply { sink, unique }
    }
    pub fn error(self, e: Errno) {
        report(self.unique, error(&*self.sink, self.unique, e));
    }
}

/// The answer to WRITE: how many bytes were taken.
pub struct WriteReply(pub(crate) Responder);

impl WriteReply {
    pub fn unique(&self) -> Unique {
        self.0.unique()
    }
    pub fn written(self, size: u32) {
        let out = WriteOut { size, padding: 0 };
        self.0.ok(&[out.as_bytes()]);
    }
    pub fn error(self, e: Errno) {
        self.0.error(e);
    }
}

/// The answer to IOCTL.
pub struct IoctlReply(pub(crate) Responder);

impl IoctlReply {
    pub fn unique(&self) -> Unique {
        self.0.unique()
    }
    /// The ioctl returns `result`; `out` is copied across the last round's out-iovecs.
    pub fn done(self, result: i32, out: &[&[u8]]) {
        self.0.finish(|s, u| ioctl_done(s, u, result, out));
    }
    pub fn retry(self, input: &[IoctlIovec], output: &[IoctlIovec]) {
        self.0.finish(|s, u| ioctl_retry(s, u, input, output));
    }
    pub fn error(self, e: Errno) {
        self.0.finish(|s, u| ioctl_error(s, u, e));
    }
    pub fn answer(self, a: IoctlAnswer) {
        match a {
            IoctlAnswer::Done { result, out } => self.done(result, &[&out]),
            IoctlAnswer::Retry { input, output } => self.retry(&input, &output),
            IoctlAnswer::Error(e) => self.error(e),
        }
    }
}

/// The answer to POLL: the ready mask.
pub struct PollReply(pub(crate) Responder);

impl PollReply {
    pub fn revents(self, revents: u32) {
        let out = PollOut {
            revents,
            padding: 0,
        };
        self.0.ok(&[out.as_bytes()]);
    }
    pub fn error(self, e: Errno) {
        self.0.error(e);
    }
}

/// The answer to RELEASE (always success: close() cannot fail for the caller).
pub struct ReleaseReply(pub(crate) Responder);

impl ReleaseReply {
    pub fn done(self) {
        self.0.ok(&[]);
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

    impl VecSink {
        /// The replies so far, taken.
        pub fn take(&self) -> Vec<Vec<u8>> {
            std::mem::take(&mut *self.0.lock())
        }
    }

    /// The error field of a reply (0 for success).
    pub fn error_of(reply: &[u8]) -> i32 {
        i32::from_ne_bytes(reply[4..8].try_into().expect("header"))
    }

    /// The unique of a reply.
    pub fn unique_of(reply: &[u8]) -> u64 {
        u64::from_ne_bytes(reply[8..16].try_into().expect("header"))
    }

    /// An ioctl reply's result field.
    pub fn ioctl_result_of(reply: &[u8]) -> i32 {
        i32::from_ne_bytes(reply[16..20].try_into().expect("ioctl_out"))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn token(sink: &Arc<VecSink>, unique: u64) -> Responder {
        Responder::new(sink.clone(), Unique(unique))
    }

    #[test]
    fn retry_reply_golden_bytes() {
        let sink = Arc::new(VecSink::default());
        IoctlReply(token(&sink, 0x42)).retry(
            &[IoctlIovec {
                base: 0x1000,
                len: 88,
            }],
            &[],
        );
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
        error(&sink, Unique(9), Errno::EINVAL).unwrap();
        let got = sink.0.lock().pop().unwrap();
        assert_eq!(got.len(), 16);
        assert_eq!(error_of(&got), -libc::EINVAL);
    }

    #[test]
    fn ioctl_errors_travel_as_negative_results() {
        let sink = Arc::new(VecSink::default());
        IoctlReply(token(&sink, 3)).error(Errno::ENOSYS);
        let got = sink.0.lock().pop().unwrap();
        assert_eq!(got.len(), 32);
        assert_eq!(error_of(&got), 0, "header error 0");
        assert_eq!(ioctl_result_of(&got), -libc::ENOSYS);
    }

    #[test]
    fn done_reply_carries_result_and_data_in_parts() {
        let sink = Arc::new(VecSink::default());
        IoctlReply(token(&sink, 1)).done(30536, &[&[1, 2], &[3, 4]]);
        let got = sink.0.lock().pop().unwrap();
        assert_eq!(
            u32::from_ne_bytes(got[0..4].try_into().unwrap()),
            16 + 16 + 4
        );
        assert_eq!(ioctl_result_of(&got), 30536);
        assert_eq!(&got[32..], &[1, 2, 3, 4]);
    }

    #[test]
    fn an_unanswered_request_gets_eio_once() {
        let sink = Arc::new(VecSink::default());
        drop(ReadReply(token(&sink, 7)));
        ReadReply(token(&sink, 8)).data(&[b"ab"]);
        let got = sink.take();
        assert_eq!(got.len(), 2, "exactly one reply each");
        assert_eq!((unique_of(&got[0]), error_of(&got[0])), (7, -libc::EIO));
        assert_eq!((unique_of(&got[1]), error_of(&got[1])), (8, 0));
        assert_eq!(&got[1][16..], b"ab");
    }

    #[test]
    fn many_parts_still_one_message() {
        let sink = Arc::new(VecSink::default());
        let parts: Vec<&[u8]> = (0..20).map(|_| &b"x"[..]).collect();
        ReadReply(token(&sink, 2)).data(&parts);
        let got = sink.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), 16 + 20);
    }
}
