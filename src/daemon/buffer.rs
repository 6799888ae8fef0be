//! The data buffer each of a node's threads keeps for the command it runs: page-aligned,
//! so that SG_IO on a path's block device maps it instead of bouncing it, and reused from
//! one command to the next instead of allocated and zeroed per command.
//!
//! Reuse must never hand one caller's data to another: a device may report fewer
//! residual bytes than it left untouched, and the node then copies stale buffer bytes
//! back as data-in. So the buffer remembers whose data it may hold (an open file of this
//! node: each node has its own threads) and how far it may be dirty; lent to another
//! file, the dirty part is zeroed first. A file meeting its own earlier data is what sg's
//! per-file reserve buffer gives it too.

use crate::cuse::FileHandle;

const PAGE: usize = 4096;
/// Buffers up to this size are kept between commands; larger ones are freed after use.
const KEEP: usize = 2 << 20;

#[derive(Default)]
pub struct DataBuffer {
    storage: Vec<u8>,
    /// Offset of the first page-aligned byte in `storage`.
    start: usize,
    /// Usable bytes from `start`.
    capacity: usize,
    /// Bytes [0, dirty) may be non-zero.
    dirty: usize,
    /// Whose bytes those are (None: nobody's yet, the buffer is all zeros).
    owner: Option<FileHandle>,
}

impl DataBuffer {
    /// `len` bytes for `owner`'s command: zeros or `owner`'s own bytes from earlier
    /// commands, never another file's. The command may then write anywhere in them.
    pub fn lend(&mut self, len: usize, owner: FileHandle) -> &mut [u8] {
        if len > self.capacity {
            self.grow(len);
        }
        if self.owner != Some(owner) && self.dirty > 0 {
            let start = self.start;
            self.storage[start..start + self.dirty].fill(0);
            self.dirty = 0;
        }
        self.owner = Some(owner);
        self.dirty = self.dirty.max(len);
        let start = self.start;
        &mut self.storage[start..start + len]
    }

    /// After the command: a buffer larger than what is worth keeping is freed.
    pub fn trim(&mut self) {
        if self.capacity > KEEP {
            *self = DataBuffer::default();
        }
    }

    fn grow(&mut self, len: usize) {
        // Powers of two from 64 KiB: a few sizes serve every transfer. Fresh memory is
        // zeroed by the allocator (calloc: untouched pages for large sizes).
        let capacity = len.next_power_of_two().max(64 << 10);
        self.storage = vec![0u8; capacity + PAGE];
        self.start = self.storage.as_ptr().align_offset(PAGE);
        self.capacity = capacity;
        self.dirty = 0;
        self.owner = None;
    }

    #[cfg(test)]
    fn address(&self) -> usize {
        self.storage.as_ptr() as usize + self.start
    }
}

/// What each of a node's threads keeps across requests.
#[derive(Default)]
pub struct WorkerLocal {
    pub data: DataBuffer,
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FileHandle = FileHandle(1);
    const B: FileHandle = FileHandle(2);

    #[test]
    fn page_aligned_and_reused() {
        let mut b = DataBuffer::default();
        let p = b.lend(4096, A).as_ptr() as usize;
        assert_eq!(p % PAGE, 0);
        assert_eq!(
            b.lend(8192, A).as_ptr() as usize,
            p,
            "the same memory again"
        );
        assert_eq!(b.address(), p);
    }

    #[test]
    fn never_shows_one_files_data_to_another() {
        let mut b = DataBuffer::default();
        b.lend(8192, A).fill(0xA5);
        // A sees its own bytes again (as with sg's per-file reserve buffer)...
        assert!(b.lend(4096, A).iter().all(|&x| x == 0xA5));
        // ...B never does, whatever length it asks for.
        assert!(b.lend(100, B).iter().all(|&x| x == 0));
        assert!(b.lend(65536, B).iter().all(|&x| x == 0));
        // And after B wrote a little, A sees none of it, nor its own old bytes.
        b.lend(10, B).fill(0x5B);
        assert!(b.lend(65536, A).iter().all(|&x| x == 0));
    }

    #[test]
    fn large_buffers_are_not_kept() {
        let mut b = DataBuffer::default();
        b.lend(4 << 20, A);
        b.trim();
        assert_eq!(b.capacity, 0);
        b.lend(4096, A);
        b.trim();
        assert_eq!(b.capacity, 64 << 10);
    }
}
