//! TLB shootdown across CPUs (MM-2, GNT-3): after hv-core removes a mapping
//! another CPU may still cache (a frame becoming a page table, a grant being
//! unmapped), every CPU must flush before the operation completes.
//!
//! A shootdown bumps a global generation, flushes locally, sends the flush IPI
//! to every other online CPU and waits until each has reached that
//! generation. A CPU reaches it by flushing: in the IPI handler (it was
//! running a guest or idling), or while it spins for a lock or for another
//! shootdown (`sync::relax`), since hv-core runs with interrupts disabled.
//! Guest page-table entries are never global (MM-1b), so a CR3 reload
//! flushes every guest translation.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::cpu::{read_cr3, write_cr3};
use crate::arch::lapic::{self, TLB_FLUSH_VECTOR};
use crate::arch::percpu::{cpu_index, MAX_CPUS};

static GENERATION: AtomicU64 = AtomicU64::new(0);
static REACHED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Shootdowns performed (diagnostics).
static SHOOTDOWNS: AtomicU64 = AtomicU64::new(0);

/// Flushes this CPU's TLB (all non-global entries).
pub fn flush_local() {
    // SAFETY: reloading the current CR3 changes no mapping.
    unsafe { write_cr3(read_cr3()) };
}

/// Flushes this CPU if a shootdown it has not answered is pending.
#[inline]
pub fn service() {
    let target = GENERATION.load(Ordering::Acquire);
    let me = &REACHED[cpu_index()];
    if me.load(Ordering::Relaxed) < target {
        flush_local();
        me.fetch_max(target, Ordering::Release);
    }
}

/// Drops the translation of `va` on this CPU and every translation on the
/// other online CPUs; returns once all have.
pub fn flush_page_everywhere(va: u64) {
    crate::arch::cpu::invlpg(va);
    if crate::sched::nr_online() > 1 {
        flush_all();
    }
}

/// Flushes every online CPU's TLB and returns once all have.
pub fn flush_all() {
    let others: heapless::Vec<usize, MAX_CPUS> = crate::sched::online_cpus()
        .filter(|&c| c != cpu_index())
        .collect();
    if others.is_empty() {
        flush_local();
        return;
    }
    SHOOTDOWNS.fetch_add(1, Ordering::Relaxed);
    let target = GENERATION.fetch_add(1, Ordering::AcqRel) + 1;
    flush_local();
    REACHED[cpu_index()].fetch_max(target, Ordering::Release);
    for &cpu in &others {
        lapic::send_ipi(crate::sched::apic_id(cpu), TLB_FLUSH_VECTOR);
    }
    for &cpu in &others {
        while REACHED[cpu].load(Ordering::Acquire) < target {
            // Answer other CPUs' shootdowns while waiting for theirs.
            service();
            core::hint::spin_loop();
        }
    }
}

/// Shootdowns so far.
pub fn shootdowns() -> u64 {
    SHOOTDOWNS.load(Ordering::Relaxed)
}

/// Marks a CPU that just came online as having flushed everything so far.
pub fn cpu_online() {
    REACHED[cpu_index()].store(GENERATION.load(Ordering::Acquire), Ordering::Release);
}
