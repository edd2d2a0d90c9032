//! `cargo xtask bench`: boots every Bench scenario, collects its
//! `BENCH name=… value=… unit=…` lines, prints them as a table tagged with the
//! mode they were measured in (`tcg`, `icount` or `kvm`) and writes them as JSON.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use paravane_tests::bench::{collect, BenchResult};
use paravane_tests::{scenarios, Kind, Scenario};

use crate::boot::{self, BootOptions};
use crate::qemu::{self, Accel, AccelChoice};
use crate::suite::TAIL_LINES;
use crate::workspace::Workspace;
use crate::{display, kernels, prereq, Result};

/// Options of `cargo xtask bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Where to write the results as JSON (default: target/bench.json).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Deterministic figures: `-icount shift=0` (one virtual tick per instruction; TCG only).
    #[arg(long)]
    pub icount: bool,
    /// Accelerator: auto picks KVM only with vmx/svm and a usable /dev/kvm.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Seconds before QEMU is killed (default: each scenario's).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Boot the images already built instead of building first.
    #[arg(long)]
    pub no_build: bool,
    /// Run only these bench scenarios (repeatable; default: all of them).
    #[arg(long, value_name = "NAME")]
    pub scenario: Vec<String>,
}

/// One figure with the mode it came from.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    result: BenchResult,
    mode: &'static str,
}

/// `cargo xtask bench`.
pub fn bench(args: &BenchArgs) -> Result<bool> {
    let ws = Workspace::locate()?;
    let qemu_bin = prereq::ensure()?;
    let accel = match (args.icount, args.accel) {
        (true, AccelChoice::Kvm) => {
            return Err("--icount needs TCG; drop --accel kvm".to_owned().into())
        }
        (true, _) => {
            println!("accel: TCG (--icount)");
            Accel::Tcg
        }
        (false, choice) => qemu::resolve_accel(choice)?,
    };
    let benches: Vec<&Scenario> = scenarios()
        .iter()
        .filter(|s| s.kind == Kind::Bench)
        .filter(|s| args.scenario.is_empty() || args.scenario.iter().any(|n| n == s.name))
        .collect();
    if let Some(unknown) = args
        .scenario
        .iter()
        .find(|n| !benches.iter().any(|s| s.name == n.as_str()))
    {
        let names: Vec<&str> = scenarios()
            .iter()
            .filter(|s| s.kind == Kind::Bench)
            .map(|s| s.name)
            .collect();
        return Err(format!("no bench scenario `{unknown}`; known: {}", names.join(", ")).into());
    }
    if !args.no_build {
        kernels::build_hypervisor(&ws)?;
        kernels::build_guests(&ws, &kernels::guests_for(benches.iter().copied()))?;
        kernels::build_host_tools(&ws)?;
    }

    let options = BootOptions {
        accel,
        icount: args.icount,
        smp: None,
        mem_mib: None,
        timeout_secs: args.timeout,
        echo: false,
        serve_pvctl: false,
    };
    let mut rows = Vec::new();
    let mut all_passed = true;
    for scenario in benches {
        let machine = boot::prepare(&ws, scenario, &options)?;
        let mode = machine.mode();
        println!(
            "bench {}: hv-core + {} modules ({})…",
            scenario.name,
            scenario.modules.len(),
            machine.label()
        );
        let booted = boot::boot(&ws, &qemu_bin, scenario, &machine, &options)?;
        let found = collect(&booted.finished.serial);
        println!(
            "bench {}: {} figures ({:.1} s)",
            scenario.name,
            found.len(),
            booted.finished.elapsed.as_secs_f64()
        );
        if !booted.verdict.passed {
            all_passed = false;
            println!("bench {} FAILED", scenario.name);
            for failure in &booted.verdict.failures {
                println!("    - {failure}");
            }
            println!("    last {TAIL_LINES} lines of {}:", display(&booted.log));
            for line in boot::log_tail(&booted.finished, TAIL_LINES) {
                println!("    | {line}");
            }
        }
        rows.extend(found.into_iter().map(|result| Row { result, mode }));
    }

    if rows.is_empty() {
        println!("no BENCH lines found");
        return Ok(false);
    }
    print!("{}", table(&rows));
    let json_path = match &args.json {
        Some(path) => std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.clone()),
        None => ws.root.join("target/bench.json"),
    };
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(&json_path, json(&rows))
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    println!("wrote {} results to {}", rows.len(), display(&json_path));
    Ok(all_passed)
}

/// The results as an aligned text table.
fn table(rows: &[Row]) -> String {
    let values: Vec<String> = rows.iter().map(|r| format_value(r.result.value)).collect();
    let name_w = rows
        .iter()
        .map(|r| r.result.name.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let value_w = values.iter().map(String::len).chain([5]).max().unwrap_or(5);
    let unit_w = rows
        .iter()
        .map(|r| r.result.unit.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:name_w$}  {:>value_w$}  {:unit_w$}  mode",
        "name", "value", "unit"
    );
    for (row, value) in rows.iter().zip(&values) {
        let _ = writeln!(
            out,
            "{:name_w$}  {value:>value_w$}  {:unit_w$}  {}",
            row.result.name, row.result.unit, row.mode
        );
    }
    out
}

/// A value as JSON and table text (finite by construction of [`BenchResult`]).
fn format_value(value: f64) -> String {
    format!("{value}")
}

/// The results as a JSON array of `{"name","value","unit","mode"}` objects.
fn json(rows: &[Row]) -> String {
    let mut out = String::from("[\n");
    for (i, row) in rows.iter().enumerate() {
        let _ = write!(
            out,
            "  {{\"name\": {}, \"value\": {}, \"unit\": {}, \"mode\": {}}}",
            json_string(&row.result.name),
            format_value(row.result.value),
            json_string(&row.result.unit),
            json_string(row.mode)
        );
        out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    out.push_str("]\n");
    out
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, value: f64, unit: &str, mode: &'static str) -> Row {
        Row {
            result: BenchResult {
                name: name.into(),
                value,
                unit: unit.into(),
            },
            mode,
        }
    }

    #[test]
    fn json_output() {
        let rows = [
            row("hypercall_null_cycles", 812.0, "cycles", "icount"),
            row("evtchn_rtt", 1.5, "us", "tcg"),
        ];
        assert_eq!(
            json(&rows),
            "[\n  {\"name\": \"hypercall_null_cycles\", \"value\": 812, \"unit\": \"cycles\", \"mode\": \"icount\"},\n  \
             {\"name\": \"evtchn_rtt\", \"value\": 1.5, \"unit\": \"us\", \"mode\": \"tcg\"}\n]\n"
        );
        assert_eq!(json(&[]), "[\n]\n");
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn table_is_aligned() {
        let rows = [
            row("hypercall_null_cycles", 812.0, "cycles", "tcg"),
            row("x", 12345.5, "ns", "tcg"),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "name                     value  unit    mode");
        assert_eq!(lines[1], "hypercall_null_cycles      812  cycles  tcg");
        assert_eq!(lines[2], "x                      12345.5  ns      tcg");
    }
}
