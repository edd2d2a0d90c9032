//! `evil-frontend`: a blkfront that attacks its backend (SPEC.md BLK-4,
//! BLK-9, RING-6) while another guest uses the same backend.
//!
//! Every malformed request must come back with an error response and no
//! effect; a storm of requests must all be answered; a producer index far
//! ahead of the consumer must make the backend close the record (and
//! nothing else); the guest then reconnects and does honest I/O again.
//! Each step prints one line; the last is `evil-frontend: all attacks
//! answered`. Anything unexpected panics (the scenario fails on `crashed`).
//!
//! Command line: `victim=<domid>` (a domain to hand a foreign grant to),
//! `storm=<n>` (requests in the storm, default 2000), `mode=`:
//! - `blk` (default): the blkif attacks above;
//! - `net`: the same for netif on two vifs (`net` module, issue 7);
//! - `xsa-155`: requests rewritten while blkback and netback process them,
//!   with the XSA-216 checks (`xsa` module), `rounds=<n>` (default 200);
//! - `xsa-216`: the XSA-216 checks without rewriting;
//! - `xsa-332`: an event storm at both backends (`storm` module), until
//!   the `victim` domain (`mode=victim peer=<attacker>`) has measured its
//!   I/O with and without it.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

extern crate alloc;

mod net;
mod raw;
mod storm;
mod xsa;

use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::blkif::*;
use hypercall_abi::devbus::{
    DEVBUS_KIND_BLK, DEVBUS_KIND_NET, DEVBUS_SIDE_BACK, DEVBUS_STATE_CONNECTED,
};
use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::devices::blkfront::{find_disk, BlkError, BlockFront, Op};
use pv_guest_kit::devices::{devbus, grant_table};
use pv_guest_kit::events;
use pv_guest_kit::mm::Frame;
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

fn seg(gref: u32, first: u8, last: u8) -> BlkifSegment {
    BlkifSegment {
        gref,
        first_sect: first,
        last_sect: last,
        pad: 0,
    }
}

fn read_req(sector: u64, segs: &[BlkifSegment]) -> BlkifRequest {
    let mut req = BlkifRequest {
        operation: BLKIF_OP_READ,
        nr_segments: segs.len() as u8,
        sector_number: sector,
        ..BlkifRequest::default()
    };
    req.seg[..segs.len()].copy_from_slice(segs);
    req
}

/// Sends `req` raw and returns the response status.
fn status_of(front: &mut BlockFront, req: &BlkifRequest) -> i16 {
    let id = front
        .submit_raw(req)
        .unwrap_or_else(|e| panic!("evil-frontend: submit: {e}"));
    front
        .wait(id)
        .unwrap_or_else(|e| panic!("evil-frontend: waiting for {id}: {e}"))
        .status
}

fn grant(backend: u32, frame: &Frame, readonly: bool) -> u32 {
    grant_table(|t| t.grant_access(backend, frame.mfn(), readonly))
        .and_then(|r| r)
        .unwrap_or_else(|e| panic!("evil-frontend: grant: {e}"))
}

