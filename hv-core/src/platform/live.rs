//! The machine's own platform, live: its ACPI tables read through the
//! direct map, its PCI functions through ECAM, the IOMMUs brought up, and
//! the decisions made at start of day (who owns which function, which
//! frames are I/O frames) (PDEV-1, PDEV-2, PDEV-4, PDEV-9).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use hypercall_abi::DOMID_DRIVER;

use super::acpi::{self, AcpiError, EcamWindow, Madt, TableRef};
use super::pci::{
    self, Bdf, ConfigSpace, DeviceOwner, Dom0Pci, IoFrames, PciFunction, Width, CONFIG_SIZE,
};
use super::{dmar, ivrs};
use crate::boot::multiboot::PhysMemory;
use crate::domain::DOMAINS;
use crate::iommu::amdvi::AmdViUnit;
use crate::iommu::grant_window::{window as grant_window, GrantPlacements};
use crate::iommu::live::{DirectMmio, DriverSpace, Format, HeapFrames, FAULT_VECTOR, IOMMU};
use crate::iommu::page_table::IoPageTable;
use crate::iommu::vtd::VtdUnit;
use crate::iommu::Iommu;
use crate::mm::{phys_to_virt, DIRECT_MAP_SIZE};

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

/// PCI configuration space through one ECAM window in the direct map.
pub struct Ecam {
    window: EcamWindow,
}

impl Ecam {
    /// `None` if the window is not wholly inside the direct map.
    pub fn new(window: EcamWindow) -> Option<Self> {
        let end = window
            .base
            .checked_add((u64::from(window.bus_end) + 1) << 20)?;
        (end <= DIRECT_MAP_SIZE).then_some(Self { window })
    }

    fn address(&self, bdf: Bdf, offset: u16) -> Option<u64> {
        let function = self.window.function_address(bdf.bus, bdf.dev, bdf.func)?;
        (offset < CONFIG_SIZE).then(|| phys_to_virt(function + u64::from(offset)))
    }
}

impl ConfigSpace for Ecam {
    fn read(&self, bdf: Bdf, offset: u16, width: Width) -> u32 {
        let Some(va) = self.address(bdf, offset & !(width.bytes() - 1)) else {
            return u32::MAX;
        };
        // SAFETY: `va` is inside the ECAM window (checked by `new` and
        // `address`), naturally aligned for the width; configuration reads
        // have no side effects hv-core does not expect.
        unsafe {
            match width {
                Width::Byte => u32::from(core::ptr::read_volatile(va as *const u8)),
                Width::Word => u32::from(core::ptr::read_volatile(va as *const u16)),
                Width::Dword => core::ptr::read_volatile(va as *const u32),
            }
        }
    }

    fn write(&self, bdf: Bdf, offset: u16, width: Width, value: u32) {
        let Some(va) = self.address(bdf, offset & !(width.bytes() - 1)) else {
            return;
        };
        // SAFETY: as for `read`; callers filter what the driver domain may
        // write (PDEV-3).
        unsafe {
            match width {
                Width::Byte => core::ptr::write_volatile(va as *mut u8, value as u8),
                Width::Word => core::ptr::write_volatile(va as *mut u16, value as u16),
                Width::Dword => core::ptr::write_volatile(va as *mut u32, value),
            }
        }
    }
}

/// The MSI address naming the boot CPU's local APIC (physical destination,
/// fixed delivery).
pub fn msi_address() -> u64 {
    0xfee0_0000 | (u64::from(crate::arch::lapic::id()) << 12)
}

/// What hv-core found and decided at boot; fixed afterwards.
pub struct Platform {
    pub functions: Vec<PciFunction>,
    /// For each function an IOMMU translates: the unit (index in
    /// `iommu::live::IOMMU`) and the requester ID the unit sees.
    pub routes: Vec<(Bdf, usize, Bdf)>,
    pub ecam: Option<Ecam>,
    pub io_frames: IoFrames,
}

/// Set once by [`init`].
pub static PLATFORM: spin::Once<Platform> = spin::Once::new();

/// The functions assigned to the driver domain, in bus order.
pub fn driver_functions() -> impl Iterator<Item = &'static PciFunction> {
    PLATFORM
        .get()
        .into_iter()
        .flat_map(|p| p.functions.iter())
        .filter(|f| f.owner == DeviceOwner::Driver)
}

