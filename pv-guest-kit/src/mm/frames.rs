//! The domain's free frames (SPEC.md §5.2): a bitmap allocator over the pfns
//! `first_free_pfn .. nr_pages` that the heap did not take, and [`Frame`], the
//! token that owns one of them.
//!
//! # Invariants
//! - A pfn is either free in the bitmap or owned by exactly one [`Frame`]
//!   (or by a part of the kit that took it out of a `Frame` with
//!   [`Frame::into_raw`] and gives it back with [`Frame::from_raw`]).
//! - While a `Frame` exists, its physmap page is mapped writable and nothing
//!   but the `Frame`'s owner uses it; [`crate::mm::physmap`] relies on this
//!   for its writes. Turning a frame into a page table goes through
//!   [`Frame::into_readonly`], which gives up the `Frame`.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::PAGE_SIZE;
use spin::Mutex;

use super::{layout, MmError};

/// A bitmap of free pfns in `base .. base + count`.
#[derive(Clone, Debug)]
pub struct FrameAllocator {
    base: u64,
    count: u64,
    /// Bit `i` set: pfn `base + i` is free.
    bits: Vec<u64>,
    free: u64,
    /// Word to start the next search at.
    hint: usize,
}

/// Why a pfn cannot be freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The pfn is not managed by this allocator.
    OutOfRange,
    /// The pfn is already free.
    DoubleFree,
}

impl FrameAllocator {
    /// An allocator owning every pfn in `start .. end` (empty if `end <= start`).
    pub fn new(start: u64, end: u64) -> Self {
        let count = end.saturating_sub(start);
        let words = usize::try_from(count.div_ceil(64)).unwrap_or(0);
        let mut bits = vec![u64::MAX; words];
        if !count.is_multiple_of(64) {
            if let Some(last) = bits.last_mut() {
                *last = (1u64 << (count % 64)) - 1;
            }
        }
        Self {
            base: start,
            count,
            bits,
            free: count,
            hint: 0,
        }
    }

    /// Pfns currently free.
    pub fn free_count(&self) -> u64 {
        self.free
    }

    /// Pfns managed in all.
    pub fn total(&self) -> u64 {
        self.count
    }

    /// Whether `pfn` is managed here and free.
    pub fn is_free(&self, pfn: u64) -> bool {
        self.locate(pfn)
            .is_some_and(|(word, bit)| self.bits[word] & (1 << bit) != 0)
    }

    /// Takes the lowest free pfn at or after the search hint.
    pub fn alloc(&mut self) -> Option<u64> {
        let words = self.bits.len();
        for step in 0..words {
            let word = (self.hint + step) % words;
            let bits = self.bits[word];
            if bits != 0 {
                let bit = bits.trailing_zeros();
                self.bits[word] &= !(1u64 << bit);
                self.free -= 1;
                self.hint = word;
                return Some(self.base + (word as u64) * 64 + u64::from(bit));
            }
        }
        None
    }

    /// Returns `pfn` to the pool.
    pub fn free(&mut self, pfn: u64) -> Result<(), FreeError> {
        let (word, bit) = self.locate(pfn).ok_or(FreeError::OutOfRange)?;
        if self.bits[word] & (1 << bit) != 0 {
            return Err(FreeError::DoubleFree);
        }
        self.bits[word] |= 1 << bit;
        self.free += 1;
        self.hint = self.hint.min(word);
        Ok(())
    }

    fn locate(&self, pfn: u64) -> Option<(usize, u32)> {
        let offset = pfn.checked_sub(self.base).filter(|&o| o < self.count)?;
        Some(((offset / 64) as usize, (offset % 64) as u32))
    }
}

/// The domain's allocator, set up by [`super::init`].
static FRAMES: Mutex<Option<FrameAllocator>> = Mutex::new(None);

/// Hands the pfns `start .. end` to the global allocator (replacing any).
pub(crate) fn init(start: u64, end: u64) {
    *FRAMES.lock() = Some(FrameAllocator::new(start, end));
}

/// One free frame of this domain, owned. Dropping it returns it to the pool.
#[derive(Debug)]
pub struct Frame {
    pfn: u64,
}

impl Frame {
    /// Allocates a frame. Its contents are whatever the last owner left.
    pub fn alloc() -> Result<Frame, MmError> {
        let pfn = FRAMES
            .lock()
            .as_mut()
            .and_then(FrameAllocator::alloc)
            .ok_or(MmError::OutOfFrames)?;
        Ok(Frame { pfn })
    }

