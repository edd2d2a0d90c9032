//! Per-pCPU scheduling in the kernel: every online pCPU has a run queue (a
//! [`Policy`]: credit2-like shares, caps, boosted wake-ups), runs the vCPU it
//! picks, steals work from busier pCPUs when it would idle, and switches
//! between vCPUs and its own idle context.
//!
//! # Invariants
//! - Lock order: `DOMAINS` → one pCPU's policy lock (never two at once).
//! - A vCPU's entity is in exactly one pCPU's policy: the one `Vcpu::cpu`
//!   names (changed only under `DOMAINS`, by the stealing pCPU).
//! - `Vcpu::claimed` (under `DOMAINS`): a pCPU runs the vCPU or is switching
//!   to it. `Vcpu::ctx_live`: its hypervisor stack is in use on some pCPU;
//!   cleared by the next context on that pCPU once `switch` has saved it
//!   ([`finish_switch`]). A pCPU switches into a vCPU only after seeing
//!   `ctx_live` clear, and the reaper frees a vCPU only when neither is set.
//! - No spin lock is held across `arch::switch::switch`.
//! - A pCPU loads the idle page tables before it parks a vCPU for the idle
//!   context, so a dead domain's tables are never live when they are freed.
//! - A vCPU of a paused domain (SPEC TS-5) is never picked: it is filed as
//!   not runnable when it leaves a pCPU (at the kick `domain_pause` sends),
//!   and `domain_unpause` wakes the ones that are neither blocked nor down.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use hypercall_abi::machine::EXIT_POWEROFF;

use super::policy::{Entity, Ns, Params, Policy};
use crate::arch::cpu::{msr, rdtsc, read_cr3, wait_for_interrupt, write_cr3, wrmsr};
use crate::arch::entry;
use crate::arch::lapic::{self, RESCHEDULE_VECTOR};
use crate::arch::percpu::{
    cpu_index, set_guest_user_mode, set_kernel_stack, set_vcpu_info, MAX_CPUS,
};
use crate::arch::switch::switch;
use crate::domain::{DomainState, DomainTable, VcpuId, DOMAINS};
use crate::sync::Mutex;
use crate::time::clock::now_ns;

/// What `CpuSched::current` holds in the idle context.
const IDLE: u64 = u64::MAX;

/// One pCPU's scheduling state.
struct CpuSched {
    /// The run queue (`None` until the pCPU is online).
    policy: Mutex<Option<Policy>>,
    /// The running vCPU as `domid << 32 | vcpu`, or [`IDLE`].
    current: AtomicU64,
    /// System time when the running vCPU was picked.
    picked_at: AtomicU64,
    /// The idle context's parked stack pointer.
    idle_rsp: UnsafeCell<u64>,
    /// `ctx_live` of the vCPU this pCPU just parked, cleared once parked.
    release: AtomicPtr<AtomicBool>,
    /// Whether LSTAR points at the syscall-floor stub.
    floor_lstar: AtomicBool,
    online: AtomicBool,
    apic_id: AtomicU32,
    /// vCPUs whose run queue is here (placement).
    assigned: AtomicU32,
}

// SAFETY: `idle_rsp` is touched only by its own pCPU with interrupts disabled
// (the idle context parks and resumes there); everything else is atomic or
// locked.
unsafe impl Sync for CpuSched {}

impl CpuSched {
    const fn new() -> CpuSched {
        CpuSched {
            policy: Mutex::new(None),
            current: AtomicU64::new(IDLE),
            picked_at: AtomicU64::new(0),
            idle_rsp: UnsafeCell::new(0),
            release: AtomicPtr::new(core::ptr::null_mut()),
            floor_lstar: AtomicBool::new(false),
            online: AtomicBool::new(false),
            apic_id: AtomicU32::new(0),
            assigned: AtomicU32::new(0),
        }
    }
}

static CPUS: [CpuSched; MAX_CPUS] = [const { CpuSched::new() }; MAX_CPUS];

