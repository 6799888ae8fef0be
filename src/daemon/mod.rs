//! The daemon's lifecycle: discover the multipath maps, publish a node for each, serve
//! until SIGTERM/SIGINT, then remove the nodes.

pub mod async_io;
pub mod budget;
pub mod buffer;
pub mod devnums;
pub mod error;
pub mod fdstore;
pub mod files;
pub mod handover;
pub mod ioctl;
pub mod map;
pub mod node;
pub mod parked;
pub mod persist;
pub mod pipeline;
pub mod registry;
pub mod status;
#[cfg(test)]
pub mod testing;
pub mod timer;
pub mod work;

use crate::dm::{DevT, DmControl, KernelDm};
use crate::failover::PathOpener;
use crate::path::{PathInfo, PathIo, ScsiPath};
use devnums::DevNums;
pub use error::{DaemonError, StatusError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use parking_lot::Mutex;
use registry::Registry;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Options {
    /// Only these maps (all multipath maps when empty).
    pub maps: Vec<String>,
    pub state_dir: PathBuf,
    /// Threads each node keeps while idle.
    pub threads_per_map: usize,
    /// Threads a node may have at most.
    pub max_threads_per_map: usize,
    /// Threads beyond each node's own (threads_per_map + 1), all nodes together.
    pub max_extra_threads: usize,
    /// Bytes of data held for callers beyond a command's run (unread write() results,
    /// data-out of commands waiting for a path), all nodes together.
    pub held_data_limit: usize,
    /// Override the character major (otherwise persisted, or a free local one).
    pub major: Option<u32>,
    /// Serve SG_IO in one round through the caller's memory where possible.
    pub single_round: bool,
    /// Where `mpath-sgd status` finds the daemon.
    pub socket: PathBuf,
}

/// DEVNAME prefix: nodes are /dev/mpath-sg/<map>.
pub const DEV_DIR: &str = "mpath-sg";

/// Opens paths through sysfs. Maps that share a path device (device-mapper allows it)
/// share its open devices too, as long as sysfs still describes the same device.
fn sysfs_opener() -> Arc<PathOpener> {
    type Open = (PathInfo, std::sync::Weak<ScsiPath>);
    let opened: Mutex<std::collections::HashMap<DevT, Open>> = Mutex::new(Default::default());
    let shared =
        move |opened: &std::collections::HashMap<DevT, Open>, dev: DevT, info: &PathInfo| {
            opened
                .get(&dev)
                .filter(|(known, _)| known == info)
                .and_then(|(_, weak)| weak.upgrade())
        };
    Arc::new(move |dev: DevT| {
        let info = PathInfo::from_sysfs(Path::new("/sys"), dev)?;
        if let Some(path) = shared(&opened.lock(), dev, &info) {
            return Ok((info, path as Arc<dyn PathIo>));
        }
        // Opened without the lock: opening a device can wait (error handling on the
        // path), and other maps must not wait for it.
        let path = Arc::new(ScsiPath::open(&info)?);
        let mut opened = opened.lock();
        opened.retain(|_, (_, weak)| weak.strong_count() > 0);
        if let Some(theirs) = shared(&opened, dev, &info) {
            return Ok((info, theirs as Arc<dyn PathIo>));
        }
        opened.insert(dev, (info.clone(), Arc::downgrade(&path)));
        Ok((info, path as Arc<dyn PathIo>))
    })
}

/// Every node opens /dev/cuse and its paths' block and sg devices: a few hundred maps
/// need more than the default soft limit of 1024 files, so take the hard limit.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!("cannot raise the open file limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the open file limit: {e}"),
    }
}

/// Sorts what the service manager passed: the files' records, a clean predecessor's
/// hand-over, the nodes' /dev/cuse fds. Creates the records' store if the daemon runs
/// under a service manager and none was passed.
fn inherit() -> (Option<Arc<persist::FileStore>>, registry::Inherited) {
    let mut inherited = registry::Inherited::default();
    let mut store = None;
    for (name, fd) in fdstore::take_listened() {
        match (name.as_str(), registry::stored_node(&name)) {
            (_, Some(num)) => {
                inherited.nodes.insert(num, fd);
            }
            ("files", _) => match persist::FileStore::adopt(fd) {
                Ok((s, records)) => {
                    for (slot, rec) in records {
                        let left = inherited.left.entry((rec.major, rec.minor)).or_default();
                        left.records.push((slot, rec));
                    }
                    store = Some(s);
                }
                Err(e) => tracing::error!("the inherited open-file records are unreadable: {e}"),
            },
            ("handover", _) => {
                let image = persist::read_all(&fd, 64 << 20).ok();
                match image.as_deref().and_then(persist::decode_handover) {
                    Some(items) => {
                        inherited.handed_over = true;
                        for (num, kind, bytes) in items {
                            let left = inherited.left.entry(num).or_default();
                            match kind {
                                persist::Handed::Request => left.requests.push(bytes),
                                persist::Handed::Result => left.results.push(bytes),
                            }
                        }
                    }
                    None => tracing::error!("the predecessor's hand-over is unreadable"),
                }
                let _ = fdstore::remove("handover");
            }
            _ => {
                tracing::warn!("an inherited fd named {name:?} is not the daemon's: closed");
                let _ = fdstore::remove(&name);
            }
        }
    }
    if store.is_none() && fdstore::available() {
        match persist::FileStore::create() {
            Ok(s) => match fdstore::store("files", s.fd()) {
                Ok(()) => store = Some(s),
                Err(e) => tracing::warn!("open files will not outlive a restart: {e}"),
            },
            Err(e) => tracing::warn!("open files will not outlive a restart: {e}"),
        }
    }
    if !inherited.nodes.is_empty() {
        tracing::info!(
            nodes = inherited.nodes.len(),
            files = inherited
                .left
                .values()
                .map(|l| l.records.len())
                .sum::<usize>(),
            requests = inherited
                .left
                .values()
                .map(|l| l.requests.len())
                .sum::<usize>(),
            results = inherited
                .left
                .values()
                .map(|l| l.results.len())
                .sum::<usize>(),
            clean = inherited.handed_over,
            "taking over from the daemon's predecessor"
        );
    }
    (store, inherited)
}

