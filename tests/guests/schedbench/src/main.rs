//! `schedbench`: the scheduling and SMP figures of `cargo xtask bench`
//! (scenarios `sched-bench` and `switch-bench`). Each figure is the median
//! of batches of TSC deltas (under `-icount shift=0`, instruction counts),
//! reported with its min and, where one exists, a same-boot reference.
//!
//! Command line:
//! - `role=main echo=<domid>` (2 vCPUs, the echo domain pinned to the other
//!   pCPU): `sched_yield_cycles` (nothing else runnable on the pCPU; next to
//!   the null hypercall), `evtchn_pingpong_cross_cpu_cycles` (a round trip to
//!   the echo domain on another pCPU, both blocking in between),
//!   `ipi_roundtrip_cycles` (vCPU 0 → vCPU 1 → vCPU 0 through IPI event
//!   ports, each side polling: two sends, two wake-ups with a reschedule IPI
//!   to the other pCPU).
//! - `role=switch`: `domain_switch_cycles`, half a `sched_op(yield)` round
//!   trip with a `role=yielder` domain on the same pCPU.
//! - `role=yielder until_ms=<t>`: yields until system time `t`, then ends.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hypercall_abi::evtchn::{Port, EVTCHNSTAT_INTERDOMAIN};
use hypercall_abi::grant::{GnttabCopy, GnttabCopyPtr, GNTCOPY_DEST_GREF};
use hypercall_abi::hypercall::VERSION_ABI;
use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::bench::{measure, Hundredths, Stats};
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::{events, hypercall, println, smp, time};

pv_guest_kit::entry!(kmain);

fn fail(what: &str) -> ! {
    println!("schedbench: FAILED: {what}");
    hypercall::shutdown(hypercall_abi::sched::SHUTDOWN_CRASH)
}

fn ok<T>(r: Result<T, hypercall_abi::Errno>, what: &str) -> T {
    r.unwrap_or_else(|e| fail(&alloc::format!("{what}: {e:?}")))
}

fn report(name: &str, what: &str, stats: Stats, per: u64) -> u64 {
    let (min, median) = (stats.min / per, stats.median / per);
    println!("{what}: min {min} median {median} cycles");
    println!("BENCH name={name} value={median} unit=cycles");
    median
}

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    match args.get("role") {
        Some("main") => main_role(args.get_u64("echo").map(|d| d as u32)),
        Some("switch") => switch_role(),
        Some("yielder") => {
            let until = args.get_u64("until_ms").unwrap_or(5_000) * 1_000_000;
            while time::now_ns() < until {
                hypercall::sched_yield();
            }
        }
        _ => fail("role= must be main, switch or yielder"),
    }
    hypercall::shutdown(hypercall_abi::sched::SHUTDOWN_POWEROFF)
}

fn switch_role() {
    let stats = measure(32, 500, hypercall::sched_yield);
    report(
        "domain_switch_cycles",
        "domain switch (half a yield round trip with another domain on the pCPU)",
        stats,
        2,
    );
}

/// Replies the echo domain sent us.
static REPLIES: AtomicU64 = AtomicU64::new(0);

fn on_reply(_port: Port) {
    REPLIES.fetch_add(1, Ordering::Relaxed);
}

fn main_role(echo: Option<u32>) {
    // The echo domain binds to our port 1: allocate it before anything else.
    events::disable();
    let echo_port = echo.map(|d| match events::alloc_unbound(d) {
        Ok(1) => 1,
        Ok(p) => fail(&alloc::format!(
            "the echo port is {p}, the echo domain expects 1"
        )),
        Err(e) => fail(&alloc::format!("allocating the echo port: {e:?}")),
    });

    let null = measure(32, 1000, || {
        let _ = hypercall::version(VERSION_ABI);
    });
    let null = report(
        "sched_null_hypercall_cycles",
        "null hypercall (reference)",
        null,
        1,
    );
    let yields = measure(32, 1000, hypercall::sched_yield);
    let yields = report(
        "sched_yield_cycles",
        "sched_op(yield), nothing else runnable on the pCPU",
        yields,
        1,
    );
    if let Some(r) = Hundredths::ratio(yields, null) {
        println!("BENCH name=sched_yield_ratio value={r} unit=ratio");
    }

    if let Some(port) = echo_port {
        events::set_handler(port, on_reply);
        events::wait_until(|| {
            events::status(port).is_ok_and(|s| s.status == EVTCHNSTAT_INTERDOMAIN)
        });
        let me = ok(hypercall::vcpu_runstate(0), "runstate").pcpu;
        let stats = measure(16, 100, || {
            let before = REPLIES.load(Ordering::Relaxed);
            if events::notify(port).is_err() {
                fail("send to the echo domain");
            }
            events::wait_until(|| REPLIES.load(Ordering::Relaxed) != before);
        });
        println!("schedbench: vCPU 0 on pCPU {me}; the echo domain is pinned elsewhere");
        report(
            "evtchn_pingpong_cross_cpu_cycles",
            "event round trip to another domain on another pCPU",
            stats,
            1,
        );
        if let Some(echo) = echo {
            release_echo(echo, port);
        }
    }
    ipi_roundtrip();
}

