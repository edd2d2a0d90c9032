//! Grant tables (SPEC.md §8b, GNT-*): the granters' tables, the active-grant
//! bookkeeping and every mapper's maptrack (portable, property-tested), on top
//! of the frame table's reference counting.
//!
//! # Invariants
//! - A grant mapping holds a general reference on the granted frame and, if
//!   writable, a *writable* type use — exactly as if the granter mapped it —
//!   so a frame mapped writable by anyone can never become a page table (MM-2 (a)).
//! - Every maptrack entry has an active-grant record in its granter's table
//!   (or its granter is dead), and active counts equal the maptrack entries.
//! - The granted frame belongs to the granter; a dead granter's frames stay
//!   allocated (owned by the dead domain) until their last mapping goes, then
//!   return to the free pool.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use hypercall_abi::grant::*;
use hypercall_abi::mm::pte;
use hypercall_abi::{DomId, Errno};

use crate::mm::frame_table::{FrameType, Mfn, Owner};
use crate::mm::pagetable::{present, GrantMapRef, PageTables, TableMemory};

#[cfg(target_os = "none")]
pub mod live;

/// Most simultaneous grant mappings per mapping domain.
pub const MAX_HANDLES: usize = 1024;

/// How grant-table frames and granted frames are reached.
pub trait GrantMemory {
    /// Atomically loads the 32-bit word at `offset` of frame `mfn`.
    fn load(&self, mfn: Mfn, offset: usize) -> u32;
    /// Atomically replaces `old` by `new`; false if the word was not `old`.
    fn compare_exchange(&mut self, mfn: Mfn, offset: usize, old: u32, new: u32) -> bool;
    /// Atomically ands the word with `mask`.
    fn and(&mut self, mfn: Mfn, offset: usize, mask: u32);
    /// Copies `len` bytes between frames.
    fn copy(&mut self, dst: Mfn, dst_offset: usize, src: Mfn, src_offset: usize, len: usize);
}

#[derive(Clone, Copy, Debug)]
struct Active {
    mfn: Mfn,
    readers: u32,
    writers: u32,
}

#[derive(Default)]
struct GrantTable {
    frames: Vec<Mfn>,
    active: BTreeMap<GrantRef, Active>,
}

/// A live grant mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub granter: DomId,
    pub gref: GrantRef,
    pub mfn: Mfn,
    pub host_addr: u64,
    pub writable: bool,
    /// The mapper's L1 table and index holding the mapping, and the entry.
    pub l1: Mfn,
    pub index: usize,
    pub pte: u64,
}

/// Every domain's grant table and maptrack.
#[derive(Default)]
pub struct Grants {
    tables: BTreeMap<DomId, GrantTable>,
    maptrack: BTreeMap<DomId, Vec<Option<Mapping>>>,
    /// Granters that died while frames of theirs were still mapped.
    dead: BTreeSet<DomId>,
}

fn entry_offset(gref: GrantRef) -> usize {
    (gref % GRANT_ENTRIES_PER_FRAME) as usize * core::mem::size_of::<GrantEntry>()
}

fn errno(e: crate::mm::pagetable::MmError) -> Errno {
    e.errno()
}

impl Grants {
    pub const fn new() -> Grants {
        Grants {
            tables: BTreeMap::new(),
            maptrack: BTreeMap::new(),
            dead: BTreeSet::new(),
        }
    }

    /// GNTTABOP_SETUP_TABLE: `mfns` (frames `dom` owns) become its grant table.
    pub fn setup_table<M: TableMemory>(
        &mut self,
        pt: &mut PageTables<'_, '_, M>,
        dom: DomId,
        mfns: &[Mfn],
    ) -> Result<(), Errno> {
        if mfns.len() > GRANT_MAX_FRAMES as usize {
            return Err(Errno::EINVAL);
        }
        if self.tables.get(&dom).is_some_and(|t| !t.active.is_empty()) {
            return Err(Errno::EBUSY);
        }
        for (i, &mfn) in mfns.iter().enumerate() {
            let duplicate = mfns[..i].contains(&mfn);
            let taken = if duplicate {
                Err(Errno::EINVAL)
            } else {
                pt.get_writable(mfn, dom).map_err(errno)
            };
            if let Err(e) = taken {
                for &done in &mfns[..i] {
                    pt.put_writable(done);
                }
                return Err(e);
            }
        }
        let table = self.tables.entry(dom).or_default();
        for &old in &table.frames {
            pt.put_writable(old);
        }
        table.frames = mfns.to_vec();
        Ok(())
    }

    /// Frames in `dom`'s grant table.
    pub fn table_frames(&self, dom: DomId) -> u32 {
        self.tables.get(&dom).map_or(0, |t| t.frames.len() as u32)
    }

