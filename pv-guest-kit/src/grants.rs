//! Grant tables on the guest side (SPEC.md §8b, GNT-1 .. GNT-5): lending
//! this domain's frames to others ([`GrantTable`]) and using frames others
//! lend ([`map_grant_ref`], [`Mapping`], [`grant_copy`]).
//!
//! # Granting (protocol of `hypercall_abi::grant`)
//! [`GrantTable::setup`] takes frames from the kit's allocator, registers
//! their mfns with `GNTTABOP_SETUP_TABLE` and keeps them (mapped writable
//! through the physmap, used by nothing else). [`GrantTable::grant_access`]
//! writes the entry's `frame`, then its `domid` (with `flags` still 0), then
//! — after a fence — the flags; [`GrantTable::end_access`] clears the entry
//! with a compare-exchange on the 32-bit `flags`+`domid` word that fails
//! while the hypervisor has `GTF_READING`/`GTF_WRITING` set.
//!
//! References are handed out lowest first, starting at 0, so a fresh
//! table's first grant is reference 0, its second 1, and so on (guests that
//! agree on references by convention rely on this); ended references are
//! reused, lowest first.
//!
//! # Mapping
//! A grant is mapped at an address whose L1 table exists and whose entry is
//! empty: [`crate::mm::reserve_va`] provides such pages. The kit reaches
//! mapped grants only through raw volatile or atomic accesses
//! ([`crate::ring::SharedPage`], [`crate::mm::probe`]), never through Rust
//! references, so unmapping one cannot invalidate a reference.
//!
//! # Invariants
//! - A [`GrantTable`]'s frames are registered with the hypervisor for as long
//!   as it owns them; dropping a table that was not torn down leaks them
//!   rather than handing them out again.
//! - Entries are only touched with 32-bit atomics.

use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU32, Ordering};

use hypercall_abi::grant::{
    GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef, GnttabUnmapGrantRef, GNTCOPY_SOURCE_GREF,
    GNTMAP_READONLY, GRANT_ENTRIES_PER_FRAME, GRANT_MAX_FRAMES, GTF_PERMIT_ACCESS, GTF_READING,
    GTF_READONLY, GTF_WRITING,
};
use hypercall_abi::{DomId, Errno};

pub use hypercall_abi::grant::{GrantEntry, GrantRef};

use crate::hypercall;
use crate::mm::{Frame, MmError};

/// Why a grant-table operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// No frame for the table.
    Mm(MmError),
    /// The hypervisor refused.
    Hypercall(Errno),
    /// Every reference of the table is in use.
    Full,
    /// The frame number does not fit an entry's 32-bit `frame`.
    BadFrame(u64),
    /// `nr_frames` is not 1 ..= `GRANT_MAX_FRAMES`.
    BadSize(u32),
}

impl core::fmt::Display for GrantError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GrantError::Mm(err) => write!(f, "{err}"),
            GrantError::Hypercall(errno) => write!(f, "grant_table_op failed: {errno}"),
            GrantError::Full => write!(f, "grant table full"),
            GrantError::BadFrame(mfn) => write!(f, "mfn {mfn:#x} does not fit a grant entry"),
            GrantError::BadSize(n) => write!(f, "{n} grant-table frames (1..={GRANT_MAX_FRAMES})"),
        }
    }
}

/// [`GrantTable::end_access`] failed: the grantee still maps or copies the
/// frame (`GTF_READING`/`GTF_WRITING` set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InUse;

impl core::fmt::Display for InUse {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("grant in use")
    }
}

/// This domain's grant table.
#[derive(Debug)]
pub struct GrantTable {
    /// The table's frames (entry `r` is in frame `r / 512`).
    frames: Vec<Frame>,
    /// Whether each reference is handed out.
    granted: Vec<bool>,
    /// Whether the frames are (still) registered.
    registered: bool,
}

impl GrantTable {
    /// Allocates `nr_frames` (1 ..= 4) zeroed frames and registers them as
    /// this domain's grant table (`GNTTABOP_SETUP_TABLE`), replacing any
    /// earlier table of the domain.
    pub fn setup(nr_frames: u32) -> Result<GrantTable, GrantError> {
        if !(1..=GRANT_MAX_FRAMES).contains(&nr_frames) {
            return Err(GrantError::BadSize(nr_frames));
        }
        let frames = (0..nr_frames)
            .map(|_| Frame::alloc_zeroed())
            .collect::<Result<Vec<Frame>, MmError>>()
            .map_err(GrantError::Mm)?;
        let mfns: Vec<u64> = frames.iter().map(Frame::mfn).collect();
        // SAFETY: the frames belong to this table from now on: they are never
        // handed out, and their entries are only accessed with atomics (the
        // hypervisor sets in-use bits in them).
        unsafe { hypercall::grant_setup_table(&mfns) }.map_err(GrantError::Hypercall)?;
        Ok(GrantTable {
            frames,
            granted: alloc::vec![false; (nr_frames * GRANT_ENTRIES_PER_FRAME) as usize],
            registered: true,
        })
    }

