//! The few instruction sequences the entry-path tests need exactly as
//! written (a `syscall` with chosen flags, `mov ss` before an entry, a jump
//! to an arbitrary address with a landing point to come back to). All asm
//! of the suite lives here.
//!
//! These enter the hypervisor with a bare `syscall` (rax = hypercall
//! number) rather than through the hypercall page: the instruction that
//! enters is what the tests are about (HC-1's ABI 0.1 stub is the same
//! `syscall`).

/// Flags the tests set before entering: TF, DF, NT, AC.
pub const RFLAGS_TF: u64 = 1 << 8;
pub const RFLAGS_DF: u64 = 1 << 10;
pub const RFLAGS_NT: u64 = 1 << 14;
pub const RFLAGS_AC: u64 = 1 << 18;

#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".pushsection .text.xsa_suite, \"ax\", @progbits",
    // flagged_syscall(flags, nr, a1, a2, a3) -> (rax, rflags after):
    // ORs `flags` into RFLAGS, enters with `syscall`, records RFLAGS on
    // return, clears the odd flags again.
    ".globl xsa_suite_flagged_syscall",
    "xsa_suite_flagged_syscall:",
    "push rbx",
    "mov rax, rsi",
    "mov rbx, rdi",
    "mov rdi, rdx",
    "mov rsi, rcx",
    "mov rdx, r8",
    "xor r10d, r10d",
    "xor r8d, r8d",
    "pushfq",
    "or qword ptr [rsp], rbx",
    "popfq",
    "syscall",
    "pushfq",
    "pop rdx",
    "pushfq",
    "and qword ptr [rsp], ~0x44500",
    "popfq",
    "pop rbx",
    "ret",
    // mov_ss_syscall(flags, nr, a1) -> rax: `mov ss, <GUEST_SS>` right
    // before `syscall`, with `flags` ORed into RFLAGS first.
    ".globl xsa_suite_mov_ss_syscall",
    "xsa_suite_mov_ss_syscall:",
    "push rbx",
    "mov rax, rsi",
    "mov rbx, rdi",
    "mov rdi, rdx",
    "xor esi, esi",
    "xor r10d, r10d",
    "mov rdx, ss",
    "pushfq",
    "or qword ptr [rsp], rbx",
    "popfq",
    "mov ss, dx",
    "syscall",
    "pushfq",
    "and qword ptr [rsp], ~0x44500",
    "popfq",
    "pop rbx",
    "ret",
    // mov_ss_int3(): `mov ss` right before `int3`.
    ".globl xsa_suite_mov_ss_int3",
    "xsa_suite_mov_ss_int3:",
    "mov rdx, ss",
    "mov ss, dx",
    "int3",
    "ret",
    // mov_ss_int80(): `mov ss` right before `int 0x80` (a privileged gate).
    ".globl xsa_suite_mov_ss_int80",
    "xsa_suite_mov_ss_int80:",
    "mov rdx, ss",
    "mov ss, dx",
    "int 0x80",
    ".globl xsa_suite_after_int80",
    "xsa_suite_after_int80:",
    "ret",
    // write_dr7(value): a ring-3 `mov dr7` (must #GP).
    ".globl xsa_suite_write_dr7",
    "xsa_suite_write_dr7:",
    "mov dr7, rdi",
    ".globl xsa_suite_after_dr7",
    "xsa_suite_after_dr7:",
    "ret",
    // jump_away(target, nr): saves the callee-saved registers and rsp,
    // puts `nr` in rax and 0 in rdi, jumps to `target`. Whatever happens
    // there must end in an exception whose handler resumes at `landing`.
    ".globl xsa_suite_jump_away",
    "xsa_suite_jump_away:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + xsa_suite_saved_rsp], rsp",
    "mov rax, rsi",
    "mov rcx, rdi",
    "xor edi, edi",
    "jmp rcx",
    ".globl xsa_suite_landing",
    "xsa_suite_landing:",
    "mov rsp, [rip + xsa_suite_saved_rsp]",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    // int3_with_flags(flags): `int3` with `flags` ORed into RFLAGS.
    ".globl xsa_suite_int3_with_flags",
    "xsa_suite_int3_with_flags:",
    "pushfq",
    "or qword ptr [rsp], rdi",
    "popfq",
    "int3",
    "pushfq",
    "and qword ptr [rsp], ~0x44500",
    "popfq",
    "ret",
    ".globl xsa_suite_int3",
    "xsa_suite_int3:",
    "int3",
    "ret",
    ".globl xsa_suite_ud2",
    "xsa_suite_ud2:",
    "ud2",
    "ret",
    ".globl xsa_suite_live_rflags",
    "xsa_suite_live_rflags:",
    "pushfq",
    "pop rax",
    "ret",
    ".popsection",
    ".pushsection .bss.xsa_suite, \"aw\", @nobits",
    ".p2align 3",
    "xsa_suite_saved_rsp: .quad 0",
    ".popsection",
);

#[cfg(target_os = "none")]
extern "sysv64" {
    fn xsa_suite_flagged_syscall(flags: u64, nr: u64, a1: u64, a2: u64, a3: u64) -> RaxRdx;
    fn xsa_suite_mov_ss_syscall(flags: u64, nr: u64, a1: u64) -> u64;
    fn xsa_suite_mov_ss_int3();
    fn xsa_suite_mov_ss_int80();
    fn xsa_suite_write_dr7(value: u64);
    fn xsa_suite_jump_away(target: u64, nr: u64);
    fn xsa_suite_int3_with_flags(flags: u64);
    fn xsa_suite_int3();
    fn xsa_suite_live_rflags() -> u64;
    fn xsa_suite_ud2();
    static xsa_suite_landing: u8;
    static xsa_suite_after_int80: u8;
    static xsa_suite_after_dr7: u8;
}

