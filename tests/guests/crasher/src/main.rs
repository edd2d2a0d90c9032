//! `crasher`: exercises exception bouncing (HC-13, HC-16), then dies.
//!
//! 1. A #PF on an unmapped address is caught and resumed past.
//! 2. A #DE (divide by zero) is caught and resumed past.
//! 3. A #PF handler that itself faults: the hypervisor must kill the domain
//!    ("fault inside its own handler"). Surviving that is an error.
//!
//! With `mode=no-handler` it instead removes every handler and executes `ud2`:
//! the hypervisor must kill it for an exception it cannot deliver.
//!
//! It yields between steps so that other domains run in between.
//!
//! The faulting sequences put their resume address in rbx; the handlers resume
//! with `ctx.rip = ctx.rbx`.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::sched::SHUTDOWN_POWEROFF;
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::trap::vector;
use pv_guest_kit::hypercall::{sched_yield, shutdown};
use pv_guest_kit::println;
use pv_guest_kit::traps::{self, TrapAction, TrapContext};

pv_guest_kit::entry!(kmain);

/// Unmapped address of the first fault.
const FIRST_FAULT: u64 = 0xdead_0000;
/// Unmapped address the faulting handler touches.
const HANDLER_FAULT: u64 = 0x0bad_0000;

/// How many exceptions the resuming handlers caught.
static CAUGHT: AtomicU64 = AtomicU64::new(0);

fn kmain(si: &'static StartInfo) {
    let args = pv_guest_kit::cmdline::Args::new(si.cmdline_str());
    if args.get("mode") == Some("no-handler") {
        traps::clear_table().expect("set_trap_table refused an empty table");
        println!("crasher: no handlers left, executing ud2");
        arch::undefined_instruction();
        println!("crasher: ERROR still alive");
        shutdown(SHUTDOWN_POWEROFF);
    }

    // 1. #PF, resumed.
    traps::set_handler(vector::PF, resume_page_fault);
    arch::load_resuming(FIRST_FAULT);
    assert_eq!(
        CAUGHT.load(Ordering::Relaxed),
        1,
        "the #PF handler did not run"
    );
    println!("crasher: resumed after #PF");
    sched_yield();

    // 2. #DE, resumed.
    traps::set_handler(vector::DE, resume_divide_error);
    arch::divide_by_zero_resuming();
    assert_eq!(
        CAUGHT.load(Ordering::Relaxed),
        2,
        "the #DE handler did not run"
    );
    println!("crasher: resumed after #DE");
    sched_yield();

    // 3. A fault inside the #PF handler: the hypervisor kills the domain.
    traps::set_handler(vector::PF, fault_again);
    println!("crasher: faulting inside the #PF handler now");
    arch::load_resuming(FIRST_FAULT);
    println!("crasher: ERROR still alive");
    shutdown(SHUTDOWN_POWEROFF);
}

fn resume_page_fault(ctx: &mut TrapContext) -> TrapAction {
    println!("crasher: caught #PF at cr2={:#x}, resuming", ctx.cr2);
    if ctx.cr2 != FIRST_FAULT {
        return TrapAction::Unhandled;
    }
    CAUGHT.fetch_add(1, Ordering::Relaxed);
    ctx.rip = ctx.rbx;
    TrapAction::Resume
}

fn resume_divide_error(ctx: &mut TrapContext) -> TrapAction {
    println!("crasher: caught #DE at rip={:#x}, resuming", ctx.rip);
    CAUGHT.fetch_add(1, Ordering::Relaxed);
    ctx.rip = ctx.rbx;
    TrapAction::Resume
}

fn fault_again(_ctx: &mut TrapContext) -> TrapAction {
    arch::load_resuming(HANDLER_FAULT);
    TrapAction::Resume
}

/// The faulting instruction sequences (kernel target only).
#[cfg(target_os = "none")]
mod arch {
    use core::arch::asm;

    /// Loads a u64 from `addr` with rbx = the address after the load, so a
    /// #PF handler can resume past it; rbx is restored afterwards.
    pub fn load_resuming(addr: u64) {
        // SAFETY: the load targets an address the domain does not map; it
        // only faults, writing nothing. rbx (which LLVM may reserve) is saved
        // in a scratch register and restored; rax is declared clobbered.
        unsafe {
            asm!(
                "mov {saved}, rbx",
                "lea rbx, [rip + 2f]",
                "mov rax, qword ptr [{addr}]",
                "2:",
                "mov rbx, {saved}",
                addr = in(reg) addr,
                saved = out(reg) _,
                out("rax") _,
                options(nostack),
            );
        }
    }

    /// Executes `ud2`.
    pub fn undefined_instruction() {
        // SAFETY: ud2 only raises #UD; it touches no memory or register.
        unsafe { asm!("ud2", options(nomem, nostack)) };
    }

    /// Divides by zero (`div ecx` with ecx = 0) with rbx = the address after
    /// the `div`, so a #DE handler can resume past it.
    pub fn divide_by_zero_resuming() {
        // SAFETY: `div` touches only the declared registers; rbx is saved and
        // restored as in `load_resuming`.
        unsafe {
            asm!(
                "mov {saved}, rbx",
                "lea rbx, [rip + 2f]",
                "xor eax, eax",
                "xor edx, edx",
                "xor ecx, ecx",
                "div ecx",
                "2:",
                "mov rbx, {saved}",
                saved = out(reg) _,
                out("rax") _,
                out("rcx") _,
                out("rdx") _,
                options(nomem, nostack),
            );
        }
    }
}

/// Host stand-ins: the guest never runs on the host.
#[cfg(not(target_os = "none"))]
mod arch {
    pub fn load_resuming(addr: u64) {
        unreachable!("load from {addr:#x}: crasher only runs under Paravane")
    }

    pub fn divide_by_zero_resuming() {
        unreachable!("crasher only runs under Paravane")
    }

    pub fn undefined_instruction() {
        unreachable!("crasher only runs under Paravane")
    }
}
