//! [`RegisterWindow`] over device MMIO mapped into the kernel address space
//! with `physdev::map_mmio` (uncached).
//!
//! # Invariants
//! - `base .. base + len` is mapped to the device's frames for the life of
//!   the program (mappings are never removed) and no Rust reference covers
//!   it: every access is a volatile read or write of the exact width.
#![allow(unsafe_code)]

use driver_domain::regs::{fits, RegisterWindow};

/// A window of mapped device registers.
#[derive(Clone, Copy, Debug)]
pub struct MmioWindow {
    base: u64,
    len: usize,
}

impl MmioWindow {
    /// The window at `base` of `len` bytes, which `map_mmio` mapped.
    pub fn new(base: u64, len: usize) -> Self {
        Self { base, len }
    }

    fn addr(&self, offset: usize, size: usize) -> u64 {
        assert!(
            fits(offset, size, self.len) && offset.is_multiple_of(size),
            "register access {offset:#x}/{size} outside its {:#x}-byte window",
            self.len
        );
        self.base + offset as u64
    }
}

impl RegisterWindow for MmioWindow {
    fn len(&self) -> usize {
        self.len
    }

    fn window(&self, offset: usize, len: usize) -> Option<Self> {
        fits(offset, len, self.len).then(|| MmioWindow::new(self.base + offset as u64, len))
    }

    fn read8(&self, offset: usize) -> u8 {
        let at = self.addr(offset, 1);
        // SAFETY: `at` lies in the mapped window (module invariant, checked
        // above); a volatile read of device memory.
        unsafe { core::ptr::read_volatile(at as *const u8) }
    }

    fn read16(&self, offset: usize) -> u16 {
        let at = self.addr(offset, 2);
        // SAFETY: as in `read8`; aligned (checked).
        unsafe { core::ptr::read_volatile(at as *const u16) }
    }

    fn read32(&self, offset: usize) -> u32 {
        let at = self.addr(offset, 4);
        // SAFETY: as in `read8`; aligned (checked).
        unsafe { core::ptr::read_volatile(at as *const u32) }
    }

    fn write8(&self, offset: usize, value: u8) {
        let at = self.addr(offset, 1);
        // SAFETY: as in `read8`; device memory no Rust value lives in.
        unsafe { core::ptr::write_volatile(at as *mut u8, value) }
    }

    fn write16(&self, offset: usize, value: u16) {
        let at = self.addr(offset, 2);
        // SAFETY: as in `write8`; aligned (checked).
        unsafe { core::ptr::write_volatile(at as *mut u16, value) }
    }

    fn write32(&self, offset: usize, value: u32) {
        let at = self.addr(offset, 4);
        // SAFETY: as in `write8`; aligned (checked).
        unsafe { core::ptr::write_volatile(at as *mut u32, value) }
    }
}
