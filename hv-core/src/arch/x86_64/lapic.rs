//! Local APIC (xAPIC, MMIO through the direct map) and its timer; the legacy
//! 8259 PICs are masked.

use super::cpu::{msr, outb, rdmsr};
use crate::mm::phys_to_virt;

const REG_ID: u64 = 0x20;
const REG_EOI: u64 = 0xb0;
const REG_SVR: u64 = 0xf0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INIT: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIV: u64 = 0x3e0;

/// Vector of the local APIC timer interrupt.
pub const TIMER_VECTOR: u8 = 0x20;
/// Vector of spurious interrupts.
pub const SPURIOUS_VECTOR: u8 = 0xff;

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

/// Masks the 8259s, enables the local APIC and starts its timer in periodic
/// mode with `initial_count` ticks (bus clock / 16) per period.
pub fn init(initial_count: u32) {
    // SAFETY: masking every line of both 8259 PICs (ports 0x21, 0xa1), which
    // hv-core owns and never uses.
    unsafe {
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
    }
    write(REG_SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    write(REG_TIMER_DIV, 0x3); // divide by 16
    write(REG_LVT_TIMER, (1 << 17) | u32::from(TIMER_VECTOR)); // periodic
    write(REG_TIMER_INIT, initial_count);
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
