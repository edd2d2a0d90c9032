//! `hvbench`: the null hypercall next to its hardware floor, measured in the
//! same boot (DESIGN "Benchmarks"; HC-18), then the PV MMU operations
//! ([`mm`]: `mmu_update` per PTE by batch size, `update_va_mapping`,
//! `multicall`, pin/unpin, `NEW_BASEPTR`, TLB flush), then event channels
//! ([`evtchn`]) and grant tables ([`grant`]).
//!
//! Command line: `echo=<domid>` names the echo domain (`pingpong
//! role=echo`) the event round trip and the grant figures need; without it
//! they are skipped. The port for it is the first this domain allocates
//! (port 1), before anything else, as the echo domain expects; upcalls stay
//! masked until the event figures (no upcall may arrive in syscall-floor
//! mode, where the `iret` hypercall does not work).
//!
//! The first three figures are the per-iteration TSC delta of 64 batches ×
//! 1000 iterations; the MMU figures use fewer iterations for the expensive
//! operations. The `BENCH` lines report the median (under `-icount shift=0`,
//! an instruction count).
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

mod evtchn;
mod grant;
mod mm;

use hypercall_abi::hypercall::VERSION_ABI;
use hypercall_abi::start_info::StartInfo;
use hypercall_abi::DomId;
use pv_guest_kit::bench::{measure, Hundredths, Stats};
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::events;
use pv_guest_kit::hypercall::{bench_syscall_floor, version};
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

/// Batches per measurement.
const BATCHES: usize = 64;
/// Iterations per batch.
const ITERS: u64 = 1000;

fn kmain(si: &'static StartInfo) {
    let echo = Args::new(si.cmdline_str())
        .get_u64("echo")
        .map(|domid| domid as DomId);
    // First of all: the port the echo domain binds to (port 1). Upcalls stay
    // masked until the event figures.
    events::disable();
    let echo_port = echo.map(|domid| match events::alloc_unbound(domid) {
        Ok(port) if port == 1 => port,
        Ok(port) => panic!("hvbench: the echo port is {port}, the echo domain expects 1"),
        Err(err) => panic!("hvbench: allocating the echo port: {err}"),
    });

    let null = measure(BATCHES, ITERS, || {
        let _ = version(VERSION_ABI);
    });
    println!(
        "null hypercall: min {} median {} cycles",
        null.min, null.median
    );
    println!(
        "BENCH name=hypercall_null_cycles value={} unit=cycles",
        null.median
    );

    let floor = syscall_floor();
    println!(
        "syscall floor: min {} median {} cycles",
        floor.min, floor.median
    );
    println!(
        "BENCH name=syscall_floor_cycles value={} unit=cycles",
        floor.median
    );

    match Hundredths::ratio(null.median, floor.median) {
        Some(ratio) => println!("BENCH name=hypercall_null_ratio value={ratio} unit=ratio"),
        None => println!("hvbench: syscall floor measured 0 cycles; no ratio"),
    }

    mm::run();

    evtchn::run_local();
    match (echo, echo_port) {
        (Some(domid), Some(port)) => {
            evtchn::run_pingpong(port);
            grant::run(domid, port);
        }
        _ => println!(
            "hvbench: no echo domain (echo=<domid>); event round trip and grant figures skipped"
        ),
    }
}

/// Prints a figure as a human line and a `BENCH` line (`per`: operations per
/// iteration).
pub(crate) fn report(name: &str, what: &str, stats: Stats, per: u64) {
    let (min, median) = (stats.min / per, stats.median / per);
    println!("{what}: min {min} median {median} cycles");
    println!("BENCH name={name} value={median} unit=cycles");
}

/// Measures a bare `syscall` round trip in syscall-floor mode. Between
/// `bench_syscall_floor()` and the `ud2` that ends the mode no hypercall
/// works, so nothing in between prints (or can panic: `measure`'s argument
/// checks pass for these constants).
fn syscall_floor() -> Stats {
    if let Err(err) = bench_syscall_floor() {
        panic!("bench_op(BENCH_SYSCALL_FLOOR) failed: {err}");
    }
    let stats = measure(BATCHES, ITERS, arch::bare_syscall);
    arch::end_floor_mode();
    stats
}

/// The floor-mode instructions (kernel target only).
#[cfg(target_os = "none")]
mod arch {
    use core::arch::asm;

    /// One `syscall` instruction; in floor mode the hypervisor answers with a
    /// bare `sysretq`.
    #[inline(always)]
    pub fn bare_syscall() {
        // SAFETY: in syscall-floor mode `syscall` returns at once, changing
        // only rcx and r11 (declared); it touches no memory or stack.
        unsafe {
            asm!(
                "syscall",
                lateout("rcx") _,
                lateout("r11") _,
                options(nomem, nostack),
            );
        }
    }

    /// `ud2`, which ends syscall-floor mode; the hypervisor skips it.
    pub fn end_floor_mode() {
        // SAFETY: in floor mode the hypervisor consumes this `ud2` and resumes
        // after it (HC-18); it changes no register or memory.
        unsafe {
            asm!("ud2", options(nomem, nostack));
        }
    }
}

/// Host stand-ins: the guest never runs on the host.
#[cfg(not(target_os = "none"))]
mod arch {
    pub fn bare_syscall() {
        unreachable!("hvbench only runs under Paravane")
    }

    pub fn end_floor_mode() {
        unreachable!("hvbench only runs under Paravane")
    }
}
