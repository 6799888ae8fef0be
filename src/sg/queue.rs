//! The request list of one open file, as sg keeps it in `struct sg_fd` (drivers/scsi/sg.c,
//! Linux 6.1): at most SG_MAX_QUEUE requests, SG_IO's and write()'s alike, in the order
//! they were made. read() reaps a completed write() request, the oldest first or the one
//! with a given pack_id (sg_get_rq_mark); poll(), SG_GET_NUM_WAITING, SG_GET_PACK_ID and
//! SG_GET_REQUEST_TABLE report on the list. Pure state: no I/O, no locking.

use super::abi::SG_MAX_QUEUE;
use super::header::Abi;
use crate::clock::Coarse;
use crate::errno::Errno;

/// sg's `srp->done`: 0 while the command runs, 1 once it can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Done,
}

#[derive(Debug)]
struct Entry<T> {
    id: u64,
    pack_id: i32,
    usr_ptr: u64,
    /// SG_IO's own request: never reaped by read(), never counted as waiting.
    sg_io_owned: bool,
    state: State,
    started: Coarse,
    /// The command's duration once done (ms).
    duration_ms: u32,
    /// 1 when any of masked_status, host_status, driver_status is set.
    problem: u8,
    result: Option<T>,
}

/// What read() finds for a pack_id.
#[derive(Debug, PartialEq, Eq)]
pub enum Reap<T> {
    Ready(T),
    /// Nothing done yet, but a matching request runs: wait for it.
    Busy,
    /// No matching request at all: sg still waits (it returns ENODEV only when the device
    /// is going away).
    Nothing,
}

#[derive(Debug)]
pub struct RequestQueue<T> {
    entries: Vec<Entry<T>>,
    next_id: u64,
}

impl<T> Default for RequestQueue<T> {
    fn default() -> Self {
        RequestQueue {
            entries: Vec::new(),
            next_id: 1,
        }
    }
}

pub const POLLIN: u32 = libc::POLLIN as u32;
pub const POLLRDNORM: u32 = libc::POLLRDNORM as u32;
pub const POLLOUT: u32 = libc::POLLOUT as u32;
pub const POLLWRNORM: u32 = libc::POLLWRNORM as u32;
pub const POLLHUP: u32 = libc::POLLHUP as u32;

impl<T> RequestQueue<T> {
    /// sg_add_request(): EDOM when the list is full, or when command queuing is off and a
    /// request is outstanding.
    pub fn add(
        &mut self,
        pack_id: i32,
        usr_ptr: u64,
        sg_io_owned: bool,
        cmd_q: bool,
    ) -> Result<u64, Errno> {
        if !self.entries.is_empty() && (!cmd_q || self.entries.len() >= SG_MAX_QUEUE) {
            return Err(Errno::EDOM);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.push(Entry {
            id,
            pack_id,
            usr_ptr,
            sg_io_owned,
            state: State::Active,
            started: Coarse::now(),
            duration_ms: 0,
            problem: 0,
            result: None,
        });
        Ok(id)
    }

    /// Sets a request's pack_id and usr_ptr (sg reads the header after taking the slot).
    pub fn set_ids(&mut self, id: u64, pack_id: i32, usr_ptr: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.pack_id = pack_id;
            e.usr_ptr = usr_ptr;
        }
    }

    /// Whether `add` would find room (sg_add_request()'s test).
    pub fn has_room(&self, cmd_q: bool) -> bool {
        self.entries.is_empty() || (cmd_q && self.entries.len() < SG_MAX_QUEUE)
    }

    /// Drops a request that failed before it was started, or an SG_IO that finished.
    pub fn remove(&mut self, id: u64) {
        self.entries.retain(|e| e.id != id);
    }

    /// The command of request `id` finished. False if the request is gone.
    pub fn complete(&mut self, id: u64, duration_ms: u32, problem: u8, result: T) -> bool {
        match self.entries.iter_mut().find(|e| e.id == id) {
            Some(e) => {
                e.state = State::Done;
                e.duration_ms = duration_ms;
                e.problem = problem;
                e.result = Some(result);
                true
            }
            None => false,
        }
    }

