//! One path of a map: its SCSI device found through sysfs, and each command sent with
//! SG_IO on its block device (the data mapped, no bounce copy) or with write() and read()
//! on its sg node. The only `unsafe` here are the ioctls: SG_IO, and sg's
//! SG_GET_SCSI_ID, SG_SET_RESERVED_SIZE and SG_GET_RESERVED_SIZE on the daemon's sg fds.

use crate::dm::DevT;
use crate::errno::Errno;
use crate::sg::abi::{
    ioctl::SG_IO, SgIoHdr64, INTERFACE_ID_V3, MAX_SENSE_LEN, SG_DXFER_FROM_DEV, SG_DXFER_NONE,
    SG_DXFER_TO_DEV, SG_FLAG_DIRECT_IO, SG_FLAG_MMAP_IO, SG_FLAG_NO_DXFER,
};
use crate::sg::header::{Completion, Direction, SenseBytes};
use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use zerocopy::IntoBytes;

/// One command for a path, in the daemon's memory.
pub struct PathCommand<'a> {
    pub cdb: &'a [u8],
    pub direction: Direction,
    /// Bytes to move. With `data` None the transfer still happens (sg's NULL dxferp:
    /// data to/from the device, not the caller).
    pub transfer_len: usize,
    /// ToDevice: the data to send; FromDevice: where data-in lands.
    pub data: Option<&'a mut [u8]>,
    pub timeout_ms: u32,
    /// sg flags passed through (queue at head/tail, direct I/O hint).
    pub flags: u32,
    /// Whose command this is (an open file of the daemon's): bounce buffers that keep
    /// data between commands are never shared between owners.
    pub owner: u64,
}

/// Why a command got no SCSI result from a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path's device answered the command with an errno: SG_IO (or sg's write())
    /// answers with one only before it issues the command.
    Refused(Errno),
    /// The daemon could not send it at all (no fd to spare, its own resources): nothing
    /// reached the path, which is not at fault.
    Local(Errno),
    /// Sent, and its result lost (sg's read() failed after write() queued it). The LU
    /// may have run it.
    Lost(Errno),
}

impl From<Errno> for PathError {
    fn from(e: Errno) -> PathError {
        PathError::Refused(e)
    }
}

/// Where a command runs: the real path devices, or a fake in tests.
pub trait PathIo: Send + Sync {
    fn execute(&self, cmd: &mut PathCommand<'_>) -> Result<Completion, PathError>;
}

/// What sysfs says about a path device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathInfo {
    pub dev: DevT,
    /// "sdb"
    pub block_name: String,
    /// "/dev/sdb"
    pub block_node: PathBuf,
    /// "/dev/sg2"
    pub sg_node: PathBuf,
    pub host: i32,
    pub channel: i32,
    pub target: i32,
    pub lun: i32,
    pub scsi_type: i32,
    pub queue_depth: i32,
    pub cmd_per_lun: i32,
    /// The SCSI host's unique_id (SCSI_IOCTL_GET_IDLUN).
    pub host_unique_id: i32,
    /// Largest transfer in bytes (queue/max_sectors_kb, what sg reports for BLKSECTGET).
    pub max_transfer: usize,
    /// Largest transfer SG_IO really accepts (queue/max_hw_sectors_kb: the block layer
    /// bounds passthrough requests by max_hw_sectors, not max_sectors).
    pub max_hw_transfer: usize,
    /// queue/max_segments (sg's SG_GET_SG_TABLESIZE).
    pub max_segments: i32,
    /// queue/io_timeout: what a command timeout of 0 means on this device.
    pub io_timeout_ms: u32,
}

fn read_trim(p: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(p)?.trim().to_string())
}

fn read_num<T: std::str::FromStr>(p: &Path) -> io::Result<T> {
    read_trim(p)?.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a number", p.display()),
        )
    })
}

