//! The machine-level pieces of the fuzzer, all in assembly:
//!
//! - [`stub_call`]: a hypercall through the hypercall page with five raw
//!   arguments, optionally with RFLAGS.DF set, checking that the registers
//!   HC-3 says are preserved (r9, r12..r15) come back unchanged;
//! - [`raw_syscall`]: a `syscall` with an arbitrary rax (hypercall numbers the
//!   page has no stub for); only used when the stubs are the documented
//!   `mov eax, n; syscall` (see [`raw_syscall_supported`]);
//! - [`iret_call`]: jumps to the `iret` stub with a crafted frame (HC-16);
//!   success lands on a label in here, failure comes back through the stub's
//!   `ud2` and the #UD handler ([`on_fault`]);
//! - [`guarded`]: runs a function so that an unexpected exception in it is
//!   reported and abandons the function instead of killing the domain
//!   (a `longjmp` out of the trap handler; only used on a bug path).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hypercall_abi::hypercall::HYPERCALL_STUB_SIZE;
use hypercall_abi::trap::vector;
use hypercall_abi::Hypercall;
use pv_guest_kit::hypercall::HYPERCALL_PAGE;
use pv_guest_kit::println;
use pv_guest_kit::traps::{TrapAction, TrapContext};

/// Canaries loaded into the registers a hypercall must preserve.
const CANARY: [u64; 5] = [
    0x9999_0000_9999_0009,
    0x1212_0000_1212_0012,
    0x1313_0000_1313_0013,
    0x1414_0000_1414_0014,
    0x1515_0000_1515_0015,
];

/// What a hypercall returned.
#[derive(Clone, Copy, Debug)]
pub struct Ret {
    /// rax.
    pub rax: i64,
    /// Whether one of r9, r12..r15 changed (an HC-3 violation).
    pub clobbered: bool,
}

/// Calls stub `nr` with `args` in rdi, rsi, rdx, r10, r8; with DF set if `df`.
///
/// # Safety
/// 1. The call's effects must leave the fuzzer's own memory, mappings, trap
///    table and callbacks intact (the generators guarantee it for every
///    call they build).
/// 2. `nr` must not be `iret` (its stub never returns).
pub unsafe fn stub_call(nr: u32, args: [u64; 5], df: bool) -> Ret {
    assert!(
        u64::from(nr) < hypercall_abi::hypercall::HYPERCALL_SLOTS && nr != 6,
        "stub_call({nr})"
    );
    #[cfg(target_os = "none")]
    {
        let target = HYPERCALL_PAGE.address() + u64::from(nr) * HYPERCALL_STUB_SIZE;
        let rax: i64;
        let (r9, r12, r13, r14, r15): (u64, u64, u64, u64, u64);
        if df {
            // SAFETY: the stub follows the hypercall convention (HC-3);
            // DF is set only around the call and cleared before Rust runs
            // again; the call's effects are the caller's obligation.
            unsafe {
                core::arch::asm!(
                    "std",
                    "call {target}",
                    "cld",
                    target = in(reg) target,
                    in("rdi") args[0],
                    in("rsi") args[1],
                    in("rdx") args[2],
                    in("r10") args[3],
                    in("r8") args[4],
                    inout("r9") CANARY[0] => r9,
                    inout("r12") CANARY[1] => r12,
                    inout("r13") CANARY[2] => r13,
                    inout("r14") CANARY[3] => r14,
                    inout("r15") CANARY[4] => r15,
                    lateout("rax") rax,
                    lateout("rcx") _,
                    lateout("r11") _,
                );
            }
        } else {
            // SAFETY: as above, without DF.
            unsafe {
                core::arch::asm!(
                    "call {target}",
                    target = in(reg) target,
                    in("rdi") args[0],
                    in("rsi") args[1],
                    in("rdx") args[2],
                    in("r10") args[3],
                    in("r8") args[4],
                    inout("r9") CANARY[0] => r9,
                    inout("r12") CANARY[1] => r12,
                    inout("r13") CANARY[2] => r13,
                    inout("r14") CANARY[3] => r14,
                    inout("r15") CANARY[4] => r15,
                    lateout("rax") rax,
                    lateout("rcx") _,
                    lateout("r11") _,
                );
            }
        }
        Ret {
            rax,
            clobbered: [r9, r12, r13, r14, r15] != CANARY,
        }
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (args, df, CANARY);
        panic!("hcall-fuzz needs the Paravane hypervisor")
    }
}

