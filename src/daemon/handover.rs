//! What a daemon stopping for a restart hands its successor besides the open files'
//! records (`persist`): the results of write() commands nobody has read() yet, as bytes.
//! A result holds what read() needs to finish sg_new_read() later: the header as written,
//! the decoded command (its data regions in the caller's memory), the SCSI outcome, and
//! the data-in the device returned.

use super::files::Completed;
use crate::cuse::abi::IoctlIovec;
use crate::cuse::FileHandle;
use crate::errno::Errno;
use crate::sg::command::{Cdb, Segments, SgCommand};
use crate::sg::header::{Abi, Completion, SenseBytes, SgIoHeader};

/// A finished write() command of file `fh`, with its request's ids and times.
pub struct HandedResult {
    pub fh: FileHandle,
    pub pack_id: i32,
    pub usr_ptr: u64,
    pub duration_ms: u32,
    pub problem: u8,
    pub done: Completed,
}

/// A result is at most this big: the header, sense, segments and the data-in (whose size
/// the daemon bounded when it took it).
const MAX_SEGMENTS: usize = 1 << 16;

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
}

struct In<'a>(&'a [u8]);

impl In<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_ne_bytes(self.take()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.take()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_ne_bytes(self.take()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.take()?))
    }
    fn bytes(&mut self) -> Option<&[u8]> {
        let n = self.u32()? as usize;
        if self.0.len() < n {
            return None;
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b)
    }
}

pub fn encode(r: &HandedResult) -> Vec<u8> {
    let mut o = Out(Vec::with_capacity(256 + r.done.data_in.len()));
    o.u64(r.fh.0);
    o.u32(r.pack_id as u32);
    o.u64(r.usr_ptr);
    o.u32(r.duration_ms);
    o.u8(r.problem);
    o.u8(match r.done.abi {
        Abi::Native => 0,
        Abi::Compat => 1,
    });
    o.bytes(&r.done.raw_header);
    let c = &r.done.command;
    let h = &c.header;
    o.u32(h.interface_id as u32);
    o.u32(h.dxfer_direction as u32);
    o.u8(h.cmd_len);
    o.u8(h.mx_sb_len);
    o.u16(h.iovec_count);
    o.u32(h.dxfer_len);
    o.u64(h.dxferp);
    o.u64(h.cmdp);
    o.u64(h.sbp);
    o.u32(h.timeout);
    o.u32(h.flags);
    o.u32(h.pack_id as u32);
    o.u64(h.usr_ptr);
    o.bytes(&c.cdb);
    let segs = c.segments.as_slice();
    o.u32(segs.len() as u32);
    for s in segs {
        o.u64(s.base);
        o.u64(s.len);
    }
    o.u64(c.transfer_len as u64);
    o.u8(c.data_out_from_caller.into());
    o.u8(c.data_in_to_caller.into());
    match &r.done.outcome {
        Ok(k) => {
            o.u8(0);
            o.u8(k.status);
            o.u16(k.host_status);
            o.u16(k.driver_status);
            o.u32(k.resid as u32);
            o.u32(k.duration_ms);
            o.bytes(&k.sense);
        }
        Err(e) => {
            o.u8(1);
            o.u32(e.get() as u32);
        }
    }
    o.bytes(&r.done.data_in);
    o.0
}

