//! DMA pages over the driver domain's own frames: a [`Frame`] from the kit's
//! allocator, addressed by the device as `pfn << 12` behind an IOMMU (PDEV-6)
//! or `mfn << 12` without one.
//!
//! # Invariants
//! - A [`FramePage`] owns its [`Frame`]: the frame's physmap page is mapped
//!   writable and no Rust reference covers it, so volatile and raw accesses
//!   inside it are sound. Devices write it concurrently; the drivers order
//!   their accesses with fences.
#![allow(unsafe_code)]

use driver_domain::dma::{DmaAllocator, DmaError, DmaPage, PAGE_SIZE};
use driver_domain::regs::fits;
use pv_guest_kit::mm::Frame;

/// How devices address this domain's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaMode {
    /// Behind an IOMMU: pseudo-physical addresses.
    Iommu,
    /// No IOMMU: machine addresses.
    Machine,
}

/// Allocates [`FramePage`]s.
#[derive(Clone, Copy, Debug)]
pub struct FrameDma {
    /// Addressing mode.
    pub mode: DmaMode,
}

impl DmaAllocator for FrameDma {
    type Page = FramePage;

    fn alloc_page(&mut self) -> Result<FramePage, DmaError> {
        let frame = Frame::alloc_zeroed().map_err(|_| DmaError::OutOfMemory)?;
        let device_addr = match self.mode {
            DmaMode::Iommu => frame.pfn() << 12,
            DmaMode::Machine => frame.mfn() << 12,
        };
        Ok(FramePage { frame, device_addr })
    }
}

/// One of the domain's frames lent to devices.
#[derive(Debug)]
pub struct FramePage {
    frame: Frame,
    device_addr: u64,
}

impl FramePage {
    fn at(&self, offset: usize, size: usize) -> u64 {
        assert!(
            fits(offset, size, PAGE_SIZE),
            "DMA page access {offset:#x}+{size} leaves the page"
        );
        self.frame.va() + offset as u64
    }
}

impl DmaPage for FramePage {
    fn device_addr(&self) -> u64 {
        self.device_addr
    }

    fn read(&self, offset: usize, dst: &mut [u8]) {
        let at = self.at(offset, dst.len());
        // SAFETY: the range lies in the owned frame (checked; module
        // invariant); `dst` is Rust memory elsewhere, so no overlap.
        unsafe { core::ptr::copy_nonoverlapping(at as *const u8, dst.as_mut_ptr(), dst.len()) }
    }

    fn write(&mut self, offset: usize, src: &[u8]) {
        let at = self.at(offset, src.len());
        // SAFETY: as in `read`.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), at as *mut u8, src.len()) }
    }

    fn read_u16(&self, offset: usize) -> u16 {
        let at = self.at(offset, 2);
        assert!(at.is_multiple_of(2));
        // SAFETY: in the owned frame, aligned; volatile because the device writes it.
        unsafe { core::ptr::read_volatile(at as *const u16) }
    }

    fn read_u32(&self, offset: usize) -> u32 {
        let at = self.at(offset, 4);
        assert!(at.is_multiple_of(4));
        // SAFETY: as in `read_u16`.
        unsafe { core::ptr::read_volatile(at as *const u32) }
    }

    fn read_u64(&self, offset: usize) -> u64 {
        let at = self.at(offset, 8);
        assert!(at.is_multiple_of(8));
        // SAFETY: as in `read_u16`.
        unsafe { core::ptr::read_volatile(at as *const u64) }
    }

    fn write_u16(&mut self, offset: usize, value: u16) {
        let at = self.at(offset, 2);
        assert!(at.is_multiple_of(2));
        // SAFETY: as in `read_u16`; one untorn store the device may observe.
        unsafe { core::ptr::write_volatile(at as *mut u16, value) }
    }

    fn write_u32(&mut self, offset: usize, value: u32) {
        let at = self.at(offset, 4);
        assert!(at.is_multiple_of(4));
        // SAFETY: as in `write_u16`.
        unsafe { core::ptr::write_volatile(at as *mut u32, value) }
    }

    fn write_u64(&mut self, offset: usize, value: u64) {
        let at = self.at(offset, 8);
        assert!(at.is_multiple_of(8));
        // SAFETY: as in `write_u16`.
        unsafe { core::ptr::write_volatile(at as *mut u64, value) }
    }

    fn zero(&mut self) {
        self.frame.zero();
    }
}
