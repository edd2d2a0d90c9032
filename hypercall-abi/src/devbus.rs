//! devbus (SPEC.md §12, DEV-*): device records instead of xenstore — since ABI 0.5.
//!
//! hv-core keeps a small table of *device records*. Each names a device kind
//! (block or network), its backend and frontend domains, the configuration the
//! toolstack chose (capacity and sector size, or a MAC address), what the
//! frontend published (ring grant references and an event port) and a state.
//! The privileged toolstack (a domain holding `DEVBUS_ADMIN`) creates and
//! destroys records; frontend and backend handshake through the record and
//! learn of every change through `VIRQ_DEVBUS`.
//!
//! # Handshake (DEV-3)
//! 1. [ADMIN] `DEVBUSOP_CREATE`: the record is `INITIALISING`.
//! 2. [FRONT] allocates an unbound port for the backend, grants its ring
//!    pages to the backend, then `DEVBUSOP_FRONT_PUBLISH`.
//! 3. [BACK] on `VIRQ_DEVBUS`, `DEVBUSOP_QUERY`s the record, maps the rings,
//!    binds the port, then `DEVBUSOP_BACK_CONNECT`: `CONNECTED`.
//! 4. Either side `DEVBUSOP_CLOSE`s: `CLOSING`; when the other closes too,
//!    `CLOSED`. The frontend may then `DEVBUSOP_RESET` to go back to step 2.
//! 5. A side that dies counts as closed; a record whose sides are both closed
//!    and one of them dead is removed (DEV-5).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `devbus_op(DEVBUSOP_CREATE, &DevbusCreate)`: needs `DEVBUS_ADMIN`.
pub const DEVBUSOP_CREATE: u64 = 0;
/// `devbus_op(DEVBUSOP_DESTROY, id)`: needs `DEVBUS_ADMIN`.
pub const DEVBUSOP_DESTROY: u64 = 1;
/// `devbus_op(DEVBUSOP_QUERY, &DevbusRecord)`: the first visible record with `id >=` the given one.
pub const DEVBUSOP_QUERY: u64 = 2;
/// `devbus_op(DEVBUSOP_FRONT_PUBLISH, &DevbusPublish)`: the frontend's rings and port.
pub const DEVBUSOP_FRONT_PUBLISH: u64 = 3;
/// `devbus_op(DEVBUSOP_BACK_CONNECT, &DevbusConnect)`: the backend serves the rings.
pub const DEVBUSOP_BACK_CONNECT: u64 = 4;
/// `devbus_op(DEVBUSOP_CLOSE, id)`: the caller's side goes away.
pub const DEVBUSOP_CLOSE: u64 = 5;
/// `devbus_op(DEVBUSOP_RESET, id)`: the frontend starts over after `CLOSED`.
pub const DEVBUSOP_RESET: u64 = 6;

/// Record kind: a block device (blkif, SPEC.md §13).
pub const DEVBUS_KIND_BLK: u32 = 1;
/// Record kind: a network interface (netif, SPEC.md §14).
pub const DEVBUS_KIND_NET: u32 = 2;

/// Record state: created, the handshake is in progress.
pub const DEVBUS_STATE_INITIALISING: u32 = 1;
/// Record state: the backend serves the frontend's rings.
pub const DEVBUS_STATE_CONNECTED: u32 = 2;
/// Record state: one side closed (or died); the other has not yet.
pub const DEVBUS_STATE_CLOSING: u32 = 3;
/// Record state: both sides closed; the frontend may reset.
pub const DEVBUS_STATE_CLOSED: u32 = 4;

/// `dev_flags`: the frontend may only read (blkif writes, flushes and discards fail).
pub const DEVBUS_FLAG_READONLY: u32 = 1 << 0;

/// Most ring pages a record carries (a net record: half for tx, half for rx).
pub const DEVBUS_MAX_RING_PAGES: u32 = 8;
/// Most records hv-core keeps at once (`-ENOSPC` beyond).
pub const DEVBUS_MAX_RECORDS: usize = 64;

/// IN/OUT of `DEVBUSOP_CREATE`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DevbusCreate {
    /// IN: `DEVBUS_KIND_*`.
    pub kind: u32,
    /// IN: the backend domain.
    pub backend: u32,
    /// IN: the frontend domain (not the backend).
    pub frontend: u32,
    /// IN: the backend's own name for what it serves (e.g. which disk view); opaque to hv-core.
    pub backend_handle: u32,
    /// IN: `DEVBUS_FLAG_*`.
    pub dev_flags: u32,
    /// IN (blk): logical sector size, 512 or 4096; 0 for net.
    pub sector_size: u32,
    /// IN (blk): capacity in 512-byte units, at least 1; 0 for net.
    pub sectors: u64,
    /// IN (net): the frontend's MAC in bytes 0..6 (unicast, not zero); bytes 6..8 zero. Zero for blk.
    pub mac: [u8; 8],
    /// OUT: the new record's id (ids are never reused).
    pub id: u32,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<DevbusCreate>() == 48);
const _: () = assert!(core::mem::offset_of!(DevbusCreate, sectors) == 24);
const _: () = assert!(core::mem::offset_of!(DevbusCreate, mac) == 32);
const _: () = assert!(core::mem::offset_of!(DevbusCreate, id) == 40);

