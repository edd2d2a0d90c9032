//! PV MMU regressions (SPEC §7, MM-1b .. MM-6, HC-20): superpages (XSA-148),
//! out-of-range mfns (167), flipping RW on a page-table mapping (182),
//! linear page-table chains (240), stale TLB across a multicall (286),
//! partial validation (299), continuations (212), mode switches inside a
//! multicall (213).
//!
//! Each test attempts the operation through the ABI and passes only when it
//! observes the documented refusal and the state it protects unchanged.

use alloc::vec::Vec;

use hypercall_abi::hypercall::VERSION_ABI;
use hypercall_abi::layout::LOWER_HALF_END;
use hypercall_abi::mm::{
    pte, MmuUpdate, MmuextOp, MMUEXT_CLEAR_PAGE, MMUEXT_COPY_PAGE, MMUEXT_NEW_BASEPTR,
    MMUEXT_NEW_USER_BASEPTR, MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_PIN_L3_TABLE,
    MMUEXT_PIN_L4_TABLE, MMUEXT_UNPIN_TABLE, MMU_MACHPHYS_UPDATE, UVMF_INVLPG, UVMF_NONE,
};
use hypercall_abi::multicall::MulticallEntry;
use hypercall_abi::trap::{IretContext, FRAME_FLAG_USER_MODE};
use hypercall_abi::{Errno, Hypercall, PAGE_SIZE};
use pv_guest_kit::hypercall;
use pv_guest_kit::mm::pagetable::{entry_maddr, table_index};
use pv_guest_kit::mm::{self, probe, AddressSpace, Frame};
use pv_guest_kit::testing::TestReport;

use crate::attack::{ext1, ext2, read_machine, try_pin_table, update, update1, Tables};

/// Scratch region (L4 slot 64) whose tables the attacks write.
const SCRATCH: u64 = 0x0000_2000_0000_0000;
/// A hypervisor frame (hv-core's image starts at 1 MiB).
const HV_MFN: u64 = 0x100;

/// Unwraps a set-up step or ends the test with ERROR.
macro_rules! setup {
    ($r:expr, $what:expr, $e:expr) => {
        match $r.setup($what, $e) {
            Some(v) => v,
            None => return,
        }
    };
}
pub(crate) use setup;

/// XSA-148: a superpage (PS) mapping, in particular by changing only the
/// flags of a present L2 entry (Xen's fast path), must be refused: MM-1b
/// allows no PS in L2/L3 (`-EINVAL`).
pub fn xsa_148(r: &mut TestReport) {
    let mut kernel = AddressSpace::kernel();
    let t = setup!(r, "scratch tables", Tables::of(&mut kernel, SCRATCH));
    let data = setup!(r, "a data frame", Frame::alloc_zeroed());
    let l2_slot = table_index(SCRATCH, 2);
    let l2e = entry_maddr(t.l2, l2_slot);
    let before = read_machine(l2e).unwrap_or(0);
    r.check(
        before & pte::P != 0,
        format_args!("the scratch L2 entry is present"),
    );
    r.refused(
        "setting only PS on a present L2 entry (fast path)",
        update1(l2e, before | pte::PS_OR_PAT),
        Errno::EINVAL,
    );
    r.refused(
        "setting PS|RW on a present L2 entry",
        update1(l2e, before | pte::PS_OR_PAT | pte::RW),
        Errno::EINVAL,
    );
    r.check(
        read_machine(l2e) == Some(before),
        format_args!("the L2 entry is unchanged"),
    );
    // A writable 2 MiB superpage over the L1 itself and its neighbours.
    r.refused(
        "a writable 2 MiB superpage over an L1 table",
        update1(
            entry_maddr(t.l2, l2_slot + 1),
            (t.l1 << 12) | pte::P | pte::RW | pte::PS_OR_PAT,
        ),
        Errno::EINVAL,
    );
    r.refused(
        "a writable 1 GiB superpage in an L3 entry",
        update1(
            entry_maddr(t.l3, table_index(SCRATCH, 3) + 1),
            (data.mfn() << 12) | pte::P | pte::RW | pte::PS_OR_PAT,
        ),
        Errno::EINVAL,
    );
    let super_va = SCRATCH + (1 << 21);
    r.check(
        probe::read_u64(super_va).is_err(),
        format_args!("nothing is mapped where the superpage would be"),
    );
    let data_mfn = data.mfn();
    match try_pin_table(MMUEXT_PIN_L2_TABLE, |frame| {
        frame.write_u64(0, (data_mfn << 12) | pte::P | pte::RW | pte::PS_OR_PAT)
    }) {
        Ok(got) => {
            r.refused("pinning an L2 that holds a PS entry", got, Errno::EINVAL);
        }
        Err(why) => r.fail(format_args!("pinning an L2 that holds a PS entry: {why}")),
    }
    match try_pin_table(MMUEXT_PIN_L3_TABLE, |frame| {
        frame.write_u64(1, (data_mfn << 12) | pte::P | pte::PS_OR_PAT)
    }) {
        Ok(got) => {
            r.refused("pinning an L3 that holds a PS entry", got, Errno::EINVAL);
        }
        Err(why) => r.fail(format_args!("pinning an L3 that holds a PS entry: {why}")),
    }
    drop(data);
    let _ = kernel.destroy();
}

