//! `sched_op` (HC-12): yield and shutdown; and crashing a domain.

use alloc::string::String;

use hypercall_abi::machine::{EXIT_DRIVER_DOMAIN_CRASHED, EXIT_POWEROFF, EXIT_REBOOT};
use hypercall_abi::sched::{
    shutdown_reason_name, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, SHUTDOWN_CRASH, SHUTDOWN_POWEROFF,
    SHUTDOWN_REBOOT,
};
use hypercall_abi::start_info::Capabilities;
use hypercall_abi::Errno;

use hypercall_abi::sched::{SchedPoll, POLL_MAX_PORTS, SCHEDOP_BLOCK, SCHEDOP_POLL};
use zerocopy::IntoBytes;

use crate::domain::{DomainState, DOMAINS};
use crate::event::delivery::{enable_upcalls, is_pending, send_virq, EVENTS};
use crate::guest_memory::{copy_from_guest, read_obj, GuestRange};
use crate::sched;

pub fn sched_op(cmd: u64, arg: u64) -> Result<u64, Errno> {
    match cmd {
        SCHEDOP_YIELD => {
            sched::yield_current();
            Ok(0)
        }
        SCHEDOP_BLOCK => block(&[], 0),
        SCHEDOP_POLL => {
            let poll: SchedPoll = read_obj(arg)?;
            if poll.pad != 0 || poll.nr_ports == 0 {
                return Err(Errno::EINVAL);
            }
            if poll.nr_ports > POLL_MAX_PORTS {
                return Err(Errno::E2BIG);
            }
            let mut ports = [0u32; POLL_MAX_PORTS as usize];
            let wanted = &mut ports[..poll.nr_ports as usize];
            copy_from_guest(
                wanted.as_mut_bytes(),
                GuestRange::new(poll.ports, u64::from(poll.nr_ports) * 4)?,
            )?;
            block(wanted, poll.timeout)
        }
        SCHEDOP_SHUTDOWN => match arg {
            SHUTDOWN_POWEROFF | SHUTDOWN_REBOOT | SHUTDOWN_CRASH => shutdown_current(arg),
            _ => Err(Errno::EINVAL),
        },
        _ => Err(Errno::EINVAL),
    }
}

/// Blocks the current vCPU until an upcall is pending (`ports` empty) or one
/// of `ports` is pending (EVT-6).
fn block(ports: &[u32], deadline: u64) -> Result<u64, Errno> {
    let id = sched::current().ok_or(Errno::EINVAL)?;
    {
        let mut table = DOMAINS.lock();
        let events = EVENTS.lock();
        if ports.iter().any(|&p| !events.is_open(id.domid, p)) {
            return Err(Errno::EINVAL);
        }
        drop(events);
        let domain = table.domains.get_mut(&id.domid).ok_or(Errno::ESRCH)?;
        let timed_out = deadline != 0 && deadline <= crate::time::clock::now_ns();
        let ready = timed_out
            || if ports.is_empty() {
                enable_upcalls(domain, id.vcpu)
            } else {
                ports.iter().any(|&p| is_pending(domain, p))
            };
        if ready {
            return Ok(0);
        }
        let vcpu = domain.vcpus.get_mut(id.vcpu as usize).ok_or(Errno::ESRCH)?;
        vcpu.blocked = true;
        vcpu.poll_deadline = deadline;
        crate::time::clock::arm(deadline);
        vcpu.polling.clear();
        for &p in ports {
            let _ = vcpu.polling.push(p);
        }
    }
    sched::block_current();
    Ok(0)
}

/// `set_timer_op(deadline)` (TIME-2): VIRQ_TIMER for the calling vCPU once
/// system time reaches `deadline` ns; 0 cancels; a past deadline fires now.
pub fn set_timer_op(deadline: u64) -> Result<u64, Errno> {
    let id = sched::current().ok_or(Errno::EINVAL)?;
    let fire_now = deadline != 0 && deadline <= crate::time::clock::now_ns();
    {
        let mut table = DOMAINS.lock();
        let vcpu = table.vcpu_mut(id).ok_or(Errno::ESRCH)?;
        vcpu.timer_deadline = if fire_now { 0 } else { deadline };
        if !fire_now {
            crate::time::clock::arm(deadline);
        }
    }
    if fire_now {
        crate::event::delivery::send_vcpu_timer(id.domid, id.vcpu);
    }
    Ok(0)
}

/// Marks the current domain as ended with `state`, logs `what`, and ends the
/// machine if the domain holds `MACHINE_POWER`; returns otherwise.
fn end_current(state: DomainState, what: &str, machine_code: u32) {
    let Some(id) = sched::current() else { return };
    let power = {
        let mut table = DOMAINS.lock();
        let Some(domain) = table.domains.get_mut(&id.domid) else {
            return;
        };
        domain.state = state;
        domain.flush_console();
        log::info!("d{} '{}': {what}", domain.id, domain.name);
        domain.capabilities.contains(Capabilities::MACHINE_POWER)
    };
    // Its other vCPUs, wherever they run, stop at the kick.
    sched::kick_all_others();
    if id.domid != hypercall_abi::DOMID_DRIVER {
        send_virq(
            hypercall_abi::DOMID_DRIVER,
            hypercall_abi::evtchn::VIRQ_DOM_EXC,
        );
    }
    if power {
        crate::domain::audit_frames("before power off");
        log::info!("power off: the driver domain ended");
        crate::machine::exit(machine_code);
    }
}

/// Shuts the current domain down at its own request.
pub fn shutdown_current(reason: u64) -> ! {
    let mut what = String::from("shut down (");
    what.push_str(shutdown_reason_name(reason));
    what.push(')');
    let code = match reason {
        SHUTDOWN_REBOOT => EXIT_REBOOT,
        SHUTDOWN_CRASH => EXIT_DRIVER_DOMAIN_CRASHED,
        _ => EXIT_POWEROFF,
    };
    end_current(DomainState::Shutdown(reason), &what, code);
    sched::exit_current()
}

/// Kills the current domain for a fault it cannot handle.
pub fn crash_current(reason: &str) -> ! {
    let mut what = String::from("crashed: ");
    what.push_str(reason);
    end_current(DomainState::Crashed, &what, EXIT_DRIVER_DOMAIN_CRASHED);
    sched::exit_current()
}
