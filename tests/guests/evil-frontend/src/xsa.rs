//! The backend halves of XSA-155 (double fetch) and XSA-216 (stray bytes in
//! responses) against blkback and netback, on raw rings (SPEC.md RING-5,
//! BLK-4, BLK-7, NET-2, NET-3).
//!
//! XSA-155: after publishing a request the frontend keeps rewriting words
//! of its slot (the sector, a segment, the tx grant/offset, the tx size)
//! between a valid version, another valid version and invalid ones, until
//! the response arrives. Each word is written with one aligned 8-byte
//! store, so any single copy the backend takes is some combination of
//! versions of each word; every combination is either valid (and then the
//! result must be exactly that combination's: the data of one sector, the
//! frame at one offset with one size) or invalid (then refused with no
//! effect). A backend that checks one fetch and uses another would move
//! data from outside the frontend's disk view or page, or a mix.
//!
//! XSA-216: every response field the protocol defines is checked, every
//! byte it does not define (pads, the rest of a slot after the response,
//! the bytes of a granted page the request did not cover, rx pages past the
//! frame) must be zero or exactly what the frontend left there.
//!
//! Both run with `flip` (XSA-155) or without (XSA-216 alone).

use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::blkif::*;
use hypercall_abi::netif::*;
use hypercall_abi::ring::RingMemory;
use hypercall_abi::DomId;
use pv_guest_kit::events;
use pv_guest_kit::hypercall::sched_yield;
use pv_guest_kit::mm::Frame;
use pv_guest_kit::println;
use pv_guest_kit::time::now_ns;
use zerocopy::IntoBytes;

use crate::raw::{end_grant, grant, wait_response, RawBlk, RawNet};

/// Marker in pages whose untouched bytes are checked.
const MARK: u8 = 0x5a;
/// Most flips while waiting for one response (a stuck backend fails the test).
const MAX_FLIPS: u64 = 200_000_000;

/// Byte `i` of the pattern of disk units `base ..`.
fn pattern(base: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 31 + base * 7 + 3) % 251) as u8 ^ (base as u8))
        .collect()
}

fn seg(gref: u32, first: u8, last: u8) -> BlkifSegment {
    BlkifSegment {
        gref,
        first_sect: first,
        last_sect: last,
        pad: 0,
    }
}

fn seg_word(s: BlkifSegment) -> u64 {
    u64::from(s.gref)
        | u64::from(s.first_sect) << 32
        | u64::from(s.last_sect) << 40
        | u64::from(s.pad) << 48
}

fn rw_req(op: u8, sector: u64, segs: &[BlkifSegment]) -> BlkifRequest {
    let mut req = BlkifRequest {
        operation: op,
        nr_segments: segs.len() as u8,
        sector_number: sector,
        ..BlkifRequest::default()
    };
    req.seg[..segs.len()].copy_from_slice(segs);
    req
}

/// Checks a blkif response's defined fields and its zero pads (XSA-216).
fn check_blk_response(rsp: &BlkifResponse, id: u64, op: u8, what: &str) {
    assert!(
        rsp.id == id && rsp.operation == op && rsp.pad0 == 0 && rsp.pad1 == 0,
        "evil-frontend: {what}: response {rsp:?} (want id {id}, operation {op}, zero pads)"
    );
    assert!(
        matches!(
            rsp.status,
            BLKIF_RSP_OKAY | BLKIF_RSP_ERROR | BLKIF_RSP_EOPNOTSUPP
        ),
        "evil-frontend: {what}: undefined status {}",
        rsp.status
    );
}

