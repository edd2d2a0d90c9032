//! The asm edge of guest user mode (MM-7): entering user mode with `iret`,
//! and coming back to the kernel when user code makes a `syscall` or raises
//! an exception.
//!
//! # Protocol
//! 1. [`enter`] (asm `__pv_guest_kit_user_enter`) saves the kernel's callee-saved
//!    registers on the kernel stack, records that stack pointer in
//!    [`KERNEL_RSP`], builds the `IretContext` tail `{flags = USER_MODE, rip,
//!    cs, rflags, rsp, ss}` below it, loads every user general register and
//!    jumps to the `iret` stub (HC-16), which enters user mode.
//! 2. A `syscall` in user mode reaches the kit's syscall stub, an exception
//!    the kit's trap stub for its vector, on the `stack_switch` stack; both
//!    build a [`TrapContext`] and call the dispatcher, which calls
//!    [`on_user_event`].
//! 3. [`on_user_event`] stores the context in [`EVENT`] and rewrites it so the
//!    stub's `iret` returns to *kernel* mode at `.Lpv_user_resume` on the saved
//!    kernel stack; that label pops the callee-saved registers and returns
//!    from the asm routine. Every bounce thus ends with an `iret`, so the
//!    hypervisor never sees a handler left running.
//!
//! # Invariants
//! - [`KERNEL_RSP`] is non-zero exactly while user code runs (between step 1
//!   and step 3 of one entry).
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

#[cfg(target_os = "none")]
use hypercall_abi::trap::FRAME_FLAG_USER_MODE;
use spin::Mutex;

use super::UserRegs;
use crate::traps::TrapContext;

/// The kernel stack pointer saved by the enter routine (0: no user code runs).
static KERNEL_RSP: AtomicU64 = AtomicU64::new(0);

/// The last user event, for the run loop.
static EVENT: Mutex<Option<TrapContext>> = Mutex::new(None);

#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".pushsection .text.pv_user_enter, \"ax\", @progbits",
    ".p2align 4",
    ".globl __pv_guest_kit_user_enter",
    "__pv_guest_kit_user_enter:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov qword ptr [rip + {saved}], rsp",
    "push {ss}",
    "push qword ptr [rdi + {o_rsp}]",
    "push qword ptr [rdi + {o_rflags}]",
    "push {cs}",
    "push qword ptr [rdi + {o_rip}]",
    "push {user_mode}",
    "mov rax, qword ptr [rdi + {o_rax}]",
    "mov rbx, qword ptr [rdi + {o_rbx}]",
    "mov rcx, qword ptr [rdi + {o_rcx}]",
    "mov rdx, qword ptr [rdi + {o_rdx}]",
    "mov rsi, qword ptr [rdi + {o_rsi}]",
    "mov rbp, qword ptr [rdi + {o_rbp}]",
    "mov r8, qword ptr [rdi + {o_r8}]",
    "mov r9, qword ptr [rdi + {o_r9}]",
    "mov r10, qword ptr [rdi + {o_r10}]",
    "mov r11, qword ptr [rdi + {o_r11}]",
    "mov r12, qword ptr [rdi + {o_r12}]",
    "mov r13, qword ptr [rdi + {o_r13}]",
    "mov r14, qword ptr [rdi + {o_r14}]",
    "mov r15, qword ptr [rdi + {o_r15}]",
    "mov rdi, qword ptr [rdi + {o_rdi}]",
    "jmp {page} + {iret}",
    "",
    ".Lpv_user_resume:",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".popsection",
    "",
    ".pushsection .rodata.pv_user_resume, \"a\", @progbits",
    ".p2align 3",
    ".globl __pv_guest_kit_user_resume",
    "__pv_guest_kit_user_resume:",
    ".quad .Lpv_user_resume",
    ".popsection",
    saved = sym KERNEL_RSP,
    ss = const hypercall_abi::layout::GUEST_SS,
    cs = const hypercall_abi::layout::GUEST_CS,
    user_mode = const FRAME_FLAG_USER_MODE,
    o_rax = const core::mem::offset_of!(UserRegs, rax),
    o_rbx = const core::mem::offset_of!(UserRegs, rbx),
    o_rcx = const core::mem::offset_of!(UserRegs, rcx),
    o_rdx = const core::mem::offset_of!(UserRegs, rdx),
    o_rsi = const core::mem::offset_of!(UserRegs, rsi),
    o_rdi = const core::mem::offset_of!(UserRegs, rdi),
    o_rbp = const core::mem::offset_of!(UserRegs, rbp),
    o_r8 = const core::mem::offset_of!(UserRegs, r8),
    o_r9 = const core::mem::offset_of!(UserRegs, r9),
    o_r10 = const core::mem::offset_of!(UserRegs, r10),
    o_r11 = const core::mem::offset_of!(UserRegs, r11),
    o_r12 = const core::mem::offset_of!(UserRegs, r12),
    o_r13 = const core::mem::offset_of!(UserRegs, r13),
    o_r14 = const core::mem::offset_of!(UserRegs, r14),
    o_r15 = const core::mem::offset_of!(UserRegs, r15),
    o_rip = const core::mem::offset_of!(UserRegs, rip),
    o_rsp = const core::mem::offset_of!(UserRegs, rsp),
    o_rflags = const core::mem::offset_of!(UserRegs, rflags),
    page = sym crate::hypercall::HYPERCALL_PAGE,
    iret = const crate::hypercall::stub_offset(hypercall_abi::Hypercall::Iret),
);

