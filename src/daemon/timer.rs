//! One thread for every deadline of the daemon: commands waiting for a path are looked
//! at again when their retry time comes. A task only hands work to its node's threads
//! (it must never block: every node shares this thread).

use crate::clock::Coarse;
use parking_lot::{Condvar, Mutex};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

type Task = Box<dyn FnOnce() + Send>;

pub struct Timer {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    next: u64,
    due: BinaryHeap<Reverse<(Coarse, u64)>>,
    tasks: HashMap<u64, Task>,
    stopping: bool,
}

impl Timer {
    /// Starts the timer's thread; it runs until `stop`.
    pub fn start() -> std::io::Result<Arc<Timer>> {
        let timer = Arc::new(Timer {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let t = timer.clone();
        std::thread::Builder::new()
            .name("timer".into())
            .spawn(move || t.run())?;
        Ok(timer)
    }

    /// Runs `task` at `at` (at once if that has passed).
    pub fn schedule(&self, at: Coarse, task: Task) {
        let mut st = self.state.lock();
        if st.stopping {
            return;
        }
        let id = st.next;
        st.next += 1;
        st.due.push(Reverse((at, id)));
        st.tasks.insert(id, task);
        self.wake.notify_one();
    }

    /// Tasks waiting.
    pub fn pending(&self) -> usize {
        self.state.lock().tasks.len()
    }

    /// Ends the thread; tasks not run yet are dropped.
    pub fn stop(&self) {
        let mut st = self.state.lock();
        st.stopping = true;
        st.tasks.clear();
        self.wake.notify_one();
    }

    fn run(&self) {
        let mut st = self.state.lock();
        loop {
            if st.stopping {
                return;
            }
            let now = Coarse::now();
            match st.due.peek() {
                Some(Reverse((at, _))) if *at <= now => {
                    let Reverse((_, id)) = st.due.pop().expect("peeked");
                    if let Some(task) = st.tasks.remove(&id) {
                        drop(st);
                        // Every node shares this thread: a panicking task must not end it.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)).is_err() {
                            tracing::error!("a timer task panicked");
                        }
                        st = self.state.lock();
                    }
                }
                // The coarse clock ticks every few ms: waking a tick late is fine.
                Some(Reverse((at, _))) => {
                    let wait = at.since(now).max(Duration::from_millis(1));
                    self.wake.wait_for(&mut st, wait);
                }
                None => self.wake.wait(&mut st),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_tasks_in_time_order() {
        let t = Timer::start().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let now = Coarse::now();
        for (ms, tag) in [(60u64, 3), (20, 1), (40, 2)] {
            let o = order.clone();
            t.schedule(
                now + Duration::from_millis(ms),
                Box::new(move || o.lock().push(tag)),
            );
        }
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        t.schedule(
            now,
            Box::new(move || {
                d.fetch_add(1, Ordering::SeqCst);
            }),
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(*order.lock(), vec![1, 2, 3]);
        assert_eq!(done.load(Ordering::SeqCst), 1, "a past time runs at once");
        assert_eq!(t.pending(), 0);
        t.stop();
    }
}
