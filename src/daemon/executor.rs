//! Threads that run the commands of sg's asynchronous interface: write() queues a command
//! and returns at once, so the command runs here, on one map's own threads. The pool
//! grows while jobs wait and no thread is idle (up to `max`), and a thread idle for
//! IDLE_EXIT leaves, so an idle map costs no threads beyond its CUSE workers.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

const IDLE_EXIT: Duration = Duration::from_secs(10);

pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    max: usize,
    state: Mutex<State>,
    work: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
    stopping: bool,
}

impl Executor {
    pub fn new(name: &str, max: usize) -> Executor {
        Executor {
            inner: Arc::new(Inner {
                name: name.to_string(),
                max: max.max(1),
                state: Mutex::new(State::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// Runs `job` on a pool thread. Jobs queue when all `max` threads are busy. After
    /// `stop`, new jobs are dropped unrun.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        let mut st = self.inner.state.lock();
        if st.stopping {
            return;
        }
        st.jobs.push_back(Box::new(job));
        if st.jobs.len() > st.idle && st.threads < self.inner.max {
            st.threads += 1;
            let n = st.threads;
            drop(st);
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("async-{}-{n}", self.inner.name))
                .stack_size(256 * 1024)
                .spawn(move || inner.worker());
            if let Err(e) = spawned {
                // The job waits for a running thread; with none, it runs here.
                tracing::warn!(map = %self.inner.name, "cannot start a command thread: {e}");
                let mut st = self.inner.state.lock();
                st.threads -= 1;
                if st.threads == 0 {
                    let job = st.jobs.pop_front();
                    drop(st);
                    if let Some(job) = job {
                        job();
                    }
                }
            }
        } else {
            self.inner.work.notify_one();
        }
    }

    /// Takes no more jobs; the threads leave once the queued ones have run (at shutdown
    /// the engine is closed first, so they finish at once).
    pub fn stop(&self) {
        let mut st = self.inner.state.lock();
        st.stopping = true;
        self.inner.work.notify_all();
    }

    #[cfg(test)]
    fn threads(&self) -> usize {
        self.inner.state.lock().threads
    }
}

impl Inner {
    fn worker(self: Arc<Self>) {
        let mut st = self.state.lock();
        loop {
            if let Some(job) = st.jobs.pop_front() {
                drop(st);
                job();
                st = self.state.lock();
                continue;
            }
            if st.stopping {
                break;
            }
            st.idle += 1;
            let timed_out = self.work.wait_for(&mut st, IDLE_EXIT).timed_out();
            st.idle -= 1;
            if timed_out && st.jobs.is_empty() {
                break;
            }
        }
        st.threads -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn runs_jobs_concurrently_up_to_max() {
        let ex = Executor::new("t", 4);
        // Four jobs that only finish together: they must run on four threads at once.
        let barrier = Arc::new(Barrier::new(5));
        for _ in 0..4 {
            let b = barrier.clone();
            ex.submit(move || {
                b.wait();
            });
        }
        barrier.wait();
        assert!(ex.threads() <= 4);
    }

    #[test]
    fn queues_beyond_max_and_runs_everything() {
        let ex = Executor::new("t", 2);
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..50 {
            let d = done.clone();
            ex.submit(move || {
                std::thread::sleep(Duration::from_millis(1));
                d.fetch_add(1, Ordering::SeqCst);
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::SeqCst) < 50 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(done.load(Ordering::SeqCst), 50);
        assert!(ex.threads() <= 2);
    }

    #[test]
    fn stop_runs_queued_jobs_and_refuses_new_ones() {
        let ex = Executor::new("t", 1);
        let gate = Arc::new(Barrier::new(2));
        let ran = Arc::new(AtomicUsize::new(0));
        let g = gate.clone();
        ex.submit(move || {
            g.wait();
        });
        let r = ran.clone();
        ex.submit(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        ex.stop();
        let r = ran.clone();
        ex.submit(move || {
            r.fetch_add(10, Ordering::SeqCst);
        });
        gate.wait();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ex.threads() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(ex.threads(), 0, "threads leave after stop");
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "queued job ran, later one did not"
        );
    }
}
