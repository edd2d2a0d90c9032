//! The machine's IOMMUs and the driver domain's DMA space, live (PDEV-6 ..
//! PDEV-8): register access through the direct map, table frames from the
//! hypervisor heap, fault reporting.
//!
//! Lock order: `domain::DOMAINS`, `grant::live::GRANTS`, `mm::live::FRAMES`,
//! then [`IOMMU`], then the console.
//!
//! # Invariants
//! - The driver domain's space maps pfn `p` to `P2M[p]` for `p < ram_pages`,
//!   writable unless that frame is one of its page tables (read-only then),
//!   and the dfns placed in [`DriverSpace::grants`] to granted frames;
//!   nothing else.
//! - After [`unmap_grant`] returns, no unit holds a cached translation of
//!   that dfn (every unit's IOTLB was invalidated and the invalidation
//!   completed).

use alloc::boxed::Box;
use alloc::vec::Vec;

use hypercall_abi::physdev::{PHYSDEV_IOMMU_AMDVI, PHYSDEV_IOMMU_OFF, PHYSDEV_IOMMU_VTD};

use super::grant_window::GrantPlacements;
use super::page_table::{IoPageTable, MapError, TableFrames};
use super::{amdvi, vtd, DmaFault, Iommu, Mmio};
use crate::mm::{phys_to_virt, DIRECT_MAP_BASE, DIRECT_MAP_SIZE};

/// Registers of a unit reached through the direct map (the 3–4 GiB part of
/// it is uncached).
pub struct DirectMmio {
    va: u64,
}

impl DirectMmio {
    /// The `len` bytes of registers at physical `base`; `None` if outside
    /// the uncached part of the direct map.
    pub fn new(base: u64, len: u64) -> Option<Self> {
        (base >= 3 << 30 && base.checked_add(len)? <= DIRECT_MAP_SIZE).then(|| Self {
            va: phys_to_virt(base),
        })
    }
}

impl Mmio for DirectMmio {
    fn read32(&self, offset: u64) -> u32 {
        // SAFETY: `va` maps the unit's `len` bytes of registers uncached
        // (checked in `new`); the drivers use architectural register offsets
        // inside that window.
        unsafe { core::ptr::read_volatile((self.va + offset) as *const u32) }
    }
    fn write32(&self, offset: u64, value: u32) {
        // SAFETY: as for `read32`.
        unsafe { core::ptr::write_volatile((self.va + offset) as *mut u32, value) }
    }
    fn read64(&self, offset: u64) -> u64 {
        // SAFETY: as for `read32`; 64-bit registers are 8-byte aligned.
        unsafe { core::ptr::read_volatile((self.va + offset) as *const u64) }
    }
    fn write64(&self, offset: u64, value: u64) {
        // SAFETY: as for `read64`.
        unsafe { core::ptr::write_volatile((self.va + offset) as *mut u64, value) }
    }
}

/// IOMMU table frames from the hypervisor heap (which lies in the direct
/// map, so a frame's physical address is its address minus the map's base).
#[derive(Clone, Copy, Default)]
pub struct HeapFrames;

const FRAME: core::alloc::Layout = match core::alloc::Layout::from_size_align(4096, 4096) {
    Ok(l) => l,
    Err(_) => panic!("layout"),
};

impl TableFrames for HeapFrames {
    fn alloc_zeroed(&mut self) -> Option<u64> {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(FRAME) };
        (!p.is_null()).then(|| p as u64 - DIRECT_MAP_BASE)
    }
    fn alloc_contiguous(&mut self, pages: usize) -> Option<u64> {
        // Heap memory is contiguous in the direct map, hence physically.
        let size = pages.checked_mul(4096).filter(|&s| s > 0)?;
        let layout = core::alloc::Layout::from_size_align(size, 4096).ok()?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        (!p.is_null()).then(|| p as u64 - DIRECT_MAP_BASE)
    }
    fn read(&self, table: u64, index: u64) -> u64 {
        // SAFETY: `table` came from `alloc_zeroed`/`alloc_contiguous` (heap
        // frames in the direct map) and the unit drivers index only inside
        // what they allocated.
        unsafe { core::ptr::read_volatile((phys_to_virt(table) as *const u64).add(index as usize)) }
    }
    fn write(&mut self, table: u64, index: u64, value: u64) {
        // SAFETY: as for `read`; those frames belong to the IOMMU tables only.
        unsafe {
            core::ptr::write_volatile((phys_to_virt(table) as *mut u64).add(index as usize), value)
        }
    }
}

/// Which entry format the driver domain's space uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Vtd,
    AmdVi,
}