/// The driver domain's function at `bdf` (PDEV-2: others do not exist for it).
pub fn driver_function(bdf: Bdf) -> Option<&'static PciFunction> {
    driver_functions().find(|f| f.bdf == bdf)
}

/// Configuration access for the running system.
pub fn config() -> Option<&'static Ecam> {
    PLATFORM.get()?.ecam.as_ref()
}

/// Whether `mfn` is an I/O frame the driver domain may map (PDEV-4).
pub fn io_frame_permitted(mfn: u64) -> bool {
    PLATFORM.get().is_some_and(|p| p.io_frames.permits(mfn))
}

/// Whether `mfn` is any device or hv-core MMIO frame.
pub fn is_io_frame(mfn: u64) -> bool {
    PLATFORM
        .get()
        .is_some_and(|p| p.io_frames.is_device_frame(mfn))
}

/// The IOMMUs the tables describe, brought up to the point of translation
/// (not enabled), or why there are none.
enum Remapping {
    Units(Vec<Box<dyn Iommu + Send>>, Format, Vec<(Bdf, usize, Bdf)>),
    None(String),
}

fn size_label(size: u64) -> String {
    match size {
        s if s >= 1 << 30 && s % (1 << 30) == 0 => format!("{}G", s >> 30),
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}M", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{}K", s >> 10),
        s => format!("{s}"),
    }
}

fn describe(f: &PciFunction) -> String {
    let mut line = format!(
        "{} {:04x}:{:04x} class {:02x}.{:02x}.{:02x} owner {}",
        f.bdf,
        f.vendor,
        f.device,
        f.class >> 16,
        (f.class >> 8) & 0xff,
        f.class & 0xff,
        f.owner.label()
    );
    for (i, bar) in f.bars.iter().enumerate().filter(|(_, b)| b.present()) {
        let kind = match (bar.io, bar.is_64bit, bar.prefetchable) {
            (true, _, _) => "io",
            (false, true, true) => "mem64,pf",
            (false, true, false) => "mem64",
            (false, false, true) => "mem,pf",
            (false, false, false) => "mem",
        };
        line.push_str(&format!(
            " bar{i}={kind}:{:#x}/{}",
            bar.address,
            size_label(bar.size)
        ));
    }
    if f.msix.is_some() {
        line.push_str(&format!(" msix={}", f.msix.map_or(0, |m| m.entries)));
    }
    if f.msi_cap.is_some() {
        line.push_str(" msi");
    }
    line
}

/// The bus behind a bridge function, for DMAR device-scope paths.
fn secondary_bus(cfg: &Ecam, bdf: Bdf) -> Option<u8> {
    let header = cfg.read(bdf, pci::REG_HEADER_TYPE, Width::Byte) as u8;
    (header & 0x7f == 1).then(|| cfg.read(bdf, 0x19, Width::Byte) as u8)
}

fn vtd_units(
    mem: &FirmwareMemory,
    tables: &[TableRef],
    functions: &[PciFunction],
    cfg: &Ecam,
) -> Result<Remapping, String> {
    let raw = acpi::find_table(mem, tables, b"DMAR").map_err(|e| e.to_string())?;
    let dmar = dmar::parse_dmar(&raw).map_err(|e| e.to_string())?;
    let mut units: Vec<Box<dyn Iommu + Send>> = Vec::new();
    for d in &dmar.units {
        let mmio = DirectMmio::new(d.base, 0x1000).ok_or_else(|| {
            format!(
                "DMAR unit at {:#x} is outside the uncached direct map",
                d.base
            )
        })?;
        let unit = VtdUnit::new(mmio, HeapFrames, d.base)
            .map_err(|e| format!("VT-d unit at {:#x}: {e}", d.base))?;
        let c = *unit.caps();
        let version = unit.version();
        log::info!(
            "iommu: VT-d unit at {:#x}: version {}.{}, {}-bit, {}-level tables, {} fault record(s){}, {} device scope(s){}",
            d.base,
            (version >> 4) & 0xf,
            version & 0xf,
            c.mgaw,
            unit.levels(),
            c.fault_count,
            if c.caching_mode { ", caching mode" } else { "" },
            d.scopes.len(),
            if d.include_pci_all { ", all other devices" } else { "" }
        );
        units.push(Box::new(unit));
    }
    let levels = units.first().map_or(3, |u| u.levels());
    if units.iter().any(|u| u.levels() != levels) {
        return Err("VT-d units disagree on the page-table depth".into());
    }
    let mut routes = Vec::new();
    for f in functions {
        if let Some(i) = dmar.unit_for(f.bdf, &|b| secondary_bus(cfg, b)) {
            routes.push((f.bdf, i, f.bdf));
        }
    }
    Ok(Remapping::Units(units, Format::Vtd, routes))
}

