//! `cargo xtask fuzz`: runs the host fuzzer (`tests/fuzz`, package
//! `paravane-fuzz`, built in release mode) over every parser of untrusted
//! bytes for a bounded time, with a seed that makes a run repeatable.
//! Guest images already built under `target/guest` join the ELF corpus.
//! `cargo xtask test` runs a short fixed-seed round ([`QUICK_SECS`] per
//! target) as one of its steps.

use std::process::{Command, Stdio};

use clap::Args;

use crate::workspace::Workspace;
use crate::{check_interrupted, Result};

/// Seconds per target in the round `cargo xtask test` runs.
pub const QUICK_SECS: f64 = 2.0;

/// Guest images used as extra ELF seeds when they exist.
const SEED_IMAGES: [&str; 3] = ["hello", "driver-domain", "xsa-suite"];

/// Options of `cargo xtask fuzz`.
#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 30.0)]
    secs: f64,
    /// Seed (decimal or 0x hex); the same seed gives the same inputs.
    #[arg(long)]
    seed: Option<String>,
    /// Exactly this many inputs per target (replays a reported failure).
    #[arg(long)]
    iters: Option<u64>,
    /// Only this target (elf, module-cmdline, hv-cmdline, ring, acpi, blkif,
    /// netif, http, devbus).
    #[arg(long)]
    target: Option<String>,
}

/// `cargo xtask fuzz`.
pub fn fuzz(args: &FuzzArgs) -> Result<bool> {
    let ws = Workspace::locate()?;
    let mut extra = vec!["--secs".to_owned(), args.secs.to_string()];
    if let Some(seed) = &args.seed {
        extra.extend(["--seed".to_owned(), seed.clone()]);
    }
    if let Some(iters) = args.iters {
        extra.extend(["--iters".to_owned(), iters.to_string()]);
    }
    if let Some(target) = &args.target {
        extra.extend(["--target".to_owned(), target.clone()]);
    }
    run(&ws, &extra)
}

/// The short round of `cargo xtask test`: fixed seed, [`QUICK_SECS`] each.
pub fn quick(ws: &Workspace) -> Result<bool> {
    run(ws, &["--secs".to_owned(), QUICK_SECS.to_string()])
}

/// Runs the fuzzer with `extra` options; true if every target held.
fn run(ws: &Workspace, extra: &[String]) -> Result<bool> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&ws.root)
        .args(["run", "--release", "--quiet", "-p", "paravane-fuzz", "--"])
        .args(extra)
        .stdin(Stdio::null());
    for image in SEED_IMAGES {
        let path = ws.guest_image(image);
        if path.is_file() {
            command.arg("--corpus").arg(path);
        }
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run the fuzzer: {e}"))?;
    check_interrupted()?;
    Ok(status.success())
}
