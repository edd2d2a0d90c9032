//! The split-device fuzz targets: what backends and hv-core check in
//! requests and records that other domains write.
//!
//! - `blkif`: `check_request` and `check_segments` on arbitrary requests,
//!   device limits and indirect segment pages; accepted ⇒ every segment
//!   and every sector of the transfer lies within bounds (recomputed here
//!   with wide arithmetic, independently of the checker).
//! - `netif`: `check_tx`/`check_rx` on arbitrary requests; accepted ⇒ the
//!   frame is an Ethernet frame inside its page.
//! - `devbus`: random operation sequences on hv-core's devbus record table
//!   from hostile domains (wrong sides, bad fields, deaths); after every
//!   step the table's own consistency check holds, no dead domain is
//!   notified, dead sides are closed, and when every domain has died no
//!   record is left (the invariants of its proptests, DEV-1..5).

use std::collections::BTreeSet;

use hv_core::devbus::DeviceBus;
use hypercall_abi::blkif::{
    check_request, check_segments, BlkifRequest, BlkifSegment, Checked, DeviceLimits,
    BLKIF_FEATURE_DISCARD, BLKIF_FEATURE_FLUSH, BLKIF_FEATURE_INDIRECT, BLKIF_MAX_INDIRECT_PAGES,
    BLKIF_MAX_INDIRECT_SEGMENTS, BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD,
    BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_SEGMENTS_PER_INDIRECT_PAGE, BLKIF_UNITS_PER_PAGE,
};
use hypercall_abi::devbus::{
    DevbusConnect, DevbusCreate, DevbusPublish, DEVBUS_KIND_BLK, DEVBUS_KIND_NET,
    DEVBUS_MAX_RECORDS, DEVBUS_SIDE_BACK, DEVBUS_SIDE_FRONT,
};
use hypercall_abi::netif::{
    check_rx, check_tx, NetifRxRequest, NetifTxRequest, NETIF_MAX_FRAME, NETIF_MIN_FRAME,
};
use hypercall_abi::{DomId, PAGE_SIZE};
use zerocopy::{FromBytes, IntoBytes};

// ---------------------------------------------------------------- blkif

/// Bytes of the device description that precede the request.
const LIMITS_LEN: usize = 16;

/// Device limits from 16 input bytes: capacity, sector size, read-only,
/// features, indirect limit.
fn limits(b: &[u8; LIMITS_LEN]) -> DeviceLimits {
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let ctl = b[8];
    DeviceLimits {
        // Small devices half the time, so the end is within reach.
        sectors: if ctl & 0x80 != 0 {
            word(0)
        } else {
            word(0) % 4096
        },
        sector_size: if ctl & 1 != 0 { 4096 } else { 512 },
        readonly: ctl & 2 != 0,
        features: u32::from(b[9]) & 7,
        max_indirect_segments: u32::from(u16::from_le_bytes([b[10], b[11]])),
    }
}

/// Input: 16 bytes of device limits, a 128-byte request, then the bytes of
/// the indirect segment pages (8 bytes per segment).
pub fn blkif_seeds() -> Vec<Vec<u8>> {
    let dev = |ctl: u8| {
        let mut d = 2048u64.to_le_bytes().to_vec();
        d.extend_from_slice(&[ctl, 7, 0, 1, 0, 0, 0, 0]);
        d
    };
    let mut read = BlkifRequest {
        operation: BLKIF_OP_READ,
        nr_segments: 2,
        id: 1,
        sector_number: 8,
        ..BlkifRequest::default()
    };
    read.seg[0] = BlkifSegment {
        gref: 5,
        first_sect: 0,
        last_sect: 7,
        pad: 0,
    };
    read.seg[1] = BlkifSegment {
        gref: 6,
        first_sect: 2,
        last_sect: 3,
        pad: 0,
    };
    let indirect = BlkifRequest {
        operation: BLKIF_OP_INDIRECT,
        indirect_op: BLKIF_OP_WRITE,
        nr_indirect_segments: 3,
        sector_number: 16,
        indirect_grefs: [9, 0],
        ..BlkifRequest::default()
    };
    let discard = BlkifRequest {
        operation: BLKIF_OP_DISCARD,
        sector_number: 8,
        nr_sectors: 64,
        ..BlkifRequest::default()
    };
    let flush = BlkifRequest {
        operation: BLKIF_OP_FLUSH_DISKCACHE,
        ..BlkifRequest::default()
    };
    let seg = |first: u8, last: u8| {
        BlkifSegment {
            gref: 1,
            first_sect: first,
            last_sect: last,
            pad: 0,
        }
        .as_bytes()
        .to_vec()
    };
    let join =
        |d: Vec<u8>, r: &BlkifRequest, tail: Vec<u8>| [d, r.as_bytes().to_vec(), tail].concat();
    vec![
        join(dev(0), &read, Vec::new()),
        join(
            dev(1),
            &indirect,
            [seg(0, 7), seg(0, 7), seg(0, 7)].concat(),
        ),
        join(dev(0), &discard, Vec::new()),
        join(dev(0), &flush, Vec::new()),
    ]
}

