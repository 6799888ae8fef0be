//! The sg driver's user ABI: `struct sg_io_hdr` (v3) in the native x86_64 and the 32-bit
//! compat layouts, `sg_iovec`, `sg_scsi_id`, and the ioctl numbers.
//!
//! Mirrors `include/scsi/sg.h` and the compat structs in `drivers/scsi/sg.c` /
//! `block/scsi_ioctl.c` (`struct compat_sg_io_hdr`). Sizes pinned below.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `interface_id` of a v3 header ('S'); a v4 header (bsg) says 'Q'.
pub const INTERFACE_ID_V3: i32 = b'S' as i32;

pub const SG_DXFER_NONE: i32 = -1;
pub const SG_DXFER_TO_DEV: i32 = -2;
pub const SG_DXFER_FROM_DEV: i32 = -3;
pub const SG_DXFER_TO_FROM_DEV: i32 = -4;
pub const SG_DXFER_UNKNOWN: i32 = -5;

pub const SG_FLAG_DIRECT_IO: u32 = 1;
pub const SG_FLAG_MMAP_IO: u32 = 4;
pub const SG_FLAG_Q_AT_TAIL: u32 = 0x10;
pub const SG_FLAG_Q_AT_HEAD: u32 = 0x20;
pub const SG_FLAG_NO_DXFER: u32 = 0x10000;

pub const SG_INFO_CHECK: u32 = 0x1;
/// `driver_status` bit saying the sense buffer holds data.
pub const DRIVER_SENSE: u16 = 0x08;

/// `SG_MAX_CDB_SIZE`
pub const MAX_CDB_LEN: u8 = 252;
/// `SCSI_SENSE_BUFFERSIZE`: sg never copies more sense than this.
pub const MAX_SENSE_LEN: usize = 96;
/// `UIO_MAXIOV`
pub const MAX_IOVEC_COUNT: u16 = 1024;
/// sg refuses transfers of 256 MiB or more (`SZ_256M`) with EINVAL.
pub const MAX_DXFER_LEN: u32 = 256 << 20;
/// `SG_MAX_QUEUE`: requests outstanding per open file.
pub const SG_MAX_QUEUE: usize = 16;
/// `sg_version_num` of Linux 4.x-6.x sg.
pub const SG_VERSION_NUM: i32 = 30536;
/// `SG_DEFAULT_TIMEOUT_USER`: 60 s in USER_HZ (100).
pub const SG_DEFAULT_TIMEOUT_USER: i32 = 60 * 100;
/// sg's default reserved buffer (`def_reserved_size`, 32 KiB).
pub const SG_DEF_RESERVED_SIZE: i32 = 32 * 1024;

/// ioctl numbers (`include/scsi/sg.h`, `include/scsi/scsi_ioctl.h`, `include/uapi/linux/fs.h`).
pub mod ioctl {
    pub const SG_SET_TIMEOUT: u32 = 0x2201;
    pub const SG_GET_TIMEOUT: u32 = 0x2202;
    pub const SG_EMULATED_HOST: u32 = 0x2203;
    pub const SG_SET_TRANSFORM: u32 = 0x2204;
    pub const SG_GET_TRANSFORM: u32 = 0x2205;
    pub const SG_GET_COMMAND_Q: u32 = 0x2270;
    pub const SG_SET_COMMAND_Q: u32 = 0x2271;
    pub const SG_GET_RESERVED_SIZE: u32 = 0x2272;
    pub const SG_SET_RESERVED_SIZE: u32 = 0x2275;
    pub const SG_GET_SCSI_ID: u32 = 0x2276;
    pub const SG_SET_FORCE_LOW_DMA: u32 = 0x2279;
    pub const SG_GET_LOW_DMA: u32 = 0x227a;
    pub const SG_SET_FORCE_PACK_ID: u32 = 0x227b;
    pub const SG_GET_PACK_ID: u32 = 0x227c;
    pub const SG_GET_NUM_WAITING: u32 = 0x227d;
    pub const SG_SET_DEBUG: u32 = 0x227e;
    pub const SG_GET_SG_TABLESIZE: u32 = 0x227f;
    pub const SG_GET_VERSION_NUM: u32 = 0x2282;
    pub const SG_NEXT_CMD_LEN: u32 = 0x2283;
    pub const SG_SCSI_RESET: u32 = 0x2284;
    pub const SG_IO: u32 = 0x2285;
    pub const SG_GET_REQUEST_TABLE: u32 = 0x2286;
    pub const SG_SET_KEEP_ORPHAN: u32 = 0x2287;
    pub const SG_GET_KEEP_ORPHAN: u32 = 0x2288;
    pub const SG_GET_ACCESS_COUNT: u32 = 0x2289;
    pub const SCSI_IOCTL_GET_IDLUN: u32 = 0x5382;
    pub const SCSI_IOCTL_GET_BUS_NUMBER: u32 = 0x5386;
    pub const BLKSECTGET: u32 = 0x1267;
}

