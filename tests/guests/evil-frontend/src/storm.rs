//! XSA-332 against the backends: an event storm from a frontend (SPEC.md
//! RING-4, EVT-*), and the honest guest whose I/O it must not stall.
//!
//! `mode=xsa-332` (the attacker) connects a raw blk ring and a raw vif and,
//! between the victim's two signals, sends events on both ports as fast as
//! it can, each after re-writing `req_prod` with its unchanged value (a
//! notification with no work), then proves the backend still serves it.
//!
//! `mode=victim` uses blkfront and two netfront vifs honestly: rounds of a
//! 64 KiB disk read and a frame from one vif to the other, timed alone and
//! then under the storm. The storm must leave it at least
//! [`MIN_SHARE_PERCENT`] of its unstormed rate.
//!
//! The two find each other on an interdomain port: the attacker's first
//! allocation (port [`SIGNAL_PORT`]), unbound for the victim.

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::vec;

use hypercall_abi::blkif::*;
use hypercall_abi::devbus::{DEVBUS_KIND_BLK, DEVBUS_KIND_NET};
use hypercall_abi::netif::*;
use hypercall_abi::ring::RingMemory;
use hypercall_abi::DomId;
use pv_guest_kit::devices::blkfront::BlockFront;
use pv_guest_kit::devices::netfront::NetFront;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::hypercall::sched_yield;
use pv_guest_kit::mm::Frame;
use pv_guest_kit::println;
use pv_guest_kit::time::now_ns;

use crate::raw::{end_grant, grant, my_records, wait_response, RawBlk, RawNet, REQ_PROD};

/// The attacker's signal port (its first allocation).
pub const SIGNAL_PORT: Port = 1;
/// The least share of its unstormed I/O rate the victim keeps (percent).
pub const MIN_SHARE_PERCENT: u64 = 20;
/// The storm's own limit, should the victim never say stop.
const STORM_LIMIT_NS: u64 = 60_000_000_000;

static SIGNALS: AtomicU64 = AtomicU64::new(0);

fn on_signal(_port: Port) {
    SIGNALS.fetch_add(1, Ordering::SeqCst);
}

/// The attacker.
pub fn attack(me: DomId, victim: DomId) {
    let signal =
        events::alloc_unbound(victim).unwrap_or_else(|e| panic!("evil-frontend: signal port: {e}"));
    assert_eq!(signal, SIGNAL_PORT, "evil-frontend: the signal port moved");
    events::set_handler(signal, on_signal);
    let blk_rec = my_records(me, DEVBUS_KIND_BLK, 1)[0].id;
    let net_rec = my_records(me, DEVBUS_KIND_NET, 1)[0].id;
    let mut blk = RawBlk::connect(blk_rec);
    let mut net = RawNet::connect(net_rec, 0);
    println!("evil-frontend: storm ready; waiting for the victim's baseline");
    events::wait_until(|| SIGNALS.load(Ordering::SeqCst) >= 1);
    let blk_prod = blk.ring.mem.read_u32(REQ_PROD);
    let tx_prod = net.tx.mem.read_u32(REQ_PROD);
    let start = now_ns();
    let mut sends = 0u64;
    while SIGNALS.load(Ordering::SeqCst) < 2 && now_ns() - start < STORM_LIMIT_NS {
        for _ in 0..64 {
            blk.ring.mem.write_u32(REQ_PROD, blk_prod);
            let _ = events::notify(blk.port);
            net.tx.mem.write_u32(REQ_PROD, tx_prod);
            let _ = events::notify(net.port);
            sends += 2;
        }
    }
    let ms = (now_ns() - start) / 1_000_000;
    println!("evil-frontend: storm: {sends} event sends with no work in {ms} ms");
    // The backends still serve the stormer: a read and a frame.
    let mut page = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    let g = grant(blk.backend, &page, false);
    let mut req = BlkifRequest {
        id: 1,
        operation: BLKIF_OP_READ,
        nr_segments: 1,
        ..BlkifRequest::default()
    };
    req.seg[0] = BlkifSegment {
        gref: g,
        first_sect: 0,
        last_sect: 7,
        pad: 0,
    };
    let rsp = blk.call(&req);
    assert_eq!(
        rsp.status, BLKIF_RSP_OKAY,
        "evil-frontend: read after the storm"
    );
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&net.mac);
    f[6..12].copy_from_slice(&net.mac);
    page.write_bytes(0, &f);
    net.tx.push(&NetifTxRequest {
        gref: g,
        offset: 0,
        flags: 0,
        id: 1,
        size: 60,
        pad: 0,
    });
    net.tx.publish();
    let _ = events::notify(net.port);
    let rsp = wait_response(&mut net.tx);
    assert_eq!(
        rsp.status, NETIF_RSP_DROPPED,
        "evil-frontend: a frame to itself after the storm"
    );
    blk.close();
    net.close();
    assert!(end_grant(g), "evil-frontend: grant still in use");
    drop(page);
    println!("evil-frontend: after the storm blkback and netback still answer the stormer");
}

