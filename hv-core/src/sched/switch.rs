//! Switching the boot CPU between vCPUs and the idle context.
//!
//! # Invariants
//! - No spin lock is held across `arch::switch::switch`.
//! - The idle context runs on the boot stack; only it frees vCPU stacks
//!   (`domain::reap_dead_domains`), so a stack is never freed while in use.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::machine::EXIT_POWEROFF;

use super::runqueue::RunQueue;
use crate::arch::cpu::{msr, rdtsc, read_cr3, wait_for_interrupt, write_cr3, wrmsr};
use crate::arch::entry::{self, set_kernel_stack};
use crate::arch::switch::switch;
use crate::domain::{VcpuId, DOMAINS};

static RUNQ: spin::Mutex<RunQueue<VcpuId>> = spin::Mutex::new(RunQueue::new());
/// The running vCPU as `domid << 32 | vcpu`, or [`IDLE`].
static CURRENT: AtomicU64 = AtomicU64::new(IDLE);
const IDLE: u64 = u64::MAX;

struct IdleRsp(UnsafeCell<u64>);
// SAFETY: written only by `switch` when the idle context parks, read only when
// switching back to it, both on the boot CPU with interrupts disabled.
unsafe impl Sync for IdleRsp {}
static IDLE_RSP: IdleRsp = IdleRsp(UnsafeCell::new(0));

/// Timer ticks per time slice, and ticks the running vCPU has had.
static SLICE_TICKS: AtomicU64 = AtomicU64::new(10);
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Sets the time slice, in timer ticks.
pub fn set_slice_ticks(ticks: u64) {
    SLICE_TICKS.store(ticks.max(1), Ordering::Relaxed);
}

/// Counts a timer tick; true when the running vCPU's slice is used up.
pub fn tick() -> bool {
    TICKS.fetch_add(1, Ordering::Relaxed) + 1 >= SLICE_TICKS.load(Ordering::Relaxed)
}

/// Whether LSTAR currently points at the syscall-floor stub.
static FLOOR_LSTAR: spin::Mutex<bool> = spin::Mutex::new(false);

/// Points SYSCALL at the floor stub (`on`) or the hypercall entry.
pub fn set_syscall_floor(on: bool) {
    let mut active = FLOOR_LSTAR.lock();
    if *active != on {
        entry::set_syscall_floor(on);
        *active = on;
    }
}

/// The running vCPU, or `None` in the idle context.
pub fn current() -> Option<VcpuId> {
    match CURRENT.load(Ordering::Relaxed) {
        IDLE => None,
        v => Some(VcpuId {
            domid: (v >> 32) as u32,
            vcpu: v as u32,
        }),
    }
}

/// Queues a vCPU to run.
pub fn make_runnable(id: VcpuId) {
    RUNQ.lock().push(id);
}

enum Target {
    Vcpu(VcpuId),
    Idle,
}

