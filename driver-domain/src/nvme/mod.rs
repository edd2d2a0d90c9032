//! The NVMe driver (NVMe 1.4) for a controller in BAR 0: bring-up (§7.6.1),
//! the admin queue pair, identify, one I/O queue pair, and the
//! [`BlockDevice`] interface over namespace 1.
//!
//! - [`queue`]: queue pairs, phase tags, doorbell values;
//! - [`command`]: command encodings;
//! - [`prp`]: data pointers.
//!
//! Waits (reset, ready, admin commands) poll with a `keep_waiting` closure
//! the caller bounds in time, so a dead controller fails the bring-up
//! instead of hanging the domain.

pub mod command;
pub mod prp;
pub mod queue;

use alloc::vec::Vec;

use command::{Command, Completion, CNS_CONTROLLER, CNS_NAMESPACE, IO_FLUSH, IO_READ, IO_WRITE};
use queue::QueuePair;

use crate::blk::{
    validate, BlockCompletion, BlockDevice, BlockError, BlockInfo, BlockOp, BlockRequest,
};
use crate::dma::{DmaAllocator, DmaPage, PAGE_SIZE};
use crate::regs::RegisterWindow;

/// Controller capabilities.
pub const REG_CAP: usize = 0x00;
/// Version.
pub const REG_VS: usize = 0x08;
/// Controller configuration.
pub const REG_CC: usize = 0x14;
/// Controller status.
pub const REG_CSTS: usize = 0x1c;
/// Admin queue attributes.
pub const REG_AQA: usize = 0x24;
/// Admin submission queue base.
pub const REG_ASQ: usize = 0x28;
/// Admin completion queue base.
pub const REG_ACQ: usize = 0x30;
/// First doorbell.
pub const DOORBELLS: usize = 0x1000;

/// CC: enable.
pub const CC_EN: u32 = 1;
/// CC: I/O submission entry size 2^6, completion entry 2^4.
pub const CC_ENTRY_SIZES: u32 = (6 << 16) | (4 << 20);
/// CSTS: ready.
pub const CSTS_RDY: u32 = 1;
/// CSTS: controller fatal status.
pub const CSTS_CFS: u32 = 2;

/// Entries of the admin queues.
pub const ADMIN_ENTRIES: u16 = 16;
/// Entries of the I/O queues (one page of submission entries).
pub const IO_ENTRIES: u16 = queue::MAX_ENTRIES;
/// The namespace the driver uses.
pub const NSID: u32 = 1;

/// Bytes of BAR 0 the driver needs mapped: registers and the doorbells of
/// the admin and one I/O pair (with the largest stride this driver accepts).
pub fn bar_bytes_needed(doorbell_stride: usize) -> usize {
    DOORBELLS + 4 * doorbell_stride
}

/// Why a controller could not be brought up or used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NvmeError {
    /// The register window is smaller than the doorbells need.
    WindowTooSmall,
    /// The controller does not do 4 KiB pages or the NVM command set.
    Unsupported,
    /// It did not become (not) ready in time.
    Timeout,
    /// It reported a fatal status.
    Fatal,
    /// An admin command failed (opcode, status).
    Admin(u8, u16),
    /// A queue error (the controller misbehaved, or no memory).
    Queue(queue::QueueError),
    /// Namespace 1 is missing or has an unusable format.
    BadNamespace,
    /// No DMA memory.
    NoMemory,
}

impl core::fmt::Display for NvmeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NvmeError::WindowTooSmall => write!(f, "register window too small"),
            NvmeError::Unsupported => write!(f, "unsupported controller"),
            NvmeError::Timeout => write!(f, "controller timeout"),
            NvmeError::Fatal => write!(f, "controller fatal status"),
            NvmeError::Admin(op, st) => write!(f, "admin command {op:#x} failed: status {st:#x}"),
            NvmeError::Queue(e) => write!(f, "queue: {e:?}"),
            NvmeError::BadNamespace => write!(f, "namespace 1 unusable"),
            NvmeError::NoMemory => write!(f, "no DMA memory"),
        }
    }
}

