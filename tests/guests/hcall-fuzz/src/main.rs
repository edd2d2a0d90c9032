//! `hcall-fuzz`: a seeded hypercall fuzzer (SPEC.md §3).
//!
//! Command line: `seed=<u64>` (default: from the TSC), `count=<n>` (default
//! 1000000); for hunting, `check=<n>` (calls between integrity checks,
//! default 8192) and `oddrsp=0` (no raw hypercalls with a hostile rsp). It
//! first prints `hcall-fuzz: seed 0x… count N`, so any run can be replayed
//! with that seed (the call sequence depends only on the seed; what other
//! domains do in between depends on timing).
//!
//! Each of `count` iterations makes one call: mostly hypercalls 0..=15 with
//! valid-looking arguments aimed at the fuzzer's own frames, ports and grants
//! (see `gen`; half of them in a *valid mode* that rarely mutates, so that
//! state really changes), mutated with bit flips, boundary values and
//! hypervisor, non-canonical and unmapped pointers; sometimes numbers
//! without a hypercall (through their stubs, and through a raw `syscall` for
//! numbers past the page), raw hypercalls with a hostile rsp, multicalls
//! nesting all of these, and `iret` with crafted frames. Every value that
//! could end or corrupt the fuzzer itself if the hypervisor accepted it is
//! replaced by one SPEC says it must refuse (see `env`): shutdown, block and
//! blocking polls never happen, `bench_op` never enters floor mode, the trap
//! table and callbacks only ever name the kit's stubs (or nothing),
//! destructive page-table changes stay inside a scratch tree of the
//! fuzzer's, and grant entries change only while not in use.
//!
//! Every call must return. The fuzzer prints progress every 100000 calls and
//! ends with `hcall-fuzz: done: N calls (seed 0x…), S succeeded, F failed`,
//! then powers off. Anything that contradicts SPEC outright is printed as
//! `hcall-fuzz: ERROR: …`: a result the arguments alone decide (`Expect`),
//! a preserved register clobbered, an `iret` outcome, a write to an entry
//! the fuzzer runs on that had to be refused, a failed integrity check
//! (`Env::check`, with a trace of the calls before it), an unexpected
//! exception in the fuzzer.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

mod env;
mod gen;
mod rng;
mod sys;

use core::sync::atomic::Ordering;

use hypercall_abi::start_info::StartInfo;
use hypercall_abi::Hypercall;
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::println;
use pv_guest_kit::traps::{self, KIT_VECTORS};

use crate::env::Env;
use crate::gen::{Call, Fuzzer};
use crate::rng::Rng;

pv_guest_kit::entry!(kmain);

/// Default number of calls.
const DEFAULT_COUNT: u64 = 1_000_000;
/// Calls between progress lines.
const PROGRESS: u64 = 100_000;
/// Default calls between integrity checks (`Env::check`); `check=<n>`.
const CHECK_EVERY: u64 = 8192;
/// Calls the trace keeps (printed with the first integrity error).
const TRACE: usize = 64;

