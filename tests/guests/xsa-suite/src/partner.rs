//! The second domain of the two-domain tests: this image booted with
//! `role=<role> peer=<domid> report=<name>`. A partner is the *victim*
//! (or a hostile peer) and reports its own result line under `report`,
//! which its scenario requires too.
//!
//! - `granter`: grants [`RO_REF`] (a read-only page, every word
//!   [`RO_PATTERN`]), [`MAILBOX_REF`] (read-write, the mailbox below) and
//!   [`DATA_REF`] (read-write, every word [`DATA_PATTERN`]); allocates
//!   port 1 for the peer; then serves mailbox requests until the peer has
//!   gone. Finally every grant must end at once (nothing left in use), the
//!   read-only page must be intact, the table must go.
//! - `sender`: allocates port 1 for the peer, waits for the peer's "go"
//!   event, then sends on it until the peer has gone: every send must
//!   succeed (delivered, or dropped while the peer's end is closed).
//! - `ticker`: measures its own progress (largest gap between loop
//!   iterations) while the peer runs and ends, and requires the gap to
//!   stay under [`MAX_GAP_MS`].
//!
//! Mailbox words (u64): 0 request sequence `[TEST]`, 1 command `[TEST]`,
//! 2 argument `[TEST]`, 3 reply sequence `[PARTNER]`, 4 reply `[PARTNER]`.

use core::sync::atomic::{AtomicBool, Ordering};

use alloc::vec::Vec;
use hypercall_abi::evtchn::EVTCHNSTAT_INTERDOMAIN;
use hypercall_abi::{DomId, Errno};
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants::{GrantRef, GrantTable};
use pv_guest_kit::hypercall::sched_yield;
use pv_guest_kit::mm::Frame;
use pv_guest_kit::ring::SharedPage;
use pv_guest_kit::testing::TestReport;

/// The granter's read-only grant and its pattern.
pub const RO_REF: GrantRef = 0;
pub const RO_PATTERN: u64 = 0x5a5a_0000_0000_a5a5;
/// The mailbox grant.
pub const MAILBOX_REF: GrantRef = 1;
/// The read-write data grant and its pattern.
pub const DATA_REF: GrantRef = 2;
pub const DATA_PATTERN: u64 = 0xda7a_0000_da7a_0000;
/// The partner's port for the peer.
pub const PARTNER_PORT: Port = 1;
/// Mailbox word offsets.
pub const REQ_SEQ: usize = 0;
pub const REQ_CMD: usize = 8;
pub const REQ_ARG: usize = 16;
pub const REPLY_SEQ: usize = 24;
pub const REPLY: usize = 32;
/// Mailbox command: end grant `arg`; reply 0 = ended, 1 = still in use.
pub const CMD_END_ACCESS: u64 = 1;
/// Largest acceptable gap in a ticker's progress.
pub const MAX_GAP_MS: u64 = 200;

/// Runs partner `role`.
pub fn run(role: &str, args: &Args<'static>) {
    let peer = args.get_u64("peer").unwrap_or(1) as DomId;
    let name = args.get("report").unwrap_or("partner");
    let mut r = TestReport::new(name);
    match role {
        "granter" => granter(&mut r, peer),
        "sender" => sender(&mut r, peer, args.get_u64("yield").unwrap_or(1) != 0),
        "bad-backend" => bad_backend(&mut r, peer),
        "ticker" => ticker(&mut r, peer),
        other => r.error(format_args!("unknown role {other}")),
    }
    r.finish()
}

static WOKEN: AtomicBool = AtomicBool::new(false);

fn wake(_port: Port) {
    WOKEN.store(true, Ordering::SeqCst);
}

/// Whether the peer's end of `port` has gone (it was connected before).
fn peer_gone(port: Port) -> bool {
    events::status(port).map_or(true, |s| s.status != EVTCHNSTAT_INTERDOMAIN)
}

