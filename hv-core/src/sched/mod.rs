//! Scheduling (SPEC.md §10): which vCPU each pCPU runs next — a credit2-like
//! proportional-share policy with caps and boosted wake-ups, portable and
//! host-tested on a simulated clock (`policy`) — and, in the kernel, per-pCPU
//! run queues, placement, work stealing and switching (`switch`).

pub mod policy;

#[cfg(target_os = "none")]
mod switch;
#[cfg(target_os = "none")]
pub use switch::*;
