//! Runs one SCSI command on a map: picks a path the way dm-multipath would, classifies the
//! result, tries the next path on a path error (failing the path in device-mapper once the
//! daemon's own probe of it confirms the error), and waits
//! (queue_if_no_path) or completes with DID_TRANSPORT_DISRUPTED when none is left.
//!
//! The map's state is an immutable snapshot (table + status + open paths) swapped under a
//! per-map lock that is never held across SG_IO; it is re-read from device-mapper after a
//! DM event for the map (`mark_stale`), every `refresh_interval`, after any path error, and
//! while waiting for a path, so paths that device-mapper or multipathd reinstate are used
//! again at once.

use super::openings::{OpenedPath, Openings, PathOpener};
use super::policy::safe_to_repeat;
use crate::clock::{Coarse, LogLimit};
use crate::dm::{DevT, DmControl, GroupState, MapId, Message, MultipathStatus, MultipathTable};
use crate::errno::Errno;
use crate::path::{PathCommand, PathError, PathInfo};
use crate::scsi::classify::{
    alua_state_changed, classify_completion, classify_errno, classify_lost, host, Verdict,
};
use crate::sg::header::Completion;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// SG_IO with timeout 0 gets the block layer's default (SCSI: 30 s); the wait for a path
/// is bounded the same way.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened on one path, for `mpath-sgd status`: atomics touched by the commands
/// of this map only; the last error's lock is taken only when a path fails.
#[derive(Default)]
pub struct PathStats {
    pub commands: AtomicU64,
    pub path_errors: AtomicU64,
    /// Commands that moved on to another path after an error here.
    pub failovers: AtomicU64,
    pub last_error: Mutex<Option<(SystemTime, String)>>,
    /// The daemon's own probe of the path is under way (one at a time per path).
    probing: AtomicBool,
    /// When the last probe found the path answering.
    answered_at: Mutex<Option<Coarse>>,
    /// When the port last answered that its ALUA state serves no I/O (standby,
    /// unavailable), in coarse-clock milliseconds, 0 for never or cleared (the LU
    /// reported an ALUA state change, or the port answered a command). An atomic: every
    /// command reads it for every path, and clears it on the port that answered.
    inactive_at: AtomicU64,
}

impl PathStats {
    /// The port said within `ALUA_RECHECK` that it serves no I/O: tried after the others.
    fn recently_inactive(&self) -> bool {
        match self.inactive_at.load(Ordering::Relaxed) {
            0 => false,
            ms => Coarse::from_millis(ms).elapsed() < ALUA_RECHECK,
        }
    }

    /// Marks the port inactive now; true if it was not marked.
    fn mark_inactive(&self) -> bool {
        let now = Coarse::now().as_millis().max(1);
        self.inactive_at.swap(now, Ordering::Relaxed) == 0
    }

    fn clear_inactive(&self) {
        if self.inactive_at.load(Ordering::Relaxed) != 0 {
            self.inactive_at.store(0, Ordering::Relaxed);
        }
    }
}

pub struct PathEntry {
    pub dev: DevT,
    pub stats: Arc<PathStats>,
    /// None when the device cannot be used (no SCSI device or sg node behind it), or is
    /// still being opened.
    pub opened: Option<OpenedPath>,
    /// Being opened in the background when the snapshot was taken.
    pub opening: bool,
    /// State in device-mapper's status when the snapshot was taken.
    pub dm_active: bool,
    /// Failed by this daemon since the snapshot was taken.
    failed_here: AtomicBool,
}

impl PathEntry {
    fn usable(&self) -> bool {
        self.dm_active && self.opened.is_some() && !self.failed_here.load(Ordering::Relaxed)
    }

    pub fn name(&self) -> String {
        match &self.opened {
            Some((info, _)) => format!(
                "{} ({}, {})",
                self.dev,
                info.block_name,
                info.sg_node.display()
            ),
            None => self.dev.to_string(),
        }
    }
}

pub struct Group {
    pub state: GroupState,
    pub paths: Vec<Arc<PathEntry>>,
}

pub struct Snapshot {
    pub groups: Vec<Group>,
    /// What the node may advertise and accept, computed once per snapshot.
    pub limits: Limits,
    /// 1-based number of the group device-mapper uses next.
    pub next_group: usize,
    pub queue_if_no_path: bool,
    taken: Coarse,
}

impl Snapshot {
    /// Usable paths in the order dm-multipath would try them, as (group, path) indices:
    /// the current group, then the other groups in table (priority) order, bypassed
    /// groups last; round-robin from `rr` over the usable paths of a group. One small
    /// vector of indices, no path cloned.
    fn order(&self, rr: usize) -> Vec<(usize, usize)> {
        let n = self.groups.len();
        let mut out = Vec::with_capacity(self.groups.iter().map(|g| g.paths.len()).sum());
        let current = (1..=n).contains(&self.next_group)
            && self.groups[self.next_group - 1].state != GroupState::Disabled;
        let mut visit = |g: usize| {
            let start = out.len();
            out.extend(
                self.groups[g]
                    .paths
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.usable())
                    .map(|(i, _)| (g, i)),
            );
            let len = out.len() - start;
            if len > 0 {
                out[start..].rotate_left(rr % len);
            }
        };
        if current {
            visit(self.next_group - 1);
        }
        for disabled in [false, true] {
            for (g, group) in self.groups.iter().enumerate() {
                if (group.state == GroupState::Disabled) == disabled
                    && !(current && g == self.next_group - 1)
                {
                    visit(g);
                }
            }
        }
        // Ports that just said their ALUA state serves no I/O go last (still tried: the
        // state may have changed), the rest keep device-mapper's order. Nothing more is
        // done for the usual command, when no port is marked; otherwise each mark is read
        // once for the split (it may change meanwhile).
        let inactive = |&(g, i): &(usize, usize)| self.groups[g].paths[i].stats.recently_inactive();
        if out.iter().any(inactive) {
            let (active, last): (Vec<_>, Vec<_>) = out.into_iter().partition(|p| !inactive(p));
            out = active;
            out.extend(last);
        }
        out
    }

    /// Every usable path, in table order.
    fn usable(&self) -> impl Iterator<Item = &Arc<PathEntry>> {
        self.groups
            .iter()
            .flat_map(|g| g.paths.iter())
            .filter(|p| p.usable())
    }
}

/// What the node advertises: the most every path allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// What sg would advertise (BLKSECTGET): the smallest max_sectors of the paths.
    pub max_transfer: usize,
    /// What sg would accept: the smallest max_hw_sectors of the paths.
    pub max_hw_transfer: usize,
    pub max_segments: i32,
    /// The first path of the table that could be opened: its SCSI address and type stand
    /// for the map (SG_GET_SCSI_ID, SCSI_IOCTL_GET_IDLUN).
    pub representative: Option<PathInfo>,
}

/// How a re-read of the map opens the paths new to its table.
#[derive(Clone, Copy)]
enum Open {
    Now,
    InBackground,
}