impl PathInfo {
    /// Looks up block device `dev` under `sysfs` (normally "/sys").
    pub fn from_sysfs(sysfs: &Path, dev: DevT) -> io::Result<PathInfo> {
        let base = sysfs.join(format!("dev/block/{dev}"));
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("path {dev}: {e}"));
        let block_name = fs::canonicalize(&base)
            .map_err(ctx)?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let device = fs::canonicalize(base.join("device")).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("path {dev} ({block_name}) is not a SCSI device: {e}"),
            )
        })?;
        let hctl = device
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ids: Vec<i32> = hctl.split(':').filter_map(|x| x.parse().ok()).collect();
        let [host, channel, target, lun] = ids[..] else {
            return Err(io::Error::other(format!(
                "path {dev}: unexpected SCSI address '{hctl}'"
            )));
        };
        let sg = fs::read_dir(device.join("scsi_generic"))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "path {dev} ({block_name}) has no sg node (is the sg module loaded?): {e}"
                    ),
                )
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
            .ok_or_else(|| io::Error::other(format!("path {dev} ({block_name}) has no sg node")))?;
        let queue = base.join("queue");
        Ok(PathInfo {
            dev,
            block_node: PathBuf::from("/dev").join(&block_name),
            block_name,
            sg_node: PathBuf::from("/dev").join(sg),
            host,
            channel,
            target,
            lun,
            scsi_type: read_num(&device.join("type")).unwrap_or(0),
            queue_depth: read_num(&device.join("queue_depth")).unwrap_or(1),
            cmd_per_lun: read_num(&sysfs.join(format!("class/scsi_host/host{host}/cmd_per_lun")))
                .unwrap_or(1),
            host_unique_id: read_num(&sysfs.join(format!("class/scsi_host/host{host}/unique_id")))
                .unwrap_or(0),
            max_transfer: read_num::<usize>(&queue.join("max_sectors_kb")).map_err(ctx)? * 1024,
            max_hw_transfer: read_num::<usize>(&queue.join("max_hw_sectors_kb")).map_err(ctx)?
                * 1024,
            max_segments: read_num(&queue.join("max_segments")).map_err(ctx)?,
            io_timeout_ms: read_num(&queue.join("io_timeout")).unwrap_or(30_000),
        })
    }
}

/// `BLK_MIN_SG_TIMEOUT` (7 s): SG_IO on a block device raises any shorter timeout to this.
const BLOCK_MIN_TIMEOUT_MS: u32 = 7000;

/// How a command reached the path's device, for `mpath-sgd status` and the lab.
#[derive(Default)]
pub struct RouteStats {
    /// Commands issued on the block device (the caller's data mapped, no bounce copy).
    pub block: AtomicU64,
    /// Commands issued on the sg node: no data buffer, a timeout under 7 s, or the block
    /// device refused to map the buffer.
    pub sg: AtomicU64,
}

/// SG_IO on one path. Commands go to the path's block device, where the block layer maps
/// the daemon's (page-aligned) buffer for the transfer instead of bouncing it through a
/// kernel buffer as sg does; SG_IO on a block device applies the kernel's command filter
/// (scsi_cmd_allowed) unless the daemon holds CAP_SYS_RAWIO, which the service unit
/// grants: the daemon has already decided, by sg's rules, what the caller may send.
/// The sg node takes what the block device cannot do as sg would, and what it does no
/// better:
/// - a command without data (cheaper on the sg node);
/// - a transfer without a data buffer (sg's NULL dxferp or mmap-ed I/O);
/// - a timeout under 7 s (block-device SG_IO raises it to BLK_MIN_SG_TIMEOUT);
/// - a buffer the block device refuses to map (EINVAL, e.g. more segments than the
///   queue takes; ENOMEM), or EPERM from its command filter (daemon without
///   CAP_SYS_RAWIO): each refused before the command is issued, so sending it again on
///   the sg node is safe.
pub struct ScsiPath {
    /// The block device, opened read-only: SG_IO does not need more with CAP_SYS_RAWIO,
    /// and closing a block device opened for writing makes udev re-probe the disk (its
    /// inotify watch sees IN_CLOSE_WRITE). Blocking, so that SG_IO waits for error
    /// handling to finish, as sg's does. SG_IO on it is reentrant: one fd for all.
    block: Option<File>,
    sg_node: PathBuf,
    /// Idle sg fds (at most `MAX_IDLE_SG_FDS`): each command in flight on the sg node
    /// borrows an fd of its own, so that read() returns that command's result and no
    /// other. How many are in flight at once is bounded by the node's threads, which
    /// wait for them.
    sg_idle: Mutex<Vec<SgFd>>,
    /// The path's SCSI address (host, channel, target, lun): what its sg node must be.
    address: (i32, i32, i32, i32),
    /// What a timeout of 0 means on the sg node: the device's own (queue/io_timeout).
    default_timeout_ms: u32,
    pub routes: RouteStats,
}

