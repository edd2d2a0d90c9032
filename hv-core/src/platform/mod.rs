//! The platform: what firmware says the machine has (ACPI: CPUs, interrupt
//! controllers, ECAM windows, IOMMU units) and the PCI devices found through
//! ECAM. Parsers are portable and host-tested; [`live`] reads the real
//! tables through the direct map.

pub mod acpi;
pub mod dmar;
#[cfg(target_os = "none")]
pub mod irq;
pub mod ivrs;
#[cfg(target_os = "none")]
pub mod live;
pub mod pci;
pub mod vectors;
