//! The fuzzer's world: the frames it set aside, what every frame it owns is
//! for, the addresses it aims at, and the rules that keep its destructive
//! calls away from what it runs on.
//!
//! # Layout built by [`Env::setup`]
//! - a *scratch tree*: L4 slot [`WINDOW_SLOT`] → `F_L3` → `F_L2` → `F_L1`,
//!   each pinned, whose L1 maps the scratch frames at [`WINDOW`]. Every entry
//!   of the tree except the three *hook* entries that connect it may be
//!   rewritten with anything that keeps the window harmless (see
//!   [`Env::safe_entry`]);
//! - *test tables*: zeroed read-only frames that pin/unpin/base-pointer calls
//!   and the tree's entries may use as tables of any level;
//! - *scratch frames*: the only own frames a hypercall may write whole
//!   (`CLEAR_PAGE`, `COPY_PAGE`, grant copies) or map writable in the window;
//! - *grant frames*: the only frames that may become the grant table; their
//!   entries never let anyone write a frame that is not a scratch frame;
//! - the *edge page*: a frame mapped read-only at [`EDGE_VA`] with nothing
//!   mapped after it, for arrays that run off the end of readable memory.
//!
//! Everything else the domain owns is *precious* (code, data, stacks, heap,
//! start-of-day tables, start_info, P2M, shared_info): calls may only touch
//! it in ways SPEC says must fail.
//!
//! # Invariants
//! - The kernel base pointer is always the start-of-day L4.
//! - Every writable mapping in the window is of a scratch frame; every entry
//!   of the tree's tables and the test tables is [`Slot::Strict`]-safe.

use alloc::vec::Vec;

use hypercall_abi::grant::{GrantEntry, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING};
use hypercall_abi::layout::{is_guest_address, is_hv_l4_slot};
use hypercall_abi::mm::{
    pte, MmuUpdate, MmuextOp, MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_PIN_L3_TABLE,
};
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::PAGE_SIZE;
use pv_guest_kit::mm::pagetable::{entry_maddr, entry_mfn, table_index, va_of};
use pv_guest_kit::mm::{self, physmap, AddressSpace, Frame};

use crate::rng::Rng;

/// L4 slot of the scratch tree.
pub const WINDOW_SLOT: usize = 200;
/// The window: the 2 MiB the scratch L1 maps.
pub const WINDOW: u64 = va_of(WINDOW_SLOT, 0, 0, 0);
/// L4 slot of the edge page.
pub const EDGE_SLOT: usize = 150;
/// The edge page (read-only; the next page is never mapped).
pub const EDGE_VA: u64 = va_of(EDGE_SLOT, 0, 0, 0);
/// Scratch frames (the first [`NR_SCRATCH`] window pages map them).
pub const NR_SCRATCH: usize = 16;
/// Test tables.
pub const NR_TEST: usize = 4;
/// Grant-table frames.
pub const NR_GRANT: usize = 2;
/// Bits 52..62 of an entry: reserved in every level (MM-1b).
pub const RESERVED_BITS: u64 = 0x7ff0_0000_0000_0000;
/// Flags of the tree's table entries.
const TABLE: u64 = pte::P | pte::RW | pte::US;

/// What one of the domain's frames is to the fuzzer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Own {
    /// Something the fuzzer or the kit runs on; `rw`: mapped writable in
    /// the physmap (so it can never become a page table).
    Precious {
        rw: bool,
    },
    /// A scratch frame.
    Scratch,
    /// A grant-table frame.
    Grant,
    /// A test table.
    Test,
    /// The tree's L1, L2, L3.
    TreeL1,
    TreeL2,
    TreeL3,
    /// The start-of-day L4 (the kernel base pointer).
    BootL4,
    /// Another start-of-day table (always validated: reachable from the L4).
    BootTable,
    /// A table the kit built for the edge page.
    EdgeTable,
    /// The edge page.
    Edge,
}

/// Which rule a page-table entry write must follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The hypervisor must refuse any value (not a table, not ours, a
    /// hypervisor L4 slot, a malformed request): anything goes.
    Free,
    /// An entry of the scratch L1: may map scratch frames writable and any
    /// own frame read-only.
    WindowL1,
    /// An entry of the tree's other tables or of a test table (whose level
    /// the fuzzer does not track): may point at scratch frames and the
    /// tree's and test tables only.
    Strict,
    /// A hook entry of the tree: only its current value, or refused values.
    Hook(u64),
    /// An entry the fuzzer runs on: only values that must be refused.
    Protected,
}

