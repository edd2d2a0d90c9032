//! Device interrupts (PDEV-5): hv-core owns the vectors; each MSI or MSI-X
//! vector the driver domain binds is programmed with the boot CPU's MSI
//! address and one of hv-core's vectors, and every interrupt on that vector
//! sets the bound event-channel port pending.
//!
//! Lock order: [`IRQS`] before `event::delivery::EVENTS`; `domain::DOMAINS`
//! is never taken while [`IRQS`] is held (an interrupt takes the binding,
//! drops the lock, then takes `DOMAINS` and `EVENTS`).

use hypercall_abi::evtchn::Port;
use hypercall_abi::physdev::{PhysdevBindMsi, PHYSDEV_IRQ_MSI, PHYSDEV_IRQ_MSIX};
use hypercall_abi::{DomId, Errno};

use super::live::{config, driver_function, msi_address};
use super::pci::{self, Bdf, PciFunction};
use super::vectors::{Binding, Source, VectorTable};
use crate::domain::DOMAINS;
use crate::event::delivery::{Notifier, EVENTS};
use crate::mm::{phys_to_virt, DIRECT_MAP_SIZE};

static IRQS: crate::sync::Mutex<VectorTable> = crate::sync::Mutex::new(VectorTable::new());

/// The direct-map address of MSI-X table entry `entry` of `f`, if the table
/// lies in the direct map.
fn msix_entry_va(f: &PciFunction, entry: u16) -> Option<u64> {
    let msix = f.msix?;
    let (start, end) = msix.table_range(&f.bars)?;
    let at = start.checked_add(u64::from(entry) * 16)?;
    (at + 16 <= end && end <= DIRECT_MAP_SIZE).then(|| phys_to_virt(at))
}

fn write_msix_entry(va: u64, address: u64, data: u32, masked: bool) {
    let p = va as *mut u32;
    // SAFETY: `va` is a 16-byte MSI-X table entry of a function hv-core
    // enumerated, inside the direct map (checked by `msix_entry_va`); the
    // driver domain can never map that page (PDEV-4).
    unsafe {
        core::ptr::write_volatile(p.add(3), 1); // mask while changing
        core::ptr::write_volatile(p, address as u32);
        core::ptr::write_volatile(p.add(1), (address >> 32) as u32);
        core::ptr::write_volatile(p.add(2), data);
        core::ptr::write_volatile(p.add(3), u32::from(masked));
    }
}

/// `PHYSDEVOP_BIND_MSI` for domain `dom` (the caller checked `DEVICES`).
pub fn bind_msi(dom: DomId, req: &PhysdevBindMsi) -> Result<Port, Errno> {
    if req.pad != 0 {
        return Err(Errno::EINVAL);
    }
    let bdf = Bdf::from_sbdf(req.sbdf).ok_or(Errno::ENOENT)?;
    let f = driver_function(bdf).ok_or(Errno::ENOENT)?;
    let cfg = config().ok_or(Errno::ENOENT)?;
    let msix_entry = match req.kind {
        PHYSDEV_IRQ_MSI if f.msi_cap.is_some() && req.entry == 0 => None,
        PHYSDEV_IRQ_MSIX if f.msix.is_some_and(|m| req.entry < m.entries) => Some(req.entry),
        _ => return Err(Errno::EINVAL),
    };
    {
        let table = DOMAINS.lock();
        let d = table.domains.get(&dom).ok_or(Errno::ESRCH)?;
        if req.vcpu as usize >= d.vcpus.len() {
            return Err(Errno::EINVAL);
        }
    }
    let source = Source {
        device: bdf,
        msix_entry,
    };
    let mut irqs = IRQS.lock();
    let vector = irqs.reserve(source)?;
    let port = EVENTS.lock().bind_pirq(dom, u32::from(vector), req.vcpu)?;
    let address = msi_address();
    match msix_entry {
        None => {
            pci::enable_msi(cfg, f, address, u16::from(vector));
        }
        Some(entry) => {
            let Some(va) = msix_entry_va(f, entry) else {
                drop(irqs);
                let _ = EVENTS.lock().close(dom, port);
                return Err(Errno::EINVAL);
            };
            write_msix_entry(va, address, u32::from(vector), false);
            pci::enable_msix(cfg, f);
        }
    }
    irqs.bind(vector, Binding { source, dom, port });
    log::debug!(
        "irq: d{dom} port {port}: {bdf} {} -> vector {vector:#x}",
        msix_entry.map_or("MSI".into(), |e| alloc::format!("MSI-X {e}"))
    );
    Ok(port)
}

/// Frees `vector` after its port was closed: masks the source.
pub fn unbind(vector: u32) {
    let Some(b) = u8::try_from(vector)
        .ok()
        .and_then(|v| IRQS.lock().unbind(v))
    else {
        return;
    };
    let Some(f) = driver_function(b.source.device) else {
        return;
    };
    match b.source.msix_entry {
        None => {
            if let Some(cfg) = config() {
                pci::disable_msi(cfg, f);
            }
        }
        Some(entry) => {
            if let Some(va) = msix_entry_va(f, entry) {
                write_msix_entry(va, 0, 0, true);
            }
        }
    }
}

/// Masks and frees every vector bound for `dom` (it is ending).
pub fn unbind_domain(dom: DomId) {
    let vectors = IRQS.lock().vectors_of(dom);
    for v in vectors {
        unbind(u32::from(v));
    }
}

/// An interrupt on `vector`: true if it is a device vector (EOI is the
/// caller's); sets the bound port pending.
pub fn dispatch(vector: u8) -> bool {
    if !VectorTable::is_device_vector(vector) {
        return false;
    }
    let Some(b) = IRQS.lock().get(vector) else {
        return true;
    };
    let mut table = DOMAINS.lock();
    EVENTS.lock().send_pirq(
        b.dom,
        b.port,
        u32::from(vector),
        &mut Notifier { table: &mut table },
    );
    true
}
