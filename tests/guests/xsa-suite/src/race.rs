//! Races between vCPUs of one domain on the frame table (XSA-401: racing
//! type-count acquisition). Two vCPUs on two pCPUs try, thousands of times,
//! to give the same frame two incompatible types at once (SPEC §7, MM-2:
//! a page-table frame has no writable mapping), and vCPU 0 checks after
//! every round that at most one side won and that the winner's state holds.
//!
//! Rounds: vCPU 0 publishes the round's variant and delays, then releases
//! vCPU 1 through [`GO`]; both wait their delay (a sweep, so that either side
//! goes first in some rounds and they collide in others: the delays follow
//! the point where each side wins half of the rounds) and make their
//! hypercall; vCPU 1 publishes its result and vCPU 0 judges and cleans up.
//! The test requires each side to win some rounds and some rounds to have
//! both hypercalls in flight at once (TSC stamps around each call; the TSC
//! is shared), so it cannot pass without racing.
//! vCPU 1 only makes raw hypercalls and probes memory: it never touches the
//! kit's page-table batch or allocator, which serve vCPU 0.
//!
//! # Invariants checked
//! - pin vs writable map: exactly one succeeds, the loser gets `EBUSY`;
//!   after a won pin the scratch entry is empty and a write through it
//!   faults; after a won map the pin was refused and the write works.
//! - pin vs pin (L1/L2, or L1/L1): exactly one succeeds; the loser gets
//!   `EINVAL` (already pinned), and the winner's type stands (a writable
//!   map of the frame is refused with `EBUSY`).
//! - unpin vs map: the unpin always succeeds; a map that won leaves a frame
//!   that can no longer be pinned (`EBUSY`).
//! - stale TLB: vCPU 1 writes through a writable mapping vCPU 0 removes and
//!   then pins the frame as an L1; once the pin has returned no write of
//!   vCPU 1 may succeed, and the validated table never changes.

use core::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use hypercall_abi::mm::{
    pte, MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_UNPIN_TABLE, UVMF_INVLPG, UVMF_NONE,
};
use hypercall_abi::Errno;
use pv_guest_kit::mm::pagetable::ReadOnlyFrame;
use pv_guest_kit::mm::{probe, AddressSpace, Frame};
use pv_guest_kit::smp;
use pv_guest_kit::testing::TestReport;
use pv_guest_kit::{hypercall, println};

use crate::attack::{ext1, rdtsc, read_machine, tsc_per_ms, update1, Tables};
use crate::mmu::setup;

/// Scratch region (L4 slot 80) whose one L1 entry the races write.
const SCRATCH: u64 = 0x0000_2800_0000_0000;
/// Rounds per variant.
const ROUNDS: u32 = 1_000;
/// Fewest rounds per variant that count as having tried (a loaded host may
/// slow the rounds down until the time budget ends them).
const MIN_ROUNDS: u32 = 100;
/// Time budget of all variants together, in ms.
const BUDGET_MS: u64 = 30_000;
/// The largest head start either side gets, in µs.
const MAX_BIAS_US: u64 = 200;
/// How long vCPU 0 waits for vCPU 1 in one round before giving up, in ms.
const ROUND_TIMEOUT_MS: u64 = 2_000;

/// What the two vCPUs do in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
enum Variant {
    /// vCPU 0 pins the frame as an L1; vCPU 1 maps it writable
    /// (`mmu_update` on even rounds, `update_va_mapping` on odd ones).
    PinVsMap = 1,
    /// vCPU 0 pins it as an L1; vCPU 1 pins it as an L2 (even rounds) or as
    /// an L1 too (odd rounds).
    PinVsPin = 2,
    /// The frame starts pinned as an L1; vCPU 0 unpins it while vCPU 1 maps
    /// it writable.
    UnpinVsMap = 3,
    /// vCPU 1 keeps writing through a writable mapping; vCPU 0 removes the
    /// mapping (no flush) and pins the frame as an L1.
    StaleTlb = 4,
}

impl Variant {
    const ALL: [Variant; 4] = [
        Variant::PinVsMap,
        Variant::PinVsPin,
        Variant::UnpinVsMap,
        Variant::StaleTlb,
    ];

    fn name(self) -> &'static str {
        match self {
            Variant::PinVsMap => "pin L1 vs writable map",
            Variant::PinVsPin => "pin L1 vs pin L2/L1",
            Variant::UnpinVsMap => "unpin vs writable map",
            Variant::StaleTlb => "pin L1 vs writes through a stale TLB entry",
        }
    }
}

