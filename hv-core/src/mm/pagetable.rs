//! Validated guest page tables (SPEC.md §7, MM-1b, MM-2): the reference and
//! type counting that keeps every guest's direct-paged tables safe.
//!
//! Pure logic over the [`FrameTable`] and a [`TableMemory`] (how table frames
//! are read and written), so the rules run — and are property-tested — on the
//! host.
//!
//! # Invariants (MM-2), at every operation boundary
//! - (a) A frame with a page-table type and a non-zero type count has no
//!   writable mapping; every writable L1 entry points at a frame of type
//!   [`FrameType::Writable`].
//! - (b) Every present entry of a validated table of domain `d` points at a
//!   frame owned by `d`.
//! - (c) No entry points at a hypervisor or reserved frame; the hypervisor L4
//!   slots are never written from guest values.
//! - (d) `ref_count` = 1 (allocation) + present entries of validated tables
//!   pointing at the frame + pins + base pointers; `type_count` = uses of the
//!   type (writable L1 entries, entries of the level above, pin, base pointers).
//!
//! Every operation either succeeds completely or leaves the counts as they
//! were (failed validations roll back what they took).

use hypercall_abi::layout::is_hv_l4_slot;
use hypercall_abi::mm::pte;
use hypercall_abi::DomId;

use super::frame_table::{FrameTable, FrameType, Mfn, Owner};

/// Entries per table.
pub const ENTRIES: usize = 512;

/// How table frames are reached.
pub trait TableMemory {
    /// Reads entry `index` of the table in frame `mfn`.
    fn read_entry(&self, mfn: Mfn, index: usize) -> u64;
    /// Writes entry `index` of the table in frame `mfn`.
    fn write_entry(&mut self, mfn: Mfn, index: usize, value: u64);
    /// Flushes every TLB that may hold a guest mapping (before a frame that may
    /// still be mapped writable in a stale TLB entry becomes a page table).
    fn flush_tlbs(&mut self);
}

/// Why a page-table operation was refused (mapped to an errno by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmError {
    /// The frame is not the caller's to use, or the slot is the hypervisor's.
    NotPermitted,
    /// Type conflict.
    Busy,
    /// Malformed entry or request.
    Invalid,
}

impl MmError {
    pub fn errno(self) -> hypercall_abi::Errno {
        match self {
            MmError::NotPermitted => hypercall_abi::Errno::EPERM,
            MmError::Busy => hypercall_abi::Errno::EBUSY,
            MmError::Invalid => hypercall_abi::Errno::EINVAL,
        }
    }
}

/// Whether an entry is present.
pub const fn present(entry: u64) -> bool {
    entry & pte::P != 0
}

/// The frame an entry points at.
pub const fn entry_mfn(entry: u64) -> Mfn {
    (entry & pte::ADDR_MASK) >> 12
}

/// What devices may touch (PDEV-4, PDEV-6): which machine frames are device
/// (I/O) frames a domain may map, and the DMA view of a domain's page
/// tables. Device frames are never owned by a domain and carry no counts;
/// an L1 entry naming one is always made uncached.
pub trait DeviceFrames {
    /// Whether `dom` may map device frame `mfn`.
    fn permitted(&self, dom: DomId, mfn: Mfn) -> bool;

    /// Frame `mfn` of `dom` becomes a page table (`true`, called before its
    /// entries are validated) or stops being one (`false`): devices must not
    /// be able to write a page table, so its DMA mapping loses (regains)
    /// write access, with the IOTLB invalidated before this returns.
    fn page_table_type(&self, _dom: DomId, _mfn: Mfn, _is_table: bool) {}
}

/// No device frames at all.
pub struct NoDeviceFrames;

impl DeviceFrames for NoDeviceFrames {
    fn permitted(&self, _dom: DomId, _mfn: Mfn) -> bool {
        false
    }
}

/// An L1 entry for a device frame: PCD and PWT set, PAT clear (uncached).
pub const fn uncached(entry: u64) -> u64 {
    (entry | pte::PCD | pte::PWT) & !pte::PS_OR_PAT
}

/// The page-table engine for one operation: the frame table, table memory,
/// the hypervisor's L4 entries to install in every validated L4, and the
/// device frames domains may map.
pub struct PageTables<'a, 'f, M: TableMemory> {
    pub frames: &'a mut FrameTable<'f>,
    pub mem: &'a mut M,
    pub hv_l4: &'a [(usize, u64)],
    pub io: &'a dyn DeviceFrames,
}

impl<M: TableMemory> PageTables<'_, '_, M> {
    fn owned_by(&self, mfn: Mfn, dom: DomId) -> Result<(), MmError> {
        match self.frames.get(mfn) {
            Some(f) if f.owner == Owner::Domain(dom) => Ok(()),
            _ => Err(MmError::NotPermitted),
        }
    }