/// The driver domain's DMA space.
pub struct DriverSpace {
    pub table: IoPageTable,
    pub format: Format,
    /// pfns `0..ram_pages` map its memory.
    pub ram_pages: u64,
    /// Grant frames placed in the space (PDEV-8).
    pub grants: GrantPlacements,
}
/// Faults logged one by one; beyond, only counted (and summarised).
const FAULTS_LOGGED: u64 = 100;

/// Every IOMMU and the driver domain's space.
pub struct IommuState {
    pub units: Vec<Box<dyn Iommu + Send>>,
    pub space: Option<DriverSpace>,
    /// DMA faults seen (PDEV-7).
    pub faults: u64,
}

pub static IOMMU: crate::sync::Mutex<IommuState> = crate::sync::Mutex::new(IommuState {
    units: Vec::new(),
    space: None,
    faults: 0,
});

impl IommuState {
    /// `PHYSDEV_IOMMU_*` of the running configuration.
    pub fn mode(&self) -> u32 {
        match self.space.as_ref().map(|s| s.format) {
            Some(Format::Vtd) => PHYSDEV_IOMMU_VTD,
            Some(Format::AmdVi) => PHYSDEV_IOMMU_AMDVI,
            None => PHYSDEV_IOMMU_OFF,
        }
    }

    /// Maps `dfn` → `mfn` in the driver domain's space.
    pub fn map(&mut self, dfn: u64, mfn: u64, writable: bool) -> Result<(), MapError> {
        let space = self.space.as_ref().ok_or(MapError::NotMapped)?;
        let mut mem = HeapFrames;
        match space.format {
            Format::Vtd => space
                .table
                .map::<vtd::SecondLevel>(&mut mem, dfn, mfn, writable),
            Format::AmdVi => space
                .table
                .map::<amdvi::IoPte>(&mut mem, dfn, mfn, writable),
        }
    }

    /// Unmaps `dfn` and invalidates every unit's IOTLB (completed on return).
    pub fn unmap(&mut self, dfn: u64) -> Result<u64, MapError> {
        let space = self.space.as_ref().ok_or(MapError::NotMapped)?;
        let mut mem = HeapFrames;
        let mfn = match space.format {
            Format::Vtd => space.table.unmap::<vtd::SecondLevel>(&mut mem, dfn),
            Format::AmdVi => space.table.unmap::<amdvi::IoPte>(&mut mem, dfn),
        }?;
        for unit in &mut self.units {
            unit.flush_iotlb();
        }
        Ok(mfn)
    }

    /// Changes whether `dfn` (mapped to `mfn`) is writable, and invalidates
    /// every unit's IOTLB.
    pub fn set_writable(&mut self, dfn: u64, mfn: u64, writable: bool) {
        let Some(space) = self.space.as_ref() else {
            return;
        };
        let mut mem = HeapFrames;
        let done = match space.format {
            Format::Vtd => space
                .table
                .unmap::<vtd::SecondLevel>(&mut mem, dfn)
                .and_then(|_| {
                    space
                        .table
                        .map::<vtd::SecondLevel>(&mut mem, dfn, mfn, writable)
                }),
            Format::AmdVi => space
                .table
                .unmap::<amdvi::IoPte>(&mut mem, dfn)
                .and_then(|_| {
                    space
                        .table
                        .map::<amdvi::IoPte>(&mut mem, dfn, mfn, writable)
                }),
        };
        if let Err(e) = done {
            log::error!("iommu: remapping dfn {dfn:#x}: {e:?}");
        }
        for unit in &mut self.units {
            unit.flush_iotlb();
        }
    }

    /// Reads and reports every recorded fault (PDEV-7).
    pub fn drain_faults(&mut self) {
        let mut seen = self.faults;
        for unit in &mut self.units {
            unit.drain_faults(&mut |fault: DmaFault| {
                seen += 1;
                if seen <= FAULTS_LOGGED {
                    log::warn!("iommu: DMA fault: {fault}");
                } else if seen == FAULTS_LOGGED + 1 {
                    log::warn!(
                        "iommu: more than {FAULTS_LOGGED} DMA faults; counting them silently"
                    );
                }
            });
        }
        self.faults = seen;
    }
}

/// A frame of the driver domain (at `pfn`) became a page table or stopped
/// being one: devices lose or regain write access to it (PDEV-6).
pub fn set_dma_writable(mfn: u64, pfn: Option<u64>, writable: bool) {
    let mut iommu = IOMMU.lock();
    let Some(space) = iommu.space.as_ref() else {
        return;
    };
    match pfn {
        Some(pfn) if pfn < space.ram_pages => iommu.set_writable(pfn, mfn, writable),
        _ => {}
    }
}

/// Vector of the IOMMUs' fault event interrupt.
pub const FAULT_VECTOR: u8 = 0x30;

/// The fault interrupt: report what the units recorded.
pub fn fault_interrupt() {
    IOMMU.lock().drain_faults();
}