pub struct Engine {
    /// The map's device (addressed by uuid or name, its device number checked).
    map: MapId,
    dm: Arc<dyn DmControl>,
    openings: Arc<Openings>,
    snapshot: Mutex<Arc<Snapshot>>,
    /// One re-read of the map at a time (device-mapper ioctls only: no path device is
    /// opened under it after the first).
    refresh_lock: Mutex<()>,
    stats: Mutex<HashMap<DevT, Arc<PathStats>>>,
    rr: AtomicUsize,
    /// Device-mapper reported an event for this map, or a path finished opening: re-read
    /// it before the next command.
    stale: Arc<AtomicBool>,
    /// Set at shutdown: commands waiting for a path complete at once.
    closing: AtomicBool,
    /// One line a second per map for commands that end without a path, however many do.
    no_path_log: LogLimit,
    time_spent_log: LogLimit,
    pub refresh_interval: Duration,
    /// How soon a command waiting for a path (queue_if_no_path) tries again when no
    /// device-mapper event for the map came first.
    pub queue_poll: Duration,
    /// How soon a command tries again while a port is in ALUA transition.
    pub transition_poll: Duration,
}

impl Engine {
    pub fn new(map: MapId, dm: Arc<dyn DmControl>, opener: Arc<PathOpener>) -> io::Result<Engine> {
        let stale = Arc::new(AtomicBool::new(false));
        let engine = Engine {
            openings: Openings::new(&map.name, opener, stale.clone()),
            map,
            dm,
            snapshot: Mutex::new(Arc::new(Snapshot {
                limits: Limits::default(),
                groups: vec![],
                next_group: 0,
                queue_if_no_path: false,
                taken: Coarse::now(),
            })),
            refresh_lock: Mutex::new(()),
            stats: Mutex::new(HashMap::new()),
            rr: AtomicUsize::new(0),
            stale,
            closing: AtomicBool::new(false),
            no_path_log: LogLimit::new(Duration::from_secs(1)),
            time_spent_log: LogLimit::new(Duration::from_secs(1)),
            refresh_interval: Duration::from_secs(1),
            queue_poll: Duration::from_secs(1),
            transition_poll: Duration::from_millis(50),
        };
        engine.read_map(Open::Now)?;
        Ok(engine)
    }

    pub fn map(&self) -> &str {
        &self.map.name
    }

    /// Sets what is called when a path new to the map has been opened (once): commands
    /// waiting for a path should try again.
    pub fn on_path_opened(&self, f: Box<dyn Fn() + Send + Sync>) {
        self.openings.on_opened(f);
    }

    /// The map changed in device-mapper (table reloaded, a path failed or reinstated by
    /// someone else): the next command re-reads it first.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// Whether a probe of one of the map's paths is under way.
    #[cfg(test)]
    pub fn probing(&self) -> bool {
        self.stats
            .lock()
            .values()
            .any(|s| s.probing.load(Ordering::Acquire))
    }

    /// The daemon is stopping: no command waits for a path any more.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    /// Re-reads the map's table and status from device-mapper. Paths new to the table
    /// join a later snapshot, once opened in the background.
    pub fn refresh(&self) -> io::Result<Arc<Snapshot>> {
        self.read_map(Open::InBackground)
    }

    fn read_map(&self, open: Open) -> io::Result<Arc<Snapshot>> {
        let _serial = self.refresh_lock.lock();
        // Any re-read answers the events before it (one after this point sets it again).
        self.stale.store(false, Ordering::Release);
        let table: MultipathTable = self
            .dm
            .table(&self.map)?
            .parse()
            .map_err(|e| io::Error::other(format!("map {}: {e}", self.map)))?;
        let status: MultipathStatus = self
            .dm
            .status(&self.map)?
            .parse()
            .map_err(|e| io::Error::other(format!("map {}: {e}", self.map)))?;
        self.openings
            .set_table(table.paths().collect::<HashSet<DevT>>());
        let mut groups = Vec::with_capacity(status.groups.len());
        for g in &status.groups {
            let mut paths = Vec::with_capacity(g.paths.len());
            for p in &g.paths {
                let stats = self.stats.lock().entry(p.dev).or_default().clone();
                let opened = match open {
                    Open::Now => self.openings.open_now(p.dev),
                    Open::InBackground => self.openings.get_or_start(p.dev),
                };
                paths.push(Arc::new(PathEntry {
                    dev: p.dev,
                    stats,
                    opening: opened.is_none() && self.openings.is_pending(p.dev),
                    opened,
                    dm_active: p.active,
                    failed_here: AtomicBool::new(false),
                }));
            }
            groups.push(Group {
                state: g.state,
                paths,
            });
        }
        let infos: Vec<&PathInfo> = groups
            .iter()
            .flat_map(|g| g.paths.iter())
            .filter_map(|p| p.opened.as_ref().map(|o| &o.0))
            .collect();
        let limits = if infos.is_empty() {
            // No path open (all of them being opened after a reload, or none usable): the
            // node goes on advertising what it did, rather than 0.
            self.snapshot.lock().limits.clone()
        } else {
            Limits {
                max_transfer: infos.iter().map(|i| i.max_transfer).min().unwrap_or(0),
                max_hw_transfer: infos.iter().map(|i| i.max_hw_transfer).min().unwrap_or(0),
                max_segments: infos.iter().map(|i| i.max_segments).min().unwrap_or(0),
                representative: infos.first().map(|i| (*i).clone()),
            }
        };
        let snap = Arc::new(Snapshot {
            limits,
            groups,
            next_group: status.next_group,
            queue_if_no_path: table.queue_if_no_path(),
            taken: Coarse::now(),
        });
        *self.snapshot.lock() = snap.clone();
        Ok(snap)
    }

