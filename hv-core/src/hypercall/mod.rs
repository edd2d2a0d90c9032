//! The hypercall dispatcher: decodes the number in rax and calls the handler
//! with the argument registers (rdi, rsi, rdx, r10, r8). Handlers return
//! `Result<u64, Errno>`; the result goes back in rax (SPEC.md §2).

mod console;
mod domctl;
mod evtchn;
mod grant;
mod mm;
mod multicall;
mod physdev;
mod sched_op;
mod traps;
mod vcpu;
mod version;

use hypercall_abi::hypercall::HYPERCALL_SLOTS;
use hypercall_abi::{Errno, Hypercall};

use crate::arch::entry::TrapFrame;

pub use sched_op::{crash_current, shutdown_current};
pub use traps::{bounce_exception, deliver, guest_insn_bytes, user_syscall, Delivery};

type Handler = fn(&mut TrapFrame);

/// Slots of the dispatch table: every hypercall number (numbers are
/// reserved per feature, so the table may have gaps).
const NR_HANDLERS: usize = HYPERCALL_SLOTS as usize;

/// The handler of each hypercall, indexed by number. Built from the ABI's
/// table, so a hypercall added there without a handler here does not compile.
static HANDLERS: [Handler; NR_HANDLERS] = {
    let mut table: [Handler; NR_HANDLERS] = [no_such_hypercall; NR_HANDLERS];
    let mut i = 0;
    while i < Hypercall::ALL.len() {
        let h = Hypercall::ALL[i];
        table[h.number() as usize] = handler_for(h);
        i += 1;
    }
    table
};

const fn handler_for(h: Hypercall) -> Handler {
    match h {
        Hypercall::Version => |f| set_result(f, version::version(f.rdi)),
        Hypercall::ConsoleIo => |f| set_result(f, console::console_io(f.rdi, f.rsi, f.rdx)),
        Hypercall::SchedOp => |f| set_result(f, sched_op::sched_op(f.rdi, f.rsi)),
        Hypercall::SetTrapTable => |f| set_result(f, traps::set_trap_table(f.rdi, f.rsi)),
        Hypercall::StackSwitch => |f| set_result(f, traps::stack_switch(f.rdi)),
        Hypercall::SetCallbacks => |f| set_result(f, traps::set_callbacks(f.rdi, f.rsi, f.rdx)),
        // On success the whole frame, rax included, holds the restored context.
        Hypercall::Iret => |f| {
            if let Err(e) = traps::iret(f) {
                set_result(f, Err(e));
            }
        },
        Hypercall::Domctl => |f| set_result(f, domctl::domctl(f.rdi, f.rsi, f.rdx)),
        Hypercall::BenchOp => |f| set_result(f, version::bench_op(f.rdi)),
        Hypercall::MmuUpdate => |f| {
            let flow = mm::mmu_update(f, true);
            finish(f, flow)
        },
        Hypercall::UpdateVaMapping => |f| set_result(f, mm::update_va_mapping(f.rdi, f.rsi, f.rdx)),
        Hypercall::MmuextOp => |f| {
            let flow = mm::mmuext_op(f, true);
            finish(f, flow)
        },
        Hypercall::EvtchnOp => |f| set_result(f, evtchn::evtchn_op(f.rdi, f.rsi)),
        Hypercall::SetTimerOp => |f| set_result(f, sched_op::set_timer_op(f.rdi)),
        Hypercall::VcpuOp => |f| set_result(f, vcpu::vcpu_op(f.rdi, f.rsi, f.rdx)),
        Hypercall::GrantTableOp => |f| set_result(f, grant::grant_table_op(f.rdi, f.rsi, f.rdx)),
        Hypercall::DevbusOp => |f| set_result(f, crate::devbus::hypercall::devbus_op(f.rdi, f.rsi)),
        Hypercall::PhysdevOp => |f| set_result(f, physdev::physdev_op(f.rdi, f.rsi)),
        Hypercall::Multicall => |f| {
            let flow = multicall::multicall(f);
            finish(f, flow)
        },
    }
}

/// How a batched hypercall ended this entry into the hypervisor.
pub enum Flow {
    /// Finished with this result.
    Done(Result<u64, Errno>),
    /// The frame was set up to re-enter the hypercall (a continuation); it
    /// must not be touched.
    Continued,
}

fn finish(frame: &mut TrapFrame, flow: Flow) {
    if let Flow::Done(result) = flow {
        set_result(frame, result);
    }
}

/// Called by the SYSCALL entry instead of the dispatcher when the return rip
/// is 2^47 (XSA-7): a SYSCALL in the last two bytes below it. SYSRET there
/// would fault in ring 0 on the guest's stack (Intel), IRET there in ring 0
/// too. The call is not run (in kernel or user mode): the guest gets a #GP
/// (error code 0) at its `syscall` instruction (HC-5), or is crashed if it
/// cannot take one.
#[cold]
pub extern "C" fn syscall_at_end_of_lower_half(frame: &mut TrapFrame) {
    frame.vector = u64::from(hypercall_abi::trap::vector::GP);
    frame.error_code = 0;
    frame.rip = frame.rip.wrapping_sub(2);
    if let Err(reason) = bounce_exception(frame, 0) {
        crash_current(&reason);
    }
}

fn no_such_hypercall(frame: &mut TrapFrame) {
    set_result(frame, Err(Errno::ENOSYS));
}

#[inline(always)]
fn set_result(frame: &mut TrapFrame, result: Result<u64, Errno>) {
    frame.rax = match result {
        Ok(value) => value,
        Err(e) => e.to_return() as u64,
    };
}

/// Called by the SYSCALL entry with the guest's saved registers: one bounds
/// check and an indirect call, so each handler pays only for itself.
pub extern "C" fn syscall_dispatch(frame: &mut TrapFrame) {
    match usize::try_from(frame.rax)
        .ok()
        .and_then(|n| HANDLERS.get(n))
    {
        Some(handler) => handler(frame),
        None => no_such_hypercall(frame),
    }
}
