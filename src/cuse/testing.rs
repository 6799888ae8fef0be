//! A stand-in for the kernel's side of /dev/cuse in tests: a SOCK_SEQPACKET socket pair
//! keeps message boundaries both ways, so the device's threads read one request per
//! read() and write one reply per writev, as on /dev/cuse, and a read() blocked on it is
//! interrupted by a signal the same way.

use super::abi::*;
use super::pool::{CuseHandler, PoolConfig, ThreadBudget};
use super::session::CuseDevice;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, IntoBytes};

pub struct FakeKernel<H: CuseHandler> {
    fd: OwnedFd,
    pub device: Option<CuseDevice<H>>,
    next: u64,
    /// Replies read but not asked for yet, by unique.
    early: HashMap<u64, Vec<u8>>,
    /// Poll wake-ups seen (unique 0 messages): their kh.
    pub wakeups: Vec<u64>,
}

/// A reply as the kernel would parse it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub error: i32,
    pub body: Vec<u8>,
}

impl Reply {
    /// An ioctl reply's result (the negative errno for an error).
    pub fn ioctl_result(&self) -> i32 {
        assert_eq!(self.error, 0, "ioctl replies carry errors in the result");
        i32::from_ne_bytes(self.body[0..4].try_into().unwrap())
    }
    pub fn ioctl_flags(&self) -> u32 {
        u32::from_ne_bytes(self.body[4..8].try_into().unwrap())
    }
    /// The bytes after fuse_ioctl_out.
    pub fn ioctl_data(&self) -> &[u8] {
        &self.body[16..]
    }
}

impl<H: CuseHandler> FakeKernel<H> {
    pub fn start(handler: Arc<H>, min: usize, max: usize) -> FakeKernel<H> {
        Self::start_with(handler, min, max, Arc::new(ThreadBudget::new(64)))
    }

    pub fn start_with(
        handler: Arc<H>,
        min: usize,
        max: usize,
        budget: Arc<ThreadBudget>,
    ) -> FakeKernel<H> {
        Self::start_ready(handler, min, max, budget, |_| {})
    }

    /// `ready` gets the device's executor before its threads read anything.
    pub fn start_ready(
        handler: Arc<H>,
        min: usize,
        max: usize,
        budget: Arc<ThreadBudget>,
        ready: impl FnOnce(super::Executor<H>),
    ) -> FakeKernel<H> {
        let (kernel, daemon) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let cfg = PoolConfig { min, max, budget };
        let device = CuseDevice::serve(Arc::new(daemon), handler, "test", cfg, Vec::new(), ready)
            .expect("serve");
        FakeKernel {
            fd: kernel,
            device: Some(device),
            next: 2,
            early: HashMap::new(),
            wakeups: Vec::new(),
        }
    }

    /// Sends a request from thread `tid`; returns its unique.
    pub fn send(&mut self, opcode: u32, tid: u32, body: &[u8]) -> u64 {
        let unique = self.next;
        self.next += 2;
        self.send_as(unique, opcode, tid, body);
        unique
    }

    /// A request id the kernel gave to a request the device never sees here (one a
    /// predecessor read): later requests have higher ids.
    pub fn skip_unique(&mut self) -> u64 {
        let unique = self.next;
        self.next += 2;
        unique
    }

    pub fn send_as(&mut self, unique: u64, opcode: u32, tid: u32, body: &[u8]) {
        let h = InHeader {
            len: (40 + body.len()) as u32,
            opcode,
            unique,
            nodeid: 1,
            uid: 0,
            gid: 0,
            pid: tid,
            padding: 0,
        };
        let mut msg = h.as_bytes().to_vec();
        msg.extend_from_slice(body);
        let n = nix::unistd::write(&self.fd, &msg).expect("send request");
        assert_eq!(n, msg.len());
    }

