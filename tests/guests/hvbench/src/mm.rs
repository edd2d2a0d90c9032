//! The PV MMU figures (SPEC.md §7, HC-20): `mmu_update` per PTE at several
//! batch sizes, `update_va_mapping`, `multicall`, pin/unpin, base-pointer
//! switches and TLB flushes.
//!
//! Every PTE update is a real change: each L1 entry of a scratch table
//! alternates between two frames, so every request drops one reference and
//! takes another. Figures are the median per-iteration TSC delta over batches
//! (see `pv_guest_kit::bench::measure`), divided by the work per call.

use alloc::vec::Vec;

use hypercall_abi::hypercall::VERSION_ABI;
use hypercall_abi::mm::{
    pte, MmuUpdate, MmuextOp, MMUEXT_NEW_BASEPTR, MMUEXT_PIN_L1_TABLE, MMUEXT_TLB_FLUSH_LOCAL,
    MMUEXT_UNPIN_TABLE, UVMF_INVLPG, UVMF_NONE,
};
use hypercall_abi::multicall::MulticallEntry;
use hypercall_abi::{Hypercall, PAGE_SIZE};
use pv_guest_kit::bench::measure;
use pv_guest_kit::hypercall::{self, BatchError};
use pv_guest_kit::mm::{self, AddressSpace, Frame, MmError};

use crate::report;

/// Scratch region: one L1 table's worth of pages (2 MiB aligned).
const SCRATCH: u64 = 0x0000_2000_0000_0000;
/// Entries of the scratch L1.
const ENTRIES: usize = 512;

/// Unwraps a kit result or panics naming the step.
fn or_die<T>(result: Result<T, MmError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("hvbench: {what}: {err}"),
    }
}

/// `mmu_update` of the scratch table's entries (all of them are in the
/// scratch region, which nothing but this benchmark uses).
fn update(reqs: &[MmuUpdate]) -> Result<(), BatchError> {
    // SAFETY: every request writes an L1 entry of the scratch region, mapping
    // one of the benchmark's own frames read-only; no Rust code uses it.
    unsafe { hypercall::mmu_update(reqs) }
}

/// `mmuext_op` of benchmark-owned tables or TLB flushes.
fn ext(ops: &[MmuextOp]) -> Result<(), BatchError> {
    // SAFETY: the operations pin/unpin the benchmark's own empty L1, switch
    // between two L4s that both map the whole kernel (the boot L4 and a copy
    // of it), or flush the TLB.
    unsafe { hypercall::mmuext_op(ops) }
}

/// One `mmuext_op` command.
const fn op(cmd: u32, arg1: u64) -> MmuextOp {
    MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2: 0,
    }
}