    /// The snapshot as it is, never re-read: for answers that must not wait for
    /// device-mapper or a path device (limits asked by ioctls, on the thread that reads
    /// the node's requests). Commands re-read it as they run.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.lock().clone()
    }

    /// The current snapshot, re-read after a device-mapper event or when older than
    /// `refresh_interval`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let snap = self.snapshot.lock().clone();
        if snap.taken.elapsed() < self.refresh_interval && !self.stale.load(Ordering::Acquire) {
            return snap;
        }
        self.refresh().unwrap_or_else(|e| {
            tracing::warn!(map = %self.map, "cannot re-read the map, using the last state: {e}");
            snap
        })
    }

    /// What the node advertises, from the current snapshot (never re-read here).
    pub fn limits(&self) -> Limits {
        self.current().limits.clone()
    }

    /// The smallest max_hw_sectors of the paths, in bytes (current snapshot).
    pub fn max_hw_transfer(&self) -> usize {
        self.current().limits.max_hw_transfer
    }

    /// The smallest max_sectors of the paths, in bytes (current snapshot).
    pub fn max_transfer(&self) -> usize {
        self.current().limits.max_transfer
    }

    /// A command met a path error on `p`. The command moves on (this daemon skips the
    /// path until its probe has answered); device-mapper is told only on evidence about
    /// the path itself, not about one caller's command (its timeout, its CDB): the
    /// daemon's own TEST UNIT READY at a sane timeout, in the background, one at a time
    /// per path. A path whose probe answered within the last `PROBE_HOLDOFF` is not
    /// probed again, nor skipped: one caller cannot keep a healthy path out of use.
    fn path_error(&self, p: &Arc<PathEntry>, cdb: &[u8], reason: &str) {
        p.stats.path_errors.fetch_add(1, Ordering::Relaxed);
        *p.stats.last_error.lock() = Some((SystemTime::now(), reason.to_string()));
        let command = format_args!("{:#04x}", cdb.first().copied().unwrap_or(0));
        let Some((_, io)) = p.opened.clone() else {
            return;
        };
        if !p.dm_active {
            return;
        }
        let recently = p
            .stats
            .answered_at
            .lock()
            .is_some_and(|t| t.elapsed() < PROBE_HOLDOFF);
        if recently {
            tracing::info!(map = %self.map, path = %p.name(), %command, reason,
                "path error on a path that answered its probe just now: the command moves on, the path stays");
            return;
        }
        p.failed_here.store(true, Ordering::Relaxed);
        if p.stats.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(map = %self.map, path = %p.name(), %command, reason,
            "failover: path error, the command moves on; probing the path before failing it in device-mapper");
        let (map, dm, openings, entry) = (
            self.map.clone(),
            self.dm.clone(),
            self.openings.clone(),
            p.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("probe {}", p.dev))
            .spawn(move || {
                let confirmed = probe(&*io);
                if let Some(why) = confirmed {
                    tracing::warn!(map = %map, path = %entry.name(), reason = why,
                        "the probe confirms the path error: failing the path in device-mapper");
                    fail_in_dm(&*dm, &map, entry.dev);
                } else {
                    tracing::info!(map = %map, path = %entry.name(),
                        "the path answers its probe: not failed in device-mapper");
                    *entry.stats.answered_at.lock() = Some(Coarse::now());
                    entry.failed_here.store(false, Ordering::Relaxed);
                }
                entry.stats.probing.store(false, Ordering::Release);
                openings.wake();
            });
        if let Err(e) = spawned {
            // No thread for a probe: the command's error is all the evidence there is.
            p.stats.probing.store(false, Ordering::Release);
            tracing::warn!(map = %self.map, path = %p.name(), "cannot start a probe ({e}): failing the path in device-mapper");
            fail_in_dm(&*self.dm, &self.map, p.dev);
        }
    }

    /// Runs `cmd` on the map, one step: on each usable path in dm's order until one
    /// answers or every one has been tried. `Step::Done` carries what the caller sees (the
    /// SCSI result, or an errno for its ioctl); `Step::Wait` says every path was tried and
    /// the map queues (queue_if_no_path) or a port is in ALUA transition: call again with
    /// the same `attempt` when the map changes (`mark_stale`) or at `retry_at` at the
    /// latest. Nothing here sleeps, so a waiting command holds no thread.
    pub fn execute(&self, cmd: &mut PathCommand<'_>, attempt: &mut Attempt) -> Step {
        let mut snap = if attempt.waits > 0 && !self.fresher_than(attempt.parked_at) {
            // Back after a wait: the map may have changed without an event reaching us
            // (unless another command re-read it since this one parked).
            match self.refresh() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(map = %self.map, "cannot re-read the map: {e}");
                    return self.no_path(cmd, attempt);
                }
            }
        } else {
            self.snapshot()
        };
        // A path error anywhere in this call: then a port's ALUA refusal is not what the
        // caller gets (no path, or the path's result, is).
        let mut any_path_failed = false;
        loop {
            let mut retry_later = false;
            // Ports that refused for their ALUA state in this pass.
            let mut inactive_this_pass = false;
            // A path the daemon could not send the command on (its own limits): not the
            // path's fault, so not failed; if no path failed either, waiting would not
            // help and the caller gets the errno at once.
            let mut local_error = None;
            let mut path_failed = false;
            let order = snap.order(self.rr.fetch_add(1, Ordering::Relaxed));
            for p in order.iter().map(|&(g, i)| &snap.groups[g].paths[i]) {
                if p.opening && p.dm_active {
                    // Usable in a moment, maybe: worth a short wait, as for a transition.
                    retry_later = true;
                    continue;
                }
                if !p.usable() || attempt.tried.contains(&p.dev) {
                    continue;
                }
                attempt.tried.push(p.dev);
                let Some((info, io)) = &p.opened else {
                    continue;
                };
                if cmd.transfer_len > info.max_hw_transfer {
                    // A path that joined the map after the command was checked against
                    // the map's limits, and takes less: it cannot carry this one, which
                    // is no fault of its own (sg refuses an oversized transfer with
                    // EINVAL).
                    local_error = Some(Errno::EINVAL);
                    continue;
                }
                // The caller's timeout bounds the command across every path it is sent
                // on, not each send (sg's bounds its one path): a repeat gets what is
                // left, and nothing is sent once it is spent.
                if attempt.sent > 0 {
                    let left = attempt.deadline.since(Coarse::now());
                    if left.is_zero() {
                        return self.time_spent(cmd, attempt);
                    }
                    cmd.timeout_ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
                }
                // The kernel resent it after the daemon died (FUSE_NOTIFY_RESEND): the
                // dead daemon may have run it, so it is sent again only if that is safe,
                // as after a path error that may have let it execute.
                if attempt.sent == 0
                    && attempt.may_have_run
                    && !safe_to_repeat(cmd.cdb, info.scsi_type)
                {
                    tracing::warn!(
                        map = %self.map,
                        command = format_args!("{:#04x}", cmd.cdb[0]),
                        "not running a resent command the daemon's predecessor may have run"
                    );
                    return Step::Done(attempt.stamp(Ok(transport_disrupted())));
                }
                attempt.sent += 1;
                p.stats.commands.fetch_add(1, Ordering::Relaxed);
                let (result, verdict) = match answer(io.execute(cmd)) {
                    Ok(answered) => answered,
                    Err(e) => {
                        tracing::warn!(map = %self.map, path = %p.name(), errno = %e, "cannot send a command on this path");
                        match local_errno(e) {
                            Some(e) => local_error = Some(e),
                            // Held by another process for now: worth a short wait.
                            None => retry_later = true,
                        }
                        continue;
                    }
                };
                match verdict {
                    Verdict::Complete => {
                        // The port serves I/O (again): back in device-mapper's order.
                        p.stats.clear_inactive();
                        if let Ok(c) = &result {
                            if alua_state_changed(c.status, &c.sense) {
                                self.alua_changed(&snap);
                            }
                        }
                        return Step::Done(attempt.stamp(result));
                    }
                    Verdict::CallerError(e) => return Step::Done(Err(e)),
                    Verdict::PathError {
                        reason,
                        maybe_executed,
                    } => {
                        path_failed = true;
                        any_path_failed = true;
                        self.path_error(p, cmd.cdb, reason);
                        if maybe_executed && !safe_to_repeat(cmd.cdb, info.scsi_type) {
                            tracing::warn!(
                                map = %self.map,
                                command = format_args!("{:#04x}", cmd.cdb[0]),
                                "not repeating a command that may have executed; the caller gets the path's result"
                            );
                            return Step::Done(attempt.stamp(result));
                        }
                        p.stats.failovers.fetch_add(1, Ordering::Relaxed);
                        if let Ok(c) = result {
                            attempt.last_path_error = Some(c);
                        }
                    }
                    Verdict::RetryLater { reason } => {
                        tracing::info!(map = %self.map, path = %p.name(), reason, "retrying");
                        retry_later = true;
                    }
                    Verdict::PortInactive { reason } => {
                        // Not run, so any command moves on; the port stays in use in
                        // device-mapper and is tried after the others for a while.
                        if p.stats.mark_inactive() {
                            tracing::info!(map = %self.map, path = %p.name(), reason,
                                "the port serves no I/O in its ALUA state: commands go to the other ports first");
                        }
                        p.stats.failovers.fetch_add(1, Ordering::Relaxed);
                        inactive_this_pass = true;
                        if let Ok(c) = result {
                            attempt.last_inactive = Some(c);
                        }
                    }
                }
            }
            // A path being probed after a path error may be back in a moment: worth a
            // short wait rather than an error (bounded by the command's timeout).
            if snap
                .groups
                .iter()
                .flat_map(|g| g.paths.iter())
                .any(|p| p.dm_active && p.stats.probing.load(Ordering::Acquire))
            {
                retry_later = true;
            }
            let now = Coarse::now();
            if self.closing.load(Ordering::Relaxed) {
                return self.no_path(cmd, attempt);
            }
            if now >= attempt.deadline {
                return self.time_spent(cmd, attempt);
            }
            // Every usable path of this snapshot was tried: look again, someone may have
            // reinstated a path or reloaded the map.
            snap = match self.refresh() {
                Ok(s) => s,
                Err(e) => {
                    // The map is gone or unreadable: nothing to wait for.
                    tracing::warn!(map = %self.map, "cannot re-read the map: {e}");
                    return self.no_path(cmd, attempt);
                }
            };
            if snap.usable().any(|p| !attempt.tried.contains(&p.dev)) {
                continue;
            }
            if let Some(e) = local_error.filter(|_| !retry_later && !path_failed) {
                return Step::Done(Err(e));
            }
            // Every port that answered said its ALUA state serves no I/O, and none is
            // coming (no transition, no queueing): the LU's own answer, as a single-path
            // LU gives it.
            if let Some(c) = attempt.last_inactive.filter(|_| {
                inactive_this_pass && !retry_later && !snap.queue_if_no_path && !any_path_failed
            }) {
                return Step::Done(attempt.stamp(Ok(c)));
            }
            if retry_later || snap.queue_if_no_path {
                // Each path gets another chance after the wait, bounded by the timeout.
                attempt.tried.clear();
                attempt.waits += 1;
                // What this command last saw: a re-read by anyone after it is news.
                attempt.parked_at = snap.taken;
                let poll = if retry_later {
                    self.transition_poll
                } else {
                    self.queue_poll
                };
                return Step::Wait {
                    retry_at: (now + poll).min(attempt.deadline),
                };
            }
            return self.no_path(cmd, attempt);
        }
    }

    /// `execute` to the end on this thread, sleeping through the waits (tests).
    #[cfg(test)]
    pub fn execute_blocking(&self, cmd: &mut PathCommand<'_>) -> Result<Completion, Errno> {
        let mut attempt = Attempt::new(cmd.timeout_ms);
        loop {
            match self.execute(cmd, &mut attempt) {
                Step::Done(r) => return r,
                Step::Wait { retry_at } => {
                    std::thread::sleep(retry_at.since(Coarse::now()));
                    if Coarse::now() >= attempt.deadline {
                        if let Step::Done(r) = self.time_spent(cmd, &attempt) {
                            return r;
                        }
                    }
                }
            }
        }
    }

    /// The answer when no path is left, the wait is over, or the daemon stops.
    pub fn no_path(&self, cmd: &PathCommand<'_>, attempt: &Attempt) -> Step {
        if let Some(held_back) = self.no_path_log.admit(Coarse::now()) {
            tracing::warn!(
                map = %self.map,
                command = format_args!("{:#04x}", cmd.cdb.first().copied().unwrap_or(0)),
                "no usable path left; completing with DID_TRANSPORT_DISRUPTED \
                 ({held_back} more such commands since the last report)"
            );
        }
        Step::Done(attempt.stamp(Ok(transport_disrupted())))
    }

    /// The caller's timeout is spent: the SCSI result of the last path that failed the
    /// command (as sg answers a command that timed out on its one path: DID_TIME_OUT,
    /// say); if no path gave one (each refused it before issuing it), no path.
    pub fn time_spent(&self, cmd: &PathCommand<'_>, attempt: &Attempt) -> Step {
        // (A port's ALUA refusal is the LU's answer too, if no path gave one.)
        match attempt.last_path_error.or(attempt.last_inactive) {
            Some(r) => {
                if let Some(held_back) = self.time_spent_log.admit(Coarse::now()) {
                    tracing::warn!(
                        map = %self.map,
                        command = format_args!("{:#04x}", cmd.cdb.first().copied().unwrap_or(0)),
                        "the command's timeout is spent; the caller gets the last path's \
                         result ({held_back} more such commands since the last report)"
                    );
                }
                Step::Done(attempt.stamp(Ok(r)))
            }
            None => self.no_path(cmd, attempt),
        }
    }

    /// The LU reported an ALUA state change (UNIT ATTENTION 2A/06, passed to the caller):
    /// every port is worth trying in device-mapper's order again, and the map re-read
    /// (multipathd may regroup it).
    fn alua_changed(&self, snap: &Snapshot) {
        for p in snap.groups.iter().flat_map(|g| g.paths.iter()) {
            p.stats.clear_inactive();
        }
        self.mark_stale();
    }

    /// Whether the snapshot was taken after `t` and no event came since.
    fn fresher_than(&self, t: Coarse) -> bool {
        self.current().taken > t && !self.stale.load(Ordering::Acquire)
    }
}