fn amdvi_units(
    mem: &FirmwareMemory,
    tables: &[TableRef],
    functions: &[PciFunction],
) -> Result<Remapping, String> {
    let raw = acpi::find_table(mem, tables, b"IVRS").map_err(|e| e.to_string())?;
    let ivrs = ivrs::parse_ivrs(&raw).map_err(|e| e.to_string())?;
    // The device table covers every requester the units may see: enumerated
    // functions and every ID the IVRS names (an ID past the table would be
    // read from whatever memory follows it).
    let named = ivrs.units.iter().flat_map(|u| {
        let all = if u.all { Some(u16::MAX) } else { None };
        u.ranges
            .iter()
            .map(|r| r.last.max(r.alias.unwrap_or(0)))
            .chain(all)
    });
    let max_rid = functions
        .iter()
        .map(|f| f.bdf.rid())
        .chain(named)
        .max()
        .unwrap_or(0);
    let mut units: Vec<Box<dyn Iommu + Send>> = Vec::new();
    for u in &ivrs.units {
        let mmio = DirectMmio::new(u.base, 0x4000).ok_or_else(|| {
            format!(
                "IVRS unit at {:#x} is outside the uncached direct map",
                u.base
            )
        })?;
        let ids = u32::from(max_rid) + 1;
        let unit = AmdViUnit::new(mmio, HeapFrames, u.base, ids)
            .map_err(|e| format!("AMD-Vi unit at {:#x}: {e}", u.base))?;
        log::info!(
            "iommu: AMD-Vi unit at {:#x} (function {}), IVHD type {:#x}, {} device range(s){}, 4-level tables",
            u.base,
            Bdf::from_rid(u.iommu_rid),
            u.kind,
            u.ranges.len(),
            if u.all { ", all devices" } else { "" }
        );
        units.push(Box::new(unit));
    }
    let mut routes = Vec::new();
    for f in functions {
        if let Some((i, id)) = ivrs.unit_for(f.bdf.rid()) {
            routes.push((f.bdf, i, Bdf::from_rid(id)));
        }
    }
    Ok(Remapping::Units(units, Format::AmdVi, routes))
}

fn find_remapping(
    mem: &FirmwareMemory,
    tables: &[TableRef],
    functions: &[PciFunction],
    cfg: &Ecam,
) -> Remapping {
    let has = |sig: &[u8; 4]| tables.iter().any(|t| &t.signature == sig);
    let result = if has(b"DMAR") {
        vtd_units(mem, tables, functions, cfg)
    } else if has(b"IVRS") {
        amdvi_units(mem, tables, functions)
    } else {
        Err("no DMAR or IVRS table".into())
    };
    result.unwrap_or_else(Remapping::None)
}

