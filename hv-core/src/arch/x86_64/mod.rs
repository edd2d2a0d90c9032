//! x86_64 support: boot, descriptor tables, trap and syscall entry, context
//! switch, guest memory access, local APIC, serial port, CPU registers.

pub mod boot;
pub mod cpu;
pub mod entry;
pub mod gdt;
pub mod guest_access;
pub mod idt;
pub mod lapic;
pub mod percpu;
pub mod pit;
pub mod rtc;
pub mod serial;
pub mod smp;
pub mod switch;
