//! The page-table manager (SPEC.md §7, MM-1b .. MM-7): [`AddressSpace`], and
//! the batch of `mmu_update` requests every change goes through.
//!
//! The guest reads its tables directly, through the physmap (a table in
//! frame `m` is at `virt_base + 4096 * pfn(m)`), and changes them only with
//! hypercalls, which validate every entry.
//!
//! # Batching
//! Updates are *queued* as [`MmuUpdate`]s and applied with one `mmu_update`
//! call when the queue reaches the batch limit ([`set_batch_limit`], default
//! [`DEFAULT_BATCH`]), and wherever correctness needs it: [`flush`] (public),
//! before reading a leaf entry back ([`AddressSpace::translate`]), before a TLB
//! flush, a pin, an unpin or a base-pointer switch. The hypervisor applies a
//! batch in order, so one batch may create a table and then fill it: the
//! install of the table in its parent (which validates it) comes first.
//! Walks see queued-but-unapplied upper-level entries through a small list of
//! pending installs, so a second `map` under the same new table finds it.
//!
//! # Creating a table
//! 1. allocate a frame and zero it through its (writable) physmap page;
//! 2. queue the physmap entry of the frame as read-only (a page table must
//!    have no writable mapping, MM-2 (a));
//! 3. queue the parent entry pointing at it; the hypervisor validates the
//!    frame as the next level down.
//!
//! # Freeing tables
//! Remove each subtree's root from its parent (or unpin the L4), apply, make
//! the frames' physmap pages writable again, apply, flush the TLB (a stale
//! read-only entry would fault the next write), free the frames.
//!
//! # Invariants
//! - Kernel address spaces never map or unmap physmap addresses
//!   ([`MmError::Protected`]): that memory is what Rust code runs on.
//! - Every frame in [`AddressSpace`]'s table list is a page table this space
//!   created; its physmap page is read-only until the space frees it.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::layout::{is_guest_address, is_hv_l4_slot};
use hypercall_abi::mm::{
    pte, MmuUpdate, MmuextOp, MMUEXT_INVLPG_LOCAL, MMUEXT_NEW_BASEPTR, MMUEXT_NEW_USER_BASEPTR,
    MMUEXT_PIN_L4_TABLE, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_UNPIN_TABLE, MMU_BATCH_MAX,
    MMU_NORMAL_PT_UPDATE,
};
use hypercall_abi::PAGE_SIZE;
use spin::Mutex;

use super::frames::Frame;
use super::{layout, mfn_to_pfn, mmu, physmap, MmError};

/// Default number of queued updates that triggers an `mmu_update` call.
pub const DEFAULT_BATCH: usize = 64;
/// Entries per table.
pub const ENTRIES: usize = 512;
/// Flags of an entry pointing at a lower table (the leaf decides access).
pub const TABLE_FLAGS: u64 = pte::P | pte::RW | pte::US;
/// Flags of a read-only leaf; writable ones add `RW`.
pub const LEAF_FLAGS: u64 = pte::P | pte::US;

/// Index of `va` in its level-`level` table (1 = L1 .. 4 = L4).
pub const fn table_index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// The canonical virtual address of L4 slot `l4`, L3 `l3`, L2 `l2`, L1 `l1`.
pub const fn va_of(l4: usize, l3: usize, l2: usize, l1: usize) -> u64 {
    let va = ((l4 as u64) << 39) | ((l3 as u64) << 30) | ((l2 as u64) << 21) | ((l1 as u64) << 12);
    if l4 >= 256 {
        va | 0xffff_0000_0000_0000
    } else {
        va
    }
}

/// Machine address of entry `index` of the table in frame `mfn`.
pub const fn entry_maddr(mfn: u64, index: usize) -> u64 {
    (mfn << 12) | ((index as u64) * 8)
}

/// The frame an entry points at.
pub const fn entry_mfn(entry: u64) -> u64 {
    (entry & pte::ADDR_MASK) >> 12
}

/// Whether an entry is present.
pub const fn present(entry: u64) -> bool {
    entry & pte::P != 0
}