/// An sg fd of the daemon's, one command at a time.
struct SgFd {
    file: File,
    reserve: ReserveContents,
}

/// What the daemon asks for an sg fd's reserve buffer: the smallest sg keeps (a page).
const SG_RESERVE: i32 = 4096;

/// Idle sg fds kept per path; more are closed when their command ends.
const MAX_IDLE_SG_FDS: usize = 4;

/// Whose data an sg fd's reserve buffer may hold. sg lends the reserve to a command whose
/// transfer fits in it (sg_link_reserve) and never clears it between commands; it copies
/// the whole bounce buffer back to a read whatever the residual count, and sends it whole
/// for a write without a caller buffer. A larger command gets fresh zeroed pages
/// (sg_build_indirect), a command without data none. So before a command of another
/// owner that fits in the reserve, the reserve is reallocated, which zeroes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ReserveContents {
    /// The reserve's size as sg reports it (a page of the running kernel at least).
    len: usize,
    /// The owner of the last command that used it, if any.
    owner: Option<u64>,
}

impl ReserveContents {
    fn fresh(len: usize) -> ReserveContents {
        ReserveContents { len, owner: None }
    }

    fn used_by(len: usize, transfer_len: usize) -> bool {
        transfer_len > 0 && transfer_len <= len
    }

    /// Whether a command of `owner` moving `transfer_len` bytes must find the reserve
    /// scrubbed first.
    fn needs_scrub(&self, owner: u64, transfer_len: usize) -> bool {
        Self::used_by(self.len, transfer_len) && self.owner.is_some_and(|o| o != owner)
    }

    /// The command is about to run (after a scrub, if one was needed).
    fn lend(&mut self, owner: u64, transfer_len: usize) {
        if Self::used_by(self.len, transfer_len) {
            self.owner = Some(owner);
        }
    }
}

impl SgFd {
    /// Opens the path's sg node and checks that it is still this path's device (sg
    /// minors are reused once a device goes away).
    fn open(node: &Path, expect: (i32, i32, i32, i32)) -> Result<SgFd, Errno> {
        // O_NONBLOCK for the open (sg_open would wait for an exclusive holder), then
        // blocking, so that read() waits for the completion.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(node)
            .map_err(|e| Errno::from_io(&e))?;
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        let id = scsi_id(&file)?;
        if (id.host_no, id.channel, id.scsi_id, id.lun) != expect {
            tracing::warn!(
                "{} is now {}:{}:{}:{}, not this path's device",
                node.display(),
                id.host_no,
                id.channel,
                id.scsi_id,
                id.lun
            );
            return Err(Errno::ENODEV);
        }
        // sg_open gave it a reserve of up to 32 KiB (sg_big_buff) with nobody's data in
        // it yet; one page is enough for the small commands that use it.
        set_reserved_size(&file, SG_RESERVE)?;
        let len = reserved_size(&file)?;
        Ok(SgFd {
            file,
            reserve: ReserveContents::fresh(len),
        })
    }

    /// Ready for a command of `owner` moving `len` bytes.
    fn prepare(&mut self, owner: u64, len: usize) -> Result<(), Errno> {
        if self.reserve.needs_scrub(owner, len) {
            // Any size other than the current one reallocates the reserve (zeroed
            // pages, sg_remove_scat + sg_build_reserve); sg keeps at least a page, so 0
            // always differs.
            set_reserved_size(&self.file, 0)?;
            self.reserve = ReserveContents::fresh(reserved_size(&self.file)?);
        }
        self.reserve.lend(owner, len);
        Ok(())
    }
}

