//! The calling thread's memory, reached with process_vm_readv/writev.
//!
//! Why this is safe to do: the FUSE request header names the calling thread (in the pid
//! namespace of the daemon, which opened /dev/cuse), and that thread cannot leave its
//! ioctl while the daemon holds the request: once a request has been read by the server,
//! `request_wait_answer()` in fs/fuse/dev.c (Linux 6.1) waits for the answer with
//! `wait_event()` even through a fatal signal ("Either request is already in userspace,
//! or it was forced. Wait it out."). So the thread id cannot be reused, and the memory is
//! the caller's own, touched only at the addresses its header names, when sg would.
//! Reaching another process needs ptrace rights (root with CAP_SYS_PTRACE); without them
//! the calls fail with EPERM and the node falls back to CUSE's retry rounds.

use crate::cuse::abi::IoctlIovec;
use crate::cuse::Tid;
use crate::sg::direct::{CallerMemory, MemError};
use crate::sg::header::Abi;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;
use std::io::{IoSlice, IoSliceMut};

/// One syscall moves at most IOV_MAX regions.
const IOV_MAX: usize = 1024;

pub struct ProcessMemory {
    tid: Pid,
}

impl ProcessMemory {
    /// None for a caller not visible in the daemon's pid namespace.
    pub fn new(tid: Tid) -> Option<ProcessMemory> {
        tid.visible().map(|t| ProcessMemory {
            tid: Pid::from_raw(t as i32),
        })
    }
}

fn classify(e: nix::errno::Errno) -> MemError {
    match e {
        nix::errno::Errno::EPERM | nix::errno::Errno::ESRCH => MemError::Unreachable,
        _ => MemError::Fault,
    }
}

fn remote(regions: &[IoctlIovec]) -> Result<Vec<RemoteIoVec>, MemError> {
    regions
        .iter()
        .map(|r| {
            Ok(RemoteIoVec {
                base: usize::try_from(r.base).map_err(|_| MemError::Fault)?,
                len: usize::try_from(r.len).map_err(|_| MemError::Fault)?,
            })
        })
        .collect()
}

impl CallerMemory for ProcessMemory {
    fn read(&self, regions: &[IoctlIovec], bufs: &mut [&mut [u8]]) -> Result<(), MemError> {
        let remote = remote(regions)?;
        for (r, b) in remote.chunks(IOV_MAX).zip(bufs.chunks_mut(IOV_MAX)) {
            let want: usize = r.iter().map(|v| v.len).sum();
            let mut local: Vec<IoSliceMut<'_>> = b.iter_mut().map(|x| IoSliceMut::new(x)).collect();
            let n = process_vm_readv(self.tid, &mut local, r).map_err(classify)?;
            // A short transfer stops at an unmapped page of the caller's.
            if n != want {
                return Err(MemError::Fault);
            }
        }
        Ok(())
    }

    fn write(&self, regions: &[IoctlIovec], parts: &[&[u8]]) -> Result<(), MemError> {
        let mut remote = remote(regions)?;
        // Clip the regions to the data (a short result fills a prefix).
        let mut left: usize = parts.iter().map(|p| p.len()).sum();
        for r in remote.iter_mut() {
            r.len = r.len.min(left);
            left -= r.len;
        }
        remote.retain(|r| r.len > 0);
        // The local side walks the parts in step with the remote chunks.
        let mut part = 0;
        let mut off = 0;
        for chunk in remote.chunks(IOV_MAX) {
            let mut want: usize = chunk.iter().map(|v| v.len).sum();
            let total = want;
            let mut local: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len());
            while want > 0 {
                let p = parts[part];
                let take = (p.len() - off).min(want);
                if take > 0 {
                    local.push(IoSlice::new(&p[off..off + take]));
                }
                want -= take;
                off += take;
                if off == p.len() {
                    part += 1;
                    off = 0;
                }
            }
            let n = process_vm_writev(self.tid, &local, chunk).map_err(classify)?;
            if n != total {
                return Err(MemError::Fault);
            }
        }
        Ok(())
    }
}

/// The thread group (process) of thread `tid`, from /proc/<tid>/status; None for a thread
/// the daemon cannot see.
pub fn thread_group(tid: Tid) -> Option<u32> {
    status_field(tid.visible()?, "Tgid:")?.parse().ok()
}

/// One field of /proc/<tid>/status ("Tgid:", "CapEff:"), trimmed; None when the file
/// cannot be read or has no such field.
fn status_field(tid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
}

/// A process, told apart from a later one that reuses its pid by its start time
/// (/proc/<pid>/stat, field 22, clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub tgid: u32,
    pub start_ticks: u64,
}

