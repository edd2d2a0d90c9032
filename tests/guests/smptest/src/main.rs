//! `smptest`: an SMP guest (SPEC.md HC-21) that checks, on its `vcpus=`
//! vCPUs (the `smp` scenario gives it 4 on a 4-CPU machine):
//!
//! 1. **Concurrency**: a token passed around all vCPUs through shared memory,
//!    no hypercalls, no blocking. On distinct pCPUs it circulates thousands
//!    of times per second; time-shared on one pCPU it would move once per
//!    time slice (at most ~100 passes/s at the default 10 ms). The test asks
//!    for at least 500 passes/s, and reports the pCPU each vCPU ran on.
//! 2. **Time**: every vCPU reads system time under one lock and compares it
//!    with the previous reading (from any vCPU): it never goes backwards.
//! 3. **TLB shootdown**: vCPU 1 keeps reading a page vCPU 0 mapped; vCPU 0
//!    unmaps it with `UVMF_INVLPG | UVMF_ALL`; right after the hypercall
//!    returns, vCPU 1's next read must fault.
//! 4. **Down/up**: vCPU 0 takes the last vCPU down (its counter stops), and up
//!    again (it resumes).
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use hypercall_abi::mm::{UVMF_ALL, UVMF_INVLPG};
use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::mm::{self, probe, AddressSpace, Frame};
use pv_guest_kit::smp::{self, SpinLock};
use pv_guest_kit::time::now_ns;
use pv_guest_kit::{hypercall, println};

pv_guest_kit::entry!(kmain);

const MS: u64 = 1_000_000;
/// Token passes the concurrency test makes.
const PASSES: u32 = 4_000;
/// Fewest passes per second that show the vCPUs ran at once.
const MIN_PASSES_PER_SEC: u64 = 500;
/// Time readings per vCPU.
const READINGS: u32 = 20_000;
/// Where vCPU 0 maps the page vCPU 1 reads.
const SHOOT_VA: u64 = 0x7000_0000;

static NR: AtomicU32 = AtomicU32::new(0);
static ARRIVED: AtomicU32 = AtomicU32::new(0);
static TOKEN: AtomicU32 = AtomicU32::new(0);
static PHASE: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static PCPU: [AtomicU32; 32] = [const { AtomicU32::new(u32::MAX) }; 32];
static PROGRESS: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];

/// The last system time read under the lock, and how many readings went
/// backwards / were compared with another vCPU's reading.
struct Clock {
    last: u64,
    last_vcpu: u32,
    backwards: u32,
    cross: u32,
}
static CLOCK: SpinLock<Clock> = SpinLock::new(Clock {
    last: 0,
    last_vcpu: 0,
    backwards: 0,
    cross: 0,
});

/// TLB shootdown handshake between vCPUs 0 and 1.
static SHOOT_READY: AtomicBool = AtomicBool::new(false);
static SHOOT_UNMAPPED: AtomicBool = AtomicBool::new(false);
/// 1 = vCPU 1's read after the unmap faulted, 2 = it still read the page.
static SHOOT_RESULT: AtomicU32 = AtomicU32::new(0);

fn fail(what: &str) -> ! {
    println!("smptest: FAILED: {what}");
    hypercall::shutdown(hypercall_abi::sched::SHUTDOWN_CRASH)
}

fn wait_phase(p: u32) {
    while PHASE.load(Ordering::Acquire) < p {
        core::hint::spin_loop();
    }
}

/// Everyone's part of test 1: pass the token on when it is ours.
fn token_ring(me: u32) {
    let n = NR.load(Ordering::Relaxed);
    loop {
        let t = TOKEN.load(Ordering::Acquire);
        if t >= PASSES {
            return;
        }
        if t % n == me {
            TOKEN.store(t + 1, Ordering::Release);
        } else {
            core::hint::spin_loop();
        }
    }
}

/// Everyone's part of test 2.
fn read_clock(me: u32) {
    for _ in 0..READINGS {
        let mut c = CLOCK.lock();
        let t = now_ns();
        if t < c.last {
            c.backwards += 1;
        }
        if c.last_vcpu != me {
            c.cross += 1;
        }
        c.last = t;
        c.last_vcpu = me;
    }
}

fn record_pcpu(me: u32) {
    if let Ok(rs) = hypercall::vcpu_runstate(me) {
        PCPU[me as usize].store(rs.pcpu, Ordering::Relaxed);
    }
}

extern "C" fn secondary(me: u64, _arg: u64) -> ! {
    let me = me as u32;
    ARRIVED.fetch_add(1, Ordering::AcqRel);
    wait_phase(1);
    record_pcpu(me);
    token_ring(me);
    DONE.fetch_add(1, Ordering::AcqRel);
    wait_phase(2);
    read_clock(me);
    DONE.fetch_add(1, Ordering::AcqRel);
    wait_phase(3);
    if me == 1 {
        // Test 3: keep the page's translation hot until told it is gone.
        let mut seen = 0u64;
        while !SHOOT_UNMAPPED.load(Ordering::Acquire) {
            if probe::read_u64(SHOOT_VA).is_ok() {
                seen += 1;
                if seen == 1000 {
                    SHOOT_READY.store(true, Ordering::Release);
                }
            }
        }
        let after = probe::read_u64(SHOOT_VA);
        SHOOT_RESULT.store(if after.is_err() { 1 } else { 2 }, Ordering::Release);
    }
    // Test 4: count until the end (the last vCPU is taken down and up).
    loop {
        PROGRESS[me as usize].fetch_add(1, Ordering::Relaxed);
        core::hint::spin_loop();
    }
}

