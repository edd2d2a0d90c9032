//! Prerequisites of every kernel-building or booting command: the
//! `x86_64-unknown-none` Rust target and `qemu-system-x86_64`. Installs what it
//! safely can (the target via rustup; QEMU via apt-get when running as root) and
//! otherwise stops with the exact command to run. Prints one line per step.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::workspace::KERNEL_TARGET;
use crate::{check_interrupted, Result};

/// The QEMU binary xtask launches.
pub const QEMU: &str = "qemu-system-x86_64";
/// The Debian/Ubuntu package providing [`QEMU`].
const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Makes sure the kernel target and QEMU are installed; returns QEMU's path.
pub fn ensure() -> Result<PathBuf> {
    ensure_target()?;
    ensure_qemu()
}

/// Step 1: the Rust target the kernels are built for.
fn ensure_target() -> Result<()> {
    if find_on_path("rustup").is_some() {
        let installed = capture("rustup", ["target", "list", "--installed"])?;
        if installed.lines().any(|l| l.trim() == KERNEL_TARGET) {
            println!("prerequisite: rust target {KERNEL_TARGET} installed");
            return Ok(());
        }
        println!(
            "prerequisite: rust target {KERNEL_TARGET} missing; running rustup target add {KERNEL_TARGET}"
        );
        run_step("rustup", ["target", "add", KERNEL_TARGET])?;
        return Ok(());
    }
    // No rustup: look in the toolchain's sysroot.
    let sysroot = capture("rustc", ["--print", "sysroot"])?;
    if Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(KERNEL_TARGET)
        .is_dir()
    {
        println!("prerequisite: rust target {KERNEL_TARGET} installed (no rustup)");
        Ok(())
    } else {
        Err(format!(
            "rust target {KERNEL_TARGET} is not installed and rustup is not available; \
             install the target's standard library for your toolchain ({})",
            sysroot.trim()
        )
        .into())
    }
}

/// What to do about QEMU.
#[derive(Debug, PartialEq, Eq)]
enum QemuPlan {
    /// It is installed here.
    Ready(PathBuf),
    /// Install it with apt-get (root, apt-get present).
    AptInstall,
    /// Stop and tell the user this.
    Stop(String),
}

/// Decides what to do about QEMU from what the host offers.
fn plan_qemu(found: Option<PathBuf>, is_root: bool, has_apt: bool) -> QemuPlan {
    match found {
        Some(path) => QemuPlan::Ready(path),
        None if is_root && has_apt => QemuPlan::AptInstall,
        None if has_apt => QemuPlan::Stop(format!(
            "{QEMU} not found on PATH; install it with: sudo apt-get update && sudo apt-get install -y {QEMU_PACKAGE}"
        )),
        None => QemuPlan::Stop(format!(
            "{QEMU} not found on PATH; install QEMU's x86_64 system emulator \
             (Debian/Ubuntu: apt-get install -y {QEMU_PACKAGE}; Fedora: dnf install -y qemu-system-x86-core; \
             Arch: pacman -S qemu-system-x86)"
        )),
    }
}

/// Step 2: QEMU.
fn ensure_qemu() -> Result<PathBuf> {
    let is_root = || {
        capture("id", ["-u"])
            .map(|uid| uid.trim() == "0")
            .unwrap_or(false)
    };
    let found = find_on_path(QEMU);
    let plan = if found.is_some() {
        plan_qemu(found, false, false)
    } else {
        plan_qemu(None, is_root(), find_on_path("apt-get").is_some())
    };
    match plan {
        QemuPlan::Ready(path) => {
            println!("prerequisite: {QEMU} found at {}", path.display());
            Ok(path)
        }
        QemuPlan::Stop(message) => Err(message.into()),
        QemuPlan::AptInstall => {
            println!(
                "prerequisite: {QEMU} missing; running apt-get update && apt-get install -y {QEMU_PACKAGE}"
            );
            run_step("apt-get", ["update"])?;
            run_step("apt-get", ["install", "-y", QEMU_PACKAGE])?;
            let path = find_on_path(QEMU).ok_or_else(|| {
                format!("{QEMU} still not on PATH after installing {QEMU_PACKAGE}")
            })?;
            println!("prerequisite: {QEMU} installed at {}", path.display());
            Ok(path)
        }
    }
}

/// The first executable file called `name` in `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file with an execute bit.
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs a command and returns its stdout; fails if it cannot start or fails.
fn capture<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !output.status.success() {
        return Err(format!("{program} failed ({})", output.status).into());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs an installation step with its output on the terminal.
fn run_step<const N: usize>(program: &str, args: [&str; N]) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    check_interrupted()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_plan_prefers_what_is_installed() {
        let path = PathBuf::from("/usr/bin/qemu-system-x86_64");
        assert_eq!(
            plan_qemu(Some(path.clone()), true, true),
            QemuPlan::Ready(path)
        );
    }

    #[test]
    fn qemu_plan_installs_only_as_root_with_apt() {
        assert_eq!(plan_qemu(None, true, true), QemuPlan::AptInstall);
        let QemuPlan::Stop(msg) = plan_qemu(None, false, true) else {
            panic!("expected a stop")
        };
        assert!(
            msg.contains("sudo apt-get install -y qemu-system-x86"),
            "{msg}"
        );
        let QemuPlan::Stop(msg) = plan_qemu(None, true, false) else {
            panic!("expected a stop")
        };
        assert!(msg.contains("not found on PATH"), "{msg}");
    }

    #[test]
    fn finds_sh_on_path() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("no-such-program-paravane").is_none());
    }
}
