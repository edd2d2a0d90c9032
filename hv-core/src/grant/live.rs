//! The machine's grant state and grant-table memory reached through the
//! direct map. Lock order: `domain::DOMAINS` before [`GRANTS`] before
//! `mm::live::FRAMES`.

use core::sync::atomic::{AtomicU32, Ordering};

use super::{GrantMemory, Grants};
use crate::mm::{mfn_to_virt, Mfn};

/// Every domain's grant table and maptrack.
pub static GRANTS: crate::sync::Mutex<Grants> = crate::sync::Mutex::new(Grants::new());

/// Grant entries and granted frames through the direct map. Only frames the
/// grant engine has checked (grant-table frames it holds a reference on,
/// frames owned by the granter) are touched.
pub struct DirectGrantMemory;

fn word(mfn: Mfn, offset: usize) -> &'static AtomicU32 {
    // SAFETY: the engine passes a frame it holds a reference on and an
    // offset below 4096 that is 4-byte aligned (entries are 8 bytes).
    unsafe { AtomicU32::from_ptr((mfn_to_virt(mfn) + (offset % 4096) as u64) as *mut u32) }
}

impl GrantMemory for DirectGrantMemory {
    fn load(&self, mfn: Mfn, offset: usize) -> u32 {
        word(mfn, offset).load(Ordering::SeqCst)
    }

    fn compare_exchange(&mut self, mfn: Mfn, offset: usize, old: u32, new: u32) -> bool {
        word(mfn, offset)
            .compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    fn and(&mut self, mfn: Mfn, offset: usize, mask: u32) {
        word(mfn, offset).fetch_and(mask, Ordering::SeqCst);
    }

    fn copy(&mut self, dst: Mfn, dst_offset: usize, src: Mfn, src_offset: usize, len: usize) {
        // SAFETY: the engine checked both ranges lie inside their frames and
        // holds references on both (the destination typed writable, so not a
        // page table); `copy` tolerates overlap within one frame.
        unsafe {
            core::ptr::copy(
                (mfn_to_virt(src) + src_offset as u64) as *const u8,
                (mfn_to_virt(dst) + dst_offset as u64) as *mut u8,
                len,
            )
        };
    }
}