/// XSA-167: mmuext operations (and mmu_update) naming mfns past the end of
/// memory must be refused like any frame that is not the caller's (MM-1b:
/// `-EPERM`), never index past the
/// frame table. A frame that is not the caller's is refused with
/// `-EPERM` before anything else is looked at, so unpinning one or
/// writing an "entry" in one is `-EPERM` too.
pub fn xsa_167(r: &mut TestReport) {
    let end = mm::layout().nr_m2p_entries;
    let own = setup!(r, "a frame", Frame::alloc_zeroed());
    let mut kernel = AddressSpace::kernel();
    let t = setup!(r, "scratch tables", Tables::of(&mut kernel, SCRATCH));
    let mfns = [
        end,
        end + 1,
        end + 0x1000,
        1 << 32,
        (1 << 40) - 1,
        (1 << 52) - 1,
    ];
    let mut checked = 0;
    for mfn in mfns {
        let ops: [(u32, &str, Errno); 7] = [
            (MMUEXT_PIN_L1_TABLE, "PIN_L1_TABLE", Errno::EPERM),
            (MMUEXT_PIN_L2_TABLE, "PIN_L2_TABLE", Errno::EPERM),
            (MMUEXT_PIN_L3_TABLE, "PIN_L3_TABLE", Errno::EPERM),
            (MMUEXT_PIN_L4_TABLE, "PIN_L4_TABLE", Errno::EPERM),
            (MMUEXT_NEW_BASEPTR, "NEW_BASEPTR", Errno::EPERM),
            (MMUEXT_NEW_USER_BASEPTR, "NEW_USER_BASEPTR", Errno::EPERM),
            (MMUEXT_CLEAR_PAGE, "CLEAR_PAGE", Errno::EPERM),
        ];
        for (cmd, name, want) in ops {
            checked += 1;
            r.refused(
                &alloc::format!("mmuext {name} of mfn {mfn:#x}"),
                ext1(cmd, mfn),
                want,
            );
        }
        r.refused(
            &alloc::format!("mmuext UNPIN_TABLE of mfn {mfn:#x}"),
            ext1(MMUEXT_UNPIN_TABLE, mfn),
            Errno::EPERM,
        );
        r.refused(
            &alloc::format!("mmuext COPY_PAGE to mfn {mfn:#x}"),
            ext2(MMUEXT_COPY_PAGE, mfn, own.mfn()),
            Errno::EPERM,
        );
        r.refused(
            &alloc::format!("mmuext COPY_PAGE from mfn {mfn:#x}"),
            ext2(MMUEXT_COPY_PAGE, own.mfn(), mfn),
            Errno::EPERM,
        );
        // Past 2^40 the frame number spills into bits 52..63 of the
        // entry, which are not allowed flags: malformed (`-EINVAL`).
        r.refused(
            &alloc::format!("mmu_update mapping mfn {mfn:#x}"),
            update1(t.l1e, (mfn << 12) | pte::P),
            if mfn < 1 << 40 {
                Errno::EPERM
            } else {
                Errno::EINVAL
            },
        );
        r.refused(
            &alloc::format!("M2P update of mfn {mfn:#x}"),
            update1((mfn << 12) | MMU_MACHPHYS_UPDATE, 0),
            Errno::EPERM,
        );
        r.refused(
            &alloc::format!("mmu_update of an entry in mfn {mfn:#x}"),
            update1(mfn << 12, 0),
            Errno::EPERM,
        );
        checked += 6;
    }
    r.refused(
        "mmuext PIN_L1_TABLE of mfn 2^64-1",
        ext1(MMUEXT_PIN_L1_TABLE, u64::MAX),
        Errno::EPERM,
    );
    r.check(
        read_machine(t.l1e) == Some(0),
        format_args!("after {checked} refused operations the scratch entry is still empty"),
    );
    drop(own);
    let _ = kernel.destroy();
}

