//! The driver domain's side of the hardware traits: register windows over
//! mapped BAR frames ([`mmio`]), DMA pages over the domain's own frames
//! ([`frames`]), configuration space through `physdev_op` ([`config`]) and the
//! TSC frequency from the PV clock ([`clock`]). The only `unsafe` of the
//! driver domain lives in `mmio`, `frames` and `clock`, each access behind
//! one small function.

pub mod clock;
pub mod config;
pub mod frames;
pub mod mmio;
