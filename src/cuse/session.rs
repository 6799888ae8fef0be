//! A CUSE device: the CUSE_INIT handshake on its own /dev/cuse fd, then worker threads that
//! read requests, hand them to a [`CuseHandler`] and write the replies.
//!
//! Several workers read the same fd, and the pool grows when all are busy, so a slow SG_IO
//! never blocks another caller or a RELEASE; replies go out in any order, each with one
//! writev. Workers block in read(), which wakes one of them per request; shutdown
//! interrupts them with SIGUSR1.

use super::abi::*;
use super::reply::{self, IoctlReply, ReplySink};
use super::request::{Operation, Request};
use crate::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use parking_lot::Mutex;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::thread::JoinHandleExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;

/// The biggest request: an IOCTL with 128 KiB of caller data. read() on /dev/cuse needs a
/// buffer of at least max(8192, 80 + max_write) or it fails with EINVAL.
pub const REQUEST_BUFFER: usize = 40 + 32 + FUSE_IOCTL_MAX_BYTES + 4096;
/// What the device accepts per read()/write() (sg headers are 88 bytes; keep it modest).
const MAX_RW: u32 = 128 * 1024;

/// Who is calling, as the kernel tells it with each request.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The calling thread's id in the pid namespace of the daemon (0 if not visible there).
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// The request's id, named again by a FUSE_INTERRUPT for it.
    pub unique: u64,
}

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

/// The device's behaviour. Every method must answer; errors become the caller's errno.
pub trait CuseHandler: Send + Sync + 'static {
    /// `flags` are the open(2) flags (without O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC).
    fn open(&self, caller: &Caller, flags: u32) -> Result<u64, Errno>;
    fn release(&self, fh: u64);
    /// `arg.flags` are the file's f_flags (O_NONBLOCK); the reply is the data read.
    fn read(&self, caller: &Caller, arg: &ReadWriteIn) -> Result<Vec<u8>, Errno>;
    /// The bytes written; the reply is how many were taken.
    fn write(&self, caller: &Caller, arg: &ReadWriteIn, data: &[u8]) -> Result<Written, Errno>;
    fn ioctl(&self, caller: &Caller, arg: &IoctlIn, data: &[u8]) -> IoctlReply;
    /// revents, or an errno (ENOSYS makes the kernel assume a default mask for good).
    /// With FUSE_POLL_SCHEDULE_NOTIFY in `arg.flags`, `waker.wake(arg.kh)` must follow
    /// the next change of readiness.
    fn poll(&self, caller: &Caller, arg: &PollIn, waker: &PollWaker) -> Result<u32, Errno>;
    /// The caller of request `unique` got a signal. A request that may wait without bound
    /// (a blocking read) must then end with EINTR: the kernel does not let the caller go,
    /// not even for SIGKILL, before the request is answered. Never answered itself.
    fn interrupt(&self, unique: u64);
}

/// What a write() answers: the count for the caller, and work to do on the same worker
/// once the caller has its answer (sg's write() returns as soon as the command is queued).
pub struct Written {
    pub size: u32,
    pub then: Option<Box<dyn FnOnce() + Send>>,
}

/// Name and numbers of the character device to publish.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// DEVNAME, e.g. "mpath-sg/mpatha" (node /dev/mpath-sg/mpatha).
    pub devname: String,
    pub major: u32,
    pub minor: u32,
}

#[derive(Clone)]
struct FdSink(Arc<OwnedFd>);

impl ReplySink for FdSink {
    fn send(&self, parts: &[&[u8]]) -> io::Result<()> {
        let iov: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
        let want: usize = parts.iter().map(|p| p.len()).sum();
        // /dev/cuse takes a reply whole or not at all.
        let n = nix::sys::uio::writev(self.0.as_fd(), &iov).map_err(io::Error::from)?;
        if n != want {
            return Err(io::Error::other(format!(
                "short reply write: {n} of {want}"
            )));
        }
        Ok(())
    }
}

pub struct CuseDevice {
    fd: Arc<OwnedFd>,
    pool: Arc<Pool>,
}

