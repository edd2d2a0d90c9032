//! Scheduling: which vCPU runs next (a round-robin run queue, portable and
//! host-tested) and, in the kernel, switching to it.
//!
//! ABI 0.1 runs every vCPU on the boot CPU, round robin, preempted by the
//! local APIC timer every time slice. Weights, caps and SMP come later on the
//! same interface.

pub mod policy;
pub mod runqueue;

#[cfg(target_os = "none")]
mod switch;
#[cfg(target_os = "none")]
pub use switch::*;
