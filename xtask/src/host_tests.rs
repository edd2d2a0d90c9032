//! The host half of `cargo xtask test`: runs `cargo test --workspace`, streams its
//! output, and sums the `test result:` lines into passed/failed counts.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::workspace::Workspace;
use crate::{check_interrupted, Result};

/// Totals of a `cargo test` run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
}

/// Outcome of the host tests.
#[derive(Debug, Clone, Copy)]
pub struct HostRun {
    /// Summed `test result:` lines.
    pub totals: Totals,
    /// Whether `cargo test` exited successfully.
    pub success: bool,
}

/// `(passed, failed)` from a line like
/// `test result: ok. 12 passed; 0 failed; 0 ignored; …`.
pub fn parse_result_line(line: &str) -> Option<Totals> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let (_, counts) = rest.split_once(". ")?;
    let mut totals = Totals::default();
    let (mut saw_passed, mut saw_failed) = (false, false);
    for part in counts.split(';') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => (totals.passed, saw_passed) = (n, true),
            "failed" => (totals.failed, saw_failed) = (n, true),
            _ => {}
        }
    }
    (saw_passed && saw_failed).then_some(totals)
}

/// Runs `cargo test --workspace` with its output on the terminal.
pub fn run(ws: &Workspace) -> Result<HostRun> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(&ws.root)
        .args(["test", "--workspace"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    let mut totals = Totals::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("{line}");
            if let Some(t) = parse_result_line(&line) {
                totals.passed += t.passed;
                totals.failed += t.failed;
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for cargo test: {e}"))?;
    check_interrupted()?;
    Ok(HostRun {
        totals,
        success: status.success(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_lines() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 26 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.09s"
            ),
            Some(Totals {
                passed: 26,
                failed: 0
            })
        );
        assert_eq!(
            parse_result_line("test result: FAILED. 25 passed; 1 failed; 0 ignored; 0 measured"),
            Some(Totals {
                passed: 25,
                failed: 1
            })
        );
        assert_eq!(parse_result_line("test foo ... ok"), None);
        assert_eq!(parse_result_line("test result: ok."), None);
    }
}
