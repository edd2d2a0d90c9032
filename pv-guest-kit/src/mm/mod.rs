//! Guest memory (SPEC.md §5.2, §7 MM-*): what the kit builds on the
//! domain's pseudo-physical memory and the PV MMU hypercalls.
//!
//! - [`frames`]: a bitmap allocator over the free pfns and [`Frame`], the
//!   token that owns one;
//! - the heap: a `#[global_allocator]` over a contiguous pfn range carved out
//!   of the free pfns by [`init`] (kernel target only), so guests can use
//!   `alloc`;
//! - [`pagetable`]: [`AddressSpace`], the page-table manager, with batched
//!   `mmu_update`s ([`flush`], [`set_batch_limit`], [`stats`]);
//! - [`probe`]: reads and writes that report a #PF instead of dying;
//! - [`physmap`]: the only code that dereferences addresses;
//! - [`va`]: address ranges with page tables but no mappings, for grant maps.
//!
//! `kit_start` calls [`init`] before `main`.
//!
//! # Invariants
//! - [`Layout`] is written once by [`init`] and never changes.
//! - The P2M is never changed by the kit; mfn → pfn lookups use the M2P when
//!   it agrees with the P2M, else a reverse map built from the P2M.

pub mod frames;
#[cfg(target_os = "none")]
mod heap;
mod mmu;
pub mod pagetable;
pub mod physmap;
pub mod probe;
pub mod va;

use alloc::vec::Vec;
use core::fmt;

use hypercall_abi::start_info::StartInfo;
use hypercall_abi::{Errno, PAGE_SIZE};
use spin::Once;

pub use frames::{frame_stats, free_frames, Frame};
pub use pagetable::{
    clear_user, current_kernel_base, flush, invlpg, set_batch_limit, stats, tlb_flush_local,
    AddressSpace, MmStats, ReadOnlyFrame, SpaceKind, Translation,
};
pub use va::{reserve_va, VaRange};

/// Heap size cap (4 MiB).
pub const HEAP_MAX_PAGES: u64 = 1024;

/// The domain's memory layout, from start_info (SPEC.md §5.2).
#[derive(Debug)]
pub struct Layout {
    /// Virtual address of pfn 0.
    pub virt_base: u64,
    /// Pfns `0 .. nr_pages`.
    pub nr_pages: u64,
    /// pfn → mfn.
    pub p2m: &'static [u64],
    /// First start-of-day page-table pfn.
    pub pt_first_pfn: u64,
    /// Start-of-day page-table frames.
    pub nr_pt_frames: u64,
    /// Mfn of the start-of-day L4 (the kernel base pointer at entry).
    pub boot_l4_mfn: u64,
    /// Entries of the M2P table.
    pub nr_m2p_entries: u64,
    /// The shared_info frame (owned, not in the P2M).
    pub shared_info_mfn: u64,
    /// Pfns the heap occupies.
    pub heap: core::ops::Range<u64>,
    /// Pfns the frame allocator manages.
    pub free: core::ops::Range<u64>,
}

impl Layout {
    /// Virtual address of pfn `pfn` in the physmap.
    pub fn pfn_va(&self, pfn: u64) -> u64 {
        self.virt_base + pfn * PAGE_SIZE
    }

    /// The mfn of `pfn`; panics beyond `nr_pages`.
    pub fn mfn(&self, pfn: u64) -> u64 {
        match usize::try_from(pfn).ok().and_then(|i| self.p2m.get(i)) {
            Some(&mfn) => mfn,
            None => panic!("pfn {pfn:#x} beyond nr_pages {:#x}", self.nr_pages),
        }
    }

    /// End (exclusive) of the physmap: the pfns, then the shared_info page.
    pub fn physmap_end(&self) -> u64 {
        self.pfn_va(self.nr_pages + 1)
    }

    /// Whether `va` lies in the physmap (which Rust code uses: image, stacks,
    /// heap, page tables).
    pub fn in_physmap(&self, va: u64) -> bool {
        (self.virt_base..self.physmap_end()).contains(&va)
    }

    /// Whether `pfn` is one of the start-of-day page tables.
    pub fn is_boot_pt(&self, pfn: u64) -> bool {
        (self.pt_first_pfn..self.pt_first_pfn + self.nr_pt_frames).contains(&pfn)
    }
}

static LAYOUT: Once<Layout> = Once::new();
/// Sorted (mfn, pfn) pairs, built on the first M2P miss.
static REVERSE: Once<Vec<(u64, u64)>> = Once::new();

/// The layout recorded by [`init`]. Panics before it.
pub fn layout() -> &'static Layout {
    match LAYOUT.get() {
        Some(layout) => layout,
        None => panic!("mm::layout() before mm::init"),
    }
}

/// What part of free memory becomes the heap: a quarter, at most
/// [`HEAP_MAX_PAGES`]; returns `(heap pfns, allocator pfns)`.
pub fn split_free(
    first_free: u64,
    nr_pages: u64,
) -> (core::ops::Range<u64>, core::ops::Range<u64>) {
    let first = first_free.min(nr_pages);
    let heap_pages = ((nr_pages - first) / 4).min(HEAP_MAX_PAGES);
    (first..first + heap_pages, first + heap_pages..nr_pages)
}

