//! `cargo xtask test`: prerequisites, host tests, a short fuzzing round, one
//! kernel build, then every Test
//! and Demo scenario under TCG, one after another. Always ends with the line
//! `N passed, M failed` (host tests + scenarios; a step that cannot run counts as
//! one failure) and fails if M > 0.

use std::io::Write;

use paravane_tests::{scenarios, Scenario};

use crate::boot::{self, BootOptions};
use crate::qemu::Accel;
use crate::workspace::Workspace;
use crate::{display, fuzz, host_tests, kernels, prereq, Error, Result};

/// Lines of serial log shown under a failed scenario.
pub const TAIL_LINES: usize = 40;

/// Running totals.
#[derive(Debug, Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

/// `cargo xtask test`.
pub fn test() -> Result<bool> {
    let mut tally = Tally::default();
    match steps(&mut tally) {
        Ok(()) => {}
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(Error::Failed(message)) => {
            println!("error: {message}");
            tally.failed += 1;
        }
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(tally.failed == 0)
}

/// The steps; stops at the first one that cannot go on.
fn steps(tally: &mut Tally) -> Result<()> {
    let ws = Workspace::locate()?;
    let qemu_bin = prereq::ensure()?;

    println!("running host tests: cargo test --workspace");
    let host = host_tests::run(&ws)?;
    tally.passed += host.totals.passed;
    tally.failed += host.totals.failed;
    if !host.success {
        if host.totals.failed == 0 {
            tally.failed += 1; // e.g. a compile error: no result line says so
        }
        println!("host tests FAILED; scenarios not run");
        return Ok(());
    }
    println!(
        "host tests: {} passed, {} failed",
        host.totals.passed, host.totals.failed
    );
    println!("fuzzing every parser for {} s each", fuzz::QUICK_SECS);
    if fuzz::quick(&ws)? {
        tally.passed += 1;
    } else {
        tally.failed += 1;
    }

    let suite: Vec<&Scenario> = scenarios()
        .iter()
        .filter(|s| s.kind.in_test_suite())
        .collect();
    kernels::build_hypervisor(&ws)?;
    kernels::build_guests(&ws, &kernels::guests_for(suite.iter().copied()))?;
    kernels::build_host_tools(&ws)?;

    println!("running {} scenarios under TCG", suite.len());
    let options = BootOptions {
        accel: Accel::Tcg,
        icount: false,
        smp: None,
        mem_mib: None,
        timeout_secs: None,
        echo: false,
        serve_pvctl: false,
    };
    for scenario in suite {
        if run_one(&ws, &qemu_bin, scenario, &options)? {
            tally.passed += 1;
        } else {
            tally.failed += 1;
        }
    }
    Ok(())
}

/// Boots one scenario and prints its result line (and, on failure, why).
fn run_one(
    ws: &Workspace,
    qemu_bin: &std::path::Path,
    scenario: &Scenario,
    options: &BootOptions,
) -> Result<bool> {
    print!("scenario {} ... ", scenario.name);
    let _ = std::io::stdout().flush();
    let booted = boot::prepare(ws, scenario, options)
        .and_then(|machine| boot::boot(ws, qemu_bin, scenario, &machine, options));
    let booted = match booted {
        Ok(booted) => booted,
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(Error::Failed(message)) => {
            println!("FAILED");
            println!("    {message}");
            return Ok(false);
        }
    };
    let seconds = booted.finished.elapsed.as_secs_f64();
    if booted.verdict.passed {
        println!("ok ({seconds:.1} s)");
        return Ok(true);
    }
    println!("FAILED ({seconds:.1} s)");
    for failure in &booted.verdict.failures {
        println!("    - {failure}");
    }
    println!("    last {TAIL_LINES} lines of {}:", display(&booted.log));
    for line in boot::log_tail(&booted.finished, TAIL_LINES) {
        println!("    | {line}");
    }
    Ok(false)
}