/// Waits until the peer has bound `port`.
fn wait_connected(port: Port) -> bool {
    for _ in 0..1_000_000 {
        if events::status(port).is_ok_and(|s| s.status == EVTCHNSTAT_INTERDOMAIN) {
            return true;
        }
        sched_yield();
    }
    false
}

fn granter(r: &mut TestReport, peer: DomId) {
    let Some(mut ro) = r.setup("a frame", Frame::alloc()) else {
        return;
    };
    let Some(mut data) = r.setup("a frame", Frame::alloc()) else {
        return;
    };
    for i in 0..512 {
        ro.write_u64(i, RO_PATTERN);
        data.write_u64(i, DATA_PATTERN);
    }
    let Some(mailbox) = r.setup("a frame", Frame::alloc_zeroed()) else {
        return;
    };
    let Some(mut table) = r.setup("a grant table", GrantTable::setup(1)) else {
        return;
    };
    let refs = [
        table.grant_access(peer, ro.mfn(), true),
        table.grant_access(peer, mailbox.mfn(), false),
        table.grant_access(peer, data.mfn(), false),
    ];
    if refs
        .iter()
        .enumerate()
        .any(|(i, g)| g.as_ref().ok() != Some(&(i as GrantRef)))
    {
        r.error(format_args!("grants got unexpected references"));
        return;
    }
    let Some(port) = r.setup("a port", events::alloc_unbound(peer)) else {
        return;
    };
    if port != PARTNER_PORT {
        r.error(format_args!("got port {port}, expected {PARTNER_PORT}"));
        return;
    }
    events::set_handler(port, wake);
    let mailbox = SharedPage::from_frame(mailbox);
    r.pass(format_args!(
        "granted refs 0 (read-only), 1, 2 to d{peer}, port {port}"
    ));
    if !wait_connected(port) {
        r.error(format_args!("the peer never connected"));
        return;
    }
    let mut served = 0u64;
    let mut ended = [false; 3];
    loop {
        events::wait_until(|| mailbox.load_u64(REQ_SEQ) != served || peer_gone(port));
        let seq = mailbox.load_u64(REQ_SEQ);
        if seq == served {
            break;
        }
        let (cmd, arg) = (mailbox.load_u64(REQ_CMD), mailbox.load_u64(REQ_ARG));
        let reply = match cmd {
            CMD_END_ACCESS if arg < 3 && arg != u64::from(MAILBOX_REF) => {
                if ended[arg as usize] {
                    0
                } else {
                    match table.end_access(arg as GrantRef) {
                        Ok(()) => {
                            ended[arg as usize] = true;
                            0
                        }
                        Err(_) => 1,
                    }
                }
            }
            _ => u64::MAX,
        };
        mailbox.store_u64(REPLY, reply);
        mailbox.store_u64(REPLY_SEQ, seq);
        served = seq;
        let _ = events::notify(port);
    }
    r.pass(format_args!("served {served} requests; the peer has gone"));
    let ro_intact = (0..512).all(|i| ro.read_u64(i) == RO_PATTERN);
    r.check(ro_intact, format_args!("the read-only page is intact"));
    for gref in [RO_REF, MAILBOX_REF, DATA_REF] {
        if !ended[gref as usize] {
            // The peer has gone, so nothing may still use the grant.
            let at_once = table.end_access(gref).is_ok();
            r.check(
                at_once,
                format_args!("grant {gref} ends at once (nothing left in use)"),
            );
        }
    }
    let _ = events::close(port);
    match table.teardown() {
        Ok(()) => r.pass(format_args!("grant table dropped")),
        Err((_, err)) => r.fail(format_args!("dropping the grant table: {err}")),
    }
    drop(mailbox);
}

