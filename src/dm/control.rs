//! Talking to device-mapper: a small trait (so the failover engine can be tested with a
//! fake) and its implementation over the `devicemapper` crate's DM ioctls.

use super::message::Message;
use super::model::DevT;
use devicemapper::{DevId, DeviceInfo, DmFlags, DmName, DmOptions, DmResult, DmUuid, DM};
use std::fmt;
use std::io;

/// The map a node stands for: a device, not a name. A map renamed, and a new map made
/// under the old name, is another LU: the daemon addresses device-mapper by the map's uuid
/// where it has one (unique, kept across a rename), else by name, and checks the device
/// number in every answer, so that a command never runs on a table that is not its map's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapId {
    pub name: String,
    /// Empty if the map has none (maps made with dmsetup without --uuid).
    pub uuid: String,
    pub dev: DevT,
}

impl fmt::Display for MapId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A multipath map as device-mapper lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    pub name: String,
    /// The DM uuid ("mpath-<wwid>" for maps multipathd made), empty if none.
    pub uuid: String,
    pub dev: DevT,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmKind {
    /// Its single target is `multipath`; uuid empty if it has none.
    Multipath { uuid: String },
    /// A live table of another kind.
    Other,
    /// No live table (created, table not loaded and resumed yet), or gone.
    NoTable,
}

/// One device-mapper device as DM_LIST_DEVICES reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmDevice {
    pub name: String,
    pub dev: DevT,
    /// Bumped by the kernel on every table event (path failed or reinstated); None on
    /// kernels before DM 4.37. A table swap (resume) is a DM event that does not bump it.
    pub event_nr: Option<u32>,
}

pub trait DmControl: Send + Sync {
    /// Every device-mapper device, with its event counter (one ioctl).
    fn devices(&self) -> io::Result<Vec<DmDevice>>;
    /// What device `name` is now: a multipath map (with its uuid), something else, or a
    /// device without a live table yet (being created: look again at the next event).
    fn kind(&self, name: &str) -> io::Result<DmKind>;
    /// Every map whose (single) target is `multipath`.
    fn multipath_maps(&self) -> io::Result<Vec<MapInfo>> {
        let mut maps = Vec::new();
        for d in self.devices()? {
            if let Ok(DmKind::Multipath { uuid }) = self.kind(&d.name) {
                maps.push(MapInfo {
                    name: d.name,
                    uuid,
                    dev: d.dev,
                });
            }
        }
        Ok(maps)
    }
    /// The multipath target's table parameters; NotFound if `map`'s device is gone (its
    /// name may now be another device's).
    fn table(&self, map: &MapId) -> io::Result<String>;
    /// The multipath target's status parameters (NotFound as for `table`).
    fn status(&self, map: &MapId) -> io::Result<String>;
    /// A multipath target message (at sector 0), to `map`'s device only.
    fn message(&self, map: &MapId, msg: &Message) -> io::Result<()>;
}

pub struct KernelDm {
    dm: DM,
}

fn dm_err(what: &str, map: &str, e: devicemapper::DmError) -> io::Error {
    io::Error::other(format!("device-mapper {what} on {map}: {e}"))
}

impl KernelDm {
    /// DM_DEV_ARM_POLL: /dev/mapper/control polls readable once any DM event (a device
    /// created, removed or renamed, a table swapped, a path failed or reinstated) happens
    /// after this call.
    pub fn arm_poll(&self) -> io::Result<()> {
        self.dm
            .arm_poll()
            .map(|_| ())
            .map_err(|e| io::Error::other(format!("device-mapper arm poll: {e}")))
    }