/// Start of day (PDEV-1, PDEV-2, PDEV-6, PDEV-9), after the boot domains exist:
/// finds the CPUs, the PCI functions and the IOMMUs, assigns functions to the
/// driver domain, builds its DMA space and turns translation on.
pub fn init(iommu_off: bool, policy: &Dom0Pci) {
    let mem = FirmwareMemory;
    let tables = match acpi::find_rsdp(&mem).and_then(|r| acpi::list_tables(&mem, &r)) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("platform: {e}: no PCI devices and no IOMMU");
            return;
        }
    };
    let mut hv_regions: Vec<(u64, u64)> = Vec::new();
    match acpi::find_table(&mem, &tables, b"APIC").and_then(|t| acpi::parse_madt(&t)) {
        Ok(madt) => {
            let ids: Vec<String> = madt.cpus.iter().map(|c| c.apic_id.to_string()).collect();
            log::info!(
                "platform: {} CPU(s), local APIC IDs {} at {:#x}",
                madt.cpus.len(),
                ids.join(","),
                madt.local_apic_address
            );
            hv_regions.push((madt.local_apic_address, madt.local_apic_address + 0x1000));
            for io in &madt.io_apics {
                log::info!(
                    "platform: I/O APIC {} at {:#x}, GSI base {}",
                    io.id,
                    io.address,
                    io.gsi_base
                );
                hv_regions.push((u64::from(io.address), u64::from(io.address) + 0x1000));
            }
        }
        Err(e) => log::warn!("platform: {e}"),
    }
    let window = match acpi::find_table(&mem, &tables, b"MCFG").and_then(|t| acpi::parse_mcfg(&t)) {
        Ok(w) => w.iter().copied().find(|w| w.segment == 0),
        Err(e) => {
            log::warn!("platform: {e}");
            None
        }
    };
    let Some(cfg) = window.and_then(Ecam::new) else {
        log::warn!("platform: no usable ECAM window for segment 0: no PCI devices");
        return;
    };
    let w = cfg.window;
    let ecam_end = w.base + ((u64::from(w.bus_end) + 1) << 20);
    hv_regions.push((w.base, ecam_end));
    // Configuration space is device memory: never cached.
    crate::mm::live::make_direct_map_uncached(w.base, ecam_end);
    let scan_start = crate::time::clock::now_ns();
    let mut functions = pci::enumerate(&cfg, w.bus_start, w.bus_end);
    log::info!(
        "pci: ECAM at {:#x}, buses {}-{}: {} function(s), scanned in {} us",
        w.base,
        w.bus_start,
        w.bus_end,
        functions.len(),
        (crate::time::clock::now_ns() - scan_start) / 1000
    );

    let remapping = if iommu_off {
        Remapping::None("iommu=off".into())
    } else {
        find_remapping(&mem, &tables, &functions, &cfg)
    };
    let (mut units, format, routes) = match remapping {
        Remapping::Units(units, format, routes) => (units, Some(format), routes),
        Remapping::None(why) if iommu_off => {
            log::warn!("iommu: off ({why}): the driver domain's devices can DMA anywhere");
            (Vec::new(), None, Vec::new())
        }
        Remapping::None(why) => {
            log::warn!("iommu: {why}: no device is assigned (iommu=off assigns them without DMA protection)");
            (Vec::new(), None, Vec::new())
        }
    };
    for u in &units {
        hv_regions.push((u.base(), u.base() + 0x4000));
    }
    let devices_allowed = iommu_off || format.is_some();
    for bdf in pci::assign(&mut functions, policy, devices_allowed) {
        log::warn!("pci: dom0_pci names {bdf}, which is absent or kept by hv-core");
    }
    // A function no unit translates cannot be protected.
    if format.is_some() {
        for f in functions
            .iter_mut()
            .filter(|f| f.owner == DeviceOwner::Driver)
        {
            if !routes.iter().any(|r| r.0 == f.bdf) {
                log::warn!("pci: {} is behind no IOMMU unit: not assigned", f.bdf);
                f.owner = DeviceOwner::Nobody;
            }
        }
    }

    // The driver domain's DMA space.
    let space_start = crate::time::clock::now_ns();
    if let Some(format) = format {
        if let Err(why) = build_driver_space(&mut units, format, &routes, &functions, Some(&cfg)) {
            log::error!("iommu: {why}: no device is assigned");
            for f in &mut functions {
                if f.owner == DeviceOwner::Driver {
                    f.owner = DeviceOwner::Nobody;
                }
            }
        }
    }
    if format.is_some() {
        log::info!(
            "iommu: DMA space built and translation enabled in {} us",
            (crate::time::clock::now_ns() - space_start) / 1000
        );
    }
    for f in &functions {
        log::info!("pci: {}", describe(f));
    }
    let io_frames = IoFrames::build(&functions, &hv_regions);
    PLATFORM.call_once(|| Platform {
        functions,
        routes,
        ecam: Some(cfg),
        io_frames,
    });
}

