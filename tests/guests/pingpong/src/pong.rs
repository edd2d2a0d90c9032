//! The backend: binds to the peer's port, maps its ring page and answers
//! requests until it has answered `count`, publishing a batch at a time and
//! blocking when the ring is empty. With `die_after=<n>` it crashes on
//! purpose (no trap handlers, then `ud2`) right after publishing its n-th
//! response, still holding the mapping and the port.
//!
//! It leaves its port open when it ends: the port closes with the domain
//! (EVT-4), and the frontend waits for that before it reclaims the page.

use hypercall_abi::DomId;
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::events;
use pv_guest_kit::mm::reserve_va;
use pv_guest_kit::println;
use pv_guest_kit::ring::{Backend, SharedPage};
use pv_guest_kit::traps;

use crate::ping::{RING_GREF, RING_PORT};
use crate::proto::{fold, respond, Request, Response, CHECKSUM_INIT};
use crate::{bind_to, map_from, number, wake};

pub fn run(args: &Args<'_>, peer: DomId) {
    let count = number(args, "count", Some(100_000));
    let peer_port = number(args, "peer_port", Some(u64::from(RING_PORT))) as u32;
    let gref = number(args, "gref", Some(u64::from(RING_GREF))) as u32;
    let die_after = args
        .get("die_after")
        .map(|_| number(args, "die_after", None));

    let port = bind_to(peer, peer_port);
    events::set_handler(port, wake);
    let va = reserve_va(1).unwrap_or_else(|err| panic!("pong: address space: {err}"));
    let mapping = map_from(peer, gref, va.start(), false);
    let mut back = Backend::<Request, Response>::attach(SharedPage::from_mapping(mapping), port)
        .unwrap_or_else(|err| panic!("pong: ring: {err}"));
    println!(
        "pong: connected to d{peer} port {peer_port} (local {port}), ring ref {gref} mapped at {:#x}",
        va.start()
    );
    // Tell the frontend we are there.
    if let Err(err) = events::notify(port) {
        panic!("pong: notifying the peer: {err}");
    }

    let mut handled = 0u64;
    let mut checksum = CHECKSUM_INIT;
    while handled < count {
        loop {
            let req = match back.take() {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(err) => panic!("pong: the peer broke the ring: {err}"),
            };
            let rsp = respond(&req);
            if let Err(err) = back.push(&rsp) {
                panic!("pong: pushing a response: {err}");
            }
            checksum = fold(checksum, &rsp);
            handled += 1;
            if die_after == Some(handled) {
                publish(&mut back);
                println!("pong: dying on purpose after {handled} messages");
                die();
            }
            if handled == count {
                break;
            }
        }
        publish(&mut back);
        if handled < count {
            if let Err(err) = back.wait() {
                panic!("pong: the peer broke the ring: {err}");
            }
        }
    }
    println!(
        "pong: {handled} messages, checksum {checksum:#018x} ({} notifications sent)",
        back.notifications()
    );
    let mapping = back
        .into_page()
        .into_mapping()
        .unwrap_or_else(|| unreachable!("the ring page is a grant mapping"));
    if let Err((_, err)) = mapping.unmap() {
        panic!("pong: unmapping the ring: {err}");
    }
    // The port closes when this domain ends (EVT-4): that is how the
    // frontend learns that the backend is gone.
    println!("pong: ring unmapped");
}

/// Publishes the pushed responses (notifying the frontend if it waits).
fn publish(back: &mut Backend<Request, Response>) {
    if let Err(err) = back.publish() {
        panic!("pong: notifying the peer: {err}");
    }
}

/// Crashes the domain for real: no trap handler is left, so the hypervisor
/// kills it for the `ud2` (HC-13 rule 1).
fn die() -> ! {
    pv_guest_kit::console::flush();
    if let Err(err) = traps::clear_table() {
        panic!("pong: removing the trap handlers: {err}");
    }
    arch::undefined_instruction();
    panic!("pong: still alive after ud2");
}

#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod arch {
    /// `ud2`.
    pub fn undefined_instruction() {
        // SAFETY: `ud2` only raises #UD; with no handler the hypervisor ends
        // the domain, so nothing after it runs.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) }
    }
}

#[cfg(not(target_os = "none"))]
mod arch {
    pub fn undefined_instruction() {
        unreachable!("pingpong only runs under Paravane")
    }
}
