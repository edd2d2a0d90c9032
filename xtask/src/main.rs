//! `cargo xtask`: Paravane's one entry point for building the kernels, booting them
//! under QEMU, running the test suite and the benchmarks.
//!
//! This file owns the command line (clap), the Ctrl-C flag and the mapping from
//! outcomes to process exit codes: 0 passed, 1 failed or error, 130 interrupted.
//! The work lives in the modules below; the scenarios and the judge live in the
//! `paravane-tests` crate.
#![forbid(unsafe_code)]

mod bench;
mod boot;
mod drive;
mod fat_image;
mod fuzz;
mod host_tests;
mod kernels;
mod prereq;
mod qemu;
mod run;
mod suite;
mod workspace;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

/// Why a command stopped early.
#[derive(Debug)]
pub enum Error {
    /// Something went wrong; the message says what (and, where possible, what to do).
    Failed(String),
    /// The user pressed Ctrl-C.
    Interrupted,
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::Failed(message)
    }
}

/// Result of a step; `Ok(false)` means "ran, but failed" (already reported).
pub type Result<T> = std::result::Result<T, Error>;

/// Set by the Ctrl-C handler; long-running steps poll it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether the user pressed Ctrl-C.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with [`Error::Interrupted`] if the user pressed Ctrl-C.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "Build, boot, test and benchmark Paravane",
    bin_name = "cargo xtask"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the hypervisor and every guest kernel (x86_64-unknown-none).
    Build,
    /// Build and boot one scenario under QEMU with its serial on the terminal.
    Run(run::RunArgs),
    /// Run the host tests, then every test and demo scenario; ends with "N passed, M failed".
    Test,
    /// Run every bench scenario and report its BENCH figures.
    Bench(bench::BenchArgs),
    /// Fuzz every parser of untrusted bytes on the host for a bounded time.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst)) {
        eprintln!("warning: cannot install the Ctrl-C handler: {e}");
    }
    let outcome = match cli.command {
        Command::Build => build(),
        Command::Run(args) => run::run(&args),
        Command::Test => suite::test(),
        Command::Bench(args) => bench::bench(&args),
        Command::Fuzz(args) => fuzz::fuzz(&args),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(Error::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(Error::Interrupted) => {
            eprintln!("interrupted");
            ExitCode::from(130)
        }
    }
}

/// `cargo xtask build`: prerequisites, then hv-core and every guest.
fn build() -> Result<bool> {
    let ws = workspace::Workspace::locate()?;
    prereq::ensure()?;
    kernels::build_hypervisor(&ws)?;
    kernels::build_guests(&ws, &kernels::all_guests(&ws))?;
    kernels::build_host_tools(&ws)?;
    println!("kernels built under {}", display(&ws.root.join("target")));
    Ok(true)
}

/// A path for messages: relative to the current directory when it is below it.
pub fn display(path: &std::path::Path) -> String {
    let shown: PathBuf = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_path_buf());
    shown.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::AccelChoice;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_to_demo() {
        let cli = Cli::try_parse_from(["xtask", "run"]).expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.scenario, "demo");
        assert!(matches!(args.accel, AccelChoice::Auto));
    }

    #[test]
    fn run_options_parse() {
        let cli = Cli::try_parse_from([
            "xtask",
            "run",
            "--scenario",
            "crasher",
            "--accel",
            "tcg",
            "--smp",
            "2",
            "--mem",
            "1G",
            "--timeout",
            "5",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.scenario, "crasher");
        assert_eq!(args.mem, Some(1024));
        assert_eq!((args.smp, args.timeout), (Some(2), Some(5)));
        assert!(Cli::try_parse_from(["xtask", "run", "--mem", "12Q"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "run", "--smp", "0"]).is_err());
    }
}
