//! Fault-tolerant access to guest virtual memory.
//!
//! Guest pointers are allegations: hv-core first checks the range is guest
//! address space (`is_guest_range`), then copies through [`copy_bytes`], whose
//! two copy instructions are listed in a fixup table. A #PF or #GP raised by
//! them in ring 0 resumes at the fixup label, which reports failure instead of
//! crashing hv-core. CR0.WP is set, so read-only guest mappings (page tables,
//! the hypercall page of another mode) are never written through.

use core::arch::global_asm;

global_asm!(
    r#"
    .text
    .global guest_copy
    /* rdi = dst, rsi = src, rdx = len → eax = 0 ok, 1 fault */
guest_copy:
    movq %rdx, %rcx
    shrq $3, %rcx
    .global guest_copy_movsq
guest_copy_movsq:
    rep movsq
    movq %rdx, %rcx
    andq $7, %rcx
    .global guest_copy_movsb
guest_copy_movsb:
    rep movsb
    xorl %eax, %eax
    ret
    .global guest_copy_fixup
guest_copy_fixup:
    movl $1, %eax
    ret
"#,
    options(att_syntax)
);

extern "C" {
    fn guest_copy(dst: *mut u8, src: *const u8, len: usize) -> u32;
    fn guest_copy_movsq();
    fn guest_copy_movsb();
    fn guest_copy_fixup();
}

/// A guest access faulted: the guest's memory was not mapped as needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFault;

/// Copies `len` bytes from `src` to `dst`, one of which is guest memory.
///
/// # Safety
/// 1. Whichever side is hypervisor memory must be valid for `len` bytes.
/// 2. Whichever side is guest memory must have been checked with
///    `hypercall_abi::layout::is_guest_range` and the current address space
///    must be the guest's.
pub unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) -> Result<(), GuestFault> {
    // SAFETY: guest_copy touches only [dst, dst+len) and [src, src+len); the
    // hypervisor side is valid (obligation 1) and faults on the guest side are
    // recovered through the fixup table (obligation 2 keeps them off
    // hypervisor mappings).
    match unsafe { guest_copy(dst, src, len) } {
        0 => Ok(()),
        _ => Err(GuestFault),
    }
}

/// If `rip` is one of the guest-copy instructions, the address to resume at.
pub fn fixup_for(rip: u64) -> Option<u64> {
    let movsq = guest_copy_movsq as *const () as u64;
    let movsb = guest_copy_movsb as *const () as u64;
    (rip == movsq || rip == movsb).then_some(guest_copy_fixup as *const () as u64)
}
