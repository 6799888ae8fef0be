//! One path of a map: its SCSI device found through sysfs, and SG_IO issued on its sg node
//! (sg nodes do not filter commands the way block devices do). The only `unsafe` here is
//! the SG_IO ioctl itself.

use crate::dm::DevT;
use crate::errno::Errno;
use crate::sg::abi::{
    ioctl::SG_IO, SgIoHdr64, INTERFACE_ID_V3, MAX_SENSE_LEN, SG_DXFER_FROM_DEV, SG_DXFER_NONE,
    SG_DXFER_TO_DEV, SG_FLAG_MMAP_IO,
};
use crate::sg::header::{Completion, Direction};
use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
}

/// Where a command runs: the real sg node, or a fake in tests.
pub trait PathIo: Send + Sync {
    fn execute(&self, cmd: &mut PathCommand<'_>) -> Result<Completion, Errno>;
}

/// What sysfs says about a path device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathInfo {
    /// "sdb"
    pub block_name: String,
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
        })
    }
}

/// SG_IO on a path's sg node. Keeps a few open fds: sg allows 16 outstanding commands per
/// fd (more gets EDOM), so each in-flight command borrows an fd of its own.
pub struct SgPath {
    node: PathBuf,
    idle: Mutex<Vec<File>>,
}

impl SgPath {
    pub fn new(node: PathBuf) -> SgPath {
        SgPath {
            node,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Opens the first fd now, so that a failover to this path does not pay for sg's open
    /// (reserve buffer allocation) in the middle of a command, and a path whose sg node
    /// cannot be opened is found out before it is needed.
    pub fn open(node: PathBuf) -> std::io::Result<SgPath> {
        let path = SgPath::new(node);
        let fd = path
            .take_fd()
            .map_err(|e| io::Error::other(format!("open {}: {e}", path.node.display())))?;
        path.idle.lock().push(fd);
        Ok(path)
    }

    fn take_fd(&self) -> Result<File, Errno> {
        if let Some(f) = self.idle.lock().pop() {
            return Ok(f);
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&self.node)
            .map_err(|e| Errno::from_io(&e))
    }
}

impl PathIo for SgPath {
    fn execute(&self, cmd: &mut PathCommand<'_>) -> Result<Completion, Errno> {
        let fd = self.take_fd()?;
        let mut sense = [0u8; MAX_SENSE_LEN];
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
        let mut hdr = SgIoHdr64 {
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
            timeout: cmd.timeout_ms,
            flags: cmd.flags & !SG_FLAG_MMAP_IO,
            ..Default::default()
        };
        // SAFETY: SG_IO reads `hdr` and writes its output fields; it reads cmd_len bytes at
        // cmdp (the CDB slice), writes at most mx_sb_len (96) bytes at sbp (`sense`, 96
        // bytes), and reads or writes dxfer_len bytes at dxferp, which is either NULL or a
        // buffer of at least transfer_len bytes (asserted above), exclusively borrowed for
        // the call. All of them outlive the synchronous ioctl.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SG_IO as _, &mut hdr as *mut SgIoHdr64) };
        let result = if rc < 0 {
            Err(Errno::from_io(&io::Error::last_os_error()))
        } else {
            Ok(Completion {
                status: hdr.out.status,
                host_status: hdr.out.host_status,
                driver_status: hdr.out.driver_status,
                resid: hdr.out.resid,
                duration_ms: hdr.out.duration,
                sense: sense[..usize::from(hdr.out.sb_len_wr).min(MAX_SENSE_LEN)].to_vec(),
            })
        };
        // An fd whose device went away is not worth keeping.
        if !matches!(result, Err(e) if e == Errno::ENODEV) {
            self.idle.lock().push(fd);
        }
        result
    }
}
