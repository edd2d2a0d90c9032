//! Paravane's driver domain (domain 0).
//!
//! For now it announces itself, then waits for every other domain to end and
//! powers off — which, holding `MACHINE_POWER`, ends the machine. It binds
//! `VIRQ_DOM_EXC` (raised whenever another domain shuts down or crashes) and
//! blocks between checks of `domctl(DOMCTL_GET_INFO)`, so it uses no CPU
//! while guests run. Device drivers, backends and the toolstack come later.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

extern crate alloc;

mod backend;

use hypercall_abi::domctl::DOMAIN_STATE_RUNNING;
use hypercall_abi::evtchn::VIRQ_DOM_EXC;
use hypercall_abi::sched::SHUTDOWN_POWEROFF;
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::{DomId, Errno};
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::hypercall::{domctl_get_info, shutdown};
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

fn kmain(si: &'static StartInfo) {
    println!(
        "driver domain up: Paravane ABI {}.{}, {} pages, capabilities {:#x}",
        si.abi_major, si.abi_minor, si.nr_pages, si.capabilities
    );
    let port = match events::bind_virq(VIRQ_DOM_EXC) {
        Ok(port) => port,
        Err(err) => panic!("driver: cannot bind VIRQ_DOM_EXC: {err}"),
    };
    // The event only wakes the wait below, which re-checks the domains.
    events::set_handler(port, domain_exception);
    let mut backends = backend::Backends::start(si);
    backends.run_until(|| match other_domain_running(si.domid) {
        Ok(running) => !running,
        Err(err) => panic!("driver: cannot list domains: {err}"),
    });
    println!("driver: no guests left, powering off");
    shutdown(SHUTDOWN_POWEROFF);
}

/// `VIRQ_DOM_EXC` handler: nothing to do, the wait re-checks.
fn domain_exception(_port: Port) {}

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
