//! What a node's front ends share: the map's failover engine, its open files, the work
//! and reads parked without a thread, the data budget, the timer, and the way to hand
//! work to the node's threads.

use super::budget::Budget;
use super::buffer::WorkerLocal;
use super::files::{Files, ReadWaits};
use super::parked::Parked;
use super::timer::Timer;
use super::work::Work;
use crate::cuse::Job;
use crate::failover::Engine;
use crate::sg::plan::MAX_ROUND_TRANSFER;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

type Submit = Box<dyn Fn(Job<WorkerLocal>) + Send + Sync>;

pub struct MapState {
    pub engine: Arc<Engine>,
    /// Serve SG_IO in one round through the caller's memory when it can be reached.
    pub single_round: bool,
    pub files: Files,
    /// Commands waiting for a thread or a path.
    pub work: Parked<Work>,
    /// Blocking reads waiting for a completion.
    pub reads: Arc<ReadWaits>,
    pub budget: Arc<Budget>,
    pub timer: Arc<Timer>,
    /// The node is going away: waiting reads end with ENODEV, poll says POLLHUP.
    detaching: AtomicBool,
    submit: OnceLock<Submit>,
}

impl MapState {
    pub fn new(
        engine: Arc<Engine>,
        single_round: bool,
        budget: Arc<Budget>,
        timer: Arc<Timer>,
    ) -> MapState {
        MapState {
            engine,
            single_round,
            files: Files::default(),
            work: Parked::default(),
            reads: Arc::new(Parked::default()),
            budget,
            timer,
            detaching: AtomicBool::new(false),
            submit: OnceLock::new(),
        }
    }

    /// How work reaches the node's threads (set once the device exists).
    pub fn set_submit(&self, submit: Submit) {
        let _ = self.submit.set(submit);
    }

    /// Runs `job` on one of the node's threads (dropped if the node has none yet).
    pub fn submit(&self, job: Job<WorkerLocal>) {
        match self.submit.get() {
            Some(submit) => submit(job),
            None => {
                tracing::error!(map = %self.engine.map(), "work for a node without threads dropped")
            }
        }
    }

    pub fn detaching(&self) -> bool {
        self.detaching.load(Ordering::SeqCst)
    }

    pub fn set_detaching(&self) {
        self.detaching.store(true, Ordering::SeqCst);
    }

    /// The largest transfer the node advertises: what every path allows and, without the
    /// single round, what one ioctl can carry through CUSE's retry rounds. (A caller the
    /// daemon cannot reach is served in rounds and limited to MAX_ROUND_TRANSFER whatever
    /// is advertised: docs/sg-compat.md.)
    pub fn max_transfer(&self) -> usize {
        let paths = self.engine.max_transfer();
        if self.single_round {
            paths
        } else {
            paths.min(MAX_ROUND_TRANSFER)
        }
    }
}