/// `fail_path` for `dev` to device-mapper; a refusal (the map gone, the path already
/// failed or no longer in the table) is only logged.
fn fail_in_dm(dm: &dyn DmControl, map: &MapId, dev: DevT) {
    if let Err(e) = dm.message(map, &Message::FailPath(dev)) {
        tracing::info!(map = %map, path = %dev, "could not tell device-mapper: {e}");
    }
}

/// How long the daemon's probe of a path may take: long enough for a busy but healthy
/// path (multipathd's checkers default to 30 s; the block layer's SG_IO minimum is 7 s).
const PROBE_TIMEOUT_MS: u32 = 10_000;

/// A path that answered its probe this recently is neither probed again nor skipped.
const PROBE_HOLDOFF: Duration = Duration::from_secs(1);

/// A port that said its ALUA state serves no I/O is tried after the others for this long
/// (unless the LU reports a state change first), then in its turn again.
const ALUA_RECHECK: Duration = Duration::from_secs(5);

/// The daemon's probe of a path: a TEST UNIT READY. Some(reason) when the path itself
/// fails (a path error as the commands' results are classified); None when the LU
/// answered through it, whatever the answer (NOT READY, a unit attention: the path works).
fn probe(io: &dyn crate::path::PathIo) -> Option<&'static str> {
    let mut cmd = PathCommand {
        cdb: &[0; 6],
        direction: crate::sg::header::Direction::None,
        transfer_len: 0,
        data: None,
        timeout_ms: PROBE_TIMEOUT_MS,
        flags: 0,
        // The daemon's own: shares no reserve contents with any caller.
        owner: u64::MAX,
    };
    match answer(io.execute(&mut cmd)) {
        Ok((_, Verdict::PathError { reason, .. })) => Some(reason),
        // The LU answered, or the daemon could not send it (which says nothing about
        // the path).
        _ => None,
    }
}

