//! Memory shared with devices: pages the driver domain lends to a device for
//! rings, commands and data.
//!
//! A device reaches a page through its *device address*, which the kernel's
//! allocator decides: behind an IOMMU it is the domain's pseudo-physical
//! address (pfn << 12), which the IOMMU translates; with the IOMMU off it is
//! the machine address from the P2M (mfn << 12). The two are not contiguous
//! the same way, so drivers never assume two pages are adjacent on the bus:
//! every structure a device reads is laid out within one page, and data
//! buffers are lists of [`Segment`]s.
//!
//! # Invariants
//! - A [`DmaPage`]'s device address is page aligned and stays valid (the
//!   device may use it) as long as the page value lives.
//! - Driver-side accesses of ring indices and descriptors go through the
//!   sized accessors, which implementations make single (untorn) accesses.

use core::fmt;

/// Bytes in a DMA page.
pub const PAGE_SIZE: usize = 4096;

/// Why DMA memory could not be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaError {
    /// The domain has no free frame left.
    OutOfMemory,
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaError::OutOfMemory => write!(f, "out of DMA memory"),
        }
    }
}

/// One page of memory a device may read and write.
pub trait DmaPage {
    /// Where the device finds the page (page aligned).
    fn device_addr(&self) -> u64;
    /// Copies `dst.len()` bytes from byte `offset` (must stay in the page).
    fn read(&self, offset: usize, dst: &mut [u8]);
    /// Copies `src` to byte `offset` (must stay in the page).
    fn write(&mut self, offset: usize, src: &[u8]);

    /// Reads the little-endian `u16` at `offset` (2-aligned) in one access.
    fn read_u16(&self, offset: usize) -> u16 {
        let mut bytes = [0; 2];
        self.read(offset, &mut bytes);
        u16::from_le_bytes(bytes)
    }
    /// Reads the little-endian `u32` at `offset` (4-aligned) in one access.
    fn read_u32(&self, offset: usize) -> u32 {
        let mut bytes = [0; 4];
        self.read(offset, &mut bytes);
        u32::from_le_bytes(bytes)
    }
    /// Reads the little-endian `u64` at `offset` (8-aligned) in one access.
    fn read_u64(&self, offset: usize) -> u64 {
        let mut bytes = [0; 8];
        self.read(offset, &mut bytes);
        u64::from_le_bytes(bytes)
    }
    /// Writes a little-endian `u16` at `offset` (2-aligned) in one access.
    fn write_u16(&mut self, offset: usize, value: u16) {
        self.write(offset, &value.to_le_bytes());
    }
    /// Writes a little-endian `u32` at `offset` (4-aligned) in one access.
    fn write_u32(&mut self, offset: usize, value: u32) {
        self.write(offset, &value.to_le_bytes());
    }
    /// Writes a little-endian `u64` at `offset` (8-aligned) in one access.
    fn write_u64(&mut self, offset: usize, value: u64) {
        self.write(offset, &value.to_le_bytes());
    }
    /// Zeroes the page.
    fn zero(&mut self) {
        self.write(0, &[0; PAGE_SIZE]);
    }
}

/// Hands out zeroed DMA pages.
pub trait DmaAllocator {
    /// The page type.
    type Page: DmaPage;
    /// One zeroed page.
    fn alloc_page(&mut self) -> Result<Self::Page, DmaError>;
}

/// A piece of a data buffer as the device sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Device address of the first byte.
    pub addr: u64,
    /// Length in bytes (non-zero).
    pub len: u32,
}

impl Segment {
    /// The whole of `page`.
    pub fn page(page: &impl DmaPage) -> Segment {
        Segment {
            addr: page.device_addr(),
            len: PAGE_SIZE as u32,
        }
    }

    /// `len` bytes of `page` from `offset`; `None` if they leave the page or
    /// are empty.
    pub fn within(page: &impl DmaPage, offset: usize, len: usize) -> Option<Segment> {
        let end = offset.checked_add(len)?;
        if len == 0 || end > PAGE_SIZE {
            return None;
        }
        Some(Segment {
            addr: page.device_addr() + offset as u64,
            len: len as u32,
        })
    }
}

/// A buffer of whole DMA pages, filled and read as one byte string.
#[derive(Debug)]
pub struct PageBuffer<P: DmaPage> {
    pages: alloc::vec::Vec<P>,
}

impl<P: DmaPage> PageBuffer<P> {
    /// `bytes` rounded up to whole pages, zeroed.
    pub fn new<A: DmaAllocator<Page = P>>(alloc: &mut A, bytes: usize) -> Result<Self, DmaError> {
        let count = bytes.div_ceil(PAGE_SIZE).max(1);
        let mut pages = alloc::vec::Vec::with_capacity(count);
        for _ in 0..count {
            pages.push(alloc.alloc_page()?);
        }
        Ok(Self { pages })
    }

    /// Capacity in bytes.
    pub fn len(&self) -> usize {
        self.pages.len() * PAGE_SIZE
    }

    /// Always false: a buffer has at least one page.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The segments covering the first `bytes` bytes (one per page touched).
    pub fn segments(&self, bytes: usize) -> impl Iterator<Item = Segment> + '_ {
        let bytes = bytes.min(self.len());
        self.pages
            .iter()
            .enumerate()
            .take_while(move |(i, _)| i * PAGE_SIZE < bytes)
            .map(move |(i, page)| Segment {
                addr: page.device_addr(),
                len: (bytes - i * PAGE_SIZE).min(PAGE_SIZE) as u32,
            })
    }

    /// Copies `src` into the buffer from byte 0 (truncated to the capacity).
    pub fn fill(&mut self, src: &[u8]) {
        for (page, chunk) in self.pages.iter_mut().zip(src.chunks(PAGE_SIZE)) {
            page.write(0, chunk);
        }
    }

    /// Copies the buffer from byte 0 into `dst` (up to the capacity).
    pub fn copy_out(&self, dst: &mut [u8]) {
        for (page, chunk) in self.pages.iter().zip(dst.chunks_mut(PAGE_SIZE)) {
            page.read(0, chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimMemory;

    #[test]
    fn page_buffer_segments_follow_pages() {
        let mem = SimMemory::new();
        let mut alloc = mem.allocator();
        let mut buf = PageBuffer::new(&mut alloc, 3 * PAGE_SIZE - 100).unwrap();
        assert_eq!(buf.len(), 3 * PAGE_SIZE);
        let segs: alloc::vec::Vec<_> = buf.segments(PAGE_SIZE + 10).collect();
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].len, PAGE_SIZE as u32);
        assert_eq!(segs[1].len, 10);
        // The simulated allocator never hands out adjacent pages.
        assert_ne!(segs[0].addr + PAGE_SIZE as u64, segs[1].addr);
        let data: alloc::vec::Vec<u8> = (0..2 * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
        buf.fill(&data);
        assert_eq!(
            mem.read_vec(segs[1].addr, 10),
            data[PAGE_SIZE..PAGE_SIZE + 10]
        );
        let mut back = alloc::vec![0; 2 * PAGE_SIZE];
        buf.copy_out(&mut back);
        assert_eq!(back, data);
    }

    #[test]
    fn segment_within_rejects_overflow() {
        let mem = SimMemory::new();
        let page = mem.allocator().alloc_page().unwrap();
        assert!(Segment::within(&page, 4000, 96).is_some());
        assert!(Segment::within(&page, 4000, 97).is_none());
        assert!(Segment::within(&page, 0, 0).is_none());
        assert!(Segment::within(&page, usize::MAX, 2).is_none());
    }
}
