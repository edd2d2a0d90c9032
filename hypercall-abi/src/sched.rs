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
