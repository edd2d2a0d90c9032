//! The grant-table figures (SPEC.md §8b, GNT-3, GNT-4), against the page the
//! echo domain grants (reference 0):
//! - `grant_map_unmap_cycles`: one `MAP_GRANT_REF` + one `UNMAP_GRANT_REF`;
//! - `grant_copy_4k_b1_cycles`, `grant_copy_4k_b16_cycles`: `GNTTABOP_COPY`
//!   of the whole page into a frame of ours, one op per call or 16, per copy;
//! - `memcpy_4k_cycles`: the same 4 KiB copied in the guest (`rep movsq`);
//! - `grant_copy_4k_ratio`: batch-16 grant copy over that memcpy.
//!
//! At the end it writes the echo domain's "done" word into that page with a
//! grant copy and notifies.

use alloc::vec::Vec;

use hypercall_abi::grant::{
    GnttabCopy, GnttabCopyPtr, GrantRef, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF,
};
use hypercall_abi::DomId;
use pv_guest_kit::bench::{measure, Hundredths};
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants::{self, map_grant_ref, unmap_grant_ref};
use pv_guest_kit::mm::{self, Frame};
use pv_guest_kit::println;

use crate::report;

/// The echo domain's page.
const ECHO_GREF: GrantRef = 0;
/// Where its "done" word is, and the value (see `pingpong`'s echo role).
const DONE_OFFSET: u32 = 4088;
const DONE: u64 = 0xd0_4e;
/// Copies per batched call.
const BATCH: usize = 16;

/// Unwraps a step that must work.
fn ok<T, E: core::fmt::Display>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(err) => panic!("hvbench: {what}: {err}"),
    }
}

pub fn run(echo: DomId, port: Port) {
    let va = ok(mm::reserve_va(1), "reserving address space").start();
    let mut failures = 0u32;

    let stats = measure(32, 100, || match map_grant_ref(echo, ECHO_GREF, va, true) {
        Ok(handle) => failures += u32::from(unmap_grant_ref(handle).is_err()),
        Err(_) => failures += 1,
    });
    report("grant_map_unmap_cycles", "grant map + unmap", stats, 1);

    let frames: Vec<Frame> = (0..BATCH)
        .map(|_| ok(Frame::alloc_zeroed(), "copy destination"))
        .collect();
    let mut ops: Vec<GnttabCopy> = frames
        .iter()
        .map(|frame| GnttabCopy {
            source: GnttabCopyPtr {
                ref_or_mfn: u64::from(ECHO_GREF),
                domid: echo,
                offset: 0,
            },
            dest: GnttabCopyPtr {
                ref_or_mfn: frame.mfn(),
                domid: 0,
                offset: 0,
            },
            len: 4096,
            flags: GNTCOPY_SOURCE_GREF,
            ..GnttabCopy::default()
        })
        .collect();
    let mut copy = |ops: &mut [GnttabCopy]| {
        // SAFETY: every destination is one of `frames`, which this function
        // holds and no Rust reference covers.
        let r = unsafe { grants::grant_copy(ops) };
        failures += u32::from(r.is_err()) + ops.iter().filter(|op| op.status != 0).count() as u32;
    };
    let b1 = measure(32, 100, || copy(&mut ops[..1]));
    report(
        "grant_copy_4k_b1_cycles",
        "grant copy 4 KiB, batch 1, per copy",
        b1,
        1,
    );
    let b16 = measure(32, 20, || copy(&mut ops[..]));
    report(
        "grant_copy_4k_b16_cycles",
        "grant copy 4 KiB, batch 16, per copy",
        b16,
        BATCH as u64,
    );
    assert_eq!(
        frames[BATCH - 1].read_u64(1),
        0xec40_0000_0000_0001,
        "hvbench: the grant copy did not copy the echo page"
    );

    let (src, dst) = (frames[0].va(), frames[1].va());
    let memcpy = measure(32, 100, || arch::copy_page(src, dst));
    report(
        "memcpy_4k_cycles",
        "in-guest memcpy 4 KiB, rep movsq",
        memcpy,
        1,
    );
    match Hundredths::ratio(b16.median / BATCH as u64, memcpy.median) {
        Some(ratio) => println!("BENCH name=grant_copy_4k_ratio value={ratio} unit=ratio"),
        None => println!("hvbench: memcpy measured 0 cycles; no ratio"),
    }
    assert_eq!(failures, 0, "hvbench: {failures} grant operations failed");
    drop(frames);

    // Tell the echo domain we are done: write its "done" word with a grant
    // copy (no mapping is left behind).
    let mut word = ok(Frame::alloc_zeroed(), "done word");
    word.write_u64(0, DONE);
    let mut done = GnttabCopy {
        source: GnttabCopyPtr {
            ref_or_mfn: word.mfn(),
            domid: 0,
            offset: 0,
        },
        dest: GnttabCopyPtr {
            ref_or_mfn: u64::from(ECHO_GREF),
            domid: echo,
            offset: DONE_OFFSET,
        },
        len: 8,
        flags: GNTCOPY_DEST_GREF,
        ..GnttabCopy::default()
    };
    // SAFETY: the destination is the echo domain's granted page, not memory
    // of ours.
    ok(
        unsafe { grants::grant_copy(core::slice::from_mut(&mut done)) },
        "writing the done word",
    );
    assert_eq!(done.status, 0, "hvbench: writing the done word failed");
    drop(word);
    ok(events::notify(port), "notifying the echo domain");
    ok(events::close(port), "closing the echo port");
}

#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod arch {
    /// Copies the 4 KiB page at `src` to `dst` with `rep movsq`.
    pub fn copy_page(src: u64, dst: u64) {
        // SAFETY: `src` and `dst` are the physmap pages of two distinct
        // frames the caller holds (`Frame`s, which no Rust reference covers);
        // `rep movsq` copies exactly 512 quadwords forwards (DF is clear in
        // Rust code) and changes only rcx, rsi, rdi.
        unsafe {
            core::arch::asm!(
                "rep movsq",
                inout("rcx") 512u64 => _,
                inout("rsi") src => _,
                inout("rdi") dst => _,
                options(nostack, preserves_flags),
            );
        }
    }
}

#[cfg(not(target_os = "none"))]
mod arch {
    pub fn copy_page(_src: u64, _dst: u64) {
        unreachable!("hvbench only runs under Paravane")
    }
}
