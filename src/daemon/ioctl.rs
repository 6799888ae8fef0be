//! The sg ioctl table of a node (drivers/scsi/sg.c, sg_ioctl_common): each ioctl's answer
//! and errno decided here, as sg decides it; SG_IO goes to the pipeline. Differences are
//! listed in docs/sg-compat.md.

use super::buffer::WorkerLocal;
use super::files::OpenFile;
use super::map::MapState;
use super::pipeline;
use crate::clock::Coarse;
use crate::cuse::abi::{ioctl_flags, IoctlIn, IoctlIovec};
use crate::cuse::{Caller, CuseHandler, IoctlAnswer, IoctlReply, Worker};
use crate::errno::Errno;
use crate::sg::abi::{self, ioctl::*, ScsiIdlun, SgScsiId};
use crate::sg::header::Abi;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use zerocopy::IntoBytes;

/// sg's SG_SET_TIMEOUT ceiling: mult_frac(INT_MAX, USER_HZ, HZ) with Debian's HZ=250.
const MAX_TIMEOUT_USER: i32 = (i32::MAX as i64 * 100 / 250) as i32;

fn iov(base: u64, len: usize) -> IoctlIovec {
    IoctlIovec {
        base,
        len: len as u64,
    }
}

/// An ioctl whose argument is written to the caller: two rounds (name the region, fill it).
fn put(arg: &IoctlIn, bytes: &[u8]) -> IoctlAnswer {
    if (arg.out_size as usize) < bytes.len() {
        return IoctlAnswer::Retry {
            input: vec![],
            output: vec![iov(arg.arg, bytes.len())],
        };
    }
    IoctlAnswer::Done {
        result: 0,
        out: bytes.to_vec(),
    }
}

fn put_int(arg: &IoctlIn, v: i32) -> IoctlAnswer {
    put(arg, &v.to_ne_bytes())
}

/// An ioctl that reads an int from the caller: two rounds (fetch it, act).
fn get_int(arg: &IoctlIn, data: &[u8], act: impl FnOnce(i32) -> Result<(), Errno>) -> IoctlAnswer {
    let Some(bytes) = data.get(..4) else {
        return IoctlAnswer::Retry {
            input: vec![iov(arg.arg, 4)],
            output: vec![],
        };
    };
    match act(i32::from_ne_bytes(bytes.try_into().expect("4 bytes"))) {
        Ok(()) => IoctlAnswer::Done {
            result: 0,
            out: vec![],
        },
        Err(e) => IoctlAnswer::Error(e),
    }
}

/// One ioctl on `file`.
pub fn ioctl<H: CuseHandler<Local = WorkerLocal>>(
    map: &Arc<MapState>,
    caller: &Caller,
    file: Arc<OpenFile>,
    arg: &IoctlIn,
    data: &[u8],
    reply: IoctlReply,
    worker: &mut Worker<'_, H>,
) {
    if arg.cmd == SG_IO {
        return pipeline::sg_io(map, caller, file, arg, data, reply, worker);
    }
    let answer = answer(map, &file, arg, data);
    // A setting changed: its record follows before the caller hears of it, so a restart
    // right after keeps it.
    if matches!(
        arg.cmd,
        SG_SET_TIMEOUT
            | SG_SET_RESERVED_SIZE
            | SG_SET_COMMAND_Q
            | SG_SET_KEEP_ORPHAN
            | SG_SET_FORCE_PACK_ID
            | SG_NEXT_CMD_LEN
    ) && matches!(answer, IoctlAnswer::Done { .. })
    {
        file.save();
    }
    reply.answer(answer);
}