    /// Takes a general reference on a frame `dom` owns.
    pub fn get_page(&mut self, mfn: Mfn, dom: DomId) -> Result<(), MmError> {
        self.owned_by(mfn, dom)?;
        let f = self.frames.frame_mut(mfn).ok_or(MmError::NotPermitted)?;
        f.ref_count = f.ref_count.checked_add(1).ok_or(MmError::Busy)?;
        Ok(())
    }

    /// Drops a general reference.
    pub fn put_page(&mut self, mfn: Mfn) {
        if let Some(f) = self.frames.frame_mut(mfn) {
            debug_assert!(
                f.ref_count > 1,
                "the allocation reference is never dropped here"
            );
            f.ref_count = f.ref_count.saturating_sub(1);
        }
    }

    /// Takes a use of type `ty` on a frame `dom` owns, validating it first if
    /// it becomes a page table.
    pub fn get_type(&mut self, mfn: Mfn, dom: DomId, ty: FrameType) -> Result<(), MmError> {
        self.owned_by(mfn, dom)?;
        let f = self.frames.frame_mut(mfn).ok_or(MmError::NotPermitted)?;
        if f.type_count > 0 {
            if f.ftype != ty {
                return Err(MmError::Busy);
            }
            f.type_count = f.type_count.checked_add(1).ok_or(MmError::Busy)?;
            return Ok(());
        }
        // The type changes. Claim it first so that a table reached again while
        // it is being validated sees the new type (and conflicts, or counts).
        f.ftype = ty;
        f.type_count = 1;
        if let Some(level) = ty.level() {
            if self.frames.tlb_stale {
                self.mem.flush_tlbs();
                self.frames.tlb_stale = false;
            }
            self.io.page_table_type(dom, mfn, true);
            if let Err(e) = self.validate(mfn, level, dom) {
                if let Some(f) = self.frames.frame_mut(mfn) {
                    f.type_count = 0;
                    f.ftype = FrameType::None;
                }
                self.io.page_table_type(dom, mfn, false);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Drops a use of the frame's type; the last use of a page-table type
    /// releases what its entries hold.
    pub fn put_type(&mut self, mfn: Mfn) {
        let Some(f) = self.frames.frame_mut(mfn) else {
            return;
        };
        debug_assert!(f.type_count > 0);
        f.type_count = f.type_count.saturating_sub(1);
        if f.type_count > 0 {
            return;
        }
        let ty = f.ftype;
        let owner = f.owner;
        f.ftype = FrameType::None;
        if let Some(level) = ty.level() {
            for index in 0..ENTRIES {
                if level == 4 && is_hv_l4_slot(index) {
                    continue;
                }
                let e = self.mem.read_entry(mfn, index);
                // Most entries of a table being released are empty: skip
                // them here, without a call (put_entry is not inlined).
                if !present(e) {
                    continue;
                }
                // A grant mapping's references belong to its maptrack entry,
                // which drops them at unmap (GNT-3).
                if level == 1 && self.frames.get(entry_mfn(e)).map(|t| t.owner) != Some(owner) {
                    continue;
                }
                self.put_entry(e, level);
            }
            if let Owner::Domain(dom) = owner {
                self.io.page_table_type(dom, mfn, false);
            }
        }
    }

    fn validate(&mut self, mfn: Mfn, level: u32, dom: DomId) -> Result<(), MmError> {
        if level == 4 {
            // Every hypervisor slot gets the hypervisor's entry, or nothing:
            // whatever the guest left there is never used (MM-1b).
            for slot in (0..ENTRIES).filter(|&slot| is_hv_l4_slot(slot)) {
                let value = self
                    .hv_l4
                    .iter()
                    .find(|&&(s, _)| s == slot)
                    .map_or(0, |&(_, v)| v);
                self.mem.write_entry(mfn, slot, value);
            }
        }
        for index in 0..ENTRIES {
            if level == 4 && is_hv_l4_slot(index) {
                continue;
            }
            let e = self.mem.read_entry(mfn, index);
            if !present(e) {
                continue;
            }
            if level == 1 && self.is_device_frame(dom, entry_mfn(e)) && e != uncached(e) {
                self.mem.write_entry(mfn, index, uncached(e));
            }
            if let Err(err) = self.get_entry(e, level, dom) {
                for undo in (0..index).rev() {
                    if level == 4 && is_hv_l4_slot(undo) {
                        continue;
                    }
                    let e = self.mem.read_entry(mfn, undo);
                    self.put_entry(e, level);
                }
                return Err(err);
            }
        }
        Ok(())
    }

    /// Checks an entry of a level-`level` table of `dom` and takes the
    /// references it needs (MM-1b).
    pub fn get_entry(&mut self, entry: u64, level: u32, dom: DomId) -> Result<(), MmError> {
        if !present(entry) {
            return Ok(());
        }
        let allowed = if level == 1 {
            pte::L1_ALLOWED
        } else {
            pte::UPPER_ALLOWED
        };
        if entry & !(pte::ADDR_MASK | allowed) != 0 {
            return Err(MmError::Invalid);
        }
        let mfn = entry_mfn(entry);
        if level == 1 && self.is_device_frame(dom, mfn) {
            // No counts; the writer makes the entry uncached (PDEV-4).
            return Ok(());
        }
        self.get_page(mfn, dom)?;
        let typed = if level == 1 {
            if entry & pte::RW != 0 {
                self.get_type(mfn, dom, FrameType::Writable)
            } else {
                Ok(())
            }
        } else {
            self.get_type(mfn, dom, FrameType::table(level - 1))
        };
        if let Err(e) = typed {
            self.put_page(mfn);
            return Err(e);
        }
        Ok(())
    }

    /// A device frame `dom` may map, and not RAM of any domain.
    fn is_device_frame(&self, dom: DomId, mfn: Mfn) -> bool {
        !self
            .frames
            .get(mfn)
            .is_some_and(|f| matches!(f.owner, Owner::Domain(_)))
            && self.io.permitted(dom, mfn)
    }

    /// Releases what an entry of a level-`level` table held.
    pub fn put_entry(&mut self, entry: u64, level: u32) {
        if !present(entry) {
            return;
        }
        let mfn = entry_mfn(entry);
        if level == 1
            && !self
                .frames
                .get(mfn)
                .is_some_and(|f| matches!(f.owner, Owner::Domain(_)))
        {
            // A device frame: it held nothing.
            return;
        }
        if level == 1 {
            if entry & pte::RW != 0 {
                self.put_type(mfn);
                self.frames.tlb_stale = true;
            }
        } else {
            self.put_type(mfn);
        }
        self.put_page(mfn);
    }

    /// The level of a validated page table `dom` owns.
    pub fn table_level(&self, mfn: Mfn, dom: DomId) -> Result<u32, MmError> {
        self.owned_by(mfn, dom)?;
        let f = self.frames.get(mfn).ok_or(MmError::NotPermitted)?;
        match f.ftype.level() {
            Some(level) if f.type_count > 0 => Ok(level),
            _ => Err(MmError::Invalid),
        }
    }

    /// `MMU_NORMAL_PT_UPDATE`: writes entry `index` of table `table` (MM-4).
    pub fn update_entry(
        &mut self,
        table: Mfn,
        index: usize,
        new: u64,
        dom: DomId,
    ) -> Result<(), MmError> {
        let level = self.table_level(table, dom)?;
        if index >= ENTRIES {
            return Err(MmError::Invalid);
        }
        if level == 4 && is_hv_l4_slot(index) {
            return Err(MmError::NotPermitted);
        }
        let new = if present(new) { new | pte::US } else { new };
        let new = if level == 1 && present(new) && self.is_device_frame(dom, entry_mfn(new)) {
            uncached(new)
        } else {
            new
        };
        let old = self.mem.read_entry(table, index);
        if present(old)
            && self.frames.get(entry_mfn(old)).map(|f| f.owner) != Some(Owner::Domain(dom))
            && !(level == 1 && self.is_device_frame(dom, entry_mfn(old)))
        {
            // A grant mapping: only unmap_grant_ref removes it (GNT-3).
            return Err(MmError::Busy);
        }
        self.get_entry(new, level, dom)?;
        self.mem.write_entry(table, index, new);
        self.put_entry(old, level);
        Ok(())
    }

    /// Validates `mfn` as a level-`level` table and pins it.
    pub fn pin(&mut self, mfn: Mfn, level: u32, dom: DomId) -> Result<(), MmError> {
        self.owned_by(mfn, dom)?;
        if self.frames.get(mfn).is_some_and(|f| f.pinned) {
            return Err(MmError::Invalid);
        }
        self.get_page(mfn, dom)?;
        if let Err(e) = self.get_type(mfn, dom, FrameType::table(level)) {
            self.put_page(mfn);
            return Err(e);
        }
        if let Some(f) = self.frames.frame_mut(mfn) {
            f.pinned = true;
        }
        Ok(())
    }

    /// Unpins a pinned table. The caller checks it is not a base pointer.
    pub fn unpin(&mut self, mfn: Mfn, dom: DomId) -> Result<(), MmError> {
        self.owned_by(mfn, dom)?;
        match self.frames.frame_mut(mfn) {
            Some(f) if f.pinned => f.pinned = false,
            _ => return Err(MmError::Invalid),
        }
        self.put_type(mfn);
        self.put_page(mfn);
        Ok(())
    }

    /// Takes the references a base pointer holds on an L4.
    pub fn get_baseptr(&mut self, mfn: Mfn, dom: DomId) -> Result<(), MmError> {
        self.get_page(mfn, dom)?;
        if let Err(e) = self.get_type(mfn, dom, FrameType::L4) {
            self.put_page(mfn);
            return Err(e);
        }
        Ok(())
    }

    /// Drops a base pointer's references.
    pub fn put_baseptr(&mut self, mfn: Mfn) {
        self.put_type(mfn);
        self.put_page(mfn);
    }

    /// Takes a temporary writable use of a frame `dom` owns (for clear/copy).
    pub fn get_writable(&mut self, mfn: Mfn, dom: DomId) -> Result<(), MmError> {
        self.get_page(mfn, dom)?;
        if let Err(e) = self.get_type(mfn, dom, FrameType::Writable) {
            self.put_page(mfn);
            return Err(e);
        }
        Ok(())
    }

    /// Drops a temporary writable use.
    pub fn put_writable(&mut self, mfn: Mfn) {
        self.put_type(mfn);
        self.put_page(mfn);
    }
}

/// A live grant mapping, as the audit needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantMapRef {
    pub mapper: DomId,
    pub mfn: Mfn,
    pub writable: bool,
}

/// What the audit found wrong (the first breach).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditError {
    pub mfn: Mfn,
    pub what: &'static str,
}

/// Recomputes every count from the validated tables and checks MM-2 (a)–(d).
/// `baseptrs` lists the L4 of every base pointer (one item per reference).
/// Returns the number of frames checked.
pub fn audit<M: TableMemory>(
    frames: &FrameTable<'_>,
    mem: &M,
    baseptrs: &[Mfn],
    grant_maps: &[GrantMapRef],
    io: &dyn DeviceFrames,
) -> Result<u64, AuditError> {
    use alloc::vec;
    let all = frames.frames();
    let mut refs = vec![0u32; all.len()];
    let mut types = vec![0u32; all.len()];
    for (mfn, f) in all.iter().enumerate() {
        if matches!(f.owner, Owner::Domain(_) | Owner::Hypervisor) {
            refs[mfn] += 1;
        }
        if f.pinned {
            refs[mfn] += 1;
            types[mfn] += 1;
        }
    }
    for g in grant_maps {
        let Some(slot) = refs.get_mut(g.mfn as usize) else {
            return Err(AuditError {
                mfn: g.mfn,
                what: "grant mapping beyond memory",
            });
        };
        *slot += 1;
        if g.writable {
            types[g.mfn as usize] += 1;
        }
    }
    for &b in baseptrs {
        let Some(slot) = refs.get_mut(b as usize) else {
            return Err(AuditError {
                mfn: b,
                what: "base pointer beyond memory",
            });
        };
        *slot += 1;
        types[b as usize] += 1;
    }
    for (mfn, f) in all.iter().enumerate() {
        let Some(level) = f.ftype.level() else {
            continue;
        };
        if f.type_count == 0 {
            continue;
        }
        let Owner::Domain(dom) = f.owner else {
            return Err(AuditError {
                mfn: mfn as Mfn,
                what: "a validated table not owned by a domain",
            });
        };
        for index in 0..ENTRIES {
            if level == 4 && is_hv_l4_slot(index) {
                continue;
            }
            let e = mem.read_entry(mfn as Mfn, index);
            if !present(e) {
                continue;
            }
            let target = entry_mfn(e) as usize;
            let owned_by_a_domain = all
                .get(target)
                .is_some_and(|t| matches!(t.owner, Owner::Domain(_)));
            if level == 1 && !owned_by_a_domain && io.permitted(dom, target as Mfn) {
                if e != uncached(e) {
                    return Err(AuditError {
                        mfn: mfn as Mfn,
                        what: "a device frame mapped cacheable",
                    });
                }
                continue;
            }
            let Some(t) = all.get(target) else {
                return Err(AuditError {
                    mfn: mfn as Mfn,
                    what: "(c) an entry points beyond memory",
                });
            };
            if t.owner != Owner::Domain(dom) {
                // Allowed only as a live grant mapping of that very frame, with
                // no more access than granted; its references are counted
                // from the maptrack above.
                let granted = grant_maps.iter().any(|g| {
                    g.mapper == dom && g.mfn == target as Mfn && (g.writable || e & pte::RW == 0)
                });
                if level == 1 && granted {
                    continue;
                }
                return Err(AuditError {
                    mfn: mfn as Mfn,
                    what: "(b)/(c) an entry points at a frame its domain does not own",
                });
            }
            refs[target] += 1;
            if level == 1 {
                if e & pte::RW != 0 {
                    if t.ftype != FrameType::Writable {
                        return Err(AuditError {
                            mfn: target as Mfn,
                            what: "(a) a writable mapping of a frame not typed writable",
                        });
                    }
                    types[target] += 1;
                }
            } else {
                if t.ftype != FrameType::table(level - 1) {
                    return Err(AuditError {
                        mfn: target as Mfn,
                        what: "an entry points at a table of the wrong level",
                    });
                }
                types[target] += 1;
            }
        }
    }
    for (mfn, f) in all.iter().enumerate() {
        if f.ref_count != refs[mfn] {
            return Err(AuditError {
                mfn: mfn as Mfn,
                what: "(d) reference count differs from the references found",
            });
        }
        if f.type_count != types[mfn] {
            return Err(AuditError {
                mfn: mfn as Mfn,
                what: "(d) type count differs from the uses found",
            });
        }
    }
    frames
        .audit_free_list()
        .map_err(|what| AuditError { mfn: 0, what })?;
    Ok(all.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::frame_table::FrameInfo;
    use proptest::prelude::*;

    const FRAMES: usize = 48;
    /// Frames 0..4 are the hypervisor's, 44..48 reserved, the rest split
    /// between domains 1 (4..24) and 2 (24..44).
    fn owner_of(mfn: usize) -> Option<DomId> {
        match mfn {
            4..=23 => Some(1),
            24..=43 => Some(2),
            _ => None,
        }
    }

    struct Sim {
        tables: Vec<[u64; ENTRIES]>,
        flushes: u32,
    }

    impl Sim {
        fn new() -> Sim {
            Sim {
                tables: vec![[0; ENTRIES]; FRAMES],
                flushes: 0,
            }
        }
    }

    impl TableMemory for Sim {
        fn read_entry(&self, mfn: Mfn, index: usize) -> u64 {
            self.tables[mfn as usize][index]
        }
        fn write_entry(&mut self, mfn: Mfn, index: usize, value: u64) {
            self.tables[mfn as usize][index] = value;
        }
        fn flush_tlbs(&mut self) {
            self.flushes += 1;
        }
    }

    const HV_L4: [(usize, u64); 1] = [(262, 0x1000 | 3)];

    /// A frame table with the ownership layout above.
    fn table(storage: &mut [FrameInfo]) -> FrameTable<'_> {
        let mut ft = FrameTable::new(storage);
        ft.add_free(0, 44);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(ft.alloc(Owner::Hypervisor).unwrap());
        }
        for _ in 4..24 {
            got.push(ft.alloc(Owner::Domain(1)).unwrap());
        }
        for _ in 24..44 {
            got.push(ft.alloc(Owner::Domain(2)).unwrap());
        }
        assert_eq!(got, (0..44).collect::<Vec<_>>());
        ft
    }

