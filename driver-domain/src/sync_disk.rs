//! A [`BlockDevice`] used one request at a time, on byte buffers: what the
//! block backend needs to serve a guest from a real disk (SPEC.md DEV-6
//! `disk=virtio-blk|nvme`).
//!
//! [`SyncDisk`] owns a bounce buffer of DMA pages. A read or write is cut
//! into requests of at most that many pages; each is submitted and polled
//! to its end before the next, so a call returns only when the device has
//! finished. [`SyncDisk::flush`] submits a device flush (virtio-blk
//! `VIRTIO_BLK_T_FLUSH`, NVMe FLUSH) and returns only once the device has
//! answered it: a flush the caller acknowledges has reached the device.
//!
//! # Invariants
//! - Addresses and lengths are in 512-byte units; the device's sectors are
//!   512 bytes ([`SyncDisk::new`] refuses other sizes).
//! - Nothing else is in flight on the device while a call runs (the disk
//!   is owned), so a completion with another tag is a device fault.
//! - Every wait is bounded by the clock and the timeout given at creation.

use alloc::boxed::Box;

use crate::blk::{BlockDevice, BlockError, BlockOp, BlockRequest};
use crate::dma::{DmaAllocator, DmaPage, PageBuffer, Segment, PAGE_SIZE};

/// Bytes per addressing unit.
pub const UNIT: usize = 512;
/// Most pages one request carries (128 KiB).
pub const MAX_REQUEST_PAGES: usize = 32;

/// A block device driven synchronously through a bounce buffer.
pub struct SyncDisk<D: BlockDevice, P: DmaPage> {
    dev: D,
    bounce: PageBuffer<P>,
    /// Bytes per request: whole pages, at most the device's segment limit.
    chunk: usize,
    now: Box<dyn FnMut() -> u64>,
    timeout: u64,
    next_tag: u64,
    /// Device flushes completed.
    pub flushes: u64,
}

impl<D: BlockDevice, P: DmaPage> core::fmt::Debug for SyncDisk<D, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SyncDisk({} sectors)", self.dev.info().sectors)
    }
}

impl<D: BlockDevice, P: DmaPage> SyncDisk<D, P> {
    /// Wraps `dev` (with nothing in flight). `now` reads a clock; a request
    /// not finished `timeout` clock ticks after it was submitted fails with
    /// [`BlockError::Timeout`].
    pub fn new<A: DmaAllocator<Page = P>>(
        dev: D,
        alloc: &mut A,
        now: Box<dyn FnMut() -> u64>,
        timeout: u64,
    ) -> Result<Self, BlockError> {
        let info = dev.info();
        if info.sector_size as usize != UNIT {
            return Err(BlockError::Unsupported);
        }
        let pages = usize::from(info.max_segments).clamp(1, MAX_REQUEST_PAGES);
        let bounce = PageBuffer::new(alloc, pages * PAGE_SIZE).map_err(|_| BlockError::NoMemory)?;
        Ok(SyncDisk {
            dev,
            bounce,
            chunk: pages * PAGE_SIZE,
            now,
            timeout,
            next_tag: 0,
            flushes: 0,
        })
    }

    /// Capacity in 512-byte units.
    pub fn units(&self) -> u64 {
        self.dev.info().sectors
    }

    /// Runs one request over the first `bytes` bytes of the bounce buffer.
    fn run(&mut self, op: BlockOp, sector: u64, bytes: usize) -> Result<(), BlockError> {
        let segments: alloc::vec::Vec<Segment> = self.bounce.segments(bytes).collect();
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        let req = BlockRequest {
            op,
            sector,
            segments: if op == BlockOp::Flush { &[] } else { &segments },
            tag,
        };
        self.dev.submit(&req)?;
        let start = (self.now)();
        loop {
            if let Some(done) = self.dev.poll() {
                return if done.tag == tag {
                    done.result
                } else {
                    Err(BlockError::DeviceFault)
                };
            }
            if (self.now)().wrapping_sub(start) > self.timeout {
                return Err(BlockError::Timeout);
            }
        }
    }