/// XSA-182: changing only the RW bit of an entry that maps a page table
/// (Xen's fast path skipped validation for flag-only changes) must be
/// refused (`-EBUSY`), and there are no linear (self-mapping) entries whose
/// RW bit could be flipped (`-EBUSY`).
pub fn xsa_182(r: &mut TestReport) {
    let layout = mm::layout();
    let mut kernel = AddressSpace::kernel();
    let boot_l1_pfn = layout.pt_first_pfn + layout.nr_pt_frames - 1;
    let l4_pfn = layout.pt_first_pfn;
    for (what, pfn) in [("the boot L1", boot_l1_pfn), ("the boot L4", l4_pfn)] {
        let va = layout.pfn_va(pfn);
        let l1e = setup!(
            r,
            "finding a physmap entry",
            kernel.l1_entry(va).or_else(|_| {
                // l1_entry refuses physmap addresses: walk by hand.
                physmap_l1e(va).ok_or("no L1 entry")
            })
        );
        let entry = read_machine(l1e).unwrap_or(0);
        r.check(
            entry & pte::P != 0 && entry & pte::RW == 0,
            format_args!("{what} is mapped read-only"),
        );
        r.refused(
            &alloc::format!("flipping only RW on the mapping of {what} (mmu_update)"),
            update1(l1e, entry | pte::RW),
            Errno::EBUSY,
        );
        r.refused(
            &alloc::format!("flipping only RW on the mapping of {what} (update_va_mapping)"),
            // SAFETY: the update must be refused; if not the write probe
            // below reports it.
            unsafe { hypercall::update_va_mapping(va, entry | pte::RW, UVMF_INVLPG) },
            Errno::EBUSY,
        );
        r.check(
            read_machine(l1e) == Some(entry),
            format_args!("the entry mapping {what} is unchanged"),
        );
        let first = probe::read_u64(va).unwrap_or(0);
        // SAFETY: a read-only page-table mapping: the write must fault.
        let wrote = unsafe { probe::write_u64(va, first) };
        r.check(wrote.is_err(), format_args!("a write to {what} faults"));
    }
    let l4 = layout.boot_l4_mfn;
    r.refused(
        "a read-only self-map of the L4 (slot 300)",
        update1(entry_maddr(l4, 300), (l4 << 12) | pte::P),
        Errno::EBUSY,
    );
    r.refused(
        "a writable self-map of the L4 (slot 300)",
        update1(entry_maddr(l4, 300), (l4 << 12) | pte::P | pte::RW),
        Errno::EBUSY,
    );
    r.check(
        read_machine(entry_maddr(l4, 300)) == Some(0),
        format_args!("L4 slot 300 stays empty"),
    );
}

/// The machine address of the L1 entry mapping physmap address `va`.
fn physmap_l1e(va: u64) -> Option<u64> {
    let mut table = mm::layout().boot_l4_mfn;
    for level in [4u32, 3, 2] {
        let entry = read_machine(entry_maddr(table, table_index(va, level)))?;
        if entry & pte::P == 0 {
            return None;
        }
        table = (entry & pte::ADDR_MASK) >> 12;
    }
    Some(entry_maddr(table, table_index(va, 1)))
}

