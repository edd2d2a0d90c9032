//! Physical devices (SPEC.md §15, PDEV-*): the PCI devices hv-core assigned
//! to the driver domain, their filtered configuration space, their MMIO
//! BARs, their MSI/MSI-X interrupts as event channels, and the IOMMU space
//! their DMA goes through. Since ABI 0.5.
//!
//! `physdev_op(cmd, arg)` (hypercall 17): `arg` is the guest address of the
//! command's structure, copied in once and written back (IN/OUT per field),
//! except where a command says otherwise. Every command needs the
//! `Capabilities::DEVICES` capability (`-EPERM`), which only the driver
//! domain holds.
//!
//! # Addresses
//! - A device is named by its `sbdf`: `segment << 16 | bus << 8 | device << 3
//!   | function` ([`sbdf`]). A device not assigned to the caller does not
//!   exist for it (`-ENOENT`), whether or not it is present.
//! - BAR addresses are machine addresses: the caller maps BAR frames with
//!   `mmu_update` like any frame (`mfn = address >> 12`); hv-core forces the
//!   mapping uncached (PDEV-4).
//! - DMA addresses ("bus addresses") depend on the IOMMU mode
//!   ([`PhysdevIommuInfo::mode`]): with an IOMMU they are the caller's
//!   pseudo-physical addresses (`pfn << 12`), plus grant frames it placed in
//!   its IOMMU space with [`PHYSDEVOP_IOMMU_MAP_GRANT`]; with the IOMMU off
//!   (`iommu=off`) they are machine addresses (`mfn << 12`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `physdev_op(PHYSDEVOP_DEVICE_INFO, &PhysdevDeviceInfo)`: the `index`-th
/// device assigned to the caller; `-ENOENT` past the last.
pub const PHYSDEVOP_DEVICE_INFO: u64 = 0;
/// `physdev_op(PHYSDEVOP_CONFIG_READ, &PhysdevConfig)`.
pub const PHYSDEVOP_CONFIG_READ: u64 = 1;
/// `physdev_op(PHYSDEVOP_CONFIG_WRITE, &PhysdevConfig)` (filtered, PDEV-3).
pub const PHYSDEVOP_CONFIG_WRITE: u64 = 2;
/// `physdev_op(PHYSDEVOP_BIND_MSI, &PhysdevBindMsi)`: program one MSI or
/// MSI-X vector of a device and bind it to a new event-channel port.
pub const PHYSDEVOP_BIND_MSI: u64 = 3;
/// `physdev_op(PHYSDEVOP_IOMMU_INFO, &PhysdevIommuInfo)`.
pub const PHYSDEVOP_IOMMU_INFO: u64 = 4;
/// `physdev_op(PHYSDEVOP_IOMMU_MAP_GRANT, &PhysdevIommuGrant)`.
pub const PHYSDEVOP_IOMMU_MAP_GRANT: u64 = 5;
/// `physdev_op(PHYSDEVOP_IOMMU_UNMAP_GRANT, &PhysdevIommuGrant)`.
pub const PHYSDEVOP_IOMMU_UNMAP_GRANT: u64 = 6;

/// Packs a PCI address as `sbdf`.
pub const fn sbdf(segment: u16, bus: u8, device: u8, function: u8) -> u32 {
    ((segment as u32) << 16)
        | ((bus as u32) << 8)
        | (((device & 0x1f) as u32) << 3)
        | ((function & 7) as u32)
}

/// `PhysdevBar.flags`: the BAR exists (a zero-size BAR is absent).
pub const PHYSDEV_BAR_PRESENT: u32 = 1 << 0;
/// `PhysdevBar.flags`: an I/O-port BAR (listed, but not accessible: PDEV-4).
pub const PHYSDEV_BAR_IO: u32 = 1 << 1;
/// `PhysdevBar.flags`: a 64-bit memory BAR (it uses this slot and the next).
pub const PHYSDEV_BAR_64BIT: u32 = 1 << 2;
/// `PhysdevBar.flags`: prefetchable memory.
pub const PHYSDEV_BAR_PREFETCH: u32 = 1 << 3;

/// One base address register as hv-core found it at boot. `[HV]`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct PhysdevBar {
    /// OUT: machine address (memory) or port (I/O); 0 if absent.
    pub address: u64,
    /// OUT: bytes decoded; 0 if absent.
    pub size: u64,
    /// OUT: `PHYSDEV_BAR_*`.
    pub flags: u32,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<PhysdevBar>() == 24);
const _: () = assert!(core::mem::offset_of!(PhysdevBar, flags) == 16);

/// Number of BAR slots of a type-0 header.
pub const PHYSDEV_BARS: usize = 6;

/// IN/OUT of `PHYSDEVOP_DEVICE_INFO`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct PhysdevDeviceInfo {
    /// IN: 0, 1, … over the caller's devices.
    pub index: u32,
    /// OUT: the device's address ([`sbdf`]).
    pub sbdf: u32,
    /// OUT.
    pub vendor_id: u16,
    /// OUT.
    pub device_id: u16,
    /// OUT: `base << 16 | sub << 8 | prog_if`.
    pub class: u32,
    /// OUT.
    pub revision: u8,
    /// OUT: the header type (bit 7: multi-function).
    pub header_type: u8,
    /// OUT: the config-space offset of the MSI capability, 0 if none.
    pub msi_cap: u8,
    /// OUT: the config-space offset of the MSI-X capability, 0 if none.
    pub msix_cap: u8,
    /// OUT: MSI-X table entries (0 without MSI-X).
    pub msix_entries: u16,
    /// OUT: MSI vectors the device can request (1, 2, 4 … 32; 0 without MSI).
    pub msi_vectors: u16,
    /// OUT: MSI-X table location: BAR index in bits 0..3, byte offset in the
    /// rest (as the capability encodes it). The table's pages cannot be
    /// mapped (PDEV-4).
    pub msix_table: u32,
    /// OUT: MSI-X pending-bit array location, encoded as `msix_table`.
    pub msix_pba: u32,
    /// Zero.
    pub reserved: u64,
    /// OUT.
    pub bars: [PhysdevBar; PHYSDEV_BARS],
}
const _: () = assert!(core::mem::size_of::<PhysdevDeviceInfo>() == 184);
const _: () = assert!(core::mem::offset_of!(PhysdevDeviceInfo, class) == 12);
const _: () = assert!(core::mem::offset_of!(PhysdevDeviceInfo, msix_entries) == 20);
const _: () = assert!(core::mem::offset_of!(PhysdevDeviceInfo, msix_table) == 24);
const _: () = assert!(core::mem::offset_of!(PhysdevDeviceInfo, bars) == 40);

