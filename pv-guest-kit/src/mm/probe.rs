//! Memory accesses that survive a page fault: [`read_u64`] and [`write_u64`]
//! return `Err(fault address)` instead of reaching the #PF handler's panic.
//!
//! Each probe is one instruction at a known address in an asm routine. When a
//! #PF arrives in kernel mode with `rip` at one of them, [`fixup`] (called by
//! the trap dispatcher first) resumes at the routine's end with the fault
//! flag set, like a Linux exception-table entry.

use crate::traps::TrapContext;
use hypercall_abi::trap::{vector, FRAME_FLAG_USER_MODE};

/// What the asm routines return in rax:rdx.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
#[repr(C)]
struct ProbeResult {
    /// The value read (write probe: 0), or the fault address.
    value: u64,
    /// 0 on success, 1 after a #PF.
    faulted: u64,
}

#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".pushsection .text.pv_probe, \"ax\", @progbits",
    ".p2align 4",
    ".globl __pv_guest_kit_probe_read",
    "__pv_guest_kit_probe_read:",
    "xor edx, edx",
    ".Lpv_probe_read_insn:",
    "mov rax, qword ptr [rdi]",
    ".Lpv_probe_read_done:",
    "ret",
    ".p2align 4",
    ".globl __pv_guest_kit_probe_write",
    "__pv_guest_kit_probe_write:",
    "xor edx, edx",
    "xor eax, eax",
    ".Lpv_probe_write_insn:",
    "mov qword ptr [rdi], rsi",
    ".Lpv_probe_write_done:",
    "ret",
    ".popsection",
    ".pushsection .rodata.pv_probe, \"a\", @progbits",
    ".p2align 3",
    ".globl __pv_guest_kit_probe_table",
    "__pv_guest_kit_probe_table:",
    ".quad .Lpv_probe_read_insn, .Lpv_probe_read_done",
    ".quad .Lpv_probe_write_insn, .Lpv_probe_write_done",
    ".popsection",
);

#[cfg(target_os = "none")]
extern "sysv64" {
    /// Reads the u64 at `va` (asm above).
    fn __pv_guest_kit_probe_read(va: u64) -> ProbeResult;
    /// Writes `value` at `va` (asm above).
    fn __pv_guest_kit_probe_write(va: u64, value: u64) -> ProbeResult;
    /// (faulting instruction, resume address) of each probe.
    static __pv_guest_kit_probe_table: [[u64; 2]; 2];
}

/// Reads the u64 at `va` (8-byte aligned); `Err(cr2)` if it faults.
pub fn read_u64(va: u64) -> Result<u64, u64> {
    assert!(va.is_multiple_of(8), "probe::read_u64({va:#x}): misaligned");
    #[cfg(target_os = "none")]
    {
        // SAFETY: the routine reads 8 bytes at `va` with a volatile-like asm
        // load; a fault is turned into a return by `fixup`.
        let r = unsafe { __pv_guest_kit_probe_read(va) };
        if r.faulted == 0 {
            Ok(r.value)
        } else {
            Err(r.value)
        }
    }
    #[cfg(not(target_os = "none"))]
    {
        panic!("probe::read_u64({va:#x}) needs Paravane")
    }
}

/// Writes `value` at `va` (8-byte aligned); `Err(cr2)` if it faults.
///
/// # Safety
/// 1. If `va` is mapped writable, the memory must not be covered by a Rust
///    reference or otherwise used by Rust code.
pub unsafe fn write_u64(va: u64, value: u64) -> Result<(), u64> {
    assert!(
        va.is_multiple_of(8),
        "probe::write_u64({va:#x}): misaligned"
    );
    #[cfg(target_os = "none")]
    {
        // SAFETY: obligation 1 of the caller; a fault is turned into a return
        // by `fixup`.
        let r = unsafe { __pv_guest_kit_probe_write(va, value) };
        if r.faulted == 0 {
            Ok(())
        } else {
            Err(r.value)
        }
    }
    #[cfg(not(target_os = "none"))]
    {
        panic!("probe::write_u64({va:#x}, {value:#x}) needs Paravane")
    }
}

/// The (instruction, resume) pairs of the probes.
fn probe_table() -> [[u64; 2]; 2] {
    #[cfg(target_os = "none")]
    {
        // SAFETY: the asm above defines the table as four initialised quads
        // in read-only memory.
        unsafe { __pv_guest_kit_probe_table }
    }
    #[cfg(not(target_os = "none"))]
    {
        [[u64::MAX; 2]; 2]
    }
}

/// If `ctx` is a kernel-mode #PF at a probe instruction, makes it resume at
/// the probe's end reporting the fault, and returns true.
pub fn fixup(ctx: &mut TrapContext) -> bool {
    if ctx.vector != u64::from(vector::PF) || ctx.flags & FRAME_FLAG_USER_MODE != 0 {
        return false;
    }
    match probe_table().iter().find(|[insn, _]| *insn == ctx.rip) {
        Some(&[_, resume]) => {
            ctx.rip = resume;
            ctx.rax = ctx.cr2;
            ctx.rdx = 1;
            true
        }
        None => false,
    }
}
