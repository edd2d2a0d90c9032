//! Hypervisor-stack switching between vCPUs (and the idle context).
//!
//! Each vCPU owns a hypervisor stack; a vCPU that is not running is parked in
//! [`switch_stacks`] with its callee-saved registers on that stack and the stack
//! pointer in its `saved_rsp` slot. A new vCPU's stack is prepared by
//! [`prepare_initial_stack`] so that its first switch-in "returns" into
//! `trap_exit` with the guest's initial [`TrapFrame`].

use core::arch::global_asm;

use super::entry::TrapFrame;

global_asm!(
    r#"
    .text
    .global switch_stacks
switch_stacks:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret

    /* A vCPU's first switch-in "returns" here: finish the switch (the
       context that left this pCPU is parked), then enter the guest. */
    .global vcpu_first_entry
vcpu_first_entry:
    call {finish_switch}
    jmp trap_exit
"#,
    finish_switch = sym crate::sched::finish_switch,
    options(att_syntax)
);

extern "C" {
    fn switch_stacks(save_rsp: *mut u64, load_rsp: u64);
    fn vcpu_first_entry();
}

/// Number of callee-saved registers `switch_stacks` keeps on a parked stack.
const SAVED_REGS: usize = 6;

/// Parks the current context (stack pointer into `*save_rsp`) and resumes the
/// one parked at `load_rsp`. Returns when something switches back to us.
///
/// # Safety
/// 1. `save_rsp` must be valid for a write and stay valid until the current
///    context is resumed.
/// 2. `load_rsp` must be a value saved by this function, or produced by
///    [`prepare_initial_stack`], for a stack that is still allocated.
/// 3. No lock may be held across the call that the resumed context might take.
pub unsafe fn switch(save_rsp: *mut u64, load_rsp: u64) {
    // SAFETY: obligations 1–3 are the caller's; the asm saves and restores all
    // callee-saved registers as the SysV ABI requires.
    unsafe { switch_stacks(save_rsp, load_rsp) }
}

/// Writes `frame` at the top of the stack `[base, top)` plus a parked
/// `switch_stacks` context that returns into `vcpu_first_entry` (then
/// `trap_exit`); returns the value for the vCPU's `saved_rsp`.
///
/// # Safety
/// 1. `[top - 256, top)` must be writable memory owned by the caller, `top`
///    16-byte aligned.
pub unsafe fn prepare_initial_stack(top: u64, frame: &TrapFrame) -> u64 {
    let frame_addr = top - core::mem::size_of::<TrapFrame>() as u64;
    let ret_addr = frame_addr - 8;
    let saved = ret_addr - (SAVED_REGS as u64) * 8;
    // SAFETY: all three writes fall inside the caller's writable region
    // (obligation 1): 176 + 8 + 48 = 232 bytes below `top`.
    unsafe {
        core::ptr::write(frame_addr as *mut TrapFrame, *frame);
        core::ptr::write(ret_addr as *mut u64, vcpu_first_entry as *const () as u64);
        core::ptr::write_bytes(saved as *mut u64, 0, SAVED_REGS);
    }
    saved
}