    fn l1e(mfn: usize, rw: bool) -> u64 {
        ((mfn as u64) << 12) | pte::P | pte::US | if rw { pte::RW } else { 0 }
    }

    #[test]
    fn a_table_mapped_writable_is_refused_and_vice_versa() {
        let mut storage = vec![FrameInfo::RESERVED; FRAMES];
        let mut ft = table(&mut storage);
        let mut sim = Sim::new();
        let mut pt = PageTables {
            frames: &mut ft,
            mem: &mut sim,
            hv_l4: &HV_L4,
            io: &NoDeviceFrames,
        };
        // Frame 5 is an L1 of domain 1 mapping frame 6 writable.
        pt.mem.tables[5][0] = l1e(6, true);
        pt.pin(5, 1, 1).unwrap();
        assert_eq!(pt.frames.get(6).unwrap().ftype, FrameType::Writable);
        // Mapping the L1 itself writable: refused.
        assert_eq!(pt.update_entry(5, 1, l1e(5, true), 1), Err(MmError::Busy));
        // Read-only is fine.
        pt.update_entry(5, 1, l1e(5, false), 1).unwrap();
        // Frame 6 is mapped writable, so it cannot become a table.
        assert_eq!(pt.pin(6, 1, 1), Err(MmError::Busy));
        // Remove the writable mapping: now it can, after a TLB flush.
        pt.update_entry(5, 0, 0, 1).unwrap();
        assert!(pt.frames.tlb_stale);
        pt.pin(6, 1, 1).unwrap();
        assert_eq!(pt.mem.flushes, 1);
        audit(&*pt.frames, &*pt.mem, &[], &[], &NoDeviceFrames).unwrap();
    }