/// The round vCPU 1 may start (`u32::MAX`: stop).
static GO: AtomicU32 = AtomicU32::new(0);
/// The round's variant and vCPU 1's delay in TSC ticks.
static VARIANT: AtomicU32 = AtomicU32::new(0);
static DELAY_1: AtomicU64 = AtomicU64::new(0);
/// The frame raced over, its scratch mapping and that mapping's L1 entry.
static FRAME_MFN: AtomicU64 = AtomicU64::new(0);
static SCRATCH_L1E: AtomicU64 = AtomicU64::new(0);
/// vCPU 1: the round it is ready in (stale-TLB variant: its TLB is hot).
static READY: AtomicU32 = AtomicU32::new(0);
/// vCPU 0: the round whose pin has returned successfully (stale-TLB).
static PINNED: AtomicU32 = AtomicU32::new(0);
/// vCPU 1: its result (raw hypercall return, or writes that succeeded
/// after [`PINNED`] named the round) and the round it belongs to.
static RESULT: AtomicI64 = AtomicI64::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
/// vCPU 1: writes that succeeded after [`PINNED`] named the round, live
/// (vCPU 0 reads it if vCPU 1 never stops writing).
static LATE: AtomicU64 = AtomicU64::new(0);
/// vCPU 1: TSC when its hypercall of the round began and returned.
static CALL_1: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));
/// vCPU 0: word 0 of the raced frame right after a won pin (stale-TLB).
static AFTER_PIN: AtomicU64 = AtomicU64::new(0);

