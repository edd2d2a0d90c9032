//! `rogue-backend`: XSA-391, a hostile *backend* against the kit's
//! blkfront and netfront (SPEC.md DEV-6 `foreign-blk=`/`foreign-net=`,
//! BLK-10, NET-5, RING-6).
//!
//! `role=backend` is the attacker: it serves the blk and net records the
//! driver domain created with it as backend, and answers with garbage —
//! unknown and repeated ids, a wrong operation, undefined statuses, rx
//! lengths and offsets outside the page — then floods the frontend with
//! events while answering nothing, then publishes a response producer far
//! ahead of anything requested, and finally lets the frontend disconnect.
//!
//! `role=frontend` is the victim, using `BlockFront` and `NetFront`
//! unmodified: every garbage response must be dropped or turned into an
//! error (and counted), every call must return within a time bound, the
//! impossible producer must be refused, and the frontend's own bookkeeping
//! (requests in flight, posted rx buffers, free tx buffers) must stay
//! consistent. Each step prints one line; anything unexpected panics.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

extern crate alloc;

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::vec::Vec;

use hypercall_abi::blkif::*;
use hypercall_abi::devbus::*;
use hypercall_abi::netif::*;
use hypercall_abi::ring::{BackRing, RingError, RingMemory, RingMessage};
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::DomId;
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::devices::blkfront::{find_disk, BlkError, BlockFront, Op};
use pv_guest_kit::devices::devbus;
use pv_guest_kit::devices::netfront::{find_vif, NetError, NetFront, RX_BUFFERS};
use pv_guest_kit::devices::ring_pages::RingPages;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants;
use pv_guest_kit::hypercall::sched_yield;
use pv_guest_kit::println;
use pv_guest_kit::ring::SharedPage;
use pv_guest_kit::time::now_ns;

pv_guest_kit::entry!(kmain);

/// How long the backend floods the frontend with events.
const STORM_NS: u64 = 1_500_000_000;
/// A frontend wait's bound while the backend answers nothing.
const TIMEOUT_NS: u64 = 300_000_000;
/// Slack on top of [`TIMEOUT_NS`] before a wait counts as hung.
const SLACK_NS: u64 = 1_000_000_000;
/// Offset of `rsp_prod` in the ring header (RING-1).
const RSP_PROD: usize = 8;

static EVENTS: AtomicU64 = AtomicU64::new(0);

fn count(_port: Port) {
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    devbus::watch().unwrap_or_else(|e| panic!("rogue-backend: VIRQ_DEVBUS: {e}"));
    match args.get("role").unwrap_or("backend") {
        "backend" => {
            rogue_blk(si.domid);
            rogue_net(si.domid);
            println!("rogue-backend: backend: every attack sent");
        }
        "frontend" => {
            victim_blk(si.domid);
            victim_net(si.domid);
            println!("rogue-backend: frontend: survived the rogue backend");
        }
        other => panic!("rogue-backend: unknown role `{other}`"),
    }
}

// ---------------------------------------------------------------- backend

