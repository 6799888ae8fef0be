//! The threads of one CUSE device. Any of them may read /dev/cuse; whichever reads a
//! request handles it (no hand-off, no extra wake-up), and the pool keeps one rule: a
//! thread may only start work that can block (a command on a path, the caller's memory)
//! while another thread reads /dev/cuse meanwhile, so INTERRUPT, RELEASE, POLL and every
//! other caller's requests are always read and answered. A request that has to wait for
//! something (a blocking read(), a command waiting for a path) holds no thread at all:
//! the handler keeps its reply token and answers from wherever the wait ends.
//!
//! Threads are bounded: each device keeps `min` of them and may always run one more;
//! beyond that, each extra thread takes a slot of a `ThreadBudget` shared by all devices,
//! up to `max` per device. Work that cannot start now (every thread busy, no thread may
//! be added) waits in the device's queue for the next thread that finishes; the handler
//! can also submit work from other threads (`Executor`). A panic in a handler or a job
//! costs no thread: it is caught, its reply token answers EIO as it unwinds, the thread
//! goes on.

use super::abi::*;
use super::reply::*;
use super::request::{Caller, FileHandle, Operation, Request, Unique};
use super::session::PollWaker;
use crate::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::thread::JoinHandleExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// The biggest request: an IOCTL with 128 KiB of caller data. read() on /dev/cuse needs a
/// buffer of at least max(8192, 80 + max_write) or it fails with EINVAL.
pub const REQUEST_BUFFER: usize = 40 + 32 + FUSE_IOCTL_MAX_BYTES + 4096;

/// The device's behaviour. Each method gets the request's reply token and must answer
/// with it, now or later, from any thread.
pub trait CuseHandler: Send + Sync + Sized + 'static {
    /// State each thread keeps across requests (the daemon's data buffer).
    type Local: Default + Send + 'static;
    /// `flags` are the open(2) flags (without O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC).
    fn open(&self, caller: &Caller, flags: u32, reply: OpenReply);
    fn release(&self, fh: FileHandle, reply: ReleaseReply);
    /// `arg.flags` are the file's f_flags (O_NONBLOCK).
    fn read(
        &self,
        caller: &Caller,
        arg: &ReadWriteIn,
        reply: ReadReply,
        worker: &mut Worker<'_, Self>,
    );
    fn write(
        &self,
        caller: &Caller,
        arg: &ReadWriteIn,
        data: &[u8],
        reply: WriteReply,
        worker: &mut Worker<'_, Self>,
    );
    fn ioctl(
        &self,
        caller: &Caller,
        arg: &IoctlIn,
        data: &[u8],
        reply: IoctlReply,
        worker: &mut Worker<'_, Self>,
    );
    /// With FUSE_POLL_SCHEDULE_NOTIFY in `arg.flags`, `waker.wake(arg.kh)` must follow the
    /// next change of readiness. ENOSYS makes the kernel assume a default mask for good.
    fn poll(&self, caller: &Caller, arg: &PollIn, waker: &PollWaker, reply: PollReply);
    /// The caller of request `unique` got a signal. A request that waits (a blocking read,
    /// a command not yet on a path) should end with EINTR: the kernel does not let the
    /// caller go, not even for SIGKILL, before the request is answered. The interrupt
    /// itself is never answered. `orphan` is given when request `unique` was not read by
    /// this daemon (its id is below every request read so far, and it was not resent): a
    /// predecessor read it and died, if one did. It answers that request directly;
    /// dropped, it answers nothing.
    fn interrupt(&self, unique: Unique, orphan: Option<OrphanReply>);
}

/// Work for a device's thread, with that thread's local state.
pub type Job<L> = Box<dyn FnOnce(&mut L) + Send>;

/// Threads beyond each device's `min + 1`, shared by all devices: one device's load
/// cannot take every thread the daemon may start.
pub struct ThreadBudget {
    limit: usize,
    used: AtomicUsize,
}

impl ThreadBudget {
    pub fn new(limit: usize) -> ThreadBudget {
        ThreadBudget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
    }