    /// Entries of `dom`'s grant table that some domain has mapped (TS-8).
    pub fn entries_in_use(&self, dom: DomId) -> u32 {
        self.tables.get(&dom).map_or(0, |t| t.active.len() as u32)
    }

    /// Pins `(granter, gref)` for `user` (reading, or writing too) and returns
    /// the frame (GNT protocol step 2). A `track`ed use (a mapping) is counted
    /// in the active grant until [`Grants::release`]; an untracked one (a
    /// copy, which ends before hv-core returns) is ended with
    /// [`Grants::release_transient`].
    #[allow(clippy::too_many_arguments)]
    fn acquire<M: TableMemory>(
        &mut self,
        mem: &mut dyn GrantMemory,
        pt: &mut PageTables<'_, '_, M>,
        granter: DomId,
        gref: GrantRef,
        user: DomId,
        write: bool,
        track: bool,
    ) -> Result<Mfn, Errno> {
        let table = self.tables.get_mut(&granter).ok_or(Errno::ENOENT)?;
        let frame = *table
            .frames
            .get((gref / GRANT_ENTRIES_PER_FRAME) as usize)
            .ok_or(Errno::EINVAL)?;
        let off = entry_offset(gref);
        let mut tries = 0;
        loop {
            let word = mem.load(frame, off);
            let (flags, domid) = (word as u16, word >> 16);
            if flags & GTF_PERMIT_ACCESS == 0 || domid != user {
                return Err(Errno::EPERM);
            }
            if write && flags & GTF_READONLY != 0 {
                return Err(Errno::EACCES);
            }
            let new = flags | GTF_READING | if write { GTF_WRITING } else { 0 };
            if mem.compare_exchange(frame, off, word, u32::from(new) | (domid << 16)) {
                break;
            }
            tries += 1;
            if tries == 8 {
                // The granter keeps changing the entry under us.
                return Err(Errno::EAGAIN);
            }
        }
        let mfn = match table.active.get(&gref) {
            // While pinned, the frame is the one first seen (the granter
            // cannot switch frames under a mapping).
            Some(a) => a.mfn,
            None => Mfn::from(mem.load(frame, off + 4)),
        };
        let owned = pt.frames.get(mfn).map(|f| f.owner) == Some(Owner::Domain(granter));
        let writable_ok = !write || pt.get_writable(mfn, granter).is_ok();
        if !owned || !writable_ok {
            // Undo step 2 for what no other use still needs.
            let clear = match table.active.get(&gref) {
                None => GTF_READING | GTF_WRITING,
                Some(a) if a.writers == 0 => GTF_WRITING,
                Some(_) => 0,
            };
            mem.and(frame, off, u32::from(!clear) | 0xffff_0000);
            return Err(if owned { Errno::EBUSY } else { Errno::EPERM });
        }
        if write {
            // The check above took a writable use; the mapping takes its own.
            pt.put_writable(mfn);
        }
        if !track {
            return Ok(mfn);
        }
        let a = table.active.entry(gref).or_insert(Active {
            mfn,
            readers: 0,
            writers: 0,
        });
        if write {
            a.writers += 1;
        } else {
            a.readers += 1;
        }
        Ok(mfn)
    }

    /// Ends an untracked use: clears the in-use flags no tracked use needs.
    fn release_transient(&mut self, mem: &mut dyn GrantMemory, granter: DomId, gref: GrantRef) {
        let Some(table) = self.tables.get(&granter) else {
            return;
        };
        let clear = match table.active.get(&gref) {
            None => GTF_READING | GTF_WRITING,
            Some(a) if a.writers == 0 => GTF_WRITING,
            Some(_) => 0,
        };
        if let Some(&frame) = table.frames.get((gref / GRANT_ENTRIES_PER_FRAME) as usize) {
            mem.and(frame, entry_offset(gref), u32::from(!clear) | 0xffff_0000);
        }
    }

    /// Ends one use of `(granter, gref)`; the last one clears the in-use flags.
    fn release(&mut self, mem: &mut dyn GrantMemory, granter: DomId, gref: GrantRef, write: bool) {
        let Some(table) = self.tables.get_mut(&granter) else {
            return;
        };
        let Some(a) = table.active.get_mut(&gref) else {
            return;
        };
        if write {
            a.writers = a.writers.saturating_sub(1);
        } else {
            a.readers = a.readers.saturating_sub(1);
        }
        let mut clear = 0u16;
        if a.writers == 0 {
            clear |= GTF_WRITING;
        }
        if a.writers == 0 && a.readers == 0 {
            clear |= GTF_READING;
            table.active.remove(&gref);
        }
        if let Some(&frame) = table.frames.get((gref / GRANT_ENTRIES_PER_FRAME) as usize) {
            mem.and(frame, entry_offset(gref), u32::from(!clear) | 0xffff_0000);
        }
    }