    /// sg_get_rq_mark(): the oldest done request that matches `pack_id` (-1: any), taken
    /// off the list.
    pub fn reap(&mut self, pack_id: i32) -> Reap<T> {
        let mut busy = false;
        let matching = |e: &Entry<T>| !e.sg_io_owned && (pack_id == -1 || e.pack_id == pack_id);
        let mut found = None;
        for (i, e) in self.entries.iter().enumerate() {
            if !matching(e) {
                continue;
            }
            match e.state {
                State::Active => busy = true,
                State::Done => {
                    found = Some(i);
                    break;
                }
            }
        }
        match found {
            Some(i) => {
                let e = self.entries.remove(i);
                Reap::Ready(e.result.expect("a done request has its result"))
            }
            None if busy => Reap::Busy,
            None => Reap::Nothing,
        }
    }

    fn waiting(&self) -> impl Iterator<Item = &Entry<T>> {
        self.entries
            .iter()
            .filter(|e| e.state == State::Done && !e.sg_io_owned)
    }

    /// SG_GET_NUM_WAITING.
    pub fn num_waiting(&self) -> i32 {
        self.waiting().count() as i32
    }

    /// SG_GET_PACK_ID: the pack_id of the first request read() would return, else -1.
    pub fn first_waiting_pack_id(&self) -> i32 {
        self.waiting().next().map_or(-1, |e| e.pack_id)
    }

    /// sg_poll()'s mask.
    pub fn poll_mask(&self, cmd_q: bool, detaching: bool) -> u32 {
        let mut mask = 0;
        if self.waiting().next().is_some() {
            mask |= POLLIN | POLLRDNORM;
        }
        let count = self.entries.len();
        if detaching {
            mask |= POLLHUP;
        } else if (!cmd_q && count == 0) || (cmd_q && count < SG_MAX_QUEUE) {
            mask |= POLLOUT | POLLWRNORM;
        }
        mask
    }

    /// SG_GET_REQUEST_TABLE: SG_MAX_QUEUE sg_req_info entries (24 bytes native, 20 for a
    /// 32-bit caller), unused ones zero.
    pub fn request_table(&self, abi: Abi, now: Coarse) -> Vec<u8> {
        let size = match abi {
            Abi::Native => 24,
            Abi::Compat => 20,
        };
        let mut out = vec![0u8; SG_MAX_QUEUE * size];
        for (e, slot) in self.entries.iter().zip(out.chunks_mut(size)) {
            let done = e.state == State::Done;
            slot[0] = if done { 2 } else { 1 }; // req_state = done + 1
            slot[1] = 0; // orphan: an interrupted SG_IO is never orphaned here
            slot[2] = e.sg_io_owned.into();
            slot[3] = e.problem;
            slot[4..8].copy_from_slice(&e.pack_id.to_ne_bytes());
            let duration = if done {
                e.duration_ms
            } else {
                now.millis_since(e.started)
            };
            match abi {
                Abi::Native => {
                    slot[8..16].copy_from_slice(&e.usr_ptr.to_ne_bytes());
                    slot[16..20].copy_from_slice(&duration.to_ne_bytes());
                }
                Abi::Compat => {
                    slot[8..12].copy_from_slice(&(e.usr_ptr as u32).to_ne_bytes());
                    slot[12..16].copy_from_slice(&duration.to_ne_bytes());
                }
            }
        }
        out
    }

