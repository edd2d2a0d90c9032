//! A real disk as blkback serves it (DEV-6 `disk=virtio-blk|nvme`): the
//! device behind a [`DiskQueue`] (many requests in flight, out-of-order
//! completion, exact flushes) plus a pool of this domain's frames the
//! device reads and writes directly. blkback grant-copies a write's data
//! from the guest straight into pool frames and a read's data from them
//! straight back, so no byte is copied by the CPU in between.
//!
//! The disk also answers the synchronous [`BlockStore`] calls (one job at a
//! time, with nothing else queued) that start-up needs, e.g. reading a GPT.
//!
//! # Invariants
//! - A pool frame is either free here, or owned by exactly one job (inside
//!   the queue while the device may touch it, or in blkback while it copies
//!   grants); timed-out jobs give theirs back only once the device let go.
//! - The device's interrupt port, if any, is unmasked with a no-op handler:
//!   it only wakes the backend loop, which then pumps the queue (the loop
//!   polls while requests are on the device, so a disk without an
//!   interrupt works too).

use alloc::boxed::Box;
use alloc::vec::Vec;

use driver_domain::blk::{BlockDevice, BlockError, BlockOp};
use driver_domain::disk_queue::DiskQueue;
use driver_domain::dma::Segment;
use hypercall_abi::DomId;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants::{self, GrantRef, Mapping};
use pv_guest_kit::mm::{Frame, MmError};
use pv_guest_kit::physdev;
use pv_guest_kit::println;

use super::block_store::{check_range, BlockStore, StoreError, UNIT};
use crate::hw::frames::DmaMode;

/// Bytes per frame.
pub const FRAME: usize = 4096;
/// Frames in the pool: data of the guest requests on the device at once
/// (4 MiB; a virtio-blk queue holds about 1 MiB of large requests).
pub const POOL_FRAMES: usize = 1024;

/// A frontend's persistent grant (BLK-11) mapped here and placed in the
/// IOMMU space at `dev_pfn`, so the device reaches the guest's page itself.
#[derive(Debug)]
pub struct Persistent {
    mapping: Mapping,
    /// Where the device sees the page.
    pub dev_pfn: u64,
}

/// Bus pages of the IOMMU grant window (PDEV-8) not in use.
struct GrantWindow {
    free: Vec<u64>,
    next: u64,
    end: u64,
}

/// Most persistent grants mapped at once over all connections: the
/// domain has at most 1024 grant mappings (GNT-3), rings need some.
pub const MAX_PERSISTENT_TOTAL: usize = 768;

/// A served real disk.
pub struct RealDisk {
    /// The device and its queue of jobs (buffers: the jobs' pool frames).
    pub queue: DiskQueue<Vec<Frame>>,
    pool: Vec<Frame>,
    mode: DmaMode,
    /// The grant window, behind an IOMMU (else no persistent mappings).
    window: Option<GrantWindow>,
    /// Address-space pages for grant mappings, free.
    vas: Vec<u64>,
    /// Persistent grants mapped now.
    mapped: usize,
}

fn wake(_port: Port) {}

impl RealDisk {
    /// Wraps `dev` with a pool of `frames` frames; a device request not
    /// answered within `timeout` TSC ticks fails its job.
    pub fn new(
        dev: Box<dyn BlockDevice>,
        port: Option<Port>,
        mode: DmaMode,
        frames: usize,
        timeout: u64,
    ) -> Result<RealDisk, BlockError> {
        let queue = DiskQueue::new(dev, Box::new(pv_guest_kit::bench::rdtsc), timeout)?;
        let mut pool = Vec::with_capacity(frames);
        for _ in 0..frames {
            pool.push(Frame::alloc().map_err(|_: MmError| BlockError::NoMemory)?);
        }
        if let Some(port) = port {
            events::set_handler(port, wake);
            events::clear_pending(port);
            if events::unmask(port).is_err() {
                return Err(BlockError::DeviceFault);
            }
        }
        let window = match mode {
            DmaMode::Iommu => physdev::iommu_info()
                .ok()
                .filter(|i| i.grant_pfn_end > i.grant_pfn_start)
                .map(|i| GrantWindow {
                    free: Vec::new(),
                    next: i.grant_pfn_start,
                    end: i.grant_pfn_end,
                }),
            DmaMode::Machine => None,
        };
        Ok(RealDisk {
            queue,
            pool,
            mode,
            window,
            vas: Vec::new(),
            mapped: 0,
        })
    }

    /// Whether frontends' persistent grants can be placed in the IOMMU space.
    pub fn maps_persistent(&self) -> bool {
        self.window.is_some()
    }

    /// Maps `frontend`'s grant `gref` (writable) and places it in the
    /// IOMMU space; `None` if it cannot (a bad grant, no room).
    pub fn map_persistent(&mut self, frontend: DomId, gref: GrantRef) -> Option<Persistent> {
        if self.mapped >= MAX_PERSISTENT_TOTAL {
            return None;
        }
        let window = self.window.as_mut()?;
        let dev_pfn = match window.free.pop() {
            Some(p) => p,
            None if window.next < window.end => {
                window.next += 1;
                window.next - 1
            }
            None => return None,
        };
        let va = match self.vas.pop() {
            Some(va) => va,
            None => match pv_guest_kit::mm::reserve_va(1) {
                Ok(r) => r.start(),
                Err(_) => {
                    window.free.push(dev_pfn);
                    return None;
                }
            },
        };
        let mapping = match grants::map(frontend, gref, va, false) {
            Ok(m) => m,
            Err(_) => {
                window.free.push(dev_pfn);
                self.vas.push(va);
                return None;
            }
        };
        if physdev::iommu_map_grant(mapping.handle().handle, dev_pfn, false).is_err() {
            window.free.push(dev_pfn);
            self.release_mapping(mapping);
            return None;
        }
        self.mapped += 1;
        Some(Persistent { mapping, dev_pfn })
    }

