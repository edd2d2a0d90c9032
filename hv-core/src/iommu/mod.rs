//! DMA remapping (PDEV-6 .. PDEV-8): one [`Iommu`] trait with two
//! implementations, Intel VT-d ([`vtd`]) and AMD-Vi ([`amdvi`]), chosen from
//! ACPI (DMAR or IVRS). Table layouts, command and fault encodings are
//! portable modules with host tests; registers are reached through the
//! narrow [`Mmio`] trait.

pub mod amdvi;
pub mod grant_window;
#[cfg(target_os = "none")]
pub mod live;
pub mod page_table;
pub mod vtd;

use crate::platform::pci::Bdf;

/// Register access of one remapping unit (offsets from its base).
pub trait Mmio {
    fn read32(&self, offset: u64) -> u32;
    fn write32(&self, offset: u64, value: u32);
    fn read64(&self, offset: u64) -> u64;
    fn write64(&self, offset: u64, value: u64);
}

/// A DMA fault, decoded (PDEV-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaFault {
    /// The requester.
    pub source: Bdf,
    /// The DMA address (page granular on VT-d).
    pub address: u64,
    pub write: bool,
    /// What the IOMMU said.
    pub reason: &'static str,
    /// The raw reason or event code.
    pub code: u8,
}

impl core::fmt::Display for DmaFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} {} {:#x}: {} ({:#x})",
            self.source,
            if self.write { "write" } else { "read" },
            self.address,
            self.reason,
            self.code
        )
    }
}

/// Why a unit could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuError {
    /// The unit does not support a page-table format hv-core can build.
    Unsupported(&'static str),
    /// A register did not reach the expected state in time.
    Timeout(&'static str),
    NoMemory,
}

impl core::fmt::Display for IommuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unsupported(what) => write!(f, "unsupported: {what}"),
            Self::Timeout(what) => write!(f, "timed out waiting for {what}"),
            Self::NoMemory => write!(f, "out of memory for its tables"),
        }
    }
}

/// A remapping unit driving one DMA space for the driver domain's devices.
/// Every function the unit sees that is not attached is blocked.
pub trait Iommu {
    /// "VT-d" or "AMD-Vi".
    fn name(&self) -> &'static str;
    /// Where its registers are.
    fn base(&self) -> u64;
    /// Lets `device` DMA through the space whose top table is `root`
    /// (`levels` deep); effective after [`Iommu::enable`] or at once if
    /// enabled.
    fn attach(&mut self, device: Bdf, root: u64, levels: u8) -> Result<(), IommuError>;
    /// Blocks `device` again (context or device-table entry cleared, caches
    /// invalidated).
    fn detach(&mut self, device: Bdf);
    /// Starts translation.
    fn enable(&mut self) -> Result<(), IommuError>;
    /// Invalidates every cached translation of the driver domain's space
    /// and waits until the unit has done so.
    fn flush_iotlb(&mut self);
    /// Hands every recorded fault to `report` and clears it.
    fn drain_faults(&mut self, report: &mut dyn FnMut(DmaFault));
    /// Page-table levels the unit walks for the driver domain (3 or 4).
    fn levels(&self) -> u8;
    /// Points the unit's fault interrupt at (`address`, `data`), if the
    /// unit has its own interrupt registers (VT-d); false if it signals
    /// through its PCI function's MSI capability instead (AMD-Vi).
    fn set_fault_interrupt(&mut self, address: u64, data: u32) -> bool;
}