/// IN/OUT of `PHYSDEVOP_CONFIG_READ` and `PHYSDEVOP_CONFIG_WRITE`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct PhysdevConfig {
    /// IN: the device.
    pub sbdf: u32,
    /// IN: byte offset in the 4 KiB configuration space, aligned to `size`.
    pub offset: u16,
    /// IN: 1, 2 or 4.
    pub size: u8,
    /// Zero.
    pub pad: u8,
    /// OUT for read, IN for write (the low `size` bytes).
    pub value: u32,
    /// Zero.
    pub pad2: u32,
}
const _: () = assert!(core::mem::size_of::<PhysdevConfig>() == 16);
const _: () = assert!(core::mem::offset_of!(PhysdevConfig, value) == 8);

/// `PhysdevBindMsi.kind`: the MSI capability (one vector, `entry` 0).
pub const PHYSDEV_IRQ_MSI: u8 = 1;
/// `PhysdevBindMsi.kind`: one MSI-X table entry.
pub const PHYSDEV_IRQ_MSIX: u8 = 2;

/// IN/OUT of `PHYSDEVOP_BIND_MSI`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct PhysdevBindMsi {
    /// IN: the device.
    pub sbdf: u32,
    /// IN: the MSI-X table entry (`< msix_entries`); 0 for MSI.
    pub entry: u16,
    /// IN: `PHYSDEV_IRQ_MSI` or `PHYSDEV_IRQ_MSIX`.
    pub kind: u8,
    /// Zero.
    pub pad: u8,
    /// IN: the vCPU the port notifies.
    pub vcpu: u32,
    /// OUT: the new port (`EVTCHNSTAT_PIRQ`).
    pub port: u32,
}
const _: () = assert!(core::mem::size_of::<PhysdevBindMsi>() == 16);
const _: () = assert!(core::mem::offset_of!(PhysdevBindMsi, port) == 12);

/// `PhysdevIommuInfo.mode`: no IOMMU in use (`iommu=off`): DMA addresses are
/// machine addresses.
pub const PHYSDEV_IOMMU_OFF: u32 = 0;
/// Intel VT-d remapping.
pub const PHYSDEV_IOMMU_VTD: u32 = 1;
/// AMD-Vi remapping.
pub const PHYSDEV_IOMMU_AMDVI: u32 = 2;

/// OUT of `PHYSDEVOP_IOMMU_INFO` (nothing is read).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct PhysdevIommuInfo {
    /// OUT: `PHYSDEV_IOMMU_*`.
    pub mode: u32,
    /// OUT: remapping units in use.
    pub units: u32,
    /// OUT: DMA faults reported so far for the caller's devices (PDEV-7).
    pub faults: u64,
    /// OUT: pfns `0..ram_pages` are mapped at `pfn << 12` in the caller's
    /// IOMMU space (0 when `mode` is `PHYSDEV_IOMMU_OFF`).
    pub ram_pages: u64,
    /// OUT: the first pfn usable for grants, and one past the last:
    /// `[grant_pfn_start, grant_pfn_end)`.
    pub grant_pfn_start: u64,
    /// OUT.
    pub grant_pfn_end: u64,
}
const _: () = assert!(core::mem::size_of::<PhysdevIommuInfo>() == 40);
const _: () = assert!(core::mem::offset_of!(PhysdevIommuInfo, faults) == 8);
const _: () = assert!(core::mem::offset_of!(PhysdevIommuInfo, grant_pfn_end) == 32);

/// `PhysdevIommuGrant.flags`: devices may only read the frame. A read-only
/// grant mapping can only be placed read-only.
pub const PHYSDEV_IOMMU_READONLY: u32 = 1 << 0;

/// IN of `PHYSDEVOP_IOMMU_MAP_GRANT` and `PHYSDEVOP_IOMMU_UNMAP_GRANT`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct PhysdevIommuGrant {
    /// IN: the handle `GNTTABOP_MAP_GRANT_REF` returned.
    pub handle: u32,
    /// IN: `PHYSDEV_IOMMU_*` (ignored by unmap).
    pub flags: u32,
    /// IN: where the frame appears in the caller's IOMMU space:
    /// `grant_pfn_start <= dev_pfn < grant_pfn_end`.
    pub dev_pfn: u64,
}
const _: () = assert!(core::mem::size_of::<PhysdevIommuGrant>() == 16);
const _: () = assert!(core::mem::offset_of!(PhysdevIommuGrant, dev_pfn) == 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbdf_packs_like_pci() {
        assert_eq!(sbdf(0, 0, 3, 0), 0x18);
        assert_eq!(sbdf(0, 1, 0x1f, 7), 0x1ff);
        assert_eq!(sbdf(1, 0xff, 0, 0), 0x1ff00);
    }
}