/// XSA-240 (and 309): linear page-table entries and chains of them — a
/// table pointing at itself, at a table of its own or a higher level, or at
/// another address space's root — must all be refused (`-EBUSY`): MM-1b has
/// no linear page tables at any depth.
pub fn xsa_240(r: &mut TestReport) {
    let mut kernel = AddressSpace::kernel();
    let t = setup!(r, "scratch tables", Tables::of(&mut kernel, SCRATCH));
    let other = setup!(r, "a second address space", AddressSpace::new_kernel());
    let (l4, l3, l2, l1) = (t.l4, t.l3, t.l2, t.l1);
    let cases: [(&str, u64, u64); 9] = [
        ("L4 slot pointing at its own L4", entry_maddr(l4, 301), l4),
        (
            "L4 slot pointing at another pinned L4",
            entry_maddr(l4, 301),
            other.l4_mfn(),
        ),
        ("L3 entry pointing at itself", entry_maddr(l3, 7), l3),
        ("L3 entry pointing at the L4", entry_maddr(l3, 7), l4),
        ("L2 entry pointing at itself", entry_maddr(l2, 9), l2),
        ("L2 entry pointing at its L3", entry_maddr(l2, 9), l3),
        ("L2 entry pointing at the L4", entry_maddr(l2, 9), l4),
        (
            "L1 entry mapping its own L1 writable",
            entry_maddr(l1, 11),
            l1,
        ),
        ("L1 entry mapping the L4 writable", entry_maddr(l1, 11), l4),
    ];
    for (what, ptr, target) in cases {
        for rw in [0, pte::RW] {
            if rw == 0 && what.starts_with("L1 entry") {
                continue;
            }
            let mode = if rw == 0 { "read-only" } else { "writable" };
            r.refused(
                &alloc::format!("{what} ({mode})"),
                update1(ptr, (target << 12) | pte::P | rw),
                Errno::EBUSY,
            );
        }
    }
    // A chain: a new L3 whose entry points back at the boot L4, hung below a
    // new L4 and pinned: validation must refuse it at depth.
    let boot_l4 = l4;
    match try_pin_table(MMUEXT_PIN_L3_TABLE, |frame| {
        frame.write_u64(3, (boot_l4 << 12) | pte::P)
    }) {
        Ok(got) => {
            r.refused(
                "pinning an L3 whose entry points at the L4",
                got,
                Errno::EBUSY,
            );
        }
        Err(why) => r.fail(format_args!("pinning an L3 pointing at the L4: {why}")),
    }
    let l3_of_other = l3;
    match try_pin_table(MMUEXT_PIN_L2_TABLE, |frame| {
        frame.write_u64(5, (l3_of_other << 12) | pte::P)
    }) {
        Ok(got) => {
            r.refused(
                "pinning an L2 whose entry points at an L3",
                got,
                Errno::EBUSY,
            );
        }
        Err(why) => r.fail(format_args!("pinning an L2 pointing at an L3: {why}")),
    }
    for (table, slot) in [(l4, 301), (l3, 7), (l2, 9), (l1, 11)] {
        r.check(
            read_machine(entry_maddr(table, slot)) == Some(0),
            format_args!("attacked entry {slot} of mfn {table:#x} stays empty"),
        );
    }
    let _ = other.destroy();
    let _ = kernel.destroy();
}

/// One multicall entry.
fn entry(call: Hypercall, args: [u64; 6]) -> MulticallEntry {
    MulticallEntry {
        op: u64::from(call.number()),
        result: 0,
        args,
    }
}

/// Runs `calls` as one multicall.
fn multicall(calls: &mut [MulticallEntry]) -> Result<(), Errno> {
    // SAFETY: each test's entries only touch its scratch tables and frames,
    // or must be refused.
    unsafe { hypercall::multicall(calls) }
}

