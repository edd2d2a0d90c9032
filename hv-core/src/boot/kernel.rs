//! `kernel_main`, entered from the 32-bit stub in `arch::boot` on the boot stack.

use alloc::vec::Vec;

use hypercall_abi::layout::{is_hv_l4_slot, HV_L4_FIRST, HV_L4_IMAGE, HV_L4_LAST};
use hypercall_abi::machine::EXIT_PANIC;
use hypercall_abi::{ABI_MAJOR, ABI_MINOR, PAGE_SIZE};

use super::multiboot::{self, read_c_string, PhysMemory};
use crate::arch::percpu::PerCpuCell;
use crate::arch::{boot, cpu, entry, gdt, idt, lapic, smp};
use crate::domain;
use crate::loader::cmdline::parse_hv_cmdline;
use crate::mm::frame_table::FrameInfo;
use crate::mm::live::{self, FRAMES};
use crate::mm::regions::{usable, Region};
use crate::mm::{heap, phys_to_virt, FrameTable, DIRECT_MAP_SIZE};

/// The boot CPU's per-CPU block.
static BOOT_CPU: PerCpuCell = PerCpuCell::new(0, gdt::BOOT_TABLES.tss());

/// Bytes of hypervisor heap.
const HEAP_SIZE: u64 = 8 << 20;
/// The frame below which memory is left to firmware.
const LOW_MEMORY_END: u64 = 1 << 20;

/// Physical memory through the direct map.
struct DirectMap;

