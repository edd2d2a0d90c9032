//! `physdev_op` (SPEC.md §12, DEV-*): the driver domain's view of its PCI
//! devices. Every command needs `Capabilities::DEVICES`; its structure is
//! copied in once, validated, used, and written back.

use hypercall_abi::start_info::Capabilities;
use hypercall_abi::Errno;

use crate::domain::DOMAINS;
use crate::sched;

pub fn physdev_op(cmd: u64, arg: u64) -> Result<u64, Errno> {
    let dom = sched::current().ok_or(Errno::EINVAL)?.domid;
    let caps = DOMAINS
        .lock()
        .domains
        .get(&dom)
        .map(|d| d.capabilities)
        .ok_or(Errno::ESRCH)?;
    if !caps.contains(Capabilities::DEVICES) {
        return Err(Errno::EPERM);
    }
    let _ = (cmd, arg);
    // The commands arrive with PCI enumeration and the IOMMU drivers.
    Err(Errno::ENOSYS)
}
