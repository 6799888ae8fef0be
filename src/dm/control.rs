//! Talking to device-mapper: a small trait (so the failover engine can be tested with a
//! fake) and its implementation over the `devicemapper` crate's DM ioctls.

use super::model::DevT;
use devicemapper::{DevId, DmFlags, DmName, DmOptions, DM};
use std::io;

/// A multipath map as device-mapper lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    pub name: String,
    /// The DM uuid ("mpath-<wwid>" for maps multipathd made), empty if none.
    pub uuid: String,
    pub dev: DevT,
}

pub trait DmControl: Send + Sync {
    /// Every map whose (single) target is `multipath`.
    fn multipath_maps(&self) -> io::Result<Vec<MapInfo>>;
    /// The multipath target's table parameters.
    fn table(&self, map: &str) -> io::Result<String>;
    /// The multipath target's status parameters.
    fn status(&self, map: &str) -> io::Result<String>;
    /// A target message at sector 0, e.g. "fail_path 8:16".
    fn message(&self, map: &str, msg: &str) -> io::Result<()>;
}

pub struct KernelDm {
    dm: DM,
}

fn dm_err(what: &str, map: &str, e: devicemapper::DmError) -> io::Error {
    io::Error::other(format!("device-mapper {what} on {map}: {e}"))
}

impl KernelDm {
    pub fn open() -> io::Result<KernelDm> {
        let dm =
            DM::new().map_err(|e| io::Error::other(format!("open /dev/mapper/control: {e}")))?;
        Ok(KernelDm { dm })
    }

    fn target(&self, map: &str, flags: DmFlags) -> io::Result<Option<(String, String)>> {
        let name = DmName::new(map).map_err(|e| dm_err("name", map, e))?;
        let (_, targets) = self
            .dm
            .table_status(&DevId::Name(name), DmOptions::default().set_flags(flags))
            .map_err(|e| dm_err("table status", map, e))?;
        Ok(match targets.as_slice() {
            [(_, _, kind, params)] => Some((kind.clone(), params.clone())),
            _ => None,
        })
    }

    fn multipath_params(&self, map: &str, flags: DmFlags) -> io::Result<String> {
        match self.target(map, flags)? {
            Some((kind, params)) if kind == "multipath" => Ok(params),
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{map} is not a multipath map (any more)"),
            )),
        }
    }
}

impl DmControl for KernelDm {
    fn multipath_maps(&self) -> io::Result<Vec<MapInfo>> {
        let devices = self
            .dm
            .list_devices()
            .map_err(|e| io::Error::other(format!("device-mapper list: {e}")))?;
        let mut maps = Vec::new();
        for (name, dev, _) in devices {
            let name = name.to_string();
            match self.target(&name, DmFlags::DM_STATUS_TABLE) {
                Ok(Some((kind, _))) if kind == "multipath" => {}
                _ => continue,
            }
            let uuid = DmName::new(&name)
                .ok()
                .and_then(|n| self.dm.device_info(&DevId::Name(n)).ok())
                .and_then(|info| info.uuid().map(|u| u.to_string()))
                .unwrap_or_default();
            maps.push(MapInfo {
                name,
                uuid,
                dev: DevT {
                    major: dev.major,
                    minor: dev.minor,
                },
            });
        }
        Ok(maps)
    }

    fn table(&self, map: &str) -> io::Result<String> {
        self.multipath_params(map, DmFlags::DM_STATUS_TABLE)
    }

    fn status(&self, map: &str) -> io::Result<String> {
        self.multipath_params(map, DmFlags::empty())
    }

    fn message(&self, map: &str, msg: &str) -> io::Result<()> {
        let name = DmName::new(map).map_err(|e| dm_err("name", map, e))?;
        self.dm
            .target_msg(&DevId::Name(name), Some(0), msg)
            .map(|_| ())
            .map_err(|e| dm_err(&format!("message '{msg}'"), map, e))
    }
}
