//! Test guests' reporting (XTF-style): one [`TestReport`] per test guest
//! collects the outcome of every check and ends the domain after printing
//! exactly one *result line*:
//!
//! ```text
//! test result: <name>: SUCCESS
//! test result: <name>: SKIP (<reason>)
//! test result: <name>: FAILURE (<first reason>)
//! test result: <name>: ERROR (<first reason>)
//! ```
//!
//! Scenarios require the `SUCCESS` line of their test, so a test that
//! panics, hangs, is killed or skips never passes.
//!
//! # Invariants
//! - The verdict only ever gets worse: Success < Skip < Failure < Error
//!   ([`Verdict`]'s order); the first reason of the worst verdict is kept.
//! - [`TestReport::finish`] prints one result line and never returns.
//! - The line format is [`result_line`] (pure, host-tested).

use alloc::format;
use alloc::string::String;
use core::fmt;

use hypercall_abi::Errno;

/// Start of every result line (after the console's `(d<id>) ` prefix).
pub const RESULT_PREFIX: &str = "test result: ";

/// A test's outcome, ordered from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Every check held.
    Success,
    /// The test could not apply here (a feature is missing); not a pass.
    Skip,
    /// A check found the behaviour under test wrong (e.g. an attack worked).
    Failure,
    /// The test itself could not run as intended (set-up failed).
    Error,
}

impl Verdict {
    /// The word on the result line.
    pub const fn word(self) -> &'static str {
        match self {
            Verdict::Success => "SUCCESS",
            Verdict::Skip => "SKIP",
            Verdict::Failure => "FAILURE",
            Verdict::Error => "ERROR",
        }
    }
}

/// The result line of test `name` (without the console prefix).
pub fn result_line(name: &str, verdict: Verdict, reason: Option<&str>) -> String {
    match (verdict, reason) {
        (Verdict::Success, _) | (_, None) => format!("{RESULT_PREFIX}{name}: {}", verdict.word()),
        (_, Some(why)) => format!("{RESULT_PREFIX}{name}: {} ({why})", verdict.word()),
    }
}

/// Prints one console line (host unit tests have no console: nothing).
fn say(line: fmt::Arguments<'_>) {
    #[cfg(not(test))]
    crate::println!("{line}");
    #[cfg(test)]
    let _ = line;
}

/// The outcome of one test guest so far.
#[derive(Debug)]
pub struct TestReport {
    name: &'static str,
    verdict: Verdict,
    reason: Option<String>,
    checks: u32,
}

impl TestReport {
    /// Starts test `name` (e.g. `"xsa-148"`) and says so on the console.
    pub fn new(name: &'static str) -> TestReport {
        say(format_args!("{name}: starting"));
        TestReport {
            name,
            verdict: Verdict::Success,
            reason: None,
            checks: 0,
        }
    }

    /// The test's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The verdict so far.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// How many checks passed.
    pub fn checks(&self) -> u32 {
        self.checks
    }

    /// Records `verdict` with `reason` (kept only if it is the first reason
    /// of a verdict worse than all before).
    fn record(&mut self, verdict: Verdict, reason: String) {
        say(format_args!("{}: {}: {reason}", self.name, verdict.word()));
        if verdict > self.verdict {
            self.verdict = verdict;
            self.reason = Some(reason);
        }
    }

    /// A check held: prints `<name>: <what>`.
    pub fn pass(&mut self, what: fmt::Arguments<'_>) {
        self.checks += 1;
        say(format_args!("{}: {what}", self.name));
    }

    /// A check failed.
    pub fn fail(&mut self, what: fmt::Arguments<'_>) {
        self.record(Verdict::Failure, format!("{what}"));
    }

    /// The test cannot apply.
    pub fn skip(&mut self, why: fmt::Arguments<'_>) {
        self.record(Verdict::Skip, format!("{why}"));
    }

    /// The test could not run as intended.
    pub fn error(&mut self, why: fmt::Arguments<'_>) {
        self.record(Verdict::Error, format!("{why}"));
    }

    /// Passes if `cond`, else fails; `what` names the property.
    pub fn check(&mut self, cond: bool, what: fmt::Arguments<'_>) -> bool {
        if cond {
            self.pass(format_args!("{what}: ok"));
        } else {
            self.fail(format_args!("{what}: does not hold"));
        }
        cond
    }

