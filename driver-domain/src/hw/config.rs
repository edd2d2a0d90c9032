//! [`ConfigSpace`] through `physdev_op` config reads and writes (PDEV-3).
//! hv-core filters writes; a refused write or a failed read is reported
//! once per device and reads as all ones, as an absent device would.

use core::cell::Cell;

use driver_domain::pci::ConfigSpace;
use pv_guest_kit::physdev::{config_read, config_write};
use pv_guest_kit::println;

/// A device's configuration space.
#[derive(Debug)]
pub struct PhysdevConfigSpace {
    sbdf: u32,
    reported: Cell<bool>,
}

impl PhysdevConfigSpace {
    /// The configuration space of device `sbdf`.
    pub fn new(sbdf: u32) -> Self {
        Self {
            sbdf,
            reported: Cell::new(false),
        }
    }

    fn report(&self, what: &str, offset: u16, err: hypercall_abi::Errno) {
        if !self.reported.replace(true) {
            println!(
                "dd: config {what} of {:#x} at {offset:#x} failed: {err}",
                self.sbdf
            );
        }
    }
}

impl ConfigSpace for PhysdevConfigSpace {
    fn read32(&self, offset: u16) -> u32 {
        config_read(self.sbdf, offset, 4).unwrap_or_else(|e| {
            self.report("read", offset, e);
            u32::MAX
        })
    }

    fn write32(&self, offset: u16, value: u32) {
        if let Err(e) = config_write(self.sbdf, offset, 4, value) {
            self.report("write", offset, e);
        }
    }

    fn read16(&self, offset: u16) -> u16 {
        config_read(self.sbdf, offset, 2).map_or_else(
            |e| {
                self.report("read", offset, e);
                u16::MAX
            },
            |v| v as u16,
        )
    }

    fn read8(&self, offset: u16) -> u8 {
        config_read(self.sbdf, offset, 1).map_or_else(
            |e| {
                self.report("read", offset, e);
                u8::MAX
            },
            |v| v as u8,
        )
    }

    fn write16(&self, offset: u16, value: u16) {
        if let Err(e) = config_write(self.sbdf, offset, 2, value.into()) {
            self.report("write", offset, e);
        }
    }
}
