//! Requests that wait without holding a thread: a blocking read() with nothing to reap, a
//! command waiting for a thread or for a path. Each is parked here under an id, and the
//! one who takes it out (the event it waited for, a timer, an INTERRUPT, the node going
//! away) answers it: taking is the arbiter, so every parked request is answered once.
//!
//! An INTERRUPT can arrive before its request is parked (the kernel sends it as soon as
//! the request has been read, while another thread still works on it): it is remembered,
//! and the request is answered EINTR when it tries to park. Uniques are never reused, so
//! a remembered interrupt whose request finished without parking is only kept until
//! newer ones push it out (a bounded number).

use crate::cuse::Unique;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};

/// Interrupts remembered for requests not (yet) parked.
const MAX_REMEMBERED_INTERRUPTS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParkId(u64);

pub struct Parked<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    next: u64,
    entries: HashMap<ParkId, (Option<Unique>, T)>,
    by_unique: HashMap<Unique, ParkId>,
    interrupted: BTreeSet<Unique>,
}

impl<T> Default for Parked<T> {
    fn default() -> Self {
        Parked {
            inner: Mutex::new(Inner {
                next: 1,
                entries: HashMap::new(),
                by_unique: HashMap::new(),
                interrupted: BTreeSet::new(),
            }),
        }
    }
}

impl<T> Parked<T> {
    /// Parks `item`, findable by the INTERRUPT of request `unique` if it has one. Err
    /// gives the item back when that request was interrupted already: answer it EINTR.
    pub fn park(&self, unique: Option<Unique>, item: T) -> Result<ParkId, T> {
        let mut g = self.inner.lock();
        if let Some(u) = unique {
            if g.interrupted.remove(&u) {
                return Err(item);
            }
        }
        let id = ParkId(g.next);
        g.next += 1;
        if let Some(u) = unique {
            g.by_unique.insert(u, id);
        }
        g.entries.insert(id, (unique, item));
        Ok(id)
    }

    /// Takes `id` out; None if someone else took it first.
    pub fn take(&self, id: ParkId) -> Option<T> {
        let mut g = self.inner.lock();
        let (unique, item) = g.entries.remove(&id)?;
        if let Some(u) = unique {
            g.by_unique.remove(&u);
        }
        Some(item)
    }

    /// FUSE_INTERRUPT for `unique`: its parked item, taken out, or None (the interrupt is
    /// remembered for a request that parks later).
    pub fn interrupt(&self, unique: Unique) -> Option<T> {
        let mut g = self.inner.lock();
        if let Some(id) = g.by_unique.remove(&unique) {
            return g.entries.remove(&id).map(|(_, item)| item);
        }
        g.interrupted.insert(unique);
        while g.interrupted.len() > MAX_REMEMBERED_INTERRUPTS {
            g.interrupted.pop_first();
        }
        None
    }

    /// Takes out every item `pick` selects (all waiting commands when the map changes).
    pub fn take_all(&self, mut pick: impl FnMut(&T) -> bool) -> Vec<(ParkId, T)> {
        let mut g = self.inner.lock();
        let ids: Vec<ParkId> = g
            .entries
            .iter()
            .filter(|(_, (_, item))| pick(item))
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((unique, item)) = g.entries.remove(&id) {
                if let Some(u) = unique {
                    g.by_unique.remove(&u);
                }
                out.push((id, item));
            }
        }
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Items parked now.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_once() {
        let p = Parked::default();
        let id = p.park(Some(Unique(10)), "a").unwrap();
        assert_eq!(p.take(id), Some("a"));
        assert_eq!(p.take(id), None);
        assert_eq!(p.interrupt(Unique(10)), None, "no longer parked");
    }

    #[test]
    fn an_interrupt_finds_its_request_or_waits_for_it() {
        let p = Parked::default();
        let id = p.park(Some(Unique(2)), "waiting").unwrap();
        assert_eq!(p.interrupt(Unique(2)), Some("waiting"));
        assert_eq!(p.take(id), None, "the interrupt took it");
        // Early: the request parks after its interrupt came.
        assert_eq!(p.interrupt(Unique(4)), None);
        assert_eq!(p.park(Some(Unique(4)), "late"), Err("late"));
        // Once only.
        assert!(p.park(Some(Unique(4)), "again").is_ok());
    }

    #[test]
    fn remembered_interrupts_are_bounded() {
        let p: Parked<()> = Parked::default();
        for u in 0..(MAX_REMEMBERED_INTERRUPTS as u64 + 100) {
            p.interrupt(Unique(u));
        }
        assert_eq!(p.inner.lock().interrupted.len(), MAX_REMEMBERED_INTERRUPTS);
        assert!(
            p.park(Some(Unique(0)), ()).is_ok(),
            "the oldest was forgotten"
        );
    }

    #[test]
    fn take_all_selects_in_order() {
        let p = Parked::default();
        p.park(None, 1).unwrap();
        p.park(Some(Unique(8)), 2).unwrap();
        p.park(None, 3).unwrap();
        let odd: Vec<_> = p
            .take_all(|x| x % 2 == 1)
            .into_iter()
            .map(|(_, x)| x)
            .collect();
        assert_eq!(odd, vec![1, 3]);
        assert_eq!(p.len(), 1);
        assert_eq!(p.interrupt(Unique(8)), Some(2));
        assert!(p.is_empty());
    }
}
