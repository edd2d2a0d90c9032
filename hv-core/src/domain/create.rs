//! Creating boot-time domains from multiboot modules (dom0-less boot) and
//! destroying domains. Every refusal is one clear console line; nothing is
//! left half-created.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use hypercall_abi::layout::{GUEST_CS, GUEST_SS, RFLAGS_IF};
use hypercall_abi::start_info::{Capabilities, StartFlags};
use hypercall_abi::trap::TRAP_VECTORS;
use hypercall_abi::{DomId, PAGE_SIZE};

use super::build::{self, Frames, GuestFrames, Identity};
use super::layout;
use super::table::{Callbacks, Domain, DomainState, KernelStack, TrapEntry, Vcpu, VcpuId, DOMAINS};
use crate::arch::cpu::{zero_page, FxArea};
use crate::arch::entry::TrapFrame;
use crate::arch::switch::prepare_initial_stack;
use crate::console::LineBuffer;
use crate::loader::cmdline::parse_module_cmdline;
use crate::loader::elf::ElfImage;
use crate::mm::live::{self, set_m2p, FRAMES};
use crate::mm::pagetable;
use crate::mm::{mfn_to_virt, Mfn, Owner};

/// The frames of a domain under construction, reached through the direct map.
struct DirectMapFrames<'a> {
    owned: &'a [Mfn],
    shared_info: Mfn,
}

impl GuestFrames for DirectMapFrames<'_> {
    fn frame_mut(&mut self, mfn: Mfn) -> &mut [u8; 4096] {
        assert!(
            mfn == self.shared_info || self.owned.contains(&mfn),
            "builder touched a foreign frame"
        );
        // SAFETY: the frame was just allocated to the domain being built, nothing
        // else maps or references it yet, and the direct map covers it.
        unsafe { &mut *(mfn_to_virt(mfn) as *mut [u8; 4096]) }
    }
}

/// The name to report a module by: its `name=` parameter if present, else the
/// image's file name.
pub fn display_name(module_string: &str) -> &str {
    let params = module_string.split(" -- ").next().unwrap_or("");
    let mut tokens = params.split_whitespace();
    let path = tokens.next().unwrap_or("?");
    for t in tokens {
        if let Some(name) = t.strip_prefix("name=") {
            if !name.is_empty() {
                return name;
            }
        }
    }
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".elf").unwrap_or(file)
}

