//! The virtio-blk driver (virtio 1.2 §5.2): one request queue, each request a
//! chain of a 16-byte header the device reads, the data segments, and a
//! status byte the device writes.
//!
//! Headers and status bytes live in one DMA page, one 32-byte slot per
//! request in flight; a request's completion is found by its chain head and
//! its outcome read from its own status byte (the used length is not
//! trusted).

use alloc::vec::Vec;

use super::pci::VirtioPci;
use super::queue::{Buffer, SplitQueue};
use super::{VirtioError, F_ACCESS_PLATFORM, F_VERSION_1};
use crate::blk::{
    validate, BlockCompletion, BlockDevice, BlockError, BlockInfo, BlockOp, BlockRequest,
};
use crate::dma::{DmaAllocator, DmaPage, Segment};
use crate::regs::RegisterWindow;

/// Feature: `seg_max` in the configuration is valid.
pub const F_SEG_MAX: u64 = 1 << 2;
/// Feature: the device supports flush.
pub const F_FLUSH: u64 = 1 << 9;

/// Request type: read.
pub const T_IN: u32 = 0;
/// Request type: write.
pub const T_OUT: u32 = 1;
/// Request type: flush.
pub const T_FLUSH: u32 = 4;
/// Status: success.
pub const S_OK: u8 = 0;
/// Status: I/O error.
pub const S_IOERR: u8 = 1;
/// Status: unsupported request.
pub const S_UNSUPP: u8 = 2;

/// Bytes per slot in the header page: header (16), status (1), padding.
const SLOT: usize = 32;
/// Most requests in flight (slots in one page).
pub const MAX_DEPTH: u16 = (crate::dma::PAGE_SIZE / SLOT) as u16;
/// Most data segments per request this driver uses.
pub const MAX_SEGMENTS: u16 = 32;
/// Queue size the driver asks for.
pub const QUEUE_SIZE: u16 = 256;
/// Virtio-blk sectors are always 512 bytes.
pub const SECTOR_SIZE: u32 = 512;
/// A request's descriptor chain: header, data, status.
type Chain = heapless::Vec<Buffer, { MAX_SEGMENTS as usize + 2 }>;
/// Status byte value the driver writes before submitting (no device writes it).
const STATUS_PENDING: u8 = 0xff;

/// A virtio-blk device.
pub struct VirtioBlk<W: RegisterWindow, P: DmaPage> {
    dev: VirtioPci<W>,
    queue: SplitQueue<P>,
    slots_page: P,
    free_slots: Vec<u16>,
    /// Per chain head: (slot, tag) of the request in flight.
    by_head: Vec<Option<(u16, u64)>>,
    info: BlockInfo,
    flush: bool,
    broken: bool,
}

impl<W: RegisterWindow, P: DmaPage> VirtioBlk<W, P> {
    /// Initialises the device: features, the request queue (with MSI-X
    /// vector `vector`, or [`NO_VECTOR`]), DRIVER_OK.
    pub fn new<A: DmaAllocator<Page = P>>(
        dev: VirtioPci<W>,
        alloc: &mut A,
        vector: u16,
    ) -> Result<Self, VirtioError> {
        let features = dev.begin_init(F_VERSION_1, F_ACCESS_PLATFORM | F_SEG_MAX | F_FLUSH)?;
        let cfg = dev
            .device_config()
            .ok_or(VirtioError::BadCapability(super::pci::CAP_DEVICE))?;
        if cfg.len() < 16 {
            return Err(VirtioError::BadCapability(super::pci::CAP_DEVICE));
        }
        let sectors = cfg.read64(0);
        let seg_max = if features & F_SEG_MAX != 0 {
            cfg.read32(12)
        } else {
            1
        };
        let max = dev.max_queue_size(0);
        let size = QUEUE_SIZE.min(prev_power_of_two(max));
        if size < 4 {
            return Err(VirtioError::BadQueue(0));
        }
        let queue = SplitQueue::new(alloc, size).map_err(VirtioError::Queue)?;
        let slots_page = alloc.alloc_page().map_err(|_| VirtioError::NoMemory)?;
        let max_segments = (seg_max.clamp(1, u32::from(MAX_SEGMENTS)) as u16).min(size - 2);
        // A request takes at least three descriptors (header, data, status).
        let depth = MAX_DEPTH.min(size / 3);
        dev.setup_queue(0, &queue, vector)?;
        dev.driver_ok();
        Ok(Self {
            dev,
            queue,
            slots_page,
            free_slots: (0..depth).rev().collect(),
            by_head: alloc::vec![None; usize::from(size)],
            info: BlockInfo {
                sectors,
                sector_size: SECTOR_SIZE,
                max_segments,
                queue_depth: depth,
            },
            flush: features & F_FLUSH != 0,
            broken: false,
        })
    }

