//! Trap tables, callbacks, `iret` and exception bouncing (HC-13 .. HC-16).

use alloc::format;
use alloc::string::String;

use hypercall_abi::layout::{is_guest_address, GUEST_CS, GUEST_RFLAGS_MASK, GUEST_SS, RFLAGS_IF};
use hypercall_abi::trap::{
    vector, ExceptionFrame, IretContext, TrapInfo, FRAME_FLAGS_ALL, FRAME_FLAG_SYSCALL,
    FRAME_FLAG_USER_MODE, TRAP_FLAGS_ALL, TRAP_TABLE_MAX, TRAP_VECTORS,
};
use hypercall_abi::Errno;
use zerocopy::{FromZeros, IntoBytes};

use crate::arch::cpu::write_cr3;
use crate::arch::entry::TrapFrame;
use crate::arch::percpu::set_guest_user_mode;
use crate::domain::{Callbacks, TrapEntry, Vcpu, DOMAINS};
use crate::guest_memory::{copy_from_guest, read_obj, write_obj, GuestRange};
use crate::hypercall::crash_current;
use crate::sched;

/// RFLAGS.DF: cleared on entry to a handler, as the SysV ABI expects.
const RFLAGS_DF: u64 = 1 << 10;
/// RFLAGS bit 1 is always set.
const RFLAGS_FIXED: u64 = 1 << 1;

fn with_current_vcpu<R>(f: impl FnOnce(&mut Vcpu) -> R) -> Result<R, Errno> {
    let id = sched::current().ok_or(Errno::EINVAL)?;
    let mut table = DOMAINS.lock();
    let vcpu = table.vcpu_mut(id).ok_or(Errno::ESRCH)?;
    Ok(f(vcpu))
}

/// Whether a guest-supplied code address is acceptable (0 = none).
fn valid_entry(address: u64) -> bool {
    address == 0 || is_guest_address(address)
}

/// The rflags a guest context gets: its arithmetic flags and DF, IF always on.
pub fn guest_rflags(requested: u64) -> u64 {
    (requested & GUEST_RFLAGS_MASK) | RFLAGS_IF | RFLAGS_FIXED
}

pub fn set_trap_table(table: u64, count: u64) -> Result<u64, Errno> {
    if count > TRAP_TABLE_MAX {
        return Err(Errno::E2BIG);
    }
    let mut entries = [TrapInfo::new_zeroed(); TRAP_VECTORS];
    let wanted = &mut entries[..count as usize];
    let bytes = wanted.as_mut_bytes();
    copy_from_guest(bytes, GuestRange::new(table, bytes.len() as u64)?)?;
    let mut traps = [TrapEntry::default(); TRAP_VECTORS];
    let mut seen = 0u32;
    for e in wanted.iter() {
        let v = e.vector;
        let never_bounced = matches!(v, vector::NMI | vector::DF | vector::MC);
        if usize::from(v) >= TRAP_VECTORS
            || never_bounced
            || e.flags & !TRAP_FLAGS_ALL != 0
            || e.reserved != [0; 6]
            || !valid_entry(e.address)
            || seen & (1 << v) != 0
        {
            return Err(Errno::EINVAL);
        }
        seen |= 1 << v;
        traps[usize::from(v)] = TrapEntry {
            address: e.address,
            flags: e.flags,
        };
    }
    with_current_vcpu(|vcpu| vcpu.traps = traps)?;
    Ok(0)
}

pub fn stack_switch(rsp: u64) -> Result<u64, Errno> {
    if rsp == 0 || !is_guest_address(rsp - 1) {
        return Err(Errno::EINVAL);
    }
    with_current_vcpu(|vcpu| vcpu.kernel_sp = rsp)?;
    Ok(0)
}

pub fn set_callbacks(event: u64, failsafe: u64, syscall: u64) -> Result<u64, Errno> {
    if !(valid_entry(event) && valid_entry(failsafe) && valid_entry(syscall)) {
        return Err(Errno::EINVAL);
    }
    with_current_vcpu(|vcpu| {
        vcpu.callbacks = Callbacks {
            event,
            failsafe,
            syscall,
        }
    })?;
    Ok(0)
}

/// Restores the context the guest left on its stack (HC-16). On success the
/// frame holds the new context, rax included.
pub fn iret(frame: &mut TrapFrame) -> Result<(), Errno> {
    let ctx: IretContext = read_obj(frame.rsp)?;
    if ctx.flags & !FRAME_FLAGS_ALL != 0 || !is_guest_address(ctx.rip) {
        return Err(Errno::EINVAL);
    }
    let to_user = ctx.flags & FRAME_FLAG_USER_MODE != 0;
    let id = sched::current().ok_or(Errno::EINVAL)?;
    let mut table = DOMAINS.lock();
    let vcpu = table.vcpu_mut(id).ok_or(Errno::ESRCH)?;
    let user_l4 = match (to_user, vcpu.user_l4) {
        (true, None) => return Err(Errno::EINVAL),
        (true, Some(l4)) => Some(l4),
        (false, _) => None,
    };
    frame.rax = ctx.rax;
    frame.r11 = ctx.r11;
    frame.rcx = ctx.rcx;
    frame.rip = ctx.rip;
    frame.cs = GUEST_CS;
    frame.rflags = guest_rflags(ctx.rflags);
    frame.rsp = ctx.rsp;
    frame.ss = GUEST_SS;
    if let Some(l4) = user_l4 {
        // Entering user mode: no kernel handler is running any more (MM-7).
        vcpu.active_traps.clear();
        vcpu.user_mode = true;
        set_guest_user_mode(true);
        // SAFETY: the user L4 holds a base-pointer reference, so it is a
        // validated L4 carrying the hypervisor's slots.
        unsafe { write_cr3(l4 << 12) };
    } else {
        vcpu.active_traps.pop();
    }
    Ok(())
}