/// Doorbell stride in bytes from CAP.
pub fn doorbell_stride(cap: u64) -> usize {
    4 << ((cap >> 32) & 0xf)
}

/// What identify told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Serial number (ASCII, space padded).
    pub serial: [u8; 20],
    /// Model (ASCII, space padded).
    pub model: [u8; 40],
    /// Largest transfer in bytes (0: no limit).
    pub max_transfer: u64,
    /// Blocks in namespace 1.
    pub blocks: u64,
    /// Bytes per block.
    pub block_size: u32,
}

/// An NVMe controller with namespace 1 as a block device.
pub struct Nvme<W: RegisterWindow, P: DmaPage> {
    regs: W,
    stride: usize,
    admin: QueuePair<P>,
    io: QueuePair<P>,
    /// Per I/O command id: the PRP list page and the caller's tag.
    prp_lists: Vec<P>,
    tags: Vec<Option<u64>>,
    identity: Identity,
    info: BlockInfo,
    broken: bool,
}

impl<W: RegisterWindow, P: DmaPage> Nvme<W, P> {
    /// Brings the controller up (reset, admin queues, enable, identify, one
    /// I/O queue pair interrupting on MSI-X `vector` if given).
    pub fn new<A: DmaAllocator<Page = P>>(
        regs: W,
        alloc: &mut A,
        vector: Option<u16>,
        mut keep_waiting: impl FnMut() -> bool,
    ) -> Result<Self, NvmeError> {
        let cap = regs.read64(REG_CAP);
        let stride = doorbell_stride(cap);
        if regs.len() < bar_bytes_needed(stride) {
            return Err(NvmeError::WindowTooSmall);
        }
        let mps_min = (cap >> 48) & 0xf;
        let nvm_css = (cap >> 37) & 1;
        if mps_min != 0 || nvm_css == 0 {
            return Err(NvmeError::Unsupported);
        }
        let max_entries = ((cap & 0xffff) + 1).min(u64::from(IO_ENTRIES)) as u16;
        // Reset.
        if regs.read32(REG_CC) & CC_EN != 0 {
            regs.write32(REG_CC, 0);
        }
        wait_status(&regs, 0, &mut keep_waiting)?;
        let admin = QueuePair::new(alloc, 0, ADMIN_ENTRIES).map_err(NvmeError::Queue)?;
        let (asq, acq) = admin.addresses();
        let n = u32::from(ADMIN_ENTRIES - 1);
        regs.write32(REG_AQA, n | (n << 16));
        regs.write64(REG_ASQ, asq);
        regs.write64(REG_ACQ, acq);
        regs.write32(REG_CC, CC_EN | CC_ENTRY_SIZES);
        wait_status(&regs, CSTS_RDY, &mut keep_waiting)?;
        let io = QueuePair::new(alloc, 1, max_entries).map_err(NvmeError::Queue)?;
        let depth = usize::from(max_entries - 1);
        let mut prp_lists = Vec::with_capacity(depth);
        for _ in 0..depth {
            prp_lists.push(alloc.alloc_page().map_err(|_| NvmeError::NoMemory)?);
        }
        let mut nvme = Self {
            regs,
            stride,
            admin,
            io,
            prp_lists,
            tags: alloc::vec![None; depth],
            identity: Identity {
                serial: [0; 20],
                model: [0; 40],
                max_transfer: 0,
                blocks: 0,
                block_size: 0,
            },
            info: BlockInfo {
                sectors: 0,
                sector_size: 512,
                max_segments: 0,
                queue_depth: depth as u16,
            },
            broken: false,
        };
        let page = alloc.alloc_page().map_err(|_| NvmeError::NoMemory)?;
        nvme.admin_command(
            Command::identify(CNS_CONTROLLER, 0, page.device_addr()),
            &mut keep_waiting,
        )?;
        page.read(4, &mut nvme.identity.serial);
        page.read(24, &mut nvme.identity.model);
        let mut mdts = [0u8];
        page.read(77, &mut mdts);
        nvme.identity.max_transfer = match mdts[0] {
            0 => 0,
            m => (PAGE_SIZE as u64) << m.min(32),
        };
        nvme.admin_command(
            Command::identify(CNS_NAMESPACE, NSID, page.device_addr()),
            &mut keep_waiting,
        )?;
        let blocks = page.read_u64(0);
        let mut flbas = [0u8];
        page.read(26, &mut flbas);
        let format = page.read_u32(128 + 4 * usize::from(flbas[0] & 0xf));
        let lbads = (format >> 16) & 0xff;
        if blocks == 0 || !(9..=12).contains(&lbads) {
            return Err(NvmeError::BadNamespace);
        }
        nvme.identity.blocks = blocks;
        nvme.identity.block_size = 1 << lbads;
        nvme.admin_command(Command::set_num_queues(1), &mut keep_waiting)?;
        let (sq, cq) = nvme.io.addresses();
        nvme.admin_command(
            Command::create_cq(1, max_entries, cq, vector),
            &mut keep_waiting,
        )?;
        nvme.admin_command(Command::create_sq(1, max_entries, sq, 1), &mut keep_waiting)?;
        // Largest request: a PRP list's worth of pages, within MDTS.
        let mut max_pages = prp::MAX_PAGES as u64 - 1;
        if nvme.identity.max_transfer != 0 {
            max_pages = max_pages.min(nvme.identity.max_transfer / PAGE_SIZE as u64);
        }
        nvme.info = BlockInfo {
            sectors: blocks,
            sector_size: nvme.identity.block_size,
            max_segments: max_pages.min(u64::from(u16::MAX)) as u16,
            queue_depth: depth as u16,
        };
        Ok(nvme)
    }

