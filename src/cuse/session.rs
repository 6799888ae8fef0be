//! A CUSE device: the CUSE_INIT handshake on its own /dev/cuse fd, then the pool of
//! threads that serve it (`pool`), and the poll wake-ups a device sends on its own.

use super::abi::*;
use super::pool::{CuseHandler, Executor, Pool, PoolConfig};
use super::reply::{self, ReplySink};
use super::request::{Operation, Request, Unique};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;

/// What the device accepts per read()/write() (sg headers are 88 bytes; keep it modest).
const MAX_RW: u32 = 128 * 1024;

/// Wakes a poll()ing caller: FUSE_NOTIFY_POLL for a `kh` the kernel gave in a POLL
/// request with FUSE_POLL_SCHEDULE_NOTIFY. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct PollWaker(Arc<dyn ReplySink>);

impl PollWaker {
    pub fn new(sink: Arc<dyn ReplySink>) -> PollWaker {
        PollWaker(sink)
    }

    pub fn wake(&self, kh: u64) {
        let arg = NotifyPollWakeup { kh };
        let header = OutHeader {
            len: (size_of::<OutHeader>() + size_of::<NotifyPollWakeup>()) as u32,
            error: FUSE_NOTIFY_POLL,
            unique: 0,
        };
        // ENOENT: the file was released meanwhile; nobody is left to wake.
        if let Err(e) = self.0.send(&[header.as_bytes(), arg.as_bytes()]) {
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::warn!("poll wake-up for kh {kh:#x}: {e}");
            }
        }
    }
}

/// Name and numbers of the character device to publish.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// DEVNAME, e.g. "mpath-sg/mpatha" (node /dev/mpath-sg/mpatha).
    pub devname: String,
    pub major: u32,
    pub minor: u32,
}

/// Replies written to an fd, each with one writev (/dev/cuse takes a reply whole or not
/// at all).
#[derive(Clone)]
pub(crate) struct FdSink(pub(crate) Arc<OwnedFd>);

impl ReplySink for FdSink {
    fn send(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut small: [io::IoSlice<'_>; 8] = [io::IoSlice::new(&[]); 8];
        let many: Vec<io::IoSlice<'_>>;
        let iov: &[io::IoSlice<'_>] = if parts.len() <= small.len() {
            for (slot, p) in small.iter_mut().zip(parts) {
                *slot = io::IoSlice::new(p);
            }
            &small[..parts.len()]
        } else {
            many = parts.iter().map(|p| io::IoSlice::new(p)).collect();
            &many
        };
        let want: usize = parts.iter().map(|p| p.len()).sum();
        let n = nix::sys::uio::writev(self.0.as_fd(), iov).map_err(io::Error::from)?;
        if n != want {
            return Err(io::Error::other(format!(
                "short reply write: {n} of {want}"
            )));
        }
        Ok(())
    }
}

pub struct CuseDevice<H: CuseHandler> {
    fd: Arc<OwnedFd>,
    pool: Arc<Pool<H>>,
}

impl<H: CuseHandler> CuseDevice<H> {
    /// Opens /dev/cuse, answers CUSE_INIT with `spec`, checks that the kernel published the
    /// device, and starts its threads; `ready` gets the device's executor before any
    /// request is read.
    pub fn create(
        spec: DeviceSpec,
        handler: Arc<H>,
        cfg: PoolConfig,
        ready: impl FnOnce(Executor<H>),
    ) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/cuse")
            .map_err(|e| io::Error::new(e.kind(), format!("open /dev/cuse: {e}")))?;
        let fd = Arc::new(OwnedFd::from(file));
        handshake(&fd, &spec)?;
        blocking_reads(&fd)?;
        let name = spec.devname.rsplit('/').next().unwrap_or("").to_string();
        Self::serve(fd, handler, &name, cfg, Vec::new(), ready)
    }

    /// Serves a device a predecessor published: `fd` is its /dev/cuse fd, inherited (the
    /// handshake was that daemon's), and `replay` the requests it had read and handed
    /// over, handled before any new one is read. With `resend`, the kernel is first asked
    /// to queue again the requests a predecessor that died had read (FUSE_NOTIFY_RESEND):
    /// false when the kernel does not know the notification (before Linux 6.9).
    pub fn adopt(
        fd: OwnedFd,
        handler: Arc<H>,
        name: &str,
        cfg: PoolConfig,
        replay: Vec<Vec<u8>>,
        resend: bool,
        ready: impl FnOnce(Executor<H>),
    ) -> io::Result<(Self, bool)> {
        let fd = Arc::new(fd);
        // The flag belongs to the open file, so it is as the predecessor left it; set
        // anyway.
        blocking_reads(&fd)?;
        let resent = resend && notify_resend(&FdSink(fd.clone()));
        let device = Self::serve(fd, handler, name, cfg, replay, ready)?;
        Ok((device, resent))
    }

