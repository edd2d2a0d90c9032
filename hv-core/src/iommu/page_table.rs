//! The I/O page table of one DMA address space: device frame numbers (dfn,
//! the address a device puts on the bus >> 12) to machine frames, 4 KiB
//! pages only, 3 or 4 levels of 512 entries (PDEV-6).
//!
//! Portable: the entry encoding is an [`EntryFormat`] (VT-d second-level or
//! AMD-Vi), the table frames are reached through a [`TableFrames`] (the
//! direct map in the kernel, a map in the tests).
//!
//! # Invariants
//! - Only [`IoPageTable::map`] creates leaf entries and only for a dfn inside
//!   the address width; intermediate tables are created on demand and never
//!   freed while the space lives.
//! - An entry is either absent (0) or what the format encoded.

/// Entries per table.
pub const ENTRIES: u64 = 512;

/// Memory for table frames (physical addresses, 4 KiB aligned).
pub trait TableFrames {
    /// A zeroed frame, or `None` when memory is exhausted.
    fn alloc_zeroed(&mut self) -> Option<u64>;
    /// `pages` zeroed, physically contiguous frames (device tables, command
    /// buffers), or `None`.
    fn alloc_contiguous(&mut self, pages: usize) -> Option<u64>;
    fn read(&self, table: u64, index: u64) -> u64;
    fn write(&mut self, table: u64, index: u64, value: u64);
}

/// How an IOMMU encodes table and leaf entries.
pub trait EntryFormat {
    /// An entry pointing at a next-level table (`level` is that table's
    /// level, 1 = leaf table).
    fn table(next: u64, level: u8) -> u64;
    /// A leaf entry for machine address `pa`.
    fn leaf(pa: u64, writable: bool) -> u64;
    fn present(entry: u64) -> bool;
    /// The address an entry points at.
    fn address(entry: u64) -> u64;
    /// Whether a leaf allows writes.
    fn writable(entry: u64) -> bool;
}

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The dfn is outside the address width.
    OutOfRange,
    /// No memory for a table.
    NoMemory,
    /// `map`: already mapped; `unmap`: not mapped.
    Busy,
    NotMapped,
}

/// One DMA address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoPageTable {
    /// Physical address of the top table.
    pub root: u64,
    /// 3 (39-bit) or 4 (48-bit).
    pub levels: u8,
}

fn index(dfn: u64, level: u8) -> u64 {
    (dfn >> (9 * u64::from(level - 1))) & (ENTRIES - 1)
}

impl IoPageTable {
    /// A new empty space.
    pub fn new(mem: &mut dyn TableFrames, levels: u8) -> Option<Self> {
        debug_assert!(levels == 3 || levels == 4);
        Some(Self {
            root: mem.alloc_zeroed()?,
            levels,
        })
    }

    /// One past the largest dfn.
    pub fn dfn_limit(&self) -> u64 {
        1 << (9 * u64::from(self.levels))
    }

    /// The leaf table holding `dfn`, creating tables if `create`.
    fn leaf_table<F: EntryFormat>(
        &self,
        mem: &mut dyn TableFrames,
        dfn: u64,
        create: bool,
    ) -> Result<u64, MapError> {
        if dfn >= self.dfn_limit() {
            return Err(MapError::OutOfRange);
        }
        let mut table = self.root;
        let mut level = self.levels;
        while level > 1 {
            let i = index(dfn, level);
            let e = mem.read(table, i);
            table = if F::present(e) {
                F::address(e)
            } else if create {
                let next = mem.alloc_zeroed().ok_or(MapError::NoMemory)?;
                mem.write(table, i, F::table(next, level - 1));
                next
            } else {
                return Err(MapError::NotMapped);
            };
            level -= 1;
        }
        Ok(table)
    }

    /// Maps `dfn` to machine frame `mfn`; `Busy` if `dfn` is mapped.
    pub fn map<F: EntryFormat>(
        &self,
        mem: &mut dyn TableFrames,
        dfn: u64,
        mfn: u64,
        writable: bool,
    ) -> Result<(), MapError> {
        let table = self.leaf_table::<F>(mem, dfn, true)?;
        let i = index(dfn, 1);
        if F::present(mem.read(table, i)) {
            return Err(MapError::Busy);
        }
        mem.write(table, i, F::leaf(mfn << 12, writable));
        Ok(())
    }

    /// Removes `dfn`'s mapping; returns the mfn it had.
    pub fn unmap<F: EntryFormat>(
        &self,
        mem: &mut dyn TableFrames,
        dfn: u64,
    ) -> Result<u64, MapError> {
        let table = self.leaf_table::<F>(mem, dfn, false)?;
        let i = index(dfn, 1);
        let e = mem.read(table, i);
        if !F::present(e) {
            return Err(MapError::NotMapped);
        }
        mem.write(table, i, 0);
        Ok(F::address(e) >> 12)
    }