    /// What identify reported.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn doorbell(&self, qid: u16, completion: bool) -> usize {
        DOORBELLS + (2 * usize::from(qid) + usize::from(completion)) * self.stride
    }

    /// Runs one admin command to completion.
    fn admin_command(
        &mut self,
        cmd: Command,
        keep_waiting: &mut impl FnMut() -> bool,
    ) -> Result<Completion, NvmeError> {
        let opcode = cmd.opcode();
        let (cid, tail) = self.admin.submit(cmd).map_err(NvmeError::Queue)?;
        self.regs.write32(self.doorbell(0, false), u32::from(tail));
        loop {
            if let Some((done, head)) = self.admin.poll().map_err(NvmeError::Queue)? {
                self.regs.write32(self.doorbell(0, true), u32::from(head));
                if done.cid != cid {
                    continue;
                }
                return if done.ok() {
                    Ok(done)
                } else {
                    Err(NvmeError::Admin(opcode, done.status))
                };
            }
            if self.regs.read32(REG_CSTS) & CSTS_CFS != 0 {
                return Err(NvmeError::Fatal);
            }
            if !keep_waiting() {
                return Err(NvmeError::Timeout);
            }
        }
    }
}

/// Waits until CSTS.RDY equals `ready`.
fn wait_status(
    regs: &impl RegisterWindow,
    ready: u32,
    keep_waiting: &mut impl FnMut() -> bool,
) -> Result<(), NvmeError> {
    loop {
        let csts = regs.read32(REG_CSTS);
        if csts & CSTS_CFS != 0 && ready != 0 {
            return Err(NvmeError::Fatal);
        }
        if csts & CSTS_RDY == ready {
            return Ok(());
        }
        if !keep_waiting() {
            return Err(NvmeError::Timeout);
        }
    }
}

impl<W: RegisterWindow, P: DmaPage> BlockDevice for Nvme<W, P> {
    fn info(&self) -> BlockInfo {
        self.info
    }