fn reserved_size(file: &File) -> Result<usize, Errno> {
    let mut size: i32 = 0;
    // SAFETY: SG_GET_RESERVED_SIZE writes one int at the pointer, which points at `size`,
    // alive for the synchronous call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            crate::sg::abi::ioctl::SG_GET_RESERVED_SIZE as _,
            &mut size as *mut i32,
        )
    };
    if rc < 0 {
        return Err(Errno::from_io(&io::Error::last_os_error()));
    }
    Ok(size.max(0) as usize)
}

fn set_reserved_size(file: &File, size: i32) -> Result<(), Errno> {
    // SAFETY: SG_SET_RESERVED_SIZE reads one int from the pointer, which points at
    // `size`, alive for the synchronous call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            crate::sg::abi::ioctl::SG_SET_RESERVED_SIZE as _,
            &size as *const i32,
        )
    };
    if rc < 0 {
        return Err(Errno::from_io(&io::Error::last_os_error()));
    }
    Ok(())
}

fn scsi_id(file: &File) -> Result<crate::sg::abi::SgScsiId, Errno> {
    let mut id = crate::sg::abi::SgScsiId::default();
    // SAFETY: SG_GET_SCSI_ID writes one sg_scsi_id_t (32 bytes, the size of `id`, a
    // repr(C) mirror of it) at the pointer, alive for the synchronous call.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            crate::sg::abi::ioctl::SG_GET_SCSI_ID as _,
            &mut id as *mut crate::sg::abi::SgScsiId,
        )
    };
    if rc < 0 {
        return Err(Errno::from_io(&io::Error::last_os_error()));
    }
    Ok(id)
}

