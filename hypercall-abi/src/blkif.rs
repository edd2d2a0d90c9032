//! blkif (SPEC.md §13, BLK-*): the block-device ring protocol — since ABI 0.5.
//!
//! A frontend sends [`BlkifRequest`]s through a generic ring
//! (`crate::ring`, RING-*) of 1, 2, 4 or 8 pages published in its devbus
//! record; the backend answers each with a [`BlkifResponse`] carrying the
//! request's `id`, in any order. Data moves through pages the frontend
//! grants: each *segment* names a grant and a range of 512-byte units in it.
//!
//! Units: `sector_number`, `nr_sectors` and segment bounds always count
//! 512-byte units ([`BLKIF_UNIT`]); a device whose logical sector size is
//! 4096 requires requests aligned to 8 units (BLK-4).
//!
//! The backend copies a request out of the ring once (RING-5), then checks
//! the copy with [`check_request`] and each segment list with
//! [`check_segments`]; a request that fails gets `BLKIF_RSP_ERROR` and
//! touches nothing.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes per addressing unit of blkif.
pub const BLKIF_UNIT: u64 = 512;
/// Units per 4 KiB page.
pub const BLKIF_UNITS_PER_PAGE: u8 = 8;

/// Read into the segments.
pub const BLKIF_OP_READ: u8 = 0;
/// Write from the segments.
pub const BLKIF_OP_WRITE: u8 = 1;
/// Flush (BLK-5): every write *completed* before it is on stable storage when it completes.
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// Discard (BLK-6) `nr_sectors` units at `sector_number`: their contents become unspecified.
pub const BLKIF_OP_DISCARD: u8 = 5;
/// A read or write (`indirect_op`) whose segments are in granted pages (BLK-3).
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// Most direct segments per request.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: u8 = 11;
/// Segments per indirect page.
pub const BLKIF_SEGMENTS_PER_INDIRECT_PAGE: u32 = 512;
/// Indirect pages per request.
pub const BLKIF_MAX_INDIRECT_PAGES: usize = 2;
/// Most segments of an indirect request (a backend may advertise fewer).
pub const BLKIF_MAX_INDIRECT_SEGMENTS: u32 =
    BLKIF_SEGMENTS_PER_INDIRECT_PAGE * BLKIF_MAX_INDIRECT_PAGES as u32;

/// Backend feature: `BLKIF_OP_FLUSH_DISKCACHE`.
pub const BLKIF_FEATURE_FLUSH: u32 = 1 << 0;
/// Backend feature: `BLKIF_OP_DISCARD`.
pub const BLKIF_FEATURE_DISCARD: u32 = 1 << 1;
/// Backend feature: `BLKIF_OP_INDIRECT` (up to `max_indirect_segments`).
pub const BLKIF_FEATURE_INDIRECT: u32 = 1 << 2;
/// Backend feature: segments flagged [`BLKIF_SEG_PERSISTENT`] (BLK-11).
pub const BLKIF_FEATURE_PERSISTENT: u32 = 1 << 3;
/// `BlkifSegment::pad` flag (BLK-11): the frontend keeps this grant, unchanged
/// and writable, until the connection closes, so the backend may keep it
/// mapped (and let the device reach it) until then. Only with
/// [`BLKIF_FEATURE_PERSISTENT`].
pub const BLKIF_SEG_PERSISTENT: u16 = 1;

/// Response status: done.
pub const BLKIF_RSP_OKAY: i16 = 0;
/// Response status: failed (bad request, I/O error).
pub const BLKIF_RSP_ERROR: i16 = -1;
/// Response status: the operation is not supported.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;

/// One segment: units `first_sect ..= last_sect` (0 ..= 7) of granted page `gref`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifSegment {
    /// `[FRONT]` a grant of the frontend to the backend (writable for reads).
    pub gref: u32,
    /// `[FRONT]` first unit in the page.
    pub first_sect: u8,
    /// `[FRONT]` last unit in the page (inclusive).
    pub last_sect: u8,
    /// Zero, or [`BLKIF_SEG_PERSISTENT`] (BLK-11).
    pub pad: u16,
}
const _: () = assert!(core::mem::size_of::<BlkifSegment>() == 8);

