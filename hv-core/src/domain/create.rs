//! Making domains in four steps — create, populate, build, unpause (SPEC.md
//! TS-1) — used both for boot modules (dom0-less boot) and by the toolstack's
//! `domctl`s; pausing; destroying (the crash path) and reaping dead domains.
//! Every refusal is one clear line; a step that fails leaves the domain as it
//! was before the step.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use hypercall_abi::domctl::CONSOLE_RING_SIZE;
use hypercall_abi::layout::{GUEST_CS, GUEST_SS, RFLAGS_IF};
use hypercall_abi::start_info::{Capabilities, StartFlags};
use hypercall_abi::trap::TRAP_VECTORS;
use hypercall_abi::{DomId, Errno, PAGE_SIZE};

use super::build::{self, Frames, GuestFrames, Identity};
use super::layout;
use super::table::{
    BuildState, Callbacks, Domain, DomainState, DomainTable, KernelStack, TrapEntry, Vcpu, VcpuId,
    DOMAINS,
};
use crate::arch::cpu::{rdtsc, zero_page, FxArea};
use crate::arch::entry::TrapFrame;
use crate::arch::switch::prepare_initial_stack;
use crate::console::LineBuffer;
use crate::loader::cmdline::{parse_module_cmdline, PinList};
use crate::loader::elf::ElfImage;
use crate::mm::live::{self, set_m2p, FRAMES};
use crate::mm::pagetable;
use crate::mm::{mfn_to_virt, Mfn, Owner};
use crate::toolstack::StreamRing;

/// The frames of a domain under construction, reached through the direct map.
struct DirectMapFrames<'a> {
    owned: &'a [Mfn],
    shared_info: Mfn,
}