fn kmain(si: &'static StartInfo) {
    let n = si.nr_vcpus;
    NR.store(n, Ordering::Relaxed);
    println!("smptest: {n} vCPUs");
    if !(2..=32).contains(&n) {
        fail("needs 2..32 vCPUs (vcpus=)");
    }
    for v in 1..n {
        if let Err(e) = smp::start_vcpu(v, secondary, 0) {
            fail(&alloc::format!("starting vCPU {v}: {e:?}"));
        }
    }
    if smp::start_vcpu(1, secondary, 0).is_ok() {
        fail("a vCPU could be initialised twice");
    }
    let deadline = now_ns() + 2_000 * MS;
    while ARRIVED.load(Ordering::Acquire) < n - 1 {
        if now_ns() > deadline {
            fail("secondary vCPUs did not all start within 2 s");
        }
        core::hint::spin_loop();
    }
    println!("smptest: vCPUs 1..{} up", n - 1);

    // 1. Concurrency.
    let t0 = now_ns();
    PHASE.store(1, Ordering::Release);
    record_pcpu(0);
    token_ring(0);
    let elapsed = now_ns() - t0;
    while DONE.load(Ordering::Acquire) < n - 1 {
        core::hint::spin_loop();
    }
    let rate = u64::from(PASSES) * 1_000_000_000 / elapsed.max(1);
    let mut pcpus = alloc::vec::Vec::new();
    for v in 0..n {
        pcpus.push(PCPU[v as usize].load(Ordering::Relaxed));
    }
    println!(
        "smptest: token ring: {PASSES} passes in {} ms ({rate} passes/s); vCPUs on pCPUs {pcpus:?}",
        elapsed / MS
    );
    if rate < MIN_PASSES_PER_SEC {
        fail("the vCPUs did not run concurrently");
    }
    let mut distinct = pcpus.clone();
    distinct.sort_unstable();
    distinct.dedup();
    println!(
        "smptest: concurrency: ok ({} distinct pCPUs)",
        distinct.len()
    );

    // 2. Time across vCPUs.
    DONE.store(0, Ordering::Release);
    PHASE.store(2, Ordering::Release);
    read_clock(0);
    while DONE.load(Ordering::Acquire) < n - 1 {
        core::hint::spin_loop();
    }
    let (backwards, cross) = {
        let c = CLOCK.lock();
        (c.backwards, c.cross)
    };
    println!(
        "smptest: time: {} readings, {cross} after another vCPU's, {backwards} went backwards",
        READINGS * n
    );
    if backwards != 0 {
        fail("system time went backwards across vCPUs");
    }

    // 3. TLB shootdown.
    let frame = Frame::alloc().unwrap_or_else(|_| fail("no frame"));
    let mut kernel = AddressSpace::kernel();
    if kernel.map(SHOOT_VA, frame.pfn(), false).is_err() || mm::flush().is_err() {
        fail("mapping the shootdown page");
    }
    PHASE.store(3, Ordering::Release);
    let deadline = now_ns() + 2_000 * MS;
    while !SHOOT_READY.load(Ordering::Acquire) {
        if now_ns() > deadline {
            fail("vCPU 1 never read the page");
        }
        core::hint::spin_loop();
    }
    // SAFETY: SHOOT_VA maps a frame only this test uses; no Rust reference
    // covers it.
    let unmapped = unsafe { hypercall::update_va_mapping(SHOOT_VA, 0, UVMF_INVLPG | UVMF_ALL) };
    if unmapped.is_err() {
        fail("update_va_mapping(UVMF_ALL)");
    }
    SHOOT_UNMAPPED.store(true, Ordering::Release);
    let result = loop {
        match SHOOT_RESULT.load(Ordering::Acquire) {
            0 => core::hint::spin_loop(),
            r => break r,
        }
    };
    if result != 1 {
        fail("vCPU 1 still read the page after the unmap with UVMF_ALL returned");
    }
    println!("smptest: TLB shootdown: the page faults on vCPU 1 right after the unmap: ok");

    // 4. Down and up.
    let last = n - 1;
    if smp::down(last).is_err() || smp::is_up(last) != Ok(false) {
        fail("taking the last vCPU down");
    }
    if smp::down(0).is_ok() {
        fail("vCPU 0 could be taken down");
    }
    pv_guest_kit::time::spin_until(now_ns() + 20 * MS);
    let a = PROGRESS[last as usize].load(Ordering::Relaxed);
    pv_guest_kit::time::spin_until(now_ns() + 50 * MS);
    let b = PROGRESS[last as usize].load(Ordering::Relaxed);
    if a != b {
        fail("a vCPU that is down kept running");
    }
    if smp::up(last).is_err() || smp::is_up(last) != Ok(true) {
        fail("bringing the last vCPU up");
    }
    let deadline = now_ns() + 2_000 * MS;
    while PROGRESS[last as usize].load(Ordering::Relaxed) == b {
        if now_ns() > deadline {
            fail("the vCPU did not resume after up");
        }
        core::hint::spin_loop();
    }
    println!("smptest: vCPU {last} down (stopped at {b}) and up again (resumed): ok");
    println!("smptest: all SMP checks passed");
    hypercall::shutdown(hypercall_abi::sched::SHUTDOWN_POWEROFF)
}