    /// Unmaps a persistent grant (which also takes it out of the IOMMU
    /// space, PDEV-8: call only once no device request can reach it).
    pub fn unmap_persistent(&mut self, p: Persistent) {
        if let Some(w) = self.window.as_mut() {
            w.free.push(p.dev_pfn);
        }
        self.mapped -= 1;
        self.release_mapping(p.mapping);
    }

    fn release_mapping(&mut self, mapping: Mapping) {
        let va = mapping.va();
        match mapping.unmap() {
            Ok(()) => self.vas.push(va),
            Err((_, e)) => println!("blkback: unmapping a persistent grant: {e}"),
        }
    }

    /// `n` frames of the pool, or `None` if fewer are free.
    pub fn take_frames(&mut self, n: usize) -> Option<Vec<Frame>> {
        if n > self.pool.len() {
            return None;
        }
        let at = self.pool.len() - n;
        Some(self.pool.split_off(at))
    }

    /// Gives frames back to the pool.
    pub fn give_frames(&mut self, frames: Vec<Frame>) {
        self.pool.extend(frames);
    }

    /// Free pool frames.
    pub fn free_frames(&self) -> usize {
        self.pool.len()
    }

    /// The device segments covering the first `bytes` bytes of `frames`.
    pub fn segments(&self, frames: &[Frame], bytes: usize) -> Vec<Segment> {
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| (i * FRAME, f))
            .take_while(|&(at, _)| at < bytes)
            .map(|(at, f)| Segment {
                addr: match self.mode {
                    DmaMode::Iommu => f.pfn() << 12,
                    DmaMode::Machine => f.mfn() << 12,
                },
                len: (bytes - at).min(FRAME) as u32,
            })
            .collect()
    }

    /// Moves everything along, gives reclaimed frames back to the pool;
    /// adds to `released` the jobs the device let go of only now (answered
    /// earlier on a timeout).
    pub fn pump(&mut self, released: &mut Vec<u64>) -> bool {
        let progress = self.queue.pump();
        for (user, frames) in self.queue.take_reclaimed() {
            self.give_frames(frames);
            released.push(user);
        }
        progress
    }

    /// One synchronous job over `bytes` bytes through pool frames.
    fn run(
        &mut self,
        op: BlockOp,
        unit: u64,
        bytes: usize,
        fill: impl FnOnce(&mut [Frame]),
    ) -> Result<Vec<Frame>, StoreError> {
        let mut frames = self
            .take_frames(bytes.div_ceil(FRAME).max(1))
            .ok_or(StoreError::Io)?;
        fill(&mut frames);
        let segments = self.segments(&frames, bytes);
        // A failed job's frames come back through `pump` once the device let
        // go of them, or are freed if it never had them.
        self.queue
            .run_alone(op, unit, &segments, frames)
            .map_err(|_| StoreError::Io)
    }
}

impl BlockStore for RealDisk {
    fn units(&self) -> u64 {
        self.queue.units()
    }

    fn sector_size(&self) -> u32 {
        UNIT as u32
    }

    fn read(&mut self, unit: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        let units = buf.len() as u64 / UNIT as u64;
        if !buf.len().is_multiple_of(UNIT) {
            return Err(StoreError::BadLength);
        }
        check_range(unit, units, self.units())?;
        let chunk = self.pool.len().min(256) * FRAME;
        for (i, piece) in buf.chunks_mut(chunk).enumerate() {
            let at = unit + (i * chunk / UNIT) as u64;
            let frames = self.run(BlockOp::Read, at, piece.len(), |_| {})?;
            for (j, part) in piece.chunks_mut(FRAME).enumerate() {
                frames[j].read_bytes(0, part);
            }
            self.give_frames(frames);
        }
        Ok(())
    }

    fn write(&mut self, unit: u64, data: &[u8]) -> Result<(), StoreError> {
        let units = data.len() as u64 / UNIT as u64;
        if !data.len().is_multiple_of(UNIT) {
            return Err(StoreError::BadLength);
        }
        check_range(unit, units, self.units())?;
        let chunk = self.pool.len().min(256) * FRAME;
        for (i, piece) in data.chunks(chunk).enumerate() {
            let at = unit + (i * chunk / UNIT) as u64;
            let frames = self.run(BlockOp::Write, at, piece.len(), |frames| {
                for (j, part) in piece.chunks(FRAME).enumerate() {
                    frames[j].write_bytes(0, part);
                }
            })?;
            self.give_frames(frames);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        let frames = self.run(BlockOp::Flush, 0, 0, |_| {})?;
        self.give_frames(frames);
        Ok(())
    }

    /// Neither driver issues discards yet; the units keep their contents,
    /// which "may read back as anything" allows.
    fn discard(&mut self, unit: u64, count: u64) -> Result<(), StoreError> {
        check_range(unit, count, self.units())
    }
}