/// Queued updates and counters.
struct Batch {
    reqs: Vec<MmuUpdate>,
    limit: usize,
    /// Queued upper-level entries (machine address, value), for walks.
    pending: Vec<(u64, u64)>,
}

static BATCH: Mutex<Batch> = Mutex::new(Batch {
    reqs: Vec::new(),
    limit: DEFAULT_BATCH,
    pending: Vec::new(),
});
/// Requests applied by `mmu_update` calls of the kit.
static APPLIED: AtomicU64 = AtomicU64::new(0);
/// `mmu_update` calls the kit made.
static CALLS: AtomicU64 = AtomicU64::new(0);
/// The current kernel base pointer (0: the boot L4).
static KERNEL_BASE: AtomicU64 = AtomicU64::new(0);
/// The current user base pointer (0: none).
static USER_BASE: AtomicU64 = AtomicU64::new(0);

impl Batch {
    /// Queues one page-table entry write; applies the batch when full.
    fn push(&mut self, ptr: u64, val: u64) -> Result<(), MmError> {
        if self.reqs.capacity() == 0 {
            self.reqs.reserve_exact(self.limit);
        }
        self.reqs.push(MmuUpdate {
            ptr: ptr | MMU_NORMAL_PT_UPDATE,
            val,
        });
        if self.reqs.len() >= self.limit {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Queues an upper-level entry, remembered for walks until applied.
    fn push_upper(&mut self, ptr: u64, val: u64) -> Result<(), MmError> {
        self.push(ptr, val)?;
        if !self.reqs.is_empty() {
            self.pending.push((ptr, val));
        }
        Ok(())
    }

    /// Applies every queued update with one `mmu_update` call.
    fn flush(&mut self) -> Result<(), MmError> {
        if self.reqs.is_empty() {
            return Ok(());
        }
        let result = mmu::submit(&self.reqs);
        CALLS.fetch_add(1, Ordering::Relaxed);
        let outcome = match result {
            Ok(()) => {
                APPLIED.fetch_add(self.reqs.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                APPLIED.fetch_add(err.done.min(self.reqs.len()) as u64, Ordering::Relaxed);
                let failed = self.reqs.get(err.done).copied().unwrap_or_default();
                Err(MmError::Update {
                    ptr: failed.ptr,
                    val: failed.val,
                    errno: err.errno,
                })
            }
        };
        self.reqs.clear();
        self.pending.clear();
        outcome
    }

    /// The entry at machine address `maddr`, as it will be once the queue is
    /// applied (for upper levels) or as it is now.
    fn read(&self, maddr: u64) -> Result<u64, MmError> {
        if let Some(&(_, val)) = self.pending.iter().rev().find(|&&(p, _)| p == maddr) {
            return Ok(val);
        }
        read_machine(maddr)
    }
}

/// Reads the u64 at machine address `maddr` in one of this domain's frames.
fn read_machine(maddr: u64) -> Result<u64, MmError> {
    let pfn = mfn_to_pfn(maddr >> 12).ok_or(MmError::NotMapped(maddr))?;
    Ok(physmap::read_va(layout().pfn_va(pfn) + (maddr & 0xff8)))
}

/// Runs one `mmuext_op` command.
fn ext1(cmd: u32, arg: u64) -> Result<(), MmError> {
    let op = MmuextOp {
        cmd,
        pad: 0,
        arg1: arg,
        arg2: 0,
    };
    mmu::ext(&[op]).map_err(|err| MmError::Ext {
        cmd,
        arg,
        errno: err.errno,
    })
}

/// Applies every queued page-table update now.
pub fn flush() -> Result<(), MmError> {
    BATCH.lock().flush()
}

/// Sets how many queued updates trigger an `mmu_update` call (1 ..= 4096);
/// applies what is queued first.
pub fn set_batch_limit(limit: usize) -> Result<(), MmError> {
    let mut batch = BATCH.lock();
    batch.flush()?;
    batch.limit = limit.clamp(1, MMU_BATCH_MAX as usize);
    batch.reqs = Vec::with_capacity(batch.limit);
    Ok(())
}

/// Counters of the kit's page-table updates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmStats {
    /// Requests applied.
    pub updates: u64,
    /// `mmu_update` calls made.
    pub calls: u64,
}

/// The counters so far.
pub fn stats() -> MmStats {
    MmStats {
        updates: APPLIED.load(Ordering::Relaxed),
        calls: CALLS.load(Ordering::Relaxed),
    }
}

/// Applies queued updates, then flushes this vCPU's TLB.
pub fn tlb_flush_local() -> Result<(), MmError> {
    flush()?;
    ext1(MMUEXT_TLB_FLUSH_LOCAL, 0)
}

/// Applies queued updates, then invalidates `va` in this vCPU's TLB.
pub fn invlpg(va: u64) -> Result<(), MmError> {
    flush()?;
    ext1(MMUEXT_INVLPG_LOCAL, va)
}

/// Machine address of the boot L1 entry that maps `pfn` in the physmap.
fn physmap_entry(batch: &Batch, pfn: u64) -> Result<u64, MmError> {
    let va = layout().pfn_va(pfn);
    let mut table = layout().boot_l4_mfn;
    for level in [4, 3, 2] {
        let entry = batch.read(entry_maddr(table, table_index(va, level)))?;
        if !present(entry) {
            return Err(MmError::NotMapped(va));
        }
        table = entry_mfn(entry);
    }
    Ok(entry_maddr(table, table_index(va, 1)))
}

/// Queues the physmap entry of `pfn` as read-only (or writable again).
fn queue_physmap(batch: &mut Batch, pfn: u64, writable: bool) -> Result<(), MmError> {
    let maddr = physmap_entry(batch, pfn)?;
    let rw = if writable { pte::RW } else { 0 };
    batch.push(maddr, (layout().mfn(pfn) << 12) | LEAF_FLAGS | rw)
}

/// A frame whose physmap page is read-only, so that it can become a page
/// table (for guests that build tables by hand, e.g. to pin them).
#[derive(Debug)]
pub struct ReadOnlyFrame {
    pfn: u64,
}

impl Frame {
    /// Remaps the frame's physmap page read-only (applying queued updates
    /// first). On failure the frame comes back unchanged.
    pub fn into_readonly(self) -> Result<ReadOnlyFrame, (Frame, MmError)> {
        let mut batch = BATCH.lock();
        let result = batch
            .flush()
            .and_then(|()| queue_physmap(&mut batch, self.pfn(), false))
            .and_then(|()| batch.flush());
        match result {
            Ok(()) => Ok(ReadOnlyFrame {
                pfn: self.into_raw(),
            }),
            Err(err) => Err((self, err)),
        }
    }
}

impl ReadOnlyFrame {
    /// The frame's pfn.
    pub fn pfn(&self) -> u64 {
        self.pfn
    }

    /// The frame's mfn.
    pub fn mfn(&self) -> u64 {
        layout().mfn(self.pfn)
    }

    /// Reads word `index` (0..512).
    pub fn read_u64(&self, index: usize) -> u64 {
        assert!(index < ENTRIES, "frame word {index} out of range");
        physmap::read_va(layout().pfn_va(self.pfn) + index as u64 * 8)
    }

    /// Remaps the physmap page writable (fails, e.g. `EBUSY`, while the frame
    /// is still a page table) and invalidates the stale TLB entry.
    pub fn into_writable(self) -> Result<Frame, (ReadOnlyFrame, MmError)> {
        let result = {
            let mut batch = BATCH.lock();
            batch
                .flush()
                .and_then(|()| queue_physmap(&mut batch, self.pfn, true))
                .and_then(|()| batch.flush())
        };
        match result.and_then(|()| ext1(MMUEXT_INVLPG_LOCAL, layout().pfn_va(self.pfn))) {
            Ok(()) => Ok(Frame::from_raw(self.pfn)),
            Err(err) => Err((self, err)),
        }
    }
}

/// Which mode runs on an address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceKind {
    /// Guest kernel: maps the physmap; a `NEW_BASEPTR` target.
    Kernel,
    /// Guest user mode: maps only what the kernel puts in it; a
    /// `NEW_USER_BASEPTR` target (MM-7).
    User,
}

/// A table this space created.
#[derive(Clone, Copy, Debug)]
struct Table {
    pfn: u64,
    mfn: u64,
    /// Machine address of the entry that points at it.
    parent: u64,
}

/// What a virtual address maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The machine frame.
    pub mfn: u64,
    /// Its pfn, if it is one of this domain's frames in the P2M.
    pub pfn: Option<u64>,
    /// The L1 entry.
    pub entry: u64,
}

