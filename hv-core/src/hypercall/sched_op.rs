//! `sched_op` (HC-12): yield and shutdown; and crashing a domain.

use alloc::string::String;

use hypercall_abi::machine::{EXIT_DRIVER_DOMAIN_CRASHED, EXIT_POWEROFF, EXIT_REBOOT};
use hypercall_abi::sched::{
    shutdown_reason_name, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, SHUTDOWN_CRASH, SHUTDOWN_POWEROFF,
    SHUTDOWN_REBOOT,
};
use hypercall_abi::start_info::Capabilities;
use hypercall_abi::Errno;

use crate::domain::{DomainState, DOMAINS};
use crate::sched;

pub fn sched_op(cmd: u64, arg: u64) -> Result<u64, Errno> {
    match cmd {
        SCHEDOP_YIELD => {
            sched::yield_current();
            Ok(0)
        }
        SCHEDOP_SHUTDOWN => match arg {
            SHUTDOWN_POWEROFF | SHUTDOWN_REBOOT | SHUTDOWN_CRASH => shutdown_current(arg),
            _ => Err(Errno::EINVAL),
        },
        _ => Err(Errno::EINVAL),
    }
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