/// Runs every MMU benchmark and prints its figures.
pub fn run() {
    let mut kernel = AddressSpace::kernel();
    let l1e = or_die(kernel.l1_entry(SCRATCH), "scratch table");
    let frames = [
        or_die(Frame::alloc_zeroed(), "frame"),
        or_die(Frame::alloc_zeroed(), "frame"),
    ];
    let entry = |f: usize| (frames[f].mfn() << 12) | pte::P | pte::US;
    let requests = |f: usize| -> Vec<MmuUpdate> {
        (0..ENTRIES as u64)
            .map(|i| MmuUpdate {
                ptr: l1e + i * 8,
                val: entry(f),
            })
            .collect()
    };
    let (to_a, to_b) = (requests(0), requests(1));
    let mut failures = 0u32;

    for (n, batches, iters, name) in [
        (1, 32, 100, "mmu_update_b1_cycles_per_pte"),
        (8, 32, 50, "mmu_update_b8_cycles_per_pte"),
        (64, 16, 20, "mmu_update_b64_cycles_per_pte"),
        (512, 16, 4, "mmu_update_b512_cycles_per_pte"),
    ] {
        failures += u32::from(update(&to_a).is_err());
        let mut flip = false;
        let stats = measure(batches, iters, || {
            flip = !flip;
            let reqs = if flip { &to_b[..n] } else { &to_a[..n] };
            failures += u32::from(update(reqs).is_err());
        });
        report(
            name,
            &alloc::format!("mmu_update batch {n}, per PTE"),
            stats,
            n as u64,
        );
    }

    // One multicall of 512 update_va_mappings without flushes.
    failures += u32::from(update(&to_a).is_err());
    let uvm = |f: usize| -> Vec<MulticallEntry> {
        (0..ENTRIES as u64)
            .map(|i| MulticallEntry {
                op: u64::from(Hypercall::UpdateVaMapping.number()),
                result: 0,
                args: [SCRATCH + i * PAGE_SIZE, entry(f), UVMF_NONE, 0, 0, 0],
            })
            .collect()
    };
    let (mut uvm_a, mut uvm_b) = (uvm(0), uvm(1));
    let mut flip = false;
    let stats = measure(16, 4, || {
        flip = !flip;
        let calls = if flip { &mut uvm_b } else { &mut uvm_a };
        // SAFETY: each entry is an update_va_mapping of the scratch region,
        // as in `update`.
        failures += u32::from(unsafe { hypercall::multicall(calls) }.is_err());
        failures += calls.iter().filter(|c| c.result != 0).count() as u32;
    });
    report(
        "multicall_uva_b512_cycles_per_pte",
        "multicall of 512 update_va_mapping, per PTE",
        stats,
        ENTRIES as u64,
    );

    let mut nulls = [MulticallEntry {
        op: u64::from(Hypercall::Version.number()),
        result: 0,
        args: [VERSION_ABI, 0, 0, 0, 0, 0],
    }; 32];
    let stats = measure(32, 100, || {
        // SAFETY: `version` has no effect.
        failures += u32::from(unsafe { hypercall::multicall(&mut nulls) }.is_err());
    });
    report(
        "multicall_null_per_entry_cycles",
        "multicall of 32 null calls, per entry",
        stats,
        32,
    );

    let mut flip = false;
    let stats = measure(32, 100, || {
        flip = !flip;
        let val = entry(usize::from(flip));
        // SAFETY: the scratch page, as in `update`.
        let r = unsafe { hypercall::update_va_mapping(SCRATCH, val, UVMF_INVLPG) };
        failures += u32::from(r.is_err());
    });
    report(
        "update_va_mapping_cycles",
        "update_va_mapping + invlpg",
        stats,
        1,
    );

    let table = match or_die(Frame::alloc_zeroed(), "frame for an L1").into_readonly() {
        Ok(table) => table,
        Err((_, err)) => panic!("hvbench: read-only L1: {err}"),
    };
    let pin_unpin = [
        op(MMUEXT_PIN_L1_TABLE, table.mfn()),
        op(MMUEXT_UNPIN_TABLE, table.mfn()),
    ];
    let stats = measure(32, 50, || {
        failures += u32::from(ext(&pin_unpin).is_err());
    });
    report("pin_unpin_l1_cycles", "pin + unpin of an L1", stats, 1);
    match table.into_writable() {
        Ok(frame) => drop(frame),
        Err((_, err)) => panic!("hvbench: L1 still a table: {err}"),
    }

    let second = or_die(AddressSpace::new_kernel(), "second kernel address space");
    let switch = [
        [op(MMUEXT_NEW_BASEPTR, second.l4_mfn())],
        [op(MMUEXT_NEW_BASEPTR, mm::current_kernel_base())],
    ];
    let mut flip = 0usize;
    let stats = measure(16, 20, || {
        failures += u32::from(ext(&switch[flip]).is_err());
        flip ^= 1;
    });
    or_die(AddressSpace::kernel().switch_to(), "switch back");
    report(
        "new_baseptr_cycles",
        "new_baseptr between two pinned L4s",
        stats,
        1,
    );
    or_die(second.destroy(), "destroy the second address space");

    let flush = [op(MMUEXT_TLB_FLUSH_LOCAL, 0)];
    let stats = measure(32, 50, || {
        failures += u32::from(ext(&flush).is_err());
    });
    report("tlb_flush_local_cycles", "mmuext TLB flush local", stats, 1);

    assert_eq!(failures, 0, "hvbench: {failures} MMU calls failed");
    or_die(kernel.destroy(), "free the scratch table");
    drop(frames);
}