/// Sends `req` and, with `flip`, rewrites the 8-byte words at the given slot
/// offsets through their versions until the response is published. Returns
/// the response and the slot's bytes as the frontend last wrote them.
fn race(
    blk: &mut RawBlk,
    req: &BlkifRequest,
    flips: &[(usize, &[u64])],
    flip: bool,
) -> (BlkifResponse, Vec<u8>) {
    let mut written = req.as_bytes().to_vec();
    let at = blk.ring.push(req);
    let before = blk.ring.rsp_prod();
    blk.ring.publish();
    let _ = events::notify(blk.port);
    if flip {
        let mut n = 0u64;
        let mut word = [0u64; 4];
        'flip: while n < MAX_FLIPS {
            for (k, (offset, versions)) in flips.iter().enumerate() {
                // Word k steps through its versions at its own rate, so every
                // combination comes up.
                word[k] = versions[((n / (k as u64 * 2 + 1)) % versions.len() as u64) as usize];
                blk.ring
                    .mem
                    .write_bytes(at + offset, &word[k].to_le_bytes());
                written[*offset..offset + 8].copy_from_slice(&word[k].to_le_bytes());
                if blk.ring.rsp_prod() != before {
                    break 'flip;
                }
            }
            n += 1;
        }
        assert!(n < MAX_FLIPS, "evil-frontend: no response while flipping");
    }
    let rsp = wait_response(&mut blk.ring);
    // XSA-216: the response wrote its 16 bytes and nothing else of the slot.
    let slot = blk.ring.bytes(at, written.len());
    assert!(
        slot[16..] == written[16..],
        "evil-frontend: the backend wrote past its response in the slot"
    );
    (rsp, written)
}

/// Outcome counts of a race.
#[derive(Default, Debug)]
struct Outcomes {
    first: u32,
    second: u32,
    refused: u32,
    forged: u32,
}

impl Outcomes {
    fn kinds(&self) -> u32 {
        u32::from(self.first > 0) + u32::from(self.second > 0) + u32::from(self.refused > 0)
    }
}