/// The process thread `tid` belongs to; None for a thread the daemon cannot see or that
/// is gone.
pub fn process_of(tid: Tid) -> Option<ProcessId> {
    let tgid = thread_group(tid)?;
    let stat = std::fs::read_to_string(format!("/proc/{tgid}/stat")).ok()?;
    Some(ProcessId {
        tgid,
        start_ticks: stat_start_ticks(&stat)?,
    })
}

/// When thread `tid` started (clock ticks since boot): with the tid, names the thread
/// apart from a later one that reuses its id.
pub fn thread_start_ticks(tid: Tid) -> Option<u64> {
    let tid = tid.visible()?;
    stat_start_ticks(&std::fs::read_to_string(format!("/proc/{tid}/stat")).ok()?)
}

/// Field 22 of a /proc/<pid>/stat line. The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses: the fields are counted from the last ')'.
fn stat_start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' comes field 3 (state): field 22 is the 20th word.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether thread `tid` holds capability `cap` as the kernel's `capable()` judges it: in
/// the initial user namespace. CapEff in /proc/<tid>/status is relative to the thread's
/// own user namespace (a process that ran `unshare -Ur` shows every capability there), so
/// a thread in any other user namespace than the daemon's holds none (the daemon, which
/// needs CAP_SYS_ADMIN for device-mapper, runs in the initial one). Fails closed: a thread
/// whose namespace or status cannot be read holds nothing.
pub fn has_capability(tid: Tid, cap: u32) -> bool {
    let Some(tid) = tid.visible() else {
        return false;
    };
    if !in_daemon_user_namespace(tid) {
        return false;
    }
    status_field(tid, "CapEff:")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .is_some_and(|caps| cap < 64 && caps & (1 << cap) != 0)
}

/// The user namespace of thread `tid` is the daemon's (same nsfs inode); false when it
/// cannot be read.
fn in_daemon_user_namespace(tid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    static OWN: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();
    let id = |path: &str| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let Some(own) = *OWN.get_or_init(|| id("/proc/self/ns/user")) else {
        return false;
    };
    id(&format!("/proc/{tid}/ns/user")) == Some(own)
}

/// The system call a thread is blocked in, from /proc/<tid>/syscall: how the daemon learns
/// what a CUSE READ or WRITE does not carry, the caller's buffer address (read() under
/// SG_SET_FORCE_PACK_ID) and whether it is a 32-bit caller (which sg_io_hdr layout).
/// Readable with ptrace rights, as for process_vm_readv; the thread waits in the syscall
/// while the daemon holds its request, so the line is stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockedSyscall {
    pub nr: i64,
    pub args: [u64; 6],
}

impl BlockedSyscall {
    /// The call thread `tid` waits in. The request reaches the daemon as soon as the
    /// kernel queues it, possibly before the caller has gone to sleep waiting for the
    /// answer; until then the kernel shows "running" (task_current_syscall() can only
    /// read a task that is not running). So a "running" thread is asked again, for at
    /// most about 100 ms: it is on its way to sleep in this very call, unless preempted
    /// on a busy host, where that takes a scheduler tick or a few.
    pub fn of(tid: Tid) -> Option<BlockedSyscall> {
        let tid = tid.visible()?;
        let path = format!("/proc/{tid}/syscall");
        let start = std::time::Instant::now();
        for attempt in 0.. {
            let line = std::fs::read_to_string(&path).ok()?;
            if !line.starts_with("running") {
                return Self::parse(&line);
            }
            if attempt < 16 {
                std::thread::yield_now();
            } else if start.elapsed() < std::time::Duration::from_millis(100) {
                std::thread::sleep(std::time::Duration::from_micros(200));
            } else {
                break;
            }
        }
        tracing::debug!(tid, "/proc/<tid>/syscall still says running");
        None
    }

    /// "nr arg1 .. arg6 sp pc", numbers in hex with 0x except nr; "-1 sp pc" or "running"
    /// when not in a syscall.
    pub fn parse(line: &str) -> Option<BlockedSyscall> {
        let mut words = line.split_whitespace();
        let nr: i64 = words.next()?.parse().ok()?;
        if nr < 0 {
            return None;
        }
        let mut args = [0u64; 6];
        for a in &mut args {
            let w = words.next()?;
            *a = u64::from_str_radix(w.strip_prefix("0x")?, 16).ok()?;
        }
        Some(BlockedSyscall { nr, args })
    }