/// Whether stub 0 is `mov eax, 0; syscall`, i.e. whether [`raw_syscall`]
/// enters the hypervisor the way the stubs do. The fuzzer only then issues
/// hypercall numbers that have no stub (SPEC.md §2.1 lets the entry
/// mechanism change; the fuzzer checks rather than assumes).
pub fn raw_syscall_supported() -> bool {
    #[cfg(target_os = "none")]
    {
        let page = HYPERCALL_PAGE.address();
        let mut bytes = [0u8; 7];
        for (i, b) in bytes.iter_mut().enumerate() {
            // SAFETY: the hypercall page is mapped readable (it is in the
            // image); the read is volatile because hv-core wrote it.
            *b = unsafe { core::ptr::read_volatile((page + i as u64) as *const u8) };
        }
        bytes == [0xb8, 0, 0, 0, 0, 0x0f, 0x05]
    }
    #[cfg(not(target_os = "none"))]
    {
        false
    }
}

/// `syscall` with rax = `nr` (a number without a stub) and `args`.
///
/// # Safety
/// As [`stub_call`], for every hypercall `nr` might be taken for.
pub unsafe fn raw_syscall(nr: u64, args: [u64; 5]) -> i64 {
    #[cfg(target_os = "none")]
    {
        let rax: i64;
        // SAFETY: the same entry as the stubs' (checked by
        // raw_syscall_supported); rcx and r11 are clobbered by SYSCALL.
        unsafe {
            core::arch::asm!(
                "syscall",
                inout("rax") nr => rax,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                in("r8") args[4],
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        rax
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (nr, args);
        panic!("hcall-fuzz needs the Paravane hypervisor")
    }
}

/// `syscall` with rax = `nr` and `args`, with rsp = `rsp` during the call
/// (the hypervisor must not touch the guest stack on the hypercall path; an
/// `iret` there reads its frame at `rsp`).
///
/// # Safety
/// As [`raw_syscall`]; for `iret` (6), `rsp` must be unreadable (then the
/// call fails and returns here).
pub unsafe fn raw_syscall_rsp(nr: u64, args: [u64; 5], rsp: u64) -> i64 {
    #[cfg(target_os = "none")]
    {
        let rax: i64;
        // SAFETY: as raw_syscall; rsp is swapped only around the syscall and
        // restored from r12, which the hypervisor preserves (HC-3); a
        // continuation re-enters at the same `syscall`.
        unsafe {
            core::arch::asm!(
                "mov r12, rsp",
                "mov rsp, r13",
                "syscall",
                "mov rsp, r12",
                in("r13") rsp,
                out("r12") _,
                inout("rax") nr => rax,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                in("r8") args[4],
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        rax
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (nr, args, rsp);
        panic!("hcall-fuzz needs the Paravane hypervisor")
    }
}

/// Bytes of the stack the crafted `iret` frames live on. A failing `iret`
/// delivers #UD on it, so the kit's handler path runs here too.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
const IRET_STACK_SIZE: usize = 16 * 1024;

/// The stack of [`iret_call`].
#[repr(C, align(16))]
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
struct IretStack(UnsafeCell<[u8; IRET_STACK_SIZE]>);

// SAFETY: one vCPU; the stack is only touched by `iret_call` and the trap
// path it provokes, never through a Rust reference.
unsafe impl Sync for IretStack {}

#[cfg_attr(not(target_os = "none"), allow(dead_code))]
static IRET_STACK: IretStack = IretStack(UnsafeCell::new([0; IRET_STACK_SIZE]));
/// rsp of [`iret_call`]'s caller, restored on both ways back.
static IRET_SAVED_RSP: AtomicU64 = AtomicU64::new(0);
/// rcx and r11 as a successful `iret` left them.
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
static IRET_OUT_RCX: AtomicU64 = AtomicU64::new(0);
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
static IRET_OUT_R11: AtomicU64 = AtomicU64::new(0);
/// Set while an `iret` test runs: a #UD in the `iret` stub is expected.
static IRET_ACTIVE: AtomicBool = AtomicBool::new(false);

/// rsp of [`guarded`]'s frame, for the recovery path.
static GUARD_RSP: AtomicU64 = AtomicU64::new(0);
/// Set while [`guarded`] runs.
static GUARD_ACTIVE: AtomicBool = AtomicBool::new(false);
/// Unexpected exceptions so far.
pub static FAULTS: AtomicU64 = AtomicU64::new(0);
/// What the fuzzer is doing, for fault reports: iteration and hypercall.
pub static CURRENT_ITER: AtomicU64 = AtomicU64::new(0);
pub static CURRENT_NR: AtomicU64 = AtomicU64::new(0);

#[cfg(target_os = "none")]
core::arch::global_asm!(
    ".pushsection .text.hcall_fuzz_sys, \"ax\", @progbits",
    // hcall_fuzz_iret(frame = rdi, rax = rsi, rcx = rdx, r11 = rcx)
    //   -> rax = restored rax or -errno, rdx = 1 if the iret succeeded.
    ".p2align 4",
    ".globl hcall_fuzz_iret",
    "hcall_fuzz_iret:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + {saved}], rsp",
    "mov r11, rcx",
    "mov rcx, rdx",
    "mov rax, rsi",
    "mov rsp, rdi",
    "jmp {page} + {iret}",
    ".p2align 4",
    ".globl hcall_fuzz_iret_landing",
    "hcall_fuzz_iret_landing:",
    "mov rsp, [rip + {saved}]",
    "cld",
    "mov [rip + {out_rcx}], rcx",
    "mov [rip + {out_r11}], r11",
    "mov edx, 1",
    "jmp 2f",
    ".p2align 4",
    ".globl hcall_fuzz_iret_fail",
    "hcall_fuzz_iret_fail:",
    "mov rsp, [rip + {saved}]",
    "cld",
    "xor edx, edx",
    "2:",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    // hcall_fuzz_guarded(f = rdi, arg = rsi) -> rax = 0, or 1 after a fault
    ".p2align 4",
    ".globl hcall_fuzz_guarded",
    "hcall_fuzz_guarded:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rip + {grsp}], rsp",
    "sub rsp, 8",
    "mov rax, rdi",
    "mov rdi, rsi",
    "call rax",
    "add rsp, 8",
    "xor eax, eax",
    "jmp 3f",
    ".p2align 4",
    ".globl hcall_fuzz_guard_recover",
    "hcall_fuzz_guard_recover:",
    "mov rsp, [rip + {grsp}]",
    "cld",
    "mov eax, 1",
    "3:",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    ".popsection",
    saved = sym IRET_SAVED_RSP,
    out_rcx = sym IRET_OUT_RCX,
    out_r11 = sym IRET_OUT_R11,
    grsp = sym GUARD_RSP,
    page = sym HYPERCALL_PAGE,
    iret = const Hypercall::Iret as u64 * HYPERCALL_STUB_SIZE,
);

#[cfg(target_os = "none")]
extern "sysv64" {
    fn hcall_fuzz_iret(frame: u64, rax: u64, rcx: u64, r11: u64) -> IretRaw;
    fn hcall_fuzz_iret_landing();
    fn hcall_fuzz_iret_fail();
    fn hcall_fuzz_guarded(f: extern "sysv64" fn(*mut u8), arg: *mut u8) -> u64;
    fn hcall_fuzz_guard_recover();
}

/// rax:rdx as the iret routine returns them.
#[repr(C)]
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
struct IretRaw {
    rax: u64,
    landed: u64,
}

/// The address a valid crafted `iret` frame returns to.
pub fn iret_landing() -> u64 {
    #[cfg(target_os = "none")]
    {
        hcall_fuzz_iret_landing as *const () as u64
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// The frame tail (`flags ..= ss`, 48 bytes) `iret_call` expects, at the
/// `iret` stub's rsp.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct IretTail {
    pub flags: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// How an `iret` test ended.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
pub enum IretOutcome {
    /// The hypervisor returned to the landing label; the registers it
    /// restored.
    Landed { rax: u64, rcx: u64, r11: u64 },
    /// The hypervisor refused the frame with this result.
    Refused(i64),
}

/// Pushes `tail` on the iret stack and enters the `iret` stub with rax,
/// rcx, r11 = `regs`, as a trap handler returning would.
///
/// # Safety
/// 1. If the frame can succeed (defined flags without `FRAME_FLAG_USER_MODE`
///    and a guest `rip`), `rip` must be [`iret_landing`].
pub unsafe fn iret_call(tail: IretTail, regs: [u64; 3]) -> IretOutcome {
    #[cfg(target_os = "none")]
    {
        let top = (IRET_STACK.0.get() as u64 + IRET_STACK_SIZE as u64 - 128) & !15;
        // SAFETY: `top` lies inside the iret stack, which nothing else uses
        // while no iret test runs.
        unsafe { core::ptr::write_unaligned(top as *mut IretTail, tail) };
        IRET_ACTIVE.store(true, Ordering::SeqCst);
        // SAFETY: the routine saves and restores every callee-saved
        // register and rsp on both ways back; the frame's `rip` is the
        // landing label whenever the hypervisor may accept it (obligation 1).
        let raw = unsafe { hcall_fuzz_iret(top, regs[0], regs[1], regs[2]) };
        IRET_ACTIVE.store(false, Ordering::SeqCst);
        if raw.landed != 0 {
            IretOutcome::Landed {
                rax: raw.rax,
                rcx: IRET_OUT_RCX.load(Ordering::Relaxed),
                r11: IRET_OUT_R11.load(Ordering::Relaxed),
            }
        } else {
            IretOutcome::Refused(raw.rax as i64)
        }
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (tail, regs);
        panic!("hcall-fuzz needs the Paravane hypervisor")
    }
}

/// Runs `f(arg)`; returns false if an unexpected exception abandoned it.
pub fn guarded(f: extern "sysv64" fn(*mut u8), arg: *mut u8) -> bool {
    #[cfg(target_os = "none")]
    {
        GUARD_ACTIVE.store(true, Ordering::SeqCst);
        // SAFETY: the routine calls `f(arg)` on this stack and returns; on
        // the recovery path it restores the callee-saved registers and rsp
        // it saved, abandoning f's frames (which own nothing that needs
        // dropping: the fuzzer's state lives behind `arg`).
        let faulted = unsafe { hcall_fuzz_guarded(f, arg) };
        GUARD_ACTIVE.store(false, Ordering::SeqCst);
        faulted == 0
    }
    #[cfg(not(target_os = "none"))]
    {
        f(arg);
        true
    }
}

/// Whether `rip` is inside the `iret` stub.
fn in_iret_stub(rip: u64) -> bool {
    let start = HYPERCALL_PAGE.address() + Hypercall::Iret as u64 * HYPERCALL_STUB_SIZE;
    (start..start + HYPERCALL_STUB_SIZE).contains(&rip)
}

/// Where a refused `iret` test resumes (0 on the host).
fn iret_fail_label() -> u64 {
    #[cfg(target_os = "none")]
    {
        hcall_fuzz_iret_fail as *const () as u64
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// Where [`guarded`] resumes after a fault (0 on the host).
fn guard_recover_label() -> u64 {
    #[cfg(target_os = "none")]
    {
        hcall_fuzz_guard_recover as *const () as u64
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// The handler of every vector the kit's table covers: a refused `iret`
/// test resumes at its failure label; anything else is a fault the fuzzer
/// did not expect, reported as an error and survived by abandoning the
/// current iteration.
pub fn on_fault(ctx: &mut TrapContext) -> TrapAction {
    if ctx.vector == u64::from(vector::UD)
        && IRET_ACTIVE.load(Ordering::SeqCst)
        && in_iret_stub(ctx.rip)
    {
        ctx.rip = iret_fail_label();
        ctx.rsp = IRET_SAVED_RSP.load(Ordering::SeqCst);
        return TrapAction::Resume;
    }
    FAULTS.fetch_add(1, Ordering::Relaxed);
    println!(
        "hcall-fuzz: ERROR: unexpected {} at rip={:#x} cr2={:#x} error={:#x} rsp={:#x} in call {} (nr {})",
        ctx.vector_name(),
        ctx.rip,
        ctx.cr2,
        ctx.error_code,
        ctx.rsp,
        CURRENT_ITER.load(Ordering::Relaxed),
        CURRENT_NR.load(Ordering::Relaxed),
    );
    IRET_ACTIVE.store(false, Ordering::SeqCst);
    if GUARD_ACTIVE.load(Ordering::SeqCst) {
        ctx.rip = guard_recover_label();
        ctx.rsp = GUARD_RSP.load(Ordering::SeqCst);
        return TrapAction::Resume;
    }
    TrapAction::Unhandled
}

/// The kit's trap entry stubs by vector (the addresses its table installs),
/// for valid fuzzed trap tables.
pub fn kit_trap_entries() -> [u64; 32] {
    #[cfg(target_os = "none")]
    {
        extern "C" {
            /// Defined by pv-guest-kit's trap entry asm.
            static __pv_guest_kit_trap_entries: [u64; 32];
        }
        // SAFETY: the kit defines the table as 32 initialised quads in
        // read-only memory that nothing writes.
        unsafe { __pv_guest_kit_trap_entries }
    }
    #[cfg(not(target_os = "none"))]
    {
        [0; 32]
    }
}

/// The TSC (for a default seed).
pub fn rdtsc() -> u64 {
    #[cfg(target_os = "none")]
    {
        let (lo, hi): (u32, u32);
        // SAFETY: rdtsc only reads the TSC (CR4.TSD is clear for guests).
        unsafe {
            core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack));
        }
        (u64::from(hi) << 32) | u64::from(lo)
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}