/// Two return registers.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
#[repr(C)]
struct RaxRdx {
    rax: u64,
    rdx: u64,
}

/// Hypercall `nr(a1, a2, a3)` entered by `syscall` with `flags` ORed into
/// RFLAGS: (return value, RFLAGS right after the return).
///
/// # Safety
/// 1. The hypercall's own obligations hold for the arguments.
/// 2. A trap handler for #DB is installed if `flags` has TF.
pub unsafe fn flagged_syscall(flags: u64, nr: u64, args: [u64; 3]) -> (i64, u64) {
    #[cfg(target_os = "none")]
    {
        // SAFETY: the routine saves what the ABI requires (rbx) and the
        // hypercall clobbers only rax, rcx, r11 (HC-3); obligations 1-2.
        let r = unsafe { xsa_suite_flagged_syscall(flags, nr, args[0], args[1], args[2]) };
        (r.rax as i64, r.rdx)
    }
    #[cfg(not(target_os = "none"))]
    panic!("flagged_syscall({flags:#x}, {nr}, {args:?}) needs Paravane")
}

/// Hypercall `nr(a1)` entered by `syscall` right after `mov ss`.
///
/// # Safety
/// As [`flagged_syscall`].
pub unsafe fn mov_ss_syscall(flags: u64, nr: u64, a1: u64) -> i64 {
    #[cfg(target_os = "none")]
    {
        // SAFETY: as in `flagged_syscall`; `mov ss` reloads the current SS.
        unsafe { xsa_suite_mov_ss_syscall(flags, nr, a1) as i64 }
    }
    #[cfg(not(target_os = "none"))]
    panic!("mov_ss_syscall({flags:#x}, {nr}, {a1}) needs Paravane")
}

/// `mov ss` then `int3` (a #BP handler must be installed).
pub fn mov_ss_int3() {
    #[cfg(target_os = "none")]
    // SAFETY: reloads the current SS; the #BP resumes after the int3.
    unsafe {
        xsa_suite_mov_ss_int3()
    }
}

/// `mov ss` then `int 0x80`; the #GP handler must resume at
/// [`after_int80`].
pub fn mov_ss_int80() {
    #[cfg(target_os = "none")]
    // SAFETY: as `mov_ss_int3`; the handler resumes at the `ret`.
    unsafe {
        xsa_suite_mov_ss_int80()
    }
}

/// Where a handler resumes after [`mov_ss_int80`].
pub fn after_int80() -> u64 {
    #[cfg(target_os = "none")]
    {
        // Only the symbol's address is taken (no access).
        core::ptr::addr_of!(xsa_suite_after_int80) as u64
    }
    #[cfg(not(target_os = "none"))]
    0
}

/// A ring-3 `mov dr7, value`; the #GP handler must resume at
/// [`after_dr7`].
pub fn write_dr7(value: u64) {
    #[cfg(target_os = "none")]
    // SAFETY: must fault in ring 3; the handler resumes at the `ret`.
    unsafe {
        xsa_suite_write_dr7(value)
    }
    #[cfg(not(target_os = "none"))]
    let _ = value;
}

/// Where a handler resumes after [`write_dr7`].
pub fn after_dr7() -> u64 {
    #[cfg(target_os = "none")]
    {
        // Only the symbol's address is taken (no access).
        core::ptr::addr_of!(xsa_suite_after_dr7) as u64
    }
    #[cfg(not(target_os = "none"))]
    0
}

/// Jumps to `target` with rax = `nr`, rdi = 0; an exception handler must
/// resume at [`landing`], which returns from here.
///
/// # Safety
/// 1. A handler for every exception the code at `target` can end in is
///    installed and resumes at [`landing`].
pub unsafe fn jump_away(target: u64, nr: u64) {
    #[cfg(target_os = "none")]
    // SAFETY: obligation 1; the landing restores rsp and the callee-saved
    // registers saved here.
    unsafe {
        xsa_suite_jump_away(target, nr)
    }
    #[cfg(not(target_os = "none"))]
    panic!("jump_away({target:#x}, {nr}) needs Paravane")
}

/// The landing point of [`jump_away`].
pub fn landing() -> u64 {
    #[cfg(target_os = "none")]
    {
        // Only the symbol's address is taken (no access).
        core::ptr::addr_of!(xsa_suite_landing) as u64
    }
    #[cfg(not(target_os = "none"))]
    0
}

/// `int3` with `flags` ORed into RFLAGS (a #BP handler must be installed;
/// with TF also a #DB handler).
pub fn int3_with_flags(flags: u64) {
    #[cfg(target_os = "none")]
    // SAFETY: the #BP resumes after the int3; the flags are cleared again.
    unsafe {
        xsa_suite_int3_with_flags(flags)
    }
    #[cfg(not(target_os = "none"))]
    let _ = flags;
}

/// A plain `int3`.
///
/// # Safety
/// 1. A #BP handler that resumes after the instruction is installed.
pub unsafe fn int3() {
    #[cfg(target_os = "none")]
    // SAFETY: obligation 1.
    unsafe {
        xsa_suite_int3()
    }
}

/// RFLAGS as they are now.
pub fn live_rflags() -> u64 {
    #[cfg(target_os = "none")]
    {
        // SAFETY: reads RFLAGS, touches nothing else.
        unsafe { xsa_suite_live_rflags() }
    }
    #[cfg(not(target_os = "none"))]
    0
}

/// A `ud2` (ends syscall-floor mode, HC-18; otherwise a #UD handler that
/// skips 2 bytes must be installed).
pub fn ud2() {
    #[cfg(target_os = "none")]
    // SAFETY: skipped by the hypervisor in floor mode, else caught.
    unsafe {
        xsa_suite_ud2()
    }
}
