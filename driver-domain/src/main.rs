//! Paravane's driver domain (domain 0).
//!
//! For now it announces itself, then waits for every other domain to end
//! (polling `domctl(DOMCTL_GET_INFO)` and yielding in between) and powers off —
//! which, holding `MACHINE_POWER`, ends the machine. Device drivers, backends
//! and the toolstack come later.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

use hypercall_abi::domctl::DOMAIN_STATE_RUNNING;
use hypercall_abi::sched::SHUTDOWN_POWEROFF;
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::{DomId, Errno};
use pv_guest_kit::hypercall::{domctl_get_info, sched_yield, shutdown};
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

fn kmain(si: &'static StartInfo) {
    println!(
        "driver domain up: Paravane ABI {}.{}, {} pages, capabilities {:#x}",
        si.abi_major, si.abi_minor, si.nr_pages, si.capabilities
    );
    loop {
        match other_domain_running(si.domid) {
            Ok(true) => sched_yield(),
            Ok(false) => {
                println!("driver: no guests left, powering off");
                shutdown(SHUTDOWN_POWEROFF);
            }
            Err(err) => panic!("driver: cannot list domains: {err}"),
        }
    }
}

/// Whether any domain other than `me` is still running (domains that shut
/// down or crashed but are not yet destroyed do not count).
fn other_domain_running(me: DomId) -> Result<bool, Errno> {
    let mut next: DomId = 0;
    loop {
        let info = match domctl_get_info(next) {
            Ok(info) => info,
            Err(Errno::ESRCH) => return Ok(false),
            Err(err) => return Err(err),
        };
        if info.domid != me && info.state == DOMAIN_STATE_RUNNING {
            return Ok(true);
        }
        match info.domid.checked_add(1) {
            Some(after) => next = after,
            None => return Ok(false),
        }
    }
}