/// Time in ns for `rounds` rounds of a 64 KiB read and a frame a → b.
fn io_rounds(
    disk: &mut BlockFront,
    a: &mut NetFront,
    b: &mut NetFront,
    rounds: u32,
    tag: u8,
) -> u64 {
    let mut buf = vec![0u8; 65536];
    let start = now_ns();
    for r in 0..rounds {
        disk.read(u64::from(r % 16) * 128, &mut buf)
            .unwrap_or_else(|e| panic!("evil-frontend: victim read: {e}"));
        let mut frame = vec![tag; 200];
        frame[..6].copy_from_slice(&b.mac());
        frame[6..12].copy_from_slice(&a.mac());
        frame[12..14].copy_from_slice(&[0x88, 0xb5]);
        frame[14] = r as u8;
        loop {
            match a.transmit(&frame) {
                Ok(()) => break,
                Err(_) => sched_yield(),
            }
        }
        loop {
            let got = b
                .receive()
                .unwrap_or_else(|e| panic!("evil-frontend: victim receive: {e:?}"));
            match got {
                Some(f) if f == frame => break,
                Some(_) => {}
                None => events::wait_until(|| b.has_work()),
            }
        }
    }
    now_ns() - start
}

/// The victim.
pub fn victim(me: DomId, attacker: DomId, rounds: u32) {
    let disk = my_records(me, DEVBUS_KIND_BLK, 1)[0].id;
    let vifs = my_records(me, DEVBUS_KIND_NET, 2);
    assert!(vifs.len() >= 2, "evil-frontend: the victim needs two vifs");
    let mut disk = BlockFront::connect(disk).unwrap_or_else(|e| panic!("evil-frontend: {e}"));
    let mut a = NetFront::connect(vifs[0].id).unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    let mut b = NetFront::connect(vifs[1].id).unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    let signal = loop {
        match events::bind_interdomain(attacker, SIGNAL_PORT) {
            Ok(p) => break p,
            Err(_) => sched_yield(),
        }
    };
    let best = |disk: &mut BlockFront, a: &mut NetFront, b: &mut NetFront, tag| {
        (0..3)
            .map(|_| io_rounds(disk, a, b, rounds, tag))
            .min()
            .unwrap_or(u64::MAX)
    };
    let quiet = best(&mut disk, &mut a, &mut b, 0x71);
    let _ = events::notify(signal);
    // Let the storm start before measuring.
    let settle = now_ns() + 20_000_000;
    while now_ns() < settle {
        sched_yield();
    }
    let stormy = best(&mut disk, &mut a, &mut b, 0x72);
    let _ = events::notify(signal);
    let share = quiet * 100 / stormy.max(1);
    println!(
        "evil-frontend: victim: {rounds} rounds of a 64 KiB read and a frame took {} ms alone and {} ms under the storm ({share}% of its rate)",
        quiet / 1_000_000,
        stormy / 1_000_000
    );
    assert!(
        share >= MIN_SHARE_PERCENT,
        "evil-frontend: the storm cut the victim's I/O to {share}% (bound {MIN_SHARE_PERCENT}%)"
    );
    println!("BENCH name=xsa332_victim_io_share value={share} unit=percent");
    let _ = events::close(signal);
    disk.disconnect()
        .unwrap_or_else(|e| panic!("evil-frontend: disconnect: {e}"));
    a.disconnect()
        .unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    b.disconnect()
        .unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    println!("evil-frontend: victim: I/O kept flowing through the storm");
}
