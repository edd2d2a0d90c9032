//! The storage a block backend serves: the small [`BlockStore`] trait, the
//! domain's RAM disk ([`RamDisk`]), a real disk (`super::real_disk`, over the
//! virtio-blk or NVMe driver) and [`View`]s — a whole disk, a GPT partition
//! or an LBA range of one.
//!
//! Addresses and lengths are in 512-byte units ([`UNIT`]); buffers are
//! whole units. A store checks every range it is given (a backend bug must
//! not reach past a view).

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use pv_guest_kit::mm::{Frame, MmError};

/// Bytes per addressing unit.
pub const UNIT: usize = 512;
const UNITS_PER_FRAME: u64 = 8;

/// Why a store operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The range leaves the store.
    OutOfRange,
    /// The buffer is not whole units.
    BadLength,
    /// The device failed the request (or did not answer in time).
    Io,
}

/// A block device as a backend needs it. `flush` returns only once every
/// write that completed before it is on stable storage (BLK-5).
pub trait BlockStore {
    /// Capacity in 512-byte units.
    fn units(&self) -> u64;
    /// Logical sector size (512 or 4096).
    fn sector_size(&self) -> u32;
    /// Reads `buf.len() / 512` units at `unit`.
    fn read(&mut self, unit: u64, buf: &mut [u8]) -> Result<(), StoreError>;
    /// Writes `data.len() / 512` units at `unit`.
    fn write(&mut self, unit: u64, data: &[u8]) -> Result<(), StoreError>;
    /// Makes completed writes durable.
    fn flush(&mut self) -> Result<(), StoreError>;
    /// Discards `count` units at `unit` (they may read back as anything).
    fn discard(&mut self, unit: u64, count: u64) -> Result<(), StoreError>;
}

/// Checks `[unit, unit + count)` against `units`.
pub fn check_range(unit: u64, count: u64, units: u64) -> Result<(), StoreError> {
    match unit.checked_add(count) {
        Some(end) if end <= units => Ok(()),
        _ => Err(StoreError::OutOfRange),
    }
}

fn units_of(len: usize) -> Result<u64, StoreError> {
    if len.is_multiple_of(UNIT) {
        Ok((len / UNIT) as u64)
    } else {
        Err(StoreError::BadLength)
    }
}

/// A RAM disk in frames of the driver domain (not its small heap). Its
/// writes are as durable as it gets as soon as they complete, so `flush`
/// has nothing to wait for.
#[derive(Debug)]
pub struct RamDisk {
    frames: Vec<Frame>,
}

impl RamDisk {
    /// A zeroed RAM disk of `mib` MiB.
    pub fn new(mib: u64) -> Result<RamDisk, MmError> {
        let n = mib * 256;
        let mut frames = Vec::with_capacity(n as usize);
        for _ in 0..n {
            frames.push(Frame::alloc_zeroed()?);
        }
        Ok(RamDisk { frames })
    }

    /// Calls `f(frame, byte offset in frame, byte range in the buffer)` for
    /// each frame piece of `[unit, unit + len/512)`.
    fn pieces(unit: u64, len: usize, mut f: impl FnMut(usize, usize, core::ops::Range<usize>)) {
        let mut done = 0usize;
        while done < len {
            let u = unit + (done / UNIT) as u64;
            let frame = (u / UNITS_PER_FRAME) as usize;
            let offset = (u % UNITS_PER_FRAME) as usize * UNIT;
            let n = (4096 - offset).min(len - done);
            f(frame, offset, done..done + n);
            done += n;
        }
    }
}

impl BlockStore for RamDisk {
    fn units(&self) -> u64 {
        self.frames.len() as u64 * UNITS_PER_FRAME
    }

    fn sector_size(&self) -> u32 {
        512
    }

    fn read(&mut self, unit: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        check_range(unit, units_of(buf.len())?, self.units())?;
        let frames = &self.frames;
        RamDisk::pieces(unit, buf.len(), |frame, offset, range| {
            frames[frame].read_bytes(offset, &mut buf[range]);
        });
        Ok(())
    }

    fn write(&mut self, unit: u64, data: &[u8]) -> Result<(), StoreError> {
        check_range(unit, units_of(data.len())?, self.units())?;
        let frames = &mut self.frames;
        RamDisk::pieces(unit, data.len(), |frame, offset, range| {
            frames[frame].write_bytes(offset, &data[range]);
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn discard(&mut self, unit: u64, count: u64) -> Result<(), StoreError> {
        check_range(unit, count, self.units())?;
        let zero = [0u8; UNIT];
        for u in unit..unit + count {
            self.write(u, &zero)?;
        }
        Ok(())
    }
}

/// A disk shared by several views.
pub type SharedStore = Rc<RefCell<dyn BlockStore>>;

/// `count` units of a shared disk from `first`: what one guest sees.
#[derive(Clone)]
pub struct View {
    disk: SharedStore,
    first: u64,
    count: u64,
}

impl core::fmt::Debug for View {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "View({}+{})", self.first, self.count)
    }
}

impl View {
    /// Units `first .. first + count` of `disk` (checked to lie inside it).
    pub fn new(disk: SharedStore, first: u64, count: u64) -> Result<View, StoreError> {
        let units = disk.borrow().units();
        check_range(first, count, units)?;
        if count == 0 {
            return Err(StoreError::OutOfRange);
        }
        Ok(View { disk, first, count })
    }

    /// The first unit of the view on its disk.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// The whole disk.
    pub fn whole(disk: SharedStore) -> View {
        let count = disk.borrow().units();
        View {
            disk,
            first: 0,
            count,
        }
    }
}

impl BlockStore for View {
    fn units(&self) -> u64 {
        self.count
    }

    fn sector_size(&self) -> u32 {
        self.disk.borrow().sector_size()
    }

    fn read(&mut self, unit: u64, buf: &mut [u8]) -> Result<(), StoreError> {
        check_range(unit, units_of(buf.len())?, self.count)?;
        self.disk.borrow_mut().read(self.first + unit, buf)
    }

    fn write(&mut self, unit: u64, data: &[u8]) -> Result<(), StoreError> {
        check_range(unit, units_of(data.len())?, self.count)?;
        self.disk.borrow_mut().write(self.first + unit, data)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.disk.borrow_mut().flush()
    }

    fn discard(&mut self, unit: u64, count: u64) -> Result<(), StoreError> {
        check_range(unit, count, self.count)?;
        self.disk.borrow_mut().discard(self.first + unit, count)
    }
}
