//! A map's path devices, opened once each. The first snapshot of a map opens them in
//! line (the node is published with its limits known); after that a path new to the
//! table is opened on a thread of its own, outside every lock a command takes: opening a
//! block device waits for error handling on its host (sd_open), which can take minutes,
//! and no command may wait behind that.

use crate::clock::Coarse;
use crate::dm::DevT;
use crate::path::{PathInfo, PathIo};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Opens a path device: its sysfs facts and an executor. The daemon uses sysfs + sg; tests
/// use fakes.
pub type PathOpener = dyn Fn(DevT) -> io::Result<OpenedPath> + Send + Sync;

/// A path device's sysfs facts and its executor.
pub type OpenedPath = (PathInfo, Arc<dyn PathIo>);

/// How long a path that could not be opened is left alone (each try touches sysfs and
/// the devices).
const OPEN_RETRY: Duration = Duration::from_secs(1);

pub struct Openings {
    map: String,
    opener: Arc<PathOpener>,
    state: Mutex<State>,
    /// Set when a background open ends: the map's snapshot is re-read before the next
    /// command (the engine's "stale" flag).
    changed: Arc<AtomicBool>,
    /// Called when a background open ends with the path usable: commands waiting for a
    /// path try again.
    on_opened: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

#[derive(Default)]
struct State {
    opened: HashMap<DevT, OpenedPath>,
    /// When an open last failed.
    failed: HashMap<DevT, Coarse>,
    /// Opens under way.
    pending: HashSet<DevT>,
    /// The devices of the map's table as last read: a background open of a device that
    /// left it meanwhile is not kept.
    in_table: HashSet<DevT>,
}

impl Openings {
    pub fn new(map: &str, opener: Arc<PathOpener>, changed: Arc<AtomicBool>) -> Arc<Openings> {
        Arc::new(Openings {
            map: map.to_string(),
            opener,
            state: Mutex::new(State::default()),
            changed,
            on_opened: OnceLock::new(),
        })
    }

    /// Sets what is called when a background open makes a path usable (once).
    pub fn on_opened(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_opened.set(f);
    }

    /// Something about the map's paths changed outside device-mapper (a path open ended,
    /// a probe gave its verdict): re-read before the next command, wake waiting ones.
    pub fn wake(&self) {
        self.changed.store(true, Ordering::Release);
        if let Some(f) = self.on_opened.get() {
            f();
        }
    }

    /// Whether an open of `dev` is under way.
    pub fn is_pending(&self, dev: DevT) -> bool {
        self.state.lock().pending.contains(&dev)
    }

    /// The path opened now, on the calling thread, unless it is open already or failed
    /// less than a second ago.
    pub fn open_now(&self, dev: DevT) -> Option<OpenedPath> {
        {
            let st = self.state.lock();
            if let Some(p) = st.opened.get(&dev) {
                return Some(p.clone());
            }
            if st
                .failed
                .get(&dev)
                .is_some_and(|at| at.elapsed() < OPEN_RETRY)
            {
                return None;
            }
        }
        let result = (self.opener)(dev);
        self.finish(dev, result, false)
    }

    /// The path if it is open; otherwise None, and an open starts in the background
    /// (unless one is under way or the last failed less than a second ago).
    pub fn get_or_start(self: &Arc<Self>, dev: DevT) -> Option<OpenedPath> {
        {
            let mut st = self.state.lock();
            if let Some(p) = st.opened.get(&dev) {
                return Some(p.clone());
            }
            if st.pending.contains(&dev)
                || st
                    .failed
                    .get(&dev)
                    .is_some_and(|at| at.elapsed() < OPEN_RETRY)
            {
                return None;
            }
            st.pending.insert(dev);
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("open {dev}"))
            .spawn(move || {
                let result = (this.opener)(dev);
                if this.finish(dev, result, true).is_some() {
                    this.wake();
                }
            });
        if let Err(e) = spawned {
            let mut st = self.state.lock();
            st.pending.remove(&dev);
            st.failed.insert(dev, Coarse::now());
            tracing::warn!(map = %self.map, path = %dev, "cannot start a thread to open the path: {e}");
        }
        None
    }