/// What a path's answer to a command is for the caller, and what it means (the
/// classification table); Err(errno) when the daemon could not send the command at all
/// (`PathError::Local`: nothing reached the path).
fn answer(r: Result<Completion, PathError>) -> Result<(Result<Completion, Errno>, Verdict), Errno> {
    Ok(match r {
        Ok(c) => (
            Ok(c),
            classify_completion(c.status, c.host_status, &c.sense),
        ),
        Err(PathError::Refused(e)) => (Err(e), classify_errno(e)),
        Err(PathError::Lost(e)) => (Err(e), classify_lost(e)),
        Err(PathError::Local(e)) => return Err(e),
    })
}

/// What the caller gets when the daemon could not send its command (`PathError::Local`):
/// errnos sg answers for its own shortages. None: wait a little (another process holds
/// the path's sg node open O_EXCL).
fn local_errno(e: Errno) -> Option<Errno> {
    match e.get() {
        libc::EBUSY => None,
        // An oversized transfer, as sg refuses it.
        libc::EINVAL => Some(Errno::EINVAL),
        // No fd, no memory: sg answers ENOMEM when it cannot allocate a request.
        libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN => Some(Errno::ENOMEM),
        // Anything else (the sg node not openable for the daemon): an I/O error.
        _ => Some(Errno::EIO),
    }
}

/// Never DID_NO_CONNECT for a command no path could carry: qemu reports that to its
/// guest as "incorrect LUN".
pub fn transport_disrupted() -> Completion {
    Completion {
        host_status: host::DID_TRANSPORT_DISRUPTED,
        ..Completion::default()
    }
}

/// One command's progress across the steps of `Engine::execute`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started: Coarse,
    /// No waiting for a path past this (the command's timeout, or 30 s for timeout 0).
    pub deadline: Coarse,
    /// Paths tried since the last wait.
    tried: Vec<DevT>,
    /// Waits so far.
    pub waits: u32,
    /// Times the command was sent on a path.
    pub sent: u32,
    /// The SCSI result of the last path that failed it: the answer once the timeout is
    /// spent.
    last_path_error: Option<Completion>,
    /// The last answer of a port whose ALUA state serves no I/O (NOT READY 04/0B, 04/0C).
    last_inactive: Option<Completion>,
    /// When the snapshot this command last tried was taken.
    parked_at: Coarse,
    /// A request the kernel resent after the daemon's predecessor died with it: that one
    /// may have sent it.
    pub may_have_run: bool,
}

impl Attempt {
    pub fn new(timeout_ms: u32) -> Attempt {
        let started = Coarse::now();
        let budget = match timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms.into()),
        };
        Attempt {
            started,
            deadline: started + budget,
            tried: Vec::new(),
            waits: 0,
            sent: 0,
            last_path_error: None,
            last_inactive: None,
            parked_at: started,
            may_have_run: false,
        }
    }

    /// The completion with its duration: milliseconds since the command started, as sg's
    /// `duration` (its own jiffies clock has the same resolution as the coarse clock).
    fn stamp(&self, r: Result<Completion, Errno>) -> Result<Completion, Errno> {
        let duration_ms = Coarse::now().millis_since(self.started);
        r.map(|c| Completion { duration_ms, ..c })
    }
}