    fn submit(&mut self, req: &BlockRequest<'_>) -> Result<(), BlockError> {
        if self.broken {
            return Err(BlockError::DeviceFault);
        }
        let blocks = validate(&self.info, req)?;
        if !self.io.has_room() {
            return Err(BlockError::Busy);
        }
        let cmd = match req.op {
            BlockOp::Flush => Command::new(IO_FLUSH).nsid(NSID),
            op => {
                let count = u16::try_from(blocks).map_err(|_| BlockError::TooManySegments)?;
                let pages = prp::pages(req.segments).map_err(|e| match e {
                    prp::PrpError::TooLarge => BlockError::TooManySegments,
                    _ => BlockError::BadLayout,
                })?;
                if pages.len() > usize::from(self.info.max_segments) + 1 {
                    return Err(BlockError::TooManySegments);
                }
                let opcode = if op == BlockOp::Read {
                    IO_READ
                } else {
                    IO_WRITE
                };
                Command::rw(opcode, NSID, req.sector, count, 0, 0).with_pages(
                    &pages,
                    &mut self.prp_lists,
                    &self.io,
                )
            }
        };
        let (cid, tail) = self.io.submit(cmd).map_err(|_| BlockError::Busy)?;
        if let Some(slot) = self.tags.get_mut(usize::from(cid)) {
            *slot = Some(req.tag);
        }
        self.regs.write32(self.doorbell(1, false), u32::from(tail));
        Ok(())
    }

