//! `schedtest`: one participant of the `sched-weights` scenario, which pins
//! several of them to shared pCPUs with different weights and caps. The
//! scenario's judge compares what they report.
//!
//! Guest command line:
//! - `role=spin label=X from_ms=A to_ms=B`: spins (never blocks) and reports
//!   the CPU time its vCPU got between system times A and B (ms since the
//!   hypervisor booted), as `share=P%` and `cpu_us=N`, read from
//!   `vcpu_op(GET_RUNSTATE)`.
//! - `role=sleep label=X from_ms=A to_ms=B period_ms=P`: between A and B,
//!   sleeps P ms at a time on a one-shot timer (`set_timer_op` + poll on
//!   VIRQ_TIMER) while others spin on its pCPU, and reports how late it woke
//!   up: `max_late_us=` and `median_late_us=` (and the median as the
//!   `wakeup_latency_ns` BENCH figure).
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec::Vec;

use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::time::{now_ns, spin_until};
use pv_guest_kit::{hypercall, println};

pv_guest_kit::entry!(kmain);

const MS: u64 = 1_000_000;

fn fail(what: &str) -> ! {
    println!("schedtest: FAILED: {what}");
    hypercall::shutdown(hypercall_abi::sched::SHUTDOWN_CRASH)
}

fn cpu_time_ns() -> u64 {
    match hypercall::vcpu_runstate(0) {
        Ok(rs) => rs.cpu_time_ns,
        Err(e) => fail(&alloc::format!("vcpu_op(GET_RUNSTATE): {e:?}")),
    }
}

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    let label = args.get("label").unwrap_or("?");
    let from = args.get_u64("from_ms").unwrap_or(300) * MS;
    let to = args.get_u64("to_ms").unwrap_or(2300) * MS;
    if now_ns() >= from {
        fail(&alloc::format!(
            "started at {} ms, after the measurement window opened (raise from_ms)",
            now_ns() / MS
        ));
    }
    match args.get("role") {
        Some("spin") => spin(label, from, to),
        Some("sleep") => sleep(label, from, to, args.get_u64("period_ms").unwrap_or(5) * MS),
        _ => fail("role= must be spin or sleep"),
    }
    hypercall::shutdown(hypercall_abi::sched::SHUTDOWN_POWEROFF)
}

fn spin(label: &str, from: u64, to: u64) {
    spin_until(from);
    let (t0, c0) = (now_ns(), cpu_time_ns());
    spin_until(to);
    let (t1, c1) = (now_ns(), cpu_time_ns());
    let cpu = c1 - c0;
    let wall = (t1 - t0).max(1);
    println!(
        "schedtest {label}: share={}.{}% cpu_us={} wall_us={}",
        cpu * 100 / wall,
        cpu * 1000 / wall % 10,
        cpu / 1000,
        wall / 1000
    );
}

fn sleep(label: &str, from: u64, to: u64, period: u64) {
    spin_until(from);
    let mut late: Vec<u64> = Vec::new();
    while now_ns() + period < to {
        let deadline = now_ns() + period;
        if pv_guest_kit::time::sleep_until(0, deadline).is_err() {
            fail("sleeping on the vCPU's timer");
        }
        late.push(now_ns() - deadline);
    }
    if late.is_empty() {
        fail("no sleeps in the window");
    }
    late.sort_unstable();
    println!(
        "schedtest {label}: {} sleeps of {} ms, median_late_us={} max_late_us={}",
        late.len(),
        period / MS,
        late[late.len() / 2] / 1000,
        late[late.len() - 1] / 1000
    );
    println!(
        "BENCH name=wakeup_latency_ns value={} unit=ns",
        late[late.len() / 2]
    );
}