    /// Allocates a zeroed frame.
    pub fn alloc_zeroed() -> Result<Frame, MmError> {
        let mut frame = Frame::alloc()?;
        frame.zero();
        Ok(frame)
    }

    /// The frame's pfn.
    pub fn pfn(&self) -> u64 {
        self.pfn
    }

    /// The frame's mfn (from the P2M).
    pub fn mfn(&self) -> u64 {
        layout().mfn(self.pfn)
    }

    /// Virtual address of the frame's physmap mapping.
    pub fn va(&self) -> u64 {
        layout().pfn_va(self.pfn)
    }

    /// Zeroes the frame.
    pub fn zero(&mut self) {
        super::physmap::zero_frame(self);
    }

    /// Reads word `index` (0..512).
    pub fn read_u64(&self, index: usize) -> u64 {
        assert!(index < 512, "frame word {index} out of range");
        super::physmap::read_va(self.va() + index as u64 * 8)
    }

    /// Writes word `index` (0..512).
    pub fn write_u64(&mut self, index: usize, value: u64) {
        super::physmap::write_frame_u64(self, index, value);
    }

    /// Copies `bytes` into the frame at byte `offset` (panics if they do not fit).
    pub fn write_bytes(&mut self, offset: usize, bytes: &[u8]) {
        super::physmap::write_frame_bytes(self, offset, bytes);
    }

    /// Copies bytes out of the frame from byte `offset`.
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        assert!(
            offset
                .checked_add(dst.len())
                .is_some_and(|end| end <= PAGE_SIZE as usize),
            "read leaves the frame"
        );
        super::physmap::read_bytes(self.va() + offset as u64, dst);
    }

    /// Gives up the token without freeing the pfn: the caller now owns the
    /// pfn under the module invariants and must return it with
    /// [`Frame::from_raw`].
    pub(crate) fn into_raw(self) -> u64 {
        let pfn = self.pfn;
        core::mem::forget(self);
        pfn
    }

    /// Takes back a pfn given up with [`Frame::into_raw`]; its physmap page
    /// must be writable again.
    pub(crate) fn from_raw(pfn: u64) -> Frame {
        Frame { pfn }
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        if let Some(frames) = FRAMES.lock().as_mut() {
            if let Err(err) = frames.free(self.pfn) {
                panic!("freeing pfn {:#x}: {err:?}", self.pfn);
            }
        }
    }
}

/// Free frames left in the global allocator.
pub fn free_frames() -> u64 {
    FRAMES.lock().as_ref().map_or(0, FrameAllocator::free_count)
}

/// Returns `(free, total)` of the global allocator.
pub fn frame_stats() -> (u64, u64) {
    FRAMES
        .lock()
        .as_ref()
        .map_or((0, 0), |f| (f.free_count(), f.total()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_every_pfn_once() {
        let mut a = FrameAllocator::new(100, 300);
        assert_eq!(a.free_count(), 200);
        let mut got: Vec<u64> = core::iter::from_fn(|| a.alloc()).collect();
        assert_eq!(got.len(), 200);
        got.sort();
        assert_eq!(got, (100..300).collect::<Vec<_>>());
        assert_eq!(a.alloc(), None);
        assert_eq!(a.free_count(), 0);
    }

    #[test]
    fn frees_and_reuses() {
        let mut a = FrameAllocator::new(10, 75);
        let p = a.alloc().unwrap();
        let q = a.alloc().unwrap();
        assert_ne!(p, q);
        assert!(!a.is_free(p));
        assert_eq!(a.free(p), Ok(()));
        assert!(a.is_free(p));
        assert_eq!(a.free(p), Err(FreeError::DoubleFree));
        assert_eq!(a.free(9), Err(FreeError::OutOfRange));
        assert_eq!(a.free(75), Err(FreeError::OutOfRange));
        assert_eq!(a.alloc(), Some(p));
        assert_eq!(a.free_count(), 63);
    }

    #[test]
    fn empty_ranges() {
        let mut a = FrameAllocator::new(5, 5);
        assert_eq!(a.alloc(), None);
        let mut b = FrameAllocator::new(9, 3);
        assert_eq!(b.alloc(), None);
        assert_eq!(b.total(), 0);
    }
}