/// Creates a domain from a boot module. `driver` makes it the driver domain
/// (domain 0, with its capabilities). Returns the new domain id, or the reason
/// it was refused.
pub fn create_boot_domain(
    bytes: &[u8],
    module_string: &str,
    driver: bool,
    hv_l4: &[(usize, u64)],
) -> Result<DomId, String> {
    let params = parse_module_cmdline(module_string).map_err(|e| format!("{e}"))?;
    let image = ElfImage::parse(bytes).map_err(|e| format!("{e}"))?;
    let (abi, hc_page) = build::check_image(&image).map_err(|e| format!("{e}"))?;
    let nr_pages = params.mem_bytes / PAGE_SIZE;
    let layout = layout::compute(image.virt_base(), image.virt_end(), nr_pages)
        .map_err(|e| format!("{e}"))?;

    let mut table = DOMAINS.lock();
    let domid = if driver { 0 } else { table.next_domid.max(1) };
    let owner = Owner::Domain(domid);
    let free = FRAMES.lock().as_ref().map_or(0, |f| f.free_count());
    if free < nr_pages + 1 {
        return Err(format!(
            "not enough memory: wants {} MiB, {} MiB free",
            params.mem_bytes >> 20,
            (free * PAGE_SIZE) >> 20
        ));
    }
    let mut p2m: Vec<Mfn> = Vec::new();
    if p2m.try_reserve_exact(nr_pages as usize).is_err() {
        return Err(String::from("out of hypervisor heap for the P2M"));
    }
    let shared_info_mfn = {
        let mut frames_guard = FRAMES.lock();
        let Some(frames) = frames_guard.as_mut() else {
            return Err(String::from("frame table not ready"));
        };
        if frames.free_count() < nr_pages + 1 {
            return Err(format!(
                "not enough memory: wants {} MiB, {} MiB free",
                params.mem_bytes >> 20,
                (frames.free_count() * PAGE_SIZE) >> 20
            ));
        }
        // Free frames were counted above; with the lock held none can vanish.
        p2m.extend((0..nr_pages).map_while(|_| frames.alloc(owner)));
        let shared_info_mfn = frames.alloc(owner);
        match shared_info_mfn.filter(|_| p2m.len() as u64 == nr_pages) {
            Some(mfn) => mfn,
            None => {
                for &mfn in p2m.iter().chain(shared_info_mfn.iter()) {
                    let _ = frames.release(mfn, owner);
                }
                return Err(String::from("frame allocation failed"));
            }
        }
    };
    for &mfn in p2m.iter().chain(core::iter::once(&shared_info_mfn)) {
        // SAFETY: each frame was just allocated to this domain and is mapped by
        // the direct map; nobody else can see it yet.
        unsafe { zero_page(mfn_to_virt(mfn)) };
    }
    for (pfn, &mfn) in p2m.iter().enumerate() {
        set_m2p(mfn, pfn as u64);
    }

    let capabilities = if driver {
        Capabilities::CONSOLE_READ
            | Capabilities::DOMAIN_QUERY
            | Capabilities::MACHINE_POWER
            | Capabilities::DEVBUS_ADMIN
            | Capabilities::DEVICES
    } else {
        Capabilities::empty()
    };
    let flags = if driver {
        StartFlags::DRIVER_DOMAIN
    } else {
        StartFlags::empty()
    };
    let who = Identity {
        domid,
        name: params.name,
        cmdline: params.guest_cmdline,
        capabilities,
        flags,
        nr_vcpus: params.vcpus,
        nr_m2p_entries: M2P_ENTRIES.get().copied().unwrap_or(0),
    };
    let entry = {
        let frames_spec = Frames {
            p2m: &p2m,
            shared_info_mfn,
            hv_l4,
        };
        let mut mem = DirectMapFrames {
            owned: &p2m,
            shared_info: shared_info_mfn,
        };
        build::build(&mut mem, &image, hc_page, &layout, &who, &frames_spec)
    };

    crate::time::clock::publish(shared_info_mfn, params.vcpus as usize);

    // Validate the start-of-day address space: pin the L4 (which types every
    // table and page under it, MM-2) and make it the kernel base pointer.
    let l4_mfn = entry.cr3 >> 12;
    // Every vCPU holds a base-pointer reference; the down ones hold vCPU 0's
    // L4 until `vcpu_op(initialise)` gives them their own.
    let validated = live::with_page_tables(|pt| {
        pt.pin(l4_mfn, 4, domid)?;
        for _ in 0..params.vcpus {
            pt.get_baseptr(l4_mfn, domid)?;
        }
        Ok::<(), pagetable::MmError>(())
    });
    if !matches!(validated, Some(Ok(()))) {
        let mut frames_guard = FRAMES.lock();
        if let Some(frames) = frames_guard.as_mut() {
            for &mfn in p2m.iter().chain(core::iter::once(&shared_info_mfn)) {
                set_m2p(mfn, live::M2P_INVALID);
                let _ = frames.release(mfn, owner);
            }
        }
        return Err(format!(
            "its start-of-day page tables failed validation ({validated:?})"
        ));
    }

    let sched_params = crate::sched::policy::Params {
        weight: params.weight,
        cap_percent: params.cap_percent,
    };
    let mut vcpus: Vec<Box<Vcpu>> = (0..params.vcpus)
        .map(|n| {
            let pin = params.pin.for_vcpu(n);
            let cpu = crate::sched::place(pin);
            Box::new(Vcpu {
                id: VcpuId { domid, vcpu: n },
                saved_rsp: 0,
                kstack: Box::new(KernelStack([0; super::table::KSTACK_SIZE])),
                kernel_l4: l4_mfn,
                user_l4: None,
                user_mode: false,
                fpu: FxArea::initial(),
                traps: [TrapEntry::default(); TRAP_VECTORS],
                kernel_sp: 0,
                callbacks: Callbacks::default(),
                active_traps: heapless::Vec::new(),
                floor_mode: false,
                blocked: false,
                polling: heapless::Vec::new(),
                poll_deadline: 0,
                timer_deadline: 0,
                running_since: 0,
                cpu_time_ns: 0,
                up: n == 0,
                initialised: n == 0,
                cpu,
                // A pin to a pCPU that is not online is not honoured.
                pin: pin.filter(|&p| p == cpu),
                params: sched_params,
                claimed: false,
                ctx_live: core::sync::atomic::AtomicBool::new(false),
            })
        })
        .collect();
    let vcpu = &mut vcpus[0];
    let frame = TrapFrame {
        rip: entry.rip,
        rsp: entry.rsp,
        rsi: entry.start_info,
        cs: GUEST_CS,
        ss: GUEST_SS,
        rflags: RFLAGS_IF | 0x2,
        ..TrapFrame::default()
    };
    // SAFETY: the stack was just allocated, is 16 KiB and 16-byte aligned, and
    // no one else uses it.
    vcpu.saved_rsp = unsafe { prepare_initial_stack(vcpu.kstack_top(), &frame) };

    let mut name = heapless::String::new();
    let _ = name.push_str(params.name);
    table.domains.insert(
        domid,
        Box::new(Domain {
            id: domid,
            name,
            capabilities,
            state: DomainState::Running,
            p2m,
            shared_info_mfn,
            vcpus,
            console: LineBuffer::new(),
            cpu_cycles: 0,
        }),
    );
    table.next_domid = domid + 1;
    drop(table);
    crate::event::delivery::EVENTS.lock().add_domain(domid);
    let placement: heapless::Vec<u32, 32> = {
        let mut table = DOMAINS.lock();
        let mut cpus = heapless::Vec::new();
        if let Some(d) = table.domains.get_mut(&domid) {
            for v in &d.vcpus {
                crate::sched::register(v.id, v.cpu, v.params, v.up);
                let _ = cpus.push(v.cpu);
            }
        }
        cpus
    };
    if let Some(&cpu) = placement.first() {
        crate::sched::kick(cpu as usize);
    }
    log::info!(
        "d{domid} '{}': created: {} MiB, {} vCPU(s) on pCPU {:?}{}, image {:#x}..{:#x}, entry {:#x}, ABI {}.{}",
        params.name,
        params.mem_bytes >> 20,
        params.vcpus,
        placement.as_slice(),
        match (params.weight, params.cap_percent) {
            (256, 0) => String::new(),
            (w, 0) => format!(", weight {w}"),
            (w, c) => format!(", weight {w}, cap {c}%"),
        },
        image.virt_base(),
        image.virt_end(),
        entry.rip,
        abi.major,
        abi.minor
    );
    Ok(domid)
}

