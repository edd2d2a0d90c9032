//! The start-of-day layout of a boot-time domain (SPEC.md §5.4, HC-6): which
//! pseudo-physical frames hold the image, start_info, the P2M list, the
//! bootstrap page tables and the stack, and where they are mapped.
//!
//! Pfn `p` is always mapped at `virt_base + p * 4096`; the shared_info page is
//! mapped right after the last pfn.

use hypercall_abi::layout::is_guest_range;
use hypercall_abi::PAGE_SIZE;

/// Pages of initial stack.
pub const STACK_PAGES: u64 = 16;

/// Where everything goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartLayout {
    pub virt_base: u64,
    pub nr_pages: u64,
    /// The image occupies pfns `0..image_pages`.
    pub image_pages: u64,
    pub start_info_pfn: u64,
    pub p2m_pfn: u64,
    pub p2m_pages: u64,
    /// Page tables occupy `pt_pfn..pt_pfn + pt_pages`: the L4, then the L3s,
    /// L2s and L1s.
    pub pt_pfn: u64,
    pub nr_l3: u64,
    pub nr_l2: u64,
    pub nr_l1: u64,
    pub stack_pfn: u64,
    pub first_free_pfn: u64,
    pub shared_info_va: u64,
}

impl StartLayout {
    /// Total page-table frames.
    pub const fn pt_pages(&self) -> u64 {
        1 + self.nr_l3 + self.nr_l2 + self.nr_l1
    }

    /// Virtual address of pfn `pfn`.
    pub const fn pfn_va(&self, pfn: u64) -> u64 {
        self.virt_base + pfn * PAGE_SIZE
    }

    /// Top of the initial stack.
    pub const fn stack_top(&self) -> u64 {
        self.pfn_va(self.stack_pfn + STACK_PAGES)
    }

    /// Whether `pfn` holds a start-of-day page table.
    pub const fn is_pt_pfn(&self, pfn: u64) -> bool {
        pfn >= self.pt_pfn && pfn < self.pt_pfn + self.pt_pages()
    }
}

/// Why a layout cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The image's start is not page aligned or its end precedes its start.
    BadImageRange,
    /// The domain's memory would reach outside guest address space.
    NotGuestAddress { start: u64, end: u64 },
    /// Not enough memory for the image and the start-of-day structures.
    TooSmall { needed_pages: u64, nr_pages: u64 },
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            LayoutError::BadImageRange => write!(f, "image range is not page aligned"),
            LayoutError::NotGuestAddress { start, end } => {
                write!(
                    f,
                    "memory at {start:#x}..{end:#x} would reach hypervisor address space"
                )
            }
            LayoutError::TooSmall {
                needed_pages,
                nr_pages,
            } => write!(
                f,
                "not enough memory for the image and start-of-day layout: needs {} KiB, has {} KiB",
                needed_pages * 4,
                nr_pages * 4
            ),
        }
    }
}

fn tables_spanning(start: u64, end: u64, shift: u32) -> u64 {
    ((end - 1) >> shift) - (start >> shift) + 1
}

/// Lays out a domain whose image spans `[virt_base, image_end)` and which owns
/// `nr_pages` pages.
pub fn compute(virt_base: u64, image_end: u64, nr_pages: u64) -> Result<StartLayout, LayoutError> {
    if !virt_base.is_multiple_of(PAGE_SIZE) || image_end <= virt_base || nr_pages == 0 {
        return Err(LayoutError::BadImageRange);
    }
    // Everything mapped: every pfn plus the shared_info page.
    let span = nr_pages
        .checked_add(1)
        .and_then(|n| n.checked_mul(PAGE_SIZE));
    let end = span.and_then(|s| virt_base.checked_add(s));
    let Some(end) = end.filter(|&e| is_guest_range(virt_base, e - virt_base)) else {
        return Err(LayoutError::NotGuestAddress {
            start: virt_base,
            end: virt_base.saturating_add(nr_pages.saturating_mul(PAGE_SIZE)),
        });
    };
    let image_pages = (image_end - virt_base).div_ceil(PAGE_SIZE);
    let start_info_pfn = image_pages;
    let p2m_pfn = start_info_pfn + 1;
    let p2m_pages = (nr_pages * 8).div_ceil(PAGE_SIZE);
    let pt_pfn = p2m_pfn + p2m_pages;
    let nr_l1 = tables_spanning(virt_base, end, 21);
    let nr_l2 = tables_spanning(virt_base, end, 30);
    let nr_l3 = tables_spanning(virt_base, end, 39);
    let stack_pfn = pt_pfn + 1 + nr_l3 + nr_l2 + nr_l1;
    let first_free_pfn = stack_pfn + STACK_PAGES;
    if first_free_pfn > nr_pages {
        return Err(LayoutError::TooSmall {
            needed_pages: first_free_pfn,
            nr_pages,
        });
    }
    Ok(StartLayout {
        virt_base,
        nr_pages,
        image_pages,
        start_info_pfn,
        p2m_pfn,
        p2m_pages,
        pt_pfn,
        nr_l3,
        nr_l2,
        nr_l1,
        stack_pfn,
        first_free_pfn,
        shared_info_va: virt_base + nr_pages * PAGE_SIZE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_domain() {
        let l = compute(0x40_0000, 0x40_3000, 2048).unwrap();
        assert_eq!(l.image_pages, 3);
        assert_eq!(l.start_info_pfn, 3);
        assert_eq!(l.p2m_pages, 4);
        assert_eq!(l.pt_pfn, 8);
        // 0x400000 .. 0x400000 + 2049 pages = 0xc01000: L1s for 2M blocks 2..6 → 5.
        assert_eq!(l.nr_l1, 5);
        assert_eq!((l.nr_l2, l.nr_l3), (1, 1));
        assert_eq!(l.stack_pfn, 8 + 8);
        assert_eq!(l.first_free_pfn, 32);
        assert_eq!(l.shared_info_va, 0x40_0000 + 2048 * 4096);
        assert_eq!(l.stack_top(), 0x40_0000 + 32 * 4096);
        assert!(l.is_pt_pfn(8) && l.is_pt_pfn(15) && !l.is_pt_pfn(16));
    }

    #[test]
    fn too_small() {
        assert!(matches!(
            compute(0x40_0000, 0x48_0000, 140),
            Err(LayoutError::TooSmall { .. })
        ));
    }

    #[test]
    fn refuses_hypervisor_space() {
        let top = hypercall_abi::layout::LOWER_HALF_END - 0x1000;
        assert!(matches!(
            compute(top, top + 0x1000, 16),
            Err(LayoutError::NotGuestAddress { .. })
        ));
        assert!(matches!(
            compute(0x40_0000, 0x40_1000, u64::MAX / 2),
            Err(LayoutError::NotGuestAddress { .. })
        ));
    }

    #[test]
    fn crosses_one_gib() {
        let l = compute(0x3ff0_0000, 0x3ff0_1000, 1024).unwrap();
        assert_eq!(l.nr_l2, 2);
        assert_eq!(l.nr_l3, 1);
    }
}