/// DEV-2/DEV-3 against the record table: an unprivileged frontend can
/// neither create, destroy nor connect records, nor publish a port the
/// backend cannot bind, nor see other domains' records.
fn devbus_attacks(id: u32, backend: u32, victim: u32) {
    use hypercall_abi::devbus::*;
    use hypercall_abi::Errno;

    let fake = DevbusCreate {
        kind: DEVBUS_KIND_BLK,
        backend: victim,
        frontend: backend,
        sector_size: 512,
        sectors: 8,
        ..DevbusCreate::default()
    };
    assert_eq!(devbus::create(&fake), Err(Errno::EPERM), "create");
    assert_eq!(devbus::destroy(id), Err(Errno::EPERM), "destroy");
    let connect = DevbusConnect {
        id,
        ..DevbusConnect::default()
    };
    assert_eq!(
        devbus::connect(&connect),
        Err(Errno::EPERM),
        "connect as frontend"
    );
    assert_eq!(
        devbus::reset(id),
        Err(Errno::EBUSY),
        "reset while initialising"
    );
    // A port unbound for the victim, not for the backend.
    let port = events::alloc_unbound(victim).unwrap_or_else(|e| panic!("evil-frontend: {e}"));
    let publish = DevbusPublish {
        id,
        nr_ring_pages: 1,
        event_port: port,
        pad: 0,
        ring_refs: [0; 8],
    };
    assert_eq!(
        devbus::publish(&publish),
        Err(Errno::EINVAL),
        "foreign port"
    );
    let bad_pages = DevbusPublish {
        nr_ring_pages: 3,
        ..publish
    };
    assert_eq!(
        devbus::publish(&bad_pages),
        Err(Errno::EINVAL),
        "3 ring pages"
    );
    let _ = events::close(port);
    let visible = devbus::records().unwrap_or_else(|e| panic!("evil-frontend: {e}"));
    assert!(
        visible
            .iter()
            .all(|r| r.frontend == pv_guest_kit::start_info().domid),
        "evil-frontend: sees another domain's records"
    );
    assert_eq!(
        devbus::close(id + 1000),
        Err(Errno::ENOENT),
        "close of no record"
    );
    println!("evil-frontend: devbus refused create, destroy, connect, a foreign port and a bad ring size; only its own record is visible");
}

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    let victim = args.get_u64("victim").unwrap_or(2) as u32;
    let storm = args.get_u64("storm").unwrap_or(2000);
    let rounds = args.get_u64("rounds").unwrap_or(200) as u32;
    let me = si.domid;
    match args.get("mode").unwrap_or("blk") {
        "blk" => blk_attacks(si, victim, storm),
        "net" => net::attack(me, victim, storm as u32),
        mode @ ("xsa-155" | "xsa-216") => {
            let flip = mode == "xsa-155";
            let vifs = raw::my_records(me, DEVBUS_KIND_NET, 2);
            assert!(vifs.len() >= 2, "evil-frontend: needs two vifs");
            let mut tx = raw::RawNet::connect(vifs[0].id, 0x5a);
            let mut rx = raw::RawNet::connect(vifs[1].id, 0x5a);
            xsa::net(&mut tx, &mut rx, victim, rounds, flip);
            xsa::leak_checks_net(&mut tx, &mut rx);
            tx.close();
            rx.close();
            // A second, read-only record (xsa-155) over the same units.
            let disks = raw::my_records(me, DEVBUS_KIND_BLK, if flip { 2 } else { 1 });
            let mut blk = raw::RawBlk::connect(disks[0].id);
            xsa::blk(&mut blk, victim, rounds, flip);
            if let (true, Some(ro)) = (flip, disks.get(1)) {
                let mut ro = raw::RawBlk::connect(ro.id);
                xsa::blk_readonly(&mut ro, &mut blk, rounds / 2);
                ro.close();
            }
            blk.close();
            println!("evil-frontend: {mode}: all checks passed");
        }
        "xsa-332" => storm::attack(me, victim),
        "victim" => storm::victim(
            me,
            args.get_u64("peer").unwrap_or(1) as u32,
            args.get_u64("rounds").unwrap_or(8) as u32,
        ),
        other => panic!("evil-frontend: unknown mode `{other}`"),
    }
}