pub const BLKIF_DICTIONARY: &[&[u8]] = &[
    &[BLKIF_OP_READ],
    &[BLKIF_OP_WRITE],
    &[BLKIF_OP_INDIRECT],
    &[BLKIF_OP_DISCARD],
    &[BLKIF_OP_FLUSH_DISKCACHE],
    &[0, 7],
    &[7, 0],
    &[0, 8],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
];

/// Units covered by `segments` if each is well formed, counted in `u128`.
fn units(segments: &[BlkifSegment]) -> Option<u128> {
    segments.iter().try_fold(0u128, |sum, s| {
        (s.pad == 0 && s.first_sect <= s.last_sect && s.last_sect < BLKIF_UNITS_PER_PAGE)
            .then(|| sum + u128::from(s.last_sect - s.first_sect) + 1)
    })
}

/// Asserts that an accepted transfer of `segments` at `sector` is in bounds.
fn assert_in_bounds(segments: &[BlkifSegment], sector: u64, dev: &DeviceLimits, total: u64) {
    let counted = units(segments).expect("a malformed segment was accepted");
    assert_eq!(u128::from(total), counted, "wrong unit count");
    assert!(
        u128::from(sector) + counted <= u128::from(dev.sectors),
        "transfer {sector}+{counted} past the device's {} units",
        dev.sectors
    );
    if dev.sector_size == 4096 {
        assert!(sector.is_multiple_of(8), "misaligned start accepted");
        for s in segments {
            assert!(
                s.first_sect.is_multiple_of(8) && (s.last_sect + 1).is_multiple_of(8),
                "partial 4 KiB sector"
            );
        }
    }
}

/// Checks a request (and its indirect segments) the way blkback does.
pub fn blkif(bytes: &[u8]) -> bool {
    let Some((dev_bytes, rest)) = bytes.split_first_chunk::<LIMITS_LEN>() else {
        return false;
    };
    let dev = limits(dev_bytes);
    let Ok((req, indirect)) = BlkifRequest::read_from_prefix(rest) else {
        return false;
    };
    let Ok(checked) = check_request(&req, &dev) else {
        return false;
    };
    let write = |w: bool| assert!(!(w && dev.readonly), "write accepted on a read-only device");
    match checked {
        Checked::Direct {
            write: w,
            nr_segments,
        } => {
            write(w);
            assert!(matches!(req.operation, BLKIF_OP_READ | BLKIF_OP_WRITE));
            assert!((1..=BLKIF_MAX_SEGMENTS_PER_REQUEST).contains(&nr_segments));
            assert_eq!(nr_segments, req.nr_segments);
            let (used, unused) = req.seg.split_at(usize::from(nr_segments));
            assert!(unused.iter().all(|s| *s == BlkifSegment::default()));
            let total = units(used).expect("malformed direct segment accepted") as u64;
            assert_in_bounds(used, req.sector_number, &dev, total);
            true
        }
        Checked::Indirect {
            write: w,
            nr_segments,
            nr_pages,
        } => {
            write(w);
            assert!(dev.features & BLKIF_FEATURE_INDIRECT != 0);
            assert!((1..=BLKIF_MAX_INDIRECT_SEGMENTS).contains(&nr_segments));
            assert!(nr_segments <= dev.max_indirect_segments);
            assert!((1..=BLKIF_MAX_INDIRECT_PAGES).contains(&nr_pages));
            assert!(nr_segments <= nr_pages as u32 * BLKIF_SEGMENTS_PER_INDIRECT_PAGE);
            assert!(req.sector_number < dev.sectors);
            // The segments as the backend would copy them from the pages.
            let mut segments: Vec<BlkifSegment> = indirect
                .chunks_exact(8)
                .take(nr_segments as usize)
                .filter_map(|c| BlkifSegment::read_from_bytes(c).ok())
                .collect();
            segments.resize(nr_segments as usize, BlkifSegment::default());
            match check_segments(&segments, req.sector_number, &dev) {
                Ok(total) => assert_in_bounds(&segments, req.sector_number, &dev, total),
                Err(_) => return false,
            }
            true
        }
        Checked::Flush => {
            write(true);
            assert!(dev.features & BLKIF_FEATURE_FLUSH != 0);
            true
        }
        Checked::Discard => {
            write(true);
            assert!(dev.features & BLKIF_FEATURE_DISCARD != 0);
            let end = u128::from(req.sector_number) + u128::from(req.nr_sectors);
            assert!(req.nr_sectors > 0 && end <= u128::from(dev.sectors));
            if dev.sector_size == 4096 {
                assert!(req.sector_number.is_multiple_of(8) && req.nr_sectors.is_multiple_of(8));
            }
            true
        }
    }
}

