//! `mmtest`: exercises the PV MMU (SPEC.md §7) through the kit's page-table
//! manager and checks every result; panics (crashing the domain) on the first
//! failed check.
//!
//! 1. M2P consistency for every own frame (MM-3).
//! 2. 4096 mappings in a scratch region, batched (MM-4): a pattern written
//!    through each, read back through the physmap.
//! 3. Unmap all, flush the TLB, check they fault; remap read-only elsewhere,
//!    check contents and that writes fault; remap one live mapping to another
//!    frame (invlpg) and with `update_va_mapping` (MM-5).
//! 4. A second kernel address space sharing the lower tables: switch to it
//!    and back (`NEW_BASEPTR`), checking what each maps.
//! 5. `MMU_MACHPHYS_UPDATE`, `CLEAR_PAGE`, `COPY_PAGE` on own frames.
//! 6. Teardown: every table unpinned/unhooked and freed, every frame back.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::hypercall::Features;
use hypercall_abi::mm::{
    pte, MmuUpdate, MmuextOp, MMUEXT_CLEAR_PAGE, MMUEXT_COPY_PAGE, MMU_MACHPHYS_UPDATE, UVMF_INVLPG,
};
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::PAGE_SIZE;
use pv_guest_kit::mm::{self, probe, AddressSpace, Frame, MmError};
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

/// Pages mapped in the scratch region.
const PAGES: u64 = 4096;
/// First scratch region (L4 slot 32).
const SCRATCH_A: u64 = 0x0000_1000_0000_0000;
/// Second scratch region (same L4 slot, another L3 entry: shared with the
/// second address space).
const SCRATCH_B: u64 = 0x0000_1000_4000_0000;
/// Mapped only in the second address space (L4 slot 40).
const SCRATCH_C: u64 = 0x0000_1400_0000_0000;
/// Batch size used for the bulk mappings.
const BATCH: usize = 64;

/// The word written at word `w` of frame `i`.
const fn pattern(i: u64, w: u64) -> u64 {
    0x5a5a_0000_0000_0000 | (i << 16) | w
}

fn kmain(si: &'static StartInfo) {
    let features = pv_guest_kit::hypercall::features().unwrap_or(Features::empty());
    check(
        features.contains(Features::PV_MMU | Features::MULTICALL | Features::M2P),
        "PV_MMU, MULTICALL and M2P feature bits",
    );
    let free_at_start = mm::free_frames();
    println!(
        "mmtest: {} pages, {} free frames, M2P of {} entries",
        si.nr_pages, free_at_start, si.nr_m2p_entries
    );

    m2p_consistency();

    let mut kernel = AddressSpace::kernel();
    let frames = bulk_map(&mut kernel);
    unmap_and_remap(&mut kernel, &frames);
    second_address_space(&frames);
    frame_ops(&frames);

    // Teardown: scratch mappings, the tables created in the kernel space,
    // then the frames.
    for i in 0..PAGES {
        or_die(kernel.unmap(remap_va(i)), "unmap SCRATCH_B");
    }
    or_die(mm::tlb_flush_local(), "TLB flush");
    let tables = kernel.table_count();
    or_die(kernel.destroy(), "free the scratch tables");
    let probe_kernel = AddressSpace::kernel();
    check(
        matches!(probe_kernel.translate(SCRATCH_A), Ok(None)),
        "scratch region gone after teardown",
    );
    drop(frames);
    check(
        mm::free_frames() == free_at_start,
        "every frame back in the pool",
    );
    println!("mmtest: teardown: {tables} tables and {PAGES} frames freed: ok");

    let stats = mm::stats();
    println!(
        "mmtest: all checks passed ({} mappings, {} mmu_update calls)",
        MAPPINGS.load(Ordering::Relaxed),
        stats.calls
    );
}

/// Mappings made through the kit (`map` calls).
static MAPPINGS: AtomicU64 = AtomicU64::new(0);

/// Maps `va` to `pfn` in `space`, counting it; panics on failure.
fn map(space: &mut AddressSpace, va: u64, pfn: u64, writable: bool, what: &str) {
    or_die(space.map(va, pfn, writable), what);
    MAPPINGS.fetch_add(1, Ordering::Relaxed);
}

/// Panics with `what` unless `ok`.
fn check(ok: bool, what: &str) {
    if !ok {
        panic!("mmtest: check failed: {what}");
    }
}

/// Unwraps a kit result or panics naming the step.
fn or_die<T>(result: Result<T, MmError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("mmtest: {what}: {err}"),
    }
}

