//! `sched_op` sub-commands and shutdown reasons (SPEC.md HC-12).

/// Give up the CPU; the caller stays runnable. Returns 0.
pub const SCHEDOP_YIELD: u64 = 0;
/// Shut the calling domain down with the reason in `arg`. Does not return.
pub const SCHEDOP_SHUTDOWN: u64 = 2;

/// Shutdown reason: the domain is done (power off).
pub const SHUTDOWN_POWEROFF: u64 = 0;
/// Shutdown reason: the domain asks to be restarted.
pub const SHUTDOWN_REBOOT: u64 = 1;
/// Shutdown reason: the domain crashed (e.g. its panic handler).
pub const SHUTDOWN_CRASH: u64 = 3;

/// Name of a shutdown reason as the hypervisor logs it.
pub const fn shutdown_reason_name(reason: u64) -> &'static str {
    match reason {
        SHUTDOWN_POWEROFF => "poweroff",
        SHUTDOWN_REBOOT => "reboot",
        SHUTDOWN_CRASH => "crash",
        _ => "unknown",
    }
}

/// Block until an event is pending for the calling vCPU; clears its
/// `evtchn_upcall_mask` first, so the event is delivered as an upcall when the
/// vCPU runs again. Returns 0 (at once if an upcall is already pending).
pub const SCHEDOP_BLOCK: u64 = 1;
/// Block until one of the ports in the [`SchedPoll`] at `arg` is pending
/// (masked or not). Returns 0.
pub const SCHEDOP_POLL: u64 = 3;

/// Most ports one `SCHEDOP_POLL` may wait on.
pub const POLL_MAX_PORTS: u32 = 8;

/// IN of `SCHEDOP_POLL`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct SchedPoll {
    /// Guest address of `nr_ports` `u32` port numbers, each an open port of the caller.
    pub ports: u64,
    /// 1 ..= `POLL_MAX_PORTS`.
    pub nr_ports: u32,
    /// Must be zero.
    pub pad: u32,
    /// System time (ns, TIME-1) at which to give up and return 0; 0 = never.
    pub timeout: u64,
}
const _: () = assert!(core::mem::size_of::<SchedPoll>() == 24);
const _: () = assert!(core::mem::offset_of!(SchedPoll, timeout) == 16);