/// Everything the generators need to know about the domain.
#[derive(Debug)]
pub struct Env {
    pub domid: u32,
    /// `(mfn, physmap va, class)` of every own frame, sorted by mfn.
    own: Vec<(u64, u64, Own)>,
    pub p2m: &'static [u64],
    pub boot_l4: u64,
    pub boot_l4_va: u64,
    pub tree: [u64; 3],
    pub scratch: Vec<u64>,
    pub test: Vec<u64>,
    pub grant: Vec<u64>,
    pub edge_mfn: u64,
    /// Physmap address of the edge page (writable; [`EDGE_VA`] is read-only).
    pub edge_wva: u64,
    pub boot_tables: Vec<u64>,
    pub foreign: Vec<u64>,
    pub nr_m2p: u64,
    pub virt_base: u64,
    pub nr_pages: u64,
    /// Guest addresses that are verified unmapped and stay so.
    pub unmapped: Vec<u64>,
    /// The kit's trap entry stubs by vector.
    pub kit_traps: [u64; 32],
    /// Whether hypercall numbers without a stub can be issued.
    pub raw_syscall: bool,
    /// The domain's capabilities (start_info).
    pub capabilities: u64,
    /// ABI version as start_info states it.
    pub abi: (u32, u32),
    /// Every entry of the tables the fuzzer runs on (start-of-day and edge
    /// tables, the hook entries), as they were after setup.
    snapshot: Vec<(u64, u64)>,
    /// M2P entries of frames no guest owns, as they were after setup.
    m2p_snapshot: Vec<(u64, u64)>,
    /// Checksum of `snapshot` (the fuzzer's own heap memory).
    snapshot_sum: u64,
}

/// A static area the fuzzer never writes after setup, checked for changes.
#[repr(C, align(4096))]
struct Canary(core::cell::UnsafeCell<[u64; CANARY_WORDS]>);

/// Words in the canary area (16 KiB).
const CANARY_WORDS: usize = 2048;

// SAFETY: one vCPU; written once at setup, then only read, through raw
// pointers.
unsafe impl Sync for Canary {}

static CANARY: Canary = Canary(core::cell::UnsafeCell::new([0; CANARY_WORDS]));

/// The canary's word `i`.
const fn canary_word(i: usize) -> u64 {
    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xc0de_c0de
}

/// A checksum of `(maddr, value)` pairs.
fn checksum(pairs: &[(u64, u64)]) -> u64 {
    pairs.iter().fold(0u64, |acc, &(a, b)| {
        acc.rotate_left(7).wrapping_add(a).rotate_left(11) ^ b
    })
}

/// Bits the CPU sets in entries (accessed, dirty): ignored by the checks.
const AD_BITS: u64 = pte::A | pte::D;

/// Unwraps a setup step or panics naming it.
fn must<T, E: core::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("hcall-fuzz: setup: {what}: {e}"),
    }
}