/// A request, `[FRONT]`. Fields not used by `operation` MUST be zero.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifRequest {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// READ/WRITE: 1 ..= 11 segments in `seg`.
    pub nr_segments: u8,
    /// INDIRECT: `BLKIF_OP_READ` or `BLKIF_OP_WRITE`.
    pub indirect_op: u8,
    /// Zero.
    pub pad0: u8,
    /// INDIRECT: 1 ..= the backend's `max_indirect_segments`.
    pub nr_indirect_segments: u16,
    /// Zero.
    pub pad1: u16,
    /// Echoed in the response; the frontend's to choose.
    pub id: u64,
    /// READ/WRITE/INDIRECT/DISCARD: first unit on the device.
    pub sector_number: u64,
    /// DISCARD: units to discard (at least 1).
    pub nr_sectors: u64,
    /// READ/WRITE: the segments, in device order.
    pub seg: [BlkifSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST as usize],
    /// INDIRECT: read-only grants of pages holding the `BlkifSegment`s, 512 per page.
    pub indirect_grefs: [u32; BLKIF_MAX_INDIRECT_PAGES],
}
const _: () = assert!(core::mem::size_of::<BlkifRequest>() == 128);
const _: () = assert!(core::mem::offset_of!(BlkifRequest, nr_indirect_segments) == 4);
const _: () = assert!(core::mem::offset_of!(BlkifRequest, id) == 8);
const _: () = assert!(core::mem::offset_of!(BlkifRequest, sector_number) == 16);
const _: () = assert!(core::mem::offset_of!(BlkifRequest, nr_sectors) == 24);
const _: () = assert!(core::mem::offset_of!(BlkifRequest, seg) == 32);
const _: () = assert!(core::mem::offset_of!(BlkifRequest, indirect_grefs) == 120);

/// A response, `[BACK]`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifResponse {
    /// The request's `id`.
    pub id: u64,
    /// The request's `operation`.
    pub operation: u8,
    /// Zero.
    pub pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    /// Zero.
    pub pad1: u32,
}
const _: () = assert!(core::mem::size_of::<BlkifResponse>() == 16);
const _: () = assert!(core::mem::offset_of!(BlkifResponse, status) == 10);

/// What the backend knows about the device it serves, for checking requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Capacity in 512-byte units.
    pub sectors: u64,
    /// Logical sector size: 512 or 4096.
    pub sector_size: u32,
    /// The frontend may only read.
    pub readonly: bool,
    /// `BLKIF_FEATURE_*` the backend serves.
    pub features: u32,
    /// Most segments of an indirect request the backend advertised.
    pub max_indirect_segments: u32,
}

impl DeviceLimits {
    fn align_units(&self) -> u64 {
        if self.sector_size == 4096 {
            8
        } else {
            1
        }
    }
}

/// Why a request is refused (the response is `BLKIF_RSP_ERROR` unless
/// [`Reject::status`] says otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Unknown `operation` or `indirect_op`.
    BadOperation,
    /// The operation is one the backend does not serve.
    NotSupported,
    /// Write, flush or discard on a read-only device.
    ReadOnly,
    /// Segment count out of range (BLK-2/3).
    BadSegmentCount,
    /// A segment's unit range is empty, reversed or past the page.
    BadSegment,
    /// The request reaches past the device or overflows.
    OutOfRange,
    /// Not aligned to the logical sector size.
    Misaligned,
    /// A field that must be zero is not.
    NonZeroPad,
}

impl Reject {
    /// The response status for this refusal.
    pub const fn status(self) -> i16 {
        match self {
            Reject::NotSupported => BLKIF_RSP_EOPNOTSUPP,
            _ => BLKIF_RSP_ERROR,
        }
    }
}