fn blk_attacks(si: &'static StartInfo, victim: u32, storm: u64) {
    if let Err(e) = devbus::watch() {
        panic!("evil-frontend: VIRQ_DEVBUS: {e}");
    }
    let mut record = None;
    events::wait_until(|| {
        record = find_disk(si.domid).unwrap_or_else(|e| panic!("evil-frontend: devbus: {e}"));
        record.is_some()
    });
    let Some(record) = record else { return };
    devbus_attacks(record.id, record.backend, victim);
    let mut front =
        BlockFront::connect(record.id).unwrap_or_else(|e| panic!("evil-frontend: connect: {e}"));
    let units = front.info().sectors;
    let backend = front.backend();
    println!("evil-frontend: connected, {units} units; attacking");

    // A known pattern at units 0..8, to prove failed writes change nothing.
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    front
        .write(0, &pattern)
        .unwrap_or_else(|e| panic!("evil-frontend: honest write: {e}"));

    let page = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    let good = grant(backend, &page, false);
    let readonly = grant(backend, &page, true);
    let foreign = grant(victim, &page, false);

    let mut attacks: Vec<(&str, BlkifRequest)> = vec![
        ("sector at the end", read_req(units, &[seg(good, 0, 0)])),
        (
            "sector overflow",
            read_req(u64::MAX - 1, &[seg(good, 0, 7)]),
        ),
        (
            "last unit past the end",
            read_req(units - 1, &[seg(good, 0, 1)]),
        ),
        ("no segments", read_req(0, &[])),
        ("reversed segment", read_req(0, &[seg(good, 5, 2)])),
        ("segment past the page", read_req(0, &[seg(good, 0, 9)])),
        ("ungranted reference", read_req(0, &[seg(1999, 0, 7)])),
        (
            "reference granted to another domain",
            read_req(0, &[seg(foreign, 0, 7)]),
        ),
        (
            "read into a read-only grant",
            read_req(0, &[seg(readonly, 0, 7)]),
        ),
    ];
    let mut too_many = read_req(0, &[seg(good, 0, 0)]);
    too_many.nr_segments = 12;
    attacks.push(("12 segments", too_many));
    let mut garbage = read_req(0, &[seg(good, 0, 0)]);
    garbage.operation = 0x42;
    attacks.push(("unknown operation", garbage));
    let mut padded = read_req(0, &[seg(good, 0, 0)]);
    padded.pad1 = 0xbeef;
    attacks.push(("non-zero padding", padded));
    attacks.push((
        "indirect, too many segments",
        BlkifRequest {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: BLKIF_OP_READ,
            nr_indirect_segments: 1000,
            indirect_grefs: [good, good],
            ..BlkifRequest::default()
        },
    ));
    // An indirect page full of garbage segments (the page is all 0xff).
    let mut junk = Frame::alloc().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    junk.write_bytes(0, &[0xff; 4096]);
    let junk_ref = grant(backend, &junk, true);
    attacks.push((
        "indirect page of garbage",
        BlkifRequest {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: BLKIF_OP_READ,
            nr_indirect_segments: 100,
            indirect_grefs: [junk_ref, 0],
            ..BlkifRequest::default()
        },
    ));
    attacks.push((
        "discard past the end",
        BlkifRequest {
            operation: BLKIF_OP_DISCARD,
            sector_number: units - 4,
            nr_sectors: 8,
            ..BlkifRequest::default()
        },
    ));
    // A write whose second segment's grant is bad: nothing may be written.
    let mut half_bad = read_req(0, &[seg(good, 0, 7), seg(1999, 0, 7)]);
    half_bad.operation = BLKIF_OP_WRITE;
    attacks.push(("write with one bad grant", half_bad));

    let total = attacks.len();
    for (what, req) in &attacks {
        let status = status_of(&mut front, req);
        assert!(
            status == BLKIF_RSP_ERROR || status == BLKIF_RSP_EOPNOTSUPP,
            "evil-frontend: `{what}` got status {status}"
        );
    }
    let mut back = vec![0u8; 4096];
    front
        .read(0, &mut back)
        .unwrap_or_else(|e| panic!("evil-frontend: read back: {e}"));
    assert!(
        back == pattern,
        "evil-frontend: a refused write changed the disk"
    );
    println!(
        "evil-frontend: {total} malformed requests all got error responses; the disk is unchanged"
    );

    // A storm: the ring is kept full, every request must be answered.
    let mut pending = Vec::new();
    let mut answered = 0u64;
    for i in 0..storm {
        let id = front
            .submit(Op::Read {
                sector: (i * 8) % (units - 8),
                units: 8,
            })
            .unwrap_or_else(|e| panic!("evil-frontend: storm submit: {e}"));
        pending.push(id);
        if pending.len() as u32 >= front.ring_size() {
            front
                .kick()
                .unwrap_or_else(|e| panic!("evil-frontend: kick: {e}"));
            for id in pending.drain(..) {
                let c = front
                    .wait(id)
                    .unwrap_or_else(|e| panic!("evil-frontend: storm wait: {e}"));
                assert_eq!(c.status, BLKIF_RSP_OKAY);
                answered += 1;
            }
        }
    }
    for id in pending.drain(..) {
        let c = front
            .wait(id)
            .unwrap_or_else(|e| panic!("evil-frontend: storm wait: {e}"));
        assert_eq!(c.status, BLKIF_RSP_OKAY);
        answered += 1;
    }
    println!("evil-frontend: storm of {storm} requests, {answered} answered");

    // A producer index far ahead of the consumer (RING-6): the backend must
    // close the record.
    front
        .poke_ring(0, 0x4000_0000)
        .unwrap_or_else(|e| panic!("evil-frontend: poke: {e}"));
    let id = front.record();
    let closed = devbus::wait_for(id, |r| r.closed_sides & DEVBUS_SIDE_BACK != 0)
        .unwrap_or_else(|e| panic!("evil-frontend: devbus: {e}"));
    assert!(closed.is_some(), "evil-frontend: the record vanished");
    match front.submit(Op::Flush) {
        Err(BlkError::Closed) => {}
        other => panic!("evil-frontend: a closed device accepted a request: {other:?}"),
    }
    println!("evil-frontend: req_prod far ahead of the consumer: the backend closed the device");

    // Reconnect and do honest I/O again.
    let mut front = front
        .reconnect()
        .unwrap_or_else(|e| panic!("evil-frontend: reconnect: {e}"));
    let state = devbus::get(id).ok().flatten().map(|r| r.state);
    assert_eq!(state, Some(DEVBUS_STATE_CONNECTED));
    front
        .read(0, &mut back)
        .unwrap_or_else(|e| panic!("evil-frontend: read after reconnect: {e}"));
    assert!(back == pattern, "evil-frontend: the disk changed");
    front
        .flush()
        .unwrap_or_else(|e| panic!("evil-frontend: flush: {e}"));
    println!("evil-frontend: reconnected; honest I/O works again");
    front
        .disconnect()
        .unwrap_or_else(|e| panic!("evil-frontend: disconnect: {e}"));
    for gref in [good, readonly, foreign, junk_ref] {
        let ended = grant_table(|t| t.end_access(gref).is_ok()).unwrap_or(false);
        assert!(ended, "evil-frontend: grant {gref} still in use");
    }
    drop((page, junk));
    println!("evil-frontend: all attacks answered");
}
