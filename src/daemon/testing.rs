//! A node over fake device-mapper and fake paths, served by its real threads through a
//! stand-in for /dev/cuse; the test's own thread is the caller (its memory is reached
//! with process_vm_readv/writev on its own thread id, as a caller's would be).

use super::budget::Budget;
use super::map::MapState;
use super::node::{MapNode, NodeRecords};
use super::persist::FileStore;
use super::timer::Timer;
use crate::cuse::testing::FakeKernel;
use crate::failover::testing::{rig, Rig};
use crate::sg::abi::*;
use std::sync::Arc;

pub struct Lab {
    pub k: FakeKernel<MapNode>,
    pub rig: Rig,
    pub map: Arc<MapState>,
    pub node: Arc<MapNode>,
}

pub struct LabOptions {
    pub groups: &'static [&'static [u32]],
    pub queue: bool,
    pub single_round: bool,
    pub min: usize,
    pub max: usize,
    pub budget: usize,
    /// Keep the open files' records there (as node 240:0).
    pub records: Option<Arc<FileStore>>,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            groups: &[&[16]],
            queue: false,
            single_round: true,
            min: 2,
            max: 8,
            budget: 32 << 20,
            records: None,
        }
    }
}

pub fn lab(o: LabOptions) -> Lab {
    let mut r = rig(o.groups, o.queue);
    let engine = std::mem::replace(&mut r.engine, rig(o.groups, o.queue).engine);
    let map = Arc::new(MapState::new(
        Arc::new(engine),
        o.single_round,
        Budget::new(o.budget),
        Timer::start().unwrap(),
    ));
    let records = o.records.map(|store| NodeRecords {
        store,
        major: 240,
        minor: 0,
    });
    let node = Arc::new(MapNode::new(map.clone(), records));
    let m = map.clone();
    let k = FakeKernel::start_ready(
        node.clone(),
        o.min,
        o.max,
        Arc::new(crate::cuse::ThreadBudget::new(64)),
        move |executor| m.set_submit(Box::new(move |job| executor.submit(job))),
    );
    Lab {
        k,
        rig: r,
        map,
        node,
    }
}

/// A command in this process's memory: header, CDB, sense and data buffers.
pub struct Cmd {
    pub hdr: SgIoHdr64,
    pub cdb: Box<[u8; 16]>,
    pub sense: Box<[u8; 64]>,
    pub data: Vec<u8>,
}

impl Cmd {
    /// TEST UNIT READY.
    pub fn tur() -> Box<Cmd> {
        Cmd::new(&[0; 6], SG_DXFER_NONE, 0)
    }

    /// READ(10) of `len` bytes.
    pub fn read(len: usize) -> Box<Cmd> {
        let blocks = (len / 512) as u16;
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        Cmd::new(&cdb, SG_DXFER_FROM_DEV, len)
    }

    pub fn new(cdb: &[u8], dir: i32, len: usize) -> Box<Cmd> {
        let mut c = Box::new(Cmd {
            hdr: SgIoHdr64::default(),
            cdb: Box::new([0; 16]),
            sense: Box::new([0xAA; 64]),
            data: vec![0xEE; len],
        });
        c.cdb[..cdb.len()].copy_from_slice(cdb);
        c.hdr = SgIoHdr64 {
            interface_id: INTERFACE_ID_V3,
            dxfer_direction: dir,
            cmd_len: cdb.len() as u8,
            mx_sb_len: 64,
            dxfer_len: len as u32,
            dxferp: if len > 0 {
                c.data.as_mut_ptr() as u64
            } else {
                0
            },
            cmdp: c.cdb.as_ptr() as u64,
            sbp: c.sense.as_mut_ptr() as u64,
            timeout: 5000,
            pack_id: 7,
            usr_ptr: 0xfeed,
            ..Default::default()
        };
        c
    }

    /// The header's address, as the ioctl's argument.
    pub fn arg(&self) -> u64 {
        &self.hdr as *const SgIoHdr64 as u64
    }
}