/// A request that passed [`check_request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Read or write with `nr_segments` direct segments (already checked).
    Direct { write: bool, nr_segments: u8 },
    /// Read or write whose `nr_segments` segments are in `nr_pages` indirect pages
    /// (to be copied out once, then checked with [`check_segments`]).
    Indirect {
        write: bool,
        nr_segments: u32,
        nr_pages: usize,
    },
    /// Flush.
    Flush,
    /// Discard `nr_sectors` units at `sector_number` (checked in range).
    Discard,
}

/// Checks a copied-out request against the device (BLK-2 .. BLK-6). Direct
/// segments are checked here; indirect ones need [`check_segments`] once
/// their pages are copied.
pub fn check_request(req: &BlkifRequest, dev: &DeviceLimits) -> Result<Checked, Reject> {
    if req.pad0 != 0 || req.pad1 != 0 {
        return Err(Reject::NonZeroPad);
    }
    let unused_direct = |req: &BlkifRequest| {
        req.nr_segments == 0 && req.seg.iter().all(|s| *s == BlkifSegment::default())
    };
    let unused_indirect = |req: &BlkifRequest| {
        req.indirect_op == 0 && req.nr_indirect_segments == 0 && req.indirect_grefs == [0; 2]
    };
    match req.operation {
        BLKIF_OP_READ | BLKIF_OP_WRITE => {
            let write = req.operation == BLKIF_OP_WRITE;
            if !unused_indirect(req) || req.nr_sectors != 0 {
                return Err(Reject::NonZeroPad);
            }
            if write && dev.readonly {
                return Err(Reject::ReadOnly);
            }
            let n = req.nr_segments;
            if n == 0 || n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                return Err(Reject::BadSegmentCount);
            }
            let (used, unused) = req.seg.split_at(usize::from(n));
            if unused.iter().any(|s| *s != BlkifSegment::default()) {
                return Err(Reject::NonZeroPad);
            }
            check_segments(used, req.sector_number, dev)?;
            Ok(Checked::Direct {
                write,
                nr_segments: n,
            })
        }
        BLKIF_OP_INDIRECT => {
            if !unused_direct(req) || req.nr_sectors != 0 {
                return Err(Reject::NonZeroPad);
            }
            if dev.features & BLKIF_FEATURE_INDIRECT == 0 {
                return Err(Reject::NotSupported);
            }
            let write = match req.indirect_op {
                BLKIF_OP_READ => false,
                BLKIF_OP_WRITE => true,
                _ => return Err(Reject::BadOperation),
            };
            if write && dev.readonly {
                return Err(Reject::ReadOnly);
            }
            let n = u32::from(req.nr_indirect_segments);
            if n == 0 || n > dev.max_indirect_segments.min(BLKIF_MAX_INDIRECT_SEGMENTS) {
                return Err(Reject::BadSegmentCount);
            }
            let nr_pages = n.div_ceil(BLKIF_SEGMENTS_PER_INDIRECT_PAGE) as usize;
            if req.indirect_grefs[nr_pages..].iter().any(|&g| g != 0) {
                return Err(Reject::NonZeroPad);
            }
            // The start must be in range and aligned now; the end is checked
            // with the segments.
            if req.sector_number >= dev.sectors {
                return Err(Reject::OutOfRange);
            }
            if !req.sector_number.is_multiple_of(dev.align_units()) {
                return Err(Reject::Misaligned);
            }
            Ok(Checked::Indirect {
                write,
                nr_segments: n,
                nr_pages,
            })
        }
        BLKIF_OP_FLUSH_DISKCACHE => {
            if !unused_direct(req)
                || !unused_indirect(req)
                || req.sector_number != 0
                || req.nr_sectors != 0
            {
                return Err(Reject::NonZeroPad);
            }
            if dev.readonly {
                return Err(Reject::ReadOnly);
            }
            if dev.features & BLKIF_FEATURE_FLUSH == 0 {
                return Err(Reject::NotSupported);
            }
            Ok(Checked::Flush)
        }
        BLKIF_OP_DISCARD => {
            if !unused_direct(req) || !unused_indirect(req) {
                return Err(Reject::NonZeroPad);
            }
            if dev.readonly {
                return Err(Reject::ReadOnly);
            }
            if dev.features & BLKIF_FEATURE_DISCARD == 0 {
                return Err(Reject::NotSupported);
            }
            if req.nr_sectors == 0 {
                return Err(Reject::OutOfRange);
            }
            let end = req
                .sector_number
                .checked_add(req.nr_sectors)
                .ok_or(Reject::OutOfRange)?;
            if end > dev.sectors {
                return Err(Reject::OutOfRange);
            }
            let align = dev.align_units();
            if !req.sector_number.is_multiple_of(align) || !req.nr_sectors.is_multiple_of(align) {
                return Err(Reject::Misaligned);
            }
            Ok(Checked::Discard)
        }
        _ => Err(Reject::BadOperation),
    }
}