/// XSA-286: a writable mapping removed without a TLB flush (by
/// `update_va_mapping` with `UVMF_NONE` and by `mmu_update`, mixed in one
/// multicall) and the frame pinned as an L1 in the same multicall: the
/// stale writable TLB entries must be gone before the frame is a page table
/// (MM-2), so writes through them fault.
pub fn xsa_286(r: &mut TestReport) {
    let mut kernel = AddressSpace::kernel();
    let t = setup!(r, "scratch tables", Tables::of(&mut kernel, SCRATCH));
    for round in 0..2 {
        let frame = setup!(r, "a frame", Frame::alloc_zeroed());
        let table = match frame.into_readonly() {
            Ok(table) => table,
            Err(_) => {
                r.error(format_args!("making a frame read-only"));
                return;
            }
        };
        let mfn = table.mfn();
        let (va_a, va_b) = (SCRATCH, SCRATCH + PAGE_SIZE);
        // SAFETY: scratch addresses, mapping a frame this test owns.
        let mapped = unsafe {
            hypercall::update_va_mapping(va_a, (mfn << 12) | pte::P | pte::RW, UVMF_INVLPG)
        };
        setup!(r, "mapping the frame writable", mapped);
        setup!(
            r,
            "a second writable alias",
            update1(t.l1e + 8, (mfn << 12) | pte::P | pte::RW)
        );
        // Fill the TLB with both writable translations.
        // SAFETY: the frame is this test's; nothing else uses it.
        let filled = unsafe { probe::write_u64(va_a, 0).and(probe::write_u64(va_b, 0)) };
        setup!(
            r,
            "writing through both aliases",
            filled.map_err(|_| "fault")
        );
        let req = [MmuUpdate {
            ptr: t.l1e + 8,
            val: 0,
        }];
        let pin = [MmuextOp {
            cmd: MMUEXT_PIN_L1_TABLE,
            pad: 0,
            arg1: mfn,
            arg2: 0,
        }];
        let remove_a = entry(Hypercall::UpdateVaMapping, [va_a, 0, UVMF_NONE, 0, 0, 0]);
        let remove_b = entry(Hypercall::MmuUpdate, [req.as_ptr() as u64, 1, 0, 0, 0, 0]);
        let pin_it = entry(Hypercall::MmuextOp, [pin.as_ptr() as u64, 1, 0, 0, 0, 0]);
        let mut calls = if round == 0 {
            [remove_a, remove_b, pin_it]
        } else {
            [remove_b, remove_a, pin_it]
        };
        setup!(r, "the multicall", multicall(&mut calls));
        let results: Vec<i64> = calls.iter().map(|c| c.result as i64).collect();
        if results != [0, 0, 0] {
            r.error(format_args!(
                "multicall results {results:?}, expected all 0"
            ));
            return;
        }
        // SAFETY: both must fault; if one does not, the value written is
        // the entry's current content (0), and the test fails.
        let stale_a = unsafe { probe::write_u64(va_a, 0) };
        // SAFETY: as above.
        let stale_b = unsafe { probe::write_u64(va_b, 0) };
        r.check(
            stale_a.is_err() && stale_b.is_err(),
            format_args!("round {round}: writes through both stale aliases of the new L1 fault"),
        );
        r.check(
            (0..512).all(|i| table.read_u64(i) == 0),
            format_args!("round {round}: the L1 is still empty"),
        );
        setup!(r, "unpinning", ext1(MMUEXT_UNPIN_TABLE, mfn));
        match table.into_writable() {
            Ok(frame) => drop(frame),
            Err(_) => r.fail(format_args!("the L1 kept its type after the unpin")),
        }
    }
    let _ = kernel.destroy();
}