    /// Slots in use now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
pub struct PoolConfig {
    /// Threads kept while idle (at least 1).
    pub min: usize,
    /// Threads at most.
    pub max: usize,
    pub budget: Arc<ThreadBudget>,
}

struct State<L> {
    /// Threads in read() or on their way there, holding no request.
    readers: usize,
    /// Threads holding a request or running a job.
    busy: usize,
    total: usize,
    queue: VecDeque<Job<L>>,
    stopping: bool,
    /// No thread reads /dev/cuse any more (the daemon hands the device to its
    /// successor); queued and submitted work still runs, on threads started for it.
    draining: bool,
}

/// Where requests come from and replies go: the device's /dev/cuse fd (any fd that reads
/// one request per read() and takes one reply per write, such as a SOCK_SEQPACKET socket
/// in tests).
pub(crate) struct Pool<H: CuseHandler> {
    fd: Arc<OwnedFd>,
    sink: Arc<dyn ReplySink>,
    handler: Arc<H>,
    name: String,
    cfg: PoolConfig,
    state: Mutex<State<H::Local>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    me: Weak<Pool<H>>,
    /// Requests a predecessor had read and handed over, handled before the first read.
    replay: Mutex<Vec<Vec<u8>>>,
    /// The lowest request id read (INTERRUPTs and resent requests aside), recorded right
    /// after the read: an INTERRUPT naming a lower one is for a request this daemon never
    /// read.
    first_unique: AtomicU64,
}

/// The handler's view of the thread that handles a request.
pub struct Worker<'a, H: CuseHandler> {
    pool: &'a Arc<Pool<H>>,
    local: &'a mut H::Local,
}

impl<H: CuseHandler> Worker<'_, H> {
    /// Whether this thread may now do work that can block (a command on a path, the
    /// caller's memory): true when another thread reads /dev/cuse meanwhile, starting one
    /// if that is allowed. When false, hand the work to `defer`.
    pub fn may_block(&mut self) -> bool {
        let pool = self.pool;
        let mut st = pool.state.lock();
        // Draining: nobody reads any more, so nothing waits for this thread.
        if st.readers >= 1 || st.draining {
            return true;
        }
        if pool.take_thread_slot(&st) {
            st.total += 1;
            st.readers += 1;
            drop(st);
            if pool.spawn(None).is_ok() {
                return true;
            }
            let mut st = pool.state.lock();
            st.total -= 1;
            st.readers -= 1;
            pool.slot_released(st.total);
        }
        false
    }

    /// The device's handler (for work that outlives this call).
    pub fn handler(&self) -> &Arc<H> {
        &self.pool.handler
    }

    /// This thread's local state.
    pub fn local(&mut self) -> &mut H::Local {
        self.local
    }

    /// Run `job` on this device's next free thread.
    pub fn defer(&self, job: Job<H::Local>) {
        self.pool.submit(job);
    }

    /// A handle to submit work to this device from any thread.
    pub fn executor(&self) -> Executor<H> {
        Executor(self.pool.me.clone())
    }
}

/// Submits work to a device's threads from anywhere (a timer, the daemon's main loop).
pub struct Executor<H: CuseHandler>(Weak<Pool<H>>);

impl<H: CuseHandler> Clone for Executor<H> {
    fn clone(&self) -> Self {
        Executor(self.0.clone())
    }
}

impl<H: CuseHandler> Executor<H> {
    pub(crate) fn new(pool: &Arc<Pool<H>>) -> Executor<H> {
        Executor(Arc::downgrade(pool))
    }

    /// Runs `job` on one of the device's threads. Dropped (its reply tokens answering
    /// EIO) if the device is gone or stopping.
    pub fn submit(&self, job: Job<H::Local>) {
        if let Some(pool) = self.0.upgrade() {
            pool.submit(job);
        }
    }
}

extern "C" fn wake(_: libc::c_int) {}

/// SIGUSR1 interrupts a thread's blocking read() at shutdown: installed without
/// SA_RESTART so that read() returns EINTR.
pub(crate) fn install_wake_handler() -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler};
    static ONCE: std::sync::OnceLock<Result<(), nix::errno::Errno>> = std::sync::OnceLock::new();
    let r = ONCE.get_or_init(|| {
        let action = SigAction::new(SigHandler::Handler(wake), SaFlags::empty(), SigSet::empty());
        // SAFETY: `wake` does nothing, so it is async-signal-safe and touches no state;
        // replacing SIGUSR1's disposition affects nothing else in this daemon.
        unsafe { sigaction(Signal::SIGUSR1, &action) }.map(|_| ())
    });
    r.map_err(io::Error::from)
}