    /// Records an open's result (and the end of a background one, under the same lock: a
    /// look in between would start a second open).
    fn finish(
        &self,
        dev: DevT,
        result: io::Result<OpenedPath>,
        background: bool,
    ) -> Option<OpenedPath> {
        let mut st = self.state.lock();
        if background {
            st.pending.remove(&dev);
            if !st.in_table.contains(&dev) {
                // Gone from the map while it was opened: its devices close here.
                return None;
            }
        }
        match result {
            Ok(p) => {
                st.failed.remove(&dev);
                st.opened.insert(dev, p.clone());
                Some(p)
            }
            Err(e) => {
                tracing::warn!(map = %self.map, path = %dev, "path unusable: {e}");
                st.failed.insert(dev, Coarse::now());
                None
            }
        }
    }

    /// The devices of the map's table, read before its paths are looked up: forgets the
    /// paths no longer in it (their devices close when the last snapshot naming them
    /// goes).
    pub fn set_table(&self, in_table: HashSet<DevT>) {
        let mut st = self.state.lock();
        st.opened.retain(|d, _| in_table.contains(d));
        st.failed.retain(|d, _| in_table.contains(d));
        st.in_table = in_table;
    }

    /// Opens under way (tests).
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.state.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::Errno;
    use crate::path::{PathCommand, PathError};
    use crate::sg::header::Completion;
    use std::sync::mpsc;

    struct Nothing;
    impl PathIo for Nothing {
        fn execute(&self, _: &mut PathCommand<'_>) -> Result<Completion, PathError> {
            Err(PathError::Refused(Errno::EIO))
        }
    }

    fn dev(minor: u32) -> DevT {
        DevT { major: 8, minor }
    }

    /// An opener whose every open is stuck (as in error handling) until the test sends
    /// one release for it.
    fn gated_opener() -> (mpsc::Sender<()>, Arc<PathOpener>) {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let opener: Arc<PathOpener> = Arc::new(move |_| {
            release_rx.lock().recv().unwrap();
            Ok((PathInfo::default(), Arc::new(Nothing) as Arc<dyn PathIo>))
        });
        (release_tx, opener)
    }

    #[test]
    fn a_background_open_does_not_hold_up_the_caller_and_marks_the_map_changed() {
        let (release_tx, opener) = gated_opener();
        let changed = Arc::new(AtomicBool::new(false));
        let o = Openings::new("m", opener, changed.clone());
        let woken = Arc::new(AtomicBool::new(false));
        let w = woken.clone();
        o.on_opened(Box::new(move || w.store(true, Ordering::Release)));
        o.set_table(HashSet::from([dev(0)]));
        assert!(o.get_or_start(dev(0)).is_none());
        assert!(
            o.get_or_start(dev(0)).is_none(),
            "a second look returns at once"
        );
        assert_eq!(o.pending(), 1, "one open, not two");
        assert!(!changed.load(Ordering::Acquire));
        release_tx.send(()).unwrap();
        let t = std::time::Instant::now();
        while o.pending() > 0 || !changed.load(Ordering::Acquire) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the open never ended"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(o.get_or_start(dev(0)).is_some());
        assert!(woken.load(Ordering::Acquire), "waiting commands were told");
    }

    #[test]
    fn a_path_that_left_the_table_while_it_was_opened_is_not_kept() {
        let (release_tx, opener) = gated_opener();
        let changed = Arc::new(AtomicBool::new(false));
        let o = Openings::new("m", opener, changed.clone());
        o.set_table(HashSet::from([dev(0)]));
        assert!(o.get_or_start(dev(0)).is_none());
        o.set_table(HashSet::new());
        release_tx.send(()).unwrap();
        let t = std::time::Instant::now();
        while o.is_pending(dev(0)) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the open never ended"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!changed.load(Ordering::Acquire));
        o.set_table(HashSet::from([dev(0)]));
        assert!(o.get_or_start(dev(0)).is_none(), "opened again, not kept");
        release_tx.send(()).unwrap();
    }

    #[test]
    fn a_failed_open_is_tried_again_after_a_second_and_forgotten_with_the_table() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = calls.clone();
        let opener: Arc<PathOpener> = Arc::new(move |_| {
            c.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::other("no sg node"))
        });
        let o = Openings::new("m", opener, Arc::new(AtomicBool::new(false)));
        assert!(o.open_now(dev(0)).is_none());
        assert!(o.open_now(dev(0)).is_none());
        assert!(o.get_or_start(dev(0)).is_none());
        assert_eq!(
            calls.load(Ordering::Relaxed),
            1,
            "no retry within the second"
        );
        o.set_table(HashSet::new());
        assert!(o.open_now(dev(0)).is_none());
        assert_eq!(
            calls.load(Ordering::Relaxed),
            2,
            "a path that left the table and came back is tried at once"
        );
    }
}