impl PhysMemory for DirectMap {
    fn read(&self, pa: u64, buf: &mut [u8]) -> bool {
        let Some(end) = pa.checked_add(buf.len() as u64) else {
            return false;
        };
        if end > DIRECT_MAP_SIZE {
            return false;
        }
        // SAFETY: the direct map covers [0, DIRECT_MAP_SIZE) and reading RAM or
        // firmware tables there has no side effects.
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

fn page_up(x: u64) -> u64 {
    x.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// The hypervisor's entry point in Rust.
pub extern "C" fn kernel_main(mbi: u64, magic: u64) -> ! {
    crate::console::init();
    let mem = DirectMap;
    let info = match multiboot::parse(&mem, magic as u32, mbi) {
        Ok(info) => info,
        Err(e) => {
            crate::console::init_logger(log::LevelFilter::Info);
            log::error!("unusable boot information: {e:?}; hv-core needs a multiboot1 loader with a memory map");
            crate::machine::exit(EXIT_PANIC);
        }
    };
    let mut cmdline_buf = [0u8; 512];
    let cmdline = info
        .cmdline
        .map_or("", |pa| read_c_string(&mem, pa, &mut cmdline_buf));
    let (params, warnings) = parse_hv_cmdline(cmdline);
    crate::console::init_logger(params.log_level);
    log::info!(
        "Paravane hv-core {} (ABI {ABI_MAJOR}.{ABI_MINOR}) booting",
        env!("CARGO_PKG_VERSION")
    );
    for w in &warnings {
        log::warn!("command line: {w}");
    }

    if crate::console::mgmt_init() {
        log::info!("management UART: COM2 (0x2f8) found, lent to the toolstack");
    }
    gdt::init(&gdt::BOOT_TABLES);
    idt::init();
    entry::init(&BOOT_CPU);
    drop_identity_map();

    // Memory: keep low memory, the image, the loader's strings and the modules.
    let (image_start, image_end) = boot::image_phys_range();
    let mut loader_end = image_end;
    let mut reserved: heapless::Vec<Region, 72> = heapless::Vec::new();
    let _ = reserved.push(Region::new(0, LOW_MEMORY_END));
    for m in &info.modules {
        loader_end = loader_end.max(m.range.end);
        let _ = reserved.push(Region::new(m.string, m.string + PAGE_SIZE));
    }
    if let Some(pa) = info.cmdline {
        let _ = reserved.push(Region::new(pa, pa + PAGE_SIZE));
    }
    let boot_area = Region::new(image_start, page_up(loader_end));
    let _ = reserved.push(boot_area);
    let mut free = usable(&info.ram, &reserved, DIRECT_MAP_SIZE);
    let total: u64 = free.iter().map(|r| r.len()).sum();
    let max_pa = info
        .ram
        .iter()
        .map(|r| r.end.min(DIRECT_MAP_SIZE))
        .max()
        .unwrap_or(0);
    let nr_frames = max_pa / PAGE_SIZE;
    let table_bytes = page_up(nr_frames * core::mem::size_of::<FrameInfo>() as u64);

    // Carve the frame table and the heap from the largest free region.
    let Some(largest) = free.iter_mut().max_by_key(|r| r.len()) else {
        panic!("no usable memory");
    };
    if largest.len() < table_bytes + HEAP_SIZE + (4 << 20) {
        panic!(
            "too little memory: the largest free region has {} KiB",
            largest.len() / 1024
        );
    }
    let table_pa = largest.start;
    let heap_pa = table_pa + table_bytes;
    largest.start = heap_pa + HEAP_SIZE;
    // SAFETY: [heap_pa, heap_pa + HEAP_SIZE) is free RAM, direct-mapped, now
    // removed from the free regions, used by nothing else.
    unsafe { heap::init(phys_to_virt(heap_pa), HEAP_SIZE) };
    // SAFETY: the frame-table area is free RAM removed from the free regions,
    // aligned for FrameInfo (page aligned), large enough for nr_frames entries,
    // and lives for the rest of the hypervisor's life.
    let storage: &'static mut [FrameInfo] = unsafe {
        core::slice::from_raw_parts_mut(
            phys_to_virt(table_pa) as *mut FrameInfo,
            nr_frames as usize,
        )
    };
    let mut frames = FrameTable::new(storage);
    for r in &free {
        frames.add_free(r.start / PAGE_SIZE, r.end / PAGE_SIZE);
    }
    log::info!(
        "memory: {} MiB usable, {} MiB free after frame table ({} KiB) and heap ({} MiB); {} boot module(s)",
        total >> 20,
        (frames.free_count() * PAGE_SIZE) >> 20,
        table_bytes / 1024,
        HEAP_SIZE >> 20,
        info.modules.len()
    );
    let m2p_entries = live::init_m2p(&mut frames, boot::boot_pml4_phys());
    *FRAMES.lock() = Some(frames);
    live::set_hypervisor_l4(hypervisor_l4_entries());
    domain::M2P_ENTRIES.call_once(|| m2p_entries);
    domain::AUDIT.call_once(|| params.audit);

    // The clock first: every domain's shared_info carries it.
    let clock = crate::time::clock::calibrate();

    // Every CPU's scheduler, before any domain exists (vCPUs are placed on
    // the least-loaded one); they run nothing until start of day is over.
    lapic::mask_pics();
    crate::sched::set_timeslice_us(params.timeslice_us);
    crate::mm::tlb::cpu_online();
    crate::sched::cpu_online(lapic::id());
    start_secondary_cpus(clock.lapic_per_ms, clock.tsc_hz);

    // Domains, one per boot module; the first is the driver domain. Modules
    // marked `hold` are kept for the toolstack instead (TS-14).
    let mut created = 0;
    let mut held: Vec<domain::HeldModule> = Vec::new();
    for (i, m) in info.modules.iter().enumerate() {
        let mut string_buf = [0u8; 1536];
        let string = read_c_string(&mem, m.string, &mut string_buf);
        let name = domain::display_name(string);
        if m.range.end > DIRECT_MAP_SIZE {
            log::info!(
                "module {} '{name}': refused: loaded above the direct map",
                i + 1
            );
            continue;
        }
        // SAFETY: the module lies in reserved RAM below DIRECT_MAP_SIZE that
        // nothing writes until it is released after this loop.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                phys_to_virt(m.range.start) as *const u8,
                m.range.len() as usize,
            )
        };
        if i > 0 && crate::loader::cmdline::parse_module_cmdline(string).is_ok_and(|p| p.hold) {
            log::info!(
                "module {} '{name}': held for the toolstack ({} bytes)",
                i + 1,
                bytes.len()
            );
            held.push(domain::HeldModule::new(bytes, string));
            continue;
        }
        match domain::create_boot_domain(bytes, string, i == 0) {
            Ok(_) => created += 1,
            Err(reason) => log::info!("module {} '{name}': refused: {reason}", i + 1),
        }
    }
    if info.modules_dropped > 0 {
        log::warn!(
            "{} boot modules beyond the first {} were ignored",
            info.modules_dropped,
            multiboot::MAX_MODULES
        );
    }

