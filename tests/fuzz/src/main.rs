//! `paravane-fuzz`: seeded mutation fuzzing of every parser of untrusted
//! bytes, in-process and time-bounded, on stable Rust (`cargo xtask fuzz`
//! runs it; cargo-fuzz needs nightly).
//!
//! Targets ([`targets::ALL`]): the guest ELF loader, the boot-module and
//! hypervisor command-line parsers, the shared ring's index handling
//! against a hostile peer, the ACPI table parsers ([`acpi_target`]), blkif
//! and netif request checks and the devbus record table
//! ([`device_targets`]), the `web` guest's HTTP request parser
//! ([`http_target`]), the management protocol's frame decoder
//! ([`mgmt_target`]). Each target has a seed corpus; every iteration
//! takes a corpus entry, mutates it ([`mutate`]) and runs the target, which
//! checks its invariants (panics on a violation). Inputs that parse are
//! added to the corpus (up to a bound), so mutations explore from them.
//!
//! A failure prints the target, the seed, the iteration and the input (hex);
//! `--seed S --iters N` replays a run exactly (the same seed gives the same
//! inputs; time limits only decide where a run stops).
//!
//! Usage: `paravane-fuzz [--secs N] [--seed S] [--iters N] [--target NAME] [--corpus FILE]...`
#![forbid(unsafe_code)]

mod acpi_target;
mod device_targets;
mod http_target;
mod mgmt_target;
mod mutate;
mod targets;

use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use mutate::Rng;

/// Most corpus entries kept per target.
const CORPUS_MAX: usize = 256;

/// Command-line options.
#[derive(Debug)]
struct Options {
    secs: f64,
    seed: u64,
    iters: Option<u64>,
    target: Option<String>,
    extra_seeds: Vec<Vec<u8>>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        secs: 3.0,
        seed: 0x5eed_f022,
        iters: None,
        target: None,
        extra_seeds: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--secs" => {
                options.secs = value()?.parse().map_err(|e| format!("--secs: {e}"))?;
            }
            "--seed" => options.seed = parse_u64(&value()?).ok_or("--seed: not a number")?,
            "--iters" => options.iters = Some(parse_u64(&value()?).ok_or("--iters: not a number")?),
            "--target" => options.target = Some(value()?),
            "--corpus" => {
                let path = value()?;
                options
                    .extra_seeds
                    .push(std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(options)
}

fn parse_u64(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("paravane-fuzz: {e}");
            return ExitCode::from(2);
        }
    };
    // Quiet panics: the failure is reported below, with the input.
    panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for target in targets::ALL {
        if options.target.as_deref().is_some_and(|t| t != target.name) {
            continue;
        }
        if !run_target(target, &options) {
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Fuzzes one target; false if an input broke it.
fn run_target(target: &targets::Target, options: &Options) -> bool {
    let mut corpus: Vec<Vec<u8>> = (target.seeds)();
    if target.name == "elf" {
        corpus.extend(options.extra_seeds.iter().map(|image| trim_image(image)));
    }
    let seed = options.seed ^ mutate::fnv1a(target.name.as_bytes());
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + Duration::from_secs_f64(options.secs);
    let (mut iterations, mut accepted) = (0u64, 0u64);
    loop {
        match options.iters {
            Some(n) if iterations >= n => break,
            None if iterations % 64 == 0 && Instant::now() >= deadline => break,
            _ => {}
        }
        let base = &corpus[rng.below(corpus.len() as u64) as usize];
        let input = mutate::mutate(&mut rng, base, target.dictionary);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        match outcome {
            Ok(true) => {
                accepted += 1;
                if corpus.len() < CORPUS_MAX && !corpus.contains(&input) {
                    corpus.push(input);
                }
            }
            Ok(false) => {}
            Err(payload) => {
                let why = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                println!(
                    "fuzz {}: FAILED at iteration {iterations} (seed {:#x}): {why}",
                    target.name, options.seed
                );
                println!(
                    "fuzz {}: input ({} bytes): {}",
                    target.name,
                    input.len(),
                    hex(&input)
                );
                println!(
                    "fuzz {}: replay: cargo xtask fuzz --target {} --seed {:#x} --iters {}",
                    target.name,
                    target.name,
                    options.seed,
                    iterations + 1
                );
                return false;
            }
        }
        iterations += 1;
    }
    println!(
        "fuzz {}: ok: {iterations} inputs ({accepted} accepted), corpus {}, seed {:#x}",
        target.name,
        corpus.len(),
        options.seed
    );
    true
}

/// `image` without what the loader never reads (section headers, debug
/// information): everything past the program headers and the file bytes of
/// the segments goes, so mutations stay cheap.
fn trim_image(image: &[u8]) -> Vec<u8> {
    let u64_at = |at: usize| {
        image
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let u16_at = |at: usize| {
        image
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u16::from_le_bytes)
    };
    let phoff = u64_at(32);
    let phnum = u64::from(u16_at(56));
    let mut end = phoff.saturating_add(phnum.saturating_mul(56));
    for i in 0..phnum {
        let ph = usize::try_from(phoff + 56 * i).unwrap_or(usize::MAX);
        end = end.max(u64_at(ph.saturating_add(8)).saturating_add(u64_at(ph.saturating_add(32))));
    }
    image[..usize::try_from(end).unwrap_or(usize::MAX).min(image.len())].to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