/// blkback: reads and writes whose sector and segment change under the
/// backend. `rounds` requests of each kind.
pub fn blk(blk: &mut RawBlk, victim: DomId, rounds: u32, flip: bool) {
    let backend = blk.backend;
    let sectors = blk.sectors;
    let mut page = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    let good = grant(backend, &page, false);
    let foreign = grant(victim, &page, false);
    let mut src_a = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    let mut src_b = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    let (pat_a, pat_b) = (pattern(0, 4096), pattern(8, 4096));
    src_a.write_bytes(0, &pat_a);
    src_b.write_bytes(0, &pat_b);
    let ga = grant(backend, &src_a, true);
    let gb = grant(backend, &src_b, true);
    let zero = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    let gz = grant(backend, &zero, true);
    let mut id = 1000u64;
    let honest = |blk: &mut RawBlk, id: &mut u64, req: BlkifRequest| {
        *id += 1;
        let (rsp, _) = race(blk, &BlkifRequest { id: *id, ..req }, &[], false);
        check_blk_response(&rsp, *id, req.operation, "honest request");
        assert_eq!(
            rsp.status, BLKIF_RSP_OKAY,
            "evil-frontend: honest request failed"
        );
    };
    // Units 0..8 hold pattern A, 8..16 pattern B.
    honest(
        blk,
        &mut id,
        rw_req(BLKIF_OP_WRITE, 0, &[seg(ga, 0, 7), seg(gb, 0, 7)]),
    );

    // Reads: sector 0 / 8 / past the end, segment good / past the page /
    // granted to another domain.
    let sectors_v = [0u64, 8, sectors - 4];
    let segs_v = [
        seg_word(seg(good, 0, 7)),
        seg_word(seg(good, 0, 9)),
        seg_word(seg(foreign, 0, 7)),
    ];
    let mut reads = Outcomes::default();
    for round in 0..rounds {
        page.write_bytes(0, &[MARK; 4096]);
        id += 1;
        let req = BlkifRequest {
            id,
            ..rw_req(BLKIF_OP_READ, 0, &[seg(good, 0, 7)])
        };
        let (rsp, _) = race(blk, &req, &[(16, &sectors_v), (32, &segs_v)], flip);
        check_blk_response(&rsp, id, BLKIF_OP_READ, "racing read");
        let mut data = vec![0u8; 4096];
        page.read_bytes(0, &mut data);
        match rsp.status {
            BLKIF_RSP_OKAY if data == pat_a => reads.first += 1,
            BLKIF_RSP_OKAY if data == pat_b => reads.second += 1,
            BLKIF_RSP_OKAY => panic!(
                "evil-frontend: read {round} succeeded with data of neither version (a mixed or out-of-range fetch): {:02x?}",
                &data[..16]
            ),
            _ => {
                assert!(
                    data.iter().all(|&b| b == MARK),
                    "evil-frontend: refused read {round} wrote the page"
                );
                reads.refused += 1;
            }
        }
    }
    // Writes: units 16.. or 24.. or past the end, from page A or B or a
    // foreign grant.
    let wsectors_v = [16u64, 24, sectors - 2];
    let wsegs_v = [
        seg_word(seg(ga, 0, 7)),
        seg_word(seg(gb, 0, 7)),
        seg_word(seg(foreign, 0, 7)),
    ];
    let mut writes = Outcomes::default();
    let wrounds = (rounds / 4).max(4);
    for round in 0..wrounds {
        honest(
            blk,
            &mut id,
            rw_req(BLKIF_OP_WRITE, 16, &[seg(gz, 0, 7), seg(gz, 0, 7)]),
        );
        id += 1;
        let req = BlkifRequest {
            id,
            ..rw_req(BLKIF_OP_WRITE, 16, &[seg(ga, 0, 7)])
        };
        let (rsp, _) = race(blk, &req, &[(16, &wsectors_v), (32, &wsegs_v)], flip);
        check_blk_response(&rsp, id, BLKIF_OP_WRITE, "racing write");
        page.write_bytes(0, &[MARK; 4096]);
        let mut back = vec![0u8; 8192];
        for (i, sector) in [16u64, 24].into_iter().enumerate() {
            honest(
                blk,
                &mut id,
                rw_req(BLKIF_OP_READ, sector, &[seg(good, 0, 7)]),
            );
            page.read_bytes(0, &mut back[i * 4096..(i + 1) * 4096]);
        }
        let (lo, hi) = back.split_at(4096);
        let zero4k = [0u8; 4096];
        let is = |d: &[u8]| d == pat_a.as_slice() || d == pat_b.as_slice();
        if rsp.status == BLKIF_RSP_OKAY {
            let one = (is(lo) && hi == zero4k) || (lo == zero4k && is(hi));
            assert!(
                one,
                "evil-frontend: write {round} succeeded but the disk holds neither version at one place"
            );
            if lo == pat_a.as_slice() || hi == pat_a.as_slice() {
                writes.first += 1;
            } else {
                writes.second += 1;
            }
        } else {
            assert!(
                lo == zero4k && hi == zero4k,
                "evil-frontend: refused write {round} changed the disk"
            );
            writes.refused += 1;
        }
    }
    println!(
        "evil-frontend: blkback, {rounds} reads {}: {} got sector 0, {} sector 8, {} refused; {wrounds} writes: {} page A, {} page B, {} refused; each result exactly one version",
        if flip { "rewritten under the backend" } else { "checked" },
        reads.first,
        reads.second,
        reads.refused,
        writes.first,
        writes.second,
        writes.refused
    );
    if flip {
        assert!(
            reads.kinds() >= 2 && writes.kinds() >= 2,
            "evil-frontend: the rewrites never changed what the backend saw ({reads:?}, {writes:?})"
        );
    }
    leak_checks_blk(blk, &mut page, good, &mut id);
    for g in [good, foreign, ga, gb, gz] {
        assert!(end_grant(g), "evil-frontend: grant {g} still in use");
    }
    drop((page, src_a, src_b, zero));
}