impl Translation {
    /// Whether the mapping is writable.
    pub fn writable(&self) -> bool {
        self.entry & pte::RW != 0
    }
}

/// One address space: an L4 and the tables below it that this handle created.
#[derive(Debug)]
pub struct AddressSpace {
    kind: SpaceKind,
    l4_mfn: u64,
    /// The L4's pfn when this handle owns (and pinned) it.
    own_l4: Option<u64>,
    tables: Vec<Table>,
}

impl AddressSpace {
    /// The start-of-day kernel address space (L4 at `start_info.pt_base`).
    /// The handle does not own the L4; [`AddressSpace::destroy`] only frees
    /// the tables this handle created.
    pub fn kernel() -> AddressSpace {
        AddressSpace {
            kind: SpaceKind::Kernel,
            l4_mfn: layout().boot_l4_mfn,
            own_l4: None,
            tables: Vec::new(),
        }
    }

    /// A new kernel address space whose L4 copies every guest slot of the
    /// current kernel L4 (sharing the lower tables), pinned.
    pub fn new_kernel() -> Result<AddressSpace, MmError> {
        let mut l4 = Frame::alloc_zeroed()?;
        let current = current_kernel_base();
        {
            let batch = BATCH.lock();
            for slot in (0..ENTRIES).filter(|&s| !is_hv_l4_slot(s)) {
                let entry = batch.read(entry_maddr(current, slot))?;
                if present(entry) {
                    l4.write_u64(slot, entry & (pte::ADDR_MASK | pte::UPPER_ALLOWED));
                }
            }
        }
        Self::from_l4(SpaceKind::Kernel, l4)
    }