    /// References the table holds.
    pub fn capacity(&self) -> u32 {
        self.granted.len() as u32
    }

    /// References handed out and not ended.
    pub fn in_use(&self) -> usize {
        self.granted.iter().filter(|&&g| g).count()
    }

    /// The 32-bit word at byte `offset` (0: flags + domid, 4: frame) of the
    /// entry `gref`; panics beyond the table.
    fn word(&self, gref: GrantRef, offset: u64) -> &AtomicU32 {
        let frame = &self.frames[(gref / GRANT_ENTRIES_PER_FRAME) as usize];
        let va = frame.va() + u64::from(gref % GRANT_ENTRIES_PER_FRAME) * 8 + offset;
        // SAFETY: `va` is a 4-aligned word inside a frame this table owns,
        // mapped writable in the physmap for as long as the table lives; the
        // frame is only ever accessed atomically (here and by the hypervisor).
        unsafe { AtomicU32::from_ptr(va as *mut u32) }
    }

    /// Entry `gref` as it is now.
    pub fn entry(&self, gref: GrantRef) -> GrantEntry {
        let word = self.word(gref, 0).load(Ordering::SeqCst);
        GrantEntry {
            flags: word as u16,
            domid: (word >> 16) as u16,
            frame: self.word(gref, 4).load(Ordering::SeqCst),
        }
    }