/// XSA-155 on a read-only record (`ro`, a view of the same units as `rw`
/// from unit 0): a READ whose operation word flips to WRITE under the
/// backend. Only the check of the copy keeps a write off a read-only device
/// (the store does not know), so a backend that checked one fetch and acted
/// on another would change the disk. The flipped word overlaps the
/// response's `id` (bytes 0..8 of the slot), so only the status (bytes
/// 10..12) is read; the disk, read back through `rw`, must never change.
pub fn blk_readonly(ro: &mut RawBlk, rw: &mut RawBlk, rounds: u32) {
    let mut page = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    let g_ro = grant(ro.backend, &page, false);
    let g_rw = grant(rw.backend, &page, false);
    let mut src = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    src.write_bytes(0, &pattern(99, 4096));
    let g_src = grant(ro.backend, &src, true);
    let mut id = 5000u64;
    let read_back = |rw: &mut RawBlk, page: &mut Frame, id: &mut u64| {
        *id += 1;
        let req = BlkifRequest {
            id: *id,
            ..rw_req(BLKIF_OP_READ, 0, &[seg(g_rw, 0, 7)])
        };
        let (rsp, _) = race(rw, &req, &[], false);
        assert_eq!(rsp.status, BLKIF_RSP_OKAY, "evil-frontend: read back");
        let mut data = vec![0u8; 4096];
        page.read_bytes(0, &mut data);
        data
    };
    let before = read_back(rw, &mut page, &mut id);
    // Word 0: operation, nr_segments, indirect_op, pad0, nr_indirect_segments, pad1.
    let read_word = u64::from(BLKIF_OP_READ) | 1 << 8;
    let write_word = u64::from(BLKIF_OP_WRITE) | 1 << 8;
    let mut outcomes = Outcomes::default();
    for round in 0..rounds {
        id += 1;
        let mut req = rw_req(BLKIF_OP_READ, 0, &[seg(g_ro, 0, 7)]);
        req.id = id;
        let at = ro.ring.push(&req);
        let prod = ro.ring.rsp_prod();
        ro.ring.publish();
        let _ = events::notify(ro.port);
        let mut n = 0u64;
        while n < MAX_FLIPS && ro.ring.rsp_prod() == prod {
            let w = if n.is_multiple_of(2) {
                write_word
            } else {
                read_word
            };
            // The segment names the source page for a write, the buffer for
            // a read: both are granted, so either version is well formed.
            let sw = if n.is_multiple_of(2) {
                seg_word(seg(g_src, 0, 7))
            } else {
                seg_word(seg(g_ro, 0, 7))
            };
            ro.ring.mem.write_bytes(at, &w.to_le_bytes());
            ro.ring.mem.write_bytes(at + 32, &sw.to_le_bytes());
            n += 1;
        }
        assert!(n < MAX_FLIPS, "evil-frontend: no response while flipping");
        let rsp = wait_response(&mut ro.ring);
        match rsp.status {
            BLKIF_RSP_OKAY => outcomes.first += 1,
            BLKIF_RSP_ERROR => outcomes.refused += 1,
            other => panic!("evil-frontend: read-only race {round}: status {other}"),
        }
        if round % 8 == 7 || round + 1 == rounds {
            let now = read_back(rw, &mut page, &mut id);
            assert!(
                now == before,
                "evil-frontend: a write reached the read-only device (round {round})"
            );
        }
    }
    println!(
        "evil-frontend: blkback, {rounds} requests on a read-only device flipping between READ and WRITE: {} read, {} refused; the device never changed",
        outcomes.first, outcomes.refused
    );
    assert!(
        outcomes.first > 0 && outcomes.refused > 0,
        "evil-frontend: the flips never changed what the backend saw ({outcomes:?})"
    );
    for g in [g_ro, g_rw, g_src] {
        assert!(end_grant(g), "evil-frontend: grant {g} still in use");
    }
    drop((page, src));
}