/// Parks `prev` (or the idle context) and runs `to`.
fn switch_to(prev: Option<VcpuId>, to: Target) {
    let now = rdtsc();
    let (save_slot, load_rsp, next, floor) = {
        let mut table = DOMAINS.lock();
        let save_slot: *mut u64 = match prev {
            Some(id) => match table.domains.get_mut(&id.domid) {
                Some(domain) => {
                    let Some(vcpu) = domain.vcpus.get_mut(id.vcpu as usize) else {
                        return;
                    };
                    vcpu.fpu.save();
                    domain.cpu_cycles += now.wrapping_sub(vcpu.running_since);
                    &mut vcpu.saved_rsp
                }
                None => return,
            },
            None => IDLE_RSP.0.get(),
        };
        match to {
            Target::Vcpu(id) => {
                let Some(domain) = table.domains.get_mut(&id.domid) else {
                    return;
                };
                let vcpu_info = domain.vcpu_info_va(id.vcpu);
                let Some(vcpu) = domain.vcpus.get_mut(id.vcpu as usize) else {
                    return;
                };
                vcpu.fpu.restore();
                vcpu.running_since = now;
                (
                    save_slot,
                    vcpu.saved_rsp,
                    Some((
                        id,
                        vcpu.kstack_top(),
                        vcpu.active_cr3(),
                        vcpu.user_mode,
                        vcpu_info,
                    )),
                    vcpu.floor_mode,
                )
            }
            Target::Idle => {
                // SAFETY: the idle slot is only touched on this CPU with interrupts off.
                (save_slot, unsafe { *IDLE_RSP.0.get() }, None, false)
            }
        }
    };
    if let Some((id, top, cr3, user_mode, vcpu_info)) = next {
        set_kernel_stack(top);
        entry::set_guest_user_mode(user_mode);
        entry::set_vcpu_info(Some(vcpu_info));
        if read_cr3() != cr3 {
            // SAFETY: every guest L4 carries the hypervisor's reserved slots, copied
            // from the boot L4 when it was built.
            unsafe { write_cr3(cr3) };
        }
        CURRENT.store(
            (u64::from(id.domid) << 32) | u64::from(id.vcpu),
            Ordering::Relaxed,
        );
    } else {
        entry::set_vcpu_info(None);
        CURRENT.store(IDLE, Ordering::Relaxed);
    }
    set_syscall_floor(floor);
    TICKS.store(0, Ordering::Relaxed);
    // SAFETY: `save_slot` points into a boxed vCPU or the idle slot, both alive
    // until the context is resumed (vCPUs are only freed by the idle context,
    // which is not the one parking here unless prev is None); `load_rsp` was
    // saved by `switch` or made by `prepare_initial_stack`; no lock is held.
    unsafe { switch(save_slot, load_rsp) };
}

/// Takes the next queued vCPU that can really run: its domain is still
/// running and it is not blocked (queue entries can go stale when a domain
/// ends between being queued and being picked).
fn pop_runnable() -> Option<VcpuId> {
    loop {
        let id = RUNQ.lock().pop()?;
        let table = DOMAINS.lock();
        let ok = table.domains.get(&id.domid).is_some_and(|d| {
            d.state == crate::domain::DomainState::Running
                && d.vcpus.get(id.vcpu as usize).is_some_and(|v| !v.blocked)
        });
        if ok {
            return Some(id);
        }
    }
}

/// Gives the CPU to the next runnable vCPU, if any; the current vCPU stays
/// runnable and resumes later (or at once when nothing else is runnable).
pub fn yield_current() {
    let Some(cur) = current() else { return };
    let next = pop_runnable();
    if next.is_some() {
        RUNQ.lock().push(cur);
    }
    if let Some(next) = next {
        switch_to(Some(cur), Target::Vcpu(next));
    }
}

/// Parks the current vCPU, which has marked itself blocked, until
/// `make_runnable` queues it again; runs the next vCPU or the idle context.
pub fn block_current() {
    let Some(cur) = current() else { return };
    match pop_runnable() {
        Some(next) => switch_to(Some(cur), Target::Vcpu(next)),
        None => switch_to(Some(cur), Target::Idle),
    }
}

/// Ends the current vCPU for good (its domain has been marked as no longer
/// running) and switches to the idle context, which reaps it.
pub fn exit_current() -> ! {
    let cur = current();
    if let Some(cur) = cur {
        RUNQ.lock().remove_where(|id| id.domid == cur.domid);
    }
    switch_to(cur, Target::Idle);
    unreachable!("a dead vCPU was resumed");
}

/// The idle context: reaps dead domains, runs runnable vCPUs, halts when
/// there is nothing to do, and powers off when no domain is left.
pub fn run_idle() -> ! {
    loop {
        crate::domain::reap_dead_domains();
        if let Some(next) = pop_runnable() {
            switch_to(None, Target::Vcpu(next));
            continue;
        }
        if DOMAINS.lock().domains.is_empty() {
            crate::domain::audit_frames("before power off");
            log::info!("power off: no domains left");
            crate::machine::exit(EXIT_POWEROFF);
        }
        // SAFETY: the boot L4 maps hv-core exactly as every guest L4 does.
        unsafe { write_cr3(crate::arch::boot::boot_pml4_phys()) };
        wait_for_interrupt();
    }
}

/// Writes LSTAR directly (used by `entry::set_syscall_floor`).
pub(crate) fn write_lstar(value: u64) {
    // SAFETY: LSTAR exists; `value` is one of hv-core's two SYSCALL entry points.
    unsafe { wrmsr(msr::LSTAR, value) };
}