/// Time slice handed to the policy.
static TIMESLICE_NS: AtomicU64 = AtomicU64::new(10_000_000);

fn entity(id: VcpuId) -> Entity {
    Entity((u64::from(id.domid) << 32) | u64::from(id.vcpu))
}

fn vcpu_id(e: Entity) -> VcpuId {
    VcpuId {
        domid: (e.0 >> 32) as u32,
        vcpu: e.0 as u32,
    }
}

/// Set once start of day is over: until then no pCPU runs a vCPU.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Lets every pCPU run vCPUs (the end of start of day).
pub fn start() {
    STARTED.store(true, Ordering::Release);
}

/// Whether start of day is over.
pub fn started() -> bool {
    STARTED.load(Ordering::Acquire)
}

/// Sets the time slice (before any pCPU comes online).
pub fn set_timeslice_us(us: u32) {
    TIMESLICE_NS.store(u64::from(us.max(100)) * 1000, Ordering::Relaxed);
}

/// Brings this pCPU's scheduler online; `apic_id` is its local APIC id.
pub fn cpu_online(apic_id: u32) {
    let me = &CPUS[cpu_index()];
    *me.policy.lock() = Some(Policy::new(TIMESLICE_NS.load(Ordering::Relaxed)));
    me.apic_id.store(apic_id, Ordering::Relaxed);
    me.online.store(true, Ordering::Release);
}

/// Online pCPUs, as indices.
pub fn online_cpus() -> impl Iterator<Item = usize> {
    (0..MAX_CPUS).filter(|&i| CPUS[i].online.load(Ordering::Acquire))
}

/// Number of online pCPUs.
pub fn nr_online() -> usize {
    online_cpus().count()
}

/// The local APIC id of pCPU `cpu`.
pub fn apic_id(cpu: usize) -> u32 {
    CPUS[cpu].apic_id.load(Ordering::Relaxed)
}

/// Chooses the pCPU a new vCPU's run queue will be on, and counts it there:
/// `pin` if that pCPU is online, else the online pCPU with the fewest vCPUs.
pub fn place(pin: Option<u32>) -> u32 {
    let cpu = match pin {
        Some(p) if (p as usize) < MAX_CPUS && CPUS[p as usize].online.load(Ordering::Acquire) => {
            p as usize
        }
        _ => online_cpus()
            .min_by_key(|&i| CPUS[i].assigned.load(Ordering::Relaxed))
            .unwrap_or(0),
    };
    CPUS[cpu].assigned.fetch_add(1, Ordering::Relaxed);
    cpu as u32
}

/// Files a new vCPU, [`place`]d on `cpu`, in that pCPU's run queue, runnable
/// or not.
pub fn register(id: VcpuId, cpu: u32, params: Params, runnable: bool) {
    let now = now_ns();
    let slot = &CPUS[cpu as usize % MAX_CPUS];
    let mut guard = slot.policy.lock();
    if let Some(policy) = guard.as_mut() {
        policy.add(entity(id), params, now);
        if !runnable {
            policy.block(entity(id), now);
        }
    }
}

/// Forgets a vCPU that is being freed (its run queue is `cpu`).
pub fn forget(id: VcpuId, cpu: u32) {
    let slot = &CPUS[cpu as usize % MAX_CPUS];
    if let Some(policy) = slot.policy.lock().as_mut() {
        policy.remove(entity(id));
    }
    slot.assigned.fetch_sub(1, Ordering::Relaxed);
}

/// Changes a vCPU's weight and cap.
pub fn set_params(id: VcpuId, cpu: u32, params: Params) {
    if let Some(policy) = CPUS[cpu as usize % MAX_CPUS].policy.lock().as_mut() {
        policy.set_params(entity(id), params);
    }
}

/// Makes a vCPU (whose `blocked` flag the caller just cleared, holding
/// `DOMAINS`) runnable on its pCPU `cpu`, and tells that pCPU.
pub fn make_runnable(id: VcpuId, cpu: u32) {
    let cpu = cpu as usize % MAX_CPUS;
    if let Some(policy) = CPUS[cpu].policy.lock().as_mut() {
        policy.wake(entity(id), now_ns());
    }
    kick(cpu);
}

