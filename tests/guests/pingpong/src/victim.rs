//! The grant-attacker's victim: grants it one read-only page (reference 0,
//! every word [`RO_PATTERN`]) and one read-write page (reference 1, the
//! mailbox), allocates port 1 for it, and then follows the attacker's
//! stages through the mailbox:
//!
//! | stage (attacker) | victim does | ack |
//! |---|---|---|
//! | 1: ref 0 is mapped | `end_access(0)` must fail (in use) | 1 |
//! | 2: ref 0 unmapped | `end_access(0)` must succeed | 2 |
//! | 3: event flood sent | reports it still works, checks ref 0's page | 3 |
//!
//! after which it ends the mailbox grant once the attacker has unmapped it,
//! and frees its pages once the attacker has gone (its end of the port
//! closes when it ends).
//! The attacker's side is `tests/guests/grant-attacker`; the two share this
//! layout by convention.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::evtchn::EVTCHNSTAT_INTERDOMAIN;
use hypercall_abi::DomId;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants::{GrantRef, GrantTable};
use pv_guest_kit::hypercall::sched_yield;
use pv_guest_kit::mm::Frame;
use pv_guest_kit::println;
use pv_guest_kit::ring::SharedPage;

/// Every word of the read-only page.
pub const RO_PATTERN: u64 = 0x5a5a_0000_0000_a5a5;
/// Mailbox offsets: the attacker's stage, the victim's ack.
const STAGE: usize = 0;
const ACK: usize = 8;

/// Events received on the attacker's port.
static RECEIVED: AtomicU64 = AtomicU64::new(0);

fn count(_port: Port) {
    RECEIVED.fetch_add(1, Ordering::Relaxed);
}

pub fn run(peer: DomId) {
    let mut ro = Frame::alloc().unwrap_or_else(|err| panic!("victim: frame: {err}"));
    for i in 0..512 {
        ro.write_u64(i, RO_PATTERN);
    }
    let rw = Frame::alloc_zeroed().unwrap_or_else(|err| panic!("victim: frame: {err}"));
    let mut table = GrantTable::setup(1).unwrap_or_else(|err| panic!("victim: grant table: {err}"));
    let ro_ref = grant(&mut table, peer, ro.mfn(), true);
    let rw_ref = grant(&mut table, peer, rw.mfn(), false);
    let port = events::alloc_unbound(peer).unwrap_or_else(|err| panic!("victim: port: {err}"));
    assert!(
        (ro_ref, rw_ref, port) == (0, 1, 1),
        "victim: got refs {ro_ref}/{rw_ref} and port {port}, the attacker expects 0/1 and 1"
    );
    events::set_handler(port, count);
    let mailbox = SharedPage::from_frame(rw);
    println!(
        "grant-victim: granted ref {ro_ref} read-only and ref {rw_ref} read-write to d{peer}, port {port}"
    );

    // Stage 1: the attacker maps ref 0; ending the grant must fail.
    events::wait_until(|| mailbox.load_u64(STAGE) >= 1);
    match table.end_access(ro_ref) {
        Err(_) => println!("grant-victim: end_access of a mapped grant: refused (in use)"),
        Ok(()) => panic!("grant-victim: end_access of a mapped grant was ACCEPTED"),
    }
    ack(&mailbox, port, 1);

    // Stage 2: unmapped; ending it must work now.
    events::wait_until(|| mailbox.load_u64(STAGE) >= 2);
    end(&mut table, ro_ref);
    println!("grant-victim: end_access after the attacker unmapped: ok");
    ack(&mailbox, port, 2);

    // Stage 3: after the event flood.
    events::wait_until(|| mailbox.load_u64(STAGE) >= 3);
    let intact = (0..512).all(|i| ro.read_u64(i) == RO_PATTERN);
    assert!(intact, "grant-victim: the read-only page was modified");
    println!(
        "grant-victim: still working after the event flood ({} events in {} upcalls), read-only page intact",
        RECEIVED.load(Ordering::Relaxed),
        events::upcalls()
    );
    ack(&mailbox, port, 3);

    // The attacker unmaps the mailbox and leaves; its end of the port goes
    // with it (EVT-4). Only then are the pages it used freed: a mapper must
    // not outlive its access to what it mapped.
    end(&mut table, rw_ref);
    wait_for_departure(port);
    let _ = events::close(port);
    if let Err((_, err)) = table.teardown() {
        panic!("grant-victim: dropping the grant table: {err}");
    }
    println!("grant-victim: all grants ended, done");
}

fn grant(table: &mut GrantTable, peer: DomId, mfn: u64, readonly: bool) -> GrantRef {
    table
        .grant_access(peer, mfn, readonly)
        .unwrap_or_else(|err| panic!("victim: granting: {err}"))
}

/// Ends grant `gref`, waiting (yielding) while the attacker still maps it.
fn end(table: &mut GrantTable, gref: GrantRef) {
    let mut tries = 0u32;
    while table.end_access(gref).is_err() {
        tries += 1;
        assert!(
            tries < 100_000,
            "grant-victim: grant {gref} still in use after {tries} tries"
        );
        sched_yield();
    }
}

/// Waits (yielding: a departing domain sends no event) until the attacker's
/// end of `port` is gone.
fn wait_for_departure(port: Port) {
    let mut tries = 0u32;
    while events::status(port).is_ok_and(|s| s.status == EVTCHNSTAT_INTERDOMAIN) {
        tries += 1;
        assert!(tries < 1_000_000, "grant-victim: the attacker never left");
        sched_yield();
    }
}

/// Acknowledges stage `n` and wakes the attacker.
fn ack(mailbox: &SharedPage, port: Port, n: u64) {
    mailbox.store_u64(ACK, n);
    if let Err(err) = events::notify(port) {
        panic!("grant-victim: notifying the attacker: {err}");
    }
}