    /// The transport (for the ISR and the device status).
    pub fn transport(&self) -> &VirtioPci<W> {
        &self.dev
    }
}

/// The largest power of two `<= n` (0 for 0).
fn prev_power_of_two(n: u16) -> u16 {
    if n == 0 {
        0
    } else {
        1 << (15 - n.leading_zeros())
    }
}

impl<W: RegisterWindow, P: DmaPage> BlockDevice for VirtioBlk<W, P> {
    fn info(&self) -> BlockInfo {
        self.info
    }

    fn submit(&mut self, req: &BlockRequest<'_>) -> Result<(), BlockError> {
        if self.broken {
            return Err(BlockError::DeviceFault);
        }
        validate(&self.info, req)?;
        let kind = match req.op {
            BlockOp::Read => T_IN,
            BlockOp::Write => T_OUT,
            BlockOp::Flush if self.flush => T_FLUSH,
            BlockOp::Flush => return Err(BlockError::Unsupported),
        };
        if usize::from(self.queue.num_free()) < req.segments.len() + 2 {
            return Err(BlockError::Busy);
        }
        let slot = self.free_slots.pop().ok_or(BlockError::Busy)?;
        let at = usize::from(slot) * SLOT;
        self.slots_page.write_u32(at, kind);
        self.slots_page.write_u32(at + 4, 0);
        self.slots_page.write_u64(at + 8, req.sector);
        self.slots_page.write(at + 16, &[STATUS_PENDING]);
        let header = Segment::within(&self.slots_page, at, 16).ok_or(BlockError::BadLayout)?;
        let status = Segment::within(&self.slots_page, at + 16, 1).ok_or(BlockError::BadLayout)?;
        // `validate` bounded the segments by `max_segments <= MAX_SEGMENTS`.
        let mut chain: Chain = heapless::Vec::new();
        let data = req.segments.iter().map(|&seg| match req.op {
            BlockOp::Read => Buffer::writable(seg),
            _ => Buffer::readable(seg),
        });
        let all = core::iter::once(Buffer::readable(header))
            .chain(data)
            .chain(core::iter::once(Buffer::writable(status)));
        for buffer in all {
            if chain.push(buffer).is_err() {
                self.free_slots.push(slot);
                return Err(BlockError::TooManySegments);
            }
        }
        let head = match self.queue.push(&chain) {
            Ok(head) => head,
            Err(_) => {
                self.free_slots.push(slot);
                return Err(BlockError::Busy);
            }
        };
        self.by_head[usize::from(head)] = Some((slot, req.tag));
        if self.queue.should_notify() {
            self.dev.notify(0);
        }
        Ok(())
    }

    fn poll(&mut self) -> Option<BlockCompletion> {
        if self.broken {
            return None;
        }
        let used = match self.queue.pop_used() {
            Ok(Some(used)) => used,
            Ok(None) => return None,
            Err(_) => {
                // The device wrote nonsense in the used ring: stop using it.
                self.broken = true;
                self.dev.fail();
                return None;
            }
        };
        let (slot, tag) = self.by_head[usize::from(used.head)].take()?;
        let mut status = [0u8];
        self.slots_page
            .read(usize::from(slot) * SLOT + 16, &mut status);
        self.free_slots.push(slot);
        let result = match status[0] {
            S_OK => Ok(()),
            S_IOERR => Err(BlockError::Io),
            S_UNSUPP => Err(BlockError::Unsupported),
            _ => Err(BlockError::DeviceFault),
        };
        Some(BlockCompletion { tag, result })
    }

