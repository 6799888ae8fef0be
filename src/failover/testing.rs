//! Fakes for tests above the engine: device-mapper as the engine sees it (one map,
//! groups of paths, messages) and paths whose behaviour a test sets per command.

use super::engine::Engine;
use super::openings::PathOpener;
use crate::dm::{DevT, DmControl, DmDevice, DmKind, MapId, Message};
use crate::errno::Errno;
use crate::path::{PathCommand, PathError, PathInfo, PathIo};
use crate::sg::header::{Completion, Direction};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// device-mapper as far as the engine sees it: one map, groups of paths, messages.
pub struct FakeDm {
    pub queue: Mutex<bool>,
    /// (group, dev, active)
    pub paths: Mutex<Vec<(usize, DevT, bool)>>,
    pub messages: Mutex<Vec<String>>,
    /// The device that holds the map's name now (253:0, as `mapid`): another one stands
    /// for a map renamed and a new one made under its name.
    pub dev: Mutex<DevT>,
}

impl FakeDm {
    pub fn new(groups: &[&[u32]], queue: bool) -> Arc<FakeDm> {
        let mut paths = vec![];
        for (g, devs) in groups.iter().enumerate() {
            for &m in *devs {
                paths.push((g, DevT { major: 8, minor: m }, true));
            }
        }
        Arc::new(FakeDm {
            queue: Mutex::new(queue),
            paths: Mutex::new(paths),
            messages: Mutex::new(vec![]),
            dev: Mutex::new(mapid("").dev),
        })
    }
    pub fn set(&self, minor: u32, active: bool) {
        for p in self.paths.lock().iter_mut() {
            if p.1.minor == minor {
                p.2 = active;
            }
        }
    }
}

impl FakeDm {
    /// As KernelDm: NotFound when the name answers for another device.
    fn same_device(&self, map: &MapId) -> io::Result<()> {
        if *self.dev.lock() == map.dev {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, "map is gone"))
        }
    }
}

fn ngroups(paths: &[(usize, DevT, bool)]) -> usize {
    paths.iter().map(|p| p.0 + 1).max().unwrap_or(0)
}

impl DmControl for FakeDm {
    fn devices(&self) -> io::Result<Vec<DmDevice>> {
        Ok(vec![])
    }
    fn kind(&self, _: &str) -> io::Result<DmKind> {
        Ok(DmKind::NoTable)
    }
    fn table(&self, map: &MapId) -> io::Result<String> {
        self.same_device(map)?;
        let paths = self.paths.lock();
        let mut s = if *self.queue.lock() {
            "1 queue_if_no_path 0".to_string()
        } else {
            "0 0".to_string()
        };
        s += &format!(" {} 1", ngroups(&paths));
        for g in 0..ngroups(&paths) {
            let devs: Vec<_> = paths
                .iter()
                .filter(|p| p.0 == g)
                .map(|p| format!("{} 1", p.1))
                .collect();
            s += &format!(" round-robin 0 {} 1 {}", devs.len(), devs.join(" "));
        }
        Ok(s)
    }
    fn status(&self, map: &MapId) -> io::Result<String> {
        self.same_device(map)?;
        let paths = self.paths.lock();
        let mut s = format!("2 0 0 0 {} 1", ngroups(&paths));
        for g in 0..ngroups(&paths) {
            let devs: Vec<_> = paths
                .iter()
                .filter(|p| p.0 == g)
                .map(|p| format!("{} {} 0", p.1, if p.2 { "A" } else { "F" }))
                .collect();
            s += &format!(
                " {} 0 {} 0 {}",
                if g == 0 { "A" } else { "E" },
                devs.len(),
                devs.join(" ")
            );
        }
        Ok(s)
    }
    fn message(&self, map: &MapId, msg: &Message) -> io::Result<()> {
        self.same_device(map)?;
        self.messages.lock().push(msg.to_string());
        match *msg {
            Message::FailPath(dev) => self.set(dev.minor, false),
            Message::ReinstatePath(dev) => self.set(dev.minor, true),
            _ => {}
        }
        Ok(())
    }
}

