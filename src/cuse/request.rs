//! One request read from /dev/cuse, parsed into a typed operation. Nothing above this
//! module sees request bytes.

use super::abi::*;
use std::fmt;
use zerocopy::FromBytes;

/// A request's id. Replies name it; a FUSE_INTERRUPT names the request it interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Unique(pub u64);

/// The bytes of a READ request as the kernel sends it: what a daemon hands its successor
/// for a read() it had read and not answered, to be handled as if read again.
pub fn encode_read(caller: &Caller, fh: FileHandle, size: u32, open_flags: u32) -> Vec<u8> {
    use zerocopy::IntoBytes;
    let arg = ReadWriteIn {
        fh: fh.0,
        offset: 0,
        size,
        op_flags: 0,
        lock_owner: 0,
        flags: open_flags,
        padding: 0,
    };
    let header = InHeader {
        len: (size_of::<InHeader>() + size_of::<ReadWriteIn>()) as u32,
        opcode: opcode::READ,
        unique: caller.unique.0,
        nodeid: 0,
        uid: caller.uid,
        gid: caller.gid,
        pid: caller.tid.0,
        padding: 0,
    };
    [header.as_bytes(), arg.as_bytes()].concat()
}

impl Unique {
    /// The kernel resent this request (FUSE_NOTIFY_RESEND, Linux 6.9+): a daemon before
    /// this one read it and died without answering.
    pub fn resent(self) -> bool {
        self.0 & super::abi::FUSE_UNIQUE_RESEND != 0
    }
}

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

/// Randomized tests of the decoder (`cargo test fuzz`; PROPTEST_CASES sets the count).
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::alloc_probe::largest_during;
    use proptest::prelude::*;
    use zerocopy::IntoBytes;

    const OPCODES: [u32; 9] = [
        opcode::CUSE_INIT,
        opcode::OPEN,
        opcode::RELEASE,
        opcode::READ,
        opcode::WRITE,
        opcode::IOCTL,
        opcode::POLL,
        opcode::INTERRUPT,
        25,
    ];

    /// A request as the kernel builds one: a header, the opcode's argument, a payload
    /// whose size the argument states.
    fn well_formed() -> impl Strategy<Value = (u32, Vec<u8>)> {
        (
            prop::sample::select(&OPCODES[..]),
            any::<[u64; 6]>(),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(op, words, payload)| {
                let w = |i: usize| words[i];
                let mut body = Vec::new();
                match op {
                    opcode::WRITE => {
                        let arg = ReadWriteIn {
                            fh: w(0),
                            offset: w(1),
                            size: payload.len() as u32,
                            op_flags: 0,
                            lock_owner: w(2),
                            flags: 0,
                            padding: 0,
                        };
                        body.extend_from_slice(arg.as_bytes());
                        body.extend_from_slice(&payload);
                    }
                    opcode::IOCTL => {
                        let arg = IoctlIn {
                            fh: w(0),
                            flags: w(1) as u32,
                            cmd: (w(1) >> 32) as u32,
                            arg: w(2),
                            in_size: payload.len() as u32,
                            out_size: w(3) as u32,
                        };
                        body.extend_from_slice(arg.as_bytes());
                        body.extend_from_slice(&payload);
                    }
                    _ => {
                        // Every other argument is at most 40 bytes (READ); Unknown takes any body.
                        for x in words {
                            body.extend_from_slice(&x.to_ne_bytes());
                        }
                    }
                }
                let header = InHeader {
                    len: (size_of::<InHeader>() + body.len()) as u32,
                    opcode: op,
                    unique: w(3),
                    nodeid: 1,
                    uid: w(0) as u32,
                    gid: w(1) as u32,
                    pid: w(2) as u32,
                    padding: 0,
                };
                let mut buf = header.as_bytes().to_vec();
                buf.extend_from_slice(&body);
                (op, buf)
            })
    }

    proptest! {
        /// Any bytes at all: an error or a request that stays inside the buffer and inside
        /// `len`, and no allocation (the decoder only borrows).
        #[test]
        fn any_bytes_decode_without_panic_or_allocation(
            buf in prop::collection::vec(any::<u8>(), 0..512),
            len_in_range in any::<bool>(),
        ) {
            let mut buf = buf;
            if len_in_range && buf.len() >= 4 {
                // Make `len` plausible more often than chance would.
                let len = (buf[0] as usize % (buf.len() + 1)) as u32;
                buf[..4].copy_from_slice(&len.to_ne_bytes());
            }
            let (parsed, largest) = largest_during(|| Request::parse(&buf).map(|r| {
                let within = |d: &[u8]| d.len() <= buf.len();
                match r.op {
                    Operation::Write { arg, data } => within(data) && data.len() == arg.size as usize,
                    Operation::Ioctl { arg, data } => within(data) && data.len() == arg.in_size as usize,
                    _ => true,
                }
            }));
            prop_assert_eq!(largest, 0);
            if let Ok(consistent) = parsed {
                prop_assert!(consistent);
                prop_assert!(u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize <= buf.len());
            }
        }

        /// A well-formed request decodes to its opcode's operation with the header intact;
        /// every cut of it short of `len` is a Short error, never a shorter request.
        #[test]
        fn well_formed_requests_decode_and_every_cut_is_short((op, buf) in well_formed(), cut in any::<prop::sample::Index>()) {
            let req = Request::parse(&buf).unwrap();
            prop_assert_eq!(req.header.opcode, op);
            prop_assert_eq!(req.header.len as usize, buf.len());
            let kind = match req.op {
                Operation::CuseInit(_) => opcode::CUSE_INIT,
                Operation::Open(_) => opcode::OPEN,
                Operation::Release(_) => opcode::RELEASE,
                Operation::Read(_) => opcode::READ,
                Operation::Write { data, .. } => {
                    prop_assert_eq!(data, &buf[size_of::<InHeader>() + size_of::<ReadWriteIn>()..]);
                    opcode::WRITE
                }
                Operation::Ioctl { data, .. } => {
                    prop_assert_eq!(data, &buf[size_of::<InHeader>() + size_of::<IoctlIn>()..]);
                    opcode::IOCTL
                }
                Operation::Poll(_) => opcode::POLL,
                Operation::Interrupt(_) => opcode::INTERRUPT,
                Operation::Unknown(o) => o,
            };
            prop_assert_eq!(kind, op);
            let cut = cut.index(buf.len());
            let is_short = matches!(Request::parse(&buf[..cut]), Err(ParseError::Short { .. }));
            prop_assert!(is_short);
        }
    }
}