    /// For a thread in read(2)/pread64(2): its layout and buffer address. None for any
    /// other call (readv, io_uring, ...), whose buffer is not one address.
    pub fn read_buffer(&self) -> Option<(Abi, u64)> {
        self.abi_of(
            &[libc::SYS_read, libc::SYS_pread64],
            &[compat::READ, compat::PREAD64],
        )
        .map(|abi| (abi, self.args[1]))
    }

    /// The sg_io_hdr layout of a caller in any read or write call; None if unknown.
    pub fn rw_abi(&self) -> Option<Abi> {
        self.abi_of(
            &[
                libc::SYS_read,
                libc::SYS_write,
                libc::SYS_pread64,
                libc::SYS_pwrite64,
                libc::SYS_readv,
                libc::SYS_writev,
                libc::SYS_preadv,
                libc::SYS_pwritev,
                libc::SYS_preadv2,
                libc::SYS_pwritev2,
            ],
            &compat::READ_WRITE,
        )
    }

    fn abi_of(&self, native: &[i64], compat: &[i64]) -> Option<Abi> {
        // x32 numbers carry __X32_SYSCALL_BIT; the kernel treats x32 as compat for sg.
        #[cfg(target_arch = "x86_64")]
        if self.nr & compat::X32_SYSCALL_BIT != 0
            && native.contains(&(self.nr & !compat::X32_SYSCALL_BIT))
        {
            return Some(Abi::Compat);
        }
        // On x86-64, /proc shows a 32-bit task's syscall by its i386 number; none of those
        // numbers is a 64-bit read or write, so the two sets cannot be confused.
        if native.contains(&self.nr) {
            Some(Abi::Native)
        } else if compat.contains(&self.nr) {
            Some(Abi::Compat)
        } else {
            None
        }
    }
}

/// The 32-bit (compat) system call numbers a caller of the node may be blocked in.
///
/// NOTE: libc built for x86_64 carries only the 64-bit table (`libc::SYS_*`, used above);
/// the i386 numbers a compat task shows in /proc/<tid>/syscall come from
/// arch/x86/entry/syscalls/syscall_32.tbl. Other architectures' compat tables are not
/// known here: their 32-bit callers are taken as native (docs/sg-compat.md).
mod compat {
    #[cfg(target_arch = "x86_64")]
    mod table {
        pub const READ: i64 = 3;
        pub const WRITE: i64 = 4;
        pub const READV: i64 = 145;
        pub const WRITEV: i64 = 146;
        pub const PREAD64: i64 = 180;
        pub const PWRITE64: i64 = 181;
        pub const PREADV: i64 = 333;
        pub const PWRITEV: i64 = 334;
        pub const PREADV2: i64 = 378;
        pub const PWRITEV2: i64 = 379;
        /// `__X32_SYSCALL_BIT`
        pub const X32_SYSCALL_BIT: i64 = 0x4000_0000;
    }
    #[cfg(target_arch = "x86_64")]
    pub use table::*;
    #[cfg(target_arch = "x86_64")]
    pub const READ_WRITE: [i64; 10] = [
        READ, WRITE, READV, WRITEV, PREAD64, PWRITE64, PREADV, PWRITEV, PREADV2, PWRITEV2,
    ];
    // No compat table: numbers that match no system call.
    #[cfg(not(target_arch = "x86_64"))]
    pub const READ: i64 = -1;
    #[cfg(not(target_arch = "x86_64"))]
    pub const PREAD64: i64 = -1;
    #[cfg(not(target_arch = "x86_64"))]
    pub const READ_WRITE: [i64; 0] = [];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn my_tid() -> Tid {
        Tid(nix::unistd::gettid().as_raw() as u32)
    }

    #[test]
    fn the_start_time_is_counted_from_the_last_parenthesis() {
        // A command name with spaces and a ')' of its own; starttime (field 22) = 4242.
        let stat = "77 (a) b (c) S 1 77 77 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 4242 1000 10";
        assert_eq!(stat_start_ticks(stat), Some(4242));
        assert_eq!(stat_start_ticks("77 (short) S 1"), None);
        assert_eq!(stat_start_ticks("no parenthesis"), None);
    }

    #[test]
    fn a_process_is_named_by_its_pid_and_start_time() {
        let p = process_of(my_tid()).unwrap();
        assert_eq!(p.tgid, std::process::id());
        assert_eq!(process_of(my_tid()), Some(p), "stable while it lives");
        assert_eq!(process_of(Tid(0)), None, "not visible");
    }

