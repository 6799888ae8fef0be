//! The published maps, kept in step with device-mapper. After every DM event the daemon
//! lists the devices (one ioctl, with each device's event counter) and `sync` publishes
//! new multipath maps, removes the nodes of maps that are gone, re-publishes renamed maps
//! under their new name with the same minor, and marks maps whose event counter moved
//! (table reloaded, path failed or reinstated by someone else) so that their next command
//! re-reads them. Nothing is polled on a timer. A node is removed on its own thread (its
//! in-flight commands may take their full timeout); a map that needs its name or device
//! number is published when that removal ends.

use super::budget::Budget;
use super::devnums::{map_key, DevNums};
use super::fdstore;
use super::map::MapState;
use super::node::{MapNode, NodeRecords};
use super::persist::{FileRecord, FileStore, Handed, HandedItem, NodeNumber, Slot};
use super::timer::Timer;
use super::{Options, DEV_DIR};
use crate::cuse::{CuseDevice, DeviceSpec, PoolConfig, ThreadBudget};
use crate::dm::{DevT, DmControl, DmDevice, DmKind, MapId};
use crate::failover::{Engine, PathOpener};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a daemon stopping for a restart waits for its nodes' commands (running, or
/// waiting for a path) to finish before it hands the nodes over anyway; systemd's
/// default TimeoutStopSec is 90 s.
const HANDOVER_WAIT: Duration = Duration::from_secs(60);

/// What a predecessor left in the fd store: its nodes' /dev/cuse fds, their open files'
/// records and, after a clean hand-over, the requests it had read and not answered.
#[derive(Default)]
pub struct Inherited {
    pub nodes: HashMap<NodeNumber, OwnedFd>,
    pub left: HashMap<NodeNumber, NodeLeft>,
    /// The predecessor handed over cleanly; otherwise it died, and the requests it had
    /// read are still with the kernel (to resend, 6.9+) or lost.
    pub handed_over: bool,
}

/// What a predecessor left for one node besides its /dev/cuse fd: its open files'
/// records, and after a clean hand-over the requests it had read and the write() results
/// nobody had read.
#[derive(Default)]
pub struct NodeLeft {
    pub records: Vec<(Slot, FileRecord)>,
    pub requests: Vec<Vec<u8>>,
    pub results: Vec<Vec<u8>>,
}

/// The fd store's name for a node's /dev/cuse fd.
pub fn stored_name(major: u32, minor: u32) -> String {
    format!("node.{major}.{minor}")
}

/// The node a stored fd's name names (`stored_name`'s inverse).
pub fn stored_node(name: &str) -> Option<NodeNumber> {
    let (major, minor) = name.strip_prefix("node.")?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A node's /dev/cuse fd and what its predecessor left with it.
struct Adoption {
    fd: OwnedFd,
    left: NodeLeft,
    handed_over: bool,
}

/// The name sysfs gives the character device `major:minor` (e.g. "mpath-sg!mpatha").
fn sysfs_char_name(major: u32, minor: u32) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/dev/char/{major}:{minor}")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// With DM events driving re-reads, the engine's own timer is only a backstop.
const BACKSTOP_REFRESH: Duration = Duration::from_secs(30);

pub struct Published {
    pub name: String,
    pub uuid: String,
    pub dev: DevT,
    event_nr: Option<u32>,
    pub major: u32,
    pub minor: u32,
    pub engine: Arc<Engine>,
    pub node: Arc<MapNode>,
    device: CuseDevice<MapNode>,
}

impl Published {
    /// Node gone for good: the service manager drops its copy of the /dev/cuse fd too.
    fn unstore(&self) {
        if let Err(e) = fdstore::remove(&stored_name(self.major, self.minor)) {
            tracing::warn!(map = %self.name, "fd store: {e}");
        }
    }
}

impl Published {
    /// The node's threads now: (total, reading, busy).
    pub fn threads(&self) -> (usize, usize, usize) {
        self.device.threads()
    }
}

/// What every node shares: the thread budget, the data budget, the timer.
#[derive(Clone)]
pub struct Shared {
    pub threads: Arc<ThreadBudget>,
    pub budget: Arc<Budget>,
    pub timer: Arc<Timer>,
}

/// Runs `f` on every item, on up to 8 threads; results in the items' order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .min(8);
    if items.len() < 2 || threads < 2 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a publishing thread panicked"))
            .collect()
    })
}

