//! Thin wrappers over privileged CPU instructions and registers.

use core::arch::asm;

/// Reads the time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the TSC; CR4.TSD is clear so it never faults.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// 1. The port must belong to a device hv-core owns, and the write must not
///    break an invariant of that device's driver.
#[inline(always)]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller guarantees the port write is sound (obligation 1).
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes a double word to an I/O port.
///
/// # Safety
/// 1. As for [`outb`].
#[inline(always)]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller guarantees the port write is sound (obligation 1).
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// 1. The port must belong to a device hv-core owns; reads may have side effects.
#[inline(always)]
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller guarantees the port read is sound (obligation 1).
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// Reads a model-specific register.
///
/// # Safety
/// 1. `msr` must exist on this CPU (else #GP in ring 0).
#[inline(always)]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists (obligation 1).
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// 1. `msr` must exist and accept `value`.
/// 2. The write must not break an invariant hv-core relies on (entry points,
///    segment bases in use).
#[inline(always)]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees the MSR write is sound (obligations 1, 2).
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

/// MSR numbers hv-core uses.
pub mod msr {
    /// Extended feature enable.
    pub const EFER: u32 = 0xc000_0080;
    /// SYSCALL/SYSRET segment selectors.
    pub const STAR: u32 = 0xc000_0081;
    /// SYSCALL entry point (64-bit).
    pub const LSTAR: u32 = 0xc000_0082;
    /// SYSCALL entry point (compatibility mode).
    pub const CSTAR: u32 = 0xc000_0083;
    /// RFLAGS bits cleared on SYSCALL.
    pub const SFMASK: u32 = 0xc000_0084;
    /// FS base.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// GS base.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// The GS base SWAPGS exchanges with.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// Local APIC base.
    pub const APIC_BASE: u32 = 0x1b;
}

/// Reads CR2 (the last page-fault linear address).
#[inline(always)]
pub fn read_cr2() -> u64 {
    let value: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads CR3.
#[inline(always)]
pub fn read_cr3() -> u64 {
    let value: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Loads CR3.
///
/// # Safety
/// 1. `value` must be the physical address of a valid L4 table that maps the
///    hypervisor (its reserved slots) exactly as the current one does.
#[inline(always)]
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller guarantees the new tables map hv-core identically (obligation 1).
    unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// Invalidates the TLB entry for one linear address.
#[inline(always)]
pub fn invlpg(va: u64) {
    // SAFETY: invlpg only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// Halts until the next interrupt, with interrupts enabled for the wait only.
#[inline(always)]
pub fn wait_for_interrupt() {
    // SAFETY: sti;hlt;cli lets a pending interrupt run its handler (which saves and
    // restores all state) and returns with interrupts disabled again.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: disabling interrupts and halting has no memory effects.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// A 512-byte FXSAVE area (x87, MMX, SSE state).
#[derive(Clone)]
#[repr(C, align(16))]
pub struct FxArea(pub [u8; 512]);

impl FxArea {
    /// The state after `fninit` with MXCSR at its reset value (all exceptions masked).
    pub const fn initial() -> FxArea {
        let mut bytes = [0u8; 512];
        // FCW = 0x037f at offset 0.
        bytes[0] = 0x7f;
        bytes[1] = 0x03;
        // MXCSR = 0x1f80 at offset 24.
        bytes[24] = 0x80;
        bytes[25] = 0x1f;
        FxArea(bytes)
    }

    /// Saves the current FPU/SSE state here.
    #[inline(always)]
    pub fn save(&mut self) {
        // SAFETY: the area is 512 bytes and 16-byte aligned as fxsave64 requires;
        // CR4.OSFXSR is set at boot.
        unsafe {
            asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack, preserves_flags))
        };
    }

    /// Loads the FPU/SSE state from here.
    #[inline(always)]
    pub fn restore(&self) {
        // SAFETY: the area is aligned and holds a state produced by `save` or
        // `initial` (reserved MXCSR bits clear), so fxrstor64 cannot fault.
        unsafe {
            asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack, preserves_flags))
        };
    }
}

/// Zeroes the 4 KiB page at `va`.
///
/// # Safety
/// 1. `va` must be page aligned, mapped writable, and not in use by anyone who
///    would be hurt by it becoming zero.
pub unsafe fn zero_page(va: u64) {
    // SAFETY: the caller guarantees the page is ours to clear (obligation 1);
    // rep stosq writes exactly 512 quadwords from va upwards (DF is clear).
    unsafe {
        asm!("rep stosq", inout("rdi") va => _, inout("rcx") 512u64 => _, in("rax") 0u64,
             options(nostack, preserves_flags))
    };
}

/// Copies the 4 KiB page at `src` to `dst`.
///
/// # Safety
/// 1. Both must be page aligned and mapped, `src` readable, `dst` writable and
///    not in use by anyone who would be hurt by its contents changing; they
///    must not overlap.
pub unsafe fn copy_page(dst: u64, src: u64) {
    // SAFETY: the caller guarantees both pages (obligation 1); rep movsq moves
    // exactly 512 quadwords upwards (DF is clear).
    unsafe {
        asm!("rep movsq", inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") 512u64 => _,
             options(nostack, preserves_flags))
    };
}
