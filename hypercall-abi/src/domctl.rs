//! `domctl`: privileged domain control (SPEC.md HC-17). Each operation names the
//! capability it needs; without it the call returns `-EPERM`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `domctl(DOMCTL_GET_INFO, domid, buf)`: fill `buf` (a [`DomainInfo`]) with the
/// domain whose id is the smallest one `>= domid`; returns that id, or `-ESRCH`
/// when there is none. Needs `Capabilities::DOMAIN_QUERY`.
pub const DOMCTL_GET_INFO: u64 = 0;

/// `DomainInfo.state`: runnable or running.
pub const DOMAIN_STATE_RUNNING: u32 = 0;
/// `DomainInfo.state`: shut down by its own request; `shutdown_reason` says why.
pub const DOMAIN_STATE_SHUTDOWN: u32 = 1;
/// `DomainInfo.state`: crashed (killed by the hypervisor for a fault it could not deliver).
pub const DOMAIN_STATE_CRASHED: u32 = 2;

/// OUT of `DOMCTL_GET_INFO`, `[HV]`.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct DomainInfo {
    /// Domain id.
    pub domid: u32,
    /// `DOMAIN_STATE_*`.
    pub state: u32,
    /// `SHUTDOWN_*` reason when `state` is `DOMAIN_STATE_SHUTDOWN`.
    pub shutdown_reason: u32,
    /// Number of vCPUs.
    pub nr_vcpus: u32,
    /// Pages owned.
    pub nr_pages: u64,
    /// TSC cycles its vCPUs have run.
    pub cpu_cycles: u64,
    /// Name, NUL-terminated.
    pub name: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<DomainInfo>() == 64);
const _: () = assert!(core::mem::offset_of!(DomainInfo, nr_pages) == 16);
const _: () = assert!(core::mem::offset_of!(DomainInfo, cpu_cycles) == 24);
const _: () = assert!(core::mem::offset_of!(DomainInfo, name) == 32);
