//! The hypercall dispatcher: decodes the number in rax and calls the handler
//! with the argument registers (rdi, rsi, rdx, r10, r8). Handlers return
//! `Result<u64, Errno>`; the result goes back in rax (SPEC.md §2).

mod console;
mod domctl;
mod sched_op;
mod traps;
mod version;

use hypercall_abi::{Errno, Hypercall};

use crate::arch::entry::TrapFrame;

pub use sched_op::{crash_current, shutdown_current};
pub use traps::{bounce_exception, guest_insn_bytes};

/// Called by the SYSCALL entry with the guest's saved registers.
pub extern "C" fn syscall_dispatch(frame: &mut TrapFrame) {
    let result = match Hypercall::from_number(frame.rax) {
        Some(Hypercall::Version) => version::version(frame.rdi),
        Some(Hypercall::ConsoleIo) => console::console_io(frame.rdi, frame.rsi, frame.rdx),
        Some(Hypercall::SchedOp) => sched_op::sched_op(frame.rdi, frame.rsi),
        Some(Hypercall::SetTrapTable) => traps::set_trap_table(frame.rdi, frame.rsi),
        Some(Hypercall::StackSwitch) => traps::stack_switch(frame.rdi),
        Some(Hypercall::SetCallbacks) => traps::set_callbacks(frame.rdi, frame.rsi, frame.rdx),
        Some(Hypercall::Iret) => match traps::iret(frame) {
            // The whole frame, rax included, now holds the restored context.
            Ok(()) => return,
            Err(e) => Err(e),
        },
        Some(Hypercall::Domctl) => domctl::domctl(frame.rdi, frame.rsi, frame.rdx),
        Some(Hypercall::BenchOp) => version::bench_op(frame.rdi),
        None => Err(Errno::ENOSYS),
    };
    frame.rax = match result {
        Ok(value) => value,
        Err(e) => e.to_return() as u64,
    };
}
