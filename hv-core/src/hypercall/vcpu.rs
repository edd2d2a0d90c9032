//! `vcpu_op` (HC-21): secondary vCPUs of the calling domain — initialise,
//! up, down, is_up — and their run state.

use hypercall_abi::layout::{is_guest_address, GUEST_CS, GUEST_SS, RFLAGS_IF};
use hypercall_abi::vcpu::{
    VcpuContext, VcpuRunstate, RUNSTATE_BLOCKED, RUNSTATE_DOWN, RUNSTATE_RUNNABLE,
    RUNSTATE_RUNNING, VCPUOP_DOWN, VCPUOP_GET_RUNSTATE, VCPUOP_INITIALISE, VCPUOP_IS_UP, VCPUOP_UP,
};
use hypercall_abi::Errno;

use crate::arch::entry::TrapFrame;
use crate::arch::switch::prepare_initial_stack;
use crate::domain::{VcpuId, DOMAINS};
use crate::guest_memory::{read_obj, write_obj};
use crate::mm::live::with_page_tables;
use crate::sched;

pub fn vcpu_op(cmd: u64, vcpu: u64, arg: u64) -> Result<u64, Errno> {
    let me = sched::current().ok_or(Errno::EINVAL)?;
    let target = VcpuId {
        domid: me.domid,
        vcpu: u32::try_from(vcpu).map_err(|_| Errno::EINVAL)?,
    };
    match cmd {
        VCPUOP_INITIALISE => initialise(me, target, read_obj(arg)?),
        VCPUOP_UP => up(target),
        VCPUOP_DOWN => down(me, target),
        VCPUOP_IS_UP => {
            let mut table = DOMAINS.lock();
            let v = table.vcpu_mut(target).ok_or(Errno::EINVAL)?;
            Ok(u64::from(v.up))
        }
        VCPUOP_GET_RUNSTATE => {
            let state = {
                let mut table = DOMAINS.lock();
                let v = table.vcpu_mut(target).ok_or(Errno::EINVAL)?;
                VcpuRunstate {
                    cpu_time_ns: v.cpu_time_ns + sched::unaccounted_ns(target),
                    pcpu: v.cpu,
                    state: if !v.up {
                        RUNSTATE_DOWN
                    } else if v.claimed {
                        RUNSTATE_RUNNING
                    } else if v.blocked {
                        RUNSTATE_BLOCKED
                    } else {
                        RUNSTATE_RUNNABLE
                    },
                }
            };
            write_obj(arg, &state)?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

fn initialise(me: VcpuId, target: VcpuId, ctx: VcpuContext) -> Result<u64, Errno> {
    if ctx.flags != 0 || !is_guest_address(ctx.rip) || !is_guest_address(ctx.rsp) {
        return Err(Errno::EINVAL);
    }
    let mut table = DOMAINS.lock();
    let domain = table.domains.get_mut(&me.domid).ok_or(Errno::ESRCH)?;
    let caller = domain.vcpus.get(me.vcpu as usize).ok_or(Errno::ESRCH)?;
    let (traps, callbacks, kernel_sp) = (caller.traps, caller.callbacks, caller.kernel_sp);
    let vcpu_info = domain.vcpu_info_va(target.vcpu);
    let v = domain
        .vcpus
        .get_mut(target.vcpu as usize)
        .ok_or(Errno::EINVAL)?;
    if v.initialised {
        return Err(Errno::EEXIST);
    }
    // The new base pointer replaces the placeholder reference the builder
    // gave the down vCPU.
    with_page_tables(|pt| {
        pt.get_baseptr(ctx.kernel_l4, me.domid)
            .map_err(|e| e.errno())?;
        pt.put_baseptr(core::mem::replace(&mut v.kernel_l4, ctx.kernel_l4));
        Ok(())
    })
    .unwrap_or(Err(Errno::EINVAL))?;
    v.traps = traps;
    v.callbacks = callbacks;
    v.kernel_sp = kernel_sp;
    v.user_l4 = None;
    v.user_mode = false;
    let frame = TrapFrame {
        rip: ctx.rip,
        rsp: ctx.rsp,
        rdi: ctx.arg0,
        rsi: ctx.arg1,
        cs: GUEST_CS,
        ss: GUEST_SS,
        rflags: RFLAGS_IF | 0x2,
        ..TrapFrame::default()
    };
    // SAFETY: the vCPU has never run (not initialised), so no pCPU uses its
    // stack; the stack is 16 KiB, 16-byte aligned, owned by the vCPU.
    v.saved_rsp = unsafe { prepare_initial_stack(v.kstack_top(), &frame) };
    v.initialised = true;
    crate::event::delivery::set_upcall_mask(vcpu_info, true);
    Ok(0)
}

fn up(target: VcpuId) -> Result<u64, Errno> {
    let mut table = DOMAINS.lock();
    let v = table.vcpu_mut(target).ok_or(Errno::EINVAL)?;
    if !v.initialised {
        return Err(Errno::EINVAL);
    }
    if !v.up {
        v.up = true;
        v.blocked = false;
        sched::make_runnable(target, v.cpu);
    }
    Ok(0)
}

fn down(me: VcpuId, target: VcpuId) -> Result<u64, Errno> {
    if target.vcpu == 0 {
        return Err(Errno::EINVAL);
    }
    let cpu = {
        let mut table = DOMAINS.lock();
        let v = table.vcpu_mut(target).ok_or(Errno::EINVAL)?;
        if !v.up {
            return Ok(0);
        }
        v.up = false;
        v.blocked = true;
        v.claimed.then_some(v.cpu)
    };
    if target == me {
        // Returns once `up` runs it again.
        sched::block_current();
    } else if let Some(cpu) = cpu {
        // It runs elsewhere: it parks on the kick.
        sched::kick(cpu as usize);
    }
    Ok(0)
}