/// Sets up the layout, the heap and the frame allocator from start_info. No
/// hypercall is made. Called by `kit_start` before `main`; later calls do
/// nothing.
pub fn init(si: &'static StartInfo) {
    if LAYOUT.get().is_some() {
        return;
    }
    let (heap, free) = split_free(si.first_free_pfn, si.nr_pages);
    let p2m = physmap::p2m_slice(si.p2m_list, si.nr_pages);
    let l4_pfn = si.pt_base.saturating_sub(si.virt_base) / PAGE_SIZE;
    let boot_l4_mfn = usize::try_from(l4_pfn)
        .ok()
        .and_then(|i| p2m.get(i))
        .copied()
        .unwrap_or(0);
    let layout = LAYOUT.call_once(|| Layout {
        virt_base: si.virt_base,
        nr_pages: si.nr_pages,
        p2m,
        pt_first_pfn: si.pt_first_pfn,
        nr_pt_frames: si.nr_pt_frames,
        boot_l4_mfn,
        nr_m2p_entries: si.nr_m2p_entries,
        shared_info_mfn: si.shared_info_mfn,
        heap: heap.clone(),
        free: free.clone(),
    });
    #[cfg(target_os = "none")]
    heap::init(
        layout.pfn_va(heap.start),
        (heap.end - heap.start) * PAGE_SIZE,
    );
    #[cfg(not(target_os = "none"))]
    let _ = layout;
    frames::init(free.start, free.end);
}

/// `M2P[mfn]` as the hypervisor keeps it (MM-3); `None` beyond the table.
pub fn m2p(mfn: u64) -> Option<u64> {
    physmap::m2p_entry(mfn, layout().nr_m2p_entries)
}

/// The pfn of one of this domain's frames, or `None` if `mfn` is not in the
/// P2M.
pub fn mfn_to_pfn(mfn: u64) -> Option<u64> {
    let layout = layout();
    if let Some(pfn) = m2p(mfn) {
        if usize::try_from(pfn)
            .ok()
            .and_then(|i| layout.p2m.get(i))
            .is_some_and(|&m| m == mfn)
        {
            return Some(pfn);
        }
    }
    let reverse = REVERSE.call_once(|| {
        let mut pairs: Vec<(u64, u64)> = (0u64..)
            .zip(layout.p2m.iter())
            .map(|(pfn, &mfn)| (mfn, pfn))
            .collect();
        pairs.sort_unstable();
        pairs
    });
    reverse
        .binary_search_by_key(&mfn, |&(m, _)| m)
        .ok()
        .map(|i| reverse[i].1)
}

/// Whether `mfn` is one of this domain's frames (in the P2M, or shared_info).
pub fn owns_mfn(mfn: u64) -> bool {
    mfn == layout().shared_info_mfn || mfn_to_pfn(mfn).is_some()
}

/// Why a memory operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmError {
    /// No free frame left.
    OutOfFrames,
    /// The address is not page aligned, not canonical, or in a hypervisor slot.
    BadAddress(u64),
    /// The address is in the physmap of a kernel address space, which Rust
    /// code uses: the kit does not remap it.
    Protected(u64),
    /// Nothing is mapped there (no table on the way).
    NotMapped(u64),
    /// The operation does not apply to this kind of address space (e.g.
    /// switching the kernel to a user address space).
    WrongKind,
    /// The address space is the current base pointer.
    InUse,
    /// `mmu_update` refused request `ptr`/`val` with `errno`.
    Update { ptr: u64, val: u64, errno: Errno },
    /// `mmuext_op` command `cmd` on `arg` failed with `errno`.
    Ext { cmd: u32, arg: u64, errno: Errno },
    /// The region for reserved address ranges ([`reserve_va`]) is used up.
    NoAddressSpace,
}

impl fmt::Display for MmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MmError::OutOfFrames => write!(f, "out of frames"),
            MmError::BadAddress(va) => write!(f, "bad address {va:#x}"),
            MmError::Protected(va) => write!(f, "{va:#x} is in the physmap"),
            MmError::NotMapped(va) => write!(f, "{va:#x} is not mapped"),
            MmError::WrongKind => write!(f, "wrong kind of address space"),
            MmError::InUse => write!(f, "address space in use"),
            MmError::Update { ptr, val, errno } => {
                write!(f, "mmu_update(ptr={ptr:#x}, val={val:#x}) failed: {errno}")
            }
            MmError::Ext { cmd, arg, errno } => {
                write!(f, "mmuext_op(cmd={cmd}, arg={arg:#x}) failed: {errno}")
            }
            MmError::NoAddressSpace => write!(f, "reserved address space used up"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_split() {
        assert_eq!(split_free(100, 4196), (100..1124, 1124..4196));
        assert_eq!(split_free(100, 100_000), (100..1124, 1124..100_000));
        assert_eq!(split_free(100, 103), (100..100, 100..103));
        assert_eq!(split_free(200, 100), (100..100, 100..100));
    }
}
