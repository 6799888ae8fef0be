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
use crate::sg::direct::{CallerMemory, MemError};
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;
use std::io::{IoSlice, IoSliceMut};

/// One syscall moves at most IOV_MAX regions.
const IOV_MAX: usize = 1024;

pub struct ProcessMemory {
    tid: Pid,
}

impl ProcessMemory {
    /// None for thread id 0 (the caller is not visible in the daemon's pid namespace).
    pub fn new(tid: u32) -> Option<ProcessMemory> {
        (tid != 0 && tid <= i32::MAX as u32).then(|| ProcessMemory {
            tid: Pid::from_raw(tid as i32),
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

    fn write(&self, regions: &[IoctlIovec], data: &[u8]) -> Result<(), MemError> {
        let mut remote = remote(regions)?;
        // Clip the regions to the data (a short result fills a prefix).
        let mut left = data.len();
        for r in remote.iter_mut() {
            r.len = r.len.min(left);
            left -= r.len;
        }
        remote.retain(|r| r.len > 0);
        let mut off = 0;
        for r in remote.chunks(IOV_MAX) {
            let want: usize = r.iter().map(|v| v.len).sum();
            let local = [IoSlice::new(&data[off..off + want])];
            let n = process_vm_writev(self.tid, &local, r).map_err(classify)?;
            if n != want {
                return Err(MemError::Fault);
            }
            off += want;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The daemon's own memory stands in for a caller's: process_vm_* on our own tid.
    fn me() -> ProcessMemory {
        ProcessMemory::new(nix::unistd::gettid().as_raw() as u32).unwrap()
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
        me().write(&regions, &[9, 9, 9, 8]).unwrap();
        assert_eq!(
            target,
            vec![9, 9, 9, 8, 0, 0],
            "a short write fills a prefix"
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
        assert!(ProcessMemory::new(0).is_none());
    }
}
