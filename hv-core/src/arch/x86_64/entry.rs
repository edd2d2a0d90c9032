//! Trap and SYSCALL entry/exit: the only way into hv-core after boot.
//!
//! Every entry from a guest builds one [`TrapFrame`] at the top of the running
//! vCPU's hypervisor stack (`PerCpu::kstack_top`, also TSS.rsp0), then calls a
//! Rust dispatcher with it. The exit path restores the frame: SYSRET when the
//! frame still says what SYSCALL left (rcx == rip, r11 == rflags), IRETQ otherwise.
//!
//! # Invariants
//! - hv-core runs with interrupts disabled (SFMASK clears IF on SYSCALL; all IDT
//!   gates are interrupt gates).
//! - A frame's `rip` is canonical: SYSCALL produced it (the one non-canonical
//!   value SYSCALL can leave, 2^47, is turned into a #GP at entry), or hv-core
//!   validated it with `hypercall_abi::layout::is_guest_address` before
//!   storing it (XSA-7: SYSRET to a non-canonical rip faults in ring 0 on
//!   Intel).
//! - GS base is this CPU's [`PerCpu`] while in ring 0 and the guest's while in
//!   ring 3.

use core::arch::global_asm;
use core::mem::offset_of;

use hypercall_abi::layout::{GUEST_CS, GUEST_SS};

use super::cpu::{msr, wrmsr};
use super::gdt::{HV_CS, SYSRET_BASE};
use super::percpu::{set_vcpu_info, PerCpu, PerCpuCell};

/// Vector number recorded in frames built by SYSCALL.
pub const SYSCALL_VECTOR: u64 = 0x100;

/// Guest register state saved on every entry, in push order reversed.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Exception vector, interrupt vector or [`SYSCALL_VECTOR`].
    pub vector: u64,
    /// Hardware error code, or 0.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}
const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);
const _: () = assert!(core::mem::size_of::<TrapFrame>().is_multiple_of(16));

