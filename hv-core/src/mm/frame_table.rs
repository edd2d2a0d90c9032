//! The frame table: one [`FrameInfo`] per machine frame, and the free-frame
//! allocator threaded through it (SPEC.md §7, MM-2).
//!
//! # Invariants
//! - A frame is on the free list iff its owner is [`Owner::Free`]; then its type
//!   is [`FrameType::None`] and both counts are zero.
//! - `free_count` equals the length of the free list.
//! - Frames of [`Owner::Reserved`] (not RAM, or firmware) and
//!   [`Owner::Hypervisor`] are never handed to a domain.
//!
//! The page-table validation rules (MM-2 (a)–(d)) build on the type and
//! reference counts kept here.

use hypercall_abi::DomId;

/// A machine frame number.
pub type Mfn = u64;

/// Who a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// On the free list.
    Free,
    /// Not allocatable: not RAM, firmware, or memory hv-core keeps for itself at boot.
    Reserved,
    /// Allocated to hv-core (its heap, tables).
    Hypervisor,
    /// Allocated to a domain.
    Domain(DomId),
}

/// What a frame is used as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameType {
    /// Untyped (free, or not yet used).
    None,
    /// Ordinary memory, mappable writable.
    Writable,
    /// A level-1 page table.
    L1,
    /// A level-2 page table.
    L2,
    /// A level-3 page table.
    L3,
    /// A level-4 page table.
    L4,
}

impl FrameType {
    /// Whether this type is a page table of some level.
    pub const fn is_page_table(self) -> bool {
        matches!(
            self,
            FrameType::L1 | FrameType::L2 | FrameType::L3 | FrameType::L4
        )
    }

    /// The page-table type of `level` (1..=4).
    pub const fn table(level: u32) -> FrameType {
        match level {
            1 => FrameType::L1,
            2 => FrameType::L2,
            3 => FrameType::L3,
            _ => FrameType::L4,
        }
    }

    /// The level of a page-table type.
    pub const fn level(self) -> Option<u32> {
        match self {
            FrameType::L1 => Some(1),
            FrameType::L2 => Some(2),
            FrameType::L3 => Some(3),
            FrameType::L4 => Some(4),
            _ => None,
        }
    }
}

/// Per-frame state.
#[derive(Clone, Copy, Debug)]
pub struct FrameInfo {
    pub owner: Owner,
    pub ftype: FrameType,
    /// How many uses hold the current type (mappings for `Writable`, references
    /// from a higher-level table or a pin for page tables).
    pub type_count: u32,
    /// General references (allocation counts as one).
    pub ref_count: u32,
    /// Pinned as a page table by its owner.
    pub pinned: bool,
    next_free: u32,
}

const NO_FRAME: u32 = u32::MAX;

impl FrameInfo {
    /// A frame that is not RAM.
    pub const RESERVED: FrameInfo = FrameInfo {
        owner: Owner::Reserved,
        ftype: FrameType::None,
        type_count: 0,
        ref_count: 0,
        pinned: false,
        next_free: NO_FRAME,
    };
}

/// Errors of frame-table operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The mfn is beyond the table.
    OutOfRange(Mfn),
    /// The frame is not owned by whoever asked.
    NotOwner(Mfn),
    /// The frame is still referenced.
    InUse(Mfn),
}

/// The frame table over a caller-provided array.
pub struct FrameTable<'a> {
    /// Set when a writable mapping went away without a TLB flush since: the
    /// next frame to become a page table must flush first (MM-2).
    pub tlb_stale: bool,
    frames: &'a mut [FrameInfo],
    free_head: u32,
    free_count: u64,
}