    /// A new, empty user address space (MM-7), pinned. The hypervisor fills
    /// its own slots; nothing of the kernel is mapped.
    pub fn new_user() -> Result<AddressSpace, MmError> {
        Self::from_l4(SpaceKind::User, Frame::alloc_zeroed()?)
    }

    /// Makes `l4` read-only, pins it as an L4 and wraps it.
    fn from_l4(kind: SpaceKind, l4: Frame) -> Result<AddressSpace, MmError> {
        let mfn = l4.mfn();
        let l4 = l4.into_readonly().map_err(|(_, err)| err)?;
        ext1(MMUEXT_PIN_L4_TABLE, mfn)?;
        Ok(AddressSpace {
            kind,
            l4_mfn: mfn,
            own_l4: Some(l4.pfn),
            tables: Vec::new(),
        })
    }

    /// Which mode runs on this space.
    pub fn kind(&self) -> SpaceKind {
        self.kind
    }

    /// The L4's mfn.
    pub fn l4_mfn(&self) -> u64 {
        self.l4_mfn
    }

    /// Tables this handle created (not counting its L4).
    pub fn table_count(&self) -> usize {
        self.tables.len()
    }

    /// Checks that `va` may be (un)mapped here.
    fn check_va(&self, va: u64) -> Result<(), MmError> {
        if !va.is_multiple_of(PAGE_SIZE) || !is_guest_address(va) {
            return Err(MmError::BadAddress(va));
        }
        if self.kind == SpaceKind::Kernel && layout().in_physmap(va) {
            return Err(MmError::Protected(va));
        }
        Ok(())
    }

    /// Walks to the L1 entry of `va`: its machine address, creating missing
    /// tables if `create`, else `None` where one is missing.
    fn walk(&mut self, batch: &mut Batch, va: u64, create: bool) -> Result<Option<u64>, MmError> {
        let mut table = self.l4_mfn;
        for level in [4, 3, 2] {
            let maddr = entry_maddr(table, table_index(va, level));
            let entry = batch.read(maddr)?;
            table = if present(entry) {
                entry_mfn(entry)
            } else if create {
                self.new_table(batch, maddr)?
            } else {
                return Ok(None);
            };
        }
        Ok(Some(entry_maddr(table, table_index(va, 1))))
    }

