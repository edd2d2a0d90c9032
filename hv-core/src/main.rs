//! The hv-core kernel binary: everything lives in the library; this only links
//! it (the multiboot entry point `_start32` is in `arch::boot`).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use hv_core as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "hv-core is the Paravane hypervisor kernel; build and boot it with `cargo xtask run`"
    );
    std::process::exit(1);
}