/// XSA-216 on blkif beyond the race: a partial-page read touches exactly
/// its units; failed and other operations leave the page alone; every
/// response is fully defined.
fn leak_checks_blk(blk: &mut RawBlk, page: &mut Frame, good: u32, id: &mut u64) {
    let sectors = blk.sectors;
    let cases: [(&str, BlkifRequest, bool); 5] = [
        (
            "read of units 2..=4",
            rw_req(BLKIF_OP_READ, 0, &[seg(good, 2, 4)]),
            true,
        ),
        (
            "read past the end",
            rw_req(BLKIF_OP_READ, sectors, &[seg(good, 0, 7)]),
            false,
        ),
        (
            "flush",
            BlkifRequest {
                operation: BLKIF_OP_FLUSH_DISKCACHE,
                ..BlkifRequest::default()
            },
            true,
        ),
        (
            "discard",
            BlkifRequest {
                operation: BLKIF_OP_DISCARD,
                sector_number: 40,
                nr_sectors: 8,
                ..BlkifRequest::default()
            },
            true,
        ),
        (
            "unknown operation",
            BlkifRequest {
                operation: 0x42,
                ..BlkifRequest::default()
            },
            false,
        ),
    ];
    for (what, req, ok) in cases {
        page.write_bytes(0, &[MARK; 4096]);
        *id += 1;
        let (rsp, _) = race(blk, &BlkifRequest { id: *id, ..req }, &[], false);
        check_blk_response(&rsp, *id, req.operation, what);
        assert_eq!(
            rsp.status == BLKIF_RSP_OKAY,
            ok,
            "evil-frontend: {what}: status {}",
            rsp.status
        );
        let mut data = vec![0u8; 4096];
        page.read_bytes(0, &mut data);
        let (lo, hi) = if req.operation == BLKIF_OP_READ && ok {
            (1024, 2560)
        } else {
            (0, 0)
        };
        let untouched = data[..lo].iter().chain(&data[hi..]).all(|&b| b == MARK);
        assert!(
            untouched,
            "evil-frontend: {what}: bytes of the page outside the transfer changed"
        );
        if lo < hi {
            assert!(
                data[lo..hi] == pattern(0, 4096)[..hi - lo],
                "evil-frontend: {what}: wrong data"
            );
        }
    }
    println!("evil-frontend: blkif responses: ids, operations and statuses as sent, pads zero, nothing written past a response or outside a transfer");
}

/// Byte `i` of the tx page: three frame headers (broadcast, the vif's MAC,
/// ethertype 0x88b5) at 0, 2048 and 3600, a position pattern elsewhere.
fn tx_page(mac: [u8; 6]) -> Vec<u8> {
    let mut page: Vec<u8> = (0..4096u32).map(|i| (i * 13 % 253) as u8).collect();
    for at in TX_OFFSETS {
        page[at..at + 6].copy_from_slice(&[0xff; 6]);
        page[at + 6..at + 12].copy_from_slice(&mac);
        page[at + 12..at + 14].copy_from_slice(&[0x88, 0xb5]);
    }
    page
}

const TX_OFFSETS: [usize; 3] = [0, 2048, 3600];

fn tx_word0(gref: u32, offset: u16) -> u64 {
    u64::from(gref) | u64::from(offset) << 32
}

fn tx_word1(id: u16, size: u16) -> u64 {
    u64::from(id) | u64::from(size) << 16
}