    /// Creates a table and queues its install at `parent`; returns its mfn.
    fn new_table(&mut self, batch: &mut Batch, parent: u64) -> Result<u64, MmError> {
        let frame = Frame::alloc_zeroed()?;
        let (pfn, mfn) = (frame.pfn(), frame.mfn());
        let ro = physmap_entry(batch, pfn)?;
        self.tables.push(Table {
            pfn: frame.into_raw(),
            mfn,
            parent,
        });
        batch.push(ro, (mfn << 12) | LEAF_FLAGS)?;
        batch.push_upper(parent, (mfn << 12) | TABLE_FLAGS)?;
        Ok(mfn)
    }

    /// Maps the page at `va` to `pfn` (queued), creating tables on the way.
    pub fn map(&mut self, va: u64, pfn: u64, writable: bool) -> Result<(), MmError> {
        self.check_va(va)?;
        if pfn >= layout().nr_pages {
            return Err(MmError::BadAddress(pfn));
        }
        let mfn = layout().mfn(pfn);
        let rw = if writable { pte::RW } else { 0 };
        let mut batch = BATCH.lock();
        match self.walk(&mut batch, va, true)? {
            Some(l1e) => batch.push(l1e, (mfn << 12) | LEAF_FLAGS | rw),
            None => Err(MmError::NotMapped(va)),
        }
    }

    /// Unmaps the page at `va` (queued). The TLB may keep the old mapping
    /// until [`tlb_flush_local`] or [`invlpg`].
    pub fn unmap(&mut self, va: u64) -> Result<(), MmError> {
        self.check_va(va)?;
        let mut batch = BATCH.lock();
        match self.walk(&mut batch, va, false)? {
            Some(l1e) => batch.push(l1e, 0),
            None => Err(MmError::NotMapped(va)),
        }
    }

    /// Machine address of the L1 entry of `va`, creating the tables on the
    /// way and applying the queue (for callers that write entries with raw
    /// hypercalls).
    pub fn l1_entry(&mut self, va: u64) -> Result<u64, MmError> {
        if !va.is_multiple_of(PAGE_SIZE) || !is_guest_address(va) {
            return Err(MmError::BadAddress(va));
        }
        let mut batch = BATCH.lock();
        let l1e = self.walk(&mut batch, va, true)?;
        batch.flush()?;
        l1e.ok_or(MmError::NotMapped(va))
    }

    /// What `va` maps to now (applies the queue first); `None` if unmapped.
    pub fn translate(&self, va: u64) -> Result<Option<Translation>, MmError> {
        if !is_guest_address(va) {
            return Err(MmError::BadAddress(va));
        }
        let mut batch = BATCH.lock();
        batch.flush()?;
        let mut table = self.l4_mfn;
        for level in [4, 3, 2] {
            let entry = batch.read(entry_maddr(table, table_index(va, level)))?;
            if !present(entry) {
                return Ok(None);
            }
            table = entry_mfn(entry);
        }
        let entry = batch.read(entry_maddr(table, table_index(va, 1)))?;
        Ok(present(entry).then(|| Translation {
            mfn: entry_mfn(entry),
            pfn: mfn_to_pfn(entry_mfn(entry)),
            entry,
        }))
    }