// ---------------------------------------------------------------- netif

/// Input: any number of 16-byte tx requests (each also read as an rx
/// request from its first 8 bytes).
pub fn netif_seeds() -> Vec<Vec<u8>> {
    let tx = |offset: u16, size: u16| {
        NetifTxRequest {
            gref: 3,
            offset,
            flags: 0,
            id: 1,
            size,
            pad: 0,
        }
        .as_bytes()
        .to_vec()
    };
    vec![
        [tx(0, 60), tx(4096 - 1514, 1514), tx(100, 14)].concat(),
        tx(2000, 1000),
    ]
}

pub const NETIF_DICTIONARY: &[&[u8]] = &[
    &[0xea, 0x05],
    &[0xeb, 0x05],
    &[0x0e, 0x00],
    &[0x0d, 0x00],
    &[0x00, 0x10],
    &[0x16, 0x0a],
];

/// Checks every request; accepted if any tx request passed.
pub fn netif(bytes: &[u8]) -> bool {
    let mut any = false;
    for chunk in bytes.chunks_exact(16) {
        let Ok(req) = NetifTxRequest::read_from_bytes(chunk) else {
            continue;
        };
        if check_tx(&req).is_ok() {
            assert!(req.flags == 0 && req.pad == 0, "padding accepted");
            assert!(
                (NETIF_MIN_FRAME..=NETIF_MAX_FRAME).contains(&req.size),
                "frame of {} bytes accepted",
                req.size
            );
            assert!(
                u64::from(req.offset) + u64::from(req.size) <= PAGE_SIZE,
                "frame {}+{} crosses its page",
                req.offset,
                req.size
            );
            any = true;
        }
        if let Ok(rx) = NetifRxRequest::read_from_bytes(&chunk[..8]) {
            assert_eq!(check_rx(&rx), rx.pad == 0);
        }
    }
    any
}

// ---------------------------------------------------------------- devbus

/// Domains the sequences use (0..DOMAINS; hv-core never sees more here).
const DOMAINS: u32 = 4;

/// Reads the input a byte (or word) at a time; zeros once it is used up.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn word(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn dom(&mut self) -> DomId {
        u32::from(self.byte()) % DOMAINS
    }

    /// A record id: mostly one that may exist, sometimes anything.
    fn id(&mut self) -> u32 {
        match self.byte() {
            b @ 0..=239 => u32::from(b % 16),
            _ => self.word(),
        }
    }

    /// A small value usually, an arbitrary one when the flag byte says so.
    fn field(&mut self, usual: u32) -> u32 {
        if self.byte() & 0xf0 == 0xf0 {
            self.word()
        } else {
            usual
        }
    }
}

pub fn devbus_seeds() -> Vec<Vec<u8>> {
    vec![
        // create(b0, f1), publish by 1, connect by 0, close both, reset.
        vec![
            0, 0, 1, 0, 0, 0, 0, 2, 1, 1, 0, 0, 0, 3, 0, 1, 0, 0, 4, 0, 1, 4, 1, 1, 5, 1, 1,
        ],
        // Two records, a death in the middle.
        vec![
            0, 0, 2, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 2, 2, 1, 0, 0, 6, 3, 4, 0, 2,
        ],
    ]
}

pub const DEVBUS_DICTIONARY: &[&[u8]] = &[&[0, 0, 1], &[2, 1, 1], &[3, 0, 1], &[6, 0], &[0xff]];