/// Maps the driver domain's memory, attaches its functions, enables every
/// unit and its fault interrupt.
fn build_driver_space(
    units: &mut Vec<Box<dyn Iommu + Send>>,
    format: Format,
    routes: &[(Bdf, usize, Bdf)],
    functions: &[PciFunction],
    cfg: Option<&Ecam>,
) -> Result<(), String> {
    let levels = units.first().map_or(3, |u| u.levels());
    let p2m: Vec<u64> = {
        let table = DOMAINS.lock();
        let Some(d0) = table.domains.get(&DOMID_DRIVER) else {
            return Err("there is no driver domain".into());
        };
        d0.p2m.clone()
    };
    // Its page tables are never writable by DMA (PDEV-6).
    let writable: Vec<bool> = {
        let frames = crate::mm::live::FRAMES.lock();
        let Some(frames) = frames.as_ref() else {
            return Err("no frame table".into());
        };
        p2m.iter()
            .map(|&mfn| !frames.get(mfn).is_some_and(|f| f.ftype.is_page_table()))
            .collect()
    };
    let mut frames = HeapFrames;
    let table = IoPageTable::new(&mut frames, levels).ok_or("out of memory")?;
    let mut iommu = IOMMU.lock();
    iommu.space = Some(DriverSpace {
        table,
        format,
        ram_pages: p2m.len() as u64,
        grants: GrantPlacements::new(p2m.len() as u64),
    });
    for (pfn, (&mfn, &w)) in p2m.iter().zip(&writable).enumerate() {
        iommu
            .map(pfn as u64, mfn, w)
            .map_err(|e| format!("mapping pfn {pfn:#x}: {e:?}"))?;
    }
    for f in functions.iter().filter(|f| f.owner == DeviceOwner::Driver) {
        let Some(&(_, unit, requester)) = routes.iter().find(|r| r.0 == f.bdf) else {
            continue;
        };
        let u = units.get_mut(unit).ok_or("bad unit index")?;
        u.attach(requester, table.root, levels)
            .map_err(|e| format!("{} at {:#x}: attaching {}: {e}", u.name(), u.base(), f.bdf))?;
    }
    let msi_address = msi_address();
    for u in units.iter_mut() {
        u.enable()
            .map_err(|e| format!("{} at {:#x}: {e}", u.name(), u.base()))?;
        if !u.set_fault_interrupt(msi_address, u32::from(FAULT_VECTOR)) {
            // AMD-Vi: the IOMMU's own PCI function signals its event log.
            for f in functions.iter().filter(|f| f.is_iommu()) {
                if let Some(cfg) = cfg {
                    pci::enable_msi(cfg, f, msi_address, u16::from(FAULT_VECTOR));
                }
            }
        }
    }
    log::info!(
        "iommu: {} on: the driver domain's {} pages are its DMA space ({} of them page tables, read-only; {}-level tables), grants at pfn {:#x}..{:#x}",
        units.first().map_or("?", |u| u.name()),
        p2m.len(),
        writable.iter().filter(|&&w| !w).count(),
        levels,
        grant_window(p2m.len() as u64).0,
        grant_window(p2m.len() as u64).1
    );
    iommu.units = core::mem::take(units);
    Ok(())
}

/// A domain is being torn down (before its frames are freed): if it is the
/// driver domain, its devices are blocked at the IOMMU and their interrupts
/// masked, so no DMA or interrupt reaches memory it no longer owns.
pub fn domain_ended(domid: hypercall_abi::DomId) {
    super::irq::unbind_domain(domid);
    if domid != DOMID_DRIVER {
        return;
    }
    let mut iommu = IOMMU.lock();
    let routes: Vec<(usize, Bdf)> = PLATFORM.get().map_or(Vec::new(), |p| {
        p.routes
            .iter()
            .filter(|r| driver_function(r.0).is_some())
            .map(|r| (r.1, r.2))
            .collect()
    });
    for (unit, requester) in routes {
        if let Some(u) = iommu.units.get_mut(unit) {
            u.detach(requester);
        }
    }
    for unit in iommu.units.iter_mut() {
        unit.flush_iotlb();
    }
    iommu.space = None;
    if let Some(cfg) = config() {
        for f in driver_functions() {
            // No more bus mastering: the device cannot start new DMA.
            let cmd = cfg.read(f.bdf, pci::REG_COMMAND, Width::Word);
            cfg.write(
                f.bdf,
                pci::REG_COMMAND,
                Width::Word,
                cmd & !u32::from(pci::CMD_BUS_MASTER),
            );
        }
    }
}
