//! For tests only: the test binary's allocator, which records the largest single
//! allocation each thread asks for, so that a property test can bound what a parser fed
//! kernel or caller text allocates (a count taken from that text must never become the
//! size of an allocation).
//!
//! This is the one `unsafe` outside the syscall boundary, and it is not in the daemon:
//! the implementation forwards every call unchanged to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

pub struct LargestAllocation;

fn note(size: usize) {
    // try_with: allocations can happen while the thread's locals are being torn down.
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// GlobalAlloc contract; recording the size touches only a thread-local Cell, which does
// not allocate.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` came from `System` through this allocator, with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static PROBE: LargestAllocation = LargestAllocation;

/// Runs `f` and returns its result with the largest single allocation (bytes) this
/// thread made while it ran.
pub fn largest_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    let r = f();
    (r, LARGEST.with(|l| l.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_sees_an_allocation_and_only_this_threads() {
        let (v, largest) = largest_during(|| vec![0u8; 123_456]);
        assert_eq!(v.len(), 123_456);
        assert!(largest >= 123_456, "{largest}");
        let ((), none) = largest_during(|| {
            std::thread::scope(|s| {
                s.spawn(|| vec![0u8; 1 << 20]);
            })
        });
        assert!(none < 1 << 20, "{none}");
    }
}