/// Runs one operation sequence; accepted if some operation succeeded.
pub fn devbus(bytes: &[u8]) -> bool {
    let mut c = Cursor(bytes);
    let mut bus = DeviceBus::new();
    let mut dead = BTreeSet::new();
    let mut any_ok = false;
    let mut steps = 0;
    while !c.0.is_empty() && steps < 400 {
        steps += 1;
        let notified: Result<Vec<DomId>, _> = match c.byte() % 7 {
            0 => {
                let (backend, frontend) = (c.dom(), c.dom());
                let net = c.byte() & 1 != 0;
                let config = DevbusCreate {
                    kind: c.field(if net {
                        DEVBUS_KIND_NET
                    } else {
                        DEVBUS_KIND_BLK
                    }),
                    backend,
                    frontend,
                    backend_handle: c.field(0),
                    dev_flags: c.field(0),
                    sector_size: if net { 0 } else { c.field(512) },
                    sectors: if net { 0 } else { u64::from(c.field(2048)) },
                    mac: if net {
                        [2, 0, 0, 0, 0, 1, 0, 0]
                    } else {
                        [0; 8]
                    },
                    id: c.field(0),
                    pad: c.field(0),
                };
                let alive = |d: DomId| !dead.contains(&d);
                bus.create(&config, &alive).map(|(_, n)| n.to_vec())
            }
            1 => bus.destroy(c.id()).map(|n| n.to_vec()),
            2 => {
                let (caller, id) = (c.dom(), c.id());
                let usual = u32::from(c.byte() % 4);
                let nr_ring_pages = c.field(usual);
                let mut ring_refs = [0u32; 8];
                for (i, r) in ring_refs.iter_mut().enumerate() {
                    *r = if (i as u32) < nr_ring_pages {
                        1 + i as u32
                    } else {
                        0
                    };
                }
                ring_refs[7] = c.field(ring_refs[7]);
                let p = DevbusPublish {
                    id,
                    nr_ring_pages,
                    event_port: c.field(3),
                    pad: c.field(0),
                    ring_refs,
                };
                let port_ok = |_: DomId, port: u32| (1..1024).contains(&port);
                bus.publish(caller, &p, &port_ok).map(|n| n.to_vec())
            }
            3 => {
                let (caller, id) = (c.dom(), c.id());
                let connect = DevbusConnect {
                    id,
                    backend_features: c.field(7),
                    max_indirect_segments: c.field(256),
                    pad: c.field(0),
                };
                bus.connect(caller, &connect).map(|n| n.to_vec())
            }
            4 => {
                let (caller, id) = (c.dom(), c.id());
                bus.close(caller, id).map(|n| n.to_vec())
            }
            5 => {
                let (caller, id) = (c.dom(), c.id());
                bus.reset(caller, id).map(|n| n.to_vec())
            }
            _ => {
                let d = c.dom();
                Ok(if dead.insert(d) {
                    bus.domain_died(d)
                } else {
                    Vec::new()
                })
            }
        };
        if let Ok(notified) = notified {
            any_ok = true;
            for d in notified {
                assert!(!dead.contains(&d), "notified dead d{d}");
            }
        }
        if let Err(why) = bus.check() {
            panic!("records inconsistent: {why}");
        }
        assert!(bus.len() <= DEVBUS_MAX_RECORDS);
        let mut from = 0;
        while let Some(r) = bus.query(0, true, from) {
            if dead.contains(&r.frontend) {
                assert!(
                    r.closed_sides & DEVBUS_SIDE_FRONT != 0,
                    "dead frontend's side open"
                );
                assert_eq!(
                    r.nr_ring_pages, 0,
                    "a dead frontend's ring is still published"
                );
            }
            if dead.contains(&r.backend) {
                assert!(
                    r.closed_sides & DEVBUS_SIDE_BACK != 0,
                    "dead backend's side open"
                );
            }
            // A domain sees exactly the records that name it.
            for d in 0..DOMAINS {
                let side = r.frontend == d || r.backend == d;
                let sees = bus.query(d, false, r.id).is_some_and(|s| s.id == r.id);
                assert_eq!(sees, side, "d{d} and record {}: visibility", r.id);
                assert!(!side || bus.names(d));
            }
            let Some(next) = r.id.checked_add(1) else {
                break;
            };
            from = next;
        }
    }
    for d in 0..DOMAINS {
        if dead.insert(d) {
            for n in bus.domain_died(d) {
                assert!(!dead.contains(&n), "notified dead d{n}");
            }
        }
    }
    assert!(bus.is_empty(), "records left after every domain died");
    any_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: DeviceLimits = DeviceLimits {
        sectors: 64,
        sector_size: 4096,
        readonly: false,
        features: 7,
        max_indirect_segments: 16,
    };

    fn seg(first: u8, last: u8) -> BlkifSegment {
        BlkifSegment {
            gref: 1,
            first_sect: first,
            last_sect: last,
            pad: 0,
        }
    }

    #[test]
    fn the_bounds_invariant_holds_for_a_transfer_that_fits() {
        assert_in_bounds(&[seg(0, 7)], 56, &DEV, 8);
    }

    #[test]
    #[should_panic(expected = "past the device")]
    fn the_bounds_invariant_catches_a_transfer_past_the_end() {
        assert_in_bounds(&[seg(0, 7), seg(0, 7)], 56, &DEV, 16);
    }

    #[test]
    #[should_panic(expected = "partial 4 KiB sector")]
    fn the_bounds_invariant_catches_a_partial_sector() {
        assert_in_bounds(&[seg(0, 3)], 0, &DEV, 4);
    }

    #[test]
    #[should_panic(expected = "malformed segment")]
    fn the_bounds_invariant_catches_a_reversed_segment() {
        assert_in_bounds(&[seg(5, 2)], 0, &DEV, 0);
    }

    #[test]
    fn an_empty_devbus_sequence_leaves_nothing_and_is_not_accepted() {
        assert!(!devbus(&[]));
    }
}
