//! `multicall` (SPEC.md HC-20): runs a batch of hypercalls, each entry copied
//! in once and answered with its own result.

use hypercall_abi::multicall::{MulticallEntry, MULTICALL_MAX};
use hypercall_abi::{Errno, Hypercall};

use super::{mm, syscall_dispatch, Flow};
use crate::arch::entry::TrapFrame;
use crate::guest_memory::{read_obj, write_obj};

/// Entries run per entry into the hypervisor before a continuation.
const CHUNK: u64 = 64;
const ENTRY_SIZE: u64 = core::mem::size_of::<MulticallEntry>() as u64;

/// Runs one entry on `call`, a frame reused across the batch: handlers read
/// only the argument registers and write rax, so only those are set.
fn run_one(entry: &MulticallEntry, call: &mut TrapFrame) -> u64 {
    call.rax = entry.op;
    call.rdi = entry.args[0];
    call.rsi = entry.args[1];
    call.rdx = entry.args[2];
    call.r10 = entry.args[3];
    call.r8 = entry.args[4];
    let nested = match Hypercall::from_number(entry.op) {
        // A mode switch or a nested batch inside a batch is refused (XSA-213).
        Some(Hypercall::Multicall | Hypercall::Iret) => Flow::Done(Err(Errno::EINVAL)),
        Some(Hypercall::MmuUpdate) => mm::mmu_update(call, false),
        Some(Hypercall::MmuextOp) => mm::mmuext_op(call, false),
        _ => {
            syscall_dispatch(call);
            return call.rax;
        }
    };
    match nested {
        Flow::Done(Ok(v)) => v,
        Flow::Done(Err(e)) => e.to_return() as u64,
        Flow::Continued => Errno::EINVAL.to_return() as u64,
    }
}

/// `multicall(calls, count)`.
pub fn multicall(frame: &mut TrapFrame) -> Flow {
    let (calls, count) = (frame.rdi, frame.rsi);
    if count > MULTICALL_MAX {
        return Flow::Done(Err(Errno::E2BIG));
    }
    let n = count.min(CHUNK);
    let mut call = TrapFrame::default();
    for i in 0..n {
        let Some(va) = calls.checked_add(i * ENTRY_SIZE) else {
            return Flow::Done(Err(Errno::EFAULT));
        };
        let entry: MulticallEntry = match read_obj(va) {
            Ok(e) => e,
            Err(e) => return Flow::Done(Err(e)),
        };
        let result = run_one(&entry, &mut call);
        if let Err(e) = write_obj(va + 8, &result) {
            return Flow::Done(Err(e));
        }
    }
    if count > n {
        frame.rdi = calls.wrapping_add(n * ENTRY_SIZE);
        frame.rsi = count - n;
        mm::continue_hypercall(frame, Hypercall::Multicall);
        return Flow::Continued;
    }
    Flow::Done(Ok(0))
}