/// The result of `encode`; None for bytes that are not one (cut short, wrong sizes).
pub fn decode(bytes: &[u8]) -> Option<HandedResult> {
    let mut i = In(bytes);
    let fh = FileHandle(i.u64()?);
    let pack_id = i.i32()?;
    let usr_ptr = i.u64()?;
    let duration_ms = i.u32()?;
    let problem = i.u8()?;
    let abi = match i.u8()? {
        0 => Abi::Native,
        1 => Abi::Compat,
        _ => return None,
    };
    let raw_header: [u8; Abi::Native.header_len()] = i.bytes()?.try_into().ok()?;
    let header = SgIoHeader {
        interface_id: i.i32()?,
        dxfer_direction: i.i32()?,
        cmd_len: i.u8()?,
        mx_sb_len: i.u8()?,
        iovec_count: i.u16()?,
        dxfer_len: i.u32()?,
        dxferp: i.u64()?,
        cmdp: i.u64()?,
        sbp: i.u64()?,
        timeout: i.u32()?,
        flags: i.u32()?,
        pack_id: i.i32()?,
        usr_ptr: i.u64()?,
    };
    let cdb = i.bytes()?;
    if cdb.len() > 16 {
        return None;
    }
    let cdb = Cdb::new(cdb);
    let nsegs = i.u32()? as usize;
    if nsegs > MAX_SEGMENTS {
        return None;
    }
    let mut segs = Vec::with_capacity(nsegs);
    for _ in 0..nsegs {
        segs.push(IoctlIovec {
            base: i.u64()?,
            len: i.u64()?,
        });
    }
    let transfer_len = usize::try_from(i.u64()?).ok()?;
    let data_out_from_caller = i.u8()? != 0;
    let data_in_to_caller = i.u8()? != 0;
    let outcome = match i.u8()? {
        0 => Ok(Completion {
            status: i.u8()?,
            host_status: i.u16()?,
            driver_status: i.u16()?,
            resid: i.i32()?,
            duration_ms: i.u32()?,
            sense: SenseBytes::from_slice(i.bytes()?),
        }),
        1 => match i.i32()? {
            raw @ 1..512 => Err(Errno::new(raw)),
            _ => return None,
        },
        _ => return None,
    };
    let data_in = i.bytes()?.to_vec();
    if !i.0.is_empty() {
        return None;
    }
    Some(HandedResult {
        fh,
        pack_id,
        usr_ptr,
        duration_ms,
        problem,
        done: Completed {
            abi,
            raw_header,
            command: SgCommand {
                header,
                cdb,
                segments: Segments::from_vec(segs),
                transfer_len,
                data_out_from_caller,
                data_in_to_caller,
            },
            outcome,
            data_in,
            reservation: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(outcome: Result<Completion, Errno>, segs: Vec<IoctlIovec>) -> HandedResult {
        let mut raw_header = [0u8; 88];
        raw_header[0] = b'S';
        raw_header[87] = 9;
        HandedResult {
            fh: FileHandle(42),
            pack_id: -7,
            usr_ptr: 0xdead_beef_0000,
            duration_ms: 12,
            problem: 1,
            done: Completed {
                abi: Abi::Compat,
                raw_header,
                command: SgCommand {
                    header: SgIoHeader {
                        interface_id: b'S' as i32,
                        dxfer_direction: -3,
                        cmd_len: 10,
                        mx_sb_len: 32,
                        iovec_count: segs.len() as u16,
                        dxfer_len: 4096,
                        dxferp: 0x1000,
                        cmdp: 0x2000,
                        sbp: 0x3000,
                        timeout: 60000,
                        flags: 0,
                        pack_id: -7,
                        usr_ptr: 0xdead_beef_0000,
                    },
                    cdb: Cdb::new(&[0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0]),
                    segments: Segments::from_vec(segs),
                    transfer_len: 4096,
                    data_out_from_caller: false,
                    data_in_to_caller: true,
                },
                outcome,
                data_in: (0..4096u32).map(|b| b as u8).collect(),
                reservation: None,
            },
        }
    }

    fn same(a: &HandedResult, b: &HandedResult) -> bool {
        let (x, y) = (&a.done, &b.done);
        a.fh == b.fh
            && (a.pack_id, a.usr_ptr, a.duration_ms, a.problem)
                == (b.pack_id, b.usr_ptr, b.duration_ms, b.problem)
            && x.abi == y.abi
            && x.raw_header == y.raw_header
            && x.command == y.command
            && x.outcome == y.outcome
            && x.data_in == y.data_in
    }

    #[test]
    fn a_result_round_trips() {
        let iov = |base, len| IoctlIovec { base, len };
        let ok = Ok(Completion {
            status: 2,
            host_status: 7,
            driver_status: 8,
            resid: -1,
            duration_ms: 3,
            sense: SenseBytes::from_slice(&[0x70, 0, 6, 0, 0, 0, 0, 10]),
        });
        for r in [
            sample(ok, vec![iov(0x1000, 4096)]),
            sample(Err(Errno::EIO), vec![iov(1, 2), iov(3, 4), iov(5, 6)]),
            sample(Ok(Completion::default()), vec![]),
        ] {
            let back = decode(&encode(&r)).expect("decodes");
            assert!(same(&r, &back));
        }
    }

    #[test]
    fn cut_or_padded_bytes_are_refused() {
        let b = encode(&sample(Err(Errno::EIO), vec![]));
        for n in [0, 1, 8, 40, b.len() - 1] {
            assert!(decode(&b[..n]).is_none(), "cut at {n}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode(&longer).is_none());
    }
}
