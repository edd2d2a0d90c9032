//! hv-core's spin lock: `spin`'s mutex with a relax step that keeps this CPU
//! answering TLB shootdowns while it waits.
//!
//! hv-core runs with interrupts disabled, so a CPU spinning for a lock cannot
//! take the shootdown IPI; if the lock's holder is itself waiting for that
//! CPU's acknowledgement (`mm::tlb`), both would wait forever. Waiting here
//! services pending shootdowns instead, which breaks that cycle.

/// The relax strategy of [`Mutex`].
pub struct ServiceShootdowns;

impl spin::RelaxStrategy for ServiceShootdowns {
    #[inline(always)]
    fn relax() {
        relax();
    }
}

/// One step of a busy wait: services pending TLB shootdowns (kernel) and
/// hints the CPU that it spins.
#[inline(always)]
pub fn relax() {
    #[cfg(target_os = "none")]
    crate::mm::tlb::service();
    core::hint::spin_loop();
}

/// A spin lock that services TLB shootdowns while it waits.
pub type Mutex<T> = spin::mutex::Mutex<T, ServiceShootdowns>;