impl Env {
    /// Builds the scratch tree, the edge page and the frame classes.
    pub fn setup(si: &'static StartInfo, rng: &mut Rng) -> Env {
        let layout = mm::layout();
        let boot_l4 = layout.boot_l4_mfn;
        let frames = |n: usize, what: &str| -> Vec<Frame> {
            (0..n).map(|_| must(Frame::alloc_zeroed(), what)).collect()
        };
        let scratch = frames(NR_SCRATCH, "scratch frames");
        let grant = frames(NR_GRANT, "grant frames");
        let mut tree = frames(3, "tree tables");
        let test = frames(NR_TEST, "test tables");
        let edge = must(Frame::alloc_zeroed(), "edge page");
        for (i, s) in scratch.iter().enumerate() {
            tree[0].write_u64(i, (s.mfn() << 12) | TABLE);
            // A read-only alias of a few of them too.
            if i < 4 {
                tree[0].write_u64(NR_SCRATCH + i, (s.mfn() << 12) | pte::P | pte::US);
            }
        }
        let (l1, l2, l3) = (tree[0].mfn(), tree[1].mfn(), tree[2].mfn());
        tree[1].write_u64(0, (l1 << 12) | TABLE);
        tree[2].write_u64(0, (l2 << 12) | TABLE);
        let ro = |f: Frame| match f.into_readonly() {
            Ok(t) => t.mfn(),
            Err((_, e)) => panic!("hcall-fuzz: setup: read-only table: {e}"),
        };
        // Read-only now; the tree keeps its mfns in `[l1, l2, l3]`.
        for table in tree {
            ro(table);
        }
        let test_mfns: Vec<u64> = test.into_iter().map(ro).collect();
        let pin = |cmd, mfn| MmuextOp {
            cmd,
            pad: 0,
            arg1: mfn,
            arg2: 0,
        };
        let pins = [
            pin(MMUEXT_PIN_L1_TABLE, l1),
            pin(MMUEXT_PIN_L2_TABLE, l2),
            pin(MMUEXT_PIN_L3_TABLE, l3),
        ];
        // SAFETY: pinning tables the fuzzer built changes no mapping.
        must(unsafe { pv_guest_kit::hypercall::mmuext_op(&pins) }, "pin");
        let hook = MmuUpdate {
            ptr: entry_maddr(boot_l4, WINDOW_SLOT),
            val: (l3 << 12) | TABLE,
        };
        // SAFETY: L4 slot WINDOW_SLOT is unused; the tree maps scratch
        // frames only.
        must(
            unsafe { pv_guest_kit::hypercall::mmu_update(&[hook]) },
            "hook",
        );

        let mut kernel = AddressSpace::kernel();
        must(kernel.map(EDGE_VA, edge.pfn(), false), "map the edge page");
        must(mm::flush(), "flush");

        let mut env = Env {
            domid: si.domid,
            own: Vec::new(),
            p2m: layout.p2m,
            boot_l4,
            boot_l4_va: si.pt_base,
            tree: [l1, l2, l3],
            scratch: scratch.iter().map(Frame::mfn).collect(),
            test: test_mfns,
            grant: grant.iter().map(Frame::mfn).collect(),
            edge_mfn: edge.mfn(),
            edge_wva: edge.va(),
            boot_tables: Vec::new(),
            foreign: Vec::new(),
            nr_m2p: si.nr_m2p_entries,
            virt_base: si.virt_base,
            nr_pages: si.nr_pages,
            unmapped: Vec::new(),
            kit_traps: crate::sys::kit_trap_entries(),
            raw_syscall: crate::sys::raw_syscall_supported(),
            capabilities: si.capabilities,
            abi: (si.abi_major, si.abi_minor),
            snapshot: Vec::new(),
            m2p_snapshot: Vec::new(),
            snapshot_sum: 0,
        };
        // The frames stay the fuzzer's for good.
        core::mem::forget(scratch);
        core::mem::forget(grant);
        core::mem::forget(edge);
        env.classify(si);
        env.find_foreign(rng);
        env.find_unmapped();
        env.fill_grant_frames(rng);
        env.take_snapshot();
        env
    }

    /// Records what [`Env::check`] compares against.
    fn take_snapshot(&mut self) {
        let mut tables: Vec<u64> = self.boot_tables.clone();
        tables.extend(
            self.own
                .iter()
                .filter(|&&(_, _, c)| c == Own::EdgeTable)
                .map(|&(m, _, _)| m),
        );
        let mut snapshot = Vec::with_capacity(tables.len() * 512 + 3);
        for t in tables {
            for i in 0..512 {
                let maddr = entry_maddr(t, i);
                snapshot.push((maddr, self.read_entry(maddr).unwrap_or(0)));
            }
        }
        for maddr in [entry_maddr(self.tree[1], 0), entry_maddr(self.tree[2], 0)] {
            snapshot.push((maddr, self.read_entry(maddr).unwrap_or(0)));
        }
        self.snapshot_sum = checksum(&snapshot);
        self.snapshot = snapshot;
        for i in 0..CANARY_WORDS {
            // SAFETY: inside the canary area, which only raw accesses reach.
            unsafe {
                (CANARY.0.get() as *mut u64)
                    .add(i)
                    .write_volatile(canary_word(i))
            };
        }
        self.m2p_snapshot = [0u64, 0x100, 0x101, 0x1ff]
            .iter()
            .filter_map(|&m| mm::m2p(m).map(|v| (m, v)))
            .filter(|&(m, _)| self.own(m).is_none())
            .collect();
    }

