//! hv-core: Paravane's ring-0 hypervisor.
#![cfg_attr(not(test), no_std)]

pub mod loader;