impl<'a> FrameTable<'a> {
    /// A table over `frames` (index = mfn), every frame reserved until
    /// [`FrameTable::add_free`] releases RAM into it.
    pub fn new(frames: &'a mut [FrameInfo]) -> FrameTable<'a> {
        frames.fill(FrameInfo::RESERVED);
        FrameTable {
            tlb_stale: false,
            frames,
            free_head: NO_FRAME,
            free_count: 0,
        }
    }

    /// Number of frames the table describes.
    pub fn len(&self) -> u64 {
        self.frames.len() as u64
    }

    /// Whether the table describes no frame at all.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames on the free list.
    pub fn free_count(&self) -> u64 {
        self.free_count
    }

    /// The state of `mfn`, if the table covers it.
    pub fn get(&self, mfn: Mfn) -> Option<&FrameInfo> {
        self.frames.get(usize::try_from(mfn).ok()?)
    }

    /// Mutable state of `mfn`, if the table covers it.
    pub fn frame_mut(&mut self, mfn: Mfn) -> Option<&mut FrameInfo> {
        self.frames.get_mut(usize::try_from(mfn).ok()?)
    }

    /// Every frame's state, indexed by mfn.
    pub fn frames(&self) -> &[FrameInfo] {
        self.frames
    }

    fn get_mut(&mut self, mfn: Mfn) -> Result<&mut FrameInfo, FrameError> {
        let index = usize::try_from(mfn).map_err(|_| FrameError::OutOfRange(mfn))?;
        self.frames
            .get_mut(index)
            .ok_or(FrameError::OutOfRange(mfn))
    }

    fn push_free(&mut self, mfn: Mfn) {
        let head = self.free_head;
        if let Ok(f) = self.get_mut(mfn) {
            *f = FrameInfo {
                next_free: head,
                owner: Owner::Free,
                ..FrameInfo::RESERVED
            };
            self.free_head = mfn as u32;
            self.free_count += 1;
        }
    }

    /// Releases the frames `[first, end)` (currently reserved) to the free list.
    /// Frames beyond the table or not reserved are skipped.
    pub fn add_free(&mut self, first: Mfn, end: Mfn) {
        // Pushed in descending order so that allocation hands out ascending mfns.
        for mfn in (first..end.min(self.len())).rev() {
            if self.get(mfn).is_some_and(|f| f.owner == Owner::Reserved) {
                self.push_free(mfn);
            }
        }
    }

    /// Takes a frame off the free list for `owner`, with one reference and no type.
    pub fn alloc(&mut self, owner: Owner) -> Option<Mfn> {
        if self.free_head == NO_FRAME {
            return None;
        }
        let mfn = Mfn::from(self.free_head);
        let f = self.get_mut(mfn).ok()?;
        let next = f.next_free;
        *f = FrameInfo {
            owner,
            ref_count: 1,
            ..FrameInfo::RESERVED
        };
        self.free_head = next;
        self.free_count -= 1;
        Some(mfn)
    }

    /// Gives a frame `owner` held back to the free list, whatever its type and
    /// counts (used when the whole owner goes away).
    pub fn release(&mut self, mfn: Mfn, owner: Owner) -> Result<(), FrameError> {
        let f = self.get_mut(mfn)?;
        if f.owner != owner {
            return Err(FrameError::NotOwner(mfn));
        }
        self.push_free(mfn);
        Ok(())
    }

    /// Sets the type of a frame `owner` holds, with `type_count` uses.
    pub fn set_type(
        &mut self,
        mfn: Mfn,
        owner: Owner,
        ftype: FrameType,
        type_count: u32,
    ) -> Result<(), FrameError> {
        let f = self.get_mut(mfn)?;
        if f.owner != owner {
            return Err(FrameError::NotOwner(mfn));
        }
        f.ftype = ftype;
        f.type_count = type_count;
        Ok(())
    }

    /// Marks a frame `owner` holds as pinned (or not).
    pub fn set_pinned(&mut self, mfn: Mfn, owner: Owner, pinned: bool) -> Result<(), FrameError> {
        let f = self.get_mut(mfn)?;
        if f.owner != owner {
            return Err(FrameError::NotOwner(mfn));
        }
        f.pinned = pinned;
        Ok(())
    }

    /// Counts the frames `owner` holds.
    pub fn count_owned(&self, owner: Owner) -> u64 {
        self.frames.iter().filter(|f| f.owner == owner).count() as u64
    }

    /// Checks the free-list invariants; returns a description of the first breach.
    pub fn audit_free_list(&self) -> Result<(), &'static str> {
        let mut n = 0u64;
        let mut cur = self.free_head;
        while cur != NO_FRAME {
            let Some(f) = self.get(Mfn::from(cur)) else {
                return Err("free list points outside the table");
            };
            if f.owner != Owner::Free
                || f.ftype != FrameType::None
                || f.ref_count != 0
                || f.type_count != 0
            {
                return Err("a frame on the free list is in use");
            }
            n += 1;
            if n > self.len() {
                return Err("free list has a cycle");
            }
            cur = f.next_free;
        }
        if n != self.free_count {
            return Err("free count does not match the free list");
        }
        if self.count_owned(Owner::Free) != n {
            return Err("a free frame is missing from the free list");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn alloc_release_round_trip() {
        let mut storage = vec![FrameInfo::RESERVED; 64];
        let mut ft = FrameTable::new(&mut storage);
        ft.add_free(16, 32);
        assert_eq!(ft.free_count(), 16);
        let a = ft.alloc(Owner::Domain(1)).unwrap();
        assert_eq!(a, 16, "ascending allocation");
        assert_eq!(ft.get(a).unwrap().owner, Owner::Domain(1));
        assert_eq!(
            ft.release(a, Owner::Domain(2)),
            Err(FrameError::NotOwner(a))
        );
        ft.release(a, Owner::Domain(1)).unwrap();
        assert_eq!(ft.free_count(), 16);
        ft.audit_free_list().unwrap();
    }

    #[test]
    fn exhaustion_and_range() {
        let mut storage = vec![FrameInfo::RESERVED; 8];
        let mut ft = FrameTable::new(&mut storage);
        ft.add_free(4, 100);
        for _ in 0..4 {
            assert!(ft.alloc(Owner::Hypervisor).is_some());
        }
        assert_eq!(ft.alloc(Owner::Hypervisor), None);
        assert_eq!(
            ft.release(100, Owner::Hypervisor),
            Err(FrameError::OutOfRange(100))
        );
        ft.audit_free_list().unwrap();
    }

    proptest! {
        #[test]
        fn random_alloc_release_keeps_invariants(ops in proptest::collection::vec((0u8..3, 0u32..4), 1..300)) {
            let mut storage = vec![FrameInfo::RESERVED; 128];
            let mut ft = FrameTable::new(&mut storage);
            ft.add_free(8, 120);
            let total = ft.free_count();
            let mut held: Vec<(Mfn, DomId)> = Vec::new();
            for (op, dom) in ops {
                match op {
                    0 | 1 => {
                        if let Some(m) = ft.alloc(Owner::Domain(dom)) {
                            prop_assert!(!held.iter().any(|&(h, _)| h == m), "frame handed out twice");
                            held.push((m, dom));
                        } else {
                            prop_assert_eq!(held.len() as u64, total);
                        }
                    }
                    _ => {
                        if let Some((m, d)) = held.pop() {
                            prop_assert!(ft.release(m, Owner::Domain(d.wrapping_add(1))).is_err());
                            ft.release(m, Owner::Domain(d)).unwrap();
                        }
                    }
                }
                prop_assert_eq!(ft.free_count() + held.len() as u64, total);
            }
            prop_assert!(ft.audit_free_list().is_ok());
        }
    }
}
