//! tmp
use pv_guest_kit::cmdline::Args;
pub fn run(_role: &str, _args: &Args<'_>) {}