impl TrapFrame {
    /// Whether the interrupted code was a guest (ring 3).
    pub fn from_guest(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// Programs SYSCALL and the GS bases of this CPU, whose per-CPU data is
/// `cpu`. Call once per CPU, after `gdt::init`.
pub fn init(cpu: &'static PerCpuCell) {
    extern "C" {
        fn syscall_entry();
    }
    let star = (u64::from(SYSRET_BASE) << 48) | (u64::from(HV_CS) << 32);
    // IF | TF | DF | NT | AC cleared on SYSCALL.
    let sfmask: u64 = (1 << 9) | (1 << 8) | (1 << 10) | (1 << 14) | (1 << 18);
    // SAFETY: these MSRs exist on every x86_64 CPU (EFER.SCE is set at boot);
    // the entry point is the SYSCALL handler below; GS_BASE points at a static
    // PerCpu and KERNEL_GS_BASE is the (zero) base guests start with.
    unsafe {
        wrmsr(msr::STAR, star);
        wrmsr(msr::LSTAR, syscall_entry as *const () as u64);
        wrmsr(msr::CSTAR, syscall_entry as *const () as u64);
        wrmsr(msr::SFMASK, sfmask);
        wrmsr(msr::GS_BASE, cpu.as_ptr() as u64);
        wrmsr(msr::KERNEL_GS_BASE, 0);
    }
    set_vcpu_info(None);
}

extern "C" {
    /// Start of the 256 interrupt stubs, 16 bytes apart (vector n at `+16 * n`).
    pub fn trap_stubs();
    /// Restores a [`TrapFrame`] at rsp and returns to the guest with IRETQ.
    pub fn trap_exit();
}

global_asm!(
    r#"
    /* Push / pop every general register in TrapFrame order (r15 lowest). */
    .macro SAVE_GPRS
    pushq %rax; pushq %rbx; pushq %rcx; pushq %rdx; pushq %rsi; pushq %rdi; pushq %rbp
    pushq %r8; pushq %r9; pushq %r10; pushq %r11; pushq %r12; pushq %r13; pushq %r14; pushq %r15
    .endm
    .macro RESTORE_GPRS
    popq %r15; popq %r14; popq %r13; popq %r12; popq %r11; popq %r10; popq %r9; popq %r8
    popq %rbp; popq %rdi; popq %rsi; popq %rdx; popq %rcx; popq %rbx; popq %rax
    .endm

    .text
    .balign 16
    .global trap_stubs
trap_stubs:
    vector = 0
    .rept 256
    .balign 16
    .if vector < 32
      .if ((0x60227d00 >> vector) & 1) == 0
        pushq $0
      .endif
    .else
      pushq $0
    .endif
    pushq $vector
    jmp trap_common
    vector = vector + 1
    .endr

    .balign 16
trap_common:
    testb $3, 24(%rsp)
    jz 1f
    swapgs
1:  SAVE_GPRS
    movq %rsp, %rdi
    cld
    call {trap_dispatch}
    /* Back to a guest with an upcall pending and unmasked: deliver it (EVT-5). */
    testb $3, {f_cs}(%rsp)
    jz trap_exit
    movq %gs:{vcpu_info}, %rax
    cmpw $1, (%rax)
    jne trap_exit
    movq %rsp, %rdi
    call {deliver_upcall}

    .global trap_exit
trap_exit:
    RESTORE_GPRS
    addq $16, %rsp
    testb $3, 8(%rsp)
    jz 2f
    swapgs
2:  iretq

    .balign 16
    .global syscall_entry
syscall_entry:
    swapgs
    movq %rsp, %gs:{scratch}
    movq %gs:{kstack_top}, %rsp
    pushq ${guest_ss}
    pushq %gs:{scratch}
    pushq %r11
    pushq ${guest_cs}
    pushq %rcx
    pushq $0
    pushq ${syscall_vector}
    SAVE_GPRS
    movq %rsp, %rdi
    /* XSA-7: rcx (the return rip) is non-canonical only as 2^47, after a
       SYSCALL in the last bytes below it (bit 47 set, bit 63 clear). */
    btq $47, %rcx
    jc syscall_high_rip
syscall_canonical:
    cmpq $0, %gs:{user_mode}
    jne user_syscall
    call {syscall_dispatch}
syscall_exit:
    movq %gs:{vcpu_info}, %rax
    cmpw $1, (%rax)
    je syscall_upcall
    /* SYSRET only when it restores exactly the frame: rcx = rip, r11 = rflags. */
    movq {f_rip}(%rsp), %rcx
    cmpq {f_rcx}(%rsp), %rcx
    jne trap_exit
    movq {f_rflags}(%rsp), %r11
    cmpq {f_r11}(%rsp), %r11
    jne trap_exit
    RESTORE_GPRS
    movq 40(%rsp), %rsp
    swapgs
    sysretq

    /* Bit 47 of the return rip is set: an upper-half guest address (bit
       63 set too), or 2^47, where SYSRET must never return: that call is
       not run, the guest gets a #GP instead. */
syscall_high_rip:
    btq $63, %rcx
    jc syscall_canonical
    call {syscall_noncanonical}
    jmp syscall_exit

    /* A SYSCALL from guest user mode: delivered to the guest kernel. */
user_syscall:
    call {user_syscall}
    jmp syscall_exit

    /* An upcall is pending and unmasked: enter the event callback. */
syscall_upcall:
    movq %rsp, %rdi
    call {deliver_upcall}
    jmp trap_exit
"#,
    trap_dispatch = sym crate::trap::trap_dispatch,
    syscall_dispatch = sym crate::hypercall::syscall_dispatch,
    syscall_noncanonical = sym crate::hypercall::syscall_at_end_of_lower_half,
    user_syscall = sym crate::hypercall::user_syscall,
    user_mode = const offset_of!(PerCpu, user_mode),
    vcpu_info = const offset_of!(PerCpu, vcpu_info),
    deliver_upcall = sym crate::event::delivery::deliver_upcall,
    f_cs = const offset_of!(TrapFrame, cs),
    scratch = const offset_of!(PerCpu, scratch),
    kstack_top = const offset_of!(PerCpu, kstack_top),
    guest_ss = const GUEST_SS,
    guest_cs = const GUEST_CS,
    syscall_vector = const SYSCALL_VECTOR,
    f_rip = const offset_of!(TrapFrame, rip),
    f_rcx = const offset_of!(TrapFrame, rcx),
    f_rflags = const offset_of!(TrapFrame, rflags),
    f_r11 = const offset_of!(TrapFrame, r11),
    options(att_syntax)
);

global_asm!(
    r#"
    .text
    .balign 16
    .global syscall_floor_entry
    /* bench_op(BENCH_SYSCALL_FLOOR): the cheapest possible SYSCALL round trip.
       rcx and r11 hold what SYSCALL put there; only flags are touched. */
syscall_floor_entry:
    /* XSA-7: never SYSRET to a non-canonical rip. A SYSCALL from guest
       space leaves rcx non-canonical only as 2^47 (bit 47 set, bit 63
       clear); that one takes the full entry, which delivers a #GP. */
    btq $47, %rcx
    jc 1f
    sysretq
1:  btq $63, %rcx
    jnc syscall_entry
    sysretq
"#,
    options(att_syntax)
);

/// Points SYSCALL at the bare `sysretq` stub (`on`) or back at the hypercall
/// entry (HC-18).
pub fn set_syscall_floor(on: bool) {
    extern "C" {
        fn syscall_entry();
        fn syscall_floor_entry();
    }
    let target = if on {
        syscall_floor_entry as *const () as usize
    } else {
        syscall_entry as *const () as usize
    };
    crate::sched::write_lstar(target as u64);
}