    #[test]
    fn capabilities_are_read_in_the_daemons_user_namespace() {
        // This test process is in the test runner's user namespace, the daemon's: the
        // answer is its own CapEff bit (set when tests run as root).
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        for cap in [17, 21] {
            assert_eq!(has_capability(my_tid(), cap), eff & (1 << cap) != 0);
        }
        assert!(!has_capability(my_tid(), 64), "no such capability");
        assert!(
            !has_capability(Tid(0), 17),
            "a caller the daemon cannot see holds none"
        );
    }

    // The daemon's own memory stands in for a caller's: process_vm_* on our own tid.
    fn me() -> ProcessMemory {
        ProcessMemory::new(Tid(nix::unistd::gettid().as_raw() as u32)).unwrap()
    }

    #[test]
    fn reads_and_writes_own_memory() {
        let src = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut dst = [0u8; 8];
        let regions = [IoctlIovec {
            base: src.as_ptr() as u64,
            len: 8,
        }];
        me().read(&regions, &mut [&mut dst[..]]).unwrap();
        assert_eq!(&dst, &src[..]);
        let mut target = vec![0u8; 6];
        let regions = [
            IoctlIovec {
                base: target.as_mut_ptr() as u64,
                len: 3,
            },
            IoctlIovec {
                base: target.as_mut_ptr() as u64 + 3,
                len: 3,
            },
        ];
        me().write(&regions, &[&[9, 9], &[], &[9, 8]]).unwrap();
        assert_eq!(
            target,
            vec![9, 9, 9, 8, 0, 0],
            "parts are written in sequence; a short write fills a prefix"
        );
    }

    #[test]
    fn unmapped_is_a_fault() {
        let mut dst = [0u8; 8];
        let regions = [IoctlIovec { base: 8, len: 8 }];
        assert_eq!(
            me().read(&regions, &mut [&mut dst[..]]),
            Err(MemError::Fault)
        );
        assert!(ProcessMemory::new(Tid(0)).is_none());
    }

    #[test]
    fn blocked_syscall_lines() {
        let s =
            BlockedSyscall::parse("0 0x3 0x7ffd1234 0x58 0x0 0x0 0x0 0x7ffd0000 0x7f0000001234\n")
                .unwrap();
        assert_eq!(s.read_buffer(), Some((Abi::Native, 0x7ffd1234)));
        assert_eq!(s.rw_abi(), Some(Abi::Native));
        let s = BlockedSyscall::parse("4 0x3 0xffd01000 0x40 0x0 0x0 0x0 0xffd00000 0xf7f00000")
            .unwrap();
        assert_eq!(s.rw_abi(), Some(Abi::Compat), "i386 write");
        assert_eq!(s.read_buffer(), None, "not a read");
        let s = BlockedSyscall::parse("19 0x3 0x7ffd1234 0x2 0x0 0x0 0x0 0x1 0x2").unwrap();
        assert_eq!((s.rw_abi(), s.read_buffer()), (Some(Abi::Native), None));
        assert_eq!(BlockedSyscall::parse("-1 0x7ffd0000 0x7f00"), None);
        assert_eq!(BlockedSyscall::parse("running"), None);
        assert_eq!(BlockedSyscall::parse("0 0x3"), None);
        assert_eq!(BlockedSyscall::of(Tid(0)), None);
    }
}

/// Randomized tests of the /proc parsers (`cargo test fuzz`): a caller chooses its own
/// command name (prctl PR_SET_NAME), which /proc/<pid>/stat prints as it is.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stat_start_time_survives_any_command_name(
            comm in "[^\\x00]{0,15}", start in any::<u64>(), fields in prop::collection::vec(any::<u32>(), 30),
        ) {
            let mut line = format!("4242 ({comm}) S");
            for (i, f) in fields.iter().enumerate() {
                // Field 4 onwards; field 22 is the start time.
                if i + 4 == 22 {
                    line += &format!(" {start}");
                } else {
                    line += &format!(" {f}");
                }
            }
            line.push('\n');
            prop_assert_eq!(stat_start_ticks(&line), Some(start));
        }

        #[test]
        fn syscall_lines_parse_or_are_refused(
            nr in any::<i64>(), args in any::<[u64; 6]>(), junk in "[ -~\n]{0,80}",
        ) {
            let mut line = format!("{nr}");
            for a in args {
                line += &format!(" 0x{a:x}");
            }
            line += " 0x7ffc0000 0x401000\n";
            let parsed = BlockedSyscall::parse(&line);
            if nr >= 0 {
                prop_assert_eq!(parsed, Some(BlockedSyscall { nr, args }));
            } else {
                prop_assert_eq!(parsed, None);
            }
            let _ = BlockedSyscall::parse(&junk);
        }
    }
}
