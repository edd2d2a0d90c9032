//! `physdev_op` (SPEC.md §15, PDEV-*): the driver domain's view of its PCI
//! devices. Every command needs `Capabilities::DEVICES`; its structure is
//! copied in once, validated, used, and written back.
//!
//! Lock order: `grant::live::GRANTS` before `iommu::live::IOMMU`.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use hypercall_abi::physdev::*;
use hypercall_abi::start_info::Capabilities;
use hypercall_abi::{DomId, Errno};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::domain::DOMAINS;
use crate::grant::live::GRANTS;
use crate::guest_memory::{read_obj, write_obj};
use crate::iommu::live::IOMMU;
use crate::iommu::page_table::MapError;
use crate::platform::live::{config, driver_function, driver_functions};
use crate::platform::pci::{self, Bdf, ConfigSpace, Width};
use crate::sched;

/// Reads a `T` at `arg`, lets `f` fill in its outputs, writes it back.
fn in_out<T: FromBytes + IntoBytes + Immutable>(
    arg: u64,
    f: impl FnOnce(&mut T) -> Result<(), Errno>,
) -> Result<u64, Errno> {
    let mut value: T = read_obj(arg)?;
    f(&mut value)?;
    write_obj(arg, &value)?;
    Ok(0)
}

pub fn physdev_op(cmd: u64, arg: u64) -> Result<u64, Errno> {
    let dom = sched::current().ok_or(Errno::EINVAL)?.domid;
    let caps = DOMAINS
        .lock()
        .domains
        .get(&dom)
        .map(|d| d.capabilities)
        .ok_or(Errno::ESRCH)?;
    if !caps.contains(Capabilities::DEVICES) {
        return Err(Errno::EPERM);
    }
    match cmd {
        PHYSDEVOP_DEVICE_INFO => in_out(arg, |info: &mut PhysdevDeviceInfo| {
            let index = info.index;
            let f = driver_functions()
                .nth(index as usize)
                .ok_or(Errno::ENOENT)?;
            *info = f.device_info(index);
            Ok(())
        }),
        PHYSDEVOP_CONFIG_READ => in_out(arg, |c: &mut PhysdevConfig| {
            let (bdf, width) = config_target(c)?;
            let cfg = config().ok_or(Errno::ENOENT)?;
            c.value = cfg.read(bdf, c.offset, width);
            Ok(())
        }),
        PHYSDEVOP_CONFIG_WRITE => {
            let c: PhysdevConfig = read_obj(arg)?;
            let (bdf, width) = config_target(&c)?;
            let f = driver_function(bdf).ok_or(Errno::ENOENT)?;
            let cfg = config().ok_or(Errno::ENOENT)?;
            let command = cfg.read(bdf, pci::REG_COMMAND, Width::Word) as u16;
            let value = pci::filter_config_write(f, c.offset, width, c.value, command)?;
            cfg.write(bdf, c.offset, width, value);
            Ok(0)
        }
        PHYSDEVOP_BIND_MSI => in_out(arg, |b: &mut PhysdevBindMsi| {
            b.port = crate::platform::irq::bind_msi(dom, b)?;
            Ok(())
        }),
        PHYSDEVOP_IOMMU_INFO => {
            let mut iommu = IOMMU.lock();
            iommu.drain_faults();
            let ram_pages = iommu.space.as_ref().map_or(0, |s| s.ram_pages);
            let (start, end) = iommu.space.as_ref().map_or((0, 0), |s| s.grants.window());
            let info = PhysdevIommuInfo {
                mode: iommu.mode(),
                units: iommu.units.len() as u32,
                faults: iommu.faults,
                ram_pages,
                grant_pfn_start: start,
                grant_pfn_end: end,
            };
            drop(iommu);
            write_obj(arg, &info)?;
            Ok(0)
        }
        PHYSDEVOP_IOMMU_MAP_GRANT => {
            let g: PhysdevIommuGrant = read_obj(arg)?;
            map_grant(dom, &g).map(|()| 0)
        }
        PHYSDEVOP_IOMMU_UNMAP_GRANT => {
            let g: PhysdevIommuGrant = read_obj(arg)?;
            unmap_grant(dom, &g).map(|()| 0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// The function and width of a configuration access (PDEV-3).
fn config_target(c: &PhysdevConfig) -> Result<(Bdf, Width), Errno> {
    if c.pad != 0 || c.pad2 != 0 {
        return Err(Errno::EINVAL);
    }
    let bdf = Bdf::from_sbdf(c.sbdf).ok_or(Errno::ENOENT)?;
    driver_function(bdf).ok_or(Errno::ENOENT)?;
    let width = pci::check_access(c.offset, c.size)?;
    Ok((bdf, width))
}

/// `PHYSDEVOP_IOMMU_MAP_GRANT` (PDEV-8).
fn map_grant(dom: DomId, g: &PhysdevIommuGrant) -> Result<(), Errno> {
    if g.flags & !PHYSDEV_IOMMU_READONLY != 0 {
        return Err(Errno::EINVAL);
    }
    let grants = GRANTS.lock();
    let m = grants.mapping(dom, g.handle).ok_or(Errno::EINVAL)?;
    let mut iommu = IOMMU.lock();
    let Some(space) = iommu.space.as_ref() else {
        return Ok(()); // iommu=off: DMA uses machine addresses.
    };
    space.grants.check(g.handle, g.dev_pfn)?;
    let writable = m.writable && g.flags & PHYSDEV_IOMMU_READONLY == 0;
    iommu.map(g.dev_pfn, m.mfn, writable).map_err(|e| match e {
        MapError::Busy => Errno::EBUSY,
        MapError::NoMemory => Errno::ENOMEM,
        MapError::OutOfRange | MapError::NotMapped => Errno::EINVAL,
    })?;
    if let Some(space) = iommu.space.as_mut() {
        space.grants.insert(g.handle, g.dev_pfn);
    }
    Ok(())
}

/// `PHYSDEVOP_IOMMU_UNMAP_GRANT` (PDEV-8).
fn unmap_grant(dom: DomId, g: &PhysdevIommuGrant) -> Result<(), Errno> {
    let _grants = GRANTS.lock();
    let mut iommu = IOMMU.lock();
    let Some(space) = iommu.space.as_ref() else {
        return Ok(());
    };
    if space.grants.dfn_of(g.handle) != Some(g.dev_pfn) || dom != hypercall_abi::DOMID_DRIVER {
        return Err(Errno::EINVAL);
    }
    remove_grant_dfn(&mut iommu, g.handle, g.dev_pfn);
    Ok(())
}

fn remove_grant_dfn(iommu: &mut crate::iommu::live::IommuState, handle: u32, dfn: u64) {
    // Unmapping flushes every unit's IOTLB before it returns.
    if let Err(e) = iommu.unmap(dfn) {
        log::error!("iommu: grant dfn {dfn:#x} was not mapped: {e:?}");
    }
    if let Some(space) = iommu.space.as_mut() {
        let _ = space.grants.remove(handle, dfn);
    }
}

/// Called by `GNTTABOP_UNMAP_GRANT_REF` (with `GRANTS` held) before the
/// grant mapping goes: removes the mapping's frame from the IOMMU space and
/// completes the IOTLB invalidation (PDEV-8).
pub fn grant_unmapping(mapper: DomId, handle: u32) {
    if mapper != hypercall_abi::DOMID_DRIVER {
        return;
    }
    let mut iommu = IOMMU.lock();
    let Some(dfn) = iommu.space.as_ref().and_then(|s| s.grants.dfn_of(handle)) else {
        return;
    };
    remove_grant_dfn(&mut iommu, handle, dfn);
}