/// `struct sg_io_hdr` on x86_64 (88 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SgIoHdr64 {
    pub interface_id: i32,
    pub dxfer_direction: i32,
    pub cmd_len: u8,
    pub mx_sb_len: u8,
    pub iovec_count: u16,
    pub dxfer_len: u32,
    pub dxferp: u64,
    pub cmdp: u64,
    pub sbp: u64,
    pub timeout: u32,
    pub flags: u32,
    pub pack_id: i32,
    /// NOTE: implicit padding in C, before the 8-byte aligned `usr_ptr`.
    pub _pad0: u32,
    pub usr_ptr: u64,
    pub out: SgIoOutput,
    /// NOTE: implicit tail padding in C.
    pub _pad1: u32,
}

/// `struct compat_sg_io_hdr` (64 bytes): pointers are 32-bit.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SgIoHdr32 {
    pub interface_id: i32,
    pub dxfer_direction: i32,
    pub cmd_len: u8,
    pub mx_sb_len: u8,
    pub iovec_count: u16,
    pub dxfer_len: u32,
    pub dxferp: u32,
    pub cmdp: u32,
    pub sbp: u32,
    pub timeout: u32,
    pub flags: u32,
    pub pack_id: i32,
    pub usr_ptr: u32,
    pub out: SgIoOutput,
}

/// The fields SG_IO writes back (status .. info), the same 20 bytes in both layouts.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SgIoOutput {
    pub status: u8,
    pub masked_status: u8,
    pub msg_status: u8,
    pub sb_len_wr: u8,
    pub host_status: u16,
    pub driver_status: u16,
    pub resid: i32,
    pub duration: u32,
    pub info: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SgIovec64 {
    pub base: u64,
    pub len: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SgIovec32 {
    pub base: u32,
    pub len: u32,
}

/// `sg_scsi_id_t` (SG_GET_SCSI_ID), the same in both layouts.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct SgScsiId {
    pub host_no: i32,
    pub channel: i32,
    pub scsi_id: i32,
    pub lun: i32,
    pub scsi_type: i32,
    pub h_cmd_per_lun: i16,
    pub d_queue_depth: i16,
    pub unused: [i32; 2],
}

/// SCSI_IOCTL_GET_IDLUN's `struct scsi_idlun`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ScsiIdlun {
    pub dev_id: i32,
    pub host_unique_id: i32,
}

const _: () = assert!(size_of::<SgIoHdr64>() == 88);
const _: () = assert!(size_of::<SgIoHdr32>() == 64);
const _: () = assert!(size_of::<SgIoOutput>() == 20);
const _: () = assert!(std::mem::offset_of!(SgIoHdr64, out) == 64);
const _: () = assert!(std::mem::offset_of!(SgIoHdr32, out) == 44);
const _: () = assert!(std::mem::offset_of!(SgIoHdr64, usr_ptr) == 56);
const _: () = assert!(std::mem::offset_of!(SgIoHdr32, usr_ptr) == 40);
const _: () = assert!(size_of::<SgIovec64>() == 16);
const _: () = assert!(size_of::<SgIovec32>() == 8);
const _: () = assert!(size_of::<SgScsiId>() == 32);
const _: () = assert!(size_of::<ScsiIdlun>() == 8);