    /// The reply to `unique`, waiting up to `within`; None if none came.
    pub fn reply_within(&mut self, unique: u64, within: Duration) -> Option<Reply> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(m) = self.early.remove(&unique) {
                let (h, body) = OutHeader::read_from_prefix(&m).unwrap();
                return Some(Reply {
                    error: h.error,
                    body: body.to_vec(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut fds = [nix::poll::PollFd::new(
                self.fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = left.as_millis().min(1000) as u16;
            if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)).unwrap_or(0) == 0 {
                continue;
            }
            let mut buf = vec![0u8; 256 * 1024];
            let n = nix::unistd::read(&self.fd, &mut buf).expect("read reply");
            buf.truncate(n);
            let (h, rest) = OutHeader::read_from_prefix(&buf).expect("out header");
            assert_eq!(h.len as usize, n, "reply length field");
            if h.unique == 0 {
                assert_eq!(h.error, FUSE_NOTIFY_POLL);
                let (w, _) = NotifyPollWakeup::read_from_prefix(rest).unwrap();
                self.wakeups.push(w.kh);
                continue;
            }
            assert!(
                self.early.insert(h.unique, buf).is_none(),
                "two replies to request {}",
                h.unique
            );
        }
    }

    pub fn reply(&mut self, unique: u64) -> Reply {
        self.reply_within(unique, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no reply to request {unique} within 10 s"))
    }

    /// Whether any reply is due for `unique` within `wait` (false: still outstanding).
    pub fn answered_within(&mut self, unique: u64, wait: Duration) -> bool {
        match self.reply_within(unique, wait) {
            Some(r) => {
                let mut m = OutHeader {
                    len: (16 + r.body.len()) as u32,
                    error: r.error,
                    unique,
                }
                .as_bytes()
                .to_vec();
                m.extend_from_slice(&r.body);
                self.early.insert(unique, m);
                true
            }
            None => false,
        }
    }

    // Request bodies.

    pub fn open(&mut self, tid: u32, flags: i32) -> u64 {
        let unique = self.send(
            opcode::OPEN,
            tid,
            OpenIn {
                flags: flags as u32,
                open_flags: 0,
            }
            .as_bytes(),
        );
        let r = self.reply(unique);
        assert_eq!(r.error, 0, "open");
        u64::from_ne_bytes(r.body[0..8].try_into().unwrap())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn ioctl(
        &mut self,
        tid: u32,
        fh: u64,
        cmd: u32,
        arg: u64,
        data: &[u8],
        out_size: u32,
        flags: u32,
    ) -> u64 {
        let a = IoctlIn {
            fh,
            flags: flags | ioctl_flags::UNRESTRICTED,
            cmd,
            arg,
            in_size: data.len() as u32,
            out_size,
        };
        let mut body = a.as_bytes().to_vec();
        body.extend_from_slice(data);
        self.send(opcode::IOCTL, tid, &body)
    }

    pub fn read(&mut self, tid: u32, fh: u64, size: u32, f_flags: i32) -> u64 {
        self.send(opcode::READ, tid, rw_in(fh, size, f_flags).as_bytes())
    }

    pub fn write(&mut self, tid: u32, fh: u64, data: &[u8]) -> u64 {
        let mut body = rw_in(fh, data.len() as u32, 0).as_bytes().to_vec();
        body.extend_from_slice(data);
        self.send(opcode::WRITE, tid, &body)
    }

    pub fn poll(&mut self, tid: u32, fh: u64, kh: u64) -> u64 {
        // As the kernel sends it for poll(fd, POLLIN) that may sleep.
        let p = PollIn {
            fh,
            kh,
            flags: FUSE_POLL_SCHEDULE_NOTIFY,
            events: libc::POLLIN as u32,
        };
        self.send(opcode::POLL, tid, p.as_bytes())
    }

    pub fn release(&mut self, fh: u64) -> u64 {
        let r = ReleaseIn {
            fh,
            flags: 0,
            release_flags: 0,
            lock_owner: 0,
        };
        self.send(opcode::RELEASE, 0, r.as_bytes())
    }

    /// FUSE_INTERRUPT for request `unique` (the kernel sends it with unique | 1).
    pub fn interrupt(&mut self, unique: u64) {
        self.send_as(
            unique | 1,
            opcode::INTERRUPT,
            0,
            InterruptIn { unique }.as_bytes(),
        );
    }

    /// Stops the device (its threads finish what they hold).
    pub fn stop(&mut self) {
        if let Some(d) = self.device.take() {
            d.join();
        }
    }
}

impl<H: CuseHandler> Drop for FakeKernel<H> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn rw_in(fh: u64, size: u32, f_flags: i32) -> ReadWriteIn {
    ReadWriteIn {
        fh,
        offset: 0,
        size,
        op_flags: 0,
        lock_owner: 0,
        flags: f_flags as u32,
        padding: 0,
    }
}

/// This thread's id, standing in for a caller's (its memory is reached with
/// process_vm_readv/writev on its own id).
pub fn my_tid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}