/// Every ioctl but SG_IO: small arguments, carried by CUSE's rounds.
fn answer(map: &MapState, file: &OpenFile, arg: &IoctlIn, data: &[u8]) -> IoctlAnswer {
    let compat = arg.flags & ioctl_flags::COMPAT != 0;
    match arg.cmd {
        SG_GET_VERSION_NUM => put_int(arg, abi::SG_VERSION_NUM),
        SG_GET_TIMEOUT => IoctlAnswer::Done {
            result: file.timeout_user.load(Ordering::Relaxed),
            out: vec![],
        },
        SG_SET_TIMEOUT => get_int(arg, data, |v| {
            if v < 0 {
                return Err(Errno::EIO);
            }
            file.timeout_user
                .store(v.min(MAX_TIMEOUT_USER), Ordering::Relaxed);
            Ok(())
        }),
        SG_GET_RESERVED_SIZE => put_int(
            arg,
            file.reserved_size
                .load(Ordering::Relaxed)
                .min(map.max_transfer() as i32),
        ),
        SG_SET_RESERVED_SIZE => get_int(arg, data, |v| {
            if v < 0 {
                return Err(Errno::EINVAL);
            }
            file.reserved_size
                .store(v.min(map.max_transfer() as i32), Ordering::Relaxed);
            Ok(())
        }),
        SG_GET_SG_TABLESIZE => put_int(arg, map.engine.limits().max_segments),
        BLKSECTGET => put_int(arg, map.max_transfer() as i32),
        SG_EMULATED_HOST => put_int(arg, 0),
        SG_GET_SCSI_ID => {
            let p = map.engine.limits().representative.unwrap_or_default();
            let id = SgScsiId {
                host_no: p.host,
                channel: p.channel,
                scsi_id: p.target,
                lun: p.lun,
                scsi_type: p.scsi_type,
                h_cmd_per_lun: p.cmd_per_lun as i16,
                d_queue_depth: p.queue_depth as i16,
                unused: [0; 2],
            };
            put(arg, id.as_bytes())
        }
        SCSI_IOCTL_GET_IDLUN => {
            let p = map.engine.limits().representative.unwrap_or_default();
            let idlun = ScsiIdlun {
                dev_id: (p.target & 0xff)
                    | (p.lun & 0xff) << 8
                    | (p.channel & 0xff) << 16
                    | (p.host & 0xff) << 24,
                host_unique_id: p.host_unique_id,
            };
            put(arg, idlun.as_bytes())
        }
        SCSI_IOCTL_GET_BUS_NUMBER => put_int(
            arg,
            map.engine.limits().representative.unwrap_or_default().host,
        ),
        SG_GET_COMMAND_Q => put_int(arg, file.cmd_q.load(Ordering::Relaxed).into()),
        SG_SET_COMMAND_Q => get_int(arg, data, |v| {
            file.cmd_q.store(v != 0, Ordering::Relaxed);
            Ok(())
        }),
        SG_GET_KEEP_ORPHAN => put_int(arg, file.keep_orphan.load(Ordering::Relaxed)),
        SG_SET_KEEP_ORPHAN => get_int(arg, data, |v| {
            file.keep_orphan.store(v, Ordering::Relaxed);
            Ok(())
        }),
        SG_SET_FORCE_PACK_ID => get_int(arg, data, |v| {
            file.force_pack_id.store(v != 0, Ordering::Relaxed);
            Ok(())
        }),
        SG_NEXT_CMD_LEN => get_int(arg, data, |v| {
            if v > i32::from(abi::MAX_CDB_LEN) {
                return Err(Errno::ENOMEM);
            }
            file.next_cmd_len.store(v.max(0), Ordering::Relaxed);
            Ok(())
        }),
        SG_GET_PACK_ID => put_int(arg, file.state.lock().requests.first_waiting_pack_id()),
        SG_GET_NUM_WAITING => put_int(arg, file.state.lock().requests.num_waiting()),
        SG_GET_REQUEST_TABLE => {
            let abi = if compat { Abi::Compat } else { Abi::Native };
            let table = file.state.lock().requests.request_table(abi, Coarse::now());
            put(arg, &table)
        }
        SG_GET_ACCESS_COUNT => put_int(arg, 1),
        SG_GET_LOW_DMA => put_int(arg, 0),
        // "This ioctl never worked properly, but failed to return an error value": sg
        // answers 0 without reading its argument.
        SG_SET_FORCE_LOW_DMA => IoctlAnswer::Done {
            result: 0,
            out: vec![],
        },
        // sg's default: EPERM on a file that is not O_RDWR ("don't know so take safe
        // approach"), else the SCSI midlayer's answer for an unknown ioctl, EINVAL.
        _ if !file.read_write() => IoctlAnswer::Error(Errno::EPERM),
        _ => IoctlAnswer::Error(Errno::EINVAL),
    }
}
