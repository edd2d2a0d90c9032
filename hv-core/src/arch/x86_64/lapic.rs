//! Local APIC (xAPIC, MMIO through the direct map) and its timer; the legacy
//! 8259 PICs are masked.

use super::cpu::{msr, outb, rdmsr};
use crate::mm::phys_to_virt;

const REG_ID: u64 = 0x20;
const REG_EOI: u64 = 0xb0;
const REG_SVR: u64 = 0xf0;
const REG_ICR_LOW: u64 = 0x300;
const REG_ICR_HIGH: u64 = 0x310;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INIT: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIV: u64 = 0x3e0;

/// Vector of the local APIC timer interrupt.
pub const TIMER_VECTOR: u8 = 0x20;
/// Vector of spurious interrupts.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// IPI: look at the run queue (a vCPU was woken or a domain died).
pub const RESCHEDULE_VECTOR: u8 = 0xf0;
/// IPI: a TLB shootdown is pending (`mm::tlb`).
pub const TLB_FLUSH_VECTOR: u8 = 0xf1;

/// ICR delivery status bit: the previous IPI is still being sent.
const ICR_SEND_PENDING: u32 = 1 << 12;

fn base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU.
    let apic_base = unsafe { rdmsr(msr::APIC_BASE) };
    phys_to_virt(apic_base & 0xffff_f000)
}

fn write(reg: u64, value: u32) {
    // SAFETY: the APIC page is mapped uncached in the direct map; `reg` is one
    // of the architectural register offsets above.
    unsafe { core::ptr::write_volatile((base() + reg) as *mut u32, value) };
}

fn read(reg: u64) -> u32 {
    // SAFETY: as for `write`.
    unsafe { core::ptr::read_volatile((base() + reg) as *const u32) }
}

/// Masks the 8259s (once, on the boot CPU: `mask_pics`), enables this CPU's
/// local APIC and starts its timer in periodic mode with `initial_count`
/// ticks (bus clock / 16) per period.
pub fn init(initial_count: u32) {
    write(REG_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    write(REG_TIMER_DIV, 0x3); // divide by 16
    write(REG_LVT_TIMER, (1 << 17) | u32::from(TIMER_VECTOR)); // periodic
    write(REG_TIMER_INIT, initial_count);
}

/// Enables this CPU's local APIC with its timer in one-shot mode (divide by
/// 16), armed for `initial_count` ticks; [`rearm`] arms it again.
pub fn init_one_shot(initial_count: u32) {
    write(REG_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    write(REG_TIMER_DIV, 0x3); // divide by 16
    write(REG_LVT_TIMER, u32::from(TIMER_VECTOR)); // one-shot
    write(REG_TIMER_INIT, initial_count.max(1));
}

/// Arms the one-shot timer to fire in `count` ticks (at least 1).
pub fn rearm(count: u32) {
    write(REG_TIMER_INIT, count.max(1));
}

/// Masks every line of both legacy 8259 PICs.
pub fn mask_pics() {
    // SAFETY: masking every line of both 8259 PICs (ports 0x21, 0xa1), which
    // hv-core owns and never uses.
    unsafe {
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }
}

/// Sends an interrupt command: `low` is the ICR's low word (vector, delivery
/// mode, level, shorthand), `apic_id` the destination (ignored with a
/// shorthand). Waits until the local APIC has accepted it.
fn send_icr(apic_id: u32, low: u32) {
    while read(REG_ICR_LOW) & ICR_SEND_PENDING != 0 {
        core::hint::spin_loop();
    }
    write(REG_ICR_HIGH, apic_id << 24);
    write(REG_ICR_LOW, low);
    while read(REG_ICR_LOW) & ICR_SEND_PENDING != 0 {
        core::hint::spin_loop();
    }
}

/// A fixed-delivery IPI with `vector` to the CPU with local APIC id `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    send_icr(apic_id, u32::from(vector));
}

/// INIT (assert, level) to `apic_id`: the first step of starting a CPU.
pub fn send_init(apic_id: u32) {
    send_icr(apic_id, 0x0000_4500);
}

/// A STARTUP IPI: the CPU starts in real mode at `page << 12`.
pub fn send_startup(apic_id: u32, page: u8) {
    send_icr(apic_id, 0x0000_4600 | u32::from(page));
}

/// Measures the timer's rate (ticks per millisecond at divide-by-16) over
/// `run` (which must take 10 ms of real time), with the timer one-shot and
/// masked.
pub fn calibrate(run: impl FnOnce()) -> u32 {
    write(REG_TIMER_DIV, 0x3);
    write(REG_LVT_TIMER, 1 << 16); // masked, one-shot
    write(REG_TIMER_INIT, u32::MAX);
    run();
    let elapsed = u32::MAX - read(REG_TIMER_CURRENT);
    write(REG_TIMER_INIT, 0);
    (elapsed / 10).max(1)
}

/// Signals end of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// This CPU's local APIC id.
pub fn id() -> u32 {
    read(REG_ID) >> 24
}
