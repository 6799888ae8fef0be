//! The daemon's lifecycle: discover the multipath maps, publish a node for each, serve
//! until SIGTERM/SIGINT, then remove the nodes.

pub mod async_io;
pub mod devnums;
pub mod node;

use crate::cuse::{CuseDevice, DeviceSpec};
use crate::dm::{DevT, DmControl, KernelDm};
use crate::failover::{Engine, PathOpener};
use crate::path::{PathInfo, PathIo, SgPath};
use devnums::{map_key, DevNums};
use nix::sys::signal::{SigSet, Signal};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Options {
    /// Only these maps (all multipath maps when empty).
    pub maps: Vec<String>,
    pub state_dir: PathBuf,
    pub threads_per_map: usize,
    /// Override the character major (otherwise persisted, or a free local one).
    pub major: Option<u32>,
    /// Serve SG_IO in one round through the caller's memory where possible.
    pub single_round: bool,
}

/// DEVNAME prefix: nodes are /dev/mpath-sg/<map>.
pub const DEV_DIR: &str = "mpath-sg";

fn sysfs_opener() -> Arc<PathOpener> {
    Arc::new(|dev: DevT| {
        let info = PathInfo::from_sysfs(Path::new("/sys"), dev)?;
        let io: Arc<dyn PathIo> = Arc::new(SgPath::open(info.sg_node.clone())?);
        Ok((info, io))
    })
}

pub fn run(opts: Options) -> Result<(), String> {
    // Block the signals we wait for before any thread starts, so they all inherit the mask.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;

    let dm: Arc<dyn DmControl> = Arc::new(KernelDm::open().map_err(|e| e.to_string())?);
    let mut maps = dm.multipath_maps().map_err(|e| e.to_string())?;
    for want in &opts.maps {
        if !maps.iter().any(|m| &m.name == want) {
            return Err(format!(
                "--map {want}: no multipath map of that name (see `dmsetup ls --target multipath`)"
            ));
        }
    }
    if !opts.maps.is_empty() {
        maps.retain(|m| opts.maps.contains(&m.name));
    }
    let proc_devices = std::fs::read_to_string("/proc/devices").unwrap_or_default();
    let mut devnums = DevNums::load(&opts.state_dir, &proc_devices).map_err(|e| e.to_string())?;
    if let Some(m) = opts.major {
        devnums.set_major(m);
    }
    let opener = sysfs_opener();
    let mut devices = Vec::new();
    let mut engines = Vec::new();
    let mut nodes = Vec::new();
    for map in &maps {
        let minor = devnums.minor_for(&map_key(&map.name, &map.uuid));
        let spec = DeviceSpec {
            devname: format!("{DEV_DIR}/{}", map.name),
            major: devnums.major,
            minor,
        };
        // One map's trouble never keeps the others from being served.
        let published = Engine::new(&map.name, dm.clone(), opener.clone()).and_then(|engine| {
            let engine = Arc::new(engine);
            engines.push(engine.clone());
            let handler = Arc::new(node::MapNode::new(engine, opts.single_round));
            nodes.push(handler.clone());
            CuseDevice::create(spec.clone(), handler, opts.threads_per_map)
        });
        match published {
            Ok(dev) => {
                tracing::info!(
                    map = %map.name,
                    node = %format!("/dev/{}", spec.devname),
                    devnum = %format!("{}:{}", spec.major, spec.minor),
                    "published"
                );
                devices.push(dev);
            }
            Err(e) => tracing::error!(map = %map.name, "not published: {e}"),
        }
    }
    if let Err(e) = devnums.save() {
        tracing::warn!(
            "cannot save device numbers in {}: {e}",
            opts.state_dir.display()
        );
    }
    if maps.is_empty() {
        tracing::warn!("no multipath maps found; nothing to publish");
    }
    sd_notify("READY=1");
    tracing::info!("serving {} map(s)", devices.len());

    let sig = signals.wait().map_err(|e| format!("sigwait: {e}"))?;
    tracing::info!("{sig:?}: removing nodes and exiting");
    sd_notify("STOPPING=1");
    // Commands waiting for a path complete now (DID_TRANSPORT_DISRUPTED); the workers
    // finish what they hold and stop.
    for e in &engines {
        e.close();
    }
    // Reads waiting for a completion end with ENODEV, so no worker stays blocked.
    for n in &nodes {
        n.detach();
    }
    for d in devices {
        d.join();
    }
    Ok(())
}

/// systemd's readiness protocol (a datagram to $NOTIFY_SOCKET), without libsystemd.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(abstract_name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!("sd_notify {state}: {e}");
    }
}