    /// Device frames 4000..4004 for domain 1, and reserved frame 45 (inside
    /// the frame table) too; domain 1's own RAM frame 7 is never one.
    struct Bars;
    impl DeviceFrames for Bars {
        fn permitted(&self, dom: DomId, mfn: Mfn) -> bool {
            dom == 1 && ((4000..4004).contains(&mfn) || mfn == 45 || mfn == 7)
        }
    }

    #[test]
    fn device_frames_map_uncached_without_counts() {
        let mut storage = vec![FrameInfo::RESERVED; FRAMES];
        let mut ft = table(&mut storage);
        let mut sim = Sim::new();
        let mut pt = PageTables {
            frames: &mut ft,
            mem: &mut sim,
            hv_l4: &HV_L4,
            io: &Bars,
        };
        pt.pin(5, 1, 1).unwrap();
        let wb = l1e(4001, true) | pte::PS_OR_PAT;
        pt.update_entry(5, 0, wb, 1).unwrap();
        assert_eq!(pt.mem.tables[5][0], uncached(l1e(4001, true)));
        pt.update_entry(5, 1, l1e(45, false), 1).unwrap();
        assert_eq!(pt.frames.get(45).unwrap().ref_count, 0);
        // RAM the domain owns stays RAM, with its counts and caching.
        pt.update_entry(5, 2, l1e(7, true), 1).unwrap();
        assert_eq!(pt.mem.tables[5][2], l1e(7, true));
        assert_eq!(pt.frames.get(7).unwrap().ftype, FrameType::Writable);
        // Domain 2 may map none of them; nor may any upper level.
        pt.pin(25, 1, 2).unwrap();
        assert_eq!(
            pt.update_entry(25, 0, l1e(4001, true), 2),
            Err(MmError::NotPermitted)
        );
        assert_eq!(
            pt.update_entry(25, 0, l1e(4004, true), 2),
            Err(MmError::NotPermitted)
        );
        pt.pin(6, 2, 1).unwrap();
        assert_eq!(
            pt.update_entry(6, 0, l1e(4001, false), 1),
            Err(MmError::NotPermitted)
        );
        audit(&*pt.frames, &*pt.mem, &[], &[], &Bars).unwrap();
        // A cacheable device mapping (written behind the engine's back) is caught.
        pt.mem.tables[5][3] = l1e(4002, true);
        assert!(audit(&*pt.frames, &*pt.mem, &[], &[], &Bars).is_err());
        pt.mem.tables[5][3] = 0;
        // Replacing and removing device mappings works.
        pt.update_entry(5, 0, l1e(4003, false), 1).unwrap();
        pt.update_entry(5, 0, 0, 1).unwrap();
        pt.update_entry(5, 1, 0, 1).unwrap();
        // Pinning a table that already holds device entries makes them uncached.
        pt.mem.tables[8][0] = l1e(4000, true);
        pt.pin(8, 1, 1).unwrap();
        assert_eq!(pt.mem.tables[8][0], uncached(l1e(4000, true)));
        pt.unpin(8, 1).unwrap();
        audit(&*pt.frames, &*pt.mem, &[], &[], &Bars).unwrap();
    }