/// A device record as `DEVBUSOP_QUERY` returns it. Tags: `[ADMIN]` set at
/// creation, `[FRONT]` published by the frontend, `[BACK]` by the backend,
/// `[HV]` kept by hv-core.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DevbusRecord {
    /// IN: the smallest id wanted; OUT: `[HV]` the record's id.
    pub id: u32,
    /// `[ADMIN]` `DEVBUS_KIND_*`.
    pub kind: u32,
    /// `[ADMIN]` backend domain.
    pub backend: u32,
    /// `[ADMIN]` frontend domain.
    pub frontend: u32,
    /// `[HV]` `DEVBUS_STATE_*`.
    pub state: u32,
    /// `[HV]` incremented on every change of the record.
    pub generation: u32,
    /// `[ADMIN]` see [`DevbusCreate::backend_handle`].
    pub backend_handle: u32,
    /// `[ADMIN]` `DEVBUS_FLAG_*`.
    pub dev_flags: u32,
    /// `[ADMIN]` (blk) capacity in 512-byte units.
    pub sectors: u64,
    /// `[ADMIN]` (blk) logical sector size.
    pub sector_size: u32,
    /// `[HV]` `DEVBUS_SIDE_*` bits of the sides that closed (or died).
    pub closed_sides: u32,
    /// `[ADMIN]` (net) MAC in bytes 0..6.
    pub mac: [u8; 8],
    /// `[FRONT]` pages per ring, 0 until published.
    pub nr_ring_pages: u32,
    /// `[FRONT]` the frontend's port, unbound for the backend when published.
    pub event_port: u32,
    /// `[FRONT]` grant references of the ring pages (net: tx pages, then rx pages).
    pub ring_refs: [u32; DEVBUS_MAX_RING_PAGES as usize],
    /// `[BACK]` protocol features (`BLKIF_FEATURE_*`, `NETIF_FEATURE_*`), set on connect.
    pub backend_features: u32,
    /// `[BACK]` (blk) most segments of an indirect request, set on connect.
    pub max_indirect_segments: u32,
    /// Zero.
    pub reserved: [u32; 6],
}
const _: () = assert!(core::mem::size_of::<DevbusRecord>() == 128);
const _: () = assert!(core::mem::offset_of!(DevbusRecord, sectors) == 32);
const _: () = assert!(core::mem::offset_of!(DevbusRecord, mac) == 48);
const _: () = assert!(core::mem::offset_of!(DevbusRecord, nr_ring_pages) == 56);
const _: () = assert!(core::mem::offset_of!(DevbusRecord, ring_refs) == 64);
const _: () = assert!(core::mem::offset_of!(DevbusRecord, backend_features) == 96);

/// `closed_sides`: the frontend closed or died.
pub const DEVBUS_SIDE_FRONT: u32 = 1 << 0;
/// `closed_sides`: the backend closed or died.
pub const DEVBUS_SIDE_BACK: u32 = 1 << 1;

/// IN of `DEVBUSOP_FRONT_PUBLISH`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DevbusPublish {
    /// The record.
    pub id: u32,
    /// Pages per ring: a power of two; blk: 1 ..= 8; net: 1 ..= 4 (two rings).
    pub nr_ring_pages: u32,
    /// A port of the caller, unbound for the backend.
    pub event_port: u32,
    /// Zero.
    pub pad: u32,
    /// Grant references; entries past the ring pages zero.
    pub ring_refs: [u32; DEVBUS_MAX_RING_PAGES as usize],
}
const _: () = assert!(core::mem::size_of::<DevbusPublish>() == 48);
const _: () = assert!(core::mem::offset_of!(DevbusPublish, ring_refs) == 16);

/// IN of `DEVBUSOP_BACK_CONNECT`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DevbusConnect {
    /// The record.
    pub id: u32,
    /// Features the backend serves.
    pub backend_features: u32,
    /// (blk) most segments of an indirect request; 0 if indirect requests are not served.
    pub max_indirect_segments: u32,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<DevbusConnect>() == 16);

/// Whether `nr` is a valid ring-page count for a record of `kind` (DEV-3).
pub const fn ring_pages_valid(kind: u32, nr: u32) -> bool {
    let max = match kind {
        DEVBUS_KIND_BLK => DEVBUS_MAX_RING_PAGES,
        DEVBUS_KIND_NET => DEVBUS_MAX_RING_PAGES / 2,
        _ => 0,
    };
    nr >= 1 && nr <= max && nr.is_power_of_two()
}

/// Grant references a record of `kind` with `nr` pages per ring uses.
pub const fn ring_refs_used(kind: u32, nr: u32) -> u32 {
    if kind == DEVBUS_KIND_NET {
        nr * 2
    } else {
        nr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_page_counts() {
        assert!(ring_pages_valid(DEVBUS_KIND_BLK, 1));
        assert!(ring_pages_valid(DEVBUS_KIND_BLK, 8));
        assert!(!ring_pages_valid(DEVBUS_KIND_BLK, 0));
        assert!(!ring_pages_valid(DEVBUS_KIND_BLK, 3));
        assert!(!ring_pages_valid(DEVBUS_KIND_BLK, 16));
        assert!(ring_pages_valid(DEVBUS_KIND_NET, 4));
        assert!(!ring_pages_valid(DEVBUS_KIND_NET, 8));
        assert!(!ring_pages_valid(7, 1));
        assert_eq!(ring_refs_used(DEVBUS_KIND_NET, 4), 8);
        assert_eq!(ring_refs_used(DEVBUS_KIND_BLK, 4), 4);
    }
}