#[cfg(target_os = "none")]
extern "sysv64" {
    /// Enters user mode with `regs`; returns after the next user event (asm above).
    fn __pv_guest_kit_user_enter(regs: *const UserRegs);
    /// Address of `.Lpv_user_resume`.
    static __pv_guest_kit_user_resume: u64;
}

/// Runs user code with `regs` until its next `syscall` or exception, and
/// returns that event's context. The caller must have set a user base
/// pointer, the `stack_switch` stack and the syscall callback
/// ([`install_kernel_entry`]).
pub(super) fn enter(regs: &UserRegs) -> TrapContext {
    run_until_event(regs);
    match EVENT.lock().take() {
        Some(ctx) => ctx,
        None => panic!("returned from user mode without an event"),
    }
}

/// The asm round trip of [`enter`].
#[cfg(target_os = "none")]
fn run_until_event(regs: &UserRegs) {
    // SAFETY: the routine preserves the callee-saved registers and the stack
    // pointer (the resume path restores them), clobbers only caller-saved
    // ones, as a sysv64 call may, and reads `regs` once. User code runs on
    // its own address space (the user base pointer), which holds no kernel
    // mapping, so it cannot touch Rust's memory.
    unsafe { __pv_guest_kit_user_enter(regs) };
}

/// Host stand-in: there is no user mode on the host.
#[cfg(not(target_os = "none"))]
fn run_until_event(regs: &UserRegs) {
    panic!("user mode needs Paravane (rip {:#x})", regs.rip);
}

/// Where the kernel resumes after a user event.
fn resume_address() -> u64 {
    #[cfg(target_os = "none")]
    {
        // SAFETY: the asm above defines it as one initialised quad in
        // read-only memory.
        unsafe { __pv_guest_kit_user_resume }
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// Called by the trap dispatcher for an event from user mode: if user code
/// was entered with [`enter`], records the event and redirects the return to
/// the kernel; returns false otherwise (the event is then unhandled).
pub(crate) fn on_user_event(ctx: &mut TrapContext) -> bool {
    let rsp = KERNEL_RSP.swap(0, Ordering::SeqCst);
    if rsp == 0 {
        return false;
    }
    *EVENT.lock() = Some(*ctx);
    ctx.flags = 0;
    ctx.rip = resume_address();
    ctx.rsp = rsp;
    ctx.rflags = 0;
    true
}

/// Bytes of the kernel stack for traps from user mode.
const TRAP_STACK_BYTES: usize = 16 * 1024;

/// Top of the `stack_switch` stack, allocated on first use.
static TRAP_STACK_TOP: spin::Once<u64> = spin::Once::new();

/// Registers the `stack_switch` stack and the syscall callback (HC-14, HC-15).
pub(super) fn install_kernel_entry() -> Result<(), hypercall_abi::Errno> {
    let top = *TRAP_STACK_TOP.call_once(|| {
        let stack: &'static mut [u128] =
            alloc::boxed::Box::leak(alloc::vec![0u128; TRAP_STACK_BYTES / 16].into_boxed_slice());
        stack.as_ptr() as u64 + TRAP_STACK_BYTES as u64
    });
    // SAFETY: `top` is the 16-byte-aligned end of a leaked heap block used by
    // nothing else, large enough for the kit's trap path.
    unsafe { crate::hypercall::stack_switch(top)? };
    // Registered together with the event callback, which stays in place.
    crate::callbacks::install_syscall()
}