    /// Records page-table type changes.
    #[derive(Default)]
    struct Watch(core::cell::RefCell<Vec<(DomId, Mfn, bool)>>);
    impl DeviceFrames for Watch {
        fn permitted(&self, _dom: DomId, _mfn: Mfn) -> bool {
            false
        }
        fn page_table_type(&self, dom: DomId, mfn: Mfn, is_table: bool) {
            self.0.borrow_mut().push((dom, mfn, is_table));
        }
    }

    #[test]
    fn page_table_type_changes_are_announced() {
        let mut storage = vec![FrameInfo::RESERVED; FRAMES];
        let mut ft = table(&mut storage);
        let mut sim = Sim::new();
        let watch = Watch::default();
        let mut pt = PageTables {
            frames: &mut ft,
            mem: &mut sim,
            hv_l4: &HV_L4,
            io: &watch,
        };
        // An L2 naming an L1: both become tables, the L2 first.
        pt.mem.tables[6][0] = l1e(5, false);
        pt.pin(6, 2, 1).unwrap();
        assert_eq!(watch.0.borrow().as_slice(), [(1, 6, true), (1, 5, true)]);
        pt.unpin(6, 1).unwrap();
        assert_eq!(watch.0.borrow()[2..], [(1, 5, false), (1, 6, false)]);
        // A failed validation takes the announcement back.
        pt.mem.tables[7][0] = l1e(30, false);
        assert!(pt.pin(7, 1, 1).is_err());
        assert_eq!(watch.0.borrow()[4..], [(1, 7, true), (1, 7, false)]);
        // Writable mappings are no page tables.
        pt.pin(5, 1, 1).unwrap();
        pt.update_entry(5, 0, l1e(8, true), 1).unwrap();
        assert_eq!(watch.0.borrow().len(), 7);
    }