impl GuestFrames for DirectMapFrames<'_> {
    fn frame_mut(&mut self, mfn: Mfn) -> &mut [u8; 4096] {
        // O(1): populate recorded pfn → mfn in the M2P, so a frame of the
        // domain is the one its P2M names at the pfn the M2P gives.
        let owned = live::m2p(mfn)
            .and_then(|pfn| usize::try_from(pfn).ok())
            .and_then(|pfn| self.owned.get(pfn))
            == Some(&mfn);
        assert!(
            mfn == self.shared_info || owned,
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

/// Why a domain step was refused: the error code a toolstack gets and the
/// one human line (also what a refused boot module logs).
#[derive(Debug)]
pub struct Refusal {
    pub errno: Errno,
    pub why: String,
}

impl Refusal {
    fn new(errno: Errno, why: impl Into<String>) -> Refusal {
        Refusal {
            errno,
            why: why.into(),
        }
    }
}

fn not_enough_memory(wanted_pages: u64, free_pages: u64) -> Refusal {
    Refusal::new(
        Errno::ENOMEM,
        format!(
            "not enough memory: wants {} MiB, {} MiB free",
            (wanted_pages * PAGE_SIZE) >> 20,
            (free_pages * PAGE_SIZE) >> 20
        ),
    )
}

/// Heap bytes [`domain_create`] leaves for everything else (P2Ms, event
/// channels, grant tracking, images being built).
const HEAP_RESERVE: usize = 512 * 1024;

/// What [`domain_create`] makes (TS-2; boot modules fill it from their string).
pub struct DomainSpec<'a> {
    pub name: &'a str,
    pub max_pages: u64,
    pub vcpus: u32,
    pub weight: u32,
    pub cap_percent: u32,
    pub pin: PinList,
    /// Domain 0 with the driver domain's capabilities (boot only).
    pub driver: bool,
}

/// The capabilities of the driver domain (DOM-3).
pub const DRIVER_CAPABILITIES: Capabilities = Capabilities::CONSOLE_READ
    .union(Capabilities::DOMAIN_QUERY)
    .union(Capabilities::MACHINE_POWER)
    .union(Capabilities::DEVBUS_ADMIN)
    .union(Capabilities::DEVICES)
    .union(Capabilities::DOMAIN_BUILD);

/// Step 1 (TS-2): an empty, paused domain with its shared_info frame and its
/// vCPUs (none runnable), no memory. The name must be valid (checked by the
/// caller); refuses a name in use (`EEXIST`) and `max_pages` beyond the free
/// frames (`ENOMEM`).
pub fn domain_create(spec: &DomainSpec<'_>) -> Result<DomId, Refusal> {
    let t0 = rdtsc();
    // vCPU stacks and structures are allocated infallibly: refuse up front
    // when they would eat into the heap's reserve (TS-2).
    let need = (spec.vcpus as usize)
        .saturating_mul(super::table::KSTACK_SIZE + core::mem::size_of::<Vcpu>() + 64)
        .saturating_add(CONSOLE_RING_SIZE as usize + core::mem::size_of::<Domain>() + 4096);
    if crate::mm::heap::available_bytes() < need.saturating_add(HEAP_RESERVE) {
        return Err(Refusal::new(
            Errno::ENOMEM,
            "out of hypervisor heap for its vCPUs",
        ));
    }
    let mut console_buf: Vec<u8> = Vec::new();
    if console_buf
        .try_reserve_exact(CONSOLE_RING_SIZE as usize)
        .is_err()
    {
        return Err(Refusal::new(Errno::ENOMEM, "out of hypervisor heap"));
    }
    console_buf.resize(CONSOLE_RING_SIZE as usize, 0);
    let mut name = heapless::String::new();
    name.push_str(spec.name)
        .map_err(|_| Refusal::new(Errno::EINVAL, "name too long"))?;

    let mut table = DOMAINS.lock();
    if table.domains.values().any(|d| d.name == name) {
        return Err(Refusal::new(
            Errno::EEXIST,
            format!("a domain named '{}' exists", spec.name),
        ));
    }
    let domid = if spec.driver {
        if table.domains.contains_key(&0) {
            return Err(Refusal::new(Errno::EEXIST, "domain 0 exists"));
        }
        0
    } else {
        let mut id = table.next_domid.max(1);
        while table.domains.contains_key(&id) {
            id = id
                .checked_add(1)
                .ok_or_else(|| Refusal::new(Errno::ENOSPC, "no domain id left"))?;
        }
        id
    };
    let owner = Owner::Domain(domid);
    let shared_info_mfn = {
        let mut frames_guard = FRAMES.lock();
        let frames = frames_guard
            .as_mut()
            .ok_or_else(|| Refusal::new(Errno::ENOMEM, "frame table not ready"))?;
        let free = frames.free_count();
        if free < spec.max_pages.saturating_add(1) {
            return Err(not_enough_memory(spec.max_pages, free));
        }
        frames
            .alloc(owner)
            .ok_or_else(|| not_enough_memory(spec.max_pages, free))?
    };
    // SAFETY: the frame was just allocated to this domain and is mapped by the
    // direct map; nobody else can see it yet.
    unsafe { zero_page(mfn_to_virt(shared_info_mfn)) };
    crate::time::clock::publish(shared_info_mfn, spec.vcpus as usize);

    let sched_params = crate::sched::policy::Params {
        weight: spec.weight,
        cap_percent: spec.cap_percent,
    };
    let mut stacks: Vec<Box<KernelStack>> = Vec::new();
    for _ in 0..spec.vcpus {
        match KernelStack::try_new_boxed() {
            Some(stack) => stacks.push(stack),
            None => {
                drop(stacks);
                drop(table);
                release_fresh(&[shared_info_mfn], owner);
                return Err(Refusal::new(
                    Errno::ENOMEM,
                    "out of hypervisor heap for its vCPU stacks",
                ));
            }
        }
    }
    let vcpus: Vec<Box<Vcpu>> = (0..spec.vcpus)
        .zip(stacks)
        .map(|(n, kstack)| {
            let pin = spec.pin.for_vcpu(n);
            let cpu = crate::sched::place(pin);
            Box::new(Vcpu {
                id: VcpuId { domid, vcpu: n },
                saved_rsp: 0,
                kstack,
                // Set by the build; no base pointer is held before it.
                kernel_l4: 0,
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
                initialised: false,
                cpu,
                // A pin to a pCPU that is not online is not honoured.
                pin: pin.filter(|&p| p == cpu),
                params: sched_params,
                claimed: false,
                ctx_live: core::sync::atomic::AtomicBool::new(false),
            })
        })
        .collect();
    let placement: heapless::Vec<(VcpuId, u32), 32> =
        vcpus.iter().map(|v| (v.id, v.cpu)).take(32).collect();
    table.domains.insert(
        domid,
        Box::new(Domain {
            id: domid,
            name,
            capabilities: if spec.driver {
                DRIVER_CAPABILITIES
            } else {
                Capabilities::empty()
            },
            driver: spec.driver,
            state: DomainState::Running,
            paused: true,
            build: BuildState::Empty,
            busy: false,
            p2m: Vec::new(),
            max_pages: spec.max_pages,
            shared_info_mfn,
            vcpus,
            console: LineBuffer::new(),
            console_ring: StreamRing::new(console_buf),
            console_input: heapless::Deque::new(),
            cpu_cycles: 0,
            created_tsc: t0,
            first_output_tsc: 0,
            unpaused_tsc: 0,
            hv_build_cycles: 0,
        }),
    );
    table.next_domid = table.next_domid.max(domid.saturating_add(1));
    drop(table);
    crate::event::delivery::EVENTS.lock().add_domain(domid);
    for &(id, cpu) in &placement {
        crate::sched::register(id, cpu, sched_params, false);
    }
    charge(domid, t0);
    Ok(domid)
}

/// Adds the cycles since `t0` to the domain's `hv_build_cycles`.
fn charge(domid: DomId, t0: u64) {
    let spent = rdtsc().wrapping_sub(t0);
    if let Some(d) = DOMAINS.lock().domains.get_mut(&domid) {
        d.hv_build_cycles = d.hv_build_cycles.wrapping_add(spent);
    }
}

/// Step 2 (TS-3): `nr_pages` more zeroed frames for the domain's memory.
/// Frames are allocated and zeroed without the domain table lock; the domain
/// is marked busy meanwhile, so it cannot be reaped under our feet.
pub fn domain_populate(domid: DomId, nr_pages: u64) -> Result<(), Refusal> {
    let t0 = rdtsc();
    {
        let mut table = DOMAINS.lock();
        let d = table
            .domains
            .get_mut(&domid)
            .ok_or_else(|| Refusal::new(Errno::ESRCH, "no such domain"))?;
        if !d.alive() || d.busy || d.build != BuildState::Empty || nr_pages == 0 {
            return Err(Refusal::new(
                Errno::EINVAL,
                "only a live, unbuilt domain can be populated, with at least one page",
            ));
        }
        let total = (d.p2m.len() as u64).saturating_add(nr_pages);
        if total > d.max_pages {
            return Err(Refusal::new(
                Errno::ERANGE,
                format!("{total} pages would exceed its max_pages {}", d.max_pages),
            ));
        }
        if d.p2m.try_reserve_exact(nr_pages as usize).is_err() {
            return Err(Refusal::new(
                Errno::ENOMEM,
                "out of hypervisor heap for the P2M",
            ));
        }
        d.busy = true;
    }
    let owner = Owner::Domain(domid);
    let mut fresh: Vec<Mfn> = Vec::new();
    let allocated = fresh.try_reserve_exact(nr_pages as usize).is_ok() && {
        let mut frames_guard = FRAMES.lock();
        match frames_guard.as_mut() {
            Some(frames) if frames.free_count() >= nr_pages => {
                fresh.extend((0..nr_pages).map_while(|_| frames.alloc(owner)));
                true
            }
            _ => false,
        }
    };
    let free_now = FRAMES.lock().as_ref().map_or(0, |f| f.free_count());
    if !allocated || fresh.len() as u64 != nr_pages {
        release_fresh(&fresh, owner);
        if let Some(d) = DOMAINS.lock().domains.get_mut(&domid) {
            d.busy = false;
        }
        return Err(not_enough_memory(nr_pages, free_now));
    }
    for &mfn in &fresh {
        // SAFETY: each frame was just allocated to this domain, is mapped by
        // the direct map, and is not in its P2M yet: nobody else sees it.
        unsafe { zero_page(mfn_to_virt(mfn)) };
    }
    let mut table = DOMAINS.lock();
    let Some(d) = table.domains.get_mut(&domid) else {
        // Cannot happen while busy; be safe anyway.
        drop(table);
        release_fresh(&fresh, owner);
        return Err(Refusal::new(Errno::ESRCH, "no such domain"));
    };
    let first = d.p2m.len() as u64;
    for (i, &mfn) in fresh.iter().enumerate() {
        set_m2p(mfn, first + i as u64);
    }
    d.p2m.extend_from_slice(&fresh);
    d.busy = false;
    d.hv_build_cycles = d.hv_build_cycles.wrapping_add(rdtsc().wrapping_sub(t0));
    Ok(())
}

fn release_fresh(fresh: &[Mfn], owner: Owner) {
    if let Some(frames) = FRAMES.lock().as_mut() {
        for &mfn in fresh {
            let _ = frames.release(mfn, owner);
        }
    }
}

/// Step 3 (TS-4): lays `bytes` (an ELF image) into the populated domain with
/// the builder, validates the start-of-day page tables and gives vCPU 0 its
/// entry context. The domain stays paused.
pub fn domain_build(domid: DomId, bytes: &[u8], cmdline: &str) -> Result<(), Refusal> {
    let t0 = rdtsc();
    let image = ElfImage::parse(bytes).map_err(|e| Refusal::new(Errno::EINVAL, format!("{e}")))?;
    let (abi, hc_page) =
        build::check_image(&image).map_err(|e| Refusal::new(Errno::EINVAL, format!("{e}")))?;
    let hv_l4 = live::hypervisor_l4();

    let mut table = DOMAINS.lock();
    let domain = table
        .domains
        .get_mut(&domid)
        .ok_or_else(|| Refusal::new(Errno::ESRCH, "no such domain"))?;
    if !domain.alive() || domain.busy || domain.build != BuildState::Empty {
        return Err(Refusal::new(
            Errno::EINVAL,
            "only a live domain that was not built yet can be built",
        ));
    }
    let nr_pages = domain.p2m.len() as u64;
    let layout = layout::compute(image.virt_base(), image.virt_end(), nr_pages)
        .map_err(|e| Refusal::new(Errno::EINVAL, format!("{e}")))?;
    let nr_vcpus = domain.vcpus.len() as u32;
    let who = Identity {
        domid,
        name: &domain.name,
        cmdline,
        capabilities: domain.capabilities,
        flags: if domain.driver {
            StartFlags::DRIVER_DOMAIN
        } else {
            StartFlags::empty()
        },
        nr_vcpus,
        nr_m2p_entries: M2P_ENTRIES.get().copied().unwrap_or(0),
    };
    let entry = {
        let frames_spec = Frames {
            p2m: &domain.p2m,
            shared_info_mfn: domain.shared_info_mfn,
            hv_l4,
        };
        let mut mem = DirectMapFrames {
            owned: &domain.p2m,
            shared_info: domain.shared_info_mfn,
        };
        build::build(&mut mem, &image, hc_page, &layout, &who, &frames_spec)
    };
    // From here on its frames are no longer zero.
    domain.build = BuildState::Spoiled;

    // Validate the start-of-day address space: pin the L4 (which types every
    // table and page under it, MM-2) and make it the kernel base pointer.
    let l4_mfn = entry.cr3 >> 12;
    // Every vCPU holds a base-pointer reference; the down ones hold vCPU 0's
    // L4 until `vcpu_op(initialise)` gives them their own.
    let validated = live::with_page_tables(|pt| {
        pt.pin(l4_mfn, 4, domid)?;
        for _ in 0..nr_vcpus {
            pt.get_baseptr(l4_mfn, domid)?;
        }
        Ok::<(), pagetable::MmError>(())
    });
    if !matches!(validated, Some(Ok(()))) {
        return Err(Refusal::new(
            Errno::EINVAL,
            format!("its start-of-day page tables failed validation ({validated:?})"),
        ));
    }
    for v in domain.vcpus.iter_mut() {
        v.kernel_l4 = l4_mfn;
    }
    let frame = TrapFrame {
        rip: entry.rip,
        rsp: entry.rsp,
        rsi: entry.start_info,
        cs: GUEST_CS,
        ss: GUEST_SS,
        rflags: RFLAGS_IF | 0x2,
        ..TrapFrame::default()
    };
    if let Some(vcpu) = domain.vcpus.first_mut() {
        // SAFETY: the stack was allocated with the vCPU, is 16 KiB and
        // 16-byte aligned, and nothing runs on it (the vCPU never ran).
        vcpu.saved_rsp = unsafe { prepare_initial_stack(vcpu.kstack_top(), &frame) };
        vcpu.initialised = true;
    }
    domain.build = BuildState::Built;
    domain.hv_build_cycles = domain
        .hv_build_cycles
        .wrapping_add(rdtsc().wrapping_sub(t0));
    let placement: heapless::Vec<u32, 32> = domain.vcpus.iter().map(|v| v.cpu).take(32).collect();
    let (mib, name, params) = (
        (nr_pages * PAGE_SIZE) >> 20,
        domain.name.clone(),
        domain.vcpus.first().map(|v| v.params),
    );
    drop(table);
    log::info!(
        "d{domid} '{name}': created: {mib} MiB, {nr_vcpus} vCPU(s) on pCPU {:?}{}, image {:#x}..{:#x}, entry {:#x}, ABI {}.{}",
        placement.as_slice(),
        match params.map(|p| (p.weight, p.cap_percent)) {
            None | Some((256, 0)) => String::new(),
            Some((w, 0)) => format!(", weight {w}"),
            Some((w, c)) => format!(", weight {w}, cap {c}%"),
        },
        image.virt_base(),
        image.virt_end(),
        entry.rip,
        abi.major,
        abi.minor
    );
    Ok(())
}

/// Step 4 (TS-5): lets a built domain's vCPUs run.
pub fn domain_unpause(domid: DomId) -> Result<(), Errno> {
    let mut table = DOMAINS.lock();
    let d = table.domains.get_mut(&domid).ok_or(Errno::ESRCH)?;
    if !d.alive() || d.build != BuildState::Built {
        return Err(Errno::EINVAL);
    }
    if !d.paused {
        return Ok(());
    }
    d.paused = false;
    if d.unpaused_tsc == 0 {
        d.unpaused_tsc = rdtsc();
    }
    for v in d
        .vcpus
        .iter()
        .filter(|v| v.up && v.initialised && !v.blocked)
    {
        crate::sched::make_runnable(v.id, v.cpu);
    }
    Ok(())
}

/// TS-5: stops a domain's vCPUs; returns once no pCPU runs any of them (or
/// after a bounded wait, when the pause takes effect at their next tick).
pub fn domain_pause(domid: DomId) -> Result<(), Errno> {
    let cpus = {
        let mut table = DOMAINS.lock();
        let d = table.domains.get_mut(&domid).ok_or(Errno::ESRCH)?;
        if !d.alive() {
            return Err(Errno::EINVAL);
        }
        d.paused = true;
        running_cpus(d)
    };
    for cpu in cpus {
        crate::sched::kick(cpu as usize);
    }
    wait_until_parked(domid);
    Ok(())
}

/// The pCPUs running (or switching to) a vCPU of `d`.
fn running_cpus(d: &Domain) -> heapless::Vec<u32, 32> {
    d.vcpus
        .iter()
        .filter(|v| v.claimed)
        .map(|v| v.cpu)
        .take(32)
        .collect()
}

/// Whether no pCPU runs or holds a vCPU of `d`.
fn parked(d: &Domain) -> bool {
    d.vcpus
        .iter()
        .all(|v| !v.claimed && !v.ctx_live.load(core::sync::atomic::Ordering::Acquire))
}

/// Waits (at most ~100 ms of system time) until no pCPU runs a vCPU of
/// `domid` (or it is gone). Never holds a lock while it waits.
fn wait_until_parked(domid: DomId) -> bool {
    let deadline = crate::time::clock::now_ns().saturating_add(100_000_000);
    loop {
        let done = DOMAINS.lock().domains.get(&domid).is_none_or(|d| parked(d));
        if done {
            return true;
        }
        if crate::time::clock::now_ns() > deadline {
            return false;
        }
        crate::sync::relax();
    }
}

/// TS-6: kills domain `domid` as a crash does, then frees it at once if no
/// pCPU holds its vCPUs any more (else the idle reaper does, soon).
/// `by` is the caller (a domain never destroys itself or domain 0).
pub fn domain_destroy(domid: DomId, by: DomId) -> Result<(), Errno> {
    let cpus = {
        let mut table = DOMAINS.lock();
        let d = table.domains.get_mut(&domid).ok_or(Errno::ESRCH)?;
        if domid == hypercall_abi::DOMID_DRIVER || domid == by || d.driver {
            return Err(Errno::EPERM);
        }
        if d.alive() {
            d.state = DomainState::Crashed;
            d.flush_console();
            log::info!("d{domid} '{}': destroyed by d{by}", d.name);
        }
        running_cpus(d)
    };
    // Its vCPUs, wherever they run, stop at the kick.
    for cpu in cpus {
        crate::sched::kick(cpu as usize);
    }
    crate::event::delivery::send_virq(
        hypercall_abi::DOMID_DRIVER,
        hypercall_abi::evtchn::VIRQ_DOM_EXC,
    );
    if wait_until_parked(domid) {
        reap_now(domid);
    }
    Ok(())
}

/// Creates a domain from a boot module with the same four steps a toolstack
/// uses (TS-1). `driver` makes it the driver domain (domain 0, with its
/// capabilities). Returns the new domain id, or the reason it was refused;
/// a refused module leaves nothing behind (not even a used domain id).
pub fn create_boot_domain(
    bytes: &[u8],
    module_string: &str,
    driver: bool,
) -> Result<DomId, String> {
    let params = parse_module_cmdline(module_string).map_err(|e| format!("{e}"))?;
    // The image is checked before anything is created, so that a refused
    // module takes no domain id.
    let image = ElfImage::parse(bytes).map_err(|e| format!("{e}"))?;
    build::check_image(&image).map_err(|e| format!("{e}"))?;
    let nr_pages = params.mem_bytes / PAGE_SIZE;
    layout::compute(image.virt_base(), image.virt_end(), nr_pages).map_err(|e| format!("{e}"))?;

    let spec = DomainSpec {
        name: params.name,
        max_pages: nr_pages,
        vcpus: params.vcpus,
        weight: params.weight,
        cap_percent: params.cap_percent,
        pin: params.pin,
        driver,
    };
    let domid = domain_create(&spec).map_err(|r| r.why)?;
    let built = domain_populate(domid, nr_pages)
        .and_then(|()| domain_build(domid, bytes, params.guest_cmdline))
        .map_err(|r| r.why)
        .and_then(|()| domain_unpause(domid).map_err(|e| format!("unpause failed ({e})")));
    if let Err(why) = built {
        discard_unstarted(domid);
        return Err(why);
    }
    if let Some(d) = DOMAINS.lock().domains.get(&domid) {
        if let Some(&cpu) = d.vcpus.first().map(|v| &v.cpu) {
            crate::sched::kick(cpu as usize);
        }
    }
    Ok(domid)
}

/// Removes a boot-time domain whose creation failed before it ever ran, and
/// gives its domain id back.
fn discard_unstarted(domid: DomId) {
    {
        let mut table = DOMAINS.lock();
        if let Some(d) = table.domains.get_mut(&domid) {
            d.state = DomainState::Crashed;
        }
        if table.next_domid == domid.saturating_add(1) {
            table.next_domid = domid;
        }
    }
    reap_now(domid);
}

/// Frees dead domain `domid` now if no pCPU holds any of its vCPUs and no
/// populate is in flight. For hypercall context: the running vCPU's page
/// tables are not the dead domain's (a domain never reaps itself).
pub fn reap_now(domid: DomId) -> bool {
    if crate::sched::current().is_some_and(|c| c.domid == domid) {
        return false;
    }
    let mut table = DOMAINS.lock();
    let ready = table
        .domains
        .get(&domid)
        .is_some_and(|d| !d.alive() && !d.busy && parked(d));
    if ready {
        reap(&mut table, domid);
    }
    drop(table);
    if ready {
        audit_frames("after a domain ended");
    }
    ready
}

/// Removes every domain that is no longer running and none of whose vCPUs a
/// pCPU still runs or holds: frees its frames (after moving off its page
/// tables) and its vCPUs. Runs in an idle context only.
pub fn reap_dead_domains() {
    let mut table = DOMAINS.lock();
    let dead: Vec<DomId> = table
        .domains
        .values()
        .filter(|d| !d.alive() && !d.busy && parked(d))
        .map(|d| d.id)
        .collect();
    if dead.is_empty() {
        return;
    }
    // SAFETY: the boot L4 maps hv-core exactly as every guest L4 does.
    unsafe { crate::arch::cpu::write_cr3(crate::arch::boot::boot_pml4_phys()) };
    for domid in dead {
        reap(&mut table, domid);
    }
    drop(table);
    audit_frames("after a domain ended");
}

/// The common teardown of a dead domain (EVT-4, GNT-5, DEV-5, PDEV-6, MM-8),
/// whether it crashed, shut down or was destroyed by the toolstack. The
/// caller holds `DOMAINS` and made sure no pCPU holds its vCPUs or runs on
/// its page tables.
fn reap(table: &mut DomainTable, domid: DomId) {
    let Some(mut domain) = table.domains.remove(&domid) else {
        return;
    };
    for v in &domain.vcpus {
        crate::sched::forget(v.id, v.cpu);
    }
    crate::event::delivery::EVENTS.lock().remove_domain(
        domid,
        &mut crate::event::delivery::Notifier { table: &mut *table },
    );
    crate::devbus::hypercall::domain_died(table, domid);
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