    // Platform, PCI and the IOMMU: the driver domain's devices and its DMA
    // space (PDEV-*), now that its memory exists and before it runs.
    crate::platform::live::init(params.iommu_off, &params.dom0_pci);

    // The loader's strings and modules are no longer needed, except the
    // modules held for the toolstack.
    held.sort_by_key(|m| m.phys_range().0);
    if let Some(frames) = FRAMES.lock().as_mut() {
        let mut from = page_up(image_end);
        for m in &held {
            let (start, end) = m.phys_range();
            let start = start / PAGE_SIZE * PAGE_SIZE;
            if start > from {
                frames.add_free(from / PAGE_SIZE, start / PAGE_SIZE);
            }
            from = from.max(page_up(end));
        }
        if boot_area.end > from {
            frames.add_free(from / PAGE_SIZE, boot_area.end / PAGE_SIZE);
        }
        log::info!(
            "{created} domain(s) created; {} MiB free",
            (frames.free_count() * PAGE_SIZE) >> 20
        );
    }

    // A 1 ms tick from the local APIC timer; the scheduler preempts every
    // time slice's worth of ticks.
    log::info!(
        "clock: TSC {} MHz, APIC timer {} ticks/ms, wallclock {} s since the epoch",
        clock.tsc_hz / 1_000_000,
        clock.lapic_per_ms,
        clock.wc_sec
    );
    domain::hold_boot_modules(held);
    lapic::init_one_shot(clock.lapic_per_ms);
    crate::sched::start();
    crate::sched::run_idle()
}

/// Starts the CPUs the MADT lists besides this one.
fn start_secondary_cpus(lapic_per_ms: u32, tsc_hz: u64) {
    let madt = match crate::platform::live::madt_cpus() {
        Ok(m) => m,
        Err(e) => {
            log::warn!("CPUs: no usable MADT ({e}); running on the boot CPU only");
            return;
        }
    };
    let ids: heapless::Vec<u32, { crate::arch::percpu::MAX_CPUS }> = madt
        .cpus
        .iter()
        .filter(|c| c.enabled)
        .map(|c| c.apic_id)
        .take(crate::arch::percpu::MAX_CPUS)
        .collect();
    let started = smp::start_secondary_cpus(&ids, lapic_per_ms, tsc_hz);
    log::info!(
        "CPUs: {} enabled in the MADT (APIC ids {:?}), {} online",
        ids.len(),
        ids.as_slice(),
        started + 1
    );
}

/// The boot L4's hypervisor slots, to be copied into every guest L4.
fn hypervisor_l4_entries() -> Vec<(usize, u64)> {
    let l4 = phys_to_virt(boot::boot_pml4_phys()) as *const u64;
    (HV_L4_FIRST..=HV_L4_LAST)
        .chain(core::iter::once(HV_L4_IMAGE))
        .filter(|&slot| is_hv_l4_slot(slot))
        // SAFETY: the boot L4 is a page-aligned 512-entry table in the image.
        .map(|slot| (slot, unsafe { core::ptr::read_volatile(l4.add(slot)) }))
        .filter(|&(_, e)| e != 0)
        .collect()
}

/// Removes the boot stub's identity mapping of low memory.
fn drop_identity_map() {
    let l4 = phys_to_virt(boot::boot_pml4_phys()) as *mut u64;
    // SAFETY: slot 0 of the boot L4 is the identity map, used only by the
    // 32-bit stub; hv-core runs from the higher half and the direct map.
    unsafe {
        core::ptr::write_volatile(l4, 0);
        cpu::write_cr3(cpu::read_cr3());
    }
}
