//! The interrupt descriptor table: 256 interrupt gates onto `entry::trap_stubs`.
//!
//! All gates are DPL 0 (an `int n` from a guest raises #GP, which is bounced)
//! except #BP and #OF, which guests may raise with `int3`/`into`. NMI, #DF and
//! #MC run on their own IST stacks.

use core::cell::UnsafeCell;

use super::entry::trap_stubs;
use super::gdt::{HV_CS, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI};

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}
const _: () = assert!(core::mem::size_of::<Gate>() == 16);

const GATE_EMPTY: Gate = Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    type_attr: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
};

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);
// SAFETY: written once by `init` on the boot CPU before interrupts are enabled
// and before other CPUs start; read-only afterwards.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([GATE_EMPTY; 256]));

#[repr(C, packed)]
struct Idtr {
    limit: u16,
    base: u64,
}

/// Fills and loads the IDT. Call once, at boot, on the boot CPU.
pub fn init() {
    // SAFETY: single-threaded boot; no interrupt can read the IDT until `lidt`.
    let gates = unsafe { &mut *IDT.0.get() };
    let base = trap_stubs as *const () as u64;
    for (vector, gate) in gates.iter_mut().enumerate() {
        let addr = base + 16 * vector as u64;
        let dpl: u8 = if vector == 3 || vector == 4 { 3 } else { 0 };
        let ist = match vector {
            2 => IST_NMI,
            8 => IST_DOUBLE_FAULT,
            18 => IST_MACHINE_CHECK,
            _ => 0,
        };
        *gate = Gate {
            offset_low: addr as u16,
            selector: HV_CS,
            ist: ist as u8,
            type_attr: 0x8e | (dpl << 5),
            offset_mid: (addr >> 16) as u16,
            offset_high: (addr >> 32) as u32,
            reserved: 0,
        };
    }
    load();
}

/// Loads the (built) IDT on this CPU. Secondary CPUs call only this.
pub fn load() {
    let idtr = Idtr {
        limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT is a static with 256 valid gates onto the entry stubs.
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags))
    };
}
