//! The byte budget for data the daemon holds on behalf of callers beyond a command's own
//! run: results of write() commands not read yet (data-in), and data-out of commands
//! waiting for a path. A reservation is taken before the data is held and given back when
//! it is freed; past a bound the caller gets ENOMEM, what sg answers when it cannot
//! allocate a request's buffer (docs/sg-compat.md). Three bounds: the daemon's total,
//! each holder (the process that opened the file, by its thread group; the opener's user
//! when the daemon cannot see the process), each open file. A hoarding process is stopped
//! at its share; other processes keep theirs.

use crate::errno::Errno;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Who holds a file's data: the process that opened it or, when the daemon cannot see
/// that process (another pid namespace), its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holder {
    Process(u32),
    User(u32),
}

pub struct Budget {
    limit: usize,
    per_process: usize,
    per_file: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    used: usize,
    by_holder: HashMap<Holder, usize>,
}

impl Budget {
    /// `limit` bytes in all; a holder may hold half of it, an open file a quarter.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            per_process: limit / 2,
            per_file: limit / 4,
            state: Mutex::new(State::default()),
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.state.lock().used
    }

    /// Takes `bytes` for `file` (its held-bytes counter) of `holder`; ENOMEM past any
    /// bound.
    pub fn reserve(
        self: &Arc<Self>,
        bytes: usize,
        holder: Holder,
        file: &Arc<AtomicUsize>,
    ) -> Result<Reservation, Errno> {
        if bytes == 0 {
            return Ok(Reservation {
                budget: self.clone(),
                bytes: 0,
                holder,
                file: file.clone(),
            });
        }
        let mut st = self.state.lock();
        let file_held = file.load(Ordering::Relaxed);
        let holder_held = st.by_holder.get(&holder).copied().unwrap_or(0);
        if st.used + bytes > self.limit
            || file_held + bytes > self.per_file
            || holder_held + bytes > self.per_process
        {
            return Err(Errno::ENOMEM);
        }
        st.used += bytes;
        *st.by_holder.entry(holder).or_default() += bytes;
        file.fetch_add(bytes, Ordering::Relaxed);
        Ok(Reservation {
            budget: self.clone(),
            bytes,
            holder,
            file: file.clone(),
        })
    }
}

/// Bytes taken from the budget, given back on drop.
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
    holder: Holder,
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
        if let Some(n) = st.by_holder.get_mut(&self.holder) {
            *n -= self.bytes;
            if *n == 0 {
                st.by_holder.remove(&self.holder);
            }
        }
        self.file.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;
    const P7: Holder = Holder::Process(7);

    #[test]
    fn bounds_per_file_process_and_total() {
        let b = Budget::new(32 * MIB);
        let f1 = Arc::new(AtomicUsize::new(0));
        let f2 = Arc::new(AtomicUsize::new(0));
        let f3 = Arc::new(AtomicUsize::new(0));
        let mut held = vec![];
        // A file takes at most a quarter.
        for _ in 0..8 {
            held.push(b.reserve(MIB, P7, &f1).unwrap());
        }
        assert_eq!(b.reserve(MIB, P7, &f1).err(), Some(Errno::ENOMEM));
        // A process at most half, over all its files.
        for _ in 0..8 {
            held.push(b.reserve(MIB, P7, &f2).unwrap());
        }
        assert_eq!(b.reserve(MIB, P7, &f3).err(), Some(Errno::ENOMEM));
        // Another process still has its share.
        let f4 = Arc::new(AtomicUsize::new(0));
        held.push(b.reserve(MIB, Holder::Process(8), &f4).unwrap());
        assert_eq!(b.used(), 17 * MIB);
        // Giving back frees the bytes everywhere.
        held.clear();
        assert_eq!(b.used(), 0);
        assert_eq!(f1.load(Ordering::Relaxed), 0);
        assert!(b.reserve(8 * MIB, P7, &f1).is_ok());
    }

    #[test]
    fn the_total_is_the_last_bound() {
        let b = Budget::new(4 * MIB);
        let files: Vec<_> = (0..8).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let ok: Vec<_> = files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| b.reserve(MIB, Holder::User(i as u32), f).ok())
            .collect();
        assert_eq!(
            ok.len(),
            4,
            "eight holders within their shares, the total full at four"
        );
        assert_eq!(b.reserve(0, P7, &files[0]).map(|r| r.bytes()), Ok(0));
    }
}