impl ScsiPath {
    /// Opens the path's devices now, so that a failover to this path does not pay for an
    /// open in the middle of a command, and a path whose devices cannot be opened is found
    /// out before it is needed. The block device is optional (the sg node takes
    /// everything without it); the sg node is not.
    pub fn open(info: &PathInfo) -> io::Result<ScsiPath> {
        let block = match open_block(&info.block_node, info.dev) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(
                    path = %info.dev,
                    "block device {} not usable, every command goes to {}: {e}",
                    info.block_node.display(),
                    info.sg_node.display()
                );
                None
            }
        };
        let address = (info.host, info.channel, info.target, info.lun);
        let fd = SgFd::open(&info.sg_node, address)
            .map_err(|e| io::Error::other(format!("open {}: {e}", info.sg_node.display())))?;
        Ok(ScsiPath {
            block,
            sg_node: info.sg_node.clone(),
            address,
            sg_idle: Mutex::new(vec![fd]),
            default_timeout_ms: info.io_timeout_ms,
            routes: RouteStats::default(),
        })
    }

    /// An idle sg fd, one whose reserve holds the owner's data or nobody's if there is
    /// one (no scrub needed).
    fn take_sg_fd(&self, owner: u64) -> Result<SgFd, Errno> {
        {
            let mut idle = self.sg_idle.lock();
            if let Some(i) = idle
                .iter()
                .position(|f| f.reserve.owner.is_none_or(|o| o == owner))
            {
                return Ok(idle.swap_remove(i));
            }
            if let Some(f) = idle.pop() {
                return Ok(f);
            }
        }
        SgFd::open(&self.sg_node, self.address)
    }

    fn put_sg_fd(&self, fd: SgFd) {
        let mut idle = self.sg_idle.lock();
        if idle.len() < MAX_IDLE_SG_FDS {
            idle.push(fd);
        }
    }

    /// The command on the sg node, through sg's write() and read() rather than SG_IO: a
    /// signal (the daemon's own at shutdown, a stop or freeze of the process) ends a
    /// read() that is simply asked again, where it would end SG_IO with the command
    /// orphaned, its result lost, or restart it and send the command twice.
    fn on_sg(&self, cmd: &mut PathCommand<'_>) -> Result<Completion, PathError> {
        let mut fd = match self.take_sg_fd(cmd.owner) {
            Ok(fd) => fd,
            Err(e) => return self.sg_unavailable(cmd, e),
        };
        if let Err(e) = fd.prepare(cmd.owner, cmd.transfer_len) {
            return self.sg_unavailable(cmd, e);
        }
        self.routes.sg.fetch_add(1, Ordering::Relaxed);
        match sg_write_read(&fd.file, cmd, cmd.timeout_ms) {
            Ok(c) => {
                self.put_sg_fd(fd);
                Ok(c)
            }
            // Refused at write(): nothing is queued on the fd. If its device is gone
            // (ENODEV: sg's device detaching), it and the idle ones, all on that device,
            // answer nothing else again: closed, so that the sg device and its minor are
            // released, and the next open is checked against the path's SCSI address.
            Err(SgStage::Write(e)) => {
                if e == Errno::ENODEV {
                    self.sg_idle.lock().clear();
                } else {
                    self.put_sg_fd(fd);
                }
                Err(PathError::Refused(e))
            }
            // read() failed after the command was sent: the command ran and its result
            // could not be copied, or (sg_check_file_access) the fd still holds it, and a
            // later read() on it could return that result for another command. Closed.
            Err(SgStage::Read(e)) => Err(PathError::Lost(e)),
        }
    }

    /// No sg fd could be had for the command (the daemon's own limits, an exclusive
    /// holder, the node reused): the block device takes it if it can, else nothing was
    /// sent and the path is not at fault.
    fn sg_unavailable(&self, cmd: &mut PathCommand<'_>, e: Errno) -> Result<Completion, PathError> {
        // The node gone, or now another device's: the path's device is gone.
        if e == Errno::ENODEV || e == Errno::ENXIO || e == Errno::ENOENT {
            return Err(PathError::Refused(e));
        }
        match &self.block {
            Some(block) if cmd.data.is_some() || cmd.direction == Direction::None => {
                tracing::debug!(errno = %e, "no sg fd; sending the command on the block device");
                self.on_block(block, cmd)
            }
            _ => Err(PathError::Local(e)),
        }
    }

    fn on_block(&self, block: &File, cmd: &mut PathCommand<'_>) -> Result<Completion, PathError> {
        // Timeout 0 means the device's own timeout on sg (the request keeps rq->timeout 0
        // and the block layer applies the queue's); block-device SG_IO would take 60 s.
        let timeout = match cmd.timeout_ms {
            0 => self.default_timeout_ms.max(BLOCK_MIN_TIMEOUT_MS),
            t => t,
        };
        self.routes.block.fetch_add(1, Ordering::Relaxed);
        sg_ioctl(block, cmd, timeout).map_err(PathError::Refused)
    }
}

/// Opens a path's block device and checks that it is the device the map names (a name
/// can be reused by another disk between the sysfs lookup and the open).
fn open_block(node: &Path, dev: DevT) -> io::Result<File> {
    // Without O_NONBLOCK: it would change nothing for a disk (sd_open and SG_IO wait for
    // error handling on the host either way; only a removable device without medium
    // opens differently).
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(node)?;
    let st = nix::sys::stat::fstat(&f).map_err(io::Error::from)?;
    let rdev = (
        nix::sys::stat::major(st.st_rdev) as u32,
        nix::sys::stat::minor(st.st_rdev) as u32,
    );
    if st.st_mode & libc::S_IFMT != libc::S_IFBLK || rdev != (dev.major, dev.minor) {
        return Err(io::Error::other(format!(
            "{} is not block device {dev}",
            node.display()
        )));
    }
    Ok(f)
}

