//! Time without a hypercall (SPEC.md TIME-1): system time in nanoseconds from
//! the PV clock the hypervisor publishes in vcpu_info, a busy wait, and
//! sleeping on a vCPU's one-shot timer (TIME-2).
//!
//! The clock's parameters are the same for every vCPU and the TSC is shared,
//! so any vCPU reads a monotonic, machine-wide time from vcpu_info 0.

use core::sync::atomic::{fence, Ordering};

use hypercall_abi::shared_info::SharedInfo;

fn shared_info() -> *const SharedInfo {
    crate::start::start_info().shared_info as *const SharedInfo
}

/// Converts a TSC delta with the PV clock's scale (TIME-1).
pub const fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let shifted = if shift >= 0 {
        delta << shift
    } else {
        delta >> (-shift)
    };
    ((shifted as u128 * mul as u128) >> 32) as u64
}

/// The TSC frequency the PV clock's scale implies: `ns = ((tsc << shift) *
/// mul) >> 32`, so `Hz = 10^9 * 2^32 / (mul * 2^shift)`; 0 for a zero scale.
pub const fn hz_from_scale(mul: u32, shift: i8) -> u64 {
    if mul == 0 {
        return 0;
    }
    let num: u128 = 1_000_000_000u128 << 32;
    let den = mul as u128;
    let hz = if shift >= 0 {
        num / (den << shift)
    } else {
        (num << (-shift)) / den
    };
    hz as u64
}

/// TSC ticks per second (0 if the hypervisor published no scale).
pub fn tsc_hz() -> u64 {
    let si = shared_info();
    // SAFETY: shared_info is mapped for the whole life of the domain; two
    // plain reads of fields hv-core writes once, when it builds the domain.
    let (mul, shift) = unsafe {
        let vi = core::ptr::addr_of!((*si).vcpu_info[0]);
        (
            core::ptr::read_volatile(core::ptr::addr_of!((*vi).tsc_to_system_mul)),
            core::ptr::read_volatile(core::ptr::addr_of!((*vi).tsc_shift)),
        )
    };
    hz_from_scale(mul, shift)
}

/// Nanoseconds of system time (since the hypervisor booted): the
/// version-checked read of TIME-1.
pub fn now_ns() -> u64 {
    let si = shared_info();
    loop {
        // SAFETY: shared_info is mapped for the whole life of the domain
        // (start_info.shared_info); these are plain reads of its fields.
        let (v0, ts, st, mul, shift) = unsafe {
            let vi = core::ptr::addr_of!((*si).vcpu_info[0]);
            let v0 = core::ptr::read_volatile(core::ptr::addr_of!((*vi).time_version));
            fence(Ordering::Acquire);
            (
                v0,
                core::ptr::read_volatile(core::ptr::addr_of!((*vi).tsc_timestamp)),
                core::ptr::read_volatile(core::ptr::addr_of!((*vi).system_time)),
                core::ptr::read_volatile(core::ptr::addr_of!((*vi).tsc_to_system_mul)),
                core::ptr::read_volatile(core::ptr::addr_of!((*vi).tsc_shift)),
            )
        };
        let tsc = crate::bench::rdtsc();
        fence(Ordering::Acquire);
        // SAFETY: as above.
        let v1 = unsafe {
            core::ptr::read_volatile(core::ptr::addr_of!((*si).vcpu_info[0].time_version))
        };
        if v0 == v1 && v0 & 1 == 0 {
            return st.wrapping_add(scale_delta(tsc.wrapping_sub(ts), mul, shift));
        }
        core::hint::spin_loop();
    }
}

/// Spins (never blocks) until system time reaches `deadline_ns`.
pub fn spin_until(deadline_ns: u64) {
    while now_ns() < deadline_ns {
        core::hint::spin_loop();
    }
}

/// Each vCPU's timer port (`VIRQ_TIMER` is per vCPU), bound on first use.
static TIMER_PORTS: [core::sync::atomic::AtomicU32; 32] =
    [const { core::sync::atomic::AtomicU32::new(0) }; 32];

/// Blocks vCPU `vcpu` (the caller's own number: 0, or what
/// [`crate::smp::start_vcpu`] passed it) until system time reaches
/// `deadline_ns`, on its one-shot timer (`set_timer_op`) — no CPU is used
/// meanwhile. The timer port is bound on first use and kept masked, so the
/// kit's upcall never consumes it; wakes up at most about a timer tick (1 ms)
/// late.
pub fn sleep_until(vcpu: u32, deadline_ns: u64) -> Result<(), hypercall_abi::Errno> {
    use hypercall_abi::evtchn::VIRQ_TIMER;
    let slot = TIMER_PORTS
        .get(vcpu as usize)
        .ok_or(hypercall_abi::Errno::EINVAL)?;
    let mut port = slot.load(Ordering::Relaxed);
    if port == 0 {
        port = crate::hypercall::evtchn_bind_virq(VIRQ_TIMER, vcpu)?;
        crate::events::mask(port);
        slot.store(port, Ordering::Relaxed);
    }
    while now_ns() < deadline_ns {
        crate::hypercall::set_timer(deadline_ns)?;
        crate::hypercall::sched_poll(&[port])?;
        crate::events::clear_pending(port);
    }
    Ok(())
}

/// [`sleep_until`] `ns` from now.
pub fn sleep_ns(vcpu: u32, ns: u64) -> Result<(), hypercall_abi::Errno> {
    sleep_until(vcpu, now_ns().saturating_add(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_matches_the_hypervisor_formula() {
        // 2 GHz: shift -1 (halve), mul 2^32 → 1 tick = 0.5 ns.
        assert_eq!(scale_delta(2_000_000_000, u32::MAX, -1), 999_999_999);
        assert_eq!(scale_delta(0, 1 << 31, 3), 0);
        assert_eq!(scale_delta(1000, 1 << 31, 1), 1000);
    }

    #[test]
    fn frequency_inverts_the_scale() {
        // mul 2^31 halves: with shift -1 a tick is 0.25 ns, with shift 1 1 ns.
        assert_eq!(hz_from_scale(1 << 31, -1), 4_000_000_000);
        assert_eq!(hz_from_scale(1 << 31, 1), 1_000_000_000);
        assert_eq!(hz_from_scale(0, 3), 0);
        // One second of ticks converts back to one second.
        for (mul, shift) in [(0xd3c3_6113u32, -2i8), (0x8000_0001, 0), (0xffff_ffff, 3)] {
            let hz = hz_from_scale(mul, shift);
            assert!(
                scale_delta(hz, mul, shift).abs_diff(1_000_000_000) < 10,
                "{mul:#x} {shift}"
            );
        }
    }
}