impl CuseDevice {
    /// Opens /dev/cuse, answers CUSE_INIT with `spec`, checks that the kernel published the
    /// device, and starts `threads` workers.
    pub fn create(
        spec: DeviceSpec,
        handler: Arc<dyn CuseHandler>,
        threads: usize,
    ) -> io::Result<CuseDevice> {
        install_wake_handler()?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/cuse")
            .map_err(|e| io::Error::new(e.kind(), format!("open /dev/cuse: {e}")))?;
        let fd = Arc::new(OwnedFd::from(file));
        handshake(&fd, &spec)?;
        // From now on workers block in read(): /dev/cuse wakes one reader per request
        // (an exclusive wait), where poll() would wake them all.
        let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let flags = OFlag::from_bits_retain(flags) & !OFlag::O_NONBLOCK;
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        let pool = Arc::new(Pool {
            fd: fd.clone(),
            handler,
            name: spec.devname.rsplit('/').next().unwrap_or("").to_string(),
            min: threads.max(1),
            max: threads.max(1).max(MAX_WORKERS),
            idle: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            handles: Mutex::new(Vec::new()),
        });
        for _ in 0..pool.min {
            pool.spawn()?;
        }
        Ok(CuseDevice { fd, pool })
    }

    /// Stops the workers (each finishes the request it holds), then closes /dev/cuse: the
    /// kernel removes the node, and open client fds get ENOTCONN from then on.
    pub fn join(self) {
        self.pool.stopping.store(true, Ordering::SeqCst);
        loop {
            let handles: Vec<_> = std::mem::take(&mut *self.pool.handles.lock());
            if handles.is_empty() {
                break;
            }
            let (done, running): (Vec<_>, Vec<_>) =
                handles.into_iter().partition(|h| h.is_finished());
            for h in done {
                let _ = h.join();
            }
            // A worker blocked in read() leaves it with EINTR; a busy one has SIGUSR1
            // blocked and takes it when done; one that was between its check and read()
            // gets the next signal, 10 ms later.
            for h in &running {
                let _ = nix::sys::pthread::pthread_kill(h.as_pthread_t(), Signal::SIGUSR1);
            }
            self.pool.handles.lock().extend(running);
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(self.pool);
        drop(self.fd);
    }
}

/// Workers of one device. A request can take long (an SG_IO waiting for a path under
/// queue_if_no_path, up to its timeout), so there is always a worker left to read the next
/// one: when the last idle worker takes a request, another is started, up to `max`; a
/// worker that finds more than `min` idle after its request retires.
struct Pool {
    fd: Arc<OwnedFd>,
    handler: Arc<dyn CuseHandler>,
    name: String,
    min: usize,
    max: usize,
    idle: AtomicUsize,
    total: AtomicUsize,
    stopping: AtomicBool,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

/// Upper bound of workers per device: bounds the daemon's threads when many callers wait
/// at once.
const MAX_WORKERS: usize = 64;

extern "C" fn wake(_: libc::c_int) {}

/// SIGUSR1 interrupts a worker's blocking read() at shutdown: installed without SA_RESTART
/// so that read() returns EINTR.
fn install_wake_handler() -> io::Result<()> {
    static ONCE: std::sync::OnceLock<Result<(), nix::errno::Errno>> = std::sync::OnceLock::new();
    let r = ONCE.get_or_init(|| {
        let action = SigAction::new(SigHandler::Handler(wake), SaFlags::empty(), SigSet::empty());
        // SAFETY: `wake` does nothing, so it is async-signal-safe and touches no state;
        // replacing SIGUSR1's disposition affects nothing else in this daemon.
        unsafe { sigaction(Signal::SIGUSR1, &action) }.map(|_| ())
    });
    r.map_err(io::Error::from)
}

impl Pool {
    fn spawn(self: &Arc<Self>) -> io::Result<()> {
        let n = self.total.fetch_add(1, Ordering::SeqCst);
        self.idle.fetch_add(1, Ordering::SeqCst);
        let pool = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("cuse-{}-{n}", self.name))
            .stack_size(256 * 1024)
            .spawn(move || pool.worker());
        match spawned {
            Ok(h) => {
                self.handles.lock().push(h);
                Ok(())
            }
            Err(e) => {
                self.total.fetch_sub(1, Ordering::SeqCst);
                self.idle.fetch_sub(1, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    fn worker(self: Arc<Self>) {
        let sink = FdSink(self.fd.clone());
        let waker = PollWaker::new(Arc::new(sink.clone()));
        let mut buf = vec![0u8; REQUEST_BUFFER];
        // SIGUSR1 may interrupt only the wait for a request, never a request's own work:
        // an SG_IO on a path that a signal interrupts is orphaned by sg, its result lost.
        // A stop signal sent while this worker is busy stays pending until the unblock.
        let mut wake_signal = SigSet::empty();
        wake_signal.add(Signal::SIGUSR1);
        loop {
            let _ = wake_signal.thread_unblock();
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let read = nix::unistd::read(self.fd.as_fd(), &mut buf);
            let _ = wake_signal.thread_block();
            let n = match read {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => continue,
                // ENODEV: the connection was aborted (device removed under us).
                Err(nix::errno::Errno::ENODEV) => return,
                Err(e) => {
                    tracing::error!("read /dev/cuse ({}): {e}", self.name);
                    return;
                }
            };
            if self.idle.fetch_sub(1, Ordering::SeqCst) == 1
                && self.total.load(Ordering::SeqCst) < self.max
            {
                if let Err(e) = self.spawn() {
                    tracing::warn!("device {}: cannot start another worker: {e}", self.name);
                }
            }
            dispatch(&*self.handler, &sink, &waker, &buf[..n]);
            if self.idle.fetch_add(1, Ordering::SeqCst) >= self.min && self.retire() {
                return;
            }
        }
    }

    /// Leave the pool if it has more than `min` workers.
    fn retire(&self) -> bool {
        let mut total = self.total.load(Ordering::SeqCst);
        while total > self.min {
            match self
                .total
                .compare_exchange(total, total - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    self.idle.fetch_sub(1, Ordering::SeqCst);
                    return true;
                }
                Err(t) => total = t,
            }
        }
        false
    }
}

fn handshake(fd: &Arc<OwnedFd>, spec: &DeviceSpec) -> io::Result<()> {
    let mut buf = vec![0u8; REQUEST_BUFFER];
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
        req.header.unique,
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

/// Decode one request, run it, send exactly one reply (none for INTERRUPT).
pub fn dispatch(handler: &dyn CuseHandler, sink: &dyn ReplySink, waker: &PollWaker, bytes: &[u8]) {
    let req = match Request::parse(bytes) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("malformed CUSE request ({e:?}); answering EIO");
            if let Ok((h, _)) = <InHeader as zerocopy::FromBytes>::read_from_prefix(bytes) {
                let _ = reply::error(sink, h.unique, Errno::EIO);
            }
            return;
        }
    };
    let h = req.header;
    let caller = Caller {
        pid: h.pid,
        uid: h.uid,
        gid: h.gid,
        unique: h.unique,
    };
    let unique = h.unique;
    let sent = match req.op {
        Operation::Open(arg) => match handler.open(&caller, arg.flags) {
            Ok(fh) => {
                let out = OpenOut {
                    fh,
                    open_flags: FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE,
                    padding: 0,
                };
                reply::ok(sink, unique, &[out.as_bytes()])
            }
            Err(e) => reply::error(sink, unique, e),
        },
        Operation::Release(arg) => {
            handler.release(arg.fh);
            reply::ok(sink, unique, &[])
        }
        Operation::Read(arg) => match handler.read(&caller, &arg) {
            Ok(data) => reply::ok(sink, unique, &[&data]),
            Err(e) => reply::error(sink, unique, e),
        },
        Operation::Write { arg, data } => match handler.write(&caller, &arg, data) {
            Ok(Written { size, then }) => {
                let out = WriteOut { size, padding: 0 };
                let sent = reply::ok(sink, unique, &[out.as_bytes()]);
                // The pool counts this worker busy until it returns, and starts another
                // reader if it was the last idle one.
                if let Some(job) = then {
                    job();
                }
                sent
            }
            Err(e) => reply::error(sink, unique, e),
        },
        Operation::Ioctl { arg, data } => {
            let r = handler.ioctl(&caller, &arg, data);
            reply::ioctl(sink, unique, &r)
        }
        Operation::Poll(arg) => match handler.poll(&caller, &arg, waker) {
            Ok(revents) => {
                let out = PollOut {
                    revents,
                    padding: 0,
                };
                reply::ok(sink, unique, &[out.as_bytes()])
            }
            Err(e) => reply::error(sink, unique, e),
        },
        // Never answered: a request that finishes anyway needs no reply to its interrupt,
        // and -ENOSYS would switch interrupts off for good (then a blocked read could
        // never be ended). SG_IO runs to completion; see docs/sg-compat.md.
        Operation::Interrupt(arg) => {
            handler.interrupt(arg.unique);
            return;
        }
        Operation::CuseInit(_) | Operation::Unknown(_) => reply::error(sink, unique, Errno::ENOSYS),
    };
    if let Err(e) = sent {
        // ENOENT: the request was aborted (caller gone) before the reply; nothing to do.
        if e.raw_os_error() != Some(libc::ENOENT) {
            tracing::warn!("reply to CUSE request {unique}: {e}");
        }
    }
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