pub fn run(opts: Options) -> Result<(), DaemonError> {
    // First: the fds from 3 on are the service manager's until taken.
    let (store, inherited) = inherit();
    let setup = |what: &'static str| move |source| DaemonError::Setup { what, source };
    // Block the signals we wait for before any thread starts, so they all inherit the
    // mask; they arrive through a signalfd polled with device-mapper's events.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(setup("cannot block signals"))?;
    let sigfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC).map_err(setup("signalfd"))?;

    raise_open_file_limit();
    let kdm = Arc::new(KernelDm::open().map_err(DaemonError::DeviceMapper)?);
    let dm: Arc<dyn DmControl> = kdm.clone();
    // The first sync lists every map anyway; this listing is only for --map's check.
    let maps = if opts.maps.is_empty() {
        Vec::new()
    } else {
        dm.multipath_maps().map_err(DaemonError::DeviceMapper)?
    };
    if let Some(want) = opts
        .maps
        .iter()
        .find(|want| !maps.iter().any(|m| &m.name == *want))
    {
        return Err(DaemonError::NoSuchMap(want.clone()));
    }
    let proc_devices = std::fs::read_to_string("/proc/devices").unwrap_or_default();
    let mut devnums =
        DevNums::load(&opts.state_dir, &proc_devices).map_err(DaemonError::DeviceNumbers)?;
    if let Some(m) = opts.major {
        devnums.set_major(m);
    }
    let socket = opts.socket.clone();
    let single_round = opts.single_round;
    let wake = Arc::new(
        EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(setup("eventfd"))?,
    );
    let shared = registry::Shared {
        threads: Arc::new(crate::cuse::ThreadBudget::new(opts.max_extra_threads)),
        budget: budget::Budget::new(opts.held_data_limit),
        timer: timer::Timer::start().map_err(|e| DaemonError::Setup {
            what: "timer thread",
            source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)),
        })?,
    };
    let registry = Arc::new(Mutex::new(Registry::new(
        opts,
        shared,
        dm.clone(),
        sysfs_opener(),
        devnums,
        wake.clone(),
        store,
        inherited,
    )));
    // Armed before the first listing: an event during it is not missed.
    kdm.arm_poll().map_err(DaemonError::DeviceMapper)?;
    registry.lock().sync().map_err(DaemonError::DeviceMapper)?;
    registry.lock().finish_adoption();
    if let Err(e) = status::serve(&socket, registry.clone()) {
        tracing::warn!("no status socket: {e}");
    }
    let count = registry.lock().maps().count();
    if count == 0 {
        tracing::warn!("no multipath maps yet; nodes appear as maps are created");
    }
    sd_notify("READY=1");
    tracing::info!(
        sg_io = if single_round {
            "one round through the caller's memory"
        } else {
            "CUSE's retry rounds (--ioctl-rounds)"
        },
        "serving {count} map(s); following device-mapper events"
    );

    // Sleeps in poll() until a DM event, the end of a node's removal or a signal: no CPU
    // while nothing changes.
    let sig = loop {
        let (dm_ready, sig_ready, removed) = {
            let mut fds = [
                PollFd::new(kdm.control_fd(), PollFlags::POLLIN),
                PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(setup("poll")(e)),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]), ready(&fds[2]))
        };
        if sig_ready {
            match sigfd.read_signal() {
                Ok(Some(info)) => break Signal::try_from(info.ssi_signo as i32).ok(),
                _ => continue,
            }
        }
        if removed {
            let _ = wake.read();
        }
        if dm_ready || removed {
            if dm_ready {
                if let Err(e) = kdm.arm_poll() {
                    tracing::error!("{e}");
                }
            }
            if let Err(e) = registry.lock().sync() {
                tracing::error!("following device-mapper: {e}");
            }
        }
    };
    sd_notify("STOPPING=1");
    let _ = std::fs::remove_file(&socket);
    if fdstore::available() {
        // Under a service manager the nodes are in its fd store: a stop for good empties
        // the store after the daemon exits (and so removes the nodes), a restart passes
        // them on. Either way they are handed over.
        tracing::info!("{sig:?}: handing the nodes over and exiting");
        let items = registry.lock().hand_over();
        // Stored even when empty: its presence tells the successor the hand-over was
        // clean (nothing for the kernel to resend).
        let image = persist::encode_handover(&items);
        let stored = persist::memfd_with(c"mpath-sg-handover", &image)
            .and_then(|fd| fdstore::store("handover", fd.as_fd()));
        if let Err(e) = stored {
            tracing::error!(
                "the hand-over ({} waiting reads and unread results) cannot be stored: {e}",
                items.len()
            );
        }
    } else {
        tracing::info!("{sig:?}: removing nodes and exiting");
        registry.lock().shutdown();
    }
    Ok(())
}

/// systemd's readiness protocol (a datagram to $NOTIFY_SOCKET), without libsystemd.
fn sd_notify(state: &str) {
    if let Err(e) = fdstore::notify(state, None) {
        tracing::warn!("sd_notify {state}: {e}");
    }
}