/// Step 1: M2P[P2M[pfn]] == pfn for every own pfn (MM-3).
fn m2p_consistency() {
    let layout = mm::layout();
    for (pfn, &mfn) in (0u64..).zip(layout.p2m.iter()) {
        match mm::m2p(mfn) {
            Some(p) if p == pfn => {}
            other => panic!("mmtest: M2P[{mfn:#x}] = {other:?}, P2M says pfn {pfn:#x}"),
        }
    }
    println!(
        "mmtest: M2P consistent for all {} own frames: ok",
        layout.nr_pages
    );
}

/// Step 2: maps `PAGES` fresh frames at `SCRATCH_A`, batched, and writes a
/// pattern through each mapping.
fn bulk_map(kernel: &mut AddressSpace) -> Vec<Frame> {
    or_die(mm::set_batch_limit(BATCH), "set batch limit");
    let before = mm::stats();
    let mut frames = Vec::with_capacity(PAGES as usize);
    for i in 0..PAGES {
        let frame = or_die(Frame::alloc(), "allocate a frame");
        map(kernel, SCRATCH_A + i * PAGE_SIZE, frame.pfn(), true, "map");
        frames.push(frame);
    }
    or_die(mm::flush(), "flush");
    let after = mm::stats();
    let (updates, calls) = (after.updates - before.updates, after.calls - before.calls);
    check(updates >= PAGES, "every mapping applied");
    check(calls > 1, "more than one batch");
    check(calls < updates, "fewer mmu_update calls than updates");
    println!(
        "mmtest: mapped {PAGES} pages at {SCRATCH_A:#x} with {updates} updates in {calls} mmu_update calls ({} tables): ok",
        kernel.table_count()
    );

    for i in 0..PAGES {
        let va = SCRATCH_A + i * PAGE_SIZE;
        for w in [0, i % 512, 511] {
            // SAFETY: `va` maps frame `i`, which this test owns and which no
            // Rust reference covers.
            unsafe { mm::physmap::write_va(va + w * 8, pattern(i, w)) };
        }
    }
    for (i, frame) in (0u64..).zip(frames.iter()) {
        for w in [0, i % 512, 511] {
            check(
                frame.read_u64(w as usize) == pattern(i, w),
                "pattern visible through the physmap",
            );
        }
    }
    for i in [0, 1, 511, 512, PAGES - 1] {
        let t = or_die(kernel.translate(SCRATCH_A + i * PAGE_SIZE), "translate");
        check(
            t.is_some_and(|t| t.pfn == Some(frames[i as usize].pfn()) && t.writable()),
            "translate finds the frame, writable",
        );
    }
    println!("mmtest: wrote and read back a pattern through {PAGES} mappings: ok");
    frames
}

/// Where frame `i` is remapped: a permutation of the second region.
fn remap_va(i: u64) -> u64 {
    SCRATCH_B + ((i * 1237) % PAGES) * PAGE_SIZE
}

/// Step 3: unmap everything, check it is gone, remap read-only elsewhere.
fn unmap_and_remap(kernel: &mut AddressSpace, frames: &[Frame]) {
    for i in 0..PAGES {
        or_die(kernel.unmap(SCRATCH_A + i * PAGE_SIZE), "unmap");
    }
    or_die(mm::tlb_flush_local(), "TLB flush");
    for i in 0..PAGES {
        check(
            matches!(kernel.translate(SCRATCH_A + i * PAGE_SIZE), Ok(None)),
            "unmapped page has no translation",
        );
    }
    for i in [0, 7, PAGES - 1] {
        let va = SCRATCH_A + i * PAGE_SIZE;
        check(
            probe::read_u64(va) == Err(va),
            "reading an unmapped page faults",
        );
    }
    println!("mmtest: unmapped {PAGES} pages; reads fault: ok");

    for (i, frame) in (0u64..).zip(frames.iter()) {
        map(kernel, remap_va(i), frame.pfn(), false, "remap");
    }
    or_die(mm::flush(), "flush");
    for i in 0..PAGES {
        let va = remap_va(i);
        for w in [0, i % 512, 511] {
            check(
                probe::read_u64(va + w * 8) == Ok(pattern(i, w)),
                "pattern through the new mapping",
            );
        }
    }
    let va = remap_va(3);
    // SAFETY: the mapping is read-only; if the write went through it would
    // hit frame 3, which this test owns and no Rust reference covers.
    let write = unsafe { probe::write_u64(va, 1) };
    check(write == Err(va), "writing a read-only mapping faults");
    println!("mmtest: remapped {PAGES} pages read-only at {SCRATCH_B:#x}, contents intact, writes fault: ok");

    // Remap a live mapping to another frame: stale until invalidated.
    let va = remap_va(0);
    map(kernel, va, frames[1].pfn(), false, "remap live");
    or_die(mm::invlpg(va), "invlpg");
    check(
        probe::read_u64(va) == Ok(pattern(1, 0)),
        "live remap visible after invlpg",
    );
    // And back with update_va_mapping + UVMF_INVLPG (MM-5).
    let entry = (frames[0].mfn() << 12) | pte::P | pte::US;
    // SAFETY: `va` is a scratch mapping outside the physmap; only this test
    // reads it.
    let uvm = unsafe { pv_guest_kit::hypercall::update_va_mapping(va, entry, UVMF_INVLPG) };
    check(uvm.is_ok(), "update_va_mapping");
    check(
        probe::read_u64(va) == Ok(pattern(0, 0)),
        "update_va_mapping visible at once",
    );
    println!("mmtest: live remap with invlpg and with update_va_mapping: ok");
}

