//! hv-core: Paravane's ring-0 hypervisor.
//!
//! Portable modules (loader, mm, domain layout/builder, sched policy, console
//! line handling, multiboot parsing) build and unit-test on the host; the
//! hardware-facing parts (`arch`, entry, hypercall handlers, trap handling)
//! exist only for the kernel target (`target_os = "none"`).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

#[cfg(target_os = "none")]
pub mod arch;
pub mod boot;
pub mod console;
pub mod devbus;
pub mod domain;
pub mod event;
pub mod grant;
pub mod guest_memory;
#[cfg(target_os = "none")]
pub mod hypercall;
pub mod iommu;
pub mod loader;
#[cfg(target_os = "none")]
pub mod machine;
pub mod mm;
#[cfg(target_os = "none")]
mod panic;
pub mod platform;
pub mod sched;
pub mod sync;
pub mod time;
pub mod toolstack;
#[cfg(target_os = "none")]
pub mod trap;