/// The sg_io_hdr for `cmd`, its sense landing in `sense`.
fn header(
    cmd: &mut PathCommand<'_>,
    timeout_ms: u32,
    sense: &mut [u8; MAX_SENSE_LEN],
) -> SgIoHdr64 {
    let (dxferp, dir) = match (&mut cmd.data, cmd.direction) {
        (_, Direction::None) => (0u64, SG_DXFER_NONE),
        (Some(buf), Direction::ToDevice) => (buf.as_mut_ptr() as u64, SG_DXFER_TO_DEV),
        (Some(buf), Direction::FromDevice) => (buf.as_mut_ptr() as u64, SG_DXFER_FROM_DEV),
        (None, Direction::ToDevice) => (0, SG_DXFER_TO_DEV),
        (None, Direction::FromDevice) => (0, SG_DXFER_FROM_DEV),
    };
    if let Some(buf) = &cmd.data {
        assert!(
            buf.len() >= cmd.transfer_len,
            "data buffer shorter than the transfer"
        );
    }
    SgIoHdr64 {
        interface_id: INTERFACE_ID_V3,
        dxfer_direction: dir,
        cmd_len: cmd.cdb.len() as u8,
        mx_sb_len: MAX_SENSE_LEN as u8,
        dxfer_len: if dir == SG_DXFER_NONE {
            0
        } else {
            cmd.transfer_len as u32
        },
        dxferp,
        cmdp: cmd.cdb.as_ptr() as u64,
        sbp: sense.as_mut_ptr() as u64,
        timeout: timeout_ms,
        // The daemon's buffer stands for the caller's: no mmap-ed transfer on the path,
        // and no NO_DXFER (a no-op in mainline sg; where honoured, the daemon's buffer
        // would go back to the caller unfilled).
        flags: cmd.flags & !(SG_FLAG_MMAP_IO | SG_FLAG_NO_DXFER),
        ..Default::default()
    }
}

fn completion(hdr: &SgIoHdr64, sense: &[u8; MAX_SENSE_LEN]) -> Completion {
    let sense_len = usize::from(hdr.out.sb_len_wr).min(MAX_SENSE_LEN);
    Completion {
        status: hdr.out.status,
        host_status: hdr.out.host_status,
        driver_status: hdr.out.driver_status,
        resid: hdr.out.resid,
        duration_ms: hdr.out.duration,
        sense: SenseBytes::from_slice(&sense[..sense_len]),
    }
}

/// One SG_IO ioctl on `fd` (the block device: its wait is not interruptible).
fn sg_ioctl(fd: &File, cmd: &mut PathCommand<'_>, timeout_ms: u32) -> Result<Completion, Errno> {
    let mut sense = [0u8; MAX_SENSE_LEN];
    let mut hdr = header(cmd, timeout_ms, &mut sense);
    // SAFETY: SG_IO reads `hdr` and writes its output fields; it reads cmd_len bytes at
    // cmdp (the CDB slice), writes at most mx_sb_len (96) bytes at sbp (`sense`, 96
    // bytes), and reads or writes dxfer_len bytes at dxferp, which is either NULL or a
    // buffer of at least transfer_len bytes (asserted in `header`), exclusively borrowed
    // for the call. All of them outlive the synchronous ioctl.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SG_IO as _, &mut hdr as *mut SgIoHdr64) };
    if rc < 0 {
        return Err(Errno::from_io(&io::Error::last_os_error()));
    }
    Ok(completion(&hdr, &sense))
}