    /// An attack `what` must have failed with `want`: passes on exactly that
    /// error (printing `<what>: refused with <ERRNO>`), fails otherwise.
    pub fn refused<T>(&mut self, what: &str, got: Result<T, Errno>, want: Errno) -> bool {
        match got {
            Err(errno) if errno == want => {
                self.pass(format_args!("{what}: refused with {errno}"));
                true
            }
            Err(errno) => {
                self.fail(format_args!("{what}: expected {want}, got {errno}"));
                false
            }
            Ok(_) => {
                self.fail(format_args!("{what}: expected {want}, but it was ACCEPTED"));
                false
            }
        }
    }

    /// A set-up step that must work: its value, or `None` after recording
    /// an [`Verdict::Error`].
    pub fn setup<T, E: fmt::Display>(&mut self, what: &str, got: Result<T, E>) -> Option<T> {
        match got {
            Ok(value) => Some(value),
            Err(err) => {
                self.error(format_args!("set-up step `{what}` failed: {err}"));
                None
            }
        }
    }

    /// The result line this report would print now.
    pub fn line(&self) -> String {
        result_line(self.name, self.verdict, self.reason.as_deref())
    }

    /// Prints the result line and ends the domain: poweroff for SUCCESS and
    /// SKIP, crash for FAILURE and ERROR.
    pub fn finish(self) -> ! {
        crate::println!("{}: {} checks passed", self.name, self.checks);
        crate::println!("{}", self.line());
        crate::console::flush();
        let reason = match self.verdict {
            Verdict::Success | Verdict::Skip => hypercall_abi::sched::SHUTDOWN_POWEROFF,
            Verdict::Failure | Verdict::Error => hypercall_abi::sched::SHUTDOWN_CRASH,
        };
        crate::hypercall::shutdown(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_ordered_by_severity() {
        assert!(Verdict::Success < Verdict::Skip);
        assert!(Verdict::Skip < Verdict::Failure);
        assert!(Verdict::Failure < Verdict::Error);
    }

    #[test]
    fn result_lines_have_one_fixed_shape() {
        assert_eq!(
            result_line("xsa-148", Verdict::Success, None),
            "test result: xsa-148: SUCCESS"
        );
        // A success never carries a reason.
        assert_eq!(
            result_line("xsa-148", Verdict::Success, Some("x")),
            "test result: xsa-148: SUCCESS"
        );
        assert_eq!(
            result_line("xsa-7", Verdict::Failure, Some("rip 0x800000000000")),
            "test result: xsa-7: FAILURE (rip 0x800000000000)"
        );
        assert_eq!(
            result_line("xsa-401", Verdict::Skip, Some("needs SMP")),
            "test result: xsa-401: SKIP (needs SMP)"
        );
        assert_eq!(
            result_line("t", Verdict::Error, None),
            "test result: t: ERROR"
        );
    }

    #[test]
    fn the_worst_verdict_and_its_first_reason_win() {
        let mut report = TestReport {
            name: "t",
            verdict: Verdict::Success,
            reason: None,
            checks: 0,
        };
        report.skip(format_args!("first skip"));
        assert_eq!(report.line(), "test result: t: SKIP (first skip)");
        report.fail(format_args!("first failure"));
        report.fail(format_args!("second failure"));
        report.skip(format_args!("late skip"));
        assert_eq!(report.verdict(), Verdict::Failure);
        assert_eq!(report.line(), "test result: t: FAILURE (first failure)");
        report.error(format_args!("broken"));
        assert_eq!(report.line(), "test result: t: ERROR (broken)");
    }

    #[test]
    fn refused_passes_only_on_the_expected_error() {
        let mut report = TestReport {
            name: "t",
            verdict: Verdict::Success,
            reason: None,
            checks: 0,
        };
        assert!(report.refused::<()>("a", Err(Errno::EPERM), Errno::EPERM));
        assert_eq!((report.verdict(), report.checks()), (Verdict::Success, 1));
        assert!(!report.refused::<()>("b", Err(Errno::EBUSY), Errno::EPERM));
        assert_eq!(report.verdict(), Verdict::Failure);
        assert!(!report.refused("c", Ok(()), Errno::EPERM));
        assert_eq!(
            report.line(),
            "test result: t: FAILURE (b: expected EPERM, got EBUSY)"
        );
        assert!(report.check(true, format_args!("x")));
        assert!(!report.check(false, format_args!("y")));
        assert_eq!(report.checks(), 2);
    }
}