enum Next<L> {
    Read,
    Run(Job<L>),
    Exit,
}

impl<H: CuseHandler> Pool<H> {
    /// Starts the pool's threads; `ready` gets the pool's executor before any request is
    /// read (work a handler defers can reach the threads from the first request on).
    pub(crate) fn start(
        fd: Arc<OwnedFd>,
        sink: Arc<dyn ReplySink>,
        handler: Arc<H>,
        name: &str,
        cfg: PoolConfig,
        replay: Vec<Vec<u8>>,
        ready: impl FnOnce(Executor<H>),
    ) -> io::Result<Arc<Pool<H>>> {
        install_wake_handler()?;
        let min = cfg.min.max(1);
        let cfg = PoolConfig {
            min,
            max: cfg.max.max(min + 1),
            budget: cfg.budget,
        };
        let pool = Arc::new_cyclic(|me| Pool {
            fd,
            sink,
            handler,
            name: name.to_string(),
            cfg,
            state: Mutex::new(State {
                readers: 0,
                busy: 0,
                total: 0,
                queue: VecDeque::new(),
                stopping: false,
                draining: false,
            }),
            handles: Mutex::new(Vec::new()),
            me: me.clone(),
            replay: Mutex::new(replay),
            first_unique: AtomicU64::new(u64::MAX),
        });
        ready(Executor::new(&pool));
        for _ in 0..min {
            {
                let mut st = pool.state.lock();
                st.total += 1;
                st.readers += 1;
            }
            if pool.spawn(None).is_err() {
                {
                    let mut st = pool.state.lock();
                    st.total -= 1;
                    st.readers -= 1;
                }
                // The threads started so far must not serve a device reported as failed.
                pool.stop();
                return Err(io::Error::other("cannot start the device's threads"));
            }
        }
        Ok(pool)
    }

    /// Threads not yet joined (live ones, and those that left since the last spawn).
    #[cfg(test)]
    pub(crate) fn unjoined(&self) -> usize {
        self.handles.lock().len()
    }

    /// Threads now: (total, reading, busy).
    pub(crate) fn threads(&self) -> (usize, usize, usize) {
        let st = self.state.lock();
        (st.total, st.readers, st.busy)
    }

    /// Whether one more thread is allowed; takes a budget slot when one is needed. Called
    /// with the state locked, before `total` counts the new thread.
    fn take_thread_slot(&self, st: &State<H::Local>) -> bool {
        !st.stopping
            && st.total < self.cfg.max
            && (st.total < self.cfg.min + 1 || self.cfg.budget.try_take())
    }

    /// A thread left; `total` is the count after it left.
    fn slot_released(&self, total: usize) {
        if total > self.cfg.min {
            self.cfg.budget.give_back();
        }
    }