    /// Every present leaf in the guest slots: `(va, L1 entry)`, applying the
    /// queue first.
    pub fn mappings(&self) -> Result<Vec<(u64, u64)>, MmError> {
        flush()?;
        let mut out = Vec::new();
        for l4 in (0..ENTRIES).filter(|&s| !is_hv_l4_slot(s)) {
            let e4 = read_machine(entry_maddr(self.l4_mfn, l4))?;
            if !present(e4) {
                continue;
            }
            for l3 in 0..ENTRIES {
                let e3 = read_machine(entry_maddr(entry_mfn(e4), l3))?;
                if !present(e3) {
                    continue;
                }
                for l2 in 0..ENTRIES {
                    let e2 = read_machine(entry_maddr(entry_mfn(e3), l2))?;
                    if !present(e2) {
                        continue;
                    }
                    for l1 in 0..ENTRIES {
                        let e1 = read_machine(entry_maddr(entry_mfn(e2), l1))?;
                        if present(e1) {
                            out.push((va_of(l4, l3, l2, l1), e1));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Makes this the vCPU's kernel address space (`NEW_BASEPTR`), applying
    /// the queue first.
    pub fn switch_to(&self) -> Result<(), MmError> {
        if self.kind != SpaceKind::Kernel {
            return Err(MmError::WrongKind);
        }
        flush()?;
        ext1(MMUEXT_NEW_BASEPTR, self.l4_mfn)?;
        KERNEL_BASE.store(self.l4_mfn, Ordering::Relaxed);
        Ok(())
    }

    /// Makes this the vCPU's user address space (`NEW_USER_BASEPTR`),
    /// applying the queue first.
    pub fn set_user(&self) -> Result<(), MmError> {
        if self.kind != SpaceKind::User {
            return Err(MmError::WrongKind);
        }
        flush()?;
        ext1(MMUEXT_NEW_USER_BASEPTR, self.l4_mfn)?;
        USER_BASE.store(self.l4_mfn, Ordering::Relaxed);
        Ok(())
    }

    /// Frees every table this handle created and, if it owns its L4, unpins
    /// and frees that too. Fails with [`MmError::InUse`] while the L4 is a
    /// base pointer. Mapped leaf frames are not freed (their owners do that).
    pub fn destroy(mut self) -> Result<(), MmError> {
        if self.own_l4.is_some()
            && (self.l4_mfn == current_kernel_base()
                || self.l4_mfn == USER_BASE.load(Ordering::Relaxed))
        {
            return Err(MmError::InUse);
        }
        let ours = |mfn: u64, tables: &[Table]| tables.iter().any(|t| t.mfn == mfn);
        let mut batch = BATCH.lock();
        batch.flush()?;
        // Cut each subtree whose parent is not going away with this space.
        for table in &self.tables {
            let parent = table.parent >> 12;
            let parent_goes =
                ours(parent, &self.tables) || (self.own_l4.is_some() && parent == self.l4_mfn);
            if !parent_goes {
                batch.push(table.parent, 0)?;
            }
        }
        batch.flush()?;
        if self.own_l4.is_some() {
            ext1(MMUEXT_UNPIN_TABLE, self.l4_mfn)?;
        }
        let frames: Vec<u64> = self
            .tables
            .iter()
            .map(|t| t.pfn)
            .chain(self.own_l4)
            .collect();
        for &pfn in &frames {
            queue_physmap(&mut batch, pfn, true)?;
        }
        batch.flush()?;
        drop(batch);
        ext1(MMUEXT_TLB_FLUSH_LOCAL, 0)?;
        self.tables.clear();
        self.own_l4 = None;
        for pfn in frames {
            drop(Frame::from_raw(pfn));
        }
        Ok(())
    }
}

/// The current kernel base pointer's mfn.
pub fn current_kernel_base() -> u64 {
    match KERNEL_BASE.load(Ordering::Relaxed) {
        0 => layout().boot_l4_mfn,
        mfn => mfn,
    }
}

/// Clears the vCPU's user base pointer (`NEW_USER_BASEPTR 0`).
pub fn clear_user() -> Result<(), MmError> {
    flush()?;
    ext1(MMUEXT_NEW_USER_BASEPTR, 0)?;
    USER_BASE.store(0, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_and_addresses() {
        let va = 0x0000_1000_0040_3000u64;
        assert_eq!(table_index(va, 4), 32);
        assert_eq!(table_index(va, 3), 0);
        assert_eq!(table_index(va, 2), 2);
        assert_eq!(table_index(va, 1), 3);
        assert_eq!(va_of(32, 0, 2, 3), va);
        assert_eq!(va_of(511, 511, 511, 511), 0xffff_ffff_ffff_f000);
        assert_eq!(va_of(256, 0, 0, 0), 0xffff_8000_0000_0000);
        assert_eq!(entry_maddr(0x1234, 511), 0x1234ff8);
        assert_eq!(entry_mfn(0x8000_0000_1234_5067), 0x12345);
        assert!(present(1) && !present(2));
    }
}