fn sender(r: &mut TestReport, peer: DomId, polite: bool) {
    let Some(port) = r.setup("a port", events::alloc_unbound(peer)) else {
        return;
    };
    events::set_handler(port, wake);
    events::wait_until(|| WOKEN.load(Ordering::SeqCst));
    let mut sent = 0u64;
    let mut errors: Vec<Errno> = Vec::new();
    // Until the peer has gone for good (its end closes with it, EVT-4; a
    // close-and-rebind loop makes it come and go meanwhile).
    loop {
        for _ in 0..64 {
            match events::notify(port) {
                Ok(()) => sent += 1,
                Err(e) => errors.push(e),
            }
        }
        if peer_finished(peer) {
            break;
        }
        // Polite: a burst per turn, so the storm interleaves with every
        // step of the peer instead of taking whole time slices.
        if polite {
            sched_yield();
        }
    }
    r.check(
        errors.is_empty(),
        format_args!("{sent} sends while the peer came and went, none failed ({errors:?})"),
    );
}

/// Whether domain `peer` has ended: its id can no longer be bound to.
fn peer_finished(peer: DomId) -> bool {
    // Allocating a port for a domain that no longer exists fails (ESRCH).
    match events::alloc_unbound(peer) {
        Ok(p) => {
            let _ = events::close(p);
            false
        }
        Err(_) => true,
    }
}

fn ticker(r: &mut TestReport, peer: DomId) {
    let tsc_per_ms = crate::attack::tsc_per_ms();
    let mut last = crate::attack::rdtsc();
    let mut max_gap = 0u64;
    let mut iterations = 0u64;
    while !peer_finished(peer) || iterations < 1000 {
        let now = crate::attack::rdtsc();
        max_gap = max_gap.max(now - last);
        last = now;
        iterations += 1;
        sched_yield();
    }
    let gap_ms = max_gap / tsc_per_ms.max(1);
    r.check(
        gap_ms < MAX_GAP_MS,
        format_args!(
            "{iterations} iterations while d{peer} ran and ended; largest gap {gap_ms} ms"
        ),
    );
}

/// How long the bad backend waits for its frontend's port and ring.
const PEER_WAIT_MS: u64 = 10_000;

fn bad_backend(r: &mut TestReport, peer: DomId) {
    let mut port = None;
    // Bounded by time, not tries: how often a yield comes back depends on
    // the host's load, and the frontend first measures its CPU alone.
    let deadline = crate::attack::rdtsc() + PEER_WAIT_MS * crate::attack::tsc_per_ms();
    while crate::attack::rdtsc() < deadline {
        match events::bind_interdomain(peer, PARTNER_PORT) {
            Ok(p) => {
                port = Some(p);
                break;
            }
            Err(_) => sched_yield(),
        }
    }
    let Some(port) = port else {
        r.error(format_args!("could not bind to the frontend"));
        return;
    };
    let Some(va) = r.setup("address space", pv_guest_kit::mm::reserve_va(1)) else {
        return;
    };
    let mut mapping = None;
    let deadline = crate::attack::rdtsc() + PEER_WAIT_MS * crate::attack::tsc_per_ms();
    while crate::attack::rdtsc() < deadline {
        match pv_guest_kit::grants::map(peer, 0, va.page(0), false) {
            Ok(m) => {
                mapping = Some(m);
                break;
            }
            Err(_) => sched_yield(),
        }
    }
    let Some(mapping) = mapping else {
        r.error(format_args!("could not map the ring"));
        return;
    };
    let mut ring = SharedPage::from_mapping(mapping);
    // rsp_prod (RING-1 offset 8): far past anything requested.
    hypercall_abi::ring::RingMemory::write_u32(&mut ring, 8, 1000);
    let mut sent = 0u64;
    let mut errors = 0u64;
    loop {
        for _ in 0..64 {
            match events::notify(port) {
                Ok(()) => sent += 1,
                Err(_) => errors += 1,
            }
        }
        if peer_finished(peer) {
            break;
        }
    }
    r.check(
        errors == 0,
        format_args!("flooded the frontend with {sent} events"),
    );
    match ring.into_mapping().map(|m| m.unmap()) {
        Some(Ok(())) => r.pass(format_args!("ring unmapped after the frontend left")),
        _ => r.fail(format_args!("unmapping the ring")),
    }
}