/// Waits for vif `rx`'s next frame from `src`; reposts every page it takes
/// (after refilling it with the marker). Checks every rx response and the
/// page bytes past the frame (XSA-216). Returns the frame.
fn next_frame(rx: &mut RawNet, src: [u8; 6]) -> Vec<u8> {
    loop {
        let rsp = wait_response(&mut rx.rx);
        assert!(
            rsp.offset == 0 && rsp.flags == 0 && usize::from(rsp.id) < rx.rx_pages.len(),
            "evil-frontend: rx response {rsp:?}: offset and flags must be 0, the id one posted"
        );
        assert!(
            (i16::try_from(NETIF_MIN_FRAME).unwrap_or(0)..=NETIF_MAX_FRAME as i16)
                .contains(&rsp.status),
            "evil-frontend: rx status {}",
            rsp.status
        );
        let len = rsp.status as usize;
        let (frame_page, _) = &mut rx.rx_pages[usize::from(rsp.id)];
        let mut data = vec![0u8; 4096];
        frame_page.read_bytes(0, &mut data);
        assert!(
            data[len..].iter().all(|&b| b == MARK),
            "evil-frontend: rx page bytes past the {len}-byte frame changed"
        );
        frame_page.write_bytes(0, &[MARK; 4096]);
        data.truncate(len);
        rx.repost(rsp.id);
        if data[6..12] == src {
            return data;
        }
    }
}

/// Waits up to `ns` for vif `rx`'s next frame from `src` ([`next_frame`]
/// once one is published).
fn frame_within(rx: &mut RawNet, src: [u8; 6], ns: u64) -> Option<Vec<u8>> {
    let deadline = now_ns() + ns;
    loop {
        if rx.rx.rsp_prod() != rx.rx.front_rsp_cons() {
            let rsp_src = {
                // Peek at the frame's source without taking it.
                let rsp = rx.rx.peek();
                rsp.and_then(|r| {
                    rx.rx_pages.get(usize::from(r.id)).map(|(p, _)| {
                        let mut mac = [0u8; 6];
                        p.read_bytes(6, &mut mac);
                        mac
                    })
                })
            };
            if rsp_src == Some(src) {
                return Some(next_frame(rx, src));
            }
            // Someone else's frame: take and repost it.
            let rsp = wait_response(&mut rx.rx);
            rx.rx_pages[usize::from(rsp.id)]
                .0
                .write_bytes(0, &[MARK; 4096]);
            rx.repost(rsp.id);
            continue;
        }
        if now_ns() >= deadline {
            return None;
        }
        sched_yield();
    }
}

/// Checks a frame is exactly the page's bytes at one offset with one size.
fn one_version(frame: &[u8], content: &[u8], round: u32) {
    let ok = TX_OFFSETS.iter().any(|&o| {
        [60usize, 1000]
            .iter()
            .any(|&len| o + len <= 4096 && frame == &content[o..o + len])
    });
    assert!(
        ok,
        "evil-frontend: frame {round} ({} bytes) is no version's: a mixed or out-of-page fetch",
        frame.len()
    );
}

