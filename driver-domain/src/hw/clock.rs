//! The TSC frequency, from the PV clock's scale in vcpu_info 0 (TIME-1):
//! `ns = ((tsc << shift) * mul) >> 32`, so `Hz = 10^9 * 2^32 / (mul * 2^shift)`.
#![allow(unsafe_code)]

use hypercall_abi::shared_info::SharedInfo;
use hypercall_abi::start_info::StartInfo;

/// TSC ticks per second (0 if the hypervisor published no scale).
pub fn tsc_hz(si: &StartInfo) -> u64 {
    let info = si.shared_info as *const SharedInfo;
    // SAFETY: shared_info is mapped read-write for the life of the domain
    // (start_info.shared_info); two volatile field reads, no reference made.
    let (mul, shift) = unsafe {
        let vcpu = core::ptr::addr_of!((*info).vcpu_info[0]);
        (
            core::ptr::read_volatile(core::ptr::addr_of!((*vcpu).tsc_to_system_mul)),
            core::ptr::read_volatile(core::ptr::addr_of!((*vcpu).tsc_shift)),
        )
    };
    if mul == 0 {
        return 0;
    }
    let num: u128 = 1_000_000_000u128 << 32;
    let den = u128::from(mul);
    let hz = if shift >= 0 {
        num / (den << shift)
    } else {
        (num << (-shift)) / den
    };
    hz as u64
}