pub type Behaviour =
    Arc<dyn Fn(&mut PathCommand<'_>) -> Result<Completion, PathError> + Send + Sync>;

pub struct FakePath {
    pub calls: AtomicUsize,
    pub behaviour: Mutex<Behaviour>,
}

impl PathIo for FakePath {
    fn execute(&self, cmd: &mut PathCommand<'_>) -> Result<Completion, PathError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        // Not called under the lock: a behaviour may block or panic.
        let b = self.behaviour.lock().clone();
        b(cmd)
    }
}

/// The id of a fake map (device 253:0, no uuid).
pub fn mapid(name: &str) -> MapId {
    MapId {
        name: name.to_string(),
        uuid: String::new(),
        dev: DevT {
            major: 253,
            minor: 0,
        },
    }
}

pub fn good(_: &[u8]) -> Result<Completion, Errno> {
    Ok(Completion::default())
}

pub struct Rig {
    pub dm: Arc<FakeDm>,
    pub paths: HashMap<u32, Arc<FakePath>>,
    pub engine: Engine,
}

pub fn rig(groups: &[&[u32]], queue: bool) -> Rig {
    let dm = FakeDm::new(groups, queue);
    let mut paths = HashMap::new();
    for devs in groups {
        for &m in *devs {
            paths.insert(
                m,
                Arc::new(FakePath {
                    calls: AtomicUsize::new(0),
                    behaviour: Mutex::new(Arc::new(|c: &mut PathCommand<'_>| Ok(good(c.cdb)?))),
                }),
            );
        }
    }
    let table = paths.clone();
    let opener: Arc<PathOpener> = Arc::new(move |dev: DevT| {
        let p = table
            .get(&dev.minor)
            .cloned()
            .ok_or_else(|| io::Error::other("no such path"))?;
        let info = PathInfo {
            block_name: format!("sd{}", dev.minor),
            max_transfer: 512 * 1024 + dev.minor as usize,
            max_hw_transfer: 4096 * 1024 + dev.minor as usize,
            max_segments: 128 + dev.minor as i32,
            ..Default::default()
        };
        Ok((info, p as Arc<dyn PathIo>))
    });
    let mut engine = Engine::new(mapid("mpatha"), dm.clone(), opener).unwrap();
    engine.queue_poll = Duration::from_millis(5);
    engine.transition_poll = Duration::from_millis(5);
    Rig { dm, paths, engine }
}

impl Rig {
    /// What path `minor` answers, from the CDB (an errno is the path's device refusing).
    pub fn behave(
        &self,
        minor: u32,
        f: impl Fn(&[u8]) -> Result<Completion, Errno> + Send + Sync + 'static,
    ) {
        *self.paths[&minor].behaviour.lock() =
            Arc::new(move |c: &mut PathCommand<'_>| Ok(f(c.cdb)?));
    }

    /// What path `minor` does with the whole command (it may fill data-in).
    pub fn behave_io(
        &self,
        minor: u32,
        f: impl Fn(&mut PathCommand<'_>) -> Result<Completion, PathError> + Send + Sync + 'static,
    ) {
        *self.paths[&minor].behaviour.lock() = Arc::new(f);
    }
    pub fn calls(&self, minor: u32) -> usize {
        self.paths[&minor].calls.load(Ordering::Relaxed)
    }
    /// The messages device-mapper got, once there are `n` of them (the daemon's probes
    /// run in the background); panics after 10 s.
    pub fn dm_messages(&self, n: usize) -> Vec<String> {
        let t = std::time::Instant::now();
        loop {
            let m = self.dm.messages.lock().clone();
            if m.len() >= n {
                return m;
            }
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "device-mapper got {m:?}, not {n} message(s)"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    /// Waits until no probe of the map's paths is under way; panics after 10 s.
    pub fn probes_done(&self) {
        let t = std::time::Instant::now();
        while self.engine.probing() {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(10),
                "a probe never ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    pub fn run(&self, cdb: &[u8], timeout_ms: u32) -> Result<Completion, Errno> {
        let mut cmd = PathCommand {
            cdb,
            direction: Direction::None,
            transfer_len: 0,
            data: None,
            timeout_ms,
            flags: 0,
            owner: 0,
        };
        self.engine.execute_blocking(&mut cmd)
    }
}