    /// GNTTABOP_MAP_GRANT_REF into entry `index` of `mapper`'s L1 table `l1`
    /// (which maps `host_addr`). Returns the handle.
    #[allow(clippy::too_many_arguments)]
    pub fn map<M: TableMemory>(
        &mut self,
        mem: &mut dyn GrantMemory,
        pt: &mut PageTables<'_, '_, M>,
        mapper: DomId,
        granter: DomId,
        gref: GrantRef,
        write: bool,
        l1: Mfn,
        index: usize,
        host_addr: u64,
    ) -> Result<u32, Errno> {
        // A domain maps its own frames with its own page tables, not grants:
        // a self-mapping would look like an ordinary entry to the tables.
        if pt.table_level(l1, mapper) != Ok(1) || index >= 512 || granter == mapper {
            return Err(Errno::EINVAL);
        }
        if present(pt.mem.read_entry(l1, index)) {
            return Err(Errno::EBUSY);
        }
        let track = self.maptrack.entry(mapper).or_default();
        let handle = match track.iter().position(Option::is_none) {
            Some(h) => h,
            None if track.len() < MAX_HANDLES => {
                track.push(None);
                track.len() - 1
            }
            None => return Err(Errno::ENOSPC),
        };
        let mfn = self.acquire(mem, pt, granter, gref, mapper, write, true)?;
        let taken = pt.get_page(mfn, granter).and_then(|()| {
            if write {
                pt.get_type(mfn, granter, FrameType::Writable)
                    .inspect_err(|_| pt.put_page(mfn))
            } else {
                Ok(())
            }
        });
        if let Err(e) = taken {
            self.release(mem, granter, gref, write);
            return Err(errno(e));
        }
        let pte = (mfn << 12) | pte::P | pte::US | pte::NX | if write { pte::RW } else { 0 };
        pt.mem.write_entry(l1, index, pte);
        let m = Mapping {
            granter,
            gref,
            mfn,
            host_addr,
            writable: write,
            l1,
            index,
            pte,
        };
        if let Some(slot) = self
            .maptrack
            .get_mut(&mapper)
            .and_then(|t| t.get_mut(handle))
        {
            *slot = Some(m);
        }
        Ok(handle as u32)
    }

    /// Drops a mapping's references, and frees a dead granter's frame once
    /// nothing maps it any more; returns that frame if so.
    fn drop_mapping<M: TableMemory>(
        &mut self,
        mem: &mut dyn GrantMemory,
        pt: &mut PageTables<'_, '_, M>,
        m: &Mapping,
    ) -> Option<Mfn> {
        self.drop_refs(mem, pt, m);
        self.free_if_unmapped(pt, m)
    }

    /// Drops the references one mapping holds.
    fn drop_refs<M: TableMemory>(
        &mut self,
        mem: &mut dyn GrantMemory,
        pt: &mut PageTables<'_, '_, M>,
        m: &Mapping,
    ) {
        if m.writable {
            pt.put_type(m.mfn);
        }
        pt.put_page(m.mfn);
        self.release(mem, m.granter, m.gref, m.writable);
    }

    /// Frees the frame of a dead granter that `m` mapped once no mapping in
    /// `maptrack` names it; returns it if freed.
    fn free_if_unmapped<M: TableMemory>(
        &mut self,
        pt: &mut PageTables<'_, '_, M>,
        m: &Mapping,
    ) -> Option<Mfn> {
        if !self.dead.contains(&m.granter) || self.is_mapped(m.mfn) {
            return None;
        }
        pt.frames
            .release(m.mfn, Owner::Domain(m.granter))
            .ok()
            .map(|()| m.mfn)
    }

    fn is_mapped(&self, mfn: Mfn) -> bool {
        self.maptrack
            .values()
            .flatten()
            .flatten()
            .any(|m| m.mfn == mfn)
    }

    /// `mapper`'s live mapping `handle`, if any.
    pub fn mapping(&self, mapper: DomId, handle: u32) -> Option<Mapping> {
        self.maptrack
            .get(&mapper)?
            .get(handle as usize)
            .copied()
            .flatten()
    }