/// netback: frames whose size (first half of the rounds) or grant and
/// offset (second half) change under the backend, sent on `tx` and received
/// on `rx` (both this guest's vifs).
///
/// The 8-byte tx response overwrites the slot's first word (grant, offset,
/// flags), so while that word is rewritten the response itself may be
/// overwritten by the frontend: in those rounds the outcome is read from
/// the rx side (a frame arrives within 50 ms, or none) and the response's
/// fields are not checked.
pub fn net(tx: &mut RawNet, rx: &mut RawNet, victim: DomId, rounds: u32, flip: bool) {
    let backend = tx.backend;
    let mut page = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    let content = tx_page(tx.mac);
    page.write_bytes(0, &content);
    let g = grant(backend, &page, true);
    let foreign = grant(victim, &page, true);
    let word0_v = [
        tx_word0(g, 0),
        tx_word0(g, 2048),
        tx_word0(foreign, 0),
        tx_word0(g, 3600),
    ];
    let mut sent = Outcomes::default();
    let mut sizes = [0u32; 2];
    for round in 0..rounds {
        let id = (round % 1000) as u16;
        let word1_v = [
            tx_word1(id, 60),
            tx_word1(id, 1000),
            tx_word1(id, 2000),
            tx_word1(id, 5),
        ];
        // First third: the size changes; second: grant and offset; last:
        // the frame's source MAC in the page (forged or not).
        let sizes_phase = round < rounds / 3 || !flip;
        let mac_phase = flip && round >= 2 * rounds / 3;
        let req = NetifTxRequest {
            gref: g,
            offset: 0,
            flags: 0,
            id,
            size: if sizes_phase { 60 } else { 1000 },
            pad: 0,
        };
        let mut written = req.as_bytes().to_vec();
        let at = tx.tx.push(&req);
        let before = tx.tx.rsp_prod();
        tx.tx.publish();
        let _ = events::notify(tx.port);
        if mac_phase {
            // Only the source MAC differs between the two headers.
            let mut forged = content[..16].to_vec();
            forged[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x66]);
            let mut n = 0u64;
            while n < MAX_FLIPS && tx.tx.rsp_prod() == before {
                page.write_bytes(
                    0,
                    if n.is_multiple_of(2) {
                        &forged
                    } else {
                        &content[..16]
                    },
                );
                n += 1;
            }
            page.write_bytes(0, &content[..16]);
            assert!(
                n < MAX_FLIPS,
                "evil-frontend: no tx response while flipping"
            );
        } else if flip {
            let (offset, versions) = if sizes_phase {
                (8usize, &word1_v)
            } else {
                (0, &word0_v)
            };
            let mut n = 0u64;
            while n < MAX_FLIPS && tx.tx.rsp_prod() == before {
                let w = versions[(n % 4) as usize];
                tx.tx.mem.write_bytes(at + offset, &w.to_le_bytes());
                written[offset..offset + 8].copy_from_slice(&w.to_le_bytes());
                n += 1;
            }
            assert!(
                n < MAX_FLIPS,
                "evil-frontend: no tx response while flipping"
            );
        }
        let rsp = wait_response(&mut tx.tx);
        let delivered = if sizes_phase || mac_phase {
            assert!(
                rsp.id == id
                    && rsp.pad == 0
                    && matches!(
                        rsp.status,
                        NETIF_RSP_OKAY | NETIF_RSP_ERROR | NETIF_RSP_DROPPED
                    ),
                "evil-frontend: tx response {rsp:?} (want id {id}, zero pad, a defined status)"
            );
            let slot = tx.tx.bytes(at, 16);
            assert!(
                slot[8..] == written[8..],
                "evil-frontend: the backend wrote past its tx response in the slot"
            );
            if mac_phase && rsp.status == NETIF_RSP_DROPPED {
                sent.forged += 1;
            }
            (rsp.status == NETIF_RSP_OKAY).then(|| next_frame(rx, tx.mac))
        } else {
            frame_within(rx, tx.mac, 50_000_000)
        };
        match delivered {
            Some(frame) => {
                one_version(&frame, &content, round);
                sizes[usize::from(frame.len() != 60)] += 1;
                if frame[..] == content[..frame.len()] {
                    sent.first += 1;
                } else {
                    sent.second += 1;
                }
            }
            None => sent.refused += 1,
        }
    }
    // Nothing stray arrived for the refused frames: the next frame on rx is
    // the next honest one.
    let honest = NetifTxRequest {
        gref: g,
        offset: 2048,
        flags: 0,
        id: 4000,
        size: 100,
        pad: 0,
    };
    tx.tx.push(&honest);
    tx.tx.publish();
    let _ = events::notify(tx.port);
    let rsp = wait_response(&mut tx.tx);
    assert_eq!(rsp.status, NETIF_RSP_OKAY, "evil-frontend: honest frame");
    let frame = next_frame(rx, tx.mac);
    assert!(
        frame == content[2048..2148],
        "evil-frontend: a stray frame arrived after the refused ones"
    );
    println!(
        "evil-frontend: netback, {rounds} frames {}: {} at offset 0, {} elsewhere, {} refused ({} forged MAC); {} of 60 B, {} of 1000 B; each frame exactly one version",
        if flip { "rewritten under the backend" } else { "checked" },
        sent.first,
        sent.second,
        sent.refused,
        sent.forged,
        sizes[0],
        sizes[1]
    );
    if flip {
        assert!(
            sent.kinds() >= 2 && sent.forged > 0,
            "evil-frontend: the rewrites never changed what the backend saw ({sent:?})"
        );
    }
    assert!(
        end_grant(g) && end_grant(foreign),
        "evil-frontend: tx grants still in use"
    );
    drop(page);
}

