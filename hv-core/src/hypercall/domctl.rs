//! `domctl` (HC-17): privileged domain control, capability-checked.

use hypercall_abi::domctl::{
    DomainInfo, DOMAIN_STATE_CRASHED, DOMAIN_STATE_RUNNING, DOMAIN_STATE_SHUTDOWN, DOMCTL_GET_INFO,
};
use hypercall_abi::start_info::Capabilities;
use hypercall_abi::{DomId, Errno};

use crate::domain::{DomainState, DOMAINS};
use crate::guest_memory::write_obj;
use crate::sched;

pub fn domctl(op: u64, domid: u64, buf: u64) -> Result<u64, Errno> {
    let id = sched::current().ok_or(Errno::EINVAL)?;
    match op {
        DOMCTL_GET_INFO => {
            let info = {
                let table = DOMAINS.lock();
                let caller = table.domains.get(&id.domid).ok_or(Errno::ESRCH)?;
                if !caller.capabilities.contains(Capabilities::DOMAIN_QUERY) {
                    return Err(Errno::EPERM);
                }
                let first = DomId::try_from(domid).map_err(|_| Errno::ESRCH)?;
                let (_, d) = table.domains.range(first..).next().ok_or(Errno::ESRCH)?;
                let (state, reason) = match d.state {
                    DomainState::Running => (DOMAIN_STATE_RUNNING, 0),
                    DomainState::Shutdown(r) => (DOMAIN_STATE_SHUTDOWN, r as u32),
                    DomainState::Crashed => (DOMAIN_STATE_CRASHED, 0),
                };
                let mut info = DomainInfo {
                    domid: d.id,
                    state,
                    shutdown_reason: reason,
                    nr_vcpus: d.vcpus.len() as u32,
                    nr_pages: d.p2m.len() as u64,
                    cpu_cycles: d.cpu_cycles,
                    name: [0; 32],
                };
                let n = d.name.len().min(31);
                info.name[..n].copy_from_slice(&d.name.as_bytes()[..n]);
                info
            };
            write_obj(buf, &info)?;
            Ok(u64::from(info.domid))
        }
        _ => Err(Errno::EINVAL),
    }
}