/// Removes nodes: first every map stops waiting (reads end with ENODEV, commands waiting
/// for a path complete), then the devices are joined, several at a time.
fn remove_all(maps: Vec<Published>) {
    for p in &maps {
        // Closed first, so that the commands detach() wakes end at once.
        p.engine.close();
        p.node.detach();
        p.unstore();
    }
    let names: Vec<String> = maps.iter().map(|p| p.name.clone()).collect();
    let slots: Vec<Mutex<Option<CuseDevice<MapNode>>>> = maps
        .into_iter()
        .map(|p| Mutex::new(Some(p.device)))
        .collect();
    par_map(&slots, |slot| {
        if let Some(device) = slot.lock().take() {
            device.join();
        }
    });
    for name in names {
        tracing::info!(map = %name, "node removed");
    }
}

#[allow(clippy::too_many_arguments)]
fn publish(
    dm: &Arc<dyn DmControl>,
    opener: &Arc<PathOpener>,
    opts: &Options,
    shared: &Shared,
    d: &DmDevice,
    uuid: &str,
    major: u32,
    minor: u32,
    store: Option<&Arc<FileStore>>,
    adoption: Option<Adoption>,
) -> std::io::Result<Published> {
    let id = MapId {
        name: d.name.clone(),
        uuid: uuid.to_string(),
        dev: d.dev,
    };
    let mut engine = Engine::new(id, dm.clone(), opener.clone())?;
    engine.refresh_interval = BACKSTOP_REFRESH;
    let engine = Arc::new(engine);
    let map = Arc::new(MapState::new(
        engine.clone(),
        opts.single_round,
        shared.budget.clone(),
        shared.timer.clone(),
    ));
    let records = store.map(|s| NodeRecords {
        store: s.clone(),
        major,
        minor,
    });
    let node = Arc::new(MapNode::new(map.clone(), records));
    let waiting = Arc::downgrade(&node);
    engine.on_path_opened(Box::new(move || {
        if let Some(node) = waiting.upgrade() {
            node.map_changed();
        }
    }));
    let spec = DeviceSpec {
        devname: format!("{DEV_DIR}/{}", d.name),
        major,
        minor,
    };
    let cfg = PoolConfig {
        min: opts.threads_per_map,
        max: opts.max_threads_per_map,
        budget: shared.threads.clone(),
    };
    let ready = |executor: crate::cuse::Executor<MapNode>| {
        map.set_submit(Box::new(move |job| executor.submit(job)))
    };
    let device = match adoption {
        Some(a) => {
            node.restore_files(&a.left.records);
            node.restore_results(&a.left.results);
            // Before the threads start: an INTERRUPT may be the first request they read.
            node.expect_orphans(!a.handed_over);
            let adopted = CuseDevice::adopt(
                a.fd,
                node.clone(),
                &d.name,
                cfg,
                a.left.requests,
                !a.handed_over,
                ready,
            );
            let (device, resent) = match adopted {
                Ok(x) => x,
                Err(e) => {
                    // Not served: the service manager's copy must go too, or the node
                    // would stay with nobody answering it.
                    let _ = fdstore::remove(&stored_name(major, minor));
                    return Err(e);
                }
            };
            if resent {
                node.expect_orphans(false);
            }
            tracing::info!(
                map = %d.name,
                files = a.left.records.len(),
                handed_over = a.handed_over,
                resent,
                "node taken over from the daemon's predecessor"
            );
            device
        }
        None => {
            let device = CuseDevice::create(spec, node.clone(), cfg, ready)?;
            if fdstore::available() {
                if let Err(e) = fdstore::store(&stored_name(major, minor), device.fd()) {
                    tracing::warn!(map = %d.name, "the node will not outlive a restart: {e}");
                }
            }
            device
        }
    };
    Ok(Published {
        name: d.name.clone(),
        uuid: uuid.to_string(),
        dev: d.dev,
        event_nr: d.event_nr,
        major,
        minor,
        engine,
        node,
        device,
    })
}