    #[test]
    fn foreign_hypervisor_and_reserved_frames_are_refused() {
        let mut storage = vec![FrameInfo::RESERVED; FRAMES];
        let mut ft = table(&mut storage);
        let mut sim = Sim::new();
        let mut pt = PageTables {
            frames: &mut ft,
            mem: &mut sim,
            hv_l4: &HV_L4,
            io: &NoDeviceFrames,
        };
        pt.pin(5, 1, 1).unwrap();
        assert_eq!(
            pt.update_entry(5, 0, l1e(30, false), 1),
            Err(MmError::NotPermitted)
        );
        assert_eq!(
            pt.update_entry(5, 0, l1e(1, false), 1),
            Err(MmError::NotPermitted)
        );
        assert_eq!(
            pt.update_entry(5, 0, l1e(45, false), 1),
            Err(MmError::NotPermitted)
        );
        assert_eq!(
            pt.update_entry(5, 0, l1e(4000, false), 1),
            Err(MmError::NotPermitted)
        );
        // Domain 2 cannot update domain 1's table.
        assert_eq!(
            pt.update_entry(5, 0, l1e(30, false), 2),
            Err(MmError::NotPermitted)
        );
        // Global bit and reserved bits are malformed.
        assert_eq!(
            pt.update_entry(5, 0, l1e(6, false) | pte::G, 1),
            Err(MmError::Invalid)
        );
        assert_eq!(
            pt.update_entry(5, 0, l1e(6, false) | (1 << 52), 1),
            Err(MmError::Invalid)
        );
        audit(&*pt.frames, &*pt.mem, &[], &[], &NoDeviceFrames).unwrap();
    }

