//! The FUSE/CUSE kernel ABI, as far as a CUSE server sees it.
//!
//! Mirrors `include/uapi/linux/fuse.h` (protocol 7.x; the fields used here are unchanged
//! from 7.11 to 7.38) and `fs/fuse/cuse.c`. Structs that the kernel sends derive `FromBytes`,
//! those the server sends derive `IntoBytes`; every size is pinned by a compile-time assert.
//! No `unsafe` here: byte views go through zerocopy.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const FUSE_KERNEL_VERSION: u32 = 7;

/// Opcodes a CUSE server can receive (`enum fuse_opcode`).
pub mod opcode {
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const RELEASE: u32 = 18;
    pub const INTERRUPT: u32 = 36;
    pub const IOCTL: u32 = 39;
    pub const POLL: u32 = 40;
    pub const CUSE_INIT: u32 = 4096;
}

/// `cuse_init_out.flags`: let the server name the caller's memory for every ioctl.
pub const CUSE_UNRESTRICTED_IOCTL: u32 = 1 << 0;

/// `fuse_ioctl_in.flags` / `fuse_ioctl_out.flags`.
pub mod ioctl_flags {
    /// The caller is a 32-bit process on a 64-bit kernel (compat_ioctl).
    pub const COMPAT: u32 = 1 << 0;
    pub const UNRESTRICTED: u32 = 1 << 1;
    /// Reply flag: fetch the named iovecs and send the request again.
    pub const RETRY: u32 = 1 << 2;
    pub const IOCTL_32BIT: u32 = 1 << 3;
    pub const COMPAT_X32: u32 = 1 << 5;
}

/// At most this many iovecs (in + out) in one RETRY reply (`FUSE_IOCTL_MAX_IOV`).
pub const FUSE_IOCTL_MAX_IOV: usize = 256;
/// Bytes the kernel copies per direction per ioctl round: `fc->max_pages` (32 for CUSE,
/// which cannot raise it) pages of 4 KiB. More gives the caller ENOMEM.
pub const FUSE_IOCTL_MAX_BYTES: usize = 32 * 4096;

/// `FUSE_NOTIFY_POLL`, sent as the (positive) error of an unsolicited message.
pub const FUSE_NOTIFY_POLL: i32 = 1;
/// `FUSE_NOTIFY_RESEND` (Linux 6.9+): the kernel queues again every request the device's
/// daemon has read and not answered, their `unique` marked with FUSE_UNIQUE_RESEND.
/// Older kernels answer the notification EINVAL.
pub const FUSE_NOTIFY_RESEND: i32 = 7;
pub const FUSE_UNIQUE_RESEND: u64 = 1 << 63;

#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    /// The calling thread's id, in the pid namespace of whoever opened /dev/cuse.
    pub pid: u32,
    /// NOTE: `u16 total_extlen + u16 padding` since 7.38 (Linux 6.2); `u32 padding` before.
    /// CUSE never sends extensions.
    pub padding: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct OutHeader {
    pub len: u32,
    /// 0, or a negated errno in (-512, 0); positive values are notification codes.
    pub error: i32,
    pub unique: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CuseInitIn {
    pub major: u32,
    pub minor: u32,
    pub unused: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CuseInitOut {
    pub major: u32,
    pub minor: u32,
    pub unused: u32,
    pub flags: u32,
    pub max_read: u32,
    pub max_write: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub spare: [u32; 10],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct OpenIn {
    /// The open(2) flags, less O_CREAT, O_EXCL, O_NOCTTY and O_TRUNC.
    pub flags: u32,
    pub open_flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct OpenOut {
    pub fh: u64,
    pub open_flags: u32,
    pub padding: u32,
}

/// `FOPEN_DIRECT_IO`: read()/write() sizes reach the server unchanged (no page cache).
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
/// `FOPEN_NONSEEKABLE`: like sg, the node has no file position.
pub const FOPEN_NONSEEKABLE: u32 = 1 << 2;

#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ReleaseIn {
    pub fh: u64,
    pub flags: u32,
    pub release_flags: u32,
    pub lock_owner: u64,
}

/// `fuse_read_in` (READ) and the first 40 bytes of `fuse_write_in` have the same layout.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ReadWriteIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    /// `read_flags` / `write_flags`
    pub op_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct WriteOut {
    pub size: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IoctlIn {
    pub fh: u64,
    pub flags: u32,
    pub cmd: u32,
    pub arg: u64,
    pub in_size: u32,
    pub out_size: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IoctlOut {
    pub result: i32,
    pub flags: u32,
    pub in_iovs: u32,
    pub out_iovs: u32,
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct IoctlIovec {
    pub base: u64,
    pub len: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PollIn {
    pub fh: u64,
    pub kh: u64,
    pub flags: u32,
    pub events: u32,
}

/// `fuse_poll_in.flags`: the kernel wants a FUSE_NOTIFY_POLL for `kh` on the next change.
pub const FUSE_POLL_SCHEDULE_NOTIFY: u32 = 1 << 0;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PollOut {
    pub revents: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct NotifyPollWakeup {
    pub kh: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct InterruptIn {
    pub unique: u64,
}

const _: () = assert!(size_of::<InHeader>() == 40);
const _: () = assert!(size_of::<OutHeader>() == 16);
const _: () = assert!(size_of::<CuseInitIn>() == 16);
const _: () = assert!(size_of::<CuseInitOut>() == 72);
const _: () = assert!(size_of::<OpenIn>() == 8);
const _: () = assert!(size_of::<OpenOut>() == 16);
const _: () = assert!(size_of::<ReleaseIn>() == 24);
const _: () = assert!(size_of::<ReadWriteIn>() == 40);
const _: () = assert!(size_of::<WriteOut>() == 8);
const _: () = assert!(size_of::<IoctlIn>() == 32);
const _: () = assert!(size_of::<IoctlOut>() == 16);
const _: () = assert!(size_of::<IoctlIovec>() == 16);
const _: () = assert!(size_of::<PollIn>() == 24);
const _: () = assert!(size_of::<PollOut>() == 8);
const _: () = assert!(size_of::<NotifyPollWakeup>() == 8);