/// XSA-216 on netif beyond the race: refused tx requests and a malformed rx
/// request get fully defined responses and touch no page.
pub fn leak_checks_net(tx: &mut RawNet, rx: &mut RawNet) {
    let mut page = Frame::alloc_zeroed().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    page.write_bytes(0, &tx_page(tx.mac));
    let g = grant(tx.backend, &page, true);
    for (what, req) in [
        (
            "undersized",
            NetifTxRequest {
                gref: g,
                size: 13,
                id: 7,
                ..NetifTxRequest::default()
            },
        ),
        (
            "crossing the page",
            NetifTxRequest {
                gref: g,
                offset: 4000,
                size: 200,
                id: 8,
                ..NetifTxRequest::default()
            },
        ),
        (
            "non-zero flags",
            NetifTxRequest {
                gref: g,
                size: 60,
                flags: 1,
                id: 9,
                ..NetifTxRequest::default()
            },
        ),
    ] {
        let at = tx.tx.push(&req);
        tx.tx.publish();
        let _ = events::notify(tx.port);
        let rsp = wait_response(&mut tx.tx);
        assert!(
            rsp.id == req.id && rsp.status == NETIF_RSP_ERROR && rsp.pad == 0,
            "evil-frontend: {what} tx: {rsp:?}"
        );
        assert!(
            tx.tx.bytes(at + 8, 8) == req.as_bytes()[8..],
            "evil-frontend: {what} tx: slot written past the response"
        );
    }
    // An rx request with a non-zero pad, on an extra page: an error
    // response with defined fields, the page untouched.
    let mut extra = Frame::alloc().unwrap_or_else(|e| panic!("evil-frontend: {e:?}"));
    extra.write_bytes(0, &[MARK; 4096]);
    let ge = grant(rx.backend, &extra, false);
    let bad = NetifRxRequest {
        id: 0x7777,
        pad: 1,
        gref: ge,
    };
    rx.rx.push(&bad);
    rx.rx.publish();
    let _ = events::notify(rx.port);
    // The backend takes rx requests when it has a frame for this vif.
    let hello = NetifTxRequest {
        gref: g,
        size: 60,
        id: 10,
        ..NetifTxRequest::default()
    };
    tx.tx.push(&hello);
    tx.tx.publish();
    let _ = events::notify(tx.port);
    let _ = wait_response(&mut tx.tx);
    // The malformed request's response comes before the frame's (ring order).
    let rsp = loop {
        let rsp = wait_response(&mut rx.rx);
        if rsp.id == 0x7777 {
            break rsp;
        }
        let i = rsp.id;
        rx.rx_pages[usize::from(i)].0.write_bytes(0, &[MARK; 4096]);
        rx.repost(i);
    };
    assert!(
        rsp.status == NETIF_RSP_ERROR && rsp.offset == 0 && rsp.flags == 0,
        "evil-frontend: rx request with a pad: {rsp:?}"
    );
    let mut data = vec![0u8; 4096];
    extra.read_bytes(0, &mut data);
    assert!(
        data.iter().all(|&b| b == MARK),
        "evil-frontend: a refused rx page was written"
    );
    assert!(
        end_grant(g) && end_grant(ge),
        "evil-frontend: grants still in use"
    );
    drop((page, extra));
    println!("evil-frontend: netif responses: ids and statuses defined, pads, flags and offsets zero, nothing written past a response, a frame or into a refused page");
}