    fn check(&self, unit: u64, len: usize) -> Result<(), BlockError> {
        if !len.is_multiple_of(UNIT) {
            return Err(BlockError::BadLayout);
        }
        match unit.checked_add((len / UNIT) as u64) {
            Some(end) if end <= self.units() => Ok(()),
            _ => Err(BlockError::OutOfRange),
        }
    }

    /// Reads `buf.len() / 512` units at `unit`.
    pub fn read(&mut self, unit: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check(unit, buf.len())?;
        let chunk = self.chunk;
        for (i, piece) in buf.chunks_mut(chunk).enumerate() {
            let sector = unit + (i * chunk / UNIT) as u64;
            self.run(BlockOp::Read, sector, piece.len())?;
            self.bounce.copy_out(piece);
        }
        Ok(())
    }

    /// Writes `data.len() / 512` units at `unit`; returns once the device
    /// has completed them (not necessarily durably: see [`Self::flush`]).
    pub fn write(&mut self, unit: u64, data: &[u8]) -> Result<(), BlockError> {
        self.check(unit, data.len())?;
        let chunk = self.chunk;
        for (i, piece) in data.chunks(chunk).enumerate() {
            let sector = unit + (i * chunk / UNIT) as u64;
            self.bounce.fill(piece);
            self.run(BlockOp::Write, sector, piece.len())?;
        }
        Ok(())
    }

    /// Makes every completed write durable: returns once the device
    /// answered a flush.
    pub fn flush(&mut self) -> Result<(), BlockError> {
        self.run(BlockOp::Flush, 0, 0)?;
        self.flushes += 1;
        Ok(())
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }
}

#[cfg(test)]
mod tests {
    use alloc::collections::VecDeque;
    use alloc::rc::Rc;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::{Cell, RefCell};

    use super::*;
    use crate::blk::{validate, BlockCompletion, BlockInfo};
    use crate::sim::{SimMemory, SimPage};

