//! Batched grant copies between another domain's grants and frames this
//! domain holds (GNT-4), safely: the own side of every copy is a [`Frame`]
//! borrowed exclusively for the batch, which is what `GNTTABOP_COPY`
//! requires of an own destination. Backends move data this way instead of
//! mapping guest pages (NET-3, BLK copies).

use alloc::vec::Vec;

use hypercall_abi::grant::{
    GnttabCopy, GnttabCopyPtr, GrantRef, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTTAB_BATCH_MAX,
};
use hypercall_abi::{DomId, Errno};

use crate::mm::Frame;

/// Which way a copy goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the grant into the frame.
    FromGrant,
    /// From the frame into the grant.
    ToGrant,
}

/// One copy of `len` bytes between `(dom, gref)` at `grant_offset` and
/// `frames[frame]` at `frame_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOp {
    pub dom: DomId,
    pub gref: GrantRef,
    pub grant_offset: u32,
    pub frame: usize,
    pub frame_offset: u32,
    pub len: u32,
    pub direction: Direction,
}

/// Runs `ops` in batches of at most 512; returns each op's status (0 or
/// `-errno`). `Err` when a batch is refused as a whole. An op naming a
/// frame index past `frames` fails with `-EINVAL` without a hypercall.
pub fn copy_batch(ops: &[CopyOp], frames: &mut [Frame]) -> Result<Vec<i32>, Errno> {
    let mut statuses = Vec::with_capacity(ops.len());
    for chunk in ops.chunks(GNTTAB_BATCH_MAX as usize) {
        let mut raw: Vec<GnttabCopy> = Vec::with_capacity(chunk.len());
        let mut valid: Vec<bool> = Vec::with_capacity(chunk.len());
        for op in chunk {
            let Some(frame) = frames.get(op.frame) else {
                valid.push(false);
                continue;
            };
            let grant = GnttabCopyPtr {
                ref_or_mfn: u64::from(op.gref),
                domid: op.dom,
                offset: op.grant_offset,
            };
            let own = GnttabCopyPtr {
                ref_or_mfn: frame.mfn(),
                domid: 0,
                offset: op.frame_offset,
            };
            let (source, dest, flags) = match op.direction {
                Direction::FromGrant => (grant, own, GNTCOPY_SOURCE_GREF),
                Direction::ToGrant => (own, grant, GNTCOPY_DEST_GREF),
            };
            raw.push(GnttabCopy {
                source,
                dest,
                len: op.len,
                flags,
                ..GnttabCopy::default()
            });
            valid.push(true);
        }
        if !raw.is_empty() {
            // SAFETY: every own destination is a `Frame` in `frames`, which
            // this call borrows exclusively; a `Frame`'s memory is only
            // reached through its methods, never through Rust references,
            // so the hypervisor writing it cannot invalidate one.
            unsafe { crate::grants::grant_copy(&mut raw)? };
        }
        let einval = -i32::from(Errno::EINVAL.0);
        let mut done = raw.iter();
        for ok in valid {
            let status = if ok {
                done.next().map_or(einval, |op| op.status)
            } else {
                einval
            };
            statuses.push(status);
        }
    }
    Ok(statuses)
}