/// XSA-299: validation of a large table tree that fails at its very last
/// entry must leave no partially validated table behind (every frame can
/// become writable again), and succeed once the entry is fixed; a batch
/// failing after several continuations reports exactly the failing index.
pub fn xsa_299(r: &mut TestReport) {
    const L1S: usize = 48;
    let data = setup!(r, "a data frame", Frame::alloc_zeroed());
    let mut l1s = Vec::new();
    for i in 0..L1S {
        let mut frame = setup!(r, "an L1 frame", Frame::alloc_zeroed());
        for e in 0..512 {
            let bad = i == L1S - 1 && e == 511;
            let mfn = if bad { HV_MFN } else { data.mfn() };
            frame.write_u64(e, (mfn << 12) | pte::P);
        }
        l1s.push(frame);
    }
    let mut l2 = setup!(r, "an L2 frame", Frame::alloc_zeroed());
    for (i, frame) in l1s.iter().enumerate() {
        l2.write_u64(i, (frame.mfn() << 12) | pte::P);
    }
    let mut readonly = Vec::new();
    for frame in l1s {
        match frame.into_readonly() {
            Ok(table) => readonly.push(table),
            Err(_) => {
                r.error(format_args!("making an L1 read-only"));
                return;
            }
        }
    }
    let Ok(l2) = l2.into_readonly() else {
        r.error(format_args!("making the L2 read-only"));
        return;
    };
    let started = crate::attack::rdtsc();
    r.refused(
        "pinning an L2 over 48 full L1s whose last entry maps a hypervisor frame",
        ext1(MMUEXT_PIN_L2_TABLE, l2.mfn()),
        Errno::EPERM,
    );
    let took = crate::attack::rdtsc() - started;
    // Every frame must be untyped again: back to writable, one by one.
    let mut writable = Vec::new();
    let mut stuck = 0;
    for table in readonly {
        match table.into_writable() {
            Ok(frame) => writable.push(frame),
            // A ReadOnlyFrame is never freed: a stuck one stays leaked.
            Err(_) => stuck += 1,
        }
    }
    r.check(
        stuck == 0,
        format_args!(
            "after the failed validation ({took} TSC ticks) no L1 kept a type ({stuck} did)"
        ),
    );
    // Fix the bad entry and pin for real, then unpin.
    if let Some(last) = writable.last_mut() {
        last.write_u64(511, (data.mfn() << 12) | pte::P);
    }
    let mut readonly = Vec::new();
    for frame in writable {
        if let Ok(table) = frame.into_readonly() {
            readonly.push(table);
        }
    }
    r.check(
        ext1(MMUEXT_PIN_L2_TABLE, l2.mfn()).is_ok(),
        format_args!("the fixed tree validates and pins"),
    );
    r.check(
        ext1(MMUEXT_UNPIN_TABLE, l2.mfn()).is_ok(),
        format_args!("and unpins"),
    );
    let mut stuck = 0;
    for table in readonly {
        match table.into_writable() {
            Ok(frame) => drop(frame),
            // A ReadOnlyFrame is never freed: a stuck one stays leaked.
            Err(_) => stuck += 1,
        }
    }
    r.check(
        stuck == 0,
        format_args!("after the unpin every L1 is untyped"),
    );
    match l2.into_writable() {
        Ok(frame) => drop(frame),
        Err(_) => r.fail(format_args!("the L2 kept its type")),
    }
    // A batch of 200 failing at index 150, across two continuations (MM-4:
    // 64 requests per entry).
    let mut kernel = AddressSpace::kernel();
    let t = setup!(r, "scratch tables", Tables::of(&mut kernel, SCRATCH));
    let reqs: Vec<MmuUpdate> = (0..200u64)
        .map(|i| MmuUpdate {
            ptr: t.l1e + 8 * i,
            val: if i == 150 {
                HV_MFN << 12 | pte::P
            } else {
                (data.mfn() << 12) | pte::P
            },
        })
        .collect();
    let result = update(&reqs);
    r.check(
        matches!(result, Err(e) if e.done == 150 && e.errno == Errno::EPERM),
        format_args!("a batch of 200 failing at 150 stops with EPERM and done = 150 ({result:?})"),
    );
    let applied = (0..200u64)
        .filter(|i| read_machine(t.l1e + 8 * i).is_some_and(|e| e & pte::P != 0))
        .count();
    r.check(
        applied == 150,
        format_args!("exactly the 150 requests before it are applied ({applied})"),
    );
    let clear: Vec<MmuUpdate> = (0..150u64)
        .map(|i| MmuUpdate {
            ptr: t.l1e + 8 * i,
            val: 0,
        })
        .collect();
    setup!(r, "clearing", update(&clear).map_err(|e| e.errno));
    let _ = mm::pagetable::tlb_flush_local();
    drop(data);
    let _ = kernel.destroy();
}

