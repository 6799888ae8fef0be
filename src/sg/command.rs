//! One SCSI command as sg sees it once its header, CDB and data regions are known,
//! whichever way it came in (SG_IO in one round, SG_IO in retry rounds, write()): the
//! normalized header, the CDB, the caller's data regions. Pure data.

use super::abi::MAX_CDB_LEN;
use super::header::{Direction, SgIoHeader};
use crate::cuse::abi::IoctlIovec;

/// A CDB of at most 252 bytes (SG_MAX_CDB_SIZE), kept inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cdb {
    len: u8,
    bytes: [u8; MAX_CDB_LEN as usize],
}

impl Default for Cdb {
    fn default() -> Cdb {
        Cdb::zeroed(0)
    }
}

impl Cdb {
    /// The first 252 bytes of `b` (callers check cmd_len first).
    pub fn new(b: &[u8]) -> Cdb {
        let len = b.len().min(MAX_CDB_LEN as usize);
        let mut bytes = [0u8; MAX_CDB_LEN as usize];
        bytes[..len].copy_from_slice(&b[..len]);
        Cdb {
            len: len as u8,
            bytes,
        }
    }

    /// A CDB of `len` zero bytes, to be filled through `bytes_mut`.
    pub fn zeroed(len: u8) -> Cdb {
        Cdb {
            len: len.min(MAX_CDB_LEN),
            bytes: [0; MAX_CDB_LEN as usize],
        }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..usize::from(self.len)]
    }
}

impl std::ops::Deref for Cdb {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Cdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x?}", &**self)
    }
}

/// The caller's data regions: none, one linear buffer (the usual case, no allocation),
/// or an iovec list truncated to the transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Segments {
    #[default]
    None,
    Linear(IoctlIovec),
    List(Vec<IoctlIovec>),
}

impl Segments {
    pub fn from_vec(v: Vec<IoctlIovec>) -> Segments {
        match v.as_slice() {
            [] => Segments::None,
            [one] => Segments::Linear(*one),
            _ => Segments::List(v),
        }
    }

    pub fn as_slice(&self) -> &[IoctlIovec] {
        match self {
            Segments::None => &[],
            Segments::Linear(one) => std::slice::from_ref(one),
            Segments::List(v) => v,
        }
    }

    /// The regions holding the first `len` bytes.
    pub fn prefix(&self, len: usize) -> impl Iterator<Item = IoctlIovec> + '_ {
        let mut left = len as u64;
        self.as_slice().iter().map_while(move |s| {
            if left == 0 {
                return None;
            }
            let take = s.len.min(left);
            left -= take;
            Some(IoctlIovec {
                base: s.base,
                len: take,
            })
        })
    }
}

/// A command ready to run: what to send, and where its data lives in the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SgCommand {
    pub header: SgIoHeader,
    pub cdb: Cdb,
    /// The caller's data regions (none without a caller buffer).
    pub segments: Segments,
    /// Bytes moved to or from the device (0 for no transfer).
    pub transfer_len: usize,
    /// Data-out comes from the caller's regions.
    pub data_out_from_caller: bool,
    /// Data-in goes back to the caller's regions.
    pub data_in_to_caller: bool,
}

impl SgCommand {
    pub fn direction(&self) -> Direction {
        self.header.direction()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iov(base: u64, len: u64) -> IoctlIovec {
        IoctlIovec { base, len }
    }

    #[test]
    fn segments_prefix_clips_to_the_length() {
        let s = Segments::from_vec(vec![iov(0x1000, 100), iov(0x2000, 100), iov(0x3000, 50)]);
        let p: Vec<_> = s.prefix(150).collect();
        assert_eq!(p, vec![iov(0x1000, 100), iov(0x2000, 50)]);
        assert_eq!(s.prefix(0).count(), 0);
        assert_eq!(s.prefix(1000).count(), 3);
        assert_eq!(
            Segments::from_vec(vec![iov(1, 2)]),
            Segments::Linear(iov(1, 2))
        );
        assert_eq!(Segments::from_vec(vec![]).as_slice(), &[]);
    }

    #[test]
    fn cdb_inline() {
        let c = Cdb::new(&[0x28, 1, 2]);
        assert_eq!(&*c, &[0x28, 1, 2]);
        assert_eq!(Cdb::new(&[7; 300]).len(), 252);
        let mut z = Cdb::zeroed(6);
        z.bytes_mut()[0] = 0x12;
        assert_eq!(&*z, &[0x12, 0, 0, 0, 0, 0]);
    }
}
