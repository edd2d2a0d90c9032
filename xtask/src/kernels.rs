//! Building the kernels for `x86_64-unknown-none`: hv-core and the guests, each in
//! its own target directory because their code model and linker script differ.
//!
//! # Invariants
//! - Linker scripts are passed by absolute path computed from the workspace root
//!   at run time (never a hard-coded machine path).
//! - Outer `RUSTFLAGS`/`CARGO_ENCODED_RUSTFLAGS` are removed for kernel builds:
//!   cargo would prefer them over the per-target flags set here.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::workspace::{Workspace, KERNEL_TARGET};
use crate::{check_interrupted, Result};

/// The per-target rustflags variable cargo reads for the kernel target.
const RUSTFLAGS_VAR: &str = "CARGO_TARGET_X86_64_UNKNOWN_NONE_RUSTFLAGS";
/// The driver domain's package; always built, always module 1.
pub const DRIVER_DOMAIN: &str = "driver-domain";

/// rustflags of the hypervisor build.
fn hv_rustflags(root: &Path) -> String {
    format!(
        "-C relocation-model=static -C code-model=kernel -C link-arg=-T{}",
        root.join("hv-core/link.ld").display()
    )
}

/// rustflags of the guest builds.
fn guest_rustflags(root: &Path) -> String {
    format!(
        "-C relocation-model=static -C code-model=small -C link-arg=-T{}",
        root.join("pv-guest-kit/guest.ld").display()
    )
}

/// Builds hv-core into `target/hv`.
pub fn build_hypervisor(ws: &Workspace) -> Result<()> {
    println!("building hypervisor (hv-core)…");
    cargo_build(
        ws,
        &["hv-core"],
        &["--bin", "hv-core"],
        &ws.hv_target_dir(),
        &hv_rustflags(&ws.root),
    )
    .map_err(|e| with_context(e, "building hv-core"))
}

/// The host tools' package (the admin CLI), built for the host.
pub const PVCTL: &str = "pvctl";

/// Builds the host tools (`pvctl`) into `target/host`, where
/// [`Workspace::pvctl`] finds them.
pub fn build_host_tools(ws: &Workspace) -> Result<()> {
    println!("building host tools: {PVCTL}…");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&ws.root)
        .args(["build", "--quiet", "-p", PVCTL, "--target-dir"])
        .arg(ws.host_target_dir())
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    check_interrupted()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building {PVCTL} failed ({status})").into())
    }
}

/// Builds the given guest packages into `target/guest`.
pub fn build_guests(ws: &Workspace, packages: &[String]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    println!("building guests: {}…", packages.join(", "));
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    cargo_build(
        ws,
        &packages,
        &[],
        &ws.guest_target_dir(),
        &guest_rustflags(&ws.root),
    )
    .map_err(|e| with_context(e, "building guests"))
}

/// The guests `scenarios` need, driver domain first, without duplicates.
pub fn guests_for<'a>(
    scenarios: impl IntoIterator<Item = &'a paravane_tests::Scenario>,
) -> Vec<String> {
    let mut guests = vec![DRIVER_DOMAIN.to_owned()];
    for scenario in scenarios {
        for bin in scenario.guests() {
            if !guests.iter().any(|g| g == bin) {
                guests.push(bin.to_owned());
            }
        }
    }
    guests
}

/// Every guest: those the scenarios use plus every package under `tests/guests/`.
pub fn all_guests(ws: &Workspace) -> Vec<String> {
    let mut guests = guests_for(paravane_tests::scenarios());
    let mut found: Vec<String> = std::fs::read_dir(ws.root.join("tests/guests"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("Cargo.toml")).ok())
        .filter_map(|manifest| package_name(&manifest))
        .collect();
    found.sort();
    for name in found {
        if !guests.contains(&name) {
            guests.push(name);
        }
    }
    guests
}

/// The `name` of a manifest's `[package]` table (a plain line scan, enough for ours).
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(value) = line.strip_prefix("name").map(str::trim_start) {
                if let Some(value) = value.strip_prefix('=') {
                    return Some(value.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    None
}

/// Runs `cargo build --release` for the kernel target.
fn cargo_build(
    ws: &Workspace,
    packages: &[&str],
    extra: &[&str],
    target_dir: &Path,
    rustflags: &str,
) -> Result<()> {
    if ws.root.to_string_lossy().contains(char::is_whitespace) {
        return Err(format!(
            "the workspace path {} contains whitespace, which {RUSTFLAGS_VAR} cannot carry; \
             move the checkout",
            ws.root.display()
        )
        .into());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&ws.root)
        .args([
            "build",
            "--release",
            "--target",
            KERNEL_TARGET,
            "--target-dir",
        ])
        .arg(target_dir)
        .args(extra)
        .env(RUSTFLAGS_VAR, rustflags)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .stdin(Stdio::null());
    for package in packages {
        command.args(["-p", package]);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    check_interrupted()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build failed ({status})").into())
    }
}

/// Prefixes a failure message with what was being done.
fn with_context(error: crate::Error, doing: &str) -> crate::Error {
    match error {
        crate::Error::Failed(message) => crate::Error::Failed(format!("{doing}: {message}")),
        interrupted => interrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustflags_use_absolute_link_scripts() {
        let root = Path::new("/some/where");
        assert_eq!(
            hv_rustflags(root),
            "-C relocation-model=static -C code-model=kernel -C link-arg=-T/some/where/hv-core/link.ld"
        );
        assert_eq!(
            guest_rustflags(root),
            "-C relocation-model=static -C code-model=small -C link-arg=-T/some/where/pv-guest-kit/guest.ld"
        );
    }

    #[test]
    fn package_names_from_manifests() {
        let manifest =
            "[package]\nname = \"hello\"\nversion.workspace = true\n\n[[bin]]\nname = \"other\"\n";
        assert_eq!(package_name(manifest).as_deref(), Some("hello"));
        assert_eq!(package_name("[[bin]]\nname = \"x\"\n"), None);
        assert_eq!(
            package_name("[package]\nnamespace = 1\nname=\"y\"").as_deref(),
            Some("y")
        );
    }

    #[test]
    fn guest_lists_start_with_the_driver_domain() {
        let ws = Workspace::locate().expect("locate");
        let all = all_guests(&ws);
        assert_eq!(all[0], DRIVER_DOMAIN);
        for bin in [
            "hello",
            "crasher",
            "abi-mismatch",
            "hvbench",
            "mmtest",
            "userland",
            "attacker",
            "pingpong",
            "grant-attacker",
        ] {
            assert!(all.iter().any(|g| g == bin), "{bin} missing from {all:?}");
        }
        let demo = paravane_tests::find("demo").expect("demo");
        assert_eq!(guests_for([demo]), ["driver-domain", "web", "fsdemo"]);
    }
}
