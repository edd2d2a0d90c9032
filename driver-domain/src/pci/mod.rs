//! PCI devices as domain 0 sees them: configuration space through
//! [`ConfigSpace`] (the kernel implements it with physdev_op config reads and
//! writes), the capability list, BARs and MSI-X.
//!
//! Configuration space is device data: every pointer read from it (capability
//! links, BAR values) is checked before use, and a capability list that loops
//! or points below the header ends the walk instead of hanging.

pub mod bar;
pub mod capability;

pub use bar::{Bar, BarKind};
pub use capability::{Capabilities, Capability};

/// Offset of the vendor id.
pub const VENDOR_ID: u16 = 0x00;
/// Offset of the device id.
pub const DEVICE_ID: u16 = 0x02;
/// Offset of the command register.
pub const COMMAND: u16 = 0x04;
/// Offset of the status register.
pub const STATUS: u16 = 0x06;
/// Offset of the first BAR.
pub const BAR0: u16 = 0x10;
/// Offset of the capability pointer.
pub const CAPABILITIES_POINTER: u16 = 0x34;

/// Command: respond to memory accesses.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command: the device may master the bus (DMA, MSI writes).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command: legacy INTx disabled.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status: the capability list exists.
pub const STATUS_CAPABILITIES: u16 = 1 << 4;

/// A function's configuration space (256 bytes are enough for the drivers).
pub trait ConfigSpace {
    /// Reads the dword at `offset` (4-aligned).
    fn read32(&self, offset: u16) -> u32;
    /// Writes the dword at `offset` (4-aligned).
    fn write32(&self, offset: u16, value: u32);

    /// Reads the word at `offset` (2-aligned).
    fn read16(&self, offset: u16) -> u16 {
        (self.read32(offset & !3) >> ((offset & 2) * 8)) as u16
    }
    /// Reads the byte at `offset`.
    fn read8(&self, offset: u16) -> u8 {
        (self.read32(offset & !3) >> ((offset & 3) * 8)) as u8
    }
    /// Writes the word at `offset` (2-aligned), keeping the other half of
    /// its dword.
    fn write16(&self, offset: u16, value: u16) {
        let shift = (offset & 2) * 8;
        let old = self.read32(offset & !3) & !(0xffff << shift);
        self.write32(offset & !3, old | (u32::from(value) << shift));
    }
}

/// A device's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceId {
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
}

impl DeviceId {
    /// Virtio 1.x block device.
    pub const VIRTIO_BLK: DeviceId = DeviceId {
        vendor: 0x1af4,
        device: 0x1042,
    };
    /// Virtio 1.x network device.
    pub const VIRTIO_NET: DeviceId = DeviceId {
        vendor: 0x1af4,
        device: 0x1041,
    };
    /// QEMU's NVMe controller.
    pub const QEMU_NVME: DeviceId = DeviceId {
        vendor: 0x1b36,
        device: 0x0010,
    };

    /// Reads the ids of `cfg`.
    pub fn read(cfg: &impl ConfigSpace) -> DeviceId {
        DeviceId {
            vendor: cfg.read16(VENDOR_ID),
            device: cfg.read16(DEVICE_ID),
        }
    }
}

/// Turns on memory decoding and bus mastering, and turns legacy INTx off.
pub fn enable_memory_and_dma(cfg: &impl ConfigSpace) {
    let command = cfg.read16(COMMAND);
    cfg.write16(
        COMMAND,
        command | COMMAND_MEMORY | COMMAND_BUS_MASTER | COMMAND_INTX_DISABLE,
    );
}

/// Turns bus mastering off (the device may no longer DMA).
pub fn disable_dma(cfg: &impl ConfigSpace) {
    let command = cfg.read16(COMMAND);
    cfg.write16(COMMAND, command & !COMMAND_BUS_MASTER);
}

#[cfg(test)]
pub(crate) mod testing {
    //! A configuration space in a byte array.
    use super::ConfigSpace;
    use core::cell::RefCell;

    pub struct ArrayConfig(pub RefCell<[u8; 256]>);

    impl ArrayConfig {
        pub fn new() -> Self {
            ArrayConfig(RefCell::new([0; 256]))
        }
        pub fn set8(&self, offset: usize, value: u8) {
            self.0.borrow_mut()[offset] = value;
        }
        pub fn set16(&self, offset: usize, value: u16) {
            self.0.borrow_mut()[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
        }
        pub fn set32(&self, offset: usize, value: u32) {
            self.0.borrow_mut()[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        }
    }

    impl ConfigSpace for ArrayConfig {
        fn read32(&self, offset: u16) -> u32 {
            let o = usize::from(offset & 0xfc);
            let b = self.0.borrow();
            u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
        }
        fn write32(&self, offset: u16, value: u32) {
            self.set32(usize::from(offset & 0xfc), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::ArrayConfig;
    use super::*;

    #[test]
    fn sub_dword_access() {
        let cfg = ArrayConfig::new();
        cfg.set32(0, 0x1042_1af4);
        assert_eq!(DeviceId::read(&cfg), DeviceId::VIRTIO_BLK);
        assert_eq!(cfg.read8(1), 0x1a);
        cfg.set32(4, 0x0010_0000);
        enable_memory_and_dma(&cfg);
        assert_eq!(cfg.read16(COMMAND), 0x406);
        assert_eq!(cfg.read16(STATUS), 0x0010, "status half untouched");
        disable_dma(&cfg);
        assert_eq!(cfg.read16(COMMAND), 0x402);
    }
}