/// Asks pCPU `cpu` to look at its run queue (or its running vCPU's domain)
/// soon: an IPI unless it is this pCPU, which looks on its next tick or
/// hypercall exit.
pub fn kick(cpu: usize) {
    if cpu != cpu_index() && CPUS[cpu].online.load(Ordering::Acquire) {
        lapic::send_ipi(CPUS[cpu].apic_id.load(Ordering::Relaxed), RESCHEDULE_VECTOR);
    }
}

/// Kicks every other online pCPU (a domain died: its vCPUs must stop).
pub fn kick_all_others() {
    let me = cpu_index();
    for cpu in online_cpus().filter(|&c| c != me) {
        kick(cpu);
    }
}

/// Whether LSTAR currently points at the syscall-floor stub.
pub fn set_syscall_floor(on: bool) {
    let me = &CPUS[cpu_index()];
    if me.floor_lstar.swap(on, Ordering::Relaxed) != on {
        entry::set_syscall_floor(on);
    }
}

/// The running vCPU, or `None` in the idle context.
pub fn current() -> Option<VcpuId> {
    match CPUS[cpu_index()].current.load(Ordering::Relaxed) {
        IDLE => None,
        v => Some(VcpuId {
            domid: (v >> 32) as u32,
            vcpu: v as u32,
        }),
    }
}

/// Nanoseconds `id` has been running since it was last charged, if it is
/// the vCPU running on this pCPU (else 0).
pub fn unaccounted_ns(id: VcpuId) -> u64 {
    if current() != Some(id) {
        return 0;
    }
    let me = &CPUS[cpu_index()];
    now_ns().saturating_sub(me.picked_at.load(Ordering::Relaxed))
}

/// On a timer tick or reschedule IPI: whether the running vCPU should give
/// way now (its slice or cap budget is used up, or a boosted waker waits).
pub fn should_preempt() -> bool {
    let me = &CPUS[cpu_index()];
    let cur = me.current.load(Ordering::Relaxed);
    if cur == IDLE {
        return false;
    }
    let now = now_ns();
    let ran = now.saturating_sub(me.picked_at.load(Ordering::Relaxed));
    me.policy
        .lock()
        .as_ref()
        .is_some_and(|p| p.should_preempt(Entity(cur), ran, now))
}

/// Why the running context gives up the pCPU.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaving {
    /// Still runnable: a preemption.
    Runnable,
    /// Still runnable, and gives way to the next-best waiting vCPU even if
    /// its own credit is higher (`sched_op(yield)`).
    Yielded,
    /// Marked itself blocked (a wake may already have cleared that).
    Blocked,
    /// Its domain ended; it never runs again.
    Dead,
}

/// Gives the pCPU to the best runnable vCPU, if that is not the current one;
/// the current vCPU stays runnable.
pub fn yield_current() {
    if current().is_none() {
        return;
    }
    // Fast path: nothing else waits here; the running vCPU goes on and is
    // charged for the whole run when it really leaves.
    let now = now_ns();
    let waiting = CPUS[cpu_index()]
        .policy
        .lock()
        .as_ref()
        .is_some_and(|p| p.has_waiting(now));
    if waiting {
        schedule(Leaving::Yielded);
    }
}

/// Parks the current vCPU, which has marked itself blocked, until
/// `make_runnable` wakes it; runs the next vCPU or the idle context.
pub fn block_current() {
    if current().is_some() {
        schedule(Leaving::Blocked);
    }
}

/// Ends the current vCPU for good (its domain is no longer running) and
/// switches away; the reaper frees it.
pub fn exit_current() -> ! {
    schedule(Leaving::Dead);
    unreachable!("a dead vCPU was resumed");
}

