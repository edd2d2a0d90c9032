//! Grant tables (SPEC.md §8b, GNT-*): memory one domain lends another.
//!
//! A granting domain keeps a table of [`GrantEntry`] in frames of its own that
//! it registers with `GNTTABOP_SETUP_TABLE`. Entry `r` (the *grant reference*)
//! says which domain may use which of its frames, and how. The mapping domain
//! maps the frame into its address space, or copies to or from it, naming
//! `(granter, ref)`; the hypervisor checks the entry every time.
//!
//! # Protocol (v1, as Xen's)
//! 1. [GRANTER] writes `frame`, then `domid`, then sets `flags` to
//!    `GTF_PERMIT_ACCESS` (| `GTF_READONLY`), with a write barrier before the
//!    flags.
//! 2. [HV] on map or copy: atomically checks `flags`/`domid` and sets
//!    `GTF_READING` (and `GTF_WRITING` for write access) while the frame is in
//!    use, clearing them when the last use ends.
//! 3. [GRANTER] ends the grant by atomically clearing `flags` *only if*
//!    neither `GTF_READING` nor `GTF_WRITING` is set (compare-exchange on the
//!    32-bit `flags`+`domid` word); otherwise the grant is still in use.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A grant reference: an index into the granter's table.
pub type GrantRef = u32;

/// One grant-table entry, in the granter's memory.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GrantEntry {
    /// `[GRANTER]` `GTF_PERMIT_ACCESS`, `GTF_READONLY`; `[HV]` `GTF_READING`, `GTF_WRITING`.
    pub flags: u16,
    /// `[GRANTER]` the domain allowed to use the frame.
    pub domid: u16,
    /// `[GRANTER]` the machine frame granted (one the granter owns).
    pub frame: u32,
}
const _: () = assert!(core::mem::size_of::<GrantEntry>() == 8);
const _: () = assert!(core::mem::offset_of!(GrantEntry, domid) == 2);
const _: () = assert!(core::mem::offset_of!(GrantEntry, frame) == 4);

/// The entry grants access.
pub const GTF_PERMIT_ACCESS: u16 = 1 << 0;
/// The grantee may only read.
pub const GTF_READONLY: u16 = 1 << 2;
/// `[HV]` the frame is mapped or being copied for reading.
pub const GTF_READING: u16 = 1 << 3;
/// `[HV]` the frame is mapped or being copied for writing.
pub const GTF_WRITING: u16 = 1 << 4;

/// Entries per grant-table frame.
pub const GRANT_ENTRIES_PER_FRAME: u32 = 512;
/// Most grant-table frames a domain may register.
pub const GRANT_MAX_FRAMES: u32 = 4;

/// `grant_table_op(GNTTABOP_MAP_GRANT_REF, ops, count)`.
pub const GNTTABOP_MAP_GRANT_REF: u64 = 0;
/// `grant_table_op(GNTTABOP_UNMAP_GRANT_REF, ops, count)`.
pub const GNTTABOP_UNMAP_GRANT_REF: u64 = 1;
/// `grant_table_op(GNTTABOP_SETUP_TABLE, &GnttabSetupTable, 1)`.
pub const GNTTABOP_SETUP_TABLE: u64 = 2;
/// `grant_table_op(GNTTABOP_COPY, ops, count)`.
pub const GNTTABOP_COPY: u64 = 5;
/// `grant_table_op(GNTTABOP_QUERY_SIZE, &GnttabQuerySize, 1)`.
pub const GNTTABOP_QUERY_SIZE: u64 = 6;

/// Largest batch for map, unmap and copy (`-E2BIG` beyond).
pub const GNTTAB_BATCH_MAX: u64 = 512;

/// IN/OUT of `GNTTABOP_SETUP_TABLE`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabSetupTable {
    /// IN: 1 ..= `GRANT_MAX_FRAMES`, or 0 to drop the table.
    pub nr_frames: u32,
    /// Must be zero.
    pub pad: u32,
    /// IN: guest address of `nr_frames` `u64` mfns the caller owns, which become the table.
    pub frame_list: u64,
}
const _: () = assert!(core::mem::size_of::<GnttabSetupTable>() == 16);

/// OUT of `GNTTABOP_QUERY_SIZE`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabQuerySize {
    /// OUT: frames in the caller's table.
    pub nr_frames: u32,
    /// OUT: `GRANT_MAX_FRAMES`.
    pub max_nr_frames: u32,
}
const _: () = assert!(core::mem::size_of::<GnttabQuerySize>() == 8);

/// `GnttabMapGrantRef.flags`: map read-only.
pub const GNTMAP_READONLY: u32 = 1 << 0;

/// One map operation: IN `host_addr`, `flags`, `gref`, `dom`; OUT `status`, `handle`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabMapGrantRef {
    /// IN: where to map, in the caller's current address space. Its L1 entry
    /// must exist (L4..L2 present) and be empty.
    pub host_addr: u64,
    /// IN: `GNTMAP_*`.
    pub flags: u32,
    /// IN: the reference in the granter's table.
    pub gref: GrantRef,
    /// IN: the granting domain.
    pub dom: u32,
    /// OUT: 0 or `-errno`.
    pub status: i32,
    /// OUT: names the mapping for unmap.
    pub handle: u32,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<GnttabMapGrantRef>() == 32);
const _: () = assert!(core::mem::offset_of!(GnttabMapGrantRef, status) == 20);
const _: () = assert!(core::mem::offset_of!(GnttabMapGrantRef, handle) == 24);

/// One unmap operation: IN `host_addr`, `handle`; OUT `status`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabUnmapGrantRef {
    /// IN: the address the grant was mapped at.
    pub host_addr: u64,
    /// IN: the handle map returned.
    pub handle: u32,
    /// OUT: 0 or `-errno`.
    pub status: i32,
}
const _: () = assert!(core::mem::size_of::<GnttabUnmapGrantRef>() == 16);

/// One side of a copy.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabCopyPtr {
    /// A grant reference of `domid` (with the matching `GNTCOPY_*_GREF` flag)
    /// or else an mfn the caller owns.
    pub ref_or_mfn: u64,
    /// The granting domain, for a grant reference; ignored for an own mfn.
    pub domid: u32,
    /// Byte offset in the frame.
    pub offset: u32,
}
const _: () = assert!(core::mem::size_of::<GnttabCopyPtr>() == 16);

/// `GnttabCopy.flags`: `source.ref_or_mfn` is a grant reference.
pub const GNTCOPY_SOURCE_GREF: u32 = 1 << 0;
/// `GnttabCopy.flags`: `dest.ref_or_mfn` is a grant reference.
pub const GNTCOPY_DEST_GREF: u32 = 1 << 1;

/// One copy: IN everything but `status`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabCopy {
    pub source: GnttabCopyPtr,
    pub dest: GnttabCopyPtr,
    /// Bytes; `offset + len` must stay inside the frame on both sides.
    pub len: u32,
    /// `GNTCOPY_*`.
    pub flags: u32,
    /// OUT: 0 or `-errno`.
    pub status: i32,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<GnttabCopy>() == 48);
const _: () = assert!(core::mem::offset_of!(GnttabCopy, len) == 32);
const _: () = assert!(core::mem::offset_of!(GnttabCopy, status) == 40);
