//! Physical devices, guest side (SPEC.md §15, PDEV-*): safe wrappers of
//! `physdev_op` (hypercall 17) for the driver domain, and the mapping of a
//! device's MMIO frames into the kernel address space.
//!
//! - [`device_info`] lists the devices assigned to the caller (PDEV-2);
//! - [`config_read`] / [`config_write`] reach their configuration space
//!   (PDEV-3);
//! - [`bind_msi`] turns an MSI/MSI-X vector into an event-channel port
//!   (PDEV-5);
//! - [`iommu_info`] says how devices address memory (PDEV-6) and counts DMA
//!   faults (PDEV-7);
//! - [`map_mmio`] maps BAR frames (PDEV-4) at fresh virtual addresses; hv-core
//!   makes the mapping uncached.
#![deny(unsafe_code)]

use hypercall_abi::hypercall::Hypercall;
use hypercall_abi::mm::{pte, MmuUpdate, MMU_NORMAL_PT_UPDATE};
use hypercall_abi::physdev::{
    PhysdevBindMsi, PhysdevConfig, PhysdevDeviceInfo, PhysdevIommuGrant, PhysdevIommuInfo,
    PHYSDEVOP_BIND_MSI, PHYSDEVOP_CONFIG_READ, PHYSDEVOP_CONFIG_WRITE, PHYSDEVOP_DEVICE_INFO,
    PHYSDEVOP_IOMMU_INFO, PHYSDEVOP_IOMMU_MAP_GRANT, PHYSDEVOP_IOMMU_UNMAP_GRANT,
    PHYSDEV_IOMMU_READONLY,
};
use hypercall_abi::{Errno, PAGE_SIZE};

use crate::events::Port;
use crate::mm::{reserve_va, AddressSpace, MmError};

/// The `physdev_op` argument structures: plain `#[repr(C)]` ABI structs
/// that any bytes make valid (they derive zerocopy's `FromBytes`).
trait PhysdevArg {}
impl PhysdevArg for PhysdevDeviceInfo {}
impl PhysdevArg for PhysdevConfig {}
impl PhysdevArg for PhysdevBindMsi {}
impl PhysdevArg for PhysdevIommuInfo {}
impl PhysdevArg for PhysdevIommuGrant {}

/// `physdev_op(cmd, arg)` with `arg` pointing at `value`, which the
/// hypervisor reads and may write back.
#[allow(unsafe_code)]
fn physdev_op<T: PhysdevArg>(cmd: u64, value: &mut T) -> Result<u64, Errno> {
    let arg = value as *mut T as u64;
    // SAFETY: `value` is valid for reads and writes of one `T`, and any bytes
    // the hypervisor writes make a valid `T` (zerocopy `FromBytes`); the call
    // touches no other guest memory.
    let ret = unsafe {
        crate::hypercall::hypercall_raw(Hypercall::PhysdevOp.number(), [cmd, arg, 0, 0, 0])
    };
    Errno::check(ret)
}

/// Places the frame of grant mapping `handle` at `dev_pfn << 12` in this
/// domain's IOMMU space (PDEV-8): `dev_pfn` must lie in the grant window of
/// [`iommu_info`]. Unmapping the grant removes it again.
pub fn iommu_map_grant(handle: u32, dev_pfn: u64, readonly: bool) -> Result<(), Errno> {
    let mut g = PhysdevIommuGrant {
        handle,
        flags: if readonly { PHYSDEV_IOMMU_READONLY } else { 0 },
        dev_pfn,
    };
    physdev_op(PHYSDEVOP_IOMMU_MAP_GRANT, &mut g).map(|_| ())
}

/// Removes grant mapping `handle` from `dev_pfn` in the IOMMU space (PDEV-8).
pub fn iommu_unmap_grant(handle: u32, dev_pfn: u64) -> Result<(), Errno> {
    let mut g = PhysdevIommuGrant {
        handle,
        flags: 0,
        dev_pfn,
    };
    physdev_op(PHYSDEVOP_IOMMU_UNMAP_GRANT, &mut g).map(|_| ())
}

/// The `index`-th device assigned to this domain; `Err(ENOENT)` past the last.
pub fn device_info(index: u32) -> Result<PhysdevDeviceInfo, Errno> {
    let mut info = PhysdevDeviceInfo {
        index,
        ..Default::default()
    };
    physdev_op(PHYSDEVOP_DEVICE_INFO, &mut info)?;
    Ok(info)
}

/// Reads `size` (1, 2, 4) bytes at `offset` of device `sbdf`'s
/// configuration space.
pub fn config_read(sbdf: u32, offset: u16, size: u8) -> Result<u32, Errno> {
    let mut op = PhysdevConfig {
        sbdf,
        offset,
        size,
        ..Default::default()
    };
    physdev_op(PHYSDEVOP_CONFIG_READ, &mut op)?;
    Ok(op.value)
}

/// Writes the low `size` bytes of `value` at `offset` (filtered by hv-core,
/// PDEV-3).
pub fn config_write(sbdf: u32, offset: u16, size: u8, value: u32) -> Result<(), Errno> {
    let mut op = PhysdevConfig {
        sbdf,
        offset,
        size,
        value,
        ..Default::default()
    };
    physdev_op(PHYSDEVOP_CONFIG_WRITE, &mut op).map(drop)
}

/// Binds MSI (`kind` `PHYSDEV_IRQ_MSI`) or MSI-X entry `entry`
/// (`PHYSDEV_IRQ_MSIX`) of `sbdf` to a new port notifying vCPU 0.
pub fn bind_msi(sbdf: u32, kind: u8, entry: u16) -> Result<Port, Errno> {
    let mut op = PhysdevBindMsi {
        sbdf,
        entry,
        kind,
        ..Default::default()
    };
    physdev_op(PHYSDEVOP_BIND_MSI, &mut op)?;
    Ok(op.port)
}

/// How this domain's devices address memory, and the DMA faults so far.
pub fn iommu_info() -> Result<PhysdevIommuInfo, Errno> {
    let mut info = PhysdevIommuInfo::default();
    physdev_op(PHYSDEVOP_IOMMU_INFO, &mut info)?;
    Ok(info)
}

/// Maps the `pages` machine frames from `first_mfn` (device MMIO frames
/// permitted to this domain) writable at fresh virtual addresses; returns
/// the address of the first. The mapping is uncached (hv-core sets PCD/PWT,
/// and so does this request) and never executable.
#[allow(unsafe_code)]
pub fn map_mmio(first_mfn: u64, pages: u64) -> Result<u64, MmError> {
    let range = reserve_va(pages)?;
    let mut kernel = AddressSpace::kernel();
    for i in 0..range.pages() {
        let va = range.page(i);
        let l1e = kernel.l1_entry(va)?;
        let val = ((first_mfn + i) * PAGE_SIZE) | pte::P | pte::RW | pte::PCD | pte::PWT | pte::NX;
        let req = [MmuUpdate {
            ptr: l1e | MMU_NORMAL_PT_UPDATE,
            val,
        }];
        // SAFETY: the entry maps a page of a range `reserve_va` just handed
        // out, which nothing in the program uses; it maps device memory, not
        // memory Rust code uses.
        unsafe { crate::hypercall::mmu_update(&req) }.map_err(|e| MmError::Update {
            ptr: l1e,
            val,
            errno: e.errno,
        })?;
    }
    Ok(range.start())
}
