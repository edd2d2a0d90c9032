//! Simulated hardware for the host tests: device-visible memory, register
//! windows backed by a device model, PCI configuration spaces.
//!
//! The memory hands out pages at scattered device addresses (never two
//! adjacent), as with the IOMMU off, so a driver that assumed contiguity
//! fails here.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use crate::dma::{DmaAllocator, DmaError, DmaPage, PAGE_SIZE};
use crate::regs::{fits, RegisterWindow};

/// Device-visible memory shared by the driver's pages and a simulated device.
#[derive(Clone, Default)]
pub struct SimMemory {
    pages: Rc<RefCell<BTreeMap<u64, Box<[u8; PAGE_SIZE]>>>>,
    next: Rc<Cell<u64>>,
    limit: Rc<Cell<Option<usize>>>,
}

impl SimMemory {
    pub fn new() -> Self {
        let mem = Self::default();
        mem.next.set(0x7_0000_0000);
        mem
    }

    /// An allocator over this memory.
    pub fn allocator(&self) -> SimAllocator {
        SimAllocator { mem: self.clone() }
    }

    /// Fail allocations once `pages` pages exist.
    pub fn set_limit(&self, pages: usize) {
        self.limit.set(Some(pages));
    }

    /// Device-side read; panics when it leaves an allocated page (the
    /// driver handed the device a bad address).
    pub fn read(&self, addr: u64, dst: &mut [u8]) {
        let base = addr & !(PAGE_SIZE as u64 - 1);
        let offset = (addr - base) as usize;
        assert!(
            fits(offset, dst.len(), PAGE_SIZE),
            "DMA read crosses a page at {addr:#x}"
        );
        let pages = self.pages.borrow();
        let page = pages
            .get(&base)
            .unwrap_or_else(|| panic!("DMA read of unallocated {addr:#x}"));
        dst.copy_from_slice(&page[offset..offset + dst.len()]);
    }

    /// Device-side write; panics as [`Self::read`].
    pub fn write(&self, addr: u64, src: &[u8]) {
        let base = addr & !(PAGE_SIZE as u64 - 1);
        let offset = (addr - base) as usize;
        assert!(
            fits(offset, src.len(), PAGE_SIZE),
            "DMA write crosses a page at {addr:#x}"
        );
        let mut pages = self.pages.borrow_mut();
        let page = pages
            .get_mut(&base)
            .unwrap_or_else(|| panic!("DMA write of unallocated {addr:#x}"));
        page[offset..offset + src.len()].copy_from_slice(src);
    }

    pub fn read_vec(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = alloc::vec![0; len];
        self.read(addr, &mut v);
        v
    }

    pub fn read_u16(&self, addr: u64) -> u16 {
        let mut b = [0; 2];
        self.read(addr, &mut b);
        u16::from_le_bytes(b)
    }

    pub fn read_u32(&self, addr: u64) -> u32 {
        let mut b = [0; 4];
        self.read(addr, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn read_u64(&self, addr: u64) -> u64 {
        let mut b = [0; 8];
        self.read(addr, &mut b);
        u64::from_le_bytes(b)
    }

    pub fn write_u16(&self, addr: u64, value: u16) {
        self.write(addr, &value.to_le_bytes());
    }

    pub fn write_u32(&self, addr: u64, value: u32) {
        self.write(addr, &value.to_le_bytes());
    }

    /// Pages currently allocated.
    pub fn page_count(&self) -> usize {
        self.pages.borrow().len()
    }
}

/// Allocates pages of a [`SimMemory`], three pages apart, going down.
pub struct SimAllocator {
    mem: SimMemory,
}

impl DmaAllocator for SimAllocator {
    type Page = SimPage;

    fn alloc_page(&mut self) -> Result<SimPage, DmaError> {
        if self
            .mem
            .limit
            .get()
            .is_some_and(|limit| self.mem.page_count() >= limit)
        {
            return Err(DmaError::OutOfMemory);
        }
        let addr = self.mem.next.get();
        self.mem.next.set(addr - 3 * PAGE_SIZE as u64);
        self.mem
            .pages
            .borrow_mut()
            .insert(addr, Box::new([0; PAGE_SIZE]));
        Ok(SimPage {
            mem: self.mem.clone(),
            addr,
        })
    }
}

/// A page of [`SimMemory`]; dropping it frees it (a device access after that
/// panics).
pub struct SimPage {
    mem: SimMemory,
    addr: u64,
}

impl Drop for SimPage {
    fn drop(&mut self) {
        self.mem.pages.borrow_mut().remove(&self.addr);
    }
}

impl DmaPage for SimPage {
    fn device_addr(&self) -> u64 {
        self.addr
    }

    fn read(&self, offset: usize, dst: &mut [u8]) {
        assert!(fits(offset, dst.len(), PAGE_SIZE));
        self.mem.read(self.addr + offset as u64, dst);
    }

    fn write(&mut self, offset: usize, src: &[u8]) {
        assert!(fits(offset, src.len(), PAGE_SIZE));
        self.mem.write(self.addr + offset as u64, src);
    }
}

/// What a simulated device does on register accesses.
pub trait RegisterModel {
    fn read(&mut self, offset: usize, size: usize) -> u64;
    fn write(&mut self, offset: usize, size: usize, value: u64);
}

/// A register window onto a [`RegisterModel`].
pub struct SimWindow<M: RegisterModel> {
    pub model: Rc<RefCell<M>>,
    base: usize,
    len: usize,
}

impl<M: RegisterModel> SimWindow<M> {
    pub fn new(model: Rc<RefCell<M>>, len: usize) -> Self {
        Self {
            model,
            base: 0,
            len,
        }
    }

    fn read(&self, offset: usize, size: usize) -> u64 {
        assert!(
            fits(offset, size, self.len),
            "register read {offset:#x} outside the window"
        );
        self.model.borrow_mut().read(self.base + offset, size)
    }

    fn write(&self, offset: usize, size: usize, value: u64) {
        assert!(
            fits(offset, size, self.len),
            "register write {offset:#x} outside the window"
        );
        self.model
            .borrow_mut()
            .write(self.base + offset, size, value)
    }
}

impl<M: RegisterModel> RegisterWindow for SimWindow<M> {
    fn len(&self) -> usize {
        self.len
    }

    fn window(&self, offset: usize, len: usize) -> Option<Self> {
        fits(offset, len, self.len).then(|| SimWindow {
            model: self.model.clone(),
            base: self.base + offset,
            len,
        })
    }

    fn read8(&self, offset: usize) -> u8 {
        self.read(offset, 1) as u8
    }
    fn read16(&self, offset: usize) -> u16 {
        self.read(offset, 2) as u16
    }
    fn read32(&self, offset: usize) -> u32 {
        self.read(offset, 4) as u32
    }
    fn write8(&self, offset: usize, value: u8) {
        self.write(offset, 1, value.into())
    }
    fn write16(&self, offset: usize, value: u16) {
        self.write(offset, 2, value.into())
    }
    fn write32(&self, offset: usize, value: u32) {
        self.write(offset, 4, value.into())
    }
}
