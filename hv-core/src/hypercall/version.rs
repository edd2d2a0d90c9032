//! `version` (HC-10) and `bench_op` (HC-18).

use hypercall_abi::bench::BENCH_SYSCALL_FLOOR;
use hypercall_abi::hypercall::{pack_version, Features, VERSION_ABI, VERSION_FEATURES};
use hypercall_abi::{Errno, ABI_MAJOR, ABI_MINOR};

use crate::domain::DOMAINS;
use crate::sched;

/// The features this hypervisor offers.
pub const FEATURES: Features = Features::HYPERCALL_PAGE
    .union(Features::TRAP_BOUNCE)
    .union(Features::CONSOLE_READ)
    .union(Features::DOMCTL_GET_INFO)
    .union(Features::PV_MMU)
    .union(Features::MULTICALL)
    .union(Features::GUEST_USER_MODE)
    .union(Features::M2P)
    .union(Features::EVTCHN)
    .union(Features::GRANT_TABLES)
    .union(Features::TIME)
    .union(Features::SMP)
    .union(Features::DEVBUS)
    .union(Features::PHYSDEV)
    .union(Features::TOOLSTACK);

#[inline]
pub fn version(cmd: u64) -> Result<u64, Errno> {
    match cmd {
        VERSION_ABI => Ok(pack_version(ABI_MAJOR, ABI_MINOR)),
        VERSION_FEATURES => Ok(FEATURES.bits()),
        _ => Err(Errno::EINVAL),
    }
}

pub fn bench_op(cmd: u64) -> Result<u64, Errno> {
    if cmd != BENCH_SYSCALL_FLOOR {
        return Err(Errno::EINVAL);
    }
    let id = sched::current().ok_or(Errno::EINVAL)?;
    let mut table = DOMAINS.lock();
    let vcpu = table.vcpu_mut(id).ok_or(Errno::ESRCH)?;
    vcpu.floor_mode = true;
    drop(table);
    sched::set_syscall_floor(true);
    Ok(0)
}
