//! `bench_op` sub-commands (SPEC.md HC-18): measurement aids that let a guest
//! time the hardware floor under the hypercall path in the same boot.

/// Enter *syscall-floor mode* on the calling vCPU: until the vCPU executes
/// `ud2`, its `syscall` instruction enters a hypervisor stub that is nothing but
/// `sysretq` (rcx and r11 hold the return rip and rflags, as SYSCALL left them),
/// so a `syscall` round trip measures the bare ring-3 → ring-0 → ring-3 cost.
/// No hypercall works in this mode. The `ud2` that ends it is skipped (execution
/// resumes after it) and is not reported as #UD. Returns 0.
pub const BENCH_SYSCALL_FLOOR: u64 = 0;