    /// Serves requests read from `fd` (the /dev/cuse fd after the handshake, or a test's
    /// SOCK_SEQPACKET socket); `ready` gets the executor before any request is read.
    pub fn serve(
        fd: Arc<OwnedFd>,
        handler: Arc<H>,
        name: &str,
        cfg: PoolConfig,
        replay: Vec<Vec<u8>>,
        ready: impl FnOnce(Executor<H>),
    ) -> io::Result<Self> {
        let sink: Arc<dyn ReplySink> = Arc::new(FdSink(fd.clone()));
        let pool = Pool::start(fd.clone(), sink, handler, name, cfg, replay, ready)?;
        Ok(CuseDevice { fd, pool })
    }

    /// Submits work to this device's threads from any thread.
    pub fn executor(&self) -> Executor<H> {
        Executor::new(&self.pool)
    }

    /// Threads now: (total, reading, busy).
    pub fn threads(&self) -> (usize, usize, usize) {
        self.pool.threads()
    }

    #[cfg(test)]
    pub(crate) fn unjoined(&self) -> usize {
        self.pool.unjoined()
    }

    /// Stops reading requests: those not read yet stay queued in the kernel for whoever
    /// holds the device next. Work in progress, and work submitted later (commands that
    /// waited for a path), still runs. Returns once no thread reads.
    pub fn drain(&self) {
        self.pool.drain();
    }

    /// The /dev/cuse fd, to hand to the service manager's fd store.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Stops the threads (each finishes what it holds), then closes the fd: for
    /// /dev/cuse, the kernel removes the node, and open client fds get ENOTCONN from then
    /// on.
    pub fn join(self) {
        self.pool.stop();
        drop(self.pool);
        drop(self.fd);
    }
}

/// Threads block in read() on a served device: /dev/cuse wakes one reader per request (an
/// exclusive wait), where poll() would wake them all.
fn blocking_reads(fd: &OwnedFd) -> io::Result<()> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) & !OFlag::O_NONBLOCK;
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// FUSE_NOTIFY_RESEND: true if the kernel took it.
fn notify_resend(sink: &dyn ReplySink) -> bool {
    let header = OutHeader {
        len: size_of::<OutHeader>() as u32,
        error: FUSE_NOTIFY_RESEND,
        unique: 0,
    };
    match sink.send(&[header.as_bytes()]) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("FUSE_NOTIFY_RESEND refused: {e}");
            false
        }
    }
}

fn handshake(fd: &Arc<OwnedFd>, spec: &DeviceSpec) -> io::Result<()> {
    let mut buf = vec![0u8; super::pool::REQUEST_BUFFER];
    let deadline = Instant::now() + Duration::from_secs(5);
    let n = loop {
        match nix::unistd::read(fd.as_fd(), &mut buf) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {
                if Instant::now() > deadline {
                    return Err(io::Error::other("no CUSE_INIT from the kernel within 5 s"));
                }
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(100u16));
            }
            Err(e) => return Err(io::Error::other(format!("read CUSE_INIT: {e}"))),
        }
    };
    let req = Request::parse(&buf[..n]).map_err(|e| io::Error::other(format!("{e:?}")))?;
    let Operation::CuseInit(init) = req.op else {
        return Err(io::Error::other("first CUSE request is not CUSE_INIT"));
    };
    if init.major != FUSE_KERNEL_VERSION || init.minor < 16 {
        return Err(io::Error::other(format!(
            "kernel speaks FUSE {}.{}, need 7.16 or later",
            init.major, init.minor
        )));
    }
    if init.flags & CUSE_UNRESTRICTED_IOCTL == 0 {
        return Err(io::Error::other(
            "kernel does not offer CUSE_UNRESTRICTED_IOCTL",
        ));
    }
    let out = CuseInitOut {
        major: FUSE_KERNEL_VERSION,
        minor: init.minor,
        flags: CUSE_UNRESTRICTED_IOCTL,
        max_read: MAX_RW,
        max_write: MAX_RW,
        dev_major: spec.major,
        dev_minor: spec.minor,
        ..Default::default()
    };
    let devinfo = format!("DEVNAME={}\0", spec.devname);
    reply::ok(
        &FdSink(fd.clone()),
        Unique(req.header.unique),
        &[out.as_bytes(), devinfo.as_bytes()],
    )?;
    // A refused init (name or numbers taken) aborts the connection silently: the reply's
    // write succeeds. The kernel registers the device while processing the reply, so the
    // class entry exists now if it ever will.
    let sys = format!("/sys/class/cuse/{}", spec.devname.replace('/', "!"));
    if !Path::new(&sys).exists() {
        return Err(io::Error::other(format!(
            "the kernel refused device {} ({}:{}): name or device number already in use?",
            spec.devname, spec.major, spec.minor
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuse::reply::testing::VecSink;

    #[test]
    fn poll_wake_up_golden_bytes() {
        let sink = Arc::new(VecSink::default());
        PollWaker::new(sink.clone()).wake(0x1122_3344_5566_7788);
        let got = sink.0.lock().pop().unwrap();
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[24u8, 0, 0, 0][..], &[1, 0, 0, 0], &[0; 8],               // len 24, FUSE_NOTIFY_POLL, unique 0
            &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11],         // kh
        ].concat();
        assert_eq!(got, want);
    }
}