/// What one listing of device-mapper means for the maps already published.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Published maps whose device is gone.
    pub removed: Vec<String>,
    /// (old name, new name): the same device under another name.
    pub renamed: Vec<(String, String)>,
    /// Published maps whose event counter moved.
    pub changed: Vec<String>,
    /// Devices not published yet (multipath or not: to be looked at).
    pub unknown: Vec<DmDevice>,
}

/// Compares the published maps (name, device, last event counter) with a listing. A
/// device keeps its dev_t across a rename, so maps are matched by dev_t.
pub fn changes(published: &[(String, DevT, Option<u32>)], listed: &[DmDevice]) -> Changes {
    let by_dev: HashMap<DevT, &DmDevice> = listed.iter().map(|d| (d.dev, d)).collect();
    let mut c = Changes::default();
    for (name, dev, event_nr) in published {
        match by_dev.get(dev) {
            None => c.removed.push(name.clone()),
            Some(d) if &d.name != name => c.renamed.push((name.clone(), d.name.clone())),
            Some(d) if d.event_nr != *event_nr || d.event_nr.is_none() => {
                c.changed.push(name.clone())
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<DevT> = published.iter().map(|p| p.1).collect();
    c.unknown = listed
        .iter()
        .filter(|d| !known.contains(&d.dev))
        .cloned()
        .collect();
    c
}

/// A node being removed on its own thread; its name and device number stay taken until
/// the kernel has let go of it.
struct Removal {
    name: String,
    minor: u32,
    /// Set by the removal thread before it wakes the main loop (the thread itself may
    /// not have exited yet when the loop looks).
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

pub struct Registry {
    opts: Options,
    shared: Shared,
    /// Written when a removal finishes, so that the main loop syncs again (a map waiting
    /// for that name or device number is published then).
    wake: Arc<nix::sys::eventfd::EventFd>,
    removing: Vec<Removal>,
    dm: Arc<dyn DmControl>,
    opener: Arc<PathOpener>,
    devnums: DevNums,
    maps: BTreeMap<String, Published>,
    /// Devices looked at and not published (another kind of table, filtered out, or
    /// publishing failed), with the event counter they had: looked at again only when it
    /// moves. Devices without a live table yet are not kept here: their table's resume
    /// is an event that does not move their counter.
    passed: HashMap<DevT, Option<u32>>,
    store: Option<Arc<FileStore>>,
    inherited: Inherited,
}

impl Registry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opts: Options,
        shared: Shared,
        dm: Arc<dyn DmControl>,
        opener: Arc<PathOpener>,
        devnums: DevNums,
        wake: Arc<nix::sys::eventfd::EventFd>,
        store: Option<Arc<FileStore>>,
        inherited: Inherited,
    ) -> Registry {
        Registry {
            opts,
            shared,
            wake,
            removing: Vec::new(),
            dm,
            opener,
            devnums,
            maps: BTreeMap::new(),
            passed: HashMap::new(),
            store,
            inherited,
        }
    }

    /// After the first sync: inherited nodes no map claimed (removed, renamed or
    /// deselected while no daemon ran) go, with their records.
    pub fn finish_adoption(&mut self) {
        for ((major, minor), fd) in self.inherited.nodes.drain() {
            tracing::info!(devnum = %format!("{major}:{minor}"), "an inherited node has no map now: removed");
            drop(fd);
            let _ = fdstore::remove(&stored_name(major, minor));
        }
        for (_, left) in self.inherited.left.drain() {
            if let Some(store) = &self.store {
                for (slot, _) in left.records {
                    store.release(slot);
                }
            }
        }
    }

    /// Takes the inherited node `major:minor` if it is the node `name` should have.
    fn adoption(&mut self, name: &str, major: u32, minor: u32) -> Option<Adoption> {
        let fd = self.inherited.nodes.remove(&(major, minor))?;
        let want = format!("{DEV_DIR}!{name}");
        if sysfs_char_name(major, minor).as_deref() != Some(want.as_str()) {
            tracing::info!(map = %name, devnum = %format!("{major}:{minor}"),
                "the inherited node has another name now: removed, published again");
            drop(fd);
            let _ = fdstore::remove(&stored_name(major, minor));
            // The device number is free once the service manager has closed its copy.
            let gone = Instant::now() + Duration::from_secs(2);
            while sysfs_char_name(major, minor).is_some() && Instant::now() < gone {
                std::thread::sleep(Duration::from_millis(10));
            }
            return None;
        }
        Some(Adoption {
            fd,
            left: self
                .inherited
                .left
                .remove(&(major, minor))
                .unwrap_or_default(),
            handed_over: self.inherited.handed_over,
        })
    }

    pub fn maps(&self) -> impl Iterator<Item = &Published> {
        self.maps.values()
    }

    /// Brings the published nodes in step with device-mapper.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.removing
            .retain(|r| !r.done.load(std::sync::atomic::Ordering::Acquire));
        let listed = self.dm.devices()?;
        let published: Vec<_> = self
            .maps
            .values()
            .map(|p| (p.name.clone(), p.dev, p.event_nr))
            .collect();
        let c = changes(&published, &listed);
        let by_dev: HashMap<DevT, &DmDevice> = listed.iter().map(|d| (d.dev, d)).collect();
        for name in &c.removed {
            tracing::info!(map = %name, "map removed from device-mapper");
            self.unpublish(name);
        }
        for (old, new) in &c.renamed {
            // A CUSE device cannot be renamed: the old node goes (open files get ENODEV),
            // the new one comes with the same device number.
            let Some(p) = self.maps.get(old) else {
                continue;
            };
            let (uuid, dev) = (p.uuid.clone(), p.dev);
            tracing::info!(map = %old, new_name = %new, "map renamed");
            self.unpublish(old);
            self.devnums
                .rename(&map_key(old, &uuid), &map_key(new, &uuid));
            if let Some(d) = by_dev.get(&dev) {
                self.consider(&[(*d).clone()]);
            }
        }
        for name in &c.changed {
            let Some(d) = self.maps.get(name).and_then(|p| by_dev.get(&p.dev)) else {
                continue;
            };
            // A reload may have replaced the multipath table by something else.
            if !matches!(self.dm.kind(name), Ok(DmKind::Multipath { .. })) {
                tracing::info!(map = %name, "no longer a multipath map");
                self.unpublish(name);
                continue;
            }
            let p = self.maps.get_mut(name).expect("present");
            p.event_nr = d.event_nr;
            // Read now, so that answers from the current snapshot (the limits ioctls)
            // and the commands resumed below see the change.
            p.engine.mark_stale();
            if let Err(e) = p.engine.refresh() {
                tracing::warn!(map = %name, "cannot re-read the map: {e}");
            }
            p.node.map_changed();
            tracing::debug!(map = %name, event = ?d.event_nr, "device-mapper event");
        }
        let fresh: Vec<DmDevice> = c
            .unknown
            .into_iter()
            .filter(|d| !(self.passed.get(&d.dev) == Some(&d.event_nr) && d.event_nr.is_some()))
            .collect();
        self.consider(&fresh);
        let listed_devs: std::collections::HashSet<DevT> = listed.iter().map(|d| d.dev).collect();
        self.passed.retain(|dev, _| listed_devs.contains(dev));
        if let Err(e) = self.devnums.save_changes() {
            tracing::warn!("cannot save device numbers: {e}");
        }
        Ok(())
    }

    /// Publishes those of `devices` that are multipath maps the options select. Looking
    /// at the devices and publishing them run on several threads: with hundreds of maps
    /// at start, each costs a few device-mapper ioctls, sysfs reads and a CUSE handshake.
    fn consider(&mut self, devices: &[DmDevice]) {
        let wanted: Vec<&DmDevice> = devices
            .iter()
            .filter(|d| {
                let selected = self.opts.maps.is_empty() || self.opts.maps.contains(&d.name);
                if !selected {
                    self.passed.insert(d.dev, d.event_nr);
                }
                selected
            })
            .collect();
        let dm = self.dm.clone();
        let kinds = par_map(&wanted, |d| dm.kind(&d.name));
        let mut todo = Vec::new();
        for (d, kind) in wanted.into_iter().zip(kinds) {
            match kind {
                Ok(DmKind::Multipath { uuid }) => {
                    let minor = self.devnums.minor_for(&map_key(&d.name, &uuid));
                    if self
                        .removing
                        .iter()
                        .any(|r| r.name == d.name || r.minor == minor)
                    {
                        // The old node of that name or number is still going away; the
                        // end of its removal wakes the main loop to publish this one.
                        tracing::debug!(map = %d.name, "waiting for the old node to go");
                        continue;
                    }
                    self.passed.insert(d.dev, d.event_nr);
                    todo.push((d.clone(), uuid, minor));
                }
                Ok(DmKind::Other) => {
                    self.passed.insert(d.dev, d.event_nr);
                }
                // No live table yet: its resume is an event that brings it back here.
                Ok(DmKind::NoTable) | Err(_) => {}
            }
        }
        let major = self.devnums.major;
        let adoptions: Vec<Mutex<Option<Adoption>>> = todo
            .iter()
            .map(|(d, _, minor)| Mutex::new(self.adoption(&d.name, major, *minor)))
            .collect();
        let jobs: Vec<_> = todo.iter().zip(&adoptions).collect();
        let (opener, opts, shared, store) = (&self.opener, &self.opts, &self.shared, &self.store);
        let results = par_map(&jobs, |((d, uuid, minor), adoption)| {
            let adoption = adoption.lock().take();
            publish(
                &dm,
                opener,
                opts,
                shared,
                d,
                uuid,
                major,
                *minor,
                store.as_ref(),
                adoption,
            )
        });
        for ((d, _, minor), result) in todo.into_iter().zip(results) {
            match result {
                Ok(p) => {
                    tracing::info!(
                        map = %d.name,
                        node = %format!("/dev/{DEV_DIR}/{}", d.name),
                        devnum = %format!("{major}:{minor}"),
                        "published"
                    );
                    self.passed.remove(&d.dev);
                    self.maps.insert(d.name.clone(), p);
                }
                // Tried again when the map's event counter moves.
                Err(e) => tracing::error!(map = %d.name, "not published: {e}"),
            }
        }
    }

    /// Removes a map's node: waiting reads end with ENODEV, commands waiting for a path
    /// complete at once, the workers finish what they hold, then the kernel removes the
    /// node and its open files get ENODEV.
    /// On its own thread, so that one map's in-flight commands never hold up the others.
    fn unpublish(&mut self, name: &str) {
        let Some(p) = self.maps.remove(name) else {
            return;
        };
        let wake = self.wake.clone();
        let (name, minor) = (p.name.clone(), p.minor);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let finished = done.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("remove-{name}"))
            .spawn(move || {
                remove_all(vec![p]);
                finished.store(true, std::sync::atomic::Ordering::Release);
                let _ = wake.write(1);
            });
        match spawned {
            Ok(thread) => self.removing.push(Removal {
                name,
                minor,
                done,
                thread,
            }),
            Err(e) => tracing::error!(map = %name, "cannot start removing the node: {e}"),
        }
    }

    /// Hands every node to the daemon's successor (a restart under a service manager):
    /// the nodes stop reading requests, which stay queued in the kernel; commands running
    /// or waiting for a path finish (at most HANDOVER_WAIT); blocking read()s that wait
    /// for nothing are left unanswered and returned as request bytes for the successor,
    /// with the write() results nobody has read;
    /// then the threads stop and the daemon's copies of the /dev/cuse fds close, the
    /// service manager's keeping the nodes. Removals under way finish first.
    pub fn hand_over(&mut self) -> Vec<HandedItem> {
        for r in self.removing.drain(..) {
            let _ = r.thread.join();
        }
        let maps: Vec<Published> = std::mem::take(&mut self.maps).into_values().collect();
        for p in &maps {
            p.device.drain();
        }
        let deadline = Instant::now() + HANDOVER_WAIT;
        let started = Instant::now();
        // A thread may still hold a request it read before draining (not yet a command,
        // or a read() about to wait): it counts as busy until it is done with it.
        let busy = |p: &Published| p.node.busy() || p.device.threads().2 > 0;
        while maps.iter().any(busy) {
            if Instant::now() > deadline {
                let still: Vec<&str> = maps
                    .iter()
                    .filter(|p| busy(p))
                    .map(|p| p.name.as_str())
                    .collect();
                tracing::warn!(busy = ?still, "commands still unfinished after {HANDOVER_WAIT:?}: they end now (EIO or DID_TRANSPORT_DISRUPTED)");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut items = Vec::new();
        for p in &maps {
            let h = p.node.hand_over();
            tracing::info!(map = %p.name, requests = h.requests.len(), results = h.results.len(),
                waited_ms = started.elapsed().as_millis() as u64, "node handed over");
            let num = (p.major, p.minor);
            items.extend(h.requests.into_iter().map(|r| (num, Handed::Request, r)));
            items.extend(h.results.into_iter().map(|r| (num, Handed::Result, r)));
        }
        for p in maps {
            p.engine.close();
            p.device.join();
        }
        self.shared.timer.stop();
        items
    }

    /// Removes every node (daemon shutdown), all maps at once, and waits for removals
    /// already under way.
    pub fn shutdown(&mut self) {
        remove_all(std::mem::take(&mut self.maps).into_values().collect());
        for r in self.removing.drain(..) {
            let _ = r.thread.join();
        }
        self.shared.timer.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(minor: u32) -> DevT {
        DevT { major: 254, minor }
    }

    fn listed(name: &str, minor: u32, ev: u32) -> DmDevice {
        DmDevice {
            name: name.to_string(),
            dev: dev(minor),
            event_nr: Some(ev),
        }
    }

    #[test]
    fn a_stored_name_names_its_node_and_nothing_else_does() {
        assert_eq!(stored_node(&stored_name(120, 7)), Some((120, 7)));
        for other in [
            "files",
            "handover",
            "node.1",
            "node.a.2",
            "node.1.2.3",
            "xnode.1.2",
        ] {
            assert_eq!(stored_node(other), None, "{other}");
        }
    }

    #[test]
    fn new_removed_renamed_and_changed_maps() {
        let published = vec![
            ("a".to_string(), dev(0), Some(1)),
            ("b".to_string(), dev(1), Some(5)),
            ("c".to_string(), dev(2), Some(7)),
            ("d".to_string(), dev(3), Some(2)),
        ];
        let now = vec![
            listed("a", 0, 1),     // unchanged
            listed("b-new", 1, 5), // renamed
            listed("c", 2, 8),     // event
            listed("vg-lv", 9, 0), // not published yet
        ];
        let c = changes(&published, &now);
        assert_eq!(c.removed, vec!["d".to_string()]);
        assert_eq!(c.renamed, vec![("b".to_string(), "b-new".to_string())]);
        assert_eq!(c.changed, vec!["c".to_string()]);
        assert_eq!(c.unknown, vec![listed("vg-lv", 9, 0)]);
    }

    #[test]
    fn without_event_counters_every_listing_is_a_change() {
        let published = vec![("a".to_string(), dev(0), None)];
        let now = vec![DmDevice {
            name: "a".to_string(),
            dev: dev(0),
            event_nr: None,
        }];
        assert_eq!(changes(&published, &now).changed, vec!["a".to_string()]);
    }

    #[test]
    fn a_map_removed_and_created_again_is_new() {
        // Same name, new dev_t: the old map went, a new one came.
        let published = vec![("a".to_string(), dev(0), Some(1))];
        let c = changes(&published, &[listed("a", 4, 0)]);
        assert_eq!(c.removed, vec!["a".to_string()]);
        assert_eq!(c.unknown, vec![listed("a", 4, 0)]);
    }
}