/// What a pCPU needs to load a vCPU.
struct NextVcpu {
    id: VcpuId,
    /// Its `saved_rsp` slot: read only once its `ctx_live` is ours (the pCPU
    /// that parked it may not have stored it yet when we pick it).
    saved_rsp: *const u64,
    kstack_top: u64,
    cr3: u64,
    user_mode: bool,
    vcpu_info: u64,
    floor: bool,
    ctx_live: *const AtomicBool,
}

/// The scheduler proper: files the leaving context, picks the next one and
/// switches to it (returns when this context runs again; at once if it was
/// picked again). Returns whether a vCPU was found (for the idle loop).
fn schedule(leaving: Leaving) -> bool {
    let me_index = cpu_index();
    let me = &CPUS[me_index];
    let prev = current();
    let now = now_ns();
    let tsc = rdtsc();
    let mut table = DOMAINS.lock();

    // 1. File the leaving vCPU.
    let mut save_slot: *mut u64 = me.idle_rsp.get();
    let mut prev_live: *const AtomicBool = core::ptr::null();
    if let Some(p) = prev {
        let ran = now.saturating_sub(me.picked_at.load(Ordering::Relaxed));
        let (alive, paused) = table.domains.get(&p.domid).map_or((false, false), |d| {
            (d.state == DomainState::Running, d.paused)
        });
        // A paused domain's vCPUs are filed as not runnable; unpausing wakes
        // them (TS-5).
        let runnable = match (alive, leaving) {
            (false, _) | (_, Leaving::Dead) => None,
            (true, Leaving::Runnable | Leaving::Yielded) => Some(!paused),
            (true, Leaving::Blocked) => {
                Some(!paused && !table.vcpu_mut(p).is_some_and(|v| v.blocked))
            }
        };
        {
            let mut guard = me.policy.lock();
            if let Some(policy) = guard.as_mut() {
                match runnable {
                    Some(r) => policy.put_back(entity(p), ran, r, now),
                    None => policy.remove(entity(p)),
                }
            }
        }
        if let Some(domain) = table.domains.get_mut(&p.domid) {
            if let Some(v) = domain.vcpus.get_mut(p.vcpu as usize) {
                domain.cpu_cycles += tsc.wrapping_sub(v.running_since);
                v.cpu_time_ns += ran;
            }
        }
    }

    // 2. Pick the next vCPU here, or steal one. A dying vCPU hands over to
    //    the idle context, which reaps its domain before running anyone.
    let mut next = None;
    if leaving != Leaving::Dead {
        let avoid = if leaving == Leaving::Yielded {
            prev
        } else {
            None
        };
        next = pick_local(&mut table, me_index, now, avoid);
        if next.is_none() {
            next = steal(&mut table, me_index, now);
        }
    }
    if next == prev && prev.is_some() {
        me.picked_at.store(now, Ordering::Relaxed);
        if let Some(v) = prev.and_then(|p| table.vcpu_mut(p)) {
            v.running_since = tsc;
        }
        return true;
    }
    if prev.is_none() && next.is_none() {
        return false;
    }

    // 3. Hand over: the leaving vCPU is no longer claimed (the next context on
    //    this pCPU clears its ctx_live once it is parked).
    if let Some(p) = prev {
        if let Some(v) = table.vcpu_mut(p) {
            v.claimed = false;
            v.fpu.save();
            save_slot = &mut v.saved_rsp;
            prev_live = &v.ctx_live;
        }
    }
    let load = next.and_then(|id| {
        let domain = table.domains.get_mut(&id.domid)?;
        let vcpu_info = domain.vcpu_info_va(id.vcpu);
        let v = domain.vcpus.get_mut(id.vcpu as usize)?;
        v.claimed = true;
        v.cpu = me_index as u32;
        v.running_since = tsc;
        // Whoever parked it saved its FPU state under this lock.
        v.fpu.restore();
        Some(NextVcpu {
            id,
            saved_rsp: &v.saved_rsp,
            kstack_top: v.kstack_top(),
            cr3: v.active_cr3(),
            user_mode: v.user_mode,
            vcpu_info,
            floor: v.floor_mode,
            ctx_live: &v.ctx_live,
        })
    });
    me.release
        .store(prev_live as *mut AtomicBool, Ordering::Relaxed);
    drop(table);

    let load_rsp = match load {
        Some(n) => {
            // SAFETY: `ctx_live` lives in a boxed vCPU we claimed: the reaper
            // does not free claimed vCPUs.
            let live = unsafe { &*n.ctx_live };
            // Its previous pCPU may still be saving it.
            while live
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                crate::sync::relax();
            }
            set_kernel_stack(n.kstack_top);
            set_guest_user_mode(n.user_mode);
            set_vcpu_info(Some(n.vcpu_info));
            if read_cr3() != n.cr3 {
                // SAFETY: every guest L4 carries the hypervisor's reserved
                // slots, copied from the boot L4 when it was validated.
                unsafe { write_cr3(n.cr3) };
            }
            me.current.store(
                (u64::from(n.id.domid) << 32) | u64::from(n.id.vcpu),
                Ordering::Relaxed,
            );
            set_syscall_floor(n.floor);
            // SAFETY: the slot is in the boxed vCPU we claimed (the reaper
            // does not free claimed vCPUs); the parking pCPU's `switch`
            // stored it before its next context released `ctx_live`, which
            // our Acquire exchange above observed.
            unsafe { core::ptr::read_volatile(n.saved_rsp) }
        }
        None => {
            // SAFETY: the boot L4 maps hv-core exactly as every guest L4 does.
            unsafe { write_cr3(crate::arch::boot::boot_pml4_phys()) };
            set_vcpu_info(None);
            me.current.store(IDLE, Ordering::Relaxed);
            set_syscall_floor(false);
            // SAFETY: the idle slot is only touched on this pCPU with
            // interrupts off.
            unsafe { *me.idle_rsp.get() }
        }
    };
    me.picked_at.store(now_ns(), Ordering::Relaxed);
    // SAFETY: `save_slot` points into the leaving vCPU's box (kept alive by
    // its ctx_live, which stays set until `finish_switch` runs after this
    // switch) or this pCPU's idle slot; `load_rsp` was saved by `switch` or
    // made by `prepare_initial_stack` for a vCPU whose ctx_live we now hold;
    // no lock is held.
    unsafe { switch(save_slot, load_rsp) };
    finish_switch();
    true
}

