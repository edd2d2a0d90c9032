//! Reserved virtual-address ranges for foreign mappings (grant maps, GNT-3):
//! pages whose L4..L2 entries and L1 table exist while the L1 entries stay
//! empty, which is what `GNTTABOP_MAP_GRANT_REF` requires of `host_addr`.
//!
//! Ranges are carved, never returned, from [`RESERVED_VA_BASE`] ..
//! [`RESERVED_VA_END`] (L4 slots 160 .. 192, which nothing else in the kit
//! uses), in the start-of-day kernel address space.
//!
//! # Invariants
//! - Every page of a handed-out [`VaRange`] has its L1 table in place; the
//!   kit never maps anything there itself (its owner maps grants there).
#![forbid(unsafe_code)]

use hypercall_abi::PAGE_SIZE;
use spin::Mutex;

use super::{AddressSpace, MmError};

/// First address handed out.
pub const RESERVED_VA_BASE: u64 = 0x0000_5000_0000_0000;
/// End (exclusive) of the reservable region.
pub const RESERVED_VA_END: u64 = 0x0000_6000_0000_0000;

/// Next free address.
static NEXT: Mutex<u64> = Mutex::new(RESERVED_VA_BASE);

/// Pages of virtual address space with page tables down to L1 and no
/// mappings (until their owner maps grants there).
#[derive(Debug)]
pub struct VaRange {
    start: u64,
    pages: u64,
}

impl VaRange {
    /// The first address.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// How many pages.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Address of page `index`; panics beyond the range.
    pub fn page(&self, index: u64) -> u64 {
        assert!(
            index < self.pages,
            "page {index} of a {}-page range",
            self.pages
        );
        self.start + index * PAGE_SIZE
    }
}

/// Reserves `pages` pages (at least 1) of address space and creates the page
/// tables down to their L1 entries, which stay empty.
pub fn reserve_va(pages: u64) -> Result<VaRange, MmError> {
    let pages = pages.max(1);
    let mut next = NEXT.lock();
    let start = *next;
    let end = pages
        .checked_mul(PAGE_SIZE)
        .and_then(|bytes| start.checked_add(bytes))
        .filter(|&end| end <= RESERVED_VA_END)
        .ok_or(MmError::NoAddressSpace)?;
    let mut kernel = AddressSpace::kernel();
    // One L1 table covers 2 MiB: creating the first page's tables and then
    // those of each 2 MiB boundary covers the range.
    let mut va = start;
    while va < end {
        kernel.l1_entry(va)?;
        va = (va | 0x1f_ffff) + 1;
    }
    *next = end;
    Ok(VaRange { start, pages })
}
