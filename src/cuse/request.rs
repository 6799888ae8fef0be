//! One request read from /dev/cuse, parsed into a typed operation. Nothing above this
//! module sees request bytes.

use super::abi::*;
use std::fmt;
use zerocopy::FromBytes;

/// A request's id. Replies name it; a FUSE_INTERRUPT names the request it interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Unique(pub u64);

impl fmt::Display for Unique {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What OPEN answered for a file, and what every later request on it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileHandle(pub u64);

/// A calling thread's id as the kernel gives it: in the pid namespace of the process
/// that opened /dev/cuse, 0 when the caller is not visible there. Not a process id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tid(pub u32);

impl Tid {
    /// The id, if the caller is visible in the daemon's pid namespace.
    pub fn visible(self) -> Option<u32> {
        (self.0 != 0 && self.0 <= i32::MAX as u32).then_some(self.0)
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who is calling, as the kernel tells it with each request.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub tid: Tid,
    pub uid: u32,
    pub gid: u32,
    /// The request's id, named again by a FUSE_INTERRUPT for it.
    pub unique: Unique,
}

impl InHeader {
    pub fn caller(&self) -> Caller {
        Caller {
            tid: Tid(self.pid),
            uid: self.uid,
            gid: self.gid,
            unique: Unique(self.unique),
        }
    }
}

#[derive(Debug)]
pub struct Request<'a> {
    pub header: InHeader,
    pub op: Operation<'a>,
}

#[derive(Debug)]
pub enum Operation<'a> {
    CuseInit(CuseInitIn),
    Open(OpenIn),
    Release(ReleaseIn),
    Read(ReadWriteIn),
    Write {
        arg: ReadWriteIn,
        data: &'a [u8],
    },
    Ioctl {
        arg: IoctlIn,
        data: &'a [u8],
    },
    Poll(PollIn),
    Interrupt(InterruptIn),
    /// An opcode a CUSE server does not handle: answered ENOSYS.
    Unknown(u32),
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than the fixed header, or than `len` says.
    Short { have: usize, need: usize },
    /// The opcode's fixed argument does not fit in the request.
    ShortArgument { opcode: u32 },
    /// IOCTL in_size or WRITE size disagrees with the bytes that follow.
    PayloadSize { opcode: u32 },
}

impl<'a> Request<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Request<'a>, ParseError> {
        let (header, _) = InHeader::read_from_prefix(buf).map_err(|_| ParseError::Short {
            have: buf.len(),
            need: size_of::<InHeader>(),
        })?;
        let len = header.len as usize;
        if len < size_of::<InHeader>() || buf.len() < len {
            return Err(ParseError::Short {
                have: buf.len(),
                need: len.max(size_of::<InHeader>()),
            });
        }
        let body = &buf[size_of::<InHeader>()..len];
        let opcode = header.opcode;
        let short = || ParseError::ShortArgument { opcode };
        let op = match opcode {
            opcode::CUSE_INIT => Operation::CuseInit(read_arg(body).ok_or_else(short)?.0),
            opcode::OPEN => Operation::Open(read_arg(body).ok_or_else(short)?.0),
            opcode::RELEASE => Operation::Release(read_arg(body).ok_or_else(short)?.0),
            opcode::READ => Operation::Read(read_arg(body).ok_or_else(short)?.0),
            opcode::WRITE => {
                let (arg, data): (ReadWriteIn, _) = read_arg(body).ok_or_else(short)?;
                if data.len() != arg.size as usize {
                    return Err(ParseError::PayloadSize { opcode });
                }
                Operation::Write { arg, data }
            }
            opcode::IOCTL => {
                let (arg, data): (IoctlIn, _) = read_arg(body).ok_or_else(short)?;
                if data.len() != arg.in_size as usize {
                    return Err(ParseError::PayloadSize { opcode });
                }
                Operation::Ioctl { arg, data }
            }
            opcode::POLL => Operation::Poll(read_arg(body).ok_or_else(short)?.0),
            opcode::INTERRUPT => Operation::Interrupt(read_arg(body).ok_or_else(short)?.0),
            other => Operation::Unknown(other),
        };
        Ok(Request { header, op })
    }
}

fn read_arg<T: FromBytes>(body: &[u8]) -> Option<(T, &[u8])> {
    T::read_from_prefix(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    fn header(opcode: u32, body_len: usize) -> InHeader {
        InHeader {
            len: (40 + body_len) as u32,
            opcode,
            unique: 0x1234,
            nodeid: 1,
            uid: 0,
            gid: 6,
            pid: 4242,
            padding: 0,
        }
    }

    #[test]
    fn ioctl_with_payload() {
        let arg = IoctlIn {
            fh: 7,
            flags: ioctl_flags::UNRESTRICTED,
            cmd: 0x2285,
            arg: 0x7fff_0000,
            in_size: 3,
            out_size: 0,
        };
        let mut buf = header(opcode::IOCTL, 32 + 3).as_bytes().to_vec();
        buf.extend_from_slice(arg.as_bytes());
        buf.extend_from_slice(&[1, 2, 3]);
        let req = Request::parse(&buf).unwrap();
        assert_eq!(req.header.pid, 4242);
        match req.op {
            Operation::Ioctl { arg, data } => {
                assert_eq!((arg.fh, arg.cmd, arg.arg), (7, 0x2285, 0x7fff_0000));
                assert_eq!(data, &[1, 2, 3]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn golden_bytes_of_an_open() {
        // len=48, opcode=14, unique=5, nodeid=1, uid=0, gid=0, pid=9, pad; flags=O_RDWR(2)
        let buf: [u8; 48] = [
            48, 0, 0, 0, 14, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
        ];
        let req = Request::parse(&buf).unwrap();
        assert_eq!(req.header.unique, 5);
        assert!(matches!(req.op, Operation::Open(OpenIn { flags: 2, .. })));
    }

    #[test]
    fn ioctl_size_mismatch_is_an_error() {
        let arg = IoctlIn {
            fh: 0,
            flags: 0,
            cmd: 1,
            arg: 0,
            in_size: 8,
            out_size: 0,
        };
        let mut buf = header(opcode::IOCTL, 32 + 3).as_bytes().to_vec();
        buf.extend_from_slice(arg.as_bytes());
        buf.extend_from_slice(&[0; 3]);
        assert_eq!(
            Request::parse(&buf).unwrap_err(),
            ParseError::PayloadSize {
                opcode: opcode::IOCTL
            }
        );
    }

    #[test]
    fn truncated_requests_are_errors_not_panics() {
        let h = header(opcode::RELEASE, 24);
        let buf = h.as_bytes().to_vec();
        assert!(matches!(
            Request::parse(&buf),
            Err(ParseError::Short { .. })
        ));
        assert!(matches!(
            Request::parse(&buf[..10]),
            Err(ParseError::Short { .. })
        ));
        let mut h = header(opcode::RELEASE, 4);
        h.len = 44;
        let mut buf = h.as_bytes().to_vec();
        buf.extend_from_slice(&[0; 4]);
        assert_eq!(
            Request::parse(&buf).unwrap_err(),
            ParseError::ShortArgument {
                opcode: opcode::RELEASE
            }
        );
    }

    #[test]
    fn unknown_opcode() {
        let buf = header(25, 0).as_bytes().to_vec();
        assert!(matches!(
            Request::parse(&buf).unwrap().op,
            Operation::Unknown(25)
        ));
    }
}