    /// Lets `domid` use frame `frame_mfn` (one of this domain's), read-only or
    /// read-write; returns the reference to pass to it (lowest free first).
    pub fn grant_access(
        &mut self,
        domid: DomId,
        frame_mfn: u64,
        readonly: bool,
    ) -> Result<GrantRef, GrantError> {
        let frame = u32::try_from(frame_mfn).map_err(|_| GrantError::BadFrame(frame_mfn))?;
        let domid = u16::try_from(domid).map_err(|_| GrantError::Hypercall(Errno::EINVAL))?;
        let index = self
            .granted
            .iter()
            .position(|&g| !g)
            .ok_or(GrantError::Full)?;
        let gref = index as GrantRef;
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        // Step 1 of the protocol: frame, then domid (flags still 0), then —
        // after a barrier — the flags that make the entry usable.
        self.word(gref, 4).store(frame, Ordering::SeqCst);
        self.word(gref, 0)
            .store(u32::from(domid) << 16, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.word(gref, 0)
            .store(u32::from(domid) << 16 | u32::from(flags), Ordering::SeqCst);
        self.granted[index] = true;
        Ok(gref)
    }

    /// Ends grant `gref`: clears the entry unless the grantee still maps or
    /// copies the frame. A reference that is not handed out succeeds.
    pub fn end_access(&mut self, gref: GrantRef) -> Result<(), InUse> {
        if !self.granted.get(gref as usize).copied().unwrap_or(false) {
            return Ok(());
        }
        let word = self.word(gref, 0);
        let mut current = word.load(Ordering::SeqCst);
        loop {
            if current as u16 & (GTF_READING | GTF_WRITING) != 0 {
                return Err(InUse);
            }
            match word.compare_exchange(current, 0, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        self.granted[gref as usize] = false;
        Ok(())
    }

    /// Drops the table (`GNTTABOP_SETUP_TABLE` with no frames) and returns its
    /// frames to the allocator. Fails (`EBUSY`) while a grant is in use.
    pub fn teardown(mut self) -> Result<(), (GrantTable, Errno)> {
        // SAFETY: an empty list only drops the table; the hypervisor gives
        // up its uses of the frames.
        match unsafe { hypercall::grant_setup_table(&[]) } {
            Ok(()) => {
                self.registered = false;
                Ok(())
            }
            Err(errno) => Err((self, errno)),
        }
    }
}

impl Drop for GrantTable {
    fn drop(&mut self) {
        if self.registered {
            // Still the hypervisor's table: never hand these frames out again.
            for frame in core::mem::take(&mut self.frames) {
                core::mem::forget(frame);
            }
        }
    }
}

/// A grant mapping: the handle `GNTTABOP_MAP_GRANT_REF` returned and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantHandle {
    /// The hypervisor's handle.
    pub handle: u32,
    /// The mapped address.
    pub host_addr: u64,
}

/// Maps `(dom, gref)` at `host_addr` (its L1 table must exist and its entry
/// be empty, e.g. a page of [`crate::mm::reserve_va`]), read-only or
/// writable. The error is the operation's `status`.
pub fn map_grant_ref(
    dom: DomId,
    gref: GrantRef,
    host_addr: u64,
    readonly: bool,
) -> Result<GrantHandle, Errno> {
    let mut op = GnttabMapGrantRef {
        host_addr,
        flags: if readonly { GNTMAP_READONLY } else { 0 },
        gref,
        dom,
        ..GnttabMapGrantRef::default()
    };
    hypercall::grant_map(core::slice::from_mut(&mut op))?;
    Errno::check(i64::from(op.status))?;
    Ok(GrantHandle {
        handle: op.handle,
        host_addr,
    })
}

/// Unmaps a grant mapping. The error is the operation's `status` (`EINVAL`
/// for a handle that is not mapped at `host_addr`, e.g. a second unmap).
pub fn unmap_grant_ref(handle: GrantHandle) -> Result<(), Errno> {
    let mut op = GnttabUnmapGrantRef {
        host_addr: handle.host_addr,
        handle: handle.handle,
        status: 0,
    };
    // SAFETY: the hypervisor removes only a grant mapping (the handle must
    // name one at `host_addr`), and no Rust reference covers a grant mapping:
    // the kit accesses them only through raw volatile or atomic operations
    // (module invariants); such an access after the unmap faults.
    unsafe { hypercall::grant_unmap(core::slice::from_mut(&mut op))? };
    Errno::check(i64::from(op.status)).map(drop)
}

/// An owned grant mapping (see [`map`]); unmapped with [`Mapping::unmap`].
/// Dropping it leaves the grant mapped.
#[derive(Debug)]
pub struct Mapping {
    handle: GrantHandle,
    readonly: bool,
}

/// [`map_grant_ref`] as an owned [`Mapping`].
pub fn map(dom: DomId, gref: GrantRef, host_addr: u64, readonly: bool) -> Result<Mapping, Errno> {
    map_grant_ref(dom, gref, host_addr, readonly).map(|handle| Mapping { handle, readonly })
}

impl Mapping {
    /// The mapped address.
    pub fn va(&self) -> u64 {
        self.handle.host_addr
    }

    /// The raw handle.
    pub fn handle(&self) -> GrantHandle {
        self.handle
    }

    /// Whether the mapping is read-only.
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// Unmaps the grant; on failure the mapping comes back.
    pub fn unmap(self) -> Result<(), (Mapping, Errno)> {
        match unmap_grant_ref(self.handle) {
            Ok(()) => Ok(()),
            Err(errno) => Err((self, errno)),
        }
    }
}

/// `GNTTABOP_COPY` of `ops` (at most 512): each op's `status` says how it
/// went; `Err` only when the batch itself is refused.
///
/// # Safety
/// 1. Every destination that is one of this domain's own frames (no
///    `GNTCOPY_DEST_GREF`) must be a frame Rust code does not use through
///    references, e.g. a [`Frame`] the caller holds (accessed only through
///    its methods).
pub unsafe fn grant_copy(ops: &mut [GnttabCopy]) -> Result<(), Errno> {
    // SAFETY: obligation 1 of the caller.
    unsafe { hypercall::grant_copy(ops) }
}

/// Copies `len` bytes at `src_offset` of `(dom, gref)` into `dst` at
/// `dst_offset`, with one `GNTTABOP_COPY`. The error is the op's `status`.
pub fn copy_from_grant(
    dom: DomId,
    gref: GrantRef,
    src_offset: u32,
    dst: &mut Frame,
    dst_offset: u32,
    len: u32,
) -> Result<(), Errno> {
    let mut op = GnttabCopy {
        source: GnttabCopyPtr {
            ref_or_mfn: u64::from(gref),
            domid: dom,
            offset: src_offset,
        },
        dest: GnttabCopyPtr {
            ref_or_mfn: dst.mfn(),
            domid: 0,
            offset: dst_offset,
        },
        len,
        flags: GNTCOPY_SOURCE_GREF,
        ..GnttabCopy::default()
    };
    // SAFETY: the only own destination is `dst`, a frame the caller holds
    // exclusively (`&mut Frame`), which no Rust reference covers.
    unsafe { grant_copy(core::slice::from_mut(&mut op))? };
    Errno::check(i64::from(op.status)).map(drop)
}