/// Spins until `ticks` TSC ticks have passed.
fn delay(ticks: u64) {
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

fn raw_result(r: Result<(), Errno>) -> i64 {
    match r {
        Ok(()) => 0,
        Err(e) => -i64::from(e.0),
    }
}

fn errno_of(raw: i64) -> Result<(), Errno> {
    Errno::check(raw).map(|_| ())
}

/// The writable entry mapping the raced frame.
fn rw_entry() -> u64 {
    (FRAME_MFN.load(Ordering::Relaxed) << 12) | pte::P | pte::RW
}

/// vCPU 1: waits for each round, plays its side, reports.
extern "C" fn racer(me: u64, _arg: u64) -> ! {
    let mut round = 0u32;
    loop {
        let go = loop {
            let go = GO.load(Ordering::Acquire);
            if go != round {
                break go;
            }
            core::hint::spin_loop();
        };
        if go == u32::MAX {
            let _ = smp::down(me as u32);
            loop {
                core::hint::spin_loop();
            }
        }
        round = go;
        let variant = VARIANT.load(Ordering::Acquire);
        let l1e = SCRATCH_L1E.load(Ordering::Relaxed);
        let mfn = FRAME_MFN.load(Ordering::Relaxed);
        if variant == Variant::StaleTlb as u32 {
            RESULT.store(stale_tlb_writer(round), Ordering::Relaxed);
        } else {
            delay(DELAY_1.load(Ordering::Relaxed));
            CALL_1.0.store(rdtsc(), Ordering::Relaxed);
            let result = match variant {
                v if (v == Variant::PinVsMap as u32 || v == Variant::UnpinVsMap as u32)
                    && round.is_multiple_of(2) =>
                {
                    update1(l1e, rw_entry())
                }
                v if v == Variant::PinVsMap as u32 || v == Variant::UnpinVsMap as u32 => {
                    // SAFETY: the scratch page maps nothing Rust uses; a
                    // wrongly accepted mapping is what vCPU 0 checks for.
                    unsafe { hypercall::update_va_mapping(SCRATCH, rw_entry(), UVMF_NONE) }
                }
                _ if round.is_multiple_of(2) => ext1(MMUEXT_PIN_L2_TABLE, mfn),
                _ => ext1(MMUEXT_PIN_L1_TABLE, mfn),
            };
            CALL_1.1.store(rdtsc(), Ordering::Relaxed);
            RESULT.store(raw_result(result), Ordering::Relaxed);
        }
        DONE.store(round, Ordering::Release);
    }
}

/// vCPU 1's side of a stale-TLB round: warms its TLB with a write, says it
/// is ready, then writes until a write faults. Returns how many writes
/// succeeded after vCPU 0 had published a successful pin (must be 0), or -1
/// if the first write already faulted, -2 if no write ever faulted.
fn stale_tlb_writer(round: u32) -> i64 {
    // SAFETY: SCRATCH maps only the raced frame, which no Rust reference
    // covers.
    if unsafe { probe::write_u64(SCRATCH, 0) }.is_err() {
        READY.store(round, Ordering::Release);
        return -1;
    }
    READY.store(round, Ordering::Release);
    let mut late = 0i64;
    for seq in 1..50_000_000u64 {
        let pinned = PINNED.load(Ordering::Acquire) == round;
        // Non-present "entries" (bit 0 clear): harmless to validate, but
        // they show whether a write landed.
        // SAFETY: as above.
        match unsafe { probe::write_u64(SCRATCH, seq << 1) } {
            Ok(()) if pinned => {
                late += 1;
                LATE.fetch_add(1, Ordering::Relaxed);
            }
            Ok(()) => {}
            Err(_) => return late,
        }
    }
    -2
}

/// What one round of a variant came to, from vCPU 0's view.
#[derive(Default)]
struct Tally {
    rounds: u32,
    first_won: u32,
    second_won: u32,
    both: u32,
    refusals: u32,
    /// Rounds whose two hypercalls overlapped in time.
    overlapped: u32,
    /// Ticks vCPU 0 waits more than vCPU 1 (negative: less); moves after
    /// each round towards the side that lost.
    bias: i64,
}

/// The race's fixed parts: the frame (read-only in the physmap, so it can
/// become a table) and its scratch mapping.
struct Arena {
    frame: ReadOnlyFrame,
    l1e: u64,
    /// TSC ticks of the largest delay in a sweep.
    spread: u64,
}

/// One round as vCPU 0; returns `false` once the test must stop.
fn round(r: &mut TestReport, a: &Arena, variant: Variant, n: u32, tally: &mut Tally) -> bool {
    let mfn = a.frame.mfn();
    // The delays aim at the balance point where each side wins half of
    // the rounds (`bias`, positive: vCPU 0 waits), jittered by up to
    // `spread` either way, so most rounds land in the contested window.
    let step = i64::from(n.wrapping_mul(7_919) % 1_024) - 512;
    let jitter = (a.spread as i64).saturating_mul(step) / 512;
    let at = tally.bias.saturating_add(jitter);
    let (delay0, delay1) = (at.max(0) as u64, at.min(0).unsigned_abs());
    if variant == Variant::UnpinVsMap
        && r.setup("pinning before the round", ext1(MMUEXT_PIN_L1_TABLE, mfn))
            .is_none()
    {
        return false;
    }
    VARIANT.store(variant as u32, Ordering::Relaxed);
    LATE.store(0, Ordering::Relaxed);
    let mut call_0 = (0, 0);
    DELAY_1.store(delay1, Ordering::Relaxed);
    GO.store(n, Ordering::Release);
    let mine = if variant == Variant::StaleTlb {
        if !wait_for(&READY, n) {
            r.error(format_args!("{}: vCPU 1 never got ready", variant.name()));
            return false;
        }
        delay(delay0);
        let unmapped = update1(a.l1e, 0);
        let pinned = ext1(MMUEXT_PIN_L1_TABLE, mfn);
        if pinned.is_ok() {
            PINNED.store(n, Ordering::Release);
            AFTER_PIN.store(a.frame.read_u64(0), Ordering::Relaxed);
        }
        if unmapped.is_err() {
            r.error(format_args!(
                "{}: removing the mapping failed",
                variant.name()
            ));
            return false;
        }
        pinned
    } else {
        delay(delay0);
        let start = rdtsc();
        let mine = match variant {
            Variant::UnpinVsMap => ext1(MMUEXT_UNPIN_TABLE, mfn),
            _ => ext1(MMUEXT_PIN_L1_TABLE, mfn),
        };
        call_0 = (start, rdtsc());
        mine
    };
    if !wait_for(&DONE, n) {
        let late = LATE.load(Ordering::Relaxed);
        if late > 0 {
            r.fail(format_args!(
                "{}: round {n}: vCPU 1 keeps writing into the frame pinned as an L1 ({late} writes after the pin)",
                variant.name()
            ));
        } else {
            r.error(format_args!(
                "{}: vCPU 1 never finished round {n}",
                variant.name()
            ));
        }
        return false;
    }
    let theirs = RESULT.load(Ordering::Relaxed);
    tally.rounds += 1;
    // The two hypercalls overlapped in time (the TSC is shared).
    let call_1 = (
        CALL_1.0.load(Ordering::Relaxed),
        CALL_1.1.load(Ordering::Relaxed),
    );
    if variant != Variant::StaleTlb && call_0.0 < call_1.1 && call_1.0 < call_0.1 {
        tally.overlapped += 1;
    }
    let won_before = tally.first_won;
    let ok = match variant {
        Variant::PinVsMap => judge_pin_vs_map(r, a, n, mine, errno_of(theirs), tally),
        Variant::PinVsPin => judge_pin_vs_pin(r, mfn, a.l1e, n, mine, errno_of(theirs), tally),
        Variant::UnpinVsMap => judge_unpin_vs_map(r, a, n, mine, errno_of(theirs), tally),
        Variant::StaleTlb => judge_stale_tlb(r, a, n, mine, theirs, tally),
    };
    // vCPU 0 won: let it wait longer next time; else shorter (within
    // `MAX_BIAS_US` either way, so a descheduled vCPU cannot drag the
    // rounds out).
    let nudge = (a.spread as i64 / 8).max(1);
    let limit = (tsc_per_ms() * MAX_BIAS_US / 1_000) as i64;
    tally.bias = if variant == Variant::StaleTlb {
        // No one to balance against: vCPU 1 writes all the time.
        0
    } else if tally.first_won > won_before {
        tally.bias.saturating_add(nudge)
    } else {
        tally.bias.saturating_sub(nudge)
    }
    .clamp(-limit, limit);
    ok
}

/// Waits (bounded) until `flag` names round `n`.
fn wait_for(flag: &AtomicU32, n: u32) -> bool {
    let limit = tsc_per_ms() * ROUND_TIMEOUT_MS;
    let start = rdtsc();
    while flag.load(Ordering::Acquire) != n {
        if rdtsc().wrapping_sub(start) > limit {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Whether a write through the scratch page works (and faults otherwise).
fn scratch_writable() -> bool {
    // SAFETY: SCRATCH maps at most the raced frame, which no Rust reference
    // covers; writing 0 keeps it a valid (empty) table.
    unsafe { probe::write_u64(SCRATCH, 0) }.is_ok()
}

/// Removes the scratch mapping and this vCPU's translation of it.
fn unmap_scratch() -> Result<(), Errno> {
    // SAFETY: the scratch page maps nothing Rust uses.
    unsafe { hypercall::update_va_mapping(SCRATCH, 0, UVMF_INVLPG) }
}

fn judge_pin_vs_map(
    r: &mut TestReport,
    a: &Arena,
    n: u32,
    pin: Result<(), Errno>,
    map: Result<(), Errno>,
    tally: &mut Tally,
) -> bool {
    let mfn = a.frame.mfn();
    match (pin, map) {
        (Ok(()), Err(Errno::EBUSY)) => {
            tally.first_won += 1;
            tally.refusals += 1;
            let entry = read_machine(a.l1e).unwrap_or(u64::MAX);
            if entry != 0 || scratch_writable() {
                r.fail(format_args!(
                    "round {n}: the frame is pinned as an L1 yet mapped ({entry:#x}) or writable"
                ));
                return false;
            }
            ext1(MMUEXT_UNPIN_TABLE, mfn).is_ok() || fail(r, n, "unpinning after a won pin")
        }
        (Err(Errno::EBUSY), Ok(())) => {
            tally.second_won += 1;
            tally.refusals += 1;
            if !scratch_writable() {
                r.fail(format_args!(
                    "round {n}: the winning writable map does not write"
                ));
                return false;
            }
            unmap_scratch().is_ok() || fail(r, n, "removing the winning map")
        }
        (pin, map) => {
            if pin.is_ok() && map.is_ok() {
                tally.both += 1;
            }
            r.fail(format_args!(
                "round {n}: pin as L1 {pin:?} and writable map {map:?}: exactly one must win, the other with EBUSY"
            ));
            false
        }
    }
}

fn judge_pin_vs_pin(
    r: &mut TestReport,
    mfn: u64,
    l1e: u64,
    n: u32,
    mine: Result<(), Errno>,
    theirs: Result<(), Errno>,
    tally: &mut Tally,
) -> bool {
    // Whichever pin comes second finds the frame pinned (`-EINVAL`, SPEC
    // §7 MMUEXT table), whatever level either asked for.
    let loser = Errno::EINVAL;
    match (mine, theirs) {
        (Ok(()), Err(e)) if e == loser => tally.first_won += 1,
        (Err(e), Ok(())) if e == loser => tally.second_won += 1,
        (mine, theirs) => {
            if mine.is_ok() && theirs.is_ok() {
                tally.both += 1;
            }
            r.fail(format_args!(
                "round {n}: pin as L1 {mine:?} and pin as L{} {theirs:?}: exactly one must win, the other with {loser}",
                if n.is_multiple_of(2) { 2 } else { 1 }
            ));
            return false;
        }
    }
    tally.refusals += 1;
    // The winner's table type stands: no writable mapping of the frame.
    let map = update1(l1e, rw_entry());
    if map != Err(Errno::EBUSY) {
        r.fail(format_args!(
            "round {n}: mapping the pinned frame writable gave {map:?} (want EBUSY)"
        ));
        return false;
    }
    ext1(MMUEXT_UNPIN_TABLE, mfn).is_ok() || fail(r, n, "unpinning the winner")
}

fn judge_unpin_vs_map(
    r: &mut TestReport,
    a: &Arena,
    n: u32,
    unpin: Result<(), Errno>,
    map: Result<(), Errno>,
    tally: &mut Tally,
) -> bool {
    let mfn = a.frame.mfn();
    if unpin.is_err() {
        r.fail(format_args!(
            "round {n}: unpinning a pinned table failed: {unpin:?}"
        ));
        return false;
    }
    match map {
        Ok(()) => {
            // The unpin came first: the frame is writable memory now, and
            // can only become a table again once the mapping is gone.
            tally.first_won += 1;
            let repin = ext1(MMUEXT_PIN_L1_TABLE, mfn);
            if repin != Err(Errno::EBUSY) || !scratch_writable() {
                r.fail(format_args!(
                    "round {n}: after unpin then writable map, pinning gave {repin:?} (want EBUSY)"
                ));
                return false;
            }
            tally.refusals += 1;
            unmap_scratch().is_ok() || fail(r, n, "removing the map")
        }
        Err(Errno::EBUSY) => {
            // The map came while the frame was still a table.
            tally.second_won += 1;
            tally.refusals += 1;
            if read_machine(a.l1e) != Some(0) || scratch_writable() {
                r.fail(format_args!(
                    "round {n}: a refused map left a writable mapping"
                ));
                return false;
            }
            true
        }
        Err(e) => {
            r.fail(format_args!(
                "round {n}: a writable map racing an unpin failed with {e} (want EBUSY or success)"
            ));
            false
        }
    }
}

fn judge_stale_tlb(
    r: &mut TestReport,
    a: &Arena,
    n: u32,
    pin: Result<(), Errno>,
    late_writes: i64,
    tally: &mut Tally,
) -> bool {
    let mfn = a.frame.mfn();
    match late_writes {
        -1 => {
            return fail(
                r,
                n,
                "vCPU 1's first write through the writable mapping faulted",
            )
        }
        -2 => {
            r.fail(format_args!(
                "round {n}: vCPU 1 kept writing to the frame long after it was unmapped and pinned ({pin:?})"
            ));
            return false;
        }
        0 => {}
        late => {
            r.fail(format_args!(
                "round {n}: {late} writes of vCPU 1 landed after the frame was pinned as an L1"
            ));
            return false;
        }
    }
    if pin.is_err() {
        r.fail(format_args!(
            "round {n}: pinning an unmapped frame as an L1 failed: {pin:?}"
        ));
        return false;
    }
    tally.first_won += 1;
    // vCPU 1's writes after the pin faulted: that is the refusal.
    tally.refusals += 1;
    let validated = AFTER_PIN.load(Ordering::Relaxed);
    let now = a.frame.read_u64(0);
    if now != validated || validated & pte::P != 0 {
        r.fail(format_args!(
            "round {n}: the validated L1's word 0 went from {validated:#x} to {now:#x}"
        ));
        return false;
    }
    if ext1(MMUEXT_UNPIN_TABLE, mfn).is_err() {
        return fail(r, n, "unpinning");
    }
    // Map it writable again for the next round, and clear the word.
    (update1(a.l1e, rw_entry()).is_ok() && scratch_writable())
        || fail(r, n, "mapping the frame writable again")
}

fn fail(r: &mut TestReport, n: u32, what: &str) -> bool {
    r.error(format_args!("round {n}: {what}"));
    false
}

/// TSC ticks of one pin + unpin of `mfn` on vCPU 0 (the median of a few).
fn pin_cost(mfn: u64) -> Option<u64> {
    let mut costs = [0u64; 15];
    for cost in &mut costs {
        let t0 = rdtsc();
        ext1(MMUEXT_PIN_L1_TABLE, mfn).ok()?;
        ext1(MMUEXT_UNPIN_TABLE, mfn).ok()?;
        *cost = rdtsc().wrapping_sub(t0);
    }
    costs.sort_unstable();
    Some(costs[costs.len() / 2])
}

/// XSA-401: racing type-count acquisition from two vCPUs (see the module
/// documentation). Needs `vcpus=2`, best on two pCPUs (`pin=0,1`).
pub fn xsa_401(r: &mut TestReport) {
    if smp::nr_vcpus() < 2 {
        r.skip(format_args!("needs two vCPUs (vcpus=2)"));
        return;
    }
    let mut kernel = AddressSpace::kernel();
    let t = setup!(r, "scratch tables", Tables::of(&mut kernel, SCRATCH));
    let frame = setup!(r, "a frame", Frame::alloc_zeroed());
    let frame = setup!(
        r,
        "making the frame read-only in the physmap",
        frame.into_readonly().map_err(|(_, e)| e)
    );
    let spread = setup!(
        r,
        "timing a pin",
        pin_cost(frame.mfn()).ok_or("pin/unpin of a fresh frame failed")
    ) * 4;
    FRAME_MFN.store(frame.mfn(), Ordering::Relaxed);
    SCRATCH_L1E.store(t.l1e, Ordering::Relaxed);
    setup!(r, "starting vCPU 1", smp::start_vcpu(1, racer, 0));
    let a = Arena {
        frame,
        l1e: t.l1e,
        spread,
    };
    let per_ms = tsc_per_ms();
    println!(
        "xsa-401: racing on mfn {:#x}; delays swept over 0..{} us",
        a.frame.mfn(),
        spread * 1_000 / per_ms.max(1)
    );
    let start = rdtsc();
    let budget = per_ms * BUDGET_MS;
    let mut n = 0u32;
    let mut ok = true;
    for (i, variant) in Variant::ALL.into_iter().enumerate() {
        let mut tally = Tally::default();
        if variant == Variant::StaleTlb
            && r.setup("mapping the frame writable", update1(a.l1e, rw_entry()))
                .is_none()
        {
            ok = false;
        }
        // Each variant gets its share of what is left of the budget.
        let left = budget.saturating_sub(rdtsc().wrapping_sub(start));
        let share = left / (Variant::ALL.len() - i) as u64;
        let v_start = rdtsc();
        while ok && tally.rounds < ROUNDS && rdtsc().wrapping_sub(v_start) < share {
            n += 1;
            ok = round(r, &a, variant, n, &mut tally);
        }
        if variant == Variant::StaleTlb && ok {
            ok = unmap_scratch().is_ok();
        }
        if !ok {
            break;
        }
        let ms = rdtsc().wrapping_sub(v_start) / per_ms.max(1);
        if variant == Variant::StaleTlb {
            println!(
                "xsa-401: {}: {} rounds in {ms} ms: every pin held and vCPU 1's next write faulted",
                variant.name(),
                tally.rounds
            );
        } else {
            println!(
                "xsa-401: {}: {} rounds in {ms} ms ({} with both hypercalls in flight at once): vCPU 0 won {}, vCPU 1 won {}, both {}; balance at vCPU 0 {} us later",
                variant.name(),
                tally.rounds,
                tally.overlapped,
                tally.first_won,
                tally.second_won,
                tally.both,
                tally.bias * 1_000 / per_ms.max(1) as i64
            );
        }
        r.check(
            tally.rounds >= MIN_ROUNDS && tally.refusals == tally.rounds,
            format_args!(
                "{}: {} rounds, a refusal observed in every one",
                variant.name(),
                tally.rounds
            ),
        );
        if variant != Variant::StaleTlb {
            r.check(
                tally.first_won > 0 && tally.second_won > 0 && tally.overlapped > 0,
                format_args!(
                    "{}: each vCPU won some rounds, some with both calls in flight",
                    variant.name()
                ),
            );
        }
    }
    GO.store(u32::MAX, Ordering::Release);
    // vCPU 1 takes itself down.
    let limit = per_ms * ROUND_TIMEOUT_MS;
    let t0 = rdtsc();
    while smp::is_up(1) == Ok(true) && rdtsc().wrapping_sub(t0) < limit {
        core::hint::spin_loop();
    }
    if !ok {
        // A round that stopped early may have left the frame pinned.
        let _ = ext1(MMUEXT_UNPIN_TABLE, a.frame.mfn());
    }
    match a.frame.into_writable() {
        Ok(frame) => drop(frame),
        Err(_) => r.fail(format_args!("the raced frame kept a page-table type")),
    }
    let _ = kernel.destroy();
}