    fn in_flight(&self) -> usize {
        usize::from(self.queue.in_flight())
    }
}

#[cfg(test)]
mod tests {
    use alloc::rc::Rc;
    use alloc::vec;
    use core::cell::RefCell;

    use super::*;
    use crate::blk::run_sync;
    use crate::dma::PageBuffer;
    use crate::pattern::{fill_sectors, first_mismatch};
    use crate::sim::{SimMemory, SimPage, SimWindow};
    use crate::virtio::pci::device::{bar, config_space, SimVirtio};
    use crate::virtio::pci::VirtioPciCaps;

    const SECTORS: u64 = 256;

    /// A virtio-blk device over a RAM disk; `complete` says whether it
    /// finishes requests at once (else the test completes them later).
    fn device(
        mem: &SimMemory,
        seg_max: u32,
    ) -> (Rc<RefCell<SimVirtio>>, Rc<RefCell<alloc::vec::Vec<u8>>>) {
        let mut config = vec![0u8; 0x40];
        config[0..8].copy_from_slice(&SECTORS.to_le_bytes());
        config[12..16].copy_from_slice(&seg_max.to_le_bytes());
        let model = Rc::new(RefCell::new(SimVirtio::new(
            mem.clone(),
            F_VERSION_1 | F_ACCESS_PLATFORM | F_SEG_MAX | F_FLUSH,
            &[128],
            config,
        )));
        let disk = Rc::new(RefCell::new(vec![0u8; SECTORS as usize * 512]));
        let d = disk.clone();
        model.borrow_mut().handler = Some(alloc::boxed::Box::new(move |_, q, _| {
            while let Some(chain) = q.pop_avail() {
                let (h, hl, hw) = chain.buffers[0];
                assert!(hl == 16 && !hw, "header first, device-readable");
                let kind = q.mem.read_u32(h);
                let sector = q.mem.read_u64(h + 8);
                let (st, sl, sw) = *chain.buffers.last().unwrap();
                assert!(sl == 1 && sw, "status last, device-writable");
                let mut at = sector as usize * 512;
                let mut status = S_OK;
                for &(addr, len, writes) in &chain.buffers[1..chain.buffers.len() - 1] {
                    let len = len as usize;
                    if at + len > d.borrow().len() {
                        status = S_IOERR;
                        break;
                    }
                    match kind {
                        T_IN => {
                            assert!(writes);
                            q.mem.write(addr, &d.borrow()[at..at + len]);
                        }
                        T_OUT => {
                            assert!(!writes);
                            let data = q.mem.read_vec(addr, len);
                            d.borrow_mut()[at..at + len].copy_from_slice(&data);
                        }
                        _ => status = S_UNSUPP,
                    }
                    at += len;
                }
                q.mem.write(st, &[status]);
                q.push_used(u32::from(chain.head), 1);
            }
        }));
        (model, disk)
    }

    fn open(
        mem: &SimMemory,
        model: &Rc<RefCell<SimVirtio>>,
    ) -> VirtioBlk<SimWindow<SimVirtio>, SimPage> {
        let caps = VirtioPciCaps::find(&config_space(0x1042)).unwrap();
        let dev = VirtioPci::new(&caps, |_| Some(bar(model))).unwrap();
        VirtioBlk::new(dev, &mut mem.allocator(), super::super::pci::NO_VECTOR).unwrap()
    }