/// One command through sg's asynchronous interface on `fd` (one of the daemon's sg fds,
/// blocking, with no other command on it): write() queues it (sg reads the header, CDB
/// and data-out then), read() waits for it (sg writes sense and data-in then), asked
/// again if a signal ends the wait.
fn sg_write_read(
    fd: &File,
    cmd: &mut PathCommand<'_>,
    timeout_ms: u32,
) -> Result<Completion, SgStage> {
    let mut sense = [0u8; MAX_SENSE_LEN];
    let mut hdr = header(cmd, timeout_ms, &mut sense);
    // Always through sg's bounce buffer (the reserve for a small transfer): direct I/O,
    // where sg allows it, would leave the reserve's contents unaccounted for.
    hdr.flags &= !SG_FLAG_DIRECT_IO;
    // sg reads the pointers in `hdr` (CDB, sense, data: see `sg_ioctl`) during write()
    // and read(); all of them outlive both calls, and `cmd.data` stays borrowed here.
    loop {
        match nix::unistd::write(fd, hdr.as_bytes()) {
            Ok(n) if n == size_of::<SgIoHdr64>() => break,
            Ok(_) => return Err(SgStage::Write(Errno::EIO)),
            // sg's write() does not sleep interruptibly (its wait for error handling
            // is not), and it refuses before it queues anything: asking again after an
            // EINTR still sends the command once.
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(SgStage::Write(e.into())),
        }
    }
    loop {
        match nix::unistd::read(fd, hdr.as_mut_bytes()) {
            Ok(n) if n == size_of::<SgIoHdr64>() => break,
            Ok(_) => return Err(SgStage::Read(Errno::EIO)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(SgStage::Read(e.into())),
        }
    }
    Ok(completion(&hdr, &sense))
}

/// Where sg's asynchronous interface refused a command.
enum SgStage {
    /// Nothing was queued.
    Write(Errno),
    /// The command was queued; the fd may still hold it.
    Read(Errno),
}

impl PathIo for ScsiPath {
    fn execute(&self, cmd: &mut PathCommand<'_>) -> Result<Completion, PathError> {
        // Without data the block device has nothing to save and its SG_IO path is the
        // longer one (sd_ioctl's checks, request mapping): measured in the lab, a TEST
        // UNIT READY between two processes takes 86 us there, 57 us on the sg node.
        let needs_sg = cmd.direction == Direction::None
            || cmd.data.is_none()
            || (cmd.timeout_ms != 0 && cmd.timeout_ms < BLOCK_MIN_TIMEOUT_MS);
        let Some(block) = self.block.as_ref().filter(|_| !needs_sg) else {
            return self.on_sg(cmd);
        };
        match self.on_block(block, cmd) {
            Err(PathError::Refused(e))
                if e == Errno::EINVAL || e == Errno::ENOMEM || e == Errno::EPERM =>
            {
                tracing::debug!(errno = %e, "block device refused the command; sending it on the sg node");
                self.routes.block.fetch_sub(1, Ordering::Relaxed);
                self.on_sg(cmd)
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReserveContents;

    const A: u64 = 1;
    const B: u64 = 2;

    /// Runs commands (owner, bytes) on one fd; returns the owners whose command found
    /// the reserve scrubbed first.
    fn scrubs(page: usize, commands: &[(u64, usize)]) -> Vec<u64> {
        let mut r = ReserveContents::fresh(page);
        let mut scrubbed = vec![];
        for &(owner, len) in commands {
            if r.needs_scrub(owner, len) {
                r = ReserveContents::fresh(page);
                scrubbed.push(owner);
            }
            r.lend(owner, len);
        }
        scrubbed
    }

    #[test]
    fn the_reserve_is_scrubbed_before_another_owner_uses_it() {
        assert_eq!(
            scrubs(4096, &[(A, 512), (A, 4096)]),
            [0u64; 0],
            "same owner"
        );
        assert_eq!(scrubs(4096, &[(A, 512), (B, 512)]), [B]);
        assert_eq!(scrubs(4096, &[(A, 4096), (B, 1)]), [B]);
        assert_eq!(scrubs(4096, &[(B, 512), (A, 512), (B, 512)]), [A, B]);
    }

    #[test]
    fn commands_that_do_not_use_the_reserve_do_not_take_it_over() {
        // B's commands without data or larger than the reserve leave A's bytes in it:
        // B's next small command must still find it scrubbed.
        assert_eq!(scrubs(4096, &[(A, 512), (B, 0), (B, 512)]), [B]);
        assert_eq!(scrubs(4096, &[(A, 512), (B, 8192), (B, 512)]), [B]);
        // Nor does a large command need a scrub.
        assert_eq!(scrubs(4096, &[(A, 512), (B, 8192)]), [0u64; 0]);
    }

    #[test]
    fn the_reserve_is_as_large_as_sg_says() {
        // 64 KiB pages (arm64, ppc64le): the reserve is 64 KiB, and 8 KiB uses it.
        assert_eq!(scrubs(65536, &[(A, 8192), (B, 8192)]), [B]);
        assert_eq!(scrubs(4096, &[(A, 8192), (B, 8192)]), [0u64; 0]);
    }
}