/// Checks segments that transfer consecutive device units starting at
/// `sector_number`; returns the units they cover. Each segment's range
/// must be `first_sect <= last_sect < 8` with zero padding (or the
/// persistent flag, if the device offers it: BLK-11); the whole
/// transfer must lie inside the device and, on a 4096-byte-sector device,
/// every segment must cover whole 4 KiB-aligned sectors.
pub fn check_segments(
    segments: &[BlkifSegment],
    sector_number: u64,
    dev: &DeviceLimits,
) -> Result<u64, Reject> {
    let align = dev.align_units();
    if !sector_number.is_multiple_of(align) {
        return Err(Reject::Misaligned);
    }
    let mut total: u64 = 0;
    for s in segments {
        let persistent_ok =
            s.pad == BLKIF_SEG_PERSISTENT && dev.features & BLKIF_FEATURE_PERSISTENT != 0;
        if s.pad != 0 && !persistent_ok {
            return Err(Reject::NonZeroPad);
        }
        if s.first_sect > s.last_sect || s.last_sect >= BLKIF_UNITS_PER_PAGE {
            return Err(Reject::BadSegment);
        }
        let units = u64::from(s.last_sect - s.first_sect) + 1;
        if !u64::from(s.first_sect).is_multiple_of(align) || !units.is_multiple_of(align) {
            return Err(Reject::Misaligned);
        }
        total += units;
    }
    let end = sector_number.checked_add(total).ok_or(Reject::OutOfRange)?;
    if end > dev.sectors {
        return Err(Reject::OutOfRange);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEV: DeviceLimits = DeviceLimits {
        sectors: 1 << 20,
        sector_size: 512,
        readonly: false,
        features: BLKIF_FEATURE_FLUSH | BLKIF_FEATURE_DISCARD | BLKIF_FEATURE_INDIRECT,
        max_indirect_segments: 256,
    };

    fn read(sector: u64, segs: &[(u8, u8)]) -> BlkifRequest {
        let mut req = BlkifRequest {
            operation: BLKIF_OP_READ,
            nr_segments: segs.len() as u8,
            id: 7,
            sector_number: sector,
            ..BlkifRequest::default()
        };
        for (i, &(first, last)) in segs.iter().enumerate() {
            req.seg[i] = BlkifSegment {
                gref: i as u32 + 1,
                first_sect: first,
                last_sect: last,
                pad: 0,
            };
        }
        req
    }

    #[test]
    fn honest_requests_pass() {
        let r = read(0, &[(0, 7), (0, 3)]);
        assert_eq!(
            check_request(&r, &DEV),
            Ok(Checked::Direct {
                write: false,
                nr_segments: 2
            })
        );
        let flush = BlkifRequest {
            operation: BLKIF_OP_FLUSH_DISKCACHE,
            ..BlkifRequest::default()
        };
        assert_eq!(check_request(&flush, &DEV), Ok(Checked::Flush));
        let discard = BlkifRequest {
            operation: BLKIF_OP_DISCARD,
            sector_number: 8,
            nr_sectors: 16,
            ..BlkifRequest::default()
        };
        assert_eq!(check_request(&discard, &DEV), Ok(Checked::Discard));
        let indirect = BlkifRequest {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: BLKIF_OP_WRITE,
            nr_indirect_segments: 200,
            indirect_grefs: [5, 0],
            ..BlkifRequest::default()
        };
        assert_eq!(
            check_request(&indirect, &DEV),
            Ok(Checked::Indirect {
                write: true,
                nr_segments: 200,
                nr_pages: 1
            })
        );
    }

    #[test]
    fn the_persistent_flag_needs_the_feature() {
        let mut r = read(0, &[(0, 7)]);
        r.seg[0].pad = BLKIF_SEG_PERSISTENT;
        assert_eq!(check_request(&r, &DEV), Err(Reject::NonZeroPad));
        let with = DeviceLimits {
            features: DEV.features | BLKIF_FEATURE_PERSISTENT,
            ..DEV
        };
        assert!(check_request(&r, &with).is_ok());
        r.seg[0].pad = 2;
        assert_eq!(check_request(&r, &with), Err(Reject::NonZeroPad));
    }

    #[test]
    fn hostile_requests_are_refused() {
        // Past the end, by one unit.
        let r = read(DEV.sectors - 8, &[(0, 7), (0, 0)]);
        assert_eq!(check_request(&r, &DEV), Err(Reject::OutOfRange));
        // Overflowing start.
        let r = read(u64::MAX - 2, &[(0, 7)]);
        assert_eq!(check_request(&r, &DEV), Err(Reject::OutOfRange));
        // Too many segments.
        let mut r = read(0, &[(0, 7)]);
        r.nr_segments = 12;
        assert_eq!(check_request(&r, &DEV), Err(Reject::BadSegmentCount));
        r.nr_segments = 0;
        assert_eq!(check_request(&r, &DEV), Err(Reject::BadSegmentCount));
        // Reversed and past-the-page segments.
        assert_eq!(
            check_request(&read(0, &[(3, 2)]), &DEV),
            Err(Reject::BadSegment)
        );
        assert_eq!(
            check_request(&read(0, &[(0, 8)]), &DEV),
            Err(Reject::BadSegment)
        );
        // Garbage operation.
        let mut r = read(0, &[(0, 7)]);
        r.operation = 0x42;
        assert_eq!(check_request(&r, &DEV), Err(Reject::BadOperation));
        // Writes on a read-only device.
        let ro = DeviceLimits {
            readonly: true,
            ..DEV
        };
        let mut w = read(0, &[(0, 7)]);
        w.operation = BLKIF_OP_WRITE;
        assert_eq!(check_request(&w, &ro), Err(Reject::ReadOnly));
        // Indirect beyond what the backend advertised.
        let indirect = BlkifRequest {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: BLKIF_OP_READ,
            nr_indirect_segments: 257,
            indirect_grefs: [5, 6],
            ..BlkifRequest::default()
        };
        assert_eq!(check_request(&indirect, &DEV), Err(Reject::BadSegmentCount));
        // 4 KiB sectors need aligned requests.
        let big = DeviceLimits {
            sector_size: 4096,
            ..DEV
        };
        assert_eq!(
            check_request(&read(0, &[(0, 3)]), &big),
            Err(Reject::Misaligned)
        );
        assert_eq!(
            check_request(&read(4, &[(0, 7)]), &big),
            Err(Reject::Misaligned)
        );
        assert!(check_request(&read(8, &[(0, 7)]), &big).is_ok());
    }

    fn any_segment() -> impl Strategy<Value = BlkifSegment> {
        (
            any::<u32>(),
            0u8..10,
            0u8..10,
            prop_oneof![9 => Just(0u16), 1 => any::<u16>()],
        )
            .prop_map(|(gref, first_sect, last_sect, pad)| BlkifSegment {
                gref,
                first_sect,
                last_sect,
                pad,
            })
    }

    fn any_request() -> impl Strategy<Value = BlkifRequest> {
        (
            prop_oneof![Just(0u8), Just(1), Just(3), Just(5), Just(6), any::<u8>()],
            0u8..14,
            prop_oneof![Just(0u8), Just(1), any::<u8>()],
            prop_oneof![Just(0u16), 1u16..600, any::<u16>()],
            prop_oneof![0u64..(1 << 20), any::<u64>()],
            prop_oneof![Just(0u64), 0u64..64, any::<u64>()],
            proptest::array::uniform11(any_segment()),
            proptest::array::uniform2(prop_oneof![Just(0u32), any::<u32>()]),
            any::<u64>(),
        )
            .prop_map(
                |(operation, nr_segments, indirect_op, nis, sector, nr, seg, ig, id)| {
                    BlkifRequest {
                        operation,
                        nr_segments,
                        indirect_op,
                        pad0: 0,
                        nr_indirect_segments: nis,
                        pad1: 0,
                        id,
                        sector_number: sector,
                        nr_sectors: nr,
                        seg,
                        indirect_grefs: ig,
                    }
                },
            )
    }

    proptest! {
        /// BLK-2..6: whatever a frontend writes, an accepted request stays
        /// inside the device, inside its pages and within the segment limits.
        #[test]
        fn accepted_requests_stay_in_bounds(req in any_request(), ro in any::<bool>(), big in any::<bool>()) {
            let dev = DeviceLimits {
                readonly: ro,
                sector_size: if big { 4096 } else { 512 },
                ..DEV
            };
            match check_request(&req, &dev) {
                Ok(Checked::Direct { write, nr_segments }) => {
                    prop_assert!(!(write && ro));
                    prop_assert!((1..=11).contains(&nr_segments));
                    let mut end = req.sector_number;
                    for s in &req.seg[..usize::from(nr_segments)] {
                        prop_assert!(s.first_sect <= s.last_sect && s.last_sect < 8);
                        end += u64::from(s.last_sect - s.first_sect) + 1;
                    }
                    prop_assert!(end <= dev.sectors);
                    if big {
                        prop_assert_eq!(req.sector_number % 8, 0);
                        prop_assert_eq!(end % 8, 0);
                    }
                }
                Ok(Checked::Indirect { write, nr_segments, nr_pages }) => {
                    prop_assert!(!(write && ro));
                    prop_assert!(nr_segments >= 1 && nr_segments <= dev.max_indirect_segments);
                    prop_assert!((1..=BLKIF_MAX_INDIRECT_PAGES).contains(&nr_pages));
                    prop_assert!(req.sector_number < dev.sectors);
                }
                Ok(Checked::Discard) => {
                    prop_assert!(!ro);
                    prop_assert!(req.nr_sectors >= 1);
                    prop_assert!(req.sector_number.checked_add(req.nr_sectors).is_some_and(|e| e <= dev.sectors));
                }
                Ok(Checked::Flush) => prop_assert!(!ro),
                Err(reject) => prop_assert!(reject.status() < 0),
            }
        }

        /// Indirect segment lists: accepted lists end inside the device.
        #[test]
        fn indirect_segment_lists_stay_in_bounds(
            segs in proptest::collection::vec(any_segment(), 0..300),
            sector in prop_oneof![0u64..(1 << 20), any::<u64>()],
        ) {
            if let Ok(units) = check_segments(&segs, sector, &DEV) {
                prop_assert!(sector.checked_add(units).is_some_and(|e| e <= DEV.sectors));
                prop_assert!(segs.iter().all(|s| s.first_sect <= s.last_sect && s.last_sect < 8 && s.pad == 0));
            }
        }
    }
}