/// Runs right after a switch, in the context switched to: the context that
/// left this pCPU is now parked, so its stack may be resumed elsewhere.
pub extern "C" fn finish_switch() {
    let me = &CPUS[cpu_index()];
    let p = me.release.swap(core::ptr::null_mut(), Ordering::Relaxed);
    if !p.is_null() {
        // SAFETY: the pointer is the parked vCPU's ctx_live, inside a boxed
        // vCPU the reaper does not free while the flag is set.
        unsafe { (*p).store(false, Ordering::Release) };
    }
}

/// Picks from this pCPU's run queue, dropping stale entries (dead domains,
/// vCPUs that are blocked or down). `avoid` (a vCPU that yields) runs only
/// if nothing else can.
fn pick_local(
    table: &mut DomainTable,
    me: usize,
    now: Ns,
    avoid: Option<VcpuId>,
) -> Option<VcpuId> {
    let mut guard = CPUS[me].policy.lock();
    let policy = guard.as_mut()?;
    let mut skipped = None;
    let picked = loop {
        let Some((e, _slice)) = policy.pick(now) else {
            break None;
        };
        let id = vcpu_id(e);
        match runnable_state(table, id) {
            Runnability::Runnable if Some(id) == avoid && skipped.is_none() => skipped = Some(e),
            Runnability::Runnable => break Some(id),
            Runnability::Gone => policy.remove(e),
            Runnability::NotNow => policy.put_back(e, 0, false, now),
        }
    };
    match (picked, skipped) {
        (Some(id), Some(e)) => {
            policy.put_back(e, 0, true, now);
            Some(id)
        }
        (None, Some(e)) => Some(vcpu_id(e)),
        (picked, None) => picked,
    }
}