/// The echo domain's granted page and its "done" word (see `pingpong`'s
/// echo role).
const ECHO_GREF: u32 = 0;
const DONE_OFFSET: u32 = 4088;
const DONE: u64 = 0xd0_4e;

/// Tells the echo domain we are done: writes its "done" word with a grant
/// copy, notifies, closes the port.
fn release_echo(echo: u32, port: Port) {
    let mut word = ok(
        pv_guest_kit::mm::Frame::alloc_zeroed().map_err(|_| hypercall_abi::Errno::ENOMEM),
        "done word",
    );
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
        unsafe { pv_guest_kit::grants::grant_copy(core::slice::from_mut(&mut done)) },
        "writing the done word",
    );
    if done.status != 0 {
        fail("writing the echo domain's done word");
    }
    ok(events::notify(port), "notifying the echo domain");
    ok(events::close(port), "closing the echo port");
}

/// The IPI ports: vCPU 0 → vCPU 1 (`TO_1`) and back (`TO_0`), and the
/// round trips vCPU 1 must answer.
static TO_0: AtomicU32 = AtomicU32::new(0);
static TO_1: AtomicU32 = AtomicU32::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(0);

extern "C" fn responder(_vcpu: u64, _arg: u64) -> ! {
    let (to_0, to_1) = (TO_0.load(Ordering::Acquire), TO_1.load(Ordering::Acquire));
    loop {
        if hypercall::sched_poll(&[to_1]).is_err() {
            fail("vCPU 1: poll");
        }
        events::clear_pending(to_1);
        ROUNDS.fetch_add(1, Ordering::Relaxed);
        if hypercall::evtchn_send(to_0).is_err() {
            fail("vCPU 1: send");
        }
    }
}

fn ipi_roundtrip() {
    if smp::nr_vcpus() < 2 {
        println!("schedbench: one vCPU; ipi_roundtrip_cycles needs vcpus=2");
        return;
    }
    // Masked ports: the partner polls, no upcalls.
    let to_0 = ok(hypercall::evtchn_bind_ipi(0), "bind IPI port to vCPU 0");
    let to_1 = ok(hypercall::evtchn_bind_ipi(1), "bind IPI port to vCPU 1");
    events::mask(to_0);
    events::mask(to_1);
    TO_0.store(to_0, Ordering::Release);
    TO_1.store(to_1, Ordering::Release);
    ok(smp::start_vcpu(1, responder, 0), "starting vCPU 1");
    let round = || {
        if hypercall::evtchn_send(to_1).is_err() {
            fail("vCPU 0: send");
        }
        if hypercall::sched_poll(&[to_0]).is_err() {
            fail("vCPU 0: poll");
        }
        events::clear_pending(to_0);
    };
    // Warm up until vCPU 1 is running and answering.
    for _ in 0..10 {
        round();
    }
    let stats = measure(16, 100, round);
    let pcpus = (
        ok(hypercall::vcpu_runstate(0), "runstate 0").pcpu,
        ok(hypercall::vcpu_runstate(1), "runstate 1").pcpu,
    );
    println!(
        "schedbench: IPI round trips answered: {} (vCPU 0 on pCPU {}, vCPU 1 on pCPU {})",
        ROUNDS.load(Ordering::Relaxed),
        pcpus.0,
        pcpus.1
    );
    report(
        "ipi_roundtrip_cycles",
        "vCPU-to-vCPU event round trip across pCPUs (send, IPI, wake, poll, both ways)",
        stats,
        1,
    );
}