    #[test]
    fn writes_and_reads_back_patterned_sectors() {
        let mem = SimMemory::new();
        let (model, disk) = device(&mem, 8);
        let mut blk = open(&mem, &model);
        let info = blk.info();
        assert_eq!(
            (info.sectors, info.sector_size, info.max_segments),
            (SECTORS, 512, 8)
        );
        assert_eq!(
            model.borrow().driver_features & F_ACCESS_PLATFORM,
            F_ACCESS_PLATFORM
        );
        let mut buf = PageBuffer::new(&mut mem.allocator(), 3 * 4096).unwrap();
        let mut data = vec![0u8; 3 * 4096];
        fill_sectors(&mut data, 40, 512, 9);
        buf.fill(&data);
        let segs: alloc::vec::Vec<_> = buf.segments(data.len()).collect();
        let write = BlockRequest {
            op: BlockOp::Write,
            sector: 40,
            segments: &segs,
            tag: 1,
        };
        assert_eq!(run_sync(&mut blk, &write, || false), Ok(()));
        assert_eq!(
            first_mismatch(&disk.borrow()[40 * 512..64 * 512], 40, 512, 9),
            None
        );
        buf.fill(&vec![0u8; data.len()]);
        let read = BlockRequest {
            op: BlockOp::Read,
            sector: 40,
            segments: &segs,
            tag: 2,
        };
        assert_eq!(run_sync(&mut blk, &read, || false), Ok(()));
        let mut back = vec![0u8; data.len()];
        buf.copy_out(&mut back);
        assert_eq!(back, data);
        assert_eq!(blk.in_flight(), 0);
        let past = BlockRequest {
            op: BlockOp::Read,
            sector: SECTORS - 1,
            segments: &segs,
            tag: 3,
        };
        assert_eq!(
            blk.submit(&past),
            Err(BlockError::OutOfRange),
            "validated before the device sees it"
        );
    }

    #[test]
    fn many_in_flight_and_device_errors() {
        let mem = SimMemory::new();
        let (model, _disk) = device(&mem, 4);
        let handler = model.borrow_mut().handler.take();
        let mut blk = open(&mem, &model);
        let page = mem.allocator().alloc_page().unwrap();
        let seg = [Segment::page(&page)];
        let mut submitted = 0;
        loop {
            let req = BlockRequest {
                op: BlockOp::Read,
                sector: submitted * 8,
                segments: &seg,
                tag: submitted,
            };
            match blk.submit(&req) {
                Ok(()) => submitted += 1,
                Err(BlockError::Busy) => break,
                Err(e) => panic!("{e}"),
            }
            if submitted * 8 >= SECTORS {
                break;
            }
        }
        assert_eq!(blk.in_flight() as u64, submitted);
        assert!(blk.poll().is_none(), "the device has not run yet");
        model.borrow_mut().handler = handler;
        // Any notification makes the device drain the queue.
        blk.transport().notify(0);
        let mut tags: alloc::vec::Vec<u64> = core::iter::from_fn(|| blk.poll())
            .map(|c| {
                assert_eq!(c.result, Ok(()));
                c.tag
            })
            .collect();
        tags.sort();
        assert_eq!(tags, (0..submitted).collect::<alloc::vec::Vec<_>>());
    }

    #[test]
    fn a_lying_device_is_dropped() {
        let mem = SimMemory::new();
        let (model, _disk) = device(&mem, 4);
        model.borrow_mut().handler = Some(alloc::boxed::Box::new(|_, q, _| {
            while let Some(chain) = q.pop_avail() {
                q.push_used(u32::from(chain.head) + 1, 0);
            }
        }));
        let mut blk = open(&mem, &model);
        let page = mem.allocator().alloc_page().unwrap();
        let seg = [Segment::page(&page)];
        let req = BlockRequest {
            op: BlockOp::Read,
            sector: 0,
            segments: &seg,
            tag: 5,
        };
        assert_eq!(run_sync(&mut blk, &req, || false), Err(BlockError::Timeout));
        assert_eq!(blk.submit(&req), Err(BlockError::DeviceFault));
        assert_ne!(model.borrow().status & super::super::STATUS_FAILED, 0);
    }
}