    #[test]
    fn no_linear_tables_no_superpages_no_hypervisor_slots() {
        let mut storage = vec![FrameInfo::RESERVED; FRAMES];
        let mut ft = table(&mut storage);
        let mut sim = Sim::new();
        let mut pt = PageTables {
            frames: &mut ft,
            mem: &mut sim,
            hv_l4: &HV_L4,
            io: &NoDeviceFrames,
        };
        // Whatever the guest wrote in hypervisor slots is replaced.
        pt.mem.tables[4][257] = (6 << 12) | pte::P | pte::RW;
        pt.mem.tables[4][511] = (1 << 12) | pte::P | pte::RW;
        pt.pin(4, 4, 1).unwrap();
        assert_eq!(
            pt.mem.tables[4][262],
            0x1000 | 3,
            "hypervisor slot filled at validation"
        );
        assert_eq!(
            pt.mem.tables[4][257], 0,
            "guest value in a hypervisor slot survived"
        );
        assert_eq!(
            pt.mem.tables[4][511], 0,
            "guest value in a hypervisor slot survived"
        );
        let self_ref = (4u64 << 12) | pte::P | pte::RW;
        assert_eq!(pt.update_entry(4, 300, self_ref, 1), Err(MmError::Busy));
        assert_eq!(pt.update_entry(4, 262, 0, 1), Err(MmError::NotPermitted));
        assert_eq!(pt.update_entry(4, 511, 0, 1), Err(MmError::NotPermitted));
        // An L3 that points at itself.
        pt.update_entry(4, 0, (7 << 12) | pte::P | pte::RW, 1)
            .unwrap();
        assert_eq!(
            pt.update_entry(7, 0, (7 << 12) | pte::P | pte::RW, 1),
            Err(MmError::Busy)
        );
        // An L2 with a superpage.
        pt.update_entry(7, 1, (8 << 12) | pte::P | pte::RW, 1)
            .unwrap();
        assert_eq!(
            pt.update_entry(8, 0, (9 << 12) | pte::P | pte::RW | pte::PS_OR_PAT, 1),
            Err(MmError::Invalid)
        );
        audit(&*pt.frames, &*pt.mem, &[], &[], &NoDeviceFrames).unwrap();
    }