/// Enters guest kernel code at `handler` with an `ExceptionFrame` describing
/// the interrupted context: on the interrupted stack in kernel mode, on the
/// `stack_switch` stack (after switching to kernel mode) in user mode.
/// Marks an event upcall among the running handlers (not an exception vector).
pub const EVENT_MARKER: u8 = 0xff;

/// What is being delivered to the guest kernel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Exception `vector` (HC-13).
    Exception(u8),
    /// A system call from guest user mode (MM-7).
    Syscall,
    /// An event upcall (EVT-5).
    Event,
}

pub fn deliver(
    vcpu: &mut Vcpu,
    frame: &mut TrapFrame,
    handler: u64,
    kind: Delivery,
    cr2: u64,
) -> Result<(), String> {
    let from_user = vcpu.user_mode;
    let mut flags = 0;
    let base = if from_user {
        if vcpu.kernel_sp == 0 {
            return Err(String::from(
                "trap from user mode with no kernel stack (stack_switch)",
            ));
        }
        flags |= FRAME_FLAG_USER_MODE;
        // Kernel mode first: the kernel stack is in the kernel's address space.
        vcpu.user_mode = false;
        vcpu.active_traps.clear();
        set_guest_user_mode(false);
        // SAFETY: the kernel L4 holds a base-pointer reference (validated).
        unsafe { write_cr3(vcpu.active_cr3()) };
        vcpu.kernel_sp
    } else {
        frame.rsp
    };
    if kind == Delivery::Syscall {
        flags |= FRAME_FLAG_SYSCALL;
    }
    let sp = (base & !15).wrapping_sub(core::mem::size_of::<ExceptionFrame>() as u64);
    let record = ExceptionFrame {
        error_code: match kind {
            Delivery::Exception(_) => frame.error_code,
            Delivery::Syscall | Delivery::Event => 0,
        },
        cr2,
        flags,
        rip: frame.rip,
        cs: GUEST_CS,
        rflags: frame.rflags,
        rsp: frame.rsp,
        ss: GUEST_SS,
    };
    if write_obj(sp, &record).is_err() {
        return Err(format!(
            "its kernel stack at {sp:#x} is not writable, cannot deliver"
        ));
    }
    // Every delivery but a user syscall (which returns to user mode) is
    // matched by one `iret`, which pops it.
    let marker = match kind {
        Delivery::Exception(v) => Some(v),
        Delivery::Event => Some(EVENT_MARKER),
        Delivery::Syscall => None,
    };
    if let Some(v) = marker {
        if vcpu.active_traps.push(v).is_err() {
            return Err(String::from("exceptions nested too deeply"));
        }
    }
    frame.rsp = sp;
    frame.rip = handler;
    frame.rflags = guest_rflags(frame.rflags & !RFLAGS_DF);
    Ok(())
}

/// Delivers exception `frame.vector` to the current vCPU's handler (HC-13,
/// MM-7). `Err` carries the reason the domain must be crashed instead.
pub fn bounce_exception(frame: &mut TrapFrame, cr2: u64) -> Result<(), String> {
    let v = frame.vector as u8;
    let name = vector::name(v);
    let what = format!(
        "{name} at rip={:#x} rsp={:#x} error={:#x} cr2={cr2:#x}",
        frame.rip, frame.rsp, frame.error_code
    );
    let id = sched::current().ok_or_else(|| String::from("no current vCPU"))?;
    let mut table = DOMAINS.lock();
    let vcpu = table
        .vcpu_mut(id)
        .ok_or_else(|| String::from("vCPU vanished"))?;
    let handler = vcpu.traps.get(usize::from(v)).map_or(0, |t| t.address);
    let mode = if vcpu.user_mode { " in user mode" } else { "" };
    if handler == 0 {
        return Err(format!("{what}{mode} with no handler registered"));
    }
    if !vcpu.user_mode && vcpu.active_traps.contains(&v) {
        return Err(format!("{what} inside its own {name} handler"));
    }
    deliver(vcpu, frame, handler, Delivery::Exception(v), cr2)
        .map_err(|why| format!("{what}{mode}: {why}"))
}

/// A SYSCALL from guest user mode (MM-7): entered by the SYSCALL path instead
/// of the hypercall dispatcher while the vCPU is in user mode.
pub extern "C" fn user_syscall(frame: &mut TrapFrame) {
    let delivered = (|| {
        let id = sched::current().ok_or_else(|| String::from("no current vCPU"))?;
        let mut table = DOMAINS.lock();
        let vcpu = table
            .vcpu_mut(id)
            .ok_or_else(|| String::from("vCPU vanished"))?;
        match vcpu.callbacks.syscall {
            0 => Ok(false),
            callback => deliver(vcpu, frame, callback, Delivery::Syscall, 0)
                .map(|()| true)
                .map_err(|why| format!("syscall in user mode at rip={:#x}: {why}", frame.rip)),
        }
    })();
    let outcome = match delivered {
        Ok(true) => Ok(()),
        // No syscall callback: the instruction is undefined for this guest.
        Ok(false) => {
            frame.vector = u64::from(vector::UD);
            frame.error_code = 0;
            bounce_exception(frame, 0)
        }
        Err(why) => Err(why),
    };
    if let Err(reason) = outcome {
        crash_current(&reason);
    }
}

/// Reads the two bytes at the guest's rip, if it can.
pub fn guest_insn_bytes(rip: u64) -> Option<[u8; 2]> {
    let mut b = [0u8; 2];
    copy_from_guest(&mut b, GuestRange::new(rip, 2).ok()?).ok()?;
    Some(b)
}
