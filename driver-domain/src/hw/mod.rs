//! The driver domain's side of the hardware traits: register windows over
//! mapped BAR frames ([`mmio`]), DMA pages over the domain's own frames
//! ([`frames`]) and configuration space through `physdev_op` ([`config`]).
//! The TSC frequency comes from the kit (`pv_guest_kit::time::tsc_hz`). The
//! only `unsafe` of the driver domain lives in `mmio` and `frames`, each
//! access behind one small function.

pub mod config;
pub mod frames;
pub mod mmio;
