//! The judge: decides from a serial log and QEMU's exit status whether a scenario
//! passed, and says why not in one human line per failure.
//!
//! # Invariants
//! - A line containing [`PANIC_MARKER`] always fails, whatever the expectations.
//! - A run that did not end by itself (`status == None`: timeout, killed) always fails.
//! - Every unmet expectation yields exactly one failure line; a passing verdict has
//!   no failure lines.

use hypercall_abi::machine::{
    qemu_status, EXIT_DRIVER_DOMAIN_CRASHED, EXIT_PANIC, EXIT_POWEROFF, EXIT_REBOOT,
};

use crate::{Expect, Scenario};

/// Substring of the line hv-core prints when it panics.
pub const PANIC_MARKER: &str = "(hv) PANIC";
/// hv-core's frame-table audit found a broken invariant (SPEC MM-8): always a failure.
pub const AUDIT_FAILURE_MARKER: &str = "(hv) error: audit: FAILED";

/// The failure line for a run that did not end by itself (`status == None`).
pub const DID_NOT_EXIT: &str = "QEMU did not exit by itself (timed out or was killed)";

/// The outcome of judging one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether every check held.
    pub passed: bool,
    /// One human-readable line per failed check.
    pub failures: Vec<String>,
}

/// What a QEMU exit status means, e.g. `33` → `"poweroff"`.
pub fn describe_status(status: i32) -> String {
    let known = [
        (EXIT_POWEROFF, "poweroff"),
        (EXIT_PANIC, "hv-core panicked"),
        (EXIT_REBOOT, "reboot"),
        (EXIT_DRIVER_DOMAIN_CRASHED, "driver domain crashed"),
    ];
    if let Some((_, what)) = known.iter().find(|(v, _)| qemu_status(*v) == status) {
        return (*what).to_owned();
    }
    match status {
        0 => "QEMU quit without a debug-exit write".to_owned(),
        1 => "QEMU failed, or the guest wrote 0 to the debug-exit port".to_owned(),
        s if s & 1 == 1 => format!("debug-exit value {:#x}, not a known code", s >> 1),
        _ => "not a debug-exit status".to_owned(),
    }
}

/// Judges one run of `scenario`: `log` is the serial output, `status` QEMU's exit
/// status (`None` if it did not exit by itself: timeout or killed).
pub fn judge(scenario: &Scenario, log: &str, status: Option<i32>) -> Verdict {
    let lines: Vec<&str> = log.lines().map(|l| l.trim_end_matches('\r')).collect();
    let mut failures = machine_failures(scenario, &lines, status);
    for expect in scenario.expect {
        if let Err(why) = check(expect, &lines) {
            failures.push(why);
        }
    }
    Verdict {
        passed: failures.is_empty(),
        failures,
    }
}

/// Judges a boot the user drove by hand (`cargo xtask run` serving pvctl):
/// only how the machine ended (exit status, no hv-core panic, a clean
/// audit), not the scenario's scripted expectations, which describe the
/// unattended run.
pub fn judge_interactive(scenario: &Scenario, log: &str, status: Option<i32>) -> Verdict {
    let lines: Vec<&str> = log.lines().map(|l| l.trim_end_matches('\r')).collect();
    let failures = machine_failures(scenario, &lines, status);
    Verdict {
        passed: failures.is_empty(),
        failures,
    }
}

/// The machine-level failures: a wrong or missing exit status, a hv-core
/// panic, a failed frame-table audit.
fn machine_failures(scenario: &Scenario, lines: &[&str], status: Option<i32>) -> Vec<String> {
    let mut failures = Vec::new();

    let killed = scenario.kill_after();
    match status {
        None if killed.is_some() => {}
        None => failures.push(DID_NOT_EXIT.to_owned()),
        Some(s) if killed.is_some() => failures.push(format!(
            "QEMU exited by itself with status {s} ({}) before the line it was to be killed after",
            describe_status(s)
        )),
        Some(s) if s != scenario.exit_status => failures.push(format!(
            "QEMU exited with status {s} ({}), expected {} ({})",
            describe_status(s),
            scenario.exit_status,
            describe_status(scenario.exit_status),
        )),
        Some(_) => {}
    }

    if let Some((n, line)) = first_containing(lines, 0, PANIC_MARKER) {
        failures.push(format!("hv-core panicked (log line {}): {line}", n + 1));
    }
    if let Some((n, line)) = first_containing(lines, 0, AUDIT_FAILURE_MARKER) {
        failures.push(format!(
            "the frame-table audit failed (log line {}): {line}",
            n + 1
        ));
    }
    failures
}

