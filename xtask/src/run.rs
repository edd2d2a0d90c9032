//! `cargo xtask run`: build, then boot one scenario (default `demo`) with its serial
//! on the terminal, and judge it. Also `--list` and the `--mem` size parser.

use clap::Args;
use paravane_tests::{scenarios, Scenario};

use crate::boot::{self, BootOptions};
use crate::qemu::{self, AccelChoice};
use crate::workspace::Workspace;
use crate::{display, kernels, prereq, Result};

/// Options of `cargo xtask run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario to boot (see --list).
    #[arg(long, default_value = "demo")]
    pub scenario: String,
    /// Accelerator: auto picks KVM only with vmx/svm and a usable /dev/kvm.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// vCPUs (default: the scenario's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=255))]
    pub smp: Option<u32>,
    /// Guest RAM, e.g. 512M or 1G (default: the scenario's).
    #[arg(long, value_parser = parse_mem_mib)]
    pub mem: Option<u32>,
    /// Seconds before QEMU is killed (default: the scenario's).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Boot the images already built instead of building first.
    #[arg(long)]
    pub no_build: bool,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Let a demo end when its guests do, instead of serving pvctl until
    /// Ctrl-C or `pvctl poweroff`.
    #[arg(long)]
    pub exit: bool,
}

/// How long an interactive demo may run: until Ctrl-C or `pvctl poweroff`.
const SERVE_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// Parses a RAM size (`512M`, `1G`, `512MiB`, bare number = MiB) into MiB.
pub fn parse_mem_mib(text: &str) -> std::result::Result<u32, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u32 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 512M or 1G"))?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "m" | "mb" | "mib" => 1,
        "g" | "gb" | "gib" => 1024,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use M or G)")),
    };
    match number.checked_mul(factor) {
        Some(mib) if mib >= 16 => Ok(mib),
        Some(_) => Err(format!("`{text}` is too small (at least 16M)")),
        None => Err(format!("`{text}` is too large")),
    }
}

/// Prints every scenario's name, kind and one-line description.
fn list() {
    let width = scenarios().iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in scenarios() {
        println!("{:width$}  {:5}  {}", s.name, s.kind.name(), s.about);
    }
}

/// The scenario called `name`, or an error listing the names.
pub fn scenario_named(name: &str) -> Result<&'static Scenario> {
    paravane_tests::find(name).ok_or_else(|| {
        let names: Vec<&str> = scenarios().iter().map(|s| s.name).collect();
        format!("no scenario `{name}`; known: {}", names.join(", ")).into()
    })
}

/// `cargo xtask run`.
pub fn run(args: &RunArgs) -> Result<bool> {
    if args.list {
        list();
        return Ok(true);
    }
    let scenario = scenario_named(&args.scenario)?;
    let ws = Workspace::locate()?;
    let qemu_bin = prereq::ensure()?;
    if !args.no_build {
        kernels::build_hypervisor(&ws)?;
        kernels::build_guests(&ws, &kernels::guests_for([scenario]))?;
        kernels::build_host_tools(&ws)?;
    }
    // A demo stays up and serves pvctl (issue #8), unless --exit.
    let serve_pvctl = scenario.kind == paravane_tests::Kind::Demo && !args.exit;
    let options = BootOptions {
        accel: qemu::resolve_accel(args.accel)?,
        icount: false,
        smp: args.smp,
        mem_mib: args.mem,
        timeout_secs: args.timeout.or(serve_pvctl.then_some(SERVE_TIMEOUT_SECS)),
        echo: true,
        serve_pvctl,
    };
    let machine = boot::prepare(&ws, scenario, &options)?;
    println!(
        "booting {}: hv-core + {} modules ({})",
        scenario.name,
        scenario.modules.len(),
        machine.label()
    );
    if let Some(port) = machine.host_port {
        println!(
            "host port {port} reaches the guests (QEMU hostfwd); while it runs: curl http://127.0.0.1:{port}/"
        );
    }
    if serve_pvctl {
        let socket = boot::mgmt_socket(&ws, scenario);
        println!(
            "the driver domain serves pvctl on {}; in another terminal:\n  PVCTL_SOCKET={} {} list\n  (or PVCTL_SOCKET=… cargo run -p pvctl -- list)\nCtrl-C or `pvctl poweroff` ends the machine",
            display(&socket),
            socket.display(),
            display(&ws.pvctl()),
        );
    }
    let booted = boot::boot(&ws, &qemu_bin, scenario, &machine, &options)?;
    let seconds = booted.finished.elapsed.as_secs_f64();
    if booted.verdict.passed {
        println!("{}: passed ({seconds:.1} s)", scenario.name);
    } else {
        println!("{}: FAILED ({seconds:.1} s)", scenario.name);
        for failure in &booted.verdict.failures {
            println!("  - {failure}");
        }
    }
    println!("log: {}", display(&booted.log));
    Ok(booted.verdict.passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_sizes() {
        assert_eq!(parse_mem_mib("512M"), Ok(512));
        assert_eq!(parse_mem_mib("512"), Ok(512));
        assert_eq!(parse_mem_mib("1G"), Ok(1024));
        assert_eq!(parse_mem_mib("2gib"), Ok(2048));
        assert_eq!(parse_mem_mib("256MiB"), Ok(256));
        assert!(parse_mem_mib("12Q").is_err());
        assert!(parse_mem_mib("M").is_err());
        assert!(parse_mem_mib("8M").is_err());
        assert!(parse_mem_mib("9999999G").is_err());
    }

    #[test]
    fn unknown_scenario_lists_the_known_ones() {
        let Err(crate::Error::Failed(message)) = scenario_named("nope") else {
            panic!("expected a failure")
        };
        assert!(
            message.contains("demo") && message.contains("bad-modules"),
            "{message}"
        );
    }
}