/// One traced call.
#[derive(Clone, Copy, Debug, Default)]
struct Traced {
    iter: u64,
    nr: u64,
    args: [u64; 5],
    ret: i64,
    /// How it was made: 0 stub, 1 raw syscall, 2 raw with this rsp + 2.
    how: u64,
}

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    let seed = match args.get("seed") {
        None => sys::rdtsc(),
        Some(text) => args
            .get_u64("seed")
            .unwrap_or_else(|| panic!("hcall-fuzz: seed={text} is not a number")),
    };
    let count = match args.get("count") {
        None => DEFAULT_COUNT,
        Some(text) => args
            .get_u64("count")
            .unwrap_or_else(|| panic!("hcall-fuzz: count={text} is not a number")),
    };
    println!("hcall-fuzz: seed {seed:#x} count {count}");

    // No event callback: pending events only set the upcall mask (EVT-5).
    // SAFETY: removing every callback needs no entry point.
    if let Err(err) = unsafe { pv_guest_kit::hypercall::set_callbacks(0, 0, 0) } {
        panic!("hcall-fuzz: set_callbacks(0, 0, 0): {err}");
    }
    for &v in &KIT_VECTORS {
        traps::set_handler(v, sys::on_fault);
    }
    let mut rng = Rng::new(seed);
    let env = Env::setup(si, &mut rng);
    println!(
        "hcall-fuzz: domain {}, scratch window at {:#x}, {} foreign frames, raw syscalls {}",
        env.domid,
        env::WINDOW,
        env.foreign.len(),
        if env.raw_syscall { "on" } else { "off" }
    );
    let check_every = args.get_u64("check").unwrap_or(CHECK_EVERY).max(1);
    let mut fuzzer = Fuzzer::new(env, rng);
    fuzzer.odd_rsp_on = args.get_u64("oddrsp") != Some(0);
    let mut state = State {
        fuzzer: &mut fuzzer,
        check_every,
        trace: [Traced::default(); TRACE],
        traced: 0,
        dumped: false,
    };

    let mut abandoned = 0u64;
    for i in 1..=count {
        sys::CURRENT_ITER.store(i, Ordering::Relaxed);
        let state_ptr: *mut State<'_> = &mut state;
        if !sys::guarded(step_trampoline, state_ptr.cast()) {
            abandoned += 1;
            // The trap table may have been mid-change.
            reinstall_traps();
        }
        if i.is_multiple_of(PROGRESS) {
            println!(
                "hcall-fuzz: {i} calls, {} succeeded, {} failed",
                state.fuzzer.succeeded, state.fuzzer.failed
            );
        }
    }
    check(&mut state);

    for (nr, c) in fuzzer.counts.iter().enumerate() {
        if let Some(h) = Hypercall::from_number(nr as u64) {
            println!(
                "hcall-fuzz: nr {nr:2} {:20} {:7} calls {:7} succeeded",
                h.name(),
                c.calls,
                c.ok
            );
        }
    }
    let unknown = fuzzer
        .counts
        .iter()
        .enumerate()
        .filter(|&(nr, _)| Hypercall::from_number(nr as u64).is_none())
        .fold((0, 0), |(calls, ok), (_, c)| (calls + c.calls, ok + c.ok));
    println!(
        "hcall-fuzz: numbers without a hypercall: {} calls, {} succeeded",
        unknown.0, unknown.1
    );
    let [reqs, ops, entries, grants] = fuzzer.elements_ok;
    println!(
        "hcall-fuzz: inside batches: {reqs} mmu_update requests and {ops} mmuext_op operations applied, {entries} multicall entries and {grants} grant operations succeeded"
    );
    println!(
        "hcall-fuzz: iret with crafted frames: {} calls, {} returned to the frame",
        fuzzer.iret.calls, fuzzer.iret.ok
    );
    let faults = sys::FAULTS.load(Ordering::Relaxed);
    if fuzzer.errors + faults + abandoned > 0 {
        println!(
            "hcall-fuzz: ERROR: {} SPEC violations, {faults} unexpected exceptions, {abandoned} calls abandoned",
            fuzzer.errors
        );
    }
    println!(
        "hcall-fuzz: done: {} calls (seed {seed:#x}), {} succeeded, {} failed",
        fuzzer.calls, fuzzer.succeeded, fuzzer.failed
    );
}

/// Re-installs the kit's trap table (after a fuzzed `set_trap_table`).
fn reinstall_traps() {
    if let Err(err) = traps::install() {
        println!("hcall-fuzz: ERROR: re-installing the trap table failed: {err}");
    }
}

/// The loop's state.
struct State<'a> {
    fuzzer: &'a mut Fuzzer,
    check_every: u64,
    /// The last calls, a ring.
    trace: [Traced; TRACE],
    traced: u64,
    /// Whether the trace was printed already.
    dumped: bool,
}