/// The decimal number right after `key` in the first line containing `line`.
fn number_after(lines: &[&str], line: &str, key: &str) -> Result<f64, String> {
    let (_, text) = first_containing(lines, 0, line)
        .ok_or_else(|| format!("expected a line containing `{line}` — none found"))?;
    let rest = text
        .split_once(key)
        .map(|(_, r)| r)
        .ok_or_else(|| format!("the line with `{line}` has no `{key}`: {text}"))?;
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits
        .parse::<f64>()
        .map_err(|_| format!("no number after `{key}` in: {text}"))
}

/// Checks one expectation against the log's lines.
fn check(expect: &Expect, lines: &[&str]) -> Result<(), String> {
    match *expect {
        Expect::Line(needle) => match first_containing(lines, 0, needle) {
            Some(_) => Ok(()),
            None => Err(format!(
                "expected a line containing `{needle}` — none found"
            )),
        },
        Expect::KilledAfter(needle) => match first_containing(lines, 0, needle) {
            Some(_) => Ok(()),
            None => Err(format!(
                "expected QEMU to be killed after a line containing `{needle}` — none found"
            )),
        },
        Expect::Absent(needle) => match first_containing(lines, 0, needle) {
            None => Ok(()),
            Some((n, line)) => Err(format!(
                "expected no line containing `{needle}` — found at log line {}: {line}",
                n + 1
            )),
        },
        Expect::InOrder(needles) => {
            let mut from = 0;
            let mut previous: Option<(&str, usize)> = None;
            for &needle in needles {
                match first_containing(lines, from, needle) {
                    Some((n, _)) => {
                        from = n + 1;
                        previous = Some((needle, n));
                    }
                    None => {
                        return Err(match previous {
                            None => format!(
                                "expected a line containing `{needle}` (first of an ordered list) — none found"
                            ),
                            Some((prev, n)) => match first_containing(lines, 0, needle) {
                                Some((m, _)) => format!(
                                    "expected `{needle}` after `{prev}` (log line {}) — it only appears before, at log line {}",
                                    n + 1,
                                    m + 1
                                ),
                                None => format!(
                                    "expected a line containing `{needle}` after `{prev}` (log line {}) — none found",
                                    n + 1
                                ),
                            },
                        });
                    }
                }
            }
            Ok(())
        }
        Expect::Number {
            line,
            key,
            per,
            min,
            max,
        } => {
            let mut value = number_after(lines, line, key)?;
            let mut what = format!("`{key}` in the line with `{line}`");
            if let Some((per_line, per_key)) = per {
                let d = number_after(lines, per_line, per_key)?;
                if d == 0.0 {
                    return Err(format!("`{per_key}` in the line with `{per_line}` is 0"));
                }
                value /= d;
                what = format!("{what} / `{per_key}` in the line with `{per_line}`");
            }
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "expected {what} in [{min}, {max}] — it is {value:.4}"
                ))
            }
        }
        Expect::Count(needle, want) => {
            let got = lines.iter().filter(|l| l.contains(needle)).count();
            if got == want {
                Ok(())
            } else {
                Err(format!(
                    "expected exactly {want} line(s) containing `{needle}` — found {got}"
                ))
            }
        }
    }
}