/// The first record of `kind` this domain backs, once its frontend published.
fn published(me: DomId, kind: u32) -> DevbusRecord {
    let mut found = None;
    events::wait_until(|| {
        found = devbus::records()
            .unwrap_or_else(|e| panic!("rogue-backend: devbus: {e}"))
            .into_iter()
            .find(|r| {
                r.kind == kind
                    && r.backend == me
                    && r.state == DEVBUS_STATE_INITIALISING
                    && r.nr_ring_pages > 0
            });
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("rogue-backend: no record"))
}

/// Maps `refs` of `frontend` into fresh address space.
fn map_ring(frontend: DomId, refs: &[u32]) -> RingPages {
    let pages = refs
        .iter()
        .map(|&gref| {
            let va = pv_guest_kit::mm::reserve_va(1)
                .unwrap_or_else(|e| panic!("rogue-backend: {e:?}"))
                .start();
            let m = grants::map(frontend, gref, va, false)
                .unwrap_or_else(|e| panic!("rogue-backend: mapping ring grant {gref}: {e}"));
            SharedPage::from_mapping(m)
        })
        .collect();
    RingPages::new(pages)
}

fn unmap_ring(mut ring: RingPages) {
    for page in ring.take_pages() {
        if let Some(m) = page.into_mapping() {
            m.unmap()
                .unwrap_or_else(|(_, e)| panic!("rogue-backend: unmap: {e}"));
        }
    }
}

/// Binds the frontend's port and connects the record.
fn connect(r: &DevbusRecord, features: u32) -> Port {
    let port = events::bind_interdomain(r.frontend, r.event_port)
        .unwrap_or_else(|e| panic!("rogue-backend: bind: {e}"));
    events::set_handler(port, count);
    devbus::connect(&DevbusConnect {
        id: r.id,
        backend_features: features,
        max_indirect_segments: 0,
        pad: 0,
    })
    .unwrap_or_else(|e| panic!("rogue-backend: connect: {e}"));
    port
}

/// Takes `n` requests (waiting for them).
fn take<Req: RingMessage, Rsp: RingMessage>(
    ring: &mut BackRing<Req, Rsp>,
    mem: &mut RingPages,
    n: usize,
) -> Vec<Req> {
    let mut reqs = Vec::new();
    while reqs.len() < n {
        match ring.take_request(mem) {
            Ok(Some(r)) => reqs.push(r),
            Ok(None) => events::wait_until(|| ring.final_check_for_requests(mem).unwrap_or(true)),
            Err(e) => panic!("rogue-backend: the frontend broke its ring: {e}"),
        }
    }
    reqs
}

/// Floods `port` with events for [`STORM_NS`]; returns how many were sent.
fn storm(port: Port) -> u64 {
    let end = now_ns() + STORM_NS;
    let mut sent = 0u64;
    while now_ns() < end {
        for _ in 0..64 {
            let _ = events::notify(port);
        }
        sent += 64;
    }
    sent
}

/// Publishes a response producer `ahead` past the last response, notifies.
fn overrun(mem: &mut RingPages, port: Port, ahead: u32) {
    let prod = mem.read_u32(RSP_PROD);
    mem.write_u32(RSP_PROD, prod.wrapping_add(ahead));
    let _ = events::notify(port);
}

/// Waits for the frontend to close, then lets go of the ring and closes.
fn finish(id: u32, port: Port, rings: Vec<RingPages>) {
    devbus::wait_for(id, |r| r.closed_sides & DEVBUS_SIDE_FRONT != 0)
        .unwrap_or_else(|e| panic!("rogue-backend: devbus: {e}"));
    let _ = events::close(port);
    for ring in rings {
        unmap_ring(ring);
    }
    devbus::close(id).unwrap_or_else(|e| panic!("rogue-backend: close: {e}"));
}

fn rogue_blk(me: DomId) {
    let r = published(me, DEVBUS_KIND_BLK);
    let mut mem = map_ring(r.frontend, &r.ring_refs[..r.nr_ring_pages as usize]);
    let mut ring: BackRing<BlkifRequest, BlkifResponse> =
        BackRing::attach(&mem).unwrap_or_else(|e| panic!("rogue-backend: attach: {e}"));
    let port = connect(&r, BLKIF_FEATURE_FLUSH);
    println!(
        "rogue-backend: serving blk record {} of d{}",
        r.id, r.frontend
    );
    let reqs = take(&mut ring, &mut mem, 4);
    let rsp = |id: u64, operation: u8, status: i16| BlkifResponse {
        id,
        operation,
        status,
        ..BlkifResponse::default()
    };
    let garbage = [
        rsp(999_999, BLKIF_OP_READ, BLKIF_RSP_OKAY),
        rsp(reqs[0].id, BLKIF_OP_WRITE, BLKIF_RSP_OKAY),
        rsp(reqs[1].id, BLKIF_OP_READ, 77),
        rsp(reqs[1].id, BLKIF_OP_READ, BLKIF_RSP_OKAY),
    ];
    for g in &garbage {
        ring.push_response(&mut mem, g)
            .unwrap_or_else(|e| panic!("rogue-backend: push: {e}"));
    }
    let _ = ring.publish_responses(&mut mem);
    let _ = events::notify(port);
    let sent = storm(port);
    println!("rogue-backend: blk: 4 garbage responses, then {sent} events answering nothing");
    overrun(&mut mem, port, 1000);
    println!("rogue-backend: blk: rsp_prod published 1000 past the last response");
    finish(r.id, port, alloc::vec![mem]);
}

fn rogue_net(me: DomId) {
    let r = published(me, DEVBUS_KIND_NET);
    let n = r.nr_ring_pages as usize;
    let mut tx_mem = map_ring(r.frontend, &r.ring_refs[..n]);
    let mut rx_mem = map_ring(r.frontend, &r.ring_refs[n..2 * n]);
    let mut tx: BackRing<NetifTxRequest, NetifTxResponse> =
        BackRing::attach(&tx_mem).unwrap_or_else(|e| panic!("rogue-backend: attach: {e}"));
    let mut rx: BackRing<NetifRxRequest, NetifRxResponse> =
        BackRing::attach(&rx_mem).unwrap_or_else(|e| panic!("rogue-backend: attach: {e}"));
    let port = connect(&r, 0);
    println!(
        "rogue-backend: serving net record {} of d{}",
        r.id, r.frontend
    );
    let posted = take(&mut rx, &mut rx_mem, RX_BUFFERS);
    let sent = take(&mut tx, &mut tx_mem, 3);
    let rx_rsp = |id: u16, offset: u16, status: i16| NetifRxResponse {
        id,
        offset,
        flags: 0,
        status,
    };
    let rx_garbage = [
        rx_rsp(5000, 0, 60),
        rx_rsp(posted[0].id, 0, 3000),
        rx_rsp(posted[1].id, 4000, 200),
        rx_rsp(posted[2].id, 0, 60),
        rx_rsp(posted[2].id, 0, 60),
        rx_rsp(posted[3].id, 0, NETIF_RSP_ERROR),
        rx_rsp(posted[4].id, 0, 0),
    ];
    for g in &rx_garbage {
        rx.push_response(&mut rx_mem, g)
            .unwrap_or_else(|e| panic!("rogue-backend: push: {e}"));
    }
    let tx_garbage = [
        NetifTxResponse {
            id: 999,
            status: NETIF_RSP_OKAY,
            pad: 0,
        },
        NetifTxResponse {
            id: sent[0].id,
            status: NETIF_RSP_OKAY,
            pad: 0,
        },
        NetifTxResponse {
            id: sent[0].id,
            status: 55,
            pad: 0,
        },
    ];
    for g in &tx_garbage {
        tx.push_response(&mut tx_mem, g)
            .unwrap_or_else(|e| panic!("rogue-backend: push: {e}"));
    }
    let _ = rx.publish_responses(&mut rx_mem);
    let _ = tx.publish_responses(&mut tx_mem);
    let _ = events::notify(port);
    // Wait for the frontend to say it has taken them: it transmits once more.
    let _ = take(&mut tx, &mut tx_mem, 1);
    let sent_events = storm(port);
    println!(
        "rogue-backend: net: 7 garbage rx and 3 garbage tx responses, then {sent_events} events answering nothing"
    );
    overrun(&mut rx_mem, port, 1000);
    println!("rogue-backend: net: rx rsp_prod published 1000 past the last response");
    finish(r.id, port, alloc::vec![tx_mem, rx_mem]);
}

// --------------------------------------------------------------- frontend

fn wait_record<T>(mut find: impl FnMut() -> Option<T>) -> T {
    let mut found = None;
    events::wait_until(|| {
        found = find();
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("rogue-backend: no record"))
}

fn victim_blk(me: DomId) {
    let rec = wait_record(|| find_disk(me).ok().flatten());
    let mut front =
        BlockFront::connect(rec.id).unwrap_or_else(|e| panic!("rogue-backend: connect: {e}"));
    let ids: Vec<u64> = (0..4)
        .map(|i| {
            front
                .submit(Op::Read {
                    sector: i * 8,
                    units: 8,
                })
                .unwrap_or_else(|e| panic!("rogue-backend: submit: {e}"))
        })
        .collect();
    front
        .kick()
        .unwrap_or_else(|e| panic!("rogue-backend: kick: {e}"));
    for &id in &ids[..2] {
        let c = front
            .wait(id)
            .unwrap_or_else(|e| panic!("rogue-backend: wait {id}: {e}"));
        assert!(
            c.status == BLKIF_RSP_ERROR && c.data.is_none(),
            "rogue-backend: a garbage answer completed request {id} as {c:?}"
        );
    }
    assert_eq!(
        front.garbage_responses(),
        4,
        "rogue-backend: garbage responses counted"
    );
    assert_eq!(front.in_flight(), 2, "rogue-backend: requests in flight");
    println!(
        "rogue-backend: blkfront: unknown id, repeated id, wrong operation and undefined status refused (4 counted); the 2 requests they named failed, 2 stay in flight"
    );
    // The storm: a bounded wait returns, however many events arrive.
    front.set_timeout(Some(TIMEOUT_NS));
    let before = events::events_handled();
    let start = now_ns();
    let waited = front.wait(ids[2]);
    let took = now_ns() - start;
    let events_seen = events::events_handled() - before;
    assert!(
        matches!(waited, Err(BlkError::Timeout)),
        "rogue-backend: a wait during the storm ended with {waited:?}"
    );
    assert!(
        took < TIMEOUT_NS + SLACK_NS,
        "rogue-backend: the wait took {} ms",
        took / 1_000_000
    );
    println!(
        "rogue-backend: blkfront: a wait under the event storm timed out after {} ms ({events_seen} events)",
        took / 1_000_000
    );
    // The impossible producer: refused, nothing taken.
    let deadline = now_ns() + 10 * STORM_NS;
    loop {
        match front.poll() {
            Err(BlkError::Ring(RingError::ProducerOverrun)) => break,
            Ok(0) if now_ns() < deadline => sched_yield(),
            other => panic!("rogue-backend: waiting for the overrun: {other:?}"),
        }
    }
    assert_eq!(front.in_flight(), 2, "rogue-backend: requests in flight");
    assert!(
        matches!(
            front.wait(ids[3]),
            Err(BlkError::Ring(RingError::ProducerOverrun))
        ),
        "rogue-backend: a wait after the overrun"
    );
    println!("rogue-backend: blkfront: rsp_prod 1000 ahead refused (ring error), nothing taken, 2 still in flight");
    front
        .disconnect()
        .unwrap_or_else(|e| panic!("rogue-backend: disconnect: {e}"));
    println!("rogue-backend: blkfront: disconnected cleanly");
}

fn frame(mac: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = alloc::vec![tag; 60];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f
}

fn victim_net(me: DomId) {
    let rec = wait_record(|| find_vif(me).ok().flatten());
    let mut nic =
        NetFront::connect(rec.id).unwrap_or_else(|e| panic!("rogue-backend: connect: {e:?}"));
    let mac = nic.mac();
    for tag in 1..=3 {
        nic.transmit(&frame(mac, tag))
            .unwrap_or_else(|e| panic!("rogue-backend: transmit: {e:?}"));
    }
    // The garbage: 7 rx and 3 tx responses.
    let deadline = now_ns() + 10 * STORM_NS;
    while nic.stats().garbage < 7 {
        nic.poll()
            .unwrap_or_else(|e| panic!("rogue-backend: poll: {e:?}"));
        assert!(
            now_ns() < deadline,
            "rogue-backend: the garbage never came ({:?})",
            nic.stats()
        );
        sched_yield();
    }
    let s = nic.stats();
    let mut frames = 0;
    while let Ok(Some(_)) = nic.receive() {
        frames += 1;
    }
    assert!(
        s.garbage == 7 && frames == 1 && nic.rx_posted() == RX_BUFFERS,
        "rogue-backend: netfront after the garbage: {s:?}, {frames} frames, {} rx buffers posted",
        nic.rx_posted()
    );
    assert!(nic.can_transmit(), "rogue-backend: no tx buffer free");
    println!(
        "rogue-backend: netfront: unknown and repeated ids, oversized, zero-length and out-of-page rx refused (7 counted); 1 good frame received; all {RX_BUFFERS} rx buffers posted once"
    );
    nic.transmit(&frame(mac, 4))
        .unwrap_or_else(|e| panic!("rogue-backend: transmit: {e:?}"));
    // The storm: every call returns at once.
    let start = now_ns();
    let mut calls = 0u64;
    let mut slowest = 0u64;
    let before = events::events_handled();
    while now_ns() - start < STORM_NS / 2 {
        let t = now_ns();
        match nic.receive() {
            Ok(None) => {}
            other => panic!("rogue-backend: receive during the storm: {other:?}"),
        }
        slowest = slowest.max(now_ns() - t);
        calls += 1;
    }
    assert!(
        slowest < SLACK_NS,
        "rogue-backend: a receive took {} ms",
        slowest / 1_000_000
    );
    println!(
        "rogue-backend: netfront: {calls} receives under the event storm, the slowest {} us ({} events)",
        slowest / 1000,
        events::events_handled() - before
    );
    loop {
        match nic.poll() {
            Err(NetError::Ring(RingError::ProducerOverrun)) => break,
            Ok(()) if now_ns() < deadline + 10 * STORM_NS => sched_yield(),
            other => panic!("rogue-backend: waiting for the overrun: {other:?}"),
        }
    }
    assert!(
        nic.rx_posted() == RX_BUFFERS && nic.stats().garbage == 7,
        "rogue-backend: the overrun changed the frontend's state"
    );
    println!("rogue-backend: netfront: rx rsp_prod 1000 ahead refused (ring error), nothing taken");
    // The rings stay mapped by the backend until it closes; disconnect
    // waits for that.
    match nic.disconnect() {
        Ok(()) => println!("rogue-backend: netfront: disconnected cleanly"),
        Err(e) => panic!("rogue-backend: disconnect: {e:?}"),
    }
}