    /// GNTTABOP_UNMAP_GRANT_REF. Returns the mapping removed (the caller
    /// flushes the TLB for its address) and a dead granter's frame freed.
    pub fn unmap<M: TableMemory>(
        &mut self,
        mem: &mut dyn GrantMemory,
        pt: &mut PageTables<'_, '_, M>,
        mapper: DomId,
        handle: u32,
        host_addr: u64,
    ) -> Result<(Mapping, Option<Mfn>), Errno> {
        let slot = self
            .maptrack
            .get_mut(&mapper)
            .and_then(|t| t.get_mut(handle as usize))
            .ok_or(Errno::EINVAL)?;
        match slot {
            Some(m) if m.host_addr == host_addr => {}
            _ => return Err(Errno::EINVAL),
        }
        let Some(m) = slot.take() else {
            return Err(Errno::EINVAL);
        };
        // Clear the entry if it is still there in a live L1 of the mapper.
        // The CPU may have set Accessed and Dirty since the map.
        let same = |e: u64| e & !(pte::A | pte::D) == m.pte & !(pte::A | pte::D);
        if pt.table_level(m.l1, mapper) == Ok(1) && same(pt.mem.read_entry(m.l1, m.index)) {
            pt.mem.write_entry(m.l1, m.index, 0);
        }
        let freed = self.drop_mapping(mem, pt, &m);
        Ok((m, freed))
    }

    /// GNTTABOP_COPY for `caller`.
    pub fn copy<M: TableMemory>(
        &mut self,
        mem: &mut dyn GrantMemory,
        pt: &mut PageTables<'_, '_, M>,
        caller: DomId,
        op: &GnttabCopy,
    ) -> Result<(), Errno> {
        let len = op.len as usize;
        let fits = |off: u32| {
            (off as usize)
                .checked_add(len)
                .is_some_and(|end| end <= 4096)
        };
        if op.flags & !(GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF) != 0
            || op.pad != 0
            || !fits(op.source.offset)
            || !fits(op.dest.offset)
        {
            return Err(Errno::EINVAL);
        }
        let gref_of =
            |p: &GnttabCopyPtr| GrantRef::try_from(p.ref_or_mfn).map_err(|_| Errno::EINVAL);
        // Source: read access.
        let src_gref = op.flags & GNTCOPY_SOURCE_GREF != 0;
        let src = if src_gref {
            self.acquire(
                mem,
                pt,
                op.source.domid,
                gref_of(&op.source)?,
                caller,
                false,
                false,
            )?
        } else {
            pt.get_page(op.source.ref_or_mfn, caller).map_err(errno)?;
            op.source.ref_or_mfn
        };
        let release_src =
            |g: &mut Grants, mem: &mut dyn GrantMemory, pt: &mut PageTables<'_, '_, M>| {
                if src_gref {
                    if let Ok(r) = gref_of(&op.source) {
                        g.release_transient(mem, op.source.domid, r);
                    }
                } else {
                    pt.put_page(src);
                }
            };
        // Destination: write access, never into a page table.
        let dst_gref = op.flags & GNTCOPY_DEST_GREF != 0;
        let dst = if dst_gref {
            match gref_of(&op.dest)
                .and_then(|r| self.acquire(mem, pt, op.dest.domid, r, caller, true, false))
            {
                Ok(mfn) => match pt.get_writable(mfn, op.dest.domid) {
                    Ok(()) => Ok(mfn),
                    Err(e) => {
                        if let Ok(r) = gref_of(&op.dest) {
                            self.release_transient(mem, op.dest.domid, r);
                        }
                        Err(errno(e))
                    }
                },
                Err(e) => Err(e),
            }
        } else {
            pt.get_writable(op.dest.ref_or_mfn, caller)
                .map(|()| op.dest.ref_or_mfn)
                .map_err(errno)
        };
        let dst = match dst {
            Ok(d) => d,
            Err(e) => {
                release_src(self, mem, pt);
                return Err(e);
            }
        };
        mem.copy(
            dst,
            op.dest.offset as usize,
            src,
            op.source.offset as usize,
            len,
        );
        pt.put_writable(dst);
        if dst_gref {
            if let Ok(r) = gref_of(&op.dest) {
                self.release_transient(mem, op.dest.domid, r);
            }
        }
        release_src(self, mem, pt);
        Ok(())
    }

    /// A domain ended: its own mappings go (returning the frames of dead
    /// granters that this freed), and frames of its that others still map are
    /// kept alive, with counts reset to exactly those mappings (returned in
    /// `keep`; the caller frees the domain's other frames).
    pub fn domain_died<M: TableMemory>(
        &mut self,
        mem: &mut dyn GrantMemory,
        pt: &mut PageTables<'_, '_, M>,
        dom: DomId,
    ) -> (Vec<Mfn>, Vec<Mfn>) {
        let mut freed = Vec::new();
        let gone: Vec<Mapping> = self
            .maptrack
            .remove(&dom)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect();
        // All its references first, then the frees: it may map the same
        // frame of a dead granter more than once.
        for m in &gone {
            self.drop_refs(mem, pt, m);
        }
        for m in &gone {
            if !freed.contains(&m.mfn) {
                freed.extend(self.free_if_unmapped(pt, m));
            }
        }
        self.tables.remove(&dom);
        let mut keep: Vec<Mfn> = Vec::new();
        for m in self.maptrack.values().flatten().flatten() {
            if m.granter == dom && !keep.contains(&m.mfn) {
                keep.push(m.mfn);
            }
        }
        for &mfn in &keep {
            let maps: Vec<&Mapping> = self
                .maptrack
                .values()
                .flatten()
                .flatten()
                .filter(|m| m.mfn == mfn)
                .collect();
            let writers = maps.iter().filter(|m| m.writable).count() as u32;
            if let Some(f) = pt.frames.frame_mut(mfn) {
                f.ref_count = 1 + maps.len() as u32;
                f.type_count = writers;
                f.ftype = if writers > 0 {
                    FrameType::Writable
                } else {
                    FrameType::None
                };
                f.pinned = false;
            }
        }
        if !keep.is_empty() {
            self.dead.insert(dom);
        }
        (keep, freed)
    }