enum Runnability {
    Runnable,
    /// The domain ended or the vCPU does not exist.
    Gone,
    /// Blocked or down (a wake re-queues it).
    NotNow,
}

fn runnable_state(table: &mut DomainTable, id: VcpuId) -> Runnability {
    let Some(domain) = table.domains.get_mut(&id.domid) else {
        return Runnability::Gone;
    };
    if domain.state != DomainState::Running {
        return Runnability::Gone;
    }
    let paused = domain.paused;
    match domain.vcpus.get(id.vcpu as usize) {
        None => Runnability::Gone,
        Some(v) if v.blocked || !v.up || !v.initialised || paused => Runnability::NotNow,
        Some(_) => Runnability::Runnable,
    }
}

/// Takes a runnable, unpinned vCPU waiting in another pCPU's queue and
/// files it here (credit restarts at the initial value on the new pCPU).
/// Boosted wakers and pinned vCPUs stay where they are.
fn steal(table: &mut DomainTable, me: usize, now: Ns) -> Option<VcpuId> {
    for other in online_cpus().filter(|&c| c != me) {
        let taken = {
            let mut guard = CPUS[other].policy.lock();
            let Some(policy) = guard.as_mut() else {
                continue;
            };
            policy.take_queued(|e| {
                let id = vcpu_id(e);
                matches!(runnable_state(table, id), Runnability::Runnable)
                    && table.vcpu_mut(id).is_some_and(|v| v.pin.is_none())
            })
        };
        let Some(e) = taken else { continue };
        CPUS[other].assigned.fetch_sub(1, Ordering::Relaxed);
        let id = vcpu_id(e);
        let params = table.vcpu_mut(id).map(|v| {
            v.cpu = me as u32;
            v.params
        })?;
        CPUS[me].assigned.fetch_add(1, Ordering::Relaxed);
        let mut guard = CPUS[me].policy.lock();
        let policy = guard.as_mut()?;
        policy.add(e, params, now);
        let (e, _) = policy.pick(now)?;
        return Some(vcpu_id(e));
    }
    None
}

/// On a reschedule IPI or a timer tick that interrupted a guest: stop a
/// vCPU whose domain ended, park one that was taken down or whose domain
/// was paused (TS-5), preempt one whose slice is over.
pub fn on_kick_or_tick() {
    let Some(id) = current() else { return };
    let (alive, down) = {
        let mut table = DOMAINS.lock();
        let (alive, paused) = table.domains.get(&id.domid).map_or((false, false), |d| {
            (d.state == DomainState::Running, d.paused)
        });
        if paused {
            drop(table);
            if alive {
                schedule(Leaving::Blocked);
                return;
            }
            exit_current();
        }
        let down = table.vcpu_mut(id).is_some_and(|v| {
            if v.up {
                false
            } else {
                v.blocked = true;
                true
            }
        });
        (alive, down)
    };
    if !alive {
        exit_current();
    }
    if down {
        schedule(Leaving::Blocked);
    } else if should_preempt() {
        schedule(Leaving::Runnable);
    }
}

/// The idle context of one pCPU: reaps dead domains, runs runnable vCPUs,
/// halts when there is nothing to do, and (boot pCPU) powers off when no
/// domain is left.
pub fn run_idle() -> ! {
    while !started() {
        crate::sync::relax();
    }
    loop {
        crate::domain::reap_dead_domains();
        if schedule(Leaving::Runnable) {
            continue;
        }
        if cpu_index() == 0 && DOMAINS.lock().domains.is_empty() {
            crate::domain::audit_frames("before power off");
            log::info!("power off: no domains left");
            crate::machine::exit(EXIT_POWEROFF);
        }
        wait_for_interrupt();
    }
}

/// Writes LSTAR directly (used by `entry::set_syscall_floor`).
pub(crate) fn write_lstar(value: u64) {
    // SAFETY: LSTAR exists; `value` is one of hv-core's two SYSCALL entry points.
    unsafe { wrmsr(msr::LSTAR, value) };
}
