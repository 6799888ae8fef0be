//! Why the daemon, or `mpath-sgd status`, could not do its job: one typed error per
//! cause, each naming what it concerns, printed by `main` as the exit reason.

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum DaemonError {
    /// A system call the daemon cannot run without (signal mask, signalfd, eventfd, poll).
    Setup {
        what: &'static str,
        source: nix::errno::Errno,
    },
    /// /dev/mapper/control could not be opened or armed, or the maps not listed.
    DeviceMapper(io::Error),
    /// `--map NAME` names no multipath map.
    NoSuchMap(String),
    /// The device-number state under --state-dir is unusable.
    DeviceNumbers(io::Error),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Setup { what, source } => write!(f, "{what}: {source}"),
            DaemonError::DeviceMapper(e) => write!(f, "{e}"),
            DaemonError::NoSuchMap(name) => write!(
                f,
                "--map {name}: no multipath map of that name (see `dmsetup ls --target multipath`)"
            ),
            DaemonError::DeviceNumbers(e) => write!(f, "device numbers: {e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

/// Why `mpath-sgd status` got no report.
#[derive(Debug)]
pub enum StatusError {
    /// Nobody answers on the socket (daemon not running, or not root).
    Unreachable { socket: PathBuf, source: io::Error },
    /// The conversation broke off.
    Io { socket: PathBuf, source: io::Error },
    /// The daemon answered with an error.
    Refused(String),
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusError::Unreachable { socket, source } => write!(
                f,
                "cannot reach mpath-sgd at {}: {source} (is it running? status needs root)",
                socket.display()
            ),
            StatusError::Io { socket, source } => write!(f, "{}: {source}", socket.display()),
            StatusError::Refused(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for StatusError {}