/// What one call of `Engine::execute` came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The command is over: what the caller sees.
    Done(Result<Completion, Errno>),
    /// Wait for a path: call `execute` again at `retry_at` at the latest, or as soon as
    /// the map changes.
    Wait { retry_at: Coarse },
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::sg::header::{Direction, SenseBytes};
    use std::time::Instant;

    const TUR: [u8; 6] = [0; 6];
    const PR_OUT: [u8; 10] = [0x5f, 0, 0, 0, 0, 0, 0, 0, 0x18, 0];
    const READ_10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];

    /// A command as the pipeline hands it to the engine, with no data buffer of its own
    /// (the fake paths never touch one).
    fn command(
        cdb: &[u8],
        direction: Direction,
        transfer_len: usize,
        timeout_ms: u32,
    ) -> PathCommand<'_> {
        PathCommand {
            cdb,
            direction,
            transfer_len,
            data: None,
            timeout_ms,
            flags: 0,
            owner: 0,
        }
    }

    fn host_status(h: u16) -> Result<Completion, Errno> {
        Ok(Completion {
            host_status: h,
            ..Default::default()
        })
    }

    #[test]
    fn uses_the_first_group_and_round_robins_inside_it() {
        let r = rig(&[&[0, 16], &[32]], false);
        for _ in 0..4 {
            r.run(&TUR, 1000).unwrap();
        }
        assert_eq!((r.calls(0), r.calls(16), r.calls(32)), (2, 2, 0));
    }

    #[test]
    fn a_path_error_the_probe_does_not_confirm_leaves_the_path_in_dm() {
        // A caller's READ times out on 8:0 (its own short timeout, say); the daemon's
        // TEST UNIT READY there answers: the path is not failed, and is used again.
        let r = rig(&[&[0], &[16]], false);
        r.behave(0, |cdb| match cdb[0] {
            0x28 => host_status(host::DID_TIME_OUT),
            _ => good(cdb),
        });
        let mut cmd = command(&READ_10, Direction::FromDevice, 512, 1000);
        let c = r.engine.execute_blocking(&mut cmd).unwrap();
        assert_eq!(c.host_status, 0, "moved on to 8:16");
        assert_eq!(r.calls(16), 1);
        r.probes_done();
        assert_eq!(r.calls(0), 2, "the command and the probe");
        assert!(r.dm.messages.lock().is_empty(), "8:0 left alone");
        // 8:0 is used again, and a second error right after its probe answered is not
        // probed again (one caller cannot keep probes running or the path out of use).
        // (One group per path: dm's first group, 8:0, takes every command it can.)
        r.run(&TUR, 1000).unwrap();
        r.run(&TUR, 1000).unwrap();
        assert_eq!((r.calls(0), r.calls(16)), (4, 1));
        let mut cmd = command(&READ_10, Direction::FromDevice, 512, 1000);
        r.engine.execute_blocking(&mut cmd).unwrap();
        assert!(!r.engine.probing());
        assert_eq!((r.calls(0), r.calls(16)), (5, 2));
        assert!(r.dm.messages.lock().is_empty());
    }

    #[test]
    fn a_command_waits_for_a_probe_rather_than_failing_when_no_other_path_is_left() {
        // One path; the caller's command errs there, the probe takes a while and then
        // finds the path answering: the command runs again on it within its timeout.
        let r = rig(&[&[0]], false);
        let first = Arc::new(AtomicBool::new(true));
        let f = first.clone();
        r.behave(0, move |cdb| match cdb[0] {
            0x28 if f.swap(false, Ordering::Relaxed) => host_status(host::DID_TIME_OUT),
            0x00 => {
                std::thread::sleep(Duration::from_millis(100));
                good(cdb)
            }
            _ => good(cdb),
        });
        let mut cmd = command(&READ_10, Direction::FromDevice, 512, 5000);
        let c = r.engine.execute_blocking(&mut cmd).unwrap();
        assert_eq!(c.host_status, 0);
        assert_eq!(r.calls(0), 3, "the command, the probe, the command again");
        assert!(r.dm.messages.lock().is_empty());
    }

    #[test]
    fn path_error_fails_the_path_in_dm_and_retries_on_the_next() {
        let r = rig(&[&[0], &[16]], false);
        r.behave(0, |_| Err(Errno::ENXIO));
        let c = r.run(&TUR, 1000).unwrap();
        assert_eq!(c.host_status, 0);
        // The daemon's probe (a second call on 8:0) confirms it: failed in device-mapper.
        assert_eq!(r.dm_messages(1), ["fail_path 8:0"]);
        r.probes_done();
        assert_eq!((r.calls(0), r.calls(16)), (2, 1));
        // the failed path is skipped from now on
        r.run(&TUR, 1000).unwrap();
        assert_eq!((r.calls(0), r.calls(16)), (2, 2));
    }

    #[test]
    fn a_path_the_daemon_cannot_use_is_skipped_not_failed() {
        let r = rig(&[&[0, 16]], true);
        r.behave_io(0, |_| Err(PathError::Local(Errno::new(libc::EMFILE))));
        for _ in 0..4 {
            r.run(&TUR, 1000).unwrap();
        }
        assert_eq!(r.calls(16), 4, "path 8:16 carries every command");
        assert!(
            r.dm.messages.lock().is_empty(),
            "no path failed: {:?}",
            r.dm.messages.lock()
        );
    }

    #[test]
    fn when_no_path_can_be_used_by_the_daemon_the_caller_gets_its_errno_at_once() {
        // queue_if_no_path: a failed path would make the command wait; this must not.
        let r = rig(&[&[0], &[16]], true);
        for m in [0, 16] {
            r.behave_io(m, |_| Err(PathError::Local(Errno::ENOMEM)));
        }
        let t = Instant::now();
        assert_eq!(r.run(&TUR, 10_000).unwrap_err(), Errno::ENOMEM);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!((r.calls(0), r.calls(16)), (1, 1));
        assert!(r.dm.messages.lock().is_empty());
    }

    #[test]
    fn a_path_new_to_the_table_is_opened_in_the_background_and_joins_later() {
        let r = rig(&[&[0, 16]], false);
        let removed = {
            let mut paths = r.dm.paths.lock();
            let i = paths.iter().position(|p| p.1.minor == 16).unwrap();
            paths.remove(i)
        };
        r.engine.refresh().unwrap();
        r.dm.paths.lock().push(removed);
        let snap = r.engine.refresh().unwrap();
        let usable = |s: &Snapshot| s.usable().map(|p| p.dev.minor).collect::<Vec<_>>();
        assert_eq!(usable(&snap), [0], "8:16 is being opened, not in line");
        let t = Instant::now();
        while usable(&r.engine.snapshot()) != [0, 16] {
            assert!(t.elapsed() < Duration::from_secs(10), "8:16 never joined");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_path_that_takes_less_than_the_command_is_skipped_not_failed() {
        // Path 8:0 takes 16 bytes less than 8:16 (see `rig`).
        let r = rig(&[&[0, 16]], false);
        for _ in 0..2 {
            let mut cmd = command(&READ_10, Direction::FromDevice, 4096 * 1024 + 8, 1000);
            r.engine.execute_blocking(&mut cmd).unwrap();
        }
        assert_eq!((r.calls(0), r.calls(16)), (0, 2));
        assert!(r.dm.messages.lock().is_empty());
    }

    #[test]
    fn a_result_lost_after_sending_counts_as_maybe_executed() {
        let r = rig(&[&[0], &[16]], false);
        r.behave_io(0, |_| Err(PathError::Lost(Errno::ENODEV)));
        assert_eq!(
            r.run(&PR_OUT, 1000).unwrap_err(),
            Errno::ENODEV,
            "a PERSISTENT RESERVE OUT that may have run is not sent again"
        );
        assert_eq!(r.calls(16), 0);
        r.run(&TUR, 1000).unwrap();
        assert_eq!(r.calls(16), 1, "a TEST UNIT READY moves on");
    }

    #[test]
    fn a_transfer_no_path_can_take_is_einval_at_once() {
        let r = rig(&[&[0]], true);
        let mut cmd = command(&READ_10, Direction::FromDevice, 8 << 20, 10_000);
        let t = Instant::now();
        assert_eq!(
            r.engine.execute_blocking(&mut cmd).unwrap_err(),
            Errno::EINVAL
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "not a wait for a path"
        );
        assert_eq!(r.calls(0), 0);
    }

    #[test]
    fn a_shortage_on_one_path_and_a_failure_on_the_other_is_a_wait_for_a_path() {
        // queue_if_no_path: the failed path's outage is what the caller waits out.
        let r = rig(&[&[0], &[16]], true);
        r.behave_io(0, |_| Err(PathError::Local(Errno::new(libc::EMFILE))));
        r.behave(16, |_| Err(Errno::ENXIO));
        let mut attempt = Attempt::new(10_000);
        let mut cmd = command(&TUR, Direction::None, 0, 10_000);
        assert!(matches!(
            r.engine.execute(&mut cmd, &mut attempt),
            Step::Wait { .. }
        ));
        assert_eq!(r.dm_messages(1), ["fail_path 8:16"]);
        r.probes_done();
        // Next round: the failed path is not usable, the shortage remains: ENOMEM.
        assert!(matches!(
            r.engine.execute(&mut cmd, &mut attempt),
            Step::Done(Err(e)) if e == Errno::ENOMEM
        ));
    }

    #[test]
    fn an_sg_node_held_exclusively_elsewhere_is_waited_for() {
        let r = rig(&[&[0]], false);
        r.behave_io(0, |_| Err(PathError::Local(Errno::EBUSY)));
        let mut attempt = Attempt::new(10_000);
        let mut cmd = command(&TUR, Direction::None, 0, 10_000);
        assert!(matches!(
            r.engine.execute(&mut cmd, &mut attempt),
            Step::Wait { .. }
        ));
        r.behave(0, good);
        assert!(matches!(
            r.engine.execute(&mut cmd, &mut attempt),
            Step::Done(Ok(_))
        ));
        assert!(r.dm.messages.lock().is_empty());
    }

    #[test]
    fn path_counters_for_status() {
        let r = rig(&[&[0], &[16]], false);
        r.behave(0, |_| Err(Errno::ENXIO));
        r.run(&TUR, 1000).unwrap();
        r.run(&TUR, 1000).unwrap();
        let snap = r.engine.snapshot();
        let stats = |minor: u32| {
            snap.groups
                .iter()
                .flat_map(|g| g.paths.iter())
                .find(|p| p.dev.minor == minor)
                .unwrap()
                .stats
                .clone()
        };
        let (a, b) = (stats(0), stats(16));
        assert_eq!(a.commands.load(Ordering::Relaxed), 1);
        assert_eq!(a.path_errors.load(Ordering::Relaxed), 1);
        assert_eq!(a.failovers.load(Ordering::Relaxed), 1);
        assert!(a
            .last_error
            .lock()
            .as_ref()
            .is_some_and(|(_, why)| !why.is_empty()));
        assert_eq!(b.commands.load(Ordering::Relaxed), 2);
        assert_eq!(b.path_errors.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_device_mapper_event_is_used_by_the_next_command() {
        let mut r = rig(&[&[0], &[16]], false);
        r.engine.refresh_interval = Duration::from_secs(3600);
        r.run(&TUR, 1000).unwrap();
        assert_eq!(r.calls(0), 1);
        r.dm.set(0, false); // someone else fails the path (multipathd, dmsetup)
        r.run(&TUR, 1000).unwrap();
        assert_eq!(r.calls(0), 2, "without the event the old state is used");
        r.engine.mark_stale();
        r.run(&TUR, 1000).unwrap();
        assert_eq!(
            (r.calls(0), r.calls(16)),
            (2, 1),
            "after the event, path 8:0 is left"
        );
    }

    #[test]
    fn target_errors_are_returned_untouched_without_failover() {
        let r = rig(&[&[0], &[16]], false);
        let ua = vec![
            0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0, 0, 0, 0, 0,
        ];
        let sense = ua.clone();
        r.behave(0, move |_| {
            Ok(Completion {
                status: 2,
                driver_status: 8,
                sense: SenseBytes::from_slice(&sense),
                ..Default::default()
            })
        });
        let c = r.run(&TUR, 1000).unwrap();
        assert_eq!((c.status, &*c.sense), (2, &ua[..]));
        r.behave(0, |_| {
            Ok(Completion {
                status: 0x18,
                ..Default::default()
            })
        });
        assert_eq!(
            r.run(&TUR, 1000).unwrap().status,
            0x18,
            "reservation conflict"
        );
        assert_eq!(r.calls(16), 0);
        assert!(r.dm.messages.lock().is_empty());
    }

    #[test]
    fn caller_errors_are_not_retried() {
        let r = rig(&[&[0, 16]], false);
        r.behave(0, |_| Err(Errno::EINVAL));
        r.behave(16, |_| Err(Errno::EINVAL));
        assert_eq!(r.run(&TUR, 1000), Err(Errno::EINVAL));
        assert_eq!(r.calls(0) + r.calls(16), 1);
        assert!(r.dm.messages.lock().is_empty());
    }

    #[test]
    fn maybe_executed_unsafe_command_is_not_repeated() {
        let r = rig(&[&[0], &[16]], false);
        r.behave(0, |_| host_status(host::DID_TIME_OUT));
        let c = r.run(&PR_OUT, 1000).unwrap();
        assert_eq!(c.host_status, host::DID_TIME_OUT);
        assert_eq!(r.calls(16), 0);
        assert_eq!(r.dm_messages(1), ["fail_path 8:0"]);
    }

    #[test]
    fn a_host_byte_error_may_have_executed_so_an_unsafe_command_is_not_repeated() {
        // COMPARE AND WRITE after DID_REQUEUE: the LLD may have taken it back after the
        // LU wrote; a repeat would miscompare against its own write.
        const COMPARE_AND_WRITE: [u8; 16] = [0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0];
        for (cdb, h) in [
            (&COMPARE_AND_WRITE[..], host::DID_REQUEUE),
            (&PR_OUT[..], host::DID_NO_CONNECT),
            (&PR_OUT[..], host::DID_IMM_RETRY),
            (&PR_OUT[..], host::DID_BUS_BUSY),
            (&PR_OUT[..], host::DID_TRANSPORT_FAILFAST),
        ] {
            let r = rig(&[&[0], &[16]], false);
            r.behave(0, move |_| host_status(h));
            assert_eq!(r.run(cdb, 1000).unwrap().host_status, h, "host {h:#x}");
            assert_eq!(
                r.calls(16),
                0,
                "{:#x} after host {h:#x} not repeated",
                cdb[0]
            );
        }
    }

    #[test]
    fn a_repeat_gets_what_is_left_of_the_timeout() {
        let r = rig(&[&[0], &[16]], false);
        r.behave(0, |_| {
            std::thread::sleep(Duration::from_millis(300));
            host_status(host::DID_TIME_OUT)
        });
        let seen = Arc::new(Mutex::new(vec![]));
        let s = seen.clone();
        r.behave_io(16, move |c| {
            s.lock().push(c.timeout_ms);
            Ok(Completion::default())
        });
        assert_eq!(r.run(&READ_10, 1000).unwrap().host_status, 0);
        let seen = seen.lock().clone();
        assert_eq!(seen.len(), 1);
        // 1000 ms less the 300 the first path took (the coarse clock ticks in ms).
        assert!(
            (600..=710).contains(&seen[0]),
            "the repeat got {} ms",
            seen[0]
        );
    }

    #[test]
    fn nothing_is_sent_once_the_timeout_is_spent() {
        let r = rig(&[&[0], &[16]], false);
        r.behave(0, |_| {
            std::thread::sleep(Duration::from_millis(150));
            host_status(host::DID_TIME_OUT)
        });
        let t = Instant::now();
        let c = r.run(&READ_10, 100).unwrap();
        assert_eq!(
            c.host_status,
            host::DID_TIME_OUT,
            "the one path's answer, as on sg"
        );
        assert_eq!(
            r.calls(16),
            0,
            "no path is tried after the caller's timeout"
        );
        assert!(t.elapsed() < Duration::from_millis(1000));
    }

    #[test]
    fn all_paths_down_without_queueing_is_transport_disrupted_at_once() {
        let r = rig(&[&[0, 16]], false);
        r.behave(0, |_| Err(Errno::ENXIO));
        r.behave(16, |_| host_status(host::DID_NO_CONNECT));
        let t = Instant::now();
        let c = r.run(&TUR, 10_000).unwrap();
        assert_eq!(c.host_status, host::DID_TRANSPORT_DISRUPTED);
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn queue_if_no_path_waits_until_the_timeout() {
        let r = rig(&[&[0]], true);
        r.behave(0, |_| Err(Errno::ENXIO));
        let t = Instant::now();
        let c = r.run(&TUR, 300).unwrap();
        assert_eq!(c.host_status, host::DID_TRANSPORT_DISRUPTED);
        // The deadline is on the coarse clock: within a tick (<= 10 ms) of 300 ms.
        assert!(
            t.elapsed() >= Duration::from_millis(290),
            "{:?}",
            t.elapsed()
        );
        assert!(c.duration_ms >= 290, "{}", c.duration_ms);
    }

    #[test]
    fn close_ends_a_wait_for_a_path() {
        let r = Arc::new(rig(&[&[0]], true));
        r.behave(0, |_| Err(Errno::ENXIO));
        let r2 = r.clone();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            r2.engine.close();
        });
        let t = Instant::now();
        let c = r.run(&TUR, 30_000).unwrap();
        closer.join().unwrap();
        assert_eq!(c.host_status, host::DID_TRANSPORT_DISRUPTED);
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn queue_if_no_path_uses_a_reinstated_path_at_once() {
        let r = Arc::new(rig(&[&[0]], true));
        r.behave(0, |_| Err(Errno::ENXIO));
        let r2 = r.clone();
        let helper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            r2.behave(0, good);
            r2.dm.set(0, true); // reinstate_path
        });
        let t = Instant::now();
        let c = r.run(&TUR, 10_000).unwrap();
        helper.join().unwrap();
        assert_eq!(c.host_status, 0);
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn alua_transitioning_retries_without_failing_the_path() {
        let r = rig(&[&[0]], false);
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        r.behave(0, move |_| {
            if n2.fetch_add(1, Ordering::Relaxed) < 2 {
                check(0x02, 0x04, 0x0a)
            } else {
                good(&[])
            }
        });
        assert_eq!(r.run(&TUR, 5_000).unwrap().status, 0);
        assert_eq!(r.calls(0), 3);
        assert!(r.dm.messages.lock().is_empty());
    }

    /// CHECK CONDITION with fixed sense KEY/ASC/ASCQ.
    fn check(k: u8, asc: u8, ascq: u8) -> Result<Completion, Errno> {
        let s = [
            0x70, 0, k, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq, 0, 0, 0, 0,
        ];
        Ok(Completion {
            status: 2,
            sense: SenseBytes::from_slice(&s),
            ..Default::default()
        })
    }

    #[test]
    fn an_alua_standby_port_sends_any_command_on_without_failing_the_port() {
        // 8:0's port is in standby: a PERSISTENT RESERVE OUT (never repeated after an
        // unknown outcome) moves to 8:16, since the LU did not process it; no probe, no
        // fail_path; the next commands go to 8:16 first for a while.
        let r = rig(&[&[0], &[16]], false);
        r.behave(0, |_| check(0x02, 0x04, 0x0b));
        assert_eq!(r.run(&PR_OUT, 1000).unwrap().status, 0);
        assert_eq!((r.calls(0), r.calls(16)), (1, 1));
        assert!(!r.engine.probing());
        r.run(&TUR, 1000).unwrap();
        r.run(&TUR, 1000).unwrap();
        assert_eq!(
            (r.calls(0), r.calls(16)),
            (1, 3),
            "the standby port goes last"
        );
        assert!(
            r.dm.messages.lock().is_empty(),
            "the port stays active in device-mapper"
        );
    }

    #[test]
    fn an_asymmetric_access_state_change_passes_through_and_brings_ports_back() {
        let r = rig(&[&[0], &[16]], false);
        let standby = Arc::new(AtomicBool::new(true));
        let s2 = standby.clone();
        r.behave(0, move |cdb| {
            if s2.load(Ordering::Relaxed) {
                check(0x02, 0x04, 0x0b)
            } else {
                good(cdb)
            }
        });
        let ua = Arc::new(AtomicBool::new(false));
        let ua2 = ua.clone();
        r.behave(16, move |cdb| {
            if ua2.swap(false, Ordering::Relaxed) {
                check(0x06, 0x2a, 0x06)
            } else {
                good(cdb)
            }
        });
        r.run(&TUR, 1000).unwrap();
        assert_eq!((r.calls(0), r.calls(16)), (1, 1));
        // 8:0's port becomes active; the LU says so through 8:16: the caller gets the
        // unit attention, and the next command goes to 8:0, first in device-mapper's order.
        standby.store(false, Ordering::Relaxed);
        ua.store(true, Ordering::Relaxed);
        let c = r.run(&TUR, 1000).unwrap();
        assert_eq!(c.status, 2, "the unit attention reaches the caller");
        assert_eq!(&c.sense[12..14], &[0x2a, 0x06]);
        r.run(&TUR, 1000).unwrap();
        assert_eq!((r.calls(0), r.calls(16)), (2, 2));
    }

    #[test]
    fn every_port_inactive_gives_the_lus_answer() {
        let r = rig(&[&[0], &[16]], false);
        r.behave(0, |_| check(0x02, 0x04, 0x0c));
        r.behave(16, |_| check(0x02, 0x04, 0x0b));
        let c = r.run(&READ_10, 1000).unwrap();
        assert_eq!((c.status, c.host_status), (2, 0));
        assert_eq!(&c.sense[12..14], &[0x04, 0x0b], "the last port's answer");
        assert!(r.dm.messages.lock().is_empty());
    }

    #[test]
    fn every_port_inactive_on_a_queueing_map_waits_then_gives_the_lus_answer() {
        let r = rig(&[&[0], &[16]], true);
        r.behave(0, |_| check(0x02, 0x04, 0x0b));
        r.behave(16, |_| check(0x02, 0x04, 0x0c));
        let t = Instant::now();
        let c = r.run(&READ_10, 300).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "it waited for a port"
        );
        assert_eq!(
            (c.status, c.host_status),
            (2, 0),
            "the LU's answer at the deadline"
        );
        assert!(r.dm.messages.lock().is_empty());
    }

    #[test]
    fn a_command_waiting_for_a_path_returns_instead_of_sleeping() {
        let mut r = rig(&[&[0]], true);
        r.engine.queue_poll = Duration::from_secs(5);
        r.behave(0, |_| Err(Errno::ENXIO));
        let mut cmd = command(&TUR, Direction::None, 0, 60_000);
        let mut attempt = Attempt::new(cmd.timeout_ms);
        let t = Instant::now();
        let step = r.engine.execute(&mut cmd, &mut attempt);
        assert!(t.elapsed() < Duration::from_secs(1), "no sleeping inside");
        let Step::Wait { retry_at } = step else {
            panic!("expected a wait, got {step:?}");
        };
        assert!(retry_at > Coarse::now(), "retry in the future");
        assert!(retry_at <= attempt.deadline);
        assert_eq!(attempt.waits, 1);
        // The path comes back: the next step uses it.
        r.behave(0, good);
        r.dm.set(0, true);
        let step = r.engine.execute(&mut cmd, &mut attempt);
        assert!(
            matches!(step, Step::Done(Ok(ref c)) if c.host_status == 0),
            "{step:?}"
        );
        assert_eq!(r.calls(0), 2);
    }

    #[test]
    fn a_wait_past_the_deadline_ends_with_transport_disrupted() {
        let r = rig(&[&[0]], true);
        r.behave(0, |_| Err(Errno::ENXIO));
        let mut cmd = command(&TUR, Direction::None, 0, 1);
        let mut attempt = Attempt::new(cmd.timeout_ms);
        std::thread::sleep(Duration::from_millis(20));
        let step = r.engine.execute(&mut cmd, &mut attempt);
        assert!(
            matches!(step, Step::Done(Ok(ref c)) if c.host_status == host::DID_TRANSPORT_DISRUPTED),
            "{step:?}"
        );
    }

    #[test]
    fn an_errno_from_the_path_means_not_issued_even_for_unsafe_commands() {
        let r = rig(&[&[0], &[16]], false);
        r.behave(0, |_| Err(Errno::ENODEV));
        assert_eq!(r.run(&PR_OUT, 1000).unwrap().host_status, 0);
        assert_eq!(r.calls(16), 1, "PR OUT moved to the next path");
    }

    #[test]
    fn a_map_replaced_under_its_name_is_not_used_for_a_retry() {
        // mpatha renamed, a new map (another LU, reached through path 16 only) made as
        // mpatha: the command's retry after the path error must not read the new map's
        // table and run there.
        let r = rig(&[&[0], &[16]], false);
        r.dm.set(16, false);
        r.engine.refresh().unwrap();
        let dm = r.dm.clone();
        r.behave(0, move |_| {
            *dm.dev.lock() = DevT {
                major: 253,
                minor: 7,
            };
            dm.paths.lock().retain(|p| p.1.minor == 16);
            dm.set(16, true);
            Err(Errno::ENODEV)
        });
        let c = r.run(&READ_10, 1000).unwrap();
        assert_eq!(c.host_status, host::DID_TRANSPORT_DISRUPTED);
        assert_eq!(r.calls(16), 0, "the new map's path was used");
    }

    #[test]
    fn limits_are_the_minimum_over_paths() {
        let r = rig(&[&[3, 1], &[2]], false);
        let l = r.engine.limits();
        assert_eq!((l.max_transfer, l.max_segments), (512 * 1024 + 1, 129));
        assert_eq!(l.max_hw_transfer, 4096 * 1024 + 1);
        assert_eq!(l.representative.unwrap().block_name, "sd3");
    }
}
