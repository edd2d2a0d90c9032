//! The frontend: grants a ring page to the peer, allocates the port it binds
//! to, and streams `count` requests through the ring, checking and folding
//! every response into a checksum. It publishes whole batches (the backend
//! is notified only when it asked, RING-4) and blocks while it waits.
//!
//! With `watch_peer=1` it instead waits by yielding and checks the port's
//! status in between: a peer that dies cannot wake it (its port just falls
//! back to unbound, EVT-4), so a blocked frontend would wait for ever.

use hypercall_abi::evtchn::{EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_UNBOUND};
use hypercall_abi::{DomId, Errno};
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants::{GrantRef, GrantTable};
use pv_guest_kit::hypercall::sched_yield;
use pv_guest_kit::mm::Frame;
use pv_guest_kit::println;
use pv_guest_kit::ring::{Frontend, SharedPage};

use crate::proto::{fold, payload, respond, Request, Response, CHECKSUM_INIT};
use crate::{number, retry, wake};

/// The port the peer binds to (the first this domain allocates).
pub const RING_PORT: Port = 1;
/// The grant reference of the ring page (the first of a fresh table).
pub const RING_GREF: GrantRef = 0;

/// How the exchange ended.
enum End {
    /// Every response arrived.
    Done,
    /// The peer's end of the port went away.
    PeerDied,
}

pub fn run(args: &Args<'_>, peer: DomId) {
    let count = number(args, "count", Some(100_000));
    let watch_peer = number(args, "watch_peer", Some(0)) != 0;

    // The ring page, initialised before it is granted.
    let frame = Frame::alloc_zeroed().unwrap_or_else(|err| panic!("ping: ring frame: {err}"));
    let mfn = frame.mfn();
    let mut table = GrantTable::setup(1).unwrap_or_else(|err| panic!("ping: grant table: {err}"));
    let gref = table
        .grant_access(peer, mfn, false)
        .unwrap_or_else(|err| panic!("ping: granting the ring: {err}"));
    // The domain may not exist yet only if it is created after us.
    let port = retry("allocating the ring port", &[Errno::ESRCH], || {
        events::alloc_unbound(peer)
    });
    assert!(
        port == RING_PORT && gref == RING_GREF,
        "ping: got port {port} and grant {gref}, the peer expects {RING_PORT} and {RING_GREF}"
    );
    events::set_handler(port, wake);
    let mut front = Frontend::<Request, Response>::new(SharedPage::from_frame(frame), port)
        .unwrap_or_else(|err| panic!("ping: ring: {err}"));
    println!(
        "ping: ring of {} slots granted to d{peer} as ref {gref}, port {port}",
        front.size()
    );

    // The peer notifies once it is connected.
    events::wait_until(|| connected(port));

    let mut sent = 0u64;
    let mut received = 0u64;
    let mut checksum = CHECKSUM_INIT;
    let end = loop {
        while sent < count && front.free_requests() > 0 {
            let req = Request {
                seq: sent,
                payload: payload(sent),
            };
            if front.push(&req).is_err() {
                break;
            }
            sent += 1;
        }
        if let Err(err) = front.publish() {
            panic!("ping: notifying the peer: {err}");
        }
        let before = received;
        loop {
            match front.take() {
                Ok(Some(rsp)) => {
                    let want = respond(&Request {
                        seq: received,
                        payload: payload(received),
                    });
                    assert!(
                        rsp == want,
                        "ping: response {received} is {rsp:?}, expected {want:?}"
                    );
                    checksum = fold(checksum, &rsp);
                    received += 1;
                }
                Ok(None) => break,
                Err(err) => panic!("ping: the peer broke the ring: {err}"),
            }
        }
        if received == count {
            break End::Done;
        }
        if received == before {
            // Nothing came back yet: wait for the peer.
            if watch_peer {
                if !wait_watching(&mut front) {
                    break End::PeerDied;
                }
            } else {
                front.wait();
            }
        }
    };

    match end {
        End::Done => println!(
            "ping: {received} messages, checksum {checksum:#018x} ({} notifications sent)",
            front.notifications()
        ),
        End::PeerDied => println!("ping: peer died after {received} messages, carrying on"),
    }
    // Wait for the backend to go (its end of the port closes with it; a
    // departing domain sends no event, hence the yields), then take the page
    // back and free everything: the backend never outlives its access to
    // the page.
    let mut tries = 0u32;
    while connected(port) {
        tries += 1;
        assert!(tries < 1_000_000, "ping: the peer never left");
        sched_yield();
    }
    let mut tries = 0u32;
    while table.end_access(gref).is_err() {
        tries += 1;
        assert!(
            tries < 100_000,
            "ping: the peer still maps the ring after {tries} tries"
        );
        sched_yield();
    }
    let _ = events::close(port);
    match table.teardown() {
        Ok(()) => {}
        Err((_, err)) => panic!("ping: dropping the grant table: {err}"),
    }
    drop(front.into_page().into_frame());
    println!("ping: grants ended, ring freed");
}

/// Whether the peer has bound our port.
fn connected(port: Port) -> bool {
    events::status(port).is_ok_and(|s| s.status == EVTCHNSTAT_INTERDOMAIN)
}

/// Waits for a response by yielding, checking the peer in between; `false`
/// if the peer's end of the port went away (it died or closed it).
fn wait_watching(front: &mut Frontend<Request, Response>) -> bool {
    loop {
        if front.final_check() {
            return true;
        }
        match events::status(front.port()) {
            Ok(s) if s.status == EVTCHNSTAT_INTERDOMAIN => {}
            Ok(s) if s.status == EVTCHNSTAT_UNBOUND => return front.final_check(),
            Ok(s) => panic!("ping: ring port in state {}", s.status),
            Err(err) => panic!("ping: ring port status: {err}"),
        }
        sched_yield();
    }
}