    /// What `dfn` translates to: `(mfn, writable)`.
    pub fn translate<F: EntryFormat>(
        &self,
        mem: &mut dyn TableFrames,
        dfn: u64,
    ) -> Option<(u64, bool)> {
        let table = self.leaf_table::<F>(mem, dfn, false).ok()?;
        let e = mem.read(table, index(dfn, 1));
        F::present(e).then(|| (F::address(e) >> 12, F::writable(e)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Table frames in a map.
    #[derive(Default)]
    pub struct FakeFrames {
        pub frames: BTreeMap<u64, [u64; 512]>,
        pub next: u64,
        pub limit: Option<usize>,
    }

    impl TableFrames for FakeFrames {
        fn alloc_zeroed(&mut self) -> Option<u64> {
            if self.limit.is_some_and(|l| self.frames.len() >= l) {
                return None;
            }
            self.next += 0x1000;
            let pa = 0x100_0000 + self.next;
            self.frames.insert(pa, [0; 512]);
            Some(pa)
        }
        fn alloc_contiguous(&mut self, pages: usize) -> Option<u64> {
            let first = self.alloc_zeroed()?;
            for _ in 1..pages {
                self.alloc_zeroed()?;
            }
            Some(first)
        }
        fn read(&self, table: u64, index: u64) -> u64 {
            // Frames are 0x1000 apart: an index past 511 reaches the next one.
            let frame = table + (index / 512) * 0x1000;
            self.frames[&frame][(index % 512) as usize]
        }
        fn write(&mut self, table: u64, index: u64, value: u64) {
            let frame = table + (index / 512) * 0x1000;
            self.frames.get_mut(&frame).expect("table")[(index % 512) as usize] = value;
        }
    }

    /// A format like VT-d's: R = bit 0, W = bit 1.
    pub struct Rw;
    impl EntryFormat for Rw {
        fn table(next: u64, _level: u8) -> u64 {
            next | 3
        }
        fn leaf(pa: u64, writable: bool) -> u64 {
            pa | 1 | if writable { 2 } else { 0 }
        }
        fn present(e: u64) -> bool {
            e & 3 != 0
        }
        fn address(e: u64) -> u64 {
            e & 0x000f_ffff_ffff_f000
        }
        fn writable(e: u64) -> bool {
            e & 2 != 0
        }
    }

    #[test]
    fn map_translate_unmap() {
        let mut mem = FakeFrames::default();
        let pt = IoPageTable::new(&mut mem, 3).unwrap();
        assert_eq!(pt.dfn_limit(), 1 << 27);
        pt.map::<Rw>(&mut mem, 5, 0x1234, true).unwrap();
        pt.map::<Rw>(&mut mem, 0x7ff_ffff, 0x99, false).unwrap();
        assert_eq!(pt.translate::<Rw>(&mut mem, 5), Some((0x1234, true)));
        assert_eq!(
            pt.translate::<Rw>(&mut mem, 0x7ff_ffff),
            Some((0x99, false))
        );
        assert_eq!(pt.translate::<Rw>(&mut mem, 6), None);
        assert_eq!(pt.map::<Rw>(&mut mem, 5, 1, true), Err(MapError::Busy));
        assert_eq!(
            pt.map::<Rw>(&mut mem, 1 << 27, 1, true),
            Err(MapError::OutOfRange)
        );
        assert_eq!(pt.unmap::<Rw>(&mut mem, 5), Ok(0x1234));
        assert_eq!(pt.unmap::<Rw>(&mut mem, 5), Err(MapError::NotMapped));
        assert_eq!(pt.translate::<Rw>(&mut mem, 5), None);
        // root + 2 paths of (L2, L1).
        assert_eq!(mem.frames.len(), 5);
    }

    #[test]
    fn out_of_memory_is_an_error() {
        let mut mem = FakeFrames {
            limit: Some(2),
            ..FakeFrames::default()
        };
        let pt = IoPageTable::new(&mut mem, 4).unwrap();
        assert_eq!(pt.map::<Rw>(&mut mem, 0, 1, true), Err(MapError::NoMemory));
    }

    proptest! {
        #[test]
        fn the_table_agrees_with_a_model(ops in proptest::collection::vec((any::<bool>(), 0u64..4096, 1u64..1_000_000, any::<bool>()), 1..200)) {
            let mut mem = FakeFrames::default();
            let pt = IoPageTable::new(&mut mem, 4).unwrap();
            let mut model = BTreeMap::new();
            for (map, dfn, mfn, w) in ops {
                let dfn = dfn * 1021 % (1 << 36);
                if map {
                    let r = pt.map::<Rw>(&mut mem, dfn, mfn, w);
                    match model.entry(dfn) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            prop_assert_eq!(r, Err(MapError::Busy));
                        }
                        std::collections::btree_map::Entry::Vacant(v) => {
                            prop_assert_eq!(r, Ok(()));
                            v.insert((mfn, w));
                        }
                    }
                } else {
                    let r = pt.unmap::<Rw>(&mut mem, dfn);
                    prop_assert_eq!(r.ok(), model.remove(&dfn).map(|m| m.0));
                }
            }
            for (dfn, want) in &model {
                prop_assert_eq!(pt.translate::<Rw>(&mut mem, *dfn), Some(*want));
            }
        }
    }
}
