//! Where things are: the workspace root (found at run time) and every path xtask
//! reads or writes below it — kernel images, derived module images, QEMU logs.
//!
//! # Invariants
//! - `root` is absolute and canonical; QEMU runs with `root` as its working
//!   directory, so module paths handed to it are relative to `root`.
//! - xtask writes only below `target/`.

use std::path::{Path, PathBuf};

/// Rust target the kernels are built for.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// The workspace and its paths.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Absolute, canonical workspace root.
    pub root: PathBuf,
}

impl Workspace {
    /// Finds the workspace root: the parent of xtask's manifest directory (taken
    /// from `CARGO_MANIFEST_DIR` at run time, as `cargo run` sets it, else from
    /// build time).
    pub fn locate() -> Result<Self, String> {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.join("Cargo.toml").is_file() && dir.ends_with("xtask"))
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .ok_or_else(|| format!("{} has no parent directory", manifest_dir.display()))?;
        let root = root
            .canonicalize()
            .map_err(|e| format!("cannot resolve workspace root {}: {e}", root.display()))?;
        Ok(Self { root })
    }

    /// Build directory of the hypervisor (its flags differ from the guests').
    pub fn hv_target_dir(&self) -> PathBuf {
        self.root.join("target/hv")
    }

    /// Build directory of the guest kernels.
    pub fn guest_target_dir(&self) -> PathBuf {
        self.root.join("target/guest")
    }

    /// Build directory of the host tools (`pvctl`).
    pub fn host_target_dir(&self) -> PathBuf {
        self.root.join("target/host")
    }

    /// The `pvctl` binary [`crate::kernels::build_host_tools`] builds (absolute).
    pub fn pvctl(&self) -> PathBuf {
        self.host_target_dir().join("debug/pvctl")
    }

    /// The hv-core ELF, relative to the root.
    pub fn hv_image(&self) -> PathBuf {
        Path::new("target/hv")
            .join(KERNEL_TARGET)
            .join("release/hv-core")
    }

    /// A guest kernel ELF, relative to the root.
    pub fn guest_image(&self, bin: &str) -> PathBuf {
        Path::new("target/guest")
            .join(KERNEL_TARGET)
            .join("release")
            .join(bin)
    }

    /// Directory of QEMU logs, relative to the root.
    pub fn qemu_dir(&self) -> PathBuf {
        PathBuf::from("target/qemu")
    }

    /// The serial log of a scenario, relative to the root.
    pub fn log_file(&self, scenario: &str) -> PathBuf {
        self.qemu_dir().join(format!("{scenario}.log"))
    }

    /// Scratch directory of a scenario (derived images), relative to the root.
    pub fn scratch_dir(&self, scenario: &str) -> PathBuf {
        self.qemu_dir().join(scenario)
    }

    /// A root-relative path made absolute.
    pub fn abs(&self, relative: &Path) -> PathBuf {
        self.root.join(relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_holds_the_workspace_manifest() {
        let ws = Workspace::locate().expect("locate");
        assert!(ws.root.is_absolute());
        assert!(ws.root.join("xtask/Cargo.toml").is_file());
        assert!(ws.root.join("Cargo.toml").is_file());
    }

    #[test]
    fn image_paths() {
        let ws = Workspace {
            root: PathBuf::from("/w"),
        };
        assert_eq!(
            ws.abs(&ws.hv_image()),
            Path::new("/w/target/hv/x86_64-unknown-none/release/hv-core")
        );
        assert_eq!(
            ws.guest_image("hello"),
            Path::new("target/guest/x86_64-unknown-none/release/hello")
        );
        assert_eq!(ws.log_file("demo"), Path::new("target/qemu/demo.log"));
    }
}
