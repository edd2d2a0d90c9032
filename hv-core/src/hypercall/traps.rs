//! Trap tables, callbacks, `iret` and exception bouncing (HC-13 .. HC-16).

use alloc::format;
use alloc::string::String;

use hypercall_abi::layout::{is_guest_address, GUEST_CS, GUEST_RFLAGS_MASK, GUEST_SS, RFLAGS_IF};
use hypercall_abi::trap::{
    vector, ExceptionFrame, IretContext, TrapInfo, FRAME_FLAGS_ALL, FRAME_FLAG_USER_MODE,
    TRAP_FLAGS_ALL, TRAP_TABLE_MAX, TRAP_VECTORS,
};
use hypercall_abi::Errno;
use zerocopy::{FromZeros, IntoBytes};

use crate::arch::entry::TrapFrame;
use crate::domain::{Callbacks, TrapEntry, Vcpu, DOMAINS};
use crate::guest_memory::{copy_from_guest, read_obj, write_obj, GuestRange};
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
    if ctx.flags & FRAME_FLAG_USER_MODE != 0 {
        // Guest user mode arrives with the PV memory ABI.
        return Err(Errno::EINVAL);
    }
    frame.rax = ctx.rax;
    frame.r11 = ctx.r11;
    frame.rcx = ctx.rcx;
    frame.rip = ctx.rip;
    frame.cs = GUEST_CS;
    frame.rflags = guest_rflags(ctx.rflags);
    frame.rsp = ctx.rsp;
    frame.ss = GUEST_SS;
    with_current_vcpu(|vcpu| {
        vcpu.active_traps.pop();
    })?;
    Ok(())
}

/// Delivers exception `frame.vector` to the current vCPU's handler (HC-13).
/// `Err` carries the reason the domain must be crashed instead.
pub fn bounce_exception(frame: &mut TrapFrame, cr2: u64) -> Result<(), String> {
    let v = frame.vector as u8;
    let name = vector::name(v);
    let what = || {
        format!(
            "{name} at rip={:#x} rsp={:#x} error={:#x} cr2={cr2:#x}",
            frame.rip, frame.rsp, frame.error_code
        )
    };
    let id = sched::current().ok_or_else(|| String::from("no current vCPU"))?;
    let mut table = DOMAINS.lock();
    let vcpu = table
        .vcpu_mut(id)
        .ok_or_else(|| String::from("vCPU vanished"))?;
    let handler = vcpu.traps.get(usize::from(v)).map_or(0, |t| t.address);
    if handler == 0 {
        return Err(format!("{} with no handler registered", what()));
    }
    if vcpu.active_traps.contains(&v) {
        return Err(format!("{} inside its own {name} handler", what()));
    }
    let sp = (frame.rsp & !15).wrapping_sub(core::mem::size_of::<ExceptionFrame>() as u64);
    let exception = ExceptionFrame {
        error_code: frame.error_code,
        cr2,
        flags: 0,
        rip: frame.rip,
        cs: GUEST_CS,
        rflags: frame.rflags,
        rsp: frame.rsp,
        ss: GUEST_SS,
    };
    if write_obj(sp, &exception).is_err() {
        return Err(format!(
            "{}: its stack is not writable, cannot deliver",
            what()
        ));
    }
    if vcpu.active_traps.push(v).is_err() {
        return Err(format!("{}: exceptions nested too deeply", what()));
    }
    frame.rsp = sp;
    frame.rip = handler;
    frame.rflags = guest_rflags(frame.rflags & !RFLAGS_DF);
    Ok(())
}

/// Reads the two bytes at the guest's rip, if it can.
pub fn guest_insn_bytes(rip: u64) -> Option<[u8; 2]> {
    let mut b = [0u8; 2];
    copy_from_guest(&mut b, GuestRange::new(rip, 2).ok()?).ok()?;
    Some(b)
}
