//! A hostile netfront (issue 7; SPEC.md NET-2, NET-3, NET-4, RING-6):
//! malformed tx requests, bad, foreign and read-only grants for tx and rx,
//! a forged source MAC, a request storm, and broken ring indices (one
//! request more than the ring holds, a producer far ahead, one behind the
//! consumer), on raw rings of two vifs of this guest (`A` attacks, `B`
//! sends it frames to fill its rx pages). netback must answer each with an
//! error or drop status, close the vif whose ring broke and nothing else,
//! and serve the reconnected vif again.

use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::devbus::{DEVBUS_KIND_NET, DEVBUS_SIDE_BACK};
use hypercall_abi::netif::*;
use hypercall_abi::ring::RingMemory;
use hypercall_abi::DomId;
use pv_guest_kit::devices::devbus;
use pv_guest_kit::events;
use pv_guest_kit::mm::Frame;
use pv_guest_kit::println;

use crate::raw::{end_grant, grant, my_records, wait_response, RawNet, REQ_PROD, RX_PAGES};

/// A frame from `src` to `dst` of `len` bytes (ethertype 0x88b5).
fn frame(dst: [u8; 6], src: [u8; 6], len: usize, fill: u8) -> Vec<u8> {
    let mut f = vec![fill; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// Sends `req` on `vif`'s tx ring and returns the response status.
fn tx_status(vif: &mut RawNet, req: NetifTxRequest) -> i16 {
    vif.tx.push(&req);
    vif.tx.publish();
    let _ = events::notify(vif.port);
    let rsp = wait_response(&mut vif.tx);
    assert_eq!(rsp.id, req.id, "evil-frontend: tx response id");
    rsp.status
}

/// Breaks `vif`'s ring by writing `req_prod` (`rx`: the rx ring), checks the
/// backend closes the record, reconnects and returns the fresh vif.
fn break_ring(vif: RawNet, rx: bool, req_prod: u32, what: &str) -> RawNet {
    let id = vif.record;
    let mut vif = vif;
    if rx {
        vif.rx.mem.write_u32(REQ_PROD, req_prod);
    } else {
        vif.tx.mem.write_u32(REQ_PROD, req_prod);
    }
    let _ = events::notify(vif.port);
    let closed = devbus::wait_for(id, |r| r.closed_sides & DEVBUS_SIDE_BACK != 0)
        .unwrap_or_else(|e| panic!("evil-frontend: devbus: {e}"));
    assert!(closed.is_some(), "evil-frontend: the vif record vanished");
    println!("evil-frontend: {what}: netback closed the vif");
    vif.close();
    RawNet::connect(id, 0)
}

/// The attacks. `victim` is a domain to hand foreign grants to.
pub fn attack(me: DomId, victim: DomId, storm: u32) {
    let records = my_records(me, DEVBUS_KIND_NET, 2);
    assert!(records.len() >= 2, "evil-frontend: needs two vifs");
    let mut a = RawNet::connect(records[0].id, 0);
    let mut b = RawNet::connect(records[1].id, 0);
    let backend = a.backend;
    println!(
        "evil-frontend: vifs connected (records {} and {}); attacking netback",
        a.record, b.record
    );
    let mut page = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    page.write_bytes(0, &frame([0xff; 6], a.mac, 4096, 0x11));
    let good = grant(backend, &page, true);
    let foreign = grant(victim, &page, true);
    let tx = |gref: u32, offset: u16, size: u16, id: u16| NetifTxRequest {
        gref,
        offset,
        flags: 0,
        id,
        size,
        pad: 0,
    };
    let malformed: [(&str, NetifTxRequest); 10] = [
        ("empty frame", tx(good, 0, 0, 1)),
        ("13 bytes", tx(good, 0, 13, 2)),
        ("1515 bytes", tx(good, 0, 1515, 3)),
        ("65535 bytes", tx(good, 0, 65535, 4)),
        ("crossing the page", tx(good, 4000, 200, 5)),
        ("offset past the page", tx(good, 65000, 60, 6)),
        (
            "flags set",
            NetifTxRequest {
                flags: 0x8000,
                ..tx(good, 0, 60, 7)
            },
        ),
        (
            "pad set",
            NetifTxRequest {
                pad: 1,
                ..tx(good, 0, 60, 8)
            },
        ),
        ("ungranted reference", tx(1999, 0, 60, 9)),
        (
            "reference granted to another domain",
            tx(foreign, 0, 60, 10),
        ),
    ];
    for (what, req) in malformed {
        let status = tx_status(&mut a, req);
        assert_eq!(
            status, NETIF_RSP_ERROR,
            "evil-frontend: tx `{what}` got status {status}"
        );
    }
    println!(
        "evil-frontend: {} malformed tx requests all got NETIF_RSP_ERROR",
        malformed.len()
    );

    // Forged source MAC: B's and a victim-like address; dropped.
    let mut forged = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    forged.write_bytes(0, &frame([0xff; 6], b.mac, 64, 0x22));
    forged.write_bytes(2048, &frame([0xff; 6], [2, 0, 0, 0, 0, 1], 64, 0x22));
    let gf = grant(backend, &forged, true);
    for (i, offset) in [0u16, 2048].into_iter().enumerate() {
        let status = tx_status(&mut a, tx(gf, offset, 64, 20 + i as u16));
        assert_eq!(
            status, NETIF_RSP_DROPPED,
            "evil-frontend: a forged source MAC got status {status}"
        );
    }
    println!("evil-frontend: 2 frames with a forged source MAC dropped");

    // Bad rx pages. First let B fill every page A posted (A does not
    // repost), then post a read-only page, an ungranted and a foreign
    // reference, a padded request and one good page, and send again.
    let mut bpage = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    bpage.write_bytes(0, &frame([0xff; 6], b.mac, 100, 0x33));
    let gb = grant(backend, &bpage, true);
    let mut filled = 0;
    let mut sent_b = 0u16;
    while filled < RX_PAGES {
        sent_b += 1;
        let _ = tx_status(&mut b, tx(gb, 0, 100, sent_b));
        while let Some(rsp) = a.rx.take() {
            assert!(rsp.status > 0, "evil-frontend: honest rx got {rsp:?}");
            filled += 1;
        }
    }
    let mut ro = Frame::alloc().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    ro.write_bytes(0, &[0x5a; 4096]);
    let g_ro = grant(backend, &ro, true);
    let g_rx_foreign = grant(victim, &ro, false);
    let bad_rx = [
        (
            "read-only page",
            NetifRxRequest {
                id: 100,
                pad: 0,
                gref: g_ro,
            },
        ),
        (
            "ungranted reference",
            NetifRxRequest {
                id: 101,
                pad: 0,
                gref: 1999,
            },
        ),
        (
            "foreign reference",
            NetifRxRequest {
                id: 102,
                pad: 0,
                gref: g_rx_foreign,
            },
        ),
        (
            "padded request",
            NetifRxRequest {
                id: 103,
                pad: 7,
                gref: a.rx_pages[0].1,
            },
        ),
    ];
    for (_, req) in &bad_rx {
        a.rx.push(req);
    }
    a.rx.push(&NetifRxRequest {
        id: 0,
        pad: 0,
        gref: a.rx_pages[0].1,
    });
    a.rx.publish();
    let _ = events::notify(a.port);
    let mut answered: Vec<NetifRxResponse> = Vec::new();
    while !answered.iter().any(|r| r.id == 0) {
        sent_b += 1;
        let _ = tx_status(&mut b, tx(gb, 0, 100, sent_b));
        while let Some(rsp) = a.rx.take() {
            answered.push(rsp);
        }
    }
    for (what, req) in &bad_rx {
        let rsp = answered.iter().find(|r| r.id == req.id);
        assert!(
            matches!(rsp, Some(r) if r.status == NETIF_RSP_ERROR),
            "evil-frontend: rx `{what}` got {rsp:?}"
        );
    }
    let mut data = vec![0u8; 4096];
    ro.read_bytes(0, &mut data);
    assert!(
        data.iter().all(|&x| x == 0x5a),
        "evil-frontend: a read-only rx page was written"
    );
    let good_rsp = answered.iter().find(|r| r.id == 0);
    assert!(
        matches!(good_rsp, Some(r) if r.status == 100),
        "evil-frontend: the good rx page after the bad ones got {good_rsp:?}"
    );
    println!(
        "evil-frontend: rx pages read-only, ungranted, foreign and padded all got NETIF_RSP_ERROR; the next good page got its frame"
    );
    // Take back B's rx responses (others' broadcasts reach it) and repost.
    while let Some(rsp) = b.rx.take() {
        b.repost(rsp.id);
    }

    // A storm: the tx ring kept full of frames to A's own address (the
    // bridge drops them at once); every request is answered.
    page.write_bytes(0, &frame(a.mac, a.mac, 60, 0x44));
    let size = a.tx.front.size();
    let mut answered_storm = 0u32;
    let mut pending = 0u32;
    for i in 0..storm {
        a.tx.push(&tx(good, 0, 60, (i % 60000) as u16));
        pending += 1;
        if pending == size || i + 1 == storm {
            a.tx.publish();
            let _ = events::notify(a.port);
            while pending > 0 {
                let rsp = wait_response(&mut a.tx);
                assert!(
                    rsp.status == NETIF_RSP_DROPPED || rsp.status == NETIF_RSP_OKAY,
                    "evil-frontend: storm frame got {rsp:?}"
                );
                pending -= 1;
                answered_storm += 1;
            }
        }
    }
    println!("evil-frontend: storm of {storm} tx requests, {answered_storm} answered");

    // Broken indices: one request more than the tx ring holds, an rx
    // producer far ahead, a tx producer behind the consumer.
    let next = a.tx.mem.read_u32(REQ_PROD);
    let a = break_ring(
        a,
        false,
        next.wrapping_add(size + 1),
        "tx req_prod one past a full ring",
    );
    let a = break_ring(
        a,
        true,
        0x4000_0000,
        "rx req_prod far ahead of the consumer",
    );
    let mut a = {
        let mut a = a;
        // Take a request and answer, so "behind" is well defined: then
        // step the producer back below the consumer.
        page.write_bytes(0, &frame(a.mac, a.mac, 60, 0x55));
        let _ = tx_status(&mut a, tx(good, 0, 60, 1));
        let now = a.tx.mem.read_u32(REQ_PROD);
        break_ring(
            a,
            false,
            now.wrapping_sub(1),
            "tx req_prod behind the consumer",
        )
    };

    // Honest traffic again: A's broadcast reaches B.
    page.write_bytes(0, &frame([0xff; 6], a.mac, 200, 0x66));
    let status = tx_status(&mut a, tx(good, 0, 200, 77));
    assert_eq!(
        status, NETIF_RSP_OKAY,
        "evil-frontend: honest frame after reconnecting"
    );
    loop {
        let rsp = wait_response(&mut b.rx);
        let (p, _) = &b.rx_pages[usize::from(rsp.id)];
        let mut got = vec![0u8; usize::try_from(rsp.status.max(0)).unwrap_or(0)];
        p.read_bytes(0, &mut got);
        b.repost(rsp.id);
        if got.get(6..12) == Some(&a.mac[..]) && got.len() == 200 && got[14] == 0x66 {
            break;
        }
    }
    println!("evil-frontend: reconnected; honest frames flow again");
    a.close();
    b.close();
    for g in [good, foreign, gf, gb, g_ro, g_rx_foreign] {
        assert!(end_grant(g), "evil-frontend: grant {g} still in use");
    }
    drop((page, forged, bpage, ro));
    println!("evil-frontend: all netif attacks answered");
}
