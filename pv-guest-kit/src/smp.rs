//! SMP guests (SPEC.md HC-21): starting secondary vCPUs on their own stacks,
//! and a spin lock for data they share.
//!
//! A secondary vCPU starts in guest kernel mode with upcalls masked and the
//! trap table and callbacks of the vCPU that started it. The kit's event
//! layer serves vCPU 0 only, so secondary vCPUs should leave upcalls masked
//! and use shared memory (with [`SpinLock`] or atomics) to talk to vCPU 0.

use alloc::boxed::Box;

use hypercall_abi::vcpu::{VcpuContext, VCPUOP_DOWN, VCPUOP_IS_UP, VCPUOP_UP};
use hypercall_abi::Errno;

/// The lock SMP guests use for shared data (spins; never blocks the vCPU).
pub type SpinLock<T> = spin::Mutex<T>;

/// Bytes of stack each secondary vCPU gets.
pub const VCPU_STACK_SIZE: usize = 32 * 1024;

#[repr(C, align(16))]
struct Stack([u8; VCPU_STACK_SIZE]);

/// The number of vCPUs this domain has (`vcpus=`).
pub fn nr_vcpus() -> u32 {
    crate::start::start_info().nr_vcpus
}

/// Starts secondary vCPU `vcpu` running `entry(vcpu, arg)` on a fresh stack
/// of [`VCPU_STACK_SIZE`] bytes (leaked: vCPUs keep their stacks), on the
/// start-of-day address space. `entry` must never return: when done it takes
/// itself down ([`down`] with its own number) or spins.
pub fn start_vcpu(vcpu: u32, entry: extern "C" fn(u64, u64) -> !, arg: u64) -> Result<(), Errno> {
    let stack: &'static mut Stack = Box::leak(Box::new(Stack([0; VCPU_STACK_SIZE])));
    // A function entered at its first instruction expects rsp ≡ 8 (mod 16).
    let top = stack.0.as_ptr_range().end as u64 - 8;
    let ctx = VcpuContext {
        rip: entry as *const () as u64,
        rsp: top,
        arg0: u64::from(vcpu),
        arg1: arg,
        kernel_l4: crate::mm::layout().boot_l4_mfn,
        flags: 0,
    };
    // SAFETY: `entry` is a function that never returns, `top` the end of a
    // stack no one else uses, and the kit's trap table and callbacks (which
    // the new vCPU inherits) are valid on any vCPU.
    unsafe { crate::hypercall::vcpu_initialise(vcpu, &ctx)? };
    crate::hypercall::vcpu_up_down(VCPUOP_UP, vcpu).map(|_| ())
}

/// Whether vCPU `vcpu` is up.
pub fn is_up(vcpu: u32) -> Result<bool, Errno> {
    crate::hypercall::vcpu_up_down(VCPUOP_IS_UP, vcpu).map(|v| v != 0)
}

/// Takes vCPU `vcpu` (not 0) down; it resumes where it stopped when brought
/// up again ([`up`]).
pub fn down(vcpu: u32) -> Result<(), Errno> {
    crate::hypercall::vcpu_up_down(VCPUOP_DOWN, vcpu).map(|_| ())
}

/// Brings vCPU `vcpu` up again.
pub fn up(vcpu: u32) -> Result<(), Errno> {
    crate::hypercall::vcpu_up_down(VCPUOP_UP, vcpu).map(|_| ())
}
