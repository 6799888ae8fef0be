//! A non-zero errno value: success cannot be encoded as an error.

use std::fmt;
use std::num::NonZeroI32;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(NonZeroI32);

impl Errno {
    pub const EPERM: Errno = Errno::new(libc::EPERM);
    pub const ENOENT: Errno = Errno::new(libc::ENOENT);
    pub const EINTR: Errno = Errno::new(libc::EINTR);
    pub const EIO: Errno = Errno::new(libc::EIO);
    pub const ENXIO: Errno = Errno::new(libc::ENXIO);
    pub const EAGAIN: Errno = Errno::new(libc::EAGAIN);
    pub const ENOMEM: Errno = Errno::new(libc::ENOMEM);
    pub const EACCES: Errno = Errno::new(libc::EACCES);
    pub const EFAULT: Errno = Errno::new(libc::EFAULT);
    pub const EBUSY: Errno = Errno::new(libc::EBUSY);
    pub const ENODEV: Errno = Errno::new(libc::ENODEV);
    pub const EINVAL: Errno = Errno::new(libc::EINVAL);
    pub const ENOTTY: Errno = Errno::new(libc::ENOTTY);
    pub const EDOM: Errno = Errno::new(libc::EDOM);
    pub const ENOSYS: Errno = Errno::new(libc::ENOSYS);
    pub const EMSGSIZE: Errno = Errno::new(libc::EMSGSIZE);
    pub const ENOTCONN: Errno = Errno::new(libc::ENOTCONN);

    /// `raw` must be a positive errno; anything else is a programming error.
    pub const fn new(raw: i32) -> Errno {
        match NonZeroI32::new(raw) {
            Some(v) if raw > 0 && raw < 512 => Errno(v),
            _ => panic!("errno out of range"),
        }
    }

    /// From an OS error; EIO when the error carries no errno.
    pub fn from_io(err: &std::io::Error) -> Errno {
        match err.raw_os_error() {
            Some(raw) if raw > 0 && raw < 512 => Errno::new(raw),
            _ => Errno::EIO,
        }
    }

    pub fn get(self) -> i32 {
        self.0.get()
    }
}

impl From<nix::errno::Errno> for Errno {
    fn from(e: nix::errno::Errno) -> Errno {
        match e as i32 {
            raw if raw > 0 && raw < 512 => Errno::new(raw),
            _ => Errno::EIO,
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", nix::errno::Errno::from_raw(self.get()))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.get()))
    }
}
