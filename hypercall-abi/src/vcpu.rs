//! `vcpu_op`: bringing a domain's secondary vCPUs up and down, and reading
//! where and how long a vCPU ran (SPEC.md HC-21). Since ABI 0.5.
//!
//! A domain gets `StartInfo.nr_vcpus` vCPUs (module `vcpus=`). vCPU 0 starts
//! at the image's entry point; the others start *down* and without a context:
//! a vCPU of the same domain gives one with [`VCPUOP_INITIALISE`], then starts
//! it with [`VCPUOP_UP`].

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `vcpu_op(VCPUOP_INITIALISE, vcpu, ctx)`: give down, never-started vCPU
/// `vcpu` the context `ctx` (a [`VcpuContext`]). It inherits the caller's
/// trap table, callbacks and kernel stack pointer (`stack_switch`).
/// `-EINVAL` bad vCPU/context, `-EEXIST` already initialised.
pub const VCPUOP_INITIALISE: u64 = 0;
/// `vcpu_op(VCPUOP_UP, vcpu, 0)`: make an initialised vCPU runnable;
/// `-EINVAL` if it has no context. Up again when already up: no effect.
pub const VCPUOP_UP: u64 = 1;
/// `vcpu_op(VCPUOP_DOWN, vcpu, 0)`: stop a vCPU (it keeps its state and can be
/// brought up again, resuming where it stopped). A vCPU may take itself down
/// (the call returns once it is up again) or another (which stops within a
/// tick). vCPU 0 cannot be taken down (`-EINVAL`).
pub const VCPUOP_DOWN: u64 = 2;
/// `vcpu_op(VCPUOP_IS_UP, vcpu, 0)`: 1 if up, else 0.
pub const VCPUOP_IS_UP: u64 = 3;
/// `vcpu_op(VCPUOP_GET_RUNSTATE, vcpu, out)`: fill a [`VcpuRunstate`].
pub const VCPUOP_GET_RUNSTATE: u64 = 4;

/// IN of `VCPUOP_INITIALISE`, `[GUEST]`: where the vCPU starts, in guest
/// kernel mode with upcalls masked.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuContext {
    /// Entry point (a guest address).
    pub rip: u64,
    /// Initial stack pointer (a guest address).
    pub rsp: u64,
    /// First argument (rdi).
    pub arg0: u64,
    /// Second argument (rsi).
    pub arg1: u64,
    /// Kernel base pointer: the mfn of a validated L4 of the domain (it gets
    /// a base-pointer reference, MM-6).
    pub kernel_l4: u64,
    /// Must be zero.
    pub flags: u64,
}
const _: () = assert!(core::mem::size_of::<VcpuContext>() == 48);
const _: () = assert!(core::mem::offset_of!(VcpuContext, kernel_l4) == 32);

/// `VcpuRunstate.state`: on a pCPU now.
pub const RUNSTATE_RUNNING: u32 = 0;
/// `VcpuRunstate.state`: waiting for a pCPU.
pub const RUNSTATE_RUNNABLE: u32 = 1;
/// `VcpuRunstate.state`: blocked on events or a timer.
pub const RUNSTATE_BLOCKED: u32 = 2;
/// `VcpuRunstate.state`: down.
pub const RUNSTATE_DOWN: u32 = 3;

/// OUT of `VCPUOP_GET_RUNSTATE`, `[HV]`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRunstate {
    /// Nanoseconds the vCPU has run (up to its last switch).
    pub cpu_time_ns: u64,
    /// The pCPU it runs on or last ran on (its run queue).
    pub pcpu: u32,
    /// `RUNSTATE_*`.
    pub state: u32,
}
const _: () = assert!(core::mem::size_of::<VcpuRunstate>() == 16);
const _: () = assert!(core::mem::offset_of!(VcpuRunstate, state) == 12);