/// Removes every domain that is no longer running and none of whose vCPUs a
/// pCPU still runs or holds: frees its frames (after moving off its page
/// tables) and its vCPUs. Runs in an idle context only.
pub fn reap_dead_domains() {
    let mut table = DOMAINS.lock();
    let dead: Vec<DomId> = table
        .domains
        .values()
        .filter(|d| {
            d.state != DomainState::Running
                && d.vcpus
                    .iter()
                    .all(|v| !v.claimed && !v.ctx_live.load(core::sync::atomic::Ordering::Acquire))
        })
        .map(|d| d.id)
        .collect();
    if dead.is_empty() {
        return;
    }
    // SAFETY: the boot L4 maps hv-core exactly as every guest L4 does.
    unsafe { crate::arch::cpu::write_cr3(crate::arch::boot::boot_pml4_phys()) };
    for domid in dead {
        let Some(mut domain) = table.domains.remove(&domid) else {
            continue;
        };
        for v in &domain.vcpus {
            crate::sched::forget(v.id, v.cpu);
        }
        crate::event::delivery::EVENTS.lock().remove_domain(
            domid,
            &mut crate::event::delivery::Notifier { table: &mut table },
        );
        crate::devbus::hypercall::domain_died(&mut table, domid);
        domain.flush_console();
        // Devices and their DMA go first (PDEV-6, PDEV-8).
        crate::platform::live::domain_ended(domid);
        let mut grants = crate::grant::live::GRANTS.lock();
        let released = live::with_page_tables(|pt| {
            let (keep, freed) =
                grants.domain_died(&mut crate::grant::live::DirectGrantMemory, pt, domid);
            for &mfn in &freed {
                set_m2p(mfn, live::M2P_INVALID);
            }
            let n = super::table::release_frames(pt.frames, &domain, &keep);
            (n, keep.len(), freed.len(), pt.frames.free_count())
        });
        drop(grants);
        if let Some((n, kept, freed, free)) = released {
            log::info!(
                "d{domid} '{}': {n} frames returned to the free pool ({free} free)",
                domain.name
            );
            if kept > 0 {
                log::info!(
                    "d{domid} '{}': {kept} frames stay until other domains unmap their grants",
                    domain.name
                );
            }
            if freed > 0 {
                log::info!(
                    "d{domid} '{}': its unmapping freed {freed} frames of dead granters",
                    domain.name
                );
            }
        }
    }
    drop(table);
    audit_frames("after a domain ended");
}

/// Entries of the M2P table (set at boot).
pub static M2P_ENTRIES: spin::Once<u64> = spin::Once::new();

/// Whether the frame-table audit runs (hv-core's `audit=1`, SPEC MM-8).
pub static AUDIT: spin::Once<bool> = spin::Once::new();

/// Checks MM-2 (a)–(d) for every live domain and the free list; logs the
/// outcome. A no-op unless `audit=1`.
pub fn audit_frames(when: &str) {
    if !AUDIT.get().copied().unwrap_or(false) {
        return;
    }
    let table = DOMAINS.lock();
    let baseptrs = table.base_pointers();
    let held = crate::grant::live::GRANTS.lock().mappings();
    let frames_guard = FRAMES.lock();
    let Some(frames) = frames_guard.as_ref() else {
        return;
    };
    match pagetable::audit(
        frames,
        &live::DirectTables,
        &baseptrs,
        &held,
        &live::AssignedDeviceFrames,
    ) {
        Ok(n) => log::info!(
            "audit: ok ({n} frames checked, {} free) {when}",
            frames.free_count()
        ),
        Err(e) => log::error!("audit: FAILED {when}: frame {:#x}: {}", e.mfn, e.what),
    }
}
