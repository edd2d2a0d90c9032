//! Where grant frames sit in the driver domain's DMA space (PDEV-8): the
//! window of dfns past its memory, and which grant-mapping handle occupies
//! which dfn. Pure bookkeeping; the page-table and IOTLB work is the
//! caller's.
//!
//! # Invariants
//! - Every placed dfn lies in the window; a dfn holds at most one handle and
//!   a handle sits at most at one dfn.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use alloc::collections::BTreeMap;

use hypercall_abi::Errno;

/// Pages in the grant window.
pub const GRANT_WINDOW_PAGES: u64 = 64 * 1024;

/// The grant window `[start, end)` for a space whose memory is pfns
/// `0..ram_pages`: right after it, rounded up to 2 MiB.
pub fn window(ram_pages: u64) -> (u64, u64) {
    let start = ram_pages.div_ceil(512).saturating_mul(512);
    (start, start.saturating_add(GRANT_WINDOW_PAGES))
}

/// Grant frames placed in one DMA space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantPlacements {
    window: (u64, u64),
    by_dfn: BTreeMap<u64, u32>,
}

impl GrantPlacements {
    pub fn new(ram_pages: u64) -> Self {
        Self {
            window: window(ram_pages),
            by_dfn: BTreeMap::new(),
        }
    }

    pub fn window(&self) -> (u64, u64) {
        self.window
    }

    /// Checks that `handle` may be placed at `dfn`: `-EINVAL` outside the
    /// window, `-EBUSY` if the dfn or the handle is taken.
    pub fn check(&self, handle: u32, dfn: u64) -> Result<(), Errno> {
        if !(self.window.0..self.window.1).contains(&dfn) {
            return Err(Errno::EINVAL);
        }
        if self.by_dfn.contains_key(&dfn) || self.dfn_of(handle).is_some() {
            return Err(Errno::EBUSY);
        }
        Ok(())
    }

    /// Records a placement [`GrantPlacements::check`] allowed.
    pub fn insert(&mut self, handle: u32, dfn: u64) {
        self.by_dfn.insert(dfn, handle);
    }

    /// Where `handle` sits.
    pub fn dfn_of(&self, handle: u32) -> Option<u64> {
        self.by_dfn
            .iter()
            .find(|(_, &h)| h == handle)
            .map(|(&d, _)| d)
    }

    /// Removes the placement at `dfn` if it holds `handle`.
    pub fn remove(&mut self, handle: u32, dfn: u64) -> Result<(), Errno> {
        if self.by_dfn.get(&dfn) != Some(&handle) {
            return Err(Errno::EINVAL);
        }
        self.by_dfn.remove(&dfn);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.by_dfn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_dfn.is_empty()
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_window_follows_memory() {
        assert_eq!(window(8192), (8192, 8192 + GRANT_WINDOW_PAGES));
        assert_eq!(window(8193), (8704, 8704 + GRANT_WINDOW_PAGES));
        assert_eq!(window(0), (0, GRANT_WINDOW_PAGES));
    }

    #[test]
    fn placements() {
        let mut p = GrantPlacements::new(4096);
        assert_eq!(p.check(1, 4095), Err(Errno::EINVAL));
        assert_eq!(p.check(1, 4096 + GRANT_WINDOW_PAGES), Err(Errno::EINVAL));
        p.check(1, 5000).unwrap();
        p.insert(1, 5000);
        assert_eq!(p.check(2, 5000), Err(Errno::EBUSY));
        assert_eq!(p.check(1, 5001), Err(Errno::EBUSY));
        assert_eq!(p.dfn_of(1), Some(5000));
        assert_eq!(p.remove(2, 5000), Err(Errno::EINVAL));
        assert_eq!(p.remove(1, 5001), Err(Errno::EINVAL));
        p.remove(1, 5000).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.dfn_of(1), None);
    }

    proptest! {
        #[test]
        fn one_handle_per_dfn_and_one_dfn_per_handle(ops in proptest::collection::vec((any::<bool>(), 0u32..8, 4090u64..4110), 1..100)) {
            let mut p = GrantPlacements::new(4096);
            for (place, handle, dfn) in ops {
                if place {
                    if p.check(handle, dfn).is_ok() {
                        p.insert(handle, dfn);
                    }
                } else {
                    let _ = p.remove(handle, dfn);
                }
                let handles: Vec<u32> = p.by_dfn.values().copied().collect();
                let mut unique = handles.clone();
                unique.sort_unstable();
                unique.dedup();
                prop_assert_eq!(unique.len(), handles.len());
                for &d in p.by_dfn.keys() {
                    prop_assert!((4096..4096 + GRANT_WINDOW_PAGES).contains(&d));
                }
            }
        }
    }
}