    /// /dev/mapper/control, to poll for the events `arm_poll` armed.
    pub fn control_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self.dm.file())
    }

    pub fn open() -> io::Result<KernelDm> {
        let dm =
            DM::new().map_err(|e| io::Error::other(format!("open /dev/mapper/control: {e}")))?;
        Ok(KernelDm { dm })
    }

    /// Runs `f` with the id device-mapper knows `map` by: its uuid, else its name.
    fn with_id<T>(
        map: &MapId,
        what: &str,
        f: impl FnOnce(&DevId<'_>) -> DmResult<T>,
    ) -> io::Result<T> {
        let r = if map.uuid.is_empty() {
            let name = DmName::new(&map.name).map_err(|e| dm_err("name", &map.name, e))?;
            f(&DevId::Name(name))
        } else {
            let uuid = DmUuid::new(&map.uuid).map_err(|e| dm_err("uuid", &map.name, e))?;
            f(&DevId::Uuid(uuid))
        };
        r.map_err(|e| dm_err(what, &map.name, e))
    }

    fn target(&self, map: &MapId, flags: DmFlags) -> io::Result<Option<(String, String)>> {
        let (info, targets) = Self::with_id(map, "table status", |id| {
            self.dm
                .table_status(id, DmOptions::default().set_flags(flags))
        })?;
        same_device(map, &info)?;
        Ok(match targets.as_slice() {
            [(_, _, kind, params)] => Some((kind.clone(), params.clone())),
            _ => None,
        })
    }

    fn multipath_params(&self, map: &MapId, flags: DmFlags) -> io::Result<String> {
        match self.target(map, flags)? {
            Some((kind, params)) if kind == "multipath" => Ok(params),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{map} is not a multipath map (any more)"),
            )),
        }
    }
}

/// NotFound unless the device that answered is `map`'s.
fn same_device(map: &MapId, info: &DeviceInfo) -> io::Result<()> {
    let d = info.device();
    if (d.major, d.minor) == (map.dev.major, map.dev.minor) {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "map {map} ({}) is gone: its name now belongs to device {}:{}",
            map.dev, d.major, d.minor
        ),
    ))
}

impl DmControl for KernelDm {
    fn devices(&self) -> io::Result<Vec<DmDevice>> {
        let devices = self
            .dm
            .list_devices()
            .map_err(|e| io::Error::other(format!("device-mapper list: {e}")))?;
        Ok(devices
            .into_iter()
            .map(|(name, dev, event_nr)| DmDevice {
                name: name.to_string(),
                dev: DevT {
                    major: dev.major,
                    minor: dev.minor,
                },
                event_nr,
            })
            .collect())
    }

    fn kind(&self, name: &str) -> io::Result<DmKind> {
        let id = DmName::new(name).map_err(|e| dm_err("name", name, e))?;
        let Ok((_, targets)) = self.dm.table_status(
            &DevId::Name(id),
            DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE),
        ) else {
            return Ok(DmKind::NoTable);
        };
        match targets.as_slice() {
            [] => return Ok(DmKind::NoTable),
            [(_, _, kind, _)] if kind == "multipath" => {}
            _ => return Ok(DmKind::Other),
        }
        let info = self
            .dm
            .device_info(&DevId::Name(id))
            .map_err(|e| dm_err("info", name, e))?;
        Ok(DmKind::Multipath {
            uuid: info.uuid().map(|u| u.to_string()).unwrap_or_default(),
        })
    }

    fn table(&self, map: &MapId) -> io::Result<String> {
        self.multipath_params(map, DmFlags::DM_STATUS_TABLE)
    }

    fn status(&self, map: &MapId) -> io::Result<String> {
        self.multipath_params(map, DmFlags::empty())
    }

    fn message(&self, map: &MapId, msg: &Message) -> io::Result<()> {
        if map.uuid.is_empty() {
            // By name: make sure the name is still this map's first. (A message meant for
            // a renamed map that reached a new one under its name in the instant between
            // would name a path that map does not have, and be refused.)
            let info = Self::with_id(map, "info", |id| self.dm.device_info(id))?;
            same_device(map, &info)?;
        }
        Self::with_id(map, &format!("message '{msg}'"), |id| {
            self.dm.target_msg(id, Some(0), &msg.to_string())
        })
        .map(|_| ())
    }
}
