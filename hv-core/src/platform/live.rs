//! The machine's own ACPI tables, read through the direct map at start of
//! day.

use crate::boot::multiboot::PhysMemory;
use crate::mm::{phys_to_virt, DIRECT_MAP_SIZE};

use super::acpi::{self, AcpiError, Madt};

/// Firmware memory below 4 GiB, read through the direct map.
pub struct FirmwareMemory;

impl PhysMemory for FirmwareMemory {
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        let Some(end) = pa.checked_add(buf.len() as u64) else {
            return false;
        };
        if end > DIRECT_MAP_SIZE {
            return false;
        }
        // SAFETY: the direct map covers [0, DIRECT_MAP_SIZE); ACPI tables and
        // the BIOS area are RAM or ROM, and reading them has no side effects.
        unsafe {
            core::ptr::copy_nonoverlapping(
                phys_to_virt(pa) as *const u8,
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        true
    }
}

/// The MADT of this machine: its usable local APICs (enabled first, in
/// table order) and I/O APICs.
pub fn madt_cpus() -> Result<Madt, AcpiError> {
    acpi::madt_cpus(&FirmwareMemory)
}