    /// Checks what the hypervisor must never allow, from the guest's side:
    /// the tables the fuzzer runs on only changed in accessed/dirty bits
    /// (every write aimed at them had to be refused); the scratch L1 maps
    /// no always-validated table and no frame outside the scratch frames
    /// writable (MM-2 (a), and the fuzzer's own rule); M2P entries of frames
    /// no guest owns are unchanged (MM-3). Prints each violation (at most
    /// `budget`) and returns how many there were.
    pub fn check(&self, mut budget: u32) -> u64 {
        let mut bad = 0u64;
        let mut report = |what: core::fmt::Arguments<'_>| {
            bad += 1;
            if budget > 0 {
                budget -= 1;
                pv_guest_kit::println!("hcall-fuzz: ERROR: {what}");
            }
        };
        for i in 0..CANARY_WORDS {
            // SAFETY: as in `take_snapshot`.
            let now = unsafe { (CANARY.0.get() as *const u64).add(i).read_volatile() };
            if now != canary_word(i) {
                report(format_args!(
                    "the fuzzer's static canary at {:#x} changed to {now:#x}",
                    CANARY.0.get() as u64 + i as u64 * 8
                ));
            }
        }
        if checksum(&self.snapshot) != self.snapshot_sum {
            report(format_args!(
                "the fuzzer's own heap changed (snapshot at {:#x})",
                self.snapshot.as_ptr() as u64
            ));
            return bad;
        }
        for &(maddr, old) in &self.snapshot {
            let now = self.read_entry(maddr).unwrap_or(0);
            if (now ^ old) & !AD_BITS != 0 {
                report(format_args!(
                    "protected entry at maddr {maddr:#x} ({:?}) changed from {old:#x} to {now:#x}",
                    self.own(maddr >> 12)
                ));
            }
        }
        for i in 0..512 {
            let e = self.read_entry(entry_maddr(self.tree[0], i)).unwrap_or(0);
            if e & (pte::P | pte::RW) != pte::P | pte::RW {
                continue;
            }
            match self.own(entry_mfn(e)) {
                None | Some(Own::Scratch) => {}
                Some(class) => report(format_args!(
                    "the scratch L1 maps {class:?} frame {:#x} writable (entry {i}: {e:#x})",
                    entry_mfn(e)
                )),
            }
        }
        for &(mfn, old) in &self.m2p_snapshot {
            let now = mm::m2p(mfn).unwrap_or(u64::MAX);
            if now != old {
                report(format_args!(
                    "M2P[{mfn:#x}] changed from {old:#x} to {now:#x}"
                ));
            }
        }
        bad
    }

    /// Records the class of every own frame.
    fn classify(&mut self, si: &StartInfo) {
        let layout = mm::layout();
        // First every frame as precious (the physmap decides `rw`) ...
        let mut own: Vec<(u64, u64, Own)> = Vec::with_capacity(self.p2m.len() + 1);
        for (pfn, &mfn) in (0u64..).zip(self.p2m.iter()) {
            own.push((mfn, layout.pfn_va(pfn), Own::Precious { rw: false }));
        }
        own.push((
            si.shared_info_mfn,
            si.shared_info,
            Own::Precious { rw: true },
        ));
        own.sort_unstable_by_key(|&(mfn, _, _)| mfn);
        self.own = own;
        let writable: Vec<bool> = self
            .own
            .iter()
            .map(|&(_, va, _)| {
                self.walk(va)
                    .and_then(|e| self.read_entry(e))
                    .is_some_and(|e| e & pte::RW != 0)
            })
            .collect();
        for (entry, rw) in self.own.iter_mut().zip(writable) {
            entry.2 = Own::Precious { rw };
        }
        // ... then the special ones.
        for pfn in layout.pt_first_pfn..layout.pt_first_pfn + layout.nr_pt_frames {
            let mfn = layout.mfn(pfn);
            self.boot_tables.push(mfn);
            self.set(mfn, Own::BootTable);
        }
        self.set(self.boot_l4, Own::BootL4);
        let mut edge_table = self.boot_l4;
        for level in [4, 3, 2] {
            let e = self
                .read_entry(entry_maddr(edge_table, table_index(EDGE_VA, level)))
                .unwrap_or(0);
            edge_table = entry_mfn(e);
            self.set(edge_table, Own::EdgeTable);
        }
        for mfn in self.scratch.clone() {
            self.set(mfn, Own::Scratch);
        }
        for mfn in self.grant.clone() {
            self.set(mfn, Own::Grant);
        }
        for mfn in self.test.clone() {
            self.set(mfn, Own::Test);
        }
        self.set(self.tree[0], Own::TreeL1);
        self.set(self.tree[1], Own::TreeL2);
        self.set(self.tree[2], Own::TreeL3);
        self.set(self.edge_mfn, Own::Edge);
    }

    fn set(&mut self, mfn: u64, class: Own) {
        if let Ok(i) = self.own.binary_search_by_key(&mfn, |&(m, _, _)| m) {
            self.own[i].2 = class;
        }
    }

    /// Up to eight frames other domains own (from the M2P, as `attacker`).
    fn find_foreign(&mut self, rng: &mut Rng) {
        let start = rng.below(self.nr_m2p.max(1));
        for i in 0..self.nr_m2p {
            let mfn = (start + i * 7) % self.nr_m2p.max(1);
            if self.foreign.len() >= 8 {
                break;
            }
            if mm::m2p(mfn).is_some_and(|pfn| pfn != u64::MAX) && self.own(mfn).is_none() {
                self.foreign.push(mfn);
            }
        }
        if self.foreign.is_empty() {
            // No other guest: hypervisor frames stand in.
            self.foreign.push(0x100);
        }
    }

    /// Keeps the candidate addresses that nothing maps.
    fn find_unmapped(&mut self) {
        let candidates = [
            0,
            0x1000,
            0x20_0000,
            va_of(100, 0, 0, 0),
            va_of(100, 3, 7, 9) + 0x800,
            va_of(300, 0, 0, 0),
            va_of(510, 511, 511, 511),
            EDGE_VA + PAGE_SIZE,
            EDGE_VA + 3 * PAGE_SIZE,
        ];
        for va in candidates {
            let mapped = self
                .walk(va)
                .and_then(|e| self.read_entry(e))
                .is_some_and(|e| e & pte::P != 0);
            if !mapped {
                self.unmapped.push(va);
            }
        }
        assert!(
            self.unmapped.contains(&(EDGE_VA + PAGE_SIZE)),
            "hcall-fuzz: the page after the edge page is mapped"
        );
    }

    /// Fills both grant frames with entries that never let anyone write a
    /// frame that is not a scratch frame.
    pub fn fill_grant_frames(&self, rng: &mut Rng) {
        for &g in &self.grant {
            for index in 0..512 {
                let entry = self.grant_entry(rng);
                self.write_grant(g, index, entry);
            }
        }
    }

    /// One grant entry of the kind [`Env::fill_grant_frames`] writes.
    pub fn grant_entry(&self, rng: &mut Rng) -> GrantEntry {
        let domid = match rng.below(8) {
            0..=3 => self.domid as u16,
            4 | 5 => 1 + rng.below(3) as u16,
            6 => 0,
            _ => rng.next_u64() as u16,
        };
        let mut flags = match rng.below(8) {
            0..=3 => GTF_PERMIT_ACCESS,
            4 | 5 => GTF_PERMIT_ACCESS | GTF_READONLY,
            6 => 0,
            _ => rng.next_u64() as u16,
        };
        let frame = match rng.below(6) {
            0..=2 => self.scratch[rng.index(self.scratch.len())],
            3 => self.p2m[rng.index(self.p2m.len())],
            4 => self.foreign[rng.index(self.foreign.len())],
            _ => rng.next_u64() & 0xf_ffff,
        };
        if flags & GTF_PERMIT_ACCESS != 0 && self.own(frame) != Some(Own::Scratch) {
            flags |= GTF_READONLY;
        }
        GrantEntry {
            flags,
            domid,
            frame: frame as u32,
        }
    }

    /// Replaces entry `index` of grant frame `g`, as the granter's side of
    /// the protocol allows (`hypercall_abi::grant`): only with a
    /// compare-exchange that fails while the hypervisor has the entry in use
    /// (`GTF_READING`/`GTF_WRITING`). Changing an entry in use would be the
    /// fuzzer's own bug: the user keeps the frame it first saw (GNT-2), so
    /// turning a read-only grant of a precious frame into a writable one of a
    /// scratch frame would hand out the precious frame writable.
    pub fn write_grant(&self, g: u64, index: usize, entry: GrantEntry) {
        use core::sync::atomic::{AtomicU64, Ordering};
        let Some((va, Own::Grant)) = self.lookup(g) else {
            return;
        };
        let word = u64::from(entry.flags)
            | (u64::from(entry.domid) << 16)
            | (u64::from(entry.frame) << 32);
        let at = va + (index as u64 % 512) * 8;
        // SAFETY: a grant frame is the fuzzer's, mapped writable in the
        // physmap, 8-aligned here; nothing in Rust refers to it, and the
        // hypervisor only changes it with atomic operations.
        let cell = unsafe { &*(at as *const AtomicU64) };
        let old = cell.load(Ordering::SeqCst);
        if old as u16 & (GTF_READING | GTF_WRITING) == 0 {
            // Fails (and leaves the entry) if the hypervisor took it since.
            let _ = cell.compare_exchange(old, word, Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    /// `(physmap va, class)` of an own frame.
    pub fn lookup(&self, mfn: u64) -> Option<(u64, Own)> {
        self.own
            .binary_search_by_key(&mfn, |&(m, _, _)| m)
            .ok()
            .map(|i| (self.own[i].1, self.own[i].2))
    }

    /// The class of `mfn`, `None` if the domain does not own it.
    pub fn own(&self, mfn: u64) -> Option<Own> {
        self.lookup(mfn).map(|(_, c)| c)
    }

    /// The current value of the entry at machine address `maddr` (an own
    /// frame), read through the physmap.
    pub fn read_entry(&self, maddr: u64) -> Option<u64> {
        let (va, _) = self.lookup(maddr >> 12)?;
        Some(physmap::read_va(va + (maddr & 0xff8)))
    }

    /// Machine address of the L1 entry that maps `va` in the kernel address
    /// space, if L4 .. L2 are present.
    pub fn walk(&self, va: u64) -> Option<u64> {
        if !is_guest_address(va) {
            return None;
        }
        let mut table = self.boot_l4;
        for level in [4, 3, 2] {
            let e = self.read_entry(entry_maddr(table, table_index(va, level)))?;
            if e & pte::P == 0 {
                return None;
            }
            table = entry_mfn(e);
        }
        Some(entry_maddr(table, table_index(va, 1)))
    }

    /// The rule for writing the entry at `ptr` (an `MmuUpdate.ptr`).
    pub fn slot_of_request(&self, ptr: u64) -> Slot {
        if ptr & 3 != 0 || ptr & 4 != 0 {
            // M2P updates and bad commands change no mapping; a misaligned
            // entry is refused.
            return Slot::Free;
        }
        self.slot_of_entry(ptr)
    }

    /// The rule for writing the entry at machine address `maddr`.
    pub fn slot_of_entry(&self, maddr: u64) -> Slot {
        let index = ((maddr & 0xfff) >> 3) as usize;
        let hook = || Slot::Hook(self.read_entry(maddr).unwrap_or(0));
        match self.own(maddr >> 12) {
            None => Slot::Free,
            Some(Own::TreeL1) => Slot::WindowL1,
            Some(Own::TreeL2 | Own::TreeL3) if index == 0 => hook(),
            Some(Own::TreeL2 | Own::TreeL3 | Own::Test) => Slot::Strict,
            Some(Own::BootL4) if is_hv_l4_slot(index) => Slot::Free,
            Some(Own::BootL4) if index == WINDOW_SLOT => hook(),
            Some(Own::BootL4 | Own::BootTable | Own::EdgeTable) => Slot::Protected,
            Some(Own::Precious { .. } | Own::Scratch | Own::Grant | Own::Edge) => Slot::Free,
        }
    }

    /// The rule for `update_va_mapping(va, ..)`.
    ///
    /// The tables under the window slot change (and a multicall entry may
    /// rewire them before a later entry runs), so any address there gets the
    /// rule that is safe for every L1 the tree can reach (its L1 or a test
    /// table). Elsewhere the walk only crosses tables that never change.
    pub fn slot_of_va(&self, va: u64) -> Slot {
        if is_guest_address(va) && table_index(va, 4) == WINDOW_SLOT {
            return Slot::Strict;
        }
        match self.walk(va) {
            Some(maddr) => self.slot_of_entry(maddr),
            None => Slot::Free,
        }
    }

    /// Whether the hypervisor must refuse `value` in any table: present and
    /// with a global or reserved bit, or a frame the domain does not own.
    pub fn must_refuse(&self, value: u64) -> bool {
        value & pte::P != 0
            && (value & (pte::G | RESERVED_BITS) != 0 || self.own(entry_mfn(value)).is_none())
    }

    /// Whether writing `value` under `slot`'s rule keeps the fuzzer safe.
    pub fn safe_entry(&self, slot: Slot, value: u64) -> bool {
        let present = value & pte::P != 0;
        let rw = value & pte::RW != 0;
        match slot {
            Slot::Free => true,
            Slot::Protected => self.must_refuse(value),
            Slot::Hook(current) => value == current || self.must_refuse(value),
            Slot::WindowL1 => {
                !present
                    || self.must_refuse(value)
                    || match self.own(entry_mfn(value)) {
                        None | Some(Own::Scratch) => true,
                        // Always validated tables: a writable mapping is
                        // refused, a read-only one harmless.
                        Some(
                            Own::TreeL1
                            | Own::TreeL2
                            | Own::TreeL3
                            | Own::BootL4
                            | Own::BootTable
                            | Own::EdgeTable,
                        ) => true,
                        // A test table may be untyped: writable would make
                        // its contents writable through the window.
                        Some(Own::Precious { .. } | Own::Grant | Own::Edge | Own::Test) => !rw,
                    }
            }
            Slot::Strict => {
                !present
                    || self.must_refuse(value)
                    || match self.own(entry_mfn(value)) {
                        None
                        | Some(
                            Own::Scratch | Own::TreeL1 | Own::TreeL2 | Own::TreeL3 | Own::BootL4,
                        ) => true,
                        Some(Own::Test) => !rw,
                        Some(
                            Own::Precious { .. }
                            | Own::Grant
                            | Own::Edge
                            | Own::BootTable
                            | Own::EdgeTable,
                        ) => false,
                    }
            }
        }
    }

    /// Whether validating `mfn` as an L4 (which writes the hypervisor's
    /// slots into it) cannot hit a frame the fuzzer runs on.
    pub fn l4_typing_safe(&self, mfn: u64) -> bool {
        !matches!(self.own(mfn), Some(Own::Precious { rw: false }))
    }

    /// Whether `NEW_BASEPTR mfn` keeps the fuzzer's address space: it is the
    /// current one, or the call must fail.
    pub fn new_baseptr_safe(&self, mfn: u64) -> bool {
        mfn == self.boot_l4
            || !matches!(self.own(mfn), Some(Own::Precious { rw: false } | Own::Test))
    }

    /// Whether a call may write the whole frame `mfn` (clear, copy, grant
    /// copy destination): a scratch frame, or one where it must fail.
    pub fn whole_write_safe(&self, mfn: u64) -> bool {
        matches!(
            self.own(mfn),
            None | Some(
                Own::Scratch
                    | Own::TreeL1
                    | Own::TreeL2
                    | Own::TreeL3
                    | Own::BootL4
                    | Own::BootTable
                    | Own::EdgeTable
            )
        )
    }

    /// Whether `mfn` may be listed for `GNTTABOP_SETUP_TABLE`: a grant
    /// frame, or one the hypervisor must refuse.
    pub fn grant_table_safe(&self, mfn: u64) -> bool {
        matches!(
            self.own(mfn),
            None | Some(
                Own::Grant
                    | Own::TreeL1
                    | Own::TreeL2
                    | Own::TreeL3
                    | Own::BootL4
                    | Own::BootTable
                    | Own::EdgeTable
            )
        )
    }

    /// A random own frame of any class.
    pub fn own_mfn(&self, rng: &mut Rng) -> u64 {
        self.own[rng.index(self.own.len())].0
    }

    /// The physmap address of pfn `pfn`.
    pub fn pfn_va(&self, pfn: u64) -> u64 {
        self.virt_base + pfn * PAGE_SIZE
    }
}