/// XSA-212: a continuation must validate the part of the argument array it
/// has not seen yet. A batch whose array runs from the last page of the
/// lower half into non-canonical space: the requests in the mapped page
/// are applied (over several continuations) and the call fails with
/// `-EFAULT` exactly where the array leaves guest space.
pub fn xsa_212(r: &mut TestReport) {
    const LAST_PAGE: u64 = LOWER_HALF_END - PAGE_SIZE;
    let data = setup!(r, "a data frame", Frame::alloc_zeroed());
    let mut array = setup!(r, "an array frame", Frame::alloc_zeroed());
    let mut kernel = AddressSpace::kernel();
    let t = setup!(r, "scratch tables", Tables::of(&mut kernel, SCRATCH));
    for i in 0..256usize {
        array.write_u64(2 * i, t.l1e + 8 * i as u64);
        array.write_u64(2 * i + 1, (data.mfn() << 12) | pte::P);
    }
    setup!(
        r,
        "mapping the last page of the lower half",
        kernel
            .map(LAST_PAGE, array.pfn(), false)
            .and_then(|()| mm::pagetable::flush())
    );
    let mut done = u64::MAX;
    let ret = crate::attack::raw(
        Hypercall::MmuUpdate,
        [LAST_PAGE, 300, core::ptr::addr_of_mut!(done) as u64, 0, 0],
    );
    r.check(
        ret == -(Errno::EFAULT.0 as i64) && done == 256,
        format_args!(
            "300 requests from {LAST_PAGE:#x}: EFAULT where the array leaves guest space (ret {ret}, done {done})"
        ),
    );
    let applied = (0..256u64)
        .filter(|i| read_machine(t.l1e + 8 * i).is_some_and(|e| e & pte::P != 0))
        .count();
    r.check(
        applied == 256,
        format_args!("the 256 readable requests were applied ({applied})"),
    );
    // The same array, only partly mapped: the second page is not mapped.
    let clear: Vec<MmuUpdate> = (0..256u64)
        .map(|i| MmuUpdate {
            ptr: t.l1e + 8 * i,
            val: 0,
        })
        .collect();
    setup!(r, "clearing", update(&clear).map_err(|e| e.errno));
    let mut done = u64::MAX;
    let start = LAST_PAGE - PAGE_SIZE;
    let ret = crate::attack::raw(
        Hypercall::MmuUpdate,
        [start, 4096, core::ptr::addr_of_mut!(done) as u64, 0, 0],
    );
    r.check(
        ret == -(Errno::EFAULT.0 as i64) && done == 0,
        format_args!(
            "an array starting in an unmapped page: EFAULT, done = 0 (ret {ret}, done {done})"
        ),
    );
    setup!(
        r,
        "unmapping",
        kernel
            .unmap(LAST_PAGE)
            .and_then(|()| mm::pagetable::tlb_flush_local())
    );
    drop(array);
    drop(data);
    let _ = kernel.destroy();
}

/// XSA-213: a mode switch (`iret`, even one that would enter user mode)
/// or a nested multicall inside a multicall is refused (`-EINVAL`) without
/// stopping the other entries, and the vCPU stays in kernel mode on its
/// kernel address space.
pub fn xsa_213(r: &mut TestReport) {
    let user = setup!(r, "a user address space", AddressSpace::new_user());
    setup!(r, "setting the user base pointer", user.set_user());
    let base = mm::pagetable::current_kernel_base();
    let context = IretContext {
        flags: FRAME_FLAG_USER_MODE,
        rip: 0x40_0000,
        cs: 0x23,
        rflags: 0x202,
        rsp: 0x80_0000,
        ss: 0x1b,
        ..IretContext::default()
    };
    let version = entry(Hypercall::Version, [VERSION_ABI, 0, 0, 0, 0, 0]);
    let expected = hypercall::version(VERSION_ABI).unwrap_or(u64::MAX);
    let nested_calls = [version];
    for (what, bad) in [
        (
            "iret to user mode",
            entry(
                Hypercall::Iret,
                [core::ptr::addr_of!(context) as u64, 0, 0, 0, 0, 0],
            ),
        ),
        ("iret without arguments", entry(Hypercall::Iret, [0; 6])),
        (
            "a nested multicall",
            entry(
                Hypercall::Multicall,
                [nested_calls.as_ptr() as u64, 1, 0, 0, 0, 0],
            ),
        ),
    ] {
        let mut calls = [version, bad, version];
        let ret = multicall(&mut calls);
        r.check(
            ret.is_ok(),
            format_args!("multicall with {what}: the call returns 0"),
        );
        r.refused(
            &alloc::format!("{what} inside a multicall"),
            Errno::check(calls[1].result as i64),
            Errno::EINVAL,
        );
        r.check(
            calls[0].result == expected && calls[2].result == expected,
            format_args!("the entries around {what} ran"),
        );
        r.check(
            mm::pagetable::current_kernel_base() == base
                && probe::read_u64(mm::layout().pfn_va(mm::layout().pt_first_pfn)).is_ok(),
            format_args!("after {what}: still in kernel mode on the kernel address space"),
        );
    }
    let _ = mm::pagetable::clear_user();
    let _ = user.destroy();
}