    /// Takes out every finished write() request, oldest first: (pack_id, usr_ptr,
    /// duration_ms, problem, result). For a daemon handing the file to its successor.
    pub fn take_done(&mut self) -> Vec<(i32, u64, u32, u8, T)> {
        let mut out = Vec::new();
        let mut kept = Vec::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            match (e.state, e.sg_io_owned, e.result) {
                (State::Done, false, Some(result)) => {
                    out.push((e.pack_id, e.usr_ptr, e.duration_ms, e.problem, result))
                }
                (state, sg_io_owned, result) => kept.push(Entry {
                    state,
                    sg_io_owned,
                    result,
                    ..e
                }),
            }
        }
        self.entries = kept;
        out
    }

    /// A finished write() request a predecessor handed over (see `take_done`). EDOM when
    /// the list is full.
    pub fn push_done(
        &mut self,
        pack_id: i32,
        usr_ptr: u64,
        duration_ms: u32,
        problem: u8,
        result: T,
    ) -> Result<(), Errno> {
        let id = self.add(pack_id, usr_ptr, false, true)?;
        self.complete(id, duration_ms, problem, result);
        Ok(())
    }

    /// Requests whose command has not finished (SG_IO's, and write()'s not yet done).
    pub fn active(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, State::Active))
            .count()
    }

    /// Requests listed, finished or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_requests_then_edom() {
        let mut q = RequestQueue::<()>::default();
        for i in 0..16 {
            q.add(i, 0, false, true).unwrap();
        }
        assert_eq!(q.add(16, 0, false, true), Err(Errno::EDOM));
        assert_eq!(
            q.add(16, 0, true, true),
            Err(Errno::EDOM),
            "SG_IO counts too"
        );
    }

    #[test]
    fn without_command_queuing_one_request_at_a_time() {
        let mut q = RequestQueue::<()>::default();
        let id = q.add(1, 0, false, false).unwrap();
        assert_eq!(q.add(2, 0, false, false), Err(Errno::EDOM));
        q.remove(id);
        q.add(2, 0, false, false).unwrap();
    }

    #[test]
    fn finished_write_requests_move_to_another_list_in_order() {
        let mut q = RequestQueue::default();
        let a = q.add(10, 0xa, false, true).unwrap();
        let sg_io = q.add(0, 0, true, true).unwrap();
        let b = q.add(11, 0xb, false, true).unwrap();
        let running = q.add(12, 0xc, false, true).unwrap();
        q.complete(b, 7, 1, "b");
        q.complete(a, 5, 0, "a");
        q.complete(sg_io, 1, 0, "sg_io");
        let done = q.take_done();
        assert_eq!(done, vec![(10, 0xa, 5, 0, "a"), (11, 0xb, 7, 1, "b")]);
        assert_eq!(
            (q.len(), q.active()),
            (2, 1),
            "SG_IO's own and the running one stay"
        );
        let _ = running;
        let mut next = RequestQueue::default();
        for (pack_id, usr_ptr, ms, problem, r) in done {
            next.push_done(pack_id, usr_ptr, ms, problem, r).unwrap();
        }
        assert_eq!(next.num_waiting(), 2);
        assert_eq!(next.reap(11), Reap::Ready("b"));
        assert_eq!(next.reap(-1), Reap::Ready("a"));
    }

    #[test]
    fn reap_takes_the_oldest_done_or_the_pack_id_asked_for() {
        let mut q = RequestQueue::default();
        let a = q.add(10, 0, false, true).unwrap();
        let b = q.add(20, 0, false, true).unwrap();
        let c = q.add(30, 0, false, true).unwrap();
        assert_eq!(q.reap(-1), Reap::Busy);
        assert_eq!(q.reap(99), Reap::Nothing);
        q.complete(c, 1, 0, "c");
        q.complete(b, 1, 0, "b");
        assert_eq!(q.num_waiting(), 2);
        assert_eq!(
            q.first_waiting_pack_id(),
            20,
            "list order, not completion order"
        );
        assert_eq!(q.reap(30), Reap::Ready("c"));
        assert_eq!(q.reap(30), Reap::Nothing);
        assert_eq!(q.reap(10), Reap::Busy);
        assert_eq!(q.reap(-1), Reap::Ready("b"));
        q.complete(a, 1, 0, "a");
        assert_eq!(q.reap(-1), Reap::Ready("a"));
        assert!(q.is_empty());
    }

    #[test]
    fn sg_io_requests_are_never_reaped_or_waiting() {
        let mut q = RequestQueue::default();
        let s = q.add(5, 0, true, true).unwrap();
        q.complete(s, 1, 0, ());
        assert_eq!(q.reap(-1), Reap::Nothing);
        assert_eq!(q.num_waiting(), 0);
        assert_eq!(q.first_waiting_pack_id(), -1);
        assert_eq!(q.poll_mask(true, false), POLLOUT | POLLWRNORM);
    }

    #[test]
    fn poll_masks_as_sg_poll() {
        let mut q = RequestQueue::default();
        assert_eq!(q.poll_mask(false, false), POLLOUT | POLLWRNORM);
        let id = q.add(1, 0, false, true).unwrap();
        assert_eq!(
            q.poll_mask(false, false),
            0,
            "cmd_q off and one outstanding"
        );
        assert_eq!(q.poll_mask(true, false), POLLOUT | POLLWRNORM);
        q.complete(id, 0, 0, ());
        assert_eq!(
            q.poll_mask(true, false),
            POLLIN | POLLRDNORM | POLLOUT | POLLWRNORM
        );
        assert_eq!(q.poll_mask(true, true), POLLIN | POLLRDNORM | POLLHUP);
        for i in 0..15 {
            q.add(i, 0, false, true).unwrap();
        }
        assert_eq!(q.poll_mask(true, false), POLLIN | POLLRDNORM, "full");
    }

    #[test]
    fn request_table_layouts() {
        let mut q = RequestQueue::default();
        let a = q.add(7, 0x1122_3344_5566_7788, false, true).unwrap();
        q.add(8, 0x99, true, true).unwrap();
        q.complete(a, 42, 1, ());
        let t = q.request_table(Abi::Native, Coarse::now());
        assert_eq!(t.len(), 16 * 24);
        assert_eq!(&t[0..4], &[2, 0, 0, 1]);
        assert_eq!(i32::from_ne_bytes(t[4..8].try_into().unwrap()), 7);
        assert_eq!(
            u64::from_ne_bytes(t[8..16].try_into().unwrap()),
            0x1122_3344_5566_7788
        );
        assert_eq!(u32::from_ne_bytes(t[16..20].try_into().unwrap()), 42);
        assert_eq!(&t[24..28], &[1, 0, 1, 0]);
        assert!(t[48..].iter().all(|&b| b == 0));
        let t = q.request_table(Abi::Compat, Coarse::now());
        assert_eq!(t.len(), 16 * 20);
        assert_eq!(
            u32::from_ne_bytes(t[8..12].try_into().unwrap()),
            0x5566_7788
        );
        assert_eq!(u32::from_ne_bytes(t[12..16].try_into().unwrap()), 42);
        assert_eq!(i32::from_ne_bytes(t[24..28].try_into().unwrap()), 8);
    }
}