/// Step 4: a second kernel address space shares the kernel's lower tables
/// and adds `SCRATCH_C`; switch there and back.
fn second_address_space(frames: &[Frame]) {
    let mut second = or_die(AddressSpace::new_kernel(), "new kernel address space");
    let extra = &frames[42];
    map(
        &mut second,
        SCRATCH_C,
        extra.pfn(),
        false,
        "map in the second space",
    );
    or_die(second.switch_to(), "switch to the second space");
    check(
        probe::read_u64(SCRATCH_C) == Ok(pattern(42, 0)),
        "second space maps SCRATCH_C",
    );
    check(
        probe::read_u64(remap_va(5)) == Ok(pattern(5, 0)),
        "second space shares the scratch tables",
    );
    check(
        pv_guest_kit::start_info().nr_pages == mm::layout().nr_pages,
        "kernel data readable in the second space",
    );
    let kernel = AddressSpace::kernel();
    or_die(kernel.switch_to(), "switch back");
    check(
        probe::read_u64(SCRATCH_C) == Err(SCRATCH_C),
        "first space does not map SCRATCH_C",
    );
    check(
        matches!(
            second.translate(SCRATCH_C).map(|t| t.map(|t| t.mfn)),
            Ok(Some(mfn)) if mfn == extra.mfn()
        ),
        "second space translates SCRATCH_C",
    );
    let tables = second.table_count();
    or_die(second.destroy(), "destroy the second space");
    println!(
        "mmtest: second kernel address space ({tables} own tables + L4): switched there and back, destroyed: ok"
    );
}

/// Step 5: M2P updates, page clears and copies on own frames.
fn frame_ops(frames: &[Frame]) {
    let frame = &frames[100];
    let (pfn, mfn) = (frame.pfn(), frame.mfn());
    let machphys = |val: u64| {
        let req = MmuUpdate {
            ptr: (mfn << 12) | MMU_MACHPHYS_UPDATE,
            val,
        };
        // SAFETY: an M2P update changes no mapping.
        unsafe { pv_guest_kit::hypercall::mmu_update(&[req]) }
    };
    check(machphys(0x1234_5678).is_ok(), "MMU_MACHPHYS_UPDATE");
    check(mm::m2p(mfn) == Some(0x1234_5678), "M2P shows the update");
    check(machphys(pfn).is_ok(), "MMU_MACHPHYS_UPDATE back");
    check(mm::m2p(mfn) == Some(pfn), "M2P restored");
    println!("mmtest: MMU_MACHPHYS_UPDATE of own frame {mfn:#x}: ok");

    let (src, dst) = (&frames[200], &frames[201]);
    let ext = |cmd: u32, arg1: u64, arg2: u64| {
        let op = MmuextOp {
            cmd,
            pad: 0,
            arg1,
            arg2,
        };
        // SAFETY: both frames belong to this test and no Rust reference
        // covers them (they are only read through volatile accesses).
        unsafe { pv_guest_kit::hypercall::mmuext_op(&[op]) }
    };
    check(
        ext(MMUEXT_COPY_PAGE, dst.mfn(), src.mfn()).is_ok(),
        "COPY_PAGE",
    );
    check(
        dst.read_u64(0) == pattern(200, 0) && dst.read_u64(511) == pattern(200, 511),
        "COPY_PAGE copied",
    );
    check(ext(MMUEXT_CLEAR_PAGE, dst.mfn(), 0).is_ok(), "CLEAR_PAGE");
    check((0..512).all(|w| dst.read_u64(w) == 0), "CLEAR_PAGE zeroed");
    println!("mmtest: COPY_PAGE and CLEAR_PAGE: ok");
}