    /// Starts a thread, already counted in `total` and in `busy` (with a first job) or
    /// `readers` (without); gives the job back if no thread could be started.
    fn spawn(&self, first: Option<Job<H::Local>>) -> Result<(), Option<Job<H::Local>>> {
        let pool = self
            .me
            .upgrade()
            .expect("the pool is alive while it spawns");
        let slot = Arc::new(Mutex::new(first));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("cuse-{}", self.name))
            .stack_size(256 * 1024)
            .spawn(move || {
                let first = theirs.lock().take();
                pool.thread_main(first)
            });
        match spawned {
            Ok(h) => {
                // Threads come and go with the load, and a thread that left keeps its
                // stack until it is joined. Without this the soak's daemon ran out of
                // memory for thread stacks within minutes.
                self.join_finished();
                self.handles.lock().push(h);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(device = %self.name, "cannot start a thread: {e}");
                Err(slot.lock().take())
            }
        }
    }

    fn submit(&self, job: Job<H::Local>) {
        let mut st = self.state.lock();
        if st.stopping {
            return;
        }
        st.queue.push_back(job);
        self.assign(&mut st);
    }

    /// Starts threads for queued jobs while that is allowed; the rest wait for the next
    /// thread that finishes.
    fn assign(&self, st: &mut parking_lot::MutexGuard<'_, State<H::Local>>) {
        while !st.queue.is_empty() && self.take_thread_slot(st) {
            let job = st.queue.pop_front().expect("not empty");
            st.total += 1;
            st.busy += 1;
            if let Err(job) = self.spawn(Some(job)) {
                // No thread could be started (the system is out of threads or memory):
                // the job goes back to the front of the queue, for the next thread that
                // finishes its work or reads a request.
                st.queue.push_front(job.expect("the job comes back"));
                st.total -= 1;
                st.busy -= 1;
                let total = st.total;
                self.slot_released(total);
                break;
            }
        }
    }

    /// What a thread does after finishing its request or job.
    fn after_work(&self) -> Next<H::Local> {
        let mut st = self.state.lock();
        st.busy -= 1;
        if (st.readers >= 1 || st.stopping || st.draining) && !st.queue.is_empty() {
            st.busy += 1;
            return Next::Run(st.queue.pop_front().expect("not empty"));
        }
        if st.stopping || st.draining {
            st.total -= 1;
            let total = st.total;
            self.slot_released(total);
            return Next::Exit;
        }
        if st.queue.is_empty() && st.readers >= self.cfg.min && st.total > self.cfg.min {
            st.total -= 1;
            let total = st.total;
            self.slot_released(total);
            return Next::Exit;
        }
        st.readers += 1;
        // Jobs this thread may not take (it is the only reader now) go to a new thread
        // if one is allowed, else to the next busy thread that finishes.
        self.assign(&mut st);
        Next::Read
    }

    fn run_job(self: &Arc<Self>, job: Job<H::Local>, local: &mut H::Local) {
        if catch_unwind(AssertUnwindSafe(|| job(local))).is_err() {
            tracing::error!(device = %self.name, "a job panicked; its requests were answered EIO");
            *local = H::Local::default();
        }
    }

    fn thread_main(self: Arc<Self>, first: Option<Job<H::Local>>) {
        let mut local = H::Local::default();
        let waker = PollWaker::new(self.sink.clone());
        let mut buf = vec![0u8; REQUEST_BUFFER];
        // SIGUSR1 (sent at stop) ends a wait for a request with EINTR. It stays unblocked
        // while the thread works too (no two system calls per request to mask it): the
        // work is not disturbed by it (SG_IO on a block device waits uninterruptibly; on
        // a path's sg node the command goes through write() and read(), and a read()
        // ended by the signal is asked again).
        let mut wake_signal = SigSet::empty();
        wake_signal.add(Signal::SIGUSR1);
        let _ = wake_signal.thread_unblock();
        // A predecessor's requests first, before any new one is read.
        let replay = std::mem::take(&mut *self.replay.lock());
        for bytes in replay {
            let mut worker = Worker {
                pool: &self,
                local: &mut local,
            };
            let handled = catch_unwind(AssertUnwindSafe(|| {
                dispatch(&*self.handler, &self.sink, &waker, &bytes, &mut worker)
            }));
            if handled.is_err() {
                tracing::error!(device = %self.name, "a handed-over request's handler panicked");
                local = H::Local::default();
            }
        }
        let mut next = match first {
            Some(job) => Next::Run(job),
            None => Next::Read,
        };
        loop {
            match next {
                Next::Exit => return,
                Next::Run(job) => {
                    self.run_job(job, &mut local);
                    next = self.after_work();
                }
                Next::Read => {
                    let stopping = {
                        let st = self.state.lock();
                        st.stopping || st.draining
                    };
                    let read = if stopping {
                        Err(nix::errno::Errno::EINTR)
                    } else {
                        nix::unistd::read(self.fd.as_fd(), &mut buf)
                    };
                    let n = match read {
                        // End of file: only a test's socket does that (the peer left).
                        Ok(0) => {
                            next = self.read_failed(nix::errno::Errno::ENODEV);
                            continue;
                        }
                        Ok(n) => n,
                        Err(e) => {
                            next = self.read_failed(e);
                            continue;
                        }
                    };
                    {
                        let mut st = self.state.lock();
                        st.readers -= 1;
                        st.busy += 1;
                    }
                    let mut worker = Worker {
                        pool: &self,
                        local: &mut local,
                    };
                    let handled = catch_unwind(AssertUnwindSafe(|| {
                        dispatch(&*self.handler, &self.sink, &waker, &buf[..n], &mut worker)
                    }));
                    if handled.is_err() {
                        tracing::error!(device = %self.name, "a request handler panicked; the request was answered EIO");
                        local = H::Local::default();
                    }
                    next = self.after_work();
                }
            }
        }
    }

    /// read() on /dev/cuse failed: EINTR (a stop, or a signal), EAGAIN; ENODEV when the
    /// connection was aborted (the device is gone).
    fn read_failed(&self, e: nix::errno::Errno) -> Next<H::Local> {
        let mut st = self.state.lock();
        let fatal = !matches!(e, nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN);
        if fatal && e != nix::errno::Errno::ENODEV {
            tracing::error!(device = %self.name, "read /dev/cuse: {e}");
        }
        if !(st.stopping || st.draining || fatal) {
            return Next::Read;
        }
        st.readers -= 1;
        if let Some(job) = st.queue.pop_front() {
            st.busy += 1;
            return Next::Run(job);
        }
        st.total -= 1;
        let total = st.total;
        self.slot_released(total);
        Next::Exit
    }

    /// Joins the threads that have left (their stacks are freed only then); the live ones
    /// stay in `handles`, for stop() to signal.
    fn join_finished(&self) {
        let mut done = Vec::new();
        {
            let mut handles = self.handles.lock();
            let mut i = 0;
            while i < handles.len() {
                if handles[i].is_finished() {
                    done.push(handles.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        // Joined outside the lock: a thread that has just left may still be ending.
        for h in done {
            let _ = h.join();
        }
    }

    /// Stops reading /dev/cuse: requests not yet read stay in the kernel (for the
    /// daemon's successor); threads finish what they hold and leave, and work submitted
    /// later still runs on threads started for it. Returns once no thread reads.
    pub(crate) fn drain(&self) {
        self.state.lock().draining = true;
        loop {
            self.join_finished();
            if self.state.lock().readers == 0 {
                break;
            }
            for h in self.handles.lock().iter() {
                let _ = nix::sys::pthread::pthread_kill(h.as_pthread_t(), Signal::SIGUSR1);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the threads: each finishes what it holds and the queued jobs, then exits.
    pub(crate) fn stop(&self) {
        self.state.lock().stopping = true;
        loop {
            self.join_finished();
            let running = self.handles.lock();
            if running.is_empty() {
                break;
            }
            // A thread blocked in read() leaves it with EINTR; a busy one finishes its
            // work (not interruptible by the signal) and then sees `stopping`; one that
            // was between its check and read() gets the next signal, 10 ms later.
            for h in running.iter() {
                let _ = nix::sys::pthread::pthread_kill(h.as_pthread_t(), Signal::SIGUSR1);
            }
            drop(running);
            std::thread::sleep(Duration::from_millis(10));
        }
        // Jobs submitted while the last threads left are dropped (their replies: EIO).
        self.state.lock().queue.clear();
    }
}

/// Decodes one request and hands it, with its reply token, to the handler. A malformed
/// request is answered EIO.
fn dispatch<H: CuseHandler>(
    handler: &H,
    sink: &Arc<dyn ReplySink>,
    waker: &PollWaker,
    bytes: &[u8],
    worker: &mut Worker<'_, H>,
) {
    let req = match Request::parse(bytes) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("malformed CUSE request ({e:?}); answering EIO");
            if let Ok((h, _)) = <InHeader as zerocopy::FromBytes>::read_from_prefix(bytes) {
                let _ = error(&**sink, Unique(h.unique), Errno::EIO);
            }
            return;
        }
    };
    let caller = req.header.caller();
    // Ids grow, so after the first request this is one load of a line nobody writes:
    // no read-modify-write shared by every thread on every request.
    let first = &worker.pool.first_unique;
    if !matches!(req.op, Operation::Interrupt(_))
        && !caller.unique.resent()
        && caller.unique.0 < first.load(Ordering::Relaxed)
    {
        first.fetch_min(caller.unique.0, Ordering::Relaxed);
    }
    let token = || Responder::new(sink.clone(), caller.unique);
    match req.op {
        Operation::Open(arg) => handler.open(&caller, arg.flags, OpenReply(token())),
        Operation::Release(arg) => handler.release(FileHandle(arg.fh), ReleaseReply(token())),
        Operation::Read(arg) => handler.read(&caller, &arg, ReadReply(token()), worker),
        Operation::Write { arg, data } => {
            handler.write(&caller, &arg, data, WriteReply(token()), worker)
        }
        Operation::Ioctl { arg, data } => {
            handler.ioctl(&caller, &arg, data, IoctlReply(token()), worker)
        }
        Operation::Poll(arg) => handler.poll(&caller, &arg, waker, PollReply(token())),
        // Never answered: -ENOSYS would switch interrupts off for good (then a waiting
        // request could never be ended), and a request that finishes anyway needs none.
        Operation::Interrupt(arg) => {
            let target = Unique(arg.unique);
            let never_read =
                !target.resent() && target.0 < worker.pool.first_unique.load(Ordering::Relaxed);
            let orphan = never_read.then(|| OrphanReply::new(sink.clone(), target));
            handler.interrupt(target, orphan)
        }
        Operation::CuseInit(_) | Operation::Unknown(_) => {
            let _ = error(&**sink, caller.unique, Errno::ENOSYS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuse::testing::FakeKernel;
    use std::time::Instant;

    /// ioctl 1: answered at once. ioctl 2: blocks for `arg` ms (on this thread if it may
    /// block, else deferred). ioctl 3: panics. read: parked until a write, or interrupted.
    #[derive(Default)]
    struct Test {
        parked: Mutex<Vec<ReadReply>>,
        slow_running: AtomicUsize,
        slow_peak: AtomicUsize,
    }

    fn slow(t: &Test, ms: u64, reply: IoctlReply) {
        let now = t.slow_running.fetch_add(1, Ordering::SeqCst) + 1;
        t.slow_peak.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(ms));
        t.slow_running.fetch_sub(1, Ordering::SeqCst);
        reply.done(0, &[]);
    }

    impl CuseHandler for Test {
        type Local = usize;
        fn open(&self, _: &Caller, _: u32, reply: OpenReply) {
            reply.opened(FileHandle(1));
        }
        fn release(&self, _: FileHandle, reply: ReleaseReply) {
            reply.done();
        }
        fn read(&self, _: &Caller, _: &ReadWriteIn, reply: ReadReply, _: &mut Worker<'_, Self>) {
            self.parked.lock().push(reply);
        }
        fn write(
            &self,
            _: &Caller,
            _: &ReadWriteIn,
            data: &[u8],
            reply: WriteReply,
            _: &mut Worker<'_, Self>,
        ) {
            for r in self.parked.lock().drain(..) {
                r.data(&[data]);
            }
            reply.written(data.len() as u32);
        }
        fn ioctl(
            &self,
            _: &Caller,
            arg: &IoctlIn,
            _: &[u8],
            reply: IoctlReply,
            worker: &mut Worker<'_, Self>,
        ) {
            *worker.local() += 1;
            match arg.cmd {
                1 => reply.done(0, &[]),
                2 if worker.may_block() => slow(self, arg.arg, reply),
                2 => {
                    let ms = arg.arg;
                    let me = worker.handler().clone();
                    worker.defer(Box::new(move |_| slow(&me, ms, reply)));
                }
                3 => panic!("a handler bug"),
                _ => reply.error(Errno::EINVAL),
            }
        }
        fn poll(&self, _: &Caller, _: &PollIn, _: &PollWaker, reply: PollReply) {
            reply.revents(0);
        }
        fn interrupt(&self, unique: Unique, _: Option<OrphanReply>) {
            let mut parked = self.parked.lock();
            if let Some(i) = parked.iter().position(|r| r.unique() == unique) {
                parked.remove(i).error(Errno::EINTR);
            }
        }
    }

    fn kernel(min: usize, max: usize) -> (FakeKernel<Test>, Arc<Test>) {
        let t = Arc::new(Test::default());
        let k = FakeKernel::start(t.clone(), min, max);
        (k, t)
    }

    #[test]
    fn a_parked_request_holds_no_thread() {
        let (mut k, t) = kernel(1, 2);
        let reads: Vec<u64> = (0..100).map(|_| k.read(9, 1, 88, 0)).collect();
        let start = Instant::now();
        let u = k.ioctl(9, 1, 1, 0, &[], 0, 0);
        assert_eq!(k.reply(u).ioctl_result(), 0);
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(t.parked.lock().len(), 100, "every read parked");
        let (total, _, _) = k.device.as_ref().unwrap().threads();
        assert!(total <= 2, "{total} threads");
        // One write answers them all, from its own thread.
        let w = k.write(9, 1, b"hello");
        assert_eq!(k.reply(w).error, 0);
        for r in reads {
            assert_eq!(k.reply(r).body, b"hello");
        }
    }

    #[test]
    fn interrupts_and_other_requests_are_read_while_every_thread_works() {
        let (mut k, t) = kernel(1, 2);
        let parked = k.read(9, 1, 88, 0);
        // A slow command holds one of the two threads; the other must keep reading.
        let slow1 = k.ioctl(9, 1, 2, 3000, &[], 0, 0);
        std::thread::sleep(Duration::from_millis(100));
        let fast = k.ioctl(9, 1, 1, 0, &[], 0, 0);
        assert_eq!(k.reply(fast).ioctl_result(), 0);
        k.interrupt(parked);
        assert_eq!(k.reply(parked).error, -libc::EINTR);
        assert!(
            !k.answered_within(slow1, Duration::from_millis(1)),
            "both answered while the slow command runs"
        );
        assert_eq!(k.reply(slow1).ioctl_result(), 0);
        assert_eq!(t.slow_peak.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn work_beyond_the_bound_waits_for_a_thread() {
        let (mut k, t) = kernel(1, 2);
        let slows: Vec<u64> = (0..3).map(|_| k.ioctl(9, 1, 2, 200, &[], 0, 0)).collect();
        let start = Instant::now();
        for u in slows {
            assert_eq!(k.reply(u).ioctl_result(), 0);
        }
        // One at a time (one thread always reads): 3 x 200 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(550),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            t.slow_peak.load(Ordering::SeqCst),
            1,
            "never more than max - 1"
        );
    }

    #[test]
    fn a_panic_answers_eio_and_costs_no_thread() {
        let (mut k, _t) = kernel(2, 4);
        for _ in 0..5 {
            let u = k.ioctl(9, 1, 3, 0, &[], 0, 0);
            assert_eq!(k.reply(u).error, -libc::EIO);
        }
        let u = k.ioctl(9, 1, 1, 0, &[], 0, 0);
        assert_eq!(k.reply(u).ioctl_result(), 0);
        // A thread counts itself idle just after its reply went out.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut threads = k.device.as_ref().unwrap().threads();
        while threads.2 != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            threads = k.device.as_ref().unwrap().threads();
        }
        assert_eq!(
            threads,
            (2, 2, 0),
            "(total, reading, busy): both threads back"
        );
    }

    #[test]
    fn submitted_work_runs_on_the_devices_threads() {
        let (mut k, t) = kernel(1, 3);
        let r = k.read(9, 1, 88, 0);
        assert!(!k.answered_within(r, Duration::from_millis(50)));
        let ex = k.device.as_ref().unwrap().executor();
        let t2 = t.clone();
        ex.submit(Box::new(move |local: &mut usize| {
            *local += 1;
            for r in t2.parked.lock().drain(..) {
                r.data(&[b"from a job"]);
            }
        }));
        assert_eq!(k.reply(r).body, b"from a job");
    }

    #[test]
    fn threads_that_left_are_joined() {
        // Each round makes the pool grow (two slow commands at once) and shrink again;
        // every thread that left must be joined, or its stack stays allocated.
        let (mut k, _t) = kernel(1, 4);
        for _ in 0..40 {
            let a = k.ioctl(9, 1, 2, 5, &[], 0, 0);
            let b = k.ioctl(9, 1, 2, 5, &[], 0, 0);
            assert_eq!(k.reply(a).ioctl_result(), 0);
            assert_eq!(k.reply(b).ioctl_result(), 0);
        }
        let pool = k.device.as_ref().unwrap();
        assert!(
            pool.unjoined() <= 4 + 2,
            "{} threads not joined",
            pool.unjoined()
        );
    }

    #[test]
    fn the_thread_budget_bounds_every_device() {
        let budget = Arc::new(ThreadBudget::new(1));
        let t = Arc::new(Test::default());
        let mut k = FakeKernel::start_with(t.clone(), 1, 10, budget.clone());
        let slows: Vec<u64> = (0..4).map(|_| k.ioctl(9, 1, 2, 200, &[], 0, 0)).collect();
        std::thread::sleep(Duration::from_millis(100));
        let (total, _, _) = k.device.as_ref().unwrap().threads();
        // min (1) + 1 of its own + 1 from the budget.
        assert!(total <= 3, "{total} threads");
        assert_eq!(budget.used(), 1);
        for u in slows {
            assert_eq!(k.reply(u).ioctl_result(), 0);
        }
        k.stop();
        assert_eq!(budget.used(), 0, "slots given back");
    }
}