/// The request list against a plain model of sg's list (`cargo test fuzz`).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Add {
            pack_id: i32,
            sg_io: bool,
            cmd_q: bool,
        },
        SetIds {
            which: prop::sample::Index,
            pack_id: i32,
        },
        Complete {
            which: prop::sample::Index,
            problem: bool,
        },
        Remove {
            which: prop::sample::Index,
        },
        Reap {
            pack_id: i32,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let pack = prop_oneof![Just(-1), 0i32..4, any::<i32>()];
        prop_oneof![
            4 => (pack.clone(), prop::bool::weighted(0.2), prop::bool::weighted(0.9))
                .prop_map(|(pack_id, sg_io, cmd_q)| Op::Add { pack_id, sg_io, cmd_q }),
            1 => (any::<prop::sample::Index>(), pack.clone()).prop_map(|(which, pack_id)| Op::SetIds { which, pack_id }),
            3 => (any::<prop::sample::Index>(), any::<bool>()).prop_map(|(which, problem)| Op::Complete { which, problem }),
            1 => any::<prop::sample::Index>().prop_map(|which| Op::Remove { which }),
            3 => pack.prop_map(|pack_id| Op::Reap { pack_id }),
        ]
    }

    #[derive(Debug, Clone)]
    struct Model {
        id: u64,
        pack_id: i32,
        sg_io: bool,
        done: bool,
        problem: bool,
    }

    proptest! {
        #[test]
        fn the_list_behaves_as_sgs(ops in prop::collection::vec(op(), 1..80)) {
            let mut q = RequestQueue::<u64>::default();
            let mut model: Vec<Model> = Vec::new();
            // Ids handed out, including ones since removed (stale ids must be harmless).
            let mut ids: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Add { pack_id, sg_io, cmd_q } => {
                        let full = !model.is_empty() && (!cmd_q || model.len() >= SG_MAX_QUEUE);
                        prop_assert_eq!(q.has_room(cmd_q), !full);
                        match q.add(pack_id, 0x1000 + pack_id as u64, sg_io, cmd_q) {
                            Ok(id) => {
                                prop_assert!(!full);
                                prop_assert!(!ids.contains(&id), "id {} reused", id);
                                ids.push(id);
                                model.push(Model { id, pack_id, sg_io, done: false, problem: false });
                            }
                            Err(e) => {
                                prop_assert!(full);
                                prop_assert_eq!(e, Errno::EDOM);
                            }
                        }
                    }
                    Op::SetIds { which, pack_id } if !ids.is_empty() => {
                        let id = ids[which.index(ids.len())];
                        q.set_ids(id, pack_id, 0);
                        if let Some(m) = model.iter_mut().find(|m| m.id == id) {
                            m.pack_id = pack_id;
                        }
                    }
                    Op::Complete { which, problem } if !ids.is_empty() => {
                        let id = ids[which.index(ids.len())];
                        // A request completes once; a gone one cannot complete.
                        if let Some(m) = model.iter_mut().find(|m| m.id == id && !m.done) {
                            m.done = true;
                            m.problem = problem;
                            prop_assert!(q.complete(id, 5, problem.into(), id));
                        } else if !model.iter().any(|m| m.id == id) {
                            prop_assert!(!q.complete(id, 5, problem.into(), id));
                        }
                    }
                    Op::Remove { which } if !ids.is_empty() => {
                        let id = ids[which.index(ids.len())];
                        q.remove(id);
                        model.retain(|m| m.id != id);
                    }
                    Op::Reap { pack_id } => {
                        let matching = |m: &Model| !m.sg_io && (pack_id == -1 || m.pack_id == pack_id);
                        let expect = match model.iter().position(|m| matching(m) && m.done) {
                            Some(i) => Reap::Ready(model.remove(i).id),
                            None if model.iter().any(matching) => Reap::Busy,
                            None => Reap::Nothing,
                        };
                        prop_assert_eq!(q.reap(pack_id), expect);
                    }
                    _ => {}
                }
                let waiting: Vec<&Model> = model.iter().filter(|m| m.done && !m.sg_io).collect();
                prop_assert_eq!(q.num_waiting(), waiting.len() as i32);
                prop_assert_eq!(q.first_waiting_pack_id(), waiting.first().map_or(-1, |m| m.pack_id));
                prop_assert_eq!(q.is_empty(), model.is_empty());
                for cmd_q in [false, true] {
                    let mut mask = if waiting.is_empty() { 0 } else { POLLIN | POLLRDNORM };
                    if (!cmd_q && model.is_empty()) || (cmd_q && model.len() < SG_MAX_QUEUE) {
                        mask |= POLLOUT | POLLWRNORM;
                    }
                    prop_assert_eq!(q.poll_mask(cmd_q, false), mask);
                }
                let table = q.request_table(Abi::Native, Coarse::now());
                prop_assert_eq!(table.len(), SG_MAX_QUEUE * 24);
                for (i, slot) in table.chunks(24).enumerate() {
                    match model.get(i) {
                        Some(m) => {
                            prop_assert_eq!(slot[0], if m.done { 2 } else { 1 });
                            prop_assert_eq!(slot[2], u8::from(m.sg_io));
                            prop_assert_eq!(slot[3], u8::from(m.done && m.problem));
                            prop_assert_eq!(i32::from_ne_bytes(slot[4..8].try_into().unwrap()), m.pack_id);
                        }
                        None => prop_assert!(slot.iter().all(|&b| b == 0)),
                    }
                }
            }
        }
    }
}