    /// What the fake disk saw, in order.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Seen {
        Read(u64, u64),
        Write(u64, u64),
        Flush,
    }

    /// A disk in memory that finishes each request `delay` polls after it
    /// was submitted; writes become durable only at a flush.
    struct FakeDisk {
        mem: SimMemory,
        info: BlockInfo,
        volatile: Vec<u8>,
        durable: Rc<RefCell<Vec<u8>>>,
        seen: Rc<RefCell<Vec<Seen>>>,
        pending: VecDeque<(u32, BlockCompletion)>,
        delay: u32,
        fail_flush: bool,
    }

    impl BlockDevice for FakeDisk {
        fn info(&self) -> BlockInfo {
            self.info
        }

        fn submit(&mut self, req: &BlockRequest<'_>) -> Result<(), BlockError> {
            let count = validate(&self.info, req)?;
            let mut at = req.sector as usize * UNIT;
            match req.op {
                BlockOp::Read => {
                    for s in req.segments {
                        let len = s.len as usize;
                        self.mem.write(s.addr, &self.volatile[at..at + len]);
                        at += len;
                    }
                    self.seen.borrow_mut().push(Seen::Read(req.sector, count));
                }
                BlockOp::Write => {
                    for s in req.segments {
                        let len = s.len as usize;
                        let data = self.mem.read_vec(s.addr, len);
                        self.volatile[at..at + len].copy_from_slice(&data);
                        at += len;
                    }
                    self.seen.borrow_mut().push(Seen::Write(req.sector, count));
                }
                BlockOp::Flush => {
                    self.seen.borrow_mut().push(Seen::Flush);
                    if !self.fail_flush {
                        self.durable.borrow_mut().copy_from_slice(&self.volatile);
                    }
                }
            }
            let result = if req.op == BlockOp::Flush && self.fail_flush {
                Err(BlockError::Io)
            } else {
                Ok(())
            };
            self.pending.push_back((
                self.delay,
                BlockCompletion {
                    tag: req.tag,
                    result,
                },
            ));
            Ok(())
        }

        fn poll(&mut self) -> Option<BlockCompletion> {
            let (left, _) = self.pending.front_mut()?;
            if *left > 0 {
                *left -= 1;
                return None;
            }
            self.pending.pop_front().map(|(_, c)| c)
        }

        fn in_flight(&self) -> usize {
            self.pending.len()
        }
    }

    struct Rig {
        disk: SyncDisk<FakeDisk, SimPage>,
        durable: Rc<RefCell<Vec<u8>>>,
        seen: Rc<RefCell<Vec<Seen>>>,
    }

    fn rig(sectors: u64, max_segments: u16, delay: u32) -> Rig {
        let mem = SimMemory::new();
        let durable = Rc::new(RefCell::new(vec![0u8; sectors as usize * UNIT]));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let dev = FakeDisk {
            mem: mem.clone(),
            info: BlockInfo {
                sectors,
                sector_size: 512,
                max_segments,
                queue_depth: 4,
            },
            volatile: vec![0u8; sectors as usize * UNIT],
            durable: durable.clone(),
            seen: seen.clone(),
            pending: VecDeque::new(),
            delay,
            fail_flush: false,
        };
        let clock = Rc::new(Cell::new(0u64));
        let now = Box::new(move || {
            clock.set(clock.get() + 1);
            clock.get()
        });
        let disk = SyncDisk::new(dev, &mut mem.allocator(), now, 100).expect("disk");
        Rig {
            disk,
            durable,
            seen,
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn writes_in_page_chunks_and_reads_back() {
        // Two segments per request: 8 KiB chunks.
        let mut r = rig(256, 2, 3);
        let data = pattern(20 * 1024 + 512, 7);
        r.disk.write(5, &data).expect("write");
        assert_eq!(
            *r.seen.borrow(),
            [Seen::Write(5, 16), Seen::Write(21, 16), Seen::Write(37, 9)]
        );
        let mut back = vec![0u8; data.len()];
        r.disk.read(5, &mut back).expect("read");
        assert_eq!(back, data);
        assert_eq!(r.seen.borrow().len(), 6);
    }

    #[test]
    fn flush_reaches_the_device_before_it_returns() {
        let mut r = rig(64, 4, 5);
        let data = pattern(4096, 1);
        r.disk.write(8, &data).expect("write");
        // Written but not yet durable on the fake disk.
        assert_ne!(&r.durable.borrow()[8 * UNIT..16 * UNIT], &data[..]);
        r.disk.flush().expect("flush");
        assert_eq!(r.seen.borrow().last(), Some(&Seen::Flush));
        assert_eq!(&r.durable.borrow()[8 * UNIT..16 * UNIT], &data[..]);
        assert_eq!(r.disk.flushes, 1);
    }

    #[test]
    fn a_failed_flush_is_reported() {
        let mut r = rig(64, 4, 0);
        r.disk.dev.fail_flush = true;
        assert_eq!(r.disk.flush(), Err(BlockError::Io));
        assert_eq!(r.disk.flushes, 0);
    }

    #[test]
    fn refuses_bad_ranges_without_touching_the_device() {
        let mut r = rig(64, 4, 0);
        let mut buf = vec![0u8; 1024];
        assert_eq!(r.disk.read(63, &mut buf), Err(BlockError::OutOfRange));
        assert_eq!(r.disk.read(u64::MAX, &mut buf), Err(BlockError::OutOfRange));
        assert_eq!(r.disk.write(0, &buf[..100]), Err(BlockError::BadLayout));
        assert!(r.seen.borrow().is_empty());
    }

    #[test]
    fn a_silent_device_times_out() {
        // Completes only after far more polls than the timeout allows.
        let mut r = rig(64, 4, 10_000);
        assert_eq!(r.disk.flush(), Err(BlockError::Timeout));
    }

    #[test]
    fn refuses_4k_sector_devices() {
        let mem = SimMemory::new();
        let dev = FakeDisk {
            mem: mem.clone(),
            info: BlockInfo {
                sectors: 8,
                sector_size: 4096,
                max_segments: 1,
                queue_depth: 1,
            },
            volatile: vec![0; 8 * 4096],
            durable: Rc::new(RefCell::new(vec![0; 8 * 4096])),
            seen: Rc::new(RefCell::new(Vec::new())),
            pending: VecDeque::new(),
            delay: 0,
            fail_flush: false,
        };
        let r = SyncDisk::new(dev, &mut mem.allocator(), Box::new(|| 0), 1);
        assert_eq!(r.err(), Some(BlockError::Unsupported));
    }
}
