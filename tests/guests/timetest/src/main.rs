//! `timetest`: checks the PV clock and timers (SPEC.md TIME-1, TIME-2):
//! system time read from vcpu_info without a hypercall is monotonic and runs
//! at the right rate, the wallclock is sane, `set_timer_op` raises VIRQ_TIMER
//! on time (seen through `sched_op(poll)`), a past deadline fires at once,
//! and a poll timeout returns.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::{fence, Ordering};

use hypercall_abi::evtchn::{EvtchnBindVirq, Port, EVTCHNOP_BIND_VIRQ, VIRQ_TIMER};
use hypercall_abi::sched::{SchedPoll, SCHEDOP_POLL};
use hypercall_abi::shared_info::SharedInfo;
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::{Errno, Hypercall};
use pv_guest_kit::hypercall::{hypercall_raw, sched_yield};
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

const MS: u64 = 1_000_000;

fn shared(si: &StartInfo) -> *const SharedInfo {
    si.shared_info as *const SharedInfo
}

/// System time in ns from vcpu_info 0 (the version-checked read of TIME-1).
fn now(si: &StartInfo) -> u64 {
    let vi = shared(si);
    loop {
        // SAFETY: shared_info is mapped read-write for the whole life of the
        // domain (start_info.shared_info); these are plain field reads.
        let (v0, ts, st, mul, shift) = unsafe {
            let vi = core::ptr::addr_of!((*vi).vcpu_info[0]);
            let v0 = core::ptr::read_volatile(core::ptr::addr_of!((*vi).time_version));
            fence(Ordering::Acquire);
            (
                v0,
                core::ptr::read_volatile(core::ptr::addr_of!((*vi).tsc_timestamp)),
                core::ptr::read_volatile(core::ptr::addr_of!((*vi).system_time)),
                core::ptr::read_volatile(core::ptr::addr_of!((*vi).tsc_to_system_mul)),
                core::ptr::read_volatile(core::ptr::addr_of!((*vi).tsc_shift)),
            )
        };
        let tsc = pv_guest_kit::bench::rdtsc();
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let v1 = unsafe {
            core::ptr::read_volatile(core::ptr::addr_of!((*shared(si)).vcpu_info[0].time_version))
        };
        if v0 == v1 && v0 & 1 == 0 {
            let delta = tsc.wrapping_sub(ts);
            let shifted = if shift >= 0 {
                delta << shift
            } else {
                delta >> (-shift)
            };
            return st + ((u128::from(shifted) * u128::from(mul)) >> 32) as u64;
        }
    }
}

fn call(nr: Hypercall, args: [u64; 5]) -> Result<u64, Errno> {
    // SAFETY: every call below passes either plain values or pointers to
    // live locals of the right type.
    Errno::check(unsafe { hypercall_raw(nr.number(), args) })
}

fn poll(port: Port, timeout: u64) -> Result<u64, Errno> {
    let ports = [port];
    let p = SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: 1,
        pad: 0,
        timeout,
    };
    call(
        Hypercall::SchedOp,
        [SCHEDOP_POLL, &p as *const SchedPoll as u64, 0, 0, 0],
    )
}

fn pending(si: &StartInfo, port: Port) -> bool {
    // SAFETY: a read of the shared pending bitmap.
    let word = unsafe {
        core::ptr::read_volatile(core::ptr::addr_of!(
            (*shared(si)).evtchn_pending[(port / 64) as usize]
        ))
    };
    word & (1 << (port % 64)) != 0
}

fn clear_pending(si: &StartInfo, port: Port) {
    let word = si.shared_info
        + core::mem::offset_of!(SharedInfo, evtchn_pending) as u64
        + u64::from(port / 64) * 8;
    // SAFETY: the guest owns clearing its pending bits (EVT-3); the word is
    // an aligned u64 of the mapped shared_info page.
    unsafe { core::sync::atomic::AtomicU64::from_ptr(word as *mut u64) }
        .fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
}

fn kmain(si: &'static StartInfo) {
    // 1. Monotonic, across reads and yields.
    let mut last = now(si);
    for i in 0..2000 {
        let t = now(si);
        assert!(t >= last, "time went backwards: {t} < {last}");
        last = t;
        if i % 100 == 0 {
            sched_yield();
        }
    }
    println!(
        "timetest: system time is monotonic ({} ms since boot)",
        last / MS
    );

    // 2. Wallclock.
    // SAFETY: reads of the shared wallclock fields.
    let wc_sec = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*shared(si)).wc_sec)) };
    let now_sec = wc_sec + now(si) / 1_000_000_000;
    assert!(
        (1_704_067_200..4_102_444_800).contains(&now_sec),
        "wallclock {now_sec} is not between 2024 and 2100"
    );
    println!("timetest: wallclock {now_sec} s since the epoch");

    // 3. A timer 20 ms out raises VIRQ_TIMER, seen by poll.
    let mut bind = EvtchnBindVirq {
        virq: VIRQ_TIMER,
        vcpu: 0,
        port: 0,
        pad: 0,
    };
    call(
        Hypercall::EvtchnOp,
        [EVTCHNOP_BIND_VIRQ, &mut bind as *mut _ as u64, 0, 0, 0],
    )
    .expect("bind VIRQ_TIMER");
    let port = bind.port;
    let start = now(si);
    call(Hypercall::SetTimerOp, [start + 20 * MS, 0, 0, 0, 0]).expect("set_timer_op");
    poll(port, 0).expect("poll");
    let waited = now(si) - start;
    assert!(
        pending(si, port),
        "poll returned without the timer port pending"
    );
    assert!(waited >= 20 * MS, "timer fired early: after {waited} ns");
    assert!(waited < 500 * MS, "timer fired late: after {waited} ns");
    println!("timetest: a 20 ms timer fired after {} ms", waited / MS);
    clear_pending(si, port);

    // 4. A deadline in the past fires at once.
    call(Hypercall::SetTimerOp, [1, 0, 0, 0, 0]).expect("set_timer_op(past)");
    assert!(pending(si, port), "a past deadline did not fire at once");
    clear_pending(si, port);
    println!("timetest: a past deadline fired at once");

    // 5. A poll timeout returns with nothing pending.
    let start = now(si);
    poll(port, start + 10 * MS).expect("poll with timeout");
    let waited = now(si) - start;
    assert!(!pending(si, port));
    assert!(
        waited >= 10 * MS,
        "poll timeout returned early: after {waited} ns"
    );
    println!(
        "timetest: a 10 ms poll timeout returned after {} ms",
        waited / MS
    );

    // 6. Cancelling a timer.
    call(Hypercall::SetTimerOp, [now(si) + 5 * MS, 0, 0, 0, 0]).expect("arm");
    call(Hypercall::SetTimerOp, [0, 0, 0, 0, 0]).expect("cancel");
    poll(port, now(si) + 20 * MS).expect("poll");
    assert!(!pending(si, port), "a cancelled timer fired");
    println!("timetest: all checks passed");
}