    /// Every reference grants hold, for the frame-table audit: each live
    /// mapping, and each grant-table frame (a writable use by its owner).
    pub fn mappings(&self) -> Vec<GrantMapRef> {
        let mut out = Vec::new();
        for (&dom, t) in &self.tables {
            for &mfn in &t.frames {
                out.push(GrantMapRef {
                    mapper: dom,
                    mfn,
                    writable: true,
                });
            }
        }
        for (&mapper, track) in &self.maptrack {
            for m in track.iter().flatten() {
                out.push(GrantMapRef {
                    mapper,
                    mfn: m.mfn,
                    writable: m.writable,
                });
            }
        }
        out
    }

    /// Checks the bookkeeping invariants.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut counts: BTreeMap<(DomId, GrantRef), (u32, u32)> = BTreeMap::new();
        for m in self.maptrack.values().flatten().flatten() {
            let c = counts.entry((m.granter, m.gref)).or_default();
            if m.writable {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
            if !self.dead.contains(&m.granter) {
                let Some(a) = self
                    .tables
                    .get(&m.granter)
                    .and_then(|t| t.active.get(&m.gref))
                else {
                    return Err("a mapping without an active grant");
                };
                if a.mfn != m.mfn {
                    return Err("a mapping of another frame than the active grant's");
                }
            }
        }
        for (&granter, t) in &self.tables {
            for (&gref, a) in &t.active {
                if counts.get(&(granter, gref)).copied().unwrap_or_default()
                    != (a.readers, a.writers)
                {
                    return Err("active grant counts differ from the mappings");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::frame_table::{FrameInfo, FrameTable};
    use crate::mm::pagetable::{audit, ENTRIES};
    use proptest::prelude::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    const FRAMES: usize = 48;
    /// Domain d (1..=3) owns frames 12*d .. 12*d + 12; frame 12*d is its
    /// (pinned) L1, 12*d + 1 its grant-table frame, the rest data.
    fn frames_of(d: DomId) -> core::ops::Range<Mfn> {
        (12 * d as Mfn)..(12 * d as Mfn + 12)
    }

    type Mem = Rc<RefCell<Vec<[u64; ENTRIES]>>>;

    struct Sim(Mem);
    impl TableMemory for Sim {
        fn read_entry(&self, mfn: Mfn, index: usize) -> u64 {
            self.0.borrow()[mfn as usize][index]
        }
        fn write_entry(&mut self, mfn: Mfn, index: usize, value: u64) {
            self.0.borrow_mut()[mfn as usize][index] = value;
        }
        fn flush_tlbs(&mut self) {}
    }

    fn word(m: &[u64; ENTRIES], off: usize) -> u32 {
        (m[off / 8] >> (32 * ((off % 8) / 4))) as u32
    }
    fn set_word(m: &mut [u64; ENTRIES], off: usize, v: u32) {
        let shift = 32 * ((off % 8) / 4);
        m[off / 8] = (m[off / 8] & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
    }

    struct GSim(Mem);
    impl GrantMemory for GSim {
        fn load(&self, mfn: Mfn, offset: usize) -> u32 {
            word(&self.0.borrow()[mfn as usize], offset)
        }
        fn compare_exchange(&mut self, mfn: Mfn, offset: usize, old: u32, new: u32) -> bool {
            let mut m = self.0.borrow_mut();
            if word(&m[mfn as usize], offset) != old {
                return false;
            }
            set_word(&mut m[mfn as usize], offset, new);
            true
        }
        fn and(&mut self, mfn: Mfn, offset: usize, mask: u32) {
            let mut m = self.0.borrow_mut();
            let v = word(&m[mfn as usize], offset) & mask;
            set_word(&mut m[mfn as usize], offset, v);
        }
        fn copy(&mut self, dst: Mfn, dst_offset: usize, src: Mfn, src_offset: usize, len: usize) {
            let mut m = self.0.borrow_mut();
            let bytes: Vec<u8> = m[src as usize]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            let mut out: Vec<u8> = m[dst as usize]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            out[dst_offset..dst_offset + len].copy_from_slice(&bytes[src_offset..src_offset + len]);
            for (i, w) in m[dst as usize].iter_mut().enumerate() {
                *w = u64::from_le_bytes(out[i * 8..i * 8 + 8].try_into().unwrap());
            }
        }
    }

    struct World {
        ft: FrameTable<'static>,
        mem: Mem,
        grants: Grants,
        dead: Vec<DomId>,
    }

    impl World {
        fn new() -> World {
            let storage: &'static mut [FrameInfo] =
                Box::leak(vec![FrameInfo::RESERVED; FRAMES].into_boxed_slice());
            let mut ft = FrameTable::new(storage);
            ft.add_free(12, 48);
            for d in 1..=3 {
                for _ in frames_of(d) {
                    ft.alloc(Owner::Domain(d)).unwrap();
                }
            }
            let mut w = World {
                ft,
                mem: Rc::new(RefCell::new(vec![[0; ENTRIES]; FRAMES])),
                grants: Grants::new(),
                dead: vec![],
            };
            for d in 1..=3u32 {
                w.run(|_, pt, _| pt.pin(12 * d as Mfn, 1, d).unwrap());
                w.run(|g, pt, _| g.setup_table(pt, d, &[12 * d as Mfn + 1]).unwrap());
            }
            w
        }

        fn run<R>(
            &mut self,
            f: impl FnOnce(&mut Grants, &mut PageTables<'_, 'static, Sim>, &mut GSim) -> R,
        ) -> R {
            let mut sim = Sim(self.mem.clone());
            let mut gsim = GSim(self.mem.clone());
            let mut pt = PageTables {
                frames: &mut self.ft,
                mem: &mut sim,
                hv_l4: &[],
                io: &crate::mm::pagetable::NoDeviceFrames,
            };
            f(&mut self.grants, &mut pt, &mut gsim)
        }

        /// What the granter's kit does: write an entry (frame, domid, flags).
        fn grant(&mut self, granter: DomId, gref: GrantRef, to: DomId, frame: Mfn, flags: u16) {
            let table = 12 * granter as usize + 1;
            let off = (gref as usize % 512) * 8;
            let mut m = self.mem.borrow_mut();
            set_word(&mut m[table], off + 4, frame as u32);
            set_word(&mut m[table], off, u32::from(flags) | (to << 16));
        }

        fn flags(&self, granter: DomId, gref: GrantRef) -> u16 {
            word(
                &self.mem.borrow()[12 * granter as usize + 1],
                (gref as usize % 512) * 8,
            ) as u16
        }

        fn kill(&mut self, d: DomId) {
            let (keep, _freed) = self.run(|g, pt, mem| g.domain_died(mem, pt, d));
            for mfn in frames_of(d) {
                if !keep.contains(&mfn) {
                    let _ = self.ft.release(mfn, Owner::Domain(d));
                }
            }
            self.dead.push(d);
        }

        fn check(&mut self) -> Result<(), String> {
            let maps = self.grants.mappings();
            let live_maps: Vec<_> = maps
                .iter()
                .copied()
                .filter(|m| !self.dead.contains(&m.mapper))
                .collect();
            audit(
                &self.ft,
                &Sim(self.mem.clone()),
                &[],
                &live_maps,
                &crate::mm::pagetable::NoDeviceFrames,
            )
            .map_err(|e| format!("{e:?}"))?;
            self.grants.check().map_err(String::from)?;
            // No leak: a dead domain keeps exactly the frames others map.
            for &d in &self.dead {
                for mfn in frames_of(d) {
                    let owned = self.ft.get(mfn).unwrap().owner == Owner::Domain(d);
                    let mapped = maps.iter().any(|m| m.mfn == mfn);
                    if owned != mapped {
                        return Err(format!(
                            "frame {mfn} of dead d{d}: owned {owned}, mapped {mapped}"
                        ));
                    }
                }
            }
            Ok(())
        }
    }

    #[test]
    fn map_unmap_and_readonly() {
        let mut w = World::new();
        w.grant(1, 5, 2, 14, GTF_PERMIT_ACCESS | GTF_READONLY);
        assert_eq!(
            w.run(|g, pt, m| g.map(m, pt, 2, 1, 5, true, 24, 0, 0x1000)),
            Err(Errno::EACCES)
        );
        let h = w
            .run(|g, pt, m| g.map(m, pt, 2, 1, 5, false, 24, 0, 0x1000))
            .unwrap();
        assert_ne!(w.flags(1, 5) & GTF_READING, 0);
        w.check().unwrap();
        // The mapper cannot make it writable or replace it through its tables.
        assert_eq!(
            w.run(|_, pt, _| pt.update_entry(24, 0, (14 << 12) | pte::P | pte::RW, 2)),
            Err(crate::mm::pagetable::MmError::Busy)
        );
        // The CPU sets Accessed/Dirty on use; unmap must still clear the entry.
        w.mem.borrow_mut()[24][0] |= pte::A | pte::D;
        // Unmap twice: the second fails.
        w.run(|g, pt, m| g.unmap(m, pt, 2, h, 0x1000)).unwrap();
        assert_eq!(
            w.run(|g, pt, m| g.unmap(m, pt, 2, h, 0x1000)).map(|_| ()),
            Err(Errno::EINVAL)
        );
        assert_eq!(w.flags(1, 5) & (GTF_READING | GTF_WRITING), 0);
        assert_eq!(w.mem.borrow()[24][0], 0);
        w.check().unwrap();
    }

    #[test]
    fn refused_maps() {
        let mut w = World::new();
        // Never granted, granted to someone else, out of range, a frame the
        // granter does not own, the granter's own page table writable.
        assert_eq!(
            w.run(|g, pt, m| g.map(m, pt, 2, 1, 7, false, 24, 0, 0)),
            Err(Errno::EPERM)
        );
        w.grant(1, 7, 3, 14, GTF_PERMIT_ACCESS);
        assert_eq!(
            w.run(|g, pt, m| g.map(m, pt, 2, 1, 7, false, 24, 0, 0)),
            Err(Errno::EPERM)
        );
        assert_eq!(
            w.run(|g, pt, m| g.map(m, pt, 2, 1, 9999, false, 24, 0, 0)),
            Err(Errno::EINVAL)
        );
        w.grant(1, 8, 2, 30, GTF_PERMIT_ACCESS);
        assert_eq!(
            w.run(|g, pt, m| g.map(m, pt, 2, 1, 8, false, 24, 0, 0)),
            Err(Errno::EPERM)
        );
        w.grant(1, 9, 2, 12, GTF_PERMIT_ACCESS);
        assert_eq!(
            w.run(|g, pt, m| g.map(m, pt, 2, 1, 9, true, 24, 0, 0)),
            Err(Errno::EBUSY)
        );
        assert_eq!(
            w.flags(1, 9) & (GTF_READING | GTF_WRITING),
            0,
            "a refused map leaves no in-use flag"
        );
        w.check().unwrap();
    }

    #[test]
    fn dead_granter_frame_lives_until_unmapped() {
        let mut w = World::new();
        w.grant(1, 3, 2, 15, GTF_PERMIT_ACCESS);
        let h = w
            .run(|g, pt, m| g.map(m, pt, 2, 1, 3, true, 24, 4, 0x4000))
            .unwrap();
        w.kill(1);
        assert_eq!(w.ft.get(15).unwrap().owner, Owner::Domain(1));
        w.check().unwrap();
        let (_, freed) = w.run(|g, pt, m| g.unmap(m, pt, 2, h, 0x4000)).unwrap();
        assert_eq!(freed, Some(15));
        assert_eq!(w.ft.get(15).unwrap().owner, Owner::Free);
        w.check().unwrap();
    }

    #[test]
    fn copy_rules() {
        let mut w = World::new();
        w.mem.borrow_mut()[16][0] = 0x1122_3344_5566_7788;
        w.grant(1, 1, 2, 16, GTF_PERMIT_ACCESS | GTF_READONLY);
        let op = |src_ref: u64, dst: u64, flags: u32| GnttabCopy {
            source: GnttabCopyPtr {
                ref_or_mfn: src_ref,
                domid: 1,
                offset: 0,
            },
            dest: GnttabCopyPtr {
                ref_or_mfn: dst,
                domid: 1,
                offset: 0,
            },
            len: 8,
            flags,
            status: 0,
            pad: 0,
        };
        w.run(|g, pt, m| g.copy(m, pt, 2, &op(1, 26, GNTCOPY_SOURCE_GREF)))
            .unwrap();
        assert_eq!(w.mem.borrow()[26][0], 0x1122_3344_5566_7788);
        // Into a read-only grant, into an own page table, too long.
        assert_eq!(
            w.run(|g, pt, m| g.copy(m, pt, 2, &op(26, 1, GNTCOPY_DEST_GREF))),
            Err(Errno::EACCES)
        );
        assert_eq!(
            w.run(|g, pt, m| g.copy(m, pt, 2, &op(26, 24, 0))),
            Err(Errno::EBUSY)
        );
        let mut long = op(1, 26, GNTCOPY_SOURCE_GREF);
        long.len = 4097;
        assert_eq!(
            w.run(|g, pt, m| g.copy(m, pt, 2, &long)),
            Err(Errno::EINVAL)
        );
        assert_eq!(w.flags(1, 1) & (GTF_READING | GTF_WRITING), 0);
        w.check().unwrap();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Grant {
            granter: DomId,
            gref: GrantRef,
            to: DomId,
            frame: Mfn,
            flags: u16,
        },
        Map {
            mapper: DomId,
            granter: DomId,
            gref: GrantRef,
            write: bool,
            index: usize,
        },
        Unmap {
            mapper: DomId,
            handle: u32,
        },
        Copy {
            caller: DomId,
            granter: DomId,
            gref: GrantRef,
            into_grant: bool,
            own: Mfn,
        },
        EndGrant {
            granter: DomId,
            gref: GrantRef,
        },
        Kill(DomId),
    }

    fn op() -> impl Strategy<Value = Op> {
        let d = 1u32..=3;
        let r = 0u32..4;
        let f = 0u64..48;
        prop_oneof![
            (d.clone(), r.clone(), d.clone(), f.clone(), 0u16..32).prop_map(
                |(granter, gref, to, frame, flags)| Op::Grant {
                    granter,
                    gref,
                    to,
                    frame,
                    flags
                }
            ),
            (d.clone(), d.clone(), r.clone(), any::<bool>(), 0usize..6).prop_map(
                |(mapper, granter, gref, write, index)| Op::Map {
                    mapper,
                    granter,
                    gref,
                    write,
                    index
                }
            ),
            (d.clone(), 0u32..6).prop_map(|(mapper, handle)| Op::Unmap { mapper, handle }),
            (d.clone(), d.clone(), r.clone(), any::<bool>(), f).prop_map(
                |(caller, granter, gref, into_grant, own)| Op::Copy {
                    caller,
                    granter,
                    gref,
                    into_grant,
                    own
                }
            ),
            (d.clone(), r).prop_map(|(granter, gref)| Op::EndGrant { granter, gref }),
            d.prop_map(Op::Kill),
        ]
    }

    proptest! {
        /// Random grant, map, unmap, copy, end-grant and death sequences from
        /// three domains keep the frame table consistent (MM-2 with grants),
        /// the active counts equal to the mappings, and leak no frame.
        #[test]
        fn random_operations_keep_the_invariants(ops in proptest::collection::vec(op(), 1..120)) {
            let mut w = World::new();
            for op in ops {
                match op {
                    Op::Grant { granter, gref, to, frame, flags } => {
                        if !w.dead.contains(&granter) { w.grant(granter, gref, to, frame, flags); }
                    }
                    Op::Map { mapper, granter, gref, write, index } => {
                        if !w.dead.contains(&mapper) {
                            let l1 = 12 * mapper as Mfn;
                            let _ = w.run(|g, pt, m| g.map(m, pt, mapper, granter, gref, write, l1, index, index as u64 * 4096));
                        }
                    }
                    Op::Unmap { mapper, handle } => {
                        if !w.dead.contains(&mapper) {
                            let addr = w.grants.maptrack.get(&mapper).and_then(|t| t.get(handle as usize)).and_then(|m| m.map(|m| m.host_addr)).unwrap_or(0);
                            let _ = w.run(|g, pt, m| g.unmap(m, pt, mapper, handle, addr));
                        }
                    }
                    Op::Copy { caller, granter, gref, into_grant, own } => {
                        if !w.dead.contains(&caller) {
                            let grant_side = GnttabCopyPtr { ref_or_mfn: u64::from(gref), domid: granter, offset: 8 };
                            let own_side = GnttabCopyPtr { ref_or_mfn: own, domid: caller, offset: 16 };
                            let (source, dest, flags) = if into_grant { (own_side, grant_side, GNTCOPY_DEST_GREF) } else { (grant_side, own_side, GNTCOPY_SOURCE_GREF) };
                            let c = GnttabCopy { source, dest, len: 64, flags, status: 0, pad: 0 };
                            let _ = w.run(|g, pt, m| g.copy(m, pt, caller, &c));
                        }
                    }
                    Op::EndGrant { granter, gref } => {
                        // The kit's end-grant: only while not in use.
                        if !w.dead.contains(&granter) && w.flags(granter, gref) & (GTF_READING | GTF_WRITING) == 0 {
                            w.grant(granter, gref, 0, 0, 0);
                        }
                    }
                    Op::Kill(d) => if !w.dead.contains(&d) { w.kill(d) },
                }
                let checked = w.check();
                prop_assert!(checked.is_ok(), "{:?}", checked);
            }
            // Everyone dies: every frame comes back.
            for d in 1..=3 { if !w.dead.contains(&d) { w.kill(d); } }
            prop_assert_eq!(w.ft.free_count(), 36);
        }
    }
}
