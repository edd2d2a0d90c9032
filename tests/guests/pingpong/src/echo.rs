//! `hvbench`'s partner for the figures that need a second domain: grants it
//! one page (reference 0, read-write: hvbench maps it and copies from it),
//! binds to its port (`peer_port`, default 1) and answers every event with
//! one back, blocking in between. hvbench ends the exchange by writing
//! [`DONE`] into the granted page's last word and notifying.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::DomId;
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants::GrantTable;
use pv_guest_kit::hypercall::sched_yield;
use pv_guest_kit::mm::Frame;
use pv_guest_kit::println;
use pv_guest_kit::ring::SharedPage;

use crate::{bind_to, number};

/// Offset of the "done" word in the granted page.
pub const DONE_OFFSET: usize = 4088;
/// What hvbench writes there when it is finished.
pub const DONE: u64 = 0xd0_4e;

/// Events received from hvbench.
static RECEIVED: AtomicU64 = AtomicU64::new(0);

fn count(_port: Port) {
    RECEIVED.fetch_add(1, Ordering::Relaxed);
}

pub fn run(args: &Args<'_>, peer: DomId) {
    let peer_port = number(args, "peer_port", Some(1)) as u32;
    let mut frame = Frame::alloc().unwrap_or_else(|err| panic!("echo: frame: {err}"));
    for i in 0..511 {
        frame.write_u64(i, 0xec40_0000_0000_0000 | i as u64);
    }
    frame.write_u64(511, 0);
    let mut table = GrantTable::setup(1).unwrap_or_else(|err| panic!("echo: grant table: {err}"));
    let gref = table
        .grant_access(peer, frame.mfn(), false)
        .unwrap_or_else(|err| panic!("echo: granting: {err}"));
    assert_eq!(gref, 0, "echo: hvbench expects the page as reference 0");
    let page = SharedPage::from_frame(frame);

    let port = bind_to(peer, peer_port);
    events::set_handler(port, count);
    if let Err(err) = events::notify(port) {
        panic!("echo: notifying hvbench: {err}");
    }

    let mut seen = 0u64;
    let mut answered = 0u64;
    loop {
        events::wait_until(|| {
            RECEIVED.load(Ordering::Relaxed) != seen || page.load_u64(DONE_OFFSET) == DONE
        });
        if page.load_u64(DONE_OFFSET) == DONE {
            break;
        }
        seen = RECEIVED.load(Ordering::Relaxed);
        if let Err(err) = events::notify(port) {
            panic!("echo: answering: {err}");
        }
        answered += 1;
    }
    let mut tries = 0u32;
    while table.end_access(gref).is_err() {
        tries += 1;
        assert!(tries < 100_000, "echo: hvbench still maps the page");
        sched_yield();
    }
    let _ = events::close(port);
    if let Err((_, err)) = table.teardown() {
        panic!("echo: dropping the grant table: {err}");
    }
    drop(page.into_frame());
    println!("echo: answered {answered} events, done");
}