/// What [`sys::guarded`] runs: one iteration.
extern "sysv64" fn step_trampoline(arg: *mut u8) {
    // SAFETY: `kmain` passes a pointer to its `State`, which outlives the
    // call and is not otherwise used meanwhile.
    let state = unsafe { &mut *arg.cast::<State<'_>>() };
    step(state);
}

/// One iteration: pick a call, build it, make it, account for it.
fn step(state: &mut State<'_>) {
    let f = &mut *state.fuzzer;
    f.reset_arena();
    let r = f.rng.below(100);
    if r < 2 {
        sys::CURRENT_NR.store(6, Ordering::Relaxed);
        f.fuzz_iret();
        return;
    }
    let odd_rsp = r < 5 && f.env.raw_syscall && f.odd_rsp_on;
    let call = if r < 3 && f.env.raw_syscall {
        f.gen_unknown()
    } else if odd_rsp && f.rng.chance(1, 16) {
        let args = [0u64; 5].map(|_| f.rng.next_u64());
        Call {
            nr: Hypercall::Iret as u64,
            args,
            post: Default::default(),
        }
    } else {
        let nr = f.pick_nr();
        f.gen(nr, false)
    };
    sys::CURRENT_NR.store(call.nr, Ordering::Relaxed);
    let mut how = u64::from(call.nr >= hypercall_abi::hypercall::HYPERCALL_SLOTS);
    let ret = if odd_rsp {
        let rsp = f.odd_rsp(call.nr == Hypercall::Iret as u64);
        how = rsp.wrapping_add(2);
        // SAFETY: the generators' constraints hold whatever rsp is; the
        // hypervisor reads the stack only for iret, which gets an
        // unreadable one.
        unsafe { sys::raw_syscall_rsp(call.nr, call.args, rsp) }
    } else {
        issue(f, &call)
    };
    state.trace[(state.traced % TRACE as u64) as usize] = Traced {
        iter: sys::CURRENT_ITER.load(Ordering::Relaxed),
        nr: call.nr,
        args: call.args,
        ret,
        how,
    };
    state.traced += 1;
    f.check_watch(call.nr, ret);
    let expect = f.expect(call.nr, call.args, false);
    if !expect.holds(ret) {
        f.mismatch(call.nr, call.args, ret, expect, "call");
    }
    f.calls += 1;
    let slot = (call.nr as usize).min(64);
    f.counts[slot].calls += 1;
    if ret >= 0 {
        f.succeeded += 1;
        f.counts[slot].ok += 1;
        if let Some(va) = call.post.port_out {
            f.learn_port(va);
        }
    } else {
        f.failed += 1;
    }
    if let Some(elements) = call.post.elements {
        f.account(elements);
    }
    if call.post.reinstall_traps {
        reinstall_traps();
    }
    if f.calls.is_multiple_of(state.check_every) {
        check(state);
    }
}

/// Runs the integrity check and counts what it finds; with the first
/// finding, prints the calls made since the previous check (up to
/// [`TRACE`]).
fn check(state: &mut State<'_>) {
    let found = state.fuzzer.env.check(5);
    state.fuzzer.errors += found;
    if found > 0 && !state.dumped {
        state.dumped = true;
        let n = state.check_every.min(TRACE as u64).min(state.traced);
        for k in (state.traced - n)..state.traced {
            let t = state.trace[(k % TRACE as u64) as usize];
            println!(
                "hcall-fuzz: trace: call {} nr {:#x} args {} returned {} ({})",
                t.iter,
                t.nr,
                gen::Args(t.args),
                t.ret,
                match t.how {
                    0 => alloc::string::String::from("stub"),
                    1 => alloc::string::String::from("raw syscall"),
                    rsp => alloc::format!("raw syscall with rsp {:#x}", rsp.wrapping_sub(2)),
                }
            );
        }
    }
}

/// Makes `call`: through its stub, or a raw `syscall` for numbers the page
/// has no stub for.
fn issue(f: &mut Fuzzer, call: &Call) -> i64 {
    if call.nr >= hypercall_abi::hypercall::HYPERCALL_SLOTS {
        // SAFETY: `gen_unknown` gives arguments every hypercall refuses.
        return unsafe { sys::raw_syscall(call.nr, call.args) };
    }
    let df = f.rng.chance(1, 16);
    // SAFETY: the generators constrain every call so that, whatever the
    // hypervisor accepts, the fuzzer's memory, mappings, trap table and
    // callbacks stay intact (see `env` and `gen`); iret has its own path.
    let ret = unsafe { sys::stub_call(call.nr as u32, call.args, df) };
    if ret.clobbered {
        f.errors += 1;
        println!(
            "hcall-fuzz: ERROR: hypercall {} {} changed a preserved register (HC-3)",
            call.nr,
            gen::Args(call.args)
        );
    }
    ret.rax
}