    fn poll(&mut self) -> Option<BlockCompletion> {
        if self.broken {
            return None;
        }
        match self.io.poll() {
            Ok(Some((done, head))) => {
                self.regs.write32(self.doorbell(1, true), u32::from(head));
                let tag = self.tags.get_mut(usize::from(done.cid))?.take()?;
                let result = if done.ok() {
                    Ok(())
                } else {
                    Err(BlockError::Io)
                };
                Some(BlockCompletion { tag, result })
            }
            Ok(None) => None,
            Err(_) => {
                self.broken = true;
                None
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.io.in_flight()
    }
}

impl Command {
    /// Fills PRP1/PRP2 for `pages`, writing a PRP list into the list page
    /// of the command id the queue will assign next when one is needed.
    fn with_pages<P: DmaPage>(self, pages: &[u64], lists: &mut [P], io: &QueuePair<P>) -> Command {
        let cid = io.next_cid();
        match lists.get_mut(usize::from(cid)) {
            Some(list) => {
                let addr = list.device_addr();
                let (prp1, prp2) =
                    prp::entries(pages, addr, |i, entry| list.write_u64(8 * i, entry));
                self.prp(prp1, prp2)
            }
            None => self,
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::rc::Rc;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    use super::*;
    use crate::blk::run_sync;
    use crate::dma::{PageBuffer, Segment};
    use crate::pattern::{fill_sectors, first_mismatch};
    use crate::sim::{RegisterModel, SimMemory, SimWindow};

    const BLOCKS: u64 = 512;

    /// A queue as the simulated controller tracks it.
    #[derive(Clone, Copy, Default)]
    struct Q {
        sq: u64,
        cq: u64,
        size: u16,
        head: u16,
        cq_tail: u16,
        phase: bool,
    }

    /// An NVMe controller over a RAM disk: admin identify/set-features/
    /// create-queue, read and write with PRP lists.
    struct SimNvme {
        mem: SimMemory,
        cc: u32,
        csts: u32,
        aqa: u32,
        asq: u64,
        acq: u64,
        queues: [Q; 2],
        disk: Vec<u8>,
        commands: Vec<u8>,
        /// Complete I/O commands only when asked (to build up queue depth).
        hold_io: bool,
        held: Vec<u16>,
    }

    impl SimNvme {
        fn new(mem: SimMemory) -> Self {
            Self {
                mem,
                cc: 0,
                csts: 0,
                aqa: 0,
                asq: 0,
                acq: 0,
                queues: [Q::default(); 2],
                disk: vec![0; BLOCKS as usize * 512],
                commands: Vec::new(),
                hold_io: false,
                held: Vec::new(),
            }
        }

        fn complete(&mut self, qid: usize, cid: u16, status: u16) {
            let q = &mut self.queues[qid];
            let at = q.cq + u64::from(q.cq_tail) * 16;
            self.mem.write_u32(at, 0);
            self.mem.write_u16(at + 8, q.head);
            self.mem.write_u16(at + 10, qid as u16);
            self.mem.write_u32(
                at + 12,
                u32::from(cid) | (u32::from(q.phase) << 16) | (u32::from(status) << 17),
            );
            q.cq_tail += 1;
            if q.cq_tail == q.size {
                q.cq_tail = 0;
                q.phase = !q.phase;
            }
        }

        /// The PRP pages of a transfer of `bytes`.
        fn prp_pages(&self, prp1: u64, prp2: u64, bytes: usize) -> Vec<(u64, usize)> {
            let mut out = Vec::new();
            let first = (4096 - (prp1 % 4096) as usize).min(bytes);
            out.push((prp1, first));
            let mut left = bytes - first;
            let pages = left.div_ceil(4096);
            for i in 0..pages {
                let addr = if pages == 1 {
                    prp2
                } else {
                    self.mem.read_u64(prp2 + 8 * i as u64)
                };
                assert_eq!(addr % 4096, 0, "later PRP entries are page aligned");
                out.push((addr, left.min(4096)));
                left -= left.min(4096);
            }
            out
        }

        fn execute(&mut self, qid: usize, d: [u32; 16]) -> u16 {
            let opcode = d[0] as u8;
            self.commands.push(opcode);
            let prp1 = u64::from(d[6]) | (u64::from(d[7]) << 32);
            let prp2 = u64::from(d[8]) | (u64::from(d[9]) << 32);
            if qid == 0 {
                match opcode {
                    command::ADMIN_IDENTIFY => {
                        let mut page = vec![0u8; 4096];
                        if d[10] == CNS_CONTROLLER {
                            page[4..13].copy_from_slice(b"paravane0");
                            page[24..38].copy_from_slice(b"QEMU NVMe Ctrl");
                            page[77] = 7;
                        } else {
                            page[0..8].copy_from_slice(&BLOCKS.to_le_bytes());
                            page[130] = 9;
                        }
                        self.mem.write(prp1, &page);
                    }
                    command::ADMIN_SET_FEATURES => {}
                    command::ADMIN_CREATE_CQ => {
                        let q = &mut self.queues[(d[10] & 0xffff) as usize];
                        q.cq = prp1;
                        q.size = (d[10] >> 16) as u16 + 1;
                        q.phase = true;
                    }
                    command::ADMIN_CREATE_SQ => {
                        let q = &mut self.queues[(d[10] & 0xffff) as usize];
                        assert_eq!(q.size, (d[10] >> 16) as u16 + 1);
                        q.sq = prp1;
                    }
                    _ => return 1,
                }
                return 0;
            }
            let lba = u64::from(d[10]) | (u64::from(d[11]) << 32);
            let bytes = ((d[12] & 0xffff) as usize + 1) * 512;
            let mut at = lba as usize * 512;
            if at + bytes > self.disk.len() {
                return 0x80; // LBA out of range
            }
            for (addr, len) in self.prp_pages(prp1, prp2, bytes) {
                match opcode {
                    IO_READ => self.mem.write(addr, &self.disk[at..at + len]),
                    IO_WRITE => {
                        let data = self.mem.read_vec(addr, len);
                        self.disk[at..at + len].copy_from_slice(&data);
                    }
                    _ => return 1,
                }
                at += len;
            }
            0
        }

        fn ring(&mut self, qid: usize, tail: u16) {
            while self.queues[qid].head != tail {
                let q = self.queues[qid];
                let mut d = [0u32; 16];
                for (i, w) in d.iter_mut().enumerate() {
                    *w = self
                        .mem
                        .read_u32(q.sq + u64::from(q.head) * 64 + 4 * i as u64);
                }
                self.queues[qid].head = (q.head + 1) % q.size;
                let cid = (d[0] >> 16) as u16;
                let status = self.execute(qid, d);
                if qid == 1 && self.hold_io {
                    self.held.push(cid);
                } else {
                    self.complete(qid, cid, status);
                }
            }
        }
    }

    impl RegisterModel for SimNvme {
        fn read(&mut self, offset: usize, _size: usize) -> u64 {
            match offset {
                // MQES 2047, CSS NVM, DSTRD 0, MPSMIN 0.
                REG_CAP => 0x7ff,
                0x04 => 1 << 5,
                REG_CC => self.cc.into(),
                REG_CSTS => self.csts.into(),
                _ => 0,
            }
        }

        fn write(&mut self, offset: usize, _size: usize, value: u64) {
            match offset {
                REG_CC => {
                    self.cc = value as u32;
                    if self.cc & CC_EN != 0 {
                        assert_eq!(self.cc & CC_ENTRY_SIZES, CC_ENTRY_SIZES);
                        let n = (self.aqa & 0xfff) as u16 + 1;
                        self.queues[0] = Q {
                            sq: self.asq,
                            cq: self.acq,
                            size: n,
                            head: 0,
                            cq_tail: 0,
                            phase: true,
                        };
                        self.csts = CSTS_RDY;
                    } else {
                        self.csts = 0;
                    }
                }
                REG_AQA => self.aqa = value as u32,
                REG_ASQ => self.asq = (self.asq & !0xffff_ffff) | value,
                0x2c => self.asq = (self.asq & 0xffff_ffff) | (value << 32),
                REG_ACQ => self.acq = (self.acq & !0xffff_ffff) | value,
                0x34 => self.acq = (self.acq & 0xffff_ffff) | (value << 32),
                o if o >= DOORBELLS => {
                    let index = (o - DOORBELLS) / 4;
                    if index.is_multiple_of(2) {
                        self.ring(index / 2, value as u16);
                    }
                }
                _ => {}
            }
        }
    }

    fn controller(
        mem: &SimMemory,
    ) -> (
        Rc<RefCell<SimNvme>>,
        Nvme<SimWindow<SimNvme>, crate::sim::SimPage>,
    ) {
        let model = Rc::new(RefCell::new(SimNvme::new(mem.clone())));
        let regs = SimWindow::new(model.clone(), 0x2000);
        let mut polls = 0;
        let nvme = Nvme::new(regs, &mut mem.allocator(), Some(1), || {
            polls += 1;
            polls < 100
        })
        .unwrap();
        (model, nvme)
    }

    #[test]
    fn bring_up_and_patterned_read_back() {
        let mem = SimMemory::new();
        let (model, mut nvme) = controller(&mem);
        assert_eq!(
            model.borrow().commands,
            [
                command::ADMIN_IDENTIFY,
                command::ADMIN_IDENTIFY,
                command::ADMIN_SET_FEATURES,
                command::ADMIN_CREATE_CQ,
                command::ADMIN_CREATE_SQ
            ]
        );
        assert_eq!(&nvme.identity().model[..14], b"QEMU NVMe Ctrl");
        let info = nvme.info();
        assert_eq!(
            (info.sectors, info.sector_size, info.queue_depth),
            (BLOCKS, 512, 63)
        );
        assert_eq!(info.max_segments, 128, "MDTS 7: 512 KiB");
        // 5 pages, scattered on the bus: PRP1 + a PRP list of 4.
        let mut buf = PageBuffer::new(&mut mem.allocator(), 5 * 4096).unwrap();
        let mut data = vec![0u8; 5 * 4096];
        fill_sectors(&mut data, 100, 512, 3);
        buf.fill(&data);
        let segs: Vec<Segment> = buf.segments(data.len()).collect();
        let w = BlockRequest {
            op: BlockOp::Write,
            sector: 100,
            segments: &segs,
            tag: 1,
        };
        assert_eq!(run_sync(&mut nvme, &w, || false), Ok(()));
        assert_eq!(
            first_mismatch(&model.borrow().disk[100 * 512..140 * 512], 100, 512, 3),
            None
        );
        buf.fill(&vec![0u8; data.len()]);
        let r = BlockRequest {
            op: BlockOp::Read,
            sector: 100,
            segments: &segs,
            tag: 2,
        };
        assert_eq!(run_sync(&mut nvme, &r, || false), Ok(()));
        let mut back = vec![0u8; data.len()];
        buf.copy_out(&mut back);
        assert_eq!(back, data);
        // Two pages: PRP2 is the second page itself.
        let two: Vec<Segment> = buf.segments(2 * 4096).collect();
        let r2 = BlockRequest {
            op: BlockOp::Read,
            sector: 100,
            segments: &two,
            tag: 3,
        };
        assert_eq!(run_sync(&mut nvme, &r2, || false), Ok(()));
        // A hole in the middle of a buffer cannot be expressed with PRPs.
        let holey = [
            Segment {
                addr: segs[0].addr,
                len: 512,
            },
            segs[1],
        ];
        let bad = BlockRequest {
            op: BlockOp::Read,
            sector: 0,
            segments: &holey,
            tag: 4,
        };
        assert_eq!(nvme.submit(&bad), Err(BlockError::BadLayout));
    }

    #[test]
    fn queue_depth_and_out_of_order_completion() {
        let mem = SimMemory::new();
        let (model, mut nvme) = controller(&mem);
        model.borrow_mut().hold_io = true;
        let pages: Vec<PageBuffer<_>> = (0..70)
            .map(|_| PageBuffer::new(&mut mem.allocator(), 4096).unwrap())
            .collect();
        let segs: Vec<Vec<Segment>> = pages.iter().map(|p| p.segments(4096).collect()).collect();
        let mut submitted = 0u64;
        for (i, s) in segs.iter().enumerate() {
            let req = BlockRequest {
                op: BlockOp::Read,
                sector: i as u64 * 8,
                segments: s,
                tag: i as u64,
            };
            match nvme.submit(&req) {
                Ok(()) => submitted += 1,
                Err(BlockError::Busy) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(submitted, 63, "one slot of 64 stays empty");
        assert_eq!(nvme.in_flight(), 63);
        let mut held = core::mem::take(&mut model.borrow_mut().held);
        held.reverse();
        for cid in held {
            model.borrow_mut().complete(1, cid, 0);
        }
        let mut tags: Vec<u64> = core::iter::from_fn(|| nvme.poll()).map(|c| c.tag).collect();
        tags.sort();
        assert_eq!(tags, (0..63).collect::<Vec<_>>());
        assert_eq!(nvme.in_flight(), 0);
    }

    #[test]
    fn dead_controller_times_out() {
        struct Dead;
        impl RegisterModel for Dead {
            fn read(&mut self, offset: usize, _: usize) -> u64 {
                match offset {
                    REG_CAP => 0x7ff,
                    0x04 => 1 << 5, // CAP.CSS: NVM
                    _ => 0,
                }
            }
            fn write(&mut self, _: usize, _: usize, _: u64) {}
        }
        let mem = SimMemory::new();
        let regs = SimWindow::new(Rc::new(RefCell::new(Dead)), 0x2000);
        let mut polls = 0;
        let r = Nvme::new(regs, &mut mem.allocator(), None, || {
            polls += 1;
            polls < 10
        });
        assert!(matches!(r, Err(NvmeError::Timeout)), "never ready");
        struct NoNvm;
        impl RegisterModel for NoNvm {
            fn read(&mut self, _: usize, _: usize) -> u64 {
                0
            }
            fn write(&mut self, _: usize, _: usize, _: u64) {}
        }
        let regs = SimWindow::new(Rc::new(RefCell::new(NoNvm)), 0x2000);
        assert!(matches!(
            Nvme::new(regs, &mut mem.allocator(), None, || true),
            Err(NvmeError::Unsupported)
        ));
        let small = SimWindow::new(Rc::new(RefCell::new(Dead)), 0x1000);
        assert!(matches!(
            Nvme::new(small, &mut mem.allocator(), None, || false),
            Err(NvmeError::WindowTooSmall)
        ));
    }
}