    #[test]
    fn failed_validation_rolls_back() {
        let mut storage = vec![FrameInfo::RESERVED; FRAMES];
        let mut ft = table(&mut storage);
        let mut sim = Sim::new();
        // L1 in frame 5: good entries then one pointing at domain 2.
        for i in 0..10 {
            sim.tables[5][i] = l1e(10 + i, i % 2 == 0);
        }
        sim.tables[5][10] = l1e(30, false);
        let mut pt = PageTables {
            frames: &mut ft,
            mem: &mut sim,
            hv_l4: &HV_L4,
            io: &NoDeviceFrames,
        };
        assert_eq!(pt.pin(5, 1, 1), Err(MmError::NotPermitted));
        for i in 10..20 {
            let f = pt.frames.get(i).unwrap();
            assert_eq!(
                (f.ref_count, f.type_count),
                (1, 0),
                "frame {i} leaked a reference"
            );
        }
        assert_eq!(pt.frames.get(5).unwrap().type_count, 0);
        assert!(!pt.frames.get(5).unwrap().pinned);
        audit(&*pt.frames, &*pt.mem, &[], &[], &NoDeviceFrames).unwrap();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Pin {
            dom: DomId,
            mfn: usize,
            level: u32,
        },
        Unpin {
            dom: DomId,
            mfn: usize,
        },
        Update {
            dom: DomId,
            table: usize,
            index: usize,
            target: usize,
            flags: u64,
        },
        GuestWrite {
            mfn: usize,
            index: usize,
            target: usize,
            flags: u64,
        },
        Baseptr {
            dom: DomId,
            mfn: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let dom = 1u32..=2;
        let mfn = 0usize..FRAMES;
        let index = prop_oneof![0usize..4, Just(262usize), Just(300usize)];
        let flags = prop_oneof![
            Just(pte::P),
            Just(pte::P | pte::RW),
            Just(0u64),
            Just(pte::P | pte::G),
            Just(pte::P | pte::RW | pte::PS_OR_PAT)
        ];
        prop_oneof![
            (dom.clone(), mfn.clone(), 1u32..=4).prop_map(|(dom, mfn, level)| Op::Pin {
                dom,
                mfn,
                level
            }),
            (dom.clone(), mfn.clone()).prop_map(|(dom, mfn)| Op::Unpin { dom, mfn }),
            (
                dom.clone(),
                mfn.clone(),
                index.clone(),
                mfn.clone(),
                flags.clone()
            )
                .prop_map(|(dom, table, index, target, flags)| Op::Update {
                    dom,
                    table,
                    index,
                    target,
                    flags
                }),
            (mfn.clone(), index, mfn.clone(), flags).prop_map(|(mfn, index, target, flags)| {
                Op::GuestWrite {
                    mfn,
                    index,
                    target,
                    flags,
                }
            }),
            (dom, mfn).prop_map(|(dom, mfn)| Op::Baseptr { dom, mfn }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        /// Random operations from two domains, including a guest scribbling on
        /// any frame it could have mapped writable, never break MM-2 (a)-(d).
        #[test]
        fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..120)) {
            let mut storage = vec![FrameInfo::RESERVED; FRAMES];
            let mut ft = table(&mut storage);
            let mut sim = Sim::new();
            let mut baseptr: [Option<Mfn>; 3] = [None; 3];
            for op in ops {
                let mut pt = PageTables { frames: &mut ft, mem: &mut sim, hv_l4: &HV_L4, io: &NoDeviceFrames };
                match op {
                    Op::Pin { dom, mfn, level } => { let _ = pt.pin(mfn as Mfn, level, dom); }
                    Op::Unpin { dom, mfn } => {
                        if baseptr[dom as usize] != Some(mfn as Mfn) {
                            let _ = pt.unpin(mfn as Mfn, dom);
                        }
                    }
                    Op::Update { dom, table, index, target, flags } => {
                        let before = pt.frames.get(target as Mfn).map(|f| (f.ftype, f.type_count));
                        let r = pt.update_entry(table as Mfn, index, ((target as u64) << 12) | flags, dom);
                        if r.is_ok() && flags & pte::P != 0 {
                            prop_assert_eq!(owner_of(target), Some(dom), "mapped a frame it does not own");
                        }
                        let _ = before;
                    }
                    Op::GuestWrite { mfn, index, target, flags } => {
                        // The guest can write a frame only through a writable
                        // mapping, which exists only for non-table frames.
                        let f = pt.frames.get(mfn as Mfn).unwrap();
                        if owner_of(mfn).is_some() && !(f.ftype.is_page_table() && f.type_count > 0) {
                            pt.mem.tables[mfn][index] = ((target as u64) << 12) | flags;
                        }
                    }
                    Op::Baseptr { dom, mfn } => {
                        if pt.get_baseptr(mfn as Mfn, dom).is_ok() {
                            if let Some(old) = baseptr[dom as usize].replace(mfn as Mfn) {
                                pt.put_baseptr(old);
                            }
                        }
                    }
                }
                let bases: Vec<Mfn> = baseptr.iter().flatten().copied().collect();
                let checked = audit(&ft, &sim, &bases, &[], &NoDeviceFrames);
                prop_assert!(checked.is_ok(), "audit: {:?}", checked);
                // (a) restated directly: no validated table is the target of a
                // writable L1 entry of a validated L1.
                for (m, f) in ft.frames().iter().enumerate() {
                    if f.ftype == FrameType::L1 && f.type_count > 0 {
                        for i in 0..4 {
                            let e = sim.tables[m][i];
                            if present(e) && e & pte::RW != 0 {
                                let t = ft.get(entry_mfn(e)).unwrap();
                                prop_assert!(!(t.ftype.is_page_table() && t.type_count > 0));
                            }
                        }
                    }
                }
            }
        }
    }
}
