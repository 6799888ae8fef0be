//! The byte budget for data the daemon holds on behalf of callers beyond a command's own
//! run: results of write() commands not read yet (data-in), and data-out of commands
//! waiting for a path. A reservation is taken before a command starts and given back
//! when its data is freed; past a bound the caller gets ENOMEM, what sg answers when it
//! cannot allocate a request's buffer (docs/sg-compat.md). Three bounds: the daemon's
//! total, each process that opened a node (by the opener's thread group), each open file.
//! A hoarding process is stopped at its share; other processes keep theirs.

use crate::errno::Errno;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Who holds data: the opener process of a file (its thread group id), if known.
pub type ProcessId = Option<u32>;

pub struct Budget {
    limit: usize,
    per_process: usize,
    per_file: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    used: usize,
    by_process: HashMap<u32, usize>,
}

impl Budget {
    /// `limit` bytes in all; a process may hold half of it, an open file a quarter.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            per_process: limit / 2,
            per_file: limit / 4,
            state: Mutex::new(State::default()),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.state.lock().used
    }

    /// Takes `bytes` for `file` (its held-bytes counter) of `process`; ENOMEM past any
    /// bound.
    pub fn reserve(
        self: &Arc<Self>,
        bytes: usize,
        process: ProcessId,
        file: &Arc<AtomicUsize>,
    ) -> Result<Reservation, Errno> {
        if bytes == 0 {
            return Ok(Reservation {
                budget: self.clone(),
                bytes: 0,
                process,
                file: file.clone(),
            });
        }
        let mut st = self.state.lock();
        let file_held = file.load(Ordering::Relaxed);
        let process_held = process.map_or(0, |p| st.by_process.get(&p).copied().unwrap_or(0));
        if st.used + bytes > self.limit
            || file_held + bytes > self.per_file
            || (process.is_some() && process_held + bytes > self.per_process)
        {
            return Err(Errno::ENOMEM);
        }
        st.used += bytes;
        if let Some(p) = process {
            *st.by_process.entry(p).or_default() += bytes;
        }
        file.fetch_add(bytes, Ordering::Relaxed);
        Ok(Reservation {
            budget: self.clone(),
            bytes,
            process,
            file: file.clone(),
        })
    }
}

/// Bytes taken from the budget, given back on drop.
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
    process: ProcessId,
    file: Arc<AtomicUsize>,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut st = self.budget.state.lock();
        st.used -= self.bytes;
        if let Some(p) = self.process {
            if let Some(n) = st.by_process.get_mut(&p) {
                *n -= self.bytes;
                if *n == 0 {
                    st.by_process.remove(&p);
                }
            }
        }
        self.file.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn bounds_per_file_process_and_total() {
        let b = Budget::new(32 * MIB);
        let f1 = Arc::new(AtomicUsize::new(0));
        let f2 = Arc::new(AtomicUsize::new(0));
        let f3 = Arc::new(AtomicUsize::new(0));
        let mut held = vec![];
        // A file takes at most a quarter.
        for _ in 0..8 {
            held.push(b.reserve(MIB, Some(7), &f1).unwrap());
        }
        assert_eq!(b.reserve(MIB, Some(7), &f1).err(), Some(Errno::ENOMEM));
        // A process at most half, over all its files.
        for _ in 0..8 {
            held.push(b.reserve(MIB, Some(7), &f2).unwrap());
        }
        assert_eq!(b.reserve(MIB, Some(7), &f3).err(), Some(Errno::ENOMEM));
        // Another process still has its share.
        let f4 = Arc::new(AtomicUsize::new(0));
        held.push(b.reserve(MIB, Some(8), &f4).unwrap());
        assert_eq!(b.used(), 17 * MIB);
        // Giving back frees the bytes everywhere.
        held.clear();
        assert_eq!(b.used(), 0);
        assert_eq!(f1.load(Ordering::Relaxed), 0);
        assert!(b.reserve(8 * MIB, Some(7), &f1).is_ok());
    }

    #[test]
    fn the_total_holds_for_unknown_processes() {
        let b = Budget::new(4 * MIB);
        let files: Vec<_> = (0..8).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let ok: Vec<_> = files
            .iter()
            .filter_map(|f| b.reserve(MIB, None, f).ok())
            .collect();
        assert_eq!(ok.len(), 4, "the total is the last bound");
        assert_eq!(b.reserve(0, None, &files[0]).map(|r| r.bytes()), Ok(0));
    }
}