/// The first line at index `from` or later containing `needle`, with its index.
fn first_containing<'a>(lines: &[&'a str], from: usize, needle: &str) -> Option<(usize, &'a str)> {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.contains(needle))
        .map(|(n, l)| (n, *l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    const OK: i32 = qemu_status(EXIT_POWEROFF);

    fn scenario(expect: &'static [Expect]) -> Scenario {
        Scenario {
            name: "unit",
            about: "judge unit test",
            kind: Kind::Test,
            hv_cmdline: "",
            modules: &[],
            smp: 1,
            mem_mib: 256,
            qemu_args: &[],
            disks: &[],
            timeout_secs: 1,
            exit_status: OK,
            expect,
        }
    }

    #[test]
    fn killed_after_a_line_needs_the_line_and_no_exit() {
        let s = scenario(&[Expect::KilledAfter("flushed")]);
        assert_eq!(s.kill_after(), Some("flushed"));
        assert!(judge(&s, "a\n(d1) flushed\n", None).passed);
        let v = judge(&s, "a\n", None);
        assert_eq!(
            v.failures,
            ["expected QEMU to be killed after a line containing `flushed` — none found"]
        );
        let v = judge(&s, "(d1) flushed\n", Some(OK));
        assert!(
            !v.passed && v.failures[0].contains("exited by itself"),
            "{v:?}"
        );
        // Without the expectation a run that did not exit fails as always.
        assert!(!judge(&scenario(&[Expect::Line("a")]), "a\n", None).passed);
    }

    #[test]
    fn an_interactive_run_is_judged_by_how_the_machine_ended_only() {
        let s = scenario(&[Expect::Line("(d1) GET /quit -> 200")]);
        let log = "(d1) GET / -> 200\n(hv) power off: the driver domain ended\n";
        // The scripted expectation does not apply to a hand-driven run...
        assert!(!judge(&s, log, Some(OK)).passed);
        assert!(judge_interactive(&s, log, Some(OK)).passed);
        // ...but the exit status, a panic and the audit still do.
        let v = judge_interactive(&s, log, Some(1));
        assert!(
            !v.passed && v.failures[0].contains("exited with status 1"),
            "{v:?}"
        );
        let panicked = format!("{PANIC_MARKER} at mm.rs:1\n");
        assert!(!judge_interactive(&s, &panicked, Some(OK)).passed);
    }

    const LOG: &str = "(hv) Paravane starting\r\n\
        (d1) Hello from hello-1\n\
        (d2) Hello from hello-2\n\
        (d1) tick\n\
        (d1) tick\n\
        (hv) d1 'hello-1': shut down (poweroff)\n\
        (hv) d0 'driver': shut down (poweroff)";

    fn failures(expect: &'static [Expect], log: &str, status: Option<i32>) -> Vec<String> {
        let v = judge(&scenario(expect), log, status);
        assert_eq!(v.passed, v.failures.is_empty());
        v.failures
    }

    #[test]
    fn line_passes_and_fails() {
        assert!(failures(&[Expect::Line("(d2) Hello from hello-2")], LOG, Some(OK)).is_empty());
        assert!(failures(&[Expect::Line("Paravane starting")], LOG, Some(OK)).is_empty());
        assert_eq!(
            failures(&[Expect::Line("(d3) Hello")], LOG, Some(OK)),
            ["expected a line containing `(d3) Hello` — none found"]
        );
    }

    #[test]
    fn absent_passes_and_fails() {
        assert!(failures(&[Expect::Absent("crashed")], LOG, Some(OK)).is_empty());
        let f = failures(&[Expect::Absent("tick")], LOG, Some(OK));
        assert_eq!(
            f,
            ["expected no line containing `tick` — found at log line 4: (d1) tick"]
        );
    }

    #[test]
    fn in_order_passes_and_fails() {
        const GOOD: &[&str] = &["Hello from hello-1", "tick", "tick", "d0 'driver'"];
        assert!(failures(&[Expect::InOrder(GOOD)], LOG, Some(OK)).is_empty());

        const REVERSED: &[&str] = &["Hello from hello-2", "Hello from hello-1"];
        let f = failures(&[Expect::InOrder(REVERSED)], LOG, Some(OK));
        assert_eq!(f.len(), 1);
        assert!(
            f[0].contains("expected `Hello from hello-1` after `Hello from hello-2` (log line 3)"),
            "{f:?}"
        );
        assert!(f[0].contains("only appears before, at log line 2"), "{f:?}");

        const THREE_TICKS: &[&str] = &["tick", "tick", "tick"];
        let f = failures(&[Expect::InOrder(THREE_TICKS)], LOG, Some(OK));
        assert_eq!(f.len(), 1);
        assert!(f[0].contains("`tick` after `tick` (log line 5)"), "{f:?}");

        const MISSING_FIRST: &[&str] = &["nope", "tick"];
        let f = failures(&[Expect::InOrder(MISSING_FIRST)], LOG, Some(OK));
        assert_eq!(
            f,
            ["expected a line containing `nope` (first of an ordered list) — none found"]
        );

        const MISSING_LATER: &[&str] = &["tick", "nope"];
        let f = failures(&[Expect::InOrder(MISSING_LATER)], LOG, Some(OK));
        assert_eq!(
            f,
            ["expected a line containing `nope` after `tick` (log line 4) — none found"]
        );
    }

    #[test]
    fn numbers_and_ratios() {
        const L: &str =
            "(d1) worker a: share=66.5% cpu_ms=1330\n(d2) worker b: share=33.1% cpu_ms=662\n";
        let share = |min, max| Expect::Number {
            line: "worker a",
            key: "share=",
            per: None,
            min,
            max,
        };
        let leak = |e: Expect| -> &'static [Expect] { Vec::leak(vec![e]) };
        assert!(failures(leak(share(60.0, 70.0)), L, Some(OK)).is_empty());
        let f = failures(leak(share(20.0, 30.0)), L, Some(OK));
        assert_eq!(f.len(), 1);
        assert!(f[0].contains("it is 66.5"), "{f:?}");
        let ratio = |min, max| Expect::Number {
            line: "worker a",
            key: "cpu_ms=",
            per: Some(("worker b", "cpu_ms=")),
            min,
            max,
        };
        assert!(failures(leak(ratio(1.8, 2.2)), L, Some(OK)).is_empty());
        assert_eq!(failures(leak(ratio(2.1, 2.2)), L, Some(OK)).len(), 1);
        let missing = Expect::Number {
            line: "worker c",
            key: "x=",
            per: None,
            min: 0.0,
            max: 1.0,
        };
        assert_eq!(failures(leak(missing), L, Some(OK)).len(), 1);
    }

    #[test]
    fn count_passes_and_fails() {
        assert!(failures(&[Expect::Count("tick", 2)], LOG, Some(OK)).is_empty());
        assert!(failures(&[Expect::Count("crashed", 0)], LOG, Some(OK)).is_empty());
        assert_eq!(
            failures(&[Expect::Count("tick", 3)], LOG, Some(OK)),
            ["expected exactly 3 line(s) containing `tick` — found 2"]
        );
    }

    #[test]
    fn wrong_status_fails() {
        let f = failures(&[Expect::Line("tick")], LOG, Some(qemu_status(EXIT_PANIC)));
        assert_eq!(
            f,
            ["QEMU exited with status 35 (hv-core panicked), expected 33 (poweroff)"]
        );
        let f = failures(&[], LOG, Some(1));
        assert_eq!(f.len(), 1);
        assert!(
            f[0].starts_with("QEMU exited with status 1 (QEMU failed"),
            "{f:?}"
        );
    }

    #[test]
    fn timeout_fails_even_when_lines_match() {
        let f = failures(&[Expect::Line("tick")], LOG, None);
        assert_eq!(f, ["QEMU did not exit by itself (timed out or was killed)"]);
    }

    #[test]
    fn panic_line_fails_whatever_else_happened() {
        let audit =
            format!("{LOG}\n(hv) error: audit: FAILED after a domain ended: frame 0x10: (d) x");
        assert_eq!(
            failures(&[], &audit, Some(qemu_status(EXIT_POWEROFF))).len(),
            1
        );
        let log = format!("{LOG}\n(hv) PANIC at hv-core/src/mm.rs:10: oops");
        let f = failures(&[Expect::Line("tick")], &log, Some(OK));
        assert_eq!(
            f,
            ["hv-core panicked (log line 8): (hv) PANIC at hv-core/src/mm.rs:10: oops"]
        );
    }

    #[test]
    fn every_failure_is_reported() {
        let f = failures(
            &[Expect::Line("missing"), Expect::Absent("tick")],
            "(hv) PANIC: x\n(d1) tick",
            None,
        );
        assert_eq!(f.len(), 4, "{f:?}");
    }

    #[test]
    fn status_descriptions() {
        assert_eq!(describe_status(33), "poweroff");
        assert_eq!(describe_status(35), "hv-core panicked");
        assert_eq!(describe_status(37), "reboot");
        assert_eq!(describe_status(39), "driver domain crashed");
        assert_eq!(
            describe_status(41),
            "debug-exit value 0x14, not a known code"
        );
        assert_eq!(describe_status(2), "not a debug-exit status");
    }
}
